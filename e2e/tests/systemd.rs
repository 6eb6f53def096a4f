//! The systemd units pass `systemd-analyze verify` without a warning and score within the
//! hardening targets of `systemd-analyze security`; the socket only admits the loader's user;
//! the loader unit, started as systemd starts it, reaches a node deployed as Bitcoin Core's
//! own unit deploys it. (e2e/tests/under_systemd.rs runs the units under systemd itself.)

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use e2e::{
    assert_fired_exactly, bins, notify_socket, receive, start_publisher, wall_ms, NatsServer, NodeDir, Simulator,
    TempDir, BITCOIND_UID,
};
use ipc_protocol::Tracepoint;
use tokio::process::Command;

const UNITS: [&str; 4] = [
    "peer-observer-ebpf-publisher.socket",
    "peer-observer-ebpf-publisher.service",
    "peer-observer-ebpf-loader.service",
    "peer-observer-ebpf-loader.path",
];

/// The units, with ExecStart pointing at this build's binaries (verify checks they exist).
fn installed_units() -> TempDir {
    let dir = TempDir::new("units");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let bin_dir = bins().loader.parent().expect("bin dir").display().to_string();
    for unit in UNITS {
        let text = std::fs::read_to_string(source.join(unit)).expect("read unit");
        std::fs::write(dir.path().join(unit), text.replace("/usr/local/bin", &bin_dir)).expect("write unit");
    }
    dir
}

#[test]
fn units_verify_without_warnings() {
    let dir = installed_units();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(UNITS.map(|u| dir.path().join(u)))
        .output()
        .expect("run systemd-analyze (package systemd)");
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && output.trim().is_empty(), "{output}");
}

/// Bitcoin Core's own unit (`contrib/init/bitcoind.service`, ../shared/spec/deployment.md),
/// enabled at boot.
const BITCOIND_UNIT: &str = "[Unit]
Description=Bitcoin daemon
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/bitcoind -pid=/run/bitcoind/bitcoind.pid -conf=/etc/bitcoin/bitcoin.conf -datadir=/var/lib/bitcoind
Type=notify
PIDFile=/run/bitcoind/bitcoind.pid
Restart=on-failure
User=bitcoin
Group=bitcoin
RuntimeDirectory=bitcoind
RuntimeDirectoryMode=0710
StateDirectory=bitcoind
StateDirectoryMode=0710

[Install]
WantedBy=multi-user.target
";

/// README's `systemctl enable`, carried out by systemctl itself on a root of files (`--root`,
/// which needs no running systemd): the loader's .path unit and the publisher's socket are
/// active from boot, and the loader is no part of bitcoind's unit (the .path unit starts it
/// whenever bitcoind's pid file is there; e2e/tests/under_systemd.rs).
#[test]
fn enabling_the_units_watches_for_bitcoind_from_boot_on() {
    let root = TempDir::new("root");
    let units = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&units).expect("unit directory");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    for unit in UNITS {
        std::fs::copy(source.join(unit), units.join(unit)).expect("install unit");
    }
    std::fs::write(units.join("bitcoind.service"), BITCOIND_UNIT).expect("write bitcoind.service");
    let out = std::process::Command::new("systemctl")
        .arg(format!("--root={}", root.path().display()))
        .args(["enable", "bitcoind.service", "peer-observer-ebpf-publisher.socket", "peer-observer-ebpf-loader.path"])
        .output()
        .expect("run systemctl (package systemd)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wanted_by = |unit: &str| -> Vec<String> {
        let mut targets: Vec<String> = std::fs::read_dir(&units)
            .expect("unit directory")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok()?.strip_suffix(".wants").map(String::from))
            .filter(|target| units.join(format!("{target}.wants/{unit}")).symlink_metadata().is_ok())
            .collect();
        targets.sort();
        targets
    };
    assert_eq!(wanted_by("bitcoind.service"), ["multi-user.target"]);
    assert_eq!(wanted_by("peer-observer-ebpf-loader.path"), ["paths.target"]);
    assert_eq!(wanted_by("peer-observer-ebpf-loader.service"), Vec::<String>::new());
    assert_eq!(wanted_by("peer-observer-ebpf-publisher.socket"), ["sockets.target"]);
}

