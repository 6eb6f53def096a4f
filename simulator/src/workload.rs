//! What the message tracepoints fire: the [`Workload`] and the choice of the [`Message`] of
//! each firing, by type, by size or as garbage.

use crate::garbage::{garbage, GARBAGE};
use crate::message::{compact_size_len, AddrV2, Block, Message, TimedAddr, Tx, TxIn, TxOut};
use crate::rng::{
    addr_v2, block, compact_block, filter_range, header, inventory, locator, net_addr, timestamp, tx, version, Rng,
};

/// A message type no Bitcoin Core knows, 12 characters like the longest real ones.
pub const MADE_UP_TYPE: &str = "made-up-type";

/// The P2P message types of the default workload, fired in this order by `seq`: every type
/// the decoder knows (docs/wire-format.md, "Command to variant") except the retired `alert`, then two it does not.
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
/// The smallest merkleblock: a header, the transaction count, one hash and one flag byte.
pub const MIN_MERKLEBLOCK_SIZE: usize = 80 + 4 + 1 + 32 + 1 + 1;
/// An inventory item: its type and hash.
const INV_ITEM: usize = 4 + 32;
/// An addrv2 entry of an unknown network with an empty address: time, services 0, network,
/// length 0, port. The most entries, and so events, a payload byte can give.
pub const EMPTY_ADDRV2_ENTRY: usize = 4 + 1 + 1 + 1 + 2;
/// The network id of those entries, which BIP155 does not define.
const UNDEFINED_NETWORK: u8 = 0xff;
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
    /// [`MADE_UP_TYPE`] of exactly this size, an `inv`, `getdata` or `notfound` with as many
    /// items as fit (so up to 35 bytes shorter), or a `merkleblock` whose flag vector takes
    /// what one hash leaves (up to 8 bytes shorter), or an `addrv2` of as many empty
    /// addresses of an unknown network as fit ([`EMPTY_ADDRV2_ENTRY`] bytes each).
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
            ("addrv2", Some(0)) => Err("an addrv2 takes at least 1 byte".into()),
            ("merkleblock", Some(n)) if n < MIN_MERKLEBLOCK_SIZE => {
                Err(format!("a merkleblock takes at least {MIN_MERKLEBLOCK_SIZE} bytes"))
            }
            (
                "block" | "tx" | "inv" | "getdata" | "notfound" | "merkleblock" | "addrv2" | "sendtxrcncl"
                | MADE_UP_TYPE,
                Some(_),
            ) => Ok(()),
            (other, Some(_)) => Err(format!(
                "a message size applies to block, tx, inv, getdata, notfound, merkleblock, addrv2, sendtxrcncl \
                 and {MADE_UP_TYPE}, not {other}"
            )),
        }
    }
}

fn known_type(name: &str) -> Option<&'static str> {
    MESSAGE_TYPES.iter().copied().find(|t| *t == name)
}

