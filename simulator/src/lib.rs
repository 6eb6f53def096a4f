//! Deterministic tracepoint arguments: the value of every argument of firing number `seq` of a
//! tracepoint follows from `(seed, tracepoint, seq)` and the [`Workload`] alone, so a test can
//! predict every field of every event. Values stay inside Bitcoin Core's real domains
//! (tracepoints.md §5) and visit their edges: 68-character onion addresses, 12-character
//! message types, the 116-character reject reason, all connection types and networks.
//!
//! P2P payloads are built as structured values ([`Message`]) and serialised in Bitcoin's wire
//! format, so a test can map the same values to the decoded fields without parsing bytes.

use ipc_protocol::Tracepoint;

/// The arguments of one tracepoint firing, in Bitcoin Core's order and types.
#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    /// `net:inbound_message`, `net:outbound_message`: the message type is
    /// [`Message::command`], the payload [`Message::serialize`].
    Message {
        peer_id: i64,
        addr: String,
        conn_type: &'static str,
        message: Message,
    },
    /// `net:inbound_connection`, `net:outbound_connection`
    Connection {
        peer_id: i64,
        addr: String,
        conn_type: &'static str,
        network: u32,
        existing_connections: u64,
    },
    /// `net:closed_connection`, `net:evicted_inbound_connection`
    ClosedConnection {
        peer_id: i64,
        addr: String,
        conn_type: &'static str,
        network: u32,
        time_established: i64,
    },
    Misbehaving {
        peer_id: i64,
        message: &'static str,
    },
    MempoolAdded {
        txid: [u8; 32],
        vsize: i32,
        fee: i64,
    },
    MempoolRemoved {
        txid: [u8; 32],
        reason: &'static str,
        vsize: i32,
        fee: i64,
        entry_time: u64,
    },
    MempoolReplaced {
        replaced_txid: [u8; 32],
        replaced_vsize: i32,
        replaced_fee: i64,
        replaced_entry_time: u64,
        replacement_id: [u8; 32],
        replacement_vsize: i32,
        replacement_fee: i64,
        replaced_by_tx: bool,
    },
    MempoolRejected {
        txid: [u8; 32],
        reason: &'static str,
    },
    BlockConnected {
        hash: [u8; 32],
        height: i32,
        transactions: u64,
        inputs: i32,
        sigops: i64,
        connection_time_ns: i64,
    },
    AddrmanAttemptAdd {
        inserted: bool,
        bucket: i32,
        bucket_pos: i32,
        addr: String,
        addr_as: u32,
        source: String,
        source_as: u32,
    },
    AddrmanMoveToGood {
        bucket: i32,
        bucket_pos: i32,
        addr: String,
        addr_as: u32,
        source: String,
        source_as: u32,
    },
}

pub const CONN_TYPES: [&str; 7] =
    ["inbound", "outbound-full-relay", "block-relay-only", "feeler", "manual", "addr-fetch", "private-broadcast"];

const REMOVAL_REASONS: [&str; 6] = ["expiry", "sizelimit", "reorg", "block", "conflict", "replaced"];

const REJECT_REASONS: [&str; 6] = [
    "min relay fee not met",
    "mempool min fee not met",
    "txn-mempool-conflict",
    "bad-txns-inputs-missingorspent",
    "dust",
    // The longest form in master: 35 + 80 + 1 = 116 characters.
    "mempool-script-verify-flag-failed (Script failed an OP_EQUALVERIFY operation, or an OP_CHECKSIGVERIFY operation xyz)",
];

const MISBEHAVIOURS: [&str; 6] = [
    "header with invalid proof of work",
    "non-continuous headers sequence",
    "invalid compact block/non-matching block transactions",
    "inv message size = 50001",
    "headers message size = 2001",
    "",
];

/// A message type no Bitcoin Core knows, 12 characters like the longest real ones.
pub const MADE_UP_TYPE: &str = "made-up-type";

/// The P2P message types of the default workload, fired in this order by `seq`: every type
/// the decoder knows (nats-wire.md §5.7.4) except the retired `alert`, then two it does not.
pub const MESSAGE_TYPES: [&str; 37] = [
    "version",
    "verack",
    "sendaddrv2",
    "wtxidrelay",
    "sendheaders",
    "sendcmpct",
    "feefilter",
    "ping",
    "pong",
    "getaddr",
    "addr",
    "addrv2",
    "inv",
    "getdata",
    "notfound",
    "tx",
    "mempool",
    "getheaders",
    "headers",
    "getblocks",
    "block",
    "cmpctblock",
    "getblocktxn",
    "blocktxn",
    "merkleblock",
    "filterload",
    "filteradd",
    "filterclear",
    "getcfilters",
    "cfilter",
    "getcfheaders",
    "cfheaders",
    "getcfcheckpt",
    "cfcheckpt",
    "reject",
    "sendtxrcncl",
    MADE_UP_TYPE,
];

/// The smallest transaction: one input and one output, both scripts empty.
pub const MIN_TX_SIZE: usize = 60;
/// The smallest block: the header, a 1-byte transaction count and one minimal transaction.
pub const MIN_BLOCK_SIZE: usize = 80 + 1 + MIN_TX_SIZE;
/// Bounds the memory a mistyped size can take; far above Bitcoin Core's 4,000,000 bytes.
pub const MAX_MESSAGE_SIZE: usize = 32 << 20;
/// A sized block holds transactions of at most this size, as real blocks hold many.
const MAX_FILLER_TX_SIZE: usize = 100_000;

/// What the message tracepoints fire. The default cycles through [`MESSAGE_TYPES`] by `seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// Fire only this message type: one of [`MESSAGE_TYPES`], or with `garbage` one of the
    /// commands of [`GARBAGE`].
    pub message_type: Option<String>,
    /// Every payload is exactly this many bytes: a block from [`MIN_BLOCK_SIZE`] on, below
    /// that [`MADE_UP_TYPE`]. With `message_type`: a `block`, `tx`, `sendtxrcncl` or
    /// [`MADE_UP_TYPE`] of exactly this size, or an `inv`, `getdata` or `notfound` with as many
    /// items as fit (so up to 35 bytes shorter).
    pub message_size: Option<usize>,
    /// Fire payloads that must fail to decode, cycling through [`GARBAGE`].
    pub garbage: bool,
}

