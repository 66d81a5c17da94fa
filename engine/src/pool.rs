//! [`BufferPool`]: write buffers shared by many blocking connections (the seed's
//! `WriteBufferPool`). With a pool set, a [`Conn`](crate::Conn) holds a write buffer
//! only while it writes a message.

use std::sync::Mutex;

/// A pool of write buffers. [`SimpleBufferPool`] is a ready one; implement this trait to
/// share buffers your own way. Use one pool per write buffer size, as the seed advises.
pub trait BufferPool: Send + Sync {
    /// A buffer from the pool, or `None` when it is empty (the caller allocates).
    fn get(&self) -> Option<Vec<u8>>;
    /// Give a buffer back (its contents are garbage; it may be dropped).
    fn put(&self, buf: Vec<u8>);
}

/// A thread-safe pool keeping at most `max_idle` buffers.
///
/// ```
/// use ringcast::pool::{BufferPool, SimpleBufferPool};
/// let pool = SimpleBufferPool::new(16);
/// assert!(pool.get().is_none());
/// pool.put(Vec::with_capacity(4096));
/// assert_eq!(pool.get().map(|b| b.capacity() >= 4096), Some(true));
/// ```
#[derive(Debug)]
pub struct SimpleBufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
    max_idle: usize,
}

impl SimpleBufferPool {
    /// A pool keeping up to `max_idle` buffers; more are dropped.
    pub fn new(max_idle: usize) -> SimpleBufferPool {
        SimpleBufferPool {
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// How many buffers wait in the pool.
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }
}

impl Default for SimpleBufferPool {
    fn default() -> Self {
        SimpleBufferPool::new(1024)
    }
}

impl BufferPool for SimpleBufferPool {
    fn get(&self) -> Option<Vec<u8>> {
        self.idle.lock().ok()?.pop()
    }

    fn put(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(buf);
            }
        }
    }
}
