//! Faults the pipeline survives without a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{
    expect, free_address, gauge_becomes, scrape_metrics, start_loader, start_publisher, terminate, until, Launch,
    NatsServer, Pipeline, PipelineFlags, Simulator, TempDir, LOADER_UID,
};
use futures_util::StreamExt;
use ipc_protocol::Tracepoint;
use prost::Message;
use publisher::proto::event::Event;

const SEED: u64 = 61;
/// 600 `mempool:added` at 200 a second: a three-second stream to break in the middle.
const ROUNDS: u64 = 600;
const STREAM: [&str; 2] = ["--rate", "200"];

/// Reads until the stream goes quiet and returns each event's firing number, checking that
/// every event is one that was fired, once, in firing order.
async fn firing_numbers(subscriber: &mut async_nats::Subscriber) -> Vec<u64> {
    // Events by their encoding, to find each one's firing number.
    let seq_of: BTreeMap<Vec<u8>, u64> =
        (0..ROUNDS).map(|seq| (expect::event(Tracepoint::MempoolAdded, SEED, seq).1.encode_to_vec(), seq)).collect();
    let mut seqs = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(3), subscriber.next()).await {
        let event = Event::decode(msg.payload).expect("an event.Event");
        let ebpf = e2e::ebpf_of(event);
        seqs.push(
            *seq_of.get(&ebpf.encode_to_vec()).unwrap_or_else(|| panic!("an event that was never fired: {ebpf:?}")),
        );
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "events arrive once each, in firing order: {seqs:?}");
    seqs
}

/// Asserts that everything fired in the last second of the stream arrived.
fn tail_arrived(seqs: &[u64]) {
    let tail: Vec<u64> = seqs.iter().copied().filter(|seq| *seq >= ROUNDS - 200).collect();
    assert_eq!(tail, (ROUNDS - 200..ROUNDS).collect::<Vec<_>>());
}

/// NATS goes away mid-stream and comes back on the same address: the publisher keeps reading
/// the loader, buffers or counts what it cannot hand on, reconnects by itself, and the
/// stream resumes in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_stream() {
    let mut nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, mut publisher, dir: _dir, loader: _loader } =
        Pipeline::start_with(Launch::Direct, &nats, "mempool:added", ROUNDS, SEED, &STREAM, &[]).await;
    let firing = tokio::spawn(simulator.fire());
    tokio::time::sleep(Duration::from_millis(800)).await;
    nats.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart().await;
    assert_eq!(firing.await.expect("simulator task")[&Tracepoint::MempoolAdded], ROUNDS);
    // Some events of the outage are lost in flight (core NATS has no acknowledgements).
    tail_arrived(&firing_numbers(&mut subscriber).await);

    let counts = e2e::closing_counts(&e2e::stopped_log(&mut publisher).await);
    // Every record the publisher received was handed to the NATS client or counted.
    assert_eq!(counts["published"] + counts["nats_unavailable"], ROUNDS, "{counts:?}");
}

/// NATS is down while the node goes on: the publisher's NATS client holds what the loader hands
/// on meanwhile, up to 16,384 events or 16 MiB (its own bound of 2,048 messages was the limit
/// before), and sends
/// it once the server is back. A stream on the server, kept across its restart, records what
/// arrived, so no subscriber has to reconnect before the publisher does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_nats_is_bridged_by_the_client_buffer() {
    const OUTAGE: u64 = 10_000;
    let mut nats = NatsServer::with_jetstream().await;
    let client = async_nats::connect(&nats.address).await.expect("connect");
    let config = async_nats::jetstream::stream::Config {
        name: "OUTAGE".to_string(),
        subjects: vec![Tracepoint::MempoolAdded.subject().to_string()],
        ..Default::default()
    };
    async_nats::jetstream::new(client).create_stream(config).await.expect("create a stream");
    let dir = TempDir::new("outage");
    let socket = dir.path().join("publisher.sock");
    let metrics = free_address();
    let uid = LOADER_UID.to_string();
    let mut publisher =
        start_publisher(&nats.address, &socket, &["--loader-uid", &uid, "--metrics-address", &metrics]).await;

    nats.kill().await;
    gauge_becomes(&metrics, 0).await;
    let simulator = Simulator::start_with("mempool:added", OUTAGE, SEED, &["--rate", "20000"]);
    let _loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;
    assert_eq!(simulator.fire().await[&Tracepoint::MempoolAdded], OUTAGE);
    let handed_on =
        format!("peer_observer_ebpf_published_total{{tracepoint=\"mempool:added\",subject=\"mempool\"}} {OUTAGE}");
    until(
        Duration::from_secs(20),
        || scrape_metrics(&metrics).lines().any(|l| l == handed_on),
        || format!("{handed_on:?} not in\n{}", scrape_metrics(&metrics)),
    )
    .await;
    nats.restart().await;

    let held = e2e::wait_for_stream_messages(&nats.address, "OUTAGE", OUTAGE, Duration::from_secs(30)).await;
    assert_eq!(held, OUTAGE, "{}", nats.log());
    let stored = e2e::stream_messages(&nats.address, "OUTAGE").await;
    for (seq, (_, _, event)) in stored.into_iter().enumerate() {
        assert_eq!(e2e::ebpf_of(event), expect::event(Tracepoint::MempoolAdded, SEED, seq as u64).1, "#{seq}");
    }
    let counts = e2e::closing_counts(&e2e::stopped_log(&mut publisher).await);
    assert_eq!((counts["published"], counts["nats_unavailable"]), (OUTAGE, 0), "{counts:?}");
}

