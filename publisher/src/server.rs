//! Accepting loader connections, reading what they forward, and decoding it for the sink
//! (publisher/src/sink.rs), each record acknowledged once done (publisher/src/acks.rs).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use ipc_protocol::{
    decode_datagram, decode_hello, record_capacity, Batch, Datagram, Loss, OwnedRecord, Reassembler, Record,
    MAX_DATAGRAM, MAX_RECORD,
};
use rustix::io::Errno;
use rustix::net::{RecvFlags, Shutdown};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_seqpacket::{UnixSeqpacket, UnixSeqpacketListener};

use crate::acks::{settle, Acknowledging, Acks, Done};
use crate::clock::ClockSample;
use crate::counters::Counters;
use crate::decode::decode_to_at_most;
use crate::log_limit::{RateLimited, LOG_INTERVAL};
use crate::nats::SubjectPrefix;
use crate::sink::{DecodedRecord, RecordId, Sink, Unflushed, ACKNOWLEDGED_WAIT};

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
/// while the one before was encoded, 4 MiB more at the peak and no faster
/// (docs/performance.md).
const BACKLOG_BYTES: usize = MAX_RECORD + (1 << 20);
const _: () = assert!(record_capacity(MAX_RECORD as u32) <= BACKLOG_BYTES, "the largest record's buffer fits");

/// While records published are not done (NATS down, or its host not yet acknowledging what
/// the last flush wrote): how often a flush is tried again.
const FLUSH_RETRY: Duration = Duration::from_millis(100);

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
    // Quoted and escaped: a line break in what the peer sent would forge a log line.
    tracing::info!(
        loader_version = ?hello.loader_version,
        pid = hello.pid,
        binary = ?hello.binary,
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
    sink.flush_all_published(&mut unflushed, ACKNOWLEDGED_WAIT).await;
    settle(unflushed.records.is_empty(), &sock, &acks).await;
    // What NATS did not take stays unacknowledged: the loader counts it as publisher_lost.
    drop(acknowledging);
    drop(unflushed);
    read
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
    // Waits for room in the backlog: at most the largest record's buffer, within BACKLOG_BYTES.
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
                    partial_share = Some(share(record_capacity(fragment.total_len)));
                }
                let (loss, record) = reassembler.fragment(&fragment);
                counted_loss(loss, counters);
                let Some(record) = record else { continue };
                let share = partial_share.take().unwrap_or_else(|| share(record.data.capacity()));
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
    Some(DecodedRecord { id, tracepoint: tp, timestamp_us: clock.wall_us(record.ktime_ns), decoded, done })
}
