//! The one public [`Error`], [`CloseError`], and gorilla/websocket's helpers
//! [`is_close_error`] and [`is_unexpected_close_error`].

use std::io;

use crate::proto::{CloseCode, ProtocolError};

pub use crate::proto::handshake::HandshakeError;

/// A close frame received from the peer: gorilla/websocket's `*CloseError`. Reading it as an
/// error does not mean anything went wrong: a normal close (1000) or a browser leaving
/// (1001) arrive this way too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("close {code} ({reason:?})")]
pub struct CloseError {
    /// The received code, or [`CloseCode::NO_STATUS_RECEIVED`] when the close frame
    /// had no body, or [`CloseCode::ABNORMAL_CLOSURE`] when the connection dropped.
    pub code: CloseCode,
    /// The optional text of the close frame.
    pub reason: String,
}

/// Everything that can go wrong with a WebSocket connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke a protocol rule; the connection was failed with the rule's code.
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// The opening handshake failed (gorilla/websocket's `ErrBadHandshake` and `HandshakeError`).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The peer closed the connection. This is how a normal close is reported too:
    /// check the code with [`is_unexpected_close_error`].
    #[error("{0}")]
    Closed(CloseError),
    /// A message was written after a close frame was sent (gorilla/websocket's `ErrCloseSent`).
    #[error("close sent")]
    CloseSent,
    /// A message was larger than the read limit (gorilla/websocket's `ErrReadLimit`); the
    /// connection was closed with 1009.
    #[error("read limit of {limit} bytes exceeded")]
    ReadLimit {
        /// The limit in force.
        limit: u64,
    },
    /// A setting or argument was invalid; the text names it.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A worker's command queue held its byte budget (the engine's
    /// `ServerConfig::max_handoff_bytes`), so the command (a publish, a send, a close, a
    /// dial) was not queued; a publish is then refused on every worker. Try again later,
    /// or use a waiting form such as `ServerHandle::publish_timeout`.
    #[error("worker {worker}'s command queue is at its budget of {budget} bytes")]
    QueueFull {
        /// The worker whose queue was full.
        worker: usize,
        /// Its budget in bytes.
        budget: usize,
    },
    /// A connection asked to subscribe to more topics than the engine's
    /// `ServerConfig::max_topics_per_connection` allows; the subscription was not made.
    #[error("connection already subscribed to {limit} topics (max_topics_per_connection)")]
    TopicLimit {
        /// The limit in force.
        limit: usize,
    },
    /// JSON encoding or decoding failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The underlying stream failed (a deadline passing is `TimedOut` or `WouldBlock`).
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl From<ProtocolError> for Error {
    fn from(err: ProtocolError) -> Self {
        match err {
            ProtocolError::MessageTooBig { limit } => Error::ReadLimit { limit },
            other => Error::Protocol(other),
        }
    }
}

impl From<CloseError> for Error {
    fn from(err: CloseError) -> Self {
        Error::Closed(err)
    }
}

impl Error {
    /// The close frame received, if this error is one.
    pub fn as_close(&self) -> Option<&CloseError> {
        match self {
            Error::Closed(close) => Some(close),
            _ => None,
        }
    }

    /// The same error again, for a connection that keeps returning the error that ended
    /// it. `Io` and `Json` errors keep their kind and text (their sources cannot be
    /// cloned).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Protocol(err) => Error::Protocol(*err),
            Error::Handshake(err) => Error::Handshake(err.clone()),
            Error::Closed(close) => Error::Closed(close.clone()),
            Error::CloseSent => Error::CloseSent,
            Error::ReadLimit { limit } => Error::ReadLimit { limit: *limit },
            Error::InvalidArgument(text) => Error::InvalidArgument(text.clone()),
            Error::QueueFull { worker, budget } => Error::QueueFull {
                worker: *worker,
                budget: *budget,
            },
            Error::TopicLimit { limit } => Error::TopicLimit { limit: *limit },
            Error::Json(err) => Error::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("json: {err}"),
            )),
            Error::Io(err) => Error::Io(io::Error::new(err.kind(), err.to_string())),
        }
    }
}

