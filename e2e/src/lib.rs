//! End-to-end harness: a real `nats-server`, the tracepoint simulator, `ebpf-publisher`, and
//! `ebpf-loader` running as an unprivileged user with only CAP_BPF and CAP_PERFMON.
//! Every piece gets its own temporary directory and random port, so tests run in parallel.

pub mod expect;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ipc_protocol::Tracepoint;
use prost::Message;
use publisher::proto::event::Event;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

/// The unprivileged user the loader runs as (`nobody`).
pub const LOADER_UID: u32 = 65534;
/// The simulated node's own user, as bitcoind runs as `bitcoin`: neither the loader's nor the
/// publisher's, and without an /etc/passwd entry, so no test depends on one.
pub const BITCOIND_UID: u32 = 60999;

/// The publisher's memory bound, stated in README ("Large messages and memory"): its
/// read-ahead (5 MiB), what waits for the NATS server (16 MiB, in the client's buffer or for
/// JetStream's acknowledgement), one event being decoded and encoded, and the runtime.
const PUBLISHER_PEAK_RSS_MIB: u64 = 96;

/// Asserts that the publisher's peak RSS so far is under [`PUBLISHER_PEAK_RSS_MIB`], and
/// prints it, `after` saying what it went through.
pub fn assert_publisher_memory_bounded(publisher: &Child, after: &str) {
    let pid = publisher.id().expect("publisher running");
    let peak_kib: u64 = proc_status(pid)["VmHWM"].trim_end_matches(" kB").parse().expect("VmHWM in kB");
    eprintln!("publisher peak RSS {after}: {:.1} MiB", peak_kib as f64 / 1024.0);
    assert!(peak_kib < PUBLISHER_PEAK_RSS_MIB * 1024, "publisher peak RSS {peak_kib} KiB {after}");
}

const WAIT: Duration = Duration::from_secs(30);

/// Copies an executable with `cp`, a process of its own. Copied here, the file would be open
/// for writing in this process while another test's thread forks a child, which keeps that
/// descriptor until it execs: executing the copy then fails with ETXTBSY ("Text file busy").
pub fn copy_executable(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp").arg(from).arg(to).status().expect("run cp");
    assert!(status.success(), "cp {} {}: {status}", from.display(), to.display());
}

/// A directory removed on drop, readable by the loader's user.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ebpf-extractor-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The workspace's binaries, copied where the loader's user can read and run them (the
/// checkout itself may sit below a directory only root can enter).
pub struct Bins {
    _dir: TempDir,
    pub launcher: PathBuf,
    pub loader: PathBuf,
    pub publisher: PathBuf,
    pub simulator: PathBuf,
}

/// Where cargo put the workspace's binaries: target/<profile>, above target/<profile>/deps/<test>
/// or beside target/<profile>/<bin>.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("target dir");
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        assert!(
            rustix::process::geteuid().is_root(),
            "the end-to-end tests load BPF programs and run each process as a user of its own: \
             run them as root (scripts/test.sh, as CI does)"
        );
        let profile_dir = profile_dir();
        remove_bins_of_exited_processes();
        let dir = TempDir::new("bins");
        let copy = |name: &str| {
            let from = profile_dir.join(name);
            assert!(from.exists(), "{} missing: run `cargo build --workspace --bins` first", from.display());
            let to = dir.path().join(name);
            copy_executable(&from, &to);
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod binary");
            to
        };
        Bins {
            launcher: copy("ebpf-extractor"),
            loader: copy("ebpf-loader"),
            publisher: copy("ebpf-publisher"),
            simulator: copy("tracepoint-simulator"),
            _dir: dir,
        }
    })
}

/// Removes the copies of the binaries that earlier test processes left: [`bins`] keeps its
/// directory in a static, which is never dropped, and each copy takes a few hundred MB.
fn remove_bins_of_exited_processes() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) =
            name.to_str().and_then(|n| n.strip_prefix("ebpf-extractor-bins-")).and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Subscribes `client` to `subject` and returns once the server has the subscription.
/// async-nats' `flush` only writes the SUB to the socket: a server short of CPU may route
/// another connection's first messages before it reads it, and they are lost to this
/// subscriber. The server reads a connection in order, so a message this client publishes
/// after the SUB comes back only once the SUB is in place. `subject` must not match the
/// client's inboxes (`_INBOX.<id>.<n>`), or the subscriber would see that message too.
pub async fn subscribe_in_place(client: &async_nats::Client, subject: &str) -> async_nats::Subscriber {
    use futures_util::StreamExt;
    let subscriber = client.subscribe(subject.to_string()).await.expect("subscribe");
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await.expect("subscribe to an inbox");
    client.publish(inbox, bytes::Bytes::new()).await.expect("publish to the inbox");
    tokio::time::timeout(Duration::from_secs(10), echo.next())
        .await
        .expect("the server sent back this client's own message")
        .expect("the inbox subscription is open");
    subscriber
}

