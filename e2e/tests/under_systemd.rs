//! The units under systemd itself, as pid 1 of a Debian 12 system (systemd 252) booted in a
//! container (`systemd-nspawn --boot`, sharing this machine's kernel and network): Bitcoin
//! Core's own unit runs the simulator as `/usr/bin/bitcoind`, reporting readiness as that unit
//! has bitcoind do (`-startupnotify`); the extractor is installed as README's "Build and
//! install" and "Install with systemd" say, with its publisher pointed at a nats-server on this
//! machine by a drop-in. Every event of every bitcoind the loader followed (at boot with NATS
//! down, across `systemctl restart`, a crash that `Restart=on-failure` answers, a stop and a
//! start, and the publisher's restart) reaches NATS, exactly and in order (each run's first
//! and last round within one of the simulator's count, for the kernel's reasons given below;
//! the crashed run without its count), the connections each bitcoind closes as it stops
//! among them, at a power-off with bitcoind running too, and the publishers count no loss.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::{
    bins, ebpf_of, expect, free_address, per_tracepoint, scrape_metrics, subscribe_in_place, until, NatsServer, TempDir,
};
use ipc_protocol::Tracepoint;
use prost::Message;
use tokio::process::{Child, Command};

/// Bitcoin Core's unit as `contrib/init/bitcoind.service` ships it (../shared/spec/deployment.md).
const BITCOIND_UNIT: &str = "[Unit]
Description=Bitcoin daemon
Documentation=https://github.com/bitcoin/bitcoin/blob/master/doc/init.md
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/bitcoind -pid=/run/bitcoind/bitcoind.pid \\
                            -conf=/etc/bitcoin/bitcoin.conf \\
                            -datadir=/var/lib/bitcoind \\
                            -startupnotify='systemd-notify --ready' \\
                            -shutdownnotify='systemd-notify --stopping'
ExecStartPre=!/bin/chgrp bitcoin /etc/bitcoin
Type=notify
NotifyAccess=all
PIDFile=/run/bitcoind/bitcoind.pid
Restart=on-failure
TimeoutStartSec=infinity
TimeoutStopSec=600
User=bitcoin
Group=bitcoin
RuntimeDirectory=bitcoind
RuntimeDirectoryMode=0710
ConfigurationDirectory=bitcoin
ConfigurationDirectoryMode=0710
StateDirectory=bitcoind
StateDirectoryMode=0710
PrivateTmp=true
ProtectSystem=full
ProtectHome=true
NoNewPrivileges=true
PrivateDevices=true
MemoryDenyWriteExecute=true

[Install]
WantedBy=multi-user.target
";

/// Rounds per second each bitcoind fires (every default tracepoint once per round).
const RATE: u32 = 20;
/// The seed of each bitcoind the test starts, one after the other (in bitcoin.conf), whose
/// rounds it checks: an event's values tell which of them fired it.
const SEEDS: std::ops::RangeInclusive<u64> = 1..=4;
/// The seed of the bitcoind still running when the machine powers off.
const AT_POWEROFF: u64 = 5;
/// Rounds each of them fires at most (then it exits): 100 s at RATE, well above the test's
/// waits.
const MAX_ROUNDS: u64 = 2_000;

/// A Debian 12 root with systemd, built once per target directory by debootstrap from
/// Debian's mirror (a minute) and copied for each boot.
fn debian_root() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-bookworm-systemd");
    if root.join("etc/debian_version").exists() && root.join(".complete").exists() {
        return root;
    }
    let building = root.with_extension("building");
    let _ = std::fs::remove_dir_all(&building);
    let _ = std::fs::remove_dir_all(&root);
    let status = std::process::Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus,libelf1",
            // Fails rather than install what it cannot verify.
            "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg",
            "bookworm",
        ])
        .arg(&building)
        .arg("http://deb.debian.org/debian")
        .stdout(Stdio::null())
        .status()
        .expect("run debootstrap (package debootstrap)");
    assert!(status.success(), "debootstrap: {status}");
    std::fs::write(building.join(".complete"), "").expect("mark the root complete");
    std::fs::rename(&building, &root).expect("move the root in place");
    root
}

