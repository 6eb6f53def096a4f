//! Which process and binary to trace, checked before anything touches the kernel.
//!
//! The loader runs as a user of its own, and bitcoind keeps its files private (umask 077: a
//! 0600 pid file in a 0700 directory; a self-built binary may sit in a 0700 home). So both may
//! come as descriptors that someone allowed to open them opened for the loader: the pid file
//! on standard input (`--bitcoind-pid-file -`: systemd's `StandardInput=file:`, a root
//! shell's `<`), the binary as `/proc/self/fd/N` (how `ebpf-extractor` passes it).

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confine::libc;
use rustix::fs::{fstat, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use rustix::process::{pidfd_open, Pid, PidfdFlags};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("bitcoind binary {0} does not exist: pass the binary bitcoind runs from with --bitcoind-path")]
    BinaryMissing(PathBuf),
    #[error("bitcoind binary {path} cannot be read: {source}{hint}")]
    BinaryUnreadable { path: PathBuf, source: std::io::Error, hint: &'static str },
    #[error("bitcoind binary {0} is not a regular file (a FIFO, device or directory)")]
    BinaryNotRegular(PathBuf),
    #[error("cannot read pid file {path}: {source}{hint}")]
    PidFileUnreadable { path: PathBuf, source: std::io::Error, hint: &'static str },
    #[error("pid file {path} is not a regular file: bitcoind's -pid=<file> writes one")]
    PidFileNotRegular { path: PathBuf },
    #[error("pid file {path} does not hold a process id ({len} bytes): bitcoind writes its pid and a newline")]
    PidFileGarbage { path: PathBuf, len: usize },
    #[error("no process with pid {0} is running: start bitcoind first, or pass its current pid")]
    NotRunning(i32),
    #[error("pid file {path} is stale: {why}; bitcoind rewrites it when it starts")]
    StalePidFile { path: PathBuf, why: String },
    #[error("{what} belongs to uid {found}, not to --bitcoind-user (uid {expected}): another user's process is no node of this loader's")]
    NotTheUsers { what: String, found: u32, expected: u32 },
    #[error("cannot watch bitcoind (pid {pid}) for its exit: {source}")]
    Watch { pid: i32, source: std::io::Error },
}

/// Why a pid file or binary of bitcoind's is out of the loader's reach, and what to do.
const PRIVATE_FILE_HINT: &str =
    "; bitcoind creates its files private to its user (umask 077), so let root open it for the \
     loader: ebpf-extractor does, systemd's StandardInput=file:<pid file> with --bitcoind-pid-file - does (see README)";

pub struct Target {
    pub pid: i32,
    /// The path the probes attach through: a descriptor of the binary checked at start-up,
    /// `/proc/self/fd/N`. libbpf opens the binary again by the path it is given, to read the
    /// USDT notes, and the kernel looks that path up to place the probes: through a descriptor
    /// both reach the file checked, whatever the node's user has put at its path since.
    pub binary: PathBuf,
    /// That descriptor, when the loader opened it rather than being handed one.
    _opened: Option<OwnedFd>,
    /// The binary's own path, for logs and the hello.
    pub binary_name: String,
    /// A pidfd of the process: readable once it exits.
    pub exit: OwnedFd,
}

pub enum PidSource<'a> {
    Pid(i32),
    /// A path, or `-` for standard input.
    File(&'a Path),
}

impl Target {
    /// The process `pid` names, running `binary`; with `user`, one that user runs, from a pid
    /// file that user owns.
    pub fn resolve(binary: &Path, pid: PidSource<'_>, user: Option<u32>) -> Result<Self, TargetError> {
        if !binary.exists() {
            return Err(TargetError::BinaryMissing(binary.to_owned()));
        }
        // Opened without blocking: a FIFO put in the binary's place would hold the loader's
        // start for good.
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let opened = rustix::fs::open(binary, flags, Mode::empty()).map_err(|e| {
            let source = std::io::Error::from(e);
            let hint = if source.kind() == std::io::ErrorKind::PermissionDenied { PRIVATE_FILE_HINT } else { "" };
            TargetError::BinaryUnreadable { path: binary.to_owned(), source, hint }
        })?;
        let given = fstat(&opened)
            .ok()
            .filter(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile)
            .ok_or_else(|| TargetError::BinaryNotRegular(binary.to_owned()))?;
        let (pid, file) = match pid {
            PidSource::Pid(pid) => (pid, None),
            PidSource::File(path) => read_pid_file(path).map(|(pid, written)| (pid, Some((path, written))))?,
        };
        // A pidfd, not /proc/<pid>: a /proc mounted with hidepid hides other users' processes
        // (../shared/spec/deployment.md), and pidfd_open asks for no access to the process.
        let exit = match Pid::from_raw(pid).map(|p| pidfd_open(p, PidfdFlags::empty())) {
            None | Some(Err(Errno::SRCH)) => return Err(TargetError::NotRunning(pid)),
            Some(Err(e)) => return Err(TargetError::Watch { pid, source: e.into() }),
            Some(Ok(fd)) => fd,
        };
        let started = process_start(pid);
        let runner = runner(pid, &exit);
        if let Some((path, written)) = &file {
            if let Some(expected) = user.filter(|uid| *uid != written.owner) {
                let what = match path.to_str() {
                    Some("-") => "the pid file on standard input".to_string(),
                    _ => format!("pid file {}", path.display()),
                };
                return Err(TargetError::NotTheUsers { what, found: written.owner, expected });
            }
            refuse_stale(pid, runner, written.owner)
                .map_err(|why| TargetError::StalePidFile { path: path.to_path_buf(), why })?;
            warn_if_written_before_start(pid, written.at, started);
        }
        if let Some((expected, found)) = user.zip(runner).filter(|(expected, found)| expected != found) {
            return Err(TargetError::NotTheUsers { what: format!("pid {pid}"), found, expected });
        }
        warn_if_started_from_another_binary(pid, binary, &given);
        warn_if_replaced_since_start(pid, binary, &given, started);
        let handed = is_descriptor(binary);
        // The loader's own descriptor links are always readable: name what it was handed.
        let binary_name =
            fs::read_link(binary).ok().filter(|_| handed).unwrap_or_else(|| binary.to_owned()).display().to_string();
        let (binary, opened) = if handed {
            (binary.to_owned(), None)
        } else {
            (PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd())), Some(opened))
        };
        Ok(Target { pid, binary, _opened: opened, binary_name, exit })
    }
}