pub struct NatsServer {
    child: Child,
    dir: TempDir,
    pub address: String,
}

fn spawn_nats(dir: &Path, port: &str) -> Child {
    Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", port, "-c"])
        .arg(dir.join("nats.conf"))
        .arg("--log")
        .arg(dir.join("nats.log"))
        .arg("--ports_file_dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start nats-server (is it installed?)")
}

impl NatsServer {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("nats-server running")
    }

    /// Starts nats-server on a random loopback port with `max_payload` of 5 MiB.
    pub async fn start() -> NatsServer {
        Self::with_max_payload(5_242_880).await
    }

    pub async fn with_max_payload(max_payload: usize) -> NatsServer {
        Self::configured(&format!("max_payload: {max_payload}\n")).await
    }

    /// Starts nats-server with `config` (its configuration syntax: `authorization { … }`,
    /// `tls { … }`, …) and `max_payload` of 5 MiB.
    pub async fn with_config(config: &str) -> NatsServer {
        Self::configured(&format!("max_payload: 5242880\n{config}\n")).await
    }

    /// What the server logged (connections, slow consumers, errors), for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Replaces the configuration that the next [`Self::restart`] starts with, as
    /// [`Self::with_config`] takes it: a server that comes back with other credentials.
    pub fn reconfigure(&self, config: &str) {
        std::fs::write(self.dir.path().join("nats.conf"), format!("max_payload: 5242880\n{config}\n"))
            .expect("write nats config");
    }

    /// Starts nats-server with JetStream on and `max_payload` of 5 MiB. Its store lies in its
    /// own directory, which [`Self::kill`] and [`Self::restart`] keep: a restarted server has
    /// its streams and their messages back.
    pub async fn with_jetstream() -> NatsServer {
        Self::with_jetstream_and_max_payload(5_242_880).await
    }

    /// [`Self::with_jetstream`] with another `max_payload`.
    pub async fn with_jetstream_and_max_payload(max_payload: usize) -> NatsServer {
        let dir = TempDir::new("nats");
        let config = format!("max_payload: {max_payload}\n{}\n", jetstream_config(dir.path()));
        Self::configured_in(dir, &config).await
    }

    async fn configured(config: &str) -> NatsServer {
        Self::configured_in(TempDir::new("nats"), config).await
    }

    async fn configured_in(dir: TempDir, config: &str) -> NatsServer {
        std::fs::write(dir.path().join("nats.conf"), config).expect("write nats config");
        let child = spawn_nats(dir.path(), "-1");
        let ports_file = dir.path().join(format!("nats-server_{}.ports", child.id().expect("pid")));
        let address = wait_for(|| {
            // `nats://host:port`, or `tls://host:port` when the server requires TLS.
            let text = std::fs::read_to_string(&ports_file).ok()?;
            let text = &text[text.find("\"nats\"")?..];
            let start = text.find("://")? + "://".len();
            let end = start + text[start..].find('"')?;
            Some(text[start..end].to_string())
        })
        .await
        .expect("nats-server did not report its port");
        NatsServer { child, dir, address }
    }

    /// Stops the server (SIGSTOP): its connections stay open, and nothing is read from them, as
    /// with a hung server or a half-open link.
    pub fn stall(&self) {
        assert!(signal(self.child.id().expect("nats-server running"), "STOP"), "SIGSTOP to nats-server");
    }

    /// Lets a server [`Self::stall`] stopped go on (SIGCONT).
    pub fn resume(&self) {
        assert!(signal(self.child.id().expect("nats-server running"), "CONT"), "SIGCONT to nats-server");
    }

    /// Kills the server: an outage, until [`Self::restart`].
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill nats-server");
    }

    /// Starts the server again on the same address.
    pub async fn restart(&mut self) {
        let port = self.address.rsplit_once(':').expect("host:port").1.to_string();
        self.child = spawn_nats(self.dir.path(), &port);
        wait_for(|| std::net::TcpStream::connect(&self.address).ok()).await.expect("nats-server listens again");
    }
}

/// The configuration block that turns JetStream on with its store below `dir`.
fn jetstream_config(dir: &Path) -> String {
    format!("jetstream {{ store_dir: {:?} }}", dir.join("js").display().to_string())
}

/// Three nats-servers on loopback forming one JetStream cluster, each with its own store, and
/// knowing the others through their routes (their clients learn the others from them).
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
}

struct ClusterNode {
    dir: TempDir,
    address: String,
    child: Child,
}

