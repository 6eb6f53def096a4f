//! `ebpf-extractor`: the seed's command line, run privilege-separated. Started as root, it
//! starts `ebpf-publisher` as an unprivileged user with no capabilities, then `ebpf-loader` as
//! another user holding only CAP_BPF and CAP_PERFMON, and stops both when either exits or on
//! SIGINT/SIGTERM. It parses no event data itself.

mod nats;
mod target;
mod users;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::parser::ValueSource;
use clap::{ArgGroup, ArgMatches, CommandFactory, FromArgMatches, Parser};
use rustix::thread::CapabilitySet;

use ipc_protocol::cli::{CategoryFlags, JetStreamFlags, NatsFlags, RingSizes};
use target::TargetError;
use users::{become_user, User};

/// The peer-observer extractor hooks into a Bitcoin Core binary with tracepoints and publishes
/// events into a NATS pub-sub queue
#[derive(Parser)]
#[command(name = "ebpf-extractor", version)]
#[command(mut_arg("password", |arg| arg.help("Password for --nats-username. A value given here shows in `ps`: use --nats-password-file or the environment variable instead. The publisher gets it as a file, never as a value")))]
#[command(mut_arg("password_file", |arg| arg.help("File holding the password for --nats-username (read by the launcher, as root; a trailing newline is ignored)")))]
#[command(group(ArgGroup::new("bitcoind_process").required(true).args(["bitcoind_pid", "bitcoind_pid_file"])))]
struct Cli {
    #[command(flatten)]
    nats: NatsFlags,
    #[command(flatten)]
    jetstream: JetStreamFlags,
    /// Have the publisher write each event to standard output as one line (json or readable)
    /// instead of publishing it: no NATS connection is made, and no NATS option but
    /// --nats-subject-prefix may be given. For checking what the loader sees
    #[arg(long, value_name = "FORMAT", value_parser = ["json", "readable"])]
    stdout: Option<String>,
    /// Path to the Bitcoin Core (bitcoind) binary that should be hooked into
    #[arg(short = 'b', long)]
    bitcoind_path: PathBuf,
    /// PID (Process ID) of the Bitcoin Core (bitcoind) binary that should be hooked into. Either this or --bitcoind-pid-file must be set
    #[arg(long)]
    bitcoind_pid: Option<i32>,
    /// File containing the PID (Process ID) of the Bitcoin Core (bitcoind) binary that should be hooked into. Either this or --bitcoind-pid must be set
    #[arg(long)]
    bitcoind_pid_file: Option<PathBuf>,
    /// The user bitcoind runs as (a uid, or a name in /etc/passwd): a pid another user runs,
    /// or a pid file another user owns, is refused
    #[arg(long, value_name = "USER", value_parser = parse_uid)]
    bitcoind_user: Option<u32>,
    #[command(flatten)]
    categories: CategoryFlags,
    #[command(flatten)]
    rings: RingSizes,
    /// The log level the extractor should run with. Valid log levels are "trace", "debug", "info", "warn", "error"
    #[arg(short = 'l', long, default_value = "DEBUG", ignore_case = true, value_parser = log_level_parser())]
    log_level: tracing::Level,
    /// If used, libbpf will print debug information about the BPF maps, programs, and tracepoints during extractor startup
    #[arg(long)]
    libbpf_debug: bool,
    /// The extractor will exit if it doesn't detect activity in the ebpf buffers for 180 seconds. This flag disables this and only emits warnings about inactivity
    #[arg(short = 'i', long)]
    no_idle_exit: bool,
    /// Have the publisher serve its counters for Prometheus on this address, e.g. 127.0.0.1:9842
    #[arg(long, value_name = "ADDRESS")]
    metrics_address: Option<std::net::SocketAddr>,
    /// User (name or uid) the publisher runs as, without any capability [default: a uid of its own, like systemd's DynamicUser=]
    #[arg(long)]
    publisher_user: Option<String>,
    /// User (name or uid) the loader runs as, with CAP_BPF and CAP_PERFMON only; must differ from the publisher's [default: a uid of its own]
    #[arg(long)]
    loader_user: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error("ebpf-extractor starts each half under its own user, so it must run as root (or start ebpf-publisher and ebpf-loader yourself, see README)")]
    NotRoot,
    #[error("unknown user {0:?}: create it, or leave out --publisher-user/--loader-user for a uid of its own")]
    UnknownUser(String),
    #[error("{0} must not be root: each half runs unprivileged")]
    RootChild(&'static str),
    #[error("{0} must not have root's group (gid 0) as its own: it would open root's group-readable files")]
    RootGroup(&'static str),
    #[error("no unused uid is left in systemd's range for dynamic users (61184-65519)")]
    NoFreeUid,
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Nats(#[from] nats::NatsFileError),
    #[error("--loader-user and --publisher-user must differ: the publisher admits only the loader's uid")]
    SameUser,
    #[error("cannot read /etc/passwd or /etc/group: {0}")]
    Passwd(io::Error),
    #[error("cannot prepare {path}: {source}")]
    RuntimeDir { path: PathBuf, source: io::Error },
    #[error("refusing to start {name}, which must sit beside ebpf-extractor: {reason}")]
    Sibling { name: &'static str, reason: String },
    #[error("cannot start {what}: {source}")]
    Spawn { what: &'static str, source: io::Error },
    #[error("{what} exited before it was ready ({status})")]
    NotReady { what: &'static str, status: std::process::ExitStatus },
    #[error("{0} did not become ready within 60 s")]
    Timeout(&'static str),
    #[error("no bitcoind for {secs} s ({} names no running process); --no-idle-exit waits without limit", file.display())]
    NoBitcoind { secs: u64, file: PathBuf },
}

/// `name` beside the launcher's own binary, never from `$PATH`: root runs it, so it and its
/// directory must be root's and writable by no one else.
fn sibling(name: &'static str) -> Result<PathBuf, LaunchError> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::env::current_exe().map_err(|source| LaunchError::Sibling { name, reason: source.to_string() })?;
    let dir = exe.parent().ok_or(LaunchError::Sibling { name, reason: "the launcher has no directory".into() })?;
    let path = dir.join(name);
    for checked in [dir, path.as_path()] {
        let meta = std::fs::metadata(checked)
            .map_err(|e| LaunchError::Sibling { name, reason: format!("{}: {e}", checked.display()) })?;
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            let reason = format!(
                "{} must be owned by root and writable by root only (uid {}, mode {:o})",
                checked.display(),
                meta.uid(),
                meta.mode() & 0o7777
            );
            return Err(LaunchError::Sibling { name, reason });
        }
    }
    Ok(path)
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

/// Holds the publisher's socket and both notify sockets, under root's
/// `/run/ebpf-extractor` (0711: no one else may list it) with an unpredictable name. It is the
/// publisher's (which creates its socket there) with the loader's group and setgid, mode 2710:
/// the socket, 0660, gets the loader's group, so only the loader may connect, and no one
/// else may even traverse the directory.
fn runtime_dir(publisher: &User, loader: &User) -> Result<RuntimeDir, LaunchError> {
    let mut name = [0u8; 8];
    let base = users::run_dir()?;
    let err = |path: &Path, source| LaunchError::RuntimeDir { path: path.to_owned(), source };
    rustix::rand::getrandom(&mut name, rustix::rand::GetRandomFlags::empty()).map_err(|e| err(base, e.into()))?;
    let path = base.join(name.iter().map(|b| format!("{b:02x}")).collect::<String>());
    std::fs::DirBuilder::new().mode(0o700).create(&path).map_err(|e| err(&path, e))?;
    let dir = RuntimeDir(path.clone());
    rustix::fs::chown(&path, Some(publisher.uid), Some(loader.gid)).map_err(|e| err(&path, e.into()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o2710)).map_err(|e| err(&path, e))?;
    Ok(dir)
}

/// A socket for `READY=1` from one child: its own, mode 0600.
fn notify_socket(dir: &Path, name: &str, child: &User) -> Result<(UnixDatagram, PathBuf), LaunchError> {
    let path = dir.join(name);
    let err = |source| LaunchError::RuntimeDir { path: path.clone(), source };
    let sock = UnixDatagram::bind(&path).map_err(err)?;
    rustix::fs::chown(&path, Some(child.uid), Some(child.gid)).map_err(|e| err(e.into()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    Ok((sock, path))
}

/// The only variables of the launcher's environment a child gets (root's environment may hold
/// secrets, and neither child reads configuration from it: SSL_CERT_FILE's bundle goes on as
/// a file, launcher/src/nats.rs).
const CHILD_ENV: [&str; 2] = ["TZ", "RUST_BACKTRACE"];

/// Starts `cmd` as `user` keeping only `keep`, in a session of its own (no controlling
/// terminal of root's, and no signal sent to the launcher's process group: the launcher stops
/// its children itself, in order), with standard input from /dev/null, cwd `/` and only
/// [`CHILD_ENV`] of the environment; `inherit` are descriptors the child keeps open across
/// exec (all others the launcher holds are close-on-exec).
fn spawn(
    cmd: &mut Command,
    user: &User,
    keep: CapabilitySet,
    notify: &Path,
    inherit: &[RawFd],
    what: &'static str,
) -> Result<Child, LaunchError> {
    cmd.env_clear()
        .envs(CHILD_ENV.iter().filter_map(|name| Some((name, std::env::var_os(name)?))))
        .env("NOTIFY_SOCKET", notify)
        .current_dir("/")
        .stdin(std::process::Stdio::null());
    let (uid, gid) = (user.uid, user.gid);
    let inherit = inherit.to_vec();
    // SAFETY: `setsid`, `fcntl_setfd`, `become_user` and `prctl` make only async-signal-safe raw
    // syscalls (the closure allocates nothing), and `inherit` names descriptors the parent
    // holds open, so the forked child has them too.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            for fd in &inherit {
                rustix::io::fcntl_setfd(BorrowedFd::borrow_raw(*fd), rustix::io::FdFlags::empty())?;
            }
            become_user(uid, gid, keep)?;
            // After the uid change, which clears it: a launcher killed outright (SIGKILL) must
            // not leave its children running in their own session.
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            Ok(())
        })
    };
    cmd.spawn().map_err(|source| LaunchError::Spawn { what, source })
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// A named user, or without one a uid of its own.
fn user(spec: Option<&str>, flag: &'static str) -> Result<User, LaunchError> {
    match spec {
        Some(spec) => User::named(spec, flag),
        None => User::dynamic(),
    }
}

fn run(cli: &Cli, stop: &AtomicBool) -> Result<ExitCode, LaunchError> {
    if !rustix::process::geteuid().is_root() {
        return Err(LaunchError::NotRoot);
    }
    let publisher_user = user(cli.publisher_user.as_deref(), "--publisher-user")?;
    let loader_user = user(cli.loader_user.as_deref(), "--loader-user")?;
    if publisher_user.uid == loader_user.uid {
        return Err(LaunchError::SameUser);
    }
    // Before anything starts: a wrong pid or binary is the likelier mistake. A node that is
    // not running yet (an automated setup may start this first) is waited for, as a
    // restarted one is.
    let bitcoind = match (cli.bitcoind(), cli.bitcoind_pid_file.as_deref()) {
        (Err(e), Some(file)) if e.not_running_yet() => {
            tracing::warn!("{e}: waiting for bitcoind to write {}", file.display());
            match wait_for_successor(cli, file, None, stop) {
                Successor::Found(bitcoind) => bitcoind,
                Successor::Stopped => return Ok(ExitCode::SUCCESS),
                Successor::GaveUp(secs) => return Err(LaunchError::NoBitcoind { secs, file: file.to_owned() }),
            }
        }
        (bitcoind, _) => bitcoind?,
    };
    // Read as root, now: a missing secret file is named before anything starts.
    let nats = match cli.stdout {
        Some(_) => nats::subject_prefix_only(&cli.nats),
        None => {
            let system_ca = std::env::var_os("SSL_CERT_FILE").filter(|path| !path.is_empty()).map(PathBuf::from);
            nats::hand_on(&cli.nats, system_ca.as_deref())?
        }
    };
    let dir = runtime_dir(&publisher_user, &loader_user)?;
    let socket = dir.0.join("publisher.sock");
    let log_level = cli.log_level.as_str().to_lowercase();

    // Both before the publisher starts: the directory is its own, and root chowns and chmods
    // these by path, which it must not be able to swap meanwhile.
    let (publisher_notify, publisher_notify_path) = notify_socket(&dir.0, "publisher-notify.sock", &publisher_user)?;
    let loader_notify = notify_socket(&dir.0, "loader-notify.sock", &loader_user)?;
    let (publisher_bin, loader_bin) = (sibling("ebpf-publisher")?, sibling("ebpf-loader")?);
    // The publisher's standard output is the launcher's: --stdout writes the events there.
    let sink = match &cli.stdout {
        Some(format) => ["--stdout", format],
        None => ["--nats-address", &cli.nats.address],
    };
    let mut publisher = spawn(
        Command::new(publisher_bin)
            .args(sink)
            .args(["--socket-mode", "660", "--log-level", &log_level])
            .args(&nats.args)
            .args(cli.jetstream.to_args())
            .args(cli.metrics_address.iter().flat_map(|address| ["--metrics-address".to_string(), address.to_string()]))
            .arg("--socket")
            .arg(&socket)
            .arg("--loader-uid")
            .arg(loader_user.uid.as_raw().to_string()),
        &publisher_user,
        CapabilitySet::empty(),
        &publisher_notify_path,
        &nats.fds(),
        "ebpf-publisher",
    )?;
    // The publisher holds its own copies of the memfds now.
    drop(nats);
    wait_ready(&publisher_notify, &mut publisher, "ebpf-publisher")?;
    log_users(&publisher_user, &loader_user);

    let start_loader = |bitcoind: &Bitcoind, successor: bool| -> Result<Child, LaunchError> {
        let mut loader = spawn(
            &mut loader_command(cli, &loader_bin, &socket, &log_level, bitcoind, successor),
            &loader_user,
            CapabilitySet::BPF | CapabilitySet::PERFMON,
            &loader_notify.1,
            &[bitcoind.binary.as_raw_fd()],
            "ebpf-loader",
        )?;
        wait_ready(&loader_notify.0, &mut loader, "ebpf-loader").map(|()| loader)
    };
    // However supervision ends, the publisher stops last: it flushes to NATS what the loader
    // handed on.
    let result = supervise(cli, stop, &mut publisher, bitcoind, start_loader);
    signal(&publisher, rustix::process::Signal::TERM);
    let _ = publisher.wait();
    result
}

/// Says whom the children run as, so that an operator can find them in `ps`.
fn log_users(publisher: &User, loader: &User) {
    let kind = |user: &User| if user.dynamic { "its own uid" } else { "user" };
    tracing::info!(
        "ebpf-publisher runs as {} {}, ebpf-loader as {} {}",
        kind(publisher),
        publisher.uid.as_raw(),
        kind(loader),
        loader.uid.as_raw()
    );
}

/// The bitcoind a loader is started for: its pid, and its binary opened by the launcher.
struct Bitcoind {
    pid: i32,
    binary: File,
}

impl Cli {
    /// The bitcoind to trace now: the fixed pid, or the one the pid file names, running the
    /// binary of --bitcoind-path, run by the file's owner and by --bitcoind-user.
    fn bitcoind(&self) -> Result<Bitcoind, TargetError> {
        let (pid, written) = match (&self.bitcoind_pid, &self.bitcoind_pid_file) {
            (Some(pid), _) => (*pid, None),
            (None, Some(path)) => target::read_pid_file(path).map(|file| (file.pid, Some((file, path.as_path()))))?,
            (None, None) => unreachable!("clap requires one of them"),
        };
        let binary = target::open_binary(&self.bitcoind_path)?;
        target::check_runs(pid, &binary, &self.bitcoind_path)?;
        target::check_users(pid, written, self.bitcoind_user)?;
        Ok(Bitcoind { pid, binary })
    }
}

/// Starts the loader, again for each restarted bitcoind, until a child exits or we are asked
/// to stop; then stops the loader, which hands on what the rings hold.
fn supervise(
    cli: &Cli,
    stop: &AtomicBool,
    publisher: &mut Child,
    mut bitcoind: Bitcoind,
    start_loader: impl Fn(&Bitcoind, bool) -> Result<Child, LaunchError>,
) -> Result<ExitCode, LaunchError> {
    let mut loader = start_loader(&bitcoind, false)?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let code = loop {
        if stop.load(Ordering::Relaxed) {
            break ExitCode::SUCCESS;
        }
        if let Ok(Some(status)) = loader.try_wait() {
            let Some(file) = cli.bitcoind_pid_file.as_deref().filter(|_| status.code() == Some(LOADER_BITCOIND_EXITED))
            else {
                tracing::error!("ebpf-loader exited ({status})");
                if status.code() == Some(LOADER_BITCOIND_EXITED) {
                    tracing::error!(
                        "bitcoind exited: to follow its restarts, pass --bitcoind-pid-file instead of --bitcoind-pid"
                    );
                }
                break ExitCode::FAILURE;
            };
            tracing::warn!("bitcoind exited: waiting for {} to name its successor", file.display());
            match wait_for_successor(cli, file, Some(bitcoind.pid), stop) {
                Successor::Found(next) => {
                    bitcoind = next;
                    loader = start_loader(&bitcoind, true)?;
                    tracing::info!("following the restarted bitcoind (pid {})", bitcoind.pid);
                    continue;
                }
                Successor::Stopped => break ExitCode::SUCCESS,
                Successor::GaveUp(secs) => {
                    tracing::error!("{}: exiting", LaunchError::NoBitcoind { secs, file: file.to_owned() });
                    break ExitCode::FAILURE;
                }
            }
        }
        if let Ok(Some(status)) = publisher.try_wait() {
            tracing::error!("ebpf-publisher exited ({status})");
            break ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    signal(&loader, rustix::process::Signal::TERM);
    let _ = loader.wait();
    Ok(code)
}

/// The loader's command line: the pid and the open binary the launcher resolved, never the
/// pid file or the binary's path, which the loader's user may be unable to open.
/// A loader for a `successor` (a restarted bitcoind) only warns while no event comes: a node
/// loads its block index and replays blocks before it networks, which often takes longer than
/// the seed's 180 s, and the binary was checked to be the one the new pid runs.
fn loader_command(
    cli: &Cli,
    binary: &Path,
    socket: &Path,
    log_level: &str,
    bitcoind: &Bitcoind,
    successor: bool,
) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg("--bitcoind-path").arg(format!("/proc/self/fd/{}", bitcoind.binary.as_raw_fd()));
    cmd.args(["--bitcoind-pid", &bitcoind.pid.to_string()]).arg("--socket").arg(socket);
    cmd.args(["--log-level", log_level]);
    cmd.args(cli.categories.to_args());
    cmd.args(cli.rings.to_args());
    for (on, flag) in [(cli.libbpf_debug, "--libbpf-debug"), (cli.no_idle_exit || successor, "--no-idle-exit")] {
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

enum Successor {
    Found(Bitcoind),
    Stopped,
    GaveUp(u64),
}

/// Waits until the pid file names a process other than `previous` (if any) that runs the
/// binary: bitcoind removes its pid file when it stops and writes a new one when it starts
/// again; a crashed one leaves a stale file, whose pid may meanwhile belong to something else.
fn wait_for_successor(cli: &Cli, file: &Path, previous: Option<i32>, stop: &AtomicBool) -> Successor {
    let since = Instant::now();
    let mut next_warning = IDLE_WARN;
    // The last refusal logged: each is logged once, not every look.
    let mut refused = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Successor::Stopped;
        }
        match cli.bitcoind() {
            Ok(next) if Some(next.pid) != previous => return Successor::Found(next),
            Err(e) if e.refuses_a_process() && refused.as_ref() != Some(&e.to_string()) => {
                tracing::warn!("{e}");
                refused = Some(e.to_string());
            }
            _ => {}
        }
        let waited = since.elapsed();
        if waited >= next_warning {
            if !cli.no_idle_exit && waited >= IDLE_EXIT {
                return Successor::GaveUp(waited.as_secs());
            }
            tracing::warn!("no bitcoind for {} s: still waiting for {}", waited.as_secs(), file.display());
            next_warning += IDLE_WARN;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A user flag's value as a uid (`ipc_protocol::cli::uid`).
fn parse_uid(spec: &str) -> Result<u32, String> {
    ipc_protocol::cli::uid(spec, || std::fs::read_to_string("/etc/passwd"))
}

/// The seed's five level names, in any case, as `tracing` levels.
fn log_level_parser() -> impl clap::builder::TypedValueParser<Value = tracing::Level> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["trace", "debug", "info", "warn", "error"])
        .try_map(|name| name.parse::<tracing::Level>())
}

/// The NATS options given on the command line but --nats-subject-prefix: --stdout refuses
/// them, as ebpf-publisher does (publisher/src/main.rs says why).
fn nats_options_given(matches: &ArgMatches) -> Vec<String> {
    Cli::command()
        .get_arguments()
        .filter(|arg| arg.get_long().is_some_and(|long| long.starts_with("nats-") && long != "nats-subject-prefix"))
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
        .collect()
}

fn main() -> ExitCode {
    let mut command = Cli::command();
    let matches = command.get_matches_mut();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if cli.stdout.is_some() {
        if let Some(option) = nats_options_given(&matches).first() {
            command
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("{option} cannot be used with --stdout, which publishes nothing to NATS"),
                )
                .exit();
        }
    }
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
