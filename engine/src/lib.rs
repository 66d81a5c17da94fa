//! # ringcast
//!
//! A WebSocket library (RFC 6455, permessage-deflate RFC 7692) and a thread-per-core
//! io_uring broadcast engine. Its API follows the vocabulary of the Go library
//! gorilla/websocket (Upgrader, Dialer, Conn, PreparedMessage, close codes), spelled
//! the Rust way; `docs/api-map.md` lists every Go name with its ringcast name.
//!
//! - [`proto`]: the sans-IO protocol core (frames, masking, UTF-8, close codes,
//!   handshake, permessage-deflate). Bytes in, events and bytes out.
//! - [`Upgrader`] and [`Conn`]: the seed's blocking API over any [`conn::Stream`].
//! - [`PreparedMessage`]: one message, each wire form built once, sent to many.
//! - [`sys`]: the kernel boundary under the engine (io_uring with an epoll fallback),
//!   and the only module with `unsafe`. Public for the load generator and for users who
//!   build their own loop; it knows nothing of WebSocket.
//!
//! ## Quick start
//!
//! An echo server, one thread per connection:
//!
//! ```no_run
//! use std::net::TcpListener;
//! use ringcast::Upgrader;
//!
//! # fn main() -> Result<(), ringcast::Error> {
//! let listener = TcpListener::bind("127.0.0.1:9001")?;
//! let upgrader = Upgrader { enable_compression: true, ..Upgrader::default() };
//! for stream in listener.incoming() {
//!     let mut conn = upgrader.upgrade(stream?, &[])?;
//!     std::thread::spawn(move || {
//!         while let Ok((kind, payload)) = conn.read_message() {
//!             if conn.write_message(kind, &payload).is_err() {
//!                 break;
//!             }
//!         }
//!     });
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The protocol core on its own, no socket:
//!
//! ```
//! use ringcast::proto::{deflate::Inflater, Decoder, Encoder, Event, OpCode, Role};
//! use ringcast::MessageType;
//!
//! let mut wire = Vec::new();
//! Encoder::new(Role::Client).encode_frame(OpCode::Text, true, false, b"hi", &mut wire);
//! let mut server = Decoder::new(Role::Server);
//! let mut inflater = Inflater::new(); // only used by compressed messages
//! let (_, event) = server.decode(&mut wire, &mut inflater)?;
//! assert_eq!(event, Some(Event::Message(MessageType::Text, b"hi")));
//! # Ok::<(), ringcast::proto::ProtocolError>(())
//! ```
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]

#[cfg(feature = "tokio")]
pub mod async_conn;
pub mod client;
pub mod conn;
pub mod error;
pub mod pool;
pub mod prepared;
pub mod proto;
#[cfg(all(feature = "engine", target_os = "linux"))]
pub mod server;
#[cfg(all(feature = "engine", target_os = "linux"))]
pub mod sys;
pub mod upgrade;

#[cfg(all(feature = "engine", not(target_os = "linux")))]
compile_error!(
    "ringcast's engine (`server`, `sys`: io_uring and epoll) needs Linux; on this system \
     use the blocking API (Upgrader, Dialer, Conn) with `default-features = false`"
);

#[cfg(feature = "tokio")]
pub use async_conn::AsyncConn;
pub use client::Dialer;
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

/// The guides in `docs/` and the README, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
mod guides {
    #[cfg(feature = "engine")]
    #[doc = include_str!("../../README.md")]
    struct Readme;
    #[doc = include_str!("../../docs/getting-started.md")]
    struct GettingStarted;
    #[doc = include_str!("../../docs/client.md")]
    struct Client;
    #[cfg(feature = "engine")]
    #[doc = include_str!("../../docs/embedding.md")]
    struct Embedding;
    #[cfg(feature = "redis")]
    #[doc = include_str!("../../docs/operations.md")]
    struct Operations;
}
