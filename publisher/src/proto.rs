//! The protobuf messages, generated from `proto/`: peer-observer's (docs/wire-format.md,
//! "Envelope" and "Events") and this project's own `peer_observer_ebpf.utxocache`.
#![allow(clippy::all, missing_docs)]

pub mod event {
    include!(concat!(env!("OUT_DIR"), "/event.rs"));
}

pub mod bitcoin_primitives {
    include!(concat!(env!("OUT_DIR"), "/bitcoin_primitives.rs"));
}

pub mod ebpf_extractor {
    include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.rs"));

    pub mod message {
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.message.rs"));
    }
    pub mod connection {
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.connection.rs"));
    }
    pub mod mempool {
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.mempool.rs"));
    }
    pub mod validation {
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.validation.rs"));
    }
    pub mod addrman {
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.addrman.rs"));
    }
}

/// This project's own package, not peer-observer's.
pub mod peer_observer_ebpf {
    pub mod utxocache {
        include!(concat!(env!("OUT_DIR"), "/peer_observer_ebpf.utxocache.rs"));
    }
}
