//! The seed's one command, `ebpf-extractor`, run as root against a node deployed as Bitcoin
//! Core deploys itself: the simulator as a user of its own, its pid file 0600 in a 0700
//! directory. It runs the publisher without any capability and the loader with CAP_BPF and
//! CAP_PERFMON in its bounding set only, each under a uid of its own, in a clean session.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use e2e::{
    assert_fired_exactly, bins, chown, proc_status, receive, spawn_ready, wall_ms, NatsServer, NodeDir, Simulator,
    TempDir, BITCOIND_UID,
};
use ipc_protocol::Tracepoint;
use tokio::process::Command;

/// A uid for the named-user test: no /etc/passwd entry needed.
const LOADER_UID: &str = "65533";

fn uid(pid: u32) -> u32 {
    proc_status(pid)["Uid"].split_whitespace().next().and_then(|n| n.parse().ok()).expect("uid")
}

/// Session id and controlling terminal of `pid` (fields 6 and 7 of /proc/<pid>/stat).
fn session_and_tty(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("comm").1.split(' ').collect();
    (fields[3].parse().expect("session"), fields[4].parse().expect("tty"))
}

/// Starts `ebpf-extractor` on `binary` with `args` and returns once it reports ready.
async fn start_launcher(
    nats: &NatsServer,
    dir: &Path,
    binary: &Path,
    args: &[&std::ffi::OsStr],
) -> tokio::process::Child {
    let mut launcher = Command::new(&bins().launcher);
    launcher
        .args(["--nats-address", &nats.address])
        .arg("--bitcoind-path")
        .arg(binary)
        .args(args)
        .env("EXTRACTOR_TEST_SECRET", "hunter2")
        // Its bundle would go on as one more file (launcher/src/nats.rs), which the tests here
        // do not expect among the publisher's descriptors; nats_auth.rs tests it.
        .env_remove("SSL_CERT_FILE")
        .stderr(Stdio::piped());
    spawn_ready(&mut launcher, dir, "ebpf-extractor").await
}

async fn stop(launcher: &mut tokio::process::Child) -> String {
    e2e::signal(launcher.id().expect("running"), "TERM");
    let status =
        tokio::time::timeout(Duration::from_secs(15), launcher.wait()).await.expect("stops in time").expect("status");
    let log = e2e::read_stderr(launcher).await;
    assert!(status.success(), "{status}: {log}");
    log
}

async fn subscribe(nats: &NatsServer) -> async_nats::Subscriber {
    let client = async_nats::connect(&nats.address).await.expect("connect");
    e2e::subscribe_in_place(&client, "*").await
}

/// Whether loader `pid` exits after the seed's 180 s without events (no `--no-idle-exit`).
fn idle_exits(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the loader's command line");
    !cmdline.split(|b| *b == 0).any(|arg| arg == b"--no-idle-exit")
}

