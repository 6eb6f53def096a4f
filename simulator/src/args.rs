//! The arguments of each tracepoint firing: the [`Args`] of firing number `seq`, and the
//! domains (connection types, removal and reject reasons, misbehaviours, peer addresses)
//! their values come from.

use ipc_protocol::Tracepoint;

use crate::message::Message;
use crate::rng::Rng;
use crate::workload::{message, Workload};

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
    /// `utxocache:add`, `utxocache:spent`, `utxocache:uncache`
    UtxocacheCoin {
        txid: [u8; 32],
        index: u32,
        height: u32,
        value: i64,
        is_coinbase: bool,
    },
    UtxocacheFlush {
        duration_us: i64,
        mode: u32,
        coins_count: u64,
        coins_mem_usage: u64,
        for_prune: bool,
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
        1 => format!("[2a01:4f8:{:x}::{:x}]:8333", rng.below(0xffff), rng.below(0xffff) + 1),
        // Tor v3 with a 5-digit port: the 68-character maximum for numeric addresses.
        2 => format!("{}.onion:{}", rng.base32(56), 10000 + rng.below(55535)),
        3 => format!("{}.b32.i2p:0", rng.base32(52)),
        4 => format!("[fc00::{:x}]:8333", rng.below(0xffff) + 1),
        // Connected by name (-addnode): a 255-byte host name plus port, 261 characters.
        _ => format!("{}.example:18333", "n".repeat(247)),
    }
}

/// Messages come from and go to Bitcoin Core's connected peers, a bounded set, each with one
/// id, address and connection type for the connection's life (the BPF programs keep the two
/// strings per peer id). 126 of them, so that every address form (`seq % 6`) meets every
/// connection type (`seq % 7`).
pub const CONNECTED_PEERS: u64 = 126;

/// Id, address and connection type of the connected peer that message firing `seq` is from or to.
fn connected_peer(seed: u64, seq: u64) -> (i64, String, &'static str) {
    let peer = seq % CONNECTED_PEERS;
    let rng = &mut Rng::new(seed, Tracepoint::NetInboundMessage, u64::MAX - peer);
    (rng.below(1 << 40) as i64, peer_addr(rng, peer), CONN_TYPES[(peer % 7) as usize])
}

/// The `net:closed_connection` of connected peer number `peer` (below [`CONNECTED_PEERS`]) when
/// Bitcoin Core shuts down: `CConnman::StopNodes` closes every connection it holds, firing the
/// tracepoint for each (docs/tracepoints.md), after `-shutdownnotify` and before the pid file
/// is deleted. Its id, address and connection type are the peer's messages' own.
pub fn disconnection(seed: u64, peer: u64) -> Args {
    let (peer_id, addr, conn_type) = connected_peer(seed, peer);
    Args::ClosedConnection {
        peer_id,
        network: network_of(&addr, peer),
        addr,
        conn_type,
        time_established: 1_700_000_000 + peer as i64,
    }
}

/// The `enum Network` Bitcoin Core passes with a peer's address (`CNode::ConnectedThroughNetwork`:
/// NET_ONION for a peer that came in through the onion service, else `CNetAddr::GetNetClass`):
/// the address's own network, `NET_UNROUTABLE` (0) for a private or reserved IPv4 address; a
/// peer connected by name has the network of the address the name resolved to, here IPv4 or a
/// LAN address. Never `NET_INTERNAL` (6): no peer has one (docs/tracepoints.md, "Value domains").
fn network_of(addr: &str, seq: u64) -> u32 {
    const UNROUTABLE: u32 = 0;
    if seq % 6 == 2 {
        return 3;
    }
    let ipv4 = |addr: &str| {
        let octets: Vec<u32> = addr.split([':', '.']).take(4).filter_map(|o| o.parse().ok()).collect();
        match octets[..] {
            [10, ..] | [127, ..] | [169, 254, ..] | [192, 168, ..] => UNROUTABLE,
            [172, b, ..] if (16..32).contains(&b) => UNROUTABLE,
            [100, b, ..] if (64..128).contains(&b) => UNROUTABLE,
            _ => 1,
        }
    };
    match seq % 6 {
        0 => ipv4(addr),
        5 => [1, UNROUTABLE][(seq / 6 % 2) as usize],
        // IPv6, onion, I2P, CJDNS: NET_IPV6 (2) to NET_CJDNS (5).
        form => form as u32 + 1,
    }
}