/// The publisher's socket as the loader's loop ([`ipc_protocol::pump`]) sends on it: blocking,
/// so never full.
struct Socket(std::os::fd::OwnedFd);

impl ipc_protocol::pump::Link for Socket {
    type Error = rustix::io::Errno;

    fn send(&mut self, head: &[u8], piece: &[u8]) -> Result<bool, Self::Error> {
        rustix::net::send(&self.0, &[head, piece].concat(), rustix::net::SendFlags::empty()).map(|_| true)
    }
}

/// A publisher on `socket`, started for the loader played by `sender`: it connects, reports
/// `ring_full` drops of `tp` totalling `total`, sends `record` (a ring record) after them through
/// the loader's own loop, takes the acknowledgement and stops the publisher. Returns the
/// publisher's closing counts.
async fn report_to_a_new_publisher(
    nats: &NatsServer,
    socket: &std::path::Path,
    sender: &mut ipc_protocol::Sender,
    tp: Tracepoint,
    total: u64,
    record: Vec<u8>,
) -> BTreeMap<String, u64> {
    use ipc_protocol::pump::{pump, Pumped};
    use ipc_protocol::{DropCause, DropCount};
    use rustix::net::{sockopt, AddressFamily, RecvFlags, SocketAddrUnix, SocketType};
    let mut publisher = start_publisher(&nats.address, socket, &["--allow-any-uid"]).await;
    let conn = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).expect("a socket");
    rustix::net::connect(&conn, &SocketAddrUnix::new(socket).expect("a path")).expect("connect");
    sockopt::set_socket_timeout(&conn, sockopt::Timeout::Recv, Some(Duration::from_secs(10))).expect("timeout");
    let mut conn = Socket(conn);
    sender.connected();
    sender.drop_counts(&[DropCount { tracepoint: tp, cause: DropCause::RingFull, total }]);
    let mut rings = ipc_protocol::testing::Rings(vec![[record].into()]);
    let pumped = pump(sender, &mut rings, &mut conn, &mut |refusal| panic!("refused: {refusal:?}"));
    assert_eq!(pumped, Pumped::Drained);
    // Until the record is acknowledged: the publisher read the totals before it.
    let mut buf = [0u8; 16];
    loop {
        let (len, _) = rustix::net::recv(&conn.0, &mut buf, RecvFlags::empty()).expect("an ack within 10 s");
        let done = ipc_protocol::decode_ack(&buf[..len]).expect("an acknowledgement");
        sender.acknowledged(done).expect("a valid acknowledgement");
        if done == sender.taken() {
            break;
        }
    }
    let counts = e2e::closing_counts(&e2e::stopped_log(&mut publisher).await);
    drop(conn);
    sender.disconnected();
    counts
}

