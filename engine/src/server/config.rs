//! [`ServerConfig`]: every setting of the engine, with its default and the reason for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::sys::{Backend, DriverConfig};
use crate::upgrade::Upgrader;

use super::{Backpressure, Broker};

/// The default of [`ServerConfig::coalesce`].
pub const DEFAULT_COALESCE: Duration = Duration::ZERO;

/// Settings of a [`Server`](super::Server). Build one with struct update syntax over
/// `ServerConfig::default()`; [`Server::start`](super::Server::start) checks them once and
/// names the field it refuses.
///
/// ```
/// use std::time::Duration;
/// use ringcast::server::ServerConfig;
/// let config = ServerConfig {
///     addr: Some("127.0.0.1:0".parse().unwrap()),
///     workers: 2,
///     idle_timeout: Some(Duration::from_secs(60)),
///     ..ServerConfig::default()
/// };
/// assert_eq!(config.max_queued_bytes, 256 * 1024);
/// ```
#[derive(Clone)]
pub struct ServerConfig {
    /// Where to listen. Each worker binds its own `SO_REUSEPORT` socket there, so the
    /// kernel spreads connections across workers. `None`: no listener, for an engine that
    /// only dials out (the load generator). Port 0 picks a free port, shared by all workers;
    /// [`ServerHandle::local_addr`](super::ServerHandle::local_addr) tells which.
    pub addr: Option<SocketAddr>,
    /// Worker threads, each with its own ring, connections and timers. Default 0: one per
    /// CPU the process may run on, at most 256. Set explicitly, at most 256 too (a
    /// [`ConnId`](super::ConnId) carries 8 bits of worker index).
    pub workers: usize,
    /// Pin worker `i` to the `i`-th allowed CPU. Default off: pinning pays only when the
    /// machine runs nothing else, and hurts when it does.
    pub pin_workers: bool,
    /// The kernel interface. Default: `RINGCAST_BACKEND` when set, else io_uring; where
    /// io_uring cannot be set up the workers log why once and run on epoll.
    pub backend: Backend,
    /// The handshake settings: subprotocols, compression, origin check, error responses,
    /// read limit, head limits, and the handshake timeout (default here: 10 s, since a
    /// server must not let a silent client hold a socket for ever). The read limit's
    /// default here is [`ENGINE_READ_LIMIT`] (1 MiB), not the blocking `Conn`'s 64 MiB:
    /// set `upgrader.read_limit` to accept larger messages.
    pub upgrader: Upgrader,
    /// The most bytes queued for one connection before [`backpressure`](Self::backpressure)
    /// applies. Default 256 KiB: thousands of chat messages, so only a reader that has
    /// stopped reads hits it, and 10 000 stalled readers cost at most 2.5 GiB.
    pub max_queued_bytes: usize,
    /// How long a connection may hold published frames for a fuller send: one that sent
    /// less than this ago (a send counts from its start and again from its completion),
    /// with only published frames waiting and less than a TCP segment's worth (1448
    /// bytes), sends them this long after its last send, with whatever the next
    /// publishes add. A connection idle for this long sends at once,
    /// as do replies, control frames and a segment's worth. Fewer, fuller segments cost
    /// the server, the network and every client less per message, for at most this
    /// much latency. `Duration::ZERO`: off. On the epoll backend the wait rounds up to a
    /// millisecond. Default: see `DEFAULT_COALESCE` in docs/decisions.md.
    pub coalesce: Duration,
    /// What to do when a connection's queue is full. Default: close it with 1008.
    pub backpressure: Backpressure,
    /// The most bytes of commands (publishes, sends, closes, dials) that other threads and
    /// other workers may have queued for one worker and it has not handled yet. Past it, a
    /// call is refused with [`Error::QueueFull`] and counted in
    /// [`Stats::handoffs_refused`](super::Stats::handoffs_refused), or waits for room
    /// ([`ServerHandle::publish_timeout`](super::ServerHandle::publish_timeout)); inside a
    /// callback it never waits. Default 16 MiB: about 44 000 chat-sized publishes (a
    /// 100-byte message to a 10-byte topic costs 382 bytes: the two plus 272 of channel
    /// slot and message headers), seconds of backlog
    /// for a worker at full fan-out speed, so only a flood the worker cannot keep up with
    /// meets it; and what other threads can make one worker hold stays at 16 MiB instead
    /// of the hundreds of megabytes one flooding client reached before (issue 12).
    pub max_handoff_bytes: usize,
    /// The most sockets one worker holds; past it, new connections are closed at once and
    /// counted as rejected. Default 1 000 000, so the file-descriptor limit is the real bound.
    pub max_connections: usize,
    /// The most topics one connection may be subscribed to; past it
    /// [`Socket::subscribe`](super::Socket::subscribe) fails with
    /// [`Error::TopicLimit`](crate::Error::TopicLimit). Default 1024: far above what a
    /// client of a chat or a feed follows (one room, a few hundred symbols), while one
    /// connection can then make its worker hold at most about 1.1 MiB of topic names and
    /// bookkeeping (1024 names of up to [`MAX_TOPIC_LEN`](super::MAX_TOPIC_LEN) bytes),
    /// and a closing connection leaves all its topics within one slice of the worker's
    /// turn (a connection over 1024 topics leaves them 1024 per turn, so that others are
    /// not held up).
    pub max_topics_per_connection: usize,
    /// Close a connection that sent nothing (not even a pong) for this long. Default:
    /// 120 s, four missed automatic pings (every 30 s) before a silent peer is shed.
    pub idle_timeout: Option<Duration>,
    /// Send a ping when nothing was received for this long. Default 30 s: well inside the
    /// idle timeouts of common load balancers (60 s), so connections through them live on.
    pub ping_interval: Option<Duration>,
    /// After sending a close frame, how long to wait for the peer's before dropping the
    /// socket (and how long a final flush may take). Default 5 s.
    pub close_timeout: Duration,
    /// How long a graceful shutdown waits for peers to answer the 1001 close. Default 5 s.
    pub shutdown_timeout: Duration,
    /// The compression level for messages compressed on a connection (-2..=9). Default 1,
    /// the cheapest (about 1.7 µs for a chat line). With the zlib-rs backend it codes short
    /// messages with fixed Huffman tables only, so chat text shrinks about 5% against about
    /// 23% at 6, for 3.5 times the CPU (docs/compression.md). A broadcast compresses once
    /// per publish, so raising it costs little where bandwidth matters.
    pub compression_level: i32,
    /// The listen backlog. Default 4096: bursts of reconnecting clients queue in the kernel
    /// instead of being refused.
    pub backlog: i32,
    /// Ring and buffer sizes of each worker's driver, and its zero-copy threshold
    /// ([`send_zero_copy`](Self::send_zero_copy)).
    pub driver: DriverConfig,
    /// The most bytes (read and written) one connection's compressed messages may inflate
    /// in one turn of its worker's loop; past it the connection's inflation pauses, its
    /// further input waits (and past 64 KiB waiting, reading from it stops, so TCP slows
    /// the peer down), and it resumes on the next turn. Default 256 KiB: about 0.2 ms of
    /// inflation, so one connection's decompression bomb holds up the others on its worker
    /// for about that long per turn, never for the whole bomb (before this, a stream of
    /// bombs raised the other clients' round trip to 49-149 ms at the median, issue 12),
    /// while a compressed message of ordinary size is inflated in one go.
    pub max_inflate_per_turn: usize,
    /// Answer plain HTTP `GET`s of this path with the server's counters in the Prometheus
    /// text format (server-wide and per worker), before `Handler::on_http` sees them.
    /// Default `None`: counters are the operator's business, not every client's.
    pub metrics_path: Option<String>,
    /// The link to other nodes: publishes on this node go to it, and it is told which
    /// topics this node has subscribers for. Default `None`: a single node.
    pub broker: Option<Arc<dyn Broker>>,
    /// Serve `wss://` (and `https://` for `on_http`): every accepted connection speaks TLS
    /// with this rustls configuration; see [`tls_config_from_pem`](super::tls_config_from_pem).
    /// Default `None`: plain TCP (put TLS in a load balancer in front, or set this).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: None,
            workers: 0,
            pin_workers: false,
            backend: Backend::from_env().unwrap_or(Backend::Uring),
            upgrader: Upgrader::default(),
            max_queued_bytes: 256 * 1024,
            coalesce: DEFAULT_COALESCE,
            backpressure: Backpressure::Close,
            max_handoff_bytes: 16 << 20,
            max_connections: 1_000_000,
            max_topics_per_connection: 1024,
            idle_timeout: Some(Duration::from_secs(120)),
            ping_interval: Some(Duration::from_secs(30)),
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            compression_level: crate::proto::deflate::DEFAULT_COMPRESSION_LEVEL,
            backlog: 4096,
            driver: DriverConfig::default(),
            max_inflate_per_turn: 256 * 1024,
            metrics_path: None,
            broker: None,
            tls: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addr", &self.addr)
            .field("workers", &self.workers)
            .field("backend", &self.backend)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .field("backpressure", &self.backpressure)
            .field("idle_timeout", &self.idle_timeout)
            .field("ping_interval", &self.ping_interval)
            .finish_non_exhaustive()
    }
}

