//! [`ServerHandle`]: the server as other threads see it. Everything it does is a
//! [`Command`] put on a worker's channel followed by a wake-up of that worker's ring, so
//! no worker state is ever shared or locked. Each channel is bounded in bytes by the
//! worker's [`Budget`] (`handoff.rs`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::error::Error;
use crate::prepared::PreparedMessage;
use crate::proto::handshake::HandshakeError;
use crate::proto::{CloseCode, MessageType};
use crate::sys::Waker;

use super::adopt::Adoption;
use super::broker::Broker;
use super::dial::{DialRequest, Pending};
use super::handoff::Budget;
use super::stats::{SharedCounters, Stats};
use super::topics::MAX_TOPIC_LEN;
use super::ConnId;

/// What another thread asks of a worker.
pub(crate) enum Command {
    Send {
        id: ConnId,
        message: Outgoing,
    },
    Close {
        id: ConnId,
        code: CloseCode,
        reason: String,
    },
    Dial(Box<Pending>),
    Adopt(Box<Adoption>),
    /// The answer to an upgrade the handler deferred.
    Decide {
        id: ConnId,
        answer: Box<Result<Vec<(String, String)>, HandshakeError>>,
    },
    Publish(Arc<Publish>),
    Shutdown,
}

/// A message published to a topic, handed to every worker once.
#[derive(Debug)]
pub(crate) struct Publish {
    pub(crate) topic: Bytes,
    pub(crate) message: Arc<PreparedMessage>,
    /// The publishing connection, when a socket published.
    pub(crate) origin: Option<ConnId>,
    /// Whether the publishing connection receives it too (if subscribed).
    pub(crate) include_origin: bool,
}

/// A message sent from outside a callback.
pub(crate) enum Outgoing {
    Message(MessageType, Bytes),
    Prepared(Arc<PreparedMessage>),
}

/// One worker as the others see it.
pub(crate) struct WorkerLink {
    pub(crate) commands: Sender<Command>,
    /// What the commands in the channel may hold, in bytes.
    pub(crate) budget: Budget,
    /// Set by the worker once its ring exists (wakers belong to rings).
    pub(crate) waker: OnceLock<Waker>,
    pub(crate) counters: SharedCounters,
    /// The backend line the worker logged at start.
    pub(crate) features: OnceLock<String>,
    /// Local subscriber counts by topic, written by the worker when they change (not per
    /// message), read by [`ServerHandle::subscribers`].
    pub(crate) topic_counts: Mutex<HashMap<Bytes, usize>>,
}

impl Shared {
    /// Records worker `worker`'s local subscriber counts of some topics (one lock for the
    /// lot: a connection leaving thousands of topics takes it once per slice), and tells
    /// the broker when the node as a whole gains a topic's first subscriber or loses its
    /// last one.
    pub(crate) fn set_topic_counts(
        &self,
        worker: usize,
        changes: impl IntoIterator<Item = (Bytes, usize)>,
    ) {
        // Topics whose local count went from 0 or to 0: +1 or -1 worker interested.
        let mut crossed: Vec<(Bytes, isize)> = Vec::new();
        {
            let mut counts = self.workers[worker]
                .topic_counts
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (topic, count) in changes {
                let (was, now) = if count == 0 {
                    (counts.remove(&topic).is_some(), false)
                } else {
                    (counts.insert(topic.clone(), count).is_some(), true)
                };
                if was != now && self.broker.is_some() {
                    crossed.push((topic, if now { 1 } else { -1 }));
                }
            }
        }
        let Some(broker) = &self.broker else {
            return;
        };
        if crossed.is_empty() {
            return;
        }
        // Under one lock, so subscribe and unsubscribe of a topic reach the broker in order.
        let mut interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, change) in crossed {
            let workers = interest.entry(topic.clone()).or_insert(0);
            let before = *workers;
            *workers = workers.saturating_add_signed(change);
            match (before, *workers) {
                (0, 1) => broker.subscribe(&topic),
                (1, 0) => {
                    interest.remove(&topic);
                    broker.unsubscribe(&topic);
                }
                _ => {}
            }
        }
    }

    /// Hands a message published on this node to the broker, if there is one.
    pub(crate) fn forward(&self, publish: &Publish) {
        if let Some(broker) = &self.broker {
            broker.publish(&publish.topic, &publish.message);
        }
    }
}