fn exposure(dir: &Path, unit: &str) -> f64 {
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(dir.join(unit))
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("no score in {text}"));
    line.split(": ").nth(1).and_then(|rest| rest.split_whitespace().next()).and_then(|n| n.parse().ok()).expect("score")
}

#[test]
fn units_meet_the_hardening_targets() {
    let dir = installed_units();
    let loader = exposure(dir.path(), "peer-observer-ebpf-loader.service");
    let publisher = exposure(dir.path(), "peer-observer-ebpf-publisher.service");
    assert!(loader <= 1.0, "loader exposure {loader}");
    assert!(publisher <= 1.1, "publisher exposure {publisher}");
}

#[test]
fn loader_unit_grants_exactly_cap_bpf_and_cap_perfmon_and_only_unix_sockets() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/peer-observer-ebpf-loader.service"),
    )
    .unwrap();
    let lines: Vec<&str> = unit.lines().collect();
    assert!(lines.contains(&"CapabilityBoundingSet=CAP_BPF CAP_PERFMON"));
    assert!(lines.contains(&"AmbientCapabilities=CAP_BPF CAP_PERFMON"));
    assert!(lines.contains(&"RestrictAddressFamilies=AF_UNIX"));
    let socket = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/peer-observer-ebpf-publisher.socket"),
    )
    .unwrap();
    let lines: Vec<&str> = socket.lines().collect();
    assert!(lines.contains(&"ListenSequentialPacket=/run/peer-observer-ebpf/publisher.sock"));
    assert!(lines.contains(&"SocketUser=peer-observer-ebpf-loader"));
    assert!(lines.contains(&"SocketMode=0600"));
}

/// The directives of a unit's `section` (`[Service]`, `[Path]`), each with its values in order
/// (an empty assignment resets the list, as in systemd).
fn directives(unit: &str, section: &str) -> BTreeMap<String, Vec<String>> {
    let mut directives = BTreeMap::<String, Vec<String>>::new();
    let mut in_section = false;
    for line in unit.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line.starts_with('[') {
            in_section = line == section;
            continue;
        }
        let Some((key, value)) = line.split_once('=').filter(|_| in_section) else { continue };
        let values = directives.entry(key.to_string()).or_default();
        if value.is_empty() {
            values.clear();
        } else {
            values.push(value.to_string());
        }
    }
    directives
}

/// Directives the emulation below carries out as systemd does.
const EMULATED: [&str; 16] = [
    "Type",
    "ExecStart",
    "Restart",
    "RestartSec",
    "SuccessExitStatus",
    "User",
    "Group",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "NoNewPrivileges",
    "StandardInput",
    "StandardOutput",
    "StandardError",
    "UMask",
    "SystemCallFilter",
    "SystemCallErrorNumber",
];
/// Sandboxing (checked by `systemd-analyze` above) that this emulation does not set up; it can
/// change what a process meets (RestrictNamespaces= makes clone3 fail with ENOSYS, and glibc
/// then starts threads with clone), so e2e/tests/under_systemd.rs runs the units under systemd.
const SANDBOXING: [&str; 31] = [
    "PrivateDevices",
    "PrivateMounts",
    "PrivateTmp",
    "PrivateNetwork",
    "ProtectSystem",
    "ProtectHome",
    "ProtectHostname",
    "ProtectClock",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "RemoveIPC",
    "KeyringMode",
    "SystemCallArchitectures",
    "DevicePolicy",
    "IPAddressDeny",
    "IPAddressAllow",
    "MemoryMax",
    "MemorySwapMax",
    "TasksMax",
    "LimitNOFILE",
    "OOMScoreAdjust",
];

/// The loader unit as systemd (as root) starts it: systemd opens `StandardInput=file:` before
/// switching to `User=`, then the process runs as that user with the ambient and bounding
/// capabilities of the unit, no_new_privs, the unit's umask, `NOTIFY_SOCKET` for
/// `Type=notify`, and under the unit's `SystemCallFilter=` (systemd's own lists of its groups,
/// from `systemd-analyze syscall-filter`; a call outside it fails with
/// `SystemCallErrorNumber=`). Its .path unit starts it once `PathExists=` exists, and
/// `Restart=on-failure` again after `RestartSec=` if it fails, opening the file anew (a start
/// whose file cannot be opened fails the same way); its exit with `SuccessExitStatus=` ends it.
struct LoaderUnit {
    directives: BTreeMap<String, Vec<String>>,
    /// The .path unit's `PathExists=`.
    path_exists: std::path::PathBuf,
    syscall_filter: Arc<seccompiler::BpfProgram>,
    uid: u32,
    notify_path: std::path::PathBuf,
    notify: std::os::unix::net::UnixDatagram,
}

