//! What peer-observer event each simulated firing must produce, built from the simulator's
//! arguments and docs/wire-format.md, independently of the publisher's decoder.

use ipc_protocol::Tracepoint;
use publisher::inventory::Inventory;
use publisher::proto::bitcoin_primitives::address::Address as Addr;
use publisher::proto::bitcoin_primitives::{
    inventory_item::Item, Address, BlockHeader, ConnType, InventoryItem, PrefilledTransaction, Transaction,
    UnknownAddress, UnknownItem,
};
use publisher::proto::ebpf_extractor::ebpf::EbpfEvent;
use publisher::proto::ebpf_extractor::message::{
    self as m, filter_load::BloomFlags, message_event::Msg, reject::RejectReason,
};
use publisher::proto::ebpf_extractor::{addrman, connection, mempool, validation, Ebpf};
use publisher::proto::event::{event::PeerObserverEvent, Event};
use publisher::proto::peer_observer_ebpf::utxocache;
use sha2::{Digest, Sha256};
use sha3::Sha3_256;
use tracepoint_simulator::{self as sim, Args, Workload};

/// Subject and event (without the envelope's timestamp) for firing `seq` of `tp` under the
/// default workload.
pub fn event(tp: Tracepoint, seed: u64, seq: u64) -> (&'static str, Ebpf) {
    event_with(tp, seed, seq, &Workload::default())
}

/// [`event_with`] for a P2P message published undecoded: `unknown` with its whole payload
/// (docs/wire-format.md, "Undecodable payloads").
pub fn undecoded_with(tp: Tracepoint, seed: u64, seq: u64, workload: &Workload) -> (&'static str, Ebpf) {
    let Args::Message { message: msg, .. } = sim::args(tp, seed, seq, workload) else {
        panic!("{tp} fires no P2P message")
    };
    let (subject, mut ebpf) = event_with(tp, seed, seq, workload);
    let Some(EbpfEvent::Message(event)) = &mut ebpf.ebpf_event else { unreachable!("a P2P message's event") };
    event.msg = Some(Msg::Unknown(m::Unknown { command: msg.command().into(), payload: msg.serialize() }));
    (subject, ebpf)
}

/// Subject and event (without the envelope's timestamp) for firing `seq` of `tp`.
pub fn event_with(tp: Tracepoint, seed: u64, seq: u64, workload: &Workload) -> (&'static str, Ebpf) {
    event_of(tp, sim::args(tp, seed, seq, workload))
}

