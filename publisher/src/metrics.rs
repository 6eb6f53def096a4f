//! The counters in Prometheus' text format, on a small HTTP endpoint (`--metrics-address`).
//! Every request, whatever its path, gets the current counters; nothing is read from it but
//! its head, so a client can neither change nor stall anything.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use ipc_protocol::{DropCause, Tracepoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::counters::{Counters, Snapshot};
use crate::decode::RecordError;
use crate::jetstream::GaveUp;

const PREFIX: &str = "peer_observer_ebpf";

/// Renders one counter family: `# TYPE` line, then a sample per label set.
fn family(out: &mut String, name: &str, help: &str, samples: impl IntoIterator<Item = (String, u64)>) {
    let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}\n# TYPE {PREFIX}_{name} counter");
    for (labels, value) in samples {
        let _ = writeln!(out, "{PREFIX}_{name}{labels} {value}");
    }
}

fn tp_label(tp: impl std::fmt::Display) -> String {
    format!("{{tracepoint=\"{tp}\"}}")
}

/// `counted`, with every other key of `all` at 0. A series must exist before its first count
/// for Prometheus' `increase()` to see that count (monitoring/alerts.yml): one that appears
/// with its first loss, or after a restart, would raise no alert.
fn with_zeros<K: Ord + Clone>(counted: &BTreeMap<K, u64>, all: impl IntoIterator<Item = K>) -> BTreeMap<K, u64> {
    let mut filled: BTreeMap<K, u64> = all.into_iter().map(|k| (k, 0)).collect();
    filled.extend(counted.iter().map(|(k, n)| (k.clone(), *n)));
    filled
}

/// Every tracepoint with each of `labels`.
fn tracepoints_with<L: Copy>(labels: &[L]) -> impl Iterator<Item = (Tracepoint, L)> + '_ {
    Tracepoint::ALL.iter().flat_map(move |tp| labels.iter().map(move |l| (*tp, *l)))
}

pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let per_tp = |m: &BTreeMap<Tracepoint, u64>| {
        with_zeros(m, Tracepoint::ALL.iter().copied()).into_iter().map(|(tp, n)| (tp_label(tp), n)).collect::<Vec<_>>()
    };
    // By subject too, unprefixed (`--nats-subject-prefix` is the same for all): per-subject
    // rates without a tracepoint-to-subject mapping in every query.
    let per_subject = |m: &BTreeMap<Tracepoint, u64>| {
        with_zeros(m, Tracepoint::ALL.iter().copied())
            .into_iter()
            .map(|(tp, n)| (format!("{{tracepoint=\"{tp}\",subject=\"{}\"}}", tp.subject()), n))
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "published_total",
        "Events handed to NATS (under --stdout: written to standard output).",
        per_subject(&s.published),
    );
    family(
        &mut out,
        "published_bytes_total",
        "Bytes of the events handed to NATS (their protobuf payloads).",
        per_subject(&s.published_bytes),
    );
    family(
        &mut out,
        "invalid_records_total",
        "Records refused by validation, dropped.",
        with_zeros(&s.invalid, tracepoints_with(&RecordError::LABELS))
            .into_iter()
            .map(|((tp, reason), n)| (format!("{{tracepoint=\"{tp}\",reason=\"{reason}\"}}"), n)),
    );
    family(
        &mut out,
        "anomalies_total",
        "Published events with a truncated string, invalid UTF-8 or an undecodable payload.",
        s.anomalies.iter().map(|((tp, kind), n)| (format!("{{tracepoint=\"{tp}\",kind=\"{kind}\"}}"), *n)),
    );
    family(
        &mut out,
        "publish_failed_total",
        "Events NATS refused (under --stdout: that could not be written), dropped.",
        per_tp(&s.publish_failed),
    );
    family(
        &mut out,
        "nats_unavailable_total",
        "Events dropped while NATS was unreachable and the client buffer full.",
        per_tp(&s.nats_unavailable),
    );
    family(
        &mut out,
        "over_max_payload_total",
        "Events over the NATS server's max_payload (less the Nats-Msg-Id header in JetStream mode), dropped.",
        per_tp(&s.over_max_payload),
    );
    family(
        &mut out,
        "dropped_before_publisher_total",
        "Events the BPF programs or the loader could not hand on, as the loader reports them.",
        with_zeros(&s.dropped_before, tracepoints_with(&DropCause::ALL.map(DropCause::as_str)))
            .into_iter()
            .map(|((tp, cause), n)| (format!("{{tracepoint=\"{tp}\",cause=\"{cause}\"}}"), n)),
    );
    family(
        &mut out,
        "fragment_lost_total",
        "Fragmented records that arrived incomplete, dropped.",
        per_tp(&s.fragment_lost),
    );
    family(
        &mut out,
        "jetstream_acknowledged_total",
        "Events JetStream acknowledged as stored (JetStream mode).",
        per_tp(&s.jetstream_acknowledged),
    );
    family(
        &mut out,
        "jetstream_gave_up_total",
        "Events JetStream did not acknowledge within the retry budget or before the publisher stopped, dropped.",
        with_zeros(&s.jetstream_gave_up, tracepoints_with(&GaveUp::ALL))
            .into_iter()
            .map(|((tp, cause), n)| (format!("{{tracepoint=\"{tp}\",cause=\"{}\"}}", cause.as_str()), n)),
    );
    family(
        &mut out,
        "malformed_datagrams_total",
        "Datagrams from the loader refused whole.",
        [(String::new(), s.malformed_datagrams)],
    );
    family(
        &mut out,
        "lost_datagrams_total",
        "Datagrams missing from the loader's sequence.",
        [(String::new(), s.lost_datagrams)],
    );
    // A state, not a count: 0 while the NATS client is disconnected (events then wait in its
    // buffer, or are counted as nats_unavailable).
    let _ = writeln!(
        out,
        "# HELP {PREFIX}_nats_connected Whether the publisher is connected to NATS (1) or not (0).\n\
         # TYPE {PREFIX}_nats_connected gauge\n{PREFIX}_nats_connected {}",
        u8::from(s.nats_connected)
    );
    out
}