impl NatsCluster {
    /// Starts the three servers and returns once the cluster can place a stream on all three.
    pub async fn start() -> NatsCluster {
        // Every port is in some other node's configuration, so all are chosen before any starts;
        // held together while chosen so that no two are the same.
        let ports = free_ports(6);
        let (client_ports, route_ports) = ports.split_at(3);
        let nodes = (0..3)
            .map(|i| {
                let dir = TempDir::new("nats-cluster");
                let routes: Vec<String> =
                    (0..3).filter(|j| *j != i).map(|j| format!("nats-route://127.0.0.1:{}", route_ports[j])).collect();
                let config = format!(
                    "server_name: {}\nmax_payload: 5242880\n{}\n\
                     cluster {{\n  name: e2e\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    Self::server_name(i),
                    jetstream_config(dir.path()),
                    route_ports[i],
                    routes.join(", ")
                );
                std::fs::write(dir.path().join("nats.conf"), config).expect("write nats config");
                let child = spawn_nats(dir.path(), &client_ports[i].to_string());
                ClusterNode { dir, address: format!("127.0.0.1:{}", client_ports[i]), child }
            })
            .collect();
        let cluster = NatsCluster { nodes };
        // The servers listen long before they have routes and a JetStream meta leader.
        let deadline = tokio::time::Instant::now() + 2 * WAIT;
        while !replicated_stream_placeable(cluster.address(0)).await {
            assert!(tokio::time::Instant::now() < deadline, "the NATS cluster's JetStream did not become usable");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster
    }

    /// Node `i`'s `server_name`, by which JetStream names a stream's leader and replicas.
    pub fn server_name(i: usize) -> String {
        format!("e2e-node{i}")
    }

    /// Node `i`'s client address, `127.0.0.1:port`.
    pub fn address(&self, i: usize) -> &str {
        &self.nodes[i].address
    }

    /// Makes node `i` the leader of `stream`, the node that orders and acknowledges its
    /// messages: a leader asked to step down hands over to another node at random.
    pub async fn move_stream_leader(&self, stream: &str, i: usize) {
        let name = Self::server_name(i);
        let client = async_nats::connect(self.address(i)).await.expect("connect to move the stream leader");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let info = stream_info(self.address(i), stream).await;
            let leader = info.cluster.and_then(|cluster| cluster.leader);
            if leader.as_deref() == Some(name.as_str()) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name} did not become the leader of {stream}: {leader:?}");
            // Answered once the election is under way; a new leader follows within a second.
            let _ = client.request(format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"), "".into()).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Kills node `i` (SIGKILL): an outage, until [`Self::restart`].
    pub async fn kill(&mut self, i: usize) {
        self.nodes[i].child.kill().await.expect("kill nats-server");
    }

    /// Starts node `i` again with its ports and store, and returns once it listens.
    pub async fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let port = node.address.rsplit_once(':').expect("host:port").1.to_string();
        node.child = spawn_nats(node.dir.path(), &port);
        wait_for(|| std::net::TcpStream::connect(&node.address).ok()).await.expect("nats-server listens again");
    }
}

/// `n` distinct free loopback ports.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("bound address").port()).collect()
}

/// Whether the JetStream behind `address` creates (then deletes) a stream of three replicas.
async fn replicated_stream_placeable(address: &str) -> bool {
    use async_nats::jetstream::stream::{Config, StorageType};
    const PROBE: &str = "E2E_CLUSTER_READY";
    let Ok(client) = async_nats::connect(address).await else { return false };
    let jetstream = async_nats::jetstream::new(client);
    let config = Config {
        name: PROBE.to_string(),
        subjects: vec!["e2e-cluster-ready".to_string()],
        num_replicas: 3,
        storage: StorageType::Memory,
        ..Default::default()
    };
    let created = tokio::time::timeout(Duration::from_secs(5), jetstream.create_stream(config)).await;
    if !matches!(created, Ok(Ok(_))) {
        return false;
    }
    // Its subject is no test's, so a failed delete leaves nothing in anyone's way.
    let _ = tokio::time::timeout(Duration::from_secs(5), jetstream.delete_stream(PROBE)).await;
    true
}

/// The JetStream context of a new client of the server at `address`.
async fn jetstream_at(address: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(address).await.unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    async_nats::jetstream::new(client)
}

/// The configuration and state of `stream`, as the server at `address` reports them.
pub async fn stream_info(address: &str, stream: &str) -> async_nats::jetstream::stream::Info {
    let handle =
        jetstream_at(address).await.get_stream(stream).await.unwrap_or_else(|e| panic!("stream {stream}: {e}"));
    handle.cached_info().clone()
}

