//! The publisher's side: the sequence check and the reassembly of fragmented records, for
//! one connection (docs/ipc.md).

use crate::datagram::{Fragment, OwnedRecord};
use crate::Tracepoint;

/// What a receiver lost, found from sequence numbers and fragment offsets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loss {
    /// Record-carrying datagrams that never arrived.
    pub datagrams: u64,
    /// Records of which only some fragments arrived; each is discarded, never glued to
    /// another record's fragments, and named here once.
    pub records: Vec<Tracepoint>,
}

impl Loss {
    #[cfg(any(test, feature = "testing"))]
    pub fn is_empty(&self) -> bool {
        self.datagrams == 0 && self.records.is_empty()
    }
}

/// A large record's buffer is allocated in whole steps of 64 KiB. Records of one kind differ
/// by the room their peer's address takes, a few hundred bytes: in steps, their buffers take
/// one size, which the allocator hands back from one record to the next. Sized exactly, a
/// freed buffer a few bytes short of the next record was passed over for new heap: the
/// publisher held a 4 MB block more and took longer per block (docs/performance.md). Below
/// 1 MiB, where a step would add more than a sixteenth, buffers are sized exactly. The
/// publisher charges its read-ahead with this size.
pub const fn record_capacity(total_len: u32) -> usize {
    const ROUNDED_FROM: usize = 1 << 20;
    const STEP: usize = 64 * 1024;
    let len = total_len as usize;
    if len < ROUNDED_FROM {
        len
    } else {
        len.next_multiple_of(STEP)
    }
}

struct Partial {
    index: u64,
    tracepoint: Tracepoint,
    ktime_ns: u64,
    total_len: u32,
    data: Vec<u8>,
    /// A fragment of it went missing: its remaining fragments are skipped.
    broken: bool,
}

/// The receiving side's sequence check and fragment reassembly, for one connection.
pub struct Reassembler {
    expected_seq: u64,
    partial: Option<Partial>,
}

impl Reassembler {
    /// For a connection whose hello said its sequence starts at `first_seq` (a loader that
    /// reconnects goes on with its sequence where it was).
    pub fn new(first_seq: u64) -> Self {
        Reassembler { expected_seq: first_seq, partial: None }
    }

    /// Counts the datagrams missing before `seq`.
    fn sequence(&mut self, seq: u64, loss: &mut Loss) -> bool {
        let expected = self.expected_seq;
        loss.datagrams = seq.saturating_sub(expected);
        self.expected_seq = seq.wrapping_add(1);
        seq == expected
    }

    /// Ends the record under way; unless already counted, it is lost.
    fn abandon(&mut self, loss: &mut Loss) {
        if let Some(p) = self.partial.take().filter(|p| !p.broken) {
            loss.records.push(p.tracepoint);
        }
    }

    /// A `Records` datagram arrived.
    pub fn records(&mut self, seq: u64) -> Loss {
        let mut loss = Loss::default();
        self.sequence(seq, &mut loss);
        self.abandon(&mut loss);
        loss
    }

    /// A fragment arrived: returns what was lost before it and, with its last fragment, the
    /// whole record. A record whose fragments do not arrive in order, gapless, is discarded.
    pub fn fragment(&mut self, f: &Fragment<'_>) -> (Loss, Option<OwnedRecord>) {
        let mut loss = Loss::default();
        let in_order = self.sequence(f.seq, &mut loss);
        let same_record = f.offset != 0
            && self.partial.as_ref().is_some_and(|p| {
                (p.index, p.tracepoint, p.ktime_ns, p.total_len) == (f.record, f.tracepoint, f.ktime_ns, f.total_len)
            });
        if !same_record {
            self.abandon(&mut loss);
            // A fragment past the start of a record whose start was lost: that record is lost.
            let broken = f.offset != 0;
            if broken {
                loss.records.push(f.tracepoint);
            }
            self.partial = Some(Partial {
                index: f.record,
                tracepoint: f.tracepoint,
                ktime_ns: f.ktime_ns,
                total_len: f.total_len,
                data: if broken { Vec::new() } else { Vec::with_capacity(record_capacity(f.total_len)) },
                broken,
            });
        }
        let partial = self.partial.as_mut().expect("set above or continued");
        // A gap before a record's first fragment is not this record's loss.
        if !partial.broken && same_record && (!in_order || partial.data.len() != f.offset as usize) {
            loss.records.push(partial.tracepoint);
            partial.broken = true;
            partial.data = Vec::new();
        }
        if !partial.broken {
            partial.data.extend_from_slice(f.chunk);
        }
        if f.offset as usize + f.chunk.len() < f.total_len as usize {
            return (loss, None);
        }
        let last = self.partial.take().expect("set above or continued");
        let record = (!last.broken).then_some(OwnedRecord {
            index: last.index,
            tracepoint: last.tracepoint,
            ktime_ns: last.ktime_ns,
            data: last.data,
        });
        (loss, record)
    }
}

#[cfg(test)]
mod tests;
