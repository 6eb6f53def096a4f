//! What a running bitcoind leaves on the file system, done the way Bitcoin Core does it
//! (`SetupEnvironment` in its `src/common/system.cpp`, `CreatePidFile` in `src/init.cpp`):
//! `umask(077)` before anything is created, a network directory inside `-datadir`, and a pid
//! file holding the pid and a newline, removed again at a clean exit. So the pid file is
//! 0600 and its directory 0700, readable by the node's own user only. Also the parts of its
//! start and shutdown that a service manager sees: the `-conf` file's `name=value` lines
//! (`src/common/config.cpp`) and the `-startupnotify`/`-shutdownnotify` commands (`src/init.cpp`),
//! which Bitcoin Core's systemd unit uses to report readiness.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::Mode;

/// Bitcoin Core's arguments that the simulator takes, in Core's own spelling too
/// (`-datadir=DIR`, `-pid=FILE`, `-regtest`, `-conf=FILE`, `-startupnotify=CMD`, ...).
pub const CORE_ARGS: [&str; 6] = ["datadir", "pid", "regtest", "conf", "startupnotify", "shutdownnotify"];

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

/// Where bitcoind reads its configuration: `-conf` (relative to the datadir if relative and a
/// datadir is given), else `<datadir>/bitcoin.conf` if it exists; `None` for no file.
pub fn conf_path(conf: Option<&Path>, datadir: Option<&Path>) -> Option<PathBuf> {
    match (conf, datadir) {
        (Some(conf), Some(datadir)) if conf.is_relative() => Some(datadir.join(conf)),
        (Some(conf), _) => Some(conf.to_owned()),
        (None, Some(datadir)) => Some(datadir.join("bitcoin.conf")).filter(|path| path.exists()),
        (None, None) => None,
    }
}

/// A configuration file's options, as command-line arguments.
#[derive(Debug, PartialEq)]
pub struct Conf {
    /// `--name=value` or `--name`, to go before the command line's, which override them as
    /// in bitcoind.
    pub args: Vec<String>,
    /// Names the simulator does not know (bitcoind's own, such as `server`), ignored with a
    /// warning as bitcoind ignores unknown names in its configuration file.
    pub ignored: Vec<String>,
}

/// The options of the configuration file at `path`. Lines are `name=value`, `#` starts a
/// comment, blank lines are skipped. `is_flag(name)` tells an option that takes no value from
/// one that does (`None`: no such option); a flag is set as bitcoind reads a boolean: by an
/// empty value or one whose leading integer is not 0 (`regtest=1`).
pub fn conf_args(path: &Path, is_flag: impl Fn(&str) -> Option<bool>) -> Result<Conf, String> {
    let text = fs::read_to_string(path).map_err(|e| {
        format!(
            "Error reading configuration file: specified config file \"{}\" could not be opened: {e}",
            path.display()
        )
    })?;
    let mut conf = Conf { args: Vec::new(), ignored: Vec::new() };
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let parse_error =
            |why: &str| format!("Error reading configuration file: parse error on line {}: {line}: {why}", number + 1);
        if line.starts_with('[') {
            return Err(parse_error("sections are not supported"));
        }
        let (name, value) = line.split_once('=').ok_or_else(|| parse_error("expected name=value"))?;
        let (name, value) = (name.trim(), value.trim());
        if name == "conf" {
            return Err(parse_error("conf cannot be set in the configuration file"));
        }
        match is_flag(name) {
            None => conf.ignored.push(name.to_string()),
            Some(true) if value.is_empty() || leading_integer(value) != 0 => conf.args.push(format!("--{name}")),
            Some(true) => {}
            Some(false) => conf.args.push(format!("--{name}={value}")),
        }
    }
    Ok(conf)
}

/// The integer a string starts with, 0 if none, as C's `atoi` reads it.
fn leading_integer(value: &str) -> i64 {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    let magnitude: i64 = digits[..end].parse().unwrap_or(0);
    if value.starts_with('-') {
        -magnitude
    } else {
        magnitude
    }
}

/// Runs a notification command as bitcoind's `runCommand` does: through `system()`, that is
/// `/bin/sh -c`, logging a failure and going on.
pub fn run_command(command: &str) {
    match std::process::Command::new("/bin/sh").arg("-c").arg(command).status() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("runCommand error: system({command}) returned {status}"),
        Err(e) => eprintln!("runCommand error: system({command}): {e}"),
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
            "-startupnotify=systemd-notify --ready",
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
                "-datadirx=1",
                "--startupnotify=systemd-notify --ready",
            ]
        );
    }

    #[test]
    fn a_conf_file_becomes_arguments_and_bad_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("sim-conf-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("bitcoin.conf");
        let is_flag = |name: &str| match name {
            "regtest" => Some(true),
            "count" | "rate" => Some(false),
            _ => None,
        };
        fs::write(&conf, "# firing\ncount=0\n\n rate = 10 # per second\nregtest=1\nserver=1\nrpcauth=u:s$h\n").unwrap();
        let want = Conf {
            args: vec!["--count=0".into(), "--rate=10".into(), "--regtest".into()],
            ignored: vec!["server".into(), "rpcauth".into()],
        };
        assert_eq!(conf_args(&conf, is_flag).unwrap(), want);
        for (value, set) in [("0", false), ("", true), ("2", true), ("-1", true), ("yes", false), ("1x", true)] {
            fs::write(&conf, format!("regtest={value}\n")).unwrap();
            assert_eq!(conf_args(&conf, is_flag).unwrap().args.len(), usize::from(set), "regtest={value}");
        }
        for (text, why) in [
            ("count\n", "line 1: count: expected name=value"),
            ("[regtest]\nrate=1\n", "line 1: [regtest]: sections are not supported"),
            ("conf=/etc/other.conf\n", "line 1: conf=/etc/other.conf: conf cannot be set in the configuration file"),
        ] {
            fs::write(&conf, text).unwrap();
            let error = conf_args(&conf, is_flag).unwrap_err();
            assert_eq!(error, format!("Error reading configuration file: parse error on {why}"));
        }
        let missing = dir.join("missing.conf");
        assert!(conf_args(&missing, is_flag).unwrap_err().starts_with(&format!(
            "Error reading configuration file: specified config file \"{}\" could not be opened: ",
            missing.display()
        )));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_conf_file_is_found_where_bitcoind_looks() {
        let datadir = Path::new("/var/lib/bitcoind");
        let absolute = Path::new("/etc/bitcoin/bitcoin.conf");
        assert_eq!(conf_path(Some(absolute), Some(datadir)).as_deref(), Some(absolute));
        assert_eq!(conf_path(Some(Path::new("my.conf")), Some(datadir)), Some(datadir.join("my.conf")));
        assert_eq!(conf_path(Some(Path::new("my.conf")), None), Some(PathBuf::from("my.conf")));
        assert_eq!(conf_path(None, Some(Path::new("/nonexistent-datadir"))), None);
        assert_eq!(conf_path(None, None), None);
    }
}
