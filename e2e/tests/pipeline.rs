//! Tracepoints fired in a real process reach a real nats-server through the real BPF
//! programs, loader (unprivileged user, CAP_BPF + CAP_PERFMON) and publisher, with every
//! field as fired and nothing missing or extra.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::{
    as_loader_user, bins, expect, receive, start_loader_via, start_publisher, subscribe_in_place, Launch, NatsServer,
    NodeDir, Pipeline, Simulator, TempDir, BITCOIND_UID, LOADER_UID,
};
use ipc_protocol::{Category, Tracepoint};
use tokio::process::Command;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64
}

/// Fires `rounds` of `sim_tracepoints` and checks what arrives: every event of an `enabled`
/// tracepoint, in firing order, with every field; nothing of the others.
async fn fire_and_check(
    nats: &NatsServer,
    sim_tracepoints: &str,
    rounds: u64,
    seed: u64,
    loader_flags: &[&str],
    enabled: &[Tracepoint],
) {
    fire_from_threads_and_check(nats, sim_tracepoints, rounds, seed, 1, loader_flags, enabled).await
}

/// [`fire_and_check`] with the simulator firing from `threads` threads at once.
async fn fire_from_threads_and_check(
    nats: &NatsServer,
    sim_tracepoints: &str,
    rounds: u64,
    seed: u64,
    threads: u64,
    loader_flags: &[&str],
    enabled: &[Tracepoint],
) {
    // The other parts stay bound (and alive) until the end of the check.
    let threads = threads.to_string();
    let sim_flags = ["--threads", threads.as_str()];
    let Pipeline { mut subscriber, simulator, dir: _dir, publisher: _publisher, loader: _loader } =
        Pipeline::start_with(Launch::Direct, nats, sim_tracepoints, rounds, seed, &sim_flags, loader_flags).await;
    // The pipeline's subscriber takes `*`, as peer-observer's tools do; the addrman events, on a
    // subject of this project's (two tokens), take a subscription of their own.
    let client = async_nats::connect(&nats.address).await.expect("connect");
    let mut own = None;
    if enabled.iter().any(|tp| tp.category() == Category::Addrman) {
        own = Some(subscribe_in_place(&client, Category::Addrman.subject()).await);
    }
    let start_ms = now_ms();
    let fired = simulator.fire().await;
    for tp in enabled {
        assert_eq!(fired.get(tp), Some(&rounds), "{tp} must fire every round while traced");
    }
    let expected = |own: bool| -> u64 {
        enabled.iter().filter(|tp| (tp.category() == Category::Addrman) == own).map(|tp| fired[tp]).sum()
    };
    let mut events = receive(&mut subscriber, expected(false) as usize).await;
    if let Some(own) = &mut own {
        events.extend(receive(own, expected(true) as usize).await);
    }
    let end_ms = now_ms();

    let mut by_tracepoint: BTreeMap<Tracepoint, Vec<_>> = BTreeMap::new();
    for (subject, event) in events {
        assert!(
            (start_ms.saturating_sub(1000)..=end_ms + 1000).contains(&event.timestamp),
            "timestamp {} outside [{start_ms}, {end_ms}]",
            event.timestamp
        );
        let tp = expect::tracepoint_of(&event);
        let ebpf = e2e::ebpf_of(event);
        by_tracepoint.entry(tp).or_default().push((subject, ebpf));
    }
    for tp in Tracepoint::ALL {
        let received = by_tracepoint.remove(tp).unwrap_or_default();
        if !enabled.contains(tp) {
            assert!(received.is_empty(), "{tp} is switched off but {} events arrived", received.len());
            continue;
        }
        assert_eq!(received.len() as u64, rounds, "{tp}: received {} of {rounds}", received.len());
        for (seq, (subject, ebpf)) in received.into_iter().enumerate() {
            let (want_subject, want) = expect::event(*tp, seed, seq as u64);
            assert_eq!(subject, want_subject, "{tp} #{seq}");
            assert_eq!(ebpf, want, "{tp} #{seq}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_default_tracepoint_arrives_with_every_field() {
    let nats = NatsServer::start().await;
    fire_and_check(&nats, "default", 60, 11, &[], &Tracepoint::defaults()).await;
}

/// Bitcoin Core fires from several threads at once: every event still arrives once, exact,
/// each tracepoint's in firing order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracepoints_fired_from_four_threads_at_once_arrive_exactly_in_order() {
    let nats = NatsServer::start().await;
    fire_from_threads_and_check(&nats, "default", 300, 14, 4, &[], &Tracepoint::defaults()).await;
}

/// The BPF programs read a peer's address and connection type for its first message only and
/// copy them for the rest (`known_peers` in bpf/src/bpf/extractor.bpf.c): 300 rounds from the
/// simulator's 126 peers, every message with the fields it was fired with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_messages_of_a_peer_carry_its_address_and_connection_type() {
    let nats = NatsServer::start().await;
    let messages = Tracepoint::enabled(&[Category::P2pMessages]);
    fire_and_check(&nats, "net:inbound_message,net:outbound_message", 300, 15, &[], &messages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addrman_tracepoints_arrive_when_switched_on() {
    let nats = NatsServer::start().await;
    let with_addrman = Tracepoint::enabled(&[Category::defaults(), vec![Category::Addrman]].concat());
    fire_and_check(&nats, "all", 20, 12, &["--addrman-tracepoints"], &with_addrman).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn category_switches_turn_off_exactly_their_tracepoints() {
    let nats = NatsServer::start().await;
    for (flag, off) in [
        ("--no-p2pmsg-tracepoints", Category::P2pMessages),
        ("--no-connection-tracepoints", Category::Connections),
        ("--no-mempool-tracepoints", Category::Mempool),
        ("--no-validation-tracepoints", Category::Validation),
    ] {
        let on: Vec<Category> = Category::defaults().into_iter().filter(|c| *c != off).collect();
        fire_and_check(&nats, "all", 4, 13, &[flag], &Tracepoint::enabled(&on)).await;
    }
}

/// On current kernels perf-event uprobes need CAP_SYS_ADMIN; the unprivileged loader must be
/// attached through uprobe_multi links, one per tracepoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_attached_through_uprobe_multi_links() {
    let nats = NatsServer::start().await;
    let pipeline = Pipeline::start(&nats, "default", 1, 0, &[]).await;
    let pid = pipeline.loader.id().expect("loader running");
    let mut uprobe_multi_links = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let info = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        if info.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["link_type:", "uprobe_multi"]) {
            uprobe_multi_links += 1;
        }
    }
    assert_eq!(uprobe_multi_links, Tracepoint::defaults().len());
}

/// Some hosts mount /proc with `hidepid=invisible` (as `ProtectProc=invisible` does in a unit):
/// bitcoind's `/proc/<pid>` is then hidden from the loader's user
/// (../shared/spec/deployment.md). The loader needs none of it: it follows bitcoind through a
/// pidfd, and asks the pidfd who runs bitcoind (loader/src/target.rs): it attaches as
/// `--bitcoind-user` the node's user, and refuses that pid as another user's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_attaches_where_proc_hides_bitcoind_from_its_user() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("hidepid");
    let socket = dir.path().join("publisher.sock");
    let client = async_nats::connect(&nats.address).await.expect("connect subscriber");
    let mut subscriber = subscribe_in_place(&client, "*").await;
    let _publisher = start_publisher(&nats.address, &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    let (rounds, seed) = (5, 21);
    let simulator = Simulator::start("mempool:added", rounds, seed);
    // In a mount namespace of its own, /proc mounted anew with hidepid=invisible; then, as
    // the loader's user, a check that bitcoind's entry is hidden, and the loader.
    let hidden_proc = || {
        let setpriv = as_loader_user();
        let setpriv = setpriv.as_std();
        let mut hidden_proc = Command::new("unshare");
        hidden_proc
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t proc -o hidepid=invisible proc /proc && exec "$@""#)
            .arg("sh")
            .arg(setpriv.get_program())
            .args(setpriv.get_args())
            .args(["sh", "-c"])
            .arg(r#"test ! -e "/proc/$0" || { echo "bitcoind's /proc/$0 is visible" >&2; exit 1; }; exec "$@""#)
            .arg(simulator.pid().to_string());
        hidden_proc
    };
    let mut refused = hidden_proc();
    let other_user = (BITCOIND_UID + 1).to_string();
    let refused = refused
        .arg(&bins().loader)
        .args(["--bitcoind-path".as_ref(), bins().simulator.as_os_str()])
        .args(["--bitcoind-pid", &simulator.pid().to_string(), "--bitcoind-user", &other_user])
        .arg("--socket")
        .arg(&socket)
        .kill_on_drop(true)
        .output();
    let refused = tokio::time::timeout(Duration::from_secs(30), refused).await.expect("the loader refuses").unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    let why =
        format!("pid {} belongs to uid {BITCOIND_UID}, not to --bitcoind-user (uid {other_user})", simulator.pid());
    assert!(stderr.contains(&why), "{stderr}");
    let user = BITCOIND_UID.to_string();
    let flags = ["--bitcoind-user", user.as_str()];
    let _loader =
        start_loader_via(hidden_proc(), &bins().simulator, dir.path(), &socket, simulator.pid(), &flags).await;

    assert_eq!(simulator.fire().await[&Tracepoint::MempoolAdded], rounds);
    let events = receive(&mut subscriber, rounds as usize).await;
    assert_eq!(events.len() as u64, rounds);
    for (seq, (subject, event)) in events.into_iter().enumerate() {
        let (want_subject, want) = expect::event(Tracepoint::MempoolAdded, seed, seq as u64);
        assert_eq!((subject.as_str(), e2e::ebpf_of(event)), (want_subject, want), "mempool:added #{seq}");
    }
}

/// bitcoind runs one file and the loader is given another copy (a second install, an older
/// version): probes there never fire, and the loader says so as it starts. In the usual case,
/// the binary bitcoind was started as, it says nothing of the kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_given_another_copy_of_the_binary_says_so() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("other-binary");
    let socket = dir.path().join("publisher.sock");
    let _publisher = start_publisher(&nats.address, &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    let copy = dir.path().join("bitcoind");
    e2e::copy_executable(&bins().simulator, &copy);
    let warning = "bitcoind was started as another file than --bitcoind-path";
    for (binary, warned) in [(copy.as_path(), true), (bins().simulator.as_path(), false)] {
        let simulator = Simulator::start("mempool:added", 1, 0);
        let mut loader = start_loader_via(as_loader_user(), binary, dir.path(), &socket, simulator.pid(), &[]).await;
        let log = e2e::stop_and_read_logs(&mut [&mut loader]).await;
        assert_eq!(log.contains(warning), warned, "{}: {log}", binary.display());
        assert!(!log.contains("changed after bitcoind started"), "{log}");
        if warned {
            assert!(log.contains(&format!("started_as={:?}", bins().simulator)), "{log}");
        }
    }
}

/// bitcoind's binary is replaced while it runs, as a package upgrade or `make install` replaces
/// it (a new file renamed over the old): the file at that path is not the one bitcoind runs,
/// and a loader started now (after an idle exit, an upgrade of its own) says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_given_a_binary_replaced_since_bitcoind_started_says_so() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("replaced-binary");
    let socket = dir.path().join("publisher.sock");
    let _publisher = start_publisher(&nats.address, &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    let installed = dir.path().join("bitcoind");
    e2e::copy_executable(&bins().simulator, &installed);
    let node = Arc::new(NodeDir::new());
    let simulator = Simulator::start_in(&node, &installed, "mempool:added", 1, 0, &[]);
    // Past the second of slack the check allows.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let upgrade = dir.path().join("bitcoind.new");
    e2e::copy_executable(&bins().simulator, &upgrade);
    std::fs::rename(&upgrade, &installed).expect("the upgrade renamed over the binary");
    let mut loader = start_loader_via(as_loader_user(), &installed, dir.path(), &socket, simulator.pid(), &[]).await;
    let log = e2e::stop_and_read_logs(&mut [&mut loader]).await;
    let warning = format!("--bitcoind-path {} changed after bitcoind started", installed.display());
    assert!(log.contains(&warning), "{log}");
}

/// After attaching, the loader keeps no capability and cannot regain one, and the stream
/// (ring buffers, drop-counter reads once a second, the socket) still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_holds_no_capability_once_attached() {
    let nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, mut loader, dir: _dir, publisher: _publisher } =
        Pipeline::start(&nats, "mempool:added", 10, 5, &[]).await;
    let pid = loader.id().expect("loader running");
    let status = e2e::proc_status(pid);
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(status[set], "0000000000000000", "{set}");
    }
    assert_eq!(status["NoNewPrivs"], "1");
    assert_eq!(status["Uid"].split_whitespace().next(), Some("65534"));

    // Past a drop-counter read, made without any capability.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(loader.try_wait().expect("wait").is_none(), "loader still running");
    assert_eq!(simulator.fire().await[&Tracepoint::MempoolAdded], 10);
    assert_eq!(receive(&mut subscriber, 10).await.len(), 10);
}

