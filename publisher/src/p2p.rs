//! P2P payload decoding (docs/wire-format.md, "P2P messages"). Payloads come from arbitrary internet peers:
//! every read is bounds-checked and decoding never panics. Bytes left after a successful
//! decode are ignored, as upstream does.

use std::cell::Cell;
use std::net::{Ipv4Addr, Ipv6Addr};

use sha2::{Digest, Sha256};

use crate::inventory::Inventory;
use crate::proto::bitcoin_primitives::{
    address::Address as Addr, Address, BlockHeader, PrefilledTransaction, Transaction, UnknownAddress,
};
use crate::proto::ebpf_extractor::message::{self as m, message_event::Msg};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload ends early: needs {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("CompactSize at offset {0} is not minimally encoded")]
    NonMinimalCompactSize(usize),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("invalid {field}: {value}")]
    Invalid { field: &'static str, value: u64 },
    #[error("segwit transaction without any witness")]
    EmptyWitnesses,
    #[error("decoded form would pass {} heap bytes per payload byte plus {}", BUDGET_PER_BYTE, BUDGET_BASE)]
    OverBudget,
    #[error("decoded form would encode to {0} bytes, more than an event may take")]
    OverEncodedLen(usize),
}

/// Heap bytes a decoded payload may take per payload byte. Legitimate messages stay within it:
/// the densest are `getblocktxn` (a 1-byte index becomes a u64) and `cmpctblock` (a 6-byte
/// short id becomes a Vec); the tests measure every type against it.
pub const BUDGET_PER_BYTE: usize = 8;
/// Heap bytes every payload may take besides: the fixed allocations of the smallest ones.
pub const BUDGET_BASE: usize = 1024;
/// Room for a message event's envelope and metadata around its payload's encoding: its
/// strings take at most 512 + 20 + 12 bytes, its numbers and tags a few dozen.
pub const EVENT_ROOM: usize = 4096;
/// The largest encoding of a decoded payload: what the publisher hands to NATS at once at
/// most (`sink::NATS_BUFFER_BYTES`), less [`EVENT_ROOM`]. No legitimate message comes
/// near; past it, an event could never be published, and its encoding would be one more
/// large copy.
pub const MAX_ENCODED_LEN: usize = crate::sink::NATS_BUFFER_BYTES - EVENT_ROOM;
/// The most bytes one payload byte encodes to: a merkleblock's flag byte, 8 bools written
/// unpacked, 2 bytes each (docs/wire-format.md). A payload shorter than `MAX_ENCODED_LEN /
/// MAX_ENCODED_PER_BYTE` cannot pass `MAX_ENCODED_LEN`, so its encoding is not measured.
pub(crate) const MAX_ENCODED_PER_BYTE: usize = 16;
/// What a heap allocation is charged besides its bytes: the allocator's header and rounding.
const ALLOC_COST: usize = 16;
/// The shortest transaction the decoder accepts: version, segwit marker and flag, no inputs,
/// no outputs, lock time.
const MIN_TX_LEN: usize = 12;

/// The `unknown` variant: the command and the complete payload.
pub fn unknown(command: &str, payload: &[u8]) -> Msg {
    Msg::Unknown(m::Unknown { command: command.to_owned(), payload: payload.to_vec() })
}

/// Decodes a payload by its exact, case-sensitive command. Commands without a decoder give
/// `unknown`; an `Err` means a known command whose payload is malformed, or whose decoded form
/// would pass [`BUDGET_PER_BYTE`] × its length + [`BUDGET_BASE`] heap bytes or encode to more
/// than [`MAX_ENCODED_LEN`].
pub fn decode(command: &str, payload: &[u8]) -> Result<Msg, PayloadError> {
    decode_to_at_most(command, payload, MAX_ENCODED_LEN)
}

/// [`decode`], the decoded form's encoding taking at most `max_encoded_len` bytes (at most
/// [`MAX_ENCODED_LEN`]): what the NATS server takes, less [`EVENT_ROOM`].
pub fn decode_to_at_most(command: &str, payload: &[u8], max_encoded_len: usize) -> Result<Msg, PayloadError> {
    let max_encoded_len = max_encoded_len.min(MAX_ENCODED_LEN);
    let budget = payload.len().saturating_mul(BUDGET_PER_BYTE).saturating_add(BUDGET_BASE);
    let msg = decode_within(command, payload, &Cell::new(budget))?;
    if payload.len() >= max_encoded_len / MAX_ENCODED_PER_BYTE {
        let len = msg.encoded_len();
        if len > max_encoded_len {
            return Err(PayloadError::OverEncodedLen(len));
        }
    }
    Ok(msg)
}

