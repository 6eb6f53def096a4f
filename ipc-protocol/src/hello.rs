//! The first datagram of every connection: magic, protocol version (little-endian `u16`),
//! then the postcard-encoded [`Hello`], the sequence number of the connection's first
//! record-carrying datagram and the drop totals a publisher already counted (docs/ipc.md).

use serde::{Deserialize, Serialize};

use crate::datagram::{counts_from_wire, counts_to_wire, encode, malformed, tracepoint, DecodeError, WireDropCount};
use crate::DropCount;

pub const PROTOCOL_VERSION: u16 = 10;
pub const HELLO_MAGIC: [u8; 4] = *b"BCXT";

/// The loader's handshake: who is traced and what is hooked. Records' kernel timestamps are
/// CLOCK_MONOTONIC, which the publisher converts with its own reading of both clocks
/// (`publisher/src/clock.rs`), so that a stepped wall clock is followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Random, new at each start of the loader: with a record's number it names the record
    /// (docs/ipc.md, "Record identity").
    pub run_id: u128,
    pub loader_version: String,
    pub pid: u32,
    pub binary: String,
    /// Ids of the attached tracepoints.
    pub tracepoints: Vec<u16>,
}

/// A decoded hello: the loader's [`Hello`], where its sequence numbers start on this
/// connection, so that even the first datagram's loss is seen, and the drop totals of this run
/// that an earlier publisher is known to have counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub hello: Hello,
    pub first_seq: u64,
    /// The run's totals in the last drop report a publisher read before a record it
    /// acknowledged (`Sender`): a publisher new to the run counts only what exceeds them, so
    /// that a restarted publisher does not count again what the last one counted.
    pub reported: Vec<DropCount>,
}

pub(crate) fn encode_hello(hello: &Hello, first_seq: u64, reported: &[DropCount]) -> Vec<u8> {
    let mut out = HELLO_MAGIC.to_vec();
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    encode(&(hello, first_seq, counts_to_wire(reported)), out)
}

pub fn decode_hello(buf: &[u8]) -> Result<Greeting, DecodeError> {
    if buf.len() < 6 || buf[..4] != HELLO_MAGIC {
        return Err(DecodeError::BadMagic(buf[..buf.len().min(4)].to_vec()));
    }
    let version = u16::from_le_bytes([buf[4], buf[5]]);
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { got: version });
    }
    let ((hello, first_seq, reported), rest) =
        postcard::take_from_bytes::<(Hello, u64, Vec<WireDropCount>)>(&buf[6..]).map_err(malformed("hello"))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    for id in &hello.tracepoints {
        tracepoint(*id)?;
    }
    Ok(Greeting { hello, first_seq, reported: counts_from_wire(reported)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DropCause, Tracepoint};

    fn hello() -> Hello {
        Hello {
            run_id: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
            loader_version: "0.1.0".into(),
            pid: 4242,
            binary: "/usr/bin/bitcoind".into(),
            tracepoints: vec![0, 1, 11],
        }
    }

    #[test]
    fn hello_round_trips() {
        let reported = vec![DropCount { tracepoint: Tracepoint::MempoolAdded, cause: DropCause::RingFull, total: 9 }];
        assert_eq!(
            decode_hello(&encode_hello(&hello(), 7, &reported)),
            Ok(Greeting { hello: hello(), first_seq: 7, reported })
        );
    }

    #[test]
    fn hello_rejects_bad_magic_version_trailing_bytes_and_unknown_tracepoints() {
        let good = encode_hello(&hello(), 0, &[]);

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
        assert_eq!(decode_hello(&encode_hello(&unknown, 0, &[])), Err(DecodeError::UnknownTracepoint(999)));
    }
}