/// Runs `args` in the root (before boot) with chroot, or in the booted system with nsenter.
fn run(prefix: &[&str], args: &[&str]) -> String {
    let out = std::process::Command::new(prefix[0])
        .args(&prefix[1..])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{args:?}: {}\n{text}", out.status);
    text
}

/// A booted container (the machine named after the root's unique directory): its systemd,
/// reached through nsenter. Dropped, the container is killed: systemd-nspawn's own end would
/// leave it running.
struct Booted {
    nspawn: Child,
    systemd: u32,
}

impl Booted {
    async fn boot(root: &Path) -> Booted {
        let machine = root.parent().and_then(Path::file_name).expect("the root's directory").to_string_lossy();
        // Where systemd runs this machine, nspawn registers the container and runs it in a
        // scope of its own; where it does not (pid 1 here is no systemd), it can do neither.
        let without_systemd: &[&str] =
            if Path::new("/run/systemd/system").exists() { &[] } else { &["--register=no", "--keep-unit"] };
        let mut nspawn = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(root)
            .arg(format!("--machine={machine}"))
            .args(without_systemd)
            .args([
                "--boot",
                // The loader unit's own bounding set, CAP_BPF and CAP_PERFMON, must be
                // available to systemd in the container, and attaching needs bpf.
                "--capability=all",
                "--system-call-filter=bpf perf_event_open",
                "--console=pipe",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start systemd-nspawn (package systemd-container)");
        let nspawn_pid = nspawn.id().expect("nspawn running");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let systemd = loop {
            if let Some(pid) = e2e::children(nspawn_pid).get("systemd") {
                break *pid;
            }
            assert!(std::time::Instant::now() < deadline, "no systemd in the container");
            assert!(nspawn.try_wait().expect("nspawn status").is_none(), "systemd-nspawn exited");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let booted = Booted { nspawn, systemd };
        // Until systemd has set itself up ("offline") and made its socket, `--wait` cannot
        // wait for it.
        loop {
            let state = booted.try_in(&["systemctl", "is-system-running", "--wait"]);
            if state.trim() != "offline" && !state.contains("Failed to connect to bus") {
                assert_eq!(state.trim(), "running", "{}", booted.journal(&[]));
                return booted;
            }
            assert!(std::time::Instant::now() < deadline, "systemd never answered: {state}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs in the container's namespaces; a command that hangs (a start whose readiness never
    /// comes waits forever under `TimeoutStartSec=infinity`) fails after 2 minutes.
    fn nsenter(&self) -> [String; 6] {
        ["timeout", "120", "nsenter", "-t", &self.systemd.to_string(), "-a"].map(String::from)
    }

    /// Runs a command in the container; its output, whatever its status.
    fn try_in(&self, args: &[&str]) -> String {
        let nsenter = self.nsenter();
        let out = std::process::Command::new(&nsenter[0])
            .args(&nsenter[1..])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    fn systemctl(&self, args: &[&str]) -> String {
        let nsenter = self.nsenter();
        let prefix: Vec<&str> = nsenter.iter().map(String::as_str).chain(["systemctl"]).collect();
        run(&prefix, args)
    }

    /// The journal of `units` (all of it if none), message text only.
    fn journal(&self, units: &[&str]) -> String {
        let mut args = vec!["journalctl", "--no-pager", "-o", "cat"];
        for unit in units {
            args.extend(["-u", unit]);
        }
        self.try_in(&args)
    }

    /// Waits until `systemctl is-active unit` says `want` (within 30 s).
    async fn becomes(&self, unit: &str, want: &str) {
        let state = || self.try_in(&["systemctl", "is-active", unit]);
        let why = || format!("{unit} is {}, not {want}:\n{}", state(), self.journal(&[unit]));
        until(Duration::from_secs(30), || state().trim() == want, why).await;
    }

    /// The rounds traced in each cleanly stopped bitcoind, once `runs` of them have reached
    /// the journal in whole (journald takes standard output as a stream, in its own time).
    async fn traced_runs(&self, runs: usize) -> Vec<BTreeMap<Tracepoint, std::ops::RangeInclusive<u64>>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let journal = self.journal(&["bitcoind"]);
            let traced = traced_per_run(&journal);
            let whole = traced.iter().filter(|run| run.len() == Tracepoint::defaults().len()).count();
            if whole == runs && traced.len() == runs {
                return traced;
            }
            assert!(tokio::time::Instant::now() < deadline && whole <= runs, "not {runs} runs' rounds in\n{journal}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `unit` has failed to start `n` times (within 30 s).
    async fn failed_starts(&self, unit: &str, n: usize) {
        let failures =
            || self.journal(&[unit]).lines().filter(|line| line.ends_with("Failed with result 'exit-code'.")).count();
        let why = || format!("{unit} never failed {n} times:\n{}", self.journal(&[unit]));
        until(Duration::from_secs(30), || failures() >= n, why).await;
    }

    async fn power_off(mut self) {
        self.try_in(&["systemctl", "poweroff"]);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.nspawn.wait()).await;
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // Killing a pid namespace's first process ends every process in it. While nspawn runs,
        // it waits for that process, whose pid therefore names no other.
        if let Ok(None) = self.nspawn.try_wait() {
            e2e::signal(self.systemd, "KILL");
            // Then nspawn cleans up after its container and exits.
            for _ in 0..100 {
                if !matches!(self.nspawn.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Which firing each possible event is: (seed, tracepoint, round) by subject and encoding;
/// the connection to peer N that a bitcoind closes as it stops is round `MAX_ROUNDS + N` of
/// net:closed_connection.
fn firings() -> BTreeMap<(String, Vec<u8>), (u64, Tracepoint, u64)> {
    let mut all = BTreeMap::new();
    for seed in *SEEDS.start()..=AT_POWEROFF {
        for tp in Tracepoint::defaults() {
            for seq in 0..MAX_ROUNDS {
                let (subject, ebpf) = expect::event(tp, seed, seq);
                all.insert((subject.to_string(), ebpf.encode_to_vec()), (seed, tp, seq));
            }
        }
        for peer in 0..tracepoint_simulator::CONNECTED_PEERS {
            let tp = Tracepoint::NetClosedConnection;
            let (subject, ebpf) = expect::event_of(tp, tracepoint_simulator::disconnection(seed, peer));
            all.insert((subject.to_string(), ebpf.encode_to_vec()), (seed, tp, MAX_ROUNDS + peer));
        }
    }
    all
}

/// The events received so far, in arrival order: each a firing, or the subject of an event
/// that is none.
type Received = Arc<Mutex<Vec<Result<(u64, Tracepoint, u64), String>>>>;

/// Waits until three rounds' events of the bitcoind with `seed` have arrived (within 60 s).
async fn wait_for_seed(received: &Received, seed: u64, booted: &Booted) {
    let seen = || received.lock().expect("received").iter().filter(|e| matches!(e, Ok((s, ..)) if *s == seed)).count();
    until(
        Duration::from_secs(60),
        || seen() >= 3 * Tracepoint::defaults().len(),
        || {
            let journal = booted.journal(&["bitcoind", "peer-observer-ebpf-loader", "peer-observer-ebpf-publisher"]);
            format!("no events of the bitcoind with seed {seed}:\n{journal}")
        },
    )
    .await;
}

/// The rounds a tracer saw of each tracepoint (`first_traced=A last_traced=B` in the
/// simulator's closing lines), per cleanly stopped bitcoind, run by run.
fn traced_per_run(journal: &str) -> Vec<BTreeMap<Tracepoint, std::ops::RangeInclusive<u64>>> {
    let mut runs: Vec<BTreeMap<Tracepoint, std::ops::RangeInclusive<u64>>> = Vec::new();
    for line in journal.lines().filter(|line| line.contains(" fired=")) {
        let (name, rest) = line.split_once(' ').expect("`<tracepoint> fired=N ...`");
        let tp = Tracepoint::from_full_name(name).unwrap_or_else(|| panic!("a tracepoint in {line:?}"));
        let counts = e2e::counts(rest);
        let traced = counts["first_traced"]..=counts["last_traced"];
        assert_eq!(counts["fired"], traced.clone().count() as u64, "traced without a break: {line}");
        if runs.last().is_none_or(|run| run.contains_key(&tp)) {
            runs.push(BTreeMap::new());
        }
        runs.last_mut().expect("a run").insert(tp, traced);
    }
    runs
}

/// The peers whose connections each bitcoind closed as it stopped, by seed, in the order their
/// events arrived: the firings past a run's rounds ([`firings`]).
fn closed_at_shutdown(events: &[(u64, Tracepoint, u64)]) -> BTreeMap<u64, Vec<u64>> {
    let mut closed = BTreeMap::<u64, Vec<u64>>::new();
    for (seed, _, seq) in events {
        if let Some(peer) = seq.checked_sub(MAX_ROUNDS) {
            closed.entry(*seed).or_default().push(peer);
        }
    }
    closed
}

/// How many of the connections it closed as it stopped a tracer saw, per bitcoind stopped by
/// a signal (`traced_at_shutdown=N` in the simulator's closing lines), run by run.
fn traced_at_shutdown(journal: &str) -> Vec<u64> {
    journal
        .lines()
        .filter(|line| line.contains(" at_shutdown="))
        .map(|line| e2e::counts(line)["traced_at_shutdown"])
        .collect()
}

/// The events the publishers published, once the subscriber has received as many (within
/// 30 s), or then: those of the running one (its `published_total`) and those of any that
/// stopped (their closing `stopped: published=N ...` lines in the journal, each of which must
/// count no loss).
async fn published_by_then(booted: &Booted, metrics: &str, received: &Received) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut published: u64 = per_tracepoint(&scrape_metrics(metrics), "published_total").values().sum();
        for stopped in
            booted.journal(&["peer-observer-ebpf-publisher"]).lines().filter_map(|l| l.split_once("stopped: "))
        {
            let counts = e2e::counts(stopped.1);
            assert!(counts.iter().all(|(name, n)| name == "published" || *n == 0), "a publisher lost: {}", stopped.1);
            published += counts["published"];
        }
        if published == received.lock().expect("received").len() as u64 || tokio::time::Instant::now() > deadline {
            return published;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_every_bitcoind_the_node_runs_is_followed_from_boot_on() {
    let mut nats = NatsServer::start().await;
    let metrics = free_address();
    let known = firings();

    // The machine: a copy of the Debian root, with a node installed as Bitcoin Core's unit
    // runs one, enabled at boot.
    let dir = TempDir::new("systemd-root");
    let root = dir.path().join("root");
    run(&["cp", "-a"], &[debian_root().to_str().expect("utf-8 path"), root.to_str().expect("utf-8 path")]);
    let chroot = ["chroot", root.to_str().expect("utf-8 path")];
    std::fs::write(root.join("etc/hostname"), "node\n").expect("hostname");
    e2e::copy_executable(&bins().simulator, &root.join("usr/bin/bitcoind"));
    std::fs::write(root.join("etc/systemd/system/bitcoind.service"), BITCOIND_UNIT).expect("bitcoind's unit");
    std::fs::create_dir_all(root.join("etc/bitcoin")).expect("/etc/bitcoin");
    // As the unit's ConfigurationDirectoryMode= makes it.
    std::fs::set_permissions(root.join("etc/bitcoin"), std::fs::Permissions::from_mode(0o710)).expect("chmod");
    let conf = root.join("etc/bitcoin/bitcoin.conf");
    let firing = |seed: u64| {
        // A node's options, which the simulator ignores as bitcoind ignores what it does not
        // know, and its own: fire MAX_ROUNDS at most, at RATE, values of `seed`.
        let node = "server=1\nrpcauth=observer:5f1e9cbe1b0f3cbd$7b5a0c1e2d3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b\n";
        std::fs::write(&conf, format!("{node}count={MAX_ROUNDS}\nrate={RATE}\nseed={seed}\n")).expect("bitcoin.conf");
    };
    firing(1);
    run(&chroot, &["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "bitcoin"]);
    run(&chroot, &["chgrp", "bitcoin", "/etc/bitcoin/bitcoin.conf"]);
    run(&chroot, &["chmod", "0640", "/etc/bitcoin/bitcoin.conf"]);
    run(&chroot, &["systemctl", "enable", "bitcoind.service"]);

    // README's "Build and install" and "Install with systemd", as root on that machine; the
    // publisher's drop-in names the NATS server (README: `systemctl edit`).
    for bin in [&bins().loader, &bins().publisher, &bins().launcher] {
        let name = bin.file_name().expect("a binary's name");
        e2e::copy_executable(bin, &root.join("usr/local/bin").join(name));
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = root.join("usr/share/doc/peer-observer-ebpf");
    std::fs::create_dir_all(&doc).expect("doc dir");
    std::fs::copy(checkout.join("SECURITY.md"), doc.join("SECURITY.md")).expect("SECURITY.md");
    for unit in std::fs::read_dir(checkout.join("systemd")).expect("systemd/") {
        let unit = unit.expect("a unit").path();
        std::fs::copy(&unit, root.join("etc/systemd/system").join(unit.file_name().expect("name"))).expect("unit");
    }
    run(
        &chroot,
        &[
            "sh",
            "-c",
            "for user in peer-observer-ebpf-loader peer-observer-ebpf-publisher; do
               id -u \"$user\" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin \"$user\"
             done",
        ],
    );
    let drop_in = root.join("etc/systemd/system/peer-observer-ebpf-publisher.service.d");
    std::fs::create_dir_all(&drop_in).expect("drop-in dir");
    std::fs::write(
        drop_in.join("override.conf"),
        format!(
            "[Service]\nExecStart=\nExecStart=/usr/local/bin/ebpf-publisher --loader-uid peer-observer-ebpf-loader \
             --nats-address {} --metrics-address {metrics}\n",
            nats.address
        ),
    )
    .expect("drop-in");
    run(&chroot, &["systemctl", "enable", "peer-observer-ebpf-publisher.socket", "peer-observer-ebpf-loader.path"]);

    // At boot, with NATS down: the loader attaches to bitcoind and its records wait, while
    // the publisher's starts fail and are retried (Restart=, without a start limit).
    nats.kill().await;
    let booted = Booted::boot(&root).await;
    booted.failed_starts("peer-observer-ebpf-publisher", 2).await;
    nats.restart().await;

    let client = async_nats::connect(&nats.address).await.expect("connect to NATS");
    // peer-observer's subjects, each one token.
    let mut subscriber = subscribe_in_place(&client, "*").await;
    let received: Received = Arc::default();
    let collecting = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(msg) = subscriber.next().await {
                let subject = msg.subject.to_string();
                let firing = publisher::proto::event::Event::decode(msg.payload)
                    .ok()
                    .and_then(|event| known.get(&(subject.clone(), ebpf_of(event).encode_to_vec())).copied())
                    .ok_or(subject);
                received.lock().expect("received").push(firing);
            }
        })
    };
    // Once NATS is back, the publisher starts and takes what waited.
    wait_for_seed(&received, 1, &booted).await;

    // `systemctl restart bitcoind`: the loader follows the old bitcoind until it exits, and the
    // .path unit starts the next loader once the new one has written its pid file.
    firing(2);
    booted.systemctl(&["restart", "bitcoind"]);
    wait_for_seed(&received, 2, &booted).await;

    // A crash: Restart=on-failure starts bitcoind again, and the .path unit the loader.
    firing(3);
    booted.systemctl(&["kill", "--kill-who=main", "--signal=KILL", "bitcoind"]);
    wait_for_seed(&received, 3, &booted).await;

    // A stop for an upgrade ends the loader with bitcoind; the start after it starts one again.
    booted.systemctl(&["stop", "bitcoind"]);
    booted.becomes("peer-observer-ebpf-loader", "inactive").await;
    firing(4);
    booted.systemctl(&["start", "bitcoind"]);
    booted.becomes("peer-observer-ebpf-loader", "active").await;
    wait_for_seed(&received, 4, &booted).await;

    // The publisher restarted (an upgrade): systemd keeps its socket, the loader keeps its
    // records and reconnects, and the new publisher goes on where the old one stopped.
    let before = received.lock().expect("received").len();
    booted.systemctl(&["restart", "peer-observer-ebpf-publisher"]);
    let after = || received.lock().expect("received").len();
    let why = || "no events after the publisher's restart".to_string();
    until(Duration::from_secs(30), || after() >= before + 3 * Tracepoint::defaults().len(), why).await;
    booted.systemctl(&["stop", "bitcoind"]);

    // Each bitcoind's firings, per tracepoint: one unbroken run of rounds, in order, from the
    // first the tracer saw (before the loader attached, and after it detached, bitcoind fires
    // untraced) to its last, as the bitcoinds that stopped cleanly report them (the killed one
    // reported nothing). At either end the simulator can count one hit more than the tracer
    // saw: it counts a hit as traced when the probe's semaphore is set, and the kernel sets
    // the semaphore before it places the breakpoint, and takes back a hit that races with
    // the breakpoint's removal while the semaphore is still set (measured at the end: in runs
    // detached from while firing, the programs' own count of their hits equalled the events
    // published, while the simulator counted one more for a few tracepoints; on Linux 6.18,
    // whose uprobe_multi links attach and detach each probe in one step).
    let runs = booted.traced_runs(3).await;
    let traced: BTreeMap<u64, _> = [1, 3, 4].into_iter().zip(runs).collect();
    // The loader is ordered before bitcoind and follows it until it exits: it saw every
    // connection that each bitcoind it followed to the end closed as it stopped.
    let journal = booted.journal(&["bitcoind"]);
    assert_eq!(traced_at_shutdown(&journal), [tracepoint_simulator::CONNECTED_PEERS; 3], "{journal}");
    let published = published_by_then(&booted, &metrics, &received).await;
    let (events, strays): (Vec<_>, Vec<_>) =
        received.lock().expect("received").iter().cloned().partition(Result::is_ok);
    assert!(strays.is_empty(), "events of no firing: {strays:?}");
    let events: Vec<_> = events.into_iter().flatten().collect();
    assert_eq!(published, events.len() as u64, "published against received");
    let mut wrong = Vec::new();
    let mut rounds = BTreeMap::<(u64, Tracepoint), Vec<u64>>::new();
    for (seed, tp, seq) in events.iter().filter(|(.., seq)| *seq < MAX_ROUNDS) {
        rounds.entry((*seed, *tp)).or_default().push(*seq);
    }
    let every_peer: Vec<u64> = (0..tracepoint_simulator::CONNECTED_PEERS).collect();
    let closed = closed_at_shutdown(&events);
    assert_eq!(closed, [1, 3, 4].map(|seed| (seed, every_peer.clone())).into(), "closed at shutdown");
    for seed in SEEDS {
        for tp in Tracepoint::defaults() {
            let seqs = rounds.get(&(seed, tp)).map(Vec::as_slice).unwrap_or_default();
            let (first, last) = (seqs.first().copied().unwrap_or_default(), seqs.last().copied().unwrap_or_default());
            let unbroken = !seqs.is_empty() && *seqs == (first..=last).collect::<Vec<_>>();
            let as_traced = traced.get(&seed).is_none_or(|run| {
                let range = &run[&tp];
                let (start, end) = (*range.start(), *range.end());
                (start..=start + 1).contains(&first) && (end.saturating_sub(1)..=end).contains(&last)
            });
            if !unbroken || !as_traced {
                let run = traced.get(&seed).map(|run| run[&tp].clone());
                wrong.push(format!("{tp} of seed {seed}: rounds {seqs:?}, traced {run:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\n{}",
        wrong.join("\n"),
        booted.journal(&["bitcoind", "peer-observer-ebpf-loader", "peer-observer-ebpf-publisher"])
    );

    // No unit's process was killed by a signal (a seccomp filter's SIGSYS, say), and the
    // publisher lost nothing.
    let journal = booted.journal(&["peer-observer-ebpf-loader", "peer-observer-ebpf-publisher"]);
    assert!(!journal.contains("code=killed"), "{journal}");
    let text = scrape_metrics(&metrics);
    for family in e2e::LOSS_FAMILIES {
        assert_eq!(per_tracepoint(&text, family), BTreeMap::new(), "{family}");
    }

    // At the machine's shutdown, systemd stops bitcoind before the loader (ordered
    // Before=bitcoind.service), which so sees every connection bitcoind closes as it stops,
    // and the publisher last.
    firing(AT_POWEROFF);
    booted.systemctl(&["start", "bitcoind"]);
    wait_for_seed(&received, AT_POWEROFF, &booted).await;
    booted.power_off().await;
    let closed = || {
        let events: Vec<_> = received.lock().expect("received").iter().flatten().copied().collect();
        closed_at_shutdown(&events).remove(&AT_POWEROFF).unwrap_or_default()
    };
    let why = || format!("connections closed at power-off that arrived: {:?}", closed());
    until(Duration::from_secs(30), || closed() == every_peer, why).await;
    collecting.abort();
}
