//! Forwarding raw records to the publisher over the SOCK_SEQPACKET connection.
//!
//! Records go into a bounded queue of datagrams ([`Encoder`]) and leave it through a
//! non-blocking socket, so the loader keeps draining the BPF rings while the publisher is
//! slow: what does not fit the queue is counted as `ipc_backpressure`, never waited for.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipc_protocol::records::RECORD_HEADER_LEN;
use ipc_protocol::{encode_hello, DropCause, DropCount, EncodeError, Encoder, Hello, Tracepoint};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use rustix::time::Timespec;

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
    /// Drops the loader itself counted.
    dropped: BTreeMap<(Tracepoint, DropCause), u64>,
    /// Records taken off the rings so far.
    records: u64,
}

/// How often a loader whose publisher went away tries to reach it again.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

fn connect(path: &Path, hello: &[u8]) -> std::io::Result<OwnedFd> {
    let sock = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
    rustix::net::connect(&sock, &SocketAddrUnix::new(path)?)?;
    // NOSIGNAL: a closed peer is an error here, not a SIGPIPE.
    rustix::net::send(&sock, hello, SendFlags::NOSIGNAL)?;
    rustix::io::ioctl_fionbio(&sock, true)?;
    Ok(sock)
}

impl Forwarder {
    /// Connects and sends the hello; `queue_limit` bounds the bytes waiting to be sent.
    pub fn connect(path: &Path, hello: &Hello, queue_limit: usize) -> Result<Self, ForwardError> {
        let hello = encode_hello(hello);
        let sock = connect(path, &hello).map_err(|source| ForwardError::Connect { path: path.display().to_string(), source })?;
        Ok(Forwarder {
            sock: Some(sock),
            path: path.to_owned(),
            hello,
            reconnect_at: Instant::now(),
            encoder: Encoder::new(queue_limit),
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

    /// Whether the queue has room for `bytes` more.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.encoder.queued_bytes() + bytes <= self.encoder.limit()
    }

    pub fn wants_to_send(&self) -> bool {
        self.encoder.front().is_some()
    }

    /// Records taken off the rings so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Queues one ring-buffer record (header + body).
    pub fn record(&mut self, raw: &[u8]) {
        self.records += 1;
        let Some((tracepoint, ktime_ns, body)) = parse_header(raw) else {
            tracing::error!(len = raw.len(), "BPF record without a valid header: BPF object and loader disagree");
            return;
        };
        let cause = match self.encoder.record(tracepoint, ktime_ns, body) {
            Ok(()) => return,
            Err(EncodeError::QueueFull { .. }) => DropCause::IpcBackpressure,
            Err(EncodeError::TooLarge { size }) => {
                tracing::error!(%tracepoint, size, "record larger than the IPC protocol allows: BPF object and loader disagree");
                DropCause::IpcTooLarge
            }
        };
        *self.dropped.entry((tracepoint, cause)).or_default() += 1;
    }

    /// Queues the BPF counters merged with the loader's own.
    pub fn drop_counts(&mut self, bpf: &[DropCount]) {
        let mut all = bpf.to_vec();
        all.extend(self.dropped.iter().map(|(&(tracepoint, cause), &total)| DropCount { tracepoint, cause, total }));
        self.encoder.drop_counts(&all);
    }

    /// Sends queued datagrams until the queue is empty or the socket is full. A publisher
    /// that went away is logged and reached again later; meanwhile records wait in the
    /// queue, and what it cannot hold is counted.
    pub fn send_queued(&mut self) {
        self.encoder.flush();
        let Some(sock) = &self.sock else { return };
        while let Some(datagram) = self.encoder.front() {
            match rustix::net::send(sock, datagram, SendFlags::NOSIGNAL) {
                Ok(_) => self.encoder.sent(),
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    tracing::warn!(
                        "lost the connection to the publisher ({e}): holding records, reconnecting every {}s",
                        RECONNECT_INTERVAL.as_secs()
                    );
                    self.sock = None;
                    self.reconnect_at = Instant::now() + RECONNECT_INTERVAL;
                    break;
                }
            }
        }
    }

    /// At shutdown: sends everything queued, waiting for the publisher up to `within`.
    /// Returns how many datagrams were left unsent.
    pub fn drain(&mut self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            self.send_queued();
            let Some(sock) = self.socket() else { break };
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|_| self.wants_to_send()) else {
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
        self.encoder.queued_datagrams()
    }
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
