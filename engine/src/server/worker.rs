//! [`Worker`]: the loop of one core. It owns its driver (ring or epoll), listener and
//! command channel; everything else (connections, arena, timers, handler) is its
//! [`Machine`], which does no I/O. Other threads reach a worker only through its command
//! channel and waker.
//!
//! One turn: wait for completions; hand each to the machine as an input (accept, receive,
//! send, connect); take commands from other threads; let the machine fire due timers and
//! queue its sends; then carry out the machine's [`Op`]s on the driver, in order.
//! Callbacks the handler is owed (`on_close`, `on_drain`) run right after the callback or
//! completion that caused them, and sockets are closed and removed only between
//! completions, never under a callback.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::sys::{socket, Completion, Driver, OpKind, SendBuf, SocketFd, Token};

use super::connection::{Machine, Op};
use super::dial::Pending;
use super::handle::{Command, Shared};
use super::stats::Counter;
use super::{Handler, ServerConfig};

/// The accept operation's token: the listener is not in the slab.
const ACCEPT: Token = Token::new(OpKind::Accept, u32::MAX, 0);

/// One worker thread: its driver, listener and commands around its machine.
pub(crate) struct Worker<H: Handler> {
    machine: Machine<H>,
    driver: Driver,
    commands: Receiver<Command>,
    listener: Option<SocketFd>,
    /// The buffers of the send being built, reused between sends.
    batch: Vec<SendBuf>,
}

impl<H: Handler> Worker<H> {
    pub(crate) fn new(
        index: usize,
        handler: H,
        config: Arc<ServerConfig>,
        shared: Arc<Shared>,
        driver: Driver,
        commands: Receiver<Command>,
        listener: Option<OwnedFd>,
    ) -> Self {
        let listening = listener.is_some();
        Worker {
            machine: Machine::new(index, handler, config, shared, listening, dial_socket),
            driver,
            commands,
            listener: listener.map(SocketFd::from),
            batch: Vec::new(),
        }
    }

    /// Runs until shut down. Only a failure of the ring itself ends it early.
    pub(crate) fn run(mut self) -> io::Result<()> {
        super::fanout::mark_worker_thread(&self.machine.core.shared, self.machine.core.worker);
        if let Some(listener) = &self.listener {
            self.driver.accept(listener, ACCEPT);
        }
        loop {
            let timeout = self.machine.wait_time(Instant::now());
            if let Err(err) = self.driver.submit_and_wait(timeout) {
                // The ring itself failed: still tell the handler about every connection.
                self.stop();
                return Err(err);
            }
            self.machine.core.now = Instant::now();
            while let Some(completion) = self.driver.next_completion() {
                self.dispatch(completion);
                self.machine.settle();
                self.carry_out();
            }
            self.take_commands();
            self.machine.end_turn();
            self.carry_out();
            self.publish_stats();
            if self.machine.finished() {
                break;
            }
        }
        self.stop();
        Ok(())
    }

    /// A completion, as an input of the machine.
    fn dispatch(&mut self, c: Completion) {
        let (key, generation) = (c.token.key(), c.token.generation());
        match c.token.kind() {
            OpKind::Accept => {
                let socket = c.socket.map(SocketFd::from);
                self.machine.on_accept(socket, c.result, c.more);
            }
            OpKind::Recv => {
                let mut buffer = c.buffer;
                let bytes = buffer.as_mut().map(|b| b.as_mut_slice());
                self.machine
                    .on_recv(key, generation, c.result, bytes, c.more);
            }
            OpKind::Send => self.machine.on_send(key, generation, c.result),
            OpKind::Connect => self.machine.on_connect(key, generation, c.result),
            // Commands are taken every turn; the wake-up only ended the wait.
            OpKind::Wake => {}
        }
    }

    /// Handles the commands other threads queued, then gives their bytes back at once.
    fn take_commands(&mut self) {
        let mut freed = 0;
        while let Ok(command) = self.commands.try_recv() {
            freed += command.cost();
            self.machine.command(command);
            self.carry_out();
        }
        self.machine.commands_handled(freed);
    }

    /// The machine's ops, as driver operations, in order. An op for a connection that is
    /// gone (or doomed: its close follows) is skipped.
    fn carry_out(&mut self) {
        for op in self.machine.ops.drain(..) {
            let live = |key: u32, generation: u32| {
                self.machine
                    .core
                    .conns
                    .get(key as usize)
                    .filter(|c| c.generation == generation && !c.doomed)
            };
            match op {
                Op::Accept => {
                    if let Some(listener) = &self.listener {
                        self.driver.accept(listener, ACCEPT);
                    }
                }
                Op::CloseListener => {
                    if let Some(listener) = self.listener.take() {
                        self.driver.close(listener);
                    }
                }
                Op::Recv { key, generation } => {
                    if let Some(conn) = live(key, generation) {
                        let token = Token::new(OpKind::Recv, key, generation);
                        self.driver.recv(&conn.fd, token);
                    }
                }
                Op::StopRecv { key, generation } => {
                    if let Some(conn) = live(key, generation) {
                        let token = Token::new(OpKind::Recv, key, generation);
                        self.driver.stop_recv(&conn.fd, token);
                    }
                }
                Op::Connect {
                    key,
                    generation,
                    addr,
                } => {
                    if let Some(conn) = live(key, generation) {
                        let token = Token::new(OpKind::Connect, key, generation);
                        self.driver.connect(&conn.fd, addr, token);
                    }
                }
                Op::Send { key, generation } => {
                    let core = &mut self.machine.core;
                    if let Some(conn) = core
                        .conns
                        .get_mut(key as usize)
                        .filter(|c| c.generation == generation && !c.doomed)
                    {
                        let token = Token::new(OpKind::Send, key, generation);
                        conn.outbox.take_batch(&mut core.arena, &mut self.batch);
                        self.driver.send(&conn.fd, token, self.batch.drain(..));
                    }
                }
                Op::Close(fd) => self.driver.close(fd),
            }
        }
    }

    /// Closes whatever is left and hands the closes to the kernel.
    fn stop(&mut self) {
        self.machine.stop();
        self.carry_out();
        let _ = self.driver.submit();
        self.publish_stats();
    }

    fn publish_stats(&mut self) {
        // Not `stats()`: on epoll that walks every descriptor.
        let shortages = self.driver.enobufs();
        self.machine
            .core
            .counters
            .set(Counter::RecvBufferShortages, shortages);
        let zero_copy = self.driver.zero_copy();
        let counters = &mut self.machine.core.counters;
        counters.set(Counter::ZeroCopySent, zero_copy.sent);
        counters.set(Counter::ZeroCopyCopied, zero_copy.copied);
        self.machine.publish_stats();
    }
}

/// The socket of a dial: non-blocking TCP, `TCP_NODELAY`, bound to the asked source.
fn dial_socket(pending: &Pending) -> io::Result<SocketFd> {
    let fd = socket::tcp_socket(&pending.addr)?;
    // As for accepted sockets: frames are batched per turn, so Nagle only adds latency
    // (tens of ms when it meets the peer's delayed ACK).
    let _ = socket::set_nodelay(fd.as_fd());
    if let Some(source) = pending.source {
        socket::bind(fd.as_fd(), &std::net::SocketAddr::new(source, 0))?;
    }
    Ok(SocketFd::from(fd))
}
