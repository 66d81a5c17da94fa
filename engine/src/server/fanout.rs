//! Fan-out: the publish path from the call to every worker's subscribers, and the
//! hand-off to a worker, bounded in bytes.
//!
//! One publish ([`Shared::publish`], behind [`ServerHandle::publish`] and
//! [`Socket::publish`]) becomes one [`Publish`] behind an `Arc`, handed to each worker
//! once (never per subscriber); each worker queues it on its own subscribers with
//! [`Core::deliver`], each frame form built once per publish.
//!
//! ## Ordering
//!
//! The publishes of one thread reach every subscriber in the order they were made, per
//! topic and across topics, whichever of [`Socket::publish`] and [`ServerHandle::publish`]
//! made them. Each worker's channel is FIFO. Inside a callback, `Socket::publish` queues
//! on the worker's own subscribers at once; a `ServerHandle::publish` made in the same
//! callback is kept for them in this thread's pending list ([`deliver_pending`]), which
//! is delivered before the next `Socket::publish` and as soon as the callback returns.
//! So `handle.publish(a); socket.publish(b)` reaches the local subscribers as `a, b`,
//! like the other workers' (before issue 14, `b, a`: the handle went through the worker's
//! own channel, taken later in the turn). Publishes of different threads have no order
//! between them.
//!
//! ## The hand-off is bounded in bytes
//!
//! Every command another thread (or another worker) puts on a worker's channel first
//! reserves its size in that worker's [`Budget`], and the worker gives the bytes back once
//! per loop turn, after handling what it took. A publish kept in the pending list of a
//! worker's own thread is charged to that worker's budget the same way.
//!
//! Policy when a worker's budget is full:
//!
//! - a plain call ([`ServerHandle::publish`](super::ServerHandle::publish), `send_to`,
//!   `close`, `dial`, and [`Socket::publish`](super::Socket::publish) inside a callback)
//!   is refused with [`Error::QueueFull`](crate::Error::QueueFull) and counted in
//!   [`Stats::handoffs_refused`](super::Stats::handoffs_refused); a publish is refused
//!   whole (every worker or none), so no subscriber sees it when any could not;
//! - a waiting call ([`ServerHandle::publish_timeout`](super::ServerHandle::publish_timeout))
//!   registers a [`Waker`] with the full worker and sleeps until that worker frees bytes,
//!   up to its timeout. On a worker thread it never waits: two full workers waiting on
//!   each other would never drain.
//!
//! The waiters are [`std::task::Waker`]s, so an `async` publish can wait the same way (its
//! task's waker in the registry) without a thread of its own.
//!
//! The budget is accounted per command, never per subscriber: one atomic add per command
//! per worker on the sending side, one atomic subtract per loop turn on the worker's.
//!
//! [`ServerHandle::publish`]: super::ServerHandle::publish
//! [`Socket::publish`]: super::Socket::publish

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::thread::Thread;
use std::time::Instant;

use bytes::Bytes;

use super::core::Core;
use super::handle::{Command, Outgoing, Shared};
use super::stats::Counter;
use super::ConnId;
use crate::error::Error;
use crate::prepared::PreparedMessage;
use crate::proto::deflate::DeflateSettings;
use crate::proto::Role;

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

