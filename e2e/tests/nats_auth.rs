//! Production NATS, against real nats-servers configured here on loopback. The publisher
//! authenticates in each of NATS's ways (user and password from a file or from the
//! environment, a token, an nkey, a .creds file's JWT) and over TLS (its CA, a client
//! certificate). A wrong secret, an untrusted, expired or misnamed server certificate, and a
//! missing or foreign client certificate each end the start with one line naming the problem.
//! A server that comes back with other credentials is retried, never fatal; under the seccomp
//! filter, TLS reconnects and a server given by host name is found again by DNS; no secret
//! shows in a command line, an environment or a log; and a subject prefix moves exactly the
//! subjects.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::ConnectOptions;
use e2e::{
    assert_fired_exactly, bins, free_address, gauge_becomes, receive, scrape_metrics, spawn_ready, start_loader,
    wall_ms, NatsServer, NodeDir, Simulator, TempDir, LOADER_UID,
};
use futures_util::StreamExt;
use ipc_protocol::Tracepoint;
use nkeys::KeyPair;
use tokio::process::{Child, Command};

const TRACEPOINTS: &str = "mempool:added,validation:block_connected";
const FIRED: [Tracepoint; 2] = [Tracepoint::MempoolAdded, Tracepoint::ValidationBlockConnected];
const ROUNDS: u64 = 4;
/// The subscriber's own user where the server requires one.
const READER: &str = "reader";