/// Whether `err` is a received close with one of `codes` (gorilla/websocket's `IsCloseError`).
///
/// ```
/// use ringcast::{is_close_error, CloseCode, CloseError, Error};
/// let err = Error::Closed(CloseError { code: CloseCode::GOING_AWAY, reason: String::new() });
/// assert!(is_close_error(&err, &[CloseCode::NORMAL_CLOSURE, CloseCode::GOING_AWAY]));
/// ```
pub fn is_close_error(err: &Error, codes: &[CloseCode]) -> bool {
    err.as_close().is_some_and(|c| codes.contains(&c.code))
}

/// Whether `err` is a received close whose code is not in `expected` (gorilla/websocket's
/// `IsUnexpectedCloseError`): useful to log only abnormal closes.
///
/// ```
/// use ringcast::{is_unexpected_close_error, CloseCode, CloseError, Error};
/// let err = Error::Closed(CloseError { code: CloseCode::PROTOCOL_ERROR, reason: String::new() });
/// assert!(is_unexpected_close_error(&err, &[CloseCode::GOING_AWAY]));
/// ```
pub fn is_unexpected_close_error(err: &Error, expected: &[CloseCode]) -> bool {
    err.as_close().is_some_and(|c| !expected.contains(&c.code))
}

/// Format a close message payload, as gorilla/websocket's `FormatCloseMessage`: the code in two
/// bytes then the text; empty for [`CloseCode::NO_STATUS_RECEIVED`].
///
/// The text is never cut. A close frame carries at most 125 bytes, so a text over 123
/// bytes ([`MAX_REASON_BYTES`](crate::proto::close::MAX_REASON_BYTES)) gives a payload
/// that `write_control` refuses with [`Error::InvalidArgument`], as gorilla/websocket's
/// `WriteControl` does; [`Conn::close_with`](crate::Conn::close_with) refuses such a
/// reason up front.
///
/// ```
/// use ringcast::{format_close_message, CloseCode};
/// assert_eq!(format_close_message(CloseCode::NORMAL_CLOSURE, "bye"), b"\x03\xe8bye");
/// assert!(format_close_message(CloseCode::NO_STATUS_RECEIVED, "").is_empty());
/// assert_eq!(format_close_message(CloseCode::GOING_AWAY, &"x".repeat(200)).len(), 202);
/// ```
pub fn format_close_message(code: CloseCode, text: &str) -> Vec<u8> {
    if code == CloseCode::NO_STATUS_RECEIVED {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(2 + text.len());
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: u16) -> Error {
        Error::Closed(CloseError {
            code: CloseCode(code),
            reason: String::new(),
        })
    }

    #[test]
    fn read_limit_protocol_error_becomes_read_limit_error() {
        let err: Error = ProtocolError::MessageTooBig { limit: 10 }.into();
        assert!(matches!(err, Error::ReadLimit { limit: 10 }));
    }

    #[test]
    fn format_close_message_never_cuts_the_reason() {
        let reason = "é".repeat(100); // 200 bytes
        let payload = format_close_message(CloseCode::GOING_AWAY, &reason);
        assert_eq!(payload.len(), 202);
        assert_eq!(&payload[2..], reason.as_bytes());
    }

    #[test]
    fn a_duplicated_error_keeps_its_variant_and_kind() {
        let io = Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "read deadline passed",
        ));
        assert!(matches!(io.duplicate(), Error::Io(e) if e.kind() == io::ErrorKind::TimedOut));
        assert!(matches!(closed(1001).duplicate(), Error::Closed(c) if c.code.0 == 1001));
        let limit = Error::ReadLimit { limit: 9 };
        assert!(matches!(limit.duplicate(), Error::ReadLimit { limit: 9 }));
    }

    #[test]
    fn is_close_error_ignores_other_errors() {
        let err = Error::CloseSent;
        assert!(!is_close_error(&err, &[CloseCode::NORMAL_CLOSURE]));
        assert!(!is_unexpected_close_error(&err, &[]));
    }

    #[test]
    fn expected_close_code_is_not_unexpected() {
        assert!(!is_unexpected_close_error(
            &closed(1001),
            &[CloseCode::GOING_AWAY]
        ));
        assert!(is_unexpected_close_error(
            &closed(4000),
            &[CloseCode::GOING_AWAY]
        ));
    }
}
