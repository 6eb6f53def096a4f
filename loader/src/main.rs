//! `ebpf-loader`: the privileged half of the extractor.
//!
//! Start-up: resolve the traced process, connect to the publisher and send the hello, load and
//! attach the BPF programs, map the ring buffers, drop every capability, confine itself to the
//! system calls of `seccomp::STEADY_STATE` (the one list of them, SECURITY.md's table). It
//! never parses P2P payloads; from the publisher it reads only 8-byte acknowledgements.

mod forward;
mod idle;
mod probes;
mod ring;
mod seccomp;
mod target;

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ipc_protocol::cli::{CategoryFlags, RingSizes};
use ipc_protocol::records::WAKEUP_INTERVAL_NS;
use ipc_protocol::{Hello, Ring};
use libbpf_rs::PrintLevel;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use rustix::time::{clock_gettime, ClockId, Timespec};

use forward::{ForwardError, Forwarder, Pump};
use idle::Idle;
use probes::{ProbeError, Probes};
use std::os::fd::{AsFd, OwnedFd};
use target::{PidSource, Target, TargetError};

/// Hooks Bitcoin Core's tracepoints and forwards raw records to ebpf-publisher.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Path to the Bitcoin Core (bitcoind) binary that should be hooked into
    #[arg(short = 'b', long)]
    bitcoind_path: PathBuf,
    /// PID of the bitcoind process to hook into. Either this or --bitcoind-pid-file must be set
    #[arg(long, required_unless_present = "bitcoind_pid_file", conflicts_with = "bitcoind_pid_file")]
    bitcoind_pid: Option<i32>,
    /// File containing the PID of the bitcoind process (bitcoind's -pid=<file>); `-` reads it
    /// from standard input, opened by someone who may (bitcoind's pid file is private to its user)
    #[arg(long)]
    bitcoind_pid_file: Option<PathBuf>,
    /// The user bitcoind runs as (a uid, or a name in /etc/passwd): a pid file another user
    /// owns, or a pid another user runs, is refused (who runs it is unknown to a kernel before
    /// 6.13 under /proc's hidepid). bitcoind's user chooses what its pid file names, and a
    /// symlink there could lead to another user's node
    #[arg(long, value_name = "USER", value_parser = parse_uid)]
    bitcoind_user: Option<u32>,
    /// Unix socket (SOCK_SEQPACKET) of ebpf-publisher
    #[arg(short = 's', long, default_value = "/run/peer-observer-ebpf/publisher.sock")]
    socket: PathBuf,
    #[command(flatten)]
    categories: CategoryFlags,
    /// Log level: trace, debug, info, warn, error
    #[arg(short = 'l', long, default_value = "info")]
    log_level: tracing::Level,
    /// Print libbpf's debug output while loading and attaching
    #[arg(long)]
    libbpf_debug: bool,
    /// Don't exit after 180 seconds without any event from bitcoind; only warn (every 60 s)
    #[arg(short = 'i', long)]
    no_idle_exit: bool,
    /// After start-up, make a system call the seccomp filter forbids (for tests: it must kill)
    #[arg(long, hide = true)]
    test_forbidden_syscall: bool,
    /// Seconds without events before warning (for tests)
    #[arg(long, default_value_t = 60, hide = true)]
    idle_warn_secs: u64,
    /// Seconds without events before exiting, unless --no-idle-exit (for tests)
    #[arg(long, default_value_t = 180, hide = true)]
    idle_exit_secs: u64,
    #[command(flatten)]
    rings: RingSizes,
}

#[derive(Debug, thiserror::Error)]
enum LoaderError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("cannot drop capabilities after attaching: {0}")]
    Privileges(std::io::Error),
    #[error(
        "cannot make the loader undumpable (no other process of its user may ptrace it or take its descriptors): {0}"
    )]
    Undumpable(std::io::Error),
    #[error(transparent)]
    Seccomp(#[from] confine::ConfineError),
    #[error("no event from bitcoind (pid {pid}) for {secs} s: is it still running and busy? Exiting so that a supervisor starts a fresh loader; --no-idle-exit only warns")]
    Idle { pid: i32, secs: u64 },
    #[error("bitcoind (pid {0}) exited: start the loader again for its successor (ebpf-extractor does when given --bitcoind-pid-file; under systemd, the loader's .path unit does)")]
    TargetExited(i32),
    #[error("every tracepoint category is switched off: nothing to hook")]
    NothingEnabled,
    #[error("waiting for the BPF ring buffers or the publisher failed: {0}")]
    Poll(std::io::Error),
    #[error("cannot draw the loader's run id from the kernel's random source: {0}")]
    RunId(getrandom::Error),
}