/// A file only root may read (0600), as an operator keeps a secret.
fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write secret file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod secret file");
    path
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `ebpf-publisher` on `nats`, listening on `socket` for the loader's user, with `args`; no
/// NATS_PASSWORD of the test's environment.
fn publisher(nats: &str, socket: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(&bins().publisher);
    cmd.args(["--nats-address", nats, "--loader-uid", &LOADER_UID.to_string(), "--socket-mode", "666", "--socket"])
        .arg(socket)
        .args(args)
        .env_remove("NATS_PASSWORD")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Starts `cmd` and returns once the publisher listens, i.e. is connected to NATS.
async fn started(mut cmd: Command, socket: &Path) -> Child {
    let mut child = cmd.spawn().expect("start ebpf-publisher");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the publisher exited ({status}): {}", e2e::read_stderr(&mut child).await);
        }
        assert!(Instant::now() < deadline, "the publisher did not start listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

/// Runs the publisher with `args` and `env`: it must exit 1 at start-up, its standard error
/// one line, the error, which is returned.
async fn refused(nats: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = TempDir::new("nats-refused");
    let mut cmd = publisher(nats, &dir.path().join("publisher.sock"), args);
    cmd.envs(env.iter().copied());
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.expect("exits in time").expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, the error: {stderr}");
    assert!(lines[0].starts_with("ebpf-publisher: error: "), "{stderr}");
    lines[0].to_string()
}

async fn subscribe(nats: &NatsServer, options: ConnectOptions, subject: &str) -> async_nats::Subscriber {
    let client = options.connect(nats.address.as_str()).await.expect("the subscriber connects");
    let subscriber = client.subscribe(subject.to_string()).await.expect("subscribe");
    client.flush().await.expect("flush the subscription");
    subscriber
}

/// A loader traces a simulator firing [`ROUNDS`] of [`FIRED`] with `seed` into the publisher
/// on `socket`; `subscriber` receives exactly those events, by value.
async fn delivers(dir: &Path, socket: &Path, subscriber: &mut async_nats::Subscriber, seed: u64) {
    let simulator = Simulator::start(TRACEPOINTS, ROUNDS, seed);
    let _loader = start_loader(dir, socket, simulator.pid(), &[]).await;
    let before = wall_ms();
    assert!(simulator.fire().await.values().all(|n| *n == ROUNDS));
    let events = receive(subscriber, FIRED.len() * ROUNDS as usize).await;
    assert_fired_exactly(&events, &FIRED, seed, 0..ROUNDS, before..=wall_ms());
}

/// Asserts that none of `secrets` is in `what`'s `text`.
fn absent(what: &str, text: &[u8], secrets: &[&str]) {
    let text = String::from_utf8_lossy(text);
    for secret in secrets {
        assert!(!text.contains(secret), "{what} holds a secret: {text:?}");
    }
}

fn cmdline(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline")
}

/// Asserts that process `pid` was given `flag` naming a descriptor it inherited (a sealed copy
/// the launcher made, launcher/src/nats.rs), not a path.
fn assert_handed_as_file(pid: u32, flag: &str) {
    let args: Vec<String> = cmdline(pid).split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let at = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} in {args:?}"));
    assert!(args[at + 1].starts_with("/proc/self/fd/"), "{flag} {}", args[at + 1]);
}

fn environ(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/environ")).expect("environ")
}

/// README's authorization block: the publisher may publish on its subjects and nothing else,
/// the reader subscribe and nothing else.
fn users(publisher_password: &str) -> String {
    format!(
        "authorization {{\n users = [\n \
         {{user: ebpf, password: \"{publisher_password}\", permissions: {{publish: [netmsg, netconn, mempool, \
         validation, \"peer-observer-ebpf.>\"], subscribe: {{deny: \">\"}}}}}}\n \
         {{user: {READER}, password: {READER}, permissions: {{publish: {{deny: \">\"}}, subscribe: [\"*\", \
         \"peer-observer-ebpf.>\"]}}}}\n ]\n}}"
    )
}

fn reader() -> ConnectOptions {
    ConnectOptions::new().user_and_password(READER.into(), READER.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_from_a_file_or_the_environment() {
    const PASSWORD: &str = "pw-correct-horse-7c1e";
    const WRONG: &str = "pw-wrong-battery-93ad";
    let nats = NatsServer::with_config(&users(PASSWORD)).await;
    let dir = TempDir::new("nats-user");
    let socket = dir.path().join("publisher.sock");
    // As `echo` writes it: the newline is no part of the password.
    let right = secret_file(dir.path(), "right", &format!("{PASSWORD}\n"));
    let wrong = secret_file(dir.path(), "wrong", WRONG);
    let mut subscriber = subscribe(&nats, reader(), "*").await;

    let mut from_file = started(publisher(&nats.address, &socket, &["-u", "ebpf", "-f", path(&right)]), &socket).await;
    let pid = from_file.id().expect("running");
    absent("the publisher's command line", &cmdline(pid), &[PASSWORD]);
    absent("the publisher's environment", &environ(pid), &[PASSWORD]);
    delivers(dir.path(), &socket, &mut subscriber, 11).await;
    absent("the publisher's log", e2e::stopped_log(&mut from_file).await.as_bytes(), &[PASSWORD]);

    let mut cmd = publisher(&nats.address, &socket, &["--nats-username", "ebpf"]);
    cmd.env("NATS_PASSWORD", PASSWORD);
    let mut from_env = started(cmd, &socket).await;
    absent("the publisher's command line", &cmdline(from_env.id().expect("running")), &[PASSWORD]);
    delivers(dir.path(), &socket, &mut subscriber, 12).await;
    absent("the publisher's log", e2e::stopped_log(&mut from_env).await.as_bytes(), &[PASSWORD]);

    let want = format!(
        "ebpf-publisher: error: NATS at {} refused the credentials (authorization violation): check \
         --nats-username/--nats-password-file",
        nats.address
    );
    assert_eq!(refused(&nats.address, &["-u", "ebpf", "-f", path(&wrong)], &[]).await, want);
    assert_eq!(refused(&nats.address, &["-u", "ebpf"], &[("NATS_PASSWORD", WRONG)]).await, want);
    let line = refused(&nats.address, &[], &[]).await;
    assert!(
        line.contains("refused the credentials (authorization violation): the server requires credentials"),
        "{line}"
    );
    let line = refused(&nats.address, &["-u", "ebpf", "-f", "/nonexistent/nats-password"], &[]).await;
    assert_eq!(
        line,
        "ebpf-publisher: error: cannot read --nats-password-file /nonexistent/nats-password: No such file or \
         directory (os error 2)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_a_file() {
    const TOKEN: &str = "tok-3f9a0c2e51d7";
    let nats = NatsServer::with_config(&format!("authorization {{ token: \"{TOKEN}\" }}")).await;
    let dir = TempDir::new("nats-token");
    let socket = dir.path().join("publisher.sock");
    let right = secret_file(dir.path(), "token", &format!("{TOKEN}\n"));
    let wrong = secret_file(dir.path(), "wrong", "tok-not-it");
    let mut subscriber = subscribe(&nats, ConnectOptions::new().token(TOKEN.into()), "*").await;

    let mut publisher_ =
        started(publisher(&nats.address, &socket, &["--nats-token-file", path(&right)]), &socket).await;
    absent("the publisher's command line", &cmdline(publisher_.id().expect("running")), &[TOKEN]);
    delivers(dir.path(), &socket, &mut subscriber, 21).await;
    absent("the publisher's log", e2e::stopped_log(&mut publisher_).await.as_bytes(), &[TOKEN]);

    let line = refused(&nats.address, &["--nats-token-file", path(&wrong)], &[]).await;
    assert!(line.ends_with("refused the credentials (authorization violation): check --nats-token-file"), "{line}");
    absent("the error", line.as_bytes(), &[TOKEN, "tok-not-it"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seed_from_a_file() {
    let (publisher_key, reader_key, stranger) = (KeyPair::new_user(), KeyPair::new_user(), KeyPair::new_user());
    let seed = |key: &KeyPair| key.seed().expect("a seed");
    let nats = NatsServer::with_config(&format!(
        "authorization {{ users = [ {{nkey: {}}}, {{nkey: {}}} ] }}",
        publisher_key.public_key(),
        reader_key.public_key()
    ))
    .await;
    let dir = TempDir::new("nats-nkey");
    let socket = dir.path().join("publisher.sock");
    let right = secret_file(dir.path(), "publisher.nk", &format!("{}\n", seed(&publisher_key)));
    let wrong = secret_file(dir.path(), "stranger.nk", &seed(&stranger));
    let garbage = secret_file(dir.path(), "garbage.nk", "SUANOTASEED");
    let mut subscriber = subscribe(&nats, ConnectOptions::new().nkey(seed(&reader_key)), "*").await;

    let mut publisher_ =
        started(publisher(&nats.address, &socket, &["--nats-nkey-seed-file", path(&right)]), &socket).await;
    absent("the publisher's command line", &cmdline(publisher_.id().expect("running")), &[&seed(&publisher_key)]);
    delivers(dir.path(), &socket, &mut subscriber, 31).await;
    absent("the publisher's log", e2e::stopped_log(&mut publisher_).await.as_bytes(), &[&seed(&publisher_key)]);

    let line = refused(&nats.address, &["--nats-nkey-seed-file", path(&wrong)], &[]).await;
    assert!(line.contains("refused the credentials (authorization violation): check --nats-nkey-seed-file"), "{line}");
    let line = refused(&nats.address, &["--nats-nkey-seed-file", path(&garbage)], &[]).await;
    assert!(line.contains(&format!("--nats-nkey-seed-file {} holds no valid nkey seed", garbage.display())), "{line}");
    absent("the error", line.as_bytes(), &["SUANOTASEED"]);
}

/// A .creds file as `nsc generate creds` writes it.
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// Decentralized JWT authentication: the server trusts an operator's key, and knows one
/// account (preloaded, signed by the operator); users present a JWT that the account's
/// signing key issued, and sign the server's nonce with their nkey.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_file_with_a_user_jwt() {
    let (operator, account, signing) = (KeyPair::new_operator(), KeyPair::new_account(), KeyPair::new_account());
    let account_jwt = nats_jwt::Token::new_account(account.public_key())
        .name("ebpf")
        .add_signing_key(signing.public_key())
        .sign(&operator);
    let user_creds = |account: &KeyPair, signing: &KeyPair, name: &str| {
        let user = KeyPair::new_user();
        let jwt = nats_jwt::Token::new_user(account.public_key(), user.public_key()).name(name).sign(signing);
        (creds(&jwt, &user.seed().expect("a seed")), user.seed().expect("a seed"))
    };
    let nats = NatsServer::with_config(&format!(
        "trusted_keys: [\"{}\"]\nresolver: MEMORY\nresolver_preload: {{ {}: \"{account_jwt}\" }}",
        operator.public_key(),
        account.public_key()
    ))
    .await;
    let dir = TempDir::new("nats-creds");
    let socket = dir.path().join("publisher.sock");
    let (publisher_creds, publisher_seed) = user_creds(&account, &signing, "ebpf-publisher");
    let right = secret_file(dir.path(), "publisher.creds", &publisher_creds);
    // A user of an account the server does not know.
    let stranger = KeyPair::new_account();
    let wrong = secret_file(dir.path(), "stranger.creds", &user_creds(&stranger, &stranger, "stranger").0);
    let garbage = secret_file(dir.path(), "garbage.creds", "not a creds file\n");
    let reader = ConnectOptions::new().credentials(&user_creds(&account, &signing, READER).0).expect("reader creds");
    let mut subscriber = subscribe(&nats, reader, "*").await;

    let mut publisher_ =
        started(publisher(&nats.address, &socket, &["--nats-credentials-file", path(&right)]), &socket).await;
    absent("the publisher's command line", &cmdline(publisher_.id().expect("running")), &[&publisher_seed]);
    delivers(dir.path(), &socket, &mut subscriber, 41).await;
    absent("the publisher's log", e2e::stopped_log(&mut publisher_).await.as_bytes(), &[&publisher_seed]);

    let line = refused(&nats.address, &["--nats-credentials-file", path(&wrong)], &[]).await;
    assert!(
        line.contains("refused the credentials (authorization violation): check --nats-credentials-file"),
        "{line}"
    );
    let line = refused(&nats.address, &["--nats-credentials-file", path(&garbage)], &[]).await;
    assert!(
        line.contains(&format!("--nats-credentials-file {} is not a NATS credentials file", garbage.display())),
        "{line}"
    );
}

/// A test PKI: CAs, and certificates they sign, as PEM files.
struct Pki {
    dir: TempDir,
}

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    file: PathBuf,
}

/// A certificate and its key, as files.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        Pki { dir: TempDir::new("nats-pki") }
    }

    fn ca(&self, name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let file = self.dir.path().join(format!("{name}.pem"));
        std::fs::write(&file, cert.pem()).expect("write CA");
        Ca { cert, key, file }
    }

    /// A certificate for `names` (host names or addresses) signed by `ca`, for a server or a
    /// client, valid now or expired since 2001.
    fn leaf(&self, file: &str, ca: &Ca, names: &[&str], client: bool, expired: bool) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, file);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("certificate");
        let (cert_file, key_file) =
            (self.dir.path().join(format!("{file}.pem")), self.dir.path().join(format!("{file}.key")));
        std::fs::write(&cert_file, cert.pem()).expect("write certificate");
        let key_pem = key.serialize_pem();
        std::fs::write(&key_file, &key_pem).expect("write key");
        Leaf { cert: cert_file, key: key_file, key_pem }
    }
}

/// nats-server's TLS block: its certificate, and with `verify_with` the CA its clients'
/// certificates must come from (`verify: true`).
fn tls_block(server: &Leaf, verify_with: Option<&Ca>) -> String {
    let verify =
        verify_with.map(|ca| format!("ca_file: \"{}\"\n verify: true\n", ca.file.display())).unwrap_or_default();
    format!(
        "tls {{\n cert_file: \"{}\"\n key_file: \"{}\"\n {verify} timeout: 2\n}}",
        server.cert.display(),
        server.key.display()
    )
}

fn tls_options(ca: &Ca, client: &Leaf) -> ConnectOptions {
    ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.file.clone())
        .add_client_certificate(client.cert.clone(), client.key.clone())
}

