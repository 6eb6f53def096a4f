//! P2P messages as structured values ([`Message`] and its parts) and their serialisation in
//! Bitcoin's wire format.

use crate::garbage::Flaw;

pub type Hash = [u8; 32];

/// A P2P message as structured values; [`Message::serialize`] gives its payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Version(Version),
    Verack,
    Ping(u64),
    /// The pre-BIP31 ping: an empty payload.
    OldPing,
    Pong(u64),
    Inv(Vec<InvItem>),
    GetData(Vec<InvItem>),
    NotFound(Vec<InvItem>),
    Tx(Tx),
    Block(Block),
    Headers(Vec<Header>),
    GetHeaders(Locator),
    GetBlocks(Locator),
    CmpctBlock(CompactBlock),
    /// Indexes are absolute; the payload carries them differentially encoded.
    GetBlockTxn {
        block_hash: Hash,
        indexes: Vec<u64>,
    },
    BlockTxn {
        block_hash: Hash,
        txs: Vec<Tx>,
    },
    SendCmpct {
        announce: bool,
        version: u64,
    },
    FeeFilter(i64),
    Addr(Vec<TimedAddr>),
    AddrV2(Vec<AddrV2>),
    /// `addrv2` with an empty payload (not even a count).
    EmptyAddrV2,
    SendAddrV2,
    GetAddr,
    Mempool,
    WtxidRelay,
    SendHeaders,
    FilterClear,
    MerkleBlock {
        header: Header,
        total_txs: u32,
        hashes: Vec<Hash>,
        flags: Vec<u8>,
    },
    FilterLoad {
        filter: Vec<u8>,
        hash_funcs: u32,
        tweak: u32,
        flags: u8,
    },
    FilterAdd(Vec<u8>),
    GetCFilters(FilterRange),
    CFilter {
        filter_type: u8,
        block_hash: Hash,
        filter: Vec<u8>,
    },
    GetCFHeaders(FilterRange),
    CFHeaders {
        filter_type: u8,
        stop_hash: Hash,
        previous_header: Hash,
        hashes: Vec<Hash>,
    },
    GetCFCheckpt {
        filter_type: u8,
        stop_hash: Hash,
    },
    CFCheckpt {
        filter_type: u8,
        stop_hash: Hash,
        headers: Vec<Hash>,
    },
    Reject {
        message: String,
        code: u8,
        reason: String,
        hash: Hash,
    },
    /// A command the decoder does not know.
    Unknown {
        command: &'static str,
        payload: Vec<u8>,
    },
    /// A known command whose payload must fail to decode, broken as `flaw` says.
    Undecodable {
        command: &'static str,
        flaw: Flaw,
        payload: Vec<u8>,
    },
}

/// `version`, Bitcoin Core's field order.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub version: u32,
    pub services: u64,
    pub timestamp: i64,
    pub receiver: NetAddr,
    pub sender: NetAddr,
    pub nonce: u64,
    pub user_agent: String,
    pub start_height: i32,
    /// `None`: the payload ends after the start height, as BIP37 allows.
    pub relay: Option<bool>,
}

/// A v1 network address: 16 bytes (IPv6, IPv4-mapped or OnionCat) and a big-endian port.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetAddr {
    pub services: u64,
    pub ip: [u8; 16],
    pub port: u16,
}

/// An `addr` entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedAddr {
    pub time: u32,
    pub addr: NetAddr,
}

/// An `addrv2` entry (BIP155): services are a CompactSize, the address's length follows from
/// its network id.
#[derive(Debug, Clone, PartialEq)]
pub struct AddrV2 {
    pub time: u32,
    pub services: u64,
    pub network: u8,
    pub addr: Vec<u8>,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvItem {
    pub inv_type: u32,
    pub hash: Hash,
}

/// `getheaders` / `getblocks`.
#[derive(Debug, Clone, PartialEq)]
pub struct Locator {
    pub version: u32,
    pub hashes: Vec<Hash>,
    pub stop_hash: Hash,
}

/// `getcfilters` / `getcfheaders`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterRange {
    pub filter_type: u8,
    pub start_height: u32,
    pub stop_hash: Hash,
}

/// A block header. Its merkle root is arbitrary: nothing downstream checks it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    pub version: i32,
    pub prev_block: Hash,
    pub merkle_root: Hash,
    pub time: u32,
    pub bits: u32,
    pub nonce: u32,
}