/// The arguments of firing number `seq` of `tp` under `seed` and `workload`.
///
/// # Panics
/// If `workload.check()` fails and `tp` is a message tracepoint.
pub fn args(tp: Tracepoint, seed: u64, seq: u64, workload: &Workload) -> Args {
    let rng = &mut Rng::new(seed, tp, seq);
    let peer_id = rng.below(1 << 40) as i64;
    let time = 1_700_000_000 + rng.below(10_000_000) as i64;
    use Tracepoint as T;
    match tp {
        T::NetInboundMessage | T::NetOutboundMessage => {
            let message = message(rng, seq, workload);
            let (peer_id, addr, conn_type) = connected_peer(seed, seq);
            Args::Message { peer_id, addr, conn_type, message }
        }
        T::NetInboundConnection | T::NetOutboundConnection => {
            let mut addr = peer_addr(rng, seq);
            if tp == T::NetInboundConnection && seq % 6 == 2 {
                // An inbound Tor peer: Bitcoin Core sees the local end of the Tor proxy, and
                // only the network (NET_ONION, from the onion bind port) tells it apart.
                addr = format!("127.0.0.1:{}", 1024 + rng.below(64_000));
            }
            Args::Connection {
                peer_id,
                network: network_of(&addr, seq),
                addr,
                conn_type: if tp == T::NetInboundConnection { "inbound" } else { CONN_TYPES[1 + (seq % 6) as usize] },
                existing_connections: rng.below(125) + 1,
            }
        }
        T::NetClosedConnection | T::NetEvictedInboundConnection => {
            let addr = peer_addr(rng, seq);
            Args::ClosedConnection {
                peer_id,
                network: network_of(&addr, seq),
                addr,
                conn_type: if tp == T::NetEvictedInboundConnection {
                    "inbound"
                } else {
                    CONN_TYPES[(seq % 7) as usize]
                },
                time_established: time,
            }
        }
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
        T::UtxocacheAdd | T::UtxocacheSpent | T::UtxocacheUncache => Args::UtxocacheCoin {
            txid: rng.hash(),
            index: rng.below(5_000) as u32,
            height: rng.below(1_000_000) as u32,
            // Up to MAX_MONEY, 21 million bitcoin.
            value: rng.below(2_100_000_000_000_001) as i64,
            is_coinbase: seq.is_multiple_of(5),
        },
        T::UtxocacheFlush => Args::UtxocacheFlush {
            duration_us: rng.below(60_000_000) as i64,
            // FlushStateMode: NONE, IF_NEEDED, PERIODIC, FORCE_FLUSH, FORCE_SYNC.
            mode: (seq % 5) as u32,
            coins_count: rng.below(100_000_000),
            coins_mem_usage: rng.below(16 << 30),
            for_prune: seq.is_multiple_of(2),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_deterministic_and_differ_by_seq() {
        let workloads = [
            Workload::default(),
            Workload { garbage: true, ..Workload::default() },
            Workload { message_type: Some("tx".into()), ..Workload::default() },
            Workload { message_size: Some(4096), ..Workload::default() },
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
    fn a_peers_network_is_its_addresss_as_bitcoin_core_passes_it() {
        assert_eq!(network_of("10.1.2.3:8333", 0), 0);
        assert_eq!(network_of("172.20.0.1:8333", 6), 0);
        assert_eq!(network_of("8.8.8.8:8333", 12), 1);
        let networks: Vec<u32> = (0..12)
            .map(|seq| match args(Tracepoint::NetInboundConnection, 3, seq, &Workload::default()) {
                Args::Connection { network, .. } => network,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(networks[1..6], [2, 3, 4, 5, 1]);
        assert_eq!(networks[11], 0, "a name that resolved to a LAN address");
        let Args::Connection { addr, .. } = args(Tracepoint::NetInboundConnection, 3, 2, &Workload::default()) else {
            panic!("a connection")
        };
        assert!(addr.starts_with("127.0.0.1:"), "an inbound Tor peer is the proxy's local end: {addr}");
        assert!(networks.iter().all(|n| *n < 6), "no peer is NET_INTERNAL");
    }
}