/// A publisher restarted under a running loader counts only the drops the last one did not:
/// the loader's hello names the totals a publisher read (it acknowledged a record sent after
/// them), and a new publisher counts what exceeds them. Before, it counted the run's totals in
/// full, and an alert on the loss counters (monitoring/alerts.yml) fired again for them. The
/// loader is played here with its own sender and loop (ipc-protocol), to hold the drop totals
/// exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_publisher_counts_no_drop_the_last_one_counted() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("recount");
    let socket = dir.path().join("publisher.sock");
    let tp = Tracepoint::MempoolRejected;
    let mut sender = ipc_protocol::Sender::new(&ipc_protocol::testing::hello());
    let record = || {
        let r = <ipc_protocol::records::MempoolRejectedRecord as bytemuck::Zeroable>::zeroed();
        ipc_protocol::records::RingRecord::build(tp, tracepoint_simulator::monotonic_ns(), bytemuck::bytes_of(&r))
    };
    for (total, counted) in [(50, 50), (57, 7)] {
        let counts = report_to_a_new_publisher(&nats, &socket, &mut sender, tp, total, record()).await;
        assert_eq!((counts["published"], counts["dropped_before_publisher"]), (1, counted), "{counts:?}");
    }
}

/// The publisher is killed mid-stream (SIGKILL, as a crash or the OOM killer would) and started
/// again on its socket, as systemd would: the loader holds its records meanwhile, reconnects by
/// itself, and the stream resumes in order. What the dead publisher took with it (read and
/// not yet published, or in its socket) is counted by the loader as `publisher_lost` and
/// reaches the new publisher's counts: nothing is lost without a count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_restarted_mid_stream() {
    let nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, mut publisher, dir, mut loader } =
        Pipeline::start_with(Launch::Direct, &nats, "mempool:added", ROUNDS, SEED, &STREAM, &[]).await;
    let firing = tokio::spawn(simulator.fire());
    tokio::time::sleep(Duration::from_millis(800)).await;
    publisher.kill().await.expect("kill publisher");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let socket = dir.path().join("publisher.sock");
    let mut second = start_publisher(&nats.address, &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    assert_eq!(firing.await.expect("simulator task")[&Tracepoint::MempoolAdded], ROUNDS);
    let seqs = firing_numbers(&mut subscriber).await;
    tail_arrived(&seqs);
    let counts = e2e::closing_counts(&e2e::stopped_log(&mut second).await);
    let missing = ROUNDS - seqs.len() as u64;
    assert!(counts["dropped_before_publisher"] >= missing, "{missing} missing, counted: {counts:?}");
    // The loader rode out the outage; it ends only because the traced process did.
    let log = e2e::stop_and_read_logs(&mut [&mut loader]).await;
    if missing > 0 {
        assert!(log.contains("counted as publisher_lost"), "{log}");
    }
    assert!(
        log.contains("lost the connection to the publisher") && log.contains("reconnected to the publisher"),
        "{log}"
    );
    assert!(log.contains(") exited: start the loader again for its successor"), "{log}");
}

/// The publisher is stopped mid-stream (SIGTERM, as systemd does on a restart) and started
/// again: it publishes what it has read before exiting, the loader keeps what it could not
/// send in its rings and sends it to the new publisher, so every event arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_stopped_mid_stream_loses_nothing() {
    let nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, mut publisher, dir, loader: _loader } =
        Pipeline::start_with(Launch::Direct, &nats, "mempool:added", ROUNDS, SEED, &STREAM, &[]).await;
    let firing = tokio::spawn(simulator.fire());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, _) = terminate(&mut publisher).await;
    assert!(status.success(), "publisher stops cleanly: {status}");
    let socket = dir.path().join("publisher.sock");
    let _publisher = start_publisher(&nats.address, &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    assert_eq!(firing.await.expect("simulator task")[&Tracepoint::MempoolAdded], ROUNDS);
    assert_eq!(firing_numbers(&mut subscriber).await, (0..ROUNDS).collect::<Vec<_>>());
}

