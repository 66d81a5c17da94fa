//! The opening handshake (RFC 6455 section 4), both sides, with no I/O.
//!
//! Server side: [`parse_request`] (bounded size and header count), [`validate_request`]
//! (method, version, Upgrade, Connection, key, origin, subprotocol, permessage-deflate),
//! [`check_response_headers`] (what the application adds must not contradict that),
//! [`write_response`], and [`ErrorResponse`] for a refusal. Client side:
//! [`write_request`], [`parse_response`], [`validate_response`]. The blocking
//! [`Upgrader`](crate::Upgrader) and the engine are thin I/O around these.

use std::borrow::Cow;

use super::deflate::{self, PerMessageDeflate};

/// The GUID of RFC 6455 section 1.3, appended to the key before hashing.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Bounds on what a peer may send during the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of request (or response) head: past this without a complete
    /// head, the answer is 431. Default: 16 KiB, well above what browsers send.
    pub max_head_bytes: usize,
    /// The most header fields: past this, the answer is 431. Default: 128.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 128,
        }
    }
}

/// One header field. Names keep the case they came with; look-ups ignore case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name.
    pub name: String,
    /// The raw field value.
    pub value: Vec<u8>,
}

/// A parsed HTTP/1.1 request head.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The method, such as `GET`.
    pub method: String,
    /// The request target as sent, path and query (`/ws?room=lobby`).
    pub target: String,
    /// The minor HTTP version: 1 for HTTP/1.1.
    pub version: u8,
    /// The header fields in the order received.
    pub headers: Vec<Header>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// The path part of the target (before `?`).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query part of the target (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// A parsed HTTP/1.1 response head (client side), with the start of its body when the
/// handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// The status code, 101 on success.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The header fields in the order received.
    pub headers: Vec<Header>,
    /// The first bytes of the body (at most 1 KiB), kept for error reports.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }
}

fn find_header<'h>(headers: &'h [Header], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// The handshake failed. Server side: `status` is the HTTP status to answer with (400,
/// 403, 426, 431...). Client side: the server's answer was not a valid 101, and
/// [`response`](Self::response) holds what it said. This is gorilla/websocket's
/// `HandshakeError` and `ErrBadHandshake`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad handshake: {message} (status {status})")]
pub struct HandshakeError {
    status: u16,
    message: Cow<'static, str>,
    response: Option<Box<Response>>,
}

impl HandshakeError {
    /// A handshake error answered with `status`.
    pub fn new(status: u16, message: impl Into<Cow<'static, str>>) -> HandshakeError {
        HandshakeError {
            status,
            message: message.into(),
            response: None,
        }
    }

    /// A client-side error carrying the server's response.
    pub fn with_response(message: impl Into<Cow<'static, str>>, response: Response) -> Self {
        HandshakeError {
            status: response.status,
            message: message.into(),
            response: Some(Box::new(response)),
        }
    }

    /// The HTTP status: to answer with (server side), or received (client side).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// What was wrong, in words.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The server's response, on the client side.
    pub fn response(&self) -> Option<&Response> {
        self.response.as_deref()
    }
}

/// Parse a request head from the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((request, n)))`: the head took `n` bytes. Errors: 431 when the head is larger
/// than `limits.max_head_bytes` or has more than `limits.max_headers` fields, 400 when
/// it is malformed.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    let Some(head_len) = head_end(buf, limits)? else {
        return Ok(None);
    };
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(used)) => Ok(Some((
            Request {
                method: parsed.method.unwrap_or_default().to_owned(),
                target: parsed.path.unwrap_or_default().to_owned(),
                version: parsed.version.unwrap_or(0),
                headers: own_headers(parsed.headers),
            },
            used,
        ))),
        Ok(httparse::Status::Partial) => Err(HandshakeError::new(400, "malformed request head")),
        Err(err) => Err(parse_error(err)),
    }
}

/// Whether the request asks to upgrade to WebSocket: a `Connection` token list with
/// `upgrade` and an `Upgrade` list with `websocket` (case-insensitive).
pub fn is_websocket_upgrade(request: &Request) -> bool {
    has_token(&request.headers, "Connection", "upgrade")
        && has_token(&request.headers, "Upgrade", "websocket")
}