impl Workload {
    /// Why this workload cannot be fired, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.garbage && self.message_size.is_some() {
            return Err("garbage payloads have their own sizes: choose garbage or a message size".into());
        }
        if self.message_size.is_some_and(|n| n > MAX_MESSAGE_SIZE) {
            return Err(format!("a message size is at most {MAX_MESSAGE_SIZE} bytes"));
        }
        let Some(name) = self.message_type.as_deref() else {
            return Ok(());
        };
        if self.garbage {
            if GARBAGE.iter().any(|(command, _)| *command == name) {
                return Ok(());
            }
            let mut commands: Vec<&str> = GARBAGE.iter().map(|(command, _)| *command).collect();
            commands.dedup();
            return Err(format!("no garbage payload for {name:?}; there is one for {}", commands.join(", ")));
        }
        let Some(msg_type) = known_type(name) else {
            return Err(format!("unknown message type {name:?}; known: {}", MESSAGE_TYPES.join(", ")));
        };
        match (msg_type, self.message_size) {
            (_, None) => Ok(()),
            ("block", Some(n)) if n < MIN_BLOCK_SIZE => Err(format!("a block takes at least {MIN_BLOCK_SIZE} bytes")),
            ("tx", Some(n)) if n < MIN_TX_SIZE => Err(format!("a transaction takes at least {MIN_TX_SIZE} bytes")),
            ("inv" | "getdata" | "notfound", Some(0)) => Err("an inventory takes at least 1 byte".into()),
            ("block" | "tx" | "inv" | "getdata" | "notfound" | "sendtxrcncl" | MADE_UP_TYPE, Some(_)) => Ok(()),
            (other, Some(_)) => Err(format!(
                "a message size applies to block, tx, inv, getdata, notfound, sendtxrcncl and {MADE_UP_TYPE}, not {other}"
            )),
        }
    }
}

fn known_type(name: &str) -> Option<&'static str> {
    MESSAGE_TYPES.iter().copied().find(|t| *t == name)
}

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

    fn write(&self, out: &mut Vec<u8>, segwit: bool) {
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
            Message::Tx(tx) => tx.write(&mut out, tx.has_witness()),
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
                    prefilled.tx.write(&mut out, prefilled.tx.has_witness());
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
        out
    }
}

/// Bitcoin's wire primitives, appended to a payload.
trait Put {
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

fn compact_size_len(n: u64) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// How a garbage payload is broken; each must fail to decode (nats-wire.md §5.7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// A valid payload without its last byte (`version`: also without the optional relay
    /// byte, which alone may be missing).
    Truncated,
    Empty,
    /// The item count as a non-minimal CompactSize.
    NonMinimalCount,
    /// A transaction whose segwit flag byte is 2.
    SegwitFlag,
    /// A transaction in segwit form without any witness.
    NoWitness,
    /// A header followed by a non-zero transaction count.
    HeaderTxCount,
    /// Bloom filter flags 3.
    BloomFlags,
    /// Reject code 0x02, which is none.
    RejectCode,
    /// A `reject` without its hash.
    MissingHash,
    /// A string that is not UTF-8 (user agent, reject reason).
    NotUtf8,
    /// An addrv2 entry of this network id, one byte longer than the network's length.
    AddrLength(u8),
    /// An addrv2 entry of an unknown network with 513 bytes.
    AddrTooLong,
    /// An addrv2 CJDNS entry outside fc00::/8.
    CjdnsPrefix,
    /// An addrv2 IPv6 entry with the OnionCat prefix.
    OnionCatIpv6,
    /// An addrv2 IPv6 entry that is IPv4-mapped.
    MappedIpv6,
    /// A prefilled transaction index above 65,535.
    IndexTooLarge,
    /// 62,501 `getblocktxn` indexes (only the count is sent).
    TooManyIndexes,
    /// `getblocktxn` indexes whose sum overflows u64.
    IndexOverflow,
}

/// Every garbage payload the simulator fires with [`Workload::garbage`], in firing order:
/// each command whose decoder can fail, with each way it can.
pub const GARBAGE: [(&str, Flaw); 51] = [
    ("version", Flaw::Truncated),
    ("version", Flaw::NotUtf8),
    ("addr", Flaw::Truncated),
    ("addrv2", Flaw::Truncated),
    ("addrv2", Flaw::AddrLength(1)),
    ("addrv2", Flaw::AddrLength(2)),
    ("addrv2", Flaw::AddrLength(3)),
    ("addrv2", Flaw::AddrLength(4)),
    ("addrv2", Flaw::AddrLength(5)),
    ("addrv2", Flaw::AddrLength(6)),
    ("addrv2", Flaw::AddrTooLong),
    ("addrv2", Flaw::CjdnsPrefix),
    ("addrv2", Flaw::OnionCatIpv6),
    ("addrv2", Flaw::MappedIpv6),
    ("inv", Flaw::Truncated),
    ("inv", Flaw::NonMinimalCount),
    ("getdata", Flaw::Truncated),
    ("notfound", Flaw::Truncated),
    ("getheaders", Flaw::Truncated),
    ("getblocks", Flaw::Truncated),
    ("tx", Flaw::Truncated),
    ("tx", Flaw::SegwitFlag),
    ("tx", Flaw::NoWitness),
    ("block", Flaw::Truncated),
    ("headers", Flaw::Truncated),
    ("headers", Flaw::HeaderTxCount),
    ("ping", Flaw::Truncated),
    ("pong", Flaw::Truncated),
    ("pong", Flaw::Empty),
    ("merkleblock", Flaw::Truncated),
    ("filterload", Flaw::Truncated),
    ("filterload", Flaw::BloomFlags),
    ("filteradd", Flaw::Truncated),
    ("getcfilters", Flaw::Truncated),
    ("cfilter", Flaw::Truncated),
    ("getcfheaders", Flaw::Truncated),
    ("cfheaders", Flaw::Truncated),
    ("getcfcheckpt", Flaw::Truncated),
    ("cfcheckpt", Flaw::Truncated),
    ("reject", Flaw::RejectCode),
    ("reject", Flaw::MissingHash),
    ("reject", Flaw::NotUtf8),
    ("alert", Flaw::Truncated),
    ("feefilter", Flaw::Truncated),
    ("sendcmpct", Flaw::Truncated),
    ("cmpctblock", Flaw::Truncated),
    ("cmpctblock", Flaw::IndexTooLarge),
    ("getblocktxn", Flaw::Truncated),
    ("getblocktxn", Flaw::TooManyIndexes),
    ("getblocktxn", Flaw::IndexOverflow),
    ("blocktxn", Flaw::Truncated),
];

