//! The BPF side of the extractor: `src/bpf/extractor.bpf.c` compiled into a libbpf skeleton.
//! Program names follow `ipc_protocol::Tracepoint::program`; record layouts follow
//! `ipc_protocol::records` (checked by `tests/layout.rs`).

mod skel {
    #![allow(clippy::all, non_camel_case_types, non_upper_case_globals, dead_code, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/extractor.skel.rs"));
}

pub use skel::*;

/// `src/bpf/noop.bpf.c`: one program that does nothing, for the benchmark's floor.
pub mod noop {
    #![allow(clippy::all, non_camel_case_types, non_upper_case_globals, dead_code, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/noop.skel.rs"));
}
