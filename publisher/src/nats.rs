//! The NATS connection: where, as whom and over what the publisher connects (`--nats-*`), one
//! line saying why a server refused it, the connection's state for the metrics, and the
//! subject prefix.
//!
//! Every file is read at start-up, before the seccomp filter is installed, so that a missing
//! or unreadable one is named at once. Secrets then live in memory only. async-nats reads the
//! TLS files (CA, client certificate and key) again at each TLS (re)connection. Those are
//! read-only opens, which the filter allows. It is also always given a CA file, so it never
//! scans the system's certificate store itself (which takes `statx` and `getdents64`: not in
//! the filter).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_nats::rustls::pki_types::pem::PemObject;
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use async_nats::rustls::{self, AlertDescription, CertificateError};
use async_nats::{Client, ClientError, ConnectError, ConnectErrorKind, ConnectOptions, Event, ServerInfo, Subject};

use ipc_protocol::cli::NatsFlags;

use crate::counters::Counters;
use crate::log_limit::{RateLimited, LOG_INTERVAL};

/// Secret and TLS files are small; anything larger was named by mistake.
const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot read {flag} {}: {source}", path.display())]
    Read { flag: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{flag} {} is not a regular file", path.display())]
    NotAFile { flag: &'static str, path: PathBuf },
    #[error("{flag} {} is larger than {MAX_FILE_BYTES} bytes: is it the right file?", path.display())]
    TooLarge { flag: &'static str, path: PathBuf },
    #[error("{flag} {} is empty", path.display())]
    Empty { flag: &'static str, path: PathBuf },
    #[error("{flag} {} is not UTF-8 text", path.display())]
    NotText { flag: &'static str, path: PathBuf },
    #[error("--nats-credentials-file {} is not a NATS credentials file (a user JWT and its nkey seed, as nsc writes them): {source}", path.display())]
    Credentials { path: PathBuf, source: std::io::Error },
    #[error("{flag} {} holds no PEM certificate{}", path.display(), reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    NoCertificate { flag: &'static str, path: PathBuf, reason: Option<String> },
    #[error("--nats-tls-key-file {} holds no PEM private key: {reason}", path.display())]
    NoKey { path: PathBuf, reason: String },
    #[error("{0}")]
    Usage(&'static str),
    /// A server that refused the connection, in one line that says what to fix.
    #[error("{0}")]
    Refused(String),
}

/// Where events go: `<prefix>.<subject>`, or the subject alone without a prefix (the default,
/// so that peer-observer's tools, which subscribe to `*`, work unchanged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectPrefix(Option<String>);

impl SubjectPrefix {
    /// The prefix of `--nats-subject-prefix`, which clap checked as it parsed the flags
    /// (`ipc_protocol::cli::subject_prefix`); none if empty.
    pub fn of(flags: &NatsFlags) -> SubjectPrefix {
        let prefix = &flags.subject_prefix;
        SubjectPrefix((!prefix.is_empty()).then(|| prefix.clone()))
    }

    /// The subject a subscriber to events of `subject` subscribes to (wildcards allowed).
    pub fn subscription(&self, subject: &str) -> String {
        match &self.0 {
            None => subject.to_owned(),
            Some(prefix) => format!("{prefix}.{subject}"),
        }
    }

    /// The subject an event of `subject` is published on.
    pub fn apply(&self, subject: &'static str) -> Subject {
        match &self.0 {
            None => Subject::from_static(subject),
            Some(prefix) => Subject::from(format!("{prefix}.{subject}")),
        }
    }
}

/// How the publisher authenticates: at most one way.
enum Auth {
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    Nkey {
        seed: String,
        path: PathBuf,
    },
    /// The file's text: async-nats takes the JWT and the seed from it.
    Credentials {
        creds: String,
        path: PathBuf,
    },
}

impl Auth {
    /// What to check when the server refuses these credentials.
    fn hint(&self) -> String {
        match self {
            Auth::None => "the server requires credentials: give --nats-username with --nats-password-file, \
                           --nats-token-file, --nats-nkey-seed-file or --nats-credentials-file"
                .into(),
            Auth::UserPassword { .. } => "check --nats-username/--nats-password-file".into(),
            Auth::Token(_) => "check --nats-token-file".into(),
            Auth::Nkey { .. } => {
                "check --nats-nkey-seed-file: the server's authorization must list the seed's public key".into()
            }
            Auth::Credentials { .. } => {
                "check --nats-credentials-file: the server must trust the operator and account that signed its JWT"
                    .into()
            }
        }
    }
}

/// The options read from the command line and the files, before connecting.
struct Prepared {
    address: String,
    auth: Auth,
    ca: Trust,
    client_cert: Option<(PathBuf, PathBuf)>,
}

/// The CAs async-nats verifies the server's certificate with.
enum Trust {
    /// --nats-tls-ca-file.
    Given(PathBuf),
    /// The system's CA bundle file.
    System(PathBuf),
    /// No bundle found: nothing is trusted (an empty file, so that async-nats does not scan
    /// the system's store itself at each connection).
    Nothing,
}

impl Trust {
    fn file(&self) -> PathBuf {
        match self {
            Trust::Given(path) | Trust::System(path) => path.clone(),
            Trust::Nothing => PathBuf::from("/dev/null"),
        }
    }
}

/// Opens `path` without blocking (a FIFO named by mistake must not hang the start) and reads
/// at most [`MAX_FILE_BYTES`] of it.
fn read_file(flag: &'static str, path: &Path) -> Result<Vec<u8>, NatsError> {
    let err = |source| NatsError::Read { flag, path: path.to_owned(), source };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(NatsError::NotAFile { flag, path: path.to_owned() });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(NatsError::TooLarge { flag, path: path.to_owned() });
    }
    Ok(bytes)
}

/// A secret file's text without its trailing line end (as `echo` and editors leave one).
fn read_secret(flag: &'static str, path: &Path) -> Result<String, NatsError> {
    let text =
        String::from_utf8(read_file(flag, path)?).map_err(|_| NatsError::NotText { flag, path: path.to_owned() })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(NatsError::Empty { flag, path: path.to_owned() });
    }
    Ok(secret.to_owned())
}

/// Checks that a PEM file holds at least one certificate.
fn check_certificates(flag: &'static str, path: &Path) -> Result<(), NatsError> {
    let bytes = read_file(flag, path)?;
    let no_certificate = |reason| NatsError::NoCertificate { flag, path: path.to_owned(), reason };
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        cert.map_err(|e| no_certificate(Some(e.to_string())))?;
        found += 1;
    }
    if found == 0 {
        return Err(no_certificate(None));
    }
    Ok(())
}

const USERNAME_WITHOUT_PASSWORD: &str =
    "--nats-username needs a password: --nats-password-file, or NATS_PASSWORD in the environment";
const PASSWORD_WITHOUT_USERNAME: &str =
    "a NATS password (--nats-password-file, --nats-password or NATS_PASSWORD) needs --nats-username";

/// Token, nkey or .creds authentication, or none, from its file.
fn key_auth(args: &NatsFlags) -> Result<Auth, NatsError> {
    Ok(if let Some(path) = &args.token_file {
        Auth::Token(read_secret("--nats-token-file", path)?)
    } else if let Some(path) = &args.nkey_seed_file {
        let seed = read_secret("--nats-nkey-seed-file", path)?.trim().to_owned();
        Auth::Nkey { seed, path: path.clone() }
    } else if let Some(path) = &args.credentials_file {
        let flag = "--nats-credentials-file";
        let creds =
            String::from_utf8(read_file(flag, path)?).map_err(|_| NatsError::NotText { flag, path: path.clone() })?;
        Auth::Credentials { creds, path: path.clone() }
    } else {
        Auth::None
    })
}

/// Reads every file named and checks the combination, all at start-up.
fn prepare(args: &NatsFlags) -> Result<Prepared, NatsError> {
    let password = match (&args.password, &args.password_file) {
        (Some(_), Some(_)) => {
            return Err(NatsError::Usage(
                "both --nats-password-file and --nats-password (or NATS_PASSWORD) give a password: give one",
            ))
        }
        (Some(password), None) => Some(password.clone()),
        (None, Some(path)) => Some(read_secret("--nats-password-file", path)?),
        (None, None) => None,
    };
    let ways = [
        args.username.is_some() || password.is_some(),
        args.token_file.is_some(),
        args.nkey_seed_file.is_some(),
        args.credentials_file.is_some(),
    ];
    if ways.iter().filter(|way| **way).count() > 1 {
        return Err(NatsError::Usage(
            "give one way to authenticate to NATS: --nats-username with a password, --nats-token-file, \
             --nats-nkey-seed-file or --nats-credentials-file",
        ));
    }
    let auth = match (&args.username, password) {
        (Some(user), Some(password)) => Auth::UserPassword { user: user.clone(), password },
        (Some(_), None) => return Err(NatsError::Usage(USERNAME_WITHOUT_PASSWORD)),
        (None, Some(_)) => return Err(NatsError::Usage(PASSWORD_WITHOUT_USERNAME)),
        (None, None) => key_auth(args)?,
    };
    let client_cert = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            check_certificates("--nats-tls-cert-file", cert)?;
            PrivateKeyDer::from_pem_slice(&read_file("--nats-tls-key-file", key)?)
                .map_err(|e| NatsError::NoKey { path: key.clone(), reason: e.to_string() })?;
            Some((cert.clone(), key.clone()))
        }
        (None, None) => None,
        _ => return Err(NatsError::Usage("--nats-tls-cert-file and --nats-tls-key-file go together")),
    };
    let ca = match &args.tls_ca_file {
        Some(path) => {
            check_certificates("--nats-tls-ca-file", path)?;
            Trust::Given(path.clone())
        }
        // Found once, here: async-nats would otherwise scan the system's store at every TLS
        // connection. With no bundle at all, a TLS server is refused as of an unknown CA,
        // and the error names --nats-tls-ca-file.
        None => openssl_probe::probe().cert_file.map_or(Trust::Nothing, Trust::System),
    };
    Ok(Prepared { address: args.address.clone(), auth, ca, client_cert })
}

