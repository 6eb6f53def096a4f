//! What peer-observer event each simulated firing must produce, built from the simulator's
//! arguments and the spec (nats-wire.md §4-5), independently of the publisher's decoder.

use ipc_protocol::Tracepoint;
use publisher::proto::bitcoin_primitives::{inventory_item::Item, ConnType, InventoryItem, UnknownItem};
use publisher::proto::ebpf_extractor::ebpf::EbpfEvent;
use publisher::proto::ebpf_extractor::message::{self as m, message_event::Msg};
use publisher::proto::ebpf_extractor::{addrman, connection, mempool, validation, Ebpf};
use publisher::proto::event::{event::PeerObserverEvent, Event};
use tracepoint_simulator::Args;

/// Subject and event (without the envelope's timestamp) for firing `seq` of `tp`.
pub fn event(tp: Tracepoint, seed: u64, seq: u64) -> (&'static str, Ebpf) {
    use connection::connection_event::Event as C;
    use mempool::mempool_event::Event as M;
    let (subject, event) = match tracepoint_simulator::args(tp, seed, seq) {
        Args::Message { peer_id, addr, conn_type, msg_type, payload } => (
            "netmsg",
            EbpfEvent::Message(m::MessageEvent {
                meta: m::Metadata {
                    peer_id: peer_id as u64,
                    addr,
                    conn_type: conn_type_of(conn_type) as i32,
                    command: msg_type.to_string(),
                    inbound: tp == Tracepoint::NetInboundMessage,
                    size: payload.len() as u64,
                },
                msg: Some(message(msg_type, &payload)),
            }),
        ),
        Args::Connection { peer_id, addr, conn_type, network, existing_connections } => {
            let conn = connection::Connection { peer_id: peer_id as u64, addr, conn_type: conn_type_of(conn_type) as i32, network };
            let event = if tp == Tracepoint::NetInboundConnection {
                C::Inbound(connection::InboundConnection { conn, existing_connections })
            } else {
                C::Outbound(connection::OutboundConnection { conn, existing_connections })
            };
            ("netconn", EbpfEvent::Connection(connection::ConnectionEvent { event: Some(event) }))
        }
        Args::ClosedConnection { peer_id, addr, conn_type, network, time_established } => {
            let conn = connection::Connection { peer_id: peer_id as u64, addr, conn_type: conn_type_of(conn_type) as i32, network };
            let time_established = time_established as u64;
            let event = if tp == Tracepoint::NetClosedConnection {
                C::Closed(connection::ClosedConnection { conn, time_established })
            } else {
                C::InboundEvicted(connection::EvictedInboundConnection { conn, time_established })
            };
            ("netconn", EbpfEvent::Connection(connection::ConnectionEvent { event: Some(event) }))
        }
        Args::Misbehaving { peer_id, message } => (
            "netconn",
            EbpfEvent::Connection(connection::ConnectionEvent {
                event: Some(C::Misbehaving(connection::MisbehavingConnection { id: peer_id as u64, message: message.into() })),
            }),
        ),
        Args::MempoolAdded { txid, vsize, fee } => ("mempool", mempool(M::Added(mempool::Added { txid: txid.to_vec(), vsize, fee }))),
        Args::MempoolRemoved { txid, reason, vsize, fee, entry_time } => (
            "mempool",
            mempool(M::Removed(mempool::Removed { txid: txid.to_vec(), reason: reason.into(), vsize, fee, entry_time })),
        ),
        Args::MempoolReplaced {
            replaced_txid,
            replaced_vsize,
            replaced_fee,
            replaced_entry_time,
            replacement_id,
            replacement_vsize,
            replacement_fee,
            replaced_by_tx,
        } => (
            "mempool",
            mempool(M::Replaced(mempool::Replaced {
                replaced_txid: replaced_txid.to_vec(),
                replaced_vsize,
                replaced_fee,
                replaced_entry_time,
                replacement_id: replacement_id.to_vec(),
                replacement_vsize,
                replacement_fee,
                replaced_by_transaction: replaced_by_tx,
            })),
        ),
        Args::MempoolRejected { txid, reason } => ("mempool", mempool(M::Rejected(mempool::Rejected { txid: txid.to_vec(), reason: reason.into() }))),
        Args::BlockConnected { hash, height, transactions, inputs, sigops, connection_time_ns } => (
            "validation",
            EbpfEvent::Validation(validation::ValidationEvent {
                event: Some(validation::validation_event::Event::BlockConnected(validation::BlockConnected {
                    hash: hash.to_vec(),
                    height,
                    transactions: transactions as i64,
                    inputs,
                    sigops,
                    connection_time: connection_time_ns as u64,
                })),
            }),
        ),
        Args::AddrmanAttemptAdd { inserted, bucket, bucket_pos, addr, addr_as, source, source_as } => (
            "addrman",
            EbpfEvent::Addrman(addrman::AddrmanEvent {
                event: Some(addrman::addrman_event::Event::New(addrman::InsertNew { inserted, bucket, bucket_pos, addr, addr_as, source, source_as })),
            }),
        ),
        Args::AddrmanMoveToGood { bucket, bucket_pos, addr, addr_as, source, source_as } => (
            "addrman",
            EbpfEvent::Addrman(addrman::AddrmanEvent {
                event: Some(addrman::addrman_event::Event::Tried(addrman::InsertTried { bucket, bucket_pos, addr, addr_as, source, source_as })),
            }),
        ),
    };
    (subject, Ebpf { ebpf_event: Some(event) })
}

