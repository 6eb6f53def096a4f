//! Accepting loader connections and publishing what they forward.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, PublishErrorKind};
use ipc_protocol::{
    decode_datagram, decode_hello, Acknowledger, Batch, Datagram, Loss, OwnedRecord, Reassembler, Record, Tracepoint,
    MAX_DATAGRAM, MAX_RECORD,
};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, Shutdown};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_seqpacket::{UnixSeqpacket, UnixSeqpacketListener};

use crate::clock::ClockSample;
use crate::counters::Counters;
use crate::decode::{decode_to_at_most, Decoded};
use crate::jetstream::JetStream;
use crate::nats::SubjectPrefix;
use crate::render;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_once_per_interval_with_the_count_left_out() {
        let mut limit = RateLimited::new(Duration::from_secs(3600));
        let mut logged = Vec::new();
        for _ in 0..5 {
            limit.log(|suppressed| logged.push(suppressed));
        }
        assert_eq!(logged, [0]);
        limit.last = Some(std::time::Instant::now() - Duration::from_secs(3601));
        limit.log(|suppressed| logged.push(suppressed));
        assert_eq!(logged, [0, 4]);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("reading from the loader failed: {0}")]
    Recv(#[from] std::io::Error),
    #[error("the loader closed the connection before its hello")]
    NoHello,
    #[error("bad hello: {0}")]
    Hello(#[from] ipc_protocol::DecodeError),
    #[error("datagram larger than {MAX_DATAGRAM} bytes")]
    Oversized,
    #[error("the thread reading from the loader panicked")]
    ReaderPanicked,
    #[error("cannot put the loader's connection in blocking mode for its reading thread: {0}")]
    BlockingMode(#[source] std::io::Error),
    #[error("cannot start the thread reading from the loader: {0}")]
    ReaderThread(#[source] std::io::Error),
}

/// NATS `max_payload` that fits any event: a 4,000,000-byte block plus its envelope.
pub const RECOMMENDED_MAX_PAYLOAD: usize = 5_242_880;

/// Where events go. Everything before (reading, validating, decoding, counting) is the same
/// for both; only handing an event on differs.
#[derive(Clone)]
pub enum Sink {
    /// Published to NATS: the publisher's job; with JetStream's acknowledgements in
    /// JetStream mode.
    Nats { client: Client, address: String, jetstream: Option<Arc<JetStream>> },
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
            Sink::Nats { address, .. } => write!(f, "NATS at {address}"),
            Sink::Stdout(Format::Json) => f.write_str("standard output as JSON"),
            Sink::Stdout(Format::Readable) => f.write_str("standard output as readable lines"),
        }
    }
}

/// How long a stopping publisher waits for the sink to take what it was handed.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl Sink {
    /// The largest event it takes: the NATS server's `max_payload` (which the loss log names),
    /// any on standard output.
    pub fn max_event_len(&self) -> usize {
        match self {
            Sink::Nats { client, .. } => client.max_payload(),
            Sink::Stdout(_) => usize::MAX,
        }
    }

    /// Hands one event on, adding to what waits in the NATS client's buffer: the bytes, and
    /// the record's [`Done`], held until a flush went through. Elsewhere the record is done
    /// once written (standard output) or once JetStream acknowledged it.
    async fn send(&self, event: DecodedRecord, prefix: &SubjectPrefix, counters: &Counters, unflushed: &mut Unflushed) {
        match self {
            Sink::Nats { client, jetstream: None, .. } => {
                if let Some((size, done)) = publish(event, client, prefix, counters, unflushed.bytes).await {
                    unflushed.bytes += size;
                    unflushed.records.push(done);
                }
            }
            Sink::Nats { client, jetstream: Some(jetstream), .. } => {
                publish_durably(event, client, jetstream, prefix, counters).await
            }
            Sink::Stdout(format) => write_line(event, *format, prefix, counters).await,
        }
    }

    /// Waits for the NATS server to have taken what was published: once it is a few MiB
    /// (that slows reading instead of growing the client's buffer), and whenever the loader
    /// has sent nothing more, so that the records are acknowledged. Only a flush that went
    /// through shows the buffer written to the server. Standard output and JetStream keep
    /// nothing here.
    async fn pace(&self, unflushed: &mut Unflushed, idle: bool) {
        if unflushed.bytes >= UNFLUSHED_BYTES || (idle && !unflushed.records.is_empty()) {
            self.flush_published(unflushed, Duration::from_secs(1)).await;
        }
    }

    /// Waits up to `within` for the NATS server to take what waits in the client's buffer;
    /// once it has, those records are done. Bounded: a connection lost meanwhile would hold the
    /// flush until it is back, so none is tried while disconnected.
    async fn flush_published(&self, unflushed: &mut Unflushed, within: Duration) {
        let Sink::Nats { client, jetstream: None, .. } = self else { return };
        if client.connection_state() != State::Connected {
            return;
        }
        match tokio::time::timeout(within, client.flush()).await {
            Ok(Ok(())) => *unflushed = Unflushed::default(),
            Ok(Err(e)) => tracing::debug!("flushing NATS failed: {e}"),
            Err(_) => {}
        }
    }

    /// At shutdown: waits, at most [`FLUSH_TIMEOUT`], for NATS to take the buffered events
    /// (with NATS down, a flush would wait for the reconnection forever). Each line to
    /// standard output was written whole before it counted, so nothing waits there.
    pub async fn flush(&self) {
        let Sink::Nats { client, jetstream, .. } = self else { return };
        if let Some(jetstream) = jetstream {
            jetstream.stop().await;
        }
        match tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("flushing NATS at shutdown failed: {e}"),
            Err(_) => {
                tracing::warn!("NATS did not take the buffered events within {} s of shutdown", FLUSH_TIMEOUT.as_secs())
            }
        }
    }
}

