//! [`Upgrader`]: the server-side settings (gorilla/websocket's `Upgrader`) and the
//! opening handshake over a blocking stream.
//!
//! The decisions are [`proto::handshake`](crate::proto::handshake)'s (validate the
//! request, check the application's response headers, write the answer); this module
//! only reads the request head and writes the answer, all within one deadline. Three
//! entry points: [`Upgrader::upgrade`] (read the request from the stream),
//! [`Upgrader::upgrade_with`] (and look at it first), [`Upgrader::upgrade_request`] (a
//! request another server already parsed).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::stream::{time_left, timeout_kind};
use crate::conn::{Conn, ConnConfig, Stream};
use crate::error::Error;
use crate::pool::BufferPool;
use crate::proto::handshake::{
    self, Accepted, ErrorResponse, HandshakeError, Limits, Request, ServerOptions,
};
use crate::proto::Role;

/// Builds the HTTP error response for a refused handshake (gorilla/websocket's
/// `Upgrader.Error`): gets the request when one was parsed, and the error (its status and
/// message).
///
/// ```
/// use std::sync::Arc;
/// use ringcast::proto::handshake::ErrorResponse;
/// use ringcast::upgrade::ErrorResponder;
/// let responder: ErrorResponder = Arc::new(|_request, err| {
///     ErrorResponse::json(err.status(), format!(r#"{{"error":{:?}}}"#, err.message()))
/// });
/// # let _ = responder;
/// ```
pub type ErrorResponder =
    Arc<dyn Fn(Option<&Request>, &HandshakeError) -> ErrorResponse + Send + Sync>;

/// Decides whether a request's `Origin` is acceptable (gorilla/websocket's `CheckOrigin`).
pub type OriginCheck = Arc<dyn Fn(&Request) -> bool + Send + Sync>;

/// Settings for upgrading HTTP connections to WebSocket (gorilla/websocket's `Upgrader`).
///
/// ```
/// use std::time::Duration;
/// use ringcast::Upgrader;
/// let upgrader = Upgrader {
///     subprotocols: vec!["chat.v2".into(), "chat.v1".into()],
///     enable_compression: true,
///     handshake_timeout: Some(Duration::from_secs(5)),
///     ..Upgrader::default()
/// };
/// assert!(upgrader.check_origin.is_none()); // the safe same-origin default
/// ```
#[derive(Clone, Default)]
pub struct Upgrader {
    /// The longest the whole opening handshake may take, from the call to `upgrade` to
    /// the 101 written: a TLS handshake on the stream, reading the request, writing the
    /// answer. `None`: no bound. A client too slow is answered with nothing, the stream
    /// is dropped, and the error is `Io` of kind `TimedOut`.
    pub handshake_timeout: Option<Duration>,
    /// Read buffer size in bytes (0: 4096). It bounds no message size.
    pub read_buffer_size: usize,
    /// Write buffer size in bytes (0: 4096). It bounds no message size.
    pub write_buffer_size: usize,
    /// When set, a connection holds a write buffer only while writing a message.
    pub write_buffer_pool: Option<Arc<dyn BufferPool>>,
    /// Supported subprotocols in order of preference; the first one the client also
    /// asks for is chosen.
    pub subprotocols: Vec<String>,
    /// Builds error responses; `None`: a plain-text response with the status and the
    /// error's message ([`ErrorResponse::from_error`]).
    pub error: Option<ErrorResponder>,
    /// The origin check; `None`: the safe same-origin default, which refuses (403) a
    /// request whose `Origin` is present and whose host is not the `Host` header.
    pub check_origin: Option<OriginCheck>,
    /// Negotiate permessage-deflate (no context takeover) when the client offers it.
    pub enable_compression: bool,
    /// The read limit connections start with (`None`: 64 MiB, ringcast's default).
    pub read_limit: Option<u64>,
    /// Bounds on the request head (size, header count); a larger one gets 431.
    pub limits: Limits,
}

impl Upgrader {
    /// Read the upgrade request from `stream`, check it, and answer: 101 and a
    /// [`Conn`] on success (with `response_headers`, for example `Set-Cookie`, in the
    /// answer), or an HTTP error response and [`Error::Handshake`]. Response headers
    /// that contradict the negotiation (a `Sec-WebSocket-Protocol` other than the one
    /// agreed, any `Sec-WebSocket-Extensions`) are refused with a 500.
    pub fn upgrade<S: Stream>(
        &self,
        stream: S,
        response_headers: &[(String, String)],
    ) -> Result<Conn<S>, Error> {
        self.upgrade_with(stream, |_| Ok(response_headers.to_vec()))
    }

