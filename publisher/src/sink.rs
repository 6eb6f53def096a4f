//! Where events go: published to NATS (core, or JetStream with acknowledgements), or written to
//! standard output (`--stdout`). Everything before (reading, validating, decoding, counting,
//! publisher/src/server.rs) is the same for each; only handing an event on differs.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, PublishErrorKind};
use ipc_protocol::Tracepoint;
use tokio::time::Instant;

use crate::acks::Done;
use crate::counters::Counters;
use crate::decode::{Decoded, EnvelopeVersion};
use crate::jetstream::JetStream;
use crate::nats::SubjectPrefix;
use crate::render;

/// NATS `max_payload` that fits any event: a 4,000,000-byte block plus its envelope.
pub const RECOMMENDED_MAX_PAYLOAD: usize = 5_242_880;

/// NATS (core or JetStream), or standard output.
#[derive(Clone)]
pub enum Sink {
    /// Published to NATS: the publisher's job; with JetStream's acknowledgements in
    /// JetStream mode.
    /// `envelope`: the version of peer-observer's envelope (`--nats-legacy-envelope`).
    Nats { client: Client, address: String, jetstream: Option<Arc<JetStream>>, envelope: EnvelopeVersion },
    /// Written to standard output, one line each, instead (`--stdout`): what the loader sees,
    /// without a NATS server.
    Stdout(Format),
}

/// How `--stdout` writes an event: as event-tail prints it, [`render::json`] or
/// [`render::readable`]. (Doc comments on the variants would switch --help to its long layout.)
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Json,
    Readable,
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Nats { address, envelope: EnvelopeVersion::Current, .. } => write!(f, "NATS at {address}"),
            Sink::Nats { address, envelope: EnvelopeVersion::Legacy, .. } => {
                write!(f, "NATS at {address} in the legacy envelope (event_msg.EventMsg)")
            }
            Sink::Stdout(Format::Json) => f.write_str("standard output as JSON"),
            Sink::Stdout(Format::Readable) => f.write_str("standard output as readable lines"),
        }
    }
}