/// Waits until the launcher runs a loader other than `previous` that has dropped its
/// capabilities, i.e. has attached.
async fn attached_loader(launcher: &tokio::process::Child, previous: Option<u32>) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let kids = e2e::children(launcher.id().expect("ebpf-extractor still running"));
        if let Some(&loader) = kids.get("ebpf-loader").filter(|pid| Some(**pid) != previous) {
            if proc_status(loader).get("CapEff").map(String::as_str) == Some("0000000000000000") {
                return loader;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no loader attached");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The seed's command exactly as README gives it (no user options) on a machine where no user
/// of this project exists, following the node's private pid file across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_command_follows_a_private_pid_file_across_a_restart_under_uids_of_its_own() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("launcher-seed");
    let node = Arc::new(NodeDir::new());
    let defaults = Tracepoint::defaults();
    let first = Simulator::start_in(&node, &bins().simulator, "default", 3, 41, &[]);
    let first_pid = first.pid();
    let mut subscriber = subscribe(&nats).await;
    let mut launcher = start_launcher(
        &nats,
        dir.path(),
        &bins().simulator,
        &["--bitcoind-pid-file".as_ref(), node.pid_file().as_os_str()],
    )
    .await;

    let kids = e2e::children(launcher.id().unwrap());
    let (publisher, loader) = (kids["ebpf-publisher"], kids["ebpf-loader"]);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    for (who, pid) in [("publisher", publisher), ("loader", loader)] {
        let id = uid(pid);
        assert!((61184..=65519).contains(&id), "{who} runs as {id}, not a dynamic uid");
        assert!(
            !passwd.lines().any(|l| l.split(':').nth(2) == Some(&id.to_string())),
            "{who}'s uid {id} has an account"
        );
        assert_ne!(id, BITCOIND_UID);
        // A clean start: own session, no terminal, nothing of root's environment, cwd /.
        let (session, tty) = session_and_tty(pid);
        assert_eq!((session, tty), (pid, 0), "{who} leads a session of its own without a terminal");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let names: Vec<String> = environ
            .split(|b| *b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(v).split('=').next().unwrap().to_string())
            .collect();
        // README's allowlist: nothing else of root's environment (which holds a secret here).
        assert!(names.contains(&"NOTIFY_SOCKET".to_string()), "{who}'s environment: {names:?}");
        assert!(
            names.iter().all(|n| ["NOTIFY_SOCKET", "TZ", "RUST_BACKTRACE"].contains(&n.as_str())),
            "{who}'s environment: {names:?}"
        );
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), Path::new("/"));
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap(), Path::new("/dev/null"));
    }
    assert_ne!(uid(publisher), uid(loader));
    assert_eq!(proc_status(loader)["CapEff"], "0000000000000000");
    // No descriptor of the launcher's leaked into a child (its lock files, the binaries it
    // checked): past standard input, output and error (the launcher's own log), the only file
    // either holds open is the bitcoind binary handed to the loader.
    let files = |pid: u32| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|fd| fd.ok())
            .filter(|fd| fd.file_name().to_str().and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n > 2))
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|target| target.is_absolute() && !target.starts_with("/dev"))
            .collect()
    };
    assert_eq!(files(publisher), Vec::<std::path::PathBuf>::new(), "publisher's files");
    assert_eq!(files(loader), [bins().simulator.clone()], "loader's files");
    // The publisher's socket: 0660 with the loader's group, in a directory only those two
    // may enter, under root's /run/ebpf-extractor, which no one else may list.
    use std::os::unix::fs::MetadataExt;
    let cmdline = std::fs::read(format!("/proc/{publisher}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let socket = args
        .iter()
        .position(|a| *a == b"--socket")
        .map(|i| String::from_utf8_lossy(args[i + 1]).into_owned())
        .expect("--socket");
    let socket = Path::new(&socket);
    let (sock, dir, run) = (
        std::fs::metadata(socket).unwrap(),
        std::fs::metadata(socket.parent().unwrap()).unwrap(),
        std::fs::metadata("/run/ebpf-extractor").unwrap(),
    );
    assert_eq!((sock.mode() & 0o7777, sock.uid(), sock.gid()), (0o660, uid(publisher), uid(loader)), "socket");
    assert_eq!((dir.mode() & 0o7777, dir.uid(), dir.gid()), (0o2710, uid(publisher), uid(loader)), "runtime directory");
    assert_eq!((run.mode() & 0o7777, run.uid()), (0o711, 0), "/run/ebpf-extractor");

    assert!(idle_exits(loader), "the first loader keeps the seed's idle exit");

    let before = wall_ms();
    assert_eq!(first.fire().await.values().sum::<u64>(), 3 * defaults.len() as u64);
    let events = receive(&mut subscriber, 3 * defaults.len()).await;
    assert_fired_exactly(&events, &defaults, 41, 0..3, before..=wall_ms());

    // The node exits cleanly (removing its pid file) and a new process of it starts in the
    // same datadir, writing its own pid file.
    let second = Simulator::start_in(&node, &bins().simulator, "default", 2, 42, &[]);
    let second_pid = second.pid();
    assert_ne!(second_pid, first_pid);
    let second_loader = attached_loader(&launcher, Some(loader)).await;
    // Its node may take minutes to start networking: it only warns while no event comes.
    assert!(!idle_exits(second_loader), "the successor's loader warns only");
    let before = wall_ms();
    assert_eq!(second.fire().await.values().sum::<u64>(), 2 * defaults.len() as u64);
    let events = receive(&mut subscriber, 2 * defaults.len()).await;
    assert_fired_exactly(&events, &defaults, 42, 0..2, before..=wall_ms());

    let log = stop(&mut launcher).await;
    // The launcher's own lines go through `tracing`, with their level, as its children's do.
    let following = format!(" INFO ebpf_extractor: following the restarted bitcoind (pid {second_pid})");
    assert!(log.lines().any(|line| line.ends_with(&following)), "{log}");
    assert!(!log.contains("hunter2"));
}

/// The `max_entries` of each BPF ring buffer (`map_type: 27`) that process `pid` holds.
fn ring_buffer_sizes(pid: u32) -> Vec<u64> {
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo").flatten() {
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if info.lines().any(|l| l == "map_type:\t27") {
            let field = info.lines().find_map(|l| l.strip_prefix("max_entries:")).expect("max_entries");
            sizes.push(field.trim().parse().expect("a size"));
        }
    }
    sizes.sort_unstable();
    sizes
}