/// TLS with a client certificate (the server verifies it): events arrive; the server restarts
/// and the publisher, under its seccomp filter, reads its CA, certificate and key again and
/// reconnects, with the connection gauge following.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_reconnects_under_the_filter() {
    let pki = Pki::new();
    let ca = pki.ca("test-ca");
    let server = pki.leaf("server", &ca, &["127.0.0.1", "localhost"], false, false);
    let client = pki.leaf("client", &ca, &["ebpf-publisher"], true, false);
    let mut nats = NatsServer::with_config(&tls_block(&server, Some(&ca))).await;
    let dir = TempDir::new("nats-tls");
    let socket = dir.path().join("publisher.sock");
    let metrics = free_address();
    let args = [
        "--nats-tls-ca-file",
        path(&ca.file),
        "--nats-tls-cert-file",
        path(&client.cert),
        "--nats-tls-key-file",
        path(&client.key),
        "--nats-tls-required",
        "--metrics-address",
        &metrics,
    ];
    let mut publisher_ = started(publisher(&nats.address, &socket, &args), &socket).await;
    let mut subscriber = subscribe(&nats, tls_options(&ca, &client), "*").await;
    delivers(dir.path(), &socket, &mut subscriber, 51).await;
    gauge_becomes(&metrics, 1).await;

    nats.kill().await;
    gauge_becomes(&metrics, 0).await;
    nats.restart().await;
    gauge_becomes(&metrics, 1).await;
    assert!(publisher_.try_wait().expect("status").is_none(), "the publisher reconnects under its filter");
    let mut subscriber = subscribe(&nats, tls_options(&ca, &client), "*").await;
    delivers(dir.path(), &socket, &mut subscriber, 52).await;

    let log = e2e::stopped_log(&mut publisher_).await;
    assert!(log.contains(&format!("lost the connection to NATS at {}: reconnecting", nats.address)), "{log}");
    assert_eq!(log.matches(&format!("connected to NATS at {}", nats.address)).count(), 2, "{log}");
    let key_body = client.key_pem.lines().nth(1).expect("a line of the key");
    absent("the publisher's log", log.as_bytes(), &[key_body]);
}

