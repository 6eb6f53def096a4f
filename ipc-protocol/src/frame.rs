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

use serde::{Deserialize, Serialize};

use crate::records::{DropCause, MessageRecord, MAX_PAYLOAD_CAPTURE};
use crate::Tracepoint;

pub const PROTOCOL_VERSION: u16 = 4;
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

/// The loader's handshake: who is traced and what is hooked. Records' kernel timestamps are
/// CLOCK_MONOTONIC, which the publisher converts with its own reading of both clocks
/// (`publisher/src/clock.rs`), so that a stepped wall clock is followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub loader_version: String,
    pub pid: u32,
    pub binary: String,
    /// Ids of the attached tracepoints.
    pub tracepoints: Vec<u16>,
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
    Records {
        seq: u64,
        records: Vec<Record<'a>>,
    },
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
    #[error(
        "fragment of {len} bytes at offset {offset} does not fit a record of {total_len} bytes (at most {MAX_RECORD})"
    )]
    BadFragment { total_len: u32, offset: u32, len: usize },
    #[error("malformed {what}: {source}")]
    Malformed { what: &'static str, source: postcard::Error },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("record of {size} bytes is larger than the protocol's {MAX_RECORD}")]
    TooLarge { size: usize },
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
                records.push(Record {
                    tracepoint: tracepoint(wire.tracepoint)?,
                    ktime_ns: wire.ktime_ns,
                    data: wire.data,
                });
                rest = tail;
            }
            Ok(Datagram::Records { seq, records })
        }
        Head::Fragment { seq, tracepoint: id, ktime_ns, total_len, offset } => {
            let end = (offset as usize).checked_add(rest.len());
            if rest.is_empty() || total_len as usize > MAX_RECORD || end.is_none_or(|end| end > total_len as usize) {
                return Err(DecodeError::BadFragment { total_len, offset, len: rest.len() });
            }
            Ok(Datagram::Fragment(Fragment {
                seq,
                tracepoint: tracepoint(id)?,
                ktime_ns,
                total_len,
                offset,
                chunk: rest,
            }))
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

/// Writes record-carrying datagrams of at most [`MAX_DATAGRAM`] bytes and numbers them:
/// small records are packed into a batch, a large one is cut into fragments. It holds no
/// queue: the caller sends each datagram as it is made (the loader straight from the BPF
/// ring, a record staying there until its last fragment is sent), so what waits for a slow
/// publisher waits in the rings.
pub struct Encoder {
    /// The datagram being filled with records; empty when none is open.
    batch: Vec<u8>,
    next_seq: u64,
}

/// Where [`Encoder::push`] put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Into the open batch.
    Batched,
    /// Nowhere: the batch has no room left for it. Send the batch, then push it again.
    BatchFull,
    /// Nowhere: it is larger than a datagram. Send the batch if any, then send it as the
    /// fragments [`Encoder::fragment`] describes.
    Fragments,
}

/// The head of one fragment of a record: send [`Self::bytes`] followed by
/// `record[offset..self.end]`.
#[derive(Debug, Clone, Copy)]
pub struct FragmentHead {
    bytes: [u8; FRAGMENT_HEAD_MAX],
    len: usize,
    /// Where the fragment's piece of the record ends: the next fragment's offset.
    pub end: usize,
}

impl FragmentHead {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder { batch: Vec::with_capacity(MAX_DATAGRAM), next_seq: 0 }
    }
}

impl Encoder {
    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// Adds one record to the open batch, opening one if needed, when it fits a datagram.
    pub fn push(&mut self, tracepoint: Tracepoint, ktime_ns: u64, data: &[u8]) -> Result<Push, EncodeError> {
        if data.len() > MAX_RECORD {
            return Err(EncodeError::TooLarge { size: data.len() });
        }
        // A `WireRecord` is its fields in order, `data` as a length and the bytes; written
        // by hand because serde would visit a byte slice one element at a time.
        let prefix = (tracepoint.id(), ktime_ns, data.len());
        let size = postcard::experimental::serialized_size(&prefix).expect("integers always serialize") + data.len();
        // 11: a `Records` head at its widest.
        if size + 11 > MAX_DATAGRAM {
            return Ok(Push::Fragments);
        }
        if self.batch.len() + size > MAX_DATAGRAM {
            return Ok(Push::BatchFull);
        }
        if self.batch.is_empty() {
            let seq = self.next_seq();
            self.batch = encode(&Head::Records { seq }, std::mem::take(&mut self.batch));
        }
        self.batch = encode(&prefix, std::mem::take(&mut self.batch));
        self.batch.extend_from_slice(data);
        Ok(Push::Batched)
    }

