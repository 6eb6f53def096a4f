//! The datagrams after the hello (docs/ipc.md). Each is a postcard [`Head`]:
//! - `Records`: followed by postcard-encoded records up to the end of the datagram;
//! - `Fragment`: one piece of a record too large for one datagram (a P2P message of up to
//!   4 MiB), followed by the piece's bytes. A record's fragments are sent back to back, in
//!   order, so the receiver detects a lost or reordered one from `seq` and `offset`;
//! - `DropCounts`: running totals of events lost before the publisher.
//!
//! `Records` and `Fragment` datagrams share one sequence counter. All the publisher sends
//! back are acknowledgements (`crate::ack`).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::records::{DropCause, MessageRecord, ADDR_BUF, MAX_PAYLOAD_CAPTURE};
use crate::Tracepoint;

/// Largest datagram either side sends or accepts. A quarter of the stock `net.core.wmem_max`
/// and `wmem_default` (212992), so it needs no tuning of the host and a few datagrams are in
/// flight at once.
pub const MAX_DATAGRAM: usize = 65536;

/// Largest record body: a P2P message record with the longest address and the largest payload
/// captured.
pub const MAX_RECORD: usize = std::mem::size_of::<MessageRecord>() + ADDR_BUF + MAX_PAYLOAD_CAPTURE;

/// Room a fragment head can take (postcard varints at their widest), so every fragment's
/// datagram stays within [`MAX_DATAGRAM`].
pub(crate) const FRAGMENT_HEAD_MAX: usize = 1 + 10 + 10 + 3 + 10 + 5 + 5;

/// Room a `Records` head can take: its tag, `seq` and `first_record` at their widest.
pub(crate) const RECORDS_HEAD_MAX: usize = 1 + 10 + 10;

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
    /// The loader's number for the record (docs/ipc.md, "Record identity").
    pub index: u64,
    pub tracepoint: Tracepoint,
    pub ktime_ns: u64,
    pub data: Vec<u8>,
}

impl OwnedRecord {
    pub fn as_record(&self) -> Record<'_> {
        Record { tracepoint: self.tracepoint, ktime_ns: self.ktime_ns, data: &self.data }
    }
}

/// A `Records` datagram, its records found once when it was decoded: over the received bytes
/// (`B = &[u8]`), or kept whole to be published later (`B = Vec<u8>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<B> {
    /// Counts record-carrying datagrams from 0, so the publisher notices a gap.
    pub seq: u64,
    /// The loader's number for the first record; the others follow it.
    pub first_record: u64,
    bytes: B,
    records: Vec<Span>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    tracepoint: Tracepoint,
    ktime_ns: u64,
    data: Range<usize>,
}

impl<B: AsRef<[u8]>> Batch<B> {
    pub fn records(&self) -> impl ExactSizeIterator<Item = Record<'_>> + '_ {
        let bytes = self.bytes.as_ref();
        self.records.iter().map(move |s| Record {
            tracepoint: s.tracepoint,
            ktime_ns: s.ktime_ns,
            data: &bytes[s.data.clone()],
        })
    }
}

impl Batch<&[u8]> {
    /// A copy that owns the datagram's bytes.
    pub fn to_owned(&self) -> Batch<Vec<u8>> {
        Batch {
            seq: self.seq,
            first_record: self.first_record,
            bytes: self.bytes.to_vec(),
            records: self.records.clone(),
        }
    }
}

/// One piece of a record larger than a datagram: `chunk` is `data[offset..offset + len]` of a
/// record body of `total_len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    pub seq: u64,
    /// The loader's number for the record.
    pub record: u64,
    pub tracepoint: Tracepoint,
    pub ktime_ns: u64,
    pub total_len: u32,
    pub offset: u32,
    pub chunk: &'a [u8],
}

/// Running total of events dropped before the publisher, per tracepoint and cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DropCount {
    pub tracepoint: Tracepoint,
    pub cause: DropCause,
    pub total: u64,
}

/// A decoded datagram after the hello.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    Records(Batch<&'a [u8]>),
    Fragment(Fragment<'a>),
    DropCounts(Vec<DropCount>),
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Head {
    Records { seq: u64, first_record: u64 },
    DropCounts(Vec<WireDropCount>),
    Fragment { seq: u64, record: u64, tracepoint: u16, ktime_ns: u64, total_len: u32, offset: u32 },
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WireDropCount {
    tracepoint: u16,
    cause: u8,
    total: u64,
}

/// A record in a `Records` datagram: its fields in order, `data` as a length and the bytes.
/// Decoding only: [`record_prefix`] writes it, since serde would visit a byte slice one
/// element at a time.
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
    #[error(
        "unsupported protocol version {got} (this side speaks {}): the loader and the publisher are of different releases; restart the one not restarted since the upgrade",
        crate::PROTOCOL_VERSION
    )]
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
    #[error("{records} records numbered from {first_record} run past the last record number")]
    RecordNumbersOverflow { first_record: u64, records: usize },
}

pub(crate) fn malformed(what: &'static str) -> impl FnOnce(postcard::Error) -> DecodeError {
    move |source| DecodeError::Malformed { what, source }
}

pub(crate) fn tracepoint(id: u16) -> Result<Tracepoint, DecodeError> {
    Tracepoint::from_id(id).ok_or(DecodeError::UnknownTracepoint(id))
}

pub(crate) fn encode<T: Serialize>(value: &T, out: Vec<u8>) -> Vec<u8> {
    postcard::to_extend(value, out).expect("writing to a Vec cannot fail")
}

/// What precedes a record's body in a `Records` datagram.
pub(crate) fn record_prefix(tracepoint: Tracepoint, ktime_ns: u64, len: usize) -> (u16, u64, usize) {
    (tracepoint.id(), ktime_ns, len)
}