/// How long a stopping publisher waits for the sink to take what it was handed.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl Sink {
    /// The NATS server's `max_payload`, which the loss log names; none on standard output.
    pub fn max_payload(&self) -> usize {
        match self {
            Sink::Nats { client, .. } => client.max_payload(),
            Sink::Stdout(_) => usize::MAX,
        }
    }

    /// The largest event it takes: the NATS server's `max_payload`, less a JetStream event's
    /// `Nats-Msg-Id` header; any on standard output.
    pub fn max_event_len(&self) -> usize {
        match self {
            Sink::Nats { client, jetstream: None, .. } => client.max_payload(),
            Sink::Nats { client, jetstream: Some(_), .. } => max_durable_event_len(client),
            Sink::Stdout(_) => usize::MAX,
        }
    }

    /// Hands one event on, adding to what waits in the NATS client's buffer: the bytes, and
    /// the record's [`Done`], held until NATS's host acknowledged it ([`Unflushed::flushed`]).
    /// Elsewhere the record is done once written (standard output) or once JetStream
    /// acknowledged it.
    pub(crate) async fn send(
        &self,
        event: DecodedRecord,
        prefix: &SubjectPrefix,
        counters: &Counters,
        unflushed: &mut Unflushed,
    ) {
        let max_event_len = self.max_event_len();
        match self {
            Sink::Nats { client, jetstream: None, envelope, .. } => {
                let published =
                    publish(event, client, max_event_len, *envelope, prefix, counters, unflushed.bytes).await;
                if let Some((size, done)) = published {
                    unflushed.hand(done, size);
                }
            }
            Sink::Nats { jetstream: Some(jetstream), envelope, .. } => {
                publish_durably(event, jetstream, max_event_len, *envelope, prefix, counters).await
            }
            Sink::Stdout(format) => write_line(event, *format, prefix, counters).await,
        }
    }

    /// Waits for the NATS server to have taken what was published: once it is a few MiB
    /// (that slows reading instead of growing the client's buffer), and whenever the loader
    /// has sent nothing more, so that the records are acknowledged. Standard output and
    /// JetStream keep nothing here.
    pub(crate) async fn pace(&self, unflushed: &mut Unflushed, idle: bool) {
        if unflushed.bytes >= UNFLUSHED_BYTES || (idle && !unflushed.records.is_empty()) {
            self.flush_published(unflushed, Duration::from_secs(1)).await;
        }
    }

    /// Waits up to `within` for the NATS client to write what waits in its buffer; the records
    /// handed to it before are done once the server's host has acknowledged the connection's
    /// output as far as it then reached ([`Unflushed::flushed`]). Bounded: a connection lost
    /// meanwhile would hold the flush until it is back, so none is tried while disconnected.
    pub(crate) async fn flush_published(&self, unflushed: &mut Unflushed, within: Duration) {
        let Sink::Nats { client, jetstream: None, .. } = self else { return };
        if client.connection_state() != State::Connected {
            return;
        }
        match tokio::time::timeout(within, client.flush()).await {
            Ok(Ok(())) => unflushed.flushed(nats_output()),
            Ok(Err(e)) => tracing::debug!("flushing NATS failed: {e}"),
            Err(_) => {}
        }
    }

    /// At a connection's end: flushes until every record is done, looking again while NATS's
    /// host has not acknowledged what the flushes wrote (a slow server), at most `within`
    /// ([`ACKNOWLEDGED_WAIT`]).
    pub(crate) async fn flush_all_published(&self, unflushed: &mut Unflushed, within: Duration) {
        let deadline = Instant::now() + within;
        while !unflushed.records.is_empty() {
            self.flush_published(unflushed, deadline.saturating_duration_since(Instant::now())).await;
            if unflushed.records.is_empty() || Instant::now() + ACKNOWLEDGED_POLL > deadline {
                return;
            }
            tokio::time::sleep(ACKNOWLEDGED_POLL).await;
        }
    }

    /// At shutdown: waits, at most [`FLUSH_TIMEOUT`], for NATS to take the buffered events
    /// (with NATS down, a flush would wait for the reconnection forever) and for its host to
    /// acknowledge every byte, so that closing the connection loses none
    /// ([`unacknowledged_nats_bytes`]). Each line to standard output was written whole before
    /// it counted, so nothing waits there.
    pub async fn flush(&self) {
        let Sink::Nats { client, jetstream, .. } = self else { return };
        if let Some(jetstream) = jetstream {
            jetstream.stop().await;
        }
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        // What NATS's host had not acknowledged after the last flush that went through.
        let mut unacknowledged = None;
        // Readings of 0 in a row, each right after a flush that went through.
        let mut empty = 0;
        loop {
            match tokio::time::timeout_at(deadline, client.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return tracing::warn!("flushing NATS at shutdown failed: {e}"),
                Err(_) => {
                    let secs = FLUSH_TIMEOUT.as_secs();
                    return match unacknowledged {
                        Some(bytes) if client.connection_state() == State::Connected => tracing::warn!(
                            "NATS's host had not acknowledged the last {bytes} bytes of events after {secs} s of \
                             waiting at shutdown: they are lost if the server sends anything before it reads them"
                        ),
                        _ => tracing::warn!("NATS did not take the buffered events within {secs} s of shutdown"),
                    };
                }
            }
            // async-nats may report a flush while its buffer still holds bytes the kernel had no
            // room for (its `ShouldFlush::No` arm); the kernel's queue is then full, but the
            // server may empty it before the client writes the rest. The next flush finds room
            // and writes them: two readings of 0 in a row, each after a flush, leave nothing
            // behind.
            let bytes = unacknowledged_nats_bytes();
            let connected = client.connection_state() == State::Connected;
            empty = if bytes == 0 && connected { empty + 1 } else { 0 };
            if empty == 2 {
                return;
            }
            // Disconnected, the socket and what it held are gone: then the flush waits.
            unacknowledged = connected.then_some(bytes);
            tokio::time::sleep(ACKNOWLEDGED_POLL).await;
        }
    }
}

