//! Fires Bitcoin Core's tracepoints with deterministic values (see the library) and prints,
//! at exit, how many firings of each tracepoint a tracer saw.

mod node;

use std::ffi::{c_char, CString};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use ipc_protocol::Tracepoint;
use rustix::mm::{self, MapFlags, MprotectFlags, ProtFlags};
use tracepoint_simulator::{args, disconnection, monotonic_ns, Args, Message, Workload, CONNECTED_PEERS};

extern "C" {
    fn sim_net_inbound_message_loop(
        count: u64,
        id: i64,
        addr: *const c_char,
        conn_type: *const c_char,
        msg_type: *const c_char,
        size: usize,
        data: *const u8,
    ) -> u64;
    fn sim_net_inbound_message(
        id: i64,
        addr: *const c_char,
        conn_type: *const c_char,
        msg_type: *const c_char,
        size: usize,
        data: *const u8,
    ) -> bool;
    fn sim_net_outbound_message(
        id: i64,
        addr: *const c_char,
        conn_type: *const c_char,
        msg_type: *const c_char,
        size: usize,
        data: *const u8,
    ) -> bool;
    fn sim_net_inbound_connection(
        id: i64,
        addr: *const c_char,
        conn_type: *const c_char,
        network: u32,
        existing: usize,
    ) -> bool;
    fn sim_net_outbound_connection(
        id: i64,
        addr: *const c_char,
        conn_type: *const c_char,
        network: u32,
        existing: usize,
    ) -> bool;
    fn sim_net_closed_connection(
        id: i64,
        addr: *const c_char,
        conn_type: *const c_char,
        network: u32,
        time_established: i64,
    ) -> bool;
    fn sim_net_evicted_inbound_connection(
        id: i64,
        addr: *const c_char,
        conn_type: *const c_char,
        network: u32,
        time_established: i64,
    ) -> bool;
    fn sim_net_misbehaving_connection(id: i64, message: *const c_char) -> bool;
    fn sim_mempool_added(txid: *const u8, vsize: i32, fee: i64) -> bool;
    fn sim_mempool_removed(txid: *const u8, reason: *const c_char, vsize: i32, fee: i64, entry_time: u64) -> bool;
    fn sim_mempool_replaced(
        replaced_txid: *const u8,
        replaced_vsize: i32,
        replaced_fee: i64,
        replaced_entry_time: u64,
        replacement_id: *const u8,
        replacement_vsize: i32,
        replacement_fee: i64,
        replaced_by_tx: bool,
    ) -> bool;
    fn sim_mempool_rejected(txid: *const u8, reason: *const c_char) -> bool;
    fn sim_validation_block_connected(
        hash: *const u8,
        height: i32,
        transactions: usize,
        inputs: i32,
        sigops: i64,
        duration_ns: i64,
    ) -> bool;
    fn sim_addrman_attempt_add(
        inserted: bool,
        bucket: i32,
        bucket_pos: i32,
        addr: *const c_char,
        addr_as: u32,
        source: *const c_char,
        source_as: u32,
    ) -> bool;
    fn sim_utxocache_add(txid: *const u8, index: u32, height: u32, value: i64, is_coinbase: bool) -> bool;
    fn sim_utxocache_spent(txid: *const u8, index: u32, height: u32, value: i64, is_coinbase: bool) -> bool;
    fn sim_utxocache_uncache(txid: *const u8, index: u32, height: u32, value: i64, is_coinbase: bool) -> bool;
    fn sim_utxocache_flush(
        duration_us: i64,
        mode: u32,
        coins_count: u64,
        coins_mem_usage: u64,
        for_prune: bool,
    ) -> bool;
    fn sim_addrman_move_to_good(
        bucket: i32,
        bucket_pos: i32,
        addr: *const c_char,
        addr_as: u32,
        source: *const c_char,
        source_as: u32,
    ) -> bool;
}