impl Prepared {
    fn options(
        &self,
        args: &NatsFlags,
        counters: &Arc<Counters>,
        client: &Arc<OnceLock<Client>>,
    ) -> Result<ConnectOptions, NatsError> {
        let on_event = on_event(self.address.clone(), Arc::clone(client), self.auth.hint(), Arc::clone(counters));
        let mut options = ConnectOptions::new()
            .name(&args.client_name)
            .require_tls(args.tls_required)
            .client_capacity(crate::sink::NATS_BUFFER_EVENTS)
            .add_root_certificates(self.ca.file())
            .event_callback(on_event);
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(match &self.auth {
            Auth::None => options,
            Auth::UserPassword { user, password } => options.user_and_password(user.clone(), password.clone()),
            Auth::Token(token) => options.token(token.clone()),
            Auth::Nkey { seed, .. } => options.nkey(seed.clone()),
            Auth::Credentials { creds, path } => {
                options.credentials(creds).map_err(|source| NatsError::Credentials { path: path.clone(), source })?
            }
        })
    }

    /// One line saying why the server at the address refused the connection, and what to fix.
    fn refusal(&self, err: &ConnectError) -> String {
        let at = &self.address;
        if let Some(tls) = rustls_error(err) {
            return self.tls_refusal(tls);
        }
        match err.kind() {
            ConnectErrorKind::AuthorizationViolation => {
                format!("NATS at {at} refused the credentials (authorization violation): {}", self.auth.hint())
            }
            ConnectErrorKind::Authentication => match &self.auth {
                Auth::Nkey { path, .. } => format!(
                    "--nats-nkey-seed-file {} holds no valid nkey seed: cannot answer the challenge of NATS at {at}",
                    path.display()
                ),
                _ => format!("cannot answer the authentication challenge of NATS at {at}: {err}"),
            },
            ConnectErrorKind::ServerParse => format!("--nats-address {at} is not a NATS address: {err}"),
            ConnectErrorKind::TimedOut => format!("NATS at {at} did not complete the connection in time"),
            ConnectErrorKind::Tls => format!("TLS with NATS at {at} failed: {err}"),
            _ => format!("cannot connect to NATS at {at}: {err}; is nats-server running there?"),
        }
    }