    /// The open batch, to send; `None` when it holds no record.
    pub fn batch(&self) -> Option<&[u8]> {
        (!self.batch.is_empty()).then_some(self.batch.as_slice())
    }

    /// The batch from [`Self::batch`] went out: the next record opens a new one.
    pub fn batch_sent(&mut self) {
        self.batch.clear();
    }

    /// The head of the fragment at `offset` of a record body of `total_len` bytes (at most
    /// [`MAX_RECORD`], which [`Self::push`] checked), numbered as the next datagram.
    pub fn fragment(&mut self, tracepoint: Tracepoint, ktime_ns: u64, total_len: usize, offset: usize) -> FragmentHead {
        let head = Head::Fragment {
            seq: self.next_seq(),
            tracepoint: tracepoint.id(),
            ktime_ns,
            total_len: total_len as u32,
            offset: offset as u32,
        };
        let mut bytes = [0u8; FRAGMENT_HEAD_MAX];
        let len = postcard::to_slice(&head, &mut bytes).expect("FRAGMENT_HEAD_MAX holds the widest head").len();
        FragmentHead { bytes, len, end: total_len.min(offset + MAX_DATAGRAM - len) }
    }

    /// Every datagram of `records`, in order, as the loader sends them, ending with the
    /// batch closed: for tests and tools that hold the records in memory.
    pub fn datagrams(&mut self, records: &[Record<'_>]) -> Result<Vec<Vec<u8>>, EncodeError> {
        let mut out = Vec::new();
        for r in records {
            loop {
                match self.push(r.tracepoint, r.ktime_ns, r.data)? {
                    Push::Batched => break,
                    Push::BatchFull => out.extend(self.take_batch()),
                    Push::Fragments => {
                        out.extend(self.take_batch());
                        let mut offset = 0;
                        while offset < r.data.len() {
                            let head = self.fragment(r.tracepoint, r.ktime_ns, r.data.len(), offset);
                            out.push([head.bytes(), &r.data[offset..head.end]].concat());
                            offset = head.end;
                        }
                        break;
                    }
                }
            }
        }
        out.extend(self.take_batch());
        Ok(out)
    }

    fn take_batch(&mut self) -> Option<Vec<u8>> {
        let batch = self.batch()?.to_vec();
        self.batch_sent();
        Some(batch)
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
            && self
                .partial
                .as_ref()
                .is_some_and(|p| (p.tracepoint, p.ktime_ns, p.total_len) == (f.tracepoint, f.ktime_ns, f.total_len));
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
        let record = (!last.broken).then_some(OwnedRecord {
            tracepoint: last.tracepoint,
            ktime_ns: last.ktime_ns,
            data: last.data,
        });
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
        }
    }

    /// Every datagram of the records, checked for size.
    fn datagrams(enc: &mut Encoder, records: &[Record<'_>]) -> Vec<Vec<u8>> {
        let out = enc.datagrams(records).unwrap();
        for d in &out {
            assert!(d.len() <= MAX_DATAGRAM, "datagram of {} bytes", d.len());
        }
        assert_eq!(enc.batch(), None);
        out
    }

    fn rec(tracepoint: Tracepoint, ktime_ns: u64, data: &[u8]) -> Record<'_> {
        Record { tracepoint, ktime_ns, data }
    }