/// How long a connection's end waits for NATS's host to acknowledge what a slow server has not
/// taken, so that its records are acknowledged to the loader: the shutdown's own wait for
/// NATS's host ([`FLUSH_TIMEOUT`]) follows, and a stalled server holds both to the end.
pub const ACKNOWLEDGED_WAIT: Duration = Duration::from_secs(2);

/// How often a stopping publisher looks again whether NATS's host has acknowledged everything.
const ACKNOWLEDGED_POLL: Duration = Duration::from_millis(10);

/// What the kernel still holds of the NATS connection's output: bytes the server's host has not
/// acknowledged, sent or not yet (`SIOCOUTQ`). A flush of the NATS client only hands its buffer
/// to the kernel, and a socket closed while the kernel still holds some of its output is reset
/// as soon as anything arrives from the server (nats-server's next PING, say): what it held is
/// lost (RFC 1122, 4.2.2.13). A publisher that exited right after its flush lost that way the
/// last megabytes a slow server had not yet read (`e2e/tests/large.rs`). async-nats offers no
/// round trip to the server (its flush sends no PING) and keeps its socket to itself, so the
/// connection is found among the process' descriptors: a connected TCP socket on a local port
/// that none of its TCP listeners has (a metrics scrape's is the metrics port).
fn unacknowledged_nats_bytes() -> usize {
    nats_connections().iter().filter_map(TcpSocket::unacknowledged).sum()
}

/// How far the NATS connection's output has gone: `None` unless exactly one connection is found.
fn nats_output() -> Option<Output> {
    match nats_connections().as_slice() {
        [socket] => socket.output(),
        _ => None,
    }
}

/// A TCP connection's output, in bytes from its start: what the process wrote to it, and what
/// the peer's host has acknowledged. `connection` (its local port) tells one connection's
/// figures from a reconnection's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    connection: u16,
    written: u64,
    acknowledged: u64,
}

/// The NATS connection's descriptor and local port, as the last search found them: a flush
/// looks at it, and a search is a system call per possible descriptor.
static NATS_CONNECTION: std::sync::Mutex<Option<(RawFd, u16)>> = std::sync::Mutex::new(None);

/// The NATS connections among the process' descriptors: the one found before while its
/// descriptor still is that socket (a reconnection's has another local port), else those
/// found again.
fn nats_connections() -> Vec<TcpSocket> {
    let mut cached = NATS_CONNECTION.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((fd, port)) = *cached {
        if let Some(socket) = TcpSocket::probe(fd).filter(|s| !s.listening && s.port == port) {
            return vec![socket];
        }
    }
    // Past the standard streams, which are no NATS connection even where they are TCP (a log
    // forwarder's).
    let sockets: Vec<TcpSocket> = (3..DESCRIPTORS).filter_map(TcpSocket::probe).collect();
    let listening: Vec<u16> = sockets.iter().filter(|s| s.listening).map(|s| s.port).collect();
    let found: Vec<TcpSocket> = sockets.into_iter().filter(|s| !s.listening && !listening.contains(&s.port)).collect();
    *cached = match found.as_slice() {
        [one] => Some((one.fd, one.port)),
        _ => None,
    };
    found
}

/// Descriptors [`unacknowledged_nats_bytes`] looks at: the kernel hands out the lowest free
/// descriptor, and the publisher never holds more than a few dozen (its metrics endpoint at
/// most [`crate::metrics::MAX_CONNECTIONS`]), far below this default soft limit of open files.
const DESCRIPTORS: RawFd = 1024;