/// A DNS server on a loopback address of its own, port 53, as a node's resolver: it answers
/// every A query with 127.0.0.1 and every other query with no record, and counts the A
/// queries.
struct Dns {
    address: std::net::Ipv4Addr,
    a_queries: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Dns {
    fn start() -> Dns {
        use std::sync::atomic::{AtomicU64, Ordering};
        // All of 127/8 is loopback: an address of its own keeps parallel tests apart.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos();
        let seed = std::process::id() ^ nanos;
        let address = std::net::Ipv4Addr::new(127, 53, (seed >> 8) as u8, (seed as u8).max(1));
        let socket = std::net::UdpSocket::bind((address, 53)).expect("bind a DNS server (as root)");
        let a_queries = std::sync::Arc::new(AtomicU64::new(0));
        let counted = a_queries.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                let Some((reply, is_a)) = Self::answer(&buf[..len]) else { continue };
                if socket.send_to(&reply, from).is_ok() && is_a {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Dns { address, a_queries }
    }

    /// The reply to a query of one question, and whether it asked for an A record.
    fn answer(query: &[u8]) -> Option<(Vec<u8>, bool)> {
        // The header's 12 bytes, then the name's labels up to a 0 byte, its type and class.
        let end = 12 + query.get(12..)?.iter().position(|&b| b == 0)? + 1 + 4;
        let question = query.get(12..end)?;
        let is_a = question[question.len() - 4..question.len() - 2] == [0, 1];
        // The id; a response to a recursive query, no error; one question, one answer or none.
        let mut reply = [&query[..2], &[0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0], question].concat();
        if is_a {
            // The question's name (a pointer to it), A, IN, a TTL of 0, 4 bytes: 127.0.0.1.
            reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 127, 0, 0, 1]);
        }
        Some((reply, is_a))
    }

