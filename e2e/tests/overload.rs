//! Under load, nothing is lost silently: every event fired is published or counted with its
//! cause, exactly, per tracepoint.

use std::collections::BTreeMap;

use e2e::{
    free_address, per_tracepoint, scrape_metrics, start_loader, start_publisher, NatsServer, Pipeline, Simulator,
    TempDir, LOADER_UID,
};
use ipc_protocol::Tracepoint;

/// Bitcoin Core's twelve tracepoints fired as fast as the simulator can, into rings far
/// smaller than the defaults: fired = published + dropped, per tracepoint, with drops. Twice,
/// one publisher serving both: a restarted bitcoind is followed by a new loader, whose drop
/// totals start from zero again, and its drops count in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fired_equals_published_plus_counted_drops() {
    const ROUNDS: u64 = 20_000;
    let nats = NatsServer::start().await;
    let dir = TempDir::new("overload");
    let socket = dir.path().join("publisher.sock");
    let address = free_address();
    let mut publisher = start_publisher(
        &nats.address,
        &socket,
        &["--loader-uid", &LOADER_UID.to_string(), "--metrics-address", &address],
    )
    .await;
    let small = ["--message-ring-bytes", "8388608", "--event-ring-bytes", "65536"];
    let mut fired = BTreeMap::<Tracepoint, u64>::new();
    for seed in [9, 10] {
        let simulator = Simulator::start("default", ROUNDS, seed);
        let mut loader = start_loader(dir.path(), &socket, simulator.pid(), &small).await;
        for (tp, n) in simulator.fire().await {
            *fired.entry(tp).or_default() += n;
        }
        // The loader hands on what it holds and its final drop totals, then exits with bitcoind.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), loader.wait()).await.expect("loader exits");
    }

    let mut last = String::new();
    for _ in 0..100 {
        let metrics = scrape_metrics(&address);
        let published = per_tracepoint(&metrics, "published_total");
        let mut accounted = published.clone();
        for family in e2e::LOSS_FAMILIES {
            for (tp, n) in per_tracepoint(&metrics, family) {
                *accounted.entry(tp).or_default() += n;
            }
        }
        let want: BTreeMap<String, u64> = fired.iter().map(|(tp, n)| (tp.to_string(), *n)).collect();
        if accounted == want {
            let drops: u64 = per_tracepoint(&metrics, "dropped_before_publisher_total").values().sum();
            assert!(drops > 0, "the workload must overload the small rings:\n{metrics}");
            for tp in Tracepoint::defaults() {
                let name = tp.to_string();
                eprintln!(
                    "{name}: fired {} = published {} + counted {}",
                    want[&name],
                    published.get(&name).unwrap_or(&0),
                    accounted[&name] - published.get(&name).unwrap_or(&0)
                );
            }
            // Each drop was warned about, but in a line per interval, not per event.
            let log = e2e::stop_and_read_logs(&mut [&mut publisher]).await;
            let warnings: Vec<&str> =
                log.lines().filter(|l| l.contains("events lost since the last report: ")).collect();
            assert!((1..=6).contains(&warnings.len()), "{log}");
            let warned: u64 = warnings
                .iter()
                .flat_map(|line| line.split(", "))
                .filter(|item| item.contains(" ring_full +"))
                .map(|item| item.rsplit('+').next().and_then(|n| n.split(';').next()?.parse::<u64>().ok()).expect("+N"))
                .sum();
            assert_eq!(warned, drops, "{log}");
            return;
        }
        last = metrics;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("fired {fired:?} never matched published + counted drops:\n{last}");
}

/// A connected block removes its transactions from the mempool in one go: 5,000
/// `mempool:removed` fired back to back all arrive at default settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_5000_mempool_removals_is_delivered() {
    const ROUNDS: u64 = 5_000;
    let nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, dir: _dir, publisher: _publisher, loader: _loader } =
        Pipeline::start(&nats, "mempool:removed", ROUNDS, 10, &[]).await;
    assert_eq!(simulator.fire().await[&Tracepoint::MempoolRemoved], ROUNDS);
    let received = e2e::receive(&mut subscriber, ROUNDS as usize).await;
    assert_eq!(received.len() as u64, ROUNDS);
    for (seq, (_, event)) in received.into_iter().enumerate() {
        assert_eq!(e2e::ebpf_of(event), e2e::expect::event(Tracepoint::MempoolRemoved, 10, seq as u64).1, "#{seq}");
    }
}