/// Subject and event (without the envelope's timestamp) for a firing of `tp` with `args`.
pub fn event_of(tp: Tracepoint, args: Args) -> (&'static str, Ebpf) {
    use connection::connection_event::Event as C;
    use mempool::mempool_event::Event as M;
    let (subject, event) = match args {
        Args::Message { peer_id, addr, conn_type, message: msg } => (
            "netmsg",
            EbpfEvent::Message(m::MessageEvent {
                meta: m::Metadata {
                    peer_id: peer_id as u64,
                    addr,
                    conn_type: conn_type_of(conn_type) as i32,
                    command: msg.command().to_string(),
                    inbound: tp == Tracepoint::NetInboundMessage,
                    size: msg.serialize().len() as u64,
                },
                msg: Some(message(&msg)),
            }),
        ),
        Args::Connection { peer_id, addr, conn_type, network, existing_connections } => {
            let conn = connection::Connection {
                peer_id: peer_id as u64,
                addr,
                conn_type: conn_type_of(conn_type) as i32,
                network,
            };
            let event = if tp == Tracepoint::NetInboundConnection {
                C::Inbound(connection::InboundConnection { conn, existing_connections })
            } else {
                C::Outbound(connection::OutboundConnection { conn, existing_connections })
            };
            ("netconn", EbpfEvent::Connection(connection::ConnectionEvent { event: Some(event) }))
        }
        Args::ClosedConnection { peer_id, addr, conn_type, network, time_established } => {
            let conn = connection::Connection {
                peer_id: peer_id as u64,
                addr,
                conn_type: conn_type_of(conn_type) as i32,
                network,
            };
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
                event: Some(C::Misbehaving(connection::MisbehavingConnection {
                    id: peer_id as u64,
                    message: message.into(),
                })),
            }),
        ),
        Args::MempoolAdded { txid, vsize, fee } => {
            ("mempool", mempool(M::Added(mempool::Added { txid: txid.to_vec(), vsize, fee })))
        }
        Args::MempoolRemoved { txid, reason, vsize, fee, entry_time } => (
            "mempool",
            mempool(M::Removed(mempool::Removed {
                txid: txid.to_vec(),
                reason: reason.into(),
                vsize,
                fee,
                entry_time,
            })),
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
        Args::MempoolRejected { txid, reason } => {
            ("mempool", mempool(M::Rejected(mempool::Rejected { txid: txid.to_vec(), reason: reason.into() })))
        }
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
            "peer-observer-ebpf.addrman",
            EbpfEvent::Addrman(addrman::AddrmanEvent {
                event: Some(addrman::addrman_event::Event::New(addrman::InsertNew {
                    inserted,
                    bucket,
                    bucket_pos,
                    addr,
                    addr_as,
                    source,
                    source_as,
                })),
            }),
        ),
        Args::AddrmanMoveToGood { bucket, bucket_pos, addr, addr_as, source, source_as } => (
            "peer-observer-ebpf.addrman",
            EbpfEvent::Addrman(addrman::AddrmanEvent {
                event: Some(addrman::addrman_event::Event::Tried(addrman::InsertTried {
                    bucket,
                    bucket_pos,
                    addr,
                    addr_as,
                    source,
                    source_as,
                })),
            }),
        ),
        Args::UtxocacheCoin { .. } | Args::UtxocacheFlush { .. } => {
            panic!("{tp} is published as this project's own message: see expect::utxocache")
        }
    };
    (subject, Ebpf { ebpf_event: Some(event) })
}

