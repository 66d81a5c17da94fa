//! The subscriber thread: one pub/sub connection, subscribed to the channels of the
//! topics with local subscribers, delivering what other nodes publish.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::error::Error;
use crate::prepared::PreparedMessage;

use super::super::ServerHandle;
use super::envelope::{decode_envelope, EnvelopeError};
use super::link::{Backoff, Ended, Link, Side};

/// What the engine and the application tell the subscriber thread.
pub(super) enum Control {
    Subscribe(Bytes),
    Unsubscribe(Bytes),
    Attach(ServerHandle),
}

/// What the subscriber thread keeps across connections.
pub(super) struct Subscriber {
    /// Topics with local subscribers: subscribed on every new connection.
    pub(super) wanted: HashSet<Bytes>,
    pub(super) server: Option<ServerHandle>,
    /// `wanted` changed since the connection last followed it.
    pub(super) dirty: bool,
}

impl Subscriber {
    /// Takes every waiting control message. `false`: the broker is gone.
    pub(super) fn absorb(&mut self, link: &Link, controls: &Receiver<Control>) -> bool {
        loop {
            match controls.try_recv() {
                Ok(control) => self.apply(link, control),
                Err(TryRecvError::Empty) => return !link.stopped(),
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    pub(super) fn apply(&mut self, link: &Link, control: Control) {
        match control {
            Control::Subscribe(topic) => {
                self.wanted.insert(topic);
                self.dirty = true;
            }
            Control::Unsubscribe(topic) => {
                self.wanted.remove(&topic);
                self.dirty = true;
            }
            Control::Attach(server) => self.server = Some(server),
        }
        link.topics.store(self.wanted.len(), Ordering::Relaxed);
    }

    /// Delivers one message from Redis to this node's subscribers.
    pub(super) fn deliver(&mut self, link: &Link, message: &redis::Msg) {
        // The channel is the prefix and the topic.
        let Some(mut topic) = message
            .get_channel::<Vec<u8>>()
            .ok()
            .filter(|channel| channel.starts_with(&link.prefix))
        else {
            link.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        topic.drain(..link.prefix.len());
        let envelope = match decode_envelope(message.get_payload_bytes(), link.config.max_message) {
            Ok(envelope) => envelope,
            Err(err) => {
                let counter = match err {
                    EnvelopeError::TooLarge { .. } => &link.oversized,
                    _ => &link.malformed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%err, "dropped a message from redis");
                return;
            }
        };
        if envelope.node_id == link.node_id {
            link.skipped_own.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(server) = &self.server else {
            link.undelivered.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let prepared = match PreparedMessage::new(
            envelope.message_type,
            Bytes::copy_from_slice(envelope.payload),
        ) {
            Ok(prepared) => prepared,
            Err(_) => {
                link.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        // Counted first, so whoever sees the message delivered sees it counted.
        link.received.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = server.publish_local(&topic, Arc::new(prepared)) {
            link.received.fetch_sub(1, Ordering::Relaxed);
            if let Error::Io(_) | Error::QueueFull { .. } = err {
                // A worker (or the whole server) stopped, or a worker's command queue was
                // full (then no worker got it; the engine counts the refusal too).
                link.undelivered.fetch_add(1, Ordering::Relaxed);
            } else {
                // A topic longer than the engine takes.
                link.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The subscriber thread: connect, subscribe to every wanted topic, deliver until the
/// connection fails, wait, again.
pub(super) fn run_subscriber(link: &Link, controls: &Receiver<Control>) {
    let mut state = Subscriber {
        wanted: HashSet::new(),
        server: None,
        dirty: false,
    };
    let mut backoff = Backoff::new(link.config.reconnect_min, link.config.reconnect_max);
    let mut first_failure = true;
    loop {
        if !state.absorb(link, controls) {
            return;
        }
        let mut con = match link.connect() {
            Ok(con) => con,
            Err(err) => {
                link.connect_failed(Side::Subscriber, &err, first_failure);
                first_failure = false;
                if !absorb_while_waiting(link, controls, &mut state, backoff.next_wait()) {
                    return;
                }
                continue;
            }
        };
        first_failure = true;
        match serve_subscriber(link, &mut con, controls, &mut state, &mut backoff) {
            Ended::Stopped => return,
            Ended::Failed(err) => link.link_down(Side::Subscriber, &err),
        }
    }
}

/// Waits `wait`, keeping up with subscription changes. `false`: stop the thread.
pub(super) fn absorb_while_waiting(
    link: &Link,
    controls: &Receiver<Control>,
    state: &mut Subscriber,
    wait: Duration,
) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if link.stopped() {
            return false;
        }
        // Look at the stop flag as often as a connected subscriber does.
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(link.config.poll_interval);
        match controls.recv_timeout(slice) {
            Ok(control) => state.apply(link, control),
            Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => return true,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Holds one pub/sub connection: subscribes, follows changes, delivers, pings when quiet.
pub(super) fn serve_subscriber(
    link: &Link,
    con: &mut redis::Connection,
    controls: &Receiver<Control>,
    state: &mut Subscriber,
    backoff: &mut Backoff,
) -> Ended {
    let mut pubsub = con.as_pubsub();
    // Nothing is subscribed on a new connection.
    let mut subscribed: HashSet<Bytes> = HashSet::new();
    if let Err(err) = follow(link, &mut pubsub, &state.wanted, &mut subscribed) {
        return Ended::Failed(err);
    }
    state.dirty = false;
    link.link_up(Side::Subscriber);
    backoff.reset();
    let mut quiet_since = Instant::now();
    loop {
        if !state.absorb(link, controls) {
            return Ended::Stopped;
        }
        if state.dirty {
            state.dirty = false;
            if let Err(err) = follow(link, &mut pubsub, &state.wanted, &mut subscribed) {
                return Ended::Failed(err);
            }
        }
        match pubsub.get_message() {
            Ok(message) => {
                quiet_since = Instant::now();
                state.deliver(link, &message);
            }
            Err(err) if err.is_timeout() => {
                if quiet_since.elapsed() >= link.config.keepalive {
                    let pong = with_io_timeout(link, &mut pubsub, |p| p.ping::<redis::Value>());
                    if let Err(err) = pong {
                        return Ended::Failed(err);
                    }
                    quiet_since = Instant::now();
                }
            }
            Err(err) => return Ended::Failed(err),
        }
    }
}

/// The most channels named in one SUBSCRIBE or UNSUBSCRIBE.
pub(super) const MAX_CHANNELS_PER_COMMAND: usize = 1024;

/// Makes the connection's subscriptions those of `wanted`: subscribes to the new topics'
/// channels and unsubscribes from the old ones, in commands of many channels each.
pub(super) fn follow(
    link: &Link,
    pubsub: &mut redis::PubSub<'_>,
    wanted: &HashSet<Bytes>,
    subscribed: &mut HashSet<Bytes>,
) -> redis::RedisResult<()> {
    let channels = |topics: Vec<&Bytes>| -> Vec<Vec<u8>> {
        topics
            .into_iter()
            .map(|topic| {
                let mut channel = Vec::new();
                link.channel(topic, &mut channel);
                channel
            })
            .collect()
    };
    let add = channels(wanted.difference(subscribed).collect());
    let remove = channels(subscribed.difference(wanted).collect());
    with_io_timeout(link, pubsub, |pubsub| {
        for chunk in add.chunks(MAX_CHANNELS_PER_COMMAND) {
            pubsub.subscribe(chunk)?;
        }
        for chunk in remove.chunks(MAX_CHANNELS_PER_COMMAND) {
            pubsub.unsubscribe(chunk)?;
        }
        Ok(())
    })?;
    subscribed.clone_from(wanted);
    Ok(())
}

/// Runs `command` on the pub/sub connection with the I/O timeout for its answer, then
/// puts back the poll interval, which bounds the waits for messages.
pub(super) fn with_io_timeout<T>(
    link: &Link,
    pubsub: &mut redis::PubSub<'_>,
    command: impl FnOnce(&mut redis::PubSub<'_>) -> redis::RedisResult<T>,
) -> redis::RedisResult<T> {
    pubsub.set_read_timeout(Some(link.config.io_timeout))?;
    let result = command(pubsub);
    pubsub.set_read_timeout(Some(link.config.poll_interval))?;
    result
}