/// A TCP socket among the process' descriptors.
struct TcpSocket {
    fd: RawFd,
    port: u16,
    listening: bool,
}

impl TcpSocket {
    /// `fd`, if it is a TCP socket over IPv4 or IPv6; `None` for any other descriptor or a
    /// number not open. Raw calls on the number: it is not this code's to own or borrow, and
    /// another thread may close it meanwhile, which only fails a call with EBADF.
    fn probe(fd: RawFd) -> Option<TcpSocket> {
        let option = |name| {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: writes at most `len` bytes into `value`.
            let got = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut value).cast(), &mut len) };
            (got == 0).then_some(value)
        };
        let domain = option(libc::SO_DOMAIN)?;
        if !matches!(domain, libc::AF_INET | libc::AF_INET6) || option(libc::SO_PROTOCOL)? != libc::IPPROTO_TCP {
            return None;
        }
        // SAFETY: all zeros is a valid sockaddr_storage.
        let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: writes at most `len` bytes into `address`.
        if unsafe { libc::getsockname(fd, (&raw mut address).cast(), &mut len) } != 0 {
            return None;
        }
        // SAFETY: sockaddr_storage is aligned and sized for either; `ss_family` says which it holds.
        let port = match libc::c_int::from(address.ss_family) {
            libc::AF_INET => unsafe { (*(&raw const address).cast::<libc::sockaddr_in>()).sin_port },
            libc::AF_INET6 => unsafe { (*(&raw const address).cast::<libc::sockaddr_in6>()).sin6_port },
            _ => return None,
        };
        Some(TcpSocket { fd, port: u16::from_be(port), listening: option(libc::SO_ACCEPTCONN)? != 0 })
    }

    /// What its peer has not acknowledged; `None` if the descriptor is gone.
    fn unacknowledged(&self) -> Option<usize> {
        let mut queued: libc::c_int = 0;
        // SAFETY: writes one int into `queued`. SIOCOUTQ, which <linux/sockios.h> defines as
        // TIOCOUTQ.
        (unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ, &raw mut queued) } == 0).then_some(queued as usize)
    }

    /// Its [`Output`]: what the kernel holds unacknowledged (SIOCOUTQ) and, read after it, what
    /// the peer acknowledged (TCP_INFO). Acknowledgements between the two readings only move
    /// `written` further than it was, so records wait longer, never less.
    fn output(&self) -> Option<Output> {
        let unacknowledged = self.unacknowledged()? as u64;
        // SAFETY: all zeros is a valid tcp_info.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: writes at most `len` bytes into `info`.
        let got =
            unsafe { libc::getsockopt(self.fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len) };
        (got == 0).then_some(Output {
            connection: self.port,
            written: info.tcpi_bytes_acked + unacknowledged,
            acknowledged: info.tcpi_bytes_acked,
        })
    }
}

/// Bytes published between waits for the NATS server to have taken them.
const UNFLUSHED_BYTES: usize = 2 << 20;

/// Events handed to the NATS client whose records are not done yet, and the flushes that went
/// through since.
#[derive(Default)]
pub(crate) struct Unflushed {
    /// Bytes handed to the client since the last flush that went through.
    bytes: usize,
    /// Oldest first: the last of the records handed to the client.
    pub(crate) records: VecDeque<Done>,
    /// Records handed to the client over this loader connection.
    handed: u64,
    /// For each flush that went through and is not yet settled: the records handed before it,
    /// and how far the NATS connection's output had gone then.
    flushes: VecDeque<(u64, Output)>,
}

impl Unflushed {
    fn hand(&mut self, done: Done, size: usize) {
        self.bytes += size;
        self.records.push_back(done);
        self.handed += 1;
    }