impl Header {
    pub fn serialize(&self) -> [u8; 80] {
        let mut out = [0u8; 80];
        out[..4].copy_from_slice(&self.version.to_le_bytes());
        out[4..36].copy_from_slice(&self.prev_block);
        out[36..68].copy_from_slice(&self.merkle_root);
        out[68..72].copy_from_slice(&self.time.to_le_bytes());
        out[72..76].copy_from_slice(&self.bits.to_le_bytes());
        out[76..].copy_from_slice(&self.nonce.to_le_bytes());
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TxIn {
    pub prevout: Hash,
    pub vout: u32,
    pub script_sig: Vec<u8>,
    pub sequence: u32,
    pub witness: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TxOut {
    pub value: i64,
    pub script_pubkey: Vec<u8>,
}

/// A transaction; the simulator gives every one at least one input, because a 0-input one
/// would read as the segwit marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Tx {
    pub version: i32,
    pub inputs: Vec<TxIn>,
    pub outputs: Vec<TxOut>,
    pub lock_time: u32,
}

impl Tx {
    pub fn has_witness(&self) -> bool {
        self.inputs.iter().any(|input| !input.witness.is_empty())
    }

    /// The consensus serialisation: with marker, flag and witnesses iff an input has one.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out, self.has_witness());
        out
    }

    /// Without marker, flag and witnesses: what the txid commits to.
    pub fn serialize_without_witness(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out, false);
        out
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>, segwit: bool) {
        out.extend_from_slice(&self.version.to_le_bytes());
        if segwit {
            out.extend_from_slice(&[0, 1]);
        }
        out.compact_size(self.inputs.len() as u64);
        for input in &self.inputs {
            out.extend_from_slice(&input.prevout);
            out.extend_from_slice(&input.vout.to_le_bytes());
            out.var_bytes(&input.script_sig);
            out.extend_from_slice(&input.sequence.to_le_bytes());
        }
        out.compact_size(self.outputs.len() as u64);
        for output in &self.outputs {
            out.extend_from_slice(&output.value.to_le_bytes());
            out.var_bytes(&output.script_pubkey);
        }
        if segwit {
            for input in &self.inputs {
                out.compact_size(input.witness.len() as u64);
                for item in &input.witness {
                    out.var_bytes(item);
                }
            }
        }
        out.extend_from_slice(&self.lock_time.to_le_bytes());
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub header: Header,
    pub txs: Vec<Tx>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompactBlock {
    pub header: Header,
    pub nonce: u64,
    pub short_ids: Vec<[u8; 6]>,
    pub prefilled: Vec<PrefilledTx>,
}

/// A prefilled transaction of a compact block, its index as on the wire (differential).
#[derive(Debug, Clone, PartialEq)]
pub struct PrefilledTx {
    pub diff_index: u32,
    pub tx: Tx,
}

impl Message {
    /// The message type, as the tracepoint's `msg_type` carries it.
    pub fn command(&self) -> &'static str {
        match self {
            Message::Version(_) => "version",
            Message::Verack => "verack",
            Message::Ping(_) | Message::OldPing => "ping",
            Message::Pong(_) => "pong",
            Message::Inv(_) => "inv",
            Message::GetData(_) => "getdata",
            Message::NotFound(_) => "notfound",
            Message::Tx(_) => "tx",
            Message::Block(_) => "block",
            Message::Headers(_) => "headers",
            Message::GetHeaders(_) => "getheaders",
            Message::GetBlocks(_) => "getblocks",
            Message::CmpctBlock(_) => "cmpctblock",
            Message::GetBlockTxn { .. } => "getblocktxn",
            Message::BlockTxn { .. } => "blocktxn",
            Message::SendCmpct { .. } => "sendcmpct",
            Message::FeeFilter(_) => "feefilter",
            Message::Addr(_) => "addr",
            Message::AddrV2(_) | Message::EmptyAddrV2 => "addrv2",
            Message::SendAddrV2 => "sendaddrv2",
            Message::GetAddr => "getaddr",
            Message::Mempool => "mempool",
            Message::WtxidRelay => "wtxidrelay",
            Message::SendHeaders => "sendheaders",
            Message::FilterClear => "filterclear",
            Message::MerkleBlock { .. } => "merkleblock",
            Message::FilterLoad { .. } => "filterload",
            Message::FilterAdd(_) => "filteradd",
            Message::GetCFilters(_) => "getcfilters",
            Message::CFilter { .. } => "cfilter",
            Message::GetCFHeaders(_) => "getcfheaders",
            Message::CFHeaders { .. } => "cfheaders",
            Message::GetCFCheckpt { .. } => "getcfcheckpt",
            Message::CFCheckpt { .. } => "cfcheckpt",
            Message::Reject { .. } => "reject",
            Message::Unknown { command, .. } | Message::Undecodable { command, .. } => command,
        }
    }

    /// The payload in Bitcoin's wire format (CompactSizes minimal).
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    /// Appends the payload to `out`, so that a firing loop can reuse one buffer: a fresh
    /// multi-megabyte one per hit faulted in its pages anew, which cost a 4 MB block more
    /// than building it (docs/performance.md).
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Message::Version(v) => {
                out.extend_from_slice(&v.version.to_le_bytes());
                out.extend_from_slice(&v.services.to_le_bytes());
                out.extend_from_slice(&v.timestamp.to_le_bytes());
                out.net_addr(&v.receiver);
                out.net_addr(&v.sender);
                out.extend_from_slice(&v.nonce.to_le_bytes());
                out.var_bytes(v.user_agent.as_bytes());
                out.extend_from_slice(&v.start_height.to_le_bytes());
                out.extend(v.relay.map(u8::from));
            }
            Message::Verack
            | Message::OldPing
            | Message::EmptyAddrV2
            | Message::SendAddrV2
            | Message::GetAddr
            | Message::Mempool
            | Message::WtxidRelay
            | Message::SendHeaders
            | Message::FilterClear => {}
            Message::Ping(nonce) | Message::Pong(nonce) => out.extend_from_slice(&nonce.to_le_bytes()),
            Message::Inv(items) | Message::GetData(items) | Message::NotFound(items) => {
                out.reserve(items.len() * 36 + 9);
                out.compact_size(items.len() as u64);
                for item in items {
                    out.extend_from_slice(&item.inv_type.to_le_bytes());
                    out.extend_from_slice(&item.hash);
                }
            }
            Message::Tx(tx) => tx.write(out, tx.has_witness()),
            Message::Block(block) => {
                out.extend_from_slice(&block.header.serialize());
                out.txs(&block.txs);
            }
            Message::Headers(headers) => {
                out.compact_size(headers.len() as u64);
                for header in headers {
                    out.extend_from_slice(&header.serialize());
                    // The transaction count, always 0 in `headers`.
                    out.push(0);
                }
            }
            Message::GetHeaders(locator) | Message::GetBlocks(locator) => {
                out.extend_from_slice(&locator.version.to_le_bytes());
                out.hash_list(&locator.hashes);
                out.extend_from_slice(&locator.stop_hash);
            }
            Message::CmpctBlock(block) => {
                out.extend_from_slice(&block.header.serialize());
                out.extend_from_slice(&block.nonce.to_le_bytes());
                out.compact_size(block.short_ids.len() as u64);
                for id in &block.short_ids {
                    out.extend_from_slice(id);
                }
                out.compact_size(block.prefilled.len() as u64);
                for prefilled in &block.prefilled {
                    out.compact_size(prefilled.diff_index.into());
                    prefilled.tx.write(out, prefilled.tx.has_witness());
                }
            }
            Message::GetBlockTxn { block_hash, indexes } => {
                out.extend_from_slice(block_hash);
                out.compact_size(indexes.len() as u64);
                // Each index after the first is sent as its distance from the previous one, minus 1.
                let mut next = 0;
                for index in indexes {
                    out.compact_size(index - next);
                    next = index + 1;
                }
            }
            Message::BlockTxn { block_hash, txs } => {
                out.extend_from_slice(block_hash);
                out.txs(txs);
            }
            Message::SendCmpct { announce, version } => {
                out.push(u8::from(*announce));
                out.extend_from_slice(&version.to_le_bytes());
            }
            Message::FeeFilter(fee) => out.extend_from_slice(&fee.to_le_bytes()),
            Message::Addr(entries) => {
                out.compact_size(entries.len() as u64);
                for entry in entries {
                    out.extend_from_slice(&entry.time.to_le_bytes());
                    out.net_addr(&entry.addr);
                }
            }
            Message::AddrV2(entries) => {
                out.compact_size(entries.len() as u64);
                for entry in entries {
                    out.extend_from_slice(&entry.time.to_le_bytes());
                    out.compact_size(entry.services);
                    out.push(entry.network);
                    out.var_bytes(&entry.addr);
                    out.extend_from_slice(&entry.port.to_be_bytes());
                }
            }
            Message::MerkleBlock { header, total_txs, hashes, flags } => {
                out.extend_from_slice(&header.serialize());
                out.extend_from_slice(&total_txs.to_le_bytes());
                out.hash_list(hashes);
                out.var_bytes(flags);
            }
            Message::FilterLoad { filter, hash_funcs, tweak, flags } => {
                out.var_bytes(filter);
                out.extend_from_slice(&hash_funcs.to_le_bytes());
                out.extend_from_slice(&tweak.to_le_bytes());
                out.push(*flags);
            }
            Message::FilterAdd(data) => out.var_bytes(data),
            Message::GetCFilters(range) | Message::GetCFHeaders(range) => {
                out.push(range.filter_type);
                out.extend_from_slice(&range.start_height.to_le_bytes());
                out.extend_from_slice(&range.stop_hash);
            }
            Message::CFilter { filter_type, block_hash, filter } => {
                out.push(*filter_type);
                out.extend_from_slice(block_hash);
                out.var_bytes(filter);
            }
            Message::CFHeaders { filter_type, stop_hash, previous_header, hashes } => {
                out.push(*filter_type);
                out.extend_from_slice(stop_hash);
                out.extend_from_slice(previous_header);
                out.hash_list(hashes);
            }
            Message::GetCFCheckpt { filter_type, stop_hash } => {
                out.push(*filter_type);
                out.extend_from_slice(stop_hash);
            }
            Message::CFCheckpt { filter_type, stop_hash, headers } => {
                out.push(*filter_type);
                out.extend_from_slice(stop_hash);
                out.hash_list(headers);
            }
            Message::Reject { message, code, reason, hash } => {
                out.var_bytes(message.as_bytes());
                out.push(*code);
                out.var_bytes(reason.as_bytes());
                out.extend_from_slice(hash);
            }
            Message::Unknown { payload, .. } | Message::Undecodable { payload, .. } => out.extend_from_slice(payload),
        }
    }
}

