//! JetStream mode (`--nats-jetstream-stream`): every event fired is stored in the stream exactly
//! once, through a NATS server's restart, a cluster node's loss and a publisher's restart,
//! and the publisher's closing counts account for every event.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e::{
    assert_fired_exactly, closing_counts, closing_line, ebpf_of, expect, read_stderr, receive, start_publisher,
    stopped_log, stream_info, stream_messages, terminate, wait_for_stream_messages, wall_ms, Launch, NatsCluster,
    NatsServer, Pipeline, PipelineFlags, LOADER_UID,
};
use ipc_protocol::{Category, Tracepoint};
use prost::Message;
use publisher::proto::event::Event;

const STREAM: &str = "PEER_OBSERVER_EBPF";
const SEED: u64 = 71;
/// 300 rounds of the 12 default tracepoints at 50 rounds a second: a six-second stream, 3600
/// events, to break in the middle.
const ROUNDS: u64 = 300;
const RATE: [&str; 2] = ["--rate", "50"];
/// The stream's size limit: the server reserves it from its store's limit (75% of the free
/// disk), and the default 10 GiB may be more than a CI machine has.
const MAX_BYTES: &str = "1073741824";
/// Longer than the publisher's 60 s of publishing an event again before giving it up.
const DELIVERY: Duration = Duration::from_secs(90);
/// The losses of the publisher's closing line: with `jetstream_acknowledged`, every event fired.
const COUNTED_DROPS: [&str; 7] = [
    "invalid",
    "publish_failed",
    "nats_unavailable",
    "over_max_payload",
    "dropped_before_publisher",
    "fragment_lost",
    "jetstream_gave_up",
];

fn jetstream_flags(replicas: &'static str) -> [&'static str; 6] {
    ["--nats-jetstream-stream", STREAM, "--nats-jetstream-replicas", replicas, "--nats-jetstream-max-bytes", MAX_BYTES]
}

/// The default tracepoints through a JetStream publisher at `nats_address`, fired at [`RATE`].
async fn start_pipeline(nats_address: &str, publisher_flags: &[&str]) -> Pipeline {
    let flags = PipelineFlags { simulator: &RATE, publisher: publisher_flags, ..Default::default() };
    Pipeline::start_configured(Launch::Direct, nats_address, "default", ROUNDS, SEED, flags).await
}

/// A publisher taking over the socket in `dir` from one that stopped or died, as systemd
/// starts the next one.
async fn start_next_publisher(nats_address: &str, dir: &std::path::Path, flags: &[&str]) -> tokio::process::Child {
    let loader_uid = LOADER_UID.to_string();
    let args = [&["--loader-uid", loader_uid.as_str()], flags].concat();
    start_publisher(nats_address, &dir.join("publisher.sock"), &args).await
}

/// Asserts that the tracer saw every round of every default tracepoint, and returns the total.
fn total_fired(fired: &BTreeMap<Tracepoint, u64>) -> u64 {
    for tp in Tracepoint::defaults() {
        assert_eq!(fired.get(&tp), Some(&ROUNDS), "{tp} must fire every round while traced");
    }
    ROUNDS * Tracepoint::defaults().len() as u64
}

/// Asserts that `messages` are exactly the events fired, each once (every field, envelope
/// times in `window`), and that their Msg-Ids are `<run id: 32 lowercase hex digits>-<record
/// index>`, of the one loader run, none twice. An event sent again is stored after those sent
/// meanwhile, so the stream's order is not the firing order; the record indices give it back:
/// in their order, each tracepoint's events are in firing order.
fn assert_stream_holds_every_event_once(messages: &[(String, String, Event)], window: std::ops::RangeInclusive<u64>) {
    assert_each_firing_once(messages);
    let index_of = |msg_id: &str| msg_id.rsplit_once('-').and_then(|(_, index)| index.parse::<u64>().ok());
    let mut by_index: Vec<&(String, String, Event)> = messages.iter().collect();
    by_index.sort_by_key(|(_, msg_id, _)| index_of(msg_id));
    let events: Vec<(String, Event)> =
        by_index.iter().map(|(subject, _, event)| (subject.clone(), event.clone())).collect();
    assert_fired_exactly(&events, &Tracepoint::defaults(), SEED, 0..ROUNDS, window);
    let mut runs = BTreeSet::new();
    let mut indices = BTreeSet::new();
    for (_, msg_id, _) in messages {
        let (run, index) =
            msg_id.split_once('-').unwrap_or_else(|| panic!("Nats-Msg-Id {msg_id:?} is not <run id>-<record index>"));
        assert!(
            run.len() == 32 && run.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "the run id of Nats-Msg-Id {msg_id:?} is not 32 lowercase hex digits"
        );
        let parsed: u64 = index.parse().unwrap_or_else(|_| panic!("the record index of {msg_id:?} is not decimal"));
        assert_eq!(parsed.to_string(), index, "the record index of {msg_id:?} is not plain decimal");
        assert!(indices.insert(parsed), "Nats-Msg-Id {msg_id} on two messages");
        runs.insert(run);
    }
    // One loader ran: its id stays the same through publisher and server restarts.
    assert_eq!(runs.len(), 1, "run ids: {runs:?}");
}

