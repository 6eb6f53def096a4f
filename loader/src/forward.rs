//! Forwarding raw records to the publisher over the SOCK_SEQPACKET connection.
//!
//! Records go from the BPF rings ([`Ring`]) through a non-blocking socket and leave a ring
//! only once sent: small ones are copied into one batch datagram, a large one is sent piece by
//! piece straight from the ring's memory. While the publisher is slow or gone they wait in
//! the rings, so the loader holds no queue; what the rings cannot hold, the BPF programs
//! count as `ring_full`.

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipc_protocol::records::RECORD_HEADER_LEN;
use ipc_protocol::{
    encode_drop_counts, encode_hello, DropCause, DropCount, EncodeError, Encoder, FragmentHead, Hello, Push, Tracepoint,
};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SendAncillaryBuffer, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use rustix::time::Timespec;

use crate::ring::Ring;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot connect to the publisher socket {path}: {source}; is ebpf-publisher running and listening there?")]
    Connect { path: String, source: std::io::Error },
}

pub struct Forwarder {
    /// The connection to the publisher; `None` while it is gone.
    sock: Option<OwnedFd>,
    path: PathBuf,
    hello: Vec<u8>,
    /// When to try again to reach a publisher that went away.
    reconnect_at: Instant,
    encoder: Encoder,
    /// The record at the head of a ring that is being sent in fragments.
    fragmenting: Option<Fragmenting>,
    /// Drop totals waiting to be sent.
    counts: Option<Vec<u8>>,
    /// Drops the loader itself counted.
    dropped: BTreeMap<(Tracepoint, DropCause), u64>,
    /// Records taken off the rings so far.
    records: u64,
}

#[derive(Clone, Copy)]
struct Fragmenting {
    ring: usize,
    /// The next fragment's head; its piece starts at `offset`.
    head: FragmentHead,
    offset: usize,
}

/// Why [`Forwarder::pump`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pump {
    /// Everything the rings held is sent: wait for records.
    Drained,
    /// The socket takes no more: wait until it does.
    SocketFull,
    /// No publisher: records wait in the rings until one is reached again.
    Disconnected,
}

/// How often a loader whose publisher went away tries to reach it again.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// Connects and sends the hello without ever blocking: a listener whose backlog is full (a
/// publisher that stopped accepting, or anyone filling it) fails the attempt with EAGAIN
/// instead of holding the loader, which must keep serving SIGTERM, bitcoind's exit and the
/// idle rule; the next attempt comes a second later.
fn connect(path: &Path, hello: &[u8]) -> std::io::Result<OwnedFd> {
    let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
    let sock = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, flags, None)?;
    rustix::net::connect(&sock, &SocketAddrUnix::new(path)?)?;
    // NOSIGNAL: a closed peer is an error here, not a SIGPIPE.
    rustix::net::send(&sock, hello, SendFlags::NOSIGNAL)?;
    Ok(sock)
}

