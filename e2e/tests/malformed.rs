//! A peer on the publisher's socket that sends malformed datagrams and invalid records gets
//! them refused one by one; the valid records around them are still published.

use std::time::Duration;

use bytemuck::Zeroable;
use e2e::{start_publisher, NatsServer, TempDir};
use futures_util::StreamExt;
use ipc_protocol::records::MempoolRejectedRecord;
use ipc_protocol::{encode_hello, BatchEncoder, Hello, Tracepoint};
use prost::Message;
use publisher::proto::ebpf_extractor::{ebpf::EbpfEvent, mempool};
use publisher::proto::event::{event::PeerObserverEvent, Event};
use tokio_seqpacket::UnixSeqpacket;

fn rejected(reason: &str) -> MempoolRejectedRecord {
    let mut r = MempoolRejectedRecord::zeroed();
    r.txid = [7; 32];
    r.reason[..reason.len()].copy_from_slice(reason.as_bytes());
    r
}

#[tokio::test]
async fn invalid_records_and_garbage_datagrams_do_not_stop_the_stream() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("malformed");
    let socket = dir.path().join("publisher.sock");
    let _publisher = start_publisher(&nats.address, &socket, &[]).await;
    let client = async_nats::connect(&nats.address).await.unwrap();
    let mut sub = client.subscribe("mempool").await.unwrap();
    client.flush().await.unwrap();

    let conn = UnixSeqpacket::connect(&socket).await.unwrap();
    let hello = Hello {
        loader_version: "test".into(),
        pid: 1,
        binary: "/usr/bin/bitcoind".into(),
        tracepoints: vec![Tracepoint::MempoolRejected.id()],
        realtime_offset_ns: 0,
    };
    conn.send(&encode_hello(&hello)).await.unwrap();

    let mut batch = BatchEncoder::default();
    let good = rejected("first");
    let mut no_nul = rejected("");
    no_nul.reason = [b'x'; 264];
    batch.push(Tracepoint::MempoolRejected, 1_000_000, bytemuck::bytes_of(&good)).unwrap();
    batch.push(Tracepoint::MempoolRejected, 2_000_000, bytemuck::bytes_of(&no_nul)).unwrap();
    batch.push(Tracepoint::MempoolRejected, 3_000_000, &bytemuck::bytes_of(&good)[1..]).unwrap();
    conn.send(batch.datagram()).await.unwrap();
    batch.sent();
    conn.send(&[0xff, 0xff, 0xff]).await.unwrap();
    let last = rejected("last");
    batch.push(Tracepoint::MempoolRejected, 4_000_000, bytemuck::bytes_of(&last)).unwrap();
    conn.send(batch.datagram()).await.unwrap();

    let mut reasons = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
        let event = Event::decode(msg.payload).unwrap();
        let Some(PeerObserverEvent::EbpfExtractor(e)) = event.peer_observer_event else { panic!() };
        let Some(EbpfEvent::Mempool(mempool::MempoolEvent { event: Some(mempool::mempool_event::Event::Rejected(r)) })) = e.ebpf_event else {
            panic!("not a rejected event")
        };
        // Kernel time 1 ms / 4 ms after an epoch offset of 0.
        assert!(event.timestamp == 1 || event.timestamp == 4, "timestamp {}", event.timestamp);
        reasons.push(r.reason);
    }
    assert_eq!(reasons, ["first", "last"]);
}