/// The subprotocols the client asked for in `Sec-WebSocket-Protocol`, in its order.
pub fn subprotocols(request: &Request) -> Vec<String> {
    header_values(&request.headers, "Sec-WebSocket-Protocol")
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim_matches(|c| c == ' ' || c == '\t'))
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(sha1(key + GUID)).
///
/// ```
/// use ringcast::proto::handshake::accept_key;
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The safe default origin check of gorilla/websocket: pass when `Origin` is absent, or when its
/// host equals the `Host` header (case-insensitive).
pub fn check_same_origin(request: &Request) -> bool {
    let Some(origin) = request.header("Origin") else {
        return true;
    };
    let Some(host) = request.header("Host") else {
        return false;
    };
    // As gorilla/websocket: the origin URL's host (and port, if written) must equal Host.
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or("");
    authority.as_bytes().eq_ignore_ascii_case(host.trim_ascii())
}

/// What the server side accepts.
pub struct ServerOptions<'a> {
    /// Supported subprotocols, in the server's order of preference.
    pub subprotocols: &'a [String],
    /// Negotiate permessage-deflate when the client offers it.
    pub enable_compression: bool,
    /// The origin check; `None` means [`check_same_origin`]. A refusal is a 403.
    pub check_origin: Option<&'a dyn Fn(&Request) -> bool>,
}

/// A valid upgrade request and what was agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// The chosen subprotocol, if any matched.
    pub subprotocol: Option<String>,
    /// The agreed permessage-deflate parameters, if negotiated.
    pub compression: Option<PerMessageDeflate>,
}

/// Check an upgrade request: `GET`, HTTP/1.1, `Upgrade: websocket`, `Connection:
/// upgrade`, `Sec-WebSocket-Version: 13` (else 426), a key of 16 base64 bytes, the
/// origin (403), then negotiate subprotocol and compression.
pub fn validate_request(
    request: &Request,
    options: &ServerOptions<'_>,
) -> Result<Accepted, HandshakeError> {
    if request.method != "GET" {
        return Err(HandshakeError::new(405, "request method is not GET"));
    }
    if request.version != 1 {
        return Err(HandshakeError::new(400, "request is not HTTP/1.1"));
    }
    if !has_token(&request.headers, "Connection", "upgrade") {
        return Err(HandshakeError::new(
            400,
            "'upgrade' token not found in 'Connection' header",
        ));
    }
    if !has_token(&request.headers, "Upgrade", "websocket") {
        return Err(HandshakeError::new(
            400,
            "'websocket' token not found in 'Upgrade' header",
        ));
    }
    if request
        .header("Sec-WebSocket-Version")
        .map(<[u8]>::trim_ascii)
        != Some(b"13")
    {
        return Err(HandshakeError::new(
            426,
            "unsupported websocket version, 13 is supported",
        ));
    }
    let key = request
        .header("Sec-WebSocket-Key")
        .map(<[u8]>::trim_ascii)
        .unwrap_or_default();
    if !is_valid_key(key) {
        return Err(HandshakeError::new(
            400,
            "Sec-WebSocket-Key is not base64 of 16 bytes",
        ));
    }
    let origin_ok = match options.check_origin {
        Some(check) => check(request),
        None => check_same_origin(request),
    };
    if !origin_ok {
        return Err(HandshakeError::new(403, "origin not allowed"));
    }
    let offered = subprotocols(request);
    let subprotocol = options
        .subprotocols
        .iter()
        .find(|ours| offered.iter().any(|theirs| theirs == *ours))
        .cloned();
    let compression = if options.enable_compression {
        deflate::negotiate(&deflate::parse_offers(header_values(
            &request.headers,
            "Sec-WebSocket-Extensions",
        )))
    } else {
        None
    };
    Ok(Accepted {
        accept: accept_key(key),
        subprotocol,
        compression,
    })
}

/// Header names the 101 writes itself from the negotiation; an application may not add
/// them.
const HANDSHAKE_HEADERS: [&str; 4] = [
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-version",
];

