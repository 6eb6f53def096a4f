//! The bitcoind to trace, resolved as root: the launcher may read what the loader's user may
//! not. bitcoind writes its pid file under umask 077 (0600 in a 0700 directory), and a
//! self-built binary often sits in a 0700 home. The launcher reads the pid file, opens the
//! binary, checks that the pid runs that binary, and hands the loader a pid and the open
//! binary (`/proc/self/fd/N`), never a path it would have to open itself.

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot open the bitcoind binary {path}: {source}")]
    Binary { path: PathBuf, source: std::io::Error },
    #[error("the bitcoind binary {0} is not a regular file (a FIFO, device or directory)")]
    BinaryNotRegular(PathBuf),
    #[error("cannot read pid file {path}: {source}; is bitcoind running with -pid={path}?")]
    PidFileUnreadable { path: PathBuf, source: std::io::Error },
    #[error("pid file {0} is not a regular file (a symlink, FIFO or directory): bitcoind's -pid=<file> writes one")]
    PidFileNotRegular(PathBuf),
    #[error("pid file {path} does not hold a process id ({len} bytes): bitcoind writes its pid and a newline")]
    PidFileGarbage { path: PathBuf, len: usize },
    #[error("no process with pid {0} is running: start bitcoind first, or pass its current pid")]
    NotRunning(i32),
    #[error("pid {pid} runs {exe}, not the bitcoind binary {binary}: pass the binary it runs from with --bitcoind-path (an upgraded binary needs a restarted bitcoind)")]
    OtherBinary { pid: i32, exe: String, binary: PathBuf },
    #[error("pid file {path} names pid {pid}, which uid {runner} runs, not the file's owner uid {owner}: bitcoind writes its own pid file, so this is a stale one or another user's process")]
    OtherUser { path: PathBuf, pid: i32, runner: u32, owner: u32 },
    #[error("{what} belongs to uid {found}, not to --bitcoind-user (uid {expected}): another user's process is no node of this extractor's")]
    NotTheUsers { what: String, found: u32, expected: u32 },
}

impl TargetError {
    /// Whether the node is not running yet, as before its first start: no pid file, or one a
    /// crash left naming no process. A wrong binary or a garbage file is a mistake instead.
    pub fn not_running_yet(&self) -> bool {
        match self {
            TargetError::PidFileUnreadable { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            TargetError::NotRunning(_) => true,
            _ => false,
        }
    }

    /// Whether the pid file names a running process that is refused: another binary's,
    /// another user's. Not a file being written, nor a node not started yet.
    pub fn refuses_a_process(&self) -> bool {
        matches!(
            self,
            TargetError::OtherBinary { .. } | TargetError::OtherUser { .. } | TargetError::NotTheUsers { .. }
        )
    }
}

/// bitcoind writes `<pid>\n`; anything longer than this is not its pid file.
const PID_FILE_MAX: u64 = 32;

/// What bitcoind's pid file says: the pid, and who wrote it.
pub struct PidFile {
    pub pid: i32,
    pub owner: u32,
}

/// Reads bitcoind's pid file without following a symlink at its name (bitcoind's user owns the
/// directory and could point a root reader anywhere; directories above are [`check_users`]'s)
/// or blocking on a FIFO, and at most a few bytes.
pub fn read_pid_file(path: &Path) -> Result<PidFile, TargetError> {
    let unreadable = |e: Errno| TargetError::PidFileUnreadable { path: path.to_owned(), source: e.into() };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Err(TargetError::PidFileNotRegular(path.to_owned())),
        Err(e) => return Err(unreadable(e)),
    };
    let stat = rustix::fs::fstat(&fd).map_err(unreadable)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(TargetError::PidFileNotRegular(path.to_owned()));
    }
    let mut content = Vec::new();
    fs::File::from(fd)
        .take(PID_FILE_MAX + 1)
        .read_to_end(&mut content)
        .map_err(|source| TargetError::PidFileUnreadable { path: path.to_owned(), source })?;
    let pid = (content.len() as u64 <= PID_FILE_MAX)
        .then(|| std::str::from_utf8(&content).ok()?.trim().parse::<i32>().ok())
        .flatten()
        .filter(|pid| *pid > 0);
    let pid = pid.ok_or(TargetError::PidFileGarbage { path: path.to_owned(), len: content.len() })?;
    Ok(PidFile { pid, owner: stat.st_uid })
}

