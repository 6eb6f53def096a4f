//! Deterministic randomness: the [`Rng`] of each firing and the random values built from it
//! (addresses, transactions, blocks, headers, inventories, ...).

use ipc_protocol::Tracepoint;

use crate::message::{
    AddrV2, Block, CompactBlock, FilterRange, Hash, Header, InvItem, Locator, NetAddr, PrefilledTx, Tx, TxIn, TxOut,
    Version,
};

/// SplitMix64: tiny, fast, and good enough to spread test values.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, tp: Tracepoint, seq: u64) -> Self {
        let mut rng = Rng(seed ^ (u64::from(tp.id()) << 56) ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        rng.next();
        rng
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len() as u64) as usize]
    }

    pub(crate) fn hash(&mut self) -> [u8; 32] {
        let mut h = [0u8; 32];
        for chunk in h.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        h
    }

    pub(crate) fn hashes(&mut self, n: u64) -> Vec<Hash> {
        (0..n).map(|_| self.hash()).collect()
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// `len` bytes repeating one random word: fast enough for 4 MB blocks.
    pub(crate) fn filler(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = self.next().to_le_bytes().repeat(len.div_ceil(8));
        bytes.truncate(len);
        bytes
    }

    pub(crate) fn base32(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        (0..len).map(|_| ALPHABET[self.below(32) as usize] as char).collect()
    }
}

pub(crate) const ONIONCAT: [u8; 6] = [0xfd, 0x87, 0xd8, 0x7e, 0xeb, 0x43];

pub(crate) fn timestamp(rng: &mut Rng) -> u32 {
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
pub(crate) fn ipv6(rng: &mut Rng, first: u16) -> [u8; 16] {
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

/// A v1 address in form `form % 6`, covering each rendering rule (docs/wire-format.md, "Addresses").
pub(crate) fn net_addr(rng: &mut Rng, form: u64) -> NetAddr {
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
        // IPv4-compatible, rendered as IPv4 (docs/wire-format.md, "Kept as upstream").
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
pub(crate) fn addr_v2(rng: &mut Rng, i: u64) -> AddrV2 {
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

pub(crate) fn version(rng: &mut Rng, relay: Option<bool>) -> Version {
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

/// An inventory of `n` items, one of them MSG_ERROR (type 0), whose hash must be consumed
/// (docs/wire-format.md, "Inventory error items").
pub(crate) fn inventory(rng: &mut Rng, n: u64) -> Vec<InvItem> {
    const TYPES: [u32; 8] = [1, 2, 4, 5, 0x4000_0001, 0x4000_0002, 3, 0x4000_0003];
    let error_at = rng.below(n.max(1));
    (0..n).map(|i| InvItem { inv_type: if i == error_at { 0 } else { rng.pick(&TYPES) }, hash: rng.hash() }).collect()
}

pub(crate) fn locator(rng: &mut Rng) -> Locator {
    let n = 1 + rng.below(20);
    let hashes = rng.hashes(n);
    // Zero: "as many as you have".
    let stop_hash = if rng.below(2) == 0 { [0; 32] } else { rng.hash() };
    Locator { version: 70016, hashes, stop_hash }
}

pub(crate) fn filter_range(rng: &mut Rng) -> FilterRange {
    FilterRange { filter_type: rng.below(2) as u8, start_height: rng.below(1_000_000) as u32, stop_hash: rng.hash() }
}

pub(crate) fn header(rng: &mut Rng) -> Header {
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
pub(crate) fn tx(rng: &mut Rng, segwit: bool) -> Tx {
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
pub(crate) fn block(rng: &mut Rng) -> Block {
    let header = header(rng);
    let segwit = rng.below(2) == 0;
    let mut txs = vec![coinbase(rng, segwit)];
    for i in 0..rng.below(4) {
        txs.push(tx(rng, segwit && i % 2 == 0));
    }
    Block { header, txs }
}

pub(crate) fn compact_block(rng: &mut Rng) -> CompactBlock {
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