/// The default handshake timeout when the upgrader sets none.
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The engine's read limit when the upgrader sets none: 1 MiB. A message split across
/// receives, fragmented or compressed is gathered up to the limit, so the limit is what
/// one connection can make its worker hold: 64 MiB (the blocking `Conn`'s default) let 8
/// unfinished messages grow a server by 500 MB (issue 12), while chat, feeds and
/// notifications send messages of kilobytes. Applications that need more raise it
/// (`Upgrader::read_limit`); the echo server does, for the Autobahn suite's 16 MiB.
pub const ENGINE_READ_LIMIT: u64 = 1 << 20;

/// The most workers a server runs: a [`ConnId`](super::ConnId) keeps 8 bits of worker index.
pub(crate) const MAX_WORKERS: usize = 256;

impl ServerConfig {
    /// Sends with a frame of at least `min_bytes` go out without a copy on io_uring
    /// (`IORING_OP_SEND_ZC`, or `IORING_OP_SENDMSG_ZC` for several frames): the kernel
    /// sends from the frame's own pages (a prepared broadcast frame is shared by every
    /// connection it goes to), and the worker keeps the frame until the kernel's
    /// notification says it let go of them, after the peer acknowledged the bytes. Sets
    /// [`DriverConfig::zero_copy_min`], where the choice (the largest frame decides) is
    /// explained.
    ///
    /// Off by default. Zero copy costs a notification and page pinning per send, so it
    /// pays only above a crossover size that depends on the machine and the network
    /// (docs/decisions.md, "Zero-copy sends"); over loopback the kernel copies the pages
    /// anyway when it delivers them to the local socket, so it only adds cost there.
    /// [`Stats::zero_copy_sent`](super::Stats::zero_copy_sent) and
    /// [`Stats::zero_copy_copied`](super::Stats::zero_copy_copied) tell which happened.
    /// Ignored on the epoll backend, and where the kernel lacks `SEND_ZC`, `SENDMSG_ZC`
    /// or usage reports (before 6.2): those sends copy as before.
    ///
    /// ```
    /// use ringcast::server::ServerConfig;
    /// let config = ServerConfig::default().send_zero_copy(64 * 1024);
    /// assert_eq!(config.driver.zero_copy_min, Some(64 * 1024));
    /// ```
    pub fn send_zero_copy(mut self, min_bytes: usize) -> Self {
        self.driver.zero_copy_min = Some(min_bytes);
        self
    }