/// The message of firing `seq` under `workload`.
pub(crate) fn message(rng: &mut Rng, seq: u64, workload: &Workload) -> Message {
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
pub(crate) fn typed(rng: &mut Rng, msg_type: &'static str, round: u64) -> Message {
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

/// How many entries of `entry_len` bytes, after their CompactSize count, fit in `size` bytes
/// (`check` refuses a size that holds not even the count).
fn entries_that_fit(size: usize, entry_len: usize) -> usize {
    let mut n = size / entry_len;
    while n > 0 && compact_size_len(n as u64) + entry_len * n > size {
        n -= 1;
    }
    n
}

/// A message of exactly `size` bytes (at most that for inventories, merkleblocks and addrv2);
/// `check` admitted the type.
fn sized(rng: &mut Rng, msg_type: Option<&'static str>, size: usize) -> Message {
    match msg_type {
        None if size < MIN_BLOCK_SIZE => Message::Unknown { command: MADE_UP_TYPE, payload: rng.filler(size) },
        None | Some("block") => Message::Block(sized_block(rng, size)),
        Some("tx") => Message::Tx(filler_tx(rng, size, false)),
        Some(msg_type @ ("inv" | "getdata" | "notfound")) => {
            let items = inventory(rng, entries_that_fit(size, INV_ITEM) as u64);
            match msg_type {
                "inv" => Message::Inv(items),
                "getdata" => Message::GetData(items),
                _ => Message::NotFound(items),
            }
        }
        // One hash and a flag vector taking the rest: each flag byte decodes to 8 flags, the
        // densest a peer can make a payload decode (p2p::BUDGET_PER_BYTE in the publisher).
        Some("merkleblock") => {
            // What the header, the count and the hash leave: the flags and their CompactSize.
            let room = size - (MIN_MERKLEBLOCK_SIZE - 2);
            Message::MerkleBlock {
                header: header(rng),
                total_txs: u32::MAX,
                hashes: rng.hashes(1),
                flags: rng.bytes(entries_that_fit(room, 1)),
            }
        }
        // What a peer may send to make its payload decode into the most events: Bitcoin Core
        // fires net:inbound_message for any message up to 4 MB before it refuses more than
        // 1,000 addresses.
        Some("addrv2") => Message::AddrV2(
            (0..entries_that_fit(size, EMPTY_ADDRV2_ENTRY))
                .map(|_| AddrV2 {
                    time: timestamp(rng),
                    services: 0,
                    network: UNDEFINED_NETWORK,
                    addr: Vec::new(),
                    port: rng.below(1 << 16) as u16,
                })
                .collect(),
        ),
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

#[cfg(test)]
mod tests {
    use ipc_protocol::Tracepoint;

    use super::*;
    use crate::garbage::Flaw;
    use crate::message::Version;
    use crate::{args, Args};

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

    /// The count's CompactSize grows from 1 to 3 bytes at 253 entries, and to 5 at 65,536.
    #[test]
    fn entries_that_fit_leave_no_room_for_one_more() {
        let fits = |size: usize, entry_len: usize, n: usize| compact_size_len(n as u64) + entry_len * n <= size;
        for entry_len in [1, EMPTY_ADDRV2_ENTRY, INV_ITEM] {
            let sizes = (1..300).chain(250 * entry_len..260 * entry_len).chain(65_530 * entry_len..65_540 * entry_len);
            for size in sizes.chain([4_000_000]) {
                let n = entries_that_fit(size, entry_len);
                assert!(fits(size, entry_len, n) && !fits(size, entry_len, n + 1), "{size} by {entry_len}: {n}");
            }
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
    fn a_sized_merkleblock_is_all_flags_but_one_hash() {
        for size in [MIN_MERKLEBLOCK_SIZE, 371, 372, 373, 65_660, 4_000_000] {
            let workload = Workload { message_type: Some("merkleblock".into()), ..sized(size) };
            let message = message_of(1, &workload);
            let len = message.serialize().len();
            assert!(len <= size && size < len + 8, "{size}: {len}");
            let Message::MerkleBlock { hashes, flags, .. } = message else { panic!("{size}: not a merkleblock") };
            assert_eq!(hashes.len(), 1);
            assert!(flags.len() + 128 > size, "{size}: {} flag bytes", flags.len());
        }
    }

    #[test]
    fn a_sized_addrv2_holds_as_many_empty_addresses_as_fit() {
        for size in [1, 9, 10, 100, 2_277, 2_278, 4_000_000] {
            let workload = Workload { message_type: Some("addrv2".into()), ..sized(size) };
            let message = message_of(1, &workload);
            let len = message.serialize().len();
            assert!(len <= size && size < len + EMPTY_ADDRV2_ENTRY + 2, "{size}: {len}");
            let Message::AddrV2(entries) = message else { panic!("{size}: not an addrv2") };
            assert!(entries.iter().all(|e| e.network == UNDEFINED_NETWORK && e.addr.is_empty()), "{size}");
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
        assert!(with("addrv2", Some(0), false).check().is_err());
        assert!(with("addrv2", Some(1), false).check().is_ok());
        assert!(with("merkleblock", Some(MIN_MERKLEBLOCK_SIZE - 1), false).check().is_err());
        assert!(with("merkleblock", Some(MIN_MERKLEBLOCK_SIZE), false).check().is_ok());
        assert!(Workload { garbage: true, ..sized(100) }.check().is_err());
        assert!(sized(MAX_MESSAGE_SIZE + 1).check().is_err());
    }
}
