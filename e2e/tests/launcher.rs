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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_command_runs_privilege_separated_end_to_end() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("launcher");
    let simulator = Simulator::start("default", 5, 31);
    let notify_path = dir.path().join("notify.sock");
    let notify = notify_socket(&notify_path);
    let client = async_nats::connect(&nats.address).await.unwrap();
    let mut subscriber = client.subscribe("*").await.unwrap();
    client.flush().await.unwrap();

    // The seed's example command line, plus the users.
    let mut launcher = Command::new(&bins().launcher)
        .args(["--nats-address", &nats.address])
        .arg("--bitcoind-path")
        .arg(&bins().simulator)
        .args(["--bitcoind-pid", &simulator.pid().to_string()])
        .args(["--publisher-user", "nobody", "--loader-user", LOADER_UID])
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ebpf-extractor");
    wait_ready(&notify, &mut launcher, "ebpf-extractor").await;

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

    let fired = simulator.fire().await;
    let total: u64 = fired.values().sum();
    assert_eq!(total, 5 * 12);
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
