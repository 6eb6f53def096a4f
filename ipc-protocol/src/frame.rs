//! Datagrams on the loader → publisher SOCK_SEQPACKET connection.
//!
//! The first datagram is a [`Hello`]: magic, protocol version (little-endian `u16`), then the
//! postcard-encoded body. Every later datagram is a postcard [`Head`]:
//! - `Records`: followed by postcard-encoded records up to the end of the datagram;
//! - `Fragment`: one piece of a record too large for one datagram (a P2P message of up to
//!   4 MiB), followed by the piece's bytes. A record's fragments are sent back to back, in
//!   order, so the receiver detects a lost or reordered one from `seq` and `offset`;
//! - `DropCounts`: running totals of events lost before the publisher.
//!
//! `Records` and `Fragment` datagrams share one sequence counter. Nothing flows back: the
//! loader reads nothing from the publisher.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::records::{DropCause, MessageRecord, MAX_PAYLOAD_CAPTURE};
use crate::Tracepoint;

pub const PROTOCOL_VERSION: u16 = 2;
pub const HELLO_MAGIC: [u8; 4] = *b"BCXT";

/// Largest datagram either side sends or accepts. A quarter of the stock `net.core.wmem_max`
/// and `wmem_default` (212992), so it needs no tuning of the host and a few datagrams are in
/// flight at once.
pub const MAX_DATAGRAM: usize = 65536;

/// Largest record body: a P2P message record with the largest payload captured.
pub const MAX_RECORD: usize = std::mem::size_of::<MessageRecord>() + MAX_PAYLOAD_CAPTURE;

/// Room a fragment head can take (postcard varints at their widest), so every fragment's
/// datagram stays within [`MAX_DATAGRAM`].
const FRAGMENT_HEAD_MAX: usize = 1 + 10 + 3 + 10 + 5 + 5;

/// The loader's handshake: who is traced, what is hooked, how to read kernel timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub loader_version: String,
    pub pid: u32,
    pub binary: String,
    /// Ids of the attached tracepoints.
    pub tracepoints: Vec<u16>,
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC` in nanoseconds: added to a record's `ktime_ns`
    /// (`bpf_ktime_get_ns`, monotonic) it gives wall-clock time.
    pub realtime_offset_ns: i64,
}

/// One tracepoint firing as the BPF program captured it; `data` is the record body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub tracepoint: Tracepoint,
    pub ktime_ns: u64,
    pub data: &'a [u8],
}

/// A record put back together from its fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub tracepoint: Tracepoint,
    pub ktime_ns: u64,
    pub data: Vec<u8>,
}

impl OwnedRecord {
    pub fn as_record(&self) -> Record<'_> {
        Record { tracepoint: self.tracepoint, ktime_ns: self.ktime_ns, data: &self.data }
    }
}

/// One piece of a record larger than a datagram: `chunk` is `data[offset..offset + len]` of a
/// record body of `total_len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    pub seq: u64,
    pub tracepoint: Tracepoint,
    pub ktime_ns: u64,
    pub total_len: u32,
    pub offset: u32,
    pub chunk: &'a [u8],
}

/// Running total of events dropped before the publisher, per tracepoint and cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCount {
    pub tracepoint: Tracepoint,
    pub cause: DropCause,
    pub total: u64,
}

