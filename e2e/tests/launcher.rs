//! The seed's one command, `ebpf-extractor`, runs the pipeline privilege-separated: the
//! publisher as an unprivileged user without any capability, the loader as another user with
//! CAP_BPF and CAP_PERFMON in its bounding set only, both with no_new_privs.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use e2e::{bins, expect, notify_socket, receive, wait_ready, NatsServer, Simulator, TempDir};
use ipc_protocol::Tracepoint;
use publisher::proto::event::event::PeerObserverEvent;
use tokio::process::Command;

/// uid of the loader in this test: no /etc/passwd entry needed.
const LOADER_UID: &str = "65533";

fn children(parent: u32) -> BTreeMap<String, u32> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(pid) = entry.expect("entry").file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The fields after the `(comm)`: state, ppid, …
        let Some(after) = stat.rsplit_once(") ").map(|(_, rest)| rest) else { continue };
        if after.split(' ').nth(1).and_then(|p| p.parse().ok()) == Some(parent) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            found.insert(comm.trim().to_string(), pid);
        }
    }
    found
}

fn status(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Starts `ebpf-extractor` on the simulator binary with `target` (`--bitcoind-pid N` or
/// `--bitcoind-pid-file F`) and returns once it reports ready.
async fn start_launcher(nats: &NatsServer, dir: &std::path::Path, target: &[&std::ffi::OsStr]) -> tokio::process::Child {
    let notify_path = dir.join("notify.sock");
    let notify = notify_socket(&notify_path);
    let mut launcher = Command::new(&bins().launcher)
        .args(["--nats-address", &nats.address])
        .arg("--bitcoind-path")
        .arg(&bins().simulator)
        .args(target)
        .args(["--publisher-user", "nobody", "--loader-user", LOADER_UID])
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ebpf-extractor");
    wait_ready(&notify, &mut launcher, "ebpf-extractor").await;
    launcher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_command_runs_privilege_separated_end_to_end() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("launcher");
    // It stays up after firing, as bitcoind would: with a fixed --bitcoind-pid, ebpf-extractor
    // ends with its bitcoind.
    let simulator = Simulator::start_with("default", 5, 31, &["--linger", "3"]);
    let client = async_nats::connect(&nats.address).await.unwrap();
    let mut subscriber = client.subscribe("*").await.unwrap();
    client.flush().await.unwrap();

    // The seed's example command line, plus the users.
    let pid = simulator.pid().to_string();
    let mut launcher = start_launcher(&nats, dir.path(), &["--bitcoind-pid".as_ref(), pid.as_ref()]).await;

    let kids = children(launcher.id().unwrap());
    let publisher = status(kids["ebpf-publisher"]);
    let loader = status(kids["ebpf-loader"]);
    assert_eq!(publisher["Uid"].split_whitespace().next(), Some("65534"));
    assert_eq!(loader["Uid"].split_whitespace().next(), Some(LOADER_UID));
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(publisher[set], "0000000000000000", "publisher {set}");
    }
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(loader[set], "0000000000000000", "loader {set} once attached");
    }
    // CAP_PERFMON (38) and CAP_BPF (39), nothing else, even in the bounding set.
    assert_eq!(loader["CapBnd"], "000000c000000000");
    assert_eq!(publisher["NoNewPrivs"], "1");
    assert_eq!(loader["NoNewPrivs"], "1");

    let firing = tokio::spawn(simulator.fire());
    let total = 5 * 12;
    let events = receive(&mut subscriber, total as usize).await;
    assert_eq!(events.len() as u64, total);
    let mut seqs = BTreeMap::<Tracepoint, u64>::new();
    for (subject, event) in events {
        let tp = expect::tracepoint_of(&event);
        let seq = seqs.entry(tp).or_default();
        let Some(PeerObserverEvent::EbpfExtractor(ebpf)) = event.peer_observer_event else { unreachable!() };
        assert_eq!((subject.as_str(), ebpf), expect::event(tp, 31, *seq), "{tp} #{seq}");
        *seq += 1;
    }

    let pid = launcher.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), launcher.wait()).await.expect("stops in time").unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(firing.await.unwrap().values().sum::<u64>(), total);
}

/// bitcoind restarts (new pid, pid file rewritten): the events of the new process arrive
/// without restarting ebpf-extractor, which starts a fresh loader for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_command_follows_a_restarted_bitcoind_through_its_pid_file() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("launcher-restart");
    let pid_file = dir.path().join("bitcoind.pid");
    let first = Simulator::start("mempool:added", 3, 41);
    std::fs::write(&pid_file, format!("{}\n", first.pid())).unwrap();
    let client = async_nats::connect(&nats.address).await.unwrap();
    let mut subscriber = client.subscribe("*").await.unwrap();
    client.flush().await.unwrap();
    let mut launcher = start_launcher(&nats, dir.path(), &["--bitcoind-pid-file".as_ref(), pid_file.as_os_str()]).await;
    let first_loader = children(launcher.id().unwrap())["ebpf-loader"];

    // bitcoind stops (removing its pid file) and a new one starts and writes its own.
    assert_eq!(first.fire().await[&Tracepoint::MempoolAdded], 3);
    std::fs::remove_file(&pid_file).unwrap();
    let second = Simulator::start("mempool:added", 4, 42);
    let second_pid = second.pid();
    std::fs::write(&pid_file, format!("{second_pid}\n")).unwrap();
    // A loader that dropped its capabilities has attached.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let kids = children(launcher.id().expect("ebpf-extractor still running"));
        if let Some(&loader) = kids.get("ebpf-loader").filter(|pid| **pid != first_loader) {
            if status(loader).get("CapEff").map(String::as_str) == Some("0000000000000000") {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no loader attached to the restarted bitcoind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(second.fire().await[&Tracepoint::MempoolAdded], 4);

    let events = receive(&mut subscriber, 7).await;
    let got: Vec<_> = events
        .into_iter()
        .map(|(subject, event)| match event.peer_observer_event {
            Some(PeerObserverEvent::EbpfExtractor(ebpf)) => (subject, ebpf),
            None => panic!("empty event"),
        })
        .collect();
    let want: Vec<_> = [(41, 0..3), (42, 0..4)]
        .into_iter()
        .flat_map(|(seed, seqs)| seqs.map(move |seq| expect::event(Tracepoint::MempoolAdded, seed, seq)))
        .map(|(subject, ebpf)| (subject.to_string(), ebpf))
        .collect();
    assert_eq!(got, want);

    let pid = launcher.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), launcher.wait()).await.expect("stops in time").unwrap();
    assert!(status.success(), "{status}");
    let log = e2e::read_stderr(&mut launcher).await;
    assert!(log.contains(&format!("following the restarted bitcoind (pid {second_pid})")), "{log}");
}

#[tokio::test]
async fn launcher_refuses_to_run_as_the_same_user_twice() {
    let out = Command::new(&bins().launcher)
        .args(["--bitcoind-path", "/usr/bin/true", "--bitcoind-pid", "1", "--publisher-user", "nobody", "--loader-user", "nobody"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--loader-user and --publisher-user must differ"));
}
