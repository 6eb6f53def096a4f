//! One event of every tracepoint, from its record, rendered both ways; every P2P summary.

use bytemuck::Zeroable;
use ipc_protocol::records::*;
use ipc_protocol::{Record, Tracepoint};

use super::*;
use crate::decode::{decode, EnvelopeVersion};
use crate::proto::bitcoin_primitives::{BlockHeader, InventoryItem, PrefilledTransaction, UnknownAddress, UnknownItem};
use crate::proto::ebpf_extractor::message as m;
use crate::test_records::{connection, message, r_hash, s, H, TS};

const TIME: &str = "2023-11-14T22:13:20.123Z";
/// `H` as RPC shows it.
const H_DISPLAY: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
/// `H` reversed, so shown as 00 01 … 1f.
const R_DISPLAY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn coin(is_coinbase: u8) -> Vec<u8> {
    let r = UtxocacheCoinRecord { txid: H, index: 7, height: 840_000, value: 5_000_000_000, is_coinbase, _pad: [0; 7] };
    bytemuck::bytes_of(&r).to_vec()
}

/// A record of `tp` and its readable line without the time. The match has no wildcard: a new
/// tracepoint does not compile until it has a case here.
fn case(tp: Tracepoint) -> (Vec<u8>, String) {
    use Tracepoint as T;
    let (data, line) = match tp {
        T::NetInboundMessage => {
            let mut inv = vec![1, 5, 0, 0, 0];
            inv.extend_from_slice(&H);
            (
                message(7, "[2001:db8::1]:8333", "inbound", "inv", &inv),
                format!("netmsg inv in peer=7 addr=[2001:db8::1]:8333 conn_type=inbound size=37 items=1 wtx=1 first=wtx:{H_DISPLAY}"),
            )
        }
        T::NetOutboundMessage => (
            message(9674439, "209.222.252.40:64809", "block-relay-only", "ping", &[0x92, 0xe4, 0x20, 0x0d, 0x30, 0x21, 0xc2, 0x1b]),
            "netmsg ping out peer=9674439 addr=209.222.252.40:64809 conn_type=block-relay-only size=8 nonce=2000197674768327826".into(),
        ),
        T::NetInboundConnection => (
            connection(7, "127.0.0.1:8333", "inbound", 1, 123),
            "netconn inbound peer=7 addr=127.0.0.1:8333 conn_type=inbound network=ipv4 existing_connections=123".into(),
        ),
        T::NetOutboundConnection => (
            connection(11, "[2001:db8::2]:8333", "feeler", 2, 9),
            "netconn outbound peer=11 addr=[2001:db8::2]:8333 conn_type=feeler network=ipv6 existing_connections=9".into(),
        ),
        T::NetClosedConnection => (
            connection(8, "5.6.7.8:8333", "outbound-full-relay", 1, 1_699_990_000),
            "netconn closed peer=8 addr=5.6.7.8:8333 conn_type=outbound-full-relay network=ipv4 time_established=2023-11-14T19:26:40Z".into(),
        ),
        T::NetEvictedInboundConnection => (
            connection(12, "127.0.0.1:50000", "manual", 0, 1_699_000_000),
            "netconn inbound_evicted peer=12 addr=127.0.0.1:50000 conn_type=unknown network=not_publicly_routable time_established=2023-11-03T08:26:40Z".into(),
        ),
        T::NetMisbehavingConnection => {
            let mut r = MisbehavingRecord::zeroed();
            r.peer_id = 9;
            r.message = s("headers message size = 2001");
            (bytemuck::bytes_of(&r).to_vec(), r#"netconn misbehaving peer=9 message="headers message size = 2001""#.into())
        }
        T::MempoolAdded => {
            let mut r = MempoolAddedRecord::zeroed();
            r.txid = H;
            r.vsize = 453;
            r.fee = 123;
            (bytemuck::bytes_of(&r).to_vec(), format!("mempool added txid={H_DISPLAY} vsize=453 fee=123 sat"))
        }
        T::MempoolRemoved => {
            let mut r = MempoolRemovedRecord::zeroed();
            r.txid = H;
            r.reason = s("sizelimit");
            r.vsize = 141;
            r.fee = 282;
            r.entry_time = 1_699_000_000;
            (
                bytemuck::bytes_of(&r).to_vec(),
                format!(r#"mempool removed txid={H_DISPLAY} reason="sizelimit" vsize=141 fee=282 sat entry_time=2023-11-03T08:26:40Z"#),
            )
        }
        T::MempoolReplaced => {
            let mut r = MempoolReplacedRecord::zeroed();
            r.replaced_txid = H;
            r.replaced_vsize = 141;
            r.replaced_fee = 282;
            r.replaced_entry_time = 1_699_000_000;
            r.replacement_id = r_hash();
            r.replacement_vsize = 150;
            r.replacement_fee = 500;
            r.replaced_by_tx = 1;
            (
                bytemuck::bytes_of(&r).to_vec(),
                format!("mempool replaced txid={H_DISPLAY} vsize=141 fee=282 sat entry_time=2023-11-03T08:26:40Z replacement_txid={R_DISPLAY} replacement_vsize=150 replacement_fee=500 sat"),
            )
        }
        T::MempoolRejected => {
            let mut r = MempoolRejectedRecord::zeroed();
            r.txid = H;
            r.reason = s("min relay fee not met");
            (bytemuck::bytes_of(&r).to_vec(), format!(r#"mempool rejected txid={H_DISPLAY} reason="min relay fee not met""#))
        }
        T::ValidationBlockConnected => {
            let mut r = BlockConnectedRecord::zeroed();
            r.hash = H;
            r.height = 1337;
            r.transactions = 13;
            r.inputs = 3;
            r.sigops = 7;
            r.connection_time_ns = 1_234_567;
            (
                bytemuck::bytes_of(&r).to_vec(),
                format!("validation block_connected hash={H_DISPLAY} height=1337 transactions=13 inputs=3 sigops=7 connection_time=1.234 ms"),
            )
        }
        T::AddrmanAttemptAdd => {
            let mut r = AddrmanNewRecord::zeroed();
            r.inserted = 1;
            r.bucket = 1023;
            r.bucket_pos = 63;
            r.addr = s("5.6.7.8:8333");
            r.addr_as = 3320;
            r.source = s("1.2.3.4");
            (
                bytemuck::bytes_of(&r).to_vec(),
                "peer-observer-ebpf.addrman new inserted=true bucket=1023 bucket_pos=63 addr=5.6.7.8:8333 addr_as=3320 source=1.2.3.4 source_as=0".into(),
            )
        }
        T::AddrmanMoveToGood => {
            let mut r = AddrmanTriedRecord::zeroed();
            r.bucket = 12;
            r.bucket_pos = 5;
            r.addr = s("[2001:db8::1]:8333");
            r.addr_as = 64496;
            r.source = s("9.9.9.9");
            r.source_as = 19281;
            (
                bytemuck::bytes_of(&r).to_vec(),
                "peer-observer-ebpf.addrman tried bucket=12 bucket_pos=5 addr=[2001:db8::1]:8333 addr_as=64496 source=9.9.9.9 source_as=19281".into(),
            )
        }
        T::UtxocacheAdd => (
            coin(1),
            format!("peer-observer-ebpf.utxocache add outpoint={H_DISPLAY}:7 height=840000 value=5000000000 sat coinbase=true"),
        ),
        T::UtxocacheSpent => (
            coin(0),
            format!("peer-observer-ebpf.utxocache spent outpoint={H_DISPLAY}:7 height=840000 value=5000000000 sat coinbase=false"),
        ),
        T::UtxocacheUncache => (
            coin(0),
            format!("peer-observer-ebpf.utxocache uncache outpoint={H_DISPLAY}:7 height=840000 value=5000000000 sat coinbase=false"),
        ),
        T::UtxocacheFlush => {
            let r = UtxocacheFlushRecord {
                duration_us: 1_234_567,
                mode: 3,
                _pad: 0,
                coins_count: 4_000_000,
                coins_mem_usage: 450 << 20,
                for_prune: 1,
                _pad2: [0; 7],
            };
            (
                bytemuck::bytes_of(&r).to_vec(),
                "peer-observer-ebpf.utxocache flush duration_us=1234567 mode=3 coins_count=4000000 coins_mem_usage=471859200 bytes for_prune=true".into(),
            )
        }
    };
    (data, line)
}

/// The subject and envelope a record of `tp` is published as.
fn published(tp: Tracepoint, data: &[u8]) -> (&'static str, Envelope) {
    let decoded = decode(&Record { tracepoint: tp, ktime_ns: 0, data }).expect("a valid record");
    (decoded.subject, decoded.into_envelope(TS * 1_000, EnvelopeVersion::Current))
}

#[test]
fn every_tracepoint_reads_as_a_bitcoin_user_reads_it() {
    for &tp in Tracepoint::ALL {
        let (data, line) = case(tp);
        let (subject, envelope) = published(tp, &data);
        assert_eq!(readable(subject, &envelope), format!("{TIME} {line}"), "{tp}");
    }
}

#[test]
fn a_replacement_by_a_package_names_the_package() {
    let mut r = MempoolReplacedRecord::zeroed();
    r.replaced_txid = H;
    r.replacement_id = r_hash();
    let (subject, envelope) = published(Tracepoint::MempoolReplaced, bytemuck::bytes_of(&r));
    assert!(readable(subject, &envelope).contains(&format!(" replacement_package={R_DISPLAY} ")));
}

/// Bitcoin's genesis block: its header and its coinbase transaction, whose ids everybody knows.
const GENESIS_HEADER: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";
const GENESIS_HASH: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
const GENESIS_TX: &str = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";
const GENESIS_TXID: &str = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b";
/// A version message of Bitcoin Core 29.0 (publisher/src/decode/tests.rs, vector 7).
const VERSION: &str = "80110100090c00000000000000f1536500000000000000000000000000000000000000000000ffff09080706208d090c000000000000000000000000000000000000000000000000d20a1feb8ca954ab102f5361746f7368693a32392e302e302fa0bb0d0001";

/// The readable line of a received message, after `size=`.
fn summary(command: &str, payload: &[u8]) -> String {
    let (subject, envelope) =
        published(Tracepoint::NetInboundMessage, &message(3, "1.2.3.4:8333", "inbound", command, payload));
    let line = readable(subject, &envelope);
    let head = format!("{TIME} netmsg {command} in peer=3 addr=1.2.3.4:8333 conn_type=inbound size={} ", payload.len());
    line.strip_prefix(&head).unwrap_or_else(|| panic!("{line:?} starts with {head:?}")).to_owned()
}

#[test]
fn payloads_decoded_from_the_wire_show_their_ids_as_rpc_does() {
    let tx = unhex(GENESIS_TX);
    assert_eq!(summary("tx", &tx), format!("txid={GENESIS_TXID} wtxid={GENESIS_TXID} inputs=1 outputs=1"));
    let mut block = unhex(GENESIS_HEADER);
    block.push(1);
    block.extend_from_slice(&tx);
    assert_eq!(summary("block", &block), format!("hash={GENESIS_HASH} transactions=1"));
    let mut headers = vec![1];
    headers.extend_from_slice(&unhex(GENESIS_HEADER));
    headers.push(0);
    assert_eq!(summary("headers", &headers), format!("headers=1 first={GENESIS_HASH}"));
    assert_eq!(
        summary("version", &unhex(VERSION)),
        r#"version=70016 services=NETWORK|WITNESS|NETWORK_LIMITED|P2P_V2 user_agent="/Satoshi:29.0.0/" start_height=900000 relay=true"#
    );
    // An inventory of an error entry, a block and a transaction: counts by kind, the first hash.
    let mut inv = vec![3, 0, 0, 0, 0];
    inv.extend_from_slice(&[0; 32]);
    for (kind, hash) in [(2u8, H), (1, r_hash())] {
        inv.extend_from_slice(&[kind, 0, 0, 0]);
        inv.extend_from_slice(&hash);
    }
    assert_eq!(summary("getdata", &inv), format!("items=3 transaction=1 block=1 error=1 first=block:{H_DISPLAY}"));
    assert_eq!(summary("pong", &[1, 2, 3]), "unknown bytes=3");
    assert_eq!(summary("sendtxrcncl", &[1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), "unknown bytes=12");
    // Messages without content end at their size.
    let (subject, envelope) =
        published(Tracepoint::NetInboundMessage, &message(3, "1.2.3.4:8333", "inbound", "verack", &[]));
    assert_eq!(
        readable(subject, &envelope),
        format!("{TIME} netmsg verack in peer=3 addr=1.2.3.4:8333 conn_type=inbound size=0")
    );
}

#[test]
fn segwit_transactions_are_counted_past_their_marker() {
    // Version 2, marker and flag, 1 input, 2 outputs, a witness of one item, lock time.
    let mut tx = unhex("020000000001");
    tx.push(1);
    tx.extend_from_slice(&H);
    tx.extend_from_slice(&[0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 2]);
    for _ in 0..2 {
        tx.extend_from_slice(&[0xe8, 0x03, 0, 0, 0, 0, 0, 0, 0]);
    }
    tx.extend_from_slice(&[1, 1, 0x51, 0, 0, 0, 0]);
    assert_eq!(p2p::tx_counts(&tx), Some((1, 2)));
    assert!(summary("tx", &tx).ends_with(" inputs=1 outputs=2"));
    assert_eq!(p2p::tx_counts(&tx[..10]), None);
}

fn header() -> BlockHeader {
    BlockHeader { hash: H.to_vec(), ..Default::default() }
}

fn tx() -> Transaction {
    Transaction { txid: H.to_vec(), wtxid: r_hash().to_vec(), raw: None }
}

fn v2(address: Addr, port: u32) -> Address {
    Address { address: Some(address), port, ..Default::default() }
}

#[test]
fn every_other_payload_has_its_summary() {
    let h = || H.to_vec();
    let torv3 = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion";
    let cases: Vec<(Msg, String)> = vec![
        (Msg::Pong(m::Pong { value: 42 }), "nonce=42".into()),
        (Msg::Oldping(true), "nonce=none".into()),
        (Msg::Inv(Inventory::default()), "items=0".into()),
        (
            Msg::Notfound(Inventory::from_items(&[
                InventoryItem { item: Some(Item::Unknown(UnknownItem { inv_type: 9, hash: h() })) },
                InventoryItem { item: Some(Item::WitnessTransaction(h())) },
                InventoryItem { item: Some(Item::WitnessBlock(h())) },
                InventoryItem { item: Some(Item::CompactBlock(h())) },
            ])),
            format!(
                "items=4 witness_transaction=1 witness_block=1 compact_block=1 unknown=1 first=unknown:{H_DISPLAY}"
            ),
        ),
        (Msg::Tx(m::Tx { tx: tx() }), format!("txid={H_DISPLAY} wtxid={R_DISPLAY}")),
        (Msg::Headers(m::Headers { headers: vec![] }), "headers=0".into()),
        (
            Msg::Addr(m::Addr {
                addresses: vec![v2(Addr::Ipv4("1.2.3.4".into()), 8333), v2(Addr::Ipv6("::1".into()), 1)],
            }),
            "addresses=2 first=1.2.3.4:8333".into(),
        ),
        (
            Msg::Addrv2(m::AddrV2 { addresses: vec![v2(Addr::Cjdns("fc00::1".into()), 8333)] }),
            "addresses=1 first=[fc00::1]:8333".into(),
        ),
        (
            Msg::Addrv2(m::AddrV2 { addresses: vec![v2(Addr::Torv3(torv3.into()), 8333)] }),
            format!("addresses=1 first={torv3}:8333"),
        ),
        (
            Msg::Addrv2(m::AddrV2 {
                addresses: vec![v2(Addr::Unknown(UnknownAddress { id: 9, address: vec![1, 2] }), 8333)],
            }),
            "addresses=1 first=unknown-network-9:8333".into(),
        ),
        (Msg::Emptyaddrv2(true), "addresses=0".into()),
        (Msg::Feefilter(m::FeeFilter { fee: 1000 }), "feerate=1000 sat/kvB".into()),
        (
            Msg::Getheaders(m::GetHeaders { version: 70016, locator_hashes: vec![h(), h()], stop_hash: vec![0; 32] }),
            format!("version=70016 locator_hashes=2 first={H_DISPLAY} stop={}", "0".repeat(64)),
        ),
        (
            Msg::Getblocks(m::GetBlocks { version: 70016, locator_hashes: vec![], stop_hash: r_hash().to_vec() }),
            format!("version=70016 locator_hashes=0 stop={R_DISPLAY}"),
        ),
        (Msg::Sendcompact(m::SendCompact { send_compact: true, version: 2 }), "high_bandwidth=true version=2".into()),
        (
            Msg::Compactblock(m::CompactBlock {
                header: header(),
                nonce: 1,
                short_ids: vec![vec![0; 6]; 3],
                transactions: vec![PrefilledTransaction { diff_index: 0, tx: tx() }],
            }),
            format!("hash={H_DISPLAY} short_ids=3 prefilled=1"),
        ),
        (
            Msg::Getblocktxn(m::GetBlockTxn { block_hash: h(), tx_indexes: vec![0, 1, 7] }),
            format!("block={H_DISPLAY} indexes=3"),
        ),
        (
            Msg::Blocktxn(m::BlockTxn { block_hash: h(), transactions: vec![tx(), tx()] }),
            format!("block={H_DISPLAY} transactions=2"),
        ),
        (
            Msg::Merkleblock(m::MerkleBlock {
                header: header(),
                num_transactions: 7,
                bits: vec![true; 8],
                hashes: vec![h()],
            }),
            format!("hash={H_DISPLAY} transactions=7 hashes=1 flag_bits=8"),
        ),
        (
            Msg::Reject(m::Reject {
                rejected_command: "tx".into(),
                reason: RejectReason::Nonstandard as i32,
                reason_details: "dust".into(),
                hash: h(),
            }),
            format!(r#"rejected_command=tx reason=NONSTANDARD details="dust" hash={H_DISPLAY}"#),
        ),
        (Msg::Alert(m::Alert { alert: vec![0; 5] }), "bytes=5".into()),
        (Msg::Filteradd(m::FilterAdd { filter: vec![0; 20] }), "bytes=20".into()),
        (
            Msg::Filterload(m::FilterLoad {
                filter: vec![0; 36],
                hash_funcs: 11,
                tweak: 5,
                flags: BloomFlags::All as i32,
            }),
            "bytes=36 hash_funcs=11 tweak=5 flags=All".into(),
        ),
        (
            Msg::Getcfilter(m::GetCFilter { filter_type: 0, start_height: 100, stop_hash: h() }),
            format!("filter_type=0 start_height=100 stop={H_DISPLAY}"),
        ),
        (
            Msg::Getcfheaders(m::GetCfHeaders { filter_type: 0, start_height: 800_000, stop_hash: h() }),
            format!("filter_type=0 start_height=800000 stop={H_DISPLAY}"),
        ),
        (
            Msg::Getcfcheckpt(m::GetCfCheckpt { filter_type: 0, stop_hash: h() }),
            format!("filter_type=0 stop={H_DISPLAY}"),
        ),
        (
            Msg::Cfilter(m::CFilter { filter_type: 0, block_hash: h(), filter: vec![0; 9] }),
            format!("filter_type=0 block={H_DISPLAY} bytes=9"),
        ),
        (
            Msg::Cfheaders(m::CfHeaders {
                filter_type: 0,
                stop_hash: h(),
                previous_filter_header: r_hash().to_vec(),
                filter_hashes: vec![h(); 4],
            }),
            format!("filter_type=0 stop={H_DISPLAY} previous_filter_header={R_DISPLAY} filter_hashes=4"),
        ),
        (
            Msg::Cfcheckpt(m::CfCheckpt { filter_type: 0, stop_hash: h(), filter_headers: vec![h(); 2] }),
            format!("filter_type=0 stop={H_DISPLAY} filter_headers=2"),
        ),
    ];
    for (msg, want) in cases {
        assert_eq!(payload(&msg), want, "{msg:?}");
    }
    for msg in [
        Msg::Verack(true),
        Msg::Sendheaders(true),
        Msg::Getaddr(true),
        Msg::Mempool(true),
        Msg::Wtxidrelay(true),
        Msg::Sendaddrv2(true),
        Msg::Filterclear(true),
    ] {
        assert_eq!(payload(&msg), "", "{msg:?}");
    }
}

#[test]
fn strings_from_peers_cannot_break_the_line_or_drive_the_terminal() {
    let mut version = unhex(VERSION);
    // The user agent "/Satoshi:29.0.0/" becomes "/Sat\n\x1b[2Jshi:29/" (same length).
    let at = version.windows(4).position(|w| w == b"/Sat").expect("the user agent");
    version[at..at + 16].copy_from_slice(b"/Sat\n\x1b[2Jshi:29/");
    let data = message(3, "1.2.3.4:8333\r\x1b]0;x\x07", "inbound", "version", &version);
    let (subject, envelope) = published(Tracepoint::NetInboundMessage, &data);
    let line = readable(subject, &envelope);
    assert!(line.contains(r"addr=1.2.3.4:8333\r\u{1b}]0;x\u{7} "), "{line}");
    assert!(line.contains(r#"user_agent="/Sat\n\u{1b}[2Jshi:29/""#), "{line}");
    assert!(!line.chars().any(char::is_control), "{line}");
}

/// A command may hold spaces (Bitcoin Core takes any printable ASCII) and a reject's command
/// any text: neither can add fields to the line, nor hide text behind a bidirectional override.
#[test]
fn strings_from_peers_cannot_forge_fields() {
    let data = message(3, "1.2.3.4:8333", "inbound", "x out peer=1", b"");
    let (subject, envelope) = published(Tracepoint::NetInboundMessage, &data);
    let line = readable(subject, &envelope);
    assert!(line.contains(r" netmsg x\u{20}out\u{20}peer=1 in peer=3 addr=1.2.3.4:8333 "), "{line}");

    let forged = "tx reason=DUST hash=00\u{202e}";
    let payload = [&[forged.len() as u8][..], forged.as_bytes(), &[0x10, 2, b"ab"[0], b"ab"[1]], &[7; 32]].concat();
    let data = message(3, "1.2.3.4:8333", "inbound", "reject", &payload);
    let (subject, envelope) = published(Tracepoint::NetInboundMessage, &data);
    let line = readable(subject, &envelope);
    assert!(line.contains(r"rejected_command=tx\u{20}reason=DUST\u{20}hash=00\u{202e} reason="), "{line}");
    assert_eq!(line.matches(" reason=").count(), 1, "{line}");
    assert!(!line.contains('\u{202e}'), "{line}");
}

/// `--nats-legacy-envelope` read back by `event-tail --nats-legacy-envelope`: the same lines.
#[test]
fn the_legacy_envelope_reads_as_the_current_one() {
    for &tp in Tracepoint::ALL {
        let (data, _) = case(tp);
        let envelope = |version| {
            let decoded = decode(&Record { tracepoint: tp, ktime_ns: 0, data: &data }).expect("a valid record");
            (decoded.subject, decoded.into_envelope(TS * 1_000 + 999, version))
        };
        let ((subject, current), (_, legacy)) = (envelope(EnvelopeVersion::Current), envelope(EnvelopeVersion::Legacy));
        assert_eq!(readable(subject, &legacy), readable(subject, &current), "{tp}");
        assert_eq!(matches!(legacy, Envelope::Legacy(_)), tp.category() != ipc_protocol::Category::Utxocache, "{tp}");
    }
    // Times from NATS out of any range still give a line.
    let far = Envelope::Legacy(EventMsg { event: None, timestamp: u64::MAX, timestamp_subsec_micros: u32::MAX });
    assert!(readable("netmsg", &far).ends_with("Z netmsg (no event)"));
    assert!(Envelope::decode("netmsg", &[0xff], EnvelopeVersion::Legacy).is_err());
}

#[test]
fn an_envelope_without_an_event_still_gives_a_line() {
    use crate::proto::event::Event;
    let empty = Envelope::PeerObserver(Event { peer_observer_event: None, timestamp: 0 });
    assert_eq!(readable("netmsg", &empty), "1970-01-01T00:00:00.000Z netmsg (no event)");
    let empty = Envelope::Utxocache(utxocache::Event { event: None, timestamp: 999 });
    assert_eq!(
        readable("peer-observer-ebpf.utxocache", &empty),
        "1970-01-01T00:00:00.999Z peer-observer-ebpf.utxocache (no event)"
    );
}

#[test]
fn utc_follows_the_gregorian_calendar() {
    for (secs, want) in [
        (0, "1970-01-01T00:00:00"),
        (951_782_400, "2000-02-29T00:00:00"),
        (1_700_000_000, "2023-11-14T22:13:20"),
        (4_102_444_800, "2100-01-01T00:00:00"),
        (4_107_542_399, "2100-02-28T23:59:59"),
        (4_107_542_400, "2100-03-01T00:00:00"),
        (253_402_300_799, "9999-12-31T23:59:59"),
    ] {
        assert_eq!(utc(secs), want, "{secs}");
    }
    // Any u64 renders, however far off.
    assert!(utc(u64::MAX).starts_with("584554051223-"));
}

#[test]
fn json_is_the_canonical_proto3_mapping_and_decodes_back_to_the_event() {
    for &tp in Tracepoint::ALL {
        let (data, _) = case(tp);
        let (subject, envelope) = published(tp, &data);
        // The same library's parser, from the canonical mapping back to the message.
        let back = from_json(&json(subject, &envelope).expect("a published event")).expect("a canonical event");
        assert_eq!(back, (subject.to_string(), envelope), "{tp}");
    }
    let e = from_json(r#"{"subject":"mempool","event":{"nonsense":1}}"#).expect_err("no such field");
    assert!(e.to_string().starts_with("unknown field `nonsense`"), "{e}");
}

fn json_of(tp: Tracepoint) -> String {
    let (data, _) = case(tp);
    let (subject, envelope) = published(tp, &data);
    json(subject, &envelope).expect("a published event")
}

/// Anyone who may publish on the server can send an inventory whose items do not decode: read
/// from NATS, it gives an error as JSON and says so in a readable line, where `json` panicked.
#[test]
fn an_inventory_from_nats_whose_items_do_not_decode_renders_as_an_error() {
    let (data, _) = case(Tracepoint::NetInboundMessage);
    let (subject, envelope) = published(Tracepoint::NetInboundMessage, &data);
    let mut bytes = Vec::new();
    envelope.encode_to(&mut bytes);
    // The item's hash field, a key then the length 32, gets a wire type that does not exist (7).
    let hash_at = bytes.windows(H.len()).position(|w| w == H).expect("the item's hash");
    assert_eq!(bytes[hash_at - 1], 32);
    bytes[hash_at - 2] |= 7;
    let envelope =
        Envelope::decode(subject, &bytes, EnvelopeVersion::Current).expect("items are decoded as they are rendered");
    let e = json(subject, &envelope).expect_err("an item that does not decode");
    assert!(e.to_string().contains("invalid wire type"), "{e}");
    assert!(readable(subject, &envelope).ends_with(
        " size=37 undecodable inventory: failed to decode Protobuf message: Items.items: invalid wire type value: 7"
    ));
}

/// Anyone who may publish on the server can send an enum value the schema does not name:
/// pbjson's serialisers give an error for it where the proto3 mapping would write the number
/// (event-tail says so and goes on), and a readable line shows the number.
#[test]
fn an_enum_value_from_nats_that_the_schema_does_not_name_renders_as_an_error() {
    use crate::proto::ebpf_extractor::connection::connection_event::Event as C;
    use crate::proto::ebpf_extractor::ebpf::EbpfEvent;
    use crate::proto::event::event::PeerObserverEvent;
    let (data, _) = case(Tracepoint::NetInboundConnection);
    let (subject, mut envelope) = published(Tracepoint::NetInboundConnection, &data);
    let Envelope::PeerObserver(event) = &mut envelope else { panic!("peer-observer's envelope") };
    let Some(PeerObserverEvent::EbpfExtractor(ebpf)) = &mut event.peer_observer_event else { panic!("{event:?}") };
    let Some(EbpfEvent::Connection(connection)) = &mut ebpf.ebpf_event else { panic!("{ebpf:?}") };
    let Some(C::Inbound(inbound)) = &mut connection.event else { panic!("{connection:?}") };
    inbound.conn.conn_type = 99;
    let e = json(subject, &envelope).expect_err("a value without a name");
    assert_eq!(e.to_string(), "Invalid variant 99");
    assert!(readable(subject, &envelope).contains(" conn_type=99 "));
}

#[test]
fn json_has_protobuf_names_base64_bytes_string_64_bit_integers_and_enum_names() {
    const H_BASE64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    assert_eq!(
        json_of(Tracepoint::MempoolAdded),
        format!(
            r#"{{"subject":"mempool","event":{{"timestamp":"1700000000123","ebpf_extractor":{{"mempool":{{"added":{{"txid":"{H_BASE64}","vsize":453,"fee":"123"}}}}}}}}}}"#
        )
    );
    assert_eq!(
        json_of(Tracepoint::NetInboundMessage),
        format!(
            r#"{{"subject":"netmsg","event":{{"timestamp":"1700000000123","ebpf_extractor":{{"message":{{"meta":{{"peer_id":"7","addr":"[2001:db8::1]:8333","conn_type":"Inbound","command":"inv","inbound":true,"size":"37"}},"inv":{{"items":[{{"wtx":"{H_BASE64}"}}]}}}}}}}}}}"#
        )
    );
    assert_eq!(
        json_of(Tracepoint::AddrmanAttemptAdd),
        r#"{"subject":"peer-observer-ebpf.addrman","event":{"timestamp":"1700000000123","ebpf_extractor":{"addrman":{"new":{"inserted":true,"bucket":1023,"bucket_pos":63,"addr":"5.6.7.8:8333","addr_AS":3320,"source":"1.2.3.4","source_AS":0}}}}}"#
    );
    assert_eq!(
        json_of(Tracepoint::UtxocacheAdd),
        format!(
            r#"{{"subject":"peer-observer-ebpf.utxocache","event":{{"timestamp":"1700000000123","add":{{"txid":"{H_BASE64}","index":7,"height":840000,"value":"5000000000","is_coinbase":true}}}}}}"#
        )
    );
}

#[test]
fn envelopes_decode_by_their_subject() {
    for tp in [Tracepoint::MempoolAdded, Tracepoint::UtxocacheFlush] {
        let (data, _) = case(tp);
        let (subject, envelope) = published(tp, &data);
        let mut bytes = Vec::new();
        envelope.encode_to(&mut bytes);
        assert_eq!(Envelope::decode(subject, &bytes, EnvelopeVersion::Current), Ok(envelope.clone()), "{tp}");
        let prefixed = format!("peer-observer.regtest.node1.{subject}");
        assert_eq!(Envelope::decode(&prefixed, &bytes, EnvelopeVersion::Current), Ok(envelope), "{tp} behind a prefix");
    }
    assert!(Envelope::decode("mempool", &[0xff], EnvelopeVersion::Current).is_err());
}
