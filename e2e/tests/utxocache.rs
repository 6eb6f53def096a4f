//! Bitcoin Core's `utxocache:*` tracepoints, switched on, reach NATS as this project's own
//! events on their own subject, every field as fired and each tracepoint's in firing order;
//! peer-observer's tools, subscribed to `*`, never see them.

use std::collections::BTreeMap;

use e2e::{expect, receive, wall_ms, NatsServer, Pipeline};
use futures_util::StreamExt;
use ipc_protocol::{Category, Tracepoint};
use prost::Message;
use publisher::proto::peer_observer_ebpf::utxocache;

/// Receives `total` utxocache events, then waits briefly for any extra.
async fn receive_utxocache(sub: &mut async_nats::Subscriber, total: usize) -> Vec<(String, utxocache::Event)> {
    let mut events = Vec::new();
    let decode = |msg: async_nats::Message| {
        (msg.subject.to_string(), utxocache::Event::decode(msg.payload).expect("payload is a utxocache.Event"))
    };
    while events.len() < total {
        match tokio::time::timeout(std::time::Duration::from_secs(30), sub.next()).await {
            Ok(Some(msg)) => events.push(decode(msg)),
            _ => break,
        }
    }
    while let Ok(Some(msg)) = tokio::time::timeout(std::time::Duration::from_millis(500), sub.next()).await {
        events.push(decode(msg));
    }
    events
}

/// Fires `rounds` of the simulator's `tracepoints` with utxocache switched on, beside the
/// defaults; checks both subscriptions.
async fn fire_and_check(tracepoints: &str, rounds: u64, seed: u64) {
    let nats = NatsServer::start().await;
    let pipeline =
        Pipeline::start_with(e2e::Launch::Direct, &nats, tracepoints, rounds, seed, &[], &["--utxocache-tracepoints"])
            .await;
    let client = async_nats::connect(&nats.address).await.expect("connect");
    let mut own = e2e::subscribe_in_place(&client, Category::Utxocache.subject()).await;
    let Pipeline { mut subscriber, simulator, dir: _dir, publisher: _publisher, loader: _loader } = pipeline;

    let utxocache = Tracepoint::enabled(&[Category::Utxocache]);
    // Fired beside them, the default tracepoints are published to peer-observer as ever.
    let defaults = if tracepoints == "all" { Tracepoint::defaults() } else { Vec::new() };
    let before = wall_ms();
    let fired = simulator.fire().await;
    for tp in utxocache.iter().chain(&defaults) {
        assert_eq!(fired.get(tp), Some(&rounds), "{tp} must fire every round while traced");
    }
    let events = receive_utxocache(&mut own, (rounds * utxocache.len() as u64) as usize).await;
    let after = wall_ms();

    let mut got = BTreeMap::<Tracepoint, Vec<_>>::new();
    for (subject, event) in events {
        assert_eq!(subject, "peer-observer-ebpf.utxocache");
        assert!((before.saturating_sub(1000)..=after + 1000).contains(&event.timestamp), "{}", event.timestamp);
        let inner = event.event.expect("the event is set");
        let tp = match &inner {
            utxocache::event::Event::Add(_) => Tracepoint::UtxocacheAdd,
            utxocache::event::Event::Spent(_) => Tracepoint::UtxocacheSpent,
            utxocache::event::Event::Uncache(_) => Tracepoint::UtxocacheUncache,
            utxocache::event::Event::Flush(_) => Tracepoint::UtxocacheFlush,
        };
        got.entry(tp).or_default().push(inner);
    }
    for tp in &utxocache {
        let want: Vec<_> = (0..rounds).map(|seq| expect::utxocache(*tp, seed, seq)).collect();
        let received = got.remove(tp).unwrap_or_default();
        assert_eq!(received.len(), want.len(), "{tp}");
        assert!(received == want, "{tp}: the events differ from what was fired");
    }

    // peer-observer's `*` gets exactly the default tracepoints' events, each an event.Event
    // (`receive` fails on anything else), and nothing of utxocache.
    let others = receive(&mut subscriber, (rounds * defaults.len() as u64) as usize).await;
    assert_eq!(others.len() as u64, rounds * defaults.len() as u64);
    let mut counts = BTreeMap::<Tracepoint, u64>::new();
    for (_, event) in &others {
        *counts.entry(expect::tracepoint_of(event)).or_default() += 1;
    }
    assert_eq!(counts, defaults.iter().map(|tp| (*tp, rounds)).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utxocache_events_arrive_exactly_on_their_own_subject_and_never_on_star() {
    fire_and_check("all", 25, 21).await;
}

/// Connecting one block fires thousands of `add` and `spent`: a burst of them at full speed
/// fits the utxocache ring and arrives whole, beside everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_sized_burst_of_utxocache_events_loses_nothing() {
    fire_and_check("utxocache", 2_500, 22).await;
}
