//! Record bodies as the BPF programs write them (`bpf/src/bpf/records.h`), mirrored in Rust.
//!
//! Both sides must agree byte for byte; `extractor-bpf`'s layout test compares every struct
//! here with the BTF of the compiled BPF object. Strings are fixed NUL-terminated buffers that
//! hold at least one byte more than the published cap, so an over-long string is detectable;
//! a message's address alone follows its record, in the words it takes of such a buffer.

use bytemuck::{Pod, Zeroable};

use crate::Tracepoint;

/// Published cap of a peer or addrman address (docs/wire-format.md, "Whole strings").
pub const ADDR_CAP: usize = 512;
pub const ADDR_BUF: usize = 520;
/// Connection types are at most 19 characters; they are only mapped, never published.
pub const CONN_TYPE_BUF: usize = 32;
/// P2P message types are at most 12 characters (`CMessageHeader::MESSAGE_TYPE_SIZE`).
pub const MSG_TYPE_CAP: usize = 12;
pub const MSG_TYPE_BUF: usize = 16;
/// Published cap of removal, reject and misbehaving reasons (docs/wire-format.md,
/// "Whole strings").
pub const REASON_CAP: usize = 256;
pub const REASON_BUF: usize = 264;
/// While the loader says it polls the rings by itself, a BPF program wakes it at most once per
/// this interval (`bpf/src/bpf/extractor.bpf.c`, `loader/src/main.rs`).
pub const WAKEUP_INTERVAL_NS: u64 = 1_000_000;
/// Largest P2P payload one record carries (4 MiB, as upstream; Bitcoin Core's largest message
/// is 4,000,000 bytes). Larger ones are counted as `payload_too_large`.
pub const MAX_PAYLOAD_CAPTURE: usize = 4_194_304;

/// One field of a record layout, for the C/Rust layout check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub ty: CType,
}

/// A field's type as the C side must declare it, so that the layout check catches a field of
/// the right size but the wrong signedness, or an array of another element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CType {
    Int(CInt),
    Array(CInt, usize),
}

impl CType {
    /// Bytes the field takes.
    pub const fn size(self) -> usize {
        match self {
            CType::Int(int) => int.bytes,
            CType::Array(int, len) => int.bytes * len,
        }
    }
}

/// An integer of `bytes` bytes; a C `char` is text, which records carry as unsigned bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CInt {
    pub bytes: usize,
    pub signed: bool,
}

/// The C type of a record field's Rust type.
pub trait HasCType {
    const C_TYPE: CType;
}

/// The integer types records use.
pub trait IsCInt {
    const C_INT: CInt;
}

macro_rules! c_ints {
    ($($ty:ty => $signed:literal),+) => {
        $(
            impl IsCInt for $ty {
                const C_INT: CInt = CInt { bytes: std::mem::size_of::<$ty>(), signed: $signed };
            }
            impl HasCType for $ty {
                const C_TYPE: CType = CType::Int(<$ty as IsCInt>::C_INT);
            }
        )+
    };
}
c_ints!(u8 => false, u16 => false, u32 => false, u64 => false, i8 => true, i16 => true, i32 => true, i64 => true);

impl<T: IsCInt, const N: usize> HasCType for [T; N] {
    const C_TYPE: CType = CType::Array(T::C_INT, N);
}

/// Name (the C struct tag), size and fields of a record body.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub c_name: &'static str,
    pub size: usize,
    pub fields: &'static [Field],
}

pub trait RecordLayout: Pod {
    const LAYOUT: Layout;
}

