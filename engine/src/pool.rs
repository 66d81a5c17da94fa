//! [`BufferPool`]: write buffers shared by many blocking connections (gorilla/websocket's
//! `WriteBufferPool`). With a pool set, a [`Conn`](crate::Conn) holds a write buffer
//! only while it writes a message.
//!
//! Pooled memory is bounded: a connection never hands the pool a buffer that one large
//! message grew past four times the write buffer size (16 KiB at least), and
//! [`SimpleBufferPool`] keeps at most `max_idle` buffers of at most `max_buffer_bytes`
//! each.

use std::sync::Mutex;

/// A pool of write buffers. [`SimpleBufferPool`] is a ready one; implement this trait to
/// share buffers your own way. Use one pool per write buffer size, as gorilla/websocket advises.
pub trait BufferPool: Send + Sync {
    /// A buffer from the pool, or `None` when it is empty (the caller allocates).
    fn get(&self) -> Option<Vec<u8>>;
    /// Give a buffer back (its contents are garbage; it may be dropped).
    fn put(&self, buf: Vec<u8>);
}

/// A thread-safe pool keeping at most `max_idle` buffers, each of at most
/// `max_buffer_bytes` capacity (larger ones are dropped): at most
/// `max_idle * max_buffer_bytes` bytes idle.
///
/// ```
/// use ringcast::pool::{BufferPool, SimpleBufferPool};
/// let pool = SimpleBufferPool::new(16);
/// assert!(pool.get().is_none());
/// pool.put(Vec::with_capacity(4096));
/// assert_eq!(pool.get().map(|b| b.capacity() >= 4096), Some(true));
/// // One large message's buffer is not kept.
/// pool.put(Vec::with_capacity(4 << 20));
/// assert_eq!(pool.idle(), 0);
/// ```
#[derive(Debug)]
pub struct SimpleBufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
    max_idle: usize,
    max_buffer_bytes: usize,
}

/// The largest buffer a [`SimpleBufferPool`] keeps unless told otherwise: 64 KiB, well
/// above the 4 KiB default write buffer and the 16 KiB a connection keeps for itself.
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 64 * 1024;

impl SimpleBufferPool {
    /// A pool keeping up to `max_idle` buffers of up to [`DEFAULT_MAX_BUFFER_BYTES`];
    /// more, or larger, are dropped.
    pub fn new(max_idle: usize) -> SimpleBufferPool {
        SimpleBufferPool::with_max_buffer_bytes(max_idle, DEFAULT_MAX_BUFFER_BYTES)
    }

    /// A pool keeping up to `max_idle` buffers of up to `max_buffer_bytes` each.
    pub fn with_max_buffer_bytes(max_idle: usize, max_buffer_bytes: usize) -> SimpleBufferPool {
        SimpleBufferPool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            max_buffer_bytes,
        }
    }

    /// How many buffers wait in the pool.
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// How many bytes of buffer wait in the pool (their capacity).
    pub fn idle_bytes(&self) -> usize {
        self.idle
            .lock()
            .map(|v| v.iter().map(Vec::capacity).sum())
            .unwrap_or(0)
    }
}

impl Default for SimpleBufferPool {
    /// 256 buffers of up to 64 KiB: at most 16 MiB idle.
    fn default() -> Self {
        SimpleBufferPool::new(256)
    }
}

impl BufferPool for SimpleBufferPool {
    fn get(&self) -> Option<Vec<u8>> {
        self.idle.lock().ok()?.pop()
    }

    fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() > self.max_buffer_bytes {
            return;
        }
        buf.clear();
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_at_most_max_idle_buffers_and_none_above_the_size_bound() {
        let pool = SimpleBufferPool::with_max_buffer_bytes(2, 1024);
        for _ in 0..5 {
            pool.put(Vec::with_capacity(512));
        }
        assert_eq!(pool.idle(), 2, "puts past max_idle are dropped");
        assert!(pool.get().is_some());
        pool.put(Vec::with_capacity(2048));
        assert_eq!(pool.idle(), 1, "a buffer above the size bound is not kept");
        assert!(pool.idle_bytes() <= 1024);
        assert!(pool.get().is_some());
        assert!(pool.get().is_none());
    }
}
