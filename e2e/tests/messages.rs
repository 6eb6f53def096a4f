//! Every P2P message type, fired with a real payload on both message tracepoints, reaches NATS
//! decoded into its variant with every field as the simulator built it; payloads that cannot
//! be decoded arrive as `unknown` with the whole payload and are counted per message type.

use std::collections::{BTreeMap, BTreeSet};

use e2e::{expect, receive, Launch, NatsServer, Pipeline, PipelineFlags};
use ipc_protocol::Tracepoint;
use publisher::proto::ebpf_extractor::ebpf::EbpfEvent;
use publisher::proto::ebpf_extractor::message::{message_event::Msg, MessageEvent};
use tracepoint_simulator::{args, Args, Message, Workload, GARBAGE, MADE_UP_TYPE, MESSAGE_TYPES, MIN_BLOCK_SIZE};

const BOTH: &str = "net:inbound_message,net:outbound_message";
const DIRECTIONS: [Tracepoint; 2] = [Tracepoint::NetInboundMessage, Tracepoint::NetOutboundMessage];

/// What arrived, per direction in firing order.
type Arrived = BTreeMap<Tracepoint, Vec<MessageEvent>>;

/// Fires `rounds` of both message tracepoints with `sim_flags` (which must select
/// `workload`), checks every event equals its expectation, and returns what arrived and the
/// publisher's closing `stopped: ...` line.
async fn fire_and_check(
    nats: &NatsServer,
    rounds: u64,
    seed: u64,
    sim_flags: &[&str],
    workload: &Workload,
) -> (Arrived, String) {
    // At debug, the launcher's default (the seed's).
    let flags = PipelineFlags { simulator: sim_flags, publisher: &["--log-level", "debug"], ..Default::default() };
    let Pipeline { mut subscriber, simulator, mut publisher, dir: _dir, loader: _loader } =
        Pipeline::start_configured(Launch::Direct, &nats.address, BOTH, rounds, seed, flags).await;
    let fired = simulator.fire().await;
    for tp in DIRECTIONS {
        assert_eq!(fired.get(&tp), Some(&rounds), "{tp} must fire every round while traced");
    }
    let events = receive(&mut subscriber, 2 * rounds as usize).await;
    assert_eq!(events.len() as u64, 2 * rounds, "events received");

    let mut arrived = Arrived::new();
    for (subject, event) in events {
        let tp = expect::tracepoint_of(&event);
        let received = arrived.entry(tp).or_default();
        let seq = received.len() as u64;
        let ebpf = e2e::ebpf_of(event);
        let (want_subject, want) = expect::event_with(tp, seed, seq, workload);
        assert_eq!(subject, want_subject, "{tp} #{seq}");
        assert_eq!(ebpf, want, "{tp} #{seq}");
        let Some(EbpfEvent::Message(message)) = ebpf.ebpf_event else { unreachable!() };
        received.push(message);
    }

    let log = e2e::stopped_log(&mut publisher).await;
    // A peer's payloads cannot flood the journal: nothing is logged per event at debug.
    assert!(!log.contains(" undecodable payload: "), "{log}");
    (arrived, e2e::closing_line(&log).to_string())
}

