//! Reading a BPF ring buffer in place.
//!
//! libbpf's consumer hands a record to a callback and frees its space as the callback
//! returns, so a record that cannot be sent yet would have to be copied into loader memory.
//! This consumer instead leaves each record in the ring until [`Ring::release`]: the loader
//! sends it straight from the mapping, and a slow publisher leaves records waiting in the
//! ring, where the BPF programs count what no longer fits. The loader needs no buffer of its
//! own, and its memory stays what the rings take.
//!
//! The layout is the kernel's (Documentation/bpf/ringbuf.rst): one writable page holding the
//! consumer position, then a read-only page holding the producer position followed by the
//! data area mapped twice in a row, so that a record that wraps around is contiguous. Each
//! record starts with an 8-byte header, a `u32` length whose top bits say "still being
//! written" and "discarded", and is padded to 8 bytes.

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_LEN: u64 = 8;

pub struct Ring<'fd> {
    /// The map's descriptor, whose mappings the ring owns; `None` over test memory.
    fd: Option<BorrowedFd<'fd>>,
    /// The consumer page (read-write).
    consumer: NonNull<u8>,
    /// The producer page and the data area twice (read-only).
    producer: NonNull<u8>,
    producer_len: usize,
    page: usize,
    mask: u64,
    /// Where the next record starts; published to the kernel on release.
    position: u64,
    /// Bytes the record at `position` takes, header and padding included, once peeked.
    head_len: Option<u64>,
}

impl<'fd> Ring<'fd> {
    /// Maps the ring buffer map `fd` of `size` bytes (its `max_entries`).
    pub fn map(fd: BorrowedFd<'fd>, size: u32) -> std::io::Result<Self> {
        let page = rustix::param::page_size();
        let producer_len = page + 2 * size as usize;
        // SAFETY: fresh mappings of the map's own layout; nothing else refers to them.
        unsafe {
            let consumer =
                mmap(std::ptr::null_mut(), page, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, fd, 0)?;
            let producer =
                match mmap(std::ptr::null_mut(), producer_len, ProtFlags::READ, MapFlags::SHARED, fd, page as u64) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = munmap(consumer, page);
                        return Err(e.into());
                    }
                };
            let consumer = NonNull::new(consumer.cast::<u8>()).expect("mmap does not return null");
            let producer = NonNull::new(producer.cast::<u8>()).expect("mmap does not return null");
            Ok(Self::over(Some(fd), consumer, producer, page, size))
        }
    }

    /// # Safety
    /// `consumer` points to a writable `u64` and `producer` to `page + 2 * size` readable
    /// bytes laid out as the kernel lays out a ring of `size` bytes, valid for `'fd`.
    unsafe fn over(
        fd: Option<BorrowedFd<'fd>>,
        consumer: NonNull<u8>,
        producer: NonNull<u8>,
        page: usize,
        size: u32,
    ) -> Self {
        let position = (*consumer.as_ptr().cast::<AtomicU64>()).load(Ordering::Acquire);
        Ring {
            fd,
            consumer,
            producer,
            producer_len: page + 2 * size as usize,
            page,
            mask: u64::from(size) - 1,
            position,
            head_len: None,
        }
    }

    /// The map's descriptor: readable (`poll`) while the ring holds a record.
    pub fn fd(&self) -> BorrowedFd<'fd> {
        self.fd.expect("a mapped ring has its descriptor")
    }

    fn producer_position(&self) -> u64 {
        // SAFETY: the producer position is the first word of the producer page, which the
        // kernel updates atomically. The page is mapped read-only: a relaxed load, then a
        // fence orders the reads of the records it covers after it.
        let position = unsafe { (*self.producer.as_ptr().cast::<AtomicU64>()).load(Ordering::Relaxed) };
        fence(Ordering::Acquire);
        position
    }

    /// Whether, once [`Self::peek`] found nothing to take, a record is still being written at
    /// the ring's head (reserved, not yet submitted): its descriptor then reads as ready,
    /// since the kernel moves the producer position at the reservation, while nothing can be
    /// taken, for as long as a BPF program copies a message of up to 4 MB in.
    pub fn head_being_written(&self) -> bool {
        self.position < self.producer_position()
    }

    /// The oldest record not released yet, or `None` if the ring is empty or that record is
    /// still being written. Discarded records are skipped (and their space freed).
    pub fn peek(&mut self) -> Option<&[u8]> {
        loop {
            if self.position >= self.producer_position() {
                return None;
            }
            // SAFETY: `position` lies before the producer position, so a header is there, in
            // the data area, aligned to 8 bytes; the kernel writes its length atomically (a
            // relaxed load from the read-only mapping, then a fence for the body's bytes).
            let header = unsafe { self.data().add((self.position & self.mask) as usize) };
            let len = unsafe { (*header.cast::<AtomicU32>()).load(Ordering::Relaxed) };
            fence(Ordering::Acquire);
            if len & BUSY_BIT != 0 {
                return None;
            }
            let body_len = u64::from(len & !(BUSY_BIT | DISCARD_BIT));
            self.head_len = Some((HEADER_LEN + body_len).next_multiple_of(8));
            if len & DISCARD_BIT != 0 {
                self.release();
                continue;
            }
            // SAFETY: a committed record of `body_len` bytes follows its header; the data area
            // is mapped twice, so it is contiguous even where it wraps, and the kernel does
            // not reuse its space before `release` moves the consumer position past it.
            return Some(unsafe { std::slice::from_raw_parts(header.add(HEADER_LEN as usize), body_len as usize) });
        }
    }

    /// Frees the space of the record [`Self::peek`] returned last.
    pub fn release(&mut self) {
        let Some(len) = self.head_len.take() else { return };
        self.position += len;
        // SAFETY: the consumer position is the first word of the consumer page, ours to write.
        unsafe { (*self.consumer.as_ptr().cast::<AtomicU64>()).store(self.position, Ordering::Release) };
    }

    fn data(&self) -> *const u8 {
        // SAFETY: the data area starts one page into the producer mapping.
        unsafe { self.producer.as_ptr().add(self.page) }
    }
}