/// A decoded datagram after the hello.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// `seq` counts record-carrying datagrams from 0, so the publisher notices a gap.
    Records { seq: u64, records: Vec<Record<'a>> },
    Fragment(Fragment<'a>),
    DropCounts(Vec<DropCount>),
}

#[derive(Serialize, Deserialize)]
enum Head {
    Records { seq: u64 },
    DropCounts(Vec<WireDropCount>),
    Fragment { seq: u64, tracepoint: u16, ktime_ns: u64, total_len: u32, offset: u32 },
}

#[derive(Serialize, Deserialize)]
struct WireDropCount {
    tracepoint: u16,
    cause: u8,
    total: u64,
}

/// A record in a `Records` datagram (decoding only; see [`Encoder::record`]).
#[derive(Deserialize)]
struct WireRecord<'a> {
    tracepoint: u16,
    ktime_ns: u64,
    #[serde(borrow)]
    data: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a hello: bad magic {0:02x?}")]
    BadMagic(Vec<u8>),
    #[error("unsupported protocol version {got} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion { got: u16 },
    #[error("unknown tracepoint id {0}")]
    UnknownTracepoint(u16),
    #[error("unknown drop cause {0}")]
    UnknownDropCause(u8),
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    #[error("fragment of {len} bytes at offset {offset} does not fit a record of {total_len} bytes (at most {MAX_RECORD})")]
    BadFragment { total_len: u32, offset: u32, len: usize },
    #[error("malformed {what}: {source}")]
    Malformed {
        what: &'static str,
        source: postcard::Error,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("record of {size} bytes is larger than the protocol's {MAX_RECORD}")]
    TooLarge { size: usize },
    #[error("send queue full: {queued} bytes queued, limit {limit}")]
    QueueFull { queued: usize, limit: usize },
}

fn malformed(what: &'static str) -> impl FnOnce(postcard::Error) -> DecodeError {
    move |source| DecodeError::Malformed { what, source }
}

fn tracepoint(id: u16) -> Result<Tracepoint, DecodeError> {
    Tracepoint::from_id(id).ok_or(DecodeError::UnknownTracepoint(id))
}

fn encode<T: Serialize>(value: &T, out: Vec<u8>) -> Vec<u8> {
    postcard::to_extend(value, out).expect("writing to a Vec cannot fail")
}

pub fn encode_hello(hello: &Hello) -> Vec<u8> {
    let mut out = HELLO_MAGIC.to_vec();
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    encode(hello, out)
}

pub fn decode_hello(buf: &[u8]) -> Result<Hello, DecodeError> {
    if buf.len() < 6 || buf[..4] != HELLO_MAGIC {
        return Err(DecodeError::BadMagic(buf[..buf.len().min(4)].to_vec()));
    }
    let version = u16::from_le_bytes([buf[4], buf[5]]);
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { got: version });
    }
    let (hello, rest) = postcard::take_from_bytes::<Hello>(&buf[6..]).map_err(malformed("hello"))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    for id in &hello.tracepoints {
        tracepoint(*id)?;
    }
    Ok(hello)
}

pub fn encode_drop_counts(counts: &[DropCount]) -> Vec<u8> {
    let head = Head::DropCounts(
        counts
            .iter()
            .map(|c| WireDropCount { tracepoint: c.tracepoint.id(), cause: c.cause as u8, total: c.total })
            .collect(),
    );
    encode(&head, Vec::new())
}

pub fn decode_datagram(buf: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    let (head, mut rest) = postcard::take_from_bytes::<Head>(buf).map_err(malformed("datagram head"))?;
    match head {
        Head::Records { seq } => {
            let mut records = Vec::new();
            while !rest.is_empty() {
                let (wire, tail) = postcard::take_from_bytes::<WireRecord>(rest).map_err(malformed("record"))?;
                records.push(Record { tracepoint: tracepoint(wire.tracepoint)?, ktime_ns: wire.ktime_ns, data: wire.data });
                rest = tail;
            }
            Ok(Datagram::Records { seq, records })
        }
        Head::Fragment { seq, tracepoint: id, ktime_ns, total_len, offset } => {
            let end = (offset as usize).checked_add(rest.len());
            if rest.is_empty() || total_len as usize > MAX_RECORD || end.is_none_or(|end| end > total_len as usize) {
                return Err(DecodeError::BadFragment { total_len, offset, len: rest.len() });
            }
            Ok(Datagram::Fragment(Fragment { seq, tracepoint: tracepoint(id)?, ktime_ns, total_len, offset, chunk: rest }))
        }
        Head::DropCounts(wire) => {
            if !rest.is_empty() {
                return Err(DecodeError::TrailingBytes(rest.len()));
            }
            let counts = wire
                .into_iter()
                .map(|w| {
                    Ok(DropCount {
                        tracepoint: tracepoint(w.tracepoint)?,
                        cause: DropCause::from_u8(w.cause).ok_or(DecodeError::UnknownDropCause(w.cause))?,
                        total: w.total,
                    })
                })
                .collect::<Result<_, DecodeError>>()?;
            Ok(Datagram::DropCounts(counts))
        }
    }
}

