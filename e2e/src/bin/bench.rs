//! The extractor's benchmark: for each workload, a local nats-server, the simulator, the
//! loader (as the loader's user, CAP_BPF and CAP_PERFMON only), the publisher and a NATS
//! subscriber that counts and checks what arrives; then one table. A measurement, not a
//! test: run it as root on an otherwise idle machine, from a release build
//! (`scripts/bench.sh`).

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use clap::Parser;
use e2e::{
    bins, free_address, scrape_metrics, start_loader, start_publisher, Firing, NatsServer, Simulator, TempDir,
    LOADER_UID,
};
use futures_util::StreamExt;
use libbpf_rs::query::ProgInfoIter;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use prost::Message;
use publisher::proto::ebpf_extractor::ebpf::EbpfEvent;
use publisher::proto::ebpf_extractor::message::message_event::Msg;
use publisher::proto::ebpf_extractor::Ebpf;
use publisher::proto::event::{event::PeerObserverEvent, Event};
use rustix::io::Errno;
use rustix::process::Pid;
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use tracepoint_simulator::monotonic_ns;

/// Measures the extractor end to end and prints one table.
#[derive(Parser)]
struct Cli {
    /// Seconds each rate-bound workload fires
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Run only the workloads whose name contains this
    #[arg(long)]
    only: Option<String>,
    /// Also give the BPF programs' own time per run, from the kernel's BPF run-time statistics
    /// (kept on for the whole run: they add a clock read or two to every hit, the floor's too)
    #[arg(long)]
    bpf_stats: bool,
}

/// What the subscriber checks each arriving event against.
#[derive(Clone, Copy)]
enum Check {
    /// `ping` messages whose nonce is their firing time: also gives the latency.
    Ping,
    /// Messages of this command and, if given, this payload size.
    Message(&'static str, Option<u64>),
    /// Any tracepoint; counted per tracepoint.
    Events,
}

struct Workload {
    name: String,
    tracepoints: &'static str,
    /// Rounds to fire; 0 = for `--seconds`.
    rounds: u64,
    /// Rounds per second; 0 = as fast as the simulator can.
    rate: u64,
    flags: &'static [&'static str],
    /// The JetStream stream the publisher publishes into (`--nats-jetstream-stream`), if any.
    jetstream_stream: Option<&'static str>,
    check: Check,
    cpus: Cpus,
}

/// Where a workload's processes run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cpus {
    /// Wherever the scheduler puts them, as on a node.
    Shared,
    /// The simulator on CPU 0 alone; the loader, publisher, nats-server and the benchmark on
    /// the others. The traced thread's time per hit without the caches and CPU time it shares
    /// with them otherwise: what the BPF program itself adds to the trap.
    FiringThreadAlone,
}

