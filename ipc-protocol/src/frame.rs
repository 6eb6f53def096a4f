//! Datagrams on the loader → publisher SOCK_SEQPACKET connection.
//!
//! The first datagram is a [`Hello`]: magic, protocol version (little-endian `u16`), then the
//! postcard-encoded body. Every later datagram is a postcard [`Head`]; a `Records` head is
//! followed by postcard-encoded records up to the end of the datagram. Nothing flows back:
//! the loader reads nothing from the publisher.

use serde::{Deserialize, Serialize};

use crate::records::DropCause;
use crate::Tracepoint;

pub const PROTOCOL_VERSION: u16 = 1;
pub const HELLO_MAGIC: [u8; 4] = *b"BCXT";

/// Largest datagram either side sends or accepts. Below the stock `net.core.wmem_max`
/// (212992), so it needs no tuning of the host.
pub const MAX_DATAGRAM: usize = 65536;

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
    /// `seq` counts record datagrams from 0, so the publisher notices a gap.
    Records { seq: u64, records: Vec<Record<'a>> },
    DropCounts(Vec<DropCount>),
}

#[derive(Serialize, Deserialize)]
enum Head {
    Records { seq: u64 },
    DropCounts(Vec<WireDropCount>),
}

#[derive(Serialize, Deserialize)]
struct WireDropCount {
    tracepoint: u16,
    cause: u8,
    total: u64,
}

#[derive(Serialize, Deserialize)]
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
    #[error("malformed {what}: {source}")]
    Malformed {
        what: &'static str,
        source: postcard::Error,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("record of {size} bytes can never fit a {MAX_DATAGRAM}-byte datagram")]
    TooLarge { size: usize },
    #[error("datagram full")]
    Full,
}

fn malformed(what: &'static str) -> impl FnOnce(postcard::Error) -> DecodeError {
    move |source| DecodeError::Malformed { what, source }
}

fn tracepoint(id: u16) -> Result<Tracepoint, DecodeError> {
    Tracepoint::from_id(id).ok_or(DecodeError::UnknownTracepoint(id))
}

pub fn encode_hello(hello: &Hello) -> Vec<u8> {
    let mut out = HELLO_MAGIC.to_vec();
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    postcard::to_extend(hello, out).expect("writing to a Vec cannot fail")
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
            .map(|c| WireDropCount {
                tracepoint: c.tracepoint.id(),
                cause: c.cause as u8,
                total: c.total,
            })
            .collect(),
    );
    postcard::to_allocvec(&head).expect("writing to a Vec cannot fail")
}

pub fn decode_datagram(buf: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    let (head, mut rest) = postcard::take_from_bytes::<Head>(buf).map_err(malformed("datagram head"))?;
    match head {
        Head::Records { seq } => {
            let mut records = Vec::new();
            while !rest.is_empty() {
                let (wire, tail) =
                    postcard::take_from_bytes::<WireRecord>(rest).map_err(malformed("record"))?;
                records.push(Record {
                    tracepoint: tracepoint(wire.tracepoint)?,
                    ktime_ns: wire.ktime_ns,
                    data: wire.data,
                });
                rest = tail;
            }
            Ok(Datagram::Records { seq, records })
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
                        cause: DropCause::from_u8(w.cause)
                            .ok_or(DecodeError::UnknownDropCause(w.cause))?,
                        total: w.total,
                    })
                })
                .collect::<Result<_, DecodeError>>()?;
            Ok(Datagram::DropCounts(counts))
        }
    }
}

/// Packs records into one datagram of at most [`MAX_DATAGRAM`] bytes.
pub struct BatchEncoder {
    buf: Vec<u8>,
    next_seq: u64,
    records: usize,
}

impl Default for BatchEncoder {
    fn default() -> Self {
        let mut enc = BatchEncoder {
            buf: Vec::with_capacity(MAX_DATAGRAM),
            next_seq: 0,
            records: 0,
        };
        enc.start();
        enc
    }
}

impl BatchEncoder {
    fn start(&mut self) {
        self.buf.clear();
        self.records = 0;
        let head = Head::Records { seq: self.next_seq };
        self.buf = postcard::to_extend(&head, std::mem::take(&mut self.buf))
            .expect("writing to a Vec cannot fail");
    }

