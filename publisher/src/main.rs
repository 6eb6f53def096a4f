//! `ebpf-publisher`: receives records from ebpf-loader over a Unix SOCK_SEQPACKET socket and
//! publishes peer-observer events to NATS (or, with `--stdout`, writes them to standard
//! output). Runs without any capability.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use ipc_protocol::cli::{JetStreamFlags, NatsFlags};
use publisher::counters::Counters;
use publisher::decode::EnvelopeVersion;
use publisher::jetstream::{JetStream, JetStreamError};
use publisher::loss_log::{self, LossLog};
use publisher::nats::SubjectPrefix;
use publisher::sink::{Format, Sink};
use rustix::net::SocketType;
use tokio::signal::unix::{signal, SignalKind};
use tokio_seqpacket::UnixSeqpacketListener;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Publishes the loader's tracepoint records to NATS in peer-observer's wire format.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    nats: NatsFlags,
    #[command(flatten)]
    jetstream: JetStreamFlags,
    /// Write each event to standard output as one line instead of publishing it, as event-tail
    /// prints it (json: as with its --json; readable: as without), on the subject it would go out
    /// on. No NATS connection is made, and no NATS option but --nats-subject-prefix may be given.
    /// For checking what the loader sees
    #[arg(long, value_name = "FORMAT")]
    stdout: Option<Format>,
    /// Unix socket (SOCK_SEQPACKET) to listen on for ebpf-loader, unless systemd passes one
    /// (socket activation)
    #[arg(short = 's', long, default_value = "/run/peer-observer-ebpf/publisher.sock")]
    socket: PathBuf,
    /// Permissions of the socket file, in octal; the loader's user needs write permission
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,
    /// Only accept connections from this user (the loader's; a uid or a name in /etc/passwd),
    /// checked with SO_PEERCRED; required unless --allow-any-uid
    #[arg(long, value_parser = parse_uid, required_unless_present = "allow_any_uid")]
    loader_uid: Option<u32>,
    /// Accept connections from any user who may open the socket (for debugging: anyone could
    /// then inject events)
    #[arg(long, conflicts_with = "loader_uid")]
    allow_any_uid: bool,
    /// Serve the counters for Prometheus on this address (e.g. 127.0.0.1:9842); off by default
    #[arg(long)]
    metrics_address: Option<std::net::SocketAddr>,
    /// Log level: trace, debug, info, warn, error
    #[arg(short = 'l', long, default_value = "info")]
    log_level: tracing::Level,
}

/// A user flag's value as a uid (`ipc_protocol::cli::uid`).
fn parse_uid(spec: &str) -> Result<u32, String> {
    ipc_protocol::cli::uid(spec, || std::fs::read_to_string("/etc/passwd"))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777).ok_or_else(|| format!("{s:?} is not an octal file mode"))
}