impl Shared {
    /// Hands `publish` to every worker but `skip` (the caller's own worker, for a
    /// [`Socket::publish`](super::Socket::publish) that delivers there itself), all or
    /// none. Without a `deadline`, a full worker refuses it at once; with one, the calling
    /// thread waits for room until then (never on a worker thread: two full workers
    /// waiting on each other would never drain). Every worker that runs gets it, even if
    /// one has stopped.
    ///
    /// On a worker thread of this server, inside a callback, that worker's share is not
    /// put on its own channel but kept in the thread's pending list, delivered before the
    /// next `Socket::publish` and when the callback returns (the ordering rule above).
    pub(crate) fn publish(
        &self,
        publish: &Arc<Publish>,
        skip: Option<usize>,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        let cost = Command::Publish(Arc::clone(publish)).cost();
        let deadline = deadline.filter(|_| !on_worker_thread());
        let mut waker = None;
        while let Err(full) = self.reserve_all(skip, cost) {
            let Some(deadline) = deadline else {
                return Err(self.refuse(full));
            };
            let budget = &self.workers[full].budget;
            budget.register(waker.get_or_insert_with(thread_waker));
            // Registered before this look: a release from now on wakes this thread.
            if self.reserve_all(skip, cost).is_ok() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.refuse(full));
            }
            std::thread::park_timeout(deadline - now);
        }
        let here = match skip {
            Some(_) => None,
            None => this_worker(self),
        };
        let mut failed = None;
        for index in (0..self.workers.len()).filter(|&i| Some(i) != skip) {
            if Some(index) == here {
                keep_pending(Arc::clone(publish), cost);
            } else if let Err(err) = self.put(index, Command::Publish(Arc::clone(publish)), cost) {
                failed = Some(err);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Reserves `cost` on every worker but `skip`, all or none: the first worker without
    /// room is returned, and what was reserved before it is given back.
    fn reserve_all(&self, skip: Option<usize>, cost: usize) -> Result<(), usize> {
        let targets = || (0..self.workers.len()).filter(move |&i| Some(i) != skip);
        for index in targets() {
            if !self.workers[index].budget.try_reserve(cost) {
                for undo in targets().take_while(|&i| i != index) {
                    self.workers[undo].budget.release(cost);
                }
                return Err(index);
            }
        }
        Ok(())
    }
}

impl<D> Core<D> {
    /// Queues a published message on every local subscriber of its topic (but its origin,
    /// unless asked), each frame form built once per publish. Returns the deliveries.
    pub(crate) fn deliver(&mut self, publish: &Publish) -> usize {
        self.counters.incr(Counter::Publishes);
        let Some(id) = self.topics.id(&publish.topic) else {
            return 0;
        };
        let skip = match publish.origin {
            Some(origin) if !publish.include_origin && origin.worker() == self.worker => {
                Some(origin.key() as u32)
            }
            _ => None,
        };
        // Most topics see one or two forms (plain, compressed): a short list beats asking
        // the prepared message (a lock for compressed forms) once per subscriber. Each form
        // is wrapped once in an `Rc`: the outboxes share it without atomic counting.
        let mut forms: Vec<(Role, Option<DeflateSettings>, Rc<Bytes>)> = Vec::new();
        let subscribers = self.topics.take(id);
        let mut delivered = 0;
        for &key in &subscribers {
            if Some(key) == skip {
                continue;
            }
            let conn = &self.conns[key as usize];
            if !conn.is_open() {
                continue;
            }
            let (role, compression) = (conn.role, conn.compression);
            let frame = match forms
                .iter()
                .find(|(r, c, _)| *r == role && *c == compression)
            {
                Some((_, _, frame)) => Rc::clone(frame),
                None => {
                    let frame = Rc::new(publish.message.frame(role, compression));
                    forms.push((role, compression, Rc::clone(&frame)));
                    frame
                }
            };
            if self.queue_data(key as usize, frame).is_ok() {
                delivered += 1;
            }
        }
        self.topics.put_back(id, subscribers);
        self.counters.add(Counter::Deliveries, delivered as u64);
        delivered
    }
}

/// Delivers the publishes a [`ServerHandle`](super::ServerHandle) made on this worker's
/// thread (inside a callback) to this worker's subscribers, in the order made, and gives
/// their bytes back to its budget. The worker calls it after every callback;
/// [`Socket::publish`](super::Socket::publish) before its own delivery.
pub(crate) fn deliver_pending<D>(core: &mut Core<D>) {
    let mut freed = 0;
    while let Some((publish, cost)) = WORKER.with(|w| {
        w.borrow_mut()
            .as_mut()
            .and_then(|worker| worker.pending.pop_front())
    }) {
        core.deliver(&publish);
        freed += cost;
    }
    if freed > 0 {
        core.shared.workers[core.worker].budget.release(freed);
    }
}

/// One worker's command-queue budget in bytes, and who waits for room in it.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    /// Bytes reserved by commands not yet handled by the worker.
    used: AtomicUsize,
    /// Wakers of callers waiting for room; all woken when the worker frees bytes.
    waiters: Mutex<Vec<Waker>>,
    /// `waiters.len()`, read without the lock by the worker after each release.
    waiting: AtomicUsize,
    /// Commands refused because the budget was full.
    refused: AtomicU64,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            limit,
            used: AtomicUsize::new(0),
            waiters: Mutex::new(Vec::new()),
            waiting: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The budget in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Callers waiting for room now.
    pub(crate) fn waiters(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Commands refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Reserves `cost` bytes if they fit. An empty queue takes one command whatever its
    /// size, so that a message larger than the budget can still go to a worker that keeps
    /// up (as a connection's queue does with a frame larger than `max_queued_bytes`).
    pub(crate) fn try_reserve(&self, cost: usize) -> bool {
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if used != 0 && used.saturating_add(cost) > self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + cost,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Gives `bytes` back; returns what was reserved just before. Called by the worker once
    /// per turn for the commands it handled (so its return value is the high-water mark
    /// since the worker's last release: reservations only grow in between, but for a
    /// publish that rolls back what it reserved on other workers when one is full), and by
    /// such a roll-back. Wakes every waiter when there are any.
    pub(crate) fn release(&self, bytes: usize) -> usize {
        let before = self.used.fetch_sub(bytes, Ordering::SeqCst);
        // After the subtraction: a waiter that registered before it is seen here, and one
        // that registers after it finds the room when it checks again.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let waiters = {
                let mut list = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
                self.waiting.fetch_sub(list.len(), Ordering::SeqCst);
                std::mem::take(&mut *list)
            };
            for waker in waiters {
                waker.wake();
            }
        }
        before
    }

    /// Asks to be woken when the worker next frees bytes. The caller checks for room again
    /// after registering, then sleeps.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut list = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
            self.waiting.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Wakes a thread parked in a waiting call.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the calling thread.
pub(crate) fn thread_waker() -> Waker {
    Waker::from(Arc::new(Unpark(std::thread::current())))
}

/// What a worker's thread knows of itself.
struct ThisWorker {
    /// Which server (the address of its `Shared`, compared, never dereferenced).
    shared: usize,
    index: usize,
    /// Publishes of a handle used inside a callback, for this worker's own subscribers,
    /// with the bytes each reserved in its budget.
    pending: VecDeque<(Arc<Publish>, usize)>,
}

thread_local! {
    static WORKER: RefCell<Option<ThisWorker>> = const { RefCell::new(None) };
}

/// Marks the calling thread as worker `index` of `shared`: waiting calls made on it do
/// not wait, and its handle publishes keep the ordering rule.
pub(crate) fn mark_worker_thread(shared: &Arc<Shared>, index: usize) {
    WORKER.with(|w| {
        *w.borrow_mut() = Some(ThisWorker {
            shared: Arc::as_ptr(shared) as usize,
            index,
            pending: VecDeque::new(),
        })
    });
}

/// Whether the calling thread is a worker.
pub(crate) fn on_worker_thread() -> bool {
    WORKER.with(|w| w.borrow().is_some())
}

/// The index of the worker of `shared` the calling thread runs, if it runs one.
fn this_worker(shared: &Shared) -> Option<usize> {
    WORKER.with(|w| {
        w.borrow()
            .as_ref()
            .filter(|w| w.shared == shared as *const Shared as usize)
            .map(|w| w.index)
    })
}

fn keep_pending(publish: Arc<Publish>, cost: usize) {
    WORKER.with(|w| {
        if let Some(worker) = w.borrow_mut().as_mut() {
            worker.pending.push_back((publish, cost));
        }
    });
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
            Command::Shutdown => return 0,
        };
        std::mem::size_of::<Command>() + held
    }
}

