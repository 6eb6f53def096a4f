//! The contract between `ebpf-loader` (privileged) and `ebpf-publisher` (unprivileged).
//!
//! Sans-IO: the tracepoint table, the record layouts shared with the BPF programs (and the C
//! header generated from the table), the datagrams that cross the Unix socket, and both ends
//! of the protocol as state machines: the loader's [`Sender`] (and [`pump`], its loop over the
//! rings) and the publisher's [`Reassembler`] and [`Acknowledger`]. No sockets, no clocks, no
//! files (docs/ipc.md).

mod ack;
pub mod c_header;
#[cfg(feature = "cli")]
pub mod cli;
mod datagram;
mod hello;
pub mod pump;
mod reassembler;
pub mod records;
mod sender;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tracepoint;

pub use ack::{decode_ack, encode_ack, Acknowledger, ACK_LEN};
pub use datagram::{
    decode_datagram, Batch, Datagram, DecodeError, DropCount, Fragment, OwnedRecord, Record, MAX_DATAGRAM, MAX_RECORD,
};
pub use hello::{decode_hello, Greeting, Hello, PROTOCOL_VERSION};
pub use reassembler::{record_capacity, Loss, Reassembler};
pub use records::DropCause;
pub use sender::{AckError, Offer, Piece, Refusal, Sender, Transmit, UNACKED_MAX};
pub use tracepoint::{Category, Ring, Tracepoint};