    /// Decodes datagrams as the publisher does: records and reassembled fragments, in order.
    fn receive(datagrams: &[Vec<u8>]) -> (Vec<OwnedRecord>, Vec<Loss>) {
        let mut rx = Reassembler::default();
        let (mut records, mut losses) = (Vec::new(), Vec::new());
        for d in datagrams {
            match decode_datagram(d).unwrap() {
                Datagram::Records { seq, records: rs } => {
                    losses.push(rx.records(seq));
                    records.extend(rs.iter().map(|r| OwnedRecord {
                        tracepoint: r.tracepoint,
                        ktime_ns: r.ktime_ns,
                        data: r.data.to_vec(),
                    }));
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
        let mut enc = Encoder::default();
        let mut out = datagrams(
            &mut enc,
            &[rec(Tracepoint::MempoolAdded, 7, b"abc"), rec(Tracepoint::NetInboundMessage, 8, &[])],
        );
        out.extend(datagrams(&mut enc, &[rec(Tracepoint::MempoolRemoved, 9, b"x")]));
        assert_eq!(out.len(), 2);
        assert_eq!(
            decode_datagram(&out[0]).unwrap(),
            Datagram::Records {
                seq: 0,
                records: vec![
                    Record { tracepoint: Tracepoint::MempoolAdded, ktime_ns: 7, data: b"abc" },
                    Record { tracepoint: Tracepoint::NetInboundMessage, ktime_ns: 8, data: b"" },
                ]
            }
        );
        assert_eq!(
            decode_datagram(&out[1]).unwrap(),
            Datagram::Records {
                seq: 1,
                records: vec![Record { tracepoint: Tracepoint::MempoolRemoved, ktime_ns: 9, data: b"x" }]
            }
        );
    }

    #[test]
    fn records_of_every_size_up_to_the_maximum_round_trip_byte_identical() {
        let sizes =
            [0, 1, 4096, MAX_DATAGRAM - 40, MAX_DATAGRAM - 20, MAX_DATAGRAM, MAX_DATAGRAM + 1, 1_000_000, MAX_RECORD];
        let payloads: Vec<Vec<u8>> = sizes.iter().map(|&size| payload(size)).collect();
        let mut sent = Vec::new();
        for (i, data) in payloads.iter().enumerate() {
            sent.push(rec(Tracepoint::NetOutboundMessage, i as u64, data));
            // A small record between large ones keeps its place.
            sent.push(rec(Tracepoint::MempoolAdded, 100 + i as u64, b"between"));
        }
        let (received, losses) = receive(&datagrams(&mut Encoder::default(), &sent));
        assert!(losses.is_empty(), "{losses:?}");
        assert_eq!(received.iter().map(OwnedRecord::as_record).collect::<Vec<_>>(), sent);
    }

    #[test]
    fn a_record_over_the_maximum_is_refused() {
        let mut enc = Encoder::default();
        let data = payload(MAX_RECORD + 1);
        assert_eq!(
            enc.push(Tracepoint::NetInboundMessage, 1, &data),
            Err(EncodeError::TooLarge { size: MAX_RECORD + 1 })
        );
        assert_eq!(enc.batch(), None);
    }

    #[test]
    fn a_full_batch_refuses_a_record_until_it_is_sent_and_numbers_follow_the_sending_order() {
        let mut enc = Encoder::default();
        let half = payload(MAX_DATAGRAM / 2);
        assert_eq!(enc.push(Tracepoint::MempoolAdded, 1, &half), Ok(Push::Batched));
        assert_eq!(enc.push(Tracepoint::MempoolAdded, 2, &half), Ok(Push::BatchFull));
        let first = enc.batch().unwrap().to_vec();
        enc.batch_sent();
        assert_eq!(enc.push(Tracepoint::MempoolAdded, 2, &half), Ok(Push::Batched));
        let second = enc.batch().unwrap().to_vec();
        let seqs: Vec<_> = [first, second]
            .iter()
            .map(|d| match decode_datagram(d).unwrap() {
                Datagram::Records { seq, records } => (seq, records.iter().map(|r| r.ktime_ns).collect::<Vec<_>>()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, [(0, vec![1]), (1, vec![2])]);
        assert_eq!(enc.push(Tracepoint::NetInboundMessage, 3, &payload(MAX_DATAGRAM)), Ok(Push::Fragments));
    }

    /// Datagrams of two fragmented records with a small one between, and the index of each
    /// record's first fragment.
    fn fragmented() -> (Vec<Vec<u8>>, usize) {
        let (big, mut enc) = (payload(3 * MAX_DATAGRAM), Encoder::default());
        let first = datagrams(&mut enc, &[rec(Tracepoint::NetInboundMessage, 1, &big)]);
        let rest = datagrams(
            &mut enc,
            &[rec(Tracepoint::NetOutboundMessage, 2, &big), rec(Tracepoint::MempoolAdded, 3, b"after")],
        );
        (first.iter().chain(&rest).cloned().collect(), first.len())
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
        let good = datagrams(&mut Encoder::default(), &[rec(Tracepoint::MempoolAdded, 7, b"abc")]).remove(0);

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

        let bad_cause =
            encode(&Head::DropCounts(vec![WireDropCount { tracepoint: 0, cause: 200, total: 1 }]), Vec::new());
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
        for (total_len, offset, len) in
            [(100, 0, 101), (100, 50, 51), (100, u32::MAX, 10), (100, 0, 0), (MAX_RECORD as u32 + 1, 0, 10)]
        {
            assert_eq!(
                decode_datagram(&fragment(total_len, offset, len)),
                Err(DecodeError::BadFragment { total_len, offset, len })
            );
        }
    }
}