/// SplitMix64: tiny, fast, and good enough to spread test values.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, tp: Tracepoint, seq: u64) -> Self {
        let mut rng = Rng(seed ^ (u64::from(tp.id()) << 56) ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len() as u64) as usize]
    }

    fn hash(&mut self) -> [u8; 32] {
        let mut h = [0u8; 32];
        for chunk in h.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        h
    }

    fn hashes(&mut self, n: u64) -> Vec<Hash> {
        (0..n).map(|_| self.hash()).collect()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// `len` bytes repeating one random word: fast enough for 4 MB blocks.
    fn filler(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = self.next().to_le_bytes().repeat(len.div_ceil(8));
        bytes.truncate(len);
        bytes
    }

    fn base32(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        (0..len).map(|_| ALPHABET[self.below(32) as usize] as char).collect()
    }
}

/// A peer address as Bitcoin Core prints it (`CNode::m_addr_name`), cycling through forms.
fn peer_addr(rng: &mut Rng, seq: u64) -> String {
    match seq % 6 {
        0 => format!(
            "{}.{}.{}.{}:{}",
            rng.below(223) + 1,
            rng.below(256),
            rng.below(256),
            rng.below(256),
            rng.below(65535) + 1
        ),
        1 => format!("[2001:db8:{:x}::{:x}]:8333", rng.below(0xffff), rng.below(0xffff) + 1),
        // Tor v3 with a 5-digit port: the 68-character maximum for numeric addresses.
        2 => format!("{}.onion:{}", rng.base32(56), 10000 + rng.below(55535)),
        3 => format!("{}.b32.i2p:0", rng.base32(52)),
        4 => format!("[fc00::{:x}]:8333", rng.below(0xffff) + 1),
        // Connected by name (-addnode): a 255-byte host name plus port, 261 characters.
        _ => format!("{}.example:18333", "n".repeat(247)),
    }
}

/// The message of firing `seq` under `workload`.
fn message(rng: &mut Rng, seq: u64, workload: &Workload) -> Message {
    if let Err(e) = workload.check() {
        panic!("invalid workload {workload:?}: {e}");
    }
    let only = workload.message_type.as_deref();
    if workload.garbage {
        let cases: Vec<_> = GARBAGE.iter().filter(|(command, _)| only.is_none_or(|t| t == *command)).collect();
        let &(command, flaw) = cases[(seq % cases.len() as u64) as usize];
        return Message::Undecodable { command, flaw, payload: garbage(rng, command, flaw) };
    }
    let only = only.and_then(known_type);
    if let Some(size) = workload.message_size {
        return sized(rng, only, size);
    }
    match only {
        Some(msg_type) => typed(rng, msg_type, seq),
        None => {
            let n = MESSAGE_TYPES.len() as u64;
            typed(rng, MESSAGE_TYPES[(seq % n) as usize], seq / n)
        }
    }
}

