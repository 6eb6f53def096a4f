//! `--stdout`: the publisher writes each event as a line to standard output instead of
//! publishing it, with no NATS server anywhere; the real loader attached to the simulator
//! feeds it, and every event fired is a line, field for field.

use std::process::Stdio;
use std::time::Duration;

use e2e::{
    assert_fired_exactly, bins, closing_counts, expect, read_stderr, spawn_ready, start_loader, start_stdout_publisher,
    terminate, wall_ms, NodeDir, Simulator, TempDir, LOADER_UID,
};
use ipc_protocol::Tracepoint;
use publisher::decode::Envelope;
use publisher::proto::ebpf_extractor::ebpf::EbpfEvent;
use publisher::proto::ebpf_extractor::message::message_event::Msg;
use publisher::proto::ebpf_extractor::message::MessageEvent;
use publisher::proto::ebpf_extractor::Ebpf;
use publisher::proto::event::Event;
use publisher::render;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::Command;
use tracepoint_simulator::Workload;

const TRACEPOINTS: [Tracepoint; 3] =
    [Tracepoint::MempoolAdded, Tracepoint::ValidationBlockConnected, Tracepoint::NetInboundMessage];

/// The next `n` lines, failing after 30 s.
async fn next_lines<R: AsyncRead + Unpin>(lines: &mut Lines<BufReader<R>>, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while got.len() < n {
            got.push(lines.next_line().await.expect("read standard output").expect("a line, not the end"));
        }
    })
    .await;
    assert!(read.is_ok(), "{} of {n} lines within 30 s: {got:#?}", got.len());
    got
}

/// The events of `--stdout json` lines, read back through the canonical mapping.
fn events_of(lines: &[String]) -> Vec<(String, Event)> {
    lines
        .iter()
        .map(|line| match render::from_json(line) {
            Ok((subject, Envelope::PeerObserver(event))) => (subject, event),
            other => panic!("{line}: {other:?}"),
        })
        .collect()
}

