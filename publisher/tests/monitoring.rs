//! Every query of the Grafana dashboard and every alerting rule (monitoring/) names metrics the
//! publisher really exports, and groups them only by labels those metrics carry.

use std::collections::{BTreeMap, BTreeSet};

use ipc_protocol::{DropCause, DropCount, Tracepoint};
use publisher::counters::Counters;

const PREFIX: &str = "peer_observer_ebpf_";

/// What the publisher exports: each metric with its label names, from a render in which every
/// family has a sample.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let counters = Counters::default();
    let tp = Tracepoint::MempoolAdded;
    counters.published(tp, 100);
    counters.invalid(tp, "wrong_size");
    counters.anomaly(tp, "truncated_reason".into());
    counters.publish_failed(tp);
    counters.nats_unavailable(tp);
    counters.over_max_payload(tp);
    counters.lost_datagrams(1);
    counters.fragment_lost(tp);
    counters.malformed_datagram();
    counters.dropped_before(1, &[DropCount { tracepoint: tp, cause: DropCause::RingFull, total: 1 }]);
    counters.set_nats_connected(true);
    counters.jetstream_acknowledged(tp);
    counters.jetstream_gave_up(tp, publisher::jetstream::GaveUp::Timeout);
    let text = publisher::metrics::render(&counters.snapshot());
    let mut metrics = BTreeMap::<String, BTreeSet<String>>::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.split_once('}').map_or("", |(labels, _)| labels)),
            None => (line.split_whitespace().next().unwrap_or_default(), ""),
        };
        let labels = labels.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, _)| k.to_string());
        metrics.entry(name.to_string()).or_default().extend(labels);
    }
    metrics
}

/// The metric names an expression uses: by name, or as the alternatives of a
/// `{__name__=~"peer_observer_ebpf_(a|b)_total"}` selector.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let name_end = |s: &str| s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(PREFIX) {
        let tail = &rest[at + PREFIX.len()..];
        if let Some(group) = tail.strip_prefix('(') {
            let close = group.find(')').expect("a closed alternation");
            let suffix = &group[close + 1..][..name_end(&group[close + 1..])];
            names.extend(group[..close].split('|').map(|alt| format!("{PREFIX}{alt}{suffix}")));
            rest = &group[close + 1..];
        } else {
            let end = name_end(tail);
            names.insert(format!("{PREFIX}{}", &tail[..end]));
            rest = &tail[end..];
        }
    }
    names
}

/// The labels an expression groups by (`by (a, b)`).
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let tail = &rest[at + 4..];
        let end = tail.find(')').expect("a closed `by (...)`");
        labels.extend(tail[..end].split(',').map(|l| l.trim().to_string()));
        rest = &tail[end..];
    }
    labels
}

fn check(source: &str, expr: &str, exported: &BTreeMap<String, BTreeSet<String>>) {
    let names = metric_names(expr);
    assert!(!names.is_empty(), "{source}: {expr:?} names no metric of the publisher");
    for name in &names {
        assert!(
            exported.contains_key(name),
            "{source}: {name} is not exported; the publisher has {:?}",
            exported.keys()
        );
    }
    for label in grouping_labels(expr) {
        // `instance` is Prometheus' own, added at scrape.
        let carried = label == "instance" || names.iter().any(|n| exported[n].contains(&label));
        assert!(carried, "{source}: no metric of {expr:?} carries the label {label}");
    }
}

fn monitoring_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn every_dashboard_query_names_exported_metrics_and_labels() {
    let exported = exported();
    let dashboard: serde_json::Value =
        serde_json::from_str(&monitoring_file("grafana-dashboard.json")).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in &exprs {
        check("grafana-dashboard.json", expr, &exported);
    }
    // Loss, bytes and the NATS state all have a panel.
    let all = exprs.concat();
    for family in ["dropped_before_publisher_total", "published_bytes_total", "nats_connected", "published_total"] {
        assert!(all.contains(&format!("{PREFIX}{family}")), "no panel shows {family}");
    }
}

#[test]
fn every_alerting_rule_names_exported_metrics_and_labels() {
    let exported = exported();
    let rules = monitoring_file("alerts.yml");
    // Each rule's `expr:`, folded (`>-`) over the more indented lines that follow it.
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, value)) = line.split_once("expr:") else { continue };
        let mut expr = value.trim().trim_start_matches(">-").trim().to_string();
        while let Some(next) = lines.peek() {
            if next.trim().is_empty() || next.len() - next.trim_start().len() <= indent.len() {
                break;
            }
            expr.push(' ');
            expr.push_str(next.trim());
            lines.next();
        }
        exprs.push(expr);
    }
    assert_eq!(exprs.len(), rules.matches("- alert:").count(), "one expr per rule");
    for expr in &exprs {
        check("alerts.yml", expr, &exported);
    }
}

/// The alerting rules load, and each fires where an operator needs it: promtool runs
/// monitoring/alerts.test.yml against them (a first loss, lost datagrams, one of several nodes
/// gone, a publisher that publishes nothing since its start).
#[test]
fn alerting_rules_fire_where_an_operator_needs_them() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../monitoring");
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run promtool (scripts/install-deps.sh --tests installs it)");
        let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {}:\n{output}", args.join(" "));
    }
}