/// Waits (up to `within`) until `stream` holds at least `count` messages, and returns how many
/// it holds then. A server that does not answer (yet) counts as holding none.
pub async fn wait_for_stream_messages(address: &str, stream: &str, count: u64, within: Duration) -> u64 {
    let jetstream = jetstream_at(address).await;
    let deadline = tokio::time::Instant::now() + within;
    let mut held = 0;
    while held < count && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(Ok(handle)) = tokio::time::timeout(Duration::from_secs(5), jetstream.get_stream(stream)).await {
            held = handle.cached_info().state.messages;
        }
    }
    held
}

/// Every message `stream` holds, in stream order: its subject, its `Nats-Msg-Id` header (empty
/// if it has none), and its payload decoded as an `event.Event`.
pub async fn stream_messages(address: &str, stream: &str) -> Vec<(String, String, Event)> {
    use futures_util::StreamExt;
    let jetstream = jetstream_at(address).await;
    let handle = jetstream.get_stream(stream).await.unwrap_or_else(|e| panic!("stream {stream}: {e}"));
    let state = handle.cached_info().state.clone();
    if state.messages == 0 {
        return Vec::new();
    }
    let handle = &handle;
    // Many requests in flight, answers taken in sequence order.
    futures_util::stream::iter(state.first_sequence..=state.last_sequence)
        .map(|seq| async move {
            let msg = handle.get_raw_message(seq).await.unwrap_or_else(|e| panic!("message {seq} of {stream}: {e}"));
            let msg_id = msg.headers.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str().to_string());
            let event = Event::decode(msg.payload).unwrap_or_else(|e| panic!("message {seq} is no event.Event: {e}"));
            (msg.subject.to_string(), msg_id.unwrap_or_default(), event)
        })
        .buffered(64)
        .collect()
        .await
}

/// Polls `done` every 100 ms until it holds; past `within`, fails with `why()`.
pub async fn until(within: Duration, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{}", why());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Some(v) = f() {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// `setpriv` arguments that run a command as `nobody` holding exactly CAP_BPF and CAP_PERFMON.
pub fn as_loader_user() -> Command {
    let mut cmd = Command::new("setpriv");
    let uid = LOADER_UID.to_string();
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        "--inh-caps=-all,+bpf,+perfmon",
        "--ambient-caps=-all,+bpf,+perfmon",
        "--bounding-set=-all,+bpf,+perfmon",
        "--",
    ]);
    cmd
}

pub async fn start_publisher(nats_address: &str, socket: &Path, extra_args: &[&str]) -> Child {
    spawn_publisher(&[&["--nats-address", nats_address], extra_args].concat(), socket, Stdio::inherit()).await
}

/// `ebpf-publisher --stdout <format>`: no NATS, its events on its standard output, piped.
pub async fn start_stdout_publisher(format: &str, socket: &Path, extra_args: &[&str]) -> Child {
    spawn_publisher(&[&["--stdout", format], extra_args].concat(), socket, Stdio::piped()).await
}

async fn spawn_publisher(args: &[&str], socket: &Path, stdout: Stdio) -> Child {
    let child = Command::new(&bins().publisher)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .args(["--socket-mode", "666"])
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ebpf-publisher");
    wait_for(|| socket.exists().then_some(())).await.expect("publisher socket did not appear");
    child
}

/// What a simulator run fired.
pub struct Firing {
    /// Firings a tracer saw, per tracepoint.
    pub fired: BTreeMap<Tracepoint, u64>,
    /// Firings no tracer saw, all tracepoints together.
    pub untraced: u64,
    /// Nanoseconds spent at the probe sites (preparing the arguments included), all firings.
    pub fire_ns: u64,
}

/// A node's data directory as Bitcoin Core leaves it: owned by the node's user, mode 0700,
/// with the pid file that bitcoind writes under umask 077 in `regtest/` (0700 too).
pub struct NodeDir {
    _dir: TempDir,
    pub datadir: PathBuf,
}

impl NodeDir {
    pub fn new() -> NodeDir {
        let dir = TempDir::new("node");
        let datadir = dir.path().join("datadir");
        std::fs::create_dir(&datadir).expect("create datadir");
        std::fs::set_permissions(&datadir, std::fs::Permissions::from_mode(0o700)).expect("chmod datadir");
        chown(&datadir, BITCOIND_UID);
        NodeDir { _dir: dir, datadir }
    }

    /// `-pid`'s default under `-regtest`.
    pub fn pid_file(&self) -> PathBuf {
        self.datadir.join("regtest").join("bitcoind.pid")
    }

