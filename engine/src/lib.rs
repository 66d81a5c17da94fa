//! # ringcast
//!
//! A WebSocket library (RFC 6455, permessage-deflate RFC 7692) and a thread-per-core
//! io_uring broadcast engine. Its API follows the vocabulary of the Go library
//! gorilla/websocket (Upgrader, Dialer, Conn, PreparedMessage, close codes), spelled
//! the Rust way.
//!
//! - [`proto`]: the sans-IO protocol core (frames, masking, UTF-8, close codes,
//!   handshake, permessage-deflate). Bytes in, events and bytes out.
//! - [`Upgrader`] and [`Conn`]: the seed's blocking server API over any [`conn::Stream`].
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]

pub mod conn;
pub mod error;
pub mod pool;
pub mod prepared;
pub mod proto;
pub mod server;
pub mod upgrade;

pub use conn::{join_messages, Conn};
pub use error::{
    format_close_message, is_close_error, is_unexpected_close_error, CloseError, Error,
    HandshakeError,
};
pub use pool::{BufferPool, SimpleBufferPool};
pub use prepared::PreparedMessage;
pub use proto::handshake::{is_websocket_upgrade, subprotocols};
pub use proto::{CloseCode, MessageType};
pub use upgrade::Upgrader;