/// A message of `msg_type`, the `round`-th of its type: odd rounds take the other form where a
/// type has two (no relay byte, empty ping, empty addrv2, legacy transaction).
fn typed(rng: &mut Rng, msg_type: &'static str, round: u64) -> Message {
    let odd = round % 2 == 1;
    match msg_type {
        "version" => {
            let relay = (!odd).then(|| rng.below(2) == 1);
            Message::Version(version(rng, relay))
        }
        "verack" => Message::Verack,
        "sendaddrv2" => Message::SendAddrV2,
        "wtxidrelay" => Message::WtxidRelay,
        "sendheaders" => Message::SendHeaders,
        "sendcmpct" => Message::SendCmpct { announce: rng.below(2) == 1, version: 1 + rng.below(2) },
        "feefilter" => Message::FeeFilter(rng.below(10_000_000) as i64),
        "ping" if odd => Message::OldPing,
        "ping" => Message::Ping(rng.next()),
        "pong" => Message::Pong(rng.next()),
        "getaddr" => Message::GetAddr,
        "addr" => {
            let n = 6 + rng.below(7);
            Message::Addr((0..n).map(|i| TimedAddr { time: timestamp(rng), addr: net_addr(rng, i) }).collect())
        }
        "addrv2" if odd => Message::EmptyAddrV2,
        "addrv2" => {
            let n = 7 + rng.below(6);
            Message::AddrV2((0..n).map(|i| addr_v2(rng, i)).collect())
        }
        "inv" => {
            let n = 1 + rng.below(60);
            Message::Inv(inventory(rng, n))
        }
        "getdata" => {
            let n = 1 + rng.below(20);
            Message::GetData(inventory(rng, n))
        }
        "notfound" => {
            let n = 1 + rng.below(10);
            Message::NotFound(inventory(rng, n))
        }
        "tx" => Message::Tx(tx(rng, !odd)),
        "mempool" => Message::Mempool,
        "getheaders" => Message::GetHeaders(locator(rng)),
        "headers" => {
            let n = 1 + rng.below(8);
            Message::Headers((0..n).map(|_| header(rng)).collect())
        }
        "getblocks" => Message::GetBlocks(locator(rng)),
        "block" => Message::Block(block(rng)),
        "cmpctblock" => Message::CmpctBlock(compact_block(rng)),
        "getblocktxn" => {
            let block_hash = rng.hash();
            let mut next = rng.below(5);
            let indexes = (0..1 + rng.below(15))
                .map(|_| {
                    let index = next;
                    // Gaps up to 299 reach 3-byte CompactSizes.
                    next += 1 + rng.below(300);
                    index
                })
                .collect();
            Message::GetBlockTxn { block_hash, indexes }
        }
        "blocktxn" => {
            let block_hash = rng.hash();
            let n = 1 + rng.below(3);
            Message::BlockTxn { block_hash, txs: (0..n).map(|i| tx(rng, i % 2 == 0)).collect() }
        }
        "merkleblock" => {
            let header = header(rng);
            let total_txs = 1 + rng.below(5000) as u32;
            let n = 1 + rng.below(10);
            let hashes = rng.hashes(n);
            let flags_len = 1 + rng.below(3) as usize;
            Message::MerkleBlock { header, total_txs, hashes, flags: rng.bytes(flags_len) }
        }
        "filterload" => {
            let len = 1 + rng.below(100) as usize;
            Message::FilterLoad {
                filter: rng.bytes(len),
                hash_funcs: 1 + rng.below(50) as u32,
                tweak: rng.next() as u32,
                flags: rng.below(3) as u8,
            }
        }
        "filteradd" => {
            let len = 1 + rng.below(80) as usize;
            Message::FilterAdd(rng.bytes(len))
        }
        "filterclear" => Message::FilterClear,
        "getcfilters" => Message::GetCFilters(filter_range(rng)),
        "cfilter" => {
            let (filter_type, block_hash) = (rng.below(2) as u8, rng.hash());
            let len = rng.below(200) as usize;
            Message::CFilter { filter_type, block_hash, filter: rng.bytes(len) }
        }
        "getcfheaders" => Message::GetCFHeaders(filter_range(rng)),
        "cfheaders" => {
            let (filter_type, stop_hash, previous_header) = (rng.below(2) as u8, rng.hash(), rng.hash());
            let n = rng.below(20);
            Message::CFHeaders { filter_type, stop_hash, previous_header, hashes: rng.hashes(n) }
        }
        "getcfcheckpt" => Message::GetCFCheckpt { filter_type: rng.below(2) as u8, stop_hash: rng.hash() },
        "cfcheckpt" => {
            let (filter_type, stop_hash) = (rng.below(2) as u8, rng.hash());
            let n = rng.below(20);
            Message::CFCheckpt { filter_type, stop_hash, headers: rng.hashes(n) }
        }
        "reject" => Message::Reject {
            message: rng.pick(&["tx", "block", "version", "addrv2"]).into(),
            code: rng.pick(&[0x01, 0x10, 0x11, 0x12, 0x40, 0x41, 0x42, 0x43]),
            reason: rng
                .pick(&["bad-txns-inputs-missingorspent", "dust", "mempool min fee not met", "duplicate", ""])
                .into(),
            hash: rng.hash(),
        },
        "sendtxrcncl" => {
            let mut payload = 1u32.to_le_bytes().to_vec();
            payload.extend_from_slice(&rng.next().to_le_bytes());
            Message::Unknown { command: "sendtxrcncl", payload }
        }
        MADE_UP_TYPE => {
            let len = rng.below(65) as usize;
            Message::Unknown { command: MADE_UP_TYPE, payload: rng.bytes(len) }
        }
        other => unreachable!("{other} is not in MESSAGE_TYPES"),
    }
}

/// A message of exactly `size` bytes (at most that for inventories); `check` admitted the type.
fn sized(rng: &mut Rng, msg_type: Option<&'static str>, size: usize) -> Message {
    match msg_type {
        None if size < MIN_BLOCK_SIZE => Message::Unknown { command: MADE_UP_TYPE, payload: rng.filler(size) },
        None | Some("block") => Message::Block(sized_block(rng, size)),
        Some("tx") => Message::Tx(filler_tx(rng, size, false)),
        Some(msg_type @ ("inv" | "getdata" | "notfound")) => {
            let mut n = (size / 36) as u64;
            while compact_size_len(n) + 36 * n as usize > size {
                n -= 1;
            }
            let items = inventory(rng, n);
            match msg_type {
                "inv" => Message::Inv(items),
                "getdata" => Message::GetData(items),
                _ => Message::NotFound(items),
            }
        }
        Some(command) => Message::Unknown { command, payload: rng.filler(size) },
    }
}

/// A block of exactly `size` (≥ [`MIN_BLOCK_SIZE`]) bytes: a coinbase and other one-output
/// transactions of at most [`MAX_FILLER_TX_SIZE`] bytes, sharing the room evenly.
fn sized_block(rng: &mut Rng, size: usize) -> Block {
    // The count's own CompactSize takes room, which may call for one more transaction.
    let mut count = 1;
    let room = loop {
        let room = size - 80 - compact_size_len(count as u64);
        let needed = room.div_ceil(MAX_FILLER_TX_SIZE);
        if needed <= count {
            break room;
        }
        count = needed;
    };
    let header = header(rng);
    let txs = (0..count).map(|i| filler_tx(rng, room / count + usize::from(i < room % count), i == 0)).collect();
    Block { header, txs }
}

/// A transaction of exactly `size` (≥ [`MIN_TX_SIZE`]) bytes: one input, one output whose
/// script takes the rest.
fn filler_tx(rng: &mut Rng, size: usize, coinbase: bool) -> Tx {
    // The script and its CompactSize prefix take `size - 59 - sig_len` bytes. No script fits
    // two lengths at each prefix-width step (254 and 255, 65,539 and 65,540, ...), so a 0-2
    // byte script_sig moves the rest off them.
    let (sig_len, script_len) = (0..=2)
        .find_map(|sig_len| {
            let room = size.checked_sub(MIN_TX_SIZE - 1 + sig_len)?;
            [1, 3, 5, 9]
                .into_iter()
                .find_map(|width| room.checked_sub(width).filter(|len| compact_size_len(*len as u64) == width))
                .map(|script_len| (sig_len, script_len))
        })
        .expect("one of three consecutive lengths fits a script");
    let (prevout, vout) = if coinbase { ([0; 32], u32::MAX) } else { (rng.hash(), rng.below(4) as u32) };
    Tx {
        version: 2,
        inputs: vec![TxIn { prevout, vout, script_sig: rng.bytes(sig_len), sequence: u32::MAX, witness: Vec::new() }],
        outputs: vec![TxOut { value: rng.below(5_000_000_000) as i64, script_pubkey: rng.filler(script_len) }],
        lock_time: 0,
    }
}

