//! Golden vectors (peer-observer's bytes, and this project's deliberate differences from them:
//! docs/wire-format.md) and malformed records.

use super::*;
use crate::test_records::{connection, message, r_hash, s, H, TS};
use bytemuck::Zeroable;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode(tp: Tracepoint, data: &[u8], ts: u64) -> String {
    let record = Record { tracepoint: tp, ktime_ns: 0, data };
    envelope_hex(decode(&record).expect("valid record"), ts)
}

/// The envelope's bytes for the wall-clock milliseconds `ts`.
fn envelope_hex(decoded: Decoded, ts: u64) -> String {
    hex_in(decoded, ts * 1_000, EnvelopeVersion::Current)
}

/// The bytes of the envelope of `version` for the wall-clock microseconds `ts_us`.
fn hex_in(decoded: Decoded, ts_us: u64, version: EnvelopeVersion) -> String {
    let envelope = decoded.into_envelope(ts_us, version);
    let mut out = Vec::new();
    envelope.encode_to(&mut out);
    assert_eq!(out.len(), envelope.encoded_len());
    hex(&out)
}

/// The peer-observer event of a decoded record.
fn ebpf_event(decoded: Decoded) -> ebpf::ebpf::EbpfEvent {
    match decoded.payload {
        Payload::PeerObserver(ebpf::Ebpf { ebpf_event: Some(event) }) => event,
        other => panic!("not a peer-observer event: {other:?}"),
    }
}

fn removed(reason: &str) -> Vec<u8> {
    let mut r = MempoolRemovedRecord::zeroed();
    r.txid = H;
    r.reason = s(reason);
    r.vsize = 141;
    r.fee = 282;
    r.entry_time = 1_699_000_000;
    bytemuck::bytes_of(&r).to_vec()
}

/// The spec's legacy vector (../shared/spec/nats-wire.md, Appendix A): V1 in
/// `event_msg.EventMsg`, whole seconds and the microseconds of the same instant.
#[test]
fn v1_in_the_legacy_envelope() {
    let data =
        message(9674439, "209.222.252.40:64809", "inbound", "ping", &[0x92, 0xe4, 0x20, 0x0d, 0x30, 0x21, 0xc2, 0x1b]);
    let record = Record { tracepoint: Tracepoint::NetOutboundMessage, ktime_ns: 0, data: &data };
    assert_eq!(
        hex_in(decode(&record).expect("valid record"), 1_700_000_000_123_456, EnvelopeVersion::Legacy),
        "0a340a2708c7bdce0412143230392e3232322e3235322e34303a36343830391801220470696e672800300812090992e4200d3021c21b5080e2cfaa0658c0c407"
    );
    // Every kind of event, in its member of the same number.
    for (tp, data) in [
        (Tracepoint::NetInboundConnection, connection(1, "1.2.3.4:8333", "inbound", 1, 5)),
        (Tracepoint::MempoolRemoved, removed("expiry")),
    ] {
        let record = Record { tracepoint: tp, ktime_ns: 0, data: &data };
        let current = hex_in(decode(&record).expect("valid record"), 1_700_000_000_123_456, EnvelopeVersion::Current);
        let legacy = hex_in(decode(&record).expect("valid record"), 1_700_000_000_123_456, EnvelopeVersion::Legacy);
        // The current envelope wraps the `ebpf` body (key 0a and its length); the legacy one is
        // that body, then seconds (key 50) and microseconds (key 58).
        let body = &current[4..current.find("50fbd095ffbc31").expect("the current timestamp")];
        assert_eq!(legacy, format!("{body}5080e2cfaa0658c0c407"), "{tp}");
    }
}

#[test]
fn v1_outbound_ping() {
    let data =
        message(9674439, "209.222.252.40:64809", "inbound", "ping", &[0x92, 0xe4, 0x20, 0x0d, 0x30, 0x21, 0xc2, 0x1b]);
    assert_eq!(encode(Tracepoint::NetOutboundMessage, &data, TS), "0a360a340a2708c7bdce0412143230392e3232322e3235322e34303a36343830391801220470696e672800300812090992e4200d3021c21b50fbd095ffbc31");
}

#[test]
fn v2_verack() {
    let data = message(7, "127.0.0.1:8333", "outbound-full-relay", "verack", &[]);
    assert_eq!(
        encode(Tracepoint::NetOutboundMessage, &data, TS),
        "0a270a250a200807120e3132372e302e302e313a383333331802220676657261636b2800300080020150fbd095ffbc31"
    );
}

#[test]
fn v3_inv_wtx() {
    let mut payload = vec![1, 5, 0, 0, 0];
    payload.extend_from_slice(&H);
    let data = message(7, "[2001:db8::1]:8333", "inbound", "inv", &payload);
    assert_eq!(encode(Tracepoint::NetInboundMessage, &data, TS), "0a4b0a490a21080712125b323030313a6462383a3a315d3a3833333318012203696e762801302522240a221a20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f50fbd095ffbc31");
}