/// Turns records into datagrams of at most [`MAX_DATAGRAM`] bytes, queued in order for
/// sending: small records are packed together, a large one is cut into fragments. The queue
/// is bounded: a record that would take it past `limit` bytes is refused whole, so a record
/// is either queued with all its fragments or not at all.
pub struct Encoder {
    /// The datagram being filled with records; empty when none is open.
    batch: Vec<u8>,
    /// Finished datagrams, oldest first.
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    limit: usize,
    next_seq: u64,
    /// Buffers of sent datagrams, kept for reuse.
    spare: Vec<Vec<u8>>,
}

/// Datagram buffers kept for reuse, allocated up front: 16 MiB, so the loader copies a burst
/// of large messages out of the rings as fast as bitcoind's threads write them (fresh memory
/// costs a page fault every 4 KiB), and gives the rest of a longer burst's memory back.
const SPARE_BUFFERS: usize = 256;

impl Encoder {
    /// `limit` bounds the bytes held (finished datagrams plus the open one); it must leave
    /// room for a datagram.
    pub fn new(limit: usize) -> Self {
        assert!(limit >= MAX_DATAGRAM, "queue limit below one datagram");
        // Touched now: the first burst of large messages does not wait for page faults.
        let spare = (0..SPARE_BUFFERS)
            .map(|_| {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                buf.clear();
                buf
            })
            .collect();
        Encoder { batch: Vec::new(), queue: VecDeque::new(), queued: 0, limit, next_seq: 0, spare }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held: finished datagrams plus the open batch.
    pub fn queued_bytes(&self) -> usize {
        self.queued + self.batch.len()
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// Queues one record, in a batch or, if larger than a datagram, as fragments.
    pub fn record(&mut self, tracepoint: Tracepoint, ktime_ns: u64, data: &[u8]) -> Result<(), EncodeError> {
        if data.len() > MAX_RECORD {
            return Err(EncodeError::TooLarge { size: data.len() });
        }
        // Upper bound of the record's encoded size (postcard: 3-byte id, 10-byte time,
        // 5-byte length at their widest), or of its fragments' heads.
        let fragments = data.len().div_ceil(MAX_DATAGRAM - FRAGMENT_HEAD_MAX);
        let needed = data.len() + 18 + fragments * FRAGMENT_HEAD_MAX + 11;
        if self.queued_bytes() + needed > self.limit {
            return Err(EncodeError::QueueFull { queued: self.queued_bytes(), limit: self.limit });
        }
        // A `WireRecord` is its fields in order, `data` as a length and the bytes; written
        // by hand because serde would visit a byte slice one element at a time.
        let prefix = (tracepoint.id(), ktime_ns, data.len());
        let size = postcard::experimental::serialized_size(&prefix).expect("integers always serialize") + data.len();
        if self.batch.len() + size > MAX_DATAGRAM {
            self.flush();
        }
        if self.batch.is_empty() && size + 11 <= MAX_DATAGRAM {
            let seq = self.next_seq();
            let buf = self.buffer();
            self.batch = encode(&Head::Records { seq }, buf);
        }
        if !self.batch.is_empty() {
            self.batch = encode(&prefix, std::mem::take(&mut self.batch));
            self.batch.extend_from_slice(data);
            return Ok(());
        }
        let total_len = data.len() as u32;
        let mut offset = 0;
        while offset < data.len() {
            let head = Head::Fragment { seq: self.next_seq(), tracepoint: tracepoint.id(), ktime_ns, total_len, offset: offset as u32 };
            let mut datagram = encode(&head, self.buffer());
            let end = data.len().min(offset + MAX_DATAGRAM - datagram.len());
            datagram.extend_from_slice(&data[offset..end]);
            offset = end;
            self.push(datagram);
        }
        Ok(())
    }

    /// Queues running drop totals. They bypass the limit: they are small, and they are how
    /// the loss the limit causes gets reported.
    pub fn drop_counts(&mut self, counts: &[DropCount]) {
        self.flush();
        self.push(encode_drop_counts(counts));
    }

    /// Closes the open batch, so it goes out with the next send.
    pub fn flush(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.push(batch);
        }
    }

    fn push(&mut self, datagram: Vec<u8>) {
        debug_assert!(datagram.len() <= MAX_DATAGRAM);
        self.queued += datagram.len();
        self.queue.push_back(datagram);
    }

    /// The oldest finished datagram, to send next.
    pub fn front(&self) -> Option<&[u8]> {
        self.queue.front().map(Vec::as_slice)
    }

    /// Finished datagrams not sent yet.
    pub fn queued_datagrams(&self) -> usize {
        self.queue.len()
    }

    /// The datagram from [`Self::front`] went out.
    pub fn sent(&mut self) {
        if let Some(mut datagram) = self.queue.pop_front() {
            self.queued -= datagram.len();
            if self.spare.len() < SPARE_BUFFERS {
                datagram.clear();
                self.spare.push(datagram);
            }
        }
    }

    /// An empty datagram buffer: a spare one if any, so a burst does not pay for fresh
    /// memory (allocation and page faults) on every datagram.
    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_else(|| Vec::with_capacity(MAX_DATAGRAM))
    }
}

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
    pub fn is_empty(&self) -> bool {
        self.datagrams == 0 && self.records.is_empty()
    }
}

