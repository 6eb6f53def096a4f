//! The contract between `ebpf-loader` (privileged) and `ebpf-publisher` (unprivileged).
//!
//! Sans-IO: the tracepoint table, the record layouts shared with the BPF programs, and the
//! encoding of the datagrams that cross the Unix socket. No sockets, no clocks, no files.

pub mod frame;
pub mod records;
mod tracepoint;

pub use frame::{
    decode_datagram, decode_hello, encode_drop_counts, encode_hello, Datagram, DecodeError, DropCount, EncodeError,
    Encoder, Fragment, FragmentHead, Hello, Loss, OwnedRecord, Push, Reassembler, Record, MAX_DATAGRAM, MAX_RECORD,
    PROTOCOL_VERSION,
};
pub use records::DropCause;
pub use tracepoint::{Category, Tracepoint};
