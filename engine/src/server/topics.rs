//! [`Topics`]: one worker's subscriptions, topic name to the slab keys of its local
//! subscribers, and the way back (each connection lists its topics with its place in each
//! subscriber list, so leaving is O(1) per topic even with 100 000 subscribers).

use std::collections::HashMap;

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
    subscribers: Vec<u32>,
}

/// The subscriptions of one worker's connections.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    ids: HashMap<Bytes, u32>,
    entries: Slab<Entry>,
}

impl Topics {
    /// Adds connection `key` to `name`; `Some(count)` with the new local count when it
    /// was not subscribed yet.
    pub(crate) fn subscribe<D>(
        &mut self,
        conns: &mut Slab<Connection<D>>,
        key: usize,
        name: &[u8],
    ) -> Option<usize> {
        let id = match self.ids.get(name) {
            Some(&id) => id,
            None => {
                let name = Bytes::copy_from_slice(name);
                let id = self.entries.insert(Entry {
                    name: name.clone(),
                    subscribers: Vec::new(),
                }) as u32;
                self.ids.insert(name, id);
                id
            }
        };
        let conn = &mut conns[key];
        if conn.topics.iter().any(|&(topic, _)| topic == id) {
            return None;
        }
        let entry = &mut self.entries[id as usize];
        conn.topics.push((id, entry.subscribers.len() as u32));
        entry.subscribers.push(key as u32);
        Some(entry.subscribers.len())
    }

    /// Removes connection `key` from `name`; `Some(count)` with the local count left when
    /// it was subscribed.
    pub(crate) fn unsubscribe<D>(
        &mut self,
        conns: &mut Slab<Connection<D>>,
        key: usize,
        name: &[u8],
    ) -> Option<usize> {
        let id = *self.ids.get(name)?;
        let index = conns[key]
            .topics
            .iter()
            .position(|&(topic, _)| topic == id)?;
        let (_, place) = conns[key].topics.swap_remove(index);
        Some(self.remove(conns, id, place))
    }

    /// Removes connection `key` from every topic (it is closing); calls `left` with each
    /// topic's name and the local count left.
    pub(crate) fn leave_all<D>(
        &mut self,
        conns: &mut Slab<Connection<D>>,
        key: usize,
        mut left: impl FnMut(&Bytes, usize),
    ) {
        let topics = std::mem::take(&mut conns[key].topics);
        for (id, place) in topics {
            let name = self.entries[id as usize].name.clone();
            let count = self.remove(conns, id, place);
            left(&name, count);
        }
    }

    /// Takes the subscriber at `place` out of topic `id`; the last subscriber moves into
    /// the hole and its connection learns its new place. Returns the count left.
    fn remove<D>(&mut self, conns: &mut Slab<Connection<D>>, id: u32, place: u32) -> usize {
        let entry = &mut self.entries[id as usize];
        entry.subscribers.swap_remove(place as usize);
        if let Some(&moved) = entry.subscribers.get(place as usize) {
            if let Some(slot) = conns[moved as usize]
                .topics
                .iter_mut()
                .find(|(topic, _)| *topic == id)
            {
                slot.1 = place;
            }
        }
        let left = entry.subscribers.len();
        if left == 0 {
            let entry = self.entries.remove(id as usize);
            self.ids.remove(&entry.name);
        }
        left
    }

    /// Whether connection `key` is subscribed to `name`.
    pub(crate) fn is_subscribed<D>(
        &self,
        conns: &Slab<Connection<D>>,
        key: usize,
        name: &[u8],
    ) -> bool {
        self.ids
            .get(name)
            .is_some_and(|id| conns[key].topics.iter().any(|(topic, _)| topic == id))
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
