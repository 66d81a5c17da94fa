//! [`Handler`]: what an application gives the engine, one instance per worker; and
//! [`HttpResponse`], the answer to a plain HTTP request.
//!
//! One handler per worker means no lock on the hot path: each worker calls its own
//! instance from its own thread. State shared by all workers goes behind the
//! application's own `Arc`s, or through [`ServerHandle`](super::ServerHandle).

use bytes::Bytes;

use super::deferred::UpgradeAnswer;
use super::socket::Socket;
use crate::error::Error;
use crate::proto::handshake::{reason_phrase, HandshakeError, Request};
use crate::proto::{CloseCode, MessageType};

/// The application's callbacks. Every method has a default, so a handler implements
/// only what it needs.
///
/// ```
/// use ringcast::server::{Handler, Socket};
/// use ringcast::MessageType;
///
/// /// Echoes every message back to its sender.
/// struct Echo;
///
/// impl Handler for Echo {
///     type Data = ();
///     fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
///         let _ = socket.send(kind, payload);
///     }
/// }
/// # let _ = Echo;
/// ```
pub trait Handler: 'static {
    /// Per-connection state of the handler's choosing, created with `Default` when the
    /// connection opens and reached with [`Socket::data`].
    type Data: Default + 'static;

    /// Look at an upgrade request before it is accepted: refuse it (the error's status
    /// is the HTTP answer) or return headers to add to the 101. Default: accept.
    fn on_upgrade(&mut self, request: &Request) -> Result<Vec<(String, String)>, HandshakeError> {
        let _ = request;
        Ok(Vec::new())
    }

    /// Whether to decide on an upgrade request later, off the worker: keep `answer` and
    /// return `None`, then answer from a task or thread of your own once you know
    /// ([`UpgradeAnswer::accept`], [`UpgradeAnswer::refuse`]): an app that must await a
    /// session store or an auth service does so without blocking the worker, which goes
    /// on serving every other connection. Return `Some(answer)` to decide now with
    /// [`on_upgrade`](Self::on_upgrade), as the default does. Called after the upgrader's
    /// own checks (version, key, origin) passed; the connection waits within the
    /// handshake timeout, and up to 64 KiB that the client sends meanwhile are kept for
    /// after the 101 (more closes it).
    fn defer_upgrade(&mut self, request: &Request, answer: UpgradeAnswer) -> Option<UpgradeAnswer> {
        let _ = request;
        Some(answer)
    }

    /// A connection opened; `request` is its upgrade request (path, query, headers).
    fn on_open(&mut self, socket: &mut Socket<'_, Self::Data>, request: &Request) {
        let _ = (socket, request);
    }

    /// A whole data message arrived. The payload is borrowed from the engine's buffer:
    /// copy it (`to_vec`) to keep it.
    fn on_message(
        &mut self,
        socket: &mut Socket<'_, Self::Data>,
        message_type: MessageType,
        payload: &[u8],
    ) {
        let _ = (socket, message_type, payload);
    }

    /// The connection is closing: `code` is the peer's close code, or why the engine
    /// closed it (1006 when the stream dropped, 1008 for a slow consumer, 1001 on
    /// shutdown...). Sends are refused from here on.
    fn on_close(&mut self, socket: &mut Socket<'_, Self::Data>, code: CloseCode, reason: &str) {
        let _ = (socket, code, reason);
    }

    /// The connection's queue, once over half its cap, fell back to half or less: a good
    /// moment to resume sending to it.
    fn on_drain(&mut self, socket: &mut Socket<'_, Self::Data>) {
        let _ = socket;
    }

    /// A plain HTTP request (not an upgrade) arrived. Default: 426 Upgrade Required.
    fn on_http(&mut self, request: &Request) -> HttpResponse {
        let _ = request;
        HttpResponse::upgrade_required()
    }

    /// An outgoing connection ([`ServerHandle::dial`](super::ServerHandle::dial)) failed to
    /// connect or to complete its handshake; `tag` is the request's.
    fn on_dial_error(&mut self, tag: u64, error: Error) {
        tracing::debug!(tag, %error, "dial failed");
    }
}

/// The answer to a plain HTTP request. The connection is closed after it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header fields (Content-Length and Connection are added by the engine).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// A response with `status`, a `Content-Type`, and `body`.
    ///
    /// ```
    /// use ringcast::server::HttpResponse;
    /// let page = HttpResponse::new(200, "text/html; charset=utf-8", "<h1>hi</h1>");
    /// assert_eq!(page.status, 200);
    /// ```
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// 426 Upgrade Required with `Sec-WebSocket-Version: 13`: this endpoint speaks
    /// WebSocket only.
    pub fn upgrade_required() -> HttpResponse {
        let mut response =
            HttpResponse::new(426, "text/plain; charset=utf-8", "upgrade required\n");
        response
            .headers
            .push(("Sec-WebSocket-Version".into(), "13".into()));
        response
    }

    /// 404 Not Found.
    pub fn not_found() -> HttpResponse {
        HttpResponse::new(404, "text/plain; charset=utf-8", "not found\n")
    }

    /// Append the whole response (head and body) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (name, value) in &self.headers {
            // Never let a header smuggle a line break into the response.
            if name
                .bytes()
                .chain(value.bytes())
                .any(|b| b == b'\r' || b == b'\n')
            {
                continue;
            }
            let _ = write!(out, "{name}: {value}\r\n");
        }
        let _ = write!(
            out,
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        );
        out.extend_from_slice(&self.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_has_length_and_close_and_drops_injected_headers() {
        let mut response = HttpResponse::new(200, "text/plain", "hi");
        response
            .headers
            .push(("X-Evil".into(), "a\r\nSet-Cookie: x".into()));
        let mut out = Vec::new();
        response.write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(!text.contains("Set-Cookie"));
        assert!(text.ends_with("\r\n\r\nhi"));
    }
}
