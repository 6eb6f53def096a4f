//! The loader's side of the protocol as a state machine without I/O, in the manner of
//! quinn-proto's `poll_transmit`: it owns the open batch, the sequence numbers, the cursor of a
//! record going out in fragments, the drop totals waiting to go out and what a new connection
//! needs first. Its loop ([`crate::pump`]) offers the ring whose record is oldest, sends what
//! [`Sender::poll_transmit`] says and releases what the sender says it is done with; the
//! loader runs it over the BPF rings and its socket (`loader/src/forward.rs`).
//!
//! Records stay in their ring until sent: a small one is copied into the batch when offered
//! (so it can be released at once), a large one is sent in fragments straight from the ring's
//! memory and released after its last fragment. So what waits for a slow or absent publisher
//! waits in the rings, where the BPF programs count what no longer fits; what still waits
//! when the loader stops is counted as `loader_stopped` ([`Sender::abandon`]).
//!
//! The sender also keeps the tracepoint of every record sent and not yet acknowledged by the
//! publisher (docs/ipc.md, "Acknowledgements"): when a connection ends, those the publisher
//! took with it are counted as `publisher_lost`.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use crate::datagram::{
    encode, encode_drop_counts, record_prefix, DropCount, Head, FRAGMENT_HEAD_MAX, MAX_DATAGRAM, MAX_RECORD,
    RECORDS_HEAD_MAX,
};
use crate::hello::encode_hello;
use crate::records::{DropCause, RingRecord};
use crate::{Hello, Tracepoint};

pub struct Sender {
    hello: Hello,
    /// The hello of the current connection, encoded.
    hello_bytes: Vec<u8>,
    /// `Some` while connected: whether the hello went out on this connection.
    hello_sent: Option<bool>,
    /// The batch being filled; empty when none is open. Its records left their rings.
    batch: Vec<u8>,
    /// The batch takes no more records: it goes out next.
    batch_closed: bool,
    /// The open batch's sequence number.
    batch_seq: u64,
    next_seq: u64,
    fragmenting: Option<Cursor>,
    /// Drop totals waiting to go out.
    counts: Option<Vec<u8>>,
    /// The totals last queued, so that only a change is sent (and all of them to a new
    /// publisher, which starts from zero).
    last_counts: Vec<DropCount>,
    /// The BPF programs' totals as last given.
    bpf_counts: Vec<DropCount>,
    /// Drops the sender itself counted.
    counted: BTreeMap<(Tracepoint, DropCause), u64>,
    /// The totals of the last drop report a publisher is known to have read: it acknowledged a
    /// record sent after it. They go in each new connection's hello.
    reported: Vec<DropCount>,
    /// What [`Self::reported`] was as this connection began: it falls back to that if the
    /// connection ends with records lost, since a publisher that took records with it may have
    /// taken its counts unseen too (and the loss is counted, as `publisher_lost`, anyway).
    reported_before: Vec<DropCount>,
    /// The drop reports sent on this connection and not yet known to be read, oldest first,
    /// each with how many records had gone out before it; at most [`REPORTS_IN_FLIGHT`].
    reports_in_flight: VecDeque<(Vec<DropCount>, u64)>,
    /// Records taken off the rings so far, which is also the next record's number: a record
    /// keeps its number when it goes out again on a new connection. [`Sender::abandon`] takes
    /// back the numbers of a batch that never went out.
    taken: u64,
    /// Records numbered below this went out whole on the connection.
    sent: u64,
    /// Records numbered below this are acknowledged (or counted as `publisher_lost`).
    acked: u64,
    /// The tracepoints of records `acked..taken`, in number order.
    unacked: VecDeque<Tracepoint>,
}

/// Records taken and not yet acknowledged, at most. Beyond, the sender takes no more (the
/// records wait in the rings) until the publisher acknowledges some: this bounds the loader's
/// memory whatever the publisher does. A publisher acknowledges within milliseconds; its
/// read-ahead holds far fewer records (5 MiB of them).
pub const UNACKED_MAX: usize = 1 << 20;

/// Drop reports awaiting a sign they were read, at most: one goes out a second at most while
/// totals change, and a publisher acknowledges within milliseconds. Past it the oldest is
/// forgotten, and a new publisher may count its totals again (never fewer).
const REPORTS_IN_FLIGHT: usize = 64;

