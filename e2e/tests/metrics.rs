//! The publisher's counters, served for Prometheus, count what went through the pipeline.

use e2e::{free_address, scrape_metrics, start_loader, start_publisher, NatsServer, Simulator, TempDir, LOADER_UID};
use ipc_protocol::Tracepoint;
use prost::Message;
use publisher::proto::event::{event::PeerObserverEvent, Event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_published() {
    const ROUNDS: u64 = 25;
    let nats = NatsServer::start().await;
    let dir = TempDir::new("metrics");
    let socket = dir.path().join("publisher.sock");
    let address = free_address();
    let _publisher = start_publisher(
        &nats.address,
        &socket,
        &["--loader-uid", &LOADER_UID.to_string(), "--metrics-address", &address],
    )
    .await;
    let simulator = Simulator::start("mempool:added,validation:block_connected", ROUNDS, 3);
    let _loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;
    let fired = simulator.fire().await;
    assert_eq!(fired[&Tracepoint::MempoolAdded], ROUNDS);

    // The bytes of the events as fired: each timestamp takes 6 bytes, whatever the millisecond.
    let bytes: usize = (0..ROUNDS)
        .map(|seq| {
            let ebpf = e2e::expect::event(Tracepoint::MempoolAdded, 3, seq).1;
            let event =
                Event { peer_observer_event: Some(PeerObserverEvent::EbpfExtractor(ebpf)), timestamp: e2e::wall_ms() };
            event.encoded_len()
        })
        .sum();
    let want = [
        format!("peer_observer_ebpf_published_total{{tracepoint=\"mempool:added\",subject=\"mempool\"}} {ROUNDS}"),
        format!(
            "peer_observer_ebpf_published_total{{tracepoint=\"validation:block_connected\",subject=\"validation\"}} {ROUNDS}"
        ),
        format!("peer_observer_ebpf_published_bytes_total{{tracepoint=\"mempool:added\",subject=\"mempool\"}} {bytes}"),
        "peer_observer_ebpf_lost_datagrams_total 0".to_string(),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let metrics = scrape_metrics(&address);
        if want.iter().all(|line| metrics.lines().any(|l| l == line)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{want:?} not all in\n{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Connections held open without a request (a local user locking the endpoint) cannot keep
/// Prometheus out: past 8, each new connection closes the oldest, and a scrape is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_lock_the_metrics_endpoint() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("metrics-idle");
    let address = free_address();
    let _publisher = start_publisher(
        &nats.address,
        &dir.path().join("publisher.sock"),
        &["--loader-uid", &LOADER_UID.to_string(), "--metrics-address", &address],
    )
    .await;
    let idle: Vec<std::net::TcpStream> =
        (0..16).map(|_| std::net::TcpStream::connect(&address).expect("connect to the metrics endpoint")).collect();
    let scraped = {
        let address = address.clone();
        tokio::task::spawn_blocking(move || scrape_metrics(&address))
    };
    let metrics = tokio::time::timeout(std::time::Duration::from_secs(2), scraped)
        .await
        .expect("a scrape answered within 2 s")
        .expect("the scrape");
    assert!(metrics.contains("peer_observer_ebpf_nats_connected 1"), "{metrics}");
    // The oldest idle connection was closed by the publisher.
    let mut oldest = &idle[0];
    oldest.set_read_timeout(Some(std::time::Duration::from_secs(2))).expect("read timeout");
    assert_eq!(std::io::Read::read(&mut oldest, &mut [0u8; 16]).expect("closed, not timed out"), 0);
}