impl LoaderUnit {
    /// The shipped unit, pointed at this build's loader, the simulator as bitcoind, a node's
    /// pid file and the publisher's socket, as an operator's drop-in points it at their node;
    /// the unit's user and the node's (`bitcoin`), which do not exist here, are `uid` and
    /// [`BITCOIND_UID`].
    fn for_node(dir: &Path, pid_file: &Path, socket: &Path, uid: u32) -> LoaderUnit {
        let paths = [
            ("/usr/local/bin/ebpf-loader", bins().loader.as_path()),
            ("/usr/bin/bitcoind", bins().simulator.as_path()),
            ("/run/bitcoind/bitcoind.pid", pid_file),
            ("/run/peer-observer-ebpf/publisher.sock", socket),
        ];
        let read = |unit: &str| {
            let mut text =
                std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd").join(unit)).unwrap();
            for (from, to) in &paths {
                text = text.replace(from, to.to_str().unwrap());
            }
            if unit.ends_with(".service") {
                assert!(text.contains("--bitcoind-user bitcoin "), "the unit names bitcoind's user");
            }
            text.replace("--bitcoind-user bitcoin ", &format!("--bitcoind-user {BITCOIND_UID} "))
        };
        let path = directives(&read("peer-observer-ebpf-loader.path"), "[Path]");
        assert_eq!(path.keys().collect::<Vec<_>>(), ["PathExists", "Unit"], "the .path unit's directives");
        assert_eq!(path["Unit"], ["peer-observer-ebpf-loader.service"]);
        let [path_exists] = &path["PathExists"][..] else { panic!("PathExists= is {:?}", path["PathExists"]) };
        let path_exists = path_exists.into();
        let directives = directives(&read("peer-observer-ebpf-loader.service"), "[Service]");
        for key in directives.keys() {
            assert!(
                EMULATED.contains(&key.as_str()) || SANDBOXING.contains(&key.as_str()),
                "the emulation does not know {key}="
            );
        }
        assert_eq!(directives["User"], ["peer-observer-ebpf-loader"]);
        assert_eq!(directives["Type"], ["notify"]);
        assert_eq!(directives["SuccessExitStatus"], ["3"]);
        let notify_path = dir.join("unit-notify.sock");
        let notify = notify_socket(&notify_path);
        let syscall_filter =
            Arc::new(syscall_filter(&directives["SystemCallFilter"], &directives["SystemCallErrorNumber"]));
        LoaderUnit { directives, path_exists, syscall_filter, uid, notify_path, notify }
    }