/// At most one warning per interval about refused connections or failed accepts, saying how
/// many were not logged: a peer connecting in a loop must not flood the journal.
pub(crate) struct RateLimited {
    interval: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimited {
    pub(crate) const fn new(interval: Duration) -> Self {
        RateLimited { interval, last: None, suppressed: 0 }
    }

    /// Calls `log` with the number of events not logged since the last call, if one is due.
    pub(crate) fn log(&mut self, log: impl FnOnce(u64)) {
        if self.last.is_some_and(|last| last.elapsed() < self.interval) {
            self.suppressed += 1;
            return;
        }
        self.last = Some(std::time::Instant::now());
        log(std::mem::take(&mut self.suppressed));
    }
}

/// Whether a connecting peer may feed events: only the loader's uid, when one is configured.
fn admitted(conn: &UnixSeqpacket, loader_uid: Option<u32>, refusals: &mut RateLimited) -> bool {
    let Some(loader_uid) = loader_uid else { return true };
    match conn.peer_cred() {
        Ok(cred) if cred.uid() == loader_uid => true,
        Ok(cred) => {
            refusals.log(|suppressed| {
                tracing::warn!(
                    uid = cred.uid(),
                    pid = cred.pid(),
                    "refused connection from uid {}: only the loader's uid {loader_uid} may connect ({suppressed} more refused since the last report)",
                    cred.uid()
                )
            });
            false
        }
        Err(e) => {
            refusals.log(|suppressed| tracing::warn!("refused connection: cannot read its credentials: {e} ({suppressed} more refused since the last report)"));
            false
        }
    }
}

/// How often a refusal or failed accept (or a failed NATS reconnection) is logged at most.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// After a failed accept (out of descriptors or memory), the pause before the next: the
/// pending connection stays queued, so accepting again at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a stopping publisher gives its connections to publish what they have read.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Accepts loaders until `shutdown` completes; each connection is served on its own task, so
/// a refused or misbehaving peer never disturbs another. Then each connection stops reading
/// and hands on what it has read before the function returns. Events go to `sink` on their
/// subjects behind `prefix`.
pub async fn serve(
    mut listener: UnixSeqpacketListener,
    loader_uid: Option<u32>,
    sink: Sink,
    prefix: SubjectPrefix,
    counters: Arc<Counters>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let (mut refusals, mut accept_failures) = (RateLimited::new(LOG_INTERVAL), RateLimited::new(LOG_INTERVAL));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) if !admitted(&conn, loader_uid, &mut refusals) => drop(conn),
                Ok(conn) => {
                    let (sink, counters, stopping) = (sink.clone(), Arc::clone(&counters), stopping.clone());
                    let prefix = prefix.clone();
                    connections.spawn(async move {
                        match serve_loader(conn, &sink, &prefix, &counters, stopping).await {
                            Ok(()) => tracing::info!("loader disconnected"),
                            Err(e) => tracing::warn!("loader connection ended: {e}"),
                        }
                    });
                }
                Err(e) => {
                    accept_failures.log(|suppressed| tracing::warn!("accept failed: {e} ({suppressed} more since the last report)"));
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next() => {}
            () = &mut shutdown => break,
        }
    }
    let _ = stop.send(true);
    let drained =
        tokio::time::timeout(SHUTDOWN_DRAIN, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "records read from the loader were still being published {} s after shutdown",
            SHUTDOWN_DRAIN.as_secs()
        );
    }
}

