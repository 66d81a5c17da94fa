//! Write-buffer arena: per-connection frames (control frames, small unicast messages) are
//! built in fixed-size chunks that are reused, so sending one costs no heap allocation.
//!
//! Each buffer handed out is a slice of a chunk; freezing it gives a [`Bytes`](bytes::Bytes) that keeps the
//! whole chunk alive by reference count. A chunk is reused only once every `Bytes` cut from it
//! has been dropped, which for a send happens when its completion has come back (the driver's
//! in-flight table holds the `Bytes` until then). So memory the kernel may read is never
//! freed or rewritten. Safe code only: `bytes` does the counting.

#[cfg(test)]
use bytes::Bytes;
use bytes::BytesMut;

/// A pool of fixed-size chunks that buffers are carved from. One per worker.
#[derive(Debug)]
pub struct Arena {
    chunk_size: usize,
    max_idle: usize,
    /// The chunk buffers are carved from now.
    current: BytesMut,
    /// Earlier chunks (their unused tails), reused once nothing else refers to them.
    retired: Vec<BytesMut>,
    /// Chunks allocated, for the tests.
    #[cfg(test)]
    allocated: u64,
}

impl Arena {
    /// Default chunk size: 16 KiB holds many small frames and one typical TLS record.
    pub const DEFAULT_CHUNK_SIZE: usize = 16 * 1024;

    /// An arena of `chunk_size`-byte chunks keeping at most `max_idle` retired chunks.
    pub fn new(chunk_size: usize, max_idle: usize) -> Arena {
        let chunk_size = chunk_size.max(64);
        Arena {
            chunk_size,
            max_idle,
            current: BytesMut::with_capacity(chunk_size),
            retired: Vec::new(),
            #[cfg(test)]
            allocated: 1,
        }
    }

    /// An empty buffer with room for `len` bytes. Writing more than `len` still works but
    /// may move the buffer to its own allocation. Freeze it to queue it for sending.
    pub fn buffer(&mut self, len: usize) -> BytesMut {
        if len > self.chunk_size / 2 {
            // Large buffers would waste most of a chunk; they get their own allocation.
            #[cfg(test)]
            {
                self.allocated += 1;
            }
            return BytesMut::with_capacity(len);
        }
        if self.current.capacity() < len && !self.current.try_reclaim(self.chunk_size) {
            self.rotate();
        }
        // The chunk's bytes are never initialised here: the piece is its first `len` bytes
        // of capacity, empty, and the chunk keeps the rest.
        let rest = self.current.split_off(len);
        std::mem::replace(&mut self.current, rest)
    }

    /// Copies `bytes` into arena memory and returns it frozen.
    #[cfg(test)]
    pub fn copy(&mut self, bytes: &[u8]) -> Bytes {
        let mut b = self.buffer(bytes.len());
        b.extend_from_slice(bytes);
        b.freeze()
    }

    /// Replaces the current chunk with a free retired one or a new one.
    fn rotate(&mut self) {
        let reuse = self
            .retired
            .iter_mut()
            .position(|c| c.try_reclaim(self.chunk_size));
        let next = match reuse {
            Some(i) => self.retired.swap_remove(i),
            None => {
                #[cfg(test)]
                {
                    self.allocated += 1;
                }
                BytesMut::with_capacity(self.chunk_size)
            }
        };
        let old = std::mem::replace(&mut self.current, next);
        if self.retired.len() < self.max_idle {
            self.retired.push(old);
        }
        // Otherwise `old` drops here; its chunk is freed when its last `Bytes` goes.
    }

    /// Chunks (and large buffers) allocated so far.
    #[cfg(test)]
    pub fn allocations(&self) -> u64 {
        self.allocated
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new(Self::DEFAULT_CHUNK_SIZE, 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_reused_once_their_frames_are_dropped() {
        let mut arena = Arena::new(1024, 4);
        for _ in 0..1000 {
            let frame = arena.copy(&[7u8; 100]);
            assert_eq!(&frame[..], &[7u8; 100][..]);
        }
        assert!(
            arena.allocations() <= 2,
            "allocated {}",
            arena.allocations()
        );
    }

    #[test]
    fn held_frames_keep_their_bytes() {
        let mut arena = Arena::new(1024, 4);
        let held: Vec<Bytes> = (0..50u8).map(|i| arena.copy(&[i; 90])).collect();
        for (i, f) in held.iter().enumerate() {
            assert!(f.iter().all(|&b| b == i as u8));
        }
        drop(held);
        let before = arena.allocations();
        for _ in 0..100 {
            drop(arena.copy(&[1; 90]));
        }
        assert!(arena.allocations() <= before + 1);
    }

    #[test]
    fn pieces_are_carved_side_by_side_from_one_chunk() {
        let mut arena = Arena::new(1024, 4);
        let mut a = arena.buffer(100);
        let mut b = arena.buffer(100);
        assert!(a.is_empty() && a.capacity() >= 100);
        a.extend_from_slice(&[1; 100]);
        b.extend_from_slice(&[2; 100]);
        // Filling a piece to its length does not move it out of the chunk.
        assert_eq!(a.as_ptr().wrapping_add(100), b.as_ptr());
        assert_eq!(&a.freeze()[..], &[1; 100][..]);
        assert_eq!(&b.freeze()[..], &[2; 100][..]);
        assert_eq!(arena.allocations(), 1);
    }

    #[test]
    fn large_buffers_get_their_own_allocation() {
        let mut arena = Arena::new(1024, 4);
        let b = arena.copy(&[3u8; 4000]);
        assert_eq!(b.len(), 4000);
    }
}