    /// The directory of [`Self::pid_file`], made as bitcoind makes it: its user's, mode 0700.
    pub fn network_dir(&self) -> PathBuf {
        let dir = self.datadir.join("regtest");
        std::fs::create_dir(&dir).expect("create the network's directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        chown(&dir, BITCOIND_UID);
        dir
    }

    /// The pid the pid file names (read as root: it is private to the node's user).
    pub fn pid_in_file(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()
    }
}

impl Default for NodeDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Another user's node (root's here), run from the simulator's binary as the node's is, waiting
/// to fire: a process whose pid the node's user may write into its pid file.
pub fn another_users_node() -> Child {
    Command::new(&bins().simulator)
        .args(["--tracepoints", "mempool:added", "--start-on-stdin"])
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the simulator as root")
}

pub fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
}

/// The tracepoint simulator running as a node would: as [`BITCOIND_UID`], from a binary the
/// loader's user may open, with `-datadir` in a [`NodeDir`] and `-regtest`, so its pid file is
/// 0600 in a 0700 directory.
pub struct Simulator {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub node: Arc<NodeDir>,
}

impl Simulator {
    pub fn start(tracepoints: &str, count: u64, seed: u64) -> Simulator {
        Self::start_with(tracepoints, count, seed, &[])
    }

    /// With more flags, e.g. the workload's `--message-type`, `--message-size`, `--garbage`.
    pub fn start_with(tracepoints: &str, count: u64, seed: u64, flags: &[&str]) -> Simulator {
        Self::start_in(&Arc::new(NodeDir::new()), &bins().simulator, tracepoints, count, seed, flags)
    }

    /// In an existing node directory (a restarted node) and from `binary`; returns once its pid
    /// file names it.
    pub fn start_in(
        node: &Arc<NodeDir>,
        binary: &Path,
        tracepoints: &str,
        count: u64,
        seed: u64,
        flags: &[&str],
    ) -> Simulator {
        let uid = BITCOIND_UID.to_string();
        let mut child = Command::new("setpriv")
            .args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "--"])
            .arg(binary)
            .arg(format!("-datadir={}", node.datadir.display()))
            .arg("-regtest")
            .args([
                "--tracepoints",
                tracepoints,
                "--count",
                &count.to_string(),
                "--seed",
                &seed.to_string(),
                "--start-on-stdin",
            ])
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start tracepoint-simulator via setpriv");
        let stdin = child.stdin.take();
        let pid = child.id().expect("simulator running");
        let deadline = std::time::Instant::now() + WAIT;
        while node.pid_in_file() != Some(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the simulator did not write its pid file {}",
                node.pid_file().display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Simulator { child, stdin, node: Arc::clone(node) }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("simulator running")
    }

    /// Lets it fire and returns how many firings of each tracepoint a tracer saw.
    pub async fn fire(self) -> BTreeMap<Tracepoint, u64> {
        self.fire_timed().await.fired
    }

    /// Like [`Simulator::fire`], with the firings no tracer saw and the time they took.
    pub async fn fire_timed(mut self) -> Firing {
        let mut stdin = self.stdin.take().expect("fire once");
        stdin.write_all(b"go\n").await.expect("start simulator");
        drop(stdin);
        let out = tokio::time::timeout(WAIT * 4, self.child.wait_with_output())
            .await
            .expect("simulator finished in time")
            .expect("simulator output");
        assert!(out.status.success(), "simulator failed: {:?}", out.status);
        let (mut fire_ns, mut untraced) = (0, 0);
        let fired = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| {
                let (name, rest) = line.split_once(' ').expect("`<tracepoint> fired=N untraced=N fire_ns=N`");
                let field = |key: &str| -> u64 {
                    rest.split(' ')
                        .find_map(|kv| kv.strip_prefix(key))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("{key}N in {line}"))
                };
                fire_ns = field("fire_ns=");
                untraced += field("untraced=");
                (Tracepoint::from_full_name(name).expect("known tracepoint"), field("fired="))
            })
            .collect();
        Firing { fired, untraced, fire_ns }
    }
}

/// How the pipeline's publisher gets its socket.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// It binds `--socket` itself.
    Direct,
    /// `systemd-socket-activate --seqpacket` listens and starts it on the first connection,
    /// passing the socket as systemd does (`LISTEN_FDS`); `start_with` also waits for the
    /// publisher's `READY=1`.
    SocketActivated,
}

/// A datagram socket receiving sd_notify messages, writable by the loader's user.
pub fn notify_socket(path: &Path) -> std::os::unix::net::UnixDatagram {
    let notify = std::os::unix::net::UnixDatagram::bind(path).expect("bind notify socket");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).expect("chmod notify socket");
    notify.set_nonblocking(true).expect("nonblocking");
    notify
}