/// The utxocache event (without the envelope's timestamp) for firing `seq` of `tp`.
pub fn utxocache(tp: Tracepoint, seed: u64, seq: u64) -> utxocache::event::Event {
    use utxocache::event::Event as U;
    match sim::args(tp, seed, seq, &Workload::default()) {
        Args::UtxocacheCoin { txid, index, height, value, is_coinbase } => {
            let coin = utxocache::Coin { txid: txid.to_vec(), index, height, value, is_coinbase };
            match tp {
                Tracepoint::UtxocacheAdd => U::Add(coin),
                Tracepoint::UtxocacheSpent => U::Spent(coin),
                _ => U::Uncache(coin),
            }
        }
        Args::UtxocacheFlush { duration_us, mode, coins_count, coins_mem_usage, for_prune } => {
            U::Flush(utxocache::Flush { duration_us, mode, coins_count, coins_mem_usage, for_prune })
        }
        other => panic!("{tp} is not a utxocache tracepoint: {other:?}"),
    }
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

/// The variant each simulated message must decode to (docs/wire-format.md, "P2P messages" and
/// "Deliberate differences from upstream").
fn message(msg: &sim::Message) -> Msg {
    use sim::Message as S;
    let hashes = |hashes: &[sim::Hash]| hashes.iter().map(|h| h.to_vec()).collect::<Vec<_>>();
    match msg {
        S::Version(v) => Msg::Version(m::Version {
            version: v.version,
            services: v.services,
            timestamp: v.timestamp,
            receiver: v1_address(0, &v.receiver),
            sender: v1_address(0, &v.sender),
            nonce: v.nonce,
            user_agent: v.user_agent.clone(),
            start_height: v.start_height,
            // A missing relay byte means relay, as in Bitcoin Core.
            relay: v.relay.unwrap_or(true),
        }),
        S::Verack => Msg::Verack(true),
        S::Ping(value) => Msg::Ping(m::Ping { value: *value }),
        S::OldPing => Msg::Oldping(true),
        S::Pong(value) => Msg::Pong(m::Pong { value: *value }),
        S::Inv(items) => Msg::Inv(inventory(items)),
        S::GetData(items) => Msg::Getdata(inventory(items)),
        S::NotFound(items) => Msg::Notfound(inventory(items)),
        S::Tx(tx) => Msg::Tx(m::Tx { tx: transaction(tx) }),
        S::Block(block) => Msg::Block(m::Block {
            header: header(&block.header),
            transactions: block.txs.iter().map(transaction).collect(),
        }),
        S::Headers(headers) => Msg::Headers(m::Headers { headers: headers.iter().map(header).collect() }),
        S::GetHeaders(l) => Msg::Getheaders(m::GetHeaders {
            version: l.version,
            locator_hashes: hashes(&l.hashes),
            stop_hash: l.stop_hash.to_vec(),
        }),
        S::GetBlocks(l) => Msg::Getblocks(m::GetBlocks {
            version: l.version,
            locator_hashes: hashes(&l.hashes),
            stop_hash: l.stop_hash.to_vec(),
        }),
        S::CmpctBlock(block) => Msg::Compactblock(m::CompactBlock {
            header: header(&block.header),
            nonce: block.nonce,
            short_ids: block.short_ids.iter().map(|id| id.to_vec()).collect(),
            transactions: block
                .prefilled
                .iter()
                .map(|p| PrefilledTransaction { diff_index: p.diff_index, tx: transaction(&p.tx) })
                .collect(),
        }),
        S::GetBlockTxn { block_hash, indexes } => {
            Msg::Getblocktxn(m::GetBlockTxn { block_hash: block_hash.to_vec(), tx_indexes: indexes.clone() })
        }
        S::BlockTxn { block_hash, txs } => Msg::Blocktxn(m::BlockTxn {
            block_hash: block_hash.to_vec(),
            transactions: txs.iter().map(transaction).collect(),
        }),
        S::SendCmpct { announce, version } => {
            Msg::Sendcompact(m::SendCompact { send_compact: *announce, version: *version })
        }
        S::FeeFilter(fee) => Msg::Feefilter(m::FeeFilter { fee: *fee }),
        S::Addr(entries) => {
            Msg::Addr(m::Addr { addresses: entries.iter().map(|e| v1_address(e.time, &e.addr)).collect() })
        }
        S::AddrV2(entries) => Msg::Addrv2(m::AddrV2 { addresses: entries.iter().map(v2_address).collect() }),
        S::EmptyAddrV2 => Msg::Emptyaddrv2(true),
        S::SendAddrV2 => Msg::Sendaddrv2(true),
        S::GetAddr => Msg::Getaddr(true),
        S::Mempool => Msg::Mempool(true),
        S::WtxidRelay => Msg::Wtxidrelay(true),
        S::SendHeaders => Msg::Sendheaders(true),
        S::FilterClear => Msg::Filterclear(true),
        S::MerkleBlock { header: h, total_txs, hashes: merkle_hashes, flags } => Msg::Merkleblock(m::MerkleBlock {
            header: header(h),
            num_transactions: *total_txs,
            // 8 per flag byte, least significant bit first, padding included.
            bits: flags.iter().flat_map(|byte| (0..8).map(move |bit| byte & (1 << bit) != 0)).collect(),
            hashes: hashes(merkle_hashes),
        }),
        S::FilterLoad { filter, hash_funcs, tweak, flags } => Msg::Filterload(m::FilterLoad {
            filter: filter.clone(),
            hash_funcs: *hash_funcs,
            tweak: *tweak,
            flags: match flags {
                0 => BloomFlags::None,
                1 => BloomFlags::All,
                2 => BloomFlags::PubkeyOnly,
                other => panic!("bloom flags {other} do not decode"),
            } as i32,
        }),
        S::FilterAdd(filter) => Msg::Filteradd(m::FilterAdd { filter: filter.clone() }),
        S::GetCFilters(r) => Msg::Getcfilter(m::GetCFilter {
            filter_type: r.filter_type.into(),
            start_height: r.start_height,
            stop_hash: r.stop_hash.to_vec(),
        }),
        S::CFilter { filter_type, block_hash, filter } => Msg::Cfilter(m::CFilter {
            filter_type: (*filter_type).into(),
            block_hash: block_hash.to_vec(),
            filter: filter.clone(),
        }),
        S::GetCFHeaders(r) => Msg::Getcfheaders(m::GetCfHeaders {
            filter_type: r.filter_type.into(),
            start_height: r.start_height,
            stop_hash: r.stop_hash.to_vec(),
        }),
        S::CFHeaders { filter_type, stop_hash, previous_header, hashes: filter_hashes } => {
            Msg::Cfheaders(m::CfHeaders {
                filter_type: (*filter_type).into(),
                stop_hash: stop_hash.to_vec(),
                previous_filter_header: previous_header.to_vec(),
                filter_hashes: hashes(filter_hashes),
            })
        }
        S::GetCFCheckpt { filter_type, stop_hash } => {
            Msg::Getcfcheckpt(m::GetCfCheckpt { filter_type: (*filter_type).into(), stop_hash: stop_hash.to_vec() })
        }
        S::CFCheckpt { filter_type, stop_hash, headers } => Msg::Cfcheckpt(m::CfCheckpt {
            filter_type: (*filter_type).into(),
            stop_hash: stop_hash.to_vec(),
            filter_headers: hashes(headers),
        }),
        S::Reject { message, code, reason, hash } => Msg::Reject(m::Reject {
            rejected_command: message.clone(),
            reason: match code {
                0x01 => RejectReason::Malformed,
                0x10 => RejectReason::Invalid,
                0x11 => RejectReason::Obsolete,
                0x12 => RejectReason::Duplicate,
                0x40 => RejectReason::Nonstandard,
                0x41 => RejectReason::Dust,
                0x42 => RejectReason::Fee,
                0x43 => RejectReason::Checkpoint,
                other => panic!("reject code {other:#x} does not decode"),
            } as i32,
            reason_details: reason.clone(),
            hash: hash.to_vec(),
        }),
        // A known command that fails to decode is published like an unknown one.
        S::Unknown { command, payload } | S::Undecodable { command, payload, .. } => {
            Msg::Unknown(m::Unknown { command: command.to_string(), payload: payload.clone() })
        }
    }
}

fn sha256d(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(Sha256::digest(bytes)).to_vec()
}

/// docs/wire-format.md, "Transactions and headers": txid over the serialisation without witness, wtxid and `raw` with it (if any).
fn transaction(tx: &sim::Tx) -> Transaction {
    let raw = tx.serialize();
    Transaction { txid: sha256d(&tx.serialize_without_witness()), wtxid: sha256d(&raw), raw: Some(raw) }
}

fn header(h: &sim::Header) -> BlockHeader {
    BlockHeader {
        version: h.version,
        prev_blockhash: h.prev_block.to_vec(),
        merkle_root: h.merkle_root.to_vec(),
        time: h.time,
        bits: h.bits,
        nonce: h.nonce,
        hash: sha256d(&h.serialize()),
    }
}

/// docs/wire-format.md, "Inventory": MSG_ERROR is `error` whatever its hash. Encoded by
/// prost from the generated items, not by the publisher's encoder.
fn inventory(items: &[sim::InvItem]) -> Inventory {
    let items: Vec<InventoryItem> = items
        .iter()
        .map(|i| {
            let hash = i.hash.to_vec();
            let item = match i.inv_type {
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
    Inventory::from_items(&items)
}

const ONIONCAT: [u8; 6] = [0xfd, 0x87, 0xd8, 0x7e, 0xeb, 0x43];

/// docs/wire-format.md, "Addresses", v1 rules in order: OnionCat, then IPv4-mapped or
/// -compatible, then IPv6.
fn v1_address(timestamp: u32, a: &sim::NetAddr) -> Address {
    let ip = &a.ip;
    let address = if ip[..6] == ONIONCAT {
        Addr::Torv2(format!("{}.onion", base32(&ip[6..])))
    } else if ip[..10] == [0; 10] && (ip[10..12] == [0, 0] || ip[10..12] == [0xff, 0xff]) {
        Addr::Ipv4(dotted(&ip[12..]))
    } else {
        Addr::Ipv6(ipv6_text(ip))
    };
    Address { timestamp, address: Some(address), services: a.services, port: a.port.into() }
}

/// docs/wire-format.md, "Addresses", v2 rules; the simulator sends only valid entries outside garbage.
fn v2_address(e: &sim::AddrV2) -> Address {
    let address = match e.network {
        1 => Addr::Ipv4(dotted(&e.addr)),
        2 => Addr::Ipv6(ipv6_text(&e.addr)),
        3 => Addr::Torv2(format!("{}.onion", base32(&e.addr))),
        4 => Addr::Torv3(torv3(&e.addr)),
        5 => Addr::I2p(format!("{}.b32.i2p", base32(&e.addr))),
        6 => Addr::Cjdns(ipv6_text(&e.addr)),
        id => Addr::Unknown(UnknownAddress { id: id.into(), address: e.addr.clone() }),
    };
    Address { timestamp: e.time, address: Some(address), services: e.services, port: e.port.into() }
}

fn dotted(b: &[u8]) -> String {
    b.iter().map(u8::to_string).collect::<Vec<_>>().join(".")
}

/// Lowercase groups without leading zeros; the first longest run of two or more zero groups
/// becomes `::`.
fn ipv6_text(b: &[u8]) -> String {
    let groups: Vec<u16> = b.chunks(2).map(|g| u16::from_be_bytes([g[0], g[1]])).collect();
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, g) in groups.iter().enumerate() {
        if *g == 0 {
            run = if run.1 == 0 { (i, 1) } else { (run.0, run.1 + 1) };
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run = (0, 0);
        }
    }
    let text = |gs: &[u16]| gs.iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":");
    if best.1 < 2 {
        return text(&groups);
    }
    format!("{}::{}", text(&groups[..best.0]), text(&groups[best.0 + best.1..]))
}

/// RFC 4648 base32, lowercase, no padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let bits: Vec<bool> = bytes.iter().flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1)).collect();
    bits.chunks(5)
        .map(|chunk| {
            let value = (0..5).fold(0, |acc, i| acc << 1 | usize::from(chunk.get(i).copied().unwrap_or(false)));
            ALPHABET[value] as char
        })
        .collect()
}

/// docs/wire-format.md, "Tor v3 addresses": the valid v3 name, base32(key ‖ SHA3-256(".onion checksum" ‖ key ‖ 3)[..2] ‖ 3).
fn torv3(key: &[u8]) -> String {
    let mut checksummed = b".onion checksum".to_vec();
    checksummed.extend_from_slice(key);
    checksummed.push(3);
    let checksum = Sha3_256::digest(&checksummed);
    let mut name = key.to_vec();
    name.extend_from_slice(&checksum[..2]);
    name.push(3);
    format!("{}.onion", base32(&name))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The spec's examples (docs/wire-format.md, "Addresses").
    #[test]
    fn addresses_render_as_the_spec_shows() {
        let key = unhex("79bcc625184b05194975c28b66b66b0469f7f6556fb1ac3189a79b40dda32f1f");
        assert_eq!(torv3(&key), "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion");
        assert_eq!(base32(&unhex("edb108e43588e54635ca")), "5wyqrzbvrdsumnok");
        for (hex, text) in [
            ("20010db8000000000000000000000001", "2001:db8::1"),
            ("20010db8000000010000000000000001", "2001:db8:0:1::1"),
            ("00010000000100000001000000010000", "1:0:1:0:1:0:1:0"),
            ("fc000000000000000000000000000001", "fc00::1"),
            ("00000000000000000000000000000000", "::"),
            ("00010000000000010000000000000000", "1:0:0:1::"),
        ] {
            assert_eq!(ipv6_text(&unhex(hex)), text);
        }
        let v1 = |hex: &str| {
            v1_address(0, &sim::NetAddr { services: 0, ip: unhex(hex).try_into().unwrap(), port: 0 }).address
        };
        assert_eq!(v1("00000000000000000000000000000001"), Some(Addr::Ipv4("0.0.0.1".into())));
        assert_eq!(v1("00000000000000000000ffff01020304"), Some(Addr::Ipv4("1.2.3.4".into())));
        assert_eq!(v1("fd87d87eeb43edb108e43588e54635ca"), Some(Addr::Torv2("5wyqrzbvrdsumnok.onion".into())));
    }
}
