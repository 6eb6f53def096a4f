//! The command-line flags that several binaries share (feature `cli`), so that the launcher
//! takes the same flags as the binary it starts and hands on exactly what it was given: the
//! table's switch per category and size per ring (the loader's), the NATS connection and
//! JetStream mode (the publisher's; event-tail subscribes with the same connection flags).

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use crate::{Category, Ring, Tracepoint};

/// `--no-p2pmsg-tracepoints`, …, `--addrman-tracepoints`, `--utxocache-tracepoints`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategoryFlags {
    /// The categories whose flag was given.
    given: Vec<Category>,
}

impl CategoryFlags {
    /// The categories to hook: the defaults not switched off, and those switched on.
    pub fn categories(&self) -> Vec<Category> {
        Category::ALL.iter().copied().filter(|c| c.default_on() != self.given.contains(c)).collect()
    }

    pub fn tracepoints(&self) -> Vec<Tracepoint> {
        Tracepoint::enabled(&self.categories())
    }

    /// The flags as given, to hand on to another binary that takes them.
    pub fn to_args(&self) -> Vec<String> {
        self.given.iter().map(|c| format!("--{}", c.flag())).collect()
    }
}

impl FromArgMatches for CategoryFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(CategoryFlags { given: Category::ALL.iter().copied().filter(|c| matches.get_flag(c.flag())).collect() })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for CategoryFlags {
    fn augment_args(cmd: Command) -> Command {
        Category::ALL
            .iter()
            .fold(cmd, |cmd, c| cmd.arg(Arg::new(c.flag()).long(c.flag()).action(ArgAction::SetTrue).help(c.help())))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// `--message-ring-bytes`, `--event-ring-bytes`, `--utxocache-ring-bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingSizes {
    bytes: [u32; Ring::ALL.len()],
}

impl RingSizes {
    pub fn bytes(&self, ring: Ring) -> u32 {
        self.bytes[ring.index()]
    }

    /// The flags that give these sizes, those other than the default.
    pub fn to_args(&self) -> Vec<String> {
        Ring::ALL
            .iter()
            .filter(|ring| self.bytes(**ring) != ring.default_bytes())
            .flat_map(|ring| [format!("--{}", ring.size_flag()), self.bytes(*ring).to_string()])
            .collect()
    }
}

impl Default for RingSizes {
    fn default() -> Self {
        RingSizes { bytes: Ring::ALL.map(Ring::default_bytes) }
    }
}

/// A ring buffer's size must be a power of two (hence a multiple of the page size).
fn ring_size(ring: Ring) -> impl Fn(&str) -> Result<u32, String> + Clone + Send + Sync + 'static {
    move |s| {
        let bytes: u32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !bytes.is_power_of_two() || bytes < ring.min_bytes() {
            return Err(format!("{bytes} is not a power of two of at least {}", ring.min_bytes()));
        }
        Ok(bytes)
    }
}

