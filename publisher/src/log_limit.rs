//! Warnings about what can repeat without end (a peer connecting in a loop, a server refusing
//! every reconnection, JetStream giving up on event after event), at most one per interval, so
//! that none floods the journal.

use std::time::Duration;

/// How often each such warning is logged at most.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// At most one warning per interval, saying how many were not logged.
pub(crate) struct RateLimited {
    interval: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimited {
    pub(crate) const fn new(interval: Duration) -> Self {
        RateLimited { interval, last: None, suppressed: 0 }
    }

    /// Calls `log` with the number of events not logged since the last call, if one is due.
    pub(crate) fn log(&mut self, log: impl FnOnce(u64)) {
        if self.last.is_some_and(|last| last.elapsed() < self.interval) {
            self.suppressed += 1;
            return;
        }
        self.last = Some(std::time::Instant::now());
        log(std::mem::take(&mut self.suppressed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_once_per_interval_with_the_count_left_out() {
        let mut limit = RateLimited::new(Duration::from_secs(3600));
        let mut logged = Vec::new();
        for _ in 0..5 {
            limit.log(|suppressed| logged.push(suppressed));
        }
        assert_eq!(logged, [0]);
        limit.last = Some(std::time::Instant::now() - Duration::from_secs(3601));
        limit.log(|suppressed| logged.push(suppressed));
        assert_eq!(logged, [0, 4]);
    }
}