    /// The read limit in force: the upgrader's, or [`ENGINE_READ_LIMIT`].
    pub(crate) fn read_limit(&self) -> u64 {
        self.upgrader.read_limit.unwrap_or(ENGINE_READ_LIMIT)
    }

    /// The handshake timeout in force.
    pub(crate) fn handshake_timeout(&self) -> Duration {
        self.upgrader
            .handshake_timeout
            .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT)
    }

    /// The settings as a server runs them: `workers = 0` becomes one per CPU (`cpus()`,
    /// at most [`MAX_WORKERS`]), then everything is checked. Resolving first matters: a
    /// default configuration on a 512-thread host must not start 512 workers whose
    /// connection ids alias (an id keeps 8 bits of worker index).
    pub(crate) fn resolve(mut self, cpus: impl FnOnce() -> usize) -> Result<Self, Error> {
        if self.workers == 0 {
            self.workers = cpus().clamp(1, MAX_WORKERS);
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks the settings; the error names the field.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, why: &str| Err(Error::InvalidArgument(format!("{field}: {why}")));
        if self.workers > MAX_WORKERS {
            return bad(
                "workers",
                "at most 256 (connection ids carry 8 bits of worker)",
            );
        }
        if self.max_queued_bytes == 0 {
            return bad("max_queued_bytes", "must be above 0");
        }
        if self.max_handoff_bytes == 0 {
            return bad("max_handoff_bytes", "must be above 0");
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be above 0");
        }
        if self.max_topics_per_connection == 0 {
            return bad("max_topics_per_connection", "must be above 0");
        }
        if !(-2..=9).contains(&self.compression_level) {
            return bad("compression_level", "outside -2..=9");
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return bad("idle_timeout", "zero; use None for no idle timeout");
        }
        if self.ping_interval == Some(Duration::ZERO) {
            return bad("ping_interval", "zero; use None for no automatic pings");
        }
        if self.backlog <= 0 {
            return bad("backlog", "must be above 0");
        }
        if self.max_inflate_per_turn == 0 || u32::try_from(self.max_inflate_per_turn).is_err() {
            return bad("max_inflate_per_turn", "must be above 0 and fit 32 bits");
        }
        if !self.driver.recv_buffers.is_power_of_two() {
            return bad("driver.recv_buffers", "must be a power of two");
        }
        if self.driver.zero_copy_min == Some(0) {
            return bad(
                "driver.zero_copy_min",
                "must be above 0; use None for no zero copy",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(ServerConfig::default().validate().is_ok());
    }

    #[test]
    fn refusal_names_the_field() {
        let config = ServerConfig {
            compression_level: 12,
            ..ServerConfig::default()
        };
        match config.validate() {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.starts_with("compression_level"))
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    /// Issue 14: `workers = 0` used to be validated before it was resolved, so a
    /// 512-thread host started 512 workers and ids of workers 256+ reached worker n-256.
    #[test]
    fn workers_zero_resolves_to_the_cpu_count_at_most_256_before_validation() {
        let auto = |cpus: usize| {
            ServerConfig::default()
                .resolve(|| cpus)
                .expect("the default is valid on any host")
                .workers
        };
        assert_eq!(auto(512), MAX_WORKERS);
        assert_eq!(auto(257), MAX_WORKERS);
        assert_eq!(auto(8), 8);
        assert_eq!(auto(0), 1);
        let explicit = ServerConfig {
            workers: 512,
            ..ServerConfig::default()
        };
        match explicit.resolve(|| 4) {
            Err(Error::InvalidArgument(message)) => assert!(message.starts_with("workers")),
            other => panic!(
                "expected InvalidArgument, got {:?}",
                other.map(|c| c.workers)
            ),
        }
        // Every resolved worker index fits a connection id.
        let last = super::super::ConnId::new(auto(512) - 1, 7, 1);
        assert_eq!(last.worker(), MAX_WORKERS - 1);
    }
}