#[derive(Debug, thiserror::Error)]
enum PublisherError {
    #[error(transparent)]
    Nats(#[from] publisher::nats::NatsError),
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error("cannot listen on {path}: {source}")]
    Listen { path: PathBuf, source: std::io::Error },
    #[error("cannot take the socket passed by systemd: {0}")]
    Activation(std::io::Error),
    #[error("systemd passed {0} sockets; configure exactly one ListenSequentialPacket=")]
    ActivationCount(usize),
    #[error("the socket passed by systemd is not a listening SOCK_SEQPACKET socket: use ListenSequentialPacket=")]
    ActivationType,
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics { address: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Confine(confine::ConfineError),
    #[error("cannot set no_new_privs before confining: {0}")]
    NoNewPrivs(std::io::Error),
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
}

/// The socket systemd passed (socket activation), if any; it must be a listening
/// SOCK_SEQPACKET socket (`ListenSequentialPacket=`).
fn activated_socket() -> Result<Option<UnixSeqpacketListener>, PublisherError> {
    let fds: Vec<RawFd> = sd_notify::listen_fds().map_err(PublisherError::Activation)?.collect();
    let fd = match fds.as_slice() {
        [] => return Ok(None),
        [fd] => *fd,
        more => return Err(PublisherError::ActivationCount(more.len())),
    };
    // SAFETY: systemd hands this descriptor to us alone; nothing else in the process uses it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let is_seqpacket = rustix::net::sockopt::socket_type(&owned).is_ok_and(|t| t == SocketType::SEQPACKET);
    let listening = rustix::net::sockopt::socket_acceptconn(&owned).unwrap_or(false);
    if !is_seqpacket || !listening {
        return Err(PublisherError::ActivationType);
    }
    // Inherited sockets arrive blocking; the async runtime needs them non-blocking.
    rustix::io::ioctl_fionbio(&owned, true).map_err(|e| PublisherError::Activation(e.into()))?;
    UnixSeqpacketListener::try_from(owned).map(Some).map_err(PublisherError::Activation)
}

fn listen(path: &Path, mode: u32) -> Result<UnixSeqpacketListener, PublisherError> {
    let err = |source| PublisherError::Listen { path: path.to_owned(), source };
    // A socket file left by an earlier run would make bind fail; anything else is not ours.
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixSeqpacketListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(listener)
}

/// The NATS options given on the command line besides --nats-subject-prefix, which also
/// names the subjects written to standard output. --stdout refuses them rather than ignoring
/// them: they name a server and secrets, so whoever gives them expects events there. A
/// NATS_PASSWORD left in the environment is no option given for this command, and is ignored.
fn nats_options_given(matches: &ArgMatches) -> Vec<String> {
    Cli::command()
        .get_arguments()
        .filter(|arg| arg.get_long().is_some_and(|long| long.starts_with("nats-") && long != "nats-subject-prefix"))
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
        .collect()
}

async fn run(cli: Cli) -> Result<(), PublisherError> {
    let counters = Arc::new(Counters::default());
    let prefix = SubjectPrefix::of(&cli.nats);
    let sink = match cli.stdout {
        Some(format) => Sink::Stdout(format),
        // Reads every NATS file now, before the seccomp filter: only the TLS files are opened
        // again, read-only, at a reconnection (publisher/src/nats.rs).
        None => {
            let client = publisher::nats::connect(&cli.nats, &counters).await?;
            let jetstream = match &cli.jetstream.stream {
                Some(stream) => {
                    Some(Arc::new(JetStream::open(&client, &cli.jetstream, stream, &prefix, &counters).await?))
                }
                None => None,
            };
            Sink::Nats {
                client,
                address: cli.nats.address.clone(),
                jetstream,
                envelope: EnvelopeVersion::of(cli.nats.legacy_envelope),
            }
        }
    };
    // Before the loader's socket and readiness: an address in use is a start-up error, with no
    // socket file left behind and no READY=1 sent.
    if let Some(address) = cli.metrics_address {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| PublisherError::Metrics { address, source })?;
        tracing::info!("metrics on http://{address}/metrics");
        tokio::spawn(publisher::metrics::serve(listener, Arc::clone(&counters)));
    }
    let (listener, bound_here) = match activated_socket()? {
        Some(listener) => {
            tracing::info!(to = %sink, "listening on the socket passed by systemd");
            (listener, false)
        }
        None => {
            let listener = listen(&cli.socket, cli.socket_mode)?;
            tracing::info!(socket = %cli.socket.display(), to = %sink, "listening");
            (listener, true)
        }
    };
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot notify readiness: {e}");
    }
    if cli.allow_any_uid {
        tracing::warn!("--allow-any-uid: any local user who may open the socket can inject events");
    }

    let mut sigterm = signal(SignalKind::terminate()).map_err(PublisherError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(PublisherError::Signal)?;
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => {},
            _ = sigint.recv() => {},
        }
    };
    // Everything is open that the publisher will ever open itself: from here on it makes only
    // the calls of its steady state (publisher/src/seccomp.rs).
    rustix::thread::set_no_new_privs(true).map_err(|e| PublisherError::NoNewPrivs(e.into()))?;
    confine::confine(publisher::seccomp::STEADY_STATE).map_err(PublisherError::Confine)?;
    let serving =
        publisher::server::serve(listener, cli.loader_uid, sink.clone(), prefix, Arc::clone(&counters), shutdown);
    tokio::pin!(serving);
    let mut loss_log = LossLog::default();
    let mut report = tokio::time::interval(loss_log::INTERVAL);
    loop {
        tokio::select! {
            () = &mut serving => break,
            _ = report.tick() => loss_log.report(&counters.snapshot(), sink.max_payload()),
        }
    }
    sink.flush().await;
    if bound_here {
        let _ = std::fs::remove_file(&cli.socket);
    }
    loss_log.report(&counters.snapshot(), sink.max_payload());
    tracing::info!("stopped: {}", counters.snapshot());
    Ok(())
}

