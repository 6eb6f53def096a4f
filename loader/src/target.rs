//! Which process and binary to trace, checked before anything touches the kernel.

use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("bitcoind binary {0} does not exist: pass the binary bitcoind runs from with --bitcoind-path")]
    BinaryMissing(PathBuf),
    #[error("bitcoind binary {path} cannot be read: {source}")]
    BinaryUnreadable { path: PathBuf, source: std::io::Error },
    #[error("cannot read pid file {path}: {source}; is bitcoind running with -pid={path}?")]
    PidFileUnreadable { path: PathBuf, source: std::io::Error },
    #[error("pid file {path} does not hold a process id (found {content:?})")]
    PidFileGarbage { path: PathBuf, content: String },
    #[error("no process with pid {0} is running: start bitcoind first, or pass its current pid")]
    NotRunning(i32),
}

pub struct Target {
    pub pid: i32,
    pub binary: PathBuf,
}

pub enum PidSource<'a> {
    Pid(i32),
    File(&'a Path),
}

impl Target {
    pub fn resolve(binary: &Path, pid: PidSource<'_>) -> Result<Self, TargetError> {
        if !binary.exists() {
            return Err(TargetError::BinaryMissing(binary.to_owned()));
        }
        fs::File::open(binary).map_err(|source| TargetError::BinaryUnreadable {
            path: binary.to_owned(),
            source,
        })?;
        let pid = match pid {
            PidSource::Pid(pid) => pid,
            PidSource::File(path) => read_pid_file(path)?,
        };
        // /proc/<pid> exists for any live process, even one owned by another user.
        if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(TargetError::NotRunning(pid));
        }
        Ok(Target {
            pid,
            binary: binary.to_owned(),
        })
    }
}

fn read_pid_file(path: &Path) -> Result<i32, TargetError> {
    let content = fs::read_to_string(path).map_err(|source| TargetError::PidFileUnreadable {
        path: path.to_owned(),
        source,
    })?;
    content
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| TargetError::PidFileGarbage {
            path: path.to_owned(),
            content: content.chars().take(32).collect(),
        })
}
