//! # ringcast
//!
//! A WebSocket library (RFC 6455, permessage-deflate RFC 7692) and a thread-per-core
//! io_uring broadcast engine. Its API follows the vocabulary of the Go library
//! gorilla/websocket (Upgrader, Dialer, Conn, PreparedMessage, close codes), spelled
//! the Rust way; `docs/api-map.md` lists every Go name with its ringcast name.
//!
//! ## The public surface
//!
//! What users configure and call (the public modules hold these items and their helper
//! types); the engine's internals (connection state, queues, timers, the kernel
//! boundary) are private.
//!
//! - The blocking API, one thread (or two) per connection over any [`conn::Stream`]:
//!   [`Upgrader`] (server handshake settings, [`Upgrader::upgrade`]), [`Dialer`]
//!   (client settings, [`Dialer::dial`]), [`Conn`] (read and write messages, control
//!   frames, deadlines, compression; [`conn`] has its readers, writers and split
//!   halves), [`BufferPool`] for shared write buffers.
//! - [`PreparedMessage`]: one message, each wire form built once, sent to many
//!   connections (blocking or engine).
//! - [`server`]: the engine, one worker thread per core on io_uring (epoll where io_uring
//!   is unavailable), for many connections and fan-out. Users set a
//!   [`server::ServerConfig`] and call [`server::Server::start`] with a
//!   [`server::Handler`] (the callbacks, given a [`server::Socket`] for the connection at
//!   hand); the [`server::ServerHandle`] it returns publishes, sends, closes, dials,
//!   reads [`server::Stats`] and shuts down from any thread. A [`server::Broker`]
//!   (`RedisBroker` with the `redis` feature) links the nodes of one service. Its kernel
//!   boundary, the only module with `unsafe`, is private: the public API has no way to
//!   name a kernel operation, a raw descriptor or a driver token, so no safe call can
//!   reach the driver's memory. What users configure of it is re-exported from
//!   [`server`] ([`server::Backend`], [`server::DriverConfig`],
//!   [`server::raise_fd_limit`]).
//! - [`proto`]: the sans-IO protocol core (frames, masking, UTF-8, close codes,
//!   handshake, permessage-deflate). Bytes in, events and bytes out; for another I/O
//!   model, or a fuzzer.
//! - [`Error`] and its helpers ([`is_close_error`], [`CloseError`], [`HandshakeError`]),
//!   [`CloseCode`], [`MessageType`].
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
//!
//! ## No unsafety from safe code
//!
//! All `unsafe` code sits in the engine's kernel boundary, which is private. The public API
//! offers no kernel token, raw descriptor or driver operation, so no safe call can make the
//! driver free a buffer the kernel still reads or act on a descriptor it does not own.
//! This does not compile (error E0603, a private module):
//!
//! ```compile_fail,E0603
//! let _ = ringcast::sys::Token::new(ringcast::sys::OpKind::Send, 0, 0);
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
mod sys;
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
    #[cfg(all(feature = "axum", feature = "engine"))]
    #[doc = include_str!("../../docs/async.md")]
    struct Async;
}
