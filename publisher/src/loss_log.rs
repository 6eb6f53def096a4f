//! One warning per interval naming every loss counter that grew. Under overload, when losses
//! matter most, a warning per event would flood the journal and cost the CPU that delivery
//! needs; the per-event details are logged at trace level, below the launcher's default of
//! debug (the seed's).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::counters::Snapshot;
use crate::decode::UNDECODED_OVER_MAX_PAYLOAD;
use crate::sink::RECOMMENDED_MAX_PAYLOAD;

/// How often growth is reported at most.
pub const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct LossLog {
    reported: BTreeMap<String, u64>,
    /// P2P messages published undecoded for the server's `max_payload`, as last reported.
    undecoded_reported: u64,
}

impl LossLog {
    /// Warns about what grew since the last call; `max_payload` is the NATS server's
    /// (`usize::MAX` on standard output, which has no limit to raise).
    pub fn report(&mut self, snapshot: &Snapshot, max_payload: usize) {
        for warning in self.warnings(snapshot, max_payload) {
            tracing::warn!("{warning}");
        }
    }

    /// What [`Self::report`] says: the losses that grew, and the setting that would have
    /// spared the events the server's `max_payload` cost, where raising it would.
    fn warnings(&mut self, snapshot: &Snapshot, max_payload: usize) -> Vec<String> {
        let mut warnings = Vec::new();
        let grown = self.grown(snapshot);
        if !grown.is_empty() {
            let list: Vec<String> = grown.iter().map(|(name, n)| format!("{name} +{n}")).collect();
            warnings.push(format!(
                "events lost since the last report: {}; totals on --metrics-address and at exit",
                list.join(", ")
            ));
        }
        let undecoded: u64 = snapshot
            .anomalies
            .iter()
            .filter(|((_, label), _)| label.starts_with(UNDECODED_OVER_MAX_PAYLOAD))
            .map(|(_, n)| n)
            .sum();
        let undecoded_grown = undecoded - self.undecoded_reported.min(undecoded);
        self.undecoded_reported = undecoded;
        // Above the recommended size, only crafted payloads come this far: nothing to set.
        if max_payload >= RECOMMENDED_MAX_PAYLOAD {
            return warnings;
        }
        let too_big: u64 = grown.iter().filter(|(name, _)| name.ends_with(" over_max_payload")).map(|(_, n)| n).sum();
        if too_big > 0 {
            warnings.push(format!(
                "{too_big} events each exceeds what the NATS server's max_payload of {max_payload} bytes allows: \
                 set `max_payload: {RECOMMENDED_MAX_PAYLOAD}` (5 MiB) in nats-server's configuration"
            ));
        }
        if undecoded_grown > 0 {
            warnings.push(format!(
                "{undecoded_grown} P2P messages were published undecoded, as `unknown`: decoded, each \
                 would exceed the NATS server's max_payload of {max_payload} bytes: set \
                 `max_payload: {RECOMMENDED_MAX_PAYLOAD}` (5 MiB) in nats-server's configuration"
            ));
        }
        warnings
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

    /// Raising `max_payload` is advised only where it is under the recommended size, for
    /// events dropped and for messages published undecoded alike.
    #[test]
    fn advises_the_recommended_max_payload_only_below_it() {
        let mut snapshot = Snapshot::default();
        snapshot.over_max_payload.insert(Tracepoint::NetInboundMessage, 2);
        let label = format!("{UNDECODED_OVER_MAX_PAYLOAD}block");
        snapshot.anomalies.insert((Tracepoint::NetInboundMessage, label.clone()), 3);
        let advice = |warnings: Vec<String>| -> Vec<String> {
            warnings.into_iter().filter(|w| w.contains("set `max_payload: 5242880`")).collect()
        };

        let mut log = LossLog::default();
        let warnings = advice(log.warnings(&snapshot, 1 << 20));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("2 events each exceeds what the NATS server's max_payload of 1048576 bytes allows")
        );
        assert!(warnings[1].starts_with("3 P2P messages were published undecoded"));
        assert_eq!(log.warnings(&snapshot, 1 << 20), Vec::<String>::new(), "nothing grew");

        snapshot.over_max_payload.insert(Tracepoint::NetInboundMessage, 3);
        snapshot.anomalies.insert((Tracepoint::NetInboundMessage, label), 4);
        let mut log = LossLog::default();
        let warnings = log.warnings(&snapshot, RECOMMENDED_MAX_PAYLOAD);
        assert_eq!(advice(warnings.clone()), Vec::<String>::new(), "{warnings:?}");
        assert_eq!(warnings.len(), 1, "the loss itself: {warnings:?}");
    }
}