struct Partial {
    tracepoint: Tracepoint,
    ktime_ns: u64,
    total_len: u32,
    data: Vec<u8>,
    /// A fragment of it went missing: its remaining fragments are skipped.
    broken: bool,
}

/// The receiving side's sequence check and fragment reassembly, for one connection.
#[derive(Default)]
pub struct Reassembler {
    /// `None` until the connection's first datagram: a loader that reconnects goes on with
    /// its sequence where it was.
    expected_seq: Option<u64>,
    partial: Option<Partial>,
}

impl Reassembler {
    /// Counts the datagrams missing before `seq`.
    fn sequence(&mut self, seq: u64, loss: &mut Loss) -> bool {
        let expected = self.expected_seq.unwrap_or(seq);
        loss.datagrams = seq.saturating_sub(expected);
        self.expected_seq = Some(seq.wrapping_add(1));
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
                (p.tracepoint, p.ktime_ns, p.total_len) == (f.tracepoint, f.ktime_ns, f.total_len)
            });
        if !same_record {
            self.abandon(&mut loss);
            // A fragment past the start of a record whose start was lost: that record is lost.
            let broken = f.offset != 0;
            if broken {
                loss.records.push(f.tracepoint);
            }
            self.partial = Some(Partial {
                tracepoint: f.tracepoint,
                ktime_ns: f.ktime_ns,
                total_len: f.total_len,
                data: if broken { Vec::new() } else { Vec::with_capacity(f.total_len as usize) },
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
        let record = (!last.broken).then(|| OwnedRecord { tracepoint: last.tracepoint, ktime_ns: last.ktime_ns, data: last.data });
        (loss, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            loader_version: "0.1.0".into(),
            pid: 4242,
            binary: "/usr/bin/bitcoind".into(),
            tracepoints: vec![0, 1, 11],
            realtime_offset_ns: 1_700_000_000_000_000_000,
        }
    }

    /// Every queued datagram, in order, emptying the queue.
    fn drain(enc: &mut Encoder) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(d) = enc.front() {
            assert!(d.len() <= MAX_DATAGRAM, "datagram of {} bytes", d.len());
            out.push(d.to_vec());
            enc.sent();
        }
        assert_eq!(enc.queued_bytes(), 0);
        out
    }

    /// Decodes datagrams as the publisher does: records and reassembled fragments, in order.
    fn receive(datagrams: &[Vec<u8>]) -> (Vec<OwnedRecord>, Vec<Loss>) {
        let mut rx = Reassembler::default();
        let (mut records, mut losses) = (Vec::new(), Vec::new());
        for d in datagrams {
            match decode_datagram(d).unwrap() {
                Datagram::Records { seq, records: rs } => {
                    losses.push(rx.records(seq));
                    records.extend(rs.iter().map(|r| OwnedRecord { tracepoint: r.tracepoint, ktime_ns: r.ktime_ns, data: r.data.to_vec() }));
                }
                Datagram::Fragment(f) => {
                    let (loss, done) = rx.fragment(&f);
                    losses.push(loss);
                    records.extend(done);
                }
                Datagram::DropCounts(_) => {}
            }
        }
        losses.retain(|l| !l.is_empty());
        (records, losses)
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn hello_round_trips() {
        assert_eq!(decode_hello(&encode_hello(&hello())), Ok(hello()));
    }

    #[test]
    fn hello_rejects_bad_magic_version_trailing_bytes_and_unknown_tracepoints() {
        let good = encode_hello(&hello());

        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(matches!(decode_hello(&bad_magic), Err(DecodeError::BadMagic(_))));
        assert!(matches!(decode_hello(b"BC"), Err(DecodeError::BadMagic(_))));

        let mut v1 = good.clone();
        v1[4..6].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(decode_hello(&v1), Err(DecodeError::UnsupportedVersion { got: 1 }));

        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode_hello(&trailing), Err(DecodeError::TrailingBytes(1)));

        let truncated = &good[..good.len() - 3];
        assert!(matches!(decode_hello(truncated), Err(DecodeError::Malformed { .. })));

        let mut unknown = hello();
        unknown.tracepoints.push(999);
        assert_eq!(decode_hello(&encode_hello(&unknown)), Err(DecodeError::UnknownTracepoint(999)));
    }

    #[test]
    fn small_records_are_batched_in_order_with_sequence_numbers() {
        let mut enc = Encoder::new(1 << 20);
        enc.record(Tracepoint::MempoolAdded, 7, b"abc").unwrap();
        enc.record(Tracepoint::NetInboundMessage, 8, &[]).unwrap();
        enc.flush();
        enc.record(Tracepoint::MempoolRemoved, 9, b"x").unwrap();
        enc.flush();
        let datagrams = drain(&mut enc);
        assert_eq!(datagrams.len(), 2);
        assert_eq!(
            decode_datagram(&datagrams[0]).unwrap(),
            Datagram::Records {
                seq: 0,
                records: vec![
                    Record { tracepoint: Tracepoint::MempoolAdded, ktime_ns: 7, data: b"abc" },
                    Record { tracepoint: Tracepoint::NetInboundMessage, ktime_ns: 8, data: b"" },
                ]
            }
        );
        assert_eq!(
            decode_datagram(&datagrams[1]).unwrap(),
            Datagram::Records { seq: 1, records: vec![Record { tracepoint: Tracepoint::MempoolRemoved, ktime_ns: 9, data: b"x" }] }
        );
    }

    #[test]
    fn records_of_every_size_up_to_the_maximum_round_trip_byte_identical() {
        let sizes = [0, 1, 4096, MAX_DATAGRAM - 40, MAX_DATAGRAM - 20, MAX_DATAGRAM, MAX_DATAGRAM + 1, 1_000_000, MAX_RECORD];
        let mut enc = Encoder::new(16 << 20);
        let mut sent = Vec::new();
        for (i, size) in sizes.into_iter().enumerate() {
            let data = payload(size);
            enc.record(Tracepoint::NetOutboundMessage, i as u64, &data).unwrap();
            // A small record between large ones keeps its place.
            enc.record(Tracepoint::MempoolAdded, 100 + i as u64, b"between").unwrap();
            sent.push(OwnedRecord { tracepoint: Tracepoint::NetOutboundMessage, ktime_ns: i as u64, data });
            sent.push(OwnedRecord { tracepoint: Tracepoint::MempoolAdded, ktime_ns: 100 + i as u64, data: b"between".to_vec() });
        }
        enc.flush();
        let (received, losses) = receive(&drain(&mut enc));
        assert!(losses.is_empty(), "{losses:?}");
        assert_eq!(received, sent);
    }

    #[test]
    fn a_record_over_the_maximum_is_refused() {
        let mut enc = Encoder::new(16 << 20);
        assert_eq!(
            enc.record(Tracepoint::NetInboundMessage, 1, &payload(MAX_RECORD + 1)),
            Err(EncodeError::TooLarge { size: MAX_RECORD + 1 })
        );
        assert_eq!(enc.queued_bytes(), 0);
    }

    #[test]
    fn a_full_queue_refuses_whole_records_and_takes_them_again_once_sent() {
        let mut enc = Encoder::new(3 * MAX_DATAGRAM);
        let big = payload(2 * MAX_DATAGRAM);
        enc.record(Tracepoint::NetInboundMessage, 1, &big).unwrap();
        let queued = enc.queued_bytes();
        assert!(matches!(enc.record(Tracepoint::NetInboundMessage, 2, &big), Err(EncodeError::QueueFull { .. })));
        assert_eq!(enc.queued_bytes(), queued, "nothing of a refused record is queued");
        // Drop totals still get through.
        enc.drop_counts(&[DropCount { tracepoint: Tracepoint::NetInboundMessage, cause: DropCause::IpcBackpressure, total: 1 }]);
        let datagrams = drain(&mut enc);
        assert!(matches!(decode_datagram(datagrams.last().unwrap()), Ok(Datagram::DropCounts(_))));
        enc.record(Tracepoint::NetInboundMessage, 3, &big).unwrap();
        let (received, losses) = receive(&[datagrams, drain(&mut enc)].concat());
        assert!(losses.is_empty(), "{losses:?}");
        assert_eq!(received.iter().map(|r| r.ktime_ns).collect::<Vec<_>>(), [1, 3]);
    }

    /// Datagrams of two fragmented records with a small one between, and the index of each
    /// record's first fragment.
    fn fragmented() -> (Vec<Vec<u8>>, usize) {
        let mut enc = Encoder::new(16 << 20);
        enc.record(Tracepoint::NetInboundMessage, 1, &payload(3 * MAX_DATAGRAM)).unwrap();
        let second = enc.queue.len();
        enc.record(Tracepoint::NetOutboundMessage, 2, &payload(3 * MAX_DATAGRAM)).unwrap();
        enc.record(Tracepoint::MempoolAdded, 3, b"after").unwrap();
        enc.flush();
        (drain(&mut enc), second)
    }

    #[test]
    fn a_lost_fragment_discards_its_record_and_is_counted() {
        let (mut datagrams, second) = fragmented();
        datagrams.remove(1);
        let (received, losses) = receive(&datagrams);
        assert_eq!(losses, [Loss { datagrams: 1, records: vec![Tracepoint::NetInboundMessage] }]);
        assert_eq!(received.iter().map(|r| r.ktime_ns).collect::<Vec<_>>(), [2, 3]);
        assert!(second > 1);
    }

    #[test]
    fn a_lost_first_or_last_fragment_is_never_glued_to_another_record() {
        let (datagrams, second) = fragmented();
        let mut no_last = datagrams.clone();
        no_last.remove(second - 1);
        let (received, losses) = receive(&no_last);
        assert_eq!(losses, [Loss { datagrams: 1, records: vec![Tracepoint::NetInboundMessage] }]);
        assert_eq!(received.iter().map(|r| r.ktime_ns).collect::<Vec<_>>(), [2, 3]);

        let mut no_first = datagrams;
        no_first.remove(second);
        let (received, losses) = receive(&no_first);
        assert_eq!(losses, [Loss { datagrams: 1, records: vec![Tracepoint::NetOutboundMessage] }]);
        assert_eq!(received.iter().map(|r| r.ktime_ns).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn reordered_fragments_are_detected() {
        let (mut datagrams, _) = fragmented();
        datagrams.swap(1, 2);
        let (received, losses) = receive(&datagrams);
        let lost: Vec<_> = losses.iter().flat_map(|l| l.records.clone()).collect();
        assert_eq!(lost, [Tracepoint::NetInboundMessage], "{losses:?}");
        assert_eq!(received.iter().map(|r| r.ktime_ns).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn a_connection_starts_at_the_loaders_sequence_number() {
        let (datagrams, second) = fragmented();
        let (received, losses) = receive(&datagrams[second..]);
        assert!(losses.is_empty(), "{losses:?}");
        assert_eq!(received.iter().map(|r| r.ktime_ns).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn drop_counts_round_trip() {
        let counts = vec![DropCount { tracepoint: Tracepoint::MempoolRemoved, cause: DropCause::RingFull, total: 5 }];
        assert_eq!(decode_datagram(&encode_drop_counts(&counts)), Ok(Datagram::DropCounts(counts)));
    }

    #[test]
    fn datagram_rejects_unknown_tracepoint_truncation_garbage_and_trailing_bytes() {
        let mut enc = Encoder::new(1 << 20);
        enc.record(Tracepoint::MempoolAdded, 7, b"abc").unwrap();
        enc.flush();
        let good = drain(&mut enc).remove(0);

        // The record's tracepoint id is the byte after the head (tag 0, seq 0).
        let mut unknown = good.clone();
        unknown[2] = 0x7f;
        assert_eq!(decode_datagram(&unknown), Err(DecodeError::UnknownTracepoint(0x7f)));

        let truncated = &good[..good.len() - 1];
        assert!(matches!(decode_datagram(truncated), Err(DecodeError::Malformed { what: "record", .. })));

        assert!(matches!(decode_datagram(&[0xff, 0xff]), Err(DecodeError::Malformed { .. })));
        assert!(matches!(decode_datagram(&[]), Err(DecodeError::Malformed { .. })));

        let mut counts = encode_drop_counts(&[]);
        counts.push(1);
        assert_eq!(decode_datagram(&counts), Err(DecodeError::TrailingBytes(1)));

        let bad_cause = encode(&Head::DropCounts(vec![WireDropCount { tracepoint: 0, cause: 200, total: 1 }]), Vec::new());
        assert_eq!(decode_datagram(&bad_cause), Err(DecodeError::UnknownDropCause(200)));
    }

    #[test]
    fn fragments_that_overrun_their_record_or_the_maximum_are_rejected() {
        let fragment = |total_len: u32, offset: u32, len: usize| {
            let head = Head::Fragment { seq: 0, tracepoint: 0, ktime_ns: 1, total_len, offset };
            let mut d = encode(&head, Vec::new());
            d.extend(std::iter::repeat_n(0u8, len));
            d
        };
        assert!(matches!(decode_datagram(&fragment(100, 0, 100)), Ok(Datagram::Fragment(_))));
        for (total_len, offset, len) in [(100, 0, 101), (100, 50, 51), (100, u32::MAX, 10), (100, 0, 0), (MAX_RECORD as u32 + 1, 0, 10)] {
            assert_eq!(decode_datagram(&fragment(total_len, offset, len)), Err(DecodeError::BadFragment { total_len, offset, len }));
        }
    }
}
