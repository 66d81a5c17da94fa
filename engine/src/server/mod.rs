//! The engine: one worker thread per core, each owning an io_uring ring (or epoll), its
//! own `SO_REUSEPORT` listener, a slab of connections, a write arena and a timer wheel.
//!
//! - [`Server`] and [`ServerConfig`]: settings, checked once, then [`Server::start`].
//! - [`Handler`]: the application's callbacks, one instance per worker (no locks on the
//!   hot path), with a [`Socket`] for the connection at hand.
//! - [`ServerHandle`]: the running server from any thread: send, close, dial, stats,
//!   graceful shutdown.
//! - [`Broker`]: the link to other nodes of one service; `RedisBroker` (cargo feature
//!   `redis`) shares publishes through Redis pub/sub.
//!
//! ```
//! use ringcast::server::{Handler, Server, ServerConfig, Socket};
//! use ringcast::MessageType;
//!
//! struct Echo;
//! impl Handler for Echo {
//!     type Data = ();
//!     fn on_message(&mut self, socket: &mut Socket<'_, ()>, kind: MessageType, payload: &[u8]) {
//!         let _ = socket.send(kind, payload);
//!     }
//! }
//!
//! let config = ServerConfig {
//!     addr: Some("127.0.0.1:0".parse().unwrap()),
//!     workers: 1,
//!     ..ServerConfig::default()
//! };
//! let server = Server::new(config).start(|_worker| Echo)?;
//! let url = format!("ws://{}/", server.local_addr().unwrap());
//! let (mut conn, _) = ringcast::Dialer::default().dial(&url, &[])?;
//! conn.write_message(MessageType::Text, b"hello")?;
//! assert_eq!(conn.read_message()?, (MessageType::Text, b"hello".to_vec()));
//! server.shutdown();
//! server.wait();
//! # Ok::<(), ringcast::Error>(())
//! ```

mod adopt;
#[doc(hidden)]
pub mod bench;
mod broker;
mod coalesce;
mod config;
mod conn;
mod connection;
mod core;
mod deferred;
mod dial;
mod fanout;
mod handle;
mod handler;
mod handoff;
mod id;
mod outbox;
#[cfg(feature = "redis")]
mod redis;
mod runs;
mod socket;
mod stats;
mod timers;
mod tls;
mod topics;
mod worker;

use std::sync::Arc;

use crossbeam_channel::unbounded;

pub use self::core::SendError;
#[cfg(feature = "redis")]
pub use self::redis::{
    decode_envelope, encode_envelope, Envelope, EnvelopeError, RedisBroker, RedisConfig, RedisStats,
};
pub use adopt::Adoption;
pub use broker::Broker;
pub use config::{ServerConfig, DEFAULT_COALESCE, ENGINE_READ_LIMIT};
pub use deferred::UpgradeAnswer;
pub use dial::DialRequest;
pub use handle::ServerHandle;
pub use handler::{Handler, HttpResponse};
pub use id::ConnId;
pub use outbox::Backpressure;
pub use socket::Socket;
pub use stats::{CloseCounts, Stats};
pub use tls::tls_config_from_pem;
pub use topics::MAX_TOPIC_LEN;

/// The kernel interface the workers run on, and their ring and buffer sizes: the parts
/// of the engine's private kernel boundary that a user sets (through
/// [`ServerConfig::backend`] and [`ServerConfig::driver`]).
pub use crate::sys::{Backend, DriverConfig};

/// Raises the soft open-file limit to the hard limit and returns it: [`Server::start`]
/// does this itself; a program that opens many sockets of its own (a load generator)
/// calls it too.
pub use crate::sys::socket::raise_fd_limit;

use crate::error::Error;
use crate::sys::{self, Driver};
use handle::{Shared, WorkerLink};
use worker::Worker;

/// A server not started yet: its settings.
#[derive(Debug, Clone)]
pub struct Server {
    config: ServerConfig,
}

impl Server {
    /// A server with `config`.
    pub fn new(config: ServerConfig) -> Server {
        Server { config }
    }