pub(crate) fn encode_drop_counts(counts: &[DropCount]) -> Vec<u8> {
    encode(&Head::DropCounts(counts_to_wire(counts)), Vec::new())
}

pub(crate) fn counts_to_wire(counts: &[DropCount]) -> Vec<WireDropCount> {
    counts
        .iter()
        .map(|c| WireDropCount { tracepoint: c.tracepoint.id(), cause: c.cause as u8, total: c.total })
        .collect()
}

pub(crate) fn counts_from_wire(wire: Vec<WireDropCount>) -> Result<Vec<DropCount>, DecodeError> {
    wire.into_iter()
        .map(|w| {
            Ok(DropCount {
                tracepoint: tracepoint(w.tracepoint)?,
                cause: DropCause::from_u8(w.cause).ok_or(DecodeError::UnknownDropCause(w.cause))?,
                total: w.total,
            })
        })
        .collect()
}

pub fn decode_datagram(buf: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    let (head, mut rest) = postcard::take_from_bytes::<Head>(buf).map_err(malformed("datagram head"))?;
    match head {
        Head::Records { seq, first_record } => {
            let mut records = Vec::new();
            while !rest.is_empty() {
                let (wire, tail) = postcard::take_from_bytes::<WireRecord>(rest).map_err(malformed("record"))?;
                let end = buf.len() - tail.len();
                records.push(Span {
                    tracepoint: tracepoint(wire.tracepoint)?,
                    ktime_ns: wire.ktime_ns,
                    data: end - wire.data.len()..end,
                });
                rest = tail;
            }
            // Numbered from 0 by the loader, one by one: never near the end of u64.
            if first_record.checked_add(records.len() as u64).is_none() {
                return Err(DecodeError::RecordNumbersOverflow { first_record, records: records.len() });
            }
            Ok(Datagram::Records(Batch { seq, first_record, bytes: buf, records }))
        }
        Head::Fragment { seq, record, tracepoint: id, ktime_ns, total_len, offset } => {
            let end = (offset as usize).checked_add(rest.len());
            if rest.is_empty() || total_len as usize > MAX_RECORD || end.is_none_or(|end| end > total_len as usize) {
                return Err(DecodeError::BadFragment { total_len, offset, len: rest.len() });
            }
            Ok(Datagram::Fragment(Fragment {
                seq,
                record,
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
            Ok(Datagram::DropCounts(counts_from_wire(wire)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records_datagram(seq: u64, records: &[(Tracepoint, u64, &[u8])]) -> Vec<u8> {
        let mut out = encode(&Head::Records { seq, first_record: 40 }, Vec::new());
        for &(tp, ktime_ns, data) in records {
            out = encode(&record_prefix(tp, ktime_ns, data.len()), out);
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn records_decode_in_order_and_an_owned_batch_holds_the_same() {
        let bytes =
            records_datagram(3, &[(Tracepoint::MempoolAdded, 7, b"abc"), (Tracepoint::NetInboundMessage, 8, b"")]);
        let Ok(Datagram::Records(batch)) = decode_datagram(&bytes) else { panic!("not records") };
        let expected = [
            Record { tracepoint: Tracepoint::MempoolAdded, ktime_ns: 7, data: b"abc" },
            Record { tracepoint: Tracepoint::NetInboundMessage, ktime_ns: 8, data: b"" },
        ];
        assert_eq!((batch.seq, batch.first_record, batch.records().collect::<Vec<_>>()), (3, 40, expected.to_vec()));
        let owned = batch.to_owned();
        assert_eq!((owned.seq, owned.first_record, owned.records().collect::<Vec<_>>()), (3, 40, expected.to_vec()));
    }

    #[test]
    fn records_numbered_past_the_last_record_number_are_refused() {
        let batch = |first_record: u64| {
            let head = encode(&Head::Records { seq: 0, first_record }, Vec::new());
            let mut out = encode(&record_prefix(Tracepoint::MempoolAdded, 7, 3), head);
            out.extend_from_slice(b"abc");
            out
        };
        assert!(matches!(decode_datagram(&batch(u64::MAX - 1)), Ok(Datagram::Records(_))));
        assert_eq!(
            decode_datagram(&batch(u64::MAX)),
            Err(DecodeError::RecordNumbersOverflow { first_record: u64::MAX, records: 1 })
        );
    }

    #[test]
    fn drop_counts_round_trip() {
        let counts = vec![DropCount { tracepoint: Tracepoint::MempoolRemoved, cause: DropCause::RingFull, total: 5 }];
        assert_eq!(decode_datagram(&encode_drop_counts(&counts)), Ok(Datagram::DropCounts(counts)));
    }

    #[test]
    fn datagram_rejects_unknown_tracepoint_truncation_garbage_and_trailing_bytes() {
        let good = records_datagram(0, &[(Tracepoint::MempoolAdded, 7, b"abc")]);

        // The record's tracepoint id is the byte after the head (tag 0, seq 0, first record 40).
        let mut unknown = good.clone();
        unknown[3] = 0x7f;
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
            let head = Head::Fragment { seq: 0, record: 0, tracepoint: 0, ktime_ns: 1, total_len, offset };
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

    #[test]
    fn the_widest_heads_fit_their_reserved_room() {
        let records = encode(&Head::Records { seq: u64::MAX, first_record: u64::MAX }, Vec::new());
        assert_eq!(records.len(), RECORDS_HEAD_MAX);
        let fragment = Head::Fragment {
            seq: u64::MAX,
            record: u64::MAX,
            tracepoint: u16::MAX,
            ktime_ns: u64::MAX,
            total_len: u32::MAX,
            offset: u32::MAX,
        };
        assert_eq!(encode(&fragment, Vec::new()).len(), FRAGMENT_HEAD_MAX);
    }
}