/// Check the headers an application adds to the 101 (`Set-Cookie`, ...) against the
/// negotiation, as gorilla/websocket's `Upgrade` does; a contradiction is a 500 naming it:
///
/// - `Sec-WebSocket-Extensions`: refused (gorilla/websocket: "application specific
///   'Sec-WebSocket-Extensions' headers are unsupported");
/// - `Sec-WebSocket-Protocol`: must name the subprotocol negotiated; when the server
///   lists none (`options.subprotocols` empty), the application may choose one the
///   client offered this way, and `accepted` records it (gorilla/websocket's deprecated `Upgrade`
///   relies on this);
/// - `Upgrade`, `Connection`, `Sec-WebSocket-Accept`, `Sec-WebSocket-Version`: refused
///   (the handshake writes them);
/// - a name that is not an HTTP token, or a value with a line break: refused.
///
/// ```
/// use ringcast::proto::handshake::{check_response_headers, Accepted, Request, ServerOptions};
/// let request = Request::default();
/// let options = ServerOptions { subprotocols: &[], enable_compression: false, check_origin: None };
/// let mut accepted = Accepted { accept: String::new(), subprotocol: None, compression: None };
/// let headers = [("Sec-WebSocket-Extensions".to_string(), "x-custom".to_string())];
/// let err = check_response_headers(&mut accepted, &request, &options, &headers).unwrap_err();
/// assert_eq!(err.status(), 500);
/// ```
pub fn check_response_headers(
    accepted: &mut Accepted,
    request: &Request,
    options: &ServerOptions<'_>,
    headers: &[(String, String)],
) -> Result<(), HandshakeError> {
    let refuse = |message: String| Err(HandshakeError::new(500, message));
    let mut chosen: Option<&str> = None;
    for (name, value) in headers {
        if !is_token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return refuse(format!(
                "response header {name:?} is not a valid header field"
            ));
        }
        let lower = name.to_ascii_lowercase();
        if HANDSHAKE_HEADERS.contains(&lower.as_str()) {
            return refuse(format!(
                "response header {name} is written by the handshake"
            ));
        }
        if lower == "sec-websocket-extensions" {
            return refuse(
                "application specific Sec-WebSocket-Extensions headers are unsupported".into(),
            );
        }
        if lower != "sec-websocket-protocol" {
            continue;
        }
        let value = value.trim();
        if chosen.is_some_and(|first| first != value) {
            return refuse("two different Sec-WebSocket-Protocol response headers".into());
        }
        match &accepted.subprotocol {
            Some(agreed) if agreed == value => {}
            Some(agreed) => {
                return refuse(format!(
                    "response header Sec-WebSocket-Protocol: {value} contradicts the negotiated subprotocol {agreed}"
                ))
            }
            None if !options.subprotocols.is_empty() => {
                return refuse(format!(
                    "response header Sec-WebSocket-Protocol: {value}, but no subprotocol was negotiated"
                ))
            }
            None if !subprotocols(request).iter().any(|p| p == value) => {
                return refuse(format!(
                    "response header Sec-WebSocket-Protocol: {value} names a subprotocol the client did not offer"
                ))
            }
            None => {}
        }
        chosen = Some(value);
    }
    if let (None, Some(value)) = (&accepted.subprotocol, chosen) {
        accepted.subprotocol = Some(value.to_owned());
    }
    Ok(())
}

/// RFC 9110 section 5.6.2: a token is one or more of `!#$%&'*+-.^_`|~`, digits, letters.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Append the `101 Switching Protocols` response, with `extra_headers` (for example
/// `Set-Cookie`) after the WebSocket ones. Check them with [`check_response_headers`]
/// first: the subprotocol comes from `accepted`, so a `Sec-WebSocket-Protocol` among
/// them is not written twice, and a header with a line break is left out.
pub fn write_response(accepted: &Accepted, extra_headers: &[(String, String)], out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    for_each_response_header(accepted, extra_headers, |name, value| {
        write_header(out, name, value);
    });
    out.extend_from_slice(b"\r\n");
}