/// The `<tracepoint>/undecodable_<command>=N` counts of a `stopped:` line.
fn undecodable_counts(stopped: &str) -> BTreeMap<String, u64> {
    e2e::counts(stopped).into_iter().filter(|(label, _)| label.contains("/undecodable_")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_type_arrives_decoded_in_both_directions() {
    let nats = NatsServer::start().await;
    // Twice through the cycle: odd rounds bring each type's other form.
    let rounds = 2 * MESSAGE_TYPES.len() as u64;
    let (arrived, stopped) = fire_and_check(&nats, rounds, 41, &[], &Workload::default()).await;

    let all_types: BTreeSet<&str> = MESSAGE_TYPES.into_iter().collect();
    for tp in DIRECTIONS {
        let received = &arrived[&tp];
        let commands: BTreeSet<&str> = received.iter().map(|e| e.meta.command.as_str()).collect();
        assert_eq!(commands, all_types, "{tp}");
        // Only the commands the decoder does not know arrive as `unknown`.
        for event in received {
            let command = &event.meta.command;
            let unknown = matches!(event.msg, Some(Msg::Unknown(_)));
            assert_eq!(unknown, command == "sendtxrcncl" || command == MADE_UP_TYPE, "{tp} {command}");
        }
        let has = |variant: fn(&Msg) -> bool| received.iter().any(|e| e.msg.as_ref().is_some_and(variant));
        assert!(has(|msg| matches!(msg, Msg::Oldping(true))), "{tp}: empty ping");
        assert!(has(|msg| matches!(msg, Msg::Emptyaddrv2(true))), "{tp}: empty addrv2");
    }
    assert!(undecodable_counts(&stopped).is_empty(), "nothing undecodable: {stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payloads_arrive_whole_as_unknown_and_are_counted_per_type() {
    let nats = NatsServer::start().await;
    let garbage = Workload { garbage: true, ..Workload::default() };
    // Each flaw once, plus a second round of the first few.
    let rounds = GARBAGE.len() as u64 + 5;
    let (arrived, stopped) = fire_and_check(&nats, rounds, 42, &["--garbage"], &garbage).await;

    let mut want = BTreeMap::new();
    for tp in DIRECTIONS {
        for seq in 0..rounds {
            let Args::Message { message: Message::Undecodable { command, .. }, .. } = args(tp, 42, seq, &garbage)
            else {
                panic!("{tp} #{seq}: not garbage")
            };
            *want.entry(format!("{tp}/undecodable_{command}")).or_insert(0u64) += 1;
        }
        assert!(arrived[&tp].iter().all(|e| matches!(e.msg, Some(Msg::Unknown(_)))), "{tp}");
    }
    assert_eq!(undecodable_counts(&stopped), want, "{stopped}");
}

/// Exact small sizes (large ones are in large.rs): a made-up type under a block's minimum, a
/// minimal and a larger block, an inventory filled up to its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sized_messages_arrive_with_their_exact_size() {
    let nats = NatsServer::start().await;
    for (message_type, size, command) in [
        (None, 140, MADE_UP_TYPE),
        (None, MIN_BLOCK_SIZE, "block"),
        (None, 16_000, "block"),
        (Some("inv"), 4096, "inv"),
    ] {
        let size_flag = size.to_string();
        let mut flags = vec!["--message-size", &size_flag];
        flags.extend(message_type.iter().flat_map(|t| ["--message-type", *t]));
        let workload =
            Workload { message_type: message_type.map(Into::into), message_size: Some(size), garbage: false };
        let (arrived, stopped) = fire_and_check(&nats, 3, 43, &flags, &workload).await;
        for (tp, received) in &arrived {
            for event in received {
                assert_eq!(event.meta.command, command, "{tp}");
                // An inventory holds whole 36-byte items: up to 35 bytes may stay free.
                let slack = if command == "inv" { 35 } else { 0 };
                assert!(
                    (size - slack..=size).contains(&(event.meta.size as usize)),
                    "{tp}: {command} of {} bytes, not {size}",
                    event.meta.size
                );
            }
        }
        assert!(undecodable_counts(&stopped).is_empty(), "{stopped}");
    }
}

/// A payload the BPF program cannot read is counted as `read_failed`, and its reservation in
/// the ring is discarded: the loader steps over the discarded record, and every other message
/// arrives whole, in order. Transactions take the fixed classes; messages of 20,000 bytes the
/// large path, whose pieces `bpf_loop` copies. Blocks of 100,000 bytes readable up to byte
/// 90,000 fail in their sixth piece of seven (81,920 to 98,304), after five were copied into
/// the reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_payload_is_counted_and_every_other_message_arrives() {
    // Transactions: never an empty payload, which would need no read.
    let txs = Workload { message_type: Some("tx".into()), ..Workload::default() };
    unreadable_every_tenth(&txs, &["--message-type", "tx"]).await;
    let large = Workload { message_size: Some(20_000), ..Workload::default() };
    unreadable_every_tenth(&large, &["--message-size", "20000"]).await;
    let cut = Workload { message_size: Some(100_000), ..Workload::default() };
    unreadable_every_tenth(&cut, &["--message-size", "100000", "--unreadable-from", "90000"]).await;
}

/// `--unreadable-from` needs the rounds it applies to and a payload size above it.
#[test]
fn a_payload_unreadable_from_a_byte_needs_unreadable_rounds_and_a_larger_size() {
    for (flags, error) in [
        (&["--unreadable-from", "10", "--message-size", "100"][..], "--unreadable-every"),
        (&["--unreadable-from", "10", "--unreadable-every", "2"][..], "--message-size"),
        (
            &["--unreadable-from", "100", "--unreadable-every", "2", "--message-size", "100"][..],
            "--unreadable-from must be below --message-size, or nothing is unreadable",
        ),
    ] {
        let out = std::process::Command::new(&e2e::bins().simulator)
            .args(["--tracepoints", "net:inbound_message"])
            .args(flags)
            .output()
            .expect("run the simulator");
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(error), "{flags:?}: {stderr}");
    }
}

