//! The simulator fires from worker threads named as Bitcoin Core's, as bitcoind does, while
//! its main thread only waits: a tracer that caught the process's main thread alone would
//! pass no test.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The names of `pid`'s threads, main thread first (its tid is the pid).
fn thread_names(pid: u32) -> Vec<String> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the simulator's threads")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_by_key(|&tid| (tid != pid, tid));
    tids.iter()
        .filter_map(|tid| std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok())
        .map(|comm| comm.trim_end().to_string())
        .collect()
}

#[test]
fn tracepoints_fire_from_threads_named_as_bitcoin_cores() {
    let datadir = std::env::temp_dir().join(format!("simulator-threads-{}", std::process::id()));
    std::fs::create_dir_all(&datadir).expect("a data directory");
    let mut simulator = Command::new(env!("CARGO_BIN_EXE_tracepoint-simulator"))
        .arg(format!("-datadir={}", datadir.display()))
        .args(["-regtest", "--tracepoints", "default", "--count", "1000", "--rate", "50", "--threads", "6"])
        .arg("--start-on-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the simulator");
    let pid = simulator.id();
    simulator.stdin.take().expect("piped").write_all(b"go\n").expect("start firing");
    let want = ["tracepoint-simu", "b-msghand", "b-net", "b-opencon", "b-initload", "b-httpworker.0", "b-httpworker.1"];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut names = thread_names(pid);
    while names != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        names = thread_names(pid);
    }
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let status = simulator.wait().expect("the simulator exits");
    let _ = std::fs::remove_dir_all(&datadir);
    assert_eq!(names, want);
    assert!(status.success(), "{status}");
}