    /// A flush went through, and the NATS connection's output stands at `output`. async-nats
    /// answers a flush while its buffer still holds bytes the kernel had no room for (its
    /// `ShouldFlush::No` arm, [`Sink::flush`]), as it does while a server reads nothing: records
    /// taken as done then, by a publisher stopped before the server read again, were lost
    /// without a count (`e2e/tests/faults.rs`). So the records handed before a flush are done
    /// once the server's host has acknowledged the output as far as it had gone at that flush;
    /// until then a publisher that dies leaves them counted as `publisher_lost`. Without the
    /// connection's figures (no connection found, or several) a flush is taken at its word.
    fn flushed(&mut self, output: Option<Output>) {
        self.bytes = 0;
        let Some(output) = output else {
            self.records.clear();
            self.flushes.clear();
            return;
        };
        // A reconnection's figures start over; its flushes cover what the lost one's did.
        self.flushes.retain(|(_, at)| at.connection == output.connection);
        let mark = (self.handed, output);
        if self.flushes.back().is_none_or(|&(handed, at)| (handed, at.written) != (mark.0, mark.1.written)) {
            self.flushes.push_back(mark);
        }
        let mut settled = None;
        while let Some(&(handed, at)) = self.flushes.front() {
            if output.acknowledged < at.written {
                break;
            }
            settled = Some(handed);
            self.flushes.pop_front();
        }
        if let Some(handed) = settled {
            let after = (self.handed - handed) as usize;
            let done = self.records.len().saturating_sub(after);
            self.records.drain(..done);
        }
    }
}

/// Bytes handed to the NATS client that it has not yet confirmed written (a flush): what may
/// wait in its buffer while NATS is down or slow. The client itself bounds its buffer only in
/// events ([`NATS_BUFFER_EVENTS`], of up to 5 MiB each); an event that would go past this is
/// counted as `nats_unavailable` instead.
pub const NATS_BUFFER_BYTES: usize = 16 << 20;
/// Events the NATS client holds while it reconnects (its `client_capacity`; async-nats' own
/// default, 2,048, is seconds of a busy node). The two bounds meet at events of 1 KiB; a node's
/// take a few hundred bytes, so this one is reached first. Each slot costs an estimated 150
/// bytes besides the event.
pub const NATS_BUFFER_EVENTS: usize = 16_384;

/// A record's name for the whole life of the loader (docs/ipc.md, "Record identity").
#[derive(Clone, Copy)]
pub(crate) struct RecordId {
    pub(crate) run_id: u128,
    pub(crate) index: u64,
}

impl RecordId {
    /// As JetStream's `Nats-Msg-Id`: the run id in 32 hex digits, `-`, the record's number.
    fn msg_id(self) -> String {
        format!("{:032x}-{}", self.run_id, self.index)
    }
}

/// A record decoded into its event, with its subject and wall-clock time.
pub(crate) struct DecodedRecord {
    pub(crate) id: RecordId,
    pub(crate) tracepoint: Tracepoint,
    /// Wall-clock microseconds since the Unix epoch.
    pub(crate) timestamp_us: u64,
    pub(crate) decoded: Decoded,
    pub(crate) done: Done,
}

/// The longest header block async-nats writes for a JetStream event: `NATS/1.0`, then
/// `Nats-Msg-Id: ` and [`RecordId::msg_id`] (32 hex digits, `-`, a record number of up to 20
/// digits), each line ended by CRLF, then an empty line. async-nats refuses a message whose
/// headers and payload together exceed `max_payload`.
pub const MSG_ID_HEADER_MAX: usize =
    "NATS/1.0\r\n".len() + "Nats-Msg-Id: ".len() + 32 + "-".len() + 20 + "\r\n".len() + "\r\n".len();

/// The largest event JetStream mode sends: `max_payload` less its header.
fn max_durable_event_len(nats: &Client) -> usize {
    nats.max_payload().saturating_sub(MSG_ID_HEADER_MAX)
}

