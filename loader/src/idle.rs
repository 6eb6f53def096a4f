//! The seed's inactivity rule: a warning every `warn_after` without events; the caller gives
//! up at the first warning past `--idle-exit-secs`, unless `--no-idle-exit`.

use std::time::{Duration, Instant};

pub struct Idle {
    since: Instant,
    next_warning: Duration,
    warn_after: Duration,
}

impl Idle {
    pub fn new(warn_after: Duration, now: Instant) -> Self {
        Idle { since: now, next_warning: warn_after, warn_after }
    }

    /// Called once per loop turn with whether it found nothing to do; returns the idle
    /// seconds when a warning is due.
    pub fn tick(&mut self, quiet: bool, now: Instant) -> Option<u64> {
        if !quiet {
            self.since = now;
            self.next_warning = self.warn_after;
            return None;
        }
        let idle = now.duration_since(self.since);
        if idle < self.next_warning {
            return None;
        }
        self.next_warning += self.warn_after;
        Some(idle.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_per_interval_while_quiet_and_starts_over_after_an_event() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut idle = Idle::new(Duration::from_secs(60), start);
        let warnings: Vec<_> = [30, 59, 60, 61, 119, 120, 185].iter().map(|&s| idle.tick(true, at(s))).collect();
        assert_eq!(warnings, [None, None, Some(60), None, None, Some(120), Some(185)]);
        assert_eq!(idle.tick(false, at(190)), None);
        assert_eq!(idle.tick(true, at(249)), None);
        assert_eq!(idle.tick(true, at(250)), Some(60));
    }
}
