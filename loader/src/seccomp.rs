//! The loader's steady state, enforced: once its probes are attached and its capabilities
//! dropped, the loader installs a seccomp filter that allows exactly the system calls in
//! [`STEADY_STATE`] (SECURITY.md's table is this list) and kills the process on any other.
//! `bpf` is allowed for map lookups only, `socket` for AF_UNIX only; `perf_event_open`,
//! `ptrace`, `process_vm_*`, `pidfd_getfd`, `open`, `execve` are not allowed at all, so a loader
//! turned by an attacker can neither attach a program nor read another process's memory.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the loader's seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("cannot install the loader's seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
}

/// An argument that a system call must have: (index, value), or (index, mask) that must be clear.
#[derive(Clone, Copy)]
enum Arg {
    Eq(u8, u64),
    Clear(u8, u64),
}

/// A system call of the steady state, the arguments it is allowed with (any of them; none:
/// any arguments), and why the loader makes it.
struct Allowed {
    nr: libc::c_long,
    name: &'static str,
    only: &'static [Arg],
    why: &'static str,
}

macro_rules! allow {
    ($name:ident, [$($arg:expr),*], $why:literal) => {
        Allowed { nr: paste_sys!($name), name: stringify!($name), only: &[$($arg),*], why: $why }
    };
}

macro_rules! paste_sys {
    (ppoll) => { libc::SYS_ppoll };
    (sendmsg) => { libc::SYS_sendmsg };
    (sendto) => { libc::SYS_sendto };
    (socket) => { libc::SYS_socket };
    (connect) => { libc::SYS_connect };
    (close) => { libc::SYS_close };
    (bpf) => { libc::SYS_bpf };
    (write) => { libc::SYS_write };
    (clock_gettime) => { libc::SYS_clock_gettime };
    (futex) => { libc::SYS_futex };
    (fcntl) => { libc::SYS_fcntl };
    (mmap) => { libc::SYS_mmap };
    (mprotect) => { libc::SYS_mprotect };
    (munmap) => { libc::SYS_munmap };
    (mremap) => { libc::SYS_mremap };
    (madvise) => { libc::SYS_madvise };
    (brk) => { libc::SYS_brk };
    (rt_sigreturn) => { libc::SYS_rt_sigreturn };
    (rt_sigprocmask) => { libc::SYS_rt_sigprocmask };
    (sigaltstack) => { libc::SYS_sigaltstack };
    (exit) => { libc::SYS_exit };
    (exit_group) => { libc::SYS_exit_group };
}

/// `enum bpf_cmd` in the kernel's `include/uapi/linux/bpf.h`.
const BPF_MAP_LOOKUP_ELEM: u64 = 1;

/// Every system call the loader may make after start-up.
const STEADY_STATE: &[Allowed] = &[
    allow!(ppoll, [], "wait for records, room in the socket, or bitcoind's exit"),
    allow!(sendmsg, [], "forward a datagram to the publisher"),
    allow!(sendto, [], "send the hello to a publisher; READY=1 to systemd"),
    allow!(socket, [Arg::Eq(0, libc::AF_UNIX as u64)], "reach a restarted publisher; notify systemd (AF_UNIX only)"),
    allow!(connect, [], "reach a restarted publisher"),
    allow!(close, [], "a lost connection; detaching the probes; exit"),
    allow!(bpf, [Arg::Eq(0, BPF_MAP_LOOKUP_ELEM)], "read the drop counters (map lookups only)"),
    allow!(write, [Arg::Eq(0, 2)], "log to standard error (fd 2 only)"),
    allow!(clock_gettime, [], "time, where the vDSO falls back to the kernel"),
    allow!(futex, [], "the standard library's locks"),
    allow!(fcntl, [Arg::Eq(1, libc::F_GETFD as u64)], "the standard library's check that a descriptor it closes is open (F_GETFD only)"),
    allow!(mmap, [Arg::Clear(2, libc::PROT_EXEC as u64)], "the allocator, never executable memory"),
    allow!(mprotect, [Arg::Clear(2, libc::PROT_EXEC as u64)], "the allocator, never executable memory"),
    allow!(munmap, [], "the allocator; unmapping the rings at exit"),
    allow!(mremap, [], "the allocator"),
    allow!(madvise, [], "the allocator"),
    allow!(brk, [], "the allocator"),
    allow!(rt_sigreturn, [], "return from the SIGINT/SIGTERM handler"),
    allow!(rt_sigprocmask, [], "the standard library at exit"),
    allow!(sigaltstack, [], "the standard library at exit"),
    allow!(exit, [], "exit"),
    allow!(exit_group, [], "exit"),
];

/// Installs the filter: from here on, any system call not in [`STEADY_STATE`] kills the
/// process (needs no_new_privs, which the loader has set).
pub fn confine() -> Result<(), SeccompError> {
    seccompiler::apply_filter_all_threads(&program()?)?;
    for allowed in STEADY_STATE {
        tracing::debug!(syscall = allowed.name, "allowed: {}", allowed.why);
    }
    Ok(())
}

fn program() -> Result<BpfProgram, SeccompError> {
    let mut rules = BTreeMap::new();
    for allowed in STEADY_STATE {
        let conditions = allowed
            .only
            .iter()
            .map(|arg| match *arg {
                // Every argument compared is a C `int`: only its low 32 bits are defined.
                Arg::Eq(index, value) => Cond::new(index, Len::Dword, Op::Eq, value),
                Arg::Clear(index, mask) => Cond::new(index, Len::Dword, Op::MaskedEq(mask), 0),
            })
            .map(|cond| cond.and_then(|cond| SeccompRule::new(vec![cond])))
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(allowed.nr, conditions);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let filter = SeccompFilter::new(rules, SeccompAction::KillProcess, SeccompAction::Allow, arch)?;
    Ok(filter.try_into()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SECURITY.md's table of the loader's system calls is this list, reason for reason.
    #[test]
    fn security_md_lists_exactly_the_allowed_system_calls() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../SECURITY.md")).expect("SECURITY.md");
        let start = doc.find("### The loader's system calls after start-up").expect("the section");
        let rows: Vec<&str> = doc[start..].lines().skip_while(|l| !l.starts_with("| `")).take_while(|l| l.starts_with('|')).collect();
        let documented: Vec<(&str, &str)> = rows
            .iter()
            .filter_map(|row| {
                let mut cells = row.split('|').map(str::trim).filter(|c| !c.is_empty());
                Some((cells.next()?.trim_matches('`'), cells.next()?))
            })
            .collect();
        let listed: Vec<(&str, &str)> = STEADY_STATE.iter().map(|a| (a.name, a.why)).collect();
        assert_eq!(documented, listed);
    }

    #[test]
    fn the_filter_builds_for_this_machine_without_the_calls_an_attacker_wants() {
        assert!(!program().unwrap().is_empty());
        let names: Vec<&str> = STEADY_STATE.iter().map(|a| a.name).collect();
        for forbidden in ["perf_event_open", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "openat", "execve"] {
            assert!(!names.contains(&forbidden), "{forbidden}");
        }
    }
}