/// Sends one datagram, `head` followed by `body`; `Ok(false)` when the socket is full.
fn send(sock: &OwnedFd, head: &[u8], body: &[u8]) -> Result<bool, Errno> {
    let slices = [IoSlice::new(head), IoSlice::new(body)];
    loop {
        match rustix::net::sendmsg(sock, &slices, &mut SendAncillaryBuffer::default(), SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(true),
            Err(Errno::AGAIN) => return Ok(false),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Forwarder {
    /// Connects and sends the hello.
    pub fn connect(path: &Path, hello: &Hello) -> Result<Self, ForwardError> {
        let hello = encode_hello(hello);
        let sock = connect(path, &hello)
            .map_err(|source| ForwardError::Connect { path: path.display().to_string(), source })?;
        Ok(Forwarder {
            sock: Some(sock),
            path: path.to_owned(),
            hello,
            reconnect_at: Instant::now(),
            encoder: Encoder::default(),
            fragmenting: None,
            counts: None,
            dropped: BTreeMap::new(),
            records: 0,
        })
    }

    /// The connection, while there is one.
    pub fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.sock.as_ref().map(AsFd::as_fd)
    }

    /// Once a second while the publisher is gone, tries to reach it again (a restarted
    /// publisher, or systemd's socket starting one). Connecting to the socket needs no
    /// capability. Returns whether a new connection was made.
    pub fn reconnect(&mut self) -> bool {
        if self.sock.is_some() || Instant::now() < self.reconnect_at {
            return false;
        }
        self.reconnect_at = Instant::now() + RECONNECT_INTERVAL;
        match connect(&self.path, &self.hello) {
            Ok(sock) => {
                tracing::info!(socket = %self.path.display(), "reconnected to the publisher");
                self.sock = Some(sock);
                true
            }
            Err(e) => {
                tracing::debug!("publisher still unreachable: {e}");
                false
            }
        }
    }

    /// Records taken off the rings so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Queues the BPF counters merged with the loader's own, to go out next.
    pub fn drop_counts(&mut self, bpf: &[DropCount]) {
        let mut all = bpf.to_vec();
        all.extend(self.dropped.iter().map(|(&(tracepoint, cause), &total)| DropCount { tracepoint, cause, total }));
        self.counts = Some(encode_drop_counts(&all));
    }

    /// What a failed send means: `Some(stop)` unless it went out. A publisher that went away
    /// is logged and reached again later; a record it was getting in fragments starts over.
    fn sent(&mut self, result: Result<bool, Errno>) -> Option<Pump> {
        match result {
            Ok(true) => None,
            Ok(false) => Some(Pump::SocketFull),
            Err(e) => {
                tracing::warn!(
                    "lost the connection to the publisher ({e}): records wait in the rings, reconnecting every {}s",
                    RECONNECT_INTERVAL.as_secs()
                );
                self.sock = None;
                self.fragmenting = None;
                self.reconnect_at = Instant::now() + RECONNECT_INTERVAL;
                Some(Pump::Disconnected)
            }
        }
    }

    /// Sends the open batch, if any; `Some(stop)` unless it went out.
    fn send_batch(&mut self) -> Option<Pump> {
        let batch = self.encoder.batch()?;
        let Some(sock) = &self.sock else { return Some(Pump::Disconnected) };
        let result = send(sock, batch, &[]);
        let stop = self.sent(result);
        if stop.is_none() {
            self.encoder.batch_sent();
        }
        stop
    }

    /// Sends records, oldest first across the rings, until the rings are empty or the socket
    /// is full; each record leaves its ring once sent whole.
    pub fn pump(&mut self, rings: &mut [Ring<'_>]) -> Pump {
        loop {
            let Some(sock) = &self.sock else { return Pump::Disconnected };
            if let Some(f) = self.fragmenting {
                let ring = &mut rings[f.ring];
                let (tracepoint, ktime_ns, body) = ring
                    .peek()
                    .and_then(parse_header)
                    .expect("a record being sent stays whole at the head of its ring");
                let (total_len, end) = (body.len(), f.head.end);
                let result = send(sock, f.head.bytes(), &body[f.offset..end]);
                if let Some(stop) = self.sent(result) {
                    return stop;
                }
                if end == total_len {
                    ring.release();
                    self.records += 1;
                    self.fragmenting = None;
                } else {
                    let head = self.encoder.fragment(tracepoint, ktime_ns, total_len, end);
                    self.fragmenting = Some(Fragmenting { ring: f.ring, head, offset: end });
                }
                continue;
            }
            if let Some(counts) = &self.counts {
                let result = send(sock, counts, &[]);
                if let Some(stop) = self.sent(result) {
                    return stop;
                }
                self.counts = None;
                continue;
            }
            let Some(index) = oldest(rings) else {
                if self.encoder.batch().is_none() {
                    return Pump::Drained;
                }
                if let Some(stop) = self.send_batch() {
                    return stop;
                }
                continue;
            };
            let ring = &mut rings[index];
            let Some((tracepoint, ktime_ns, body)) = ring.peek().and_then(parse_header) else {
                tracing::error!("BPF record without a valid header: BPF object and loader disagree");
                ring.release();
                continue;
            };
            match self.encoder.push(tracepoint, ktime_ns, body) {
                Ok(Push::Batched) => {
                    ring.release();
                    self.records += 1;
                }
                Ok(Push::BatchFull) => {
                    if let Some(stop) = self.send_batch() {
                        return stop;
                    }
                }
                Ok(Push::Fragments) => {
                    // The batch goes first, keeping the records in order.
                    if let Some(stop) = self.send_batch() {
                        return stop;
                    }
                    let head = self.encoder.fragment(tracepoint, ktime_ns, body.len(), 0);
                    self.fragmenting = Some(Fragmenting { ring: index, head, offset: 0 });
                }
                Err(EncodeError::TooLarge { size }) => {
                    tracing::error!(%tracepoint, size, "record larger than the IPC protocol allows: BPF object and loader disagree");
                    *self.dropped.entry((tracepoint, DropCause::IpcTooLarge)).or_default() += 1;
                    ring.release();
                }
            }
        }
    }

    /// At shutdown: sends what the rings hold, waiting for the publisher up to `within`.
    /// Returns how many records were left unsent.
    pub fn drain(&mut self, rings: &mut [Ring<'_>], within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        while self.pump(rings) == Pump::SocketFull {
            let (Some(sock), Some(left)) = (self.socket(), deadline.checked_duration_since(Instant::now())) else {
                break;
            };
            let timeout = Timespec::try_from(left).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 });
            // poll: wait until the publisher has read enough for the next datagram.
            if let Err(e) = poll(&mut [PollFd::from_borrowed_fd(sock, PollFlags::OUT)], Some(&timeout)) {
                if e != Errno::INTR {
                    break;
                }
            }
        }
        let mut left = 0;
        for ring in rings {
            while ring.peek().is_some() {
                ring.release();
                left += 1;
            }
        }
        left
    }
}

/// The ring whose next record is the oldest, by kernel time.
fn oldest(rings: &mut [Ring<'_>]) -> Option<usize> {
    let mut oldest: Option<(u64, usize)> = None;
    for (index, ring) in rings.iter_mut().enumerate() {
        // A record too short for its time comes first, to be refused.
        let Some(ktime_ns) = ring.peek().map(|raw| parse_header(raw).map_or(0, |(_, t, _)| t)) else { continue };
        if oldest.is_none_or(|(t, _)| ktime_ns < t) {
            oldest = Some((ktime_ns, index));
        }
    }
    oldest.map(|(_, index)| index)
}

/// Splits a ring record into tracepoint, kernel time and the body bytes that matter.
fn parse_header(raw: &[u8]) -> Option<(Tracepoint, u64, &[u8])> {
    let header = raw.get(..RECORD_HEADER_LEN)?;
    let ktime_ns = u64::from_ne_bytes(header[0..8].try_into().ok()?);
    let tracepoint = Tracepoint::from_id(u16::from_ne_bytes(header[8..10].try_into().ok()?))?;
    let len = u32::from_ne_bytes(header[12..16].try_into().ok()?) as usize;
    let body = raw.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN.checked_add(len)?)?;
    Some((tracepoint, ktime_ns, body))
}
