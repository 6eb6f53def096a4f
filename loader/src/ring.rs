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
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_LEN: u64 = 8;

pub struct Ring<'fd> {
    fd: BorrowedFd<'fd>,
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
            let position = (*consumer.as_ptr().cast::<AtomicU64>()).load(Ordering::Acquire);
            Ok(Ring {
                fd,
                consumer,
                producer: NonNull::new(producer.cast::<u8>()).expect("mmap does not return null"),
                producer_len,
                page,
                mask: u64::from(size) - 1,
                position,
                head_len: None,
            })
        }
    }

    /// The map's descriptor: readable (`poll`) while the ring holds a record.
    pub fn fd(&self) -> BorrowedFd<'fd> {
        self.fd
    }

    fn producer_position(&self) -> u64 {
        // SAFETY: the producer position is the first word of the producer page, which the
        // kernel updates atomically.
        unsafe { (*self.producer.as_ptr().cast::<AtomicU64>()).load(Ordering::Acquire) }
    }

    /// The oldest record not released yet, or `None` if the ring is empty or that record is
    /// still being written. Discarded records are skipped (and their space freed).
    pub fn peek(&mut self) -> Option<&[u8]> {
        loop {
            if self.position >= self.producer_position() {
                return None;
            }
            // SAFETY: `position` lies before the producer position, so a header is there, in
            // the data area, aligned to 8 bytes; the kernel writes its length atomically.
            let header = unsafe { self.data().add((self.position & self.mask) as usize) };
            let len = unsafe { (*header.cast::<AtomicU32>()).load(Ordering::Acquire) };
            if len & BUSY_BIT != 0 {
                return None;
            }
            let body_len = u64::from(len & !(BUSY_BIT | DISCARD_BIT));
            let total = (HEADER_LEN + body_len).next_multiple_of(8);
            if len & DISCARD_BIT != 0 {
                self.head_len = Some(total);
                self.release();
                continue;
            }
            self.head_len = Some(total);
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
        // SAFETY: the mappings made in `map`, no longer referred to.
        unsafe {
            let _ = munmap(self.producer.as_ptr().cast(), self.producer_len);
            let _ = munmap(self.consumer.as_ptr().cast(), self.page);
        }
    }
}