    /// Like [`upgrade`](Self::upgrade), with a look at the request first: `inspect` can
    /// refuse it (its error becomes the HTTP answer) or return headers to add to the 101.
    pub fn upgrade_with<S, F>(&self, mut stream: S, inspect: F) -> Result<Conn<S>, Error>
    where
        S: Stream,
        F: FnOnce(&Request) -> Result<Vec<(String, String)>, HandshakeError>,
    {
        let deadline = self.handshake_timeout.map(|t| Instant::now() + t);
        let (request, leftover) = match read_head(
            &mut stream,
            &self.limits,
            deadline,
            handshake::parse_request,
        ) {
            Ok(parsed) => parsed,
            Err(HeadError::Io(err)) => return Err(Error::Io(err)),
            Err(HeadError::Handshake(err)) => {
                return Err(self.refuse(&mut stream, None, err, deadline))
            }
        };
        self.finish(stream, &request, &leftover, inspect, deadline)
    }

    /// Upgrade a connection whose request head another server already read and parsed
    /// (what gorilla/websocket's `Upgrade(w, r, responseHeader)` does inside an HTTP
    /// handler): `request` is that head, `read_past_head` the bytes it read beyond it
    /// (frames a client sent at once), `stream` the connection, positioned after them.
    /// Answers as [`upgrade`](Self::upgrade) does, the answer bounded by the handshake
    /// timeout.
    ///
    /// ```no_run
    /// use std::net::TcpListener;
    /// use ringcast::proto::handshake::{Header, Request};
    /// use ringcast::{is_websocket_upgrade, Upgrader};
    ///
    /// # fn main() -> Result<(), ringcast::Error> {
    /// # let listener = TcpListener::bind("127.0.0.1:0")?;
    /// # let (stream, _) = listener.accept()?;
    /// // Your HTTP server parsed this much; ringcast takes over from here.
    /// let header = |name: &str, value: &str| Header { name: name.into(), value: value.into() };
    /// let request = Request {
    ///     method: "GET".into(),
    ///     target: "/chat".into(),
    ///     version: 1,
    ///     headers: vec![
    ///         header("Host", "example.com"),
    ///         header("Upgrade", "websocket"),
    ///         header("Connection", "Upgrade"),
    ///         header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ///         header("Sec-WebSocket-Version", "13"),
    ///     ],
    /// };
    /// assert!(is_websocket_upgrade(&request));
    /// let conn = Upgrader::default().upgrade_request(stream, &request, &[], &[])?;
    /// # let _ = conn;
    /// # Ok(())
    /// # }
    /// ```
    pub fn upgrade_request<S: Stream>(
        &self,
        stream: S,
        request: &Request,
        read_past_head: &[u8],
        response_headers: &[(String, String)],
    ) -> Result<Conn<S>, Error> {
        let deadline = self.handshake_timeout.map(|t| Instant::now() + t);
        self.finish(
            stream,
            request,
            read_past_head,
            |_| Ok(response_headers.to_vec()),
            deadline,
        )
    }

    /// Decide on a parsed request and write the answer.
    fn finish<S, F>(
        &self,
        mut stream: S,
        request: &Request,
        leftover: &[u8],
        inspect: F,
        deadline: Option<Instant>,
    ) -> Result<Conn<S>, Error>
    where
        S: Stream,
        F: FnOnce(&Request) -> Result<Vec<(String, String)>, HandshakeError>,
    {
        let (accepted, extra) = match self.decide(request, inspect) {
            Ok(decided) => decided,
            Err(err) => return Err(self.refuse(&mut stream, Some(request), err, deadline)),
        };
        let mut response = Vec::with_capacity(256);
        handshake::write_response(&accepted, &extra, &mut response);
        write_all_by(&mut stream, &response, deadline)?;
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        Ok(Conn::new(
            stream,
            Role::Server,
            self.conn_config(&accepted),
            leftover,
        ))
    }

    /// The decisions on a parsed request, with no I/O (every I/O model makes them so):
    /// check it, let `inspect` refuse it or add headers, check those against the
    /// negotiation. What was agreed and the headers to add to the 101, or why not.
    pub(crate) fn decide<F>(
        &self,
        request: &Request,
        inspect: F,
    ) -> Result<(Accepted, Vec<(String, String)>), HandshakeError>
    where
        F: FnOnce(&Request) -> Result<Vec<(String, String)>, HandshakeError>,
    {
        let mut accepted = self.accept(request)?;
        let extra = inspect(request)?;
        self.check_response_headers(&mut accepted, request, &extra)?;
        Ok((accepted, extra))
    }