/// Scrapes answered at once: clients that open many connections and send nothing hold at most
/// this many tasks and descriptors.
pub const MAX_CONNECTIONS: usize = 8;

/// Answers scrapes until the process ends. A connection beyond [`MAX_CONNECTIONS`] closes the
/// oldest still open, not itself: a scrape is answered within a millisecond of connecting, so
/// the oldest is the one waiting for a request that may never come, and idle connections held
/// open cannot lock Prometheus out (more than 8 opened within one scrape's span still can).
pub async fn serve(listener: TcpListener, counters: Arc<Counters>) {
    let mut open: std::collections::VecDeque<tokio::task::JoinHandle<()>> = std::collections::VecDeque::new();
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                open.retain(|task| !task.is_finished());
                if open.len() >= MAX_CONNECTIONS {
                    tracing::debug!("metrics endpoint: {MAX_CONNECTIONS} connections open, closing the oldest");
                    if let Some(oldest) = open.pop_front() {
                        oldest.abort();
                    }
                }
                let counters = Arc::clone(&counters);
                open.push_back(tokio::spawn(async move {
                    // Bounded: a client that never finishes its request cannot hold a task.
                    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), answer(conn, &counters)).await {
                        tracing::debug!("metrics request failed: {e}");
                    }
                }));
            }
            Err(e) => {
                tracing::warn!("metrics endpoint: accept failed: {e}");
                // The failed connection stays queued: accepting again at once would spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut conn: TcpStream, counters: &Counters) -> std::io::Result<()> {
    // Read the request head (up to 4 KiB); its content does not matter.
    let mut head = vec![0u8; 4096];
    let mut read = 0;
    while read < head.len() && !head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut head[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let body = render(&counters.snapshot());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_protocol::DropCount;

    /// A publisher that has counted nothing yet (just started, or restarted) serves every
    /// series an event can be counted in, at 0.
    #[test]
    fn every_series_of_a_count_is_served_at_zero_before_it() {
        let text = render(&Counters::default().snapshot());
        let has = |line: String| assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
        for tp in Tracepoint::ALL {
            for family in ["published", "published_bytes"] {
                has(format!("{PREFIX}_{family}_total{{tracepoint=\"{tp}\",subject=\"{}\"}} 0", tp.subject()));
            }
            for family in ["publish_failed", "nats_unavailable", "over_max_payload", "fragment_lost"] {
                has(format!("{PREFIX}_{family}_total{{tracepoint=\"{tp}\"}} 0"));
            }
            for cause in DropCause::ALL {
                has(format!(
                    "{PREFIX}_dropped_before_publisher_total{{tracepoint=\"{tp}\",cause=\"{}\"}} 0",
                    cause.as_str()
                ));
            }
            for reason in RecordError::LABELS {
                has(format!("{PREFIX}_invalid_records_total{{tracepoint=\"{tp}\",reason=\"{reason}\"}} 0"));
            }
            for cause in GaveUp::ALL {
                has(format!("{PREFIX}_jetstream_gave_up_total{{tracepoint=\"{tp}\",cause=\"{}\"}} 0", cause.as_str()));
            }
        }
    }

    #[test]
    fn counters_render_in_prometheus_text_format() {
        let counters = Counters::default();
        counters.published(Tracepoint::MempoolAdded, 60);
        counters.published(Tracepoint::MempoolAdded, 61);
        counters.invalid(Tracepoint::MempoolRejected, "missing_nul");
        counters.dropped_before(
            1,
            &[DropCount { tracepoint: Tracepoint::NetInboundMessage, cause: DropCause::RingFull, total: 7 }],
        );
        let text = render(&counters.snapshot());
        for line in [
            "# TYPE peer_observer_ebpf_published_total counter",
            "peer_observer_ebpf_published_total{tracepoint=\"mempool:added\",subject=\"mempool\"} 2",
            "peer_observer_ebpf_published_bytes_total{tracepoint=\"mempool:added\",subject=\"mempool\"} 121",
            "peer_observer_ebpf_invalid_records_total{tracepoint=\"mempool:rejected\",reason=\"missing_nul\"} 1",
            "peer_observer_ebpf_dropped_before_publisher_total{tracepoint=\"net:inbound_message\",cause=\"ring_full\"} 7",
            "peer_observer_ebpf_lost_datagrams_total 0",
            "# TYPE peer_observer_ebpf_nats_connected gauge",
            "peer_observer_ebpf_nats_connected 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
        }
        counters.set_nats_connected(true);
        assert!(render(&counters.snapshot()).lines().any(|l| l == "peer_observer_ebpf_nats_connected 1"));
    }
}
