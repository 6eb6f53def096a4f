//! P2P payload decoding (nats-wire.md §5.7). Payloads come from arbitrary internet peers:
//! every read is bounds-checked and decoding never panics. Bytes left after a successful
//! decode are ignored, as upstream does.

use crate::proto::bitcoin_primitives::{inventory_item::Item, InventoryItem, UnknownItem};
use crate::proto::ebpf_extractor::message::{self as m, message_event::Msg};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload ends early: needs {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("CompactSize at offset {0} is not minimally encoded")]
    NonMinimalCompactSize(usize),
}

/// The `unknown` variant: the command and the complete payload.
pub fn unknown(command: &str, payload: &[u8]) -> Msg {
    Msg::Unknown(m::Unknown {
        command: command.to_owned(),
        payload: payload.to_vec(),
    })
}

/// Decodes a payload by its exact, case-sensitive command. Commands without a decoder give
/// `unknown`; an `Err` means a known command whose payload is malformed.
pub fn decode(command: &str, payload: &[u8]) -> Result<Msg, PayloadError> {
    let r = &mut Reader { buf: payload, pos: 0 };
    Ok(match command {
        "ping" if payload.is_empty() => Msg::Oldping(true),
        "ping" => Msg::Ping(m::Ping { value: r.u64()? }),
        "pong" => Msg::Pong(m::Pong { value: r.u64()? }),
        "verack" => Msg::Verack(true),
        "sendheaders" => Msg::Sendheaders(true),
        "getaddr" => Msg::Getaddr(true),
        "mempool" => Msg::Mempool(true),
        "wtxidrelay" => Msg::Wtxidrelay(true),
        "sendaddrv2" => Msg::Sendaddrv2(true),
        "filterclear" => Msg::Filterclear(true),
        "feefilter" => Msg::Feefilter(m::FeeFilter { fee: r.u64()? as i64 }),
        "sendcmpct" => Msg::Sendcompact(m::SendCompact {
            send_compact: r.u8()? != 0,
            version: r.u64()?,
        }),
        "inv" => Msg::Inv(m::Inv { items: inventory(r)? }),
        "getdata" => Msg::Getdata(m::GetData { items: inventory(r)? }),
        "notfound" => Msg::Notfound(m::NotFound { items: inventory(r)? }),
        "getcfilters" => Msg::Getcfilter(m::GetCFilter {
            filter_type: r.u8()?.into(),
            start_height: r.u32()?,
            stop_hash: r.hash()?,
        }),
        "getcfheaders" => Msg::Getcfheaders(m::GetCfHeaders {
            filter_type: r.u8()?.into(),
            start_height: r.u32()?,
            stop_hash: r.hash()?,
        }),
        "getcfcheckpt" => Msg::Getcfcheckpt(m::GetCfCheckpt {
            filter_type: r.u8()?.into(),
            stop_hash: r.hash()?,
        }),
        _ => unknown(command, payload),
    })
}

/// Inventory list; a MSG_ERROR entry consumes its hash like every other (Q9).
fn inventory(r: &mut Reader<'_>) -> Result<Vec<InventoryItem>, PayloadError> {
    let count = r.compact_size()?;
    let mut items = Vec::new();
    for _ in 0..count {
        let inv_type = r.u32()?;
        let hash = r.hash()?;
        let item = match inv_type {
            0 => Item::Error(true),
            1 => Item::Transaction(hash),
            2 => Item::Block(hash),
            4 => Item::CompactBlock(hash),
            5 => Item::Wtx(hash),
            0x4000_0001 => Item::WitnessTransaction(hash),
            0x4000_0002 => Item::WitnessBlock(hash),
            inv_type => Item::Unknown(UnknownItem { inv_type, hash }),
        };
        items.push(InventoryItem { item: Some(item) });
    }
    Ok(items)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PayloadError> {
        let rest = &self.buf[self.pos..];
        if rest.len() < n {
            return Err(PayloadError::Truncated { offset: self.pos, needed: n - rest.len() });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PayloadError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u8(&mut self) -> Result<u8, PayloadError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, PayloadError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, PayloadError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, PayloadError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn hash(&mut self) -> Result<Vec<u8>, PayloadError> {
        Ok(self.take(32)?.to_vec())
    }

    /// Bitcoin's CompactSize; non-minimal encodings are refused, as Bitcoin Core does.
    fn compact_size(&mut self) -> Result<u64, PayloadError> {
        let start = self.pos;
        let (value, min) = match self.u8()? {
            0xfd => (u64::from(self.u16()?), 0xfd),
            0xfe => (u64::from(self.u32()?), 0x1_0000),
            0xff => (self.u64()?, 0x1_0000_0000),
            n => return Ok(n.into()),
        };
        if value < min {
            return Err(PayloadError::NonMinimalCompactSize(start));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_pong_and_the_empty_ping() {
        let nonce = 0x1bc2_2130_0d20_e492u64.to_le_bytes();
        assert_eq!(decode("ping", &nonce), Ok(Msg::Ping(m::Ping { value: 0x1bc2_2130_0d20_e492 })));
        assert_eq!(decode("ping", &[]), Ok(Msg::Oldping(true)));
        assert!(matches!(decode("ping", &[1, 2, 3]), Err(PayloadError::Truncated { .. })));
        assert!(decode("pong", &[1, 2, 3, 4]).is_err());
    }

    #[test]
    fn msg_error_consumes_its_hash() {
        let h: Vec<u8> = (0..32).collect();
        let r: Vec<u8> = (0..32).rev().collect();
        let mut payload = vec![2];
        payload.extend_from_slice(&0u32.to_le_bytes());
        payload.extend_from_slice(&h);
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.extend_from_slice(&r);
        assert_eq!(
            decode("inv", &payload),
            Ok(Msg::Inv(m::Inv {
                items: vec![
                    InventoryItem { item: Some(Item::Error(true)) },
                    InventoryItem { item: Some(Item::Transaction(r)) },
                ]
            }))
        );
    }

    #[test]
    fn compact_size_must_be_minimal() {
        assert_eq!(decode("inv", &[0xfd, 0x01, 0x00]), Err(PayloadError::NonMinimalCompactSize(0)));
        assert!(matches!(decode("inv", &[0xfd, 0xfd, 0x00]), Err(PayloadError::Truncated { .. })));
    }

    #[test]
    fn unknown_commands_keep_the_whole_payload() {
        assert_eq!(
            decode("sendtxrcncl", &[1, 2, 3]),
            Ok(Msg::Unknown(m::Unknown { command: "sendtxrcncl".into(), payload: vec![1, 2, 3] }))
        );
        assert!(matches!(decode("Ping", &[]), Ok(Msg::Unknown(_))));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 1u64;
        for len in 0..300 {
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            for command in ["ping", "pong", "inv", "getdata", "notfound", "feefilter", "sendcmpct", "getcfilters", "getcfheaders", "getcfcheckpt"] {
                let _ = decode(command, &payload);
            }
        }
    }
}
