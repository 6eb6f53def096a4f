//! `ebpf-extractor`: the seed's command line, run privilege-separated. Started as root, it
//! starts `ebpf-publisher` as an unprivileged user with no capabilities, then `ebpf-loader` as
//! another user holding only CAP_BPF and CAP_PERFMON, and stops both when either exits or on
//! SIGINT/SIGTERM. It parses no event data itself.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rustix::process::{Gid, Uid};
use rustix::thread::{self as thread, CapabilitySet, CapabilitySets};

/// The peer-observer extractor hooks into a Bitcoin Core binary with tracepoints and publishes
/// events into a NATS pub-sub queue
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Address of the NATS server where the extractor will publish messages to
    #[arg(short = 'n', long, default_value = "127.0.0.1:4222")]
    nats_address: String,
    /// Path to the Bitcoin Core (bitcoind) binary that should be hooked into
    #[arg(short = 'b', long)]
    bitcoind_path: PathBuf,
    /// PID (Process ID) of the Bitcoin Core (bitcoind) binary that should be hooked into. Either this or --bitcoind-pid-file must be set
    #[arg(long, required_unless_present = "bitcoind_pid_file", conflicts_with = "bitcoind_pid_file")]
    bitcoind_pid: Option<i32>,
    /// File containing the PID (Process ID) of the Bitcoin Core (bitcoind) binary that should be hooked into. Either this or --bitcoind-pid must be set
    #[arg(long)]
    bitcoind_pid_file: Option<PathBuf>,
    /// Controls if the p2p message tracepoints should be hooked into
    #[arg(long)]
    no_p2pmsg_tracepoints: bool,
    /// Controls if the connection tracepoints should be hooked into
    #[arg(long)]
    no_connection_tracepoints: bool,
    /// Controls if the mempool tracepoints should be hooked into
    #[arg(long)]
    no_mempool_tracepoints: bool,
    /// Controls if the validation tracepoints should be hooked into
    #[arg(long)]
    no_validation_tracepoints: bool,
    /// Controls if the addrman tracepoints should be hooked into. These may not have been PRed to Bitcoin Core yet
    #[arg(long)]
    addrman_tracepoints: bool,
    /// The log level the extractor should run with. Valid log levels are "trace", "debug", "info", "warn", "error"
    #[arg(short = 'l', long, default_value = "DEBUG")]
    log_level: String,
    /// If used, libbpf will print debug information about the BPF maps, programs, and tracepoints during extractor startup
    #[arg(long)]
    libbpf_debug: bool,
    /// The extractor will exit if it doesn't detect activity in the ebpf buffers for 180 seconds. This flag disables this and only emits warnings about inactivity
    #[arg(short = 'i', long)]
    no_idle_exit: bool,
    /// User (name or uid) the publisher runs as, without any capability
    #[arg(long, default_value = "nobody")]
    publisher_user: String,
    /// User (name or uid) the loader runs as, with CAP_BPF and CAP_PERFMON only; must differ from the publisher's
    #[arg(long, default_value = "peer-observer-ebpf-loader")]
    loader_user: String,
}

#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error("ebpf-extractor starts each half under its own user, so it must run as root (or start ebpf-publisher and ebpf-loader yourself, see README)")]
    NotRoot,
    #[error("unknown user {0:?}: create it (see README) or pass another with --publisher-user/--loader-user")]
    UnknownUser(String),
    #[error("--loader-user and --publisher-user must differ: the publisher admits only the loader's uid")]
    SameUser,
    #[error("cannot read /etc/passwd: {0}")]
    Passwd(io::Error),
    #[error("cannot prepare {path}: {source}")]
    RuntimeDir { path: PathBuf, source: io::Error },
    #[error("cannot start {what}: {source}")]
    Spawn { what: &'static str, source: io::Error },
    #[error("{what} exited before it was ready ({status})")]
    NotReady { what: &'static str, status: std::process::ExitStatus },
    #[error("{0} did not become ready within 60 s")]
    Timeout(&'static str),
}

/// A user from /etc/passwd (system users live there): uid and primary gid.
fn user(spec: &str) -> Result<(Uid, Gid), LaunchError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(LaunchError::Passwd)?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && (f[0] == spec || f[2] == spec) {
            if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                return Ok((Uid::from_raw(uid), Gid::from_raw(gid)));
            }
        }
    }
    match spec.parse() {
        // A bare uid without an entry gets a group of the same number.
        Ok(id) => Ok((Uid::from_raw(id), Gid::from_raw(id))),
        Err(_) => Err(LaunchError::UnknownUser(spec.to_string())),
    }
}