/// An acknowledgement the sender cannot take: the publisher misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("acknowledgement of records below {done}, where {acked} were acknowledged and {sent} sent")]
pub struct AckError {
    pub done: u64,
    pub acked: u64,
    pub sent: u64,
}

/// A record at the head of a ring, going out in fragments.
struct Cursor {
    ring: usize,
    record: u64,
    tracepoint: Tracepoint,
    ktime_ns: u64,
    /// Where the body lies within the ring record.
    body: Range<usize>,
    /// The next fragment: its head, and the body bytes it carries.
    head: [u8; FRAGMENT_HEAD_MAX],
    head_len: usize,
    piece: Range<usize>,
}

/// One datagram to send: `head`, followed by `piece` (if any) taken from where the record
/// lies. Once it went out whole, call [`Sender::transmitted`].
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub head: &'a [u8],
    pub piece: Option<Piece>,
}

/// Bytes `range` of the record at the head of ring `ring` (header included, as
/// [`Sender::offer`] was given it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub ring: usize,
    pub range: Range<usize>,
}

/// What became of an offered record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Copied into the batch: release it from its ring.
    Taken,
    /// Left where it is: send what [`Sender::poll_transmit`] says, then offer it again (a
    /// record sent in fragments is released when [`Sender::transmitted`] says so).
    Held,
    /// Never to be sent, and counted where it can be: release it.
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid header: the BPF object and the loader disagree.
    BadHeader,
    /// Larger than the protocol allows: counted as `ipc_too_large`.
    TooLarge { tracepoint: Tracepoint, size: usize },
}

impl Sender {
    /// A sender that is not connected yet.
    pub fn new(hello: &Hello) -> Self {
        Sender {
            hello: hello.clone(),
            hello_bytes: Vec::new(),
            hello_sent: None,
            batch: Vec::with_capacity(MAX_DATAGRAM),
            batch_closed: false,
            batch_seq: 0,
            next_seq: 0,
            fragmenting: None,
            counts: None,
            last_counts: Vec::new(),
            bpf_counts: Vec::new(),
            counted: BTreeMap::new(),
            reported: Vec::new(),
            reported_before: Vec::new(),
            reports_in_flight: VecDeque::new(),
            taken: 0,
            sent: 0,
            acked: 0,
            unacked: VecDeque::new(),
        }
    }

    /// A new connection to a publisher: the hello goes first (with the totals a publisher is
    /// known to have counted), then the drop totals, then whatever was under way. Sequence
    /// numbers go on where they were.
    pub fn connected(&mut self) {
        let first_seq = if self.batch.is_empty() { self.next_seq } else { self.batch_seq };
        self.hello_bytes = encode_hello(&self.hello, first_seq, &self.reported);
        self.reported_before = self.reported.clone();
        self.hello_sent = Some(false);
        if !self.last_counts.is_empty() {
            self.counts = Some(encode_drop_counts(&self.last_counts));
        }
    }

    /// The connection is gone, and the acknowledgements it carried were taken. The records
    /// sent on it and not acknowledged are counted as `publisher_lost` (their totals go to the
    /// next publisher, which then also counts again the drops reported on this connection). A
    /// record that was going out in fragments stays at the head of its ring and starts over on
    /// the next connection; the batch waits for it too. Returns how many were counted.
    pub fn disconnected(&mut self) -> u64 {
        self.hello_sent = None;
        self.fragmenting = None;
        self.reports_in_flight.clear();
        let lost = self.sent - self.acked;
        for tracepoint in self.unacked.drain(..lost as usize) {
            *self.counted.entry((tracepoint, DropCause::PublisherLost)).or_default() += 1;
        }
        self.acked = self.sent;
        if lost > 0 {
            self.reported = std::mem::take(&mut self.reported_before);
            self.merge_counts();
        }
        lost
    }