/// Fires Bitcoin Core's USDT tracepoints with deterministic values.
#[derive(Parser)]
#[command(version, args_override_self = true)]
struct Cli {
    /// Tracepoints to fire: `default` (those hooked by default), `all`, or a comma-separated
    /// list of tracepoints and providers such as `net:inbound_message,mempool:added,utxocache`.
    #[arg(long, default_value = "default")]
    tracepoints: String,
    /// Rounds to fire (each round fires every selected tracepoint once); 0 = until SIGINT.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Rounds per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seed of the deterministic values.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Wait for a line on standard input before firing (lets a test attach its tracer first).
    #[arg(long)]
    start_on_stdin: bool,
    /// P2P messages: fire only this message type (default: every type in turn, from `version`
    /// to `sendtxrcncl` and a made-up type). With `--garbage`: only this type's garbage.
    #[arg(long, value_name = "TYPE")]
    message_type: Option<String>,
    /// P2P messages: make every payload exactly N bytes (at most 32 MiB): a block of that size
    /// from 141 bytes on, below that a made-up type. With `--message-type`: a `block` or `tx`
    /// of N bytes, an `inv`, `getdata` or `notfound` with as many items as fit in N, a
    /// `merkleblock` of one hash and as many flag bytes as fit, an `addrv2` of as many empty
    /// addresses of an unknown network as fit, or `sendtxrcncl` or `made-up-type` with N bytes.
    #[arg(long, value_name = "N")]
    message_size: Option<usize>,
    /// P2P messages: fire only payloads that must fail to decode (truncated, bad flags,
    /// invalid addresses, ...), each known type whose decoder can fail in turn.
    #[arg(long, conflicts_with = "message_size")]
    garbage: bool,
    /// Stop firing after this many seconds, even before --count rounds (for benchmarks).
    #[arg(long, value_name = "SECONDS")]
    seconds: Option<f64>,
    /// Ping nonces are the CLOCK_MONOTONIC nanoseconds of their firing, so that a subscriber
    /// on this machine can measure each event's latency (for benchmarks; the values are then
    /// not deterministic).
    #[arg(long)]
    ping_clock: bool,
    /// Keep running this many seconds after the last firing, as bitcoind would, before
    /// printing the counts and exiting (for benchmarks: records a tracer has not taken yet
    /// when the traced process exits wait for the exit to complete).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    linger: f64,
    /// P2P messages: every Nth round's message passes a payload pointer that cannot be read,
    /// as a broken probe site would; the tracer must count it and go on.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    unreadable_every: Option<u64>,
    /// With --unreadable-every and --message-size above BYTE (no --message-type, so that every
    /// payload has that size): those payloads are readable up to BYTE and inaccessible from
    /// there on, so that a tracer copying one in pieces fails a later piece (default: the
    /// pointer itself cannot be read).
    #[arg(
        long,
        value_name = "BYTE",
        requires = "unreadable_every",
        requires = "message_size",
        conflicts_with = "message_type"
    )]
    unreadable_from: Option<usize>,
    /// Bitcoin Core's `-datadir`: must exist; the pid file goes inside (also `-datadir=DIR`).
    #[arg(long, value_name = "DIR")]
    datadir: Option<PathBuf>,
    /// Bitcoin Core's `-pid`: relative to the network's directory in the datadir unless
    /// absolute; default `bitcoind.pid` (also `-pid=FILE`).
    #[arg(long, value_name = "FILE")]
    pid: Option<PathBuf>,
    /// Bitcoin Core's `-regtest`: the network's directory is `<datadir>/regtest`.
    #[arg(long)]
    regtest: bool,
    /// Bitcoin Core's `-conf` (relative to the datadir; default `<datadir>/bitcoin.conf` if it
    /// exists): `name=value` lines, each one of these options (such as `count=0`, `rate=10`; a
    /// flag as `regtest=1`), which the command line overrides; other names are ignored with a
    /// warning, as bitcoind ignores names it does not know; `#` starts a comment (also
    /// `-conf=FILE`).
    #[arg(long, value_name = "FILE")]
    conf: Option<PathBuf>,
    /// Bitcoin Core's `-startupnotify`: a command run through `/bin/sh -c` once started (the pid
    /// file written), not waited for; Bitcoin Core's systemd unit reports readiness with it
    /// (also `-startupnotify=CMD`).
    #[arg(long, value_name = "CMD")]
    startupnotify: Option<String>,
    /// Bitcoin Core's `-shutdownnotify`: a command run through `/bin/sh -c` when shutdown
    /// begins, waited for; several run at once (also `-shutdownnotify=CMD`).
    #[arg(long, value_name = "CMD")]
    shutdownnotify: Vec<String>,
    /// Fire from this many threads at once, as Bitcoin Core does; the tracepoints are dealt
    /// out among them, each firing from one thread (so each keeps its order), every thread
    /// firing its share --count rounds at --rate
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    threads: u64,
    /// Fire `net:inbound_message` from one C loop with round 0's arguments every time, as a
    /// lean firing program would: the heaviest load a tracer can be given (for benchmarks).
    /// Only with `--tracepoints net:inbound_message`, one thread and none of --rate,
    /// --ping-clock and --unreadable-every (which would change hits from round to round).
    #[arg(long)]
    lean: bool,
}