/// The header fields of the `101 Switching Protocols` response, in order, for a server
/// that writes its own response head (hyper, axum): the WebSocket ones, then
/// `extra_headers` (checked with [`check_response_headers`]; a `Sec-WebSocket-Protocol`
/// among them is the agreed one, written once).
///
/// ```
/// use ringcast::proto::handshake::{for_each_response_header, Accepted};
/// let accepted = Accepted { accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(), subprotocol: None, compression: None };
/// let mut names = Vec::new();
/// for_each_response_header(&accepted, &[], |name, _| names.push(name.to_owned()));
/// assert_eq!(names, ["Upgrade", "Connection", "Sec-WebSocket-Accept"]);
/// ```
pub fn for_each_response_header(
    accepted: &Accepted,
    extra_headers: &[(String, String)],
    mut header: impl FnMut(&str, &str),
) {
    header("Upgrade", "websocket");
    header("Connection", "Upgrade");
    header("Sec-WebSocket-Accept", &accepted.accept);
    if let Some(protocol) = &accepted.subprotocol {
        header("Sec-WebSocket-Protocol", protocol);
    }
    if let Some(compression) = &accepted.compression {
        header("Sec-WebSocket-Extensions", &compression.to_header_value());
    }
    for (name, value) in extra_headers {
        if !name.eq_ignore_ascii_case("sec-websocket-protocol") {
            header(name, value);
        }
    }
}

/// An HTTP error response to a refused handshake (gorilla/websocket's `Upgrader.Error` writes
/// one through `http.ResponseWriter`): a status, headers and a body, written whole with
/// [`ErrorResponse::write`], which adds the status line, `Content-Length`, `Connection:
/// close`, and what the status requires (`Sec-WebSocket-Version: 13` on a 426, `Allow:
/// GET` on a 405).
///
/// ```
/// use ringcast::proto::handshake::{ErrorResponse, HandshakeError};
/// let err = HandshakeError::new(403, "origin not allowed");
/// let mut out = Vec::new();
/// ErrorResponse::json(err.status(), r#"{"error":"forbidden"}"#)
///     .header("Cache-Control", "no-store")
///     .write(&mut out);
/// let text = String::from_utf8(out).unwrap();
/// assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
/// assert!(text.contains("Content-Type: application/json\r\n"));
/// assert!(text.ends_with("\r\n\r\n{\"error\":\"forbidden\"}"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The status, 400..=599 (others are answered as 400).
    pub status: u16,
    /// More header fields; ones with a line break or an invalid name are left out.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl ErrorResponse {
    /// A plain-text (UTF-8) response.
    pub fn text(status: u16, body: impl Into<String>) -> ErrorResponse {
        ErrorResponse {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.into().into_bytes(),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, body: impl Into<String>) -> ErrorResponse {
        ErrorResponse {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into().into_bytes(),
        }
    }

    /// What ringcast answers by default: the error's status and its message as text.
    pub fn from_error(error: &HandshakeError) -> ErrorResponse {
        ErrorResponse::text(error.status(), format!("{}\n", error.message()))
    }

    /// Add a header field.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Append the whole response to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let status = if (400..=599).contains(&self.status) {
            self.status
        } else {
            400
        };
        let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
        for (name, value) in self.header_fields() {
            write_header(out, name, value);
        }
        let _ = write!(
            out,
            "Content-Length: {}\r\nConnection: close\r\n",
            self.body.len()
        );
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    /// The header fields a server that writes its own response head (hyper, axum) sends
    /// with this response: the valid ones given, then the one the status requires
    /// (`Sec-WebSocket-Version: 13` on a 426, `Allow: GET` on a 405). The length and
    /// `Connection: close` are the server's to write.
    pub fn header_fields(&self) -> impl Iterator<Item = (&str, &str)> {
        let owned = ["content-length", "connection", "transfer-encoding"];
        self.headers
            .iter()
            .filter(move |(name, value)| {
                is_token(name)
                    && !owned.contains(&name.to_ascii_lowercase().as_str())
                    && !value.bytes().any(|b| b == b'\r' || b == b'\n')
            })
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .chain(status_header(self.status))
    }
}