/// What all handles and workers share.
pub(crate) struct Shared {
    pub(crate) workers: Vec<WorkerLink>,
    pub(crate) broker: Option<Arc<dyn Broker>>,
    /// Per topic, the number of workers with local subscribers (kept only with a broker).
    interest: Mutex<HashMap<Bytes, usize>>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    /// The worker threads not yet ended.
    pub(crate) running: Running,
    next_dial: AtomicUsize,
}

impl Shared {
    /// What one worker with no thread behind it shares: its command channel has no receiver
    /// (a command put on it fails with "server stopped").
    pub(crate) fn detached(config: &super::ServerConfig) -> Arc<Shared> {
        let (commands, _) = crossbeam_channel::unbounded();
        let link = WorkerLink {
            commands,
            budget: Budget::new(config.max_handoff_bytes),
            waker: Default::default(),
            counters: Default::default(),
            features: Default::default(),
            topic_counts: Default::default(),
        };
        Arc::new(Shared::new(vec![link], None, None))
    }

    pub(crate) fn new(
        workers: Vec<WorkerLink>,
        local_addr: Option<SocketAddr>,
        broker: Option<Arc<dyn Broker>>,
    ) -> Shared {
        Shared {
            running: Running::new(workers.len()),
            workers,
            broker,
            interest: Mutex::new(HashMap::new()),
            local_addr,
            threads: Mutex::new(Vec::new()),
            next_dial: AtomicUsize::new(0),
        }
    }

    fn link(&self, index: usize) -> Result<&WorkerLink, Error> {
        self.workers.get(index).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "worker {index} does not exist ({} workers)",
                self.workers.len()
            ))
        })
    }

    /// Puts `command` on worker `index`'s channel and wakes it, if the worker's budget has
    /// room for it; else refuses with [`Error::QueueFull`] and counts the refusal.
    pub(crate) fn send(&self, index: usize, command: Command) -> Result<(), Error> {
        let link = self.link(index)?;
        let cost = command.cost();
        if cost > 0 && !link.budget.try_reserve(cost) {
            return Err(self.refuse(index));
        }
        self.put(index, command, cost)
    }

    /// Counts a refusal by worker `index` and says why.
    pub(crate) fn refuse(&self, index: usize) -> Error {
        let budget = &self.workers[index].budget;
        budget.count_refusal();
        Error::QueueFull {
            worker: index,
            budget: budget.limit(),
        }
    }

    /// Puts a command whose `cost` is reserved on worker `index`'s channel and wakes it.
    pub(crate) fn put(&self, index: usize, command: Command, cost: usize) -> Result<(), Error> {
        let link = &self.workers[index];
        if link.commands.send(command).is_err() {
            link.budget.release(cost);
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "server stopped",
            )));
        }
        if let Some(waker) = link.waker.get() {
            waker.wake();
        }
        Ok(())
    }
}

/// The workers still running, and the tasks awaiting their end
/// ([`ServerHandle::wait_async`]).
#[derive(Debug)]
pub(crate) struct Running {
    workers: AtomicUsize,
    waiters: Mutex<Vec<std::task::Waker>>,
}

impl Running {
    fn new(workers: usize) -> Running {
        Running {
            workers: AtomicUsize::new(workers),
            waiters: Mutex::new(Vec::new()),
        }
    }

    fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.workers.load(Ordering::SeqCst) == 0 {
            return Poll::Ready(());
        }
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
        }
        // Registered before this look: the last worker's exit from now on wakes the task.
        if self.workers.load(Ordering::SeqCst) == 0 {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Held by a worker thread for its whole life (a panic included): its drop counts the
/// worker out and, for the last one, wakes the tasks awaiting the end.
pub(crate) struct WorkerAlive(pub(crate) Arc<Shared>);

impl Drop for WorkerAlive {
    fn drop(&mut self) {
        let running = &self.0.running;
        if running.workers.fetch_sub(1, Ordering::SeqCst) == 1 {
            let waiters =
                std::mem::take(&mut *running.waiters.lock().unwrap_or_else(|e| e.into_inner()));
            for waker in waiters {
                waker.wake();
            }
        }
    }
}

/// A publish from a handle (no origin connection), its topic checked.
fn new_publish(topic: &[u8], message: Arc<PreparedMessage>) -> Result<Arc<Publish>, Error> {
    check_topic(topic)?;
    Ok(Arc::new(Publish {
        topic: Bytes::copy_from_slice(topic),
        message,
        origin: None,
        include_origin: false,
    }))
}

/// Refuses topic names over [`MAX_TOPIC_LEN`] bytes.
pub(crate) fn check_topic(topic: &[u8]) -> Result<(), Error> {
    if topic.len() > MAX_TOPIC_LEN {
        return Err(Error::InvalidArgument(format!(
            "topic of {} bytes exceeds {MAX_TOPIC_LEN}",
            topic.len()
        )));
    }
    Ok(())
}

/// The running server, from any thread: send to a connection, close one, dial out, read
/// the counters, shut down. Cheap to clone; every clone drives the same server.
///
/// ```no_run
/// use ringcast::server::{Handler, Server, ServerConfig};
/// struct Quiet;
/// impl Handler for Quiet {
///     type Data = ();
/// }
/// let config = ServerConfig { addr: Some("127.0.0.1:0".parse().unwrap()), ..ServerConfig::default() };
/// let handle = Server::new(config).start(|_worker| Quiet)?;
/// println!("listening on {}", handle.local_addr().unwrap());
/// handle.shutdown();
/// handle.wait();
/// # Ok::<(), ringcast::Error>(())
/// ```
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> ServerHandle {
        ServerHandle { shared }
    }

    /// The address the workers listen on (with the port chosen when 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.local_addr
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// What each worker runs on: the backend and the kernel features in use.
    pub fn backends(&self) -> Vec<String> {
        self.shared
            .workers
            .iter()
            .map(|w| w.features.get().cloned().unwrap_or_default())
            .collect()
    }

    /// Queues a message for connection `id`. A connection that is gone by the time the
    /// worker looks is counted in [`Stats::drops`]; the error here says the server has
    /// stopped, the id names no worker, or that worker's command queue is full
    /// ([`Error::QueueFull`]).
    pub fn send_to(
        &self,
        id: ConnId,
        message_type: MessageType,
        payload: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let message = Outgoing::Message(message_type, payload.into());
        self.shared.send(id.worker(), Command::Send { id, message })
    }

    /// Queues a prepared message for connection `id` (its frame is shared, not copied).
    pub fn send_prepared_to(&self, id: ConnId, message: Arc<PreparedMessage>) -> Result<(), Error> {
        let message = Outgoing::Prepared(message);
        self.shared.send(id.worker(), Command::Send { id, message })
    }

    /// Publishes a message to every subscriber of `topic` on every worker. The message is
    /// framed (and compressed, for connections that agreed to it) once, then shared.
    /// Messages published from one thread reach each subscriber in the order published;
    /// inside a callback that holds with [`Socket::publish`](super::Socket::publish) too
    /// (the ordering rule: `server::fanout`).
    ///
    /// When a worker's command queue holds
    /// [`max_handoff_bytes`](super::ServerConfig::max_handoff_bytes), the publish is
    /// refused on every worker with [`Error::QueueFull`] (and counted in
    /// [`Stats::handoffs_refused`]); [`publish_timeout`](Self::publish_timeout) waits for
    /// room instead.
    ///
    /// ```
    /// use ringcast::server::ServerHandle;
    /// use ringcast::MessageType;
    ///
    /// fn new_price(handle: &ServerHandle, price: f64) -> Result<(), ringcast::Error> {
    ///     handle.publish(b"prices/EURUSD", MessageType::Text, price.to_string())
    /// }
    /// # let _ = new_price;
    /// ```
    pub fn publish(
        &self,
        topic: &[u8],
        message_type: MessageType,
        payload: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let message = PreparedMessage::new(message_type, payload)?;
        self.publish_prepared(topic, Arc::new(message))
    }

    /// Publishes a prepared message to every subscriber of `topic` on every worker.
    pub fn publish_prepared(
        &self,
        topic: &[u8],
        message: Arc<PreparedMessage>,
    ) -> Result<(), Error> {
        let publish = self.publish_here(topic, message, None)?;
        self.shared.forward(&publish);
        Ok(())
    }

    /// As [`publish`](Self::publish), but when a worker's command queue is full the calling
    /// thread waits for that worker to make room, up to `timeout`, instead of being refused
    /// at once; past it, [`Error::QueueFull`]. The wait is woken by the worker as it
    /// drains its queue, not by polling. Called on a worker thread (inside a callback,
    /// through [`Socket::server`](super::Socket::server)) it does not wait: a worker
    /// waiting for another that waits for it would never drain.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ringcast::server::ServerHandle;
    /// use ringcast::MessageType;
    ///
    /// /// A feed that slows down to the pace of the workers instead of losing messages.
    /// fn forward(handle: &ServerHandle, line: String) -> Result<(), ringcast::Error> {
    ///     handle.publish_timeout(b"feed", MessageType::Text, line, Duration::from_secs(1))
    /// }
    /// # let _ = forward;
    /// ```
    pub fn publish_timeout(
        &self,
        topic: &[u8],
        message_type: MessageType,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let message = PreparedMessage::new(message_type, payload)?;
        self.publish_prepared_timeout(topic, Arc::new(message), timeout)
    }

    /// As [`publish_prepared`](Self::publish_prepared), waiting up to `timeout` for room
    /// as [`publish_timeout`](Self::publish_timeout) does.
    pub fn publish_prepared_timeout(
        &self,
        topic: &[u8],
        message: Arc<PreparedMessage>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let publish = self.publish_here(topic, message, Some(deadline))?;
        self.shared.forward(&publish);
        Ok(())
    }

    /// Publishes to this node's subscribers only: what a [`Broker`] does with a message
    /// that came from another node (it is not handed back to the broker). Refused with
    /// [`Error::QueueFull`] as [`publish`](Self::publish) is.
    pub fn publish_local(&self, topic: &[u8], message: Arc<PreparedMessage>) -> Result<(), Error> {
        self.publish_here(topic, message, None).map(drop)
    }

    /// As [`publish`](Self::publish), but when a worker's command queue is full the task
    /// waits for room instead of being refused: the task's waker is kept by that worker
    /// and woken as it drains its queue (no thread, no polling), so a task publishing
    /// faster than the workers deliver slows down to their pace with at most
    /// [`max_handoff_bytes`](super::ServerConfig::max_handoff_bytes) queued per worker.
    /// Works on any executor.
    ///
    /// Cancellation: dropped before it completes (a `tokio::time::timeout` that elapsed,
    /// the branch a `select!` did not take), it published nothing; completed, it was
    /// handed to every worker. On a worker thread it does not wait: refused with
    /// [`Error::QueueFull`] as [`publish`](Self::publish) is.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ringcast::server::ServerHandle;
    /// use ringcast::MessageType;
    ///
    /// /// A feed that slows down to the workers' pace, giving up on a message after 1 s.
    /// async fn forward(handle: &ServerHandle, line: String) -> Result<(), ringcast::Error> {
    ///     let publish = handle.publish_async(b"feed", MessageType::Text, line);
    ///     match tokio::time::timeout(Duration::from_secs(1), publish).await {
    ///         Ok(published) => published,
    ///         Err(_elapsed) => Ok(()), // not published; the next line goes on
    ///     }
    /// }
    /// # let _ = forward;
    /// ```
    pub async fn publish_async(
        &self,
        topic: &[u8],
        message_type: MessageType,
        payload: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let message = PreparedMessage::new(message_type, payload)?;
        self.publish_prepared_async(topic, Arc::new(message)).await
    }

    /// As [`publish_prepared`](Self::publish_prepared), waiting for room as
    /// [`publish_async`](Self::publish_async) does.
    pub async fn publish_prepared_async(
        &self,
        topic: &[u8],
        message: Arc<PreparedMessage>,
    ) -> Result<(), Error> {
        let publish = new_publish(topic, message)?;
        std::future::poll_fn(|cx| self.shared.poll_publish(&publish, cx)).await?;
        self.shared.forward(&publish);
        Ok(())
    }

    fn publish_here(
        &self,
        topic: &[u8],
        message: Arc<PreparedMessage>,
        deadline: Option<Instant>,
    ) -> Result<Arc<Publish>, Error> {
        let publish = new_publish(topic, message)?;
        self.shared.publish(&publish, None, deadline)?;
        Ok(publish)
    }

    /// The number of connections subscribed to `topic`, all workers together (as of each
    /// worker's last change).
    pub fn subscribers(&self, topic: &[u8]) -> usize {
        self.shared
            .workers
            .iter()
            .map(|w| {
                let counts = w.topic_counts.lock().unwrap_or_else(|e| e.into_inner());
                counts.get(topic).copied().unwrap_or(0)
            })
            .sum()
    }

    /// Every topic that has subscribers, with their number, all workers together (as of
    /// each worker's last change), in no order: a look over a whole node (the rooms of a
    /// chat, say). It copies every worker's table under that worker's lock, so it costs
    /// as many topics as there are: for a dashboard, not for every message.
    pub fn topics(&self) -> Vec<(Bytes, usize)> {
        let mut all: HashMap<Bytes, usize> = HashMap::new();
        for worker in &self.shared.workers {
            let counts = worker
                .topic_counts
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (topic, count) in counts.iter() {
                *all.entry(topic.clone()).or_insert(0) += count;
            }
        }
        all.into_iter().collect()
    }

    /// Starts the closing handshake of connection `id` with `code` and `reason`.
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.send(
            id.worker(),
            Command::Close {
                id,
                code,
                reason: reason.to_owned(),
            },
        )
    }

    /// Opens an outgoing WebSocket connection on one of the workers (the one named in the
    /// request, or the next in turn). The host is resolved here, on the calling thread;
    /// the rest happens on the worker: connect, handshake, then
    /// [`Handler::on_open`](super::Handler::on_open), or
    /// [`Handler::on_dial_error`](super::Handler::on_dial_error) with the request's tag.
    pub fn dial(&self, request: DialRequest) -> Result<(), Error> {
        let worker = match request.worker {
            Some(worker) => worker,
            None => self.shared.next_dial.fetch_add(1, Ordering::Relaxed) % self.workers(),
        };
        let pending = Pending::resolve(request)?;
        self.shared.send(worker, Command::Dial(Box::new(pending)))
    }

    /// Hands a connection whose 101 another server wrote (an axum or hyper route that
    /// checked the request itself) to a worker, which serves it from then on as one it
    /// accepted: [`Handler::on_open`](super::Handler::on_open) with the adoption's request,
    /// then its messages, topics and fan-out. The worker is the adoption's, or the workers
    /// in turn. Refused with [`Error::QueueFull`] when that worker's command queue is full
    /// (the socket is then closed); a worker shutting down, or at
    /// [`max_connections`](super::ServerConfig::max_connections), closes the socket and
    /// counts it in [`Stats::rejected`].
    ///
    /// ```
    /// use std::net::TcpStream;
    /// use ringcast::proto::handshake::Request;
    /// use ringcast::server::{Adoption, ServerHandle};
    ///
    /// /// After a 101 written elsewhere for user `user`: the engine serves the rest.
    /// fn hand_over(
    ///     engine: &ServerHandle,
    ///     socket: TcpStream,
    ///     request: Request,
    ///     user: u64,
    /// ) -> Result<(), ringcast::Error> {
    ///     engine.adopt(Adoption { tag: user, ..Adoption::new(socket, request) })
    /// }
    /// # let _ = hand_over;
    /// ```
    pub fn adopt(&self, adoption: Adoption) -> Result<(), Error> {
        adoption.prepare()?;
        let worker = match adoption.worker {
            Some(worker) => worker,
            None => self.shared.next_dial.fetch_add(1, Ordering::Relaxed) % self.workers(),
        };
        self.shared.send(worker, Command::Adopt(Box::new(adoption)))
    }

    /// The counters of all workers together.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for worker in &self.shared.workers {
            stats.add_worker(&worker.counters, &worker.budget);
        }
        stats
    }

    /// The counters of worker `index` (empty when there is no such worker).
    pub fn worker_stats(&self, index: usize) -> Stats {
        let mut stats = Stats::default();
        if let Some(worker) = self.shared.workers.get(index) {
            stats.add_worker(&worker.counters, &worker.budget);
        }
        stats
    }

    /// Starts a graceful shutdown and returns at once: workers stop accepting, send close
    /// 1001 to every connection, wait for the peers' close frames up to the shutdown
    /// timeout, then stop. [`wait`](Self::wait) returns when they have.
    pub fn shutdown(&self) {
        for index in 0..self.workers() {
            // A worker that already stopped needs no telling.
            let _ = self.shared.send(index, Command::Shutdown);
        }
    }

    /// The async [`wait`](Self::wait): completes when every worker has stopped (after
    /// [`shutdown`](Self::shutdown), or a fatal error of its ring), without blocking the
    /// executor's thread while they run; then does what `wait` does (the threads, ended,
    /// are joined at once, and a broker is detached). Works on any executor; dropping it
    /// stops nothing.
    ///
    /// ```no_run
    /// use ringcast::server::ServerHandle;
    ///
    /// async fn stop(handle: ServerHandle) {
    ///     handle.shutdown();
    ///     handle.wait_async().await;
    /// }
    /// # let _ = stop;
    /// ```
    pub async fn wait_async(&self) {
        std::future::poll_fn(|cx| self.shared.running.poll_stopped(cx)).await;
        self.wait();
    }

    /// Blocks until every worker has stopped (after [`shutdown`](Self::shutdown), or a
    /// fatal error of its ring, which is logged). Returns at once if another call already
    /// waited.
    pub fn wait(&self) {
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let stopped = !threads.is_empty();
        for thread in threads {
            // A worker that panicked has already printed why; the others still stop.
            let _ = thread.join();
        }
        if stopped {
            if let Some(broker) = &self.shared.broker {
                broker.detach();
            }
        }
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.shared.local_addr)
            .field("workers", &self.shared.workers.len())
            .finish()
    }
}