    fn one(&self, key: &str) -> &str {
        match self.directives.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{key}= is {other:?}"),
        }
    }

    fn capabilities(&self, key: &str) -> String {
        let caps: Vec<String> = self
            .one(key)
            .split_whitespace()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect();
        format!("-all,{}", caps.join(","))
    }

    fn restart_sec(&self) -> Duration {
        Duration::from_secs(self.one("RestartSec").trim_end_matches('s').parse().unwrap())
    }

    /// One start: `Err` if systemd could not open the standard input (status 208/STDIN).
    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let stdin = match self.one("StandardInput").strip_prefix("file:") {
            Some(path) => std::fs::File::open(path)?.into(),
            None => Stdio::null(),
        };
        assert_eq!((self.one("StandardOutput"), self.one("StandardError")), ("journal", "journal"));
        assert_eq!(self.one("NoNewPrivileges"), "yes");
        let uid = self.uid.to_string();
        let exec: Vec<&str> = self.one("ExecStart").split_whitespace().collect();
        let umask = self.one("UMask");
        let filter = Arc::clone(&self.syscall_filter);
        let mut cmd = Command::new("sh");
        // SAFETY: installing a prebuilt filter is one prctl and one seccomp call, no allocation.
        // It comes first here, so the helpers (sh, setpriv) run under it too: they need nothing
        // outside @system-service.
        unsafe { cmd.pre_exec(move || seccompiler::apply_filter(&filter).map_err(std::io::Error::other)) };
        Ok(cmd
            .args(["-c", &format!("umask {umask} && exec \"$@\""), "sh", "setpriv"])
            .args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                "--no-new-privs".into(),
            ])
            .arg(format!("--inh-caps={}", self.capabilities("AmbientCapabilities")))
            .arg(format!("--ambient-caps={}", self.capabilities("AmbientCapabilities")))
            .arg(format!("--bounding-set={}", self.capabilities("CapabilityBoundingSet")))
            .arg("--")
            .args(&exec)
            .env_clear()
            .env("NOTIFY_SOCKET", &self.notify_path)
            .current_dir("/")
            .stdin(stdin)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the unit's ExecStart"))
    }

    /// Starts it once the .path unit's file exists, and again after each failure, as
    /// `Restart=on-failure` does, until it reports `READY=1`; returns the running loader and
    /// the status of each failed start.
    async fn start(&self) -> (tokio::process::Child, Vec<String>) {
        assert_eq!(self.one("Restart"), "on-failure");
        let mut failures = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.path_exists.exists() {
            assert!(std::time::Instant::now() < deadline, "{} never appeared", self.path_exists.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        loop {
            assert!(std::time::Instant::now() < deadline, "the unit never became ready: {failures:?}");
            match self.spawn() {
                Err(e) => failures.push(format!("208/STDIN: {e}")),
                Ok(mut loader) => loop {
                    let mut buf = [0u8; 64];
                    if let Ok(n) = self.notify.recv(&mut buf) {
                        if buf[..n].split(|b| *b == b'\n').any(|line| line == b"READY=1") {
                            return (loader, failures);
                        }
                    }
                    if let Ok(Some(status)) = loader.try_wait() {
                        failures.push(format!("{status}: {}", e2e::read_stderr(&mut loader).await.trim()));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                },
            }
            tokio::time::sleep(self.restart_sec()).await;
        }
    }
}

/// The system calls systemd's group `@name` holds, nested groups expanded.
fn syscall_group(name: &str) -> Vec<String> {
    let out = std::process::Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", name])
        .output()
        .expect("systemd-analyze");
    assert!(out.status.success(), "{name}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .flat_map(|item| if item.starts_with('@') { syscall_group(item) } else { vec![item.to_string()] })
        .collect()
}

/// The seccomp filter of a unit's `SystemCallFilter=` lines, as systemd builds it: the first
/// is an allow list, each later `~` line takes its calls away; what is left out fails with
/// the unit's errno. Names are numbered from this machine's kernel headers.
fn syscall_filter(lines: &[String], errno: &[String]) -> seccompiler::BpfProgram {
    let headers = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
        .expect("kernel headers (x86_64, linux-libc-dev)");
    let numbers: BTreeMap<&str, i64> = headers
        .lines()
        .filter_map(|l| l.strip_prefix("#define __NR_")?.split_once(' '))
        .filter_map(|(name, nr)| Some((name, nr.trim().parse().ok()?)))
        .collect();
    let mut allowed = std::collections::BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let (deny, list) = line.strip_prefix('~').map_or((false, line.as_str()), |rest| (true, rest));
        assert_eq!(deny, i > 0, "an allow list, then deny lines: {lines:?}");
        let names: Vec<String> = list
            .split_whitespace()
            .flat_map(|item| if item.starts_with('@') { syscall_group(item) } else { vec![item.to_string()] })
            .collect();
        for name in names {
            if deny {
                allowed.remove(&name);
            } else {
                allowed.insert(name);
            }
        }
    }
    let rules = allowed.iter().filter_map(|name| numbers.get(name.as_str())).map(|nr| (*nr, Vec::new())).collect();
    assert_eq!(errno, ["EPERM"]);
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Errno(rustix::io::Errno::PERM.raw_os_error() as u32),
        seccompiler::SeccompAction::Allow,
        seccompiler::TargetArch::x86_64,
    )
    .expect("filter");
    filter.try_into().expect("compiled filter")
}

/// Next to Bitcoin Core's stock unit (bitcoind as its own user, its pid file private), the
/// loader unit as shipped attaches, delivers, and follows a restarted bitcoind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_unit_reaches_a_private_pid_file_and_follows_a_restarted_bitcoind() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("unit");
    let socket = dir.path().join("publisher.sock");
    let loader_uid = 65532;
    let _publisher = start_publisher(&nats.address, &socket, &["--loader-uid", &loader_uid.to_string()]).await;
    let node = Arc::new(NodeDir::new());
    let pid_file = node.pid_file();
    let unit = LoaderUnit::for_node(dir.path(), &pid_file, &socket, loader_uid);
    let client = async_nats::connect(&nats.address).await.unwrap();
    let mut subscriber = e2e::subscribe_in_place(&client, "mempool").await;

    // The node fires `rounds` and exits (its pid file is gone): every event arrives, and the
    // loader says so with status 3.
    async fn delivers_then_exits_with_bitcoind(
        simulator: Simulator,
        mut loader: tokio::process::Child,
        subscriber: &mut async_nats::Subscriber,
        seed: u64,
        rounds: u64,
    ) {
        let before = wall_ms();
        assert_eq!(simulator.fire().await[&Tracepoint::MempoolAdded], rounds);
        let events = receive(subscriber, rounds as usize).await;
        assert_fired_exactly(&events, &[Tracepoint::MempoolAdded], seed, 0..rounds, before..=wall_ms());
        let status = tokio::time::timeout(Duration::from_secs(15), loader.wait())
            .await
            .expect("loader exits with bitcoind")
            .unwrap();
        assert_eq!(status.code(), Some(3));
    }

    let first = Simulator::start_in(&node, &bins().simulator, "mempool:added", 3, 51, &[]);
    let (loader, failures) = unit.start().await;
    assert_eq!(failures, Vec::<String>::new());
    delivers_then_exits_with_bitcoind(first, loader, &mut subscriber, 51, 3).await;

    // The next loader starts once the restarted node has written its pid file.
    let restarting = tokio::spawn(async move { unit.start().await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = Simulator::start_in(&node, &bins().simulator, "mempool:added", 4, 52, &[]);
    let (loader, failures) = restarting.await.unwrap();
    assert_eq!(failures, Vec::<String>::new());
    delivers_then_exits_with_bitcoind(second, loader, &mut subscriber, 52, 4).await;
}

/// bitcoind's user may put a symlink in place of its pid file, which systemd follows as root:
/// to another user's pid file (root's node here, from the same binary), whose owner runs its
/// pid. The unit names bitcoind's user, and the loader it starts refuses that file; given the
/// other node's pid directly, it refuses that too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_unit_refuses_a_pid_file_symlinked_to_another_users_node() {
    let dir = TempDir::new("unit-symlink");
    let mut other = e2e::another_users_node();
    let other_pid = other.id().unwrap();
    let others_pid_file = dir.path().join("other.pid");
    std::fs::write(&others_pid_file, format!("{other_pid}\n")).unwrap();
    // Where the node writes its pid file: a 0700 directory of its user, the link its user's.
    let node = NodeDir::new();
    let pid_file = node.pid_file();
    node.network_dir();
    std::os::unix::fs::symlink(&others_pid_file, &pid_file).unwrap();
    std::os::unix::fs::lchown(&pid_file, Some(BITCOIND_UID), Some(BITCOIND_UID)).unwrap();
    let socket = dir.path().join("publisher.sock");
    let unit = LoaderUnit::for_node(dir.path(), &pid_file, &socket, 65532);

    let mut loader = unit.spawn().expect("systemd opens what the link names");
    let status =
        tokio::time::timeout(Duration::from_secs(30), loader.wait()).await.expect("the loader refuses").unwrap();
    let stderr = e2e::read_stderr(&mut loader).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    let refused =
        format!("the pid file on standard input belongs to uid 0, not to --bitcoind-user (uid {BITCOIND_UID})");
    assert!(stderr.contains(&refused), "{stderr}");

    let out = Command::new(&bins().loader)
        .arg("--bitcoind-path")
        .arg(&bins().simulator)
        .args(["--bitcoind-pid", &other_pid.to_string(), "--bitcoind-user", &BITCOIND_UID.to_string()])
        .args(["--socket", "/nonexistent/publisher.sock"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let refused = format!("pid {other_pid} belongs to uid 0, not to --bitcoind-user (uid {BITCOIND_UID})");
    assert!(stderr.contains(&refused), "{stderr}");
    other.kill().await.unwrap();
}
