//! In-process fan-out through a worker's real queueing path, with no sockets: for the
//! criterion bench (ns per delivery). Not part of the stable API.

use std::sync::Arc;

use bytes::Bytes;

use crate::prepared::PreparedMessage;
use crate::proto::deflate::DeflateSettings;
use crate::sys::SendBuf;

use super::core::{detached_core, Core};
use super::handle::Publish;

/// `subscribers` open connections (no sockets) on one topic of one worker core.
pub struct LocalFanout {
    core: Core<()>,
    keys: Vec<usize>,
    topic: Bytes,
    batch: Vec<SendBuf>,
}

impl LocalFanout {
    /// Subscribers with permessage-deflate agreed when `compressed`.
    pub fn new(subscribers: usize, compressed: bool) -> LocalFanout {
        let mut core = detached_core(1 << 20);
        let compression = compressed.then(DeflateSettings::default);
        let topic = Bytes::from_static(b"bench");
        let keys: Vec<usize> = (0..subscribers)
            .map(|_| core.insert_detached(compression))
            .collect();
        for &key in &keys {
            core.subscribe(key, &topic)
                .expect("one topic per connection is within the limit");
        }
        LocalFanout {
            core,
            keys,
            topic,
            batch: Vec::new(),
        }
    }

    /// Publishes `message` to every subscriber (queued on each outbox exactly as the
    /// worker does), then empties the outboxes as completed sends would. Returns the
    /// deliveries.
    pub fn publish(&mut self, message: Arc<PreparedMessage>) -> usize {
        let publish = Publish {
            topic: self.topic.clone(),
            message,
            origin: None,
            include_origin: false,
        };
        let delivered = self.core.deliver(&publish);
        self.core.settle_runs();
        for &key in &self.keys {
            let conn = &mut self.core.conns[key];
            conn.outbox
                .take_batch(&mut self.core.arena, &mut self.batch);
            self.batch.clear();
            let queued = conn.outbox.queued_bytes();
            conn.outbox.sent(queued, usize::MAX);
            conn.dirty = false;
        }
        self.core.dirty.clear();
        delivered
    }
}