/// An undecodable payload of `command`, broken as `flaw` says.
fn garbage(rng: &mut Rng, command: &'static str, flaw: Flaw) -> Vec<u8> {
    let addrv2_with = |rng: &mut Rng, network: u8, addr: Vec<u8>| {
        let good = addr_v2(rng, 0);
        let bad = AddrV2 { network, addr, ..addr_v2(rng, 1) };
        Message::AddrV2(vec![good, bad]).serialize()
    };
    match (command, flaw) {
        ("version", Flaw::Truncated) => {
            let mut payload = Message::Version(version(rng, None)).serialize();
            payload.pop();
            payload
        }
        ("alert", Flaw::Truncated) => {
            let mut payload = Vec::new();
            payload.var_bytes(&rng.bytes(20));
            payload.pop();
            payload
        }
        (_, Flaw::Truncated) => {
            // Every valid payload of ours is consumed to its last byte, so this one falls short.
            let mut payload = typed(rng, command, 0).serialize();
            payload.pop();
            payload
        }
        (_, Flaw::Empty) => Vec::new(),
        ("version", Flaw::NotUtf8) => {
            let mut v = version(rng, Some(true));
            v.user_agent = "/Satoshi:29.0.0/".into();
            let mut payload = Message::Version(v).serialize();
            // The user agent's first byte: after 80 fixed bytes and its 1-byte length.
            payload[81] = 0xff;
            payload
        }
        (_, Flaw::NonMinimalCount) => {
            let mut payload = Message::Inv(inventory(rng, 3)).serialize();
            payload.splice(..1, [0xfd, 3, 0]);
            payload
        }
        (_, Flaw::SegwitFlag) => {
            let mut payload = tx(rng, true).serialize();
            // After the 4-byte version and the 0x00 marker.
            payload[5] = 2;
            payload
        }
        (_, Flaw::NoWitness) => {
            let mut tx = tx(rng, true);
            tx.inputs.iter_mut().for_each(|input| input.witness.clear());
            let mut payload = Vec::new();
            tx.write(&mut payload, true);
            payload
        }
        (_, Flaw::HeaderTxCount) => {
            let mut payload = Message::Headers(vec![header(rng), header(rng)]).serialize();
            *payload.last_mut().expect("not empty") = 1;
            payload
        }
        (_, Flaw::BloomFlags) => {
            let len = 1 + rng.below(100) as usize;
            Message::FilterLoad { filter: rng.bytes(len), hash_funcs: 11, tweak: rng.next() as u32, flags: 3 }
                .serialize()
        }
        (_, Flaw::RejectCode) => {
            Message::Reject { message: "tx".into(), code: 0x02, reason: "dust".into(), hash: rng.hash() }.serialize()
        }
        (_, Flaw::MissingHash) => {
            let mut payload =
                Message::Reject { message: "version".into(), code: 0x11, reason: "obsolete".into(), hash: [0; 32] }
                    .serialize();
            payload.truncate(payload.len() - 32);
            payload
        }
        (_, Flaw::NotUtf8) => {
            let mut payload = Vec::new();
            payload.var_bytes(b"tx");
            payload.push(0x10);
            payload.var_bytes(b"bad-txns-\xc3\x28");
            payload.extend_from_slice(&rng.hash());
            payload
        }
        (_, Flaw::AddrLength(network)) => {
            let len = match network {
                1 => 4,
                3 => 10,
                2 | 6 => 16,
                _ => 32,
            };
            let addr = rng.bytes(len + 1);
            addrv2_with(rng, network, addr)
        }
        (_, Flaw::AddrTooLong) => {
            let addr = rng.bytes(513);
            addrv2_with(rng, 9, addr)
        }
        (_, Flaw::CjdnsPrefix) => {
            let addr = ipv6(rng, 0xfd00).to_vec();
            addrv2_with(rng, 6, addr)
        }
        (_, Flaw::OnionCatIpv6) => {
            let mut addr = rng.bytes(16);
            addr[..6].copy_from_slice(&ONIONCAT);
            addrv2_with(rng, 2, addr)
        }
        (_, Flaw::MappedIpv6) => {
            let mut addr = vec![0; 16];
            addr[10..12].copy_from_slice(&[0xff, 0xff]);
            addr[12..].copy_from_slice(&rng.bytes(4));
            addrv2_with(rng, 2, addr)
        }
        (_, Flaw::IndexTooLarge) => {
            let mut block = compact_block(rng);
            block.prefilled[0].diff_index = 65_536;
            Message::CmpctBlock(block).serialize()
        }
        (_, Flaw::TooManyIndexes) => {
            let mut payload = rng.hash().to_vec();
            payload.compact_size(62_501);
            payload
        }
        (_, Flaw::IndexOverflow) => {
            let mut payload = rng.hash().to_vec();
            payload.compact_size(2);
            payload.compact_size(u64::MAX);
            payload.compact_size(0);
            payload
        }
    }
}

const ONIONCAT: [u8; 6] = [0xfd, 0x87, 0xd8, 0x7e, 0xeb, 0x43];

fn timestamp(rng: &mut Rng) -> u32 {
    1_700_000_000 + rng.below(10_000_000) as u32
}

/// Service bits whose CompactSize (in addrv2) takes 1, 3, 5 or 9 bytes.
fn services(rng: &mut Rng) -> u64 {
    match rng.below(5) {
        0 => 0,
        1 => 0x409,
        2 => 0x0100_0409,
        3 => 0xc09,
        _ => rng.next(),
    }
}

/// An IPv6 address starting with `first`, the other groups zero half of the time, so the
/// text form has runs of every length to compress.
fn ipv6(rng: &mut Rng, first: u16) -> [u8; 16] {
    let mut ip = [0u8; 16];
    ip[..2].copy_from_slice(&first.to_be_bytes());
    for group in ip[2..].chunks_mut(2) {
        if rng.below(2) == 0 {
            group.copy_from_slice(&(rng.next() as u16).to_be_bytes());
        }
    }
    ip
}

/// A CJDNS address: fc00::/8.
fn cjdns(rng: &mut Rng) -> [u8; 16] {
    let first = 0xfc00 | rng.below(256) as u16;
    ipv6(rng, first)
}

