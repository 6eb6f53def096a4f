//! The protobuf messages, generated from `proto/`: peer-observer's (docs/wire-format.md,
//! "Envelope" and "Events") and this project's own `peer_observer_ebpf.utxocache`, each with
//! the serde implementations of its canonical JSON mapping (pbjson, build.rs).
#![allow(clippy::all, missing_docs)]

pub mod event {
    include!(concat!(env!("OUT_DIR"), "/event.rs"));
    include!(concat!(env!("OUT_DIR"), "/event.serde.rs"));
}

/// peer-observer's envelope before 2025-12-15 (`--nats-legacy-envelope`).
pub mod event_msg {
    include!(concat!(env!("OUT_DIR"), "/event_msg.rs"));
    include!(concat!(env!("OUT_DIR"), "/event_msg.serde.rs"));
}

pub mod bitcoin_primitives {
    include!(concat!(env!("OUT_DIR"), "/bitcoin_primitives.rs"));
    include!(concat!(env!("OUT_DIR"), "/bitcoin_primitives.serde.rs"));
}

pub mod ebpf_extractor {
    include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.rs"));
    include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.serde.rs"));

    pub mod message {
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.message.rs"));
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.message.serde.rs"));
    }
    pub mod connection {
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.connection.rs"));
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.connection.serde.rs"));
    }
    pub mod mempool {
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.mempool.rs"));
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.mempool.serde.rs"));
    }
    pub mod validation {
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.validation.rs"));
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.validation.serde.rs"));
    }
    pub mod addrman {
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.addrman.rs"));
        include!(concat!(env!("OUT_DIR"), "/ebpf_extractor.addrman.serde.rs"));
    }
}

/// This project's own package, not peer-observer's.
pub mod peer_observer_ebpf {
    pub mod utxocache {
        include!(concat!(env!("OUT_DIR"), "/peer_observer_ebpf.utxocache.rs"));
        include!(concat!(env!("OUT_DIR"), "/peer_observer_ebpf.utxocache.serde.rs"));
    }
}