/// The command line over the options of its configuration file, as bitcoind reads them.
fn parse_cli() -> Result<Cli, String> {
    let args = node::core_spelling(std::env::args());
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| e.exit());
    let Some(path) = node::conf_path(cli.conf.as_deref(), cli.datadir.as_deref()) else { return Ok(cli) };
    let command = Cli::command();
    let is_flag = |name: &str| {
        let arg = command.get_arguments().find(|arg| arg.get_long() == Some(name))?;
        Some(!arg.get_action().takes_values())
    };
    let conf = node::conf_args(&path, is_flag)?;
    for name in &conf.ignored {
        eprintln!("Warning: Ignoring unknown configuration value {name}");
    }
    // After the program's name, before the command line's own options, which win.
    let mut merged = args.clone();
    let at = merged.len().min(1);
    merged.splice(at..at, conf.args);
    Ok(Cli::try_parse_from(merged).unwrap_or_else(|e| e.exit()))
}

fn parse_tracepoints(spec: &str) -> Result<Vec<Tracepoint>, String> {
    match spec {
        "all" => Ok(Tracepoint::ALL.to_vec()),
        "default" => Ok(Tracepoint::defaults()),
        list => {
            let mut tracepoints = Vec::new();
            for name in list.split(',').map(str::trim) {
                let of_provider: Vec<_> = Tracepoint::ALL.iter().copied().filter(|tp| tp.provider() == name).collect();
                match Tracepoint::from_full_name(name) {
                    Some(tp) => tracepoints.push(tp),
                    None if !of_provider.is_empty() => tracepoints.extend(of_provider),
                    None => return Err(format!("unknown tracepoint {name:?}")),
                }
            }
            Ok(tracepoints)
        }
    }
}

fn c(s: &str) -> CString {
    CString::new(s).expect("simulated strings have no NUL")
}

/// A probe site of `usdt.c`, by argument list.
#[derive(Clone, Copy)]
enum Site {
    Message(MessageSite),
    Connection(ConnectionSite),
    ClosedConnection(ClosedConnectionSite),
    Misbehaving,
    MempoolAdded,
    MempoolRemoved,
    MempoolReplaced,
    MempoolRejected,
    BlockConnected,
    AddrmanAttemptAdd,
    AddrmanMoveToGood,
    UtxocacheCoin(CoinSite),
    UtxocacheFlush,
}

type MessageSite = unsafe extern "C" fn(i64, *const c_char, *const c_char, *const c_char, usize, *const u8) -> bool;
type ConnectionSite = unsafe extern "C" fn(i64, *const c_char, *const c_char, u32, usize) -> bool;
type ClosedConnectionSite = unsafe extern "C" fn(i64, *const c_char, *const c_char, u32, i64) -> bool;
type CoinSite = unsafe extern "C" fn(*const u8, u32, u32, i64, bool) -> bool;

