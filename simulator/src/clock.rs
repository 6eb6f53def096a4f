//! The clock the simulator reads.

/// CLOCK_MONOTONIC in nanoseconds: the clock of `--ping-clock` nonces, which a subscriber on
/// the same machine reads to measure latency.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