/// The header field a status requires: RFC 6455 section 4.4 (426 names the version),
/// RFC 9110 section 15.5.6 (405 lists the methods that are allowed).
fn status_header(status: u16) -> Option<(&'static str, &'static str)> {
    match status {
        426 => Some(("Sec-WebSocket-Version", "13")),
        405 => Some(("Allow", "GET")),
        _ => None,
    }
}

/// Append the default error response for `error` ([`ErrorResponse::from_error`]): its
/// status, a plain-text body with its message, `Connection: close`, and
/// `Sec-WebSocket-Version: 13` on a 426.
pub fn write_error_response(error: &HandshakeError, out: &mut Vec<u8>) {
    ErrorResponse::from_error(error).write(out);
}

/// A fresh `Sec-WebSocket-Key`: base64 of 16 random bytes.
pub fn generate_key() -> String {
    use base64::Engine as _;
    let mut key = [0u8; 16];
    super::encoder::fill_random(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// What the client asks for.
pub struct ClientRequest<'a> {
    /// The `Host` header value (host, and port when not the scheme's default).
    pub host: &'a str,
    /// The request target, path and query.
    pub target: &'a str,
    /// The `Sec-WebSocket-Key` (see [`generate_key`]).
    pub key: &'a str,
    /// Subprotocols to offer, in order of preference.
    pub subprotocols: &'a [String],
    /// Offer permessage-deflate (with no context takeover both ways, as gorilla/websocket does).
    pub enable_compression: bool,
    /// More header fields (Origin, Cookie, Authorization...).
    pub extra_headers: &'a [(String, String)],
}

/// Append the upgrade request head.
pub fn write_request(request: &ClientRequest<'_>, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // A target or host with a space or a control byte would break the request line or
    // smuggle headers: percent-encode those bytes (a URL parser already did for real URLs).
    let target = escape_request_bytes(request.target);
    let host = escape_request_bytes(request.host);
    let _ = write!(
        out,
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
        target, host, request.key
    );
    if !request.subprotocols.is_empty() {
        write_header(
            out,
            "Sec-WebSocket-Protocol",
            &request.subprotocols.join(", "),
        );
    }
    if request.enable_compression {
        write_header(out, "Sec-WebSocket-Extensions", deflate::CLIENT_OFFER);
    }
    for (name, value) in request.extra_headers {
        write_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Parse a response head from the start of `buf`, as [`parse_request`] does.
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Response, usize)>, HandshakeError> {
    let Some(head_len) = head_end(buf, limits)? else {
        return Ok(None);
    };
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(used)) => Ok(Some((
            Response {
                status: parsed.code.unwrap_or(0),
                reason: parsed.reason.unwrap_or_default().to_owned(),
                headers: own_headers(parsed.headers),
                body: Vec::new(),
            },
            used,
        ))),
        Ok(httparse::Status::Partial) => Err(HandshakeError::new(400, "malformed response head")),
        Err(err) => Err(parse_error(err)),
    }
}

/// What the client got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// The subprotocol the server chose, if any.
    pub subprotocol: Option<String>,
    /// The permessage-deflate parameters the server answered with, if any.
    pub compression: Option<PerMessageDeflate>,
}

/// Check the server's answer: status 101, `Upgrade`, `Connection`, the right
/// `Sec-WebSocket-Accept`, a subprotocol the client offered, and a valid
/// permessage-deflate answer to an offer the client made. Anything else is a bad
/// handshake carrying the response.
pub fn validate_response(
    response: &Response,
    request: &ClientRequest<'_>,
) -> Result<Agreed, HandshakeError> {
    let bad = |message: String| HandshakeError::with_response(message, response.clone());
    if response.status != 101 {
        return Err(bad(format!(
            "server answered {} {}",
            response.status, response.reason
        )));
    }
    if !has_token(&response.headers, "Upgrade", "websocket") {
        return Err(bad("'websocket' token not found in 'Upgrade' header".into()));
    }
    if !has_token(&response.headers, "Connection", "upgrade") {
        return Err(bad(
            "'upgrade' token not found in 'Connection' header".into()
        ));
    }
    let expected = accept_key(request.key.as_bytes());
    if response
        .header("Sec-WebSocket-Accept")
        .map(<[u8]>::trim_ascii)
        != Some(expected.as_bytes())
    {
        return Err(bad("wrong Sec-WebSocket-Accept".into()));
    }
    let subprotocol = match response.header("Sec-WebSocket-Protocol") {
        None => None,
        Some(value) => {
            let value = std::str::from_utf8(value).unwrap_or("").trim();
            if !request.subprotocols.iter().any(|p| p == value) {
                return Err(bad(format!(
                    "server chose subprotocol {value:?}, which was not offered"
                )));
            }
            Some(value.to_owned())
        }
    };
    let mut compression = None;
    for value in header_values(&response.headers, "Sec-WebSocket-Extensions") {
        if !request.enable_compression || compression.is_some() {
            return Err(bad(
                "server answered an extension that was not offered".into()
            ));
        }
        compression = Some(deflate::parse_answer(value).map_err(bad)?);
    }
    Ok(Agreed {
        subprotocol,
        compression,
    })
}