/// The probe site of each tracepoint: exhaustive, so a tracepoint added to the table does not
/// build until the simulator can fire it.
fn site(tp: Tracepoint) -> Site {
    use Tracepoint as T;
    match tp {
        T::NetInboundMessage => Site::Message(sim_net_inbound_message),
        T::NetOutboundMessage => Site::Message(sim_net_outbound_message),
        T::NetInboundConnection => Site::Connection(sim_net_inbound_connection),
        T::NetOutboundConnection => Site::Connection(sim_net_outbound_connection),
        T::NetClosedConnection => Site::ClosedConnection(sim_net_closed_connection),
        T::NetEvictedInboundConnection => Site::ClosedConnection(sim_net_evicted_inbound_connection),
        T::NetMisbehavingConnection => Site::Misbehaving,
        T::MempoolAdded => Site::MempoolAdded,
        T::MempoolRemoved => Site::MempoolRemoved,
        T::MempoolReplaced => Site::MempoolReplaced,
        T::MempoolRejected => Site::MempoolRejected,
        T::ValidationBlockConnected => Site::BlockConnected,
        T::AddrmanAttemptAdd => Site::AddrmanAttemptAdd,
        T::AddrmanMoveToGood => Site::AddrmanMoveToGood,
        T::UtxocacheAdd => Site::UtxocacheCoin(sim_utxocache_add),
        T::UtxocacheSpent => Site::UtxocacheCoin(sim_utxocache_spent),
        T::UtxocacheUncache => Site::UtxocacheCoin(sim_utxocache_uncache),
        T::UtxocacheFlush => Site::UtxocacheFlush,
    }
}

/// A message's type where Bitcoin Core passes it from: `std::string::c_str()` of at most 12
/// characters, which libstdc++ keeps in the string's own 16-byte buffer, the bytes after the
/// NUL left from before. Kept from hit to hit, a shorter type leaves a longer one's tail there.
struct MessageType([u8; 16]);

impl MessageType {
    fn new() -> Self {
        MessageType([0xa5; 16])
    }

    fn set(&mut self, message_type: &str) -> *const c_char {
        let bytes = message_type.as_bytes();
        assert!(
            bytes.len() < self.0.len() && !bytes.contains(&0),
            "a message type that fits the inline buffer, without NUL"
        );
        self.0[..bytes.len()].copy_from_slice(bytes);
        self.0[bytes.len()] = 0;
        self.0.as_ptr().cast()
    }
}

/// What a message's arguments are written into, kept from hit to hit.
struct MessageBuffers {
    payload: Vec<u8>,
    message_type: MessageType,
}

/// A payload whose first bytes are readable and the rest not (`--unreadable-from`): the
/// readable bytes end where an inaccessible (`PROT_NONE`) page begins.
struct CutPayload {
    map: *mut std::ffi::c_void,
    map_len: usize,
    start: *const u8,
}

impl CutPayload {
    /// `readable`, followed by at least `unreadable` bytes that cannot be read.
    fn new(readable: &[u8], unreadable: usize) -> CutPayload {
        let page = rustix::param::page_size();
        let front = readable.len().div_ceil(page) * page;
        let map_len = front + unreadable.div_ceil(page).max(1) * page;
        // SAFETY: a new private anonymous mapping, which nothing else refers to; the bytes
        // copied lie in its readable front, ending at its first inaccessible byte.
        unsafe {
            let map = mm::mmap_anonymous(
                std::ptr::null_mut(),
                map_len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
            .expect("map a payload's pages");
            mm::mprotect(map.cast::<u8>().add(front).cast(), map_len - front, MprotectFlags::empty())
                .expect("make a payload's tail unreadable");
            let start = map.cast::<u8>().add(front - readable.len());
            std::ptr::copy_nonoverlapping(readable.as_ptr(), start, readable.len());
            CutPayload { map, map_len, start }
        }
    }
}

impl Drop for CutPayload {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, which only this value refers to.
        unsafe { mm::munmap(self.map, self.map_len) }.expect("unmap a payload's pages");
    }
}

/// Which of a message's payload bytes a tracer can read.
#[derive(Clone, Copy)]
enum Readable {
    All,
    /// The pointer itself points into the never-mapped first page.
    None,
    /// Up to this byte (`--unreadable-from`).
    Before(usize),
}

