//! Throughput of the whole pipeline on this machine: a local nats-server, the simulator, the
//! loader (as `nobody` with CAP_BPF and CAP_PERFMON) and the publisher, at default settings.
//! Prints, per workload, what was fired, delivered intact and counted as dropped, and the
//! rate. A measurement, not a test: run it as root on an otherwise idle machine, from a
//! release build (`cargo build --release --workspace --bins`, then
//! `target/release/throughput`).

use std::time::{Duration, Instant};

use clap::Parser;
use e2e::{Launch, NatsServer, Pipeline};
use futures_util::StreamExt;
use prost::Message;
use publisher::proto::ebpf_extractor::ebpf::EbpfEvent;
use publisher::proto::ebpf_extractor::message::message_event::Msg;
use publisher::proto::ebpf_extractor::Ebpf;
use publisher::proto::event::{event::PeerObserverEvent, Event};

/// Measures end-to-end throughput of the extractor.
#[derive(Parser)]
struct Cli {
    /// Firings of 4,000,000-byte block messages
    #[arg(long, default_value_t = 200)]
    blocks: u64,
    /// Firings of ping messages
    #[arg(long, default_value_t = 500_000)]
    pings: u64,
}

struct Outcome {
    fired: u64,
    delivered: u64,
    intact: u64,
    seconds: f64,
    bytes: u64,
    closing: String,
}

/// Fires `rounds` messages on `net:inbound_message` as fast as possible and counts those that
/// arrive intact: of the expected command and size, and decoded into the expected variant.
async fn run(nats: &NatsServer, rounds: u64, flags: &[&str], command: &str, size: Option<u64>) -> Outcome {
    let Pipeline { mut subscriber, simulator, mut loader, mut publisher, dir: _dir } =
        Pipeline::start_with(Launch::Direct, nats, "net:inbound_message", rounds, 7, flags, &[]).await;
    let start = Instant::now();
    let firing = tokio::spawn(simulator.fire());
    let (mut delivered, mut intact, mut bytes, mut last) = (0u64, 0u64, 0u64, start);
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(3), subscriber.next()).await {
        last = Instant::now();
        bytes += msg.payload.len() as u64;
        delivered += 1;
        let event = Event::decode(msg.payload).expect("an event.Event");
        if let Some(PeerObserverEvent::EbpfExtractor(Ebpf { ebpf_event: Some(EbpfEvent::Message(m)) })) = event.peer_observer_event {
            let decoded = !matches!(m.msg, Some(Msg::Unknown(_)));
            if m.meta.command == command && size.is_none_or(|s| m.meta.size == s) && decoded {
                intact += 1;
            }
        }
        if delivered == rounds {
            break;
        }
    }
    let fired = firing.await.expect("simulator task").values().sum();
    let logs = e2e::stop_and_read_logs(&mut [&mut loader, &mut publisher]).await;
    let closing = logs
        .lines()
        .find_map(|l| l.split_once("stopped: ").map(|(_, counts)| counts.to_string()))
        .unwrap_or_default();
    Outcome { fired, delivered, intact, seconds: (last - start).as_secs_f64(), bytes, closing }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = Cli::parse();
    let nats = NatsServer::start().await;
    println!("| workload | fired | delivered | intact | events/s | MB/s | publisher's closing counts |");
    println!("|---|---|---|---|---|---|---|");
    for (name, rounds, flags, command, size) in [
        ("block, 4,000,000 B", cli.blocks, ["--message-size", "4000000"], "block", Some(4_000_000)),
        ("ping, 8 B", cli.pings, ["--message-type", "ping"], "ping", None),
    ] {
        let o = run(&nats, rounds, &flags, command, size).await;
        println!(
            "| {name} | {} | {} | {} | {:.0} | {:.1} | {} |",
            o.fired,
            o.delivered,
            o.intact,
            o.delivered as f64 / o.seconds,
            o.bytes as f64 / o.seconds / 1e6,
            o.closing
        );
    }
}