/// Whether a head read piece by piece may be whole, when the bytes before `from` were
/// already looked at and ended no head: a blank line ending at or past `from`, or `buf` at
/// the head size limit (where [`parse_request`] and [`parse_response`] report the 431).
/// A reader calls the parser only then, so a head costs its length to find however it is
/// cut; parsing again from the start after every read cost the square of it (a head sent
/// a byte at a time: 16 384 scans of up to 16 KiB).
///
/// ```
/// use ringcast::proto::handshake::{head_may_be_whole, Limits};
///
/// let limits = Limits::default();
/// let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
/// assert!(!head_may_be_whole(&head[..20], 0, &limits));
/// // The blank line's last byte arrives: only the bytes from 20 on (and 2 before) are looked at.
/// assert!(head_may_be_whole(head, 20, &limits));
/// ```
pub fn head_may_be_whole(buf: &[u8], from: usize, limits: &Limits) -> bool {
    // A blank line ending at or past `from` starts at most two bytes before it.
    buf.len() >= limits.max_head_bytes || blank_line_end(buf, from.saturating_sub(2)).is_some()
}

/// Where the head ends (just past the blank line), once it has; 431 when it is, or
/// would be, larger than the limit.
fn head_end(buf: &[u8], limits: &Limits) -> Result<Option<usize>, HandshakeError> {
    let scan = &buf[..buf.len().min(limits.max_head_bytes)];
    if let Some(end) = blank_line_end(scan, 0) {
        return Ok(Some(end));
    }
    if buf.len() >= limits.max_head_bytes {
        return Err(HandshakeError::new(
            431,
            format!("request head larger than {} bytes", limits.max_head_bytes),
        ));
    }
    Ok(None)
}

/// Just past the first blank line ("\n\n" or "\n\r\n": httparse accepts both line
/// endings) that starts at or after `start`.
fn blank_line_end(buf: &[u8], mut start: usize) -> Option<usize> {
    start = start.min(buf.len());
    while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
        let nl = start + i;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => start = nl + 1,
        }
    }
    None
}

fn parse_error(err: httparse::Error) -> HandshakeError {
    match err {
        httparse::Error::TooManyHeaders => HandshakeError::new(431, "too many header fields"),
        other => HandshakeError::new(400, format!("malformed head: {other}")),
    }
}

fn own_headers(headers: &[httparse::Header<'_>]) -> Vec<Header> {
    headers
        .iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: h.value.to_vec(),
        })
        .collect()
}

fn header_values<'h>(headers: &'h [Header], name: &'h str) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// Whether any `name` header holds `token` in its comma-separated list (case-insensitive).
fn has_token(headers: &[Header], name: &str, token: &str) -> bool {
    header_values(headers, name).any(|value| {
        value
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// RFC 6455 section 4.1: the key is base64 of 16 bytes (24 characters).
fn is_valid_key(key: &[u8]) -> bool {
    use base64::Engine as _;
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|bytes| bytes.len() == 16)
}

fn escape_request_bytes(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c <= ' ' || c == '\x7f' {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &str) {
    // Never let a header smuggle a line break into the head.
    if name
        .bytes()
        .chain(value.bytes())
        .any(|b| b == b'\r' || b == b'\n')
    {
        return;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase of the statuses ringcast answers with.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests;