/// Runs the probe site of `tp`; true if a tracer was attached (the semaphore was set). A
/// message's payload is as `readable` says.
fn fire(tp: Tracepoint, args: &Args, readable: Readable, buffers: &mut MessageBuffers) -> bool {
    // SAFETY: every pointer is to a live, NUL-terminated string or a buffer of the stated
    // length, valid for the duration of the call; an unreadable payload is only handed to the
    // tracer, which reads user memory with checked reads.
    unsafe {
        match (site(tp), args) {
            (Site::Message(f), Args::Message { peer_id, addr, conn_type, message }) => {
                let MessageBuffers { payload, message_type } = buffers;
                payload.clear();
                message.write(payload);
                let cut;
                let data = match readable {
                    Readable::All => payload.as_ptr(),
                    Readable::None => std::ptr::dangling(),
                    Readable::Before(end) => {
                        // Below --message-size, every payload's size (`main` checks).
                        cut = CutPayload::new(&payload[..end], payload.len() - end);
                        cut.start
                    }
                };
                let msg_type = message_type.set(message.command());
                f(*peer_id, c(addr).as_ptr(), c(conn_type).as_ptr(), msg_type, payload.len(), data)
            }
            (Site::Connection(f), Args::Connection { peer_id, addr, conn_type, network, existing_connections }) => {
                f(*peer_id, c(addr).as_ptr(), c(conn_type).as_ptr(), *network, *existing_connections as usize)
            }
            (
                Site::ClosedConnection(f),
                Args::ClosedConnection { peer_id, addr, conn_type, network, time_established },
            ) => f(*peer_id, c(addr).as_ptr(), c(conn_type).as_ptr(), *network, *time_established),
            (Site::Misbehaving, Args::Misbehaving { peer_id, message }) => {
                sim_net_misbehaving_connection(*peer_id, c(message).as_ptr())
            }
            (Site::MempoolAdded, Args::MempoolAdded { txid, vsize, fee }) => {
                sim_mempool_added(txid.as_ptr(), *vsize, *fee)
            }
            (Site::MempoolRemoved, Args::MempoolRemoved { txid, reason, vsize, fee, entry_time }) => {
                sim_mempool_removed(txid.as_ptr(), c(reason).as_ptr(), *vsize, *fee, *entry_time)
            }
            (
                Site::MempoolReplaced,
                Args::MempoolReplaced {
                    replaced_txid,
                    replaced_vsize,
                    replaced_fee,
                    replaced_entry_time,
                    replacement_id,
                    replacement_vsize,
                    replacement_fee,
                    replaced_by_tx,
                },
            ) => sim_mempool_replaced(
                replaced_txid.as_ptr(),
                *replaced_vsize,
                *replaced_fee,
                *replaced_entry_time,
                replacement_id.as_ptr(),
                *replacement_vsize,
                *replacement_fee,
                *replaced_by_tx,
            ),
            (Site::MempoolRejected, Args::MempoolRejected { txid, reason }) => {
                sim_mempool_rejected(txid.as_ptr(), c(reason).as_ptr())
            }
            (
                Site::BlockConnected,
                Args::BlockConnected { hash, height, transactions, inputs, sigops, connection_time_ns },
            ) => sim_validation_block_connected(
                hash.as_ptr(),
                *height,
                *transactions as usize,
                *inputs,
                *sigops,
                *connection_time_ns,
            ),
            (
                Site::AddrmanAttemptAdd,
                Args::AddrmanAttemptAdd { inserted, bucket, bucket_pos, addr, addr_as, source, source_as },
            ) => sim_addrman_attempt_add(
                *inserted,
                *bucket,
                *bucket_pos,
                c(addr).as_ptr(),
                *addr_as,
                c(source).as_ptr(),
                *source_as,
            ),
            (
                Site::AddrmanMoveToGood,
                Args::AddrmanMoveToGood { bucket, bucket_pos, addr, addr_as, source, source_as },
            ) => sim_addrman_move_to_good(
                *bucket,
                *bucket_pos,
                c(addr).as_ptr(),
                *addr_as,
                c(source).as_ptr(),
                *source_as,
            ),
            (Site::UtxocacheCoin(f), Args::UtxocacheCoin { txid, index, height, value, is_coinbase }) => {
                f(txid.as_ptr(), *index, *height, *value, *is_coinbase)
            }
            (
                Site::UtxocacheFlush,
                Args::UtxocacheFlush { duration_us, mode, coins_count, coins_mem_usage, for_prune },
            ) => sim_utxocache_flush(*duration_us, *mode, *coins_count, *coins_mem_usage, *for_prune),
            (_, args) => unreachable!("tracepoint_simulator::args built {args:?} for another site than {tp}'s"),
        }
    }
}