/// [`decode`], charging the heap bytes of what it builds to `budget`. Lists are charged before
/// they are allocated, so a payload over budget is refused before its large allocation.
pub(crate) fn decode_within(command: &str, payload: &[u8], budget: &Cell<usize>) -> Result<Msg, PayloadError> {
    let r = &mut Reader { buf: payload, pos: 0, budget };
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
        "sendcmpct" => Msg::Sendcompact(m::SendCompact { send_compact: r.u8()? != 0, version: r.u64()? }),
        "inv" => Msg::Inv(inventory(r)?),
        "getdata" => Msg::Getdata(inventory(r)?),
        "notfound" => Msg::Notfound(inventory(r)?),
        "getcfilters" => {
            Msg::Getcfilter(m::GetCFilter { filter_type: r.u8()?.into(), start_height: r.u32()?, stop_hash: r.hash()? })
        }
        "getcfheaders" => Msg::Getcfheaders(m::GetCfHeaders {
            filter_type: r.u8()?.into(),
            start_height: r.u32()?,
            stop_hash: r.hash()?,
        }),
        "getcfcheckpt" => Msg::Getcfcheckpt(m::GetCfCheckpt { filter_type: r.u8()?.into(), stop_hash: r.hash()? }),
        "version" => Msg::Version(version(r)?),
        "addr" => Msg::Addr(m::Addr { addresses: r.list(30, |r| v1_address(r, true))? }),
        "addrv2" if payload.is_empty() => Msg::Emptyaddrv2(true),
        "addrv2" => Msg::Addrv2(m::AddrV2 { addresses: r.list(9, v2_address)? }),
        "getheaders" => {
            let (version, locator_hashes, stop_hash) = (r.u32()?, r.list(32, Reader::hash)?, r.hash()?);
            Msg::Getheaders(m::GetHeaders { version, locator_hashes, stop_hash })
        }
        "getblocks" => {
            let (version, locator_hashes, stop_hash) = (r.u32()?, r.list(32, Reader::hash)?, r.hash()?);
            Msg::Getblocks(m::GetBlocks { version, locator_hashes, stop_hash })
        }
        "tx" => Msg::Tx(m::Tx { tx: transaction(r)? }),
        "block" => Msg::Block(m::Block { header: header(r)?, transactions: r.list(MIN_TX_LEN, transaction)? }),
        "headers" => Msg::Headers(m::Headers {
            headers: r.list(81, |r| {
                let h = header(r)?;
                match r.u8()? {
                    0 => Ok(h),
                    n => Err(PayloadError::Invalid { field: "headers tx count", value: n.into() }),
                }
            })?,
        }),
        "merkleblock" => Msg::Merkleblock(m::MerkleBlock {
            header: header(r)?,
            num_transactions: r.u32()?,
            hashes: r.list(32, Reader::hash)?,
            bits: {
                let flags = r.var_slice()?;
                r.alloc(flags.len() * 8)?;
                let mut bits = Vec::with_capacity(flags.len() * 8);
                bits.extend(flags.iter().flat_map(|byte| (0..8).map(move |i| byte >> i & 1 == 1)));
                bits
            },
        }),
        "filterload" => Msg::Filterload(m::FilterLoad {
            filter: r.var_bytes()?,
            hash_funcs: r.u32()?,
            tweak: r.u32()?,
            flags: match r.u8()? {
                f @ 0..=2 => f.into(),
                f => return Err(PayloadError::Invalid { field: "bloom flags", value: f.into() }),
            },
        }),
        "filteradd" => Msg::Filteradd(m::FilterAdd { filter: r.var_bytes()? }),
        "cfilter" => {
            Msg::Cfilter(m::CFilter { filter_type: r.u8()?.into(), block_hash: r.hash()?, filter: r.var_bytes()? })
        }
        "cfheaders" => Msg::Cfheaders(m::CfHeaders {
            filter_type: r.u8()?.into(),
            stop_hash: r.hash()?,
            previous_filter_header: r.hash()?,
            filter_hashes: r.list(32, Reader::hash)?,
        }),
        "cfcheckpt" => Msg::Cfcheckpt(m::CfCheckpt {
            filter_type: r.u8()?.into(),
            stop_hash: r.hash()?,
            filter_headers: r.list(32, Reader::hash)?,
        }),
        "reject" => Msg::Reject(m::Reject {
            rejected_command: r.var_str("rejected command")?,
            reason: match r.u8()? {
                0x01 => 0,
                0x10 => 1,
                0x11 => 2,
                0x12 => 3,
                0x40 => 4,
                0x41 => 5,
                0x42 => 6,
                0x43 => 7,
                code => return Err(PayloadError::Invalid { field: "reject code", value: code.into() }),
            },
            reason_details: r.var_str("reject reason")?,
            hash: r.hash()?,
        }),
        "alert" => Msg::Alert(m::Alert { alert: r.var_bytes()? }),
        "cmpctblock" => Msg::Compactblock(m::CompactBlock {
            header: header(r)?,
            nonce: r.u64()?,
            short_ids: r.list(6, |r| r.bytes(6))?,
            transactions: r.list(1 + MIN_TX_LEN, |r| {
                let index = r.compact_size()?;
                if index > 0xffff {
                    return Err(PayloadError::Invalid { field: "prefilled index", value: index });
                }
                Ok(PrefilledTransaction { diff_index: index as u32, tx: transaction(r)? })
            })?,
        }),
        "getblocktxn" => Msg::Getblocktxn(m::GetBlockTxn { block_hash: r.hash()?, tx_indexes: block_txn_indexes(r)? }),
        "blocktxn" => {
            Msg::Blocktxn(m::BlockTxn { block_hash: r.hash()?, transactions: r.list(MIN_TX_LEN, transaction)? })
        }
        _ => unknown(command, payload),
    })
}

