//! Every fatal start-up error exits non-zero with one line that says what to fix.

use std::process::Stdio;
use std::time::Duration;

use e2e::{as_loader_user, bins, start_publisher, NatsServer, Simulator, TempDir};
use tokio::process::Command;

/// Runs `cmd`, expects failure, returns its single error line.
async fn fails(cmd: &mut Command) -> String {
    fails_reading(cmd, Stdio::null()).await
}

/// Like [`fails`], with `stdin` as standard input.
async fn fails_reading(cmd: &mut Command, stdin: Stdio) -> String {
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.stdin(stdin).output())
        .await
        .expect("exits in time")
        .expect("runs");
    assert!(!out.status.success(), "must fail: {out:?}");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line in {stderr:?}");
    errors[0].to_string()
}

fn loader(args: &[&str]) -> Command {
    let mut cmd = as_loader_user();
    cmd.arg(&bins().loader).args(args);
    cmd
}

const OWN: &str = "1"; // init: always running

#[tokio::test]
async fn missing_bitcoind_binary() {
    let line =
        fails(&mut loader(&["-b", "/nonexistent/bitcoind", "--bitcoind-pid", OWN, "-s", "/nonexistent.sock"])).await;
    assert!(line.contains("bitcoind binary /nonexistent/bitcoind does not exist"), "{line}");
}

/// A FIFO in the binary's place (its directory may be the node user's) would block a loader
/// that opened it blindly, before it could heed SIGTERM.
#[tokio::test]
async fn a_binary_that_is_a_fifo() {
    let dir = TempDir::new("fifo-binary");
    let fifo = dir.path().join("bitcoind");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o666), 0)
        .unwrap();
    let line = fails(&mut loader(&["-b", fifo.to_str().unwrap(), "--bitcoind-pid", OWN, "-s", "/x.sock"])).await;
    assert!(line.contains(&format!("bitcoind binary {} is not a regular file", fifo.display())), "{line}");
}

#[tokio::test]
async fn pid_not_running() {
    let sim = bins().simulator.to_str().unwrap();
    // Above the kernel's largest pid_max, so never a live process.
    let line = fails(&mut loader(&["-b", sim, "--bitcoind-pid", "4194305", "-s", "/nonexistent.sock"])).await;
    assert!(line.contains("no process with pid 4194305 is running"), "{line}");
}

/// The node's own pid file, where bitcoind leaves it (0600 in a 0700 directory): the loader's
/// user cannot read it, and the error says how to hand it over.
#[tokio::test]
async fn pid_file_private_to_the_node() {
    let sim = Simulator::start("default", 1, 0);
    let pid_file = sim.node.pid_file();
    let line =
        fails(&mut loader(&["-b", sim_path(), "--bitcoind-pid-file", pid_file.to_str().unwrap(), "-s", "/x.sock"]))
            .await;
    assert!(line.contains(&format!("cannot read pid file {}: Permission denied", pid_file.display())), "{line}");
    assert!(
        line.contains("StandardInput=file:<pid file> with --bitcoind-pid-file -") && line.contains("ebpf-extractor"),
        "{line}"
    );
}

#[tokio::test]
async fn pid_file_missing_garbage_a_symlink_or_a_fifo() {
    let dir = TempDir::new("pidfile");
    let missing = dir.path().join("missing.pid");
    let line =
        fails(&mut loader(&["-b", sim_path(), "--bitcoind-pid-file", missing.to_str().unwrap(), "-s", "/x.sock"]))
            .await;
    assert!(line.contains("cannot read pid file") && line.contains("No such file") && line.contains("-pid="), "{line}");

    // On standard input, opened by root as systemd's StandardInput=file: opens it.
    let garbage = dir.path().join("garbage.pid");
    std::fs::write(&garbage, "not a pid\n").unwrap();
    std::fs::set_permissions(&garbage, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let stdin = std::fs::File::open(&garbage).unwrap();
    let line =
        fails_reading(&mut loader(&["-b", sim_path(), "--bitcoind-pid-file", "-", "-s", "/x.sock"]), stdin.into())
            .await;
    assert!(line.contains("pid file - does not hold a process id (10 bytes)"), "{line}");
    assert!(!line.contains("not a pid"), "the content is not echoed: {line}");

    let link = dir.path().join("link.pid");
    std::os::unix::fs::symlink(&garbage, &link).unwrap();
    let line =
        fails(&mut loader(&["-b", sim_path(), "--bitcoind-pid-file", link.to_str().unwrap(), "-s", "/x.sock"])).await;
    assert!(line.contains(&format!("pid file {} is not a regular file", link.display())), "{line}");

    // A FIFO with no writer would block a reader that opened it blindly.
    let fifo = dir.path().join("fifo.pid");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o666), 0)
        .unwrap();
    let line =
        fails(&mut loader(&["-b", sim_path(), "--bitcoind-pid-file", fifo.to_str().unwrap(), "-s", "/x.sock"])).await;
    assert!(line.contains(&format!("pid file {} is not a regular file", fifo.display())), "{line}");
}