macro_rules! record {
    ($(#[$meta:meta])* $name:ident = $c_name:literal { $( $field:ident : $ty:ty, )+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Pod, Zeroable)]
        #[repr(C)]
        pub struct $name {
            $( pub $field: $ty, )+
        }

        impl RecordLayout for $name {
            const LAYOUT: Layout = Layout {
                c_name: $c_name,
                size: std::mem::size_of::<$name>(),
                fields: &[ $( Field {
                    name: stringify!($field),
                    offset: std::mem::offset_of!($name, $field),
                    ty: <$ty as HasCType>::C_TYPE,
                }, )+ ],
            };
        }
    };
}

record! {
    /// `net:inbound_message`, `net:outbound_message`. The peer's address follows the body, in
    /// `addr_room` bytes (NUL-terminated, at most [`ADDR_BUF`]), then the captured payload.
    MessageRecord = "message_record" {
        peer_id: i64,
        msg_size: u64,
        msg_type: [u8; MSG_TYPE_BUF],
        addr_room: u32,
        _pad: u32,
        conn_type: [u8; CONN_TYPE_BUF],
    }
}

record! {
    /// `net:{inbound,outbound,closed,evicted_inbound}_connection`. `value` is
    /// `existing_connections` for inbound/outbound and `time_established` (an `int64`) for
    /// closed/evicted.
    ConnectionRecord = "connection_record" {
        peer_id: i64,
        addr: [u8; ADDR_BUF],
        conn_type: [u8; CONN_TYPE_BUF],
        network: u32,
        _pad: u32,
        value: u64,
    }
}

record! {
    /// `net:misbehaving_connection`.
    MisbehavingRecord = "misbehaving_record" {
        peer_id: i64,
        message: [u8; REASON_BUF],
    }
}

record! {
    /// `mempool:added`.
    MempoolAddedRecord = "mempool_added_record" {
        txid: [u8; 32],
        vsize: i32,
        _pad: u32,
        fee: i64,
    }
}

record! {
    /// `mempool:removed`.
    MempoolRemovedRecord = "mempool_removed_record" {
        txid: [u8; 32],
        vsize: i32,
        _pad: u32,
        fee: i64,
        entry_time: u64,
        reason: [u8; REASON_BUF],
    }
}

record! {
    /// `mempool:replaced`.
    MempoolReplacedRecord = "mempool_replaced_record" {
        replaced_txid: [u8; 32],
        replacement_id: [u8; 32],
        replaced_vsize: i32,
        replacement_vsize: i32,
        replaced_fee: i64,
        replaced_entry_time: u64,
        replacement_fee: i64,
        replaced_by_tx: u8,
        _pad: [u8; 7],
    }
}

record! {
    /// `mempool:rejected`.
    MempoolRejectedRecord = "mempool_rejected_record" {
        txid: [u8; 32],
        reason: [u8; REASON_BUF],
    }
}

record! {
    /// `validation:block_connected`.
    BlockConnectedRecord = "block_connected_record" {
        hash: [u8; 32],
        height: i32,
        inputs: i32,
        transactions: u64,
        sigops: i64,
        connection_time_ns: i64,
    }
}

record! {
    /// `addrman:attempt_add` (out-of-tree tracepoint).
    AddrmanNewRecord = "addrman_new_record" {
        inserted: u8,
        _pad: [u8; 3],
        bucket: i32,
        bucket_pos: i32,
        addr_as: u32,
        source_as: u32,
        _pad2: u32,
        addr: [u8; ADDR_BUF],
        source: [u8; ADDR_BUF],
    }
}

record! {
    /// `addrman:move_to_good` (out-of-tree tracepoint).
    AddrmanTriedRecord = "addrman_tried_record" {
        bucket: i32,
        bucket_pos: i32,
        addr_as: u32,
        source_as: u32,
        addr: [u8; ADDR_BUF],
        source: [u8; ADDR_BUF],
    }
}

record! {
    /// `utxocache:add`, `utxocache:spent`, `utxocache:uncache`.
    UtxocacheCoinRecord = "utxocache_coin_record" {
        txid: [u8; 32],
        index: u32,
        height: u32,
        value: i64,
        is_coinbase: u8,
        _pad: [u8; 7],
    }
}

record! {
    /// `utxocache:flush`.
    UtxocacheFlushRecord = "utxocache_flush_record" {
        duration_us: i64,
        mode: u32,
        _pad: u32,
        coins_count: u64,
        coins_mem_usage: u64,
        for_prune: u8,
        _pad2: [u8; 7],
    }
}

record! {
    /// In front of every record body in a ring. `len` counts the body bytes that follow and
    /// matter: a message's ring reservation can be larger. Only the loader reads it.
    RecordHeader = "record_header" {
        ktime_ns: u64,
        tracepoint: u16,
        _pad: u16,
        len: u32,
    }
}

pub const RECORD_HEADER_LEN: usize = std::mem::size_of::<RecordHeader>();

/// A record as it lies in a BPF ring: its header, split from the body bytes that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingRecord<'a> {
    pub tracepoint: Tracepoint,
    pub ktime_ns: u64,
    /// Where the body lies within the ring record (after the header).
    pub body: std::ops::Range<usize>,
    pub raw: &'a [u8],
}

impl<'a> RingRecord<'a> {
    /// Splits a ring record into header and body; `None` if the header is cut short, names no
    /// tracepoint or claims more bytes than the record holds (a BPF object and loader that
    /// disagree).
    pub fn parse(raw: &'a [u8]) -> Option<Self> {
        let header: RecordHeader = bytemuck::pod_read_unaligned(raw.get(..RECORD_HEADER_LEN)?);
        let tracepoint = Tracepoint::from_id(header.tracepoint)?;
        let end = RECORD_HEADER_LEN.checked_add(header.len as usize)?;
        raw.get(RECORD_HEADER_LEN..end)?;
        Some(RingRecord { tracepoint, ktime_ns: header.ktime_ns, body: RECORD_HEADER_LEN..end, raw })
    }