fn sha256d(parts: &[&[u8]]) -> Vec<u8> {
    let mut first = Sha256::new();
    for part in parts {
        first.update(part);
    }
    Sha256::digest(first.finalize()).to_vec()
}

/// RFC 4648 base32, lowercase, no padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = buffer << 8 | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[(buffer >> bits & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[(buffer << (5 - bits) & 31) as usize] as char);
    }
    out
}

/// A Tor v3 name as Bitcoin Core prints it: base32(key ‖ checksum ‖ version) + ".onion" (docs/wire-format.md,
/// "Tor v3 addresses").
fn torv3(key: &[u8]) -> String {
    use sha3::Sha3_256;
    const VERSION: u8 = 3;
    let checksum =
        Sha3_256::new().chain_update(b".onion checksum").chain_update(key).chain_update([VERSION]).finalize();
    let mut name = key.to_vec();
    name.extend_from_slice(&checksum[..2]);
    name.push(VERSION);
    format!("{}.onion", base32(&name))
}

const ONIONCAT: [u8; 6] = [0xfd, 0x87, 0xd8, 0x7e, 0xeb, 0x43];

fn v1_address(r: &mut Reader<'_>, with_time: bool) -> Result<Address, PayloadError> {
    let timestamp = if with_time { r.u32()? } else { 0 };
    let services = r.u64()?;
    let a: [u8; 16] = r.array()?;
    let port = u16::from_be_bytes(r.array()?).into();
    let address = if a[..6] == ONIONCAT {
        Addr::Torv2(format!("{}.onion", base32(&a[6..])))
    } else if a[..10] == [0; 10] && (a[10..12] == [0, 0] || a[10..12] == [0xff, 0xff]) {
        Addr::Ipv4(Ipv4Addr::new(a[12], a[13], a[14], a[15]).to_string())
    } else {
        Addr::Ipv6(Ipv6Addr::from(a).to_string())
    };
    r.alloc(heap_len(&address))?;
    Ok(Address { timestamp, address: Some(address), services, port })
}