    fn tls_refusal(&self, err: &rustls::Error) -> String {
        let at = &self.address;
        match err {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                let trusted = match &self.ca {
                    Trust::Given(path) => format!("it is not signed by a CA of --nats-tls-ca-file {}", path.display()),
                    Trust::System(path) => {
                        format!("without --nats-tls-ca-file only the system's CAs ({}) are trusted", path.display())
                    }
                    Trust::Nothing => "no CA is trusted: give --nats-tls-ca-file (this system has no CA bundle)".into(),
                };
                format!("NATS at {at} presented a certificate of an unknown CA: {trusted}")
            }
            rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
                format!("the TLS certificate of NATS at {at} has expired: the server needs a renewed certificate")
            }
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
            ) => format!("the TLS certificate of NATS at {at} is not valid yet: check the clocks of both machines"),
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "the TLS certificate of NATS at {at} is not valid for that host name or address: give --nats-address \
                 as a name or address that the certificate holds"
            ),
            rustls::Error::AlertReceived(alert) if self.client_cert.is_some() => format!(
                "NATS at {at} refused the client certificate of --nats-tls-cert-file (TLS alert {alert:?}): it must be \
                 signed by a CA of the server's tls ca_file"
            ),
            rustls::Error::AlertReceived(
                alert @ (AlertDescription::CertificateRequired
                | AlertDescription::HandshakeFailure
                | AlertDescription::BadCertificate),
            ) => format!(
                "NATS at {at} requires a client certificate (TLS alert {alert:?}): give --nats-tls-cert-file and \
                 --nats-tls-key-file"
            ),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                format!("NATS at {at} does not speak TLS ({err}): is TLS configured on the server?")
            }
            other => format!("TLS with NATS at {at} failed: {other}"),
        }
    }
}