/// A v1 address in form `form % 6`, covering each rendering rule (nats-wire.md §5.7.5).
fn net_addr(rng: &mut Rng, form: u64) -> NetAddr {
    let mut ip = [0u8; 16];
    match form % 6 {
        0 => {
            ip[10..12].copy_from_slice(&[0xff, 0xff]);
            ip[12..].copy_from_slice(&rng.bytes(4));
        }
        1 => ip = ipv6(rng, 0x2001),
        2 => {
            ip[..6].copy_from_slice(&ONIONCAT);
            ip[6..].copy_from_slice(&rng.bytes(10));
        }
        // IPv4-compatible, rendered as IPv4 (Q8).
        3 => ip[12..].copy_from_slice(&rng.bytes(4)),
        // CJDNS cannot be told apart in v1.
        4 => ip = cjdns(rng),
        // All zero, as Bitcoin Core's own `version` often sends.
        _ => {}
    }
    NetAddr { services: services(rng), ip, port: rng.below(65536) as u16 }
}

fn any_net_addr(rng: &mut Rng) -> NetAddr {
    let form = rng.below(6);
    net_addr(rng, form)
}

/// An addrv2 entry of network `1 + i % 7` (BIP155's six, then an unknown id).
fn addr_v2(rng: &mut Rng, i: u64) -> AddrV2 {
    let (network, addr) = match i % 7 {
        0 => (1, rng.bytes(4)),
        1 => (2, ipv6(rng, 0x2001).to_vec()),
        2 => (3, rng.bytes(10)),
        3 => (4, rng.bytes(32)),
        4 => (5, rng.bytes(32)),
        5 => (6, cjdns(rng).to_vec()),
        _ => {
            let id = rng.pick(&[0, 7, 42, 255]);
            let len = rng.below(21) as usize;
            (id, rng.bytes(len))
        }
    };
    AddrV2 { time: timestamp(rng), services: services(rng), network, addr, port: rng.below(65536) as u16 }
}

fn version(rng: &mut Rng, relay: Option<bool>) -> Version {
    Version {
        version: 70016,
        services: services(rng),
        timestamp: i64::from(timestamp(rng)),
        receiver: any_net_addr(rng),
        sender: any_net_addr(rng),
        nonce: rng.next(),
        user_agent: rng
            .pick(&[
                "/Satoshi:29.0.0/",
                "/Satoshi:28.1.0/",
                "",
                "/btcwire:0.5.0/ünïcödé:1.0/",
                // Bitcoin Core's maximum: 256 characters.
                "/Satoshi:29.0.0(aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa)/",
            ])
            .into(),
        start_height: rng.below(1_000_000) as i32,
        relay,
    }
}

/// An inventory of `n` items, one of them MSG_ERROR (type 0), whose hash must be consumed (Q9).
fn inventory(rng: &mut Rng, n: u64) -> Vec<InvItem> {
    const TYPES: [u32; 8] = [1, 2, 4, 5, 0x4000_0001, 0x4000_0002, 3, 0x4000_0003];
    let error_at = rng.below(n.max(1));
    (0..n).map(|i| InvItem { inv_type: if i == error_at { 0 } else { rng.pick(&TYPES) }, hash: rng.hash() }).collect()
}

fn locator(rng: &mut Rng) -> Locator {
    let n = 1 + rng.below(20);
    let hashes = rng.hashes(n);
    // Zero: "as many as you have".
    let stop_hash = if rng.below(2) == 0 { [0; 32] } else { rng.hash() };
    Locator { version: 70016, hashes, stop_hash }
}

fn filter_range(rng: &mut Rng) -> FilterRange {
    FilterRange { filter_type: rng.below(2) as u8, start_height: rng.below(1_000_000) as u32, stop_hash: rng.hash() }
}

fn header(rng: &mut Rng) -> Header {
    Header {
        // Mostly BIP9 versions; sometimes any i32 a peer may send, negative ones included.
        version: if rng.below(4) == 0 { rng.next() as i32 } else { 0x2000_0000 | rng.below(1 << 13) as i32 },
        prev_block: rng.hash(),
        merkle_root: rng.hash(),
        time: timestamp(rng),
        bits: 0x1702_0000 | rng.below(0x1_0000) as u32,
        nonce: rng.next() as u32,
    }
}

fn script_pubkey(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        // P2WPKH, P2TR, P2PKH, OP_RETURN
        0 => [&[0x00, 0x14][..], &rng.bytes(20)].concat(),
        1 => [&[0x51, 0x20][..], &rng.bytes(32)].concat(),
        2 => [&[0x76, 0xa9, 0x14][..], &rng.bytes(20), &[0x88, 0xac]].concat(),
        _ => {
            let len = rng.below(41) as usize;
            [&[0x6a, len as u8][..], &rng.bytes(len)].concat()
        }
    }
}

/// A payment of 1-3 inputs and 1-3 outputs; `segwit` spends carry witnesses (the first input
/// always: segwit form with no witness at all is undecodable).
fn tx(rng: &mut Rng, segwit: bool) -> Tx {
    let inputs = (0..1 + rng.below(3))
        .map(|i| {
            let (prevout, vout) = (rng.hash(), rng.below(8) as u32);
            // Native segwit spends have an empty script_sig, legacy ones a signature and key.
            let script_sig_len = if segwit { 0 } else { 106 + rng.below(2) as usize };
            let script_sig = rng.bytes(script_sig_len);
            let sequence = rng.pick(&[u32::MAX, 0xffff_fffd, 0]);
            let witness = if segwit && (i == 0 || rng.below(2) == 0) {
                let signature_len = 71 + rng.below(3) as usize;
                vec![rng.bytes(signature_len), rng.bytes(33)]
            } else {
                Vec::new()
            };
            TxIn { prevout, vout, script_sig, sequence, witness }
        })
        .collect();
    let outputs = (0..1 + rng.below(3))
        .map(|_| TxOut { value: rng.below(2_100_000_000_000_000) as i64, script_pubkey: script_pubkey(rng) })
        .collect();
    let lock_time = if rng.below(2) == 0 { 0 } else { 800_000 + rng.below(100_000) as u32 };
    Tx { version: 1 + rng.below(2) as i32, inputs, outputs, lock_time }
}