fn v2_address(r: &mut Reader<'_>) -> Result<Address, PayloadError> {
    let timestamp = r.u32()?;
    let services = r.compact_size()?;
    let network = r.u8()?;
    let len = r.compact_size()?;
    if len > 512 {
        return Err(PayloadError::Invalid { field: "addrv2 address length", value: len });
    }
    let bytes = r.take(len as usize)?;
    let wrong_length = || PayloadError::Invalid { field: "addrv2 address length", value: len };
    let address = match network {
        1 => Addr::Ipv4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).map_err(|_| wrong_length())?).to_string()),
        2 => {
            let a = <[u8; 16]>::try_from(bytes).map_err(|_| wrong_length())?;
            if a[..6] == ONIONCAT || (a[..10] == [0; 10] && a[10..12] == [0xff, 0xff]) {
                return Err(PayloadError::Invalid { field: "addrv2 IPv6 address", value: 2 });
            }
            Addr::Ipv6(Ipv6Addr::from(a).to_string())
        }
        3 if len == 10 => Addr::Torv2(format!("{}.onion", base32(bytes))),
        4 if len == 32 => Addr::Torv3(torv3(bytes)),
        5 if len == 32 => Addr::I2p(format!("{}.b32.i2p", base32(bytes))),
        6 if len == 16 && bytes[0] == 0xfc => {
            Addr::Cjdns(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).map_err(|_| wrong_length())?).to_string())
        }
        3..=6 => return Err(wrong_length()),
        id => Addr::Unknown(UnknownAddress { id: id.into(), address: bytes.to_vec() }),
    };
    r.alloc(heap_len(&address))?;
    let port = u16::from_be_bytes(r.array()?).into();
    Ok(Address { timestamp, address: Some(address), services, port })
}

/// The heap bytes of an address, charged once it is made: at most 512.
fn heap_len(address: &Addr) -> usize {
    match address {
        Addr::Ipv4(s) | Addr::Ipv6(s) | Addr::Torv2(s) | Addr::Torv3(s) | Addr::I2p(s) | Addr::Cjdns(s) => s.capacity(),
        Addr::Unknown(u) => u.address.capacity(),
    }
}

/// `version`; a payload that ends right after the start height has relay = true, as
/// Bitcoin Core reads it (docs/wire-format.md, "Version without relay byte").
fn version(r: &mut Reader<'_>) -> Result<m::Version, PayloadError> {
    Ok(m::Version {
        version: r.u32()?,
        services: r.u64()?,
        timestamp: r.u64()? as i64,
        receiver: v1_address(r, false)?,
        sender: v1_address(r, false)?,
        nonce: r.u64()?,
        user_agent: r.var_str("user agent")?,
        start_height: r.u32()? as i32,
        relay: r.is_empty() || r.u8()? != 0,
    })
}

fn header(r: &mut Reader<'_>) -> Result<BlockHeader, PayloadError> {
    let raw = r.take(80)?;
    let h = &mut Reader { buf: raw, pos: 0, budget: r.budget };
    Ok(BlockHeader {
        version: h.u32()? as i32,
        prev_blockhash: h.hash()?,
        merkle_root: h.hash()?,
        time: h.u32()?,
        bits: h.u32()?,
        nonce: h.u32()?,
        hash: h.digest(&[raw])?,
    })
}

/// A transaction, legacy or segwit (docs/wire-format.md, "Transactions and headers"). `raw` is exactly the bytes read: CompactSizes
/// are minimal, so re-serialising would give the same bytes.
fn transaction(r: &mut Reader<'_>) -> Result<Transaction, PayloadError> {
    let start = r.pos;
    r.u32()?;
    let mut body_start = r.pos;
    let mut inputs = r.compact_size()?;
    let segwit = inputs == 0;
    if segwit {
        match r.u8()? {
            1 => {}
            flag => return Err(PayloadError::Invalid { field: "segwit flag", value: flag.into() }),
        }
        body_start = r.pos;
        inputs = r.compact_size()?;
    }
    // Scripts and witnesses are skipped, not copied: only the raw bytes are published.
    for _ in 0..inputs {
        r.take(36)?;
        r.var_slice()?;
        r.u32()?;
    }
    for _ in 0..r.compact_size()? {
        r.u64()?;
        r.var_slice()?;
    }
    let body_end = r.pos;
    if segwit {
        let mut any_witness = false;
        for _ in 0..inputs {
            let items = r.compact_size()?;
            for _ in 0..items {
                r.var_slice()?;
            }
            any_witness |= items > 0;
        }
        if inputs > 0 && !any_witness {
            return Err(PayloadError::EmptyWitnesses);
        }
    }
    r.u32()?;
    let raw = &r.buf[start..r.pos];
    let txid = r.digest(&[&raw[..4], &r.buf[body_start..body_end], &raw[raw.len() - 4..]])?;
    // rust-bitcoin (upstream) writes every 0-input transaction in segwit form, so its
    // wtxid covers the marker even without witnesses.
    let wtxid = if segwit {
        r.digest(&[raw])?
    } else {
        r.alloc(txid.len())?;
        txid.clone()
    };
    r.alloc(raw.len())?;
    Ok(Transaction { txid, wtxid, raw: Some(raw.to_vec()) })
}