/// Bitcoin's wire primitives, appended to a payload.
pub(crate) trait Put {
    fn compact_size(&mut self, n: u64);
    fn var_bytes(&mut self, bytes: &[u8]);
    fn hash_list(&mut self, hashes: &[Hash]);
    fn net_addr(&mut self, addr: &NetAddr);
    fn txs(&mut self, txs: &[Tx]);
}

impl Put for Vec<u8> {
    /// Minimally encoded: the decoder refuses anything else.
    fn compact_size(&mut self, n: u64) {
        match compact_size_len(n) {
            1 => self.push(n as u8),
            3 => {
                self.push(0xfd);
                self.extend_from_slice(&(n as u16).to_le_bytes());
            }
            5 => {
                self.push(0xfe);
                self.extend_from_slice(&(n as u32).to_le_bytes());
            }
            _ => {
                self.push(0xff);
                self.extend_from_slice(&n.to_le_bytes());
            }
        }
    }

    fn var_bytes(&mut self, bytes: &[u8]) {
        self.compact_size(bytes.len() as u64);
        self.extend_from_slice(bytes);
    }

    fn hash_list(&mut self, hashes: &[Hash]) {
        self.compact_size(hashes.len() as u64);
        for hash in hashes {
            self.extend_from_slice(hash);
        }
    }

    fn net_addr(&mut self, addr: &NetAddr) {
        self.extend_from_slice(&addr.services.to_le_bytes());
        self.extend_from_slice(&addr.ip);
        self.extend_from_slice(&addr.port.to_be_bytes());
    }

    fn txs(&mut self, txs: &[Tx]) {
        self.compact_size(txs.len() as u64);
        for tx in txs {
            tx.write(self, tx.has_witness());
        }
    }
}

pub(crate) fn compact_size_len(n: u64) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}