/// NATS stalls (a hung server: connected, reading nothing) under a stream of 500 KB messages,
/// and the publisher is stopped meanwhile (SIGTERM): its shutdown gives up on the records it
/// handed to the NATS client and never saw written (SHUTDOWN_DRAIN in
/// publisher/src/server.rs), and leaves them unacknowledged, so the loader counts them as
/// `publisher_lost` and tells the next publisher. Once the server goes on, every message is
/// delivered or counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_stopped_while_nats_stalls_leaves_what_it_never_wrote_counted() {
    const MESSAGES: u64 = 600;
    let nats = NatsServer::start().await;
    let stream = ["--message-type", "inv", "--message-size", "500000", "--rate", "20"];
    let Pipeline { mut subscriber, simulator, mut publisher, dir, loader: _loader } =
        Pipeline::start_with(Launch::Direct, &nats, "net:inbound_message", MESSAGES, SEED, &stream, &[]).await;
    let firing = tokio::spawn(simulator.fire());
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.stall();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _) = terminate(&mut publisher).await;
    let log = e2e::read_stderr(&mut publisher).await;
    assert!(status.success(), "publisher stops cleanly: {status}\n{log}");
    assert!(log.contains("still being published 5 s after shutdown"), "the drain gave up: {log}");
    let first = e2e::closing_counts(&log);
    nats.resume();
    let socket = dir.path().join("publisher.sock");
    let mut second = start_publisher(&nats.address, &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    assert_eq!(firing.await.expect("simulator task")[&Tracepoint::NetInboundMessage], MESSAGES);
    let mut delivered = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(3), subscriber.next()).await {
        delivered += 1;
    }
    let second_counts = e2e::closing_counts(&e2e::stopped_log(&mut second).await);
    let counted = first["nats_unavailable"] + second_counts["dropped_before_publisher"];
    assert!(counted > 0, "the stall cost messages: first {first:?}, second {second_counts:?}");
    assert!(
        delivered + counted >= MESSAGES,
        "{delivered} delivered and {counted} counted of {MESSAGES}: first {first:?}, second {second_counts:?}\n{log}"
    );
}

/// NATS stalls, the publisher writes 400 KB to it and is stopped (SIGTERM): its flush goes
/// through, since the kernel took the bytes (the send buffer a loopback connection starts
/// with holds over a megabyte), but the stalled server's host acknowledges only what its
/// receive window of 128 KiB takes. The publisher keeps its connection open for 5 s, then says
/// how many bytes the socket still holds, which the server's next PING would reset away
/// (publisher/src/sink.rs, `unacknowledged_nats_bytes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_stopped_while_nats_stalls_names_the_bytes_nats_never_acknowledged() {
    const MESSAGES: u64 = 4;
    const SIZE: u64 = 100_000;
    let nats = NatsServer::start().await;
    let metrics = free_address();
    let flags = PipelineFlags {
        simulator: &["--message-size", &SIZE.to_string()],
        publisher: &["--metrics-address", &metrics],
        ..Default::default()
    };
    let Pipeline { subscriber: _subscriber, simulator, mut publisher, dir: _dir, loader: _loader } =
        Pipeline::start_configured(Launch::Direct, &nats.address, "net:inbound_message", MESSAGES, SEED, flags).await;
    nats.stall();
    assert_eq!(simulator.fire().await[&Tracepoint::NetInboundMessage], MESSAGES);
    until(
        Duration::from_secs(20),
        || e2e::per_tracepoint(&scrape_metrics(&metrics), "published_total").values().sum::<u64>() >= MESSAGES,
        || format!("the publisher did not publish all {MESSAGES}"),
    )
    .await;
    let stopping = std::time::Instant::now();
    let (status, _) = terminate(&mut publisher).await;
    let waited = stopping.elapsed();
    let log = e2e::read_stderr(&mut publisher).await;
    nats.resume();
    assert!(status.success(), "publisher stops cleanly: {status}\n{log}");
    let unacknowledged: u64 = log
        .split("NATS's host had not acknowledged the last ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no warning naming the bytes\n{log}"));
    assert!(
        unacknowledged > 0 && unacknowledged < MESSAGES * SIZE,
        "{unacknowledged} bytes named, of {MESSAGES} messages of {SIZE} bytes\n{log}"
    );
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(10)).contains(&waited),
        "the publisher held its connection 5 s, not {waited:?}\n{log}"
    );
    assert_eq!(e2e::closing_counts(&log)["published"], MESSAGES, "{log}");
}

/// The loader is killed: the publisher stays up and takes the next loader's stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_accepts_the_next_loader() {
    let nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, mut publisher, dir, mut loader } =
        Pipeline::start_with(Launch::Direct, &nats, "mempool:added", 10, SEED, &[], &[]).await;
    loader.kill().await.expect("kill loader");
    drop(simulator);
    let second = Simulator::start("mempool:added", ROUNDS, SEED);
    let socket = dir.path().join("publisher.sock");
    let _loader = start_loader(dir.path(), &socket, second.pid(), &[]).await;
    assert_eq!(second.fire().await[&Tracepoint::MempoolAdded], ROUNDS);
    assert_eq!(firing_numbers(&mut subscriber).await, (0..ROUNDS).collect::<Vec<_>>());
    assert!(publisher.try_wait().expect("publisher status").is_none(), "the publisher kept running");
}

