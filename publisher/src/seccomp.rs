//! The publisher's steady state, enforced: once it listens, has its NATS connection and its
//! metrics listener, it allows itself exactly the system calls of [`STEADY_STATE`]
//! (SECURITY.md's table is this list; clone3 fails with ENOSYS) and is killed on any other.
//! The publisher parses what internet peers sent; a parser bug turned into code execution
//! finds no `execve`, `ptrace`, `process_vm_*`, `bpf`, `perf_event_open`, `pidfd_getfd`, no new
//! process or namespace, no file opened for writing and no executable memory.

use confine::libc::{
    self, AF_INET, AF_INET6, AF_NETLINK, AF_UNIX, CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS,
    CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS, CLONE_THREAD, FIONBIO, FIONREAD, O_APPEND, O_CREAT, O_RDWR, O_TRUNC,
    O_WRONLY, PROT_EXEC, TIOCOUTQ,
};
use confine::{allow, refuse, Allowed, Arg};

/// `PR_SET_NAME`, with which the standard library names the threads it starts.
const PR_SET_NAME: u64 = 15;
/// `PR_GET_AUXV`, with which rustix finds the vDSO the first time it reads a clock.
const PR_GET_AUXV: u64 = 0x4155_5856;

/// `clone`'s flags for new namespaces. With CLONE_THREAD (which the kernel accepts only with
/// CLONE_VM and CLONE_SIGHAND), `clone` makes a thread of this process; refusing these as well
/// costs nothing, although the kernel also rejects some with CLONE_THREAD and the rest need
/// CAP_SYS_ADMIN.
const CLONE_NEW_NAMESPACES: u64 =
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET) as u64;