impl FromArgMatches for RingSizes {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let bytes =
            Ring::ALL.map(|ring| matches.get_one::<u32>(ring.size_flag()).copied().unwrap_or(ring.default_bytes()));
        Ok(RingSizes { bytes })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for RingSizes {
    fn augment_args(cmd: Command) -> Command {
        Ring::ALL.iter().fold(cmd, |cmd, &ring| {
            let categories: Vec<String> =
                Category::ALL.iter().filter(|c| c.ring() == ring).map(|c| format!("{c:?}").to_lowercase()).collect();
            let help = format!(
                "Bytes of the BPF ring buffer for {} events: a power of two, at least {} [default: {}]",
                categories.join(", "),
                ring.min_bytes(),
                ring.default_bytes()
            );
            cmd.arg(
                Arg::new(ring.size_flag())
                    .long(ring.size_flag())
                    .value_name("BYTES")
                    .value_parser(ring_size(ring))
                    .help(help),
            )
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The name the publisher's connection shows in the server's monitoring (`connz`) unless told
/// otherwise.
pub const DEFAULT_NATS_CLIENT_NAME: &str = "ebpf-publisher";

/// Where and how to reach NATS (publisher/src/nats.rs reads the files and connects; the
/// launcher hands every secret on as a file, launcher/src/nats.rs). Secrets come from files, or
/// the password from the environment: a value given on the command line shows in `ps`. (No
/// `Debug`: it would print the password.)
#[derive(Args)]
pub struct NatsFlags {
    /// Address of the NATS server: host:port, or a nats:// or tls:// URL (tls:// requires TLS)
    #[arg(short = 'n', visible_short_alias = 'a', long = "nats-address", default_value = "127.0.0.1:4222")]
    pub address: String,
    /// User name for NATS, with the password of --nats-password-file or NATS_PASSWORD
    #[arg(short = 'u', long = "nats-username")]
    pub username: Option<String>,
    /// Password for --nats-username. A value given here shows in `ps`: use --nats-password-file or
    /// the environment variable instead
    #[arg(short = 'p', long = "nats-password", env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// File holding the password for --nats-username (a trailing newline is ignored)
    #[arg(short = 'f', long = "nats-password-file")]
    pub password_file: Option<PathBuf>,
    /// File holding the token of NATS's token authentication (a trailing newline is ignored)
    #[arg(long = "nats-token-file")]
    pub token_file: Option<PathBuf>,
    /// File holding a user nkey seed (SU…) for NATS's nkey authentication
    #[arg(long = "nats-nkey-seed-file")]
    pub nkey_seed_file: Option<PathBuf>,
    /// NATS credentials file (.creds: a user JWT and its nkey seed), for decentralized JWT
    /// authentication
    #[arg(long = "nats-credentials-file")]
    pub credentials_file: Option<PathBuf>,
    /// CA certificates (PEM) that the NATS server's certificate must be signed by [default: the
    /// system's CA bundle]
    #[arg(long = "nats-tls-ca-file")]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for a server that verifies its clients (`tls { verify: true }`);
    /// needs --nats-tls-key-file
    #[arg(long = "nats-tls-cert-file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --nats-tls-cert-file
    #[arg(long = "nats-tls-key-file")]
    pub tls_key_file: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS (a tls:// address does the same)
    #[arg(long = "nats-tls-required")]
    pub tls_required: bool,
    /// Name of the connection in the server's monitoring (connz)
    #[arg(long = "nats-client-name", default_value = DEFAULT_NATS_CLIENT_NAME)]
    pub client_name: String,
    /// Events go on `PREFIX.<subject>` instead of `<subject>`; PREFIX is given without its
    /// trailing dot, e.g. peer-observer.mainnet.node1. Subscribers then subscribe `PREFIX.*`
    #[arg(long = "nats-subject-prefix", default_value = "", value_parser = subject_prefix)]
    pub subject_prefix: String,
    /// Events in peer-observer's envelope from before 2025-12-15 (event_msg.EventMsg), for the
    /// tools of that time. Tools read one envelope only: all on a server must use the same one
    #[arg(long = "nats-legacy-envelope")]
    pub legacy_envelope: bool,
}

/// A subject prefix: empty (none), or one or more subject tokens without the dot that joins it
/// to the subject: no empty token (a leading, trailing or doubled dot), no wildcard, no white
/// space.
pub fn subject_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() {
        return Ok(String::new());
    }
    if prefix.ends_with('.') {
        return Err(format!("{prefix:?} ends with a dot: give the prefix without it, the publisher adds the dot"));
    }
    if prefix.split('.').any(str::is_empty) {
        return Err(format!("{prefix:?} has an empty token (a leading or a doubled dot)"));
    }
    if prefix.contains(['*', '>']) {
        return Err(format!("{prefix:?} holds a wildcard (* or >), which no subject to publish on may"));
    }
    if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{prefix:?} holds white space or a control character"));
    }
    Ok(prefix.to_owned())
}

/// A user flag's value as a uid: a number, or a name `passwd` (the text of /etc/passwd, read
/// only for a name, by the caller: this crate does no I/O) lists. System users live there; no
/// NSS.
pub fn uid(spec: &str, passwd: impl FnOnce() -> std::io::Result<String>) -> Result<u32, String> {
    if let Ok(uid) = spec.parse() {
        return Ok(uid);
    }
    let passwd = passwd().map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&spec))
        .and_then(|fields| fields.get(2)?.parse().ok())
        .ok_or_else(|| format!("no user {spec:?} in /etc/passwd"))
}

/// JetStream mode: `--nats-jetstream-stream` and the settings of a stream it creates
/// (publisher/src/jetstream.rs).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct JetStreamFlags {
    /// Publish every event with JetStream's publish-and-acknowledge into this stream, created if
    /// absent: durable delivery, stored once however often it is sent (each event's Nats-Msg-Id
    /// names its record). Subscribers of the plain subjects still receive every event
    #[arg(long = "nats-jetstream-stream", value_name = "NAME")]
    pub stream: Option<String>,
    /// Replicas of a stream the publisher creates (at most the servers of a NATS cluster)
    #[arg(long = "nats-jetstream-replicas", value_name = "N", default_value_t = 1, requires = "stream")]
    pub replicas: usize,
    /// Age in seconds after which a stream the publisher creates discards events
    #[arg(long = "nats-jetstream-max-age-secs", value_name = "SECS", default_value_t = 7 * 24 * 3600, requires = "stream")]
    pub max_age_secs: u64,
    /// Bytes a stream the publisher creates holds at most, discarding the oldest events beyond
    #[arg(long = "nats-jetstream-max-bytes", value_name = "BYTES", default_value_t = 10 << 30, requires = "stream")]
    pub max_bytes: i64,
    /// Events published to JetStream and not yet acknowledged, at most: beyond, the publisher
    /// stops reading the loader until acknowledgements come
    #[arg(
        long = "nats-jetstream-window",
        value_name = "EVENTS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..),
        requires = "stream"
    )]
    pub window: u32,
}