    fn a_queries(&self) -> u64 {
        self.a_queries.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A remote NATS is given by its host name (TLS checks that name), and the resolver asks DNS
/// for it again at every reconnection, under the seccomp filter: glibc sends the A and AAAA
/// queries at once (`sendmmsg`), sizes each answer (`ioctl` FIONREAD) and, rereading a
/// changed /etc/resolv.conf, calls `uname`. The publisher runs with its own /etc/resolv.conf
/// naming [`Dns`], in a mount namespace of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_given_by_host_name_is_found_again_by_dns_under_the_filter() {
    let dns = Dns::start();
    let mut nats = NatsServer::start().await;
    let dir = TempDir::new("nats-dns");
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, format!("nameserver {}\n", dns.address)).expect("write resolv.conf");
    let port = nats.address.rsplit_once(':').expect("host:port").1.to_string();
    let by_name = format!("nats.node.example:{port}");
    let socket = dir.path().join("publisher.sock");
    let metrics = free_address();
    let direct = publisher(&by_name, &socket, &["--metrics-address", &metrics]);
    let std = direct.as_std();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--", "sh", "-c", r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#])
        .arg(&resolv_conf)
        .arg(std.get_program())
        .args(std.get_args())
        .env_remove("NATS_PASSWORD")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut publisher_ = started(cmd, &socket).await;
    let mut subscriber = subscribe(&nats, ConnectOptions::new(), "*").await;
    delivers(dir.path(), &socket, &mut subscriber, 53).await;
    let at_start = dns.a_queries();
    assert!(at_start >= 1, "the publisher found NATS by DNS");

    nats.kill().await;
    gauge_becomes(&metrics, 0).await;
    // As an operator or DHCP changes it: glibc rereads it at the next query.
    std::fs::write(&resolv_conf, format!("# changed\nnameserver {}\n", dns.address)).expect("rewrite resolv.conf");
    nats.restart().await;
    gauge_becomes(&metrics, 1).await;
    assert!(dns.a_queries() > at_start, "the reconnection asked DNS again");
    assert!(publisher_.try_wait().expect("status").is_none(), "the publisher reconnects under its filter");
    let mut subscriber = subscribe(&nats, ConnectOptions::new(), "*").await;
    delivers(dir.path(), &socket, &mut subscriber, 54).await;

    let log = e2e::stopped_log(&mut publisher_).await;
    assert!(log.contains(&format!("to=NATS at {by_name}")), "{log}");
    // The client names the address it found.
    assert_eq!(log.matches(&format!("connected to NATS at 127.0.0.1:{port}")).count(), 2, "{log}");
}

