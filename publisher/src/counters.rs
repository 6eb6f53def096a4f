//! What happened to every event that reached the publisher, and what the loader reports as
//! dropped before it. Logged as it grows and at exit; served on `--metrics-address`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use ipc_protocol::{DropCount, Tracepoint};

use crate::jetstream::GaveUp;

#[derive(Default)]
pub struct Counters {
    inner: Mutex<Inner>,
}

#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub published: BTreeMap<Tracepoint, u64>,
    /// Bytes of the published events' payloads.
    pub published_bytes: BTreeMap<Tracepoint, u64>,
    /// Records refused by validation, by reason label.
    pub invalid: BTreeMap<(Tracepoint, &'static str), u64>,
    /// Published events with something worth counting (truncation, bad UTF-8, undecodable).
    pub anomalies: BTreeMap<(Tracepoint, String), u64>,
    /// Events that could not be handed to NATS.
    pub publish_failed: BTreeMap<Tracepoint, u64>,
    /// Events dropped because NATS was unreachable and the client's buffer was full.
    pub nats_unavailable: BTreeMap<Tracepoint, u64>,
    /// Events larger than the NATS server's `max_payload` (less the `Nats-Msg-Id` header in
    /// JetStream mode).
    pub over_max_payload: BTreeMap<Tracepoint, u64>,
    /// Events the loaders reported dropped before they reached the publisher, by
    /// `tracepoint/cause`, summed over loader runs.
    pub dropped_before: BTreeMap<(Tracepoint, &'static str), u64>,
    /// Datagrams refused whole (malformed framing).
    pub malformed_datagrams: u64,
    /// Record-carrying datagrams missing from the loader's sequence.
    pub lost_datagrams: u64,
    /// Records whose fragments arrived incomplete or out of order.
    pub fragment_lost: BTreeMap<Tracepoint, u64>,
    /// Whether the NATS client is connected now, as its events last said.
    pub nats_connected: bool,
    /// Events JetStream acknowledged (JetStream mode).
    pub jetstream_acknowledged: BTreeMap<Tracepoint, u64>,
    /// Events JetStream never acknowledged, by cause (JetStream mode).
    pub jetstream_gave_up: BTreeMap<(Tracepoint, GaveUp), u64>,
}

/// Loader runs whose latest drop totals are kept: a run reports running totals, again in full
/// after a reconnection, so what grew is what exceeds its own last report. A publisher outlives
/// its loaders (one per bitcoind process, one after each idle exit); only the latest few can
/// still be connected.
const RUNS_KEPT: usize = 16;

/// A loader run's latest totals, by `tracepoint/cause`.
type RunTotals = BTreeMap<(Tracepoint, &'static str), u64>;

/// Keeps `totals` as run `run_id`'s, the latest, forgetting the oldest run past [`RUNS_KEPT`].
fn keep_latest(runs: &mut VecDeque<(u128, RunTotals)>, run_id: u128, totals: RunTotals) {
    if runs.len() == RUNS_KEPT {
        runs.pop_front();
    }
    runs.push_back((run_id, totals));
}

#[derive(Default)]
struct Inner {
    snapshot: Snapshot,
    /// The most recently reporting runs, by `Hello::run_id`, the latest last.
    runs: VecDeque<(u128, RunTotals)>,
}

impl Counters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.lock().snapshot);
    }

    /// An event of `bytes` handed to NATS.
    pub fn published(&self, tp: Tracepoint, bytes: usize) {
        self.with(|c| {
            *c.published.entry(tp).or_default() += 1;
            *c.published_bytes.entry(tp).or_default() += bytes as u64;
        });
    }

    pub fn invalid(&self, tp: Tracepoint, reason: &'static str) {
        self.with(|c| *c.invalid.entry((tp, reason)).or_default() += 1);
    }

    pub fn anomaly(&self, tp: Tracepoint, label: String) {
        self.with(|c| *c.anomalies.entry((tp, label)).or_default() += 1);
    }

    pub fn publish_failed(&self, tp: Tracepoint) {
        self.with(|c| *c.publish_failed.entry(tp).or_default() += 1);
    }

    pub fn nats_unavailable(&self, tp: Tracepoint) {
        self.with(|c| *c.nats_unavailable.entry(tp).or_default() += 1);
    }

    pub fn over_max_payload(&self, tp: Tracepoint) {
        self.with(|c| *c.over_max_payload.entry(tp).or_default() += 1);
    }

    pub fn jetstream_acknowledged(&self, tp: Tracepoint) {
        self.with(|c| *c.jetstream_acknowledged.entry(tp).or_default() += 1);
    }

    pub fn jetstream_gave_up(&self, tp: Tracepoint, cause: GaveUp) {
        self.with(|c| *c.jetstream_gave_up.entry((tp, cause)).or_default() += 1);
    }

    pub fn lost_datagrams(&self, n: u64) {
        // `n` is a gap in the loader's numbering, which a broken one could make near u64::MAX.
        self.with(|c| c.lost_datagrams = c.lost_datagrams.saturating_add(n));
    }

    pub fn fragment_lost(&self, tp: Tracepoint) {
        self.with(|c| *c.fragment_lost.entry(tp).or_default() += 1);
    }

    pub fn malformed_datagram(&self) {
        self.with(|c| c.malformed_datagrams += 1);
    }

    /// The NATS client connected (`true`) or lost its connection (`false`).
    pub fn set_nats_connected(&self, connected: bool) {
        self.with(|c| c.nats_connected = connected);
    }

    /// A connection of loader run `run_id`, whose hello says which of its drop totals a
    /// publisher already counted: a run this publisher has not seen counts from those (a
    /// restarted publisher does not count again what the last one did), a new run from zero.
    pub fn loader_connected(&self, run_id: u128, reported: &[DropCount]) {
        let mut inner = self.lock();
        if inner.runs.iter().any(|(id, _)| *id == run_id) {
            return;
        }
        let totals = reported.iter().map(|c| ((c.tracepoint, c.cause.as_str()), c.total)).collect();
        keep_latest(&mut inner.runs, run_id, totals);
    }

    /// Records the running totals of loader run `run_id`; returns those that grew since its
    /// last report (or since what its hello said was counted: [`Self::loader_connected`]).
    pub fn dropped_before(&self, run_id: u128, counts: &[DropCount]) -> Vec<(DropCount, u64)> {
        let mut grown = Vec::new();
        let mut inner = self.lock();
        let Inner { snapshot, runs } = &mut *inner;
        let mut totals = match runs.iter().position(|(id, _)| *id == run_id) {
            Some(at) => runs.remove(at).map(|(_, totals)| totals).unwrap_or_default(),
            None => RunTotals::new(),
        };
        for count in counts {
            let key = (count.tracepoint, count.cause.as_str());
            let last = totals.entry(key).or_default();
            if count.total > *last {
                let more = count.total - *last;
                *last = count.total;
                let sum = snapshot.dropped_before.entry(key).or_default();
                *sum = sum.saturating_add(more);
                grown.push((*count, more));
            }
        }
        keep_latest(runs, run_id, totals);
        grown
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().snapshot.clone()
    }
}

