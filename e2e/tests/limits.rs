//! An event larger than the NATS server's `max_payload` arrives undecoded where it then fits,
//! and is counted and explained where it does not, never a connection reset: the events around
//! it still arrive. The publisher's memory stays bounded whatever the payloads.

use e2e::{expect, receive, Launch, NatsServer, Pipeline, PipelineFlags};
use ipc_protocol::Tracepoint;
use prost::Message;
use publisher::proto::ebpf_extractor::ebpf::EbpfEvent;
use publisher::proto::event::{event::PeerObserverEvent, Event};
use publisher::sink::MSG_ID_HEADER_MAX;
use tracepoint_simulator::Workload;

/// Twice through the message types: addr, addrv2, headers and getheaders arrive undecoded
/// against a `max_payload` of [`MAX_EVENT`].
const ROUNDS: u64 = 84;
const SEED: u64 = 21;
/// The largest event that fits, in both tests below.
const MAX_EVENT: usize = 700;

/// What a publisher whose events may take `MAX_EVENT` bytes publishes of `ROUNDS` messages:
/// each decoded where its event fits, as `unknown` with its payload whole where only that
/// fits (with the commands of those), and how many neither fits.
fn published_within_max_event() -> (Vec<publisher::proto::ebpf_extractor::Ebpf>, Vec<String>, u64) {
    // What fits: the envelope's timestamp always takes 6 bytes in this century. The publisher
    // decides before the timestamp is set, allowing it 10 bytes and each length in the
    // envelope 2 (`message_event_room` in publisher/src/decode.rs): 5 bytes more than the
    // event takes, so an event that fits with fewer to spare goes undecoded; none here does.
    let (mut want, mut undecoded_commands, mut too_big) = (Vec::new(), Vec::new(), 0);
    for seq in 0..ROUNDS {
        let (_, decoded) = expect::event(Tracepoint::NetInboundMessage, SEED, seq);
        let spare = MAX_EVENT as i64 - event_len(decoded.clone()) as i64;
        assert!(!(0..5).contains(&spare), "#{seq} fits with {spare} bytes to spare");
        let (_, undecoded) = expect::undecoded_with(Tracepoint::NetInboundMessage, SEED, seq, &Workload::default());
        if spare >= 0 {
            want.push(decoded);
        } else if event_len(undecoded.clone()) <= MAX_EVENT {
            let Some(EbpfEvent::Message(m)) = &undecoded.ebpf_event else { unreachable!("a message event") };
            undecoded_commands.push(m.meta.command.clone());
            want.push(undecoded);
        } else {
            too_big += 1;
        }
    }
    assert!(too_big > 0 && !undecoded_commands.is_empty(), "the workload must reach both limits");
    (want, undecoded_commands, too_big)
}

fn event_len(ebpf: publisher::proto::ebpf_extractor::Ebpf) -> usize {
    Event { peer_observer_event: Some(PeerObserverEvent::EbpfExtractor(ebpf)), timestamp: 1_700_000_000_000 }
        .encoded_len()
}

/// Against a server whose `max_payload` is 700 bytes, each message arrives decoded where its event
/// fits, as `unknown` with its payload whole where only that fits (counted apart, and the
/// publisher advises the recommended setting), and is counted as `over_max_payload` where
/// neither does, the events around it still arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_over_max_payload_arrive_undecoded_or_are_counted_and_named() {
    let nats = NatsServer::with_max_payload(MAX_EVENT).await;
    let Pipeline { mut subscriber, simulator, mut publisher, dir: _dir, loader: _loader } =
        Pipeline::start(&nats, "net:inbound_message", ROUNDS, SEED, &[]).await;
    assert_eq!(simulator.fire().await[&Tracepoint::NetInboundMessage], ROUNDS);
    let (want, undecoded_commands, too_big) = published_within_max_event();

    let received = receive(&mut subscriber, want.len()).await;
    let got: Vec<_> = received.into_iter().map(|(_, event)| e2e::ebpf_of(event)).collect();
    assert_eq!(got, want);

    let log = e2e::stopped_log(&mut publisher).await;
    assert!(
        log.contains(&format!(
            "{too_big} events each exceeds what the NATS server's max_payload of {MAX_EVENT} bytes allows"
        )) && log.contains(&format!(
            "{} P2P messages were published undecoded, as `unknown`: decoded, each would exceed the NATS \
                 server's max_payload of {MAX_EVENT} bytes: set `max_payload: 5242880`",
            undecoded_commands.len()
        )),
        "{log}"
    );
    let counts = e2e::closing_counts(&log);
    assert_eq!(counts["over_max_payload"], too_big, "{log}");
    for command in &undecoded_commands {
        let n = undecoded_commands.iter().filter(|c| *c == command).count() as u64;
        assert_eq!(counts[&format!("net:inbound_message/undecoded_over_max_payload_{command}")], n, "{log}");
    }
}

