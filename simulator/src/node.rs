//! What a running bitcoind leaves on the file system, done the way Bitcoin Core does it
//! (`SetupEnvironment` in its `src/common/system.cpp`, `CreatePidFile` in `src/init.cpp`):
//! `umask(077)` before anything is created, a network directory inside `-datadir`, and a pid
//! file holding the pid and a newline, removed again at a clean exit. So the pid file is
//! 0600 and its directory 0700, readable by the node's own user only.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::Mode;

/// Bitcoin Core's arguments that decide where its files go, in its own spelling too
/// (`-datadir=DIR`, `-pid=FILE`, `-regtest`).
pub const CORE_ARGS: [&str; 3] = ["datadir", "pid", "regtest"];

/// Rewrites Core's single-dash spelling of [`CORE_ARGS`] into clap's `--name[=value]`.
pub fn core_spelling(args: impl Iterator<Item = String>) -> Vec<String> {
    args.map(|arg| {
        let name = arg.strip_prefix('-').filter(|rest| !rest.starts_with('-'));
        match name.map(|rest| rest.split_once('=').map_or(rest, |(name, _)| name)) {
            Some(name) if CORE_ARGS.contains(&name) => format!("-{arg}"),
            _ => arg,
        }
    })
    .collect()
}

/// The node's pid file while the process runs; removed on drop, as bitcoind removes it in
/// its shutdown. A crash (SIGKILL) leaves it behind, stale, like bitcoind's.
pub struct PidFile(PathBuf);

impl PidFile {
    /// Where bitcoind writes its pid file: `-pid` as given if absolute, otherwise inside the
    /// network's directory (the datadir itself on mainnet, `<datadir>/regtest` on regtest).
    /// Without a datadir the simulator writes nothing unless `-pid` is absolute.
    pub fn location(datadir: Option<&Path>, pid: Option<&Path>, regtest: bool) -> Result<Option<PathBuf>, String> {
        let pid = pid.unwrap_or(Path::new("bitcoind.pid"));
        if pid.is_absolute() {
            return Ok(Some(pid.to_owned()));
        }
        let Some(datadir) = datadir else { return Ok(None) };
        if !datadir.is_dir() {
            return Err(format!("Error: Specified data directory \"{}\" does not exist.", datadir.display()));
        }
        let net_dir = if regtest { datadir.join("regtest") } else { datadir.to_owned() };
        fs::create_dir_all(&net_dir).map_err(|e| format!("cannot create {}: {e}", net_dir.display()))?;
        Ok(Some(net_dir.join(pid)))
    }

    /// Writes the pid and a newline, truncating a stale file in place as `fopen(.., "w")` does.
    pub fn write(path: PathBuf) -> Result<PidFile, String> {
        let mut file =
            fs::File::create(&path).map_err(|e| format!("Unable to create the PID file '{}': {e}", path.display()))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Bitcoin Core's first act (`SetupEnvironment`): everything it creates is private to its user.
pub fn private_umask() {
    rustix::process::umask(Mode::from_raw_mode(0o077));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_spelling_becomes_clap_spelling_and_the_rest_is_kept() {
        let args = [
            "sim",
            "-datadir=/var/lib/bitcoind",
            "-pid=/run/bitcoind/bitcoind.pid",
            "-regtest",
            "--count",
            "3",
            "-datadirx=1",
        ];
        assert_eq!(
            core_spelling(args.iter().map(|s| s.to_string())),
            [
                "sim",
                "--datadir=/var/lib/bitcoind",
                "--pid=/run/bitcoind/bitcoind.pid",
                "--regtest",
                "--count",
                "3",
                "-datadirx=1"
            ]
        );
    }
}
