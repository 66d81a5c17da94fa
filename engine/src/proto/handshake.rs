//! The opening handshake (RFC 6455 section 4), both sides, with no I/O.
//!
//! Server side: [`parse_request`] (bounded size and header count), [`validate_request`]
//! (method, version, Upgrade, Connection, key, origin, subprotocol, permessage-deflate),
//! [`write_response`] / [`write_error_response`]. Client side: [`write_request`],
//! [`parse_response`], [`validate_response`].

use std::borrow::Cow;

use super::deflate::PerMessageDeflate;

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
/// [`response`](Self::response) holds what it said. This is the seed's
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
    let _ = (buf, limits);
    todo!()
}

/// Whether the request asks to upgrade to WebSocket: a `Connection` token list with
/// `upgrade` and an `Upgrade` list with `websocket` (case-insensitive).
pub fn is_websocket_upgrade(request: &Request) -> bool {
    let _ = request;
    todo!()
}

/// The subprotocols the client asked for in `Sec-WebSocket-Protocol`, in its order.
pub fn subprotocols(request: &Request) -> Vec<String> {
    let _ = request;
    todo!()
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(sha1(key + GUID)).
///
/// ```
/// use ringcast::proto::handshake::accept_key;
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let _ = key;
    todo!()
}

/// The safe default origin check of the seed: pass when `Origin` is absent, or when its
/// host equals the `Host` header (case-insensitive).
pub fn check_same_origin(request: &Request) -> bool {
    let _ = request;
    todo!()
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
    let _ = (request, options);
    todo!()
}

/// Append the `101 Switching Protocols` response, with `extra_headers` (for example
/// `Set-Cookie`) after the WebSocket ones.
pub fn write_response(accepted: &Accepted, extra_headers: &[(String, String)], out: &mut Vec<u8>) {
    let _ = (accepted, extra_headers, out);
    todo!()
}

/// Append a complete error response for `error`: its status, a plain-text body with its
/// message, `Connection: close`, and `Sec-WebSocket-Version: 13` on a 426.
pub fn write_error_response(error: &HandshakeError, out: &mut Vec<u8>) {
    let _ = (error, out);
    todo!()
}

/// A fresh `Sec-WebSocket-Key`: base64 of 16 random bytes.
pub fn generate_key() -> String {
    todo!()
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
    /// Offer permessage-deflate (with no context takeover both ways, as the seed does).
    pub enable_compression: bool,
    /// More header fields (Origin, Cookie, Authorization...).
    pub extra_headers: &'a [(String, String)],
}

/// Append the upgrade request head.
pub fn write_request(request: &ClientRequest<'_>, out: &mut Vec<u8>) {
    let _ = (request, out);
    todo!()
}

/// Parse a response head from the start of `buf`, as [`parse_request`] does.
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Response, usize)>, HandshakeError> {
    let _ = (buf, limits);
    todo!()
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
    let _ = (response, request);
    todo!()
}