/// The input and output counts of a serialised transaction (a `Transaction.raw`), for display;
/// `None` if it is malformed before its output count.
pub fn tx_counts(raw: &[u8]) -> Option<(u64, u64)> {
    // Nothing here allocates: the budget is never charged.
    let r = &mut Reader { buf: raw, pos: 0, budget: &Cell::new(0) };
    r.u32().ok()?;
    let mut inputs = r.compact_size().ok()?;
    if inputs == 0 {
        r.u8().ok()?;
        inputs = r.compact_size().ok()?;
    }
    for _ in 0..inputs {
        r.take(36).ok()?;
        r.var_slice().ok()?;
        r.u32().ok()?;
    }
    Some((inputs, r.compact_size().ok()?))
}

/// `getblocktxn` indexes, differentially encoded on the wire, made absolute. As in upstream's
/// decoder (rust-bitcoin's `BlockTransactionsRequest`), the index after each must exist too:
/// an index of `u64::MAX` is an overflow.
fn block_txn_indexes(r: &mut Reader<'_>) -> Result<Vec<u64>, PayloadError> {
    let count = r.compact_size()?;
    if count > 62_500 {
        return Err(PayloadError::Invalid { field: "getblocktxn index count", value: count });
    }
    let count = r.held(count, 1)?;
    r.alloc(count * size_of::<u64>())?;
    let mut indexes: Vec<u64> = Vec::with_capacity(count);
    let mut next = 0u64;
    for i in 0..count {
        let overflow = PayloadError::Invalid { field: "getblocktxn index", value: i as u64 };
        let index = next.checked_add(r.compact_size()?).ok_or(overflow.clone())?;
        next = index.checked_add(1).ok_or(overflow)?;
        indexes.push(index);
    }
    Ok(indexes)
}