/// Each way TLS can fail at start-up is one error line that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refusals_are_one_line_each() {
    let pki = Pki::new();
    let (ca, other_ca) = (pki.ca("test-ca"), pki.ca("other-ca"));
    let server = pki.leaf("server", &ca, &["127.0.0.1", "localhost"], false, false);
    let client = pki.leaf("client", &ca, &["ebpf-publisher"], true, false);
    let foreign_client = pki.leaf("foreign-client", &other_ca, &["ebpf-publisher"], true, false);
    let expired = pki.leaf("expired", &ca, &["127.0.0.1"], false, true);
    let misnamed = pki.leaf("misnamed", &ca, &["nats.example.org"], false, false);
    let ca_file = path(&ca.file);

    let verifying = NatsServer::with_config(&tls_block(&server, Some(&ca))).await;
    let at = &verifying.address;
    let line = refused(at, &["--nats-tls-ca-file", path(&other_ca.file)], &[]).await;
    assert!(
        line.contains(&format!(
            "NATS at {at} presented a certificate of an unknown CA: it is not signed by a CA of --nats-tls-ca-file {}",
            other_ca.file.display()
        )),
        "{line}"
    );
    let line = refused(at, &["--nats-tls-required"], &[]).await;
    // The system's bundle, if it has one, does not hold the test's CA.
    assert!(
        line.contains("unknown CA: without --nats-tls-ca-file only the system's CAs")
            || line.contains("unknown CA: no CA is trusted: give --nats-tls-ca-file"),
        "{line}"
    );
    let line = refused(at, &["--nats-tls-ca-file", ca_file], &[]).await;
    assert!(
        line.contains(&format!("NATS at {at} requires a client certificate"))
            && line.ends_with("give --nats-tls-cert-file and --nats-tls-key-file"),
        "{line}"
    );
    let foreign =
        ["--nats-tls-cert-file", path(&foreign_client.cert), "--nats-tls-key-file", path(&foreign_client.key)];
    let line = refused(at, &[&["--nats-tls-ca-file", ca_file][..], &foreign].concat(), &[]).await;
    assert!(line.contains(&format!("NATS at {at} refused the client certificate of --nats-tls-cert-file")), "{line}");
    let line = refused(at, &["--nats-tls-ca-file", "/nonexistent/ca.pem"], &[]).await;
    assert_eq!(
        line,
        "ebpf-publisher: error: cannot read --nats-tls-ca-file /nonexistent/ca.pem: No such file or directory (os error 2)"
    );
    let line = refused(at, &["--nats-tls-ca-file", ca_file, "--nats-tls-cert-file", path(&client.cert)], &[]).await;
    assert!(line.contains("--nats-tls-cert-file and --nats-tls-key-file go together"), "{line}");

    let with_expired = NatsServer::with_config(&tls_block(&expired, None)).await;
    let line = refused(&with_expired.address, &["--nats-tls-ca-file", ca_file], &[]).await;
    assert!(line.contains(&format!("the TLS certificate of NATS at {} has expired", with_expired.address)), "{line}");

    let with_misnamed = NatsServer::with_config(&tls_block(&misnamed, None)).await;
    let line = refused(&with_misnamed.address, &["--nats-tls-ca-file", ca_file], &[]).await;
    assert!(
        line.contains(&format!(
            "the TLS certificate of NATS at {} is not valid for that host name or address",
            with_misnamed.address
        )),
        "{line}"
    );

    let plain = NatsServer::start().await;
    let line = refused(&plain.address, &["--nats-tls-ca-file", ca_file, "--nats-tls-required"], &[]).await;
    assert!(line.contains(&format!("NATS at {} does not speak TLS", plain.address)), "{line}");
}

/// A server that comes back with other credentials refuses every reconnection: the publisher
/// logs it at most once per 10 s and keeps trying, and delivers again once the server takes
/// its credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_back_with_other_credentials_is_retried_not_fatal() {
    const PASSWORD: &str = "pw-before-restart-1d2c";
    let mut nats = NatsServer::with_config(&users(PASSWORD)).await;
    let dir = TempDir::new("nats-reauth");
    let socket = dir.path().join("publisher.sock");
    let file = secret_file(dir.path(), "password", PASSWORD);
    let metrics = free_address();
    let args = ["-u", "ebpf", "-f", path(&file), "--metrics-address", &metrics];
    let mut publisher_ = started(publisher(&nats.address, &socket, &args), &socket).await;
    gauge_becomes(&metrics, 1).await;

    nats.kill().await;
    nats.reconfigure(&users("pw-after-restart-77e0"));
    nats.restart().await;
    // Long enough for a refusal past the first report's 10 s.
    tokio::time::sleep(Duration::from_secs(15)).await;
    gauge_becomes(&metrics, 0).await;
    assert!(publisher_.try_wait().expect("status").is_none(), "refused credentials are not fatal");

    nats.kill().await;
    nats.reconfigure(&users(PASSWORD));
    nats.restart().await;
    gauge_becomes(&metrics, 1).await;
    let mut subscriber = subscribe(&nats, reader(), "*").await;
    delivers(dir.path(), &socket, &mut subscriber, 61).await;

    let log = e2e::stopped_log(&mut publisher_).await;
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("(authorization violation) on reconnecting")).collect();
    assert!(!refusals.is_empty(), "the refusal is logged: {log}");
    assert!(refusals[0].contains("check --nats-username/--nats-password-file; retrying"), "{log}");
    // Dozens of attempts in 15 s, logged at most once per 10 s.
    let reports = log.lines().filter(|l| l.contains("on reconnecting") || l.contains("cannot reconnect")).count();
    assert!(reports <= 3, "rate-limited: {log}");
    absent("the publisher's log", log.as_bytes(), &[PASSWORD, "pw-after-restart-77e0"]);
}