/// Exit status when the traced bitcoind exited, so that a supervisor can tell "follow its
/// successor" from a failure; `ebpf-extractor` relies on it.
const EXIT_BITCOIND_EXITED: u8 = 3;
const COUNTER_INTERVAL: Duration = Duration::from_secs(1);
/// How long `poll` waits while bitcoind is quiet.
const POLL_TIMEOUT: Timespec = Timespec { tv_sec: 0, tv_nsec: 100_000_000 };
/// For ACTIVE_NS after the last record, the loader looks at the rings every half
/// WAKEUP_INTERVAL_NS (at least as often as the BPF programs would wake it; half keeps p99
/// latency at 10k events/s near 1 ms), and tells the programs so: meanwhile they do not wake
/// it, which would cost bitcoind's thread an irq_work per wakeup.
const ACTIVE_POLL_TIMEOUT: Timespec = Timespec { tv_sec: 0, tv_nsec: WAKEUP_INTERVAL_NS as i64 / 2 };
/// While records come at BUSY_EVENTS_PER_S or faster, the loader looks every
/// WAKEUP_INTERVAL_NS, as often as the programs would wake it. Every look that finds records
/// wakes the publisher, nats-server and the subscribers too, on the CPUs bitcoind's threads
/// use: at 100k/s, looking half as often took 10–15 % off the traced thread's time per hit,
/// for half a millisecond of latency (docs/performance.md). A ring a quarter full still wakes
/// the loader at once.
const BUSY_POLL_TIMEOUT: Timespec = Timespec { tv_sec: 0, tv_nsec: WAKEUP_INTERVAL_NS as i64 };
const BUSY_EVENTS_PER_S: u64 = 64_000;
const ACTIVE_NS: u64 = 5_000_000;
/// How long a stopping loader waits for the publisher to take what it still holds.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// How long the loop waits after a look that took `took` records `elapsed_ns` after the one
/// before. The rate is taken over half a millisecond at least: a look that followed the one
/// before sooner (a reconnection, new drop totals, a socket ready) would count a single record
/// as a flood. `polling`: within ACTIVE_NS of the last record. `head_being_written`: a ring left
/// out of the wait, whose wakeup could not end it.
fn poll_timeout(took: u64, elapsed_ns: u64, polling: bool, head_being_written: bool) -> &'static Timespec {
    let window_ns = elapsed_ns.max(WAKEUP_INTERVAL_NS / 2);
    if u128::from(took) * 1_000_000_000 >= u128::from(BUSY_EVENTS_PER_S) * u128::from(window_ns) {
        &BUSY_POLL_TIMEOUT
    } else if polling || head_being_written {
        &ACTIVE_POLL_TIMEOUT
    } else {
        &POLL_TIMEOUT
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    (t.tv_sec * 1_000_000_000 + t.tv_nsec) as u64
}

/// A kernel that may not suit the loader is named at start, before an attach failure or a
/// refused counter read would leave the operator to guess (probes.rs, UPROBE_MULTI_SINCE).
fn warn_about_the_kernel() {
    if let Some(doubt) = probes::running_kernel_doubt() {
        tracing::warn!("{}: {}", doubt.why, doubt.expect);
    }
}