/// Keeps freed heap pages for the next hit. Each hit builds its arguments afresh; a 4 MB
/// block's transactions take 4 MB of heap that glibc's default handed back to the kernel
/// after every hit, so that the next faulted it in again: more CPU than the publisher spent on
/// the block, taken from the machine the benchmark measures (docs/performance.md).
#[cfg(target_env = "gnu")]
fn keep_heap_pages() {
    // SAFETY: mallopt only sets a parameter of the allocator, before any other thread runs.
    unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20) };
}

fn main() -> ExitCode {
    node::private_umask();
    #[cfg(target_env = "gnu")]
    keep_heap_pages();
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("tracepoint-simulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tracepoints = match parse_tracepoints(&cli.tracepoints) {
        Ok(tps) => tps,
        Err(e) => {
            eprintln!("tracepoint-simulator: {e}");
            return ExitCode::from(2);
        }
    };
    let workload = Workload { message_type: cli.message_type, message_size: cli.message_size, garbage: cli.garbage };
    if let Err(e) = workload.check() {
        eprintln!("tracepoint-simulator: {e}");
        return ExitCode::from(2);
    }
    if let (Some(from), Some(size)) = (cli.unreadable_from, workload.message_size) {
        if from >= size {
            eprintln!("tracepoint-simulator: --unreadable-from must be below --message-size, or nothing is unreadable");
            return ExitCode::from(2);
        }
    }
    let varies = cli.rate > 0.0 || cli.ping_clock || cli.unreadable_every.is_some();
    if cli.lean && (tracepoints != [Tracepoint::NetInboundMessage] || cli.threads != 1 || varies) {
        eprintln!(
            "tracepoint-simulator: --lean fires only net:inbound_message, from one thread, without --rate, \
             --ping-clock or --unreadable-every"
        );
        return ExitCode::from(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).expect("install signal handler");
    }
    let _pid_file = match node::PidFile::location(cli.datadir.as_deref(), cli.pid.as_deref(), cli.regtest)
        .and_then(|path| path.map(node::PidFile::write).transpose())
    {
        Ok(pid_file) => pid_file,
        Err(e) => {
            eprintln!("tracepoint-simulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(command) = cli.startupnotify.clone() {
        // bitcoind runs it on a thread of its own, detached (`StartupNotify` in src/init.cpp).
        std::thread::spawn(move || node::run_command(&command));
    }
    if cli.start_on_stdin {
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).is_err() {
            eprintln!("tracepoint-simulator: cannot read standard input");
            return ExitCode::from(2);
        }
    }

    // Bitcoin Core fires from several threads at once (message handler, socket handler,
    // connection opener, validation): each thread here fires its share of the tracepoints,
    // each tracepoint from one thread, so that its events keep their firing order.
    let rounds = Rounds {
        count: cli.count,
        period: (cli.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / cli.rate)),
        deadline: cli.seconds.map(Duration::from_secs_f64),
        seed: cli.seed,
        workload: &workload,
        ping_clock: cli.ping_clock,
        unreadable_every: cli.unreadable_every,
        unreadable: cli.unreadable_from.map_or(Readable::None, Readable::Before),
        stop: &stop,
    };
    let threads = (cli.threads as usize).min(tracepoints.len()).max(1);
    let shares: Vec<Vec<Tracepoint>> =
        (0..threads).map(|t| tracepoints.iter().copied().skip(t).step_by(threads).collect()).collect();
    // Each share from a worker thread named as one of Core's; the main thread only waits, as
    // bitcoind's does until shutdown. A tracer that caught hits of the process's main thread
    // only (as uprobe_multi's pid filter did on some kernels) would catch nothing here.
    let results: Vec<Fired> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(t, share)| {
                let (rounds, lean) = (&rounds, cli.lean);
                std::thread::Builder::new()
                    .name(firing_thread_name(t))
                    .spawn_scoped(scope, move || if lean { fire_lean(rounds) } else { fire_rounds(share, rounds) })
                    .expect("start a firing thread")
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a firing thread panicked")).collect()
    });
    // Time spent at the probe sites, arguments' preparation included, by all threads.
    let fire_ns: u128 = results.iter().map(|r| r.fire_ns).sum();
    std::thread::sleep(Duration::from_secs_f64(cli.linger));
    // Each on a thread of its own, all waited for (`ShutdownNotify` in src/init.cpp).
    std::thread::scope(|scope| {
        for command in &cli.shutdownnotify {
            scope.spawn(|| node::run_command(command));
        }
    });
    // Stopped as bitcoind is (SIGTERM, SIGINT), it closes every connection it holds, from its
    // main thread, before it deletes its pid file: a tracer that detaches before bitcoind has
    // exited misses these.
    let at_shutdown =
        (stop.load(Ordering::Relaxed) && tracepoints.contains(&Tracepoint::NetClosedConnection)).then(|| {
            let mut buffers = MessageBuffers { payload: Vec::new(), message_type: MessageType::new() };
            (0..CONNECTED_PEERS)
                .filter(|&peer| {
                    fire(Tracepoint::NetClosedConnection, &disconnection(cli.seed, peer), Readable::All, &mut buffers)
                })
                .count()
        });
    for tp in &tracepoints {
        let (t, i) = shares
            .iter()
            .enumerate()
            .find_map(|(t, share)| Some((t, share.iter().position(|s| s == tp)?)))
            .expect("every tracepoint has its thread");
        let traced = match results[t].traced_rounds[i] {
            Some((first, last)) => format!(" first_traced={first} last_traced={last}"),
            None => String::new(),
        };
        println!("{tp} fired={} untraced={} fire_ns={fire_ns}{traced}", results[t].fired[i], results[t].untraced[i]);
    }
    if let Some(traced) = at_shutdown {
        println!("{} at_shutdown={CONNECTED_PEERS} traced_at_shutdown={traced}", Tracepoint::NetClosedConnection);
    }
    ExitCode::SUCCESS
}