fn mempool(event: mempool::mempool_event::Event) -> EbpfEvent {
    EbpfEvent::Mempool(mempool::MempoolEvent { event: Some(event) })
}

fn conn_type_of(s: &str) -> ConnType {
    match s {
        "inbound" => ConnType::Inbound,
        "outbound-full-relay" => ConnType::OutboundFullRelay,
        "block-relay-only" => ConnType::BlockRelayOnly,
        "feeler" => ConnType::Feeler,
        _ => ConnType::Unknown,
    }
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// The variant each simulated payload must decode to (the simulator's payload recipes).
fn message(msg_type: &str, p: &[u8]) -> Msg {
    match msg_type {
        "ping" if p.is_empty() => Msg::Oldping(true),
        "ping" => Msg::Ping(m::Ping { value: le_u64(p) }),
        "pong" => Msg::Pong(m::Pong { value: le_u64(p) }),
        "verack" => Msg::Verack(true),
        "sendheaders" => Msg::Sendheaders(true),
        "getaddr" => Msg::Getaddr(true),
        "mempool" => Msg::Mempool(true),
        "wtxidrelay" => Msg::Wtxidrelay(true),
        "sendaddrv2" => Msg::Sendaddrv2(true),
        "feefilter" => Msg::Feefilter(m::FeeFilter { fee: le_u64(p) as i64 }),
        "sendcmpct" => Msg::Sendcompact(m::SendCompact { send_compact: p[0] == 1, version: le_u64(&p[1..]) }),
        "inv" | "getdata" => {
            let items = p[1..]
                .chunks(36)
                .map(|entry| {
                    let hash = entry[4..].to_vec();
                    let item = match u32::from_le_bytes(entry[..4].try_into().expect("4 bytes")) {
                        0 => Item::Error(true),
                        1 => Item::Transaction(hash),
                        2 => Item::Block(hash),
                        4 => Item::CompactBlock(hash),
                        5 => Item::Wtx(hash),
                        0x4000_0001 => Item::WitnessTransaction(hash),
                        0x4000_0002 => Item::WitnessBlock(hash),
                        inv_type => Item::Unknown(UnknownItem { inv_type, hash }),
                    };
                    InventoryItem { item: Some(item) }
                })
                .collect();
            if msg_type == "inv" {
                Msg::Inv(m::Inv { items })
            } else {
                Msg::Getdata(m::GetData { items })
            }
        }
        "getcfheaders" => Msg::Getcfheaders(m::GetCfHeaders {
            filter_type: p[0].into(),
            start_height: u32::from_le_bytes(p[1..5].try_into().expect("4 bytes")),
            stop_hash: p[5..37].to_vec(),
        }),
        other => Msg::Unknown(m::Unknown { command: other.into(), payload: p.to_vec() }),
    }
}

/// Which tracepoint a received event came from.
pub fn tracepoint_of(event: &Event) -> Tracepoint {
    use Tracepoint as T;
    let Some(PeerObserverEvent::EbpfExtractor(Ebpf { ebpf_event: Some(e) })) = &event.peer_observer_event else {
        panic!("event without an eBPF member: {event:?}")
    };
    match e {
        EbpfEvent::Message(msg) if msg.meta.inbound => T::NetInboundMessage,
        EbpfEvent::Message(_) => T::NetOutboundMessage,
        EbpfEvent::Connection(c) => match c.event.as_ref().expect("connection event set") {
            connection::connection_event::Event::Inbound(_) => T::NetInboundConnection,
            connection::connection_event::Event::Outbound(_) => T::NetOutboundConnection,
            connection::connection_event::Event::Closed(_) => T::NetClosedConnection,
            connection::connection_event::Event::InboundEvicted(_) => T::NetEvictedInboundConnection,
            connection::connection_event::Event::Misbehaving(_) => T::NetMisbehavingConnection,
        },
        EbpfEvent::Mempool(mp) => match mp.event.as_ref().expect("mempool event set") {
            mempool::mempool_event::Event::Added(_) => T::MempoolAdded,
            mempool::mempool_event::Event::Removed(_) => T::MempoolRemoved,
            mempool::mempool_event::Event::Replaced(_) => T::MempoolReplaced,
            mempool::mempool_event::Event::Rejected(_) => T::MempoolRejected,
        },
        EbpfEvent::Validation(_) => T::ValidationBlockConnected,
        EbpfEvent::Addrman(a) => match a.event.as_ref().expect("addrman event set") {
            addrman::addrman_event::Event::New(_) => T::AddrmanAttemptAdd,
            addrman::addrman_event::Event::Tried(_) => T::AddrmanMoveToGood,
        },
    }
}