/// Starts `cmd` (killed when dropped) with a notify socket of its own in `dir` as
/// `NOTIFY_SOCKET`, and waits for its `READY=1`: how the tests start every binary that reports
/// readiness.
pub async fn spawn_ready(cmd: &mut Command, dir: &Path, what: &str) -> Child {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let notify_path = dir.join(format!("notify-{}.sock", NEXT.fetch_add(1, Ordering::Relaxed)));
    let notify = notify_socket(&notify_path);
    let mut child = cmd
        .env("NOTIFY_SOCKET", &notify_path)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    wait_ready(&notify, &mut child, what).await;
    child
}

/// Waits for `READY=1` on `notify`, failing early if `child` exits.
pub async fn wait_ready(notify: &std::os::unix::net::UnixDatagram, child: &mut Child, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = [0u8; 64];
    loop {
        if let Ok(n) = notify.recv(&mut buf) {
            if buf[..n].split(|b| *b == b'\n').any(|line| line == b"READY=1") {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let stderr = read_stderr(child).await;
            panic!("{what} exited before it was ready ({status}): {stderr}");
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Further flags for each piece [`Pipeline::start_configured`] starts.
#[derive(Clone, Copy, Default)]
pub struct PipelineFlags<'a> {
    /// See [`Simulator::start_with`].
    pub simulator: &'a [&'a str],
    pub loader: &'a [&'a str],
    pub publisher: &'a [&'a str],
    /// The publisher's NATS address, where it is not the subscriber's (a proxy in between).
    pub publisher_nats: Option<&'a str>,
}

/// A loader attached to a simulator, publisher and subscriber around it.
pub struct Pipeline {
    pub dir: TempDir,
    pub publisher: Child,
    pub loader: Child,
    pub simulator: Simulator,
    pub subscriber: async_nats::Subscriber,
}

impl Pipeline {
    /// Starts everything and returns once the loader reports its probes attached.
    pub async fn start(
        nats: &NatsServer,
        sim_tracepoints: &str,
        count: u64,
        seed: u64,
        loader_flags: &[&str],
    ) -> Pipeline {
        Self::start_with(Launch::Direct, nats, sim_tracepoints, count, seed, &[], loader_flags).await
    }

    /// `sim_flags` are further simulator flags (see [`Simulator::start_with`]).
    pub async fn start_with(
        launch: Launch,
        nats: &NatsServer,
        sim_tracepoints: &str,
        count: u64,
        seed: u64,
        sim_flags: &[&str],
        loader_flags: &[&str],
    ) -> Pipeline {
        let flags = PipelineFlags { simulator: sim_flags, loader: loader_flags, ..Default::default() };
        Self::start_configured(launch, &nats.address, sim_tracepoints, count, seed, flags).await
    }

    /// Against the NATS server at `nats_address`, each piece with its further `flags`.
    pub async fn start_configured(
        launch: Launch,
        nats_address: &str,
        sim_tracepoints: &str,
        count: u64,
        seed: u64,
        flags: PipelineFlags<'_>,
    ) -> Pipeline {
        let dir = TempDir::new("pipeline");
        let socket = dir.path().join("publisher.sock");
        let client = async_nats::connect(nats_address).await.expect("connect subscriber");
        let subscriber = subscribe_in_place(&client, "*").await;
        let loader_uid = LOADER_UID.to_string();
        let publisher_nats = flags.publisher_nats.unwrap_or(nats_address);
        let publisher_notify = (launch == Launch::SocketActivated).then(|| {
            let path = dir.path().join("publisher-notify.sock");
            (notify_socket(&path), path)
        });
        let mut publisher = match &publisher_notify {
            None => {
                start_publisher(publisher_nats, &socket, &[&["--loader-uid", &loader_uid], flags.publisher].concat())
                    .await
            }
            Some((_, notify)) => {
                // By name, as the systemd unit passes it.
                let loader_uid = "nobody";
                let child = Command::new("systemd-socket-activate")
                    .arg("--seqpacket")
                    .arg("--listen")
                    .arg(&socket)
                    .arg(format!("--setenv=NOTIFY_SOCKET={}", notify.display()))
                    .arg(&bins().publisher)
                    .args(["--nats-address", publisher_nats, "--loader-uid", loader_uid])
                    .args(flags.publisher)
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("start systemd-socket-activate (package systemd)");
                wait_for(|| socket.exists().then_some(())).await.expect("activation socket did not appear");
                // What the .socket unit's SocketUser=/SocketMode= do.
                std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod socket");
                child
            }
        };
        let simulator = Simulator::start_with(sim_tracepoints, count, seed, flags.simulator);

        let loader = start_loader(dir.path(), &socket, simulator.pid(), flags.loader).await;
        // A socket-activated publisher starts on the loader's connection, then reports ready.
        if let Some((publisher_notify, _)) = &publisher_notify {
            wait_ready(publisher_notify, &mut publisher, "socket-activated publisher").await;
        }
        Pipeline { dir, publisher, loader, simulator, subscriber }
    }
}