/// The name of firing thread `t`: Bitcoin Core's threads that fire tracepoints (src/net.cpp's
/// message handler, socket handler and connection opener, src/init.cpp's block import), then
/// its RPC workers (src/httpserver.cpp), which fire mempool events for sent transactions. The
/// names are Core's; which tracepoints each fires follows `--threads`' dealing, not Core's.
fn firing_thread_name(t: usize) -> String {
    const CORE: [&str; 4] = ["b-msghand", "b-net", "b-opencon", "b-initload"];
    CORE.get(t).map_or_else(|| format!("b-httpworker.{}", t - CORE.len()), |name| name.to_string())
}

/// What every firing thread does.
struct Rounds<'a> {
    /// Rounds to fire; 0 = until stopped.
    count: u64,
    /// Time per round, if rate-limited.
    period: Option<Duration>,
    deadline: Option<Duration>,
    seed: u64,
    workload: &'a Workload,
    ping_clock: bool,
    unreadable_every: Option<u64>,
    /// What an unreadable round's payload leaves readable.
    unreadable: Readable,
    stop: &'a AtomicBool,
}

impl Rounds<'_> {
    /// Whether to fire on after `done` rounds, begun at `start`: rounds left, no signal, time
    /// left.
    fn go_on(&self, done: u64, start: Instant) -> bool {
        (self.count == 0 || done < self.count)
            && !self.stop.load(Ordering::Relaxed)
            && self.deadline.is_none_or(|d| start.elapsed() < d)
    }
}

/// One thread's firings, per tracepoint of its share.
struct Fired {
    fired: Vec<u64>,
    untraced: Vec<u64>,
    /// The first and last round a tracer saw: a tracer attached to a node that is already
    /// firing, and detached from one that fires on, sees the rounds between.
    traced_rounds: Vec<Option<(u64, u64)>>,
    fire_ns: u128,
}