/// Whether `path` names one of the loader's descriptors (`/proc/self/fd/N`, `/dev/fd/N`), not a
/// path through one (`/proc/self/fd/N/bitcoind`, below a directory's descriptor), which is
/// looked up anew at every open.
fn is_descriptor(path: &Path) -> bool {
    path.parent().is_some_and(|dir| dir == Path::new("/proc/self/fd") || dir == Path::new("/dev/fd"))
        && path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.parse::<u32>().is_ok())
}

/// A crash leaves bitcoind's pid file behind, and after a reboot its pid may name another
/// process (../shared/spec/deployment.md); probes attached to that process never fire, and its
/// pidfd never tells of the next bitcoind. bitcoind writes its own pid file, so the file's
/// owner runs the pid. /proc/<pid>/exe is out of the loader's reach, but who runs the pid is
/// not ([`runner`]).
fn refuse_stale(pid: i32, runner: Option<u32>, owner: u32) -> Result<(), String> {
    match runner.filter(|runner| *runner != owner) {
        Some(runner) => Err(format!("it names pid {pid}, which uid {runner} runs, not its owner uid {owner}")),
        None => Ok(()),
    }
}

/// The real uid that runs `pid`: asked of its pidfd (`PIDFD_GET_INFO`, Linux 6.13), which a
/// /proc mounted with hidepid does not hide, else read from `/proc/<pid>/status`; `None` where
/// neither tells.
fn runner(pid: i32, pidfd: &OwnedFd) -> Option<u32> {
    // SAFETY: all zeros is a valid pidfd_info, which the ioctl fills (at most its size).
    let mut info: libc::pidfd_info = unsafe { std::mem::zeroed() };
    info.mask = libc::PIDFD_INFO_CREDS.into();
    // SAFETY: PIDFD_GET_INFO writes at most size_of::<pidfd_info>() bytes into `info`.
    match unsafe { libc::ioctl(pidfd.as_raw_fd(), libc::PIDFD_GET_INFO, &raw mut info) } {
        0 if info.mask & u64::from(libc::PIDFD_INFO_CREDS) != 0 => return Some(info.ruid),
        // Gone: its number may already be another process's.
        _ if Errno::from_io_error(&std::io::Error::last_os_error()) == Some(Errno::SRCH) => return None,
        // An older kernel.
        _ => {}
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// bitcoind writes its pid file once it runs, so a file written before its pid started is a
/// stale one whose pid the node's own user reuses. A warning only: the file's time is the
/// wall clock's when it was written, the start is reckoned on today's, and a clock stepped in
/// between (an NTP step at boot, a board without a real-time clock) moves one against the other.
fn warn_if_written_before_start(pid: i32, written: Option<SystemTime>, started: Option<SystemTime>) {
    let (Some(written), Some(started)) = (written, started) else { return };
    if written + START_SLACK < started {
        tracing::warn!(
            pid,
            "the pid file was last written before this pid started: a stale pid file whose pid was reused, or a \
             clock stepped since"
        );
    }
}

/// Probes on a binary the process does not run never fire, and `/proc/<pid>/exe` is out of
/// the loader's reach; but the path the process was started as, `/proc/<pid>/cmdline`'s first
/// word, is world-readable (unless /proc hides it), and an absolute one names a file here to
/// compare (systemd starts Bitcoin Core's unit as `/usr/bin/bitcoind`). A warning only: a
/// process in another mount namespace (a container) names a file of its own.
fn warn_if_started_from_another_binary(pid: i32, binary: &Path, given: &Stat) {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return };
    let Some(started_as) = cmdline.split(|b| *b == 0).next().map(|word| Path::new(std::ffi::OsStr::from_bytes(word)))
    else {
        return;
    };
    if !started_as.is_absolute() {
        return;
    }
    let Ok(started) = fs::metadata(started_as) else { return };
    if (started.dev(), started.ino()) != (given.st_dev, given.st_ino) {
        tracing::warn!(
            pid,
            started_as = ?started_as,
            "bitcoind was started as another file than --bitcoind-path {}: its tracepoints fire only in the binary it runs; pass that one",
            binary.display()
        );
    }
}

/// A binary replaced after the process started (a package upgrade or `make install` renames a
/// new file over the old one) is not the file it runs: probes on it fire only once bitcoind
/// restarts. The file's ctime tells, against the process' start (`/proc/<pid>/stat`,
/// world-readable unless /proc hides it). A chmod moves ctime too, so a warning only.
fn warn_if_replaced_since_start(pid: i32, binary: &Path, given: &Stat, started: Option<SystemTime>) {
    let (Some(started), Some(changed)) = (started, file_time(given.st_ctime, given.st_ctime_nsec)) else { return };
    if changed > started + START_SLACK {
        tracing::warn!(
            pid,
            "--bitcoind-path {} changed after bitcoind started (replaced by an upgrade?): bitcoind runs the file \
             that was there before, and these probes fire only once it restarts",
            binary.display()
        );
    }
}

/// How far a file's time may lie from a process's start without telling: the start is known to
/// a clock tick, and the two clocks are read apart.
const START_SLACK: Duration = Duration::from_secs(1);

/// A file's time from its `stat` seconds and nanoseconds; `None` if they are out of range.
fn file_time(secs: i64, nanos: impl TryInto<u32>) -> Option<SystemTime> {
    Some(UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos.try_into().ok()?))
}