/// Runs in the child between fork and exec: become `uid`/`gid` with no supplementary groups,
/// keeping only `keep` capabilities (bounding, permitted, effective, inheritable, ambient),
/// and set no_new_privs. Only raw syscalls: nothing here may allocate.
fn become_user(uid: Uid, gid: Gid, keep: CapabilitySet) -> io::Result<()> {
    for cap in CapabilitySet::all().iter() {
        if !keep.contains(cap) {
            // Capabilities this kernel does not know fail with EINVAL: nothing to drop.
            match thread::remove_capability_from_bounding_set(cap) {
                Ok(()) | Err(rustix::io::Errno::INVAL) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    thread::set_keep_capabilities(true)?;
    thread::set_thread_groups(&[])?;
    thread::set_thread_res_gid(gid, gid, gid)?;
    thread::set_thread_res_uid(uid, uid, uid)?;
    thread::set_capabilities(None, CapabilitySets { effective: keep, permitted: keep, inheritable: keep })?;
    for cap in keep.iter() {
        thread::configure_capability_in_ambient_set(cap, true)?;
    }
    thread::set_keep_capabilities(false)?;
    thread::set_no_new_privs(true)?;
    Ok(())
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn wait_ready(notify: &UnixDatagram, child: &mut Child, what: &'static str) -> Result<(), LaunchError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 256];
    loop {
        if let Ok(n) = notify.recv(&mut buf) {
            if buf[..n].split(|b| *b == b'\n').any(|line| line == b"READY=1") {
                return Ok(());
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LaunchError::NotReady { what, status });
        }
        if Instant::now() > deadline {
            return Err(LaunchError::Timeout(what));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct RuntimeDir(PathBuf);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Holds the publisher's socket: owned by the publisher's user, which creates the socket.
fn runtime_dir(owner: (Uid, Gid)) -> Result<RuntimeDir, LaunchError> {
    let path = std::env::temp_dir().join(format!("ebpf-extractor-{}", std::process::id()));
    let err = |source| LaunchError::RuntimeDir { path: path.clone(), source };
    std::fs::create_dir(&path).map_err(err)?;
    let dir = RuntimeDir(path.clone());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    rustix::fs::chown(&path, Some(owner.0), Some(owner.1)).map_err(|e| err(e.into()))?;
    Ok(dir)
}

fn notify_socket(dir: &Path, name: &str) -> Result<(UnixDatagram, PathBuf), LaunchError> {
    let path = dir.join(name);
    let err = |source| LaunchError::RuntimeDir { path: path.clone(), source };
    let sock = UnixDatagram::bind(&path).map_err(err)?;
    // The children run as other users; only READY=1 is read from it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    Ok((sock, path))
}

fn spawn(cmd: &mut Command, user: (Uid, Gid), keep: CapabilitySet, notify: &Path, what: &'static str) -> Result<Child, LaunchError> {
    cmd.env("NOTIFY_SOCKET", notify);
    // SAFETY: `become_user` makes only async-signal-safe raw syscalls.
    unsafe { cmd.pre_exec(move || become_user(user.0, user.1, keep)) };
    cmd.spawn().map_err(|source| LaunchError::Spawn { what, source })
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

fn run(cli: &Cli, stop: &AtomicBool) -> Result<ExitCode, LaunchError> {
    if !rustix::process::geteuid().is_root() {
        return Err(LaunchError::NotRoot);
    }
    let publisher_user = user(&cli.publisher_user)?;
    let loader_user = user(&cli.loader_user)?;
    if publisher_user.0 == loader_user.0 {
        return Err(LaunchError::SameUser);
    }
    let dir = runtime_dir(publisher_user)?;
    let socket = dir.0.join("publisher.sock");
    let log_level = cli.log_level.to_lowercase();

    let (publisher_notify, publisher_notify_path) = notify_socket(&dir.0, "publisher-notify.sock")?;
    let mut publisher = spawn(
        Command::new(sibling("ebpf-publisher"))
            .args(["--nats-address", &cli.nats_address, "--socket-mode", "666", "--log-level", &log_level])
            .arg("--socket")
            .arg(&socket)
            .arg("--loader-uid")
            .arg(loader_user.0.as_raw().to_string()),
        publisher_user,
        CapabilitySet::empty(),
        &publisher_notify_path,
        "ebpf-publisher",
    )?;
    wait_ready(&publisher_notify, &mut publisher, "ebpf-publisher")?;

    let loader_notify = notify_socket(&dir.0, "loader-notify.sock")?;
    let start_loader = || -> Result<Child, LaunchError> {
        let mut loader = spawn(&mut loader_command(cli, &socket, &log_level), loader_user, CapabilitySet::BPF | CapabilitySet::PERFMON, &loader_notify.1, "ebpf-loader")?;
        wait_ready(&loader_notify.0, &mut loader, "ebpf-loader").map(|()| loader)
    };
    // However supervision ends, the publisher stops last: it flushes to NATS what the loader
    // handed on.
    let result = supervise(cli, stop, &mut publisher, start_loader);
    signal(&publisher, rustix::process::Signal::TERM);
    let _ = publisher.wait();
    result
}

/// Starts the loader, again for each restarted bitcoind, until a child exits or we are asked
/// to stop; then stops the loader, which hands on what the rings hold.
fn supervise(
    cli: &Cli,
    stop: &AtomicBool,
    publisher: &mut Child,
    start_loader: impl Fn() -> Result<Child, LaunchError>,
) -> Result<ExitCode, LaunchError> {
    // The pid a restarted bitcoind must not have: the one the running loader traces.
    let mut traced = cli.bitcoind_pid_file.as_deref().and_then(read_pid);
    let mut loader = start_loader()?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let code = loop {
        if stop.load(Ordering::Relaxed) {
            break ExitCode::SUCCESS;
        }
        if let Ok(Some(status)) = loader.try_wait() {
            let Some(file) = cli.bitcoind_pid_file.as_deref().filter(|_| status.code() == Some(LOADER_BITCOIND_EXITED)) else {
                eprintln!("ebpf-extractor: ebpf-loader exited ({status})");
                if status.code() == Some(LOADER_BITCOIND_EXITED) {
                    eprintln!("ebpf-extractor: bitcoind exited: to follow its restarts, pass --bitcoind-pid-file instead of --bitcoind-pid");
                }
                break ExitCode::FAILURE;
            };
            eprintln!("ebpf-extractor: bitcoind exited: waiting for {} to name its successor", file.display());
            match wait_for_successor(file, traced, stop, cli.no_idle_exit) {
                Successor::Found(pid) => {
                    traced = Some(pid);
                    loader = start_loader()?;
                    eprintln!("ebpf-extractor: following the restarted bitcoind (pid {pid})");
                    continue;
                }
                Successor::Stopped => break ExitCode::SUCCESS,
                Successor::GaveUp(secs) => {
                    eprintln!(
                        "ebpf-extractor: error: no bitcoind for {secs} s ({} names no running process): exiting; --no-idle-exit waits without limit",
                        file.display()
                    );
                    break ExitCode::FAILURE;
                }
            }
        }
        if let Ok(Some(status)) = publisher.try_wait() {
            eprintln!("ebpf-extractor: ebpf-publisher exited ({status})");
            break ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    signal(&loader, rustix::process::Signal::TERM);
    let _ = loader.wait();
    Ok(code)
}

fn loader_command(cli: &Cli, socket: &Path, log_level: &str) -> Command {
    let mut cmd = Command::new(sibling("ebpf-loader"));
    cmd.arg("--bitcoind-path").arg(&cli.bitcoind_path).arg("--socket").arg(socket);
    cmd.args(["--log-level", log_level]);
    match (&cli.bitcoind_pid, &cli.bitcoind_pid_file) {
        (Some(pid), _) => cmd.args(["--bitcoind-pid", &pid.to_string()]),
        (None, Some(file)) => cmd.arg("--bitcoind-pid-file").arg(file),
        (None, None) => unreachable!("clap requires one of them"),
    };
    for (on, flag) in [
        (cli.no_p2pmsg_tracepoints, "--no-p2pmsg-tracepoints"),
        (cli.no_connection_tracepoints, "--no-connection-tracepoints"),
        (cli.no_mempool_tracepoints, "--no-mempool-tracepoints"),
        (cli.no_validation_tracepoints, "--no-validation-tracepoints"),
        (cli.addrman_tracepoints, "--addrman-tracepoints"),
        (cli.libbpf_debug, "--libbpf-debug"),
        (cli.no_idle_exit, "--no-idle-exit"),
    ] {
        if on {
            cmd.arg(flag);
        }
    }
    cmd
}

/// ebpf-loader's exit status when the bitcoind it traced exited (its `EXIT_BITCOIND_EXITED`).
const LOADER_BITCOIND_EXITED: i32 = 3;
/// The seed's inactivity rule, applied while no bitcoind runs: warn every minute, give up
/// after three unless --no-idle-exit.
const IDLE_WARN: Duration = Duration::from_secs(60);
const IDLE_EXIT: Duration = Duration::from_secs(180);

fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok().filter(|pid| *pid > 0)
}

enum Successor {
    Found(i32),
    Stopped,
    GaveUp(u64),
}

/// Waits until the pid file names a running process other than `previous`: bitcoind removes
/// its pid file when it stops and writes a new one when it starts again.
fn wait_for_successor(file: &Path, previous: Option<i32>, stop: &AtomicBool, no_idle_exit: bool) -> Successor {
    let since = Instant::now();
    let mut next_warning = IDLE_WARN;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Successor::Stopped;
        }
        let running = |pid: &i32| Some(*pid) != previous && Path::new(&format!("/proc/{pid}")).exists();
        if let Some(pid) = read_pid(file).filter(running) {
            return Successor::Found(pid);
        }
        let waited = since.elapsed();
        if waited >= next_warning {
            if !no_idle_exit && waited >= IDLE_EXIT {
                return Successor::GaveUp(waited.as_secs());
            }
            eprintln!("ebpf-extractor: no bitcoind for {} s: still waiting for {}", waited.as_secs(), file.display());
            next_warning += IDLE_WARN;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).expect("install signal handler");
    }
    match run(&cli, &stop) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ebpf-extractor: error: {e}");
            ExitCode::FAILURE
        }
    }
}
