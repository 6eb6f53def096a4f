//! Payloads that must fail to decode: each way a decoder can fail ([`Flaw`]), the commands
//! fired with each ([`GARBAGE`]) and the broken payloads themselves.

use crate::message::{AddrV2, Message, Put};
use crate::rng::{addr_v2, compact_block, header, inventory, ipv6, tx, version, Rng, ONIONCAT};
use crate::workload::typed;

/// How a garbage payload is broken; each must fail to decode (docs/wire-format.md, "Command to variant").
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
///
/// [`Workload::garbage`]: crate::Workload::garbage
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

/// An undecodable payload of `command`, broken as `flaw` says.
pub(crate) fn garbage(rng: &mut Rng, command: &'static str, flaw: Flaw) -> Vec<u8> {
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