/// The bytes of a prepared message a queued command keeps alive: its payload and its
/// header (the frames built from it come later, on the worker, under the per-connection
/// caps).
fn prepared_cost(message: &PreparedMessage) -> usize {
    std::mem::size_of::<PreparedMessage>() + message.payload().len()
}

impl Command {
    /// What this command holds while it waits in a worker's channel, charged to that
    /// worker's budget: the channel slot, and the heap it keeps alive. A publish handed
    /// to several workers is charged in full to each, since each keeps it alive until it
    /// has delivered it. A shutdown costs nothing and is never refused.
    pub(crate) fn cost(&self) -> usize {
        let held = match self {
            Command::Publish(publish) => publish_cost(publish),
            Command::Send { message, .. } => match message {
                Outgoing::Message(_, payload) => payload.len(),
                Outgoing::Prepared(message) => prepared_cost(message),
            },
            Command::Close { reason, .. } => reason.len(),
            Command::Dial(pending) => {
                let strings = [&pending.host, &pending.target, &pending.key];
                let headers = pending.headers.iter().map(|(n, v)| n.len() + v.len());
                std::mem::size_of_val(&**pending)
                    + strings.iter().map(|s| s.len()).sum::<usize>()
                    + pending.subprotocols.iter().map(String::len).sum::<usize>()
                    + headers.sum::<usize>()
            }
            Command::Adopt(adoption) => adoption.cost(),
            Command::Decide { .. } => return 0,
            Command::Shutdown => return 0,
        };
        std::mem::size_of::<Command>() + held
    }
}

/// The heap a queued publish keeps alive.
fn publish_cost(publish: &Publish) -> usize {
    std::mem::size_of::<Publish>() + publish.topic.len() + prepared_cost(&publish.message)
}
