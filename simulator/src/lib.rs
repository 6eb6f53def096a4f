//! Deterministic tracepoint arguments: the value of every argument of firing number `seq` of a
//! tracepoint follows from `(seed, tracepoint, seq)` and the [`Workload`] alone, so a test can
//! predict every field of every event. Values stay inside Bitcoin Core's real domains
//! (docs/tracepoints.md, "Value domains") and visit their edges: 68-character onion addresses, 12-character
//! message types, the 116-character reject reason, all connection types and networks.
//!
//! P2P payloads are built as structured values ([`Message`]) and serialised in Bitcoin's wire
//! format, so a test can map the same values to the decoded fields without parsing bytes.

mod args;
mod clock;
mod garbage;
mod message;
mod rng;
mod workload;

pub use args::{args, disconnection, Args, CONNECTED_PEERS, CONN_TYPES};
pub use clock::monotonic_ns;
pub use garbage::{Flaw, GARBAGE};
pub use message::{
    AddrV2, Block, CompactBlock, FilterRange, Hash, Header, InvItem, Locator, Message, NetAddr, PrefilledTx, TimedAddr,
    Tx, TxIn, TxOut, Version,
};
pub use workload::{Workload, MADE_UP_TYPE, MAX_MESSAGE_SIZE, MESSAGE_TYPES, MIN_BLOCK_SIZE, MIN_TX_SIZE};
