//! Whom each child runs as, and becoming that user between fork and exec.
//!
//! Without `--publisher-user`/`--loader-user` each child gets a uid of its own, as systemd's
//! `DynamicUser=` does: one from systemd's range for dynamic users that no account, group,
//! running process or systemd-private directory has, held for the launcher's lifetime by
//! systemd's own lock file for it, so that neither another launcher nor systemd hands it out
//! meanwhile. Never a shared account such as `nobody`: any other process of that user could
//! take over a child (ptrace, signals, its socket).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, fstat, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};
use rustix::thread::{self as thread, CapabilitySet, CapabilitySets};

use crate::LaunchError;

/// systemd's range for `DynamicUser=` (its docs/UIDS-GIDS.md): no distribution allocates there.
const DYNAMIC_UIDS: std::ops::RangeInclusive<u32> = 61184..=65519;
/// systemd's lock files for dynamic uids (`pick_uid` in its src/core/dynamic-user.c): a uid
/// whose file `<uid>` someone holds `flock`ed is taken, and the holder unlinks the file before
/// letting the uid go.
const SYSTEMD_UID_LOCKS: &str = "/run/systemd/dynamic-uid";
/// Where systemd keeps the `StateDirectory=`, `CacheDirectory=` and `LogsDirectory=` of dynamic
/// users: it gives a service the uid that owns them again when the service starts next.
const SYSTEMD_PRIVATE_DIRS: [&str; 3] = ["/var/lib/private", "/var/cache/private", "/var/log/private"];
/// Root's: each launcher's runtime directory. Mode 0711: no one else may list it.
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
    _lock: Option<UidLock>,
}

/// systemd's lock on a dynamic uid ([`SYSTEMD_UID_LOCKS`]), held while the launcher lives.
struct UidLock {
    path: PathBuf,
    _file: fs::File,
}

impl UidLock {
    /// Takes the lock on `id` in `dir` as systemd takes it; `None` if someone holds it.
    fn take(dir: &Path, id: u32) -> io::Result<Option<UidLock>> {
        let path = dir.join(id.to_string());
        let flags = OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        let file = rustix::fs::open(&path, flags, Mode::from_raw_mode(0o600))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        // Unlinked by its holder between our open and our lock: that uid was just let go, and
        // someone may be taking it anew through a new file. Leave it.
        if fstat(&file)?.st_nlink == 0 {
            return Ok(None);
        }
        Ok(Some(UidLock { path, _file: file.into() }))
    }
}

impl Drop for UidLock {
    /// Unlinked before the lock goes with the file, as systemd does: whoever opened the file
    /// meanwhile sees it unlinked once it has the lock.
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl User {
    /// A named user or uid from /etc/passwd (a bare uid without an entry gets a group of the
    /// same number); root, and a user whose group is root's, are refused.
    pub fn named(spec: &str, flag: &'static str) -> Result<User, LaunchError> {
        let passwd = fs::read_to_string("/etc/passwd").map_err(LaunchError::Passwd)?;
        let (uid, gid) = ids_in(&passwd, spec, flag)?;
        Ok(User { uid: Uid::from_raw(uid), gid: Gid::from_raw(gid), dynamic: false, _lock: None })
    }

    /// A fresh uid (and gid of the same number) that nothing else uses; see the module's doc.
    pub fn dynamic() -> Result<User, LaunchError> {
        let locks = Path::new(SYSTEMD_UID_LOCKS);
        let lock_err = |source| LaunchError::RuntimeDir { path: locks.into(), source };
        fs::DirBuilder::new().mode(0o755).recursive(true).create(locks).map_err(lock_err)?;
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
        let mut in_use = ids_of_processes();
        in_use.extend(owners_of_private_dirs());
        for i in 0..span {
            let id = DYNAMIC_UIDS.start() + (first + i) % span;
            if listed(id) || in_use.contains(&id) {
                continue;
            }
            if let Some(lock) = UidLock::take(locks, id).map_err(lock_err)? {
                return Ok(User { uid: Uid::from_raw(id), gid: Gid::from_raw(id), dynamic: true, _lock: Some(lock) });
            }
        }
        Err(LaunchError::NoFreeUid)
    }
}

/// The owners of what the directories of systemd's dynamic users hold ([`SYSTEMD_PRIVATE_DIRS`]).
fn owners_of_private_dirs() -> Vec<u32> {
    SYSTEMD_PRIVATE_DIRS
        .iter()
        .filter_map(|dir| fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten())
        .filter_map(|entry| entry.path().symlink_metadata().ok())
        .flat_map(|meta| [meta.uid(), meta.gid()])
        .collect()
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

/// The uid and gid `spec` names in the text of /etc/passwd. Group 0 would give the half root's
/// group access to files (root's `0640` ones, say), as uid 0 would give it root's.
fn ids_in(passwd: &str, spec: &str, flag: &'static str) -> Result<(u32, u32), LaunchError> {
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && (f[0] == spec || f[2] == spec));
    let (uid, gid) = match entry {
        Some(f) => (f[2].parse().ok(), f[3].parse().ok()),
        None => (spec.parse().ok(), spec.parse().ok()),
    };
    match (uid, gid) {
        (Some(0), _) => Err(LaunchError::RootChild(flag)),
        (Some(_), Some(0)) => Err(LaunchError::RootGroup(flag)),
        (Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => Err(LaunchError::UnknownUser(spec.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_a_user_of_roots_group_are_refused_by_name_or_number() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nops:x:990:0::/:/bin/false\nbtc:x:991:991::/:/bin/false\n";
        for spec in ["root", "0"] {
            assert!(matches!(ids_in(passwd, spec, "--loader-user"), Err(LaunchError::RootChild("--loader-user"))));
        }
        for spec in ["ops", "990"] {
            assert!(matches!(ids_in(passwd, spec, "--loader-user"), Err(LaunchError::RootGroup("--loader-user"))));
        }
        assert!(matches!(ids_in(passwd, "btc", "--loader-user"), Ok((991, 991))));
        assert!(matches!(ids_in(passwd, "61000", "--loader-user"), Ok((61000, 61000))));
        assert!(matches!(ids_in(passwd, "nobody", "--loader-user"), Err(LaunchError::UnknownUser(_))));
    }

    /// systemd's side of the protocol (`pick_uid`): open `<dir>/<uid>`, `flock` it, and unlink
    /// it before letting the uid go.
    #[test]
    fn a_uid_is_taken_only_while_nobody_else_holds_its_lock_and_let_go_as_systemd_does() {
        let dir = std::env::temp_dir().join(format!("uid-locks-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("lock directory");
        let file = dir.join("61200");
        let systemds = fs::File::create(&file).expect("systemd's lock file");
        flock(&systemds, FlockOperation::LockExclusive).expect("systemd's lock");
        assert!(UidLock::take(&dir, 61200).expect("lockable").is_none(), "systemd holds it");
        drop(systemds);

        let ours = UidLock::take(&dir, 61200).expect("lockable").expect("free once systemd let it go");
        let systemds = fs::File::open(&file).expect("the lock file");
        assert_eq!(flock(&systemds, FlockOperation::NonBlockingLockExclusive), Err(Errno::WOULDBLOCK));
        drop(ours);
        // systemd, holding the file it opened meanwhile, gets the lock and sees it unlinked.
        flock(&systemds, FlockOperation::LockExclusive).expect("the lock, once let go");
        assert_eq!(fstat(&systemds).expect("fstat").st_nlink, 0);
        assert!(!file.exists());
        fs::remove_dir(&dir).expect("remove the lock directory");
    }
}