impl Drop for Ring<'_> {
    fn drop(&mut self) {
        if self.fd.is_none() {
            return;
        }
        // SAFETY: the mappings made in `map`, no longer referred to.
        unsafe {
            let _ = munmap(self.producer.as_ptr().cast(), self.producer_len);
            let _ = munmap(self.consumer.as_ptr().cast(), self.page);
        }
    }
}

/// A ring laid out in ordinary memory as the kernel lays it out, for tests: the producer side
/// writes records as a BPF program's reserve and submit (or discard) leave them.
#[cfg(test)]
pub mod memory {
    use super::*;

    pub const PAGE: usize = 4096;

    pub struct Memory {
        consumer: Box<[u64]>,
        /// The producer page, then the data area twice (what the kernel maps twice is
        /// written to both copies here).
        producer: Box<[u64]>,
        size: usize,
    }

    impl Memory {
        pub fn new(size: usize) -> Self {
            Memory { consumer: vec![0; PAGE / 8].into(), producer: vec![0; (PAGE + 2 * size) / 8].into(), size }
        }

        pub fn ring(&mut self) -> Ring<'_> {
            let consumer = NonNull::from(&mut self.consumer[0]).cast();
            let producer = NonNull::from(&mut self.producer[0]).cast();
            // SAFETY: both buffers are laid out as `over` requires and outlive the ring.
            unsafe { Ring::over(None, consumer, producer, PAGE, self.size as u32) }
        }

        fn bytes(&mut self) -> &mut [u8] {
            bytemuck::cast_slice_mut(&mut self.producer)
        }

        pub fn consumer_position(&self) -> u64 {
            self.consumer[0]
        }

        /// Appends a record with the header bits `flags` (BUSY_BIT, DISCARD_BIT or none);
        /// returns where its header lies in the data area.
        pub fn write(&mut self, body: &[u8], flags: u32) -> usize {
            let producer = self.producer[0];
            let at = (producer % self.size as u64) as usize;
            let mut record = ((body.len() as u32) | flags).to_ne_bytes().to_vec();
            record.extend_from_slice(&[0; 4]);
            record.extend_from_slice(body);
            record.resize(record.len().next_multiple_of(8), 0);
            assert!(producer + record.len() as u64 - self.consumer[0] <= self.size as u64, "the test ring overflows");
            let size = self.size;
            for (i, b) in record.iter().enumerate() {
                let offset = (at + i) % size;
                self.bytes()[PAGE + offset] = *b;
                self.bytes()[PAGE + size + offset] = *b;
            }
            self.producer[0] = producer + record.len() as u64;
            at
        }

        /// Sets the header bits of the record at `at` (a BPF program committing it).
        pub fn set_flags(&mut self, at: usize, flags: u32) {
            let size = self.size;
            for base in [PAGE + at, PAGE + size + at] {
                let word = &mut self.bytes()[base..base + 4];
                let len = u32::from_ne_bytes(word.try_into().expect("4 bytes")) & !(BUSY_BIT | DISCARD_BIT);
                word.copy_from_slice(&(len | flags).to_ne_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::Memory;
    use super::*;

    #[test]
    fn records_are_peeked_in_order_and_freed_only_on_release() {
        let mut memory = Memory::new(4096);
        memory.write(b"first", 0);
        memory.write(b"second record", 0);
        let mut ring = memory.ring();
        assert_eq!(ring.peek(), Some(&b"first"[..]));
        assert_eq!(ring.peek(), Some(&b"first"[..]), "peeking again gives the same record");
        ring.release();
        assert_eq!(ring.peek(), Some(&b"second record"[..]));
        ring.release();
        assert_eq!(ring.peek(), None);
        drop(ring);
        assert_eq!(memory.consumer_position(), 16 + 24, "each record's header and padding freed");
    }

    #[test]
    fn a_record_still_being_written_holds_back_the_ones_after_it() {
        let mut memory = Memory::new(4096);
        assert!(!memory.ring().head_being_written(), "an empty ring");
        let busy = memory.write(b"busy", BUSY_BIT);
        memory.write(b"after", 0);
        {
            let mut ring = memory.ring();
            assert_eq!(ring.peek(), None);
            assert!(ring.head_being_written());
        }
        memory.set_flags(busy, 0);
        let mut ring = memory.ring();
        assert_eq!(ring.peek(), Some(&b"busy"[..]));
    }

    #[test]
    fn discarded_records_are_stepped_over_and_freed() {
        let mut memory = Memory::new(4096);
        memory.write(b"discarded", DISCARD_BIT);
        memory.write(b"kept", 0);
        let mut ring = memory.ring();
        assert_eq!(ring.peek(), Some(&b"kept"[..]));
        drop(ring);
        assert_eq!(memory.consumer_position(), 24, "the discarded record's space is free");
    }

    #[test]
    fn a_record_that_wraps_around_the_end_is_contiguous() {
        let mut memory = Memory::new(64);
        memory.write(&[1; 40], 0);
        let mut ring = memory.ring();
        ring.peek();
        ring.release();
        drop(ring);
        let body: Vec<u8> = (0..40).collect();
        assert_eq!(memory.write(&body, 0), 48, "the header lies 16 bytes before the end");
        assert_eq!(memory.ring().peek(), Some(&body[..]));
    }
}