/// Whether an event of `size` bytes exceeds `max_event_len` ([`Sink::max_event_len`]); counted
/// if so. Such an event is never encoded: a decoded payload can be many times its record's
/// size, and the encoding would be one more copy of it. The limit comes from the one async-nats
/// applies in `publish` (the server's, or NATS's default of 1 MB before the server said),
/// `Client::max_payload`: one atomic load, where `server_info()` would clone the server's whole
/// INFO for every event.
fn exceeds_max_event_len(max_event_len: usize, tp: Tracepoint, size: usize, counters: &Counters) -> bool {
    let exceeds = size > max_event_len;
    if exceeds {
        count_over_max_payload(tp, size, counters);
    }
    exceeds
}

fn count_over_max_payload(tp: Tracepoint, size: usize, counters: &Counters) {
    tracing::trace!(tracepoint = %tp, "event of {size} bytes exceeds what the NATS server's max_payload allows, dropped");
    counters.over_max_payload(tp);
}

/// Encodes and publishes one event in its `envelope`, `unflushed` bytes being in the client's
/// buffer already; returns the bytes it added there and the record's [`Done`], or `None` if it
/// was counted instead.
async fn publish(
    event: DecodedRecord,
    nats: &Client,
    max_event_len: usize,
    envelope: EnvelopeVersion,
    prefix: &SubjectPrefix,
    counters: &Counters,
    unflushed: usize,
) -> Option<(usize, Done)> {
    let DecodedRecord { tracepoint: tp, timestamp_us, decoded, done, .. } = event;
    let subject = prefix.apply(decoded.subject);
    let event = decoded.into_envelope(timestamp_us, envelope);
    let size = event.encoded_len();
    if exceeds_max_event_len(max_event_len, tp, size, counters) {
        return None;
    }
    if unflushed + size > NATS_BUFFER_BYTES {
        tracing::trace!(tracepoint = %tp, "NATS has not taken the last {unflushed} bytes: event dropped");
        counters.nats_unavailable(tp);
        return None;
    }
    let payload = event.into_encoding(size);
    // While NATS is down, async-nats' `publish` waits for room in its bounded buffer, which
    // would stall the socket and, behind it, the loader. So while disconnected the buffer is
    // used only where it has room; an event that does not fit is counted.
    let published = if nats.connection_state() == State::Connected {
        nats.publish(subject, payload.into()).await
    } else {
        match tokio::time::timeout(Duration::ZERO, nats.publish(subject, payload.into())).await {
            Ok(published) => published,
            Err(_) => {
                tracing::trace!(tracepoint = %tp, "NATS unreachable and its client buffer full: event dropped");
                counters.nats_unavailable(tp);
                return None;
            }
        }
    };
    match published {
        Ok(()) => {
            counters.published(tp, size);
            return Some((size, done));
        }
        Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => count_over_max_payload(tp, size, counters),
        Err(e) => {
            tracing::trace!(tracepoint = %tp, "publishing to NATS failed: {e}");
            counters.publish_failed(tp);
        }
    }
    None
}

/// Publishes one event into JetStream (publisher/src/jetstream.rs), under the `Nats-Msg-Id`
/// its record's identity gives it; counted as published once sent, and again when
/// acknowledged or given up.
async fn publish_durably(
    event: DecodedRecord,
    jetstream: &JetStream,
    max_event_len: usize,
    envelope: EnvelopeVersion,
    prefix: &SubjectPrefix,
    counters: &Counters,
) {
    let DecodedRecord { id, tracepoint: tp, timestamp_us, decoded, done } = event;
    let subject = prefix.apply(decoded.subject);
    let event = decoded.into_envelope(timestamp_us, envelope);
    let size = event.encoded_len();
    // Sending it again would not help: counted at once, as in core mode.
    if exceeds_max_event_len(max_event_len, tp, size, counters) {
        return;
    }
    let payload = event.into_encoding(size);
    jetstream.publish(tp, subject, payload, id.msg_id(), done).await;
    counters.published(tp, size);
}