async fn recv<'b>(conn: &UnixSeqpacket, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, ConnectionError> {
    let info = conn.recv(buf).await?;
    if info.truncated() {
        return Err(ConnectionError::Oversized);
    }
    Ok((info.bytes_read() > 0).then_some(&buf[..info.bytes_read()]))
}

/// Bytes of records read from the loader and not yet published. The loader sends straight
/// from the BPF rings, which overflow while nobody reads them; so a thread of its own reads
/// the connection, and a burst waits here while it is decoded and published. One record of
/// the largest size and a MiB of others: room for a second 4 MB block only held it in memory
/// while the one before was encoded, 4 MiB more at the peak and no faster (README,
/// Performance).
const BACKLOG_BYTES: usize = MAX_RECORD + (1 << 20);

/// Bytes published between waits for the NATS server to have taken them.
const UNFLUSHED_BYTES: usize = 2 << 20;
/// While records published wait for a flush that NATS, down, does not take: how often it is
/// tried again.
const FLUSH_RETRY: Duration = Duration::from_millis(100);

/// Events handed to the NATS client since the last flush that went through.
#[derive(Default)]
struct Unflushed {
    bytes: usize,
    records: Vec<Done>,
}

/// The records of one connection the loader has not been told are done (docs/ipc.md,
/// "Acknowledgements"). Each is tracked from its arrival by a [`Done`].
struct Acks {
    state: Mutex<Acknowledger>,
    changed: Notify,
}

/// A record's place among its connection's [`Acks`]: dropped once the record is published,
/// acknowledged by JetStream, or counted, on whichever path that happens. A publisher that
/// dies drops none, and one that drops a connection mid-way drops them after abandoning its
/// acknowledgements ([`Acknowledging`]): the loader counts those records as `publisher_lost`.
pub struct Done {
    acks: Arc<Acks>,
    record: u64,
}