/// The time at which `readable` starts a line for `timestamp_ms`: ISO 8601 in UTC, which
/// sorts as the times do.
fn readable_time(timestamp_ms: u64) -> String {
    let empty = Envelope::PeerObserver(Event { peer_observer_event: None, timestamp: timestamp_ms });
    render::readable("", &empty).split(' ').next().expect("a time").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_are_the_fired_events_without_nats() {
    const ROUNDS: u64 = 20;
    const SEED: u64 = 13;
    let dir = TempDir::new("stdout-json");
    let socket = dir.path().join("publisher.sock");
    let mut publisher = start_stdout_publisher("json", &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    let mut lines = BufReader::new(publisher.stdout.take().expect("piped")).lines();
    let simulator = Simulator::start("mempool:added,validation:block_connected,net:inbound_message", ROUNDS, SEED);
    let mut loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;

    let before = wall_ms();
    let fired = simulator.fire().await;
    for tp in TRACEPOINTS {
        assert_eq!(fired[&tp], ROUNDS, "{tp}");
    }
    let events = events_of(&next_lines(&mut lines, TRACEPOINTS.len() * ROUNDS as usize).await);
    assert_fired_exactly(&events, &TRACEPOINTS, SEED, 0..ROUNDS, before.saturating_sub(1000)..=wall_ms() + 1000);

    // It exits by itself (status 3) once the simulator has; stopped either way.
    terminate(&mut loader).await;
    let (status, _) = terminate(&mut publisher).await;
    let log = read_stderr(&mut publisher).await;
    assert!(status.success(), "publisher stops cleanly on SIGTERM: {status}: {log}");
    // Nothing more, and nothing but events, on standard output.
    assert_eq!(lines.next_line().await.expect("read standard output"), None);
    let counts = closing_counts(&log);
    assert_eq!(counts["published"], TRACEPOINTS.len() as u64 * ROUNDS, "{log}");
    assert_eq!(counts["publish_failed"], 0, "{log}");
    assert!(log.contains("to=standard output as JSON"), "{log}");
    assert!(!log.contains("NATS"), "no NATS connection is made: {log}");
}

/// The densest payload for JSON a peer can send: a 4 MB `addrv2` of 444,443 empty addresses of
/// an unknown network, two messages each. Its line is its event, field for field, and the
/// publisher's peak RSS stays under its bound: prost-reflect's `DynamicMessage`, which
/// rendered JSON before pbjson's serialisers, took 717 MiB for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_line_of_a_4_mb_addrv2_stays_within_the_memory_bound() {
    const ROUNDS: u64 = 2;
    const SEED: u64 = 31;
    const SIZE: usize = 4_000_000;
    let dir = TempDir::new("stdout-addrv2");
    let socket = dir.path().join("publisher.sock");
    let mut publisher = start_stdout_publisher("json", &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    let mut lines = BufReader::new(publisher.stdout.take().expect("piped")).lines();
    let flags = ["--message-type", "addrv2", "--message-size", &SIZE.to_string()];
    let simulator = Simulator::start_with("net:inbound_message", ROUNDS, SEED, &flags);
    let mut loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;
    assert_eq!(simulator.fire().await[&Tracepoint::NetInboundMessage], ROUNDS);

    let got: Vec<_> = events_of(&next_lines(&mut lines, ROUNDS as usize).await)
        .into_iter()
        .map(|(subject, event)| (subject, e2e::ebpf_of(event)))
        .collect();
    e2e::assert_publisher_memory_bounded(&publisher, &format!("after {ROUNDS} addrv2 of {SIZE} bytes as JSON"));
    let workload = Workload { message_type: Some("addrv2".into()), message_size: Some(SIZE), garbage: false };
    let want: Vec<_> = (0..ROUNDS)
        .map(|seq| {
            let (subject, event) = expect::event_with(Tracepoint::NetInboundMessage, SEED, seq, &workload);
            (subject.to_string(), event)
        })
        .collect();
    let addresses = |event: &Ebpf| match &event.ebpf_event {
        Some(EbpfEvent::Message(MessageEvent { msg: Some(Msg::Addrv2(m)), .. })) => m.addresses.len(),
        other => panic!("not an addrv2: {other:?}"),
    };
    assert_eq!(addresses(&want[0].1), 444_443);
    assert!(got == want, "the lines are not the addrv2 events fired");

    terminate(&mut loader).await;
    let (status, _) = terminate(&mut publisher).await;
    let log = read_stderr(&mut publisher).await;
    assert!(status.success(), "{status}: {log}");
    let counts = closing_counts(&log);
    assert_eq!(counts["published"], ROUNDS, "{log}");
    assert_eq!(counts["publish_failed"], 0, "{log}");
}

/// Two events of each of two tracepoints, as their lines read, behind a subject prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readable_lines_read_as_the_events_fired() {
    const WANT: [&str; 4] = [
        "peer-observer.regtest.node1.mempool added txid=fb26e7e3b0d5fe0305b6e0b070580604d7984e77205548aa871d84c47b14fb89 vsize=29367 fee=5513965 sat",
        "peer-observer.regtest.node1.mempool added txid=59433e6964c8ecef8db1f4eb83b3857e554230423d618cf1e19836b0808da73b vsize=82164 fee=5372704 sat",
        "peer-observer.regtest.node1.validation block_connected hash=279e16114179f203dcff7b3aeaaf6b885f73c1491096a99e0bf1b149a32cc87a height=21324 transactions=316 inputs=10791 sigops=78709 connection_time=1089.447 ms",
        "peer-observer.regtest.node1.validation block_connected hash=172209c424f4f06a70d9b97f50328bfaf4bb559f7fd6072bd727db810c37645e height=257337 transactions=3528 inputs=19479 sigops=22221 connection_time=859.621 ms",
    ];
    let dir = TempDir::new("stdout-readable");
    let socket = dir.path().join("publisher.sock");
    let mut publisher = start_stdout_publisher(
        "readable",
        &socket,
        &["--loader-uid", &LOADER_UID.to_string(), "--nats-subject-prefix", "peer-observer.regtest.node1"],
    )
    .await;
    let mut lines = BufReader::new(publisher.stdout.take().expect("piped")).lines();
    let simulator = Simulator::start("mempool:added,validation:block_connected", 2, 5);
    let mut loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;
    let before = readable_time(wall_ms().saturating_sub(1000));
    simulator.fire().await;
    let got = next_lines(&mut lines, WANT.len()).await;
    let after = readable_time(wall_ms() + 1000);
    let mut rest: Vec<String> = got
        .iter()
        .map(|line| {
            let (time, rest) = line.split_once(' ').expect("time, then the event");
            assert!((before.as_str()..=after.as_str()).contains(&time), "{time} outside [{before}, {after}]");
            rest.to_string()
        })
        .collect();
    // Each tracepoint's lines keep their order; the sort only puts the tracepoints in WANT's.
    rest.sort_by_key(|line| !line.contains(".mempool "));
    assert_eq!(rest, WANT);

    terminate(&mut loader).await;
    let (status, _) = terminate(&mut publisher).await;
    let log = read_stderr(&mut publisher).await;
    assert!(status.success(), "{status}: {log}");
    assert_eq!(closing_counts(&log)["published"], WANT.len() as u64, "{log}");
}

/// `ebpf-extractor --stdout json`: the publisher it starts writes to the launcher's standard
/// output, and the launcher refuses NATS options beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_hands_stdout_on() {
    const ROUNDS: u64 = 5;
    let refused = Command::new(&bins().launcher)
        .args(["--stdout", "json", "-a", "127.0.0.1:4222", "-b", "/x", "--bitcoind-pid", "1"])
        .output()
        .await
        .expect("run ebpf-extractor");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--nats-address cannot be used with --stdout"), "{stderr}");

    let dir = TempDir::new("stdout-launcher");
    let node = std::sync::Arc::new(NodeDir::new());
    let simulator = Simulator::start_in(&node, &bins().simulator, "mempool:added", ROUNDS, 9, &[]);
    let mut command = Command::new(&bins().launcher);
    command
        .args(["--stdout", "json", "--bitcoind-path"])
        .arg(&bins().simulator)
        .arg("--bitcoind-pid-file")
        .arg(node.pid_file())
        // Left in the environment, it is no option given: not handed on, not refused.
        .env("NATS_PASSWORD", "hunter2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut launcher = spawn_ready(&mut command, dir.path(), "ebpf-extractor").await;
    let mut lines = BufReader::new(launcher.stdout.take().expect("piped")).lines();
    let before = wall_ms();
    simulator.fire().await;
    let events = events_of(&next_lines(&mut lines, ROUNDS as usize).await);
    assert_fired_exactly(
        &events,
        &[Tracepoint::MempoolAdded],
        9,
        0..ROUNDS,
        before.saturating_sub(1000)..=wall_ms() + 1000,
    );
    let (status, _) = terminate(&mut launcher).await;
    let log = read_stderr(&mut launcher).await;
    assert!(status.success(), "{status}: {log}");
    assert_eq!(closing_counts(&log)["published"], ROUNDS, "{log}");
}