/// Every firing of the default tracepoints by its event's encoding; the `Nats-Msg-Id`s of
/// each firing the stream holds; how many messages are of no firing.
#[allow(clippy::type_complexity)]
fn firings(
    messages: &[(String, String, Event)],
) -> (BTreeMap<Vec<u8>, (Tracepoint, u64)>, BTreeMap<(Tracepoint, u64), Vec<&str>>, usize) {
    let firing_of: BTreeMap<Vec<u8>, (Tracepoint, u64)> = Tracepoint::defaults()
        .into_iter()
        .flat_map(|tp| (0..ROUNDS).map(move |seq| (expect::event(tp, SEED, seq).1.encode_to_vec(), (tp, seq))))
        .collect();
    let mut msg_ids = BTreeMap::<(Tracepoint, u64), Vec<&str>>::new();
    let mut unknown = 0;
    for (_, msg_id, event) in messages {
        match firing_of.get(&ebpf_of(event.clone()).encode_to_vec()) {
            Some(firing) => msg_ids.entry(*firing).or_default().push(msg_id),
            None => unknown += 1,
        }
    }
    (firing_of, msg_ids, unknown)
}

/// Asserts that `messages` hold each firing once, naming the missing, the repeated (with
/// their Msg-Ids) and the unknown ones: a readable failure before [`assert_fired_exactly`]'s.
fn assert_each_firing_once(messages: &[(String, String, Event)]) {
    let (firing_of, msg_ids, unknown) = firings(messages);
    let missing: BTreeSet<_> = firing_of.values().filter(|firing| !msg_ids.contains_key(firing)).collect();
    let missing: Vec<_> = missing.into_iter().collect();
    let repeated: Vec<_> = msg_ids.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && unknown == 0,
        "{} messages for {} firings: {} missing (the first: {:?}), {} repeated (the first: {:?}), {unknown} never fired",
        messages.len(),
        firing_of.len(),
        missing.len(),
        &missing[..missing.len().min(10)],
        repeated.len(),
        &repeated[..repeated.len().min(10)],
    );
}

/// Asserts the conservation law over the closing lines of every publisher that ran: events
/// fired = acknowledged by JetStream + every counted drop. Returns the drops, by name.
fn assert_conserved(fired: u64, logs: &[&str]) -> BTreeMap<&'static str, u64> {
    let mut acknowledged = 0;
    let mut drops = BTreeMap::new();
    for log in logs {
        let counts = closing_counts(log);
        let count = |name: &str| *counts.get(name).unwrap_or_else(|| panic!("no {name}= in `{}`", closing_line(log)));
        acknowledged += count("jetstream_acknowledged");
        for drop in COUNTED_DROPS {
            *drops.entry(drop).or_insert(0) += count(drop);
        }
    }
    assert_eq!(acknowledged + drops.values().sum::<u64>(), fired, "acknowledged={acknowledged}, drops {drops:?}");
    drops
}

