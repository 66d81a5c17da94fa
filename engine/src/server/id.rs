//! [`ConnId`]: names one connection across the whole server, and only that one.
//!
//! A slab key alone would alias: when a connection closes its key is reused. The id
//! carries the slot's generation too, so a handle to a closed connection is rejected
//! rather than reaching its successor (the generation is 24 bits: an id could come back
//! only after 16.7 million connections of one worker, all on the same slot).

use std::fmt;

/// A connection's id: worker index, slab key and the slot's generation, packed in 64 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// Pack the parts. The generation wraps at 2^24, the worker index at 2^8.
    pub(crate) fn new(worker: usize, key: usize, generation: u32) -> ConnId {
        ConnId(
            ((worker as u64 & 0xff) << 56)
                | ((generation as u64 & 0xff_ffff) << 32)
                | (key as u64 & 0xffff_ffff),
        )
    }

    /// The index of the worker that owns the connection.
    pub fn worker(self) -> usize {
        (self.0 >> 56) as usize
    }

    /// The slab key within the worker.
    pub(crate) fn key(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// The generation of the slab slot when the connection was opened.
    pub(crate) fn generation(self) -> u32 {
        ((self.0 >> 32) & 0xff_ffff) as u32
    }

    /// The id as one number (for logs, maps, or sending to another process).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The id from [`as_u64`](Self::as_u64).
    pub fn from_u64(raw: u64) -> ConnId {
        ConnId(raw)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConnId({}:{}#{})",
            self.worker(),
            self.key(),
            self.generation()
        )
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}#{}", self.worker(), self.key(), self.generation())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_survive_packing() {
        let id = ConnId::new(3, 70_000, 0x12_3456);
        assert_eq!(
            (id.worker(), id.key(), id.generation()),
            (3, 70_000, 0x12_3456)
        );
        assert_eq!(ConnId::from_u64(id.as_u64()), id);
    }

    #[test]
    fn same_key_with_next_generation_is_another_id() {
        assert_ne!(ConnId::new(0, 5, 1), ConnId::new(0, 5, 2));
    }
}