/// The seed's inactivity rule, with its clock shortened: warn every `--idle-warn-secs`
/// without events, exit at `--idle-exit-secs` unless `--no-idle-exit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_loader_warns_then_exits_unless_told_not_to() {
    let nats = NatsServer::start().await;
    let short = ["--idle-warn-secs", "1", "--idle-exit-secs", "3"];
    // The simulator waits for its start signal: traced, alive, and silent.
    let Pipeline { mut loader, simulator: _simulator, dir: _dir, publisher: _publisher, subscriber: _s } =
        Pipeline::start_with(Launch::Direct, &nats, "mempool:added", 1, SEED, &[], &short).await;
    let status =
        tokio::time::timeout(Duration::from_secs(10), loader.wait()).await.expect("exits in time").expect("status");
    assert_eq!(status.code(), Some(1), "idle exit is a failure a supervisor restarts: {status}");
    let log = e2e::read_stderr(&mut loader).await;
    assert!(log.contains("no event from bitcoind for 1 s") && log.contains("no event from bitcoind for 2 s"), "{log}");
    assert!(log.contains("for 3 s: is it still running and busy?"), "{log}");

    let patient = [&short[..], &["--no-idle-exit"]].concat();
    let Pipeline { mut loader, simulator: _simulator, dir: _dir, publisher: _publisher, subscriber: _s } =
        Pipeline::start_with(Launch::Direct, &nats, "mempool:added", 1, SEED, &[], &patient).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(loader.try_wait().expect("loader status").is_none(), "--no-idle-exit keeps the loader running");
    let log = e2e::stop_and_read_logs(&mut [&mut loader]).await;
    assert!(log.contains("no event from bitcoind for 4 s"), "{log}");
}

/// A traced bitcoind that exits ends the loader, once it has handed on what it captured,
/// with a message saying how to follow its successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_exits_after_its_bitcoind_with_everything_delivered() {
    let nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, mut loader, dir: _dir, publisher: _publisher } =
        Pipeline::start_with(Launch::Direct, &nats, "mempool:added", ROUNDS, SEED, &[], &[]).await;
    let simulator_pid = simulator.pid();
    assert_eq!(simulator.fire().await[&Tracepoint::MempoolAdded], ROUNDS);
    let status =
        tokio::time::timeout(Duration::from_secs(10), loader.wait()).await.expect("exits in time").expect("status");
    assert_eq!(status.code(), Some(3), "its own status, for a supervisor to follow the successor");
    let log = e2e::read_stderr(&mut loader).await;
    assert!(log.contains(&format!("bitcoind (pid {simulator_pid}) exited: start the loader again")), "{log}");
    assert_eq!(firing_numbers(&mut subscriber).await, (0..ROUNDS).collect::<Vec<_>>());
}

/// The publisher is killed (a crash) and bitcoind fires, then stops: the stopping loader gives
/// a publisher its drain (5 s) to take what its rings hold, reconnecting meanwhile to the one
/// restarted on its socket, so every event arrives once, in order, and nothing is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_stopping_while_its_publisher_restarts_hands_everything_to_the_next_one() {
    let nats = NatsServer::start().await;
    let fast = ["--rate", "2000"];
    let Pipeline { mut subscriber, simulator, mut publisher, dir, mut loader } =
        Pipeline::start_with(Launch::Direct, &nats, "mempool:added", ROUNDS, SEED, &fast, &[]).await;
    publisher.kill().await.expect("kill publisher");
    assert_eq!(simulator.fire().await[&Tracepoint::MempoolAdded], ROUNDS);
    // bitcoind has exited: the loader drains, its first attempt to reconnect failed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let socket = dir.path().join("publisher.sock");
    let mut second = start_publisher(&nats.address, &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    let status =
        tokio::time::timeout(Duration::from_secs(10), loader.wait()).await.expect("exits in time").expect("status");
    assert_eq!(status.code(), Some(3), "bitcoind exited");
    assert_eq!(firing_numbers(&mut subscriber).await, (0..ROUNDS).collect::<Vec<_>>());
    let counts = e2e::closing_counts(&e2e::stopped_log(&mut second).await);
    assert_eq!((counts["published"], counts["dropped_before_publisher"]), (ROUNDS, 0), "{counts:?}");
    let log = e2e::read_stderr(&mut loader).await;
    assert!(log.contains("reconnected to the publisher") && !log.contains("loader_stopped"), "{log}");
}