/// The heap a queued publish keeps alive.
fn publish_cost(publish: &Publish) -> usize {
    std::mem::size_of::<Publish>() + publish.topic.len() + prepared_cost(&publish.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn reservations_stop_at_the_budget_and_an_empty_queue_takes_one_of_any_size() {
        let budget = Budget::new(100);
        assert!(budget.try_reserve(60));
        assert!(budget.try_reserve(40));
        assert!(!budget.try_reserve(1));
        assert_eq!(budget.release(100), 100);
        assert!(budget.try_reserve(500), "an empty queue takes one command");
        assert!(!budget.try_reserve(1));
        assert_eq!(budget.used(), 500);
    }

    #[test]
    fn a_release_wakes_each_registered_waiter_once() {
        let budget = Budget::new(10);
        assert!(budget.try_reserve(10));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        budget.register(&waker);
        budget.register(&waker); // the same waker is kept once
        assert_eq!(budget.waiting.load(Ordering::SeqCst), 1);
        budget.release(5);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(budget.waiting.load(Ordering::SeqCst), 0);
        budget.release(5); // nobody waits: no wake-up, no lock
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_waiter_on_another_thread_is_unparked_by_a_release() {
        let budget = Arc::new(Budget::new(10));
        assert!(budget.try_reserve(10));
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let waiting = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || {
                let waker = thread_waker();
                let mut told = false;
                loop {
                    budget.register(&waker);
                    if budget.try_reserve(10) {
                        return;
                    }
                    if !told {
                        ready_tx.send(()).expect("test thread waits");
                        told = true;
                    }
                    // A hang guard, not a signal: the release unparks this thread.
                    std::thread::park_timeout(std::time::Duration::from_secs(20));
                }
            })
        };
        ready_rx.recv().expect("waiter registered");
        budget.release(10);
        waiting.join().expect("waiter got its room");
        assert_eq!(budget.used(), 10);
    }

    #[test]
    fn the_caller_s_thread_is_not_a_worker_unless_marked() {
        assert!(!on_worker_thread());
        std::thread::spawn(|| {
            let shared = Arc::new(Shared::new(Vec::new(), None, None));
            mark_worker_thread(&shared, 0);
            assert!(on_worker_thread());
            assert_eq!(this_worker(&shared), Some(0));
            let other = Shared::new(Vec::new(), None, None);
            assert_eq!(this_worker(&other), None, "another server's handle");
        })
        .join()
        .expect("thread");
        assert!(!on_worker_thread());
    }

    /// The ordering rule: inside a callback, a handle publish and then a socket publish
    /// reach the worker's own subscribers in that order (before issue 14: the other way
    /// round), and every publish of the callback is delivered once it returns.
    #[test]
    fn handle_and_socket_publishes_of_one_callback_arrive_in_the_order_made() {
        use crate::proto::MessageType;
        use crate::server::core::detached_core;
        use crate::server::Socket;
        let mut core = detached_core(1 << 20);
        let (publisher, reader) = (core.insert_detached(None), core.insert_detached(None));
        core.subscribe(reader, b"room").expect("under the limit");
        let shared = Arc::clone(&core.shared);
        mark_worker_thread(&shared, 0);
        {
            // What a handler does in one callback.
            let mut socket = Socket::new(&mut core, publisher);
            let handle = socket.server();
            // The detached worker's channel has no receiver: a publish put on it would
            // fail with "server stopped", so these succeed only by staying pending.
            handle
                .publish(b"room", MessageType::Text, "1")
                .expect("room");
            socket
                .publish(b"room", MessageType::Text, b"2")
                .expect("room");
            handle
                .publish(b"room", MessageType::Text, "3")
                .expect("room");
        }
        assert!(
            shared.workers[0].budget.used() > 0,
            "charged to the worker's budget"
        );
        deliver_pending(&mut core); // the worker, once the callback returns
        assert_eq!(
            shared.workers[0].budget.used(),
            0,
            "the pending bytes are given back"
        );
        let mut frames = Vec::new();
        core.conns[reader]
            .outbox
            .take_batch(&mut core.arena, &mut frames);
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        assert_eq!(wire, b"\x81\x011\x81\x012\x81\x013");
    }
}