#[test]
fn v5_oldping_and_v6_unknown_command() {
    let data = message(1, "1.2.3.4:8333", "inbound", "ping", &[]);
    assert_eq!(
        encode(Tracepoint::NetInboundMessage, &data, 1_700_000_000_000),
        "0a230a210a1c0801120c312e322e332e343a383333331801220470696e6728013000c802015080d095ffbc31"
    );
    let payload = [1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let data = message(1, "1.2.3.4:8333", "manual", "sendtxrcncl", &payload);
    assert_eq!(encode(Tracepoint::NetInboundMessage, &data, 1_700_000_000_000), "0a450a430a230801120c312e322e332e343a383333331800220b73656e64747872636e636c2801300cfa011b0a0b73656e64747872636e636c120c0100000001020304050607085080d095ffbc31");
}

#[test]
fn v9_v10_v18_connections() {
    let v9 = connection(7, "127.0.0.1:8333", "inbound", 0, 123);
    assert_eq!(
        encode(Tracepoint::NetInboundConnection, &v9, 1_700_000_000_999),
        "0a1e121c1a1a0a160807120e3132372e302e302e313a3833333318012000107b50e7d795ffbc31"
    );
    let v10 = connection(8, "5.6.7.8:8333", "block-relay-only", 1, 1_699_990_000);
    assert_eq!(
        encode(Tracepoint::NetClosedConnection, &v10, 1_700_000_000_000),
        "0a20121e0a1c0a140808120c352e362e372e383a383333331803200110f093cfaa065080d095ffbc31"
    );
    let v18 = connection(11, "5.6.7.8:8333", "feeler", 1, 9);
    assert_eq!(
        encode(Tracepoint::NetOutboundConnection, &v18, TS),
        "0a1c121a22180a14080b120c352e362e372e383a3833333318042001100950fbd095ffbc31"
    );
}

#[test]
fn v11_misbehaving() {
    let mut r = MisbehavingRecord::zeroed();
    r.peer_id = 9;
    r.message = s("headers message size = 2001");
    assert_eq!(
        encode(Tracepoint::NetMisbehavingConnection, bytemuck::bytes_of(&r), 1_700_000_000_000),
        "0a2312212a1f0809121b68656164657273206d6573736167652073697a65203d20323030315080d095ffbc31"
    );
}

#[test]
fn v12_to_v15_mempool() {
    let mut added = MempoolAddedRecord::zeroed();
    added.txid = H;
    added.vsize = 453;
    added.fee = 123;
    assert_eq!(
        encode(Tracepoint::MempoolAdded, bytemuck::bytes_of(&added), TS),
        "0a2b22290a270a20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f10c503187b50fbd095ffbc31"
    );

    assert_eq!(encode(Tracepoint::MempoolRemoved, &removed("expiry"), TS), "0a3a22381a360a20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f1206657870697279188d01209a0228c0dd92aa0650fbd095ffbc31");

    let mut replaced = MempoolReplacedRecord::zeroed();
    replaced.replaced_txid = H;
    replaced.replaced_vsize = 141;
    replaced.replaced_fee = 282;
    replaced.replaced_entry_time = 1_699_000_000;
    replaced.replacement_id = r_hash();
    replaced.replacement_vsize = 141;
    replaced.replacement_fee = 500;
    replaced.replaced_by_tx = 1;
    assert_eq!(encode(Tracepoint::MempoolReplaced, bytemuck::bytes_of(&replaced), TS), "0a5c225a12580a20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f108d01189a0220c0dd92aa062a201f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100308d0138f403400150fbd095ffbc31");

    let mut rejected = MempoolRejectedRecord::zeroed();
    rejected.txid = H;
    rejected.reason = s("min relay fee not met");
    assert_eq!(encode(Tracepoint::MempoolRejected, bytemuck::bytes_of(&rejected), TS), "0a3d223b22390a20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f12156d696e2072656c617920666565206e6f74206d657450fbd095ffbc31");
}

#[test]
fn v16_block_connected() {
    let mut r = BlockConnectedRecord::zeroed();
    r.hash = H;
    r.height = 1337;
    r.transactions = 13;
    r.inputs = 3;
    r.sigops = 7;
    r.connection_time_ns = 5000;
    assert_eq!(encode(Tracepoint::ValidationBlockConnected, bytemuck::bytes_of(&r), TS), "0a322a300a2e0a20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f10b90a180d2003280730882750fbd095ffbc31");
}

#[test]
fn v17_addrman_new() {
    let mut r = AddrmanNewRecord::zeroed();
    r.inserted = 1;
    r.bucket = 1023;
    r.bucket_pos = 63;
    r.addr = s("5.6.7.8:8333");
    r.source = s("1.2.3.4");
    assert_eq!(
        encode(Tracepoint::AddrmanAttemptAdd, bytemuck::bytes_of(&r), TS),
        "0a261a240a22080110ff07183f220c352e362e372e383a3833333328003207312e322e332e34380050fbd095ffbc31"
    );
}

#[test]
fn v19_getcfheaders_with_its_twelve_character_command() {
    let mut payload = vec![0, 0x00, 0x35, 0x0c, 0x00];
    payload.extend_from_slice(&H);
    let data = message(3, "1.2.3.4:8333", "inbound", "getcfheaders", &payload);
    assert_eq!(encode(Tracepoint::NetInboundMessage, &data, TS), "0a530a510a240803120c312e322e332e343a383333331801220c67657463666865616465727328013025e2012808001080ea301a20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f50fbd095ffbc31");
}

#[test]
fn v21_msg_error_consumes_its_hash() {
    let mut payload = vec![2, 0, 0, 0, 0];
    payload.extend_from_slice(&H);
    payload.extend_from_slice(&[1, 0, 0, 0]);
    payload.extend_from_slice(&r_hash());
    let data = message(3, "1.2.3.4:8333", "inbound", "inv", &payload);
    assert_eq!(encode(Tracepoint::NetInboundMessage, &data, TS), "0a490a470a1b0803120c312e322e332e343a3833333318012203696e762801304922280a0278010a220a201f1e1d1c1b1a191817161514131211100f0e0d0c0b0a0908070605040302010050fbd095ffbc31");
}

#[test]
fn v23_undecodable_pong_is_published_as_unknown_and_counted() {
    let data = message(3, "1.2.3.4:8333", "inbound", "pong", &[1, 2, 3, 4]);
    let decoded = decode(&Record { tracepoint: Tracepoint::NetInboundMessage, ktime_ns: 0, data: &data }).unwrap();
    assert_eq!(decoded.anomalies, vec![Anomaly::Undecodable("pong".into())]);
    assert_eq!(envelope_hex(decoded, TS), "0a2f0a2d0a1c0803120c312e322e332e343a3833333318012204706f6e6728013004fa010c0a04706f6e6712040102030450fbd095ffbc31");
}

#[test]
fn v24_sizelimit_is_kept_whole() {
    assert_eq!(encode(Tracepoint::MempoolRemoved, &removed("sizelimit"), TS), "0a3d223b1a390a20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f120973697a656c696d6974188d01209a0228c0dd92aa0650fbd095ffbc31");
}

fn reject(tp: Tracepoint, data: &[u8]) -> RecordError {
    decode(&Record { tracepoint: tp, ktime_ns: 0, data }).expect_err("must be refused")
}

#[test]
fn short_and_long_records_are_refused() {
    let good = removed("expiry");
    assert_eq!(
        reject(Tracepoint::MempoolRemoved, &good[..good.len() - 1]),
        RecordError::WrongSize { expected: good.len(), got: good.len() - 1 }
    );
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        reject(Tracepoint::MempoolRemoved, &long),
        RecordError::WrongSize { expected: good.len(), got: good.len() + 1 }
    );
    assert!(matches!(reject(Tracepoint::NetInboundMessage, &[0u8; 10]), RecordError::WrongSize { .. }));
    // A message whose payload length disagrees with its msg_size.
    let mut msg = message(1, "1.2.3.4:8333", "inbound", "ping", &[0; 8]);
    msg.pop();
    assert!(matches!(reject(Tracepoint::NetInboundMessage, &msg), RecordError::WrongSize { .. }));
}

