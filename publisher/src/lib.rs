//! The unprivileged half of the extractor: validates and decodes the records the loader
//! forwards and publishes them to NATS in peer-observer's wire format.

pub mod acks;
pub mod clock;
pub mod counters;
pub mod decode;
pub mod inventory;
pub mod jetstream;
pub mod log_limit;
pub mod loss_log;
pub mod metrics;
pub mod nats;
pub mod p2p;
pub mod proto;
pub mod render;
pub mod seccomp;
pub mod server;
pub mod sink;
#[cfg(test)]
mod test_records;