/// The publisher is given node 0 alone; it learns the others from it. Node 0, its server and
/// the stream's leader (the worst case: both the connection and the acknowledgements of what
/// is in flight go), dies mid-stream (SIGKILL) and comes back 2 s later: the stream (three
/// replicas) has every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_a_node_mid_stream_without_losing_an_event() {
    let mut cluster = NatsCluster::start().await;
    let Pipeline { simulator, mut publisher, dir: _dir, loader: _loader, subscriber: _subscriber } =
        start_pipeline(cluster.address(0), &jetstream_flags("3")).await;
    // The publisher created the stream before it listened.
    cluster.move_stream_leader(STREAM, 0).await;
    let before = wall_ms();
    let firing = tokio::spawn(simulator.fire());
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart(0).await;
    let fired = total_fired(&firing.await.expect("simulator task"));
    let after = wall_ms();

    // Read from a node that stayed up throughout.
    let survivor = cluster.address(1).to_string();
    wait_for_stream_messages(&survivor, STREAM, fired, DELIVERY).await;
    let log = stopped_log(&mut publisher).await;
    // The publisher's log, shown if the test fails (as in every test here).
    eprintln!("{log}");
    assert_eq!(stream_info(&survivor, STREAM).await.config.num_replicas, 3);
    let messages = stream_messages(&survivor, STREAM).await;
    assert_stream_holds_every_event_once(&messages, before.saturating_sub(1000)..=after + 1000);
    // Drops are not expected, but a drop counted is no loss unaccounted.
    assert_conserved(fired, &[&log]);
    // The log names the server the client moved to, not the address it was given.
    let moved = (1..3).any(|i| {
        log.contains(&format!("connected to NATS at {} (server {})", cluster.address(i), NatsCluster::server_name(i)))
    });
    assert!(moved, "no line names the server taking over from node 0");
}

/// The publisher is stopped mid-stream (SIGTERM, as `systemctl restart` does) and a new one
/// takes the socket; the loader reconnects and sends what its rings held. Nothing is lost, and
/// what both publishers sent is in the stream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_restarted_mid_stream_neither_loses_nor_duplicates() {
    let nats = NatsServer::with_jetstream().await;
    let flags = jetstream_flags("1");
    let Pipeline { simulator, mut publisher, dir, loader: _loader, subscriber: _subscriber } =
        start_pipeline(&nats.address, &flags).await;
    let before = wall_ms();
    let firing = tokio::spawn(simulator.fire());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _) = terminate(&mut publisher).await;
    let first_log = read_stderr(&mut publisher).await;
    assert!(status.success(), "publisher stops cleanly on SIGTERM: {status}: {first_log}");
    let mut second = start_next_publisher(&nats.address, dir.path(), &flags).await;
    let fired = total_fired(&firing.await.expect("simulator task"));
    let after = wall_ms();

    wait_for_stream_messages(&nats.address, STREAM, fired, DELIVERY).await;
    let second_log = stopped_log(&mut second).await;
    eprintln!("{first_log}{second_log}");
    let messages = stream_messages(&nats.address, STREAM).await;
    assert_stream_holds_every_event_once(&messages, before.saturating_sub(1000)..=after + 1000);
    assert_conserved(fired, &[&first_log, &second_log]);
    for log in [&first_log, &second_log] {
        assert!(closing_counts(log)["jetstream_acknowledged"] > 0, "the stop fell mid-stream: {}", closing_line(log));
    }
}

/// The only server is killed mid-stream (SIGKILL) and restarted 2 s later on its address and
/// store: the publisher publishes again what was not acknowledged, the server drops what it
/// already stored by Msg-Id, and the stream holds every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_restarted_mid_stream_loses_and_duplicates_nothing() {
    let mut nats = NatsServer::with_jetstream().await;
    let Pipeline { simulator, mut publisher, dir: _dir, loader: _loader, subscriber: _subscriber } =
        start_pipeline(&nats.address, &jetstream_flags("1")).await;
    let before = wall_ms();
    let firing = tokio::spawn(simulator.fire());
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart().await;
    let fired = total_fired(&firing.await.expect("simulator task"));
    let after = wall_ms();

    wait_for_stream_messages(&nats.address, STREAM, fired, DELIVERY).await;
    let log = stopped_log(&mut publisher).await;
    eprintln!("{log}");
    let messages = stream_messages(&nats.address, STREAM).await;
    assert_stream_holds_every_event_once(&messages, before.saturating_sub(1000)..=after + 1000);
    assert_conserved(fired, &[&log]);
}