/// Every system call the publisher may make after start-up.
pub const STEADY_STATE: &[Allowed] = &[
    allow(libc::SYS_epoll_wait, "epoll_wait", &[], "the async runtime waits for sockets and timers"),
    allow(libc::SYS_epoll_pwait, "epoll_pwait", &[], "the same, where the runtime uses it"),
    allow(libc::SYS_epoll_ctl, "epoll_ctl", &[], "the async runtime registers sockets"),
    allow(libc::SYS_read, "read", &[], "NATS, the metrics requests, /etc/hosts when resolving a NATS host name, the TLS files at a reconnection"),
    allow(libc::SYS_recvfrom, "recvfrom", &[], "the loader's datagrams; NATS"),
    allow(libc::SYS_recvmsg, "recvmsg", &[], "the loader's hello; resolving a NATS host name"),
    allow(libc::SYS_write, "write", &[], "NATS; the metrics responses; logs to standard error; events to standard output (--stdout)"),
    allow(libc::SYS_writev, "writev", &[], "NATS"),
    allow(libc::SYS_sendto, "sendto", &[], "acknowledgements to the loader; resolving a NATS host name"),
    allow(libc::SYS_sendmsg, "sendmsg", &[], "resolving a NATS host name"),
    allow(libc::SYS_sendmmsg, "sendmmsg", &[], "resolving a NATS host name: the A and AAAA queries at once"),
    allow(libc::SYS_accept4, "accept4", &[], "a loader connects; a metrics scrape"),
    allow(
        libc::SYS_socket,
        "socket",
        &[
            Arg::Eq(0, AF_INET as u64),
            Arg::Eq(0, AF_INET6 as u64),
            Arg::Eq(0, AF_UNIX as u64),
            Arg::Eq(0, AF_NETLINK as u64),
        ],
        "reconnect to NATS; resolve its host name (AF_INET, AF_INET6, AF_UNIX, AF_NETLINK only)",
    ),
    allow(libc::SYS_connect, "connect", &[], "reconnect to NATS; resolve its host name"),
    allow(libc::SYS_bind, "bind", &[], "resolving a NATS host name (netlink)"),
    allow(libc::SYS_getsockname, "getsockname", &[], "resolving a NATS host name (netlink); the ports of TCP sockets: which is the NATS connection"),
    allow(
        libc::SYS_getsockopt,
        "getsockopt",
        &[],
        "SO_PEERCRED of a connecting loader; SO_ERROR and, after a flush, TCP_INFO of a NATS connection; SO_DOMAIN, SO_PROTOCOL and SO_ACCEPTCONN: which descriptor is the NATS connection",
    ),
    allow(libc::SYS_setsockopt, "setsockopt", &[], "TCP_NODELAY on a NATS connection"),
    allow(libc::SYS_shutdown, "shutdown", &[], "stop reading the loader at SIGTERM"),
    allow(
        libc::SYS_ioctl,
        "ioctl",
        &[Arg::Eq(1, FIONBIO), Arg::Eq(1, FIONREAD), Arg::Eq(1, TIOCOUTQ)],
        "a loader connection to blocking mode for its reading thread; the size of a DNS answer; after a flush and at shutdown, what NATS's host has not acknowledged (FIONBIO, FIONREAD, SIOCOUTQ only)",
    ),
    allow(libc::SYS_fcntl, "fcntl", &[], "the standard library's descriptor checks"),
    allow(libc::SYS_close, "close", &[], "connections that end"),
    allow(
        libc::SYS_openat,
        "openat",
        &[Arg::Clear(2, (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND) as u64)],
        "/etc/hosts and /etc/resolv.conf when resolving a NATS host name; the TLS CA, certificate and key files at each TLS reconnection (read-only)",
    ),
    allow(libc::SYS_newfstatat, "newfstatat", &[], "resolving a NATS host name"),
    allow(libc::SYS_fstat, "fstat", &[], "resolving a NATS host name"),
    allow(libc::SYS_lseek, "lseek", &[], "resolving a NATS host name"),
    allow(libc::SYS_ppoll, "ppoll", &[], "resolving a NATS host name"),
    allow(libc::SYS_poll, "poll", &[], "resolving a NATS host name"),
    allow(libc::SYS_uname, "uname", &[], "resolving a NATS host name: rereading /etc/resolv.conf"),
    allow(libc::SYS_unlink, "unlink", &[], "remove its socket file at exit"),
    refuse(
        libc::SYS_clone3,
        "clone3",
        libc::ENOSYS,
        "fails with ENOSYS, as under systemd's RestrictNamespaces=: its flags lie in memory, which a filter cannot read, so glibc falls back to clone",
    ),
    allow(
        libc::SYS_clone,
        "clone",
        &[Arg::Masked(0, CLONE_THREAD as u64 | CLONE_NEW_NAMESPACES, CLONE_THREAD as u64)],
        "a reading thread per loader connection; the runtime's blocking threads (one writes to standard output under --stdout): a thread in no new namespace only",
    ),
    allow(libc::SYS_set_robust_list, "set_robust_list", &[], "a new thread"),
    allow(libc::SYS_rseq, "rseq", &[], "a new thread"),
    allow(libc::SYS_sched_getaffinity, "sched_getaffinity", &[], "a new thread"),
    allow(libc::SYS_gettid, "gettid", &[], "a new thread"),
    allow(
        libc::SYS_prctl,
        "prctl",
        &[Arg::Eq(0, PR_SET_NAME), Arg::Eq(0, PR_GET_AUXV)],
        "name a new thread; find the vDSO for reading clocks (PR_SET_NAME, PR_GET_AUXV only)",
    ),
    allow(libc::SYS_sched_yield, "sched_yield", &[], "the runtime's and the allocator's spinning"),
    allow(libc::SYS_futex, "futex", &[], "locks and the threads' hand-over"),
    allow(libc::SYS_getrandom, "getrandom", &[], "hash maps' keys"),
    allow(libc::SYS_clock_gettime, "clock_gettime", &[], "time, where the vDSO falls back to the kernel"),
    allow(libc::SYS_clock_nanosleep, "clock_nanosleep", &[], "back off after a failed accept"),
    allow(
        libc::SYS_mmap,
        "mmap",
        &[Arg::Clear(2, PROT_EXEC as u64)],
        "the allocator and thread stacks, never executable memory",
    ),
    allow(
        libc::SYS_mprotect,
        "mprotect",
        &[Arg::Clear(2, PROT_EXEC as u64)],
        "thread stacks' guard pages, never executable memory",
    ),
    allow(libc::SYS_munmap, "munmap", &[], "the allocator; a thread's stack"),
    allow(libc::SYS_mremap, "mremap", &[], "the allocator"),
    allow(libc::SYS_madvise, "madvise", &[], "the allocator"),
    allow(libc::SYS_brk, "brk", &[], "the allocator"),
    allow(libc::SYS_rt_sigprocmask, "rt_sigprocmask", &[], "a new thread; exit"),
    allow(libc::SYS_rt_sigaction, "rt_sigaction", &[], "the async runtime's signal handling (SIGINT/SIGTERM)"),
    allow(libc::SYS_rt_sigreturn, "rt_sigreturn", &[], "return from the SIGINT/SIGTERM handler"),
    allow(libc::SYS_restart_syscall, "restart_syscall", &[], "a sleep that a signal interrupted goes on"),
    allow(libc::SYS_sigaltstack, "sigaltstack", &[], "a thread's signal stack"),
    allow(libc::SYS_exit, "exit", &[], "a thread ends"),
    allow(libc::SYS_exit_group, "exit_group", &[], "exit"),
];

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::libc;

    const TEST: &str = "seccomp::tests::threads_start_and_nothing_else_does";

    /// The child: the publisher's filter, then a thread (`thread`), clone3 (`clone3`: exits 0
    /// if it failed with ENOSYS) or a process (`fork`).
    fn confined_child(what: &str) {
        confine::testing::confine_child(super::STEADY_STATE);
        match what {
            "thread" => std::thread::spawn(|| ()).join().expect("the thread ran"),
            "clone3" => {
                let args = [0u64; 11];
                // SAFETY: clone3 with zeroed arguments of their size; the filter answers it.
                let ret = unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), std::mem::size_of_val(&args)) };
                let errno = std::io::Error::last_os_error().raw_os_error();
                assert_eq!((ret, errno), (-1, Some(libc::ENOSYS)));
            }
            // SAFETY: the child of fork only exits.
            _ => unsafe {
                if libc::fork() == 0 {
                    libc::_exit(0);
                }
            },
        }
    }

    /// The publisher starts threads after it confined itself: with clone, since clone3 fails
    /// with ENOSYS (its own filter's answer, and under the units' RestrictNamespaces= systemd's;
    /// the test under systemd, e2e/tests/under_systemd.rs, found the publisher killed on its
    /// first loader connection while only clone3 was allowed). A process it may not start.
    #[test]
    fn threads_start_and_nothing_else_does() {
        if let Some(what) = confine::testing::call_to_try() {
            confined_child(&what);
            return;
        }
        for what in ["thread", "clone3"] {
            let out = confine::testing::try_in_child(TEST, what);
            assert!(out.status.success(), "{what}: {out:?}");
        }
        let fork = confine::testing::try_in_child(TEST, "fork");
        assert_eq!(fork.status.signal(), Some(libc::SIGSYS), "{fork:?}");
    }

    /// SECURITY.md's table of the publisher's system calls is this list, reason for reason,
    /// and holds none of the calls an attacker wants.
    #[test]
    fn the_table_is_security_md_s_and_leaves_out_what_an_attacker_wants() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../SECURITY.md")).expect("SECURITY.md");
        let forbidden = [
            "execve",
            "execveat",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "bpf",
            "perf_event_open",
            "pidfd_getfd",
            "mount",
            "fork",
            "vfork",
            "unshare",
            "setns",
        ];
        confine::check(super::STEADY_STATE, &doc, "### The publisher's system calls after start-up", &forbidden);
    }
}