    /// The settings a connection upgraded with `accepted` starts with.
    pub(crate) fn conn_config(&self, accepted: &Accepted) -> ConnConfig {
        ConnConfig {
            read_buffer_size: self.read_buffer_size,
            write_buffer_size: self.write_buffer_size,
            write_buffer_pool: self.write_buffer_pool.clone(),
            subprotocol: accepted.subprotocol.clone(),
            compression: accepted.compression,
            read_limit: self.read_limit,
        }
    }

    fn options(&self) -> ServerOptions<'_> {
        ServerOptions {
            subprotocols: &self.subprotocols,
            enable_compression: self.enable_compression,
            check_origin: self
                .check_origin
                .as_deref()
                .map(|f| f as &dyn Fn(&Request) -> bool),
        }
    }

    /// Check a parsed upgrade request against these settings (origin, version, key) and
    /// agree on subprotocol and compression. The engine calls this too.
    pub fn accept(&self, request: &Request) -> Result<Accepted, HandshakeError> {
        handshake::validate_request(request, &self.options())
    }

    /// Check the headers an application adds to the 101 against what [`accept`](Self::accept)
    /// agreed ([`handshake::check_response_headers`]); the engine calls this too.
    pub fn check_response_headers(
        &self,
        accepted: &mut Accepted,
        request: &Request,
        headers: &[(String, String)],
    ) -> Result<(), HandshakeError> {
        handshake::check_response_headers(accepted, request, &self.options(), headers)
    }

    /// Append the HTTP answer to a refused handshake: the error responder's, or the
    /// default plain-text one.
    pub fn write_refusal(
        &self,
        request: Option<&Request>,
        err: &HandshakeError,
        out: &mut Vec<u8>,
    ) {
        self.error_response(request, err).write(out);
    }

    /// The answer to a refused handshake: the error responder's, or the default
    /// plain-text one ([`ErrorResponse::from_error`]).
    pub fn error_response(&self, request: Option<&Request>, err: &HandshakeError) -> ErrorResponse {
        match &self.error {
            Some(responder) => responder(request, err),
            None => ErrorResponse::from_error(err),
        }
    }

    /// Answer a connection you will not upgrade with the error response for `err`
    /// (through [`error`](Self::error) when set), then shut it down: refusals of your own
    /// (a 503 when full, a 401) answered as a refused handshake is. The write is
    /// bounded by the handshake timeout; its failure is ignored, since the client may
    /// already be gone. Returns `err` as an [`Error::Handshake`].
    pub fn refuse_with<S: Stream>(
        &self,
        stream: &mut S,
        request: Option<&Request>,
        err: HandshakeError,
    ) -> Error {
        let deadline = self.handshake_timeout.map(|t| Instant::now() + t);
        self.refuse(stream, request, err, deadline)
    }

    fn refuse<S: Stream>(
        &self,
        stream: &mut S,
        request: Option<&Request>,
        err: HandshakeError,
        deadline: Option<Instant>,
    ) -> Error {
        let mut response = Vec::with_capacity(256);
        self.write_refusal(request, &err, &mut response);
        // Best effort: the client may already be gone, and the handshake error is what
        // the caller needs to hear about.
        let _ = write_all_by(stream, &response, deadline);
        let _ = stream.shutdown();
        Error::Handshake(err)
    }
}

/// Write `bytes` whole by `deadline`.
pub(crate) fn write_all_by<S: Stream>(
    stream: &mut S,
    bytes: &[u8],
    deadline: Option<Instant>,
) -> io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        stream.set_write_timeout(time_left(deadline, "handshake write")?)?;
        match stream.write_by(&bytes[written..], deadline) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timeout_kind(e, deadline)),
        }
    }
    stream.flush()
}

/// Why reading a head stopped.
#[derive(Debug)]
pub(crate) enum HeadError {
    Io(io::Error),
    Handshake(HandshakeError),
}