/// A coinbase; in a segwit block it carries the witness reserved value and commitment.
fn coinbase(rng: &mut Rng, segwit: bool) -> Tx {
    let height = rng.below(1_000_000) as u32;
    let script_sig = [&[0x03][..], &height.to_le_bytes()[..3], &rng.bytes(8)].concat();
    let mut outputs =
        vec![TxOut { value: 312_500_000 + rng.below(50_000_000) as i64, script_pubkey: script_pubkey(rng) }];
    if segwit {
        let commitment = [&[0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed][..], &rng.hash()].concat();
        outputs.push(TxOut { value: 0, script_pubkey: commitment });
    }
    Tx {
        version: 2,
        inputs: vec![TxIn {
            prevout: [0; 32],
            vout: u32::MAX,
            script_sig,
            sequence: u32::MAX,
            witness: if segwit { vec![vec![0; 32]] } else { Vec::new() },
        }],
        outputs,
        lock_time: 0,
    }
}

/// A coinbase and up to three transactions; in a segwit block every other one is segwit.
fn block(rng: &mut Rng) -> Block {
    let header = header(rng);
    let segwit = rng.below(2) == 0;
    let mut txs = vec![coinbase(rng, segwit)];
    for i in 0..rng.below(4) {
        txs.push(tx(rng, segwit && i % 2 == 0));
    }
    Block { header, txs }
}

