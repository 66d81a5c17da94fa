//! [`Topics`]: one worker's subscriptions, topic name to the slab keys of its local
//! subscribers, and the way back. Every operation on one (connection, topic) pair is O(1),
//! however many topics the connection has or subscribers the topic has:
//!
//! - each topic keeps its subscribers' slab keys (the list a publish walks) and, beside it,
//!   where each subscription sits in its connection's own list;
//! - each connection lists its topics with its place in each topic's subscriber list;
//! - an index maps (slab key, topic id) to the place in the connection's list, so
//!   "already subscribed?" and unsubscribe need no scan.
//!
//! A removal swaps the last element into the hole (on either side) and tells the moved
//! element's other side its new place. Before this, subscribe and unsubscribe scanned the
//! connection's list and a removal scanned the moved subscriber's list: a connection
//! sharing n topics with another took about n²/2 steps to close (25.8 s at 300 000 topics,
//! issue 12).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;
use slab::Slab;

use super::conn::Connection;

/// The longest topic name, in bytes. Names are byte strings (any bytes); a longer one is
/// refused with [`Error::InvalidArgument`](crate::Error::InvalidArgument).
pub const MAX_TOPIC_LEN: usize = 1024;

/// A topic and its local subscribers.
#[derive(Debug)]
struct Entry {
    name: Bytes,
    /// The subscribers' slab keys: what a publish walks.
    subscribers: Vec<u32>,
    /// Beside each subscriber: the subscription's place in that connection's topic list.
    slots: Vec<u32>,
}

/// A subscription the connection's topic limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverLimit;

/// The subscriptions of one worker's connections.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    ids: HashMap<Bytes, u32>,
    entries: Slab<Entry>,
    /// (slab key, topic id), packed as `key << 32 | id`, to the subscription's place in
    /// the connection's topic list.
    index: HashMap<u64, u32, BuildHasherDefault<PairHasher>>,
    /// Subscription records read or written (list entries and index entries), for the
    /// tests that check every operation is O(1).
    #[cfg(test)]
    pub(crate) visits: u64,
}

fn pair(key: usize, id: u32) -> u64 {
    (key as u64) << 32 | u64::from(id)
}

impl Topics {
    /// Counts `n` subscription records touched (tests only).
    #[inline]
    fn visit(&mut self, n: u64) {
        #[cfg(test)]
        {
            self.visits += n;
        }
        let _ = n;
    }

    /// Adds connection `key` to `name`: `Ok(Some((name, count)))` with the stored name and
    /// the new local count when it was not subscribed yet, `Ok(None)` when it was, and
    /// `Err(OverLimit)` when it already holds `limit` topics.
    pub(crate) fn subscribe<D>(
        &mut self,
        conns: &mut Slab<Connection<D>>,
        key: usize,
        name: &[u8],
        limit: usize,
    ) -> Result<Option<(Bytes, usize)>, OverLimit> {
        let existing = self.ids.get(name).copied();
        self.visit(1);
        if let Some(id) = existing {
            if self.index.contains_key(&pair(key, id)) {
                return Ok(None);
            }
        }
        let conn = &mut conns[key];
        if conn.topics.len() >= limit {
            return Err(OverLimit);
        }
        let id = match existing {
            Some(id) => id,
            None => {
                let name = Bytes::copy_from_slice(name);
                let id = self.entries.insert(Entry {
                    name: name.clone(),
                    subscribers: Vec::new(),
                    slots: Vec::new(),
                }) as u32;
                self.ids.insert(name, id);
                id
            }
        };
        let entry = &mut self.entries[id as usize];
        let slot = conn.topics.len() as u32;
        conn.topics.push((id, entry.subscribers.len() as u32));
        entry.subscribers.push(key as u32);
        entry.slots.push(slot);
        let done = (entry.name.clone(), entry.subscribers.len());
        self.index.insert(pair(key, id), slot);
        self.visit(2);
        Ok(Some(done))
    }