impl JetStreamFlags {
    /// The flags, to hand on to the publisher; none without a stream.
    pub fn to_args(&self) -> Vec<String> {
        let Some(stream) = &self.stream else { return Vec::new() };
        [
            ("--nats-jetstream-stream", stream.clone()),
            ("--nats-jetstream-replicas", self.replicas.to_string()),
            ("--nats-jetstream-max-age-secs", self.max_age_secs.to_string()),
            ("--nats-jetstream-max-bytes", self.max_bytes.to_string()),
            ("--nats-jetstream-window", self.window.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        categories: CategoryFlags,
        #[command(flatten)]
        rings: RingSizes,
        #[command(flatten)]
        jetstream: JetStreamFlags,
        #[command(flatten)]
        nats: NatsFlags,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
    }

    #[test]
    fn no_flag_hooks_the_default_categories_with_default_rings() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.categories.categories(), Category::defaults());
        assert_eq!(cli.categories.to_args(), Vec::<String>::new());
        assert_eq!(cli.rings, RingSizes::default());
    }

    #[test]
    fn every_switch_flips_its_category_and_is_handed_on_as_given() {
        for c in Category::ALL {
            let flag = format!("--{}", c.flag());
            let cli = parse(&[&flag]).unwrap();
            assert_eq!(cli.categories.categories().contains(c), !c.default_on(), "{flag}");
            assert_eq!(cli.categories.to_args(), std::slice::from_ref(&flag));
            let again = parse(&cli.categories.to_args().iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
            assert_eq!(again.categories, cli.categories);
        }
    }

    #[test]
    fn ring_sizes_must_be_powers_of_two_above_their_minimum() {
        let cli = parse(&["--utxocache-ring-bytes", "1048576", "--message-ring-bytes", "16777216"]).unwrap();
        assert_eq!((cli.rings.bytes(Ring::Utxocache), cli.rings.bytes(Ring::Messages)), (1 << 20, 16 << 20));
        assert_eq!(cli.rings.bytes(Ring::Events), Ring::Events.default_bytes());
        assert!(parse(&["--event-ring-bytes", "100000"]).is_err());
        assert!(parse(&["--message-ring-bytes", "4194304"]).is_err(), "a 4 MiB message must fit");
        // Handed on as given, the defaults left out.
        let args = cli.rings.to_args();
        assert_eq!(args, ["--message-ring-bytes", "16777216", "--utxocache-ring-bytes", "1048576"]);
        assert_eq!(parse(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap().rings, cli.rings);
    }

    #[test]
    fn jetstream_settings_need_a_stream_and_are_handed_on_whole() {
        assert_eq!(parse(&[]).unwrap().jetstream.to_args(), Vec::<String>::new());
        assert!(parse(&["--nats-jetstream-replicas", "3"]).is_err());
        assert!(parse(&["--nats-jetstream-stream", "s", "--nats-jetstream-window", "0"]).is_err());
        let cli = parse(&["--nats-jetstream-stream", "events", "--nats-jetstream-replicas", "3"]).unwrap();
        assert_eq!((cli.jetstream.stream.as_deref(), cli.jetstream.replicas), (Some("events"), 3));
        let args = cli.jetstream.to_args();
        let again = parse(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(again.jetstream, cli.jetstream);
    }

    #[test]
    fn upstream_short_nats_flags_and_the_seed_s_n() {
        assert_eq!(parse(&["-a", "10.0.0.1:4222"]).unwrap().nats.address, "10.0.0.1:4222");
        assert_eq!(parse(&["-n", "10.0.0.1:4222"]).unwrap().nats.address, "10.0.0.1:4222");
        let nats = parse(&["-u", "ebpf", "-f", "/run/credentials/x/nats-password"]).unwrap().nats;
        assert_eq!(nats.username.as_deref(), Some("ebpf"));
        assert_eq!(nats.password_file.as_deref(), Some(std::path::Path::new("/run/credentials/x/nats-password")));
        assert_eq!(parse(&[]).unwrap().nats.client_name, DEFAULT_NATS_CLIENT_NAME);
    }

    #[test]
    fn a_user_is_a_uid_or_a_name_in_passwd_which_is_read_only_for_a_name() {
        let passwd =
            || Ok("root:x:0:0::/root:/bin/sh\nbitcoin:x:101:103::/var/lib/bitcoind:/usr/sbin/nologin\n".into());
        assert_eq!(uid("bitcoin", passwd), Ok(101));
        assert_eq!(uid("root", passwd), Ok(0));
        assert_eq!(uid("60999", || unreachable!("a number needs no passwd")), Ok(60999));
        assert_eq!(uid("alice", passwd), Err("no user \"alice\" in /etc/passwd".into()));
        let unreadable = || Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(uid("bitcoin", unreadable).unwrap_err().starts_with("cannot read /etc/passwd: "));
    }

    #[test]
    fn a_subject_prefix_is_tokens_without_the_joining_dot() {
        assert_eq!(parse(&[]).unwrap().nats.subject_prefix, "");
        let given = parse(&["--nats-subject-prefix", "peer-observer.mainnet.node1"]).unwrap();
        assert_eq!(given.nats.subject_prefix, "peer-observer.mainnet.node1");
        for bad in ["p.", ".p", "a..b", "a.*", "a.>", "a*", "a b", "a\tb", "a.b\n", " "] {
            assert!(parse(&["--nats-subject-prefix", bad]).is_err(), "{bad:?} accepted");
        }
    }
}
