//! [`Message`]: one message as the `Stream` gives it and the `Sink` takes it.

use bytes::Bytes;

use crate::error::{CloseError, Error};
use crate::proto::{CloseCode, MessageType, ProtocolError};

/// A message, as an [`AsyncConn`](super::AsyncConn)'s `Stream` yields it and its `Sink`
/// takes it.
///
/// The `Stream` yields `Text` and `Binary`, and a received close as its last item
/// (`Close`, after the close handler answered it). Pings and pongs go to the ping and
/// pong handlers (the default ping handler answers with a pong) and are not yielded.
/// The `Sink` takes every kind: `Ping`, `Pong` and `Close` are written as control frames.
///
/// ```
/// use ringcast::async_conn::{CloseFrame, Message};
/// use ringcast::CloseCode;
/// let hello = Message::from("hello");
/// assert_eq!(hello.as_bytes(), b"hello");
/// let bye = Message::Close(Some(CloseFrame { code: CloseCode::GOING_AWAY, reason: "bye".into() }));
/// assert!(bye.is_close());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8, checked on receipt).
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A ping with its application data (at most 125 bytes).
    Ping(Bytes),
    /// A pong with its application data (at most 125 bytes).
    Pong(Bytes),
    /// A close frame: `None` has no body (received: the peer sent no code).
    Close(Option<CloseFrame>),
}

/// The code and reason of a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code.
    pub code: CloseCode,
    /// The reason, at most 123 bytes (a longer one is refused when sent).
    pub reason: String,
}

impl Message {
    /// The message's payload bytes (a close frame's reason).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data,
            Message::Close(frame) => frame.as_ref().map_or(&[], |f| f.reason.as_bytes()),
        }
    }

    /// The `MessageType` of this message (text, binary, close, ping or pong).
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Text(_) => MessageType::Text,
            Message::Binary(_) => MessageType::Binary,
            Message::Ping(_) => MessageType::Ping,
            Message::Pong(_) => MessageType::Pong,
            Message::Close(_) => MessageType::Close,
        }
    }

    /// Whether this is a text or binary message.
    pub fn is_data(&self) -> bool {
        matches!(self, Message::Text(_) | Message::Binary(_))
    }

    /// Whether this is a close frame.
    pub fn is_close(&self) -> bool {
        matches!(self, Message::Close(_))
    }

    /// A data message read from the connection: text was checked as UTF-8 by the
    /// decoder, so the check here never fails on bytes that came from it.
    pub(crate) fn data(message_type: MessageType, payload: Vec<u8>) -> Result<Message, Error> {
        match message_type {
            MessageType::Text => String::from_utf8(payload)
                .map(Message::Text)
                .map_err(|_| Error::Protocol(ProtocolError::InvalidUtf8)),
            _ => Ok(Message::Binary(Bytes::from(payload))),
        }
    }

    /// The last item of a stream that received a close.
    pub(crate) fn closed(close: &CloseError) -> Message {
        if close.code == CloseCode::NO_STATUS_RECEIVED {
            return Message::Close(None);
        }
        Message::Close(Some(CloseFrame {
            code: close.code,
            reason: close.reason.clone(),
        }))
    }
}

impl From<String> for Message {
    fn from(text: String) -> Message {
        Message::Text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Message {
        Message::Text(text.to_owned())
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Message {
        Message::Binary(data)
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Message {
        Message::Binary(Bytes::from(data))
    }
}