/// `--lean`: net:inbound_message with round 0's arguments, in batches from
/// `sim_net_inbound_message_loop` (usdt.c), for `rounds`.
fn fire_lean(rounds: &Rounds<'_>) -> Fired {
    const BATCH: u64 = 1024;
    let mut out = Fired { fired: vec![0], untraced: vec![0], traced_rounds: vec![None], fire_ns: 0 };
    let Args::Message { peer_id, addr, conn_type, message } =
        args(Tracepoint::NetInboundMessage, rounds.seed, 0, rounds.workload)
    else {
        unreachable!("net:inbound_message has a message's arguments")
    };
    let (addr, conn_type, payload) = (c(&addr), c(conn_type), message.serialize());
    let mut message_type = MessageType::new();
    let command = message_type.set(message.command());
    let start = Instant::now();
    let mut done = 0u64;
    while rounds.go_on(done, start) {
        let batch = if rounds.count == 0 { BATCH } else { BATCH.min(rounds.count - done) };
        let hits = Instant::now();
        // SAFETY: the strings are live and NUL-terminated and the payload a live buffer of its
        // length, for the duration of the call.
        let fired = unsafe {
            sim_net_inbound_message_loop(
                batch,
                peer_id,
                addr.as_ptr(),
                conn_type.as_ptr(),
                command,
                payload.len(),
                payload.as_ptr(),
            )
        };
        out.fire_ns += hits.elapsed().as_nanos();
        out.fired[0] += fired;
        out.untraced[0] += batch - fired;
        done += batch;
    }
    out
}

/// Fires `tracepoints` once per round, in order, for `rounds`.
fn fire_rounds(tracepoints: &[Tracepoint], rounds: &Rounds<'_>) -> Fired {
    let mut out = Fired {
        fired: vec![0; tracepoints.len()],
        untraced: vec![0; tracepoints.len()],
        traced_rounds: vec![None; tracepoints.len()],
        fire_ns: 0,
    };
    let start = Instant::now();
    let mut seq = 0u64;
    let mut buffers = MessageBuffers { payload: Vec::new(), message_type: MessageType::new() };
    while rounds.go_on(seq, start) {
        for (i, tp) in tracepoints.iter().enumerate() {
            let mut args = args(*tp, rounds.seed, seq, rounds.workload);
            if let Args::Message { message: message @ (Message::Ping(_) | Message::OldPing), .. } = &mut args {
                if rounds.ping_clock {
                    *message = Message::Ping(monotonic_ns());
                }
            }
            let unreadable = rounds.unreadable_every.is_some_and(|n| (seq + 1).is_multiple_of(n));
            let readable = if unreadable { rounds.unreadable } else { Readable::All };
            let hit = Instant::now();
            let traced = fire(*tp, &args, readable, &mut buffers);
            out.fire_ns += hit.elapsed().as_nanos();
            if traced {
                out.fired[i] += 1;
                let first = out.traced_rounds[i].map_or(seq, |(first, _)| first);
                out.traced_rounds[i] = Some((first, seq));
            } else {
                out.untraced[i] += 1;
            }
        }
        seq += 1;
        if let Some(period) = rounds.period {
            if let Some(wait) = (start + period * seq as u32).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What this process reads at `at` for `len` bytes, as a tracer reads another's memory;
    /// `None` unless every byte could be read.
    fn read(at: *const u8, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
        let remote = libc::iovec { iov_base: at.cast_mut().cast(), iov_len: len };
        // SAFETY: writes at most `len` bytes into `buf`; the kernel checks the remote range.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        (n == len as isize).then_some(buf)
    }

    #[test]
    fn a_cut_payload_reads_whole_up_to_its_cut_and_not_a_byte_past_it() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for cut_at in [0, 1, 4096, 90_000] {
            let cut = CutPayload::new(&payload[..cut_at], payload.len() - cut_at);
            assert_eq!(read(cut.start, cut_at).as_deref(), Some(&payload[..cut_at]), "{cut_at}");
            // SAFETY: the address is only handed to the kernel's checked read.
            let past = unsafe { cut.start.add(cut_at) };
            assert_eq!(read(past, 1), None, "{cut_at}");
            // SAFETY: as above.
            let across = unsafe { cut.start.add(cut_at.saturating_sub(1)) };
            assert_eq!(read(across, 2), None, "{cut_at}");
        }
    }
}
