//! [`Upgrader`]: the seed's server-side settings and the opening handshake over a
//! blocking stream.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use crate::conn::{Conn, ConnConfig, Stream};
use crate::error::Error;
use crate::pool::BufferPool;
use crate::proto::handshake::{self, HandshakeError, Limits, Request, ServerOptions};
use crate::proto::Role;

/// Writes the HTTP error response for a failed handshake (the seed's `Upgrader.Error`).
/// Gets the request when one was parsed, and appends a whole response to the buffer.
pub type ErrorResponder =
    Arc<dyn Fn(Option<&Request>, &HandshakeError, &mut Vec<u8>) + Send + Sync>;

/// Decides whether a request's `Origin` is acceptable (the seed's `CheckOrigin`).
pub type OriginCheck = Arc<dyn Fn(&Request) -> bool + Send + Sync>;

/// Settings for upgrading HTTP connections to WebSocket: the seed's `Upgrader`.
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
    /// The longest the opening handshake may take; `None`: no bound. A slow or silent
    /// client is answered with nothing and the stream is dropped.
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
    /// Writes error responses; `None`: a plain-text response with the status.
    pub error: Option<ErrorResponder>,
    /// The origin check; `None`: refuse a present `Origin` whose host is not `Host`
    /// (403), the seed's safe default.
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
    /// answer), or an HTTP error response and [`Error::Handshake`].
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
        stream.set_read_timeout(self.handshake_timeout)?;
        stream.set_write_timeout(self.handshake_timeout)?;
        let (request, leftover) = match read_head(&mut stream, &self.limits) {
            Ok(parsed) => parsed,
            Err(HeadError::Io(err)) => return Err(Error::Io(err)),
            Err(HeadError::Handshake(err)) => return Err(self.refuse(&mut stream, None, err)),
        };
        let accepted = match self.accept(&request) {
            Ok(accepted) => accepted,
            Err(err) => return Err(self.refuse(&mut stream, Some(&request), err)),
        };
        let extra = match inspect(&request) {
            Ok(extra) => extra,
            Err(err) => return Err(self.refuse(&mut stream, Some(&request), err)),
        };
        let mut response = Vec::with_capacity(256);
        handshake::write_response(&accepted, &extra, &mut response);
        stream.write_all(&response)?;
        stream.flush()?;
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        let config = ConnConfig {
            read_buffer_size: self.read_buffer_size,
            write_buffer_size: self.write_buffer_size,
            write_buffer_pool: self.write_buffer_pool.clone(),
            subprotocol: accepted.subprotocol,
            compression: accepted.compression,
            read_limit: self.read_limit,
        };
        Ok(Conn::new(stream, Role::Server, config, &leftover))
    }

    /// Check a parsed upgrade request against these settings (origin, version, key) and
    /// agree on subprotocol and compression. The engine calls this too.
    pub fn accept(&self, request: &Request) -> Result<handshake::Accepted, HandshakeError> {
        let origin_fn = self
            .check_origin
            .as_deref()
            .map(|f| f as &dyn Fn(&Request) -> bool);
        let options = ServerOptions {
            subprotocols: &self.subprotocols,
            enable_compression: self.enable_compression,
            check_origin: origin_fn,
        };
        handshake::validate_request(request, &options)
    }

    /// Append the HTTP answer to a refused handshake: the error responder's, or a plain
    /// one with the status.
    pub fn write_refusal(
        &self,
        request: Option<&Request>,
        err: &HandshakeError,
        out: &mut Vec<u8>,
    ) {
        match &self.error {
            Some(responder) => responder(request, err, out),
            None => handshake::write_error_response(err, out),
        }
    }

    /// Answer a refused handshake and turn it into the returned error.
    fn refuse<S: Stream>(
        &self,
        stream: &mut S,
        request: Option<&Request>,
        err: HandshakeError,
    ) -> Error {
        let mut response = Vec::with_capacity(256);
        self.write_refusal(request, &err, &mut response);
        // Best effort: the client may already be gone, and the handshake error is what
        // the caller needs to hear about.
        let _ = stream.write_all(&response).and_then(|()| stream.flush());
        let _ = stream.shutdown();
        Error::Handshake(err)
    }
}

/// Why reading a request head stopped.
pub(crate) enum HeadError {
    Io(io::Error),
    Handshake(HandshakeError),
}

/// Read an HTTP request head (bounded by `limits`) and return it with any bytes read
/// past it.
pub(crate) fn read_head<S: Read>(
    stream: &mut S,
    limits: &Limits,
) -> Result<(Request, Vec<u8>), HeadError> {
    read_head_with(stream, limits, handshake::parse_request)
}

/// Read an HTTP head of either kind with `parse`, bounded by `limits`: never more than
/// the head may hold (plus one read past it), whatever the peer sends.
pub(crate) fn read_head_with<S, T, P>(
    stream: &mut S,
    limits: &Limits,
    parse: P,
) -> Result<(T, Vec<u8>), HeadError>
where
    S: Read,
    P: Fn(&[u8], &Limits) -> Result<Option<(T, usize)>, HandshakeError>,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        match parse(&buf, limits) {
            Ok(Some((head, used))) => return Ok((head, buf.split_off(used))),
            Ok(None) => {}
            Err(err) => return Err(HeadError::Handshake(err)),
        }
        let room = (limits.max_head_bytes + chunk.len())
            .saturating_sub(buf.len())
            .min(chunk.len());
        match stream.read(&mut chunk[..room.max(1)]) {
            Ok(0) => {
                return Err(HeadError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {} bytes of handshake", buf.len()),
                )))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}
