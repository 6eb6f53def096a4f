//! An event larger than the NATS server's `max_payload` is counted and explained, not a
//! connection reset: the events around it still arrive.

use e2e::{expect, receive, NatsServer, Pipeline};
use ipc_protocol::Tracepoint;
use prost::Message;
use publisher::proto::ebpf_extractor::ebpf::EbpfEvent;
use publisher::proto::ebpf_extractor::message::{message_event::Msg, Unknown};
use publisher::proto::event::{event::PeerObserverEvent, Event};
use tracepoint_simulator::{args, Args, Workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_over_max_payload_are_counted_and_named() {
    const MAX_PAYLOAD: usize = 1024;
    const ROUNDS: u64 = 42;
    let nats = NatsServer::with_max_payload(MAX_PAYLOAD).await;
    let Pipeline { mut subscriber, simulator, mut publisher, dir: _dir, loader: _loader } =
        Pipeline::start(&nats, "net:inbound_message", ROUNDS, 21, &[]).await;
    assert_eq!(simulator.fire().await[&Tracepoint::NetInboundMessage], ROUNDS);

    // Which events fit: the envelope's timestamp always takes 6 bytes in this century.
    let (fits, too_big): (Vec<u64>, Vec<u64>) = (0..ROUNDS).partition(|seq| {
        let (_, ebpf) = expect::event(Tracepoint::NetInboundMessage, 21, *seq);
        let event =
            Event { peer_observer_event: Some(PeerObserverEvent::EbpfExtractor(ebpf)), timestamp: 1_700_000_000_000 };
        event.encoded_len() <= MAX_PAYLOAD
    });
    assert!(!too_big.is_empty() && !fits.is_empty(), "workload must straddle the limit");

    let received = receive(&mut subscriber, fits.len()).await;
    let want: Vec<_> = fits.iter().map(|seq| expect::event(Tracepoint::NetInboundMessage, 21, *seq).1).collect();
    let got: Vec<_> = received.into_iter().map(|(_, event)| e2e::ebpf_of(event)).collect();
    assert_eq!(got, want);

    let log = e2e::stopped_log(&mut publisher).await;
    assert!(
        log.contains(&format!(
            "{} events each exceeds the NATS server's max_payload of {MAX_PAYLOAD} bytes",
            too_big.len()
        )) && log.contains("set `max_payload: 5242880`"),
        "{log}"
    );
    assert!(log.contains(&format!("over_max_payload={}", too_big.len())), "{log}");
}

/// NATS is down while blocks of 4,000,000 bytes keep coming: the publisher's peak RSS stays
/// under its stated bound (before, the NATS client buffered up to 2048 events of any size),
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
    let want: Vec<_> = (0..ROUNDS)
        .map(|seq| {
            let Args::Message { message, .. } = args(Tracepoint::NetInboundMessage, 24, seq, &workload) else {
                panic!("#{seq}: not a message")
            };
            let (_, mut event) = expect::event_with(Tracepoint::NetInboundMessage, 24, seq, &workload);
            let Some(EbpfEvent::Message(m)) = &mut event.ebpf_event else { panic!("#{seq}: not a message event") };
            m.msg = Some(Msg::Unknown(Unknown { command: "merkleblock".into(), payload: message.serialize() }));
            event
        })
        .collect();
    let got: Vec<_> = received.into_iter().map(|(_, event)| e2e::ebpf_of(event)).collect();
    assert_eq!(got, want);

    let stopped = e2e::stopped_log(&mut publisher).await;
    let counts = e2e::closing_counts(&stopped);
    assert_eq!(counts["published"], ROUNDS, "{stopped}");
    assert_eq!(counts["net:inbound_message/over_decode_budget_merkleblock"], ROUNDS, "{stopped}");
    assert_eq!(counts["nats_unavailable"], 0, "{stopped}");
}
