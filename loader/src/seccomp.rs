//! The loader's steady state, enforced: once its probes are attached and its capabilities
//! dropped, the loader allows itself exactly the system calls of [`STEADY_STATE`]
//! (SECURITY.md's table is this list) and is killed on any other. `bpf` is allowed for map
//! lookups only, `socket` for the publisher's kind only (AF_UNIX, SOCK_SEQPACKET);
//! `perf_event_open`, `ptrace`, `process_vm_*`, `pidfd_getfd`, `open` and `execve` not at all,
//! so a loader turned by an attacker can neither attach a program nor read another process's
//! memory.

use confine::libc::{self, AF_UNIX, F_GETFD, PROT_EXEC, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_SEQPACKET};
use confine::{allow, Allowed, Arg};

/// `enum bpf_cmd` in the kernel's `include/uapi/linux/bpf.h`.
const BPF_MAP_LOOKUP_ELEM: u64 = 1;

/// Every system call the loader may make after start-up.
const STEADY_STATE: &[Allowed] = &[
    allow(
        libc::SYS_ppoll,
        "ppoll",
        &[],
        "wait for records, room in the socket, acknowledgements, bitcoind's exit, or (while stopping) the next \
         reconnection",
    ),
    allow(libc::SYS_sendmsg, "sendmsg", &[], "forward a datagram to the publisher"),
    allow(libc::SYS_sendto, "sendto", &[], "READY=1 to systemd, on a socket made before the filter"),
    allow(libc::SYS_recvfrom, "recvfrom", &[], "read the publisher's acknowledgements (8 bytes each)"),
    allow(
        libc::SYS_socket,
        "socket",
        &[Arg::All(&[Arg::Eq(0, AF_UNIX as u64), Arg::Eq(1, (SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK) as u64)])],
        "reach a restarted publisher (AF_UNIX, SOCK_SEQPACKET only)",
    ),
    allow(libc::SYS_connect, "connect", &[], "reach a restarted publisher"),
    allow(libc::SYS_close, "close", &[], "a lost connection; detaching the probes; exit"),
    allow(libc::SYS_bpf, "bpf", &[Arg::Eq(0, BPF_MAP_LOOKUP_ELEM)], "read the drop counters (map lookups only)"),
    allow(libc::SYS_write, "write", &[Arg::Eq(0, 2)], "log to standard error (fd 2 only)"),
    allow(libc::SYS_clock_gettime, "clock_gettime", &[], "time, where the vDSO falls back to the kernel"),
    allow(libc::SYS_futex, "futex", &[], "the standard library's locks"),
    allow(
        libc::SYS_fcntl,
        "fcntl",
        &[Arg::Eq(1, F_GETFD as u64)],
        "the standard library's check that a descriptor it closes is open (F_GETFD only)",
    ),
    allow(libc::SYS_mmap, "mmap", &[Arg::Clear(2, PROT_EXEC as u64)], "the allocator, never executable memory"),
    allow(libc::SYS_mprotect, "mprotect", &[Arg::Clear(2, PROT_EXEC as u64)], "the allocator, never executable memory"),
    allow(libc::SYS_munmap, "munmap", &[], "the allocator; unmapping the rings at exit"),
    allow(libc::SYS_mremap, "mremap", &[], "the allocator"),
    allow(libc::SYS_madvise, "madvise", &[], "the allocator"),
    allow(libc::SYS_brk, "brk", &[], "the allocator"),
    allow(libc::SYS_rt_sigreturn, "rt_sigreturn", &[], "return from the SIGINT/SIGTERM handler"),
    allow(libc::SYS_restart_syscall, "restart_syscall", &[], "a wait that a signal interrupted goes on"),
    allow(libc::SYS_rt_sigprocmask, "rt_sigprocmask", &[], "the standard library at exit"),
    allow(libc::SYS_sigaltstack, "sigaltstack", &[], "the standard library at exit"),
    allow(libc::SYS_exit, "exit", &[], "exit"),
    allow(libc::SYS_exit_group, "exit_group", &[], "exit"),
];

/// Installs the filter: from here on, any system call not in [`STEADY_STATE`] kills the
/// process (the loader has set no_new_privs).
pub fn confine() -> Result<(), confine::ConfineError> {
    confine::confine(STEADY_STATE)?;
    for allowed in STEADY_STATE {
        tracing::debug!(syscall = allowed.name, "allowed: {}", allowed.why);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::libc;

    const TEST: &str = "seccomp::tests::only_the_listed_calls_and_arguments_pass";

    /// The child: the loader's filter, then one call (by name), then `_exit(0)`, the only way
    /// out the filter leaves (the test harness's own output would be killed).
    fn confined_child(what: &str) {
        confine::testing::confine_child(super::STEADY_STATE);
        let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        let exec = libc::PROT_READ | libc::PROT_EXEC;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // SAFETY: each call only makes a descriptor or a mapping, or fails; the process then exits.
        unsafe {
            match what {
                // Exits 0 only if the socket was made.
                "socket publisher" => {
                    libc::_exit(i32::from(libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | flags, 0) < 0))
                }
                "socket stream" => libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | flags, 0),
                "socket datagram" => libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0),
                "socket inet" => libc::socket(libc::AF_INET, libc::SOCK_SEQPACKET | flags, 0),
                "bpf prog_load" => libc::syscall(libc::SYS_bpf, 5, std::ptr::null::<u8>(), 0) as i32,
                "write stdout" => libc::write(1, b"x".as_ptr().cast(), 1) as i32,
                "mmap exec" => (libc::mmap(std::ptr::null_mut(), 4096, exec, anon, -1, 0) == libc::MAP_FAILED) as i32,
                "openat" => libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY),
                // Not SIGSYS: a call misnamed in the list cannot pass as one the filter killed.
                _ => libc::_exit(3),
            };
            libc::_exit(0);
        }
    }

    /// A confined loader makes the publisher's kind of socket, and is killed on any other
    /// socket, a `bpf` call other than a map lookup, a write elsewhere than standard error,
    /// executable memory, or opening a file.
    #[test]
    fn only_the_listed_calls_and_arguments_pass() {
        if let Some(what) = confine::testing::call_to_try() {
            confined_child(&what);
            return;
        }
        let allowed = confine::testing::try_in_child(TEST, "socket publisher");
        assert!(allowed.status.success(), "{allowed:?}");
        for what in
            ["socket stream", "socket datagram", "socket inet", "bpf prog_load", "write stdout", "mmap exec", "openat"]
        {
            let out = confine::testing::try_in_child(TEST, what);
            assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{what}: {out:?}");
        }
    }

    /// SECURITY.md's table of the loader's system calls is this list, reason for reason, and
    /// holds none of the calls an attacker wants.
    #[test]
    fn the_table_is_security_md_s_and_leaves_out_what_an_attacker_wants() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../SECURITY.md")).expect("SECURITY.md");
        let forbidden =
            ["perf_event_open", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "openat", "execve"];
        confine::check(super::STEADY_STATE, &doc, "### The loader's system calls after start-up", &forbidden);
    }
}