/// The workloads, the sustained blocks fired at `block_rate` a second (the rate a plain NATS
/// client reaches with messages of their size, measured first).
fn workloads(block_rate: u64) -> Vec<Workload> {
    let ping = |name: &str, rate| Workload {
        name: name.into(),
        tracepoints: "net:inbound_message",
        rounds: 0,
        rate,
        flags: &["--message-type", "ping", "--ping-clock"],
        check: Check::Ping,
        jetstream_stream: None,
        cpus: Cpus::Shared,
    };
    vec![
        ping("ping 10k/s", 10_000),
        ping("ping 50k/s", 50_000),
        ping("ping 100k/s", 100_000),
        Workload { cpus: Cpus::FiringThreadAlone, ..ping("ping 100k/s, the firing thread alone on CPU 0", 100_000) },
        ping("ping 150k/s", 150_000),
        ping("ping 200k/s", 200_000),
        ping("ping, max rate", 0),
        // The same pings from one C loop with fixed arguments (the simulator's --lean), the
        // kind of lean firing program behind issue 16's overload figure for upstream.
        Workload {
            name: "ping, max rate, lean C loop".into(),
            tracepoints: "net:inbound_message",
            rounds: 0,
            rate: 0,
            flags: &["--message-type", "ping", "--lean"],
            check: Check::Message("ping", Some(8)),
            jetstream_stream: None,
            cpus: Cpus::Shared,
        },
        Workload {
            name: "12 tracepoints mixed, max rate".into(),
            tracepoints: "default",
            rounds: 0,
            rate: 0,
            flags: &[],
            check: Check::Events,
            jetstream_stream: None,
            cpus: Cpus::Shared,
        },
        // The same, each event acknowledged by JetStream (README, "Durable delivery"): its cost
        // against core publishing.
        Workload {
            name: "12 tracepoints mixed, max rate, JetStream".into(),
            tracepoints: "default",
            rounds: 0,
            rate: 0,
            flags: &[],
            jetstream_stream: Some("BENCH"),
            check: Check::Events,
            cpus: Cpus::Shared,
        },
        // Bitcoin Core fires from several threads at once: 4 threads, 3 tracepoints each, at
        // 20,834 rounds/s each, a combined 250k events/s.
        Workload {
            name: "12 tracepoints mixed, 4 threads, 250k/s".into(),
            tracepoints: "default",
            rounds: 0,
            rate: 20_834,
            flags: &["--threads", "4"],
            check: Check::Events,
            jetstream_stream: None,
            cpus: Cpus::Shared,
        },
        Workload {
            name: "inv of 3.6 KB, max rate".into(),
            tracepoints: "net:inbound_message",
            rounds: 0,
            rate: 0,
            flags: &["--message-type", "inv", "--message-size", "3600"],
            check: Check::Message("inv", None),
            jetstream_stream: None,
            cpus: Cpus::Shared,
        },
        Workload {
            name: "inv of 1.8 MB, max rate".into(),
            tracepoints: "net:inbound_message",
            rounds: 0,
            rate: 0,
            flags: &["--message-type", "inv", "--message-size", "1800000"],
            check: Check::Message("inv", None),
            jetstream_stream: None,
            cpus: Cpus::Shared,
        },
        Workload {
            name: "block of 4,000,000 B, 100 back to back".into(),
            tracepoints: "net:inbound_message",
            rounds: 100,
            rate: 0,
            flags: &["--message-size", "4000000"],
            check: Check::Message("block", Some(4_000_000)),
            jetstream_stream: None,
            cpus: Cpus::Shared,
        },
        Workload {
            name: format!("block of 4,000,000 B, {block_rate}/s (the plain NATS client's rate)"),
            tracepoints: "net:inbound_message",
            rounds: 0,
            rate: block_rate,
            flags: &["--message-size", "4000000"],
            check: Check::Message("block", Some(4_000_000)),
            jetstream_stream: None,
            cpus: Cpus::Shared,
        },
        Workload {
            name: "mempool:removed burst of 5,000".into(),
            tracepoints: "mempool:removed",
            rounds: 5_000,
            rate: 0,
            flags: &[],
            check: Check::Events,
            jetstream_stream: None,
            cpus: Cpus::Shared,
        },
    ]
}

/// User plus system CPU time of a process, all threads, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat; `fields` starts at field 3.
    fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum()).unwrap_or(0)
}

fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// Peak resident set size, in bytes.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident set size without the mappings of BPF maps, in bytes. The loader reads the ring
/// buffers through such mappings (the data area twice); their pages are the maps' own
/// memory, counted once as the maps' `memlock`.
fn rss_without_bpf_maps(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut total, mut in_map) = (0, false);
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            if !in_map {
                total += kb.trim().trim_end_matches(" kB").parse::<u64>().unwrap_or(0) * 1024;
            }
        } else if line.split_whitespace().next().is_some_and(|field| field.contains('-')) {
            // A mapping's first line: "start-end perms offset dev inode [path]".
            in_map = line.ends_with("anon_inode:bpf-map");
        }
    }
    total
}