/// The rustls error behind a failed connection, if TLS failed: async-nats hands it on inside
/// an `io::Error`, whose `source()` skips it.
fn rustls_error(err: &ConnectError) -> Option<&rustls::Error> {
    let mut next = std::error::Error::source(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        let inner = e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
        if let Some(found) = inner.and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// The server a client is connected to, as its `INFO` names it: the address it listens on
/// (`given`, the address the publisher was given, where that is a wildcard) and its
/// `server_name` where one is configured (otherwise it is the server id). In a cluster the
/// client may have moved to another server than the one it was given.
fn server(info: &ServerInfo, given: &str) -> String {
    let wildcard = info.host.is_empty() || info.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    let at = match (wildcard, info.host.contains(':')) {
        (true, _) => given.to_string(),
        (false, true) => format!("[{}]:{}", info.host, info.port),
        (false, false) => format!("{}:{}", info.host, info.port),
    };
    if info.server_name.is_empty() || info.server_name == info.server_id {
        at
    } else {
        format!("{at} (server {})", info.server_name)
    }
}

/// How the connection's life is logged: its state at once, failures at most once per
/// [`LOG_INTERVAL`] each (a server refusing every reconnection must not flood the journal),
/// and the state kept for the metrics. Lines name the server the client is (or was last)
/// connected to, once `client` is set; until then the address given.
fn on_event(
    address: String,
    client: Arc<OnceLock<Client>>,
    hint: String,
    counters: Arc<Counters>,
) -> impl Fn(Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let limits = Mutex::new((RateLimited::new(LOG_INTERVAL), RateLimited::new(LOG_INTERVAL)));
    let refused = ConnectErrorKind::AuthorizationViolation.to_string();
    move |event| {
        // async-nats updates the server's INFO before this callback runs: it sends the event
        // and then the INFO without awaiting in between, on the publisher's one-thread runtime.
        let address = client.get().map_or_else(|| address.clone(), |c| server(&c.server_info(), &address));
        let mut limits = limits.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (reconnects, server_errors) = &mut *limits;
        match event {
            Event::Connected => {
                counters.set_nats_connected(true);
                tracing::info!("connected to NATS at {address}");
            }
            Event::Disconnected => {
                counters.set_nats_connected(false);
                tracing::warn!("lost the connection to NATS at {address}: reconnecting");
            }
            // async-nats hands on only the kind of a failed reconnection.
            Event::ClientError(ClientError::Other(kind)) if kind == refused => reconnects.log(|more| {
                tracing::warn!(
                    "NATS at {address} refused the credentials (authorization violation) on reconnecting: {hint}; \
                     retrying ({more} more failed attempts since the last report)"
                )
            }),
            Event::ClientError(e) => reconnects.log(|more| {
                tracing::warn!(
                    "cannot reconnect to NATS at {address}: {e}; retrying ({more} more failed attempts since the last report)"
                )
            }),
            Event::ServerError(e) => server_errors.log(|more| {
                tracing::warn!("NATS at {address} reports: {e} ({more} more errors since the last report)")
            }),
            Event::LameDuckMode => tracing::info!("NATS at {address} is shutting down (lame duck mode)"),
            Event::SlowConsumer(_) | Event::Draining | Event::Closed => tracing::debug!("NATS: {event}"),
        }
        std::future::ready(())
    }
}

/// Reads every file the options name and connects: at start-up, so that any refusal is one
/// error line and a non-zero exit. Later losses and refusals are logged and retried.
pub async fn connect(args: &NatsFlags, counters: &Arc<Counters>) -> Result<Client, NatsError> {
    let prepared = prepare(args)?;
    let cell = Arc::new(OnceLock::new());
    let client = prepared
        .options(args, counters, &cell)?
        .connect(args.address.as_str())
        .await
        .map_err(|err| NatsError::Refused(prepared.refusal(&err)))?;
    // The callback keeps a handle for the process's life, as the publisher does.
    let _ = cell.set(client.clone());
    counters.set_nats_connected(true);
    Ok(client)
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

    fn parse(args: &[&str]) -> Result<NatsFlags, clap::Error> {
        Cli::try_parse_from(std::iter::once("ebpf-publisher").chain(args.iter().copied())).map(|cli| cli.nats)
    }

    #[test]
    fn the_server_is_named_by_the_address_it_listens_on_and_its_configured_name() {
        let info = |host: &str, name: &str| ServerInfo {
            host: host.into(),
            port: 4222,
            server_id: "NDV3ID".into(),
            server_name: name.into(),
            ..Default::default()
        };
        assert_eq!(server(&info("10.0.0.2", "nats-2"), "10.0.0.1:4222"), "10.0.0.2:4222 (server nats-2)");
        assert_eq!(server(&info("::1", "NDV3ID"), "[::1]:4222"), "[::1]:4222");
        assert_eq!(server(&info("0.0.0.0", ""), "nats.example:4222"), "nats.example:4222");
        assert_eq!(server(&info("", "nats-1"), "nats.example:4222"), "nats.example:4222 (server nats-1)");
    }

    fn prefix(given: &str) -> SubjectPrefix {
        SubjectPrefix::of(&parse(&["--nats-subject-prefix", given]).unwrap())
    }

    #[test]
    fn a_prefix_goes_before_the_subject_with_its_dot() {
        assert_eq!(SubjectPrefix::of(&parse(&[]).unwrap()).apply("netmsg").as_str(), "netmsg");
        assert_eq!(prefix("").apply("netmsg").as_str(), "netmsg");
        let prefix = prefix("peer-observer.mainnet.node1");
        assert_eq!(prefix.apply("netmsg").as_str(), "peer-observer.mainnet.node1.netmsg");
        assert_eq!(
            prefix.apply("peer-observer-ebpf.utxocache").as_str(),
            "peer-observer.mainnet.node1.peer-observer-ebpf.utxocache"
        );
    }

    #[test]
    fn a_subscriber_subscribes_behind_the_prefix() {
        assert_eq!(SubjectPrefix::default().subscription("*"), "*");
        let prefix = prefix("p.q");
        assert_eq!(prefix.subscription("peer-observer-ebpf.>"), "p.q.peer-observer-ebpf.>");
    }

    fn usage_error(args: &[&str]) -> String {
        match prepare(&parse(args).unwrap()) {
            Err(NatsError::Usage(line)) => line.to_string(),
            Err(e) => panic!("not a usage error: {e}"),
            Ok(_) => panic!("{args:?} accepted"),
        }
    }

    #[test]
    fn one_way_to_authenticate_and_its_pieces_together() {
        let dir = std::env::temp_dir().join(format!("nats-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let token = token.to_str().unwrap();
        assert!(usage_error(&["-u", "a"]).contains("needs a password"));
        assert!(usage_error(&["-p", "x"]).contains("needs --nats-username"));
        assert!(usage_error(&["-u", "a", "-p", "x", "-f", token]).contains("give one"));
        assert!(usage_error(&["-u", "a", "-p", "x", "--nats-token-file", token]).contains("one way"));
        assert!(usage_error(&["--nats-tls-cert-file", token]).contains("go together"));
        let Auth::Token(read) = prepare(&parse(&["--nats-token-file", token]).unwrap()).unwrap().auth else {
            panic!("token auth")
        };
        assert_eq!(read, "s3cret", "the trailing newline is not part of the token");
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let empty = dir.join("empty");
        assert!(matches!(
            prepare(&parse(&["--nats-token-file", empty.to_str().unwrap()]).unwrap()),
            Err(NatsError::Empty { .. })
        ));
        let missing = prepare(&parse(&["--nats-tls-ca-file", "/nonexistent/ca.pem"]).unwrap()).err().unwrap();
        assert_eq!(
            missing.to_string(),
            "cannot read --nats-tls-ca-file /nonexistent/ca.pem: No such file or directory (os error 2)"
        );
        let not_pem = prepare(&parse(&["--nats-tls-ca-file", token]).unwrap()).err().unwrap();
        assert!(matches!(not_pem, NatsError::NoCertificate { .. }), "{not_pem}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