/// Tunes glibc's allocator for a process that builds multi-megabyte buffers (a reassembled
/// record, its event, its encoding) again and again within a bounded budget (README, "Large
/// messages and memory"): every buffer up to 32 MiB comes from the heap rather than a mapping
/// of its own, and the heap keeps its pages instead of handing them back after each event. By
/// default each such buffer faulted its pages in afresh, a quarter of the publisher's time
/// per inv of 1.8 MB (docs/performance.md). Peak memory stays what the budget allows.
#[cfg(target_env = "gnu")]
fn keep_allocator_pages() {
    for (parameter, value, name) in [
        (libc::M_MMAP_THRESHOLD, 32 << 20, "M_MMAP_THRESHOLD"),
        (libc::M_TRIM_THRESHOLD, 128 << 20, "M_TRIM_THRESHOLD"),
        (libc::M_TOP_PAD, 16 << 20, "M_TOP_PAD"),
    ] {
        // SAFETY: mallopt only sets a parameter of the allocator, before any other thread runs.
        if unsafe { libc::mallopt(parameter, value) } != 1 {
            tracing::debug!("mallopt({name}, {value}) refused: the allocator keeps its default");
        }
    }
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
    // async-nats' own lines only from --log-level debug on, and never its trace level, which
    // shows the protocol. The publisher logs the connection's life itself, rate-limited.
    let async_nats = if cli.log_level >= tracing::Level::DEBUG { LevelFilter::DEBUG } else { LevelFilter::OFF };
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish()
        .with(Targets::new().with_default(cli.log_level).with_target("async_nats", async_nats))
        .init();
    #[cfg(target_env = "gnu")]
    keep_allocator_pages();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ebpf-publisher: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Not waiting for the blocking threads: one still writing to a standard output that
    // nobody reads (--stdout) would hold up the exit for ever.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebpf-publisher: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(args: &[&str]) -> Vec<String> {
        let matches = Cli::command()
            .try_get_matches_from(["ebpf-publisher", "--allow-any-uid", "--stdout", "json"].iter().chain(args))
            .expect("valid arguments");
        nats_options_given(&matches)
    }

    #[test]
    fn stdout_refuses_every_nats_option_but_the_subject_prefix() {
        assert_eq!(given(&[]), Vec::<String>::new());
        assert_eq!(given(&["--nats-subject-prefix", "a.b"]), Vec::<String>::new());
        assert_eq!(given(&["-n", "10.0.0.1:4222"]), ["--nats-address"]);
        assert_eq!(
            given(&["-u", "a", "-f", "/p", "--nats-tls-required"]),
            ["--nats-username", "--nats-password-file", "--nats-tls-required"]
        );
        // Standard output shows the current envelope only.
        assert_eq!(given(&["--nats-legacy-envelope"]), ["--nats-legacy-envelope"]);
    }
}