/// When `pid` started, on the wall clock: its start in clock ticks after boot (`/proc/<pid>/stat`)
/// against the time since boot now (`/proc/uptime`), both on the boot-time clock.
fn process_start(pid: i32) -> Option<SystemTime> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command in parentheses may hold anything; `starttime`, field 22, is the 20th after it.
    let ticks: u64 = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    let since_start = uptime - ticks as f64 / rustix::param::clock_ticks_per_second() as f64;
    SystemTime::now().checked_sub(Duration::try_from_secs_f64(since_start.max(0.0)).ok()?)
}

/// bitcoind writes `<pid>\n`; anything longer than this is not its pid file.
const PID_FILE_MAX: usize = 32;

/// Who wrote a pid file, and when it was last written.
struct PidFileWritten {
    owner: u32,
    at: Option<SystemTime>,
}

/// Reads a pid file without following a symlink or blocking on a FIFO, and at most
/// [`PID_FILE_MAX`] bytes of it; `-` is standard input, which is then replaced by /dev/null.
/// Returns the pid and who wrote the file when.
fn read_pid_file(path: &Path) -> Result<(i32, PidFileWritten), TargetError> {
    let unreadable = |source: std::io::Error| TargetError::PidFileUnreadable {
        path: path.to_owned(),
        hint: if source.kind() == std::io::ErrorKind::PermissionDenied {
            PRIVATE_FILE_HINT
        } else {
            "; is bitcoind running with -pid=<this file>?"
        },
        source,
    };
    let file: fs::File = if path == Path::new("-") {
        let stdin = rustix::io::dup(std::io::stdin().as_fd()).map_err(|e| unreadable(e.into()))?;
        let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| unreadable(e.into()))?;
        rustix::stdio::dup2_stdin(&null).map_err(|e| unreadable(e.into()))?;
        stdin.into()
    } else {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => fd.into(),
            Err(Errno::LOOP) => return Err(TargetError::PidFileNotRegular { path: path.to_owned() }),
            Err(e) => return Err(unreadable(e.into())),
        }
    };
    let stat = fstat(&file).map_err(|e| unreadable(e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(TargetError::PidFileNotRegular { path: path.to_owned() });
    }
    let mut content = Vec::with_capacity(PID_FILE_MAX + 1);
    file.take(PID_FILE_MAX as u64 + 1).read_to_end(&mut content).map_err(unreadable)?;
    let pid = parse_pid(&content).ok_or(TargetError::PidFileGarbage { path: path.to_owned(), len: content.len() })?;
    let at = file_time(stat.st_mtime, stat.st_mtime_nsec);
    Ok((pid, PidFileWritten { owner: stat.st_uid, at }))
}