async fn unreadable_every_tenth(workload: &Workload, flags: &[&str]) {
    const ROUNDS: u64 = 100;
    const SEED: u64 = 5;
    let nats = NatsServer::start().await;
    let sim_flags: Vec<&str> = flags.iter().copied().chain(["--unreadable-every", "10"]).collect();
    let Pipeline { mut subscriber, simulator, mut publisher, dir: _dir, mut loader } =
        Pipeline::start_with(Launch::Direct, &nats, "net:inbound_message", ROUNDS, SEED, &sim_flags, &[]).await;
    assert_eq!(simulator.fire().await.get(&Tracepoint::NetInboundMessage), Some(&ROUNDS));

    let readable: Vec<u64> = (0..ROUNDS).filter(|seq| !(seq + 1).is_multiple_of(10)).collect();
    let events = receive(&mut subscriber, readable.len()).await;
    assert_eq!(events.len(), readable.len(), "events received ({flags:?})");
    for ((subject, event), seq) in events.into_iter().zip(readable) {
        let ebpf = e2e::ebpf_of(event);
        let (want_subject, want) = expect::event_with(Tracepoint::NetInboundMessage, SEED, seq, workload);
        assert_eq!(subject, want_subject, "#{seq} ({flags:?})");
        assert_eq!(ebpf, want, "#{seq} ({flags:?})");
    }

    // The loader sends its final drop totals as it exits after the simulator.
    tokio::time::timeout(std::time::Duration::from_secs(30), loader.wait())
        .await
        .expect("loader exits")
        .expect("waits");
    let log = e2e::stopped_log(&mut publisher).await;
    assert!(log.contains("net:inbound_message read_failed +10"), "{flags:?}: {log}");
    let stopped = e2e::closing_line(&log);
    assert!(stopped.starts_with("published=90 invalid=0 "), "{flags:?}: {stopped}");
    assert!(stopped.contains(" dropped_before_publisher=10 "), "{flags:?}: {stopped}");
}

/// The benchmark's lean firing (`--lean`: one C loop, round 0's arguments every time) is
/// traced like any other: each hit arrives whole, with round 0's fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_fired_from_the_lean_loop_arrive_each_with_round_zeros_fields() {
    const ROUNDS: u64 = 2500;
    const SEED: u64 = 11;
    let nats = NatsServer::start().await;
    let tp = Tracepoint::NetInboundMessage;
    let sim_flags = ["--lean", "--message-type", "ping"];
    let Pipeline { mut subscriber, simulator, dir: _dir, publisher: _publisher, loader: _loader } =
        Pipeline::start_with(Launch::Direct, &nats, "net:inbound_message", ROUNDS, SEED, &sim_flags, &[]).await;
    assert_eq!(simulator.fire().await, BTreeMap::from([(tp, ROUNDS)]));
    let events = receive(&mut subscriber, ROUNDS as usize).await;
    assert_eq!(events.len() as u64, ROUNDS, "events received");
    let pings = Workload { message_type: Some("ping".into()), ..Workload::default() };
    let (want_subject, want) = expect::event_with(tp, SEED, 0, &pings);
    for (seq, (subject, event)) in events.into_iter().enumerate() {
        assert_eq!(subject, want_subject, "#{seq}");
        assert_eq!(e2e::ebpf_of(event), want, "#{seq}");
    }
}

/// `--lean` fires one tracepoint from one thread as fast as it can, the same hit every time:
/// anything else is refused, not ignored.
#[test]
fn lean_firing_refuses_other_tracepoints_threads_rates_and_varying_hits() {
    let inbound = ["--tracepoints", "net:inbound_message"];
    for extra in [
        &["--tracepoints", "net:inbound_message,mempool:added"][..],
        &[&inbound[..], &["--threads", "2"]].concat(),
        &[&inbound[..], &["--rate", "10"]].concat(),
        &[&inbound[..], &["--ping-clock"]].concat(),
        &[&inbound[..], &["--unreadable-every", "10"]].concat(),
    ] {
        let out = std::process::Command::new(&e2e::bins().simulator)
            .args(["--lean", "--message-type", "ping"])
            .args(extra)
            .output()
            .expect("run the simulator");
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "tracepoint-simulator: --lean fires only net:inbound_message, from one thread, without --rate, \
             --ping-clock or --unreadable-every\n",
            "{extra:?}"
        );
    }
}