impl Acks {
    fn new() -> Arc<Self> {
        Arc::new(Acks { state: Mutex::new(Acknowledger::new()), changed: Notify::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Acknowledger> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Record `record` arrived.
    fn arrived(self: &Arc<Self>, record: u64) -> Done {
        self.lock().received(record);
        Done { acks: Arc::clone(self), record }
    }

    /// Sends the acknowledgement due, if any, without blocking; `false` if the loader's side of
    /// the socket is full, to be tried again.
    fn send(&self, sock: &OwnedFd) -> bool {
        let Some(ack) = self.lock().due() else { return true };
        match rustix::net::send(sock, &ack, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(_) => self.lock().sent(ack),
            Err(Errno::AGAIN) => return false,
            Err(e) => tracing::debug!("acknowledging to the loader failed: {e}"),
        }
        true
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.acks.lock().done(self.record);
        self.acks.changed.notify_one();
    }
}

/// At most one acknowledgement per this interval: they are cumulative.
const ACK_INTERVAL: Duration = Duration::from_millis(1);
/// The pause before trying again when the loader's side of the socket was full.
const ACK_RETRY: Duration = Duration::from_millis(10);

/// Acknowledges to the loader what its records' [`Done`]s say, as they say it.
async fn acknowledge(sock: Arc<OwnedFd>, acks: Arc<Acks>) {
    loop {
        acks.changed.notified().await;
        tokio::time::sleep(ACK_INTERVAL).await;
        while !acks.send(&sock) {
            tokio::time::sleep(ACK_RETRY).await;
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

/// What the reading thread hands on, holding its share of the backlog until published.
enum Received {
    /// A `Records` datagram, its sequence number checked and its records found.
    Batch(Batch<Vec<u8>>),
    /// A record put together from its fragments.
    Whole(OwnedRecord),
}

/// Serves one loader until it disconnects, or until `stopping`: then it stops reading (the
/// loader keeps what it has not sent in its rings, for the next publisher) and hands on
/// what it has read.
async fn serve_loader(
    conn: UnixSeqpacket,
    sink: &Sink,
    prefix: &SubjectPrefix,
    counters: &Arc<Counters>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let greeting = decode_hello(recv(&conn, &mut buf).await?.ok_or(ConnectionError::NoHello)?)?;
    let (hello, first_seq, run_id) = (&greeting.hello, greeting.first_seq, greeting.hello.run_id);
    tracing::info!(
        loader_version = %hello.loader_version,
        pid = hello.pid,
        binary = %hello.binary,
        tracepoints = hello.tracepoints.len(),
        "loader connected"
    );
    counters.loader_connected(run_id, &greeting.reported);
    let sock = Arc::new(OwnedFd::from(conn));
    // The reading thread blocks in `recv`.
    rustix::io::ioctl_fionbio(&sock, false).map_err(|e| ConnectionError::BlockingMode(e.into()))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backlog = Arc::new(Semaphore::new(BACKLOG_BYTES));
    let reader = {
        let (sock, backlog, counters) = (Arc::clone(&sock), Arc::clone(&backlog), Arc::clone(counters));
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("loader-reader".into())
            .spawn(move || read_loader(&sock, run_id, first_seq, &tx, &backlog, &counters, &runtime))
            .map_err(ConnectionError::ReaderThread)?
    };
    let acks = Acks::new();
    let mut unflushed = Unflushed::default();
    // Declared after `unflushed`, so dropped before it if this future is dropped mid-way (a
    // shutdown past SHUTDOWN_DRAIN, `serve`).
    let acknowledging = Acknowledging::start(&sock, &acks);
    let mut reading = true;
    loop {
        let next = tokio::select! {
            next = rx.recv() => Some(next),
            _ = stopping.wait_for(|stop| *stop), if reading => {
                // The reader takes what the socket holds, then sees the end of the stream.
                if let Err(e) = rustix::net::shutdown(&*sock, Shutdown::Read) {
                    tracing::warn!("cannot stop reading from the loader: {e}");
                }
                reading = false;
                continue;
            }
            () = tokio::time::sleep(FLUSH_RETRY), if !unflushed.records.is_empty() => None,
        };
        let Some(next) = next else {
            sink.pace(&mut unflushed, true).await;
            continue;
        };
        let Some((received, share)) = next else { break };
        let clock = ClockSample::now();
        let max_event_len = sink.max_event_len();
        match received {
            Received::Batch(batch) => {
                for (record, index) in batch.records().zip(batch.first_record..) {
                    let id = RecordId { run_id, index };
                    if let Some(event) = decoded(&record, max_event_len, id, acks.arrived(index), &clock, counters) {
                        sink.send(event, prefix, counters, &mut unflushed).await;
                    }
                }
            }
            Received::Whole(record) => {
                let id = RecordId { run_id, index: record.index };
                let event =
                    decoded(&record.as_record(), max_event_len, id, acks.arrived(record.index), &clock, counters);
                // A large record's memory and backlog room are free before its event is encoded.
                drop((record, share));
                if let Some(event) = event {
                    sink.send(event, prefix, counters, &mut unflushed).await;
                }
            }
        }
        sink.pace(&mut unflushed, rx.is_empty()).await;
    }
    // The channel closes as the reader returns, so this does not wait.
    let read = reader.join().unwrap_or(Err(ConnectionError::ReaderPanicked));
    acknowledging.task.abort();
    if !unflushed.records.is_empty() {
        sink.flush_published(&mut unflushed, FLUSH_TIMEOUT).await;
    }
    settle(unflushed.records.is_empty(), &sock, &acks).await;
    // What NATS did not take stays unacknowledged: the loader counts it as publisher_lost.
    drop(acknowledging);
    drop(unflushed);
    read
}

/// The task acknowledging a connection's records as they are done. Dropped, it abandons the
/// connection's acknowledgements: the records still held, unpublished, then free their
/// [`Done`]s unacknowledged, and the loader counts them as `publisher_lost`.
struct Acknowledging {
    acks: Arc<Acks>,
    task: tokio::task::JoinHandle<()>,
}

impl Acknowledging {
    fn start(sock: &Arc<OwnedFd>, acks: &Arc<Acks>) -> Self {
        Acknowledging { acks: Arc::clone(acks), task: tokio::spawn(acknowledge(Arc::clone(sock), Arc::clone(acks))) }
    }
}

impl Drop for Acknowledging {
    fn drop(&mut self) {
        // Under the lock that `Done`s take and `Acks::send` reads `due` under: no
        // acknowledgement computed after this counts a record freed after it.
        self.acks.lock().abandon();
        self.task.abort();
    }
}

/// The connection's last acknowledgement, before it closes: once every record it carried is
/// done (those JetStream has not acknowledged yet are awaited up to [`FLUSH_TIMEOUT`]), so
/// that the loader counts as `publisher_lost` only what this publisher never accounted for.
async fn settle(flushed: bool, sock: &OwnedFd, acks: &Acks) {
    let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
    while flushed && acks.lock().waiting() && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline, acks.changed.notified()).await;
    }
    // The loader reads acknowledgements as it goes; a full socket empties within moments.
    while !acks.send(sock) && tokio::time::Instant::now() < deadline + FLUSH_TIMEOUT {
        tokio::time::sleep(ACK_RETRY).await;
    }
}

/// Reads the loader's datagrams until it disconnects: checks their sequence, puts fragments
/// together and hands records on, waiting while the backlog is full.
fn read_loader(
    sock: &OwnedFd,
    run_id: u128,
    first_seq: u64,
    tx: &UnboundedSender<(Received, OwnedSemaphorePermit)>,
    backlog: &Arc<Semaphore>,
    counters: &Counters,
    runtime: &tokio::runtime::Handle,
) -> Result<(), ConnectionError> {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut reassembler = Reassembler::new(first_seq);
    let mut malformed = 0;
    // Waits for room in the backlog: at most MAX_RECORD bytes, within its BACKLOG_BYTES.
    let share = |bytes: usize| {
        runtime
            .block_on(Arc::clone(backlog).acquire_many_owned(bytes.max(1) as u32))
            .expect("the backlog semaphore is never closed")
    };
    // The room taken for the record being put together, before its memory is.
    let mut partial_share = None;
    loop {
        let (len, full_len) = match rustix::net::recv(sock, &mut buf, RecvFlags::TRUNC) {
            Ok(lens) => lens,
            Err(Errno::INTR) => continue,
            // A loader that exits with acknowledgements unread makes the kernel report the reset
            // once, ahead of the datagrams it sent last: those are still queued and are read,
            // then the end of the stream (net/unix/af_unix.c, unix_release_sock).
            Err(Errno::CONNRESET) => continue,
            Err(e) => return Err(ConnectionError::Recv(e.into())),
        };
        if full_len == 0 {
            return Ok(());
        }
        if full_len > len {
            malformed += 1;
            refused(malformed, &ConnectionError::Oversized, counters);
            continue;
        }
        let datagram = &buf[..len];
        let received = match decode_datagram(datagram) {
            Ok(Datagram::Records(batch)) => {
                counted_loss(reassembler.records(batch.seq), counters);
                (Received::Batch(batch.to_owned()), share(datagram.len()))
            }
            Ok(Datagram::Fragment(fragment)) => {
                if fragment.offset == 0 {
                    // A record left unfinished gives its room back first.
                    drop(partial_share.take());
                    partial_share = Some(share(fragment.total_len as usize));
                }
                let (loss, record) = reassembler.fragment(&fragment);
                counted_loss(loss, counters);
                let Some(record) = record else { continue };
                let share = partial_share.take().unwrap_or_else(|| share(record.data.len()));
                (Received::Whole(record), share)
            }
            Ok(Datagram::DropCounts(counts)) => {
                for (count, grown) in counters.dropped_before(run_id, &counts) {
                    tracing::debug!(
                        tracepoint = %count.tracepoint,
                        cause = count.cause.as_str(),
                        total = count.total,
                        "{grown} events dropped before reaching the publisher"
                    );
                }
                continue;
            }
            Err(e) => {
                malformed += 1;
                refused(malformed, &e, counters);
                continue;
            }
        };
        if tx.send(received).is_err() {
            return Ok(());
        }
    }
}

/// A connection's malformed datagrams are logged with their reason up to this many; beyond,
/// a peer that keeps sending them only has them counted.
const MALFORMED_LOGGED: u64 = 10;

/// Counts the connection's `nth` malformed datagram and logs why it was refused.
fn refused(nth: u64, reason: &dyn std::fmt::Display, counters: &Counters) {
    counters.malformed_datagram();
    if nth <= MALFORMED_LOGGED {
        tracing::warn!("malformed datagram from the loader, dropped: {reason}");
    }
    if nth == MALFORMED_LOGGED {
        tracing::warn!("further malformed datagrams on this connection are only counted");
    }
}

/// Logs and counts datagrams and fragmented records that never arrived whole.
fn counted_loss(loss: Loss, counters: &Counters) {
    if loss.datagrams > 0 {
        tracing::trace!(missing = loss.datagrams, "record datagrams missing from the loader's sequence");
        counters.lost_datagrams(loss.datagrams);
    }
    for tp in loss.records {
        tracing::trace!(tracepoint = %tp, "fragmented record incomplete or out of order, dropped");
        counters.fragment_lost(tp);
    }
}

/// A record's name for the whole life of the loader (docs/ipc.md, "Record identity").
#[derive(Clone, Copy)]
struct RecordId {
    run_id: u128,
    index: u64,
}

impl RecordId {
    /// As JetStream's `Nats-Msg-Id`: the run id in 32 hex digits, `-`, the record's number.
    fn msg_id(self) -> String {
        format!("{:032x}-{}", self.run_id, self.index)
    }
}

/// A record decoded into its event, with its subject and wall-clock time.
struct DecodedRecord {
    id: RecordId,
    tracepoint: Tracepoint,
    timestamp_ms: u64,
    decoded: Decoded,
    done: Done,
}

/// Decodes a record for events of at most `max_event_len` bytes ([`Sink::max_event_len`]) and
/// counts its anomalies; `None` (counted, and so done) if it is invalid.
fn decoded(
    record: &Record<'_>,
    max_event_len: usize,
    id: RecordId,
    done: Done,
    clock: &ClockSample,
    counters: &Counters,
) -> Option<DecodedRecord> {
    let tp = record.tracepoint;
    let decoded = match decode_to_at_most(record, max_event_len) {
        Ok(decoded) => decoded,
        Err(e) => {
            tracing::trace!(tracepoint = %tp, "invalid record, dropped: {e}");
            counters.invalid(tp, e.label());
            return None;
        }
    };
    for anomaly in &decoded.anomalies {
        let label = anomaly.label();
        tracing::trace!(tracepoint = %tp, "{label}");
        counters.anomaly(tp, label);
    }
    Some(DecodedRecord { id, tracepoint: tp, timestamp_ms: clock.wall_ms(record.ktime_ns), decoded, done })
}

/// Whether an event of `size` bytes exceeds the NATS server's `max_payload`; counted if so. Such
/// an event is never encoded: a decoded payload can be many times its record's size, and the
/// encoding would be one more copy of it. The limit is the one async-nats applies in `publish`
/// (the server's, or NATS's default of 1 MB before the server said): one atomic load, where
/// `server_info()` would clone the server's whole INFO for every event.
fn exceeds_max_payload(nats: &Client, tp: Tracepoint, size: usize, counters: &Counters) -> bool {
    let exceeds = size > nats.max_payload();
    if exceeds {
        count_over_max_payload(tp, size, counters);
    }
    exceeds
}

fn count_over_max_payload(tp: Tracepoint, size: usize, counters: &Counters) {
    tracing::trace!(tracepoint = %tp, "event of {size} bytes exceeds the NATS server's max_payload, dropped");
    counters.over_max_payload(tp);
}

/// Encodes and publishes one event, `unflushed` bytes being in the client's buffer already;
/// returns the bytes it added there and the record's [`Done`], or `None` if it was counted
/// instead.
async fn publish(
    event: DecodedRecord,
    nats: &Client,
    prefix: &SubjectPrefix,
    counters: &Counters,
    unflushed: usize,
) -> Option<(usize, Done)> {
    let DecodedRecord { tracepoint: tp, timestamp_ms, decoded, done, .. } = event;
    let subject = prefix.apply(decoded.subject);
    let event = decoded.into_envelope(timestamp_ms);
    let size = event.encoded_len();
    if exceeds_max_payload(nats, tp, size, counters) {
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
    nats: &Client,
    jetstream: &JetStream,
    prefix: &SubjectPrefix,
    counters: &Counters,
) {
    let DecodedRecord { id, tracepoint: tp, timestamp_ms, decoded, done } = event;
    let subject = prefix.apply(decoded.subject);
    let event = decoded.into_envelope(timestamp_ms);
    let size = event.encoded_len();
    // Sending it again would not help: counted at once, as in core mode.
    if exceeds_max_payload(nats, tp, size, counters) {
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
    let DecodedRecord { tracepoint: tp, timestamp_ms, decoded, .. } = event;
    let subject = prefix.apply(decoded.subject);
    let envelope = decoded.into_envelope(timestamp_ms);
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