/// Named users still work; the loader's bounding set holds exactly its two capabilities; a
/// ring buffer's size is handed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_users_run_privilege_separated_end_to_end() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("launcher");
    // It stays up after firing, as bitcoind would: with a fixed --bitcoind-pid, ebpf-extractor
    // ends with its bitcoind.
    let simulator = Simulator::start_with("default", 5, 31, &["--linger", "3"]);
    let mut subscriber = subscribe(&nats).await;
    let pid = simulator.pid().to_string();
    let args = [
        "--bitcoind-pid",
        &pid,
        "--publisher-user",
        "nobody",
        "--loader-user",
        LOADER_UID,
        "--event-ring-bytes",
        "1048576",
    ];
    let mut launcher = start_launcher(&nats, dir.path(), &bins().simulator, &args.map(std::ffi::OsStr::new)).await;

    let kids = e2e::children(launcher.id().unwrap());
    // The UTXO cache's ring takes a page while off; the messages' keeps its default.
    assert_eq!(ring_buffer_sizes(kids["ebpf-loader"]), [4096, 1 << 20, 32 << 20]);
    let publisher = proc_status(kids["ebpf-publisher"]);
    let loader = proc_status(kids["ebpf-loader"]);
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

    let before = wall_ms();
    let firing = tokio::spawn(simulator.fire());
    let defaults = Tracepoint::defaults();
    let events = receive(&mut subscriber, 5 * defaults.len()).await;
    assert_fired_exactly(&events, &defaults, 31, 0..5, before..=wall_ms());
    stop(&mut launcher).await;
    assert_eq!(firing.await.unwrap().values().sum::<u64>(), 5 * defaults.len() as u64);
}

