//! Provided-buffer ring (`IORING_REGISTER_PBUF_RING`, kernel 5.19) for multishot receive.
//!
//! A fixed number of fixed-size buffers, all in one mapping. The kernel picks a buffer from
//! the ring for each receive and reports its id in the completion; the driver lends it to the
//! worker as a [`RecvBuf`](super::RecvBuf), whose drop puts the id back at the ring's tail.
//! A buffer is therefore in exactly one place at a time: in the ring (the kernel may write
//! it) or lent to one `RecvBuf` (only that handle touches it).
//!
//! Not used: incremental consumption (`IOU_PBUF_RING_INC`, 6.12), which lets one buffer hold
//! several receives but makes a buffer's return depend on more than one handle.

use std::cell::Cell;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;

use super::socket::syscall;

/// The kernel's `struct io_uring_buf`. The ring's tail shares the last two bytes (`resv`) of
/// entry 0, so entries are only ever written field by field through raw pointers.
#[repr(C)]
struct RingEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RingEntry>() == 16);

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing aliases
        // nothing; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; no reference into the mapping
        // outlives `self` (the owners below hold the `Mapping`).
        let _ = unsafe { syscall!(munmap(self.ptr.as_ptr().cast(), self.len)) };
    }
}

/// A registered provided-buffer ring of `count` buffers of `size` bytes.
pub struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    count: u16,
    size: u32,
    group: u16,
    /// Our copy of the tail; published to the kernel with a release store.
    tail: Cell<u16>,
    /// Buffers the kernel reported in completions, and buffers given back: the tests check
    /// that teardown and dropped completions leave none out.
    #[cfg(test)]
    counts: Cell<(u64, u64)>,
}

impl BufRing {
    /// Maps the ring and the buffers, fills the ring with every buffer, and registers it with
    /// the io_uring of `submitter` as buffer group `group`.
    pub(crate) fn new(
        submitter: &Submitter<'_>,
        count: u16,
        size: u32,
        group: u16,
    ) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("buffer ring of {count} x {size} bytes: count must be a power of two up to 32768"),
            ));
        }
        let ring = Mapping::new(usize::from(count) * std::mem::size_of::<RingEntry>())?;
        let bufs = Mapping::new(usize::from(count) * size as usize)?;
        let this = BufRing {
            ring,
            bufs,
            count,
            size,
            group,
            tail: Cell::new(0),
            #[cfg(test)]
            counts: Cell::new((0, 0)),
        };
        for bid in 0..count {
            this.push(bid);
        }
        this.publish();
        // SAFETY: the ring mapping is `count` entries long and lives in `self.ring` until
        // `BufRing` drops; the driver unregisters it or closes the io_uring first (and when
        // it cannot drain the kernel's operations, it leaks the `BufRing` rather than drop it).
        unsafe {
            submitter.register_buf_ring_with_flags(this.ring.ptr.as_ptr() as u64, count, group, 0)
        }?;
        Ok(this)
    }

    /// The buffer group id to name in receive operations.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Number of buffers.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Size of each buffer.
    pub fn buffer_size(&self) -> u32 {
        self.size
    }

    fn buffer_ptr(&self, bid: u16) -> *mut u8 {
        debug_assert!(bid < self.count);
        let bid = bid % self.count;
        // SAFETY: `bid < count`, so the offset stays inside the `count * size` mapping.
        unsafe {
            self.bufs
                .ptr
                .as_ptr()
                .add(usize::from(bid) * self.size as usize)
        }
    }

    /// Buffer `bid`, writable.
    ///
    /// # Safety
    ///
    /// The caller holds the lease on `bid`: the kernel reported it in a completion and it has
    /// not been [`recycle`](Self::recycle)d since, and no other reference to it is alive.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn buffer_mut(&self, bid: u16) -> &mut [u8] {
        // SAFETY: the caller's lease means the kernel does not write this buffer and no
        // other handle aliases it; the pointer is in the mapping, which outlives `&self`.
        unsafe { std::slice::from_raw_parts_mut(self.buffer_ptr(bid), self.size as usize) }
    }

    /// Writes the entry for `bid` at our tail and advances it, without publishing.
    fn push(&self, bid: u16) {
        let tail = self.tail.get();
        let idx = usize::from(tail & (self.count - 1));
        let entry = self.ring.ptr.as_ptr().cast::<RingEntry>();
        // SAFETY: `idx < count`, so the entry is inside the ring mapping. Slot `idx` is past
        // the published tail, so the kernel does not read it until `publish`. Fields are
        // written one by one (never `resv`, which in entry 0 is the shared tail).
        unsafe {
            let e = entry.add(idx);
            std::ptr::addr_of_mut!((*e).addr).write(self.buffer_ptr(bid) as u64);
            std::ptr::addr_of_mut!((*e).len).write(self.size);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail.set(tail.wrapping_add(1));
    }

    fn publish(&self) {
        // SAFETY: the tail is the u16 at byte offset 14 of the ring (entry 0's `resv`),
        // suitably aligned; the kernel only reads it. An atomic view makes our release store
        // order the entry writes before it.
        let tail = unsafe { &*self.ring.ptr.as_ptr().add(14).cast::<AtomicU16>() };
        tail.store(self.tail.get(), Ordering::Release);
    }

    /// Gives buffer `bid` back to the kernel. Called once per lease, by the `RecvBuf` drop.
    pub(crate) fn recycle(&self, bid: u16) {
        self.push(bid);
        self.publish();
        #[cfg(test)]
        {
            let (reported, returned) = self.counts.get();
            self.counts.set((reported, returned + 1));
        }
    }

    /// Counts `n` buffers the kernel reported in completions.
    #[cfg(test)]
    pub(crate) fn note_reported(&self, n: usize) {
        let (reported, returned) = self.counts.get();
        self.counts.set((reported + n as u64, returned));
    }

    /// Buffers the kernel reported in completions, and buffers given back since.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        self.counts.get()
    }
}