/// Read an HTTP head of either kind with `parse`, bounded by `limits` (never more than
/// the head may hold, plus one read past it, whatever the peer sends) and by `deadline`
/// as a whole: a peer sending a byte at a time cannot stretch it.
pub(crate) fn read_head<S, T, P>(
    stream: &mut S,
    limits: &Limits,
    deadline: Option<Instant>,
    parse: P,
) -> Result<(T, Vec<u8>), HeadError>
where
    S: Stream,
    P: Fn(&[u8], &Limits) -> Result<Option<(T, usize)>, HandshakeError>,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; HEAD_CHUNK];
    let mut from = 0;
    loop {
        if let Some(parsed) = parse_head(&mut buf, from, limits, &parse)? {
            return Ok(parsed);
        }
        from = buf.len();
        let room = head_room(buf.len(), limits);
        let left = time_left(deadline, "handshake").map_err(HeadError::Io)?;
        stream.set_read_timeout(left).map_err(HeadError::Io)?;
        match stream.read_by(&mut chunk[..room], deadline) {
            Ok(0) => return Err(head_cut_short(buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HeadError::Io(timeout_kind(e, deadline))),
        }
    }
}

/// The most bytes one read of a head asks for.
pub(crate) const HEAD_CHUNK: usize = 2048;

/// The head in `buf` once whole, with the bytes read past it; `None`: read more. The
/// bytes before `from` were looked at by an earlier call (see
/// [`handshake::head_may_be_whole`]).
pub(crate) fn parse_head<T, P>(
    buf: &mut Vec<u8>,
    from: usize,
    limits: &Limits,
    parse: &P,
) -> Result<Option<(T, Vec<u8>)>, HeadError>
where
    P: Fn(&[u8], &Limits) -> Result<Option<(T, usize)>, HandshakeError>,
{
    if !handshake::head_may_be_whole(buf, from, limits) {
        return Ok(None);
    }
    match parse(buf, limits) {
        Ok(Some((head, used))) => Ok(Some((head, buf.split_off(used)))),
        Ok(None) => Ok(None),
        Err(err) => Err(HeadError::Handshake(err)),
    }
}

/// How many bytes the next read of a head may take when `have` are read: never more
/// than the head may hold plus one read past it, whatever the peer sends.
pub(crate) fn head_room(have: usize, limits: &Limits) -> usize {
    (limits.max_head_bytes + HEAD_CHUNK)
        .saturating_sub(have)
        .clamp(1, HEAD_CHUNK)
}

/// The error for a stream that ended inside a head.
pub(crate) fn head_cut_short(have: usize) -> HeadError {
    HeadError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed after {have} bytes of handshake"),
    ))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::{Read, Write};

    use super::*;

    /// A peer that hands out its bytes one per read.
    struct Drip {
        bytes: Vec<u8>,
        pos: usize,
    }

    impl Read for Drip {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.bytes.get(self.pos), buf.first_mut()) {
                (Some(&byte), Some(slot)) => {
                    *slot = byte;
                    self.pos += 1;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    impl Write for Drip {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Stream for Drip {}

    #[test]
    fn a_head_read_a_byte_at_a_time_is_parsed_once_when_whole() {
        let mut bytes = b"GET /ws HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..100 {
            bytes.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(100)).as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        let head_len = bytes.len();
        bytes.extend_from_slice(b"not read yet");
        let mut stream = Drip { bytes, pos: 0 };
        let parses = Cell::new(0);
        let (request, leftover) =
            read_head(&mut stream, &Limits::default(), None, |buf, limits| {
                parses.set(parses.get() + 1);
                handshake::parse_request(buf, limits)
            })
            .expect("a whole head");
        // Parsed once, not once per byte: 11 KiB a byte at a time used to cost 11 K parses
        // from the start of the head.
        assert_eq!(parses.get(), 1);
        assert_eq!(request.target, "/ws");
        assert_eq!(request.headers.len(), 101);
        assert_eq!(stream.pos, head_len);
        assert!(leftover.is_empty());
    }

    #[test]
    fn a_head_without_an_end_is_refused_at_the_size_limit_however_it_is_cut() {
        let limits = Limits {
            max_head_bytes: 1024,
            ..Limits::default()
        };
        let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 4096));
        let mut stream = Drip { bytes, pos: 0 };
        match read_head(&mut stream, &limits, None, handshake::parse_request) {
            Err(HeadError::Handshake(err)) => assert_eq!(err.status(), 431),
            Err(HeadError::Io(err)) => panic!("expected a 431, got {err}"),
            Ok(_) => panic!("expected a 431, got a head"),
        }
        assert_eq!(stream.pos, 1024);
    }
}