/// Started before its node, as an automated setup may start it, with the pid file not yet
/// written: it waits for the pid file to name a running bitcoind, as it does for a restarted
/// one, starting nothing meanwhile, then follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_before_its_node_it_waits_for_the_pid_file() {
    const ROUNDS: u64 = 3;
    let nats = NatsServer::start().await;
    let dir = TempDir::new("launcher-early");
    let node = Arc::new(NodeDir::new());
    let mut subscriber = subscribe(&nats).await;
    let notify_path = dir.path().join("notify.sock");
    let notify = e2e::notify_socket(&notify_path);
    let mut launcher = Command::new(&bins().launcher)
        .args(["--nats-address", &nats.address, "--bitcoind-path"])
        .arg(&bins().simulator)
        .arg("--bitcoind-pid-file")
        .arg(node.pid_file())
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("SSL_CERT_FILE")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ebpf-extractor");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(launcher.try_wait().expect("its status").is_none(), "it waits for its node");
    assert!(e2e::children(launcher.id().expect("running")).is_empty(), "nothing starts before the node");

    let simulator = Simulator::start_in(&node, &bins().simulator, "default", ROUNDS, 43, &[]);
    e2e::wait_ready(&notify, &mut launcher, "ebpf-extractor").await;
    let before = wall_ms();
    let defaults = Tracepoint::defaults();
    assert_eq!(simulator.fire().await.values().sum::<u64>(), ROUNDS * defaults.len() as u64);
    let events = receive(&mut subscriber, ROUNDS as usize * defaults.len()).await;
    assert_fired_exactly(&events, &defaults, 43, 0..ROUNDS, before..=wall_ms());
    let log = stop(&mut launcher).await;
    // Stopped while it waits, it exits cleanly.
    let mut waiting_launcher = Command::new(&bins().launcher)
        .args(["--nats-address", &nats.address, "--bitcoind-path"])
        .arg(&bins().simulator)
        .arg("--bitcoind-pid-file")
        .arg(dir.path().join("never.pid"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ebpf-extractor");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = stop(&mut waiting_launcher).await;
    assert!(stopped.contains("waiting for bitcoind to write"), "{stopped}");
    let waiting = format!(
        "No such file or directory (os error 2); is bitcoind running with -pid={0}?: waiting for bitcoind to write {0}",
        node.pid_file().display()
    );
    assert!(log.contains(&waiting), "{log}");
}

/// `--nats-legacy-envelope`, handed on by the launcher: every event in peer-observer's envelope
/// from before 2025-12-15 (`event_msg.EventMsg`), its time in seconds and microseconds, every
/// field as fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_envelope_carries_every_event_with_its_time_in_microseconds() {
    use futures_util::StreamExt;
    use publisher::decode::{Envelope, EnvelopeVersion};
    use publisher::proto::ebpf_extractor::{ebpf::EbpfEvent, Ebpf};
    use publisher::proto::event::{event::PeerObserverEvent, Event};
    const ROUNDS: u64 = 4;
    let nats = NatsServer::start().await;
    let dir = TempDir::new("launcher-legacy");
    let simulator = Simulator::start_with("default", ROUNDS, 33, &["--linger", "3"]);
    let mut subscriber = subscribe(&nats).await;
    let pid = simulator.pid().to_string();
    let args = ["--bitcoind-pid", &pid, "--nats-legacy-envelope"];
    let mut launcher = start_launcher(&nats, dir.path(), &bins().simulator, &args.map(std::ffi::OsStr::new)).await;
    let publisher = e2e::children(launcher.id().expect("running"))["ebpf-publisher"];
    let cmdline = std::fs::read(format!("/proc/{publisher}/cmdline")).expect("the publisher's command line");
    assert!(cmdline.split(|b| *b == 0).any(|arg| arg == b"--nats-legacy-envelope"));

    let before = wall_ms();
    let firing = tokio::spawn(simulator.fire());
    let defaults = Tracepoint::defaults();
    let mut events = Vec::new();
    let mut micros = Vec::new();
    while events.len() < ROUNDS as usize * defaults.len() {
        let msg = tokio::time::timeout(Duration::from_secs(30), subscriber.next())
            .await
            .expect("every event within 30 s")
            .expect("subscribed");
        let Ok(Envelope::Legacy(legacy)) = Envelope::decode(&msg.subject, &msg.payload, EnvelopeVersion::Legacy) else {
            panic!("{}: not an event_msg.EventMsg: {:02x?}", msg.subject, msg.payload)
        };
        micros.push(legacy.timestamp_subsec_micros);
        let timestamp = legacy.timestamp_ms();
        let ebpf_event = legacy.event.map(EbpfEvent::from);
        let event =
            Event { peer_observer_event: Some(PeerObserverEvent::EbpfExtractor(Ebpf { ebpf_event })), timestamp };
        events.push((msg.subject.to_string(), event));
    }
    assert_fired_exactly(&events, &defaults, 33, 0..ROUNDS, before..=wall_ms());
    assert!(micros.iter().all(|&us| us < 1_000_000), "{micros:?}");
    // Microseconds, not milliseconds scaled: 48 times a multiple of 1,000 by chance is 10^-144.
    assert!(micros.iter().any(|&us| us % 1000 != 0), "{micros:?}");
    let log = stop(&mut launcher).await;
    assert!(log.contains(" in the legacy envelope (event_msg.EventMsg)"), "{log}");
    assert_eq!(firing.await.expect("simulator task").values().sum::<u64>(), ROUNDS * defaults.len() as u64);
}