/// Kernel memory of the BPF maps a process holds, from the `memlock` of each map fd.
fn bpf_map_bytes(pid: u32) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return 0 };
    fds.filter_map(|fd| std::fs::read_to_string(fd.ok()?.path()).ok())
        .filter(|info| info.lines().any(|l| l.starts_with("map_type:")))
        .filter_map(|info| {
            info.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Busy and total jiffies of all CPUs, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = values.iter().sum();
    // idle and iowait.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Sums the `peer_observer_ebpf_<family>` samples by their `cause` or `reason` label (or the
/// family name when it has neither).
fn drops_by_cause(metrics: &str) -> BTreeMap<String, u64> {
    let mut drops = BTreeMap::new();
    for family in e2e::LOSS_FAMILIES {
        let prefix = format!("peer_observer_ebpf_{family}{{");
        for line in metrics.lines().filter_map(|l| l.strip_prefix(&prefix)) {
            let Some((labels, value)) = line.rsplit_once("} ") else { continue };
            let cause = labels
                .split(',')
                .find_map(|kv| kv.strip_prefix("cause=\"").or_else(|| kv.strip_prefix("reason=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_else(|| family.trim_end_matches("_total").to_string());
            *drops.entry(cause).or_default() += value.parse::<u64>().unwrap_or(0);
        }
    }
    drops
}

#[derive(Default)]
struct Row {
    fired: u64,
    delivered: u64,
    intact: u64,
    drops: BTreeMap<String, u64>,
    seconds: f64,
    bytes: u64,
    loader_cpu_s: f64,
    publisher_cpu_s: f64,
    loader_rss: u64,
    publisher_rss: u64,
    bpf_maps: u64,
    latencies_ns: Vec<u64>,
    /// Time the firing thread spent per hit.
    ns_per_hit: f64,
    /// Run time and runs of the loader's BPF programs (`--bpf-stats`).
    program_runs: (u64, u64),
    machine_busy: f64,
    load: String,
}

/// CPU ticks and peak RSS of the loader and the publisher, sampled until they exit: the
/// loader exits with the simulator, so its figures are taken while it runs.
#[derive(Default, Clone, Copy)]
struct Usage {
    loader_ticks: u64,
    loader_rss: u64,
    publisher_ticks: u64,
    publisher_rss: u64,
    samples: u64,
    /// With `--bpf-stats`: the loader's programs are those loaded after this id.
    programs_after: Option<u32>,
    program_runs: (u64, u64),
}

/// Samples between two reads of the loader's smaps: walking its ring mappings costs enough
/// CPU to show in the latencies.
const SMAPS_EVERY: u64 = 25;

fn sample(loader: u32, publisher: u32, last: &mut Usage) {
    let ticks = cpu_ticks(loader);
    if ticks > 0 {
        last.loader_ticks = ticks;
    }
    if last.samples.is_multiple_of(SMAPS_EVERY) {
        last.loader_rss = last.loader_rss.max(rss_without_bpf_maps(loader));
        // Once the loader has exited, its programs are gone: the last figures stay.
        let runs = last.programs_after.map_or((0, 0), program_runs);
        if runs.1 > 0 {
            last.program_runs = runs;
        }
    }
    last.samples += 1;
    let (ticks, rss) = (cpu_ticks(publisher), peak_rss(publisher));
    if rss > 0 {
        (last.publisher_ticks, last.publisher_rss) = (ticks, rss);
    }
}

/// Turns the kernel's BPF run-time statistics on for as long as the returned descriptor is
/// open: off again when the benchmark exits, however it exits.
fn enable_bpf_stats() -> OwnedFd {
    // SAFETY: a plain system call wrapper; a non-negative result is a descriptor we now own.
    let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    assert!(fd >= 0, "cannot turn on BPF run-time statistics: {}", std::io::Error::from_raw_os_error(-fd));
    // SAFETY: see above.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Id of the newest BPF program loaded.
fn last_program_id() -> u32 {
    ProgInfoIter::default().map(|p| p.id).max().unwrap_or(0)
}

/// Summed run time and runs of the BPF programs loaded after `after`, as the kernel counts
/// them while its BPF run-time statistics are on.
fn program_runs(after: u32) -> (u64, u64) {
    ProgInfoIter::default()
        .filter(|p| p.id > after)
        .fold((0, 0), |(ns, runs), p| (ns + p.run_time_ns, runs + p.run_cnt))
}

/// How long the stream must stay quiet, once the simulator is done, for the run to end.
const QUIET: Duration = Duration::from_secs(2);

async fn run(nats: &NatsServer, w: &Workload, seconds: f64, bpf_stats: bool) -> Row {
    let dir = TempDir::new("bench");
    let socket = dir.path().join("publisher.sock");
    let metrics = free_address();
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(&nats.address)
        .await
        .expect("connect subscriber");
    let mut subscriber = e2e::subscribe_in_place(&client, "*").await;
    let loader_uid = LOADER_UID.to_string();
    let mut publisher_flags = vec!["--loader-uid", &loader_uid, "--metrics-address", &metrics];
    if let Some(stream) = w.jetstream_stream {
        publisher_flags.extend(["--nats-jetstream-stream", stream]);
    }
    let mut publisher = start_publisher(&nats.address, &socket, &publisher_flags).await;
    let (rate, duration) = (w.rate.to_string(), seconds.to_string());
    let mut flags = w.flags.to_vec();
    flags.extend(["--rate", &rate, "--linger", "1"]);
    if w.rounds == 0 {
        flags.extend(["--seconds", &duration]);
    }
    let simulator = Simulator::start_with(w.tracepoints, w.rounds, 5, &flags);
    let programs_after = bpf_stats.then(last_program_id);
    let loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;
    let (loader_pid, publisher_pid) = (loader.id().expect("loader"), publisher.id().expect("publisher"));
    let mut row = Row { bpf_maps: bpf_map_bytes(loader_pid), ..Row::default() };
    let pinned = (w.cpus == Cpus::FiringThreadAlone)
        .then(|| Pinned::new(simulator.pid(), &[loader_pid, publisher_pid], &[nats.pid(), std::process::id()]));
    let mut before = Usage { programs_after, ..Usage::default() };
    sample(loader_pid, publisher_pid, &mut before);
    let machine_before = cpu_jiffies();

    let start = Instant::now();
    let mut last = start;
    let mut usage = before;
    let mut sampler = tokio::time::interval(Duration::from_millis(20));
    let mut firing = tokio::spawn(simulator.fire_timed());
    let mut fired: Option<Firing> = None;
    loop {
        let msg = match &fired {
            Some(f) if f.fired.values().sum::<u64>() == row.delivered => break,
            // Done firing: the rest, until the stream goes quiet.
            Some(_) => tokio::select! {
                msg = subscriber.next() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
                () = tokio::time::sleep_until((last + QUIET).into()) => break,
                _ = sampler.tick() => {
                    sample(loader_pid, publisher_pid, &mut usage);
                    continue;
                }
            },
            None => tokio::select! {
                done = &mut firing => {
                    fired = Some(done.expect("simulator task"));
                    continue;
                }
                msg = subscriber.next() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
                _ = sampler.tick() => {
                    sample(loader_pid, publisher_pid, &mut usage);
                    continue;
                }
            },
        };
        let received = monotonic_ns();
        last = Instant::now();
        row.bytes += msg.payload.len() as u64;
        row.delivered += 1;
        let event = Event::decode(msg.payload).expect("an event.Event");
        let Some(PeerObserverEvent::EbpfExtractor(Ebpf { ebpf_event })) = event.peer_observer_event else { continue };
        match (w.check, ebpf_event) {
            (Check::Ping, Some(EbpfEvent::Message(m))) => {
                if let Some(Msg::Ping(ping)) = m.msg {
                    row.intact += 1;
                    row.latencies_ns.push(received.saturating_sub(ping.value));
                }
            }
            (Check::Message(command, size), Some(EbpfEvent::Message(m))) => {
                let decoded = !matches!(m.msg, Some(Msg::Unknown(_)));
                if m.meta.command == command && size.is_none_or(|s| m.meta.size == s) && decoded {
                    row.intact += 1;
                }
            }
            (Check::Events, Some(_)) => row.intact += 1,
            _ => {}
        }
    }
    sample(loader_pid, publisher_pid, &mut usage);
    let machine_after = cpu_jiffies();
    let firing = match fired {
        Some(fired) => fired,
        None => firing.await.expect("simulator task"),
    };
    row.fired = firing.fired.values().sum();
    row.ns_per_hit = firing.fire_ns as f64 / (row.fired + firing.untraced).max(1) as f64;
    row.seconds = (last - start).as_secs_f64();
    // The loader's last drop totals reach the publisher as it exits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    row.drops = drops_by_cause(&scrape_metrics(&metrics));
    let tick = ticks_per_second();
    row.loader_cpu_s = (usage.loader_ticks - before.loader_ticks) as f64 / tick;
    row.publisher_cpu_s = (usage.publisher_ticks - before.publisher_ticks) as f64 / tick;
    (row.loader_rss, row.publisher_rss) = (usage.loader_rss, usage.publisher_rss);
    row.program_runs = usage.program_runs;
    let (busy, total) = (machine_after.0 - machine_before.0, machine_after.1 - machine_before.1);
    row.machine_busy = 100.0 * busy as f64 / total.max(1) as f64;
    row.load =
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').next().unwrap_or("?").to_string();
    let _ = e2e::stop_and_read_logs(&mut [&mut publisher]).await;
    drop(pinned);
    // The stream takes every subject the publisher publishes on: left in place, the server
    // would write every later workload's events to disk as well, and the reference client's
    // messages (another subject) not.
    if let Some(stream) = w.jetstream_stream {
        async_nats::jetstream::new(client).delete_stream(stream).await.expect("delete the JetStream stream");
    }
    row
}

/// A [`Cpus::FiringThreadAlone`] workload's CPU sets; those of the processes that outlive it
/// (nats-server, the benchmark) are set back when dropped.
struct Pinned {
    outliving: Vec<u32>,
    all: CpuSet,
}

impl Pinned {
    /// The benchmark may run on CPU 0 and another.
    fn possible() -> bool {
        sched_getaffinity(None).is_ok_and(|all| all.is_set(0) && all.count() > 1)
    }

    fn new(simulator: u32, others: &[u32], outliving: &[u32]) -> Pinned {
        let all = sched_getaffinity(None).expect("the benchmark's CPUs");
        let mut alone = CpuSet::new();
        alone.set(0);
        let mut rest = all;
        rest.unset(0);
        pin(simulator, &alone);
        for pid in others.iter().chain(outliving) {
            pin(*pid, &rest);
        }
        Pinned { outliving: outliving.to_vec(), all }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for pid in &self.outliving {
            pin(*pid, &self.all);
        }
    }
}

/// Puts every thread of process `pid` on `cpus`; its later threads inherit them.
fn pin(pid: u32, cpus: &CpuSet) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process' threads");
    for tid in tasks.flatten().filter_map(|task| task.file_name().to_str()?.parse().ok()) {
        match sched_setaffinity(Pid::from_raw(tid), cpus) {
            // A thread that exited meanwhile.
            Ok(()) | Err(Errno::SRCH) => {}
            Err(e) => panic!("cannot pin thread {tid} of {pid}: {e}"),
        }
    }
}

/// Time per hit of the simulator firing pings at `rate` a second (0 = its maximum), with the
/// no-op BPF program attached if `noop`, else untraced.
/// `None` if the no-op program saw none of the hits (its attachment did not take).
async fn floor(rate: u64, seconds: f64, noop: bool) -> Option<f64> {
    let (rate, seconds) = (rate.to_string(), seconds.to_string());
    let simulator = Simulator::start_with(
        "net:inbound_message",
        0,
        5,
        &["--message-type", "ping", "--rate", &rate, "--seconds", &seconds],
    );
    let mut storage = std::mem::MaybeUninit::uninit();
    let skel = extractor_bpf::noop::NoopSkelBuilder::default()
        .open(&mut storage)
        .and_then(|open| open.load())
        .expect("load the no-op BPF program");
    let _link = noop.then(|| {
        skel.progs
            .noop
            .attach_usdt(simulator.pid() as i32, &bins().simulator, "net", "inbound_message")
            .expect("attach the no-op BPF program")
    });
    let firing = simulator.fire_timed().await;
    let traced = firing.fired.values().sum::<u64>();
    if noop && traced == 0 {
        return None;
    }
    Some(firing.fire_ns as f64 / (traced + firing.untraced).max(1) as f64)
}

/// Size of the `block` messages the block workloads fire.
const BLOCK_BYTES: usize = 4_000_000;

/// Messages a second that reach a subscriber when a plain NATS client (async-nats, as the
/// publisher uses) publishes `size`-byte messages through `nats` as fast as it can for
/// `seconds`, flushing every few so that its buffer stays bounded: the reference for the
/// block workloads. The subscriber only counts, where the benchmark's decodes.
async fn plain_nats_rate(nats: &NatsServer, size: usize, seconds: f64) -> f64 {
    let subscriber = async_nats::connect(&nats.address).await.expect("connect the reference subscriber");
    let mut messages = e2e::subscribe_in_place(&subscriber, "reference").await;
    let counting = tokio::spawn(async move {
        let (mut received, mut first, mut last) = (0u64, None, Instant::now());
        while let Ok(Some(msg)) = tokio::time::timeout(QUIET, messages.next()).await {
            assert_eq!(msg.payload.len(), size, "reference message size");
            first.get_or_insert_with(Instant::now);
            last = Instant::now();
            received += 1;
        }
        (received, first.map_or(0.0, |first| (last - first).as_secs_f64()))
    });
    let client = async_nats::connect(&nats.address).await.expect("connect the reference publisher");
    let payload = bytes::Bytes::from(vec![0xa5; size]);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        client.publish("reference", payload.clone()).await.expect("publish a reference message");
        sent += 1;
        if sent.is_multiple_of(4) {
            client.flush().await.expect("flush reference messages");
        }
    }
    client.flush().await.expect("flush reference messages");
    let (received, elapsed) = counting.await.expect("reference subscriber");
    received.saturating_sub(1) as f64 / elapsed.max(1e-9)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e6
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = Cli::parse();
    let _bpf_stats = cli.bpf_stats.then(enable_bpf_stats);
    // JetStream on: one workload publishes into a stream.
    let nats = NatsServer::with_jetstream().await;
    // The floor first, on a quiet machine: the same pings at the same rates with a no-op BPF
    // program and nothing else running (a hit costs more at low rates, where caches are cold).
    let seconds = cli.seconds.min(3.0);
    let selected = |name: &str| cli.only.as_deref().is_none_or(|only| name.contains(only));
    let mut floors = BTreeMap::new();
    for w in workloads(0).iter().filter(|w| matches!(w.check, Check::Ping)) {
        if selected(&w.name) && !floors.contains_key(&w.rate) {
            // A floor whose probe saw nothing is measured again.
            for _ in 0..3 {
                if let Some(ns) = floor(w.rate, seconds, true).await {
                    floors.insert(w.rate, ns);
                    break;
                }
            }
        }
    }
    let untraced = floor(0, seconds, false).await.unwrap_or(f64::NAN);
    let list: Vec<String> = floors
        .iter()
        .map(|(rate, ns)| {
            format!("{ns:.0} ns at {}", if *rate == 0 { "max rate".into() } else { format!("{}k/s", rate / 1000) })
        })
        .collect();
    println!("Time per ping hit in the firing thread under a no-op BPF program (the floor): {}; untraced at max rate: {untraced:.0} ns.\n", list.join(", "));
    let mut block_rate = 0;
    if workloads(0).iter().any(|w| w.name.starts_with("block") && selected(&w.name)) {
        let rate = plain_nats_rate(&nats, BLOCK_BYTES, cli.seconds).await;
        println!(
            "A plain NATS client publishing {BLOCK_BYTES}-byte messages through the same server: {rate:.1} messages/s \
             ({:.0} MB/s) reached a subscriber.\n",
            rate * BLOCK_BYTES as f64 / 1e6
        );
        block_rate = (rate as u64).max(1);
    }
    println!(
        "| workload | fired | delivered | intact | dropped (cause) | delivered/s | MB/s | loader µs/event | publisher µs/event | \
         loader peak RSS MiB (without rings) | publisher peak RSS MiB | BPF maps MiB | memory total MiB | latency p50 / p99 / max ms | ns per hit (× floor) | machine busy % | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for w in workloads(block_rate) {
        if !selected(&w.name) {
            continue;
        }
        if w.cpus == Cpus::FiringThreadAlone && !Pinned::possible() {
            println!("| {} | not run: the benchmark may not use CPU 0 and another |", w.name);
            continue;
        }
        let mut r = run(&nats, &w, cli.seconds, cli.bpf_stats).await;
        r.latencies_ns.sort_unstable();
        let drops: Vec<String> =
            r.drops.iter().filter(|(_, n)| **n > 0).map(|(cause, n)| format!("{n} {cause}")).collect();
        let unaccounted = r.fired.saturating_sub(r.delivered + r.drops.values().sum::<u64>());
        let mut dropped = if drops.is_empty() { "0".to_string() } else { drops.join(", ") };
        if unaccounted > 0 {
            dropped.push_str(&format!(", {unaccounted} unaccounted"));
        }
        let per_event = |cpu_s: f64| {
            if r.delivered > 0 {
                format!("{:.2}", cpu_s * 1e6 / r.delivered as f64)
            } else {
                "–".into()
            }
        };
        let latency = if r.latencies_ns.is_empty() {
            "–".to_string()
        } else {
            let l = &r.latencies_ns;
            format!("{:.2} / {:.2} / {:.1}", percentile(l, 0.5), percentile(l, 0.99), percentile(l, 1.0))
        };
        let per_hit = match w.check {
            Check::Ping => match floors.get(&w.rate) {
                Some(floor) => format!("{:.0} ({:.2}×)", r.ns_per_hit, r.ns_per_hit / floor),
                None => format!("{:.0} (no floor)", r.ns_per_hit),
            },
            _ => format!("{:.0}", r.ns_per_hit),
        };
        let per_hit = match r.program_runs {
            (_, 0) => per_hit,
            (ns, runs) => format!("{per_hit}, program {:.0}", ns as f64 / runs as f64),
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.0} | {} |",
            w.name,
            r.fired,
            r.delivered,
            r.intact,
            dropped,
            r.delivered as f64 / r.seconds.max(1e-9),
            r.bytes as f64 / r.seconds.max(1e-9) / 1e6,
            per_event(r.loader_cpu_s),
            per_event(r.publisher_cpu_s),
            mb(r.loader_rss),
            mb(r.publisher_rss),
            mb(r.bpf_maps),
            mb(r.loader_rss + r.publisher_rss + r.bpf_maps),
            latency,
            per_hit,
            r.machine_busy,
            r.load,
        );
    }
}