/// With `--nats-subject-prefix`, every event arrives on `<prefix>.<subject>`, exactly as it
/// would without one, and nothing reaches a subscriber of `*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_prefix_moves_every_subject_and_nothing_else() {
    const PREFIX: &str = "peer-observer.regtest.node1";
    const SEED: u64 = 71;
    let nats = NatsServer::start().await;
    let dir = TempDir::new("nats-prefix");
    let socket = dir.path().join("publisher.sock");
    let mut prefixed = subscribe(&nats, ConnectOptions::new(), &format!("{PREFIX}.*")).await;
    let mut one_token = subscribe(&nats, ConnectOptions::new(), "*").await;
    let mut everything = subscribe(&nats, ConnectOptions::new(), ">").await;
    let mut publisher_ = started(publisher(&nats.address, &socket, &["--nats-subject-prefix", PREFIX]), &socket).await;

    let simulator = Simulator::start(TRACEPOINTS, ROUNDS, SEED);
    let _loader = start_loader(dir.path(), &socket, simulator.pid(), &[]).await;
    let before = wall_ms();
    simulator.fire().await;
    let total = FIRED.len() * ROUNDS as usize;
    for events in [receive(&mut prefixed, total).await, receive(&mut everything, total).await] {
        let unprefixed: Vec<_> = events
            .into_iter()
            .map(|(subject, event)| {
                let bare =
                    subject.strip_prefix(&format!("{PREFIX}.")).unwrap_or_else(|| panic!("{subject} unprefixed"));
                (bare.to_string(), event)
            })
            .collect();
        assert_fired_exactly(&unprefixed, &FIRED, SEED, 0..ROUNDS, before..=wall_ms());
    }
    let stray = tokio::time::timeout(Duration::from_millis(500), one_token.next()).await;
    assert!(stray.is_err(), "an event on a one-token subject: {:?}", stray.ok().flatten().map(|m| m.subject));
    e2e::stopped_log(&mut publisher_).await;

    for bad in ["p.", ".p", "a..b", "a.*", "a.>", "a b"] {
        let out = publisher(&nats.address, &dir.path().join("bad.sock"), &["--nats-subject-prefix", bad])
            .output()
            .await
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("--nats-subject-prefix"), "{bad:?} accepted: {stderr}");
    }
}

/// `ebpf-extractor` given a password in its environment and TLS files that only root may
/// read: the publisher gets each as a sealed memfd named on its command line, never a value,
/// and reaches NATS with them; neither child's command line or environment, nor any log,
/// holds a secret. A missing file is one error line of the launcher's, before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_hands_secrets_on_as_files_never_as_values() {
    use std::os::unix::fs::PermissionsExt;
    const PASSWORD: &str = "pw-launcher-5e8b21";
    const SEED: u64 = 81;
    let pki = Pki::new();
    let ca = pki.ca("test-ca");
    let server = pki.leaf("server", &ca, &["127.0.0.1"], false, false);
    let nats = NatsServer::with_config(&format!("{}\n{}", users(PASSWORD), tls_block(&server, Some(&ca)))).await;
    // Root's alone: 0600 files in a 0700 directory, out of the publisher's reach by path.
    let private = TempDir::new("nats-private");
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let client = pki.leaf("client", &ca, &["ebpf-publisher"], true, false);
    let key = secret_file(private.path(), "client.key", &client.key_pem);
    let cert = secret_file(private.path(), "client.pem", &std::fs::read_to_string(&client.cert).expect("cert"));
    let ca_copy = secret_file(private.path(), "ca.pem", &std::fs::read_to_string(&ca.file).expect("CA"));
    let key_body = client.key_pem.lines().nth(1).expect("a line of the key").to_string();
    let secrets = [PASSWORD, key_body.as_str()];

    let node = std::sync::Arc::new(NodeDir::new());
    let simulator = Simulator::start_in(&node, &bins().simulator, TRACEPOINTS, ROUNDS, SEED, &[]);
    let dir = TempDir::new("nats-launcher");
    let launcher = |extra: &[&str]| {
        let mut cmd = Command::new(&bins().launcher);
        cmd.args(["--nats-address", &nats.address, "--bitcoind-path", path(&bins().simulator)])
            .args(["--bitcoind-pid-file", path(&node.pid_file()), "-u", "ebpf"])
            .args(["--nats-tls-ca-file", path(&ca_copy), "--nats-tls-cert-file", path(&cert)])
            .args(["--nats-tls-key-file", path(&key), "--nats-tls-required"])
            .args(extra)
            .env("NATS_PASSWORD", PASSWORD)
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    };
    let out = launcher(&["--nats-token-file", "/nonexistent/token"])
        .env_remove("NATS_PASSWORD")
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "ebpf-extractor: error: cannot read --nats-token-file /nonexistent/token: No such file or directory (os error 2)"
    );

    let mut subscriber =
        subscribe(&nats, tls_options(&ca, &client).user_and_password(READER.into(), READER.into()), "*").await;
    let mut running = spawn_ready(&mut launcher(&[]), dir.path(), "ebpf-extractor").await;

    let kids = e2e::children(running.id().expect("running"));
    let (publisher_pid, loader_pid) = (kids["ebpf-publisher"], kids["ebpf-loader"]);
    for (who, pid) in [("publisher", publisher_pid), ("loader", loader_pid)] {
        absent(&format!("the {who}'s command line"), &cmdline(pid), &secrets);
        absent(&format!("the {who}'s environment"), &environ(pid), &[PASSWORD, "NATS_PASSWORD"]);
    }
    for flag in ["--nats-password-file", "--nats-tls-ca-file", "--nats-tls-cert-file", "--nats-tls-key-file"] {
        assert_handed_as_file(publisher_pid, flag);
    }
    // What the publisher holds open beyond its standard streams: the memfds, nothing of root's.
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{publisher_pid}/fd"))
        .expect("fd")
        .filter_map(Result::ok)
        .filter(|fd| fd.file_name().to_str().and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n > 2))
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with('/') && !target.starts_with("/dev"))
        .collect();
    assert_eq!(held.len(), 4, "{held:?}");
    assert!(held.iter().all(|t| t.starts_with("/memfd:nats-")), "{held:?}");
    assert!(absent_from_loader(loader_pid), "the loader holds no memfd");

    let before = wall_ms();
    simulator.fire().await;
    let events = receive(&mut subscriber, FIRED.len() * ROUNDS as usize).await;
    assert_fired_exactly(&events, &FIRED, SEED, 0..ROUNDS, before..=wall_ms());

    e2e::signal(running.id().expect("running"), "TERM");
    let status = running.wait().await.expect("status");
    let log = e2e::read_stderr(&mut running).await;
    assert!(status.success(), "{status}: {log}");
    absent("the launcher's and its children's log", log.as_bytes(), &secrets);
}