/// A self-built bitcoind under its builder's 0700 home: the loader's user cannot even reach
/// the binary, so the launcher opens it and hands it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_in_a_directory_the_loaders_user_cannot_traverse_attaches() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("launcher-home");
    let home = dir.path().join("home");
    let binary = home.join("bitcoin/build/bin/bitcoind");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    e2e::copy_executable(&bins().simulator, &binary);
    for path in [&home, &home.join("bitcoin"), &home.join("bitcoin/build"), &home.join("bitcoin/build/bin"), &binary] {
        chown(path, BITCOIND_UID);
    }
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let node = Arc::new(NodeDir::new());
    let simulator = Simulator::start_in(&node, &binary, "mempool:added,net:inbound_message", 4, 7, &[]);

    // The loader on its own, as its user, cannot open it: the set-up really is out of reach.
    let out = e2e::as_loader_user()
        .arg(&bins().loader)
        .arg("--bitcoind-path")
        .arg(&binary)
        .args(["--bitcoind-pid", &simulator.pid().to_string(), "--socket", "/nonexistent.sock"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist") || stderr.contains("Permission denied"), "{stderr}");

    let mut subscriber = subscribe(&nats).await;
    let mut launcher =
        start_launcher(&nats, dir.path(), &binary, &["--bitcoind-pid-file".as_ref(), node.pid_file().as_os_str()])
            .await;
    let before = wall_ms();
    assert_eq!(simulator.fire().await.values().sum::<u64>(), 8);
    let events = receive(&mut subscriber, 8).await;
    assert_fired_exactly(
        &events,
        &[Tracepoint::NetInboundMessage, Tracepoint::MempoolAdded],
        7,
        0..4,
        before..=wall_ms(),
    );

    // The node has stopped, and the launcher waits for its successor. The node's user, who owns
    // the binary's directory, puts a FIFO in the binary's place and names a running process in
    // the pid file: root must not open the FIFO (blocked on it, it would heed no SIGTERM and
    // start no loader), nor any device a symlink there could name (target.rs, open_binary).
    std::fs::remove_file(&binary).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &binary,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o755),
        0,
    )
    .unwrap();
    chown(&binary, BITCOIND_UID);
    let pid_file = node.pid_file();
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
    chown(&pid_file, BITCOIND_UID);
    e2e::until(
        Duration::from_secs(30),
        || !e2e::children(launcher.id().unwrap()).contains_key("ebpf-loader"),
        || "the loader exits with its node".into(),
    )
    .await;
    // The launcher looks every 100 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writer =
        rustix::fs::open(&binary, rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK, rustix::fs::Mode::empty());
    assert_eq!(writer.err(), Some(rustix::io::Errno::NXIO), "the launcher opened the FIFO for reading");
    let log = stop(&mut launcher).await;
    assert!(log.contains(&format!("binary={binary:?}")), "the loader names the binary, not its descriptor: {log}");
}

/// bitcoind's user names the files its node runs and is started as, and so what the launcher
/// and the loader read from `/proc/<pid>/exe`, `/proc/<pid>/cmdline` and the binary's
/// descriptor link: a newline there must not start a line of their logs that looks like their
/// own. The binary is `bitcoind\nERROR …`, reached through a `bitcoind` symlink; the node
/// was started as another such name, since repointed elsewhere (so the loader warns with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_names_the_nodes_user_chose_forge_no_log_line() {
    use std::os::unix::fs::symlink;
    let nats = NatsServer::start().await;
    let dir = TempDir::new("launcher-forged");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let binary = bin.join("bitcoind\nERROR forged binary");
    e2e::copy_executable(&bins().simulator, &binary);
    let path = bin.join("bitcoind");
    symlink(&binary, &path).unwrap();
    let started_as = bin.join("bitcoind-started\nERROR forged started_as");
    symlink(&binary, &started_as).unwrap();
    for file in [&bin, &binary] {
        chown(file, BITCOIND_UID);
    }
    let node = Arc::new(NodeDir::new());
    let simulator = Simulator::start_in(&node, &started_as, "mempool:added", 1, 7, &[]);
    std::fs::remove_file(&started_as).unwrap();
    symlink("/usr/bin/true", &started_as).unwrap();

    // The pid runs another binary than the one given: the launcher names the one it runs.
    let refused = Command::new(&bins().launcher)
        .args(["--nats-address", &nats.address, "--bitcoind-pid", &simulator.pid().to_string(), "--bitcoind-path"])
        .arg(&bins().simulator)
        .output()
        .await
        .unwrap();
    let refused = String::from_utf8_lossy(&refused.stderr);
    assert!(
        refused.contains(&format!("runs {:?}, not the bitcoind binary", binary.display().to_string())),
        "{refused}"
    );

    let mut subscriber = subscribe(&nats).await;
    let mut launcher =
        start_launcher(&nats, dir.path(), &path, &["--bitcoind-pid-file".as_ref(), node.pid_file().as_os_str()]).await;
    assert_eq!(simulator.fire().await.values().sum::<u64>(), 1);
    assert_eq!(receive(&mut subscriber, 1).await.len(), 1);
    let log = stop(&mut launcher).await;
    assert!(log.contains(&format!("binary={binary:?}")), "{log}");
    assert!(log.contains(&format!("started_as={started_as:?}")), "{log}");
    for output in [&log, &refused.to_string()] {
        assert!(!output.lines().any(|line| line.starts_with("ERROR forged")), "a forged line: {output}");
    }
}