    /// Checks the settings, binds the listeners (so a busy port is an error here, not in a
    /// thread), starts the workers, and returns once every worker runs. `factory` makes
    /// each worker's handler, on that worker's thread, given the worker's index.
    pub fn start<H, F>(self, factory: F) -> Result<ServerHandle, Error>
    where
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let config = self
            .config
            .resolve(|| std::thread::available_parallelism().map_or(1, |n| n.get()))?;
        let count = config.workers;
        // Many connections need many descriptors; the soft limit is often far below the hard.
        if let Err(err) = sys::socket::raise_fd_limit() {
            tracing::warn!(%err, "could not raise the open-file limit");
        }
        let mut listeners = match config.addr {
            Some(addr) => sys::socket::listeners(&addr, count, config.backlog)?
                .into_iter()
                .map(Some)
                .collect(),
            None => (0..count).map(|_| None).collect::<Vec<_>>(),
        };
        let local_addr = match listeners.first() {
            Some(Some(fd)) => Some(sys::socket::local_addr(std::os::fd::AsFd::as_fd(fd))?),
            _ => None,
        };
        let mut receivers = Vec::with_capacity(count);
        let links = (0..count)
            .map(|_| {
                let (tx, rx) = unbounded();
                receivers.push(rx);
                WorkerLink {
                    commands: tx,
                    budget: handoff::Budget::new(config.max_handoff_bytes),
                    waker: Default::default(),
                    counters: Default::default(),
                    features: Default::default(),
                    topic_counts: Default::default(),
                }
            })
            .collect();
        let shared = Arc::new(Shared::new(links, local_addr, config.broker.clone()));
        let config = Arc::new(config);
        let factory = Arc::new(factory);
        let cpus = if config.pin_workers {
            sys::socket::allowed_cpus().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(count);
        let mut threads = Vec::with_capacity(count);
        for (index, (commands, listener)) in
            receivers.into_iter().zip(listeners.drain(..)).enumerate()
        {
            let (shared, config, factory, ready) = (
                shared.clone(),
                config.clone(),
                factory.clone(),
                ready_tx.clone(),
            );
            let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("ringcast-{index}"))
                .spawn(move || {
                    // Counts this worker out when the thread ends, however it ends.
                    let _alive = handle::WorkerAlive(shared.clone());
                    if let Some(cpu) = cpu {
                        if let Err(err) = sys::socket::pin_to_cpu(cpu) {
                            tracing::warn!(worker = index, cpu, %err, "could not pin worker");
                        }
                    }
                    let driver = match Driver::new_or_fallback(config.backend, &config.driver) {
                        Ok((driver, fell_back)) => {
                            // Every worker meets the same kernel: one line says why.
                            if let (Some(why), 0) = (fell_back, index) {
                                tracing::warn!(%why, "io_uring unavailable, running every worker on epoll");
                            }
                            driver
                        }
                        Err(err) => {
                            let _ = ready.send(Err(err));
                            return;
                        }
                    };
                    let link = &shared.workers[index];
                    let _ = link.waker.set(driver.waker());
                    let _ = link.features.set(driver.features());
                    tracing::info!(worker = index, features = %driver.features(), "worker started");
                    let handler = factory(index);
                    let worker = Worker::new(index, handler, config, shared.clone(), driver, commands, listener);
                    let _ = ready.send(Ok(()));
                    if let Err(err) = worker.run() {
                        tracing::error!(worker = index, %err, "worker stopped: its ring failed");
                    }
                })?;
            threads.push(thread);
        }
        drop(ready_tx);
        let handle = ServerHandle::from_shared(shared.clone());
        let mut failure = None;
        for _ in 0..count {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => failure = Some(err),
                Err(_) => {
                    failure = Some(std::io::Error::other(
                        "a worker thread ended while starting",
                    ))
                }
            }
        }
        *shared.threads.lock().unwrap_or_else(|e| e.into_inner()) = threads;
        if let Some(err) = failure {
            handle.shutdown();
            handle.wait();
            return Err(Error::Io(err));
        }
        if let Some(broker) = &config.broker {
            broker.attach(handle.clone());
        }
        Ok(handle)
    }
}