/// Starts `ebpf-loader` as the loader's user, tracing the simulator `pid` and forwarding to
/// `socket`, and returns once it reports its probes attached.
pub async fn start_loader(dir: &Path, socket: &Path, pid: u32, flags: &[&str]) -> Child {
    start_loader_via(as_loader_user(), &bins().simulator, dir, socket, pid, flags).await
}

/// [`start_loader`] with `binary` as `--bitcoind-path`, the loader and its arguments appended
/// to `launch`: [`as_loader_user`], or a command that prepares something first and ends in it.
pub async fn start_loader_via(
    mut launch: Command,
    binary: &Path,
    dir: &Path,
    socket: &Path,
    pid: u32,
    flags: &[&str],
) -> Child {
    launch
        .arg(&bins().loader)
        .arg("--bitcoind-path")
        .arg(binary)
        .arg("--bitcoind-pid")
        .arg(pid.to_string())
        .arg("--socket")
        .arg(socket)
        .args(flags)
        .stderr(Stdio::piped());
    spawn_ready(&mut launch, dir, "loader").await
}

pub async fn read_stderr(child: &mut Child) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(5), stderr.read_to_string(&mut out)).await;
    }
    out
}

/// The counts of the publisher's closing `stopped: ...` line in its log.
pub fn closing_line(log: &str) -> &str {
    log.lines()
        .find_map(|line| line.split_once("stopped: ").map(|(_, counts)| counts))
        .unwrap_or_else(|| panic!("no `stopped:` line in {log}"))
}

/// The `name=N` counts of the publisher's closing `stopped: ...` line in its log.
pub fn closing_counts(log: &str) -> BTreeMap<String, u64> {
    counts(closing_line(log))
}

/// The `name=N` counts of a line such as [`closing_line`]'s.
pub fn counts(line: &str) -> BTreeMap<String, u64> {
    line.split_whitespace()
        .filter_map(|kv| kv.rsplit_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or_else(|_| panic!("a count in {k}={v}"))))
        .collect()
}

/// Stops a publisher with SIGINT, asserts that it exits cleanly, and returns its log.
pub async fn stopped_log(publisher: &mut Child) -> String {
    signal(publisher.id().expect("publisher running"), "INT");
    let status = publisher.wait().await.expect("publisher exits");
    assert!(status.success(), "publisher stops cleanly on SIGINT: {status}");
    read_stderr(publisher).await
}

/// The eBPF extractor's member of a peer-observer event.
pub fn ebpf_of(event: Event) -> publisher::proto::ebpf_extractor::Ebpf {
    use publisher::proto::event::event::PeerObserverEvent;
    match event.peer_observer_event {
        Some(PeerObserverEvent::EbpfExtractor(ebpf)) => ebpf,
        None => panic!("an event.Event without the eBPF extractor's member"),
    }
}

/// A loopback address with a free TCP port (bound, then released for a child to take).
pub fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").to_string()
}

/// The counter families (`peer_observer_ebpf_<family>`) of events lost in or before the
/// publisher: with `published_total`, they account for every event fired.
pub const LOSS_FAMILIES: [&str; 7] = [
    "dropped_before_publisher_total",
    "invalid_records_total",
    "publish_failed_total",
    "nats_unavailable_total",
    "over_max_payload_total",
    "fragment_lost_total",
    "jetstream_gave_up_total",
];

/// `peer_observer_ebpf_<family>{tracepoint="..."...} N` summed per tracepoint.
pub fn per_tracepoint(metrics: &str, family: &str) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    let prefix = format!("peer_observer_ebpf_{family}{{tracepoint=\"");
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else { continue };
        let (tp, rest) = rest.split_once('"').expect("closing quote");
        let value: u64 = rest.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a value");
        // Every series is served from the start, at 0 (publisher/src/metrics.rs): only counts are sums.
        if value > 0 {
            *sums.entry(tp.to_string()).or_default() += value;
        }
    }
    sums
}