/// `-V`, the usage line and the NATS flag in both its seed (`-n`) and 2026 upstream (`-a`)
/// spellings.
#[tokio::test]
async fn the_command_line_is_the_seeds() {
    let version = Command::new(&bins().launcher).arg("-V").output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout), format!("ebpf-extractor {}\n", env!("CARGO_PKG_VERSION")));
    let help = Command::new(&bins().launcher).arg("--help").output().await.unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.starts_with("The peer-observer extractor hooks into a Bitcoin Core binary"), "{help}");
    assert!(
        help.contains("Usage: ebpf-extractor [OPTIONS] --bitcoind-path <BITCOIND_PATH> <--bitcoind-pid <BITCOIND_PID>|--bitcoind-pid-file <BITCOIND_PID_FILE>>"),
        "{help}"
    );
    for flag in ["-n", "-a", "--nats-address"] {
        let out = Command::new(&bins().launcher)
            .args([flag, "127.0.0.1:1", "-b", "/nonexistent/bitcoind", "--bitcoind-pid", "1"])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr.contains("cannot open the bitcoind binary /nonexistent/bitcoind"), "{flag}: {stderr}");
    }
    let both = Command::new(&bins().launcher)
        .args(["-b", "/x", "--bitcoind-pid", "1", "--bitcoind-pid-file", "/y"])
        .output()
        .await
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
    // A log level is checked here, not handed on for a child to refuse as it starts; any case
    // is one, as the seed's default `DEBUG` is.
    let verbose = Command::new(&bins().launcher)
        .args(["-b", "/nonexistent/bitcoind", "--bitcoind-pid", "1", "--log-level", "verbose"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&verbose.stderr);
    assert_eq!(verbose.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid value 'verbose' for '--log-level <LOG_LEVEL>'"), "{stderr}");
    let info = Command::new(&bins().launcher)
        .args(["-b", "/nonexistent/bitcoind", "--bitcoind-pid", "1", "-l", "Info"])
        .output()
        .await
        .unwrap();
    assert_eq!(info.status.code(), Some(1), "{}", String::from_utf8_lossy(&info.stderr));
}

#[tokio::test]
async fn launcher_refuses_the_same_user_twice_and_root() {
    let run = |publisher: &'static str, loader: &'static str| async move {
        let out = Command::new(&bins().launcher)
            .args([
                "--bitcoind-path",
                "/usr/bin/true",
                "--bitcoind-pid",
                "1",
                "--publisher-user",
                publisher,
                "--loader-user",
                loader,
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run("nobody", "nobody").await.contains("--loader-user and --publisher-user must differ"));
    assert!(run("root", "nobody").await.contains("--publisher-user must not be root"));
    assert!(run("nobody", "0").await.contains("--loader-user must not be root"));
}

/// `ebpf-extractor --bitcoind-path <the simulator> args…`, which must refuse to start (status
/// 1): its standard error. Bounded: a launcher that took the pid would start the pipeline and
/// run on.
async fn refused_launch(args: Vec<std::ffi::OsString>) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(&bins().launcher)
            .arg("--bitcoind-path")
            .arg(&bins().simulator)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the launcher refuses at once")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// A pid file that is a symlink (bitcoind's user owns its directory and could point the root
/// launcher anywhere), or that names a process running another binary, is refused.
#[tokio::test]
async fn launcher_refuses_a_symlinked_pid_file_and_a_pid_running_another_binary() {
    let dir = TempDir::new("launcher-pidfile");
    let link = dir.path().join("bitcoind.pid");
    std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();
    let stderr = refused_launch(vec!["--bitcoind-pid-file".into(), link.clone().into()]).await;
    assert!(stderr.contains(&format!("pid file {} is not a regular file", link.display())), "{stderr}");
    assert!(!stderr.contains("root:"), "nothing of the link's target is shown: {stderr}");
    let mut other = Command::new("sleep").arg("30").kill_on_drop(true).spawn().unwrap();
    let pid = other.id().unwrap().to_string();
    let stderr = refused_launch(vec!["--bitcoind-pid".into(), pid.clone().into()]).await;
    assert!(stderr.contains(&format!("pid {pid} runs \"/usr/bin/sleep\", not the bitcoind binary")), "{stderr}");
    other.kill().await.unwrap();
}

/// bitcoind's user may write any pid into the pid file it writes: that of another user's node
/// running the same binary (root's here) passes the binary's check, and the probes would then
/// report that node's peers and mempool. The launcher refuses a pid its file's owner does not
/// run. The node's user may also replace a directory it owns on the pid file's path
/// (`regtest`) with a symlink to the other node's: that file is the other user's and names a
/// pid that user runs, and `--bitcoind-user` refuses it; as it refuses that pid given
/// directly.
#[tokio::test]
async fn launcher_refuses_a_pid_file_naming_another_users_process() {
    use std::os::unix::fs::PermissionsExt;
    let node = NodeDir::new();
    let mut other = e2e::another_users_node();
    let pid = other.id().unwrap();
    // As bitcoind writes it: by the node's user, 0600 in a 0700 directory.
    let pid_file = node.pid_file();
    let regtest = node.network_dir();
    std::fs::write(&pid_file, format!("{pid}\n")).unwrap();
    std::fs::set_permissions(&pid_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    chown(&pid_file, BITCOIND_UID);
    let stderr = refused_launch(vec!["--bitcoind-pid-file".into(), pid_file.clone().into()]).await;
    let refused = format!(
        "pid file {} names pid {pid}, which uid 0 runs, not the file's owner uid {BITCOIND_UID}",
        pid_file.display()
    );
    assert!(stderr.contains(&refused), "{stderr}");

    // The other node's own directory and pid file, and the node's `regtest` a symlink to it.
    let others = TempDir::new("other-node");
    std::fs::write(others.path().join("bitcoind.pid"), format!("{pid}\n")).unwrap();
    std::fs::remove_dir_all(&regtest).unwrap();
    std::os::unix::fs::symlink(others.path(), &regtest).unwrap();
    std::os::unix::fs::lchown(&regtest, Some(BITCOIND_UID), Some(BITCOIND_UID)).unwrap();
    let user = BITCOIND_UID.to_string();
    let stderr = refused_launch(vec![
        "--bitcoind-pid-file".into(),
        pid_file.clone().into(),
        "--bitcoind-user".into(),
        user.clone().into(),
    ])
    .await;
    let refused =
        format!("pid file {} belongs to uid 0, not to --bitcoind-user (uid {BITCOIND_UID})", pid_file.display());
    assert!(stderr.contains(&refused), "{stderr}");
    let stderr =
        refused_launch(vec!["--bitcoind-pid".into(), pid.to_string().into(), "--bitcoind-user".into(), user.into()])
            .await;
    assert!(
        stderr.contains(&format!("pid {pid} belongs to uid 0, not to --bitcoind-user (uid {BITCOIND_UID})")),
        "{stderr}"
    );
    other.kill().await.unwrap();
}

/// Waiting for its node, the launcher finds a pid file of a node run by another user than
/// `--bitcoind-user` names: it says why once, starts nothing, and waits on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_its_node_it_says_once_why_a_pid_file_is_refused() {
    let nats = NatsServer::start().await;
    let node = Arc::new(NodeDir::new());
    let other_user = (BITCOIND_UID + 1).to_string();
    let mut launcher = Command::new(&bins().launcher)
        .args(["--nats-address", &nats.address, "--bitcoind-path"])
        .arg(&bins().simulator)
        .arg("--bitcoind-pid-file")
        .arg(node.pid_file())
        .args(["--bitcoind-user", &other_user])
        .env_remove("SSL_CERT_FILE")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ebpf-extractor");
    // Waiting: at its start, a refused pid file is an error instead.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(launcher.try_wait().expect("its status").is_none(), "it waits for its node");
    let _simulator = Simulator::start_in(&node, &bins().simulator, "mempool:added", 1, 0, &[]);
    // Twenty looks or more at the refused file.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(launcher.try_wait().expect("its status").is_none(), "it waits for its node");
    assert!(e2e::children(launcher.id().expect("running")).is_empty(), "nothing starts for another user's node");
    let log = stop(&mut launcher).await;
    let refused = format!(
        "pid file {} belongs to uid {BITCOIND_UID}, not to --bitcoind-user (uid {other_user})",
        node.pid_file().display()
    );
    assert_eq!(log.matches(&refused).count(), 1, "{log}");
}
