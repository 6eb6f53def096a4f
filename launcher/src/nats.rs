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

use ipc_protocol::cli::{NatsFlags, DEFAULT_NATS_CLIENT_NAME};
use rustix::fs::{MemfdFlags, SealFlags};

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

/// Under --stdout, which refuses every other NATS option: the subject prefix only, which names
/// the subjects written. A password from NATS_PASSWORD, the one that comes unasked, stays
/// behind.
pub fn subject_prefix_only(flags: &NatsFlags) -> HandedOn {
    HandedOn { args: prefix_arg(flags).into_iter().flatten().collect(), files: Vec::new() }
}

fn prefix_arg(flags: &NatsFlags) -> Option<[std::ffi::OsString; 2]> {
    let prefix = &flags.subject_prefix;
    (!prefix.is_empty()).then(|| ["--nats-subject-prefix".into(), prefix.into()])
}

/// The publisher's NATS arguments but the address: values that are no secret as they are,
/// every file and the password as a memfd. Reads the files now, before anything starts.
/// `system_ca` is the CA bundle that SSL_CERT_FILE names, which the publisher trusts when not
/// given --nats-tls-ca-file: it goes on as that flag, so that it too may be root's alone.
pub fn hand_on(flags: &NatsFlags, system_ca: Option<&Path>) -> Result<HandedOn, NatsFileError> {
    let mut handed = HandedOn { args: Vec::new(), files: Vec::new() };
    let mut file_arg = |flag: &'static str, bytes: &[u8]| -> Result<(), NatsFileError> {
        let fd = memfd(flag, bytes)?;
        handed.args.push(flag.into());
        handed.args.push(format!("/proc/self/fd/{}", fd.as_raw_fd()).into());
        handed.files.push(fd);
        Ok(())
    };
    match (&flags.password, &flags.password_file) {
        (Some(_), Some(_)) => return Err(NatsFileError::TwoPasswords),
        (Some(password), None) => file_arg("--nats-password-file", password.as_bytes())?,
        (None, Some(path)) => file_arg("--nats-password-file", &read_file("--nats-password-file", path)?)?,
        (None, None) => {}
    }
    match (&flags.tls_ca_file, system_ca) {
        (Some(path), _) => file_arg("--nats-tls-ca-file", &read_file("--nats-tls-ca-file", path)?)?,
        (None, Some(path)) => file_arg("--nats-tls-ca-file", &read_file("SSL_CERT_FILE", path)?)?,
        (None, None) => {}
    }
    for (flag, path) in [
        ("--nats-token-file", &flags.token_file),
        ("--nats-nkey-seed-file", &flags.nkey_seed_file),
        ("--nats-credentials-file", &flags.credentials_file),
        ("--nats-tls-cert-file", &flags.tls_cert_file),
        ("--nats-tls-key-file", &flags.tls_key_file),
    ] {
        if let Some(path) = path {
            file_arg(flag, &read_file(flag, path)?)?;
        }
    }
    if let Some(user) = &flags.username {
        handed.args.extend(["--nats-username".into(), user.into()]);
    }
    if flags.client_name != DEFAULT_NATS_CLIENT_NAME {
        handed.args.extend(["--nats-client-name".into(), (&flags.client_name).into()]);
    }
    handed.args.extend(prefix_arg(flags).into_iter().flatten());
    if flags.tls_required {
        handed.args.push("--nats-tls-required".into());
    }
    if flags.legacy_envelope {
        handed.args.push("--nats-legacy-envelope".into());
    }
    Ok(handed)
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

    fn parse(args: &[&str]) -> NatsFlags {
        Cli::try_parse_from(std::iter::once("ebpf-extractor").chain(args.iter().copied())).unwrap().nats
    }

    fn hand_on(args: &[&str]) -> Result<HandedOn, NatsFileError> {
        super::hand_on(&parse(args), None)
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

    #[test]
    fn a_client_name_is_handed_on_unless_it_is_the_default() {
        let named = hand_on(&["--nats-client-name", "node1"]).unwrap();
        assert_eq!(after(&named, "--nats-client-name"), "node1");
        assert!(hand_on(&["--nats-client-name", DEFAULT_NATS_CLIENT_NAME]).unwrap().args.is_empty());
        assert!(hand_on(&[]).unwrap().args.is_empty());
    }

    #[test]
    fn the_legacy_envelope_is_handed_on() {
        assert_eq!(hand_on(&["--nats-legacy-envelope"]).unwrap().args, ["--nats-legacy-envelope"]);
    }

    #[test]
    fn the_bundle_of_ssl_cert_file_goes_on_as_the_ca_file_unless_one_is_given() {
        let hostname = std::fs::read("/etc/hostname").unwrap();
        let bundle = super::hand_on(&parse(&[]), Some(Path::new("/etc/hostname"))).unwrap();
        assert_eq!(std::fs::read(after(&bundle, "--nats-tls-ca-file")).unwrap(), hostname);
        let given =
            super::hand_on(&parse(&["--nats-tls-ca-file", "/etc/os-release"]), Some(Path::new("/etc/hostname")));
        let given = given.unwrap();
        assert_eq!(
            std::fs::read(after(&given, "--nats-tls-ca-file")).unwrap(),
            std::fs::read("/etc/os-release").unwrap()
        );
        assert_eq!(given.fds().len(), 1);
        let missing = super::hand_on(&parse(&[]), Some(Path::new("/nonexistent/ca.pem"))).err().unwrap();
        assert_eq!(
            missing.to_string(),
            "cannot read SSL_CERT_FILE /nonexistent/ca.pem: No such file or directory (os error 2)"
        );
    }
}
