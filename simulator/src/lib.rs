//! Deterministic tracepoint arguments: the value of every argument of firing number `seq` of a
//! tracepoint follows from `(seed, tracepoint, seq)` alone, so a test can predict every field
//! of every event. Values stay inside Bitcoin Core's real domains (tracepoints.md §5) and
//! visit their edges: 68-character onion addresses, 12-character message types, the 116-
//! character reject reason, all connection types and networks.

use ipc_protocol::Tracepoint;

/// The arguments of one tracepoint firing, in Bitcoin Core's order and types.
#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    /// `net:inbound_message`, `net:outbound_message`
    Message {
        peer_id: i64,
        addr: String,
        conn_type: &'static str,
        msg_type: &'static str,
        payload: Vec<u8>,
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

pub const CONN_TYPES: [&str; 7] = [
    "inbound",
    "outbound-full-relay",
    "block-relay-only",
    "feeler",
    "manual",
    "addr-fetch",
    "private-broadcast",
];

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

/// P2P message types the simulator sends, with how their payloads are built.
pub const MESSAGE_TYPES: [&str; 14] = [
    "ping",
    "pong",
    "verack",
    "sendheaders",
    "getaddr",
    "mempool",
    "wtxidrelay",
    "sendaddrv2",
    "feefilter",
    "sendcmpct",
    "inv",
    "getcfheaders",
    "sendtxrcncl",
    "getdata",
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

    fn hash(&mut self) -> [u8; 32] {
        let mut h = [0u8; 32];
        for chunk in h.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        h
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

fn message(rng: &mut Rng, seq: u64) -> (&'static str, Vec<u8>) {
    let msg_type = MESSAGE_TYPES[(seq % MESSAGE_TYPES.len() as u64) as usize];
    let payload = match msg_type {
        // Every 14th ping is the pre-BIP31 empty ping.
        "ping" if seq % 28 == 0 => Vec::new(),
        "ping" | "pong" => rng.next().to_le_bytes().to_vec(),
        "feefilter" => (rng.below(100_000) as i64).to_le_bytes().to_vec(),
        "sendcmpct" => {
            let mut p = vec![(rng.next() & 1) as u8];
            p.extend_from_slice(&2u64.to_le_bytes());
            p
        }
        "inv" | "getdata" => {
            const TYPES: [u32; 8] = [1, 2, 5, 0x4000_0001, 0x4000_0002, 4, 3, 0];
            let n = rng.below(100) as usize;
            let mut p = vec![n as u8];
            for _ in 0..n {
                p.extend_from_slice(&TYPES[rng.below(8) as usize].to_le_bytes());
                p.extend_from_slice(&rng.hash());
            }
            p
        }
        "getcfheaders" => {
            let mut p = vec![0u8];
            p.extend_from_slice(&(rng.below(900_000) as u32).to_le_bytes());
            p.extend_from_slice(&rng.hash());
            p
        }
        "sendtxrcncl" => {
            let mut p = 1u32.to_le_bytes().to_vec();
            p.extend_from_slice(&rng.next().to_le_bytes());
            p
        }
        _ => Vec::new(),
    };
    (msg_type, payload)
}

/// The arguments of firing number `seq` of `tp` under `seed`.
pub fn args(tp: Tracepoint, seed: u64, seq: u64) -> Args {
    let rng = &mut Rng::new(seed, tp, seq);
    let peer_id = rng.below(1 << 40) as i64;
    let network = (seq % 7) as u32;
    let time = 1_700_000_000 + rng.below(10_000_000) as i64;
    use Tracepoint as T;
    match tp {
        T::NetInboundMessage | T::NetOutboundMessage => {
            let (msg_type, payload) = message(rng, seq);
            Args::Message {
                peer_id,
                addr: peer_addr(rng, seq),
                conn_type: CONN_TYPES[(seq % 7) as usize],
                msg_type,
                payload,
            }
        }
        T::NetInboundConnection | T::NetOutboundConnection => Args::Connection {
            peer_id,
            addr: peer_addr(rng, seq),
            conn_type: if tp == T::NetInboundConnection {
                "inbound"
            } else {
                CONN_TYPES[1 + (seq % 6) as usize]
            },
            network,
            existing_connections: rng.below(125) + 1,
        },
        T::NetClosedConnection | T::NetEvictedInboundConnection => Args::ClosedConnection {
            peer_id,
            addr: peer_addr(rng, seq),
            conn_type: if tp == T::NetEvictedInboundConnection {
                "inbound"
            } else {
                CONN_TYPES[(seq % 7) as usize]
            },
            network,
            time_established: time,
        },
        T::NetMisbehavingConnection => Args::Misbehaving {
            peer_id,
            message: MISBEHAVIOURS[(seq % 6) as usize],
        },
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
            replaced_by_tx: seq % 2 == 0,
        },
        T::MempoolRejected => Args::MempoolRejected {
            txid: rng.hash(),
            reason: REJECT_REASONS[(seq % 6) as usize],
        },
        T::ValidationBlockConnected => Args::BlockConnected {
            hash: rng.hash(),
            height: rng.below(1_000_000) as i32,
            transactions: rng.below(5_000) + 1,
            inputs: rng.below(20_000) as i32 + 1,
            sigops: rng.below(80_001) as i64,
            connection_time_ns: rng.below(2_000_000_000) as i64,
        },
        T::AddrmanAttemptAdd => Args::AddrmanAttemptAdd {
            inserted: seq % 3 != 0,
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

    #[test]
    fn values_are_deterministic_and_differ_by_seq() {
        for tp in Tracepoint::ALL {
            assert_eq!(args(*tp, 7, 3), args(*tp, 7, 3));
            assert_ne!(args(*tp, 7, 3), args(*tp, 7, 4));
        }
    }

    #[test]
    fn addresses_reach_the_documented_maxima() {
        let rng = &mut Rng::new(1, Tracepoint::NetInboundConnection, 0);
        assert_eq!(peer_addr(rng, 2).len(), 62 + 1 + 5);
        assert_eq!(peer_addr(rng, 5).len(), 261);
        assert_eq!(REJECT_REASONS[5].len(), 116);
    }
}