/// The children of process `parent`, by command name.
pub fn children(parent: u32) -> BTreeMap<String, u32> {
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

/// The publisher's counters, from its metrics endpoint at `address`.
pub fn scrape_metrics(address: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(address).expect("connect to the metrics endpoint");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send request");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("read response");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    response
}

/// The value of `peer_observer_ebpf_nats_connected`, once it is `want` (within 20 s).
pub async fn gauge_becomes(metrics: &str, want: u8) {
    let line = format!("peer_observer_ebpf_nats_connected {want}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape_metrics(metrics);
        if text.lines().any(|l| l == line) {
            assert!(text.contains("# TYPE peer_observer_ebpf_nats_connected gauge"), "{text}");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{line:?} not in\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends signal `name` (`TERM`, `INT`, `STOP`, ...) to `pid` with kill(1); whether it was sent.
pub fn signal(pid: u32, name: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success()
}

/// Sends SIGTERM and returns the exit status and how long the process took to exit.
pub async fn terminate(child: &mut Child) -> (std::process::ExitStatus, Duration) {
    let pid = child.id().expect("running");
    let sent = std::time::Instant::now();
    signal(pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("exits").expect("status");
    (status, sent.elapsed())
}

/// Stops each child with SIGINT and returns their standard error, for a failure message.
pub async fn stop_and_read_logs(children: &mut [&mut Child]) -> String {
    let mut logs = String::new();
    for child in children.iter_mut() {
        if let Some(pid) = child.id() {
            signal(pid, "INT");
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        logs.push_str(&read_stderr(child).await);
    }
    logs
}

/// Receives events until `total` arrived, then waits briefly for any extra.
pub async fn receive(subscriber: &mut async_nats::Subscriber, total: usize) -> Vec<(String, Event)> {
    use futures_util::StreamExt;
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while events.len() < total {
        match tokio::time::timeout_at(deadline, subscriber.next()).await {
            Ok(Some(msg)) => {
                events.push((msg.subject.to_string(), Event::decode(msg.payload).expect("payload is an event.Event")))
            }
            _ => break,
        }
    }
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), subscriber.next()).await {
        events.push((msg.subject.to_string(), Event::decode(msg.payload).expect("payload is an event.Event")));
    }
    events
}

/// The fields of `/proc/<pid>/status`, by name (without the colon), values trimmed.
pub fn proc_status(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Wall-clock milliseconds now, for bounding the envelope times of events.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

/// Asserts that `events` are exactly the firings `rounds` of each tracepoint in `tracepoints`
/// with `seed`, every field, each tracepoint's in firing order, on the right subject, and that
/// each envelope's time lies in `window` (wall-clock milliseconds around the firing).
pub fn assert_fired_exactly(
    events: &[(String, Event)],
    tracepoints: &[Tracepoint],
    seed: u64,
    rounds: std::ops::Range<u64>,
    window: std::ops::RangeInclusive<u64>,
) {
    let mut got = BTreeMap::<Tracepoint, Vec<_>>::new();
    for (subject, event) in events {
        assert!(window.contains(&event.timestamp), "envelope time {} outside {window:?}", event.timestamp);
        got.entry(expect::tracepoint_of(event)).or_default().push((subject.clone(), ebpf_of(event.clone())));
    }
    let want: BTreeMap<Tracepoint, Vec<_>> = tracepoints
        .iter()
        .map(|tp| {
            (
                *tp,
                rounds
                    .clone()
                    .map(|seq| expect::event(*tp, seed, seq))
                    .map(|(subject, e)| (subject.to_string(), e))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(got, want);
}

/// Sends `data` on `socket` with copies of `fds` attached (`SCM_RIGHTS`), as a hostile peer on
/// the loader's socket may.
pub fn send_with_descriptors(
    socket: impl std::os::fd::AsFd,
    data: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> std::io::Result<usize> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)), "room for {} descriptors", fds.len());
    Ok(sendmsg(socket, &[std::io::IoSlice::new(data)], &mut control, SendFlags::empty())?)
}

/// A descriptor for a test to pass to a process, and the means to tell whether any process
/// still holds a copy: `passed` is one end of a socket pair, whose other end reads end of
/// file once every copy of `passed` is closed.
pub struct PassedDescriptor {
    pub passed: std::os::unix::net::UnixStream,
    kept: std::os::unix::net::UnixStream,
}

impl PassedDescriptor {
    pub fn new() -> PassedDescriptor {
        let (passed, kept) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        PassedDescriptor { passed, kept }
    }

    /// Closes the test's own copy; true if every other copy is closed within `within`: none was
    /// installed in a receiver, or the receiver closed it.
    pub fn closed_everywhere(self, within: Duration) -> bool {
        use std::io::Read;
        let PassedDescriptor { passed, mut kept } = self;
        drop(passed);
        kept.set_read_timeout(Some(within)).expect("a read timeout");
        matches!(kept.read(&mut [0]), Ok(0))
    }
}

impl Default for PassedDescriptor {
    fn default() -> Self {
        Self::new()
    }
}