/// JetStream mode changes nothing for core subscribers: they receive every event once, as the
/// stream (created with the settings given and the defaults) holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_subscribers_receive_the_same_events_in_jetstream_mode() {
    let nats = NatsServer::with_jetstream().await;
    let Pipeline { simulator, mut publisher, mut subscriber, dir: _dir, loader: _loader } =
        start_pipeline(&nats.address, &jetstream_flags("1")).await;
    let before = wall_ms();
    let fired = total_fired(&simulator.fire().await);
    let after = wall_ms();
    let window = before.saturating_sub(1000)..=after + 1000;

    let received = receive(&mut subscriber, fired as usize).await;
    assert_fired_exactly(&received, &Tracepoint::defaults(), SEED, 0..ROUNDS, window.clone());
    wait_for_stream_messages(&nats.address, STREAM, fired, DELIVERY).await;
    let log = stopped_log(&mut publisher).await;
    eprintln!("{log}");
    let messages = stream_messages(&nats.address, STREAM).await;
    assert_stream_holds_every_event_once(&messages, window);
    // Without a fault, nothing is given up or dropped.
    assert_eq!(assert_conserved(fired, &[&log]).values().sum::<u64>(), 0, "{}", closing_line(&log));

    // The stream takes every subject of the tracepoint table, switched on or not.
    let config = stream_info(&nats.address, STREAM).await.config;
    let subjects: BTreeSet<String> = config.subjects.into_iter().collect();
    let table: BTreeSet<String> = Category::ALL.iter().map(|c| c.subject().to_string()).collect();
    assert_eq!(subjects, table);
    assert_eq!(config.num_replicas, 1);
    assert_eq!(config.max_bytes.to_string(), MAX_BYTES);
    assert_eq!(config.max_age, Duration::from_secs(604_800));
}

/// JetStream mode keeps every event until the server acknowledges it, to send it again. With
/// the server down while blocks of 4,000,000 bytes keep coming, the publisher's memory stays
/// under its stated bound (the window of 1024 events alone would be 4 GB of them); once the
/// server is back, every block is acknowledged or counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_memory_stays_bounded_while_jetstream_is_down_and_large_blocks_keep_coming() {
    const BLOCKS: u64 = 40;
    let mut nats = NatsServer::with_jetstream().await;
    let flags = PipelineFlags {
        simulator: &["--message-size", "4000000", "--rate", "4"],
        publisher: &jetstream_flags("1"),
        ..Default::default()
    };
    let Pipeline { simulator, mut publisher, dir: _dir, loader: _loader, subscriber: _subscriber } =
        Pipeline::start_configured(Launch::Direct, &nats.address, "net:inbound_message", BLOCKS, SEED, flags).await;
    nats.kill().await;
    assert_eq!(simulator.fire().await[&Tracepoint::NetInboundMessage], BLOCKS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    e2e::assert_publisher_memory_bounded(
        &publisher,
        &format!("with JetStream down, {BLOCKS} blocks of 4,000,000 bytes"),
    );

    nats.restart().await;
    // What waits is sent again every 250 ms once the client is back; a stopping publisher
    // still waits up to 10 s for acknowledgements.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let counts = closing_counts(&stopped_log(&mut publisher).await);
    let stored = stream_info(&nats.address, STREAM).await.state.messages;
    assert_eq!(counts["jetstream_acknowledged"], stored, "{counts:?}");
    assert!(stored > 0, "{counts:?}");
    let drops: u64 = COUNTED_DROPS.iter().map(|drop| counts[*drop]).sum();
    assert_eq!(stored + drops, BLOCKS, "{counts:?}");
}

/// The publisher is killed (SIGKILL, as a crash or the OOM killer would) while the server is
/// down, holding events it sent and could not have had acknowledged; a new one takes over once
/// the server is back. The loader counts what the dead publisher took with it as
/// `publisher_lost`: every event fired is in the stream (once) or counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_killed_with_events_unacknowledged_has_them_counted() {
    let mut nats = NatsServer::with_jetstream().await;
    let flags = jetstream_flags("1");
    let Pipeline { simulator, mut publisher, dir, loader: _loader, subscriber: _subscriber } =
        start_pipeline(&nats.address, &flags).await;
    let firing = tokio::spawn(simulator.fire());
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    publisher.kill().await.expect("kill the publisher");
    nats.restart().await;
    let mut second = start_next_publisher(&nats.address, dir.path(), &flags).await;
    let fired = total_fired(&firing.await.expect("simulator task"));
    // The rings' backlog goes out, and its acknowledgements come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = stopped_log(&mut second).await;
    eprintln!("{log}");
    let messages = stream_messages(&nats.address, STREAM).await;
    let (_, msg_ids, unknown) = firings(&messages);
    assert_eq!(unknown, 0);
    assert!(msg_ids.values().all(|ids| ids.len() == 1), "an event stored twice");
    let counted = closing_counts(&log)["dropped_before_publisher"];
    assert!(counted > 0, "the killed publisher held unacknowledged events: {}", closing_line(&log));
    assert!(
        msg_ids.len() as u64 + counted >= fired,
        "{} of {fired} events in the stream, {counted} counted: {}",
        msg_ids.len(),
        closing_line(&log)
    );
}
