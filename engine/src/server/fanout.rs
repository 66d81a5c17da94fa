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
//! Each publish first reserves its size in every target worker's byte budget
//! ([`handoff`](super::handoff)), all or none; a publish kept in the pending list of a
//! worker's own thread is charged to that worker's budget the same way, and given back
//! once delivered.
//!
//! [`ServerHandle::publish`]: super::ServerHandle::publish
//! [`Socket::publish`]: super::Socket::publish

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;

use super::core::Core;
use super::handle::{Command, Publish, Shared};
use super::handoff::thread_waker;
use super::runs::Run;
use super::stats::Counter;
use crate::error::Error;
use crate::proto::deflate::DeflateSettings;
use crate::proto::Role;

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
        // The workers this thread registered with, to be taken back from when it stops
        // waiting (a release drains the list, but one that never comes must not leave
        // this thread's waker behind).
        let mut registered = Vec::new();
        let outcome = loop {
            let Err(full) = self.reserve_all(skip, cost) else {
                break Ok(());
            };
            let Some(deadline) = deadline else {
                break Err(full);
            };
            let waker = waker.get_or_insert_with(thread_waker);
            self.workers[full].budget.register(waker);
            if !registered.contains(&full) {
                registered.push(full);
            }
            // Registered before this look: a release from now on wakes this thread.
            if self.reserve_all(skip, cost).is_ok() {
                break Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(full);
            }
            std::thread::park_timeout(deadline - now);
        };
        if let Some(waker) = &waker {
            for index in registered {
                self.workers[index].budget.unregister(waker);
            }
        }
        match outcome {
            Ok(()) => self.put_all(publish, skip, cost),
            Err(full) => Err(self.refuse(full)),
        }
    }

    /// One poll of an async publish to every worker: handed over when every worker has
    /// room, else the task's waker is registered with the full worker (woken when it
    /// frees bytes) and `Pending`. Nothing is reserved while pending, so dropping the
    /// future between polls publishes nothing. On a worker thread it never waits, as
    /// [`publish`](Self::publish) does not.
    pub(crate) fn poll_publish(
        &self,
        publish: &Arc<Publish>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        let cost = Command::Publish(Arc::clone(publish)).cost();
        if let Err(full) = self.reserve_all(None, cost) {
            if on_worker_thread() {
                return Poll::Ready(Err(self.refuse(full)));
            }
            self.workers[full].budget.register(cx.waker());
            // Registered before this look: a release from now on wakes the task.
            if self.reserve_all(None, cost).is_err() {
                return Poll::Pending;
            }
        }
        Poll::Ready(self.put_all(publish, None, cost))
    }

    /// Puts `publish`, its `cost` reserved on every worker but `skip`, on their channels
    /// (this worker's share in its pending list, on a worker thread inside a callback).
    /// Every worker that runs gets it, even if one has stopped.
    fn put_all(
        &self,
        publish: &Arc<Publish>,
        skip: Option<usize>,
        cost: usize,
    ) -> Result<(), Error> {
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

/// One frame form of a publish, built once: its bytes, its place in the run buffer if it
/// is small, and its shared frame once a subscriber needs one.
struct Form {
    role: Role,
    compression: Option<DeflateSettings>,
    frame: Bytes,
    run: Option<Run>,
    shared: Option<Rc<Bytes>>,
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
        // the prepared message (a lock for compressed forms) once per subscriber. A small
        // form is written once into the worker's run buffer (`runs.rs`); a subscriber then
        // only extends its run. Otherwise the form is wrapped once in an `Rc`, which the
        // outboxes share without atomic counting.
        let mut forms: Vec<Form> = Vec::new();
        let subscribers = self.topics.take(id);
        let mut delivered = 0;
        let cap = self.config.max_queued_bytes;
        self.delivering = true;
        for &key in &subscribers {
            if Some(key) == skip {
                continue;
            }
            let conn = &mut self.conns[key as usize];
            if !conn.is_open() {
                continue;
            }
            let (role, compression) = (conn.role, conn.compression);
            let index = match forms
                .iter()
                .position(|f| f.role == role && f.compression == compression)
            {
                Some(index) => index,
                None => {
                    let frame = publish.message.frame(role, compression);
                    let run = self.runs.append(&mut self.arena, role, compression, &frame);
                    forms.push(Form {
                        role,
                        compression,
                        frame,
                        run,
                        shared: None,
                    });
                    forms.len() - 1
                }
            };
            let form = &mut forms[index];
            if let Some(run) = form.run.filter(|_| conn.tls.is_none()) {
                if let Some(opened) = conn.outbox.push_run(run, cap) {
                    if opened {
                        self.runs.joined(key);
                    }
                    self.queued(key as usize, run.len());
                    delivered += 1;
                    continue;
                }
            }
            let frame = form
                .shared
                .get_or_insert_with(|| Rc::new(form.frame.clone()));
            if self.queue_data(key as usize, Rc::clone(frame)).is_ok() {
                delivered += 1;
            }
        }
        self.delivering = false;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        core.settle_runs();
        let mut frames = Vec::new();
        core.conns[reader]
            .outbox
            .take_batch(&mut core.arena, &mut frames);
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        assert_eq!(wire, b"\x81\x011\x81\x012\x81\x013");
    }
}
