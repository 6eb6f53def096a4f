//! Whom each child runs as, and becoming that user between fork and exec.
//!
//! Without `--publisher-user`/`--loader-user` each child gets a uid of its own, as systemd's
//! `DynamicUser=` does: one from systemd's range for dynamic users that no account, group or
//! running process has, held for the launcher's lifetime by a lock file so that two launchers
//! never share one. Never a shared account such as `nobody`: any other process of that user
//! could take over a child (ptrace, signals, its socket).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};
use rustix::process::{Gid, Uid};
use rustix::thread::{self as thread, CapabilitySet, CapabilitySets};

use crate::LaunchError;

/// systemd's range for `DynamicUser=` (its docs/UIDS-GIDS.md): no distribution allocates there.
const DYNAMIC_UIDS: std::ops::RangeInclusive<u32> = 61184..=65519;
/// Root's: the lock files that reserve a dynamic uid while a launcher uses it (0600), and
/// each launcher's runtime directory. Mode 0711: no one else may list it.
const RUN_DIR: &str = "/run/ebpf-extractor";

/// [`RUN_DIR`], created if absent, its mode set whatever it was.
pub fn run_dir() -> Result<&'static Path, LaunchError> {
    let err = |source| LaunchError::RuntimeDir { path: RUN_DIR.into(), source };
    fs::DirBuilder::new().mode(0o711).recursive(true).create(RUN_DIR).map_err(err)?;
    fs::set_permissions(RUN_DIR, fs::Permissions::from_mode(0o711)).map_err(err)?;
    Ok(Path::new(RUN_DIR))
}

/// A child's user: its uid and primary gid, and for a dynamic one the lock that reserves it.
pub struct User {
    pub uid: Uid,
    pub gid: Gid,
    pub dynamic: bool,
    _lock: Option<fs::File>,
}

impl User {
    /// A named user or uid from /etc/passwd (a bare uid without an entry gets a group of the
    /// same number); root is refused.
    pub fn named(spec: &str, flag: &'static str) -> Result<User, LaunchError> {
        let passwd = fs::read_to_string("/etc/passwd").map_err(LaunchError::Passwd)?;
        let entry = passwd
            .lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && (f[0] == spec || f[2] == spec));
        let (uid, gid) = match entry {
            Some(f) => (f[2].parse().ok(), f[3].parse().ok()),
            None => (spec.parse().ok(), spec.parse().ok()),
        };
        let (Some(uid), Some(gid)) = (uid, gid) else {
            return Err(LaunchError::UnknownUser(spec.to_string()));
        };
        if uid == 0 {
            return Err(LaunchError::RootChild(flag));
        }
        Ok(User { uid: Uid::from_raw(uid), gid: Gid::from_raw(gid), dynamic: false, _lock: None })
    }

    /// A fresh uid (and gid of the same number) that nothing else uses; see the module's doc.
    pub fn dynamic() -> Result<User, LaunchError> {
        let run_dir = run_dir()?;
        let lock_err = |source| LaunchError::RuntimeDir { path: run_dir.into(), source };
        let accounts = [fs::read_to_string("/etc/passwd"), fs::read_to_string("/etc/group")]
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(LaunchError::Passwd)?;
        let listed = |id: u32| {
            accounts.iter().flat_map(|text| text.lines()).any(|line| line.split(':').nth(2) == Some(&id.to_string()))
        };
        let span = DYNAMIC_UIDS.end() - DYNAMIC_UIDS.start() + 1;
        let mut seed = [0u8; 4];
        rustix::rand::getrandom(&mut seed, rustix::rand::GetRandomFlags::empty()).map_err(|e| lock_err(e.into()))?;
        let first = u32::from_ne_bytes(seed) % span;
        let in_use = ids_of_processes();
        for i in 0..span {
            let id = DYNAMIC_UIDS.start() + (first + i) % span;
            if listed(id) || in_use.contains(&id) {
                continue;
            }
            let lock = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(run_dir.join(format!("uid-{id}")))
                .map_err(lock_err)?;
            if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok() {
                return Ok(User { uid: Uid::from_raw(id), gid: Gid::from_raw(id), dynamic: true, _lock: Some(lock) });
            }
        }
        Err(LaunchError::NoFreeUid)
    }
}

/// Every uid and gid (real, effective, saved, file system) of every running process.
fn ids_of_processes() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut ids = Vec::new();
    for entry in entries.flatten() {
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else { continue };
        for line in status.lines().filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:")) {
            ids.extend(line[4..].split_whitespace().filter_map(|n| n.parse::<u32>().ok()));
        }
    }
    ids
}

/// Runs in the child between fork and exec: become `uid`/`gid` with no supplementary groups,
/// keeping only `keep` capabilities (bounding, permitted, effective, inheritable, ambient),
/// and set no_new_privs. Only raw syscalls: nothing here may allocate.
pub fn become_user(uid: Uid, gid: Gid, keep: CapabilitySet) -> io::Result<()> {
    for cap in CapabilitySet::all().iter() {
        if !keep.contains(cap) {
            // Capabilities this kernel does not know fail with EINVAL: nothing to drop.
            match thread::remove_capability_from_bounding_set(cap) {
                Ok(()) | Err(rustix::io::Errno::INVAL) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    thread::set_keep_capabilities(true)?;
    thread::set_thread_groups(&[])?;
    thread::set_thread_res_gid(gid, gid, gid)?;
    thread::set_thread_res_uid(uid, uid, uid)?;
    thread::set_capabilities(None, CapabilitySets { effective: keep, permitted: keep, inheritable: keep })?;
    for cap in keep.iter() {
        thread::configure_capability_in_ambient_set(cap, true)?;
    }
    thread::set_keep_capabilities(false)?;
    thread::set_no_new_privs(true)?;
    Ok(())
}