    pub fn body(&self) -> &'a [u8] {
        &self.raw[self.body.clone()]
    }

    /// A ring record as a BPF program writes it, for tests (feature `testing`).
    #[cfg(any(test, feature = "testing"))]
    pub fn build(tracepoint: Tracepoint, ktime_ns: u64, body: &[u8]) -> Vec<u8> {
        let header = RecordHeader { ktime_ns, tracepoint: tracepoint.id(), _pad: 0, len: body.len() as u32 };
        let mut raw = bytemuck::bytes_of(&header).to_vec();
        raw.extend_from_slice(body);
        raw
    }
}

/// Why the BPF side or the loader could not hand an event on. Indexes the BPF drop-counter
/// map (`enum drop_cause` in C) for the first three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropCause {
    /// The BPF ring buffer had no room.
    RingFull = 0,
    /// `bpf_probe_read_user*` failed on a tracepoint argument.
    ReadFailed = 1,
    /// The P2P payload was larger than one record can carry.
    PayloadTooLarge = 2,
    /// The record was larger than the IPC protocol allows (BPF object and loader disagree).
    IpcTooLarge = 3,
    /// The loader sent the record to a publisher that ended without acknowledging it (a
    /// crash, SIGKILL): it may or may not have been published.
    PublisherLost = 4,
    /// The loader stopped (bitcoind exited, SIGTERM, the idle rule) before a publisher took the
    /// record: none was connected, or it did not read in time.
    LoaderStopped = 5,
}

impl DropCause {
    /// Causes counted in the BPF map, in index order.
    pub const BPF: [DropCause; 3] = [Self::RingFull, Self::ReadFailed, Self::PayloadTooLarge];
    /// Every cause, in index order.
    pub const ALL: [DropCause; 6] = [
        Self::RingFull,
        Self::ReadFailed,
        Self::PayloadTooLarge,
        Self::IpcTooLarge,
        Self::PublisherLost,
        Self::LoaderStopped,
    ];

    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::RingFull),
            1 => Some(Self::ReadFailed),
            2 => Some(Self::PayloadTooLarge),
            3 => Some(Self::IpcTooLarge),
            4 => Some(Self::PublisherLost),
            5 => Some(Self::LoaderStopped),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RingFull => "ring_full",
            Self::ReadFailed => "read_failed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::IpcTooLarge => "ipc_too_large",
            Self::PublisherLost => "publisher_lost",
            Self::LoaderStopped => "loader_stopped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_drop_causes_are_every_one_a_byte_names() {
        let named: Vec<DropCause> = (0..=u8::MAX).filter_map(DropCause::from_u8).collect();
        assert_eq!(named, DropCause::ALL);
        assert_eq!(DropCause::BPF, DropCause::ALL[..3]);
    }

    #[test]
    fn string_buffers_hold_one_byte_past_the_cap_plus_nul() {
        for (cap, buf) in [(ADDR_CAP, ADDR_BUF), (MSG_TYPE_CAP, MSG_TYPE_BUF), (REASON_CAP, REASON_BUF)] {
            assert!(buf >= cap + 2, "cap {cap} buf {buf}");
        }
    }

    #[test]
    fn ring_records_parse_back_and_refuse_a_short_header_an_unknown_id_or_an_overlong_len() {
        let raw = RingRecord::build(Tracepoint::MempoolAdded, 7, b"body");
        let record = RingRecord::parse(&raw).unwrap();
        assert_eq!((record.tracepoint, record.ktime_ns, record.body()), (Tracepoint::MempoolAdded, 7, &b"body"[..]));
        // A reservation larger than the body: the padding is not part of it.
        let padded = [raw.as_slice(), &[0xaa; 4]].concat();
        assert_eq!(RingRecord::parse(&padded).unwrap().body(), b"body");
        assert_eq!(RingRecord::parse(&raw[..RECORD_HEADER_LEN - 1]), None);
        assert_eq!(RingRecord::parse(&raw[..raw.len() - 1]), None);
        let mut unknown = raw.clone();
        unknown[8..10].copy_from_slice(&999u16.to_ne_bytes());
        assert_eq!(RingRecord::parse(&unknown), None);
        let mut overlong = raw;
        overlong[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(RingRecord::parse(&overlong), None);
    }

    #[test]
    fn layouts_have_no_gaps() {
        for layout in Tracepoint::ALL.iter().map(|tp| tp.layout()).chain([&RecordHeader::LAYOUT]) {
            let mut end = 0;
            for f in layout.fields {
                assert_eq!(f.offset, end, "{}.{}", layout.c_name, f.name);
                end = f.offset + f.ty.size();
            }
            assert_eq!(end, layout.size, "{}", layout.c_name);
        }
    }
}