/// Inventory list; a MSG_ERROR entry consumes its hash like every other (docs/wire-format.md,
/// "Inventory error items").
/// Encoded as it is read (src/inventory.rs), into one buffer of the exact size.
fn inventory(r: &mut Reader<'_>) -> Result<Inventory, PayloadError> {
    const ENTRY: usize = 4 + 32;
    let count = r.compact_size()?;
    let count = r.held(count, ENTRY)?;
    let entries = r.take(count * ENTRY)?;
    let inv_type = |entry: &[u8]| u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
    let bytes = entries.chunks_exact(ENTRY).map(|entry| Inventory::entry_len(inv_type(entry))).sum();
    r.alloc(bytes)?;
    let mut inventory = Inventory::with_capacity(bytes);
    for entry in entries.chunks_exact(ENTRY) {
        let hash = entry[4..].try_into().expect("chunks_exact gives 36 bytes");
        inventory.push(inv_type(entry), hash);
    }
    Ok(inventory)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Heap bytes the decoded form may still take.
    budget: &'a Cell<usize>,
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
        self.bytes(32)
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, PayloadError> {
        let bytes = self.take(n)?;
        self.alloc(n)?;
        Ok(bytes.to_vec())
    }

    fn digest(&self, parts: &[&[u8]]) -> Result<Vec<u8>, PayloadError> {
        self.alloc(32)?;
        Ok(sha256d(parts))
    }

    /// Charges a heap allocation of `bytes` (none for 0: empty Vecs and Strings allocate
    /// nothing); refuses the payload once its decoded form would pass the budget.
    fn alloc(&self, bytes: usize) -> Result<(), PayloadError> {
        let cost = if bytes == 0 { 0 } else { bytes.saturating_add(ALLOC_COST) };
        let left = self.budget.get().checked_sub(cost).ok_or(PayloadError::OverBudget)?;
        self.budget.set(left);
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn var_slice(&mut self) -> Result<&'a [u8], PayloadError> {
        let len = self.compact_size()?;
        // A length beyond the payload is truncation, whatever its size.
        self.take(usize::try_from(len).unwrap_or(usize::MAX))
    }

    fn var_bytes(&mut self) -> Result<Vec<u8>, PayloadError> {
        let bytes = self.var_slice()?;
        self.alloc(bytes.len())?;
        Ok(bytes.to_vec())
    }

    fn var_str(&mut self, what: &'static str) -> Result<String, PayloadError> {
        String::from_utf8(self.var_bytes()?).map_err(|_| PayloadError::NotUtf8(what))
    }

    /// A CompactSize count, then that many elements of at least `min_len` bytes each. The Vec
    /// is allocated once, after the payload is known to hold them and the budget to cover it.
    fn list<T>(
        &mut self,
        min_len: usize,
        mut element: impl FnMut(&mut Self) -> Result<T, PayloadError>,
    ) -> Result<Vec<T>, PayloadError> {
        let count = self.compact_size()?;
        let count = self.held(count, min_len)?;
        self.alloc(count.saturating_mul(size_of::<T>()))?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(element(self)?);
        }
        Ok(items)
    }

    /// `count`, if the rest of the payload can hold that many elements of `min_len` (≥ 1) bytes.
    fn held(&self, count: u64, min_len: usize) -> Result<usize, PayloadError> {
        let rest = self.buf.len() - self.pos;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let needed = count.saturating_mul(min_len);
        if needed > rest {
            return Err(PayloadError::Truncated { offset: self.pos, needed: needed - rest });
        }
        Ok(count)
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
    use crate::proto::bitcoin_primitives::{inventory_item::Item, InventoryItem};

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
            Ok(Msg::Inv(Inventory::from_items(&[
                InventoryItem { item: Some(Item::Error(true)) },
                InventoryItem { item: Some(Item::Transaction(r)) },
            ])))
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

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Display order (RPC, explorers) is the byte-reverse of the internal order published.
    fn display(hash: &[u8]) -> String {
        hash.iter().rev().map(|b| format!("{b:02x}")).collect()
    }

    const GENESIS_HEADER: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";
    const GENESIS_COINBASE: &str = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";

    #[test]
    fn genesis_block_hashes() {
        let mut payload = unhex(GENESIS_HEADER);
        payload.push(1);
        payload.extend(unhex(GENESIS_COINBASE));
        let Ok(Msg::Block(block)) = decode("block", &payload) else { panic!("block decodes") };
        assert_eq!(display(&block.header.hash), "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f");
        assert_eq!(block.header.time, 1231006505);
        let tx = &block.transactions[0];
        assert_eq!(display(&tx.txid), "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b");
        assert_eq!(tx.wtxid, tx.txid);
        assert_eq!(tx.raw.as_deref(), Some(&unhex(GENESIS_COINBASE)[..]));
        assert_eq!(block.header.merkle_root, tx.txid);
    }

    #[test]
    fn segwit_transaction_ids() {
        // version | [marker flag] | 1 input | 1 output | [witness] | lock time
        let body = format!("01{}0000000000ffffffff0100e1f505000000000100", "11".repeat(32));
        let segwit = unhex(&format!("020000000001{body}0103aabbcc00000000"));
        let stripped = unhex(&format!("02000000{body}00000000"));
        let Ok(Msg::Tx(m::Tx { tx })) = decode("tx", &segwit) else { panic!("segwit tx decodes") };
        assert_eq!(tx.txid, sha256d(&[&stripped]));
        assert_eq!(tx.wtxid, sha256d(&[&segwit]));
        assert_eq!(tx.raw.as_deref(), Some(&segwit[..]));

        let Ok(Msg::Tx(m::Tx { tx: legacy })) = decode("tx", &stripped) else { panic!("legacy tx decodes") };
        assert_eq!(legacy.txid, tx.txid);
        assert_eq!(legacy.wtxid, legacy.txid);

        let no_witness = unhex(&format!("020000000001{body}0000000000"));
        assert_eq!(decode("tx", &no_witness), Err(PayloadError::EmptyWitnesses));
        let bad_flag = unhex(&format!("020000000002{body}0103aabbcc00000000"));
        assert_eq!(decode("tx", &bad_flag), Err(PayloadError::Invalid { field: "segwit flag", value: 2 }));
    }

    #[test]
    fn addrv2_rejects_wrong_lengths_and_accepts_unknown_networks() {
        // count | time | services | network | length | address | port
        let bad = unhex("01000000000001050506070809208d");
        assert_eq!(decode("addrv2", &bad), Err(PayloadError::Invalid { field: "addrv2 address length", value: 5 }));
        let unknown_net = unhex("01000000000009020102208d");
        let Ok(Msg::Addrv2(a)) = decode("addrv2", &unknown_net) else { panic!("unknown network decodes") };
        assert_eq!(a.addresses[0].address, Some(Addr::Unknown(UnknownAddress { id: 9, address: vec![1, 2] })));
        assert_eq!(decode("addrv2", &[]), Ok(Msg::Emptyaddrv2(true)));
        assert_eq!(decode("addrv2", &[0]), Ok(Msg::Addrv2(m::AddrV2 { addresses: vec![] })));
    }

    #[test]
    fn v1_address_forms() {
        let entry = |a: &str| unhex(&format!("01{}{}{a}208d", "00000000", "0100000000000000"));
        let render = |a: &str| {
            let Ok(Msg::Addr(m::Addr { addresses })) = decode("addr", &entry(a)) else { panic!("{a}") };
            addresses[0].address.clone().unwrap()
        };
        assert_eq!(render("fd87d87eeb43edb108e43588e54635ca"), Addr::Torv2("5wyqrzbvrdsumnok.onion".into()));
        assert_eq!(render("00000000000000000000000000000001"), Addr::Ipv4("0.0.0.1".into()));
        assert_eq!(render("00000000000000000000ffff01020304"), Addr::Ipv4("1.2.3.4".into()));
        assert_eq!(render("20010db8000000010000000000000001"), Addr::Ipv6("2001:db8:0:1::1".into()));
        assert_eq!(render("00010000000100000001000000010000"), Addr::Ipv6("1:0:1:0:1:0:1:0".into()));
    }

    /// rust-bitcoin refuses an index whose successor would overflow, the last one included.
    #[test]
    fn getblocktxn_indexes_up_to_but_not_including_u64_max() {
        let indexes = |diffs: &[u64]| {
            let mut payload = vec![0; 32];
            payload.push(diffs.len() as u8);
            for &diff in diffs {
                match diff {
                    0..0xfd => payload.push(diff as u8),
                    _ => {
                        payload.push(0xff);
                        payload.extend_from_slice(&diff.to_le_bytes());
                    }
                }
            }
            match decode("getblocktxn", &payload) {
                Ok(Msg::Getblocktxn(m)) => Ok(m.tx_indexes),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e),
            }
        };
        assert_eq!(indexes(&[u64::MAX - 1]), Ok(vec![u64::MAX - 1]));
        assert_eq!(indexes(&[0, 0, 3]), Ok(vec![0, 1, 5]));
        assert_eq!(indexes(&[5, u64::MAX - 7]), Ok(vec![5, u64::MAX - 1]));
        let overflow = |i| Err(PayloadError::Invalid { field: "getblocktxn index", value: i });
        assert_eq!(indexes(&[u64::MAX]), overflow(0));
        assert_eq!(indexes(&[0, u64::MAX - 1]), overflow(1));
        assert_eq!(indexes(&[0, u64::MAX]), overflow(1));
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
            for command in [
                "ping",
                "pong",
                "inv",
                "getdata",
                "notfound",
                "feefilter",
                "sendcmpct",
                "getcfilters",
                "getcfheaders",
                "getcfcheckpt",
                "version",
                "addr",
                "addrv2",
                "getheaders",
                "getblocks",
                "tx",
                "block",
                "headers",
                "merkleblock",
                "filterload",
                "filteradd",
                "cfilter",
                "cfheaders",
                "cfcheckpt",
                "reject",
                "alert",
                "cmpctblock",
                "getblocktxn",
                "blocktxn",
            ] {
                let _ = decode(command, &payload);
            }
        }
    }
}