fn run(cli: &Cli, stop: &AtomicBool) -> Result<(), LoaderError> {
    // First: while it holds CAP_BPF, no process of its user may ptrace it, read its memory or
    // take its descriptors (pidfd_getfd); shrinking capabilities later does not clear the
    // dumpable flag, so nothing sets it back.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| LoaderError::Undumpable(e.into()))?;
    warn_about_the_kernel();
    let enabled = cli.categories.tracepoints();
    if enabled.is_empty() {
        return Err(LoaderError::NothingEnabled);
    }
    let pid = match (&cli.bitcoind_pid, &cli.bitcoind_pid_file) {
        (Some(pid), _) => PidSource::Pid(*pid),
        (None, Some(file)) => PidSource::File(file),
        (None, None) => unreachable!("clap requires one of them"),
    };
    if cli.bitcoind_user.is_none() && cli.bitcoind_pid_file.as_deref() == Some(Path::new("-")) {
        tracing::warn!(
            "--bitcoind-pid-file - without --bitcoind-user: whoever opened the pid file followed any symlink \
             bitcoind's user put in its place, to another user's node's pid file, say; name bitcoind's user"
        );
    }
    let target = Target::resolve(&cli.bitcoind_path, pid, cli.bitcoind_user)?;
    // Readable once bitcoind exits: its probes then fire no more.
    let target_exit = &target.exit;
    let mut exited = false;
    let mut run_id = [0; 16];
    getrandom::fill(&mut run_id).map_err(LoaderError::RunId)?;
    let hello = Hello {
        run_id: u128::from_le_bytes(run_id),
        loader_version: env!("CARGO_PKG_VERSION").into(),
        pid: target.pid as u32,
        binary: target.binary_name.clone(),
        tracepoints: enabled.iter().map(|tp| tp.id()).collect(),
    };
    // Connect before touching the kernel: a missing publisher is the likelier mistake.
    let mut forwarder = Forwarder::connect(&cli.socket, &hello)?;

    let mut storage = MaybeUninit::uninit();
    let mut probes = Probes::attach(&mut storage, &target, &enabled, &cli.rings)?;
    tracing::info!(
        pid = target.pid,
        binary = ?target.binary_name,
        tracepoints = enabled.len(),
        ring_bytes = ?Ring::ALL.map(|r| (r.map_name(), probes.ring_bytes[r.index()])),
        "attached"
    );
    probes.seal()?;
    let mut rings = probes::rings(&probes.skel, &probes.ring_bytes)?;
    drop_privileges()?;
    // libbpf reads the number of possible CPUs from /sys on the first lookup and caches it:
    // after confine() no file can be opened.
    probes.drop_counts()?;
    let notify = std::env::var_os("NOTIFY_SOCKET").map(|path| (Notify::open(&path), path));
    seccomp::confine()?;
    tracing::info!("confined to the steady state's system calls (seccomp)");
    if let Some((notify, path)) = notify {
        if let Err(e) = notify.and_then(Notify::ready) {
            tracing::warn!(socket = ?path, "cannot notify readiness: {e}");
        }
    }
    if cli.test_forbidden_syscall {
        // pidfd_getfd is not in the filter's list: the kernel kills the process here.
        let _ = rustix::process::pidfd_getfd(target_exit, 0, rustix::process::PidfdGetfdFlags::empty());
    }

    let mut last_counts = Vec::new();
    let mut next_counts = Instant::now() + COUNTER_INTERVAL;
    let mut idle = Idle::new(Duration::from_secs(cli.idle_warn_secs), Instant::now());
    let mut polling_until_ns = 0;
    let mut last_look_ns = monotonic_ns();
    let idle_exit = loop {
        let look_ns = monotonic_ns();
        let since_last_look_ns = look_ns - last_look_ns;
        last_look_ns = look_ns;
        let taken = forwarder.records();
        let pump = forwarder.pump(&mut rings);
        let took_records = forwarder.records() - taken;
        let took = took_records > 0;
        if took {
            polling_until_ns = monotonic_ns() + ACTIVE_NS;
            // The programs are told one wakeup interval less than the loader keeps looking: a
            // record stamped before their deadline but submitted after it still gets looked at.
            probes.polling_until_ns.store(polling_until_ns - WAKEUP_INTERVAL_NS, Ordering::Relaxed);
        }
        if exited || stop.load(Ordering::Relaxed) {
            break None;
        }
        // Records waiting in the rings for a publisher that is slow or gone are not idleness.
        let quiet = !took && rings.iter_mut().all(|ring| ring.peek().is_none());
        if let Some(secs) = idle.tick(quiet, Instant::now()) {
            if !cli.no_idle_exit && secs >= cli.idle_exit_secs {
                break Some(LoaderError::Idle { pid: target.pid, secs });
            }
            tracing::warn!(pid = target.pid, "no event from bitcoind for {secs} s");
        }
        if forwarder.reconnect() {
            // The sender gives a new publisher the totals it has (`Sender::connected`); the BPF
            // map's latest join them at once.
            next_counts = Instant::now();
            continue;
        }
        if Instant::now() >= next_counts {
            next_counts = Instant::now() + COUNTER_INTERVAL;
            let counts = probes.drop_counts()?;
            if counts != last_counts {
                forwarder.drop_counts(&counts);
                last_counts = counts;
                continue;
            }
        }
        // Wait for what the pump stopped at: records (the rings are readable while they hold
        // one), room in the socket, or, with no publisher, the next reconnection attempt.
        let mut fds = vec![PollFd::from_borrowed_fd(target_exit.as_fd(), PollFlags::IN)];
        let socket = |flags| forwarder.socket().map(|s| PollFd::from_borrowed_fd(s, flags));
        // A ring whose head record is still being written reads as ready with nothing to take:
        // waited on, it would make this loop spin while a large message is copied in; it is
        // looked at again after the short timeout instead.
        let mut head_being_written = false;
        match pump {
            Pump::Drained => {
                for ring in &rings {
                    if ring.head_being_written() {
                        head_being_written = true;
                    } else {
                        fds.push(PollFd::from_borrowed_fd(ring.fd(), PollFlags::IN));
                    }
                }
            }
            Pump::SocketFull => fds.extend(socket(PollFlags::OUT)),
            // Acknowledgements; while a lost connection closes, its last ones and the close.
            Pump::AwaitingAcks | Pump::Disconnected => fds.extend(socket(PollFlags::IN)),
        }
        let timeout =
            poll_timeout(took_records, since_last_look_ns, monotonic_ns() < polling_until_ns, head_being_written);
        match poll(&mut fds, Some(timeout)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(LoaderError::Poll(e.into())),
        }
        exited = fds[0].revents().contains(PollFlags::IN);
    };
    // Detach first, so that nothing is captured that would never be read; then hand on what a
    // publisher takes within SHUTDOWN_DRAIN, count the rest as loader_stopped, and send the
    // drop totals.
    probes.links.clear();
    tracing::info!("detached: handing on what the rings hold");
    forwarder.drop_counts(&probes.drop_counts()?);
    let stopped = forwarder.drain(&mut rings, SHUTDOWN_DRAIN);
    if stopped.unsent > 0 {
        tracing::warn!(
            unsent = stopped.unsent,
            "the publisher did not take every record before shutdown: counted as loader_stopped"
        );
    }
    if let Some(totals) = stopped.undelivered {
        let totals: Vec<String> =
            totals.iter().map(|c| format!("{}/{}={}", c.tracepoint, c.cause.as_str(), c.total)).collect();
        tracing::error!(
            totals = totals.join(" "),
            "no publisher took the last drop totals: this log is their only record"
        );
    }
    if let Some(idle) = idle_exit {
        return Err(idle);
    }
    if exited {
        return Err(LoaderError::TargetExited(target.pid));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Once the probes are attached, all that is left goes through descriptors the loader already
/// holds: the ring buffers (mmap and epoll), the drop-counter map (lookups on an fd need no
/// capability since Linux 6.5) and the publisher socket. So it keeps no capability at all.
fn drop_privileges() -> Result<(), LoaderError> {
    use rustix::thread::{set_capabilities, set_no_new_privs, CapabilitySet, CapabilitySets};
    set_no_new_privs(true).map_err(|e| LoaderError::Privileges(e.into()))?;
    // Clearing permitted and inheritable also clears the ambient set.
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    set_capabilities(None, none).map_err(|e| LoaderError::Privileges(e.into()))?;
    tracing::info!("probes attached: dropped every capability");
    Ok(())
}

/// A supervisor to tell that the probes are attached (systemd `Type=notify`, or a test):
/// `$NOTIFY_SOCKET`, a path, or `@` and an abstract name. Its socket is made before the seccomp
/// filter, which lets the loader make only the publisher's kind of socket; `READY=1` then goes
/// out with one `sendto` (a connected socket's `write`, as libraries send it, the filter does
/// not allow), and the socket is closed.
struct Notify {
    sock: OwnedFd,
    addr: SocketAddrUnix,
}

impl Notify {
    fn open(path: &std::ffi::OsStr) -> std::io::Result<Notify> {
        let name = std::os::unix::ffi::OsStrExt::as_bytes(path);
        let addr = match name.strip_prefix(b"@") {
            Some(abstract_name) => SocketAddrUnix::new_abstract_name(abstract_name)?,
            None => SocketAddrUnix::new(name)?,
        };
        let sock = rustix::net::socket_with(AddressFamily::UNIX, SocketType::DGRAM, SocketFlags::CLOEXEC, None)?;
        Ok(Notify { sock, addr })
    }

    fn ready(self) -> std::io::Result<()> {
        rustix::net::sendto(&self.sock, b"READY=1\n", SendFlags::NOSIGNAL, &self.addr)?;
        Ok(())
    }
}

/// A user flag's value as a uid (`ipc_protocol::cli::uid`).
fn parse_uid(spec: &str) -> Result<u32, String> {
    ipc_protocol::cli::uid(spec, || std::fs::read_to_string("/etc/passwd"))
}

/// A libbpf message as log lines, each its own `libbpf` record, control characters escaped.
/// libbpf quotes text from the binary's USDT notes (an argument spec it cannot parse), which
/// bitcoind's user writes into a self-built binary: a line end there must not start a line
/// that looks like the loader's own (SECURITY.md, "What an attacker can and cannot do").
fn libbpf_lines(msg: &str) -> impl Iterator<Item = String> + '_ {
    msg.trim_end().lines().map(|line| {
        let mut escaped = String::with_capacity(line.len());
        for c in line.chars() {
            if c.is_control() {
                escaped.extend(c.escape_default());
            } else {
                escaped.push(c);
            }
        }
        escaped
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let libbpf_level = if cli.libbpf_debug { PrintLevel::Debug } else { PrintLevel::Warn };
    libbpf_rs::set_print(Some((libbpf_level, |level, msg| {
        for line in libbpf_lines(&msg) {
            match level {
                PrintLevel::Warn => tracing::warn!(target: "libbpf", "{line}"),
                _ => tracing::info!(target: "libbpf", "{line}"),
            }
        }
    })));

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).expect("install signal handler");
    }
    match run(&cli, &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebpf-loader: error: {e}");
            match e {
                LoaderError::TargetExited(_) => ExitCode::from(EXIT_BITCOIND_EXITED),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_follow_a_wakeup_interval_apart_while_records_come_at_64k_a_second_or_more() {
        const HALF_MS: u64 = 500_000;
        let ns = |took, elapsed_ns, polling, head| poll_timeout(took, elapsed_ns, polling, head).tv_nsec;
        // 100k/s: 50 records half a millisecond after the look before; 64k/s: 64 in 1 ms.
        assert_eq!(ns(50, HALF_MS, true, false), 1_000_000);
        assert_eq!(ns(64, 2 * HALF_MS, true, false), 1_000_000);
        assert_eq!(ns(32, HALF_MS, true, false), 1_000_000);
        // 10k/s, 50k/s, and just under 64k/s: every half millisecond.
        assert_eq!(ns(5, HALF_MS, true, false), 500_000);
        assert_eq!(ns(25, HALF_MS, true, false), 500_000);
        assert_eq!(ns(31, HALF_MS, true, false), 500_000);
        assert_eq!(ns(63, 2 * HALF_MS, true, false), 500_000);
        // A look soon after the one before: its few records are no flood.
        assert_eq!(ns(1, 15_000, true, false), 500_000);
        assert_eq!(ns(31, 0, true, false), 500_000);
        // A record still being written, even once quiet, is looked at again soon.
        assert_eq!(ns(0, 100_000_000, false, true), 500_000);
        // Quiet for ACTIVE_NS: 100 ms.
        assert_eq!(ns(0, 100_000_000, false, false), 100_000_000);
    }

    #[test]
    fn a_libbpf_message_quoting_a_forged_line_logs_it_as_libbpfs_with_control_characters_escaped() {
        let msg = "libbpf: usdt: unrecognized arg #1 spec '8@%rdi\nERROR forged\x1b[31m'\n";
        let lines: Vec<String> = libbpf_lines(msg).collect();
        assert_eq!(lines, ["libbpf: usdt: unrecognized arg #1 spec '8@%rdi", "ERROR forged\\u{1b}[31m'"]);
    }
}
