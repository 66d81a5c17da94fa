//! [`Broker`]: how a node of several shares its publishes with the others (through Redis,
//! NATS, Kafka...). The engine tells the broker when this node starts or stops caring about
//! a topic (its first local subscriber came, its last one left) and hands it every message
//! published on this node; the broker hands messages from other nodes back with
//! [`ServerHandle::publish_local`](super::ServerHandle::publish_local), which reaches this
//! node's subscribers only and is never sent back to the broker.

use std::sync::Arc;

use crate::prepared::PreparedMessage;

use super::ServerHandle;

/// A link between this node and the others. Its methods are called on worker threads and
/// on the threads that publish through a [`ServerHandle`](super::ServerHandle): they must
/// return at once (hand the work to the broker's own thread).
pub trait Broker: Send + Sync + 'static {
    /// The first subscriber of `topic` on this node appeared: start receiving `topic`
    /// from the other nodes. Calls for one topic alternate with
    /// [`unsubscribe`](Self::unsubscribe), in order.
    fn subscribe(&self, topic: &[u8]);

    /// The last subscriber of `topic` on this node left: stop receiving it.
    fn unsubscribe(&self, topic: &[u8]);

    /// `message` was published to `topic` on this node (by a socket or the handle): send
    /// it to the other nodes. Local subscribers already have it.
    fn publish(&self, topic: &[u8], message: &Arc<PreparedMessage>);

    /// The server has started: hand messages from other nodes to `server` from now on
    /// (with [`ServerHandle::publish_local`]). Called once by
    /// [`Server::start`](super::Server::start). Default: nothing.
    fn attach(&self, server: ServerHandle) {
        let _ = server;
    }

    /// Every worker has stopped ([`ServerHandle::wait`] returned): let go of the handle
    /// and stop the broker's threads. Default: nothing.
    fn detach(&self) {}

    /// Appends the broker's own counters, in the Prometheus text format, to the server's
    /// metrics page ([`ServerConfig::metrics_path`](super::ServerConfig::metrics_path)).
    /// Default: nothing.
    fn metrics(&self, out: &mut String) {
        let _ = out;
    }
}
