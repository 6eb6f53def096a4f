//! Kernel timestamps to wall-clock time.
//!
//! The BPF programs stamp each record with `bpf_ktime_get_ns`, CLOCK_MONOTONIC, which never
//! jumps. The wall clock does: NTP's first sync after boot, an operator's `date -s`, a VM
//! resumed after a pause. So the offset between the two is read anew for every datagram the
//! publisher converts, never once at start: an event's time is its firing moment in the wall
//! clock as it reads when the event is published.

use rustix::time::{clock_gettime, ClockId};

/// Both clocks, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    pub realtime_ns: i64,
    pub monotonic_ns: i64,
}

impl ClockSample {
    /// Reads both clocks (vDSO calls, no syscall on the usual clocksources).
    pub fn now() -> Self {
        let ns = |clock| {
            let t = clock_gettime(clock);
            t.tv_sec * 1_000_000_000 + t.tv_nsec
        };
        // Monotonic on both sides of the wall clock, and their middle: the pair is then off
        // by half the reading's duration at most, tens of nanoseconds.
        let before = ns(ClockId::Monotonic);
        let realtime_ns = ns(ClockId::Realtime);
        let after = ns(ClockId::Monotonic);
        ClockSample { realtime_ns, monotonic_ns: before + (after - before) / 2 }
    }

    /// Wall-clock microseconds since the Unix epoch of the monotonic instant `ktime_ns` (the
    /// legacy envelope carries microseconds, the current one milliseconds); 0 for an instant
    /// before the epoch (a wall clock set before 1970).
    pub fn wall_us(&self, ktime_ns: u64) -> u64 {
        let ns = i128::from(ktime_ns) + i128::from(self.realtime_ns) - i128::from(self.monotonic_ns);
        u64::try_from(ns.div_euclid(1_000)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn a_stepped_wall_clock_is_followed_from_the_next_sample_on() {
        // Booted 100 s ago with the wall clock at 2009-01-03 18:15:05 UTC (no NTP yet).
        let before_step = ClockSample { realtime_ns: 1_231_006_505 * S, monotonic_ns: 100 * S };
        let fired = (99 * S + 250_000_000) as u64;
        assert_eq!(before_step.wall_us(fired), 1_231_006_504_250_000);
        // NTP steps the clock forward to 2026-12-01 00:00:00 UTC one second later.
        let after_step = ClockSample { realtime_ns: 1_796_083_200 * S, monotonic_ns: 101 * S };
        let fired_after = (100 * S + 500_000_000) as u64;
        assert_eq!(after_step.wall_us(fired_after), 1_796_083_199_500_000);
        // An event that fired before the step and is published after it is placed in the
        // corrected clock: its distance to "now" is what the monotonic clock measured.
        assert_eq!(after_step.wall_us(fired), 1_796_083_198_250_000);
    }

    #[test]
    fn a_clock_stepped_backwards_is_followed_too() {
        let sample = ClockSample { realtime_ns: 1_796_083_200 * S, monotonic_ns: 5_000 * S };
        let fired = (5_000 * S + 999_999) as u64;
        assert_eq!(sample.wall_us(fired), 1_796_083_200_000_999);
        // One second later the clock is set back an hour: the event, a second before that
        // sample, is an hour and a second before the clock it reads then.
        let stepped_back = ClockSample { realtime_ns: 1_796_083_201 * S - 3_600 * S, monotonic_ns: 5_001 * S };
        assert_eq!(stepped_back.wall_us(fired), 1_796_079_600_000_999);
    }

    #[test]
    fn before_the_epoch_is_zero_and_microseconds_round_down() {
        let sample = ClockSample { realtime_ns: 2 * S, monotonic_ns: 10 * S };
        assert_eq!(sample.wall_us((7 * S) as u64), 0);
        assert_eq!(sample.wall_us((8 * S + 1_999) as u64), 1);
    }

    #[test]
    fn a_fresh_sample_matches_the_system_clock() {
        let sample = ClockSample::now();
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let monotonic = clock_gettime(ClockId::Monotonic);
        let now_ms = sample.wall_us((monotonic.tv_sec * S + monotonic.tv_nsec) as u64) / 1_000;
        assert!(now_ms.abs_diff(wall) < 1_000, "{now_ms} vs {wall}");
    }
}
