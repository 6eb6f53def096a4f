//! Faults the pipeline survives without a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{expect, Launch, NatsServer, Pipeline};
use futures_util::StreamExt;
use ipc_protocol::Tracepoint;
use prost::Message;
use publisher::proto::event::{event::PeerObserverEvent, Event};

/// The `name=N` counts of the publisher's closing `stopped: ...` line.
fn closing_counts(log: &str) -> BTreeMap<String, u64> {
    let line = log.lines().find_map(|l| l.split_once("stopped: ").map(|(_, c)| c)).unwrap_or_else(|| panic!("no `stopped:` in {log}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a count")))
        .collect()
}

/// NATS goes away mid-stream and comes back on the same address: the publisher keeps reading
/// the loader, buffers or counts what it cannot hand on, reconnects by itself, and the
/// stream resumes in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_stream() {
    const ROUNDS: u64 = 600;
    const SEED: u64 = 61;
    let mut nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, mut publisher, dir: _dir, loader: _loader } =
        Pipeline::start_with(Launch::Direct, &nats, "mempool:added", ROUNDS, SEED, &["--rate", "200"], &[]).await;
    let firing = tokio::spawn(simulator.fire());
    tokio::time::sleep(Duration::from_millis(800)).await;
    nats.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart().await;
    let fired = firing.await.expect("simulator task")[&Tracepoint::MempoolAdded];
    assert_eq!(fired, ROUNDS);

    // Some events of the outage are lost in flight (core NATS has no acknowledgements), so
    // read until the stream goes quiet rather than until all arrived.
    let mut received = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(3), subscriber.next()).await {
        received.push(Event::decode(msg.payload).expect("an event.Event"));
    }
    // Events by their encoding, to find each one's firing number.
    let seq_of: BTreeMap<Vec<u8>, u64> =
        (0..ROUNDS).map(|seq| (expect::event(Tracepoint::MempoolAdded, SEED, seq).1.encode_to_vec(), seq)).collect();
    let seqs: Vec<u64> = received
        .into_iter()
        .map(|event| {
            let Some(PeerObserverEvent::EbpfExtractor(ebpf)) = event.peer_observer_event else { panic!("not an eBPF event") };
            *seq_of.get(&ebpf.encode_to_vec()).unwrap_or_else(|| panic!("an event that was never fired: {ebpf:?}"))
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "events arrive once each, in firing order");
    // Everything fired a second after NATS came back arrives.
    let tail: Vec<u64> = seqs.iter().copied().filter(|seq| *seq >= ROUNDS - 200).collect();
    assert_eq!(tail, (ROUNDS - 200..ROUNDS).collect::<Vec<_>>());

    let pid = publisher.id().expect("publisher survived the outage").to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().expect("signal publisher");
    assert!(publisher.wait().await.expect("publisher exits").success());
    let counts = closing_counts(&e2e::read_stderr(&mut publisher).await);
    // Every record the publisher received was handed to the NATS client or counted.
    assert_eq!(counts["published"] + counts["nats_unavailable"], ROUNDS, "{counts:?}");
    eprintln!("{} of {ROUNDS} delivered; publisher: {counts:?}", seqs.len());
}