/// In JetStream mode every event carries a `Nats-Msg-Id` header, of up to 80 bytes, which
/// async-nats counts against `max_payload` too. Against a server whose `max_payload` is 80
/// bytes more than [`MAX_EVENT`], the same messages arrive, undecoded or counted, as where
/// events may take `MAX_EVENT`; every one sent is acknowledged, none waits to be sent again.
/// Before, an event that fitted `max_payload` only without its header was refused by the
/// client at every attempt, for the 60 s before it was given up, holding its place in the
/// window, which such events could fill, stalling every tracepoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_jetstream_mode_the_msg_id_header_counts_against_max_payload() {
    let nats = NatsServer::with_jetstream_and_max_payload(MAX_EVENT + MSG_ID_HEADER_MAX).await;
    let flags = PipelineFlags {
        publisher: &["--nats-jetstream-stream", "LIMITS", "--nats-jetstream-max-bytes", "1073741824"],
        ..Default::default()
    };
    let Pipeline { mut subscriber, simulator, mut publisher, dir: _dir, loader: _loader } =
        Pipeline::start_configured(Launch::Direct, &nats.address, "net:inbound_message", ROUNDS, SEED, flags).await;
    assert_eq!(simulator.fire().await[&Tracepoint::NetInboundMessage], ROUNDS);
    let (want, _, too_big) = published_within_max_event();
    let within_the_header = (0..ROUNDS)
        .map(|seq| event_len(expect::event(Tracepoint::NetInboundMessage, SEED, seq).1))
        .filter(|len| (MAX_EVENT + 1..=MAX_EVENT + MSG_ID_HEADER_MAX).contains(len))
        .count();
    assert!(within_the_header > 0, "the workload must have events that fit only without the header");

    let received = receive(&mut subscriber, want.len()).await;
    let got: Vec<_> = received.into_iter().map(|(_, event)| e2e::ebpf_of(event)).collect();
    assert_eq!(got, want);

    let log = e2e::stopped_log(&mut publisher).await;
    let counts = e2e::closing_counts(&log);
    assert_eq!(counts["over_max_payload"], too_big, "{log}");
    assert_eq!(counts["jetstream_acknowledged"], want.len() as u64, "{log}");
    assert_eq!(counts["jetstream_gave_up"], 0, "{log}");
}

/// NATS is down while blocks of 4,000,000 bytes keep coming: the publisher's peak RSS stays
/// under its stated bound (before, the NATS client buffered up to its capacity in events of any size),
/// and every block is handed to the client or counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_memory_stays_bounded_while_nats_is_down_and_large_blocks_keep_coming() {
    const ROUNDS: u64 = 40;
    let mut nats = NatsServer::start().await;
    let Pipeline { simulator, mut publisher, dir: _dir, loader: _loader, subscriber: _subscriber } =
        Pipeline::start_with(
            e2e::Launch::Direct,
            &nats,
            "net:inbound_message",
            ROUNDS,
            23,
            &["--message-size", "4000000", "--rate", "4"],
            &[],
        )
        .await;
    nats.kill().await;
    assert_eq!(simulator.fire().await[&Tracepoint::NetInboundMessage], ROUNDS);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    e2e::assert_publisher_memory_bounded(&publisher, &format!("with NATS down, {ROUNDS} blocks of 4,000,000 bytes"));

    let counts = e2e::closing_counts(&e2e::stopped_log(&mut publisher).await);
    // The loader's rings count what they could not hold while the publisher was busy.
    assert_eq!(
        counts["published"] + counts["nats_unavailable"] + counts["dropped_before_publisher"],
        ROUNDS,
        "{counts:?}"
    );
    assert!(counts["nats_unavailable"] > 0, "{counts:?}");
}

/// The densest payload a peer can send: a merkleblock of 4,000,000 bytes that is almost all
/// flag bytes. Decoded, it takes the whole decode budget (8 heap bytes per payload byte), and
/// its encoding 16 bytes per payload byte, 64 MB: more than the publisher hands to NATS at
/// once, which made it count each as `nats_unavailable` while NATS was up. Each arrives as
/// `unknown` with its whole payload, counted as over the decode budget, on a server that takes
/// events of any size NATS allows, and the publisher's peak RSS stays under its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merkleblocks_of_nothing_but_flags_arrive_as_unknown_within_the_memory_bound() {
    const ROUNDS: u64 = 4;
    const SIZE: usize = 4_000_000;
    let nats = NatsServer::with_max_payload(64 << 20).await;
    let Pipeline { simulator, mut publisher, dir: _dir, loader: _loader, mut subscriber } = Pipeline::start_with(
        e2e::Launch::Direct,
        &nats,
        "net:inbound_message",
        ROUNDS,
        24,
        &["--message-type", "merkleblock", "--message-size", &SIZE.to_string(), "--rate", "2"],
        &[],
    )
    .await;
    assert_eq!(simulator.fire().await[&Tracepoint::NetInboundMessage], ROUNDS);
    let received = receive(&mut subscriber, ROUNDS as usize).await;
    e2e::assert_publisher_memory_bounded(&publisher, &format!("after {ROUNDS} merkleblocks of {SIZE} bytes"));

    let workload = Workload { message_type: Some("merkleblock".into()), message_size: Some(SIZE), garbage: false };
    let want: Vec<_> =
        (0..ROUNDS).map(|seq| expect::undecoded_with(Tracepoint::NetInboundMessage, 24, seq, &workload).1).collect();
    for event in &want {
        let Some(EbpfEvent::Message(m)) = &event.ebpf_event else { unreachable!("a message event") };
        assert_eq!(m.meta.command, "merkleblock");
    }
    let got: Vec<_> = received.into_iter().map(|(_, event)| e2e::ebpf_of(event)).collect();
    assert_eq!(got, want);

    let stopped = e2e::stopped_log(&mut publisher).await;
    let counts = e2e::closing_counts(&stopped);
    assert_eq!(counts["published"], ROUNDS, "{stopped}");
    assert_eq!(counts["net:inbound_message/over_decode_budget_merkleblock"], ROUNDS, "{stopped}");
    assert_eq!(counts["nats_unavailable"], 0, "{stopped}");
}
