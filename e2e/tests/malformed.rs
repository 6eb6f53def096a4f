//! A peer on the publisher's socket that sends malformed datagrams and invalid records gets
//! them refused one by one; the valid records around them are still published, and so are a
//! peer's last records when it closes with acknowledgements unread. The publisher keeps no
//! copy of descriptors it sends along.

use std::time::Duration;

use bytemuck::Zeroable;
use e2e::{start_publisher, NatsServer, TempDir};
use futures_util::StreamExt;
use ipc_protocol::records::MempoolRejectedRecord;
use ipc_protocol::{Hello, Record, Sender, Tracepoint, MAX_DATAGRAM};
use prost::Message;
use publisher::proto::ebpf_extractor::{ebpf::EbpfEvent, mempool};
use publisher::proto::event::Event;
use tokio_seqpacket::UnixSeqpacket;

fn rejected(reason: &str) -> MempoolRejectedRecord {
    let mut r = MempoolRejectedRecord::zeroed();
    r.txid = [7; 32];
    r.reason[..reason.len()].copy_from_slice(reason.as_bytes());
    r
}

/// Sends every datagram the loader's sender makes of these `mempool:rejected` records (time,
/// data), the hello first if it is the first call, except the one at index `skip`.
async fn send_all(conn: &UnixSeqpacket, sender: &mut Sender, records: &[(u64, &[u8])], skip: Option<usize>) {
    let records: Vec<Record> = records
        .iter()
        .map(|&(ktime_ns, data)| Record { tracepoint: Tracepoint::MempoolRejected, ktime_ns, data })
        .collect();
    for (i, datagram) in ipc_protocol::testing::datagrams(sender, &records).iter().enumerate() {
        if skip != Some(i) {
            conn.send(datagram).await.unwrap();
        }
    }
}

/// A publisher on a NATS server, a subscriber to its mempool events, and a connection to it
/// played by the test, with the loader's sender for `mempool:rejected` records.
struct FakeLoader {
    _nats: NatsServer,
    _dir: TempDir,
    publisher: tokio::process::Child,
    sub: async_nats::Subscriber,
    conn: UnixSeqpacket,
    sender: Sender,
}

impl FakeLoader {
    async fn start(label: &str, run_id: u128) -> FakeLoader {
        Self::start_as(label, run_id, "/usr/bin/bitcoind").await
    }

    /// With `binary` as the hello's path of bitcoind's binary.
    async fn start_as(label: &str, run_id: u128, binary: &str) -> FakeLoader {
        let nats = NatsServer::start().await;
        let dir = TempDir::new(label);
        let socket = dir.path().join("publisher.sock");
        let publisher = start_publisher(&nats.address, &socket, &["--allow-any-uid"]).await;
        let client = async_nats::connect(&nats.address).await.unwrap();
        let sub = e2e::subscribe_in_place(&client, "mempool").await;
        let conn = UnixSeqpacket::connect(&socket).await.unwrap();
        let hello = Hello {
            run_id,
            loader_version: "test".into(),
            pid: 1,
            binary: binary.into(),
            tracepoints: vec![Tracepoint::MempoolRejected.id()],
        };
        FakeLoader { _nats: nats, _dir: dir, publisher, sub, conn, sender: Sender::new(&hello) }
    }
}

/// The next event published, if one comes within 3 s: its envelope time and its rejection
/// reason.
async fn next_rejected(sub: &mut async_nats::Subscriber) -> Option<(u64, String)> {
    let msg = tokio::time::timeout(Duration::from_secs(3), sub.next()).await.ok()??;
    let event = Event::decode(msg.payload).unwrap();
    let timestamp = event.timestamp;
    match e2e::ebpf_of(event).ebpf_event {
        Some(EbpfEvent::Mempool(mempool::MempoolEvent { event: Some(mempool::mempool_event::Event::Rejected(r)) })) => {
            Some((timestamp, r.reason))
        }
        other => panic!("not a rejected event: {other:?}"),
    }
}

#[tokio::test]
async fn invalid_records_and_garbage_datagrams_do_not_stop_the_stream() {
    let mut loader = FakeLoader::start("malformed", 1).await;
    let (conn, sender) = (&loader.conn, &mut loader.sender);
    let good = rejected("first");
    let mut no_nul = rejected("");
    no_nul.reason = [b'x'; 264];
    // Kernel times as the BPF programs stamp them: CLOCK_MONOTONIC, 1 to 4 ms from now.
    let before = e2e::wall_ms();
    let base = tracepoint_simulator::monotonic_ns();
    let batch: [(u64, &[u8]); 3] = [
        (base + 1_000_000, bytemuck::bytes_of(&good)),
        (base + 2_000_000, bytemuck::bytes_of(&no_nul)),
        (base + 3_000_000, &bytemuck::bytes_of(&good)[1..]),
    ];
    send_all(conn, sender, &batch, None).await;
    conn.send(&[0xff, 0xff, 0xff]).await.unwrap();
    // A fragmented record missing its second fragment is refused whole, never glued.
    send_all(conn, sender, &[(base + 3_500_000, &[0u8; 3 * MAX_DATAGRAM])], Some(1)).await;
    let last = rejected("last");
    send_all(conn, sender, &[(base + 4_000_000, bytemuck::bytes_of(&last))], None).await;

    let (mut reasons, mut times) = (Vec::new(), Vec::new());
    while let Some((time, reason)) = next_rejected(&mut loader.sub).await {
        times.push(time);
        reasons.push(reason);
    }
    assert_eq!(reasons, ["first", "last"]);
    // The firing times in the wall clock: 1 ms and 4 ms after `base`, 3 ms apart (each
    // rounded down to its millisecond).
    assert!(times.iter().all(|t| (before..=e2e::wall_ms() + 5).contains(t)), "{times:?} from {before}");
    assert!((2..=4).contains(&(times[1] - times[0])), "{times:?}");

    let log = e2e::stopped_log(&mut loader.publisher).await;
    for counted in ["invalid=2", "malformed_datagrams=1", "lost_datagrams=1", "fragment_lost=1"] {
        assert!(log.contains(counted), "{counted} missing from: {log}");
    }
    assert!(log.contains("malformed datagram from the loader, dropped: "), "the reason is logged: {log}");
    let warning =
        log.lines().find(|l| l.contains("events lost since the last report: ")).unwrap_or_else(|| panic!("{log}"));
    for grown in ["lost_datagrams +1", "malformed_datagrams +1", "mempool:rejected fragment_lost +1"] {
        assert!(warning.contains(grown), "{grown} missing from: {warning}");
    }
}

