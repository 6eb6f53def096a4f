//! The publisher's NATS options, handed on without a secret ever reaching a command line.
//!
//! The launcher reads every file itself, as root, so that a secret may stay private to root
//! (0600, e.g. under /etc/peer-observer-ebpf/). Each goes to the publisher as a sealed memfd
//! holding a copy, named `/proc/self/fd/N` on its command line. The publisher's own uid could
//! not reopen the original file through an inherited descriptor (the kernel checks the file's
//! mode), but it can reopen its memfd: async-nats does so for the TLS files at every
//! reconnection. A password given as a value (`-p`, or NATS_PASSWORD) goes the same way, as
//! `--nats-password-file`, so neither the publisher's command line nor its environment holds it.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{MemfdFlags, SealFlags};

/// ebpf-publisher's NATS options, with its names and short flags (upstream's `-u`, `-p`, `-f`).
#[derive(clap::Args)]
pub struct NatsFlags {
    /// User name for NATS, with the password of --nats-password-file or NATS_PASSWORD
    #[arg(short = 'u', long = "nats-username")]
    username: Option<String>,
    /// Password for --nats-username. A value given here shows in `ps`: use --nats-password-file or
    /// the environment variable instead. The publisher gets it as a file, never as a value
    #[arg(short = 'p', long = "nats-password", env = "NATS_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// File holding the password for --nats-username (read by the launcher, as root)
    #[arg(short = 'f', long = "nats-password-file")]
    password_file: Option<PathBuf>,
    /// File holding the token of NATS's token authentication
    #[arg(long = "nats-token-file")]
    token_file: Option<PathBuf>,
    /// File holding a user nkey seed (SU…) for NATS's nkey authentication
    #[arg(long = "nats-nkey-seed-file")]
    nkey_seed_file: Option<PathBuf>,
    /// NATS credentials file (.creds: a user JWT and its nkey seed)
    #[arg(long = "nats-credentials-file")]
    credentials_file: Option<PathBuf>,
    /// CA certificates (PEM) that the NATS server's certificate must be signed by [default: the
    /// system's CA bundle]
    #[arg(long = "nats-tls-ca-file")]
    tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a server that verifies its clients; needs --nats-tls-key-file
    #[arg(long = "nats-tls-cert-file")]
    tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --nats-tls-cert-file
    #[arg(long = "nats-tls-key-file")]
    tls_key_file: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS
    #[arg(long = "nats-tls-required")]
    tls_required: bool,
    /// Name of the publisher's connection in the server's monitoring [default: ebpf-publisher]
    #[arg(long = "nats-client-name")]
    client_name: Option<String>,
    /// Publish on `PREFIX.<subject>` (PREFIX without its trailing dot); subscribers then subscribe
    /// `PREFIX.*`
    #[arg(long = "nats-subject-prefix")]
    subject_prefix: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NatsFileError {
    #[error("cannot read {flag} {}: {source}", path.display())]
    Read { flag: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{flag} {} is not a regular file", path.display())]
    NotAFile { flag: &'static str, path: PathBuf },
    #[error("{flag} {} is larger than {MAX_FILE_BYTES} bytes: is it the right file?", path.display())]
    TooLarge { flag: &'static str, path: PathBuf },
    #[error("cannot hand {flag} on to ebpf-publisher: {source}")]
    Memfd { flag: &'static str, source: std::io::Error },
    #[error("both --nats-password-file and --nats-password (or NATS_PASSWORD) give a password: give one")]
    TwoPasswords,
}

/// Secret and TLS files are small; anything larger was named by mistake.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The publisher's NATS arguments, and the memfds they name, which it must inherit.
pub struct HandedOn {
    pub args: Vec<std::ffi::OsString>,
    files: Vec<OwnedFd>,
}

impl HandedOn {
    pub fn fds(&self) -> Vec<RawFd> {
        self.files.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

/// Reads `path` as root, without blocking on a FIFO, at most [`MAX_FILE_BYTES`].
fn read_file(flag: &'static str, path: &Path) -> Result<Vec<u8>, NatsFileError> {
    let err = |source| NatsFileError::Read { flag, path: path.to_owned(), source };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(NatsFileError::NotAFile { flag, path: path.to_owned() });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(NatsFileError::TooLarge { flag, path: path.to_owned() });
    }
    Ok(bytes)
}

/// A sealed memfd holding `bytes` (close-on-exec: only the publisher's spawn clears that).
fn memfd(flag: &'static str, bytes: &[u8]) -> Result<OwnedFd, NatsFileError> {
    let err = |source: std::io::Error| NatsFileError::Memfd { flag, source };
    let fd = rustix::fs::memfd_create(flag.trim_start_matches('-'), MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(|e| err(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).map_err(err)?;
    // Nothing may change what the publisher reads, nor unseal it.
    rustix::fs::fcntl_add_seals(&file, SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL)
        .map_err(|e| err(e.into()))?;
    Ok(file.into())
}

impl NatsFlags {
    /// Under --stdout, which refuses every other NATS option: the subject prefix only, which
    /// names the subjects written. A password from NATS_PASSWORD, the one that comes unasked,
    /// stays behind.
    pub fn subject_prefix_only(&self) -> HandedOn {
        let args = self.subject_prefix.iter().flat_map(|prefix| ["--nats-subject-prefix".into(), prefix.into()]);
        HandedOn { args: args.collect(), files: Vec::new() }
    }

    /// The publisher's NATS arguments: values that are no secret as they are, every file and
    /// the password as a memfd. Reads the files now, before anything starts.
    pub fn hand_on(&self) -> Result<HandedOn, NatsFileError> {
        let mut handed = HandedOn { args: Vec::new(), files: Vec::new() };
        let mut file_arg = |flag: &'static str, bytes: &[u8]| -> Result<(), NatsFileError> {
            let fd = memfd(flag, bytes)?;
            handed.args.push(flag.into());
            handed.args.push(format!("/proc/self/fd/{}", fd.as_raw_fd()).into());
            handed.files.push(fd);
            Ok(())
        };
        match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => return Err(NatsFileError::TwoPasswords),
            (Some(password), None) => file_arg("--nats-password-file", password.as_bytes())?,
            (None, Some(path)) => file_arg("--nats-password-file", &read_file("--nats-password-file", path)?)?,
            (None, None) => {}
        }
        for (flag, path) in [
            ("--nats-token-file", &self.token_file),
            ("--nats-nkey-seed-file", &self.nkey_seed_file),
            ("--nats-credentials-file", &self.credentials_file),
            ("--nats-tls-ca-file", &self.tls_ca_file),
            ("--nats-tls-cert-file", &self.tls_cert_file),
            ("--nats-tls-key-file", &self.tls_key_file),
        ] {
            if let Some(path) = path {
                file_arg(flag, &read_file(flag, path)?)?;
            }
        }
        for (flag, value) in [
            ("--nats-username", &self.username),
            ("--nats-client-name", &self.client_name),
            ("--nats-subject-prefix", &self.subject_prefix),
        ] {
            if let Some(value) = value {
                handed.args.extend([flag.into(), value.into()]);
            }
        }
        if self.tls_required {
            handed.args.push("--nats-tls-required".into());
        }
        Ok(handed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsFlags,
    }

    fn hand_on(args: &[&str]) -> Result<HandedOn, NatsFileError> {
        Cli::try_parse_from(std::iter::once("ebpf-extractor").chain(args.iter().copied())).unwrap().nats.hand_on()
    }

    /// The argument after `flag`.
    fn after<'a>(handed: &'a HandedOn, flag: &str) -> &'a str {
        let at = handed.args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} missing"));
        handed.args[at + 1].to_str().unwrap()
    }

    #[test]
    fn a_password_value_becomes_a_sealed_file() {
        let handed = hand_on(&["-u", "ebpf", "-p", "s3cret", "--nats-subject-prefix", "p.q"]).unwrap();
        assert!(handed.args.iter().all(|a| a != "s3cret"), "{:?}", handed.args);
        let file = after(&handed, "--nats-password-file");
        assert_eq!(std::fs::read_to_string(file).unwrap(), "s3cret");
        let write = std::fs::OpenOptions::new().write(true).open(file).and_then(|mut f| f.write_all(b"x"));
        assert!(write.is_err(), "the memfd is sealed against writing");
        assert_eq!(after(&handed, "--nats-username"), "ebpf");
        assert_eq!(after(&handed, "--nats-subject-prefix"), "p.q");
        assert_eq!(handed.fds().len(), 1);
    }

    #[test]
    fn files_are_read_now_and_named_when_missing() {
        let err = hand_on(&["--nats-tls-key-file", "/nonexistent/key.pem"]).err().unwrap();
        assert_eq!(
            err.to_string(),
            "cannot read --nats-tls-key-file /nonexistent/key.pem: No such file or directory (os error 2)"
        );
        assert!(matches!(hand_on(&["-p", "a", "-f", "/etc/hostname"]), Err(NatsFileError::TwoPasswords)));
        let handed = hand_on(&["--nats-tls-ca-file", "/etc/hostname", "--nats-tls-required"]).unwrap();
        assert_eq!(
            std::fs::read(after(&handed, "--nats-tls-ca-file")).unwrap(),
            std::fs::read("/etc/hostname").unwrap()
        );
        assert!(handed.args.iter().any(|a| a == "--nats-tls-required"));
    }
}