/// Writes one event to standard output as a line of `format`, counted as published (with its
/// protobuf size, as NATS would have had it) once written whole, or as `publish_failed`; the
/// record is done as the function returns.
async fn write_line(event: DecodedRecord, format: Format, prefix: &SubjectPrefix, counters: &Counters) {
    let DecodedRecord { tracepoint: tp, timestamp_us, decoded, .. } = event;
    let subject = prefix.apply(decoded.subject);
    // The lines show the current envelope: --stdout refuses --nats-legacy-envelope.
    let envelope = decoded.into_envelope(timestamp_us, EnvelopeVersion::Current);
    let line = match format {
        Format::Json => render::json(&subject, &envelope),
        Format::Readable => Ok(render::readable(&subject, &envelope)),
    };
    // Only an inventory from elsewhere fails to render; the decoder builds every one whole.
    let mut line = match line {
        Ok(line) => line,
        Err(e) => {
            tracing::error!(tracepoint = %tp, "an event does not render as JSON: {e}");
            counters.publish_failed(tp);
            return;
        }
    };
    line.push('\n');
    // On a blocking thread: a reader that stalls (a paused pager) must hold up this
    // connection only, never the runtime that handles SIGTERM and the metrics. Under the
    // standard output's lock a line is written whole, whichever connection wrote it; each
    // connection awaits its lines one by one, so they keep their order.
    let written = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        std::io::stdout().lock().write_all(line.as_bytes())
    })
    .await;
    match written {
        Ok(Ok(())) => counters.published(tp, envelope.encoded_len()),
        Ok(Err(e)) => {
            tracing::trace!(tracepoint = %tp, "writing to standard output failed: {e}");
            counters.publish_failed(tp);
        }
        Err(e) => {
            tracing::trace!(tracepoint = %tp, "the thread writing to standard output failed: {e}");
            counters.publish_failed(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acks::Acks;

    /// async-nats answers a flush while a stalled server leaves its buffer unwritten: records
    /// are done only once the server's host has acknowledged as far as their flush had written.
    #[test]
    fn records_are_done_once_nats_acknowledged_what_their_flush_had_written() {
        let acks = Acks::new();
        let mut unflushed = Unflushed::default();
        let at = |connection, written, acknowledged| Some(Output { connection, written, acknowledged });
        for record in 0..3 {
            unflushed.hand(acks.arrived(record), 100);
        }
        unflushed.flushed(at(4222, 300, 0));
        assert_eq!(acks.done_below(), 0, "the server has acknowledged nothing");
        for record in 3..5 {
            unflushed.hand(acks.arrived(record), 100);
        }
        unflushed.flushed(at(4222, 500, 300));
        assert_eq!((acks.done_below(), unflushed.records.len()), (3, 2), "as far as the first flush");
        unflushed.flushed(at(4222, 500, 500));
        assert_eq!((acks.done_below(), unflushed.records.len()), (5, 0));
        // A reconnection: the lost connection's flushes are dropped, the new one's cover
        // everything handed before them.
        unflushed.hand(acks.arrived(5), 100);
        unflushed.flushed(at(4222, 700, 500));
        unflushed.flushed(at(4223, 100, 0));
        assert_eq!(acks.done_below(), 5);
        unflushed.flushed(at(4223, 100, 100));
        assert_eq!(acks.done_below(), 6);
        // Without the connection's figures a flush is taken at its word.
        unflushed.hand(acks.arrived(6), 100);
        unflushed.flushed(None);
        assert_eq!((acks.done_below(), unflushed.records.len(), unflushed.flushes.len()), (7, 0, 0));
    }

    #[test]
    fn the_msg_id_header_allowed_for_holds_the_longest_msg_id() {
        let longest = RecordId { run_id: u128::MAX, index: u64::MAX }.msg_id();
        assert_eq!(MSG_ID_HEADER_MAX, format!("NATS/1.0\r\nNats-Msg-Id: {longest}\r\n\r\n").len());
    }
}