/// Only the loader's uid may feed the publisher: a connection from another user (here root)
/// is refused and logged, and the loader's stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_other_users_are_refused() {
    let nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, mut publisher, dir, loader: _loader } =
        Pipeline::start(&nats, "mempool:added", 10, 6, &[]).await;
    let intruder = tokio_seqpacket::UnixSeqpacket::connect(dir.path().join("publisher.sock")).await.expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), intruder.recv(&mut buf))
        .await
        .expect("the publisher closes a refused connection");
    assert_eq!(read.map(|info| info.bytes_read()).unwrap_or(0), 0, "refused connection is closed");

    assert_eq!(simulator.fire().await[&Tracepoint::MempoolAdded], 10);
    let events = receive(&mut subscriber, 10).await;
    assert_eq!(events.len(), 10);
    for (seq, (_, event)) in events.into_iter().enumerate() {
        let ebpf = e2e::ebpf_of(event);
        assert_eq!(ebpf, expect::event(Tracepoint::MempoolAdded, 6, seq as u64).1);
    }

    let log = e2e::stopped_log(&mut publisher).await;
    assert!(log.contains("refused connection from uid 0: only the loader's uid 65534 may connect"), "{log}");
}

/// Started by socket activation (`LISTEN_FDS`, as systemd's `.socket` unit does), the
/// publisher takes the passed SOCK_SEQPACKET socket, notifies readiness, and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activated_publisher_delivers_end_to_end() {
    let nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, mut publisher, dir: _dir, loader: _loader } =
        Pipeline::start_with(Launch::SocketActivated, &nats, "default", 3, 8, &[], &[]).await;
    let fired = simulator.fire().await;
    let enabled = Tracepoint::defaults();
    let total: u64 = enabled.iter().map(|tp| fired[tp]).sum();
    assert_eq!(total, 3 * 12);
    let events = receive(&mut subscriber, total as usize).await;
    assert_eq!(events.len() as u64, total);
    let mut seqs = std::collections::BTreeMap::<Tracepoint, u64>::new();
    for (subject, event) in events {
        let tp = expect::tracepoint_of(&event);
        let seq = seqs.entry(tp).or_default();
        let ebpf = e2e::ebpf_of(event);
        assert_eq!((subject.as_str(), ebpf), expect::event(tp, 8, *seq), "{tp} #{seq}");
        *seq += 1;
    }
    let log = e2e::stopped_log(&mut publisher).await;
    assert!(log.contains("listening on the socket passed by systemd"), "{log}");
}