/// The pid in a pid file's content: decimal digits, surrounding white space allowed.
fn parse_pid(content: &[u8]) -> Option<i32> {
    if content.len() > PID_FILE_MAX {
        return None;
    }
    std::str::from_utf8(content).ok()?.trim().parse().ok().filter(|pid| *pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_holds_a_positive_decimal_pid_and_nothing_else() {
        assert_eq!(parse_pid(b"4242\n"), Some(4242));
        assert_eq!(parse_pid(b" 7 \n"), Some(7));
        for bad in [&b""[..], b"\n", b"0\n", b"-5\n", b"42 43\n", b"pid\n", b"\xff\n", &[b'1'; 33]] {
            assert_eq!(parse_pid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_a_descriptor_itself_is_one() {
        assert!(is_descriptor(Path::new("/proc/self/fd/3")) && is_descriptor(Path::new("/dev/fd/12")));
        for path in ["/proc/self/fd/3/bitcoind", "/proc/self/fd", "/proc/self/fd/x", "/usr/bin/bitcoind", "3"] {
            assert!(!is_descriptor(Path::new(path)), "{path}");
        }
    }

    /// The node's user may own the binary's directory: a FIFO renamed over the binary once it
    /// is checked must not be what libbpf and the kernel open when the probes attach.
    #[test]
    fn the_probes_attach_to_the_binary_checked_whatever_replaces_it() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("loader-target-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (binary, fifo) = (dir.join("bitcoind"), dir.join("fifo"));
        fs::write(&binary, b"the checked binary").unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        let target = Target::resolve(&binary, PidSource::Pid(std::process::id() as i32), None).unwrap();
        fs::rename(&fifo, &binary).unwrap();

        // Without blocking, so that a regression fails rather than hangs: the FIFO has no writer.
        let mut content = Vec::new();
        let opened = rustix::fs::open(&target.binary, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty());
        fs::File::from(opened.unwrap()).read_to_end(&mut content).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(content, b"the checked binary");
        assert_eq!(target.binary_name, binary.display().to_string());
    }
}