    /// The publisher's acknowledgement: every record numbered below `done` is published or
    /// counted. It may only grow, and only over records sent.
    pub fn acknowledged(&mut self, done: u64) -> Result<(), AckError> {
        if done < self.acked || done > self.sent {
            return Err(AckError { done, acked: self.acked, sent: self.sent });
        }
        self.unacked.drain(..(done - self.acked) as usize);
        self.acked = done;
        // The publisher reads in order: a record sent after the report is done, so the report
        // was read.
        while self.reports_in_flight.front().is_some_and(|(_, sent_before)| done > *sent_before) {
            if let Some((totals, _)) = self.reports_in_flight.pop_front() {
                self.reported = totals;
            }
        }
        Ok(())
    }

    /// Whether the sender takes no more records until some are acknowledged.
    pub fn awaiting_acks(&self) -> bool {
        self.unacked.len() >= UNACKED_MAX
    }

    pub fn is_connected(&self) -> bool {
        self.hello_sent.is_some()
    }

    /// Records taken off the rings so far (batched, or sent whole in fragments).
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// The next datagram to send, if one is due: the hello, the rest of a fragmented record,
    /// drop totals, a closed batch. `None` when disconnected.
    pub fn poll_transmit(&self) -> Option<Transmit<'_>> {
        let datagram = |bytes| Some(Transmit { head: bytes, piece: None });
        match self.hello_sent? {
            false => datagram(&self.hello_bytes),
            true => {
                if let Some(c) = &self.fragmenting {
                    let piece = Piece { ring: c.ring, range: c.body.start + c.piece.start..c.body.start + c.piece.end };
                    return Some(Transmit { head: &c.head[..c.head_len], piece: Some(piece) });
                }
                if let Some(counts) = &self.counts {
                    return datagram(counts);
                }
                if self.batch_closed {
                    return datagram(&self.batch);
                }
                None
            }
        }
    }

    /// What [`Self::poll_transmit`] returned went out whole. Returns the ring whose head
    /// record has now been sent whole, to release.
    pub fn transmitted(&mut self) -> Option<usize> {
        if self.hello_sent == Some(false) {
            self.hello_sent = Some(true);
        } else if let Some(c) = &mut self.fragmenting {
            let total = c.body.len();
            if c.piece.end == total {
                let (ring, tracepoint) = (c.ring, c.tracepoint);
                self.fragmenting = None;
                self.taken += 1;
                self.sent = self.taken;
                self.unacked.push_back(tracepoint);
                return Some(ring);
            }
            let offset = c.piece.end;
            let (head, head_len, piece) =
                fragment_head(&mut self.next_seq, c.record, c.tracepoint, c.ktime_ns, total, offset);
            (c.head, c.head_len, c.piece) = (head, head_len, piece);
        } else if self.counts.take().is_some() {
            if self.reports_in_flight.len() == REPORTS_IN_FLIGHT {
                self.reports_in_flight.pop_front();
            }
            self.reports_in_flight.push_back((self.last_counts.clone(), self.sent));
        } else if self.batch_closed {
            self.batch.clear();
            self.batch_closed = false;
            self.sent = self.taken;
        }
        None
    }

    /// Offers the record `raw` (header and body, as it lies) at the head of ring `ring`. Call
    /// only when [`Self::poll_transmit`] has nothing to send. While [`Self::awaiting_acks`],
    /// the open batch goes out and the record is held.
    pub fn offer(&mut self, ring: usize, raw: &[u8]) -> Offer {
        if self.poll_transmit().is_some() || !self.is_connected() {
            return Offer::Held;
        }
        if self.awaiting_acks() {
            self.flush();
            return Offer::Held;
        }
        let Some(record) = RingRecord::parse(raw) else { return Offer::Refused(Refusal::BadHeader) };
        let (tracepoint, size) = (record.tracepoint, record.body.len());
        if size > MAX_RECORD {
            *self.counted.entry((tracepoint, DropCause::IpcTooLarge)).or_default() += 1;
            return Offer::Refused(Refusal::TooLarge { tracepoint, size });
        }
        let prefix = record_prefix(tracepoint, record.ktime_ns, size);
        let encoded = postcard::experimental::serialized_size(&prefix).expect("integers always serialize") + size;
        if encoded + RECORDS_HEAD_MAX > MAX_DATAGRAM {
            // Fragments; an open batch goes first, keeping the records in order.
            if self.batch.is_empty() {
                let index = self.taken;
                let (head, head_len, piece) =
                    fragment_head(&mut self.next_seq, index, tracepoint, record.ktime_ns, size, 0);
                let (ring, ktime_ns, body) = (ring, record.ktime_ns, record.body);
                self.fragmenting =
                    Some(Cursor { ring, record: index, tracepoint, ktime_ns, body, head, head_len, piece });
            } else {
                self.batch_closed = true;
            }
            return Offer::Held;
        }
        if self.batch.len() + encoded > MAX_DATAGRAM {
            self.batch_closed = true;
            return Offer::Held;
        }
        if self.batch.is_empty() {
            self.batch_seq = self.next_seq();
            let head = Head::Records { seq: self.batch_seq, first_record: self.taken };
            self.batch = encode(&head, std::mem::take(&mut self.batch));
        }
        self.batch = encode(&prefix, std::mem::take(&mut self.batch));
        self.batch.extend_from_slice(record.body());
        self.taken += 1;
        self.unacked.push_back(tracepoint);
        Offer::Taken
    }

    /// The rings hold nothing more for now: the open batch goes out.
    pub fn flush(&mut self) {
        self.batch_closed |= !self.batch.is_empty();
    }

    /// The loader stops: the open batch and the records `left` in the rings (a record going
    /// out in fragments among them) will never be sent. Each is counted as `loader_stopped`,
    /// and the totals go out next, if the connection still takes them. Returns how many were
    /// counted.
    pub fn abandon(&mut self, left: impl IntoIterator<Item = Tracepoint>) -> u64 {
        self.fragmenting = None;
        self.batch.clear();
        self.batch_closed = false;
        // The batch's records were taken, not sent: the tail of `unacked`.
        let in_batch = self.unacked.split_off((self.sent - self.acked) as usize);
        self.taken = self.sent;
        let mut counted = 0;
        for tracepoint in in_batch.into_iter().chain(left) {
            *self.counted.entry((tracepoint, DropCause::LoaderStopped)).or_default() += 1;
            counted += 1;
        }
        self.merge_counts();
        counted
    }

    /// The drop totals, if a publisher may not have them: while connected, until they went
    /// out on the connection; without one, unless a publisher is known to have read them
    /// (a connection that ended may have taken its last report unread).
    pub fn undelivered_totals(&self) -> Option<&[DropCount]> {
        let owed = if self.is_connected() { self.counts.is_some() } else { self.last_counts != self.reported };
        owed.then_some(self.last_counts.as_slice())
    }

    /// Whether anything taken from the rings or counted has yet to go out: an open batch, a
    /// record part-sent in fragments, or the drop totals.
    pub fn holds_unsent(&self) -> bool {
        !self.batch.is_empty() || self.fragmenting.is_some() || self.undelivered_totals().is_some()
    }

    /// The BPF programs' drop totals: merged with the sender's own, they go out when they
    /// changed.
    pub fn drop_counts(&mut self, bpf: &[DropCount]) {
        self.bpf_counts = bpf.to_vec();
        self.merge_counts();
    }

    fn merge_counts(&mut self) {
        let mut totals = self.bpf_counts.clone();
        totals.extend(self.counted.iter().map(|(&(tracepoint, cause), &total)| DropCount { tracepoint, cause, total }));
        totals.sort();
        if totals != self.last_counts {
            self.counts = Some(encode_drop_counts(&totals));
            self.last_counts = totals;
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }
}

/// The head of the fragment at `offset` of record number `record`, a body of `total` bytes,
/// numbered as the next datagram, and the body bytes it carries.
fn fragment_head(
    next_seq: &mut u64,
    record: u64,
    tracepoint: Tracepoint,
    ktime_ns: u64,
    total: usize,
    offset: usize,
) -> ([u8; FRAGMENT_HEAD_MAX], usize, Range<usize>) {
    let seq = *next_seq;
    *next_seq += 1;
    let head = Head::Fragment {
        seq,
        record,
        tracepoint: tracepoint.id(),
        ktime_ns,
        total_len: total as u32,
        offset: offset as u32,
    };
    let mut bytes = [0u8; FRAGMENT_HEAD_MAX];
    let len = postcard::to_slice(&head, &mut bytes).expect("FRAGMENT_HEAD_MAX holds the widest head").len();
    (bytes, len, offset..total.min(offset + MAX_DATAGRAM - len))
}

#[cfg(test)]
mod tests;