fn compact_block(rng: &mut Rng) -> CompactBlock {
    let (header, nonce) = (header(rng), rng.next());
    let short_ids = (0..rng.below(30))
        .map(|_| {
            let id = rng.next().to_le_bytes();
            [id[0], id[1], id[2], id[3], id[4], id[5]]
        })
        .collect();
    // The coinbase at index 0, then differential indexes up to 299 (3-byte CompactSizes).
    let mut prefilled = vec![PrefilledTx { diff_index: 0, tx: coinbase(rng, true) }];
    for i in 0..rng.below(3) {
        let diff_index = rng.below(300) as u32;
        prefilled.push(PrefilledTx { diff_index, tx: tx(rng, i % 2 == 0) });
    }
    CompactBlock { header, nonce, short_ids, prefilled }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `--ping-clock` nonces, which a subscriber on
/// the same machine reads to measure latency.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The arguments of firing number `seq` of `tp` under `seed` and `workload`.
///
/// # Panics
/// If `workload.check()` fails and `tp` is a message tracepoint.
pub fn args(tp: Tracepoint, seed: u64, seq: u64, workload: &Workload) -> Args {
    let rng = &mut Rng::new(seed, tp, seq);
    let peer_id = rng.below(1 << 40) as i64;
    let network = (seq % 7) as u32;
    let time = 1_700_000_000 + rng.below(10_000_000) as i64;
    use Tracepoint as T;
    match tp {
        T::NetInboundMessage | T::NetOutboundMessage => {
            let message = message(rng, seq, workload);
            Args::Message { peer_id, addr: peer_addr(rng, seq), conn_type: CONN_TYPES[(seq % 7) as usize], message }
        }
        T::NetInboundConnection | T::NetOutboundConnection => Args::Connection {
            peer_id,
            addr: peer_addr(rng, seq),
            conn_type: if tp == T::NetInboundConnection { "inbound" } else { CONN_TYPES[1 + (seq % 6) as usize] },
            network,
            existing_connections: rng.below(125) + 1,
        },
        T::NetClosedConnection | T::NetEvictedInboundConnection => Args::ClosedConnection {
            peer_id,
            addr: peer_addr(rng, seq),
            conn_type: if tp == T::NetEvictedInboundConnection { "inbound" } else { CONN_TYPES[(seq % 7) as usize] },
            network,
            time_established: time,
        },
        T::NetMisbehavingConnection => Args::Misbehaving { peer_id, message: MISBEHAVIOURS[(seq % 6) as usize] },
        T::MempoolAdded => Args::MempoolAdded {
            txid: rng.hash(),
            vsize: rng.below(100_000) as i32 + 1,
            fee: rng.below(10_000_000) as i64,
        },
        T::MempoolRemoved => Args::MempoolRemoved {
            txid: rng.hash(),
            reason: REMOVAL_REASONS[(seq % 6) as usize],
            vsize: rng.below(100_000) as i32 + 1,
            fee: rng.below(10_000_000) as i64,
            entry_time: time as u64,
        },
        T::MempoolReplaced => Args::MempoolReplaced {
            replaced_txid: rng.hash(),
            replaced_vsize: rng.below(100_000) as i32 + 1,
            replaced_fee: rng.below(10_000_000) as i64,
            replaced_entry_time: time as u64,
            replacement_id: rng.hash(),
            replacement_vsize: rng.below(200_000) as i32 + 1,
            // A modified fee: prioritisetransaction can make it negative.
            replacement_fee: rng.below(20_000_000) as i64 - 1_000,
            replaced_by_tx: seq.is_multiple_of(2),
        },
        T::MempoolRejected => Args::MempoolRejected { txid: rng.hash(), reason: REJECT_REASONS[(seq % 6) as usize] },
        T::ValidationBlockConnected => Args::BlockConnected {
            hash: rng.hash(),
            height: rng.below(1_000_000) as i32,
            transactions: rng.below(5_000) + 1,
            inputs: rng.below(20_000) as i32 + 1,
            sigops: rng.below(80_001) as i64,
            connection_time_ns: rng.below(2_000_000_000) as i64,
        },
        T::AddrmanAttemptAdd => Args::AddrmanAttemptAdd {
            inserted: !seq.is_multiple_of(3),
            bucket: rng.below(1024) as i32,
            bucket_pos: rng.below(64) as i32,
            addr: peer_addr(rng, seq),
            addr_as: rng.below(400_000) as u32,
            source: peer_addr(rng, seq + 1),
            source_as: rng.below(400_000) as u32,
        },
        T::AddrmanMoveToGood => Args::AddrmanMoveToGood {
            bucket: rng.below(256) as i32,
            bucket_pos: rng.below(64) as i32,
            addr: peer_addr(rng, seq),
            addr_as: rng.below(400_000) as u32,
            source: peer_addr(rng, seq + 1),
            source_as: rng.below(400_000) as u32,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_of(seq: u64, workload: &Workload) -> Message {
        match args(Tracepoint::NetInboundMessage, 5, seq, workload) {
            Args::Message { message, .. } => message,
            other => panic!("not a message: {other:?}"),
        }
    }

    fn sized(size: usize) -> Workload {
        Workload { message_size: Some(size), ..Workload::default() }
    }

    #[test]
    fn values_are_deterministic_and_differ_by_seq() {
        let workloads = [
            Workload::default(),
            Workload { garbage: true, ..Workload::default() },
            Workload { message_type: Some("tx".into()), ..Workload::default() },
            sized(4096),
        ];
        for workload in &workloads {
            for tp in Tracepoint::ALL {
                assert_eq!(args(*tp, 7, 3, workload), args(*tp, 7, 3, workload));
                assert_ne!(args(*tp, 7, 3, workload), args(*tp, 7, 4, workload));
            }
        }
    }

    #[test]
    fn addresses_reach_the_documented_maxima() {
        let rng = &mut Rng::new(1, Tracepoint::NetInboundConnection, 0);
        assert_eq!(peer_addr(rng, 2).len(), 62 + 1 + 5);
        assert_eq!(peer_addr(rng, 5).len(), 261);
        assert_eq!(REJECT_REASONS[5].len(), 116);
    }

    #[test]
    fn the_default_workload_cycles_through_every_type_in_both_forms() {
        let n = MESSAGE_TYPES.len() as u64;
        let messages: Vec<Message> = (0..2 * n).map(|seq| message_of(seq, &Workload::default())).collect();
        for (seq, message) in messages.iter().enumerate() {
            assert_eq!(message.command(), MESSAGE_TYPES[seq % n as usize], "#{seq}");
        }
        let has = |f: fn(&Message) -> bool| messages.iter().any(f);
        assert!(has(|m| matches!(m, Message::OldPing)) && has(|m| matches!(m, Message::Ping(_))));
        assert!(has(|m| matches!(m, Message::EmptyAddrV2)) && has(|m| matches!(m, Message::AddrV2(_))));
        assert!(has(|m| matches!(m, Message::Version(Version { relay: None, .. }))));
        assert!(has(|m| matches!(m, Message::Version(Version { relay: Some(_), .. }))));
        assert!(has(|m| matches!(m, Message::Tx(tx) if tx.has_witness())));
        assert!(has(|m| matches!(m, Message::Tx(tx) if !tx.has_witness())));
        for message in &messages {
            let size = message.serialize().len();
            assert!(size <= 4096, "{} of {size} bytes", message.command());
        }
    }

    #[test]
    fn garbage_cycles_through_every_flaw() {
        let garbage = Workload { garbage: true, ..Workload::default() };
        for (seq, (command, flaw)) in GARBAGE.iter().enumerate() {
            let message = message_of(seq as u64, &garbage);
            assert!(
                matches!(&message, Message::Undecodable { command: c, flaw: f, .. } if c == command && f == flaw),
                "#{seq}: {message:?}"
            );
        }
        let only_tx = Workload { message_type: Some("tx".into()), ..garbage };
        let flaws: Vec<_> = (0..3)
            .map(|seq| match message_of(seq, &only_tx) {
                Message::Undecodable { command: "tx", flaw, .. } => flaw,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(flaws, [Flaw::Truncated, Flaw::SegwitFlag, Flaw::NoWitness]);
    }

    #[test]
    fn message_size_is_exact() {
        for size in [0, 1, 100, 140, 141, 4096, 65536, 1_000_000, 4_000_000] {
            let message = message_of(9, &sized(size));
            assert_eq!(message.serialize().len(), size);
            assert_eq!(message.command(), if size >= MIN_BLOCK_SIZE { "block" } else { MADE_UP_TYPE });
        }
    }

    /// Around every CompactSize width step of a script, and of a block's transaction count.
    #[test]
    fn message_size_is_exact_at_compact_size_boundaries() {
        let sizes = (MIN_BLOCK_SIZE..1_000)
            .chain(65_500..65_800)
            .chain((1..4).flat_map(|k| k * MAX_FILLER_TX_SIZE + 60..k * MAX_FILLER_TX_SIZE + 100))
            .chain([253 * MAX_FILLER_TX_SIZE + 80, 253 * MAX_FILLER_TX_SIZE + 84]);
        for size in sizes {
            let Message::Block(block) = message_of(0, &sized(size)) else { panic!("{size}: not a block") };
            assert!(block.txs.iter().all(|tx| tx.serialize().len() <= MAX_FILLER_TX_SIZE), "{size}");
            assert_eq!(Message::Block(block).serialize().len(), size);
        }
        for size in MIN_TX_SIZE..400 {
            let workload = Workload { message_type: Some("tx".into()), ..sized(size) };
            assert_eq!(message_of(0, &workload).serialize().len(), size);
        }
    }

    #[test]
    fn sized_inventories_hold_as_many_items_as_fit() {
        for size in [1, 36, 37, 100, 9_000, 4_000_000] {
            let workload = Workload { message_type: Some("inv".into()), ..sized(size) };
            let message = message_of(1, &workload);
            let len = message.serialize().len();
            assert!(len <= size && size < len + 36 + 2, "{size}: {len}");
            assert_eq!(message.command(), "inv");
        }
    }

    #[test]
    fn impossible_workloads_are_refused() {
        let with = |message_type: &str, size: Option<usize>, garbage: bool| Workload {
            message_type: Some(message_type.into()),
            message_size: size,
            garbage,
        };
        assert!(with("ping", None, false).check().is_ok());
        assert!(with("alert", None, true).check().is_ok());
        assert!(with("alert", None, false).check().is_err());
        assert!(with("verack", None, true).check().is_err());
        assert!(with("pong", Some(8), false).check().is_err());
        assert!(with("block", Some(MIN_BLOCK_SIZE - 1), false).check().is_err());
        assert!(with("tx", Some(MIN_TX_SIZE), false).check().is_ok());
        assert!(with("inv", Some(0), false).check().is_err());
        assert!(Workload { garbage: true, ..sized(100) }.check().is_err());
        assert!(sized(MAX_MESSAGE_SIZE + 1).check().is_err());
    }
}