    /// Removes connection `key` from `name`: `Some((name, count))` with the local count
    /// left when it was subscribed.
    pub(crate) fn unsubscribe<D>(
        &mut self,
        conns: &mut Slab<Connection<D>>,
        key: usize,
        name: &[u8],
    ) -> Option<(Bytes, usize)> {
        let id = *self.ids.get(name)?;
        let slot = self.index.remove(&pair(key, id))? as usize;
        let list = &mut conns[key].topics;
        let (_, place) = list.swap_remove(slot);
        self.visit(2);
        if let Some(&(moved, moved_place)) = list.get(slot) {
            // The connection's last subscription took the hole: tell both of its sides.
            self.index.insert(pair(key, moved), slot as u32);
            self.entries[moved as usize].slots[moved_place as usize] = slot as u32;
            self.visit(2);
        }
        Some(self.remove(conns, id, place))
    }

    /// Removes connection `key` from at most `budget` of its topics, the last subscribed
    /// first, calling `left` with each topic's name and the local count left. Returns
    /// whether none is left.
    pub(crate) fn leave<D>(
        &mut self,
        conns: &mut Slab<Connection<D>>,
        key: usize,
        budget: usize,
        mut left: impl FnMut(Bytes, usize),
    ) -> bool {
        for _ in 0..budget {
            // The last one: taking it moves no other subscription of this connection.
            let Some((id, place)) = conns[key].topics.pop() else {
                return true;
            };
            self.index.remove(&pair(key, id));
            self.visit(2);
            let (name, count) = self.remove(conns, id, place);
            left(name, count);
        }
        conns[key].topics.is_empty()
    }

    /// Takes the subscriber at `place` out of topic `id`; the last subscriber moves into
    /// the hole and its connection learns its new place. Returns the topic's name and the
    /// count left.
    fn remove<D>(
        &mut self,
        conns: &mut Slab<Connection<D>>,
        id: u32,
        place: u32,
    ) -> (Bytes, usize) {
        let entry = &mut self.entries[id as usize];
        let place = place as usize;
        entry.subscribers.swap_remove(place);
        entry.slots.swap_remove(place);
        let mut visits = 2;
        if let (Some(&moved), Some(&slot)) = (entry.subscribers.get(place), entry.slots.get(place))
        {
            conns[moved as usize].topics[slot as usize].1 = place as u32;
            visits += 1;
        }
        let left = entry.subscribers.len();
        let name = if left == 0 {
            let entry = self.entries.remove(id as usize);
            self.ids.remove(&entry.name);
            entry.name
        } else {
            entry.name.clone()
        };
        self.visit(visits);
        (name, left)
    }

    /// Whether connection `key` is subscribed to `name`.
    pub(crate) fn is_subscribed(&self, key: usize, name: &[u8]) -> bool {
        self.ids
            .get(name)
            .is_some_and(|&id| self.index.contains_key(&pair(key, id)))
    }

    /// The id of topic `name`, if it has local subscribers.
    pub(crate) fn id(&self, name: &[u8]) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// Takes the subscriber list of topic `id` out, to walk it while queueing; give it
    /// back with [`put_back`](Self::put_back).
    pub(crate) fn take(&mut self, id: u32) -> Vec<u32> {
        std::mem::take(&mut self.entries[id as usize].subscribers)
    }

    /// Returns a list taken with [`take`](Self::take).
    pub(crate) fn put_back(&mut self, id: u32, subscribers: Vec<u32>) {
        self.entries[id as usize].subscribers = subscribers;
    }

    /// Number of topics with local subscribers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Hashes the packed (slab key, topic id) pairs of [`Topics::index`] with the SplitMix64
/// finaliser: both halves are small numbers the worker hands out itself, not strings a
/// peer chooses, so a bijective mix spreads them as well as SipHash does, at a fraction of
/// the cost (leaving 300 000 topics is 300 000 index removals on the worker's thread).
#[derive(Debug, Default)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the key is a u64); this keeps any other use correct.
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = z ^ (z >> 31);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
