//! Record validation for every tracepoint: any body is decoded or refused, never a panic.
#![no_main]

use ipc_protocol::{Record, Tracepoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let tracepoint = Tracepoint::ALL[which as usize % Tracepoint::ALL.len()];
    let _ = publisher::decode::decode(&Record { tracepoint, ktime_ns: 0, data: body });
});