/// The publisher stalls (SIGSTOP: connected, reading nothing, as one blocked on a stalled
/// JetStream server) while bitcoind fires 40 blocks of 200 kB and stops. What the loader could
/// not hand on within its drain, the rings' records and the one cut off in its fragments, is
/// counted as `loader_stopped`; with no publisher taking even those totals, an error line of
/// the loader's holds them. Every block is published or counted there, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_stopping_while_its_publisher_stalls_counts_what_it_left_as_loader_stopped() {
    const BLOCKS: u64 = 40;
    let nats = NatsServer::start().await;
    let blocks = ["--message-type", "block", "--message-size", "200000"];
    let Pipeline { mut subscriber, simulator, mut publisher, dir: _dir, mut loader } =
        Pipeline::start_with(Launch::Direct, &nats, "net:inbound_message", BLOCKS, SEED, &blocks, &[]).await;
    let publisher_pid = publisher.id().expect("publisher running");
    assert!(e2e::signal(publisher_pid, "STOP"));
    assert_eq!(simulator.fire().await[&Tracepoint::NetInboundMessage], BLOCKS);
    let status =
        tokio::time::timeout(Duration::from_secs(15), loader.wait()).await.expect("exits in time").expect("status");
    assert_eq!(status.code(), Some(3), "bitcoind exited");
    assert!(e2e::signal(publisher_pid, "CONT"));
    let mut published = 0;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(3), subscriber.next()).await {
        let event = Event::decode(msg.payload).expect("an event.Event");
        let size = e2e::ebpf_of(event).ebpf_event.and_then(|e| match e {
            publisher::proto::ebpf_extractor::ebpf::EbpfEvent::Message(m) => Some(m.meta.size),
            _ => None,
        });
        assert_eq!((msg.subject.as_str(), size), ("netmsg", Some(200_000)));
        published += 1;
    }
    let log = e2e::read_stderr(&mut loader).await;
    let line = log
        .lines()
        .find(|line| line.contains("no publisher took the last drop totals"))
        .unwrap_or_else(|| panic!("the totals are logged: {log}"));
    let stopped: u64 = line
        .split("net:inbound_message/loader_stopped=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a loader_stopped total: {line}"));
    assert!(stopped > 0 && log.contains(&format!("unsent={stopped}")), "{log}");
    assert_eq!(published + stopped, BLOCKS, "published {published}, counted {stopped}: {log}");
    let counts = e2e::closing_counts(&e2e::stopped_log(&mut publisher).await);
    assert_eq!(counts["published"], published, "{counts:?}");
}

/// SIGTERM mid-stream: the loader hands on what it captured, detaches and exits 0; then the
/// publisher flushes to NATS and exits 0; each within a few seconds, and every firing the
/// tracer saw arrives, as the publisher's final line says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_each_half_promptly_and_loses_nothing() {
    let nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, mut loader, mut publisher, dir: _dir } =
        Pipeline::start_with(Launch::Direct, &nats, "mempool:added", ROUNDS, SEED, &STREAM, &[]).await;
    let firing = tokio::spawn(simulator.fire());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, took) = terminate(&mut loader).await;
    assert!(status.success() && took < Duration::from_secs(3), "loader: {status} after {took:?}");
    // Detached: the rest of the stream is fired untraced.
    let traced = firing.await.expect("simulator task")[&Tracepoint::MempoolAdded];
    assert!((100..ROUNDS).contains(&traced), "traced {traced} of {ROUNDS}");
    let (status, took) = terminate(&mut publisher).await;
    assert!(status.success() && took < Duration::from_secs(3), "publisher: {status} after {took:?}");

    // While the kernel detaches, a firing can still pass bitcoind's semaphore check and yet
    // find its probe gone (a few at 200 a second). Never captured, it cannot be counted;
    // everything captured arrives, and nothing is counted as dropped.
    let delivered = firing_numbers(&mut subscriber).await;
    let n = delivered.len() as u64;
    assert!(n <= traced && traced - n <= 5, "delivered {n} of {traced}");
    assert_eq!(delivered, (0..n).collect::<Vec<_>>());
    let counts = e2e::closing_counts(&e2e::read_stderr(&mut publisher).await);
    assert_eq!(counts["published"], n);
    for lost in [
        "invalid",
        "publish_failed",
        "nats_unavailable",
        "over_max_payload",
        "dropped_before_publisher",
        "lost_datagrams",
        "fragment_lost",
    ] {
        assert_eq!(counts[lost], 0, "{lost}");
    }
    let log = e2e::read_stderr(&mut loader).await;
    assert!(log.contains("detached") && log.contains("stopped"), "{log}");
}
