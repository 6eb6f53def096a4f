//! The systemd units pass `systemd-analyze verify` without a warning and score within the
//! hardening targets of `systemd-analyze security`; the socket only admits the loader's user.

use std::path::Path;
use std::process::Command;

use e2e::{bins, TempDir};

const UNITS: [&str; 3] = [
    "peer-observer-ebpf-publisher.socket",
    "peer-observer-ebpf-publisher.service",
    "peer-observer-ebpf-loader.service",
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
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(UNITS.map(|u| dir.path().join(u)))
        .output()
        .expect("run systemd-analyze (package systemd)");
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && output.trim().is_empty(), "{output}");
}

fn exposure(dir: &Path, unit: &str) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(dir.join(unit))
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("no score in {text}"));
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
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/peer-observer-ebpf-loader.service")).unwrap();
    let lines: Vec<&str> = unit.lines().collect();
    assert!(lines.contains(&"CapabilityBoundingSet=CAP_BPF CAP_PERFMON"));
    assert!(lines.contains(&"AmbientCapabilities=CAP_BPF CAP_PERFMON"));
    assert!(lines.contains(&"RestrictAddressFamilies=AF_UNIX"));
    assert!(lines.iter().any(|l| l.starts_with("SystemCallFilter=") && l.contains(" bpf") && l.contains("perf_event_open")));
    let socket = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/peer-observer-ebpf-publisher.socket")).unwrap();
    let lines: Vec<&str> = socket.lines().collect();
    assert!(lines.contains(&"ListenSequentialPacket=/run/peer-observer-ebpf/publisher.sock"));
    assert!(lines.contains(&"SocketUser=peer-observer-ebpf-loader"));
    assert!(lines.contains(&"SocketMode=0600"));
}