/// A message's address takes `addr_room` bytes between its record and its payload: a room
/// larger than any address, one that leaves the payload too few bytes or none at all for its
/// address, or one holding no NUL refuses the record. A room of all 520 bytes (an address of
/// 513 to 519 characters) is one.
#[test]
fn a_message_address_must_fit_its_room() {
    let good = message(1, "1.2.3.4:8333", "inbound", "ping", &[0; 8]);
    let head = std::mem::size_of::<MessageRecord>();
    let room_at = std::mem::offset_of!(MessageRecord, addr_room);
    let with_room = |data: &[u8], room: u32| {
        let mut data = data.to_vec();
        data[room_at..room_at + 4].copy_from_slice(&room.to_ne_bytes());
        data
    };
    assert_eq!(
        reject(Tracepoint::NetInboundMessage, &with_room(&good, ADDR_BUF as u32 + 1)),
        RecordError::OutOfRange { field: "addr_room", value: ADDR_BUF as u64 + 1 }
    );
    assert_eq!(
        reject(Tracepoint::NetInboundMessage, &with_room(&good, 24)),
        RecordError::WrongSize { expected: head + 24 + 8, got: good.len() }
    );
    assert_eq!(
        reject(Tracepoint::NetInboundMessage, &good[..head]),
        RecordError::WrongSize { expected: head + 16 + 8, got: head }
    );
    let mut unterminated = good.clone();
    unterminated[head..head + 16].fill(b'1');
    assert_eq!(reject(Tracepoint::NetInboundMessage, &unterminated), RecordError::MissingNul("addr"));
    let mut no_room = with_room(&good, 0);
    no_room.drain(head..head + 16);
    assert_eq!(reject(Tracepoint::NetInboundMessage, &no_room), RecordError::MissingNul("addr"));

    let mut whole_buffer = with_room(&good[..head], ADDR_BUF as u32);
    whole_buffer.extend_from_slice(&s::<ADDR_BUF>("1.2.3.4:8333"));
    whole_buffer.extend_from_slice(&[0; 8]);
    let decoded = |data: &[u8]| {
        let decoded = decode(&Record { tracepoint: Tracepoint::NetInboundMessage, ktime_ns: 0, data }).unwrap();
        format!("{:?}", decoded.payload)
    };
    assert_eq!(decoded(&whole_buffer), decoded(&good));
}

#[test]
fn strings_without_nul_are_refused() {
    let mut r = MempoolRejectedRecord::zeroed();
    r.reason = [b'x'; REASON_BUF];
    assert_eq!(reject(Tracepoint::MempoolRejected, bytemuck::bytes_of(&r)), RecordError::MissingNul("reason"));
    let mut c = ConnectionRecord::zeroed();
    c.addr = s("1.2.3.4:8333");
    c.conn_type = [b'i'; CONN_TYPE_BUF];
    assert_eq!(reject(Tracepoint::NetInboundConnection, bytemuck::bytes_of(&c)), RecordError::MissingNul("conn_type"));
}

#[test]
fn out_of_range_values_are_refused() {
    let data = connection(1, "1.2.3.4:8333", "inbound", 7, 1);
    assert_eq!(reject(Tracepoint::NetInboundConnection, &data), RecordError::OutOfRange { field: "network", value: 7 });
    let mut r = MempoolReplacedRecord::zeroed();
    r.replaced_by_tx = 2;
    assert_eq!(
        reject(Tracepoint::MempoolReplaced, bytemuck::bytes_of(&r)),
        RecordError::OutOfRange { field: "replaced_by_tx", value: 2 }
    );
}

