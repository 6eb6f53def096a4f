//! One warning per interval naming every loss counter that grew. Under overload, when losses
//! matter most, a warning per event would flood the journal and cost the CPU that delivery
//! needs; the per-event details are logged at debug level.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::counters::Snapshot;
use crate::server::RECOMMENDED_MAX_PAYLOAD;

/// How often growth is reported at most.
pub const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct LossLog {
    reported: BTreeMap<String, u64>,
}

impl LossLog {
    /// Warns about what grew since the last call; `max_payload` is the NATS server's.
    pub fn report(&mut self, snapshot: &Snapshot, max_payload: usize) {
        let grown = self.grown(snapshot);
        if grown.is_empty() {
            return;
        }
        let list: Vec<String> = grown.iter().map(|(name, n)| format!("{name} +{n}")).collect();
        tracing::warn!(
            "events lost since the last report: {}; totals on --metrics-address and at exit",
            list.join(", ")
        );
        let too_big: u64 = grown.iter().filter(|(name, _)| name.ends_with(" over_max_payload")).map(|(_, n)| n).sum();
        if too_big > 0 {
            tracing::warn!(
                "{too_big} events each exceeds the NATS server's max_payload of {max_payload} bytes: \
                 set `max_payload: {RECOMMENDED_MAX_PAYLOAD}` (5 MiB) in nats-server's configuration"
            );
        }
    }

    /// The loss counters that grew since the last call, with how much.
    fn grown(&mut self, snapshot: &Snapshot) -> Vec<(String, u64)> {
        let losses = snapshot.losses();
        let grown = losses
            .iter()
            .filter_map(|(name, n)| {
                let before = self.reported.get(name).copied().unwrap_or(0);
                (*n > before).then(|| (name.clone(), n - before))
            })
            .collect();
        self.reported = losses;
        grown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_protocol::Tracepoint;

    #[test]
    fn names_only_what_grew_and_by_how_much() {
        let mut snapshot = Snapshot::default();
        snapshot.nats_unavailable.insert(Tracepoint::MempoolAdded, 3);
        snapshot.invalid.insert((Tracepoint::MempoolRejected, "no_nul"), 1);
        snapshot.lost_datagrams = 1;
        let mut log = LossLog::default();
        assert_eq!(
            log.grown(&snapshot),
            [
                ("lost_datagrams".to_string(), 1),
                ("mempool:added nats_unavailable".to_string(), 3),
                ("mempool:rejected invalid_no_nul".to_string(), 1),
            ]
        );
        assert_eq!(log.grown(&snapshot), []);
        snapshot.nats_unavailable.insert(Tracepoint::MempoolAdded, 5);
        assert_eq!(log.grown(&snapshot), [("mempool:added nats_unavailable".to_string(), 2)]);
    }
}