    /// Appends a record. `Full` means: send [`Self::datagram`], call [`Self::sent`], retry.
    pub fn push(&mut self, tracepoint: Tracepoint, ktime_ns: u64, data: &[u8]) -> Result<(), EncodeError> {
        let mark = self.buf.len();
        let wire = WireRecord {
            tracepoint: tracepoint.id(),
            ktime_ns,
            data,
        };
        self.buf = postcard::to_extend(&wire, std::mem::take(&mut self.buf))
            .expect("writing to a Vec cannot fail");
        if self.buf.len() <= MAX_DATAGRAM {
            self.records += 1;
            return Ok(());
        }
        let size = self.buf.len() - mark;
        self.buf.truncate(mark);
        if self.records == 0 {
            Err(EncodeError::TooLarge { size })
        } else {
            Err(EncodeError::Full)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn datagram(&self) -> &[u8] {
        &self.buf
    }

    /// The current datagram went out: start the next one.
    pub fn sent(&mut self) {
        self.next_seq += 1;
        self.start();
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

        let mut v2 = good.clone();
        v2[4..6].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(decode_hello(&v2), Err(DecodeError::UnsupportedVersion { got: 2 }));

        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode_hello(&trailing), Err(DecodeError::TrailingBytes(1)));

        let truncated = &good[..good.len() - 3];
        assert!(matches!(decode_hello(truncated), Err(DecodeError::Malformed { .. })));

        let mut unknown = hello();
        unknown.tracepoints.push(999);
        assert_eq!(
            decode_hello(&encode_hello(&unknown)),
            Err(DecodeError::UnknownTracepoint(999))
        );
    }

    #[test]
    fn records_round_trip_in_order_with_sequence_numbers() {
        let mut enc = BatchEncoder::default();
        enc.push(Tracepoint::MempoolAdded, 7, b"abc").unwrap();
        enc.push(Tracepoint::NetInboundMessage, 8, &[]).unwrap();
        let first = enc.datagram().to_vec();
        enc.sent();
        enc.push(Tracepoint::MempoolRemoved, 9, b"x").unwrap();

        assert_eq!(
            decode_datagram(&first).unwrap(),
            Datagram::Records {
                seq: 0,
                records: vec![
                    Record { tracepoint: Tracepoint::MempoolAdded, ktime_ns: 7, data: b"abc" },
                    Record { tracepoint: Tracepoint::NetInboundMessage, ktime_ns: 8, data: b"" },
                ]
            }
        );
        assert_eq!(
            decode_datagram(enc.datagram()).unwrap(),
            Datagram::Records {
                seq: 1,
                records: vec![Record { tracepoint: Tracepoint::MempoolRemoved, ktime_ns: 9, data: b"x" }]
            }
        );
    }

    #[test]
    fn full_datagram_asks_for_a_send_and_oversized_record_is_refused() {
        let mut enc = BatchEncoder::default();
        let big = vec![0u8; MAX_DATAGRAM / 2];
        enc.push(Tracepoint::NetInboundMessage, 1, &big).unwrap();
        assert_eq!(enc.push(Tracepoint::NetInboundMessage, 2, &big), Err(EncodeError::Full));
        assert!(enc.datagram().len() <= MAX_DATAGRAM);
        assert_eq!(decode_datagram(enc.datagram()).map(|d| match d {
            Datagram::Records { records, .. } => records.len(),
            Datagram::DropCounts(_) => 0,
        }), Ok(1));
        enc.sent();
        assert!(enc.is_empty());
        let huge = vec![0u8; MAX_DATAGRAM];
        assert!(matches!(
            enc.push(Tracepoint::NetInboundMessage, 3, &huge),
            Err(EncodeError::TooLarge { .. })
        ));
        assert!(enc.is_empty());
    }

    #[test]
    fn drop_counts_round_trip() {
        let counts = vec![DropCount {
            tracepoint: Tracepoint::MempoolRemoved,
            cause: DropCause::RingFull,
            total: 5,
        }];
        assert_eq!(
            decode_datagram(&encode_drop_counts(&counts)),
            Ok(Datagram::DropCounts(counts))
        );
    }

    #[test]
    fn datagram_rejects_unknown_tracepoint_truncation_garbage_and_trailing_bytes() {
        let mut enc = BatchEncoder::default();
        enc.push(Tracepoint::MempoolAdded, 7, b"abc").unwrap();
        let good = enc.datagram().to_vec();

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

        let bad_cause = postcard::to_allocvec(&Head::DropCounts(vec![WireDropCount {
            tracepoint: 0,
            cause: 200,
            total: 1,
        }]))
        .unwrap();
        assert_eq!(decode_datagram(&bad_cause), Err(DecodeError::UnknownDropCause(200)));
    }
}