/// Checks who runs `pid`: the owner of the pid file it came from, and `user` if given.
/// bitcoind writes its own pid file, and its user may write any pid there: another user's node
/// running the same binary passes [`check_runs`], and the probes would then report that node's
/// peers and mempool. Only `user` also stops a directory on the pid file's path that bitcoind's
/// user owns being made a symlink to another user's node's directory, whose pid file that user
/// owns and whose pid it runs (`O_NOFOLLOW` guards the last component alone).
pub fn check_users(pid: i32, file: Option<(PidFile, &Path)>, user: Option<u32>) -> Result<(), TargetError> {
    let runner = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse::<u32>().ok()
        })
        .ok_or(TargetError::NotRunning(pid))?;
    if let Some((file, path)) = file {
        if let Some(expected) = user.filter(|uid| *uid != file.owner) {
            return Err(TargetError::NotTheUsers {
                what: format!("pid file {}", path.display()),
                found: file.owner,
                expected,
            });
        }
        if runner != file.owner {
            return Err(TargetError::OtherUser { path: path.to_owned(), pid, runner, owner: file.owner });
        }
    }
    match user.filter(|uid| *uid != runner) {
        Some(expected) => Err(TargetError::NotTheUsers { what: format!("pid {pid}"), found: runner, expected }),
        None => Ok(()),
    }
}

/// Opens the binary the probes attach to; the loader gets this descriptor. bitcoind's user may
/// own every directory on the path (a self-built binary in its home) and put a FIFO or a
/// device there, whose mere opening by root would block the launcher or act on the device.
/// So the path is first resolved with O_PATH, which opens nothing, and must name a regular
/// file; then that very inode is opened for reading through its descriptor. A symlinked
/// path (`/usr/local/bin/bitcoind`, say) is followed, as bitcoind was started through it.
pub fn open_binary(path: &Path) -> Result<fs::File, TargetError> {
    let failed = |e: Errno| TargetError::Binary { path: path.to_owned(), source: e.into() };
    let located = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(failed)?;
    let stat = rustix::fs::fstat(&located).map_err(failed)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(TargetError::BinaryNotRegular(path.to_owned()));
    }
    let inode = format!("/proc/self/fd/{}", located.as_raw_fd());
    let opened = rustix::fs::open(inode.as_str(), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(failed)?;
    Ok(opened.into())
}

/// Checks that `pid` is running `binary` (the same inode: `/proc/<pid>/exe` is readable by
/// root). A stale pid file naming a reused pid, or a binary replaced since bitcoind started,
/// would attach probes that never fire.
pub fn check_runs(pid: i32, binary: &fs::File, binary_path: &Path) -> Result<(), TargetError> {
    let exe = format!("/proc/{pid}/exe");
    let Ok(running) = fs::metadata(&exe) else {
        return Err(TargetError::NotRunning(pid));
    };
    let wanted = binary.metadata().map_err(|source| TargetError::Binary { path: binary_path.to_owned(), source })?;
    if (running.dev(), running.ino()) != (wanted.dev(), wanted.ino()) {
        // Quoted and escaped: bitcoind's user names that file.
        let exe = fs::read_link(&exe).map_or_else(|_| "another binary".to_string(), |p| format!("{p:?}"));
        return Err(TargetError::OtherBinary { pid, exe, binary: binary_path.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("launcher-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("create a temporary directory");
        dir
    }

    /// A FIFO where the binary should be: opening it for reading would block until bitcoind's
    /// user wrote to it; a device would act on its opening.
    #[test]
    fn a_binary_that_is_a_fifo_or_a_device_is_refused_unopened() {
        let dir = temp_dir("fifo");
        let fifo = dir.join("bitcoind");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).expect("mkfifo");
        let device = dir.join("bitcoind-dev");
        std::os::unix::fs::symlink("/dev/null", &device).expect("symlink");
        // On a thread: opening the FIFO for reading would block, and the test with it.
        let paths = [fifo.clone(), device];
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for path in &paths {
                let refused = matches!(open_binary(path), Err(TargetError::BinaryNotRegular(p)) if p == *path);
                let _ = tx.send((path.clone(), refused));
            }
        });
        for _ in 0..2 {
            let (path, refused) = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("open_binary blocked");
            assert!(refused, "{path:?}");
        }
        // No reader ever had the FIFO open: a writer that would not wait finds none.
        let writer = rustix::fs::open(&fifo, OFlags::WRONLY | OFlags::NONBLOCK, Mode::empty());
        assert_eq!(writer.err(), Some(Errno::NXIO));
        fs::remove_dir_all(&dir).expect("clean up");
    }

    /// `/usr/local/bin/bitcoind` may be a symlink into the release's directory.
    #[test]
    fn a_symlinked_binary_opens_its_target() {
        let dir = temp_dir("symlink");
        let binary = dir.join("bitcoind-29.0");
        fs::write(&binary, b"\x7fELF").expect("write");
        let link = dir.join("bitcoind");
        std::os::unix::fs::symlink(&binary, &link).expect("symlink");
        let opened = open_binary(&link).expect("a symlink to a regular file opens");
        let (opened, wanted) = (opened.metadata().expect("fstat"), fs::metadata(&binary).expect("stat"));
        assert_eq!((opened.dev(), opened.ino()), (wanted.dev(), wanted.ino()));
        assert!(matches!(open_binary(&dir.join("absent")), Err(TargetError::Binary { .. })));
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