/// A pid file a crash left behind, whose pid now names another process (after a reboot):
/// one of another user is refused, where attaching would follow a process that never fires a
/// tracepoint, and never the next bitcoind. One its owner started after the file was written
/// is named in a warning: the file's time and the process's start are read on a wall clock
/// that may have been stepped in between. Handed over as systemd's `StandardInput=file:` does.
#[tokio::test]
async fn a_stale_pid_file_whose_pid_names_another_process() {
    let dir = TempDir::new("stale");
    let stale = |pid: u32, written: std::time::SystemTime| {
        let path = dir.path().join(format!("{pid}.pid"));
        std::fs::write(&path, format!("{pid}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        e2e::chown(&path, e2e::BITCOIND_UID);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(written).unwrap();
        std::fs::File::open(&path).unwrap()
    };
    let args = ["-b", sim_path(), "--bitcoind-pid-file", "-", "-s", "/x.sock"];

    // The pid runs as root, not as the node's user who owns the file.
    let mut roots = Command::new("sleep").arg("30").kill_on_drop(true).spawn().unwrap();
    let pid = roots.id().unwrap();
    let line = fails_reading(&mut loader(&args), stale(pid, std::time::SystemTime::now()).into()).await;
    let owner = e2e::BITCOIND_UID;
    assert!(
        line.contains(&format!("pid file - is stale: it names pid {pid}, which uid 0 runs, not its owner uid {owner}")),
        "{line}"
    );
    roots.kill().await.unwrap();

    // The node's user runs the pid, but started it an hour after the file was last written.
    let uid = e2e::BITCOIND_UID.to_string();
    let mut nodes = Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "sleep", "30"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = nodes.id().unwrap();
    // Once it runs `sleep`, setpriv has switched users.
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    e2e::until(Duration::from_secs(10), || comm().trim() == "sleep", || format!("pid {pid} runs {}", comm())).await;
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let out = loader(&args).stdin(stale(pid, an_hour_ago)).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the pid file was last written before this pid started"), "{stderr}");
    assert!(!stderr.contains("is stale"), "{stderr}");
    nodes.kill().await.unwrap();
}

fn sim_path() -> &'static str {
    bins().simulator.to_str().expect("UTF-8 path")
}

#[tokio::test]
async fn publisher_socket_absent() {
    let dir = TempDir::new("nosocket");
    let sock = dir.path().join("absent.sock");
    let sim = bins().simulator.to_str().unwrap();
    let line = fails(&mut loader(&["-b", sim, "--bitcoind-pid", OWN, "-s", sock.to_str().unwrap()])).await;
    assert!(
        line.contains("cannot connect to the publisher socket") && line.contains("is ebpf-publisher running"),
        "{line}"
    );
}

#[tokio::test]
async fn binary_without_tracepoints() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("notracepoints");
    let sock = dir.path().join("publisher.sock");
    let _publisher = start_publisher(&nats.address, &sock, &["--allow-any-uid"]).await;
    let sim = Simulator::start("default", 1, 0);
    let pid = sim.pid().to_string();
    let line = fails(&mut loader(&["-b", "/usr/bin/true", "--bitcoind-pid", &pid, "-s", sock.to_str().unwrap()])).await;
    assert!(
        line.contains("cannot attach to tracepoint net:inbound_message in \"/usr/bin/true\"")
            && line.contains("-DWITH_USDT=ON"),
        "{line}"
    );
}

#[tokio::test]
async fn nats_unreachable_at_start() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = TempDir::new("nonats");
    let address = format!("127.0.0.1:{port}");
    let line = fails(
        Command::new(&bins().publisher)
            .args(["--nats-address", &address, "--loader-uid", "65534", "--socket"])
            .arg(dir.path().join("publisher.sock")),
    )
    .await;
    assert!(line.contains(&format!("cannot connect to NATS at {address}")), "{line}");
}

/// Without --loader-uid anyone who may open the socket could inject events: the publisher
/// does not start unless told so with --allow-any-uid.
#[tokio::test]
async fn publisher_fails_closed_without_the_loaders_uid() {
    let dir = TempDir::new("anyuid");
    let out =
        Command::new(&bins().publisher).arg("--socket").arg(dir.path().join("publisher.sock")).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--loader-uid <LOADER_UID>"), "{stderr}");
    assert!(!dir.path().join("publisher.sock").exists(), "nothing was bound");
}

/// JetStream mode against a server without JetStream, and against a stream that exists
/// without this publisher's subjects: one line each, naming what to fix, and nothing bound.
#[tokio::test]
async fn jetstream_unavailable_or_a_stream_without_the_subjects() {
    let publisher = |address: &str, dir: &TempDir| {
        let mut cmd = Command::new(&bins().publisher);
        cmd.args(["--nats-address", address, "--loader-uid", "65534", "--nats-jetstream-stream", "EVENTS", "--socket"])
            .arg(dir.path().join("publisher.sock"));
        cmd
    };
    let plain = NatsServer::start().await;
    let dir = TempDir::new("nojetstream");
    let line = fails(&mut publisher(&plain.address, &dir)).await;
    assert!(
        line.contains("cannot create or open the JetStream stream EVENTS")
            && line.contains("does the NATS server run JetStream"),
        "{line}"
    );
    assert!(!dir.path().join("publisher.sock").exists(), "nothing was bound");

    let nats = NatsServer::with_jetstream().await;
    let client = async_nats::connect(&nats.address).await.expect("connect");
    let config = async_nats::jetstream::stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["netmsg".into(), "mempool".into()],
        ..Default::default()
    };
    async_nats::jetstream::new(client).create_stream(config).await.expect("create a stream of two subjects");
    let line = fails(&mut publisher(&nats.address, &dir)).await;
    assert!(
        line.contains("the JetStream stream EVENTS exists without the subjects")
            && line.contains("\"netconn\"")
            && line.contains("give another --nats-jetstream-stream"),
        "{line}"
    );
}