#[test]
fn invalid_utf8_becomes_replacement_characters_and_is_counted() {
    let data = connection(1, "host-\u{0}", "inbound", 0, 1);
    let mut data = data;
    let addr_at = std::mem::offset_of!(ConnectionRecord, addr);
    data[addr_at + 5] = 0xff;
    let decoded = decode(&Record { tracepoint: Tracepoint::NetInboundConnection, ktime_ns: 0, data: &data }).unwrap();
    assert_eq!(decoded.anomalies, vec![Anomaly::InvalidUtf8("addr")]);
    let ebpf::ebpf::EbpfEvent::Connection(c) = ebpf_event(decoded) else { panic!() };
    let Some(connection::connection_event::Event::Inbound(i)) = c.event else { panic!() };
    assert_eq!(i.conn.addr, "host-\u{fffd}");
}

#[test]
fn over_long_strings_are_cut_explicitly() {
    // 511 ASCII bytes, then a 2-byte character straddling the 512-byte cap.
    let long = format!("{}é{}", "a".repeat(511), "b".repeat(6));
    let data = connection(1, &long, "inbound", 0, 1);
    let decoded = decode(&Record { tracepoint: Tracepoint::NetInboundConnection, ktime_ns: 0, data: &data }).unwrap();
    assert_eq!(decoded.anomalies, vec![Anomaly::Truncated("addr")]);
    let ebpf::ebpf::EbpfEvent::Connection(c) = ebpf_event(decoded) else { panic!() };
    let Some(connection::connection_event::Event::Inbound(i)) = c.event else { panic!() };
    assert_eq!(i.conn.addr, format!("{}...", "a".repeat(511)));

    let exact = "c".repeat(ADDR_CAP);
    let data = connection(1, &exact, "inbound", 0, 1);
    let decoded = decode(&Record { tracepoint: Tracepoint::NetInboundConnection, ktime_ns: 0, data: &data }).unwrap();
    assert!(decoded.anomalies.is_empty());
}

