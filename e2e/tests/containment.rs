//! What an attacker on the machine can do to the loader once it is attached: a process of the
//! loader's own user, with no capability, cannot take its descriptors; nobody can rewrite
//! libbpf's USDT maps (frozen); the loader runs under its seccomp filter, which kills it on a
//! forbidden call; a publisher socket whose backlog is full cannot hold it; and a publisher
//! can write it nothing but acknowledgements it checks, cannot leave it descriptors, and
//! cannot hold it with a flood of acknowledgements.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use e2e::{
    assert_fired_exactly, proc_status, receive, start_loader, start_publisher, terminate, wall_ms, NatsServer,
    Pipeline, Simulator, TempDir, LOADER_UID,
};
use ipc_protocol::{decode_datagram, Datagram, Tracepoint};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use rustix::io::Errno;

/// The loader's descriptors, listed as root.
fn descriptors(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Tries `pidfd_getfd` on each of `fds` of `pid` from a fresh process of `uid` without any
/// capability; returns the errno of the first refusal, or `None` if it took every one.
fn steal_as(uid: u32, pid: u32, fds: Vec<i32>) -> Option<Errno> {
    let mut attacker = std::process::Command::new("/bin/true");
    // SAFETY: only raw system calls between fork and exec, no allocation.
    unsafe {
        attacker.pre_exec(move || {
            let id = rustix::process::Gid::from_raw(uid);
            rustix::thread::set_thread_groups(&[])?;
            rustix::thread::set_thread_res_gid(id, id, id)?;
            // From root to another uid without keep-caps: every capability is gone.
            let id = rustix::process::Uid::from_raw(uid);
            rustix::thread::set_thread_res_uid(id, id, id)?;
            let target = rustix::process::Pid::from_raw(pid as i32).expect("pid");
            let pidfd = rustix::process::pidfd_open(target, rustix::process::PidfdFlags::empty())?;
            for fd in &fds {
                rustix::process::pidfd_getfd(&pidfd, *fd, rustix::process::PidfdGetfdFlags::empty())?;
            }
            Ok(())
        })
    };
    match attacker.status() {
        Ok(_) => None,
        Err(e) => Some(Errno::from_io_error(&e).expect("an errno")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attached_loader_cannot_be_turned_and_keeps_delivering() {
    let nats = NatsServer::start().await;
    let Pipeline { mut subscriber, simulator, dir: _dir, publisher: _publisher, loader } =
        Pipeline::start(&nats, "mempool:added", 5, 61, &[]).await;
    let pid = loader.id().expect("loader running");
    let status = proc_status(pid);
    assert_eq!(status["Seccomp"], "2");
    assert_eq!(status["NoNewPrivs"], "1");
    assert_eq!(status["CapEff"], "0000000000000000");

    let fds = descriptors(pid);
    assert!(fds.len() > 10, "BPF maps, programs' links, rings: {fds:?}");
    assert_eq!(
        steal_as(LOADER_UID, pid, fds.clone()),
        Some(Errno::PERM),
        "a process of the loader's uid took its descriptors"
    );
    // Not even its descriptor list is readable to that user.
    let listing = std::process::Command::new("setpriv")
        .args([&format!("--reuid={LOADER_UID}"), &format!("--regid={LOADER_UID}"), "--clear-groups", "ls"])
        .arg(format!("/proc/{pid}/fd"))
        .output()
        .unwrap();
    assert!(!listing.status.success(), "listed the loader's descriptors: {listing:?}");

    // Root may open the maps by id; user space still cannot write libbpf's USDT specs, the
    // peers' strings the message programs keep, or the ring sizes their wakeups compare with.
    let mut frozen_maps = 0;
    for fd in fds {
        let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else { continue };
        let Some(id) = info.lines().find_map(|l| l.strip_prefix("map_id:")).and_then(|v| v.trim().parse().ok()) else {
            continue;
        };
        let map = MapHandle::from_map_id(id).expect("open the map by id as root");
        let name = map.name().to_string_lossy().into_owned();
        if !name.starts_with("__bpf_usdt") && name != "known_peers" && !name.ends_with(".rodata") {
            continue;
        }
        frozen_maps += 1;
        let key = vec![0u8; map.key_size() as usize];
        let value = vec![0xffu8; map.value_size() as usize];
        let err = map.update(&key, &value, MapFlags::ANY).expect_err("a frozen map refuses updates");
        assert_eq!(err.kind(), libbpf_rs::ErrorKind::PermissionDenied, "{err}");
    }
    assert_eq!(frozen_maps, 4, "libbpf's __bpf_usdt_specs and __bpf_usdt_ip_to_spec_id, known_peers, .rodata");

    let before = wall_ms();
    assert_eq!(simulator.fire().await[&Tracepoint::MempoolAdded], 5);
    let events = receive(&mut subscriber, 5).await;
    assert_fired_exactly(&events, &[Tracepoint::MempoolAdded], 61, 0..5, before..=wall_ms());
    drop(loader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_system_call_kills_the_loader() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("forbidden");
    let socket = dir.path().join("publisher.sock");
    let _publisher = start_publisher(&nats.address, &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    let simulator = Simulator::start("mempool:added", 1, 0);
    let mut loader = start_loader(dir.path(), &socket, simulator.pid(), &["--test-forbidden-syscall"]).await;
    let status = tokio::time::timeout(Duration::from_secs(10), loader.wait()).await.expect("killed in time").unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(sigsys()), "{status}");
}

/// SIGSYS: what a seccomp filter's kill action sends.
fn sigsys() -> i32 {
    rustix::process::Signal::SYS.as_raw()
}

/// A publisher socket whose backlog someone filled: the loader's reconnection attempts fail at
/// once instead of blocking, and SIGTERM still stops it promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_cannot_hold_the_loader() {
    let nats = NatsServer::start().await;
    let dir = TempDir::new("backlog");
    let socket = dir.path().join("publisher.sock");
    let mut publisher = start_publisher(&nats.address, &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    let simulator = Simulator::start("mempool:added", 1, 0);
    let mut loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;
    publisher.kill().await.unwrap();
    let _ = std::fs::remove_file(&socket);

    // A listener that never accepts, its backlog full of connections that are never taken.
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
    let addr = SocketAddrUnix::new(&socket).unwrap();
    rustix::net::bind(&listener, &addr).unwrap();
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let mut fillers = Vec::new();
    loop {
        let client =
            rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::NONBLOCK, None).unwrap();
        match rustix::net::connect(&client, &addr) {
            Ok(()) => fillers.push(client),
            Err(Errno::AGAIN) => break,
            Err(e) => panic!("filling the backlog: {e}"),
        }
        assert!(fillers.len() < 1000, "the backlog never filled");
    }
    // Several reconnection attempts meet the full backlog.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(loader.try_wait().unwrap(), None, "the loader keeps running");
    let (status, took) = terminate(&mut loader).await;
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
}

/// A publisher's socket at `path` that anyone may connect to, listened on by a test playing a
/// hostile publisher.
fn hostile_listener(path: &std::path::Path) -> std::os::fd::OwnedFd {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
    rustix::net::bind(&listener, &SocketAddrUnix::new(path).unwrap()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
    rustix::net::listen(&listener, 8).unwrap();
    listener
}

/// A publisher that answers with anything but an acknowledgement the loader can take (a
/// datagram of 3 bytes; then one acknowledging records never sent) has its connection dropped
/// at once, nothing more read from it, and the loader goes on with the next publisher, which
/// gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_writing_anything_but_acknowledgements_is_dropped() {
    use rustix::net::{sockopt, RecvFlags, SendFlags};
    let nats = NatsServer::start().await;
    let dir = TempDir::new("hostile-publisher");
    let socket = dir.path().join("publisher.sock");
    let listener = hostile_listener(&socket);
    // Each connection: the hello, then a lie; returns how long the loader took to close it.
    let hostile = std::thread::spawn(move || {
        let lies = [b"bad".to_vec(), ipc_protocol::encode_ack(1000).to_vec()];
        lies.map(|lie| {
            let conn = rustix::net::accept(&listener).unwrap();
            sockopt::set_socket_timeout(&conn, sockopt::Timeout::Recv, Some(Duration::from_secs(8))).unwrap();
            let mut buf = vec![0u8; 65537];
            rustix::net::recv(&conn, &mut buf, RecvFlags::empty()).expect("the hello");
            rustix::net::send(&conn, &lie, SendFlags::empty()).unwrap();
            let sent = Instant::now();
            // Its drop totals may come first; then the end of the stream.
            while rustix::net::recv(&conn, &mut buf, RecvFlags::empty()).expect("the loader closes").1 > 0 {}
            sent.elapsed()
        })
    });
    let simulator = Simulator::start("mempool:added", 5, 61);
    let mut loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;
    let closed_after =
        tokio::task::spawn_blocking(move || hostile.join().expect("the hostile publisher")).await.expect("joined");
    for took in closed_after {
        // Within its start-up (attaching takes a while) and one turn of its loop, not the 10 s it
        // gives a publisher that stopped reading to close.
        assert!(took < Duration::from_secs(4), "the loader kept the connection {took:?}");
    }

    std::fs::remove_file(&socket).unwrap();
    let _publisher = start_publisher(&nats.address, &socket, &["--loader-uid", &LOADER_UID.to_string()]).await;
    let client = async_nats::connect(&nats.address).await.unwrap();
    let mut subscriber = client.subscribe(">").await.unwrap();
    client.flush().await.unwrap();
    // Two connections ended at once: the loader tries again 4 s after the second.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let before = wall_ms();
    assert_eq!(simulator.fire().await[&Tracepoint::MempoolAdded], 5);
    let events = receive(&mut subscriber, 5).await;
    assert_fired_exactly(&events, &[Tracepoint::MempoolAdded], 61, 0..5, before..=wall_ms());
    let log = e2e::stop_and_read_logs(&mut [&mut loader]).await;
    for refusal in [
        "refused the publisher's acknowledgement (a datagram of 3 bytes is no acknowledgement)",
        "refused the publisher's acknowledgement (acknowledgement of records below 1000, where 0 were acknowledged and 0 sent)",
    ] {
        assert!(log.contains(refusal), "{log}");
    }
}

/// A publisher whose acknowledgements carry descriptors (`SCM_RIGHTS`) leaves the loader no
/// copy: it reads them with `recv`, without room for ancillary data, so the kernel closes them
/// at each read (loader/src/forward.rs, `read_acks`). The connection stays, and carries
/// bitcoind's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_cannot_leave_the_loader_descriptors() {
    use rustix::net::RecvFlags;
    use std::os::fd::AsFd;
    let dir = TempDir::new("passing-publisher");
    let socket = dir.path().join("publisher.sock");
    let listener = hostile_listener(&socket);
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    let publisher = std::thread::spawn(move || {
        let conn = rustix::net::accept(&listener).unwrap();
        let mut buf = vec![0u8; 65537];
        rustix::net::recv(&conn, &mut buf, RecvFlags::empty()).expect("the hello");
        let passed = e2e::PassedDescriptor::new();
        // Acknowledgements of records below 0, valid at any time, each with three copies.
        for _ in 0..4 {
            let fds = [passed.passed.as_fd(); 3];
            e2e::send_with_descriptors(&conn, &ipc_protocol::encode_ack(0), &fds).expect("an acknowledgement");
        }
        closed_tx.send(passed.closed_everywhere(Duration::from_secs(5))).unwrap();
        // Then bitcoind's events, until the loader closes.
        let mut added = 0;
        while let Ok((_, n @ 1..)) = rustix::net::recv(&conn, &mut buf, RecvFlags::empty()) {
            if let Ok(Datagram::Records(batch)) = decode_datagram(&buf[..n]) {
                added += batch.records().filter(|r| r.tracepoint == Tracepoint::MempoolAdded).count();
            }
        }
        added
    });
    let simulator = Simulator::start("mempool:added", 5, 64);
    let mut loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;
    let closed = tokio::task::spawn_blocking(move || {
        closed_rx.recv_timeout(Duration::from_secs(30)).expect("the loader connected and the publisher checked")
    })
    .await
    .expect("joined");
    assert!(closed, "the loader holds a descriptor its publisher sent");
    assert_eq!(simulator.fire().await[&Tracepoint::MempoolAdded], 5);
    let status = tokio::time::timeout(Duration::from_secs(15), loader.wait()).await.expect("exits").expect("status");
    assert_eq!(status.code(), Some(3), "{status}");
    let added =
        tokio::task::spawn_blocking(move || publisher.join().expect("the passing publisher")).await.expect("joined");
    assert_eq!(added, 5, "bitcoind's events on the connection after the descriptors");
}

/// A publisher that ends every connection once it has the hello (as one of another release
/// refuses a loader's) is retried ever less often, 2 s, then 4 s, 8 s, … apart, rather than
/// every second: neither half fills the journal with a line or three a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_ends_every_connection_is_retried_ever_less_often() {
    use rustix::net::RecvFlags;
    let dir = TempDir::new("refusing-publisher");
    let socket = dir.path().join("publisher.sock");
    let listener = hostile_listener(&socket);
    let refusing = std::thread::spawn(move || {
        let mut accepted = Vec::new();
        while accepted.len() < 3 {
            let conn = rustix::net::accept(&listener).unwrap();
            accepted.push(Instant::now());
            let mut buf = vec![0u8; 65537];
            rustix::net::recv(&conn, &mut buf, RecvFlags::empty()).expect("the hello");
        }
        accepted
    });
    let simulator = Simulator::start("mempool:added", 1, 62);
    let mut loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;
    let accepted =
        tokio::task::spawn_blocking(move || refusing.join().expect("the refusing publisher")).await.expect("joined");
    let second_gap = accepted[2] - accepted[1];
    assert!(second_gap > Duration::from_millis(3500), "{second_gap:?} between the second and third connections");
    let log = e2e::stop_and_read_logs(&mut [&mut loader]).await;
    for wait in ["reconnecting in 2s", "reconnecting in 4s"] {
        assert!(log.contains(wait), "{log}");
    }
}

/// A publisher that floods the loader with a valid acknowledgement, the same one over and over
/// from two threads, cannot hold it: it still takes bitcoind's records off its rings and sees
/// bitcoind exit (loader/src/forward.rs, `read_acks`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_acknowledgements_cannot_hold_the_loader() {
    use rustix::net::{RecvFlags, SendFlags};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = TempDir::new("ack-flood");
    let socket = dir.path().join("publisher.sock");
    let listener = hostile_listener(&socket);
    let stop = Arc::new(AtomicBool::new(false));
    let (records_tx, records_rx) = std::sync::mpsc::channel();
    let flood = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let conn = Arc::new(rustix::net::accept(&listener).unwrap());
            let flooders: Vec<_> = (0..2)
                .map(|_| {
                    let (conn, stop) = (Arc::clone(&conn), Arc::clone(&stop));
                    std::thread::spawn(move || {
                        // Acknowledges records below 0: valid at any time, and it changes nothing.
                        let ack = ipc_protocol::encode_ack(0);
                        while !stop.load(Ordering::Relaxed) {
                            if rustix::net::send(&conn, &ack, SendFlags::DONTWAIT).is_err() {
                                std::thread::yield_now();
                            }
                        }
                    })
                })
                .collect();
            // Counts the loader's datagrams (the hello, then records) until it closes.
            let mut buf = vec![0u8; 65537];
            let mut datagrams = 0u64;
            while rustix::net::recv(&conn, &mut buf, RecvFlags::empty()).map_or(0, |(_, n)| n) > 0 {
                datagrams += 1;
                let _ = records_tx.send(datagrams);
            }
            stop.store(true, Ordering::Relaxed);
            flooders.into_iter().for_each(|f| f.join().expect("flooder"));
        })
    };
    let simulator = Simulator::start("mempool:added", 200, 62);
    let mut loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(simulator.fire().await[&Tracepoint::MempoolAdded], 200);
    let exited = Instant::now();
    // bitcoind has exited: the loader hands on what its rings hold and ends with status 3.
    let status = tokio::time::timeout(Duration::from_secs(15), loader.wait()).await.expect("exits").expect("status");
    let took = exited.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(status.code(), Some(3), "{status}");
    assert!(took < Duration::from_secs(3), "the loader took {took:?} to see bitcoind's exit under the flood");
    // The hello, then records.
    assert!(records_rx.try_iter().last().unwrap_or(0) >= 2, "no record reached the flooding publisher");
    flood.join().expect("the flooding publisher");
}