/// `ebpf-extractor` reads the CA bundle that SSL_CERT_FILE names, as root, and hands it on as
/// --nats-tls-ca-file (the bundle the publisher started alone trusts, publisher/src/nats.rs),
/// and --metrics-address: a TLS server whose certificate that CA signed takes the events, and
/// the publisher's counters, served there, count them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_hands_on_the_ca_bundle_and_the_metrics_address() {
    use std::os::unix::fs::PermissionsExt;
    const SEED: u64 = 83;
    let pki = Pki::new();
    let ca = pki.ca("test-ca");
    let server = pki.leaf("server", &ca, &["127.0.0.1"], false, false);
    let nats = NatsServer::with_config(&tls_block(&server, None)).await;
    // Root's alone, as the system's bundle need not be.
    let private = TempDir::new("nats-private-ca");
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let bundle = secret_file(private.path(), "bundle.pem", &std::fs::read_to_string(&ca.file).expect("CA"));
    let node = std::sync::Arc::new(NodeDir::new());
    let simulator = Simulator::start_in(&node, &bins().simulator, TRACEPOINTS, ROUNDS, SEED, &[]);
    let dir = TempDir::new("nats-launcher-ca");
    let metrics = free_address();
    let mut launcher = Command::new(&bins().launcher);
    launcher
        .args(["--nats-address", &nats.address, "--nats-tls-required", "--metrics-address", &metrics])
        .args(["--bitcoind-path", path(&bins().simulator), "--bitcoind-pid-file", path(&node.pid_file())])
        .env("SSL_CERT_FILE", &bundle)
        .stderr(Stdio::piped());
    let mut running = spawn_ready(&mut launcher, dir.path(), "ebpf-extractor").await;
    let publisher = e2e::children(running.id().expect("running"))["ebpf-publisher"];
    assert_handed_as_file(publisher, "--nats-tls-ca-file");
    absent("the publisher's environment", &environ(publisher), &["SSL_CERT_FILE"]);
    let tls = ConnectOptions::new().require_tls(true).add_root_certificates(ca.file.clone());
    let mut subscriber = subscribe(&nats, tls, "*").await;

    let before = wall_ms();
    simulator.fire().await;
    let events = receive(&mut subscriber, FIRED.len() * ROUNDS as usize).await;
    assert_fired_exactly(&events, &FIRED, SEED, 0..ROUNDS, before..=wall_ms());
    let scraped = scrape_metrics(&metrics);
    for (tp, subject) in [("mempool:added", "mempool"), ("validation:block_connected", "validation")] {
        let line = format!("peer_observer_ebpf_published_total{{tracepoint=\"{tp}\",subject=\"{subject}\"}} {ROUNDS}");
        assert!(scraped.lines().any(|l| l == line), "{line} missing from {scraped}");
    }

    e2e::signal(running.id().expect("running"), "TERM");
    let status = running.wait().await.expect("status");
    assert!(status.success(), "{status}: {}", e2e::read_stderr(&mut running).await);
}

fn absent_from_loader(loader: u32) -> bool {
    std::fs::read_dir(format!("/proc/{loader}/fd"))
        .expect("fd")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .all(|target| !target.to_string_lossy().contains("memfd:nats"))
}
