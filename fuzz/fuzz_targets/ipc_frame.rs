//! Whatever a peer on the publisher's socket sends: hellos and datagrams decode or are
//! refused with an error, and fragments never make the reassembler panic or over-allocate.
#![no_main]

use ipc_protocol::{decode_datagram, decode_hello, Datagram, Reassembler};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first_seq = decode_hello(data).map_or(0, |greeting| greeting.first_seq);
    let mut reassembler = Reassembler::new(first_seq);
    // The input as a sequence of datagrams, each prefixed by a one-byte length.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (datagram, tail) = tail.split_at(tail.len().min(len as usize));
        rest = tail;
        match decode_datagram(datagram) {
            Ok(Datagram::Records(batch)) => drop(reassembler.records(batch.seq)),
            Ok(Datagram::Fragment(fragment)) => {
                if let (_, Some(record)) = reassembler.fragment(&fragment) {
                    assert_eq!(record.data.len(), fragment.total_len as usize);
                }
            }
            Ok(Datagram::DropCounts(_)) | Err(_) => {}
        }
    }
});