#[test]
fn every_connection_type_maps_as_decided() {
    let cases = [
        ("inbound", ConnType::Inbound),
        ("outbound-full-relay", ConnType::OutboundFullRelay),
        ("block-relay-only", ConnType::BlockRelayOnly),
        ("feeler", ConnType::Feeler),
        ("manual", ConnType::Unknown),
        ("addr-fetch", ConnType::Unknown),
        ("private-broadcast", ConnType::Unknown),
    ];
    for (s, expected) in cases {
        assert_eq!(conn_type(s.as_bytes()), expected, "{s}");
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

const P7: &str = "80110100090c00000000000000f1536500000000000000000000000000000000000000000000ffff09080706208d090c000000000000000000000000000000000000000000000000d20a1feb8ca954ab102f5361746f7368693a32392e302e302fa0bb0d0001";

#[test]
fn v4_addrv2_ipv4() {
    let data = message(7, "1.2.3.4:8333", "inbound", "addrv2", &unhex("0118ed5365fd0904010405060708208d"));
    assert_eq!(encode(Tracepoint::NetInboundMessage, &data, TS), "0a3b0a390a1e0807120c312e322e332e343a3833333318012206616464727632280130104a170a150898dacfaa061207352e362e372e38488908508d4150fbd095ffbc31");
}

#[test]
fn v7_version_and_v22_version_without_relay_byte() {
    let data = message(3, "1.2.3.4:8333", "inbound", "version", &unhex(P7));
    assert_eq!(encode(Tracepoint::NetInboundMessage, &data, TS), "0a790a770a1f0803120c312e322e332e343a383333331801220776657273696f6e280130666a540880a3041089181880c49fd50c221008001207392e382e372e364800508d412a1008001207302e302e302e30488918500030d295fcd8ceb1aaaaab013a102f5361746f7368693a32392e302e302f40c0ee6d480150fbd095ffbc31");
    let p7 = unhex(P7);
    let data = message(3, "1.2.3.4:8333", "inbound", "version", &p7[..p7.len() - 1]);
    assert_eq!(encode(Tracepoint::NetInboundMessage, &data, TS), "0a790a770a1f0803120c312e322e332e343a383333331801220776657273696f6e280130656a540880a3041089181880c49fd50c221008001207392e382e372e364800508d412a1008001207302e302e302e30488918500030d295fcd8ceb1aaaaab013a102f5361746f7368693a32392e302e302f40c0ee6d480150fbd095ffbc31");
}

#[test]
fn v8_getblocktxn_indexes_are_absolute() {
    let mut payload = H.to_vec();
    payload.extend_from_slice(&[3, 0, 0, 5]);
    let data = message(3, "1.2.3.4:8333", "outbound-full-relay", "getblocktxn", &payload);
    assert_eq!(encode(Tracepoint::NetInboundMessage, &data, 1_700_000_000_000), "0a520a500a230803120c312e322e332e343a383333331802220b676574626c6f636b74786e280130249a01280a20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f1000100110075080d095ffbc31");
}

#[test]
fn v20_torv3_is_a_valid_v3_name() {
    let payload = unhex("0118ed5365fd0904042079bcc625184b05194975c28b66b66b0469f7f6556fb1ac3189a79b40dda32f1f208d");
    let data = message(3, "1.2.3.4:8333", "inbound", "addrv2", &payload);
    assert_eq!(encode(Tracepoint::NetInboundMessage, &data, TS), "0a720a700a1e0803120c312e322e332e343a38333333180122066164647276322801302c4a4e0a4c0898dacfaa062a3e7067366d6d6a69796a6d637273736c76796b66776e6e746c61727537703573766e367932796d6d6a75366e7562786e6466347073637279642e6f6e696f6e488908508d4150fbd095ffbc31");
}

// The decode budget: p2p::BUDGET_PER_BYTE heap bytes per payload byte, plus p2p::BUDGET_BASE.

use crate::p2p::{PayloadError, BUDGET_BASE, BUDGET_PER_BYTE, MAX_ENCODED_LEN, MAX_ENCODED_PER_BYTE};
use crate::proto::ebpf_extractor::message::message_event::Msg;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting each thread's live heap bytes (as requested) and their peak.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(change: isize) {
    // try_with: a thread's allocations go on while its thread-locals are being torn down.
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + change);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for alloc.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for alloc.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn budget(payload_len: usize) -> usize {
    BUDGET_PER_BYTE * payload_len + BUDGET_BASE
}

/// Decodes without limit; returns the heap bytes the budget was charged and the peak heap
/// bytes really allocated meanwhile (the decoded form and anything transient).
fn measure(command: &str, payload: &[u8]) -> (usize, usize) {
    let unlimited = Cell::new(usize::MAX);
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let decoded = p2p::decode_within(command, payload, &unlimited);
    let heap = PEAK.with(Cell::get) - base;
    if let Err(e) = decoded {
        panic!("{command} must decode without a budget: {e}");
    }
    (usize::MAX - unlimited.get(), heap as usize)
}

fn compact(n: usize) -> Vec<u8> {
    match n {
        0..=0xfc => vec![n as u8],
        0xfd..=0xffff => [&[0xfd][..], &(n as u16).to_le_bytes()].concat(),
        _ => [&[0xfe][..], &(n as u32).to_le_bytes()].concat(),
    }
}

/// A CompactSize count, then `item` that many times.
fn repeated(n: usize, item: &[u8]) -> Vec<u8> {
    [compact(n), item.repeat(n)].concat()
}

/// As many `item`s as fit in `size` bytes (with the count and `before`), after `before`.
fn filled(size: usize, before: &[u8], item: &[u8]) -> Vec<u8> {
    let n = (size - before.len() - 5) / item.len();
    [before, &repeated(n, item)].concat()
}

/// A transaction: `inputs` spends with empty scripts (each with a P2WPKH witness if `segwit`),
/// `outputs` outputs of `script_len`-byte scripts. `tx(0, 0, 0, true)` is the shortest the
/// decoder accepts (12 bytes), `tx(1, 1, 0, false)` the shortest valid one (60 bytes).
fn tx(inputs: usize, outputs: usize, script_len: usize, segwit: bool) -> Vec<u8> {
    let mut tx = 2u32.to_le_bytes().to_vec();
    if segwit {
        tx.extend_from_slice(&[0, 1]);
    }
    tx.extend(repeated(inputs, &[[7; 36].as_slice(), &[0], &u32::MAX.to_le_bytes()].concat()));
    let output = [&5000u64.to_le_bytes()[..], &compact(script_len), &vec![0x51; script_len]].concat();
    tx.extend(repeated(outputs, &output));
    if segwit {
        let witness = [&[2, 72][..], &[0x30; 72], &[33], &[2; 33]].concat();
        tx.extend(witness.repeat(inputs));
    }
    tx.extend_from_slice(&0u32.to_le_bytes());
    tx
}

/// A block of `count` copies of `tx`, then `last` if any.
fn block(count: usize, tx: &[u8], last: Option<&[u8]>) -> Vec<u8> {
    let total = count + usize::from(last.is_some());
    [&[0x20; 80][..], &compact(total), &tx.repeat(count), last.unwrap_or_default()].concat()
}

/// A 2-input, 2-output P2WPKH payment: 372 bytes.
fn payment() -> Vec<u8> {
    tx(2, 2, 22, true)
}

/// A block of exactly 4,000,000 bytes: `count` copies of `tx`, then one transaction whose
/// output script takes the rest.
fn full_block(count: usize, tx_bytes: &[u8]) -> Vec<u8> {
    let rest = 4_000_000 - block(count, tx_bytes, Some(&[])).len();
    // 1 input, 1 output, a script of 253-65,535 bytes (3-byte CompactSize): 62 bytes besides.
    let filler = tx(1, 1, rest - 62, false);
    let payload = block(count, tx_bytes, Some(&filler));
    assert_eq!(payload.len(), 4_000_000);
    payload
}

/// An addrv2 entry: time, 1-byte services, network, address, port.
fn addr_v2(network: u8, address: &[u8]) -> Vec<u8> {
    [&[0; 4][..], &[0, network], &compact(address.len()), address, &[0x20, 0x8d]].concat()
}

const MB: usize = 1_000_000;

/// Worst cases per decoder that allocates per item, and legitimate maxima; the factor
/// (heap bytes charged per payload byte, in hundredths) and whether `decode` takes it. None
/// encodes to more than `MAX_ENCODED_PER_BYTE` bytes per payload byte.
#[test]
fn decoded_size_per_payload_byte_of_every_allocating_decoder() {
    let header = [0x20; 80];
    let merkle_head = [&header[..], &[0; 4]].concat();
    let inv_item = [&1u32.to_le_bytes()[..], &[9; 32]].concat();
    let v1_ipv6 = [&[0; 4][..], &[0; 8], &[0x12; 16], &[0x20, 0x8d]].concat();
    let user_agent = [&[0xfd, 0, 1][..], &[b'a'; 256]].concat();
    let version = [&unhex(P7)[..80], &user_agent, &[0; 5]].concat();
    let tiny = tx(0, 0, 0, true);
    let cases: Vec<(&str, &str, Vec<u8>, usize, bool)> = vec![
        // Attacker-chosen.
        (
            "merkleblock, flags only",
            "merkleblock",
            [&merkle_head[..], &[0], &filled(MB, &[], &[0xff])].concat(),
            799,
            true,
        ),
        ("merkleblock, hashes only", "merkleblock", [filled(MB, &merkle_head, &[3; 32]), vec![0]].concat(), 224, true),
        ("block of 12-byte transactions", "block", filled(MB, &header, &tiny), 1633, false),
        ("blocktxn of 12-byte transactions", "blocktxn", filled(MB, &[4; 32], &tiny), 1633, false),
        (
            "cmpctblock, 13-byte prefilled",
            "cmpctblock",
            filled(MB, &[&header[..], &[0; 8], &[0]].concat(), &[&[0], &tiny[..]].concat()),
            1569,
            false,
        ),
        ("tx, empty inputs", "tx", tx(MB / 41, 0, 0, false), 100, true),
        ("tx, empty outputs", "tx", tx(1, MB / 9, 0, false), 100, true),
        ("inv", "inv", filled(MB, &[], &inv_item), 100, true),
        ("getdata", "getdata", filled(MB, &[], &inv_item), 100, true),
        ("notfound", "notfound", filled(MB, &[], &inv_item), 100, true),
        ("addr, longest IPv6 text", "addr", filled(MB, &[], &v1_ipv6), 426, true),
        ("addrv2, IPv4", "addrv2", filled(MB, &[], &addr_v2(1, &[255; 4])), 615, true),
        ("addrv2, unknown network, 1 byte", "addrv2", filled(MB, &[], &addr_v2(9, &[1])), 649, true),
        ("addrv2, Tor v3", "addrv2", filled(MB, &[], &addr_v2(4, &[1; 32])), 429, true),
        ("headers", "headers", filled(MB, &[], &[&header[..], &[0]].concat()), 286, true),
        ("getheaders", "getheaders", [filled(MB, &[1, 0, 0, 0], &[5; 32]), vec![0; 32]].concat(), 224, true),
        ("getblocks", "getblocks", [filled(MB, &[1, 0, 0, 0], &[5; 32]), vec![0; 32]].concat(), 224, true),
        ("cfheaders", "cfheaders", filled(MB, &[0; 65], &[6; 32]), 224, true),
        ("cfcheckpt", "cfcheckpt", filled(MB, &[0; 33], &[6; 32]), 224, true),
        ("cfilter", "cfilter", filled(MB, &[0; 33], &[1]), 100, true),
        ("filterload", "filterload", [filled(36_000, &[], &[1]), vec![0; 9]].concat(), 100, true),
        ("filteradd", "filteradd", filled(520, &[], &[1]), 102, true),
        ("alert", "alert", filled(MB, &[], &[1]), 100, true),
        ("reject", "reject", [&user_agent[..], &[0x10], &user_agent, &[0; 32]].concat(), 107, true),
        ("version, 256-byte user agent", "version", version, 93, true),
        // Legitimate maxima (Bitcoin Core's own limits).
        ("getblocktxn, 62,500 consecutive", "getblocktxn", [&[4; 32][..], &repeated(62_500, &[0])].concat(), 799, true),
        (
            "cmpctblock, 100,000 short ids",
            "cmpctblock",
            [&header[..], &[0; 8], &repeated(100_000, &[8; 6]), &[0]].concat(),
            766,
            true,
        ),
        ("block of 60-byte transactions", "block", full_block(66_660, &tx(1, 1, 0, false)), 406, true),
        ("block of 2,000 2-in 2-out payments", "block", block(2000, &payment(), None), 149, true),
        ("block of 2-in 2-out payments", "block", full_block(10_700, &payment()), 149, true),
    ];
    println!("{:<36} {:>9} {:>11} {:>7} {:>7} {:>7}", "payload", "bytes", "charged", "factor", "heap", "encoded");
    for (name, command, payload, factor, decodes) in cases {
        let (charged, heap) = measure(command, &payload);
        let len = payload.len();
        let encoded = p2p::decode_within(command, &payload, &Cell::new(usize::MAX)).map(|msg| msg.encoded_len());
        let encoded = encoded.unwrap_or_else(|e| panic!("{name}: {e}"));
        println!(
            "{name:<36} {len:>9} {charged:>11} {:>7.2} {:>7.2} {:>7.2}",
            charged as f64 / len as f64,
            heap as f64 / len as f64,
            encoded as f64 / len as f64
        );
        assert!(heap <= charged, "{name}: {heap} heap bytes, {charged} charged");
        assert!(encoded <= MAX_ENCODED_PER_BYTE * len, "{name}: {encoded} bytes encoded");
        assert_eq!(charged * 100 / len, factor, "{name}");
        assert_eq!(charged <= budget(len), decodes, "{name}");
        match p2p::decode(command, &payload) {
            Ok(_) => assert!(decodes, "{name} must be refused"),
            Err(e) => assert!(!decodes && e == PayloadError::OverBudget, "{name}: {e}"),
        }
    }
}

/// The P2P message a decoded message record carries.
fn p2p_msg(decoded: &Decoded) -> &Msg {
    match &decoded.payload {
        Payload::PeerObserver(ebpf::Ebpf { ebpf_event: Some(ebpf::ebpf::EbpfEvent::Message(event)) }) => {
            event.msg.as_ref().expect("a message event carries its message")
        }
        other => panic!("not a message event: {other:?}"),
    }
}

/// A merkleblock of nothing but flag bytes decodes within the heap budget, but each flag byte
/// encodes to 16 bytes: from about 1 MB on, past what an event may take. Such a payload is
/// published as `unknown`, counted as over the budget, and never encoded decoded.
#[test]
fn a_payload_whose_encoding_would_pass_the_largest_event_is_published_as_unknown() {
    let merkleblock =
        |flags: usize| [&[0x20; 80][..], &[0; 4], &repeated(1, &[3; 32]), &repeated(flags, &[0xa5])].concat();
    let fits = (MAX_ENCODED_LEN - 200) / MAX_ENCODED_PER_BYTE;
    let Ok(Msg::Merkleblock(decoded)) = p2p::decode("merkleblock", &merkleblock(fits)) else {
        panic!("{fits} flag bytes decode")
    };
    assert_eq!(decoded.bits.len(), 8 * fits);
    assert!(
        matches!(p2p::decode("merkleblock", &merkleblock(fits + 13)), Err(PayloadError::OverEncodedLen(n)) if n > MAX_ENCODED_LEN)
    );

    let payload = merkleblock(4 * MB - 200);
    let data = message(3, "1.2.3.4:8333", "inbound", "merkleblock", &payload);
    let decoded = decode(&Record { tracepoint: Tracepoint::NetInboundMessage, ktime_ns: 0, data: &data }).unwrap();
    assert_eq!(decoded.anomalies, vec![Anomaly::OverBudget("merkleblock".into())]);
    assert_eq!(p2p_msg(&decoded), &Msg::Unknown(message::Unknown { command: "merkleblock".into(), payload }));
}

/// A payload that fits the NATS server's `max_payload` whole but not decoded (49,382 headers,
/// 4 MB, encode to 6.3 MB; Bitcoin Core sends at most 2,000) is published undecoded rather
/// than not at all; for a server that takes it, it is decoded.
#[test]
fn a_payload_whose_event_would_pass_the_servers_max_payload_is_published_as_unknown() {
    use crate::sink::RECOMMENDED_MAX_PAYLOAD;
    let payload = filled(4 * MB, &[], &[&[0x20; 80][..], &[0]].concat());
    let data = message(3, "1.2.3.4:8333", "inbound", "headers", &payload);
    let record = Record { tracepoint: Tracepoint::NetInboundMessage, ktime_ns: 0, data: &data };

    let decoded = decode_to_at_most(&record, RECOMMENDED_MAX_PAYLOAD).unwrap();
    assert_eq!(decoded.anomalies, vec![Anomaly::OverMaxPayload("headers".into())]);
    assert_eq!(decoded.anomalies[0].label(), "undecoded_over_max_payload_headers");
    assert_eq!(
        p2p_msg(&decoded),
        &Msg::Unknown(message::Unknown { command: "headers".into(), payload: payload.clone() })
    );
    let event_len = decoded.into_envelope(0, EnvelopeVersion::Current).encoded_len();
    assert!(event_len <= RECOMMENDED_MAX_PAYLOAD, "{event_len}");

    let decoded = decode_to_at_most(&record, 8 << 20).unwrap();
    assert_eq!(decoded.anomalies, []);
    let Msg::Headers(headers) = p2p_msg(&decoded) else { panic!("headers") };
    assert_eq!(headers.headers.len(), 49_382);
}

/// A 4 MB block of one inscription, as mainnet has had, the largest a block's raw bytes get:
/// its event (ids and raw bytes per transaction) fits the recommended `max_payload` decoded.
#[test]
fn a_block_of_one_inscription_fits_the_recommended_max_payload_decoded() {
    use crate::sink::RECOMMENDED_MAX_PAYLOAD;
    let witness_len = 3_999_700;
    let input = [[7; 36].as_slice(), &[0], &[0xff; 4]].concat();
    let mut tx = [&2u32.to_le_bytes()[..], &[0, 1], &repeated(1, &input)].concat();
    tx.extend(repeated(1, &[&330u64.to_le_bytes()[..], &[34], &[0x51; 34]].concat()));
    tx.extend([&[1, 0xfe][..], &(witness_len as u32).to_le_bytes(), &vec![0x6a; witness_len]].concat());
    tx.extend_from_slice(&0u32.to_le_bytes());
    let payload = block(0, &[], Some(&tx));
    assert!(payload.len() <= 4 * MB, "{}", payload.len());
    let data = message(3, "1.2.3.4:8333", "inbound", "block", &payload);
    let record = Record { tracepoint: Tracepoint::NetInboundMessage, ktime_ns: 0, data: &data };
    let decoded = decode_to_at_most(&record, RECOMMENDED_MAX_PAYLOAD).unwrap();
    assert_eq!(decoded.anomalies, []);
    assert!(decoded.into_envelope(0, EnvelopeVersion::Current).encoded_len() <= RECOMMENDED_MAX_PAYLOAD);
}

#[test]
fn the_budget_is_charged_exactly() {
    let payload = block(40, &tx(0, 0, 0, true), Some(&payment()));
    let (charged, _) = measure("block", &payload);
    // Three header hashes, the Vec of 41 transactions, and per transaction two ids and its raw bytes.
    let heap = |bytes: usize| bytes + 16;
    let vec = heap(41 * size_of::<crate::proto::bitcoin_primitives::Transaction>());
    let per_tx = |len| 2 * heap(32) + heap(len);
    assert_eq!(charged, 3 * heap(32) + vec + 40 * per_tx(12) + per_tx(372));
    assert!(
        matches!(p2p::decode_within("block", &payload, &Cell::new(charged)), Ok(Msg::Block(b)) if b.transactions.len() == 41)
    );
    assert_eq!(p2p::decode_within("block", &payload, &Cell::new(charged - 1)), Err(PayloadError::OverBudget));
}

#[test]
fn just_under_the_budget_decodes_and_just_over_is_refused() {
    // A 4,000-byte transaction, then more and more 12-byte ones: each adds 196 charged bytes
    // and 96 of budget.
    let big = tx(1, 1, 3934, false);
    let tiny = tx(0, 0, 0, true);
    let last = (0..)
        .take_while(|n| {
            let payload = block(*n, &tiny, Some(&big));
            p2p::decode("block", &payload).is_ok()
        })
        .last()
        .expect("a lone big transaction decodes");
    assert_eq!(last, 293);
    let under = block(last, &tiny, Some(&big));
    let (charged, _) = measure("block", &under);
    assert!(charged <= budget(under.len()) && budget(under.len()) - charged < 100, "{charged} of {}", under.len());
    let over = block(last + 1, &tiny, Some(&big));
    let (charged, _) = measure("block", &over);
    assert!(charged > budget(over.len()));
    assert_eq!(p2p::decode("block", &over), Err(PayloadError::OverBudget));
}

#[test]
fn over_budget_is_published_as_unknown_and_counted_apart_from_undecodable() {
    let payload = block(MB / 12, &tx(0, 0, 0, true), None);
    let data = message(3, "1.2.3.4:8333", "inbound", "block", &payload);
    let decoded = decode(&Record { tracepoint: Tracepoint::NetInboundMessage, ktime_ns: 0, data: &data }).unwrap();
    assert_eq!(decoded.anomalies, vec![Anomaly::OverBudget("block".into())]);
    assert_eq!(
        p2p_msg(&decoded),
        &Msg::Unknown(message::Unknown { command: "block".into(), payload: payload.clone() })
    );

    let data = message(3, "1.2.3.4:8333", "inbound", "block", &payload[..payload.len() - 1]);
    let decoded = decode(&Record { tracepoint: Tracepoint::NetInboundMessage, ktime_ns: 0, data: &data }).unwrap();
    assert_eq!(decoded.anomalies, vec![Anomaly::Undecodable("block".into())]);
}

fn coin_record(is_coinbase: u8) -> Vec<u8> {
    let record = UtxocacheCoinRecord {
        txid: [0xab; 32],
        index: 7,
        height: 840_000,
        value: 5_000_000_000,
        is_coinbase,
        _pad: [0; 7],
    };
    bytemuck::bytes_of(&record).to_vec()
}

#[test]
fn utxocache_coins_are_this_projects_own_events_with_every_field() {
    use crate::proto::peer_observer_ebpf::utxocache;
    for (tp, tag) in
        [(Tracepoint::UtxocacheAdd, "0a"), (Tracepoint::UtxocacheSpent, "12"), (Tracepoint::UtxocacheUncache, "1a")]
    {
        let data = coin_record(1);
        let decoded = decode(&Record { tracepoint: tp, ktime_ns: 0, data: &data }).unwrap();
        assert_eq!(decoded.subject, "peer-observer-ebpf.utxocache");
        // Coin: txid (1), index 7 (2), height 840000 (3), value 5e9 (4), is_coinbase (5); then
        // the timestamp as field 10, as in event.Event.
        let coin = format!("0a20{}100718c0a2332080e497d0122801", "ab".repeat(32));
        assert_eq!(envelope_hex(decoded, TS), format!("{tag}{:02x}{coin}50fbd095ffbc31", coin.len() / 2), "{tp}");
    }
    let data = coin_record(0);
    let decoded = decode(&Record { tracepoint: Tracepoint::UtxocacheSpent, ktime_ns: 0, data: &data }).unwrap();
    let Payload::Utxocache(utxocache::event::Event::Spent(coin)) = decoded.payload else { panic!("a spent coin") };
    assert_eq!(
        coin,
        utxocache::Coin { txid: vec![0xab; 32], index: 7, height: 840_000, value: 5_000_000_000, is_coinbase: false }
    );
}

#[test]
fn utxocache_flush_has_every_field_and_bools_out_of_range_are_refused() {
    use crate::proto::peer_observer_ebpf::utxocache;
    let flush = |for_prune| {
        let record = UtxocacheFlushRecord {
            duration_us: 1_234_567,
            mode: 3,
            _pad: 0,
            coins_count: 4_000_000,
            coins_mem_usage: 450 << 20,
            for_prune,
            _pad2: [0; 7],
        };
        bytemuck::bytes_of(&record).to_vec()
    };
    let data = flush(1);
    let decoded = decode(&Record { tracepoint: Tracepoint::UtxocacheFlush, ktime_ns: 0, data: &data }).unwrap();
    let Payload::Utxocache(utxocache::event::Event::Flush(f)) = decoded.payload else { panic!("a flush") };
    let want = utxocache::Flush {
        duration_us: 1_234_567,
        mode: 3,
        coins_count: 4_000_000,
        coins_mem_usage: 450 << 20,
        for_prune: true,
    };
    assert_eq!(f, want);
    let data = flush(2);
    let refused = decode(&Record { tracepoint: Tracepoint::UtxocacheFlush, ktime_ns: 0, data: &data }).unwrap_err();
    assert_eq!(refused, RecordError::OutOfRange { field: "for_prune", value: 2 });
    let data = coin_record(9);
    let refused = decode(&Record { tracepoint: Tracepoint::UtxocacheAdd, ktime_ns: 0, data: &data }).unwrap_err();
    assert_eq!(refused, RecordError::OutOfRange { field: "is_coinbase", value: 9 });
    let short = decode(&Record { tracepoint: Tracepoint::UtxocacheAdd, ktime_ns: 0, data: &data[1..] }).unwrap_err();
    assert_eq!(short, RecordError::WrongSize { expected: data.len(), got: data.len() - 1 });
}

#[test]
fn record_error_labels_are_those_of_every_variant() {
    let errors = [
        RecordError::WrongSize { expected: 1, got: 2 },
        RecordError::MissingNul("addr"),
        RecordError::OutOfRange { field: "network", value: 7 },
    ];
    assert_eq!(errors.map(|e| e.label()), RecordError::LABELS);
}