impl Snapshot {
    /// Every loss counter by the name a log line gives it, e.g. `mempool:added ring_full`.
    pub fn losses(&self) -> BTreeMap<String, u64> {
        let mut losses = BTreeMap::new();
        for ((tp, reason), n) in &self.invalid {
            losses.insert(format!("{tp} invalid_{reason}"), *n);
        }
        for ((tp, cause), n) in &self.dropped_before {
            losses.insert(format!("{tp} {cause}"), *n);
        }
        for ((tp, cause), n) in &self.jetstream_gave_up {
            losses.insert(format!("{tp} jetstream_gave_up_{}", cause.as_str()), *n);
        }
        for (cause, per_tp) in [
            ("publish_failed", &self.publish_failed),
            ("nats_unavailable", &self.nats_unavailable),
            ("over_max_payload", &self.over_max_payload),
            ("fragment_lost", &self.fragment_lost),
        ] {
            for (tp, n) in per_tp {
                losses.insert(format!("{tp} {cause}"), *n);
            }
        }
        losses.insert("malformed_datagrams".into(), self.malformed_datagrams);
        losses.insert("lost_datagrams".into(), self.lost_datagrams);
        losses
    }
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sum = |m: &BTreeMap<_, u64>| m.values().sum::<u64>();
        write!(
            f,
            "published={} invalid={} publish_failed={} nats_unavailable={} over_max_payload={} dropped_before_publisher={} malformed_datagrams={} lost_datagrams={} fragment_lost={} jetstream_acknowledged={} jetstream_gave_up={}",
            sum(&self.published),
            self.invalid.values().sum::<u64>(),
            sum(&self.publish_failed),
            sum(&self.nats_unavailable),
            sum(&self.over_max_payload),
            self.dropped_before.values().sum::<u64>(),
            self.malformed_datagrams,
            self.lost_datagrams,
            sum(&self.fragment_lost),
            sum(&self.jetstream_acknowledged),
            self.jetstream_gave_up.values().sum::<u64>()
        )?;
        for ((tp, label), n) in &self.anomalies {
            write!(f, " {tp}/{label}={n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_protocol::records::DropCause;

    fn ring_full(tracepoint: Tracepoint, total: u64) -> DropCount {
        DropCount { tracepoint, cause: DropCause::RingFull, total }
    }

    fn grown(reported: Vec<(DropCount, u64)>) -> Vec<u64> {
        reported.into_iter().map(|(_, more)| more).collect()
    }

    #[test]
    fn each_loader_run_counts_from_zero_and_a_repeated_total_counts_once() {
        let counters = Counters::default();
        let tp = Tracepoint::MempoolAdded;
        let dropped = |counters: &Counters| counters.snapshot().dropped_before[&(tp, "ring_full")];
        assert_eq!(grown(counters.dropped_before(1, &[ring_full(tp, 50)])), [50]);
        assert_eq!(grown(counters.dropped_before(1, &[ring_full(tp, 70)])), [20]);
        // The same run again, as after a reconnection: nothing new.
        assert_eq!(grown(counters.dropped_before(1, &[ring_full(tp, 70)])), Vec::<u64>::new());
        // The next loader (a restarted bitcoind) counts from zero: its first 30 are new.
        assert_eq!(grown(counters.dropped_before(2, &[ring_full(tp, 30)])), [30]);
        assert_eq!(dropped(&counters), 100);
        // A forged total silences no other run.
        assert_eq!(grown(counters.dropped_before(3, &[ring_full(tp, u64::MAX)])), [u64::MAX]);
        assert_eq!(grown(counters.dropped_before(2, &[ring_full(tp, 31)])), [1]);
        assert_eq!(dropped(&counters), u64::MAX);
    }

    /// A restarted publisher learns from a run's hello what the last one counted, and counts
    /// only the rest; a run it already knows keeps its own totals.
    #[test]
    fn a_run_counts_from_what_its_hello_says_was_counted() {
        let counters = Counters::default();
        let tp = Tracepoint::MempoolAdded;
        counters.loader_connected(1, &[ring_full(tp, 50)]);
        assert_eq!(grown(counters.dropped_before(1, &[ring_full(tp, 50)])), Vec::<u64>::new());
        assert_eq!(grown(counters.dropped_before(1, &[ring_full(tp, 58)])), [8]);
        // Reconnected: this publisher's own totals stand.
        counters.loader_connected(1, &[ring_full(tp, 50)]);
        assert_eq!(grown(counters.dropped_before(1, &[ring_full(tp, 58)])), Vec::<u64>::new());
        assert_eq!(counters.snapshot().dropped_before[&(tp, "ring_full")], 8);
    }

    /// A gap in a broken loader's datagram numbering can be near u64::MAX: the count stays there.
    #[test]
    fn lost_datagrams_saturate() {
        let counters = Counters::default();
        counters.lost_datagrams(u64::MAX - 1);
        counters.lost_datagrams(5);
        assert_eq!(counters.snapshot().lost_datagrams, u64::MAX);
    }

    #[test]
    fn only_the_latest_runs_are_kept() {
        let counters = Counters::default();
        let tp = Tracepoint::NetInboundMessage;
        for run in 0..=RUNS_KEPT as u128 {
            counters.dropped_before(run, &[ring_full(tp, 1)]);
        }
        assert_eq!(counters.lock().runs.len(), RUNS_KEPT);
        // Run 0 was the oldest: forgotten, so its total counts again; run 1 is still known.
        assert_eq!(grown(counters.dropped_before(1, &[ring_full(tp, 1)])), Vec::<u64>::new());
        assert_eq!(grown(counters.dropped_before(0, &[ring_full(tp, 1)])), [1]);
    }
}