/// A loader that exits with the publisher's acknowledgements unread, its last records still
/// queued: the kernel reports a reset to the publisher ahead of them, and the publisher still
/// reads and publishes every one.
#[tokio::test]
async fn a_loader_gone_with_acknowledgements_unread_loses_none_of_its_last_records() {
    let mut loader = FakeLoader::start("unread-acks", 2).await;
    let records: Vec<MempoolRejectedRecord> = (0..4).map(|i| rejected(&format!("r{i}"))).collect();
    let base = tracepoint_simulator::monotonic_ns();
    send_all(&loader.conn, &mut loader.sender, &[(base, bytemuck::bytes_of(&records[0]))], None).await;
    // The publisher acknowledges that one; the acknowledgement stays unread.
    let mut reasons = vec![next_rejected(&mut loader.sub).await.expect("the first event").1];
    tokio::time::sleep(Duration::from_millis(100)).await;
    for record in &records[1..] {
        send_all(&loader.conn, &mut loader.sender, &[(base + 1, bytemuck::bytes_of(record))], None).await;
    }
    // The socket closes with the acknowledgement unread; the publisher and NATS stay.
    let FakeLoader { _nats, _dir, mut publisher, mut sub, conn, .. } = loader;
    drop(conn);
    while let Some((_, reason)) = next_rejected(&mut sub).await {
        reasons.push(reason);
    }
    assert_eq!(reasons, ["r0", "r1", "r2", "r3"]);
    let log = e2e::stopped_log(&mut publisher).await;
    assert!(!log.contains("Connection reset"), "{log}");
}

/// What a peer says in its hello is logged quoted and escaped: a line break in it cannot
/// forge a line of the publisher's log.
#[tokio::test]
async fn a_hello_cannot_forge_a_log_line() {
    let forged = "ERROR ebpf_publisher: forged";
    let mut loader = FakeLoader::start_as("forged-hello", 3, &format!("/usr/bin/bitcoind\n{forged}")).await;
    let base = tracepoint_simulator::monotonic_ns();
    send_all(&loader.conn, &mut loader.sender, &[(base, bytemuck::bytes_of(&rejected("one")))], None).await;
    assert_eq!(next_rejected(&mut loader.sub).await.map(|(_, reason)| reason).as_deref(), Some("one"));
    let log = e2e::stopped_log(&mut loader.publisher).await;
    let connected = log.lines().find(|l| l.contains("loader connected")).unwrap_or_else(|| panic!("{log}"));
    assert!(connected.contains(&format!(r#"binary="/usr/bin/bitcoind\n{forged}""#)), "{connected}");
    assert!(!log.lines().any(|l| l.starts_with(forged)), "{log}");
}

/// A peer whose datagrams carry descriptors (`SCM_RIGHTS`) leaves the publisher no copy: it
/// reads with `recv`, without room for ancillary data, so the kernel closes them at each read
/// (publisher/src/server.rs). The records they carry are published, and the connection stays.
#[tokio::test]
async fn the_publisher_keeps_no_descriptor_a_loader_sends() {
    use std::os::fd::AsFd;
    let mut loader = FakeLoader::start("passed-descriptors", 4).await;
    let passed = e2e::PassedDescriptor::new();
    let base = tracepoint_simulator::monotonic_ns();
    let (first, second) = (rejected("first"), rejected("second"));
    let records = [
        Record { tracepoint: Tracepoint::MempoolRejected, ktime_ns: base, data: bytemuck::bytes_of(&first) },
        Record { tracepoint: Tracepoint::MempoolRejected, ktime_ns: base + 1, data: bytemuck::bytes_of(&second) },
    ];
    // The hello, then the records, each with three copies of the descriptor.
    for datagram in ipc_protocol::testing::datagrams(&mut loader.sender, &records) {
        let fds = [passed.passed.as_fd(); 3];
        e2e::send_with_descriptors(&loader.conn, &datagram, &fds).expect("a datagram with descriptors");
    }
    for expected in ["first", "second"] {
        assert_eq!(next_rejected(&mut loader.sub).await.map(|(_, reason)| reason).as_deref(), Some(expected));
    }
    let closed =
        tokio::task::spawn_blocking(move || passed.closed_everywhere(Duration::from_secs(5))).await.expect("joined");
    assert!(closed, "the publisher holds a descriptor its peer sent");
    send_all(&loader.conn, &mut loader.sender, &[(base + 2, bytemuck::bytes_of(&rejected("third")))], None).await;
    assert_eq!(next_rejected(&mut loader.sub).await.map(|(_, reason)| reason).as_deref(), Some("third"));
}
