//! Forwarding raw records to the publisher over the SOCK_SEQPACKET connection.
//!
//! The protocol's send side is `ipc_protocol::Sender` (batching, fragments, sequence numbers,
//! drop totals, what a new connection needs); this is its I/O: the non-blocking socket, the
//! rings, and which ring's record goes next (the oldest). Records leave a ring only once sent,
//! so while the publisher is slow or gone they wait in the rings, and what the rings cannot
//! hold the BPF programs count as `ring_full` (what they hold when the loader stops and no
//! publisher takes, as `loader_stopped`). The socket's other direction carries the
//! publisher's acknowledgements, eight bytes each, which the sender checks
//! (docs/ipc.md, "Acknowledgements").

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipc_protocol::pump::{abandon, pump, Link, Pumped, Rings};
use ipc_protocol::{decode_ack, DropCount, Hello, Refusal, Sender, ACK_LEN};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendAncillaryBuffer, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
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
    /// Set when a send failed: until then (or the publisher's close) the connection is only
    /// read, for the acknowledgements of what a stopping publisher still publishes.
    closing_until: Option<Instant>,
    path: PathBuf,
    /// When to try again to reach a publisher that went away.
    reconnect_at: Instant,
    /// When the connection was made, how long it lasted once found lost, and how long after
    /// losing it the next is tried.
    connected_at: Instant,
    lasted: Option<Duration>,
    reconnect_delay: Duration,
    sender: Sender,
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
    /// The publisher acknowledged too little of what it was sent: wait for its
    /// acknowledgements.
    AwaitingAcks,
}

/// How often a loader whose publisher went away tries to reach it again.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait before another try, reached by doubling after each connection that ended
/// within it: a publisher that ends every connection at once (it refuses the hello of a
/// loader from another release, or fails as it starts) is retried ever less often, so that
/// neither half floods the journal. A connection that lasted longer starts over at
/// [`RECONNECT_INTERVAL`].
const RECONNECT_MAX: Duration = Duration::from_secs(32);
/// How long a publisher that stopped reading may take to publish what it read, acknowledge it
/// and close: its own drain takes at most 5 s (FLUSH_TIMEOUT in publisher/src/sink.rs, awaited
/// by `settle` in publisher/src/acks.rs).
const CLOSING_TIMEOUT: Duration = Duration::from_secs(10);

/// The wait before reconnecting, after a connection that `lasted` so long was lost and the wait
/// before it was `previous`.
fn next_reconnect_delay(previous: Duration, lasted: Duration) -> Duration {
    if lasted < RECONNECT_MAX {
        (previous * 2).min(RECONNECT_MAX)
    } else {
        RECONNECT_INTERVAL
    }
}

/// Why the connection's acknowledgements stopped.
enum AcksEnd {
    /// The publisher closed the connection.
    Closed,
    /// It sent something else than an acknowledgement the sender could take.
    Refused(String),
    Failed(Errno),
}

/// Acknowledgements taken per call of [`read_acks`]: a publisher that keeps sending them (a
/// repeated one is valid: the first on a new connection may repeat the last of the old)
/// must not hold the loader from its rings, drop counters, SIGTERM and bitcoind's exit.
const ACKS_PER_READ: usize = 64;

/// Takes the acknowledgements waiting on the socket, at most [`ACKS_PER_READ`], without
/// blocking; the rest wait for the next call, the socket staying readable.
fn read_acks(sock: &OwnedFd, sender: &mut Sender) -> Result<(), AcksEnd> {
    let mut buf = [0u8; ACK_LEN + 1];
    for _ in 0..ACKS_PER_READ {
        match rustix::net::recv(sock, &mut buf, RecvFlags::DONTWAIT | RecvFlags::TRUNC) {
            Ok((_, 0)) => return Err(AcksEnd::Closed),
            Ok((len, full_len)) => {
                let done = decode_ack(&buf[..len])
                    .filter(|_| full_len == len)
                    .ok_or_else(|| AcksEnd::Refused(format!("a datagram of {full_len} bytes is no acknowledgement")))?;
                sender.acknowledged(done).map_err(|e| AcksEnd::Refused(e.to_string()))?;
            }
            Err(Errno::AGAIN) => return Ok(()),
            // A publisher that died with records unread: the kernel reports the reset once,
            // ahead of the acknowledgements still queued, which are read next.
            Err(Errno::INTR | Errno::CONNRESET) => continue,
            Err(e) => return Err(AcksEnd::Failed(e)),
        }
    }
    Ok(())
}

/// Connects without ever blocking: a listener whose backlog is full (a publisher that stopped
/// accepting, or anyone filling it) fails the attempt with EAGAIN instead of holding the
/// loader, which must keep serving SIGTERM, bitcoind's exit and the idle rule; the next
/// attempt comes a second later.
fn connect(path: &Path) -> std::io::Result<OwnedFd> {
    // The loader's seccomp filter allows this socket, family, type and flags, and no other
    // (loader/src/seccomp.rs): a change here is one there.
    let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
    let sock = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, flags, None)?;
    rustix::net::connect(&sock, &SocketAddrUnix::new(path)?)?;
    Ok(sock)
}

/// The publisher's socket, for the sender's loop.
struct Socket<'a>(&'a OwnedFd);

impl Link for Socket<'_> {
    type Error = Errno;

    /// One `sendmsg`, `head` and `piece` gathered: a large record's fragments go out straight
    /// from the ring's memory.
    fn send(&mut self, head: &[u8], piece: &[u8]) -> Result<bool, Errno> {
        let slices = [IoSlice::new(head), IoSlice::new(piece)];
        loop {
            // NOSIGNAL: a closed peer is an error here, not a SIGPIPE.
            match rustix::net::sendmsg(self.0, &slices, &mut SendAncillaryBuffer::default(), SendFlags::NOSIGNAL) {
                Ok(_) => return Ok(true),
                Err(Errno::AGAIN) => return Ok(false),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The BPF rings, for the sender's loop.
struct BpfRings<'r, 'fd>(&'r mut [Ring<'fd>]);

impl Rings for BpfRings<'_, '_> {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn peek(&mut self, ring: usize) -> Option<&[u8]> {
        self.0[ring].peek()
    }

    fn release(&mut self, ring: usize) {
        self.0[ring].release();
    }
}

fn log_refusal(refusal: Refusal) {
    match refusal {
        Refusal::BadHeader => tracing::error!("BPF record without a valid header: BPF object and loader disagree"),
        Refusal::TooLarge { tracepoint, size } => {
            tracing::error!(%tracepoint, size, "record larger than the IPC protocol allows: BPF object and loader disagree");
        }
    }
}

impl Forwarder {
    /// Connects and sends the hello.
    pub fn connect(path: &Path, hello: &Hello) -> Result<Self, ForwardError> {
        let sock =
            connect(path).map_err(|source| ForwardError::Connect { path: path.display().to_string(), source })?;
        let mut sender = Sender::new(hello);
        sender.connected();
        let mut forwarder = Forwarder {
            sock: Some(sock),
            closing_until: None,
            path: path.to_owned(),
            reconnect_at: Instant::now(),
            connected_at: Instant::now(),
            lasted: None,
            reconnect_delay: RECONNECT_INTERVAL,
            sender,
        };
        forwarder.pump(&mut []);
        Ok(forwarder)
    }

    /// The connection, while there is one.
    pub fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.sock.as_ref().map(AsFd::as_fd)
    }

    /// While the publisher is gone, tries to reach it again once the wait after the lost
    /// connection is over, then once a second (a restarted publisher, or systemd's socket
    /// starting one). Connecting to the socket needs no capability. Returns whether a new
    /// connection was made.
    pub fn reconnect(&mut self) -> bool {
        self.settle();
        if self.sock.is_some() || Instant::now() < self.reconnect_at {
            return false;
        }
        match connect(&self.path) {
            Ok(sock) => {
                tracing::info!(socket = %self.path.display(), "reconnected to the publisher");
                self.sock = Some(sock);
                self.connected_at = Instant::now();
                self.sender.connected();
                true
            }
            Err(e) => {
                tracing::debug!("publisher still unreachable: {e}");
                self.reconnect_at = Instant::now() + RECONNECT_INTERVAL;
                false
            }
        }
    }

    /// Records taken off the rings so far.
    pub fn records(&self) -> u64 {
        self.sender.taken()
    }

    /// The BPF drop totals; they go out merged with the loader's own when they changed.
    pub fn drop_counts(&mut self, bpf: &[DropCount]) {
        self.sender.drop_counts(bpf);
    }

    /// A send failed: the publisher stopped reading, or is gone. What it read and acknowledges
    /// before it closes is settled; [`Self::settle`] counts the rest once it closed.
    fn lost(&mut self, reason: &dyn std::fmt::Display) {
        tracing::warn!(
            "lost the connection to the publisher ({reason}): records wait in the rings, reconnecting in {}s",
            self.ended().as_secs()
        );
        self.closing_until = Some(Instant::now() + CLOSING_TIMEOUT);
        self.settle();
    }

    /// While a lost connection is closing: takes its acknowledgements until the publisher
    /// closes it (or [`CLOSING_TIMEOUT`]), then counts what it took with it unacknowledged.
    fn settle(&mut self) {
        let (Some(sock), Some(until)) = (&self.sock, self.closing_until) else { return };
        match read_acks(sock, &mut self.sender) {
            Ok(()) if Instant::now() < until => return,
            Ok(()) => tracing::warn!("the publisher did not close the connection within {CLOSING_TIMEOUT:?}"),
            Err(AcksEnd::Closed) => {}
            Err(AcksEnd::Refused(reason)) => return self.refuse(&reason),
            Err(AcksEnd::Failed(e)) => tracing::debug!("reading acknowledgements failed: {e}"),
        }
        self.close();
    }

    /// The publisher wrote something else than an acknowledgement the sender can take:
    /// nothing more is read from it.
    fn refuse(&mut self, reason: &str) {
        tracing::warn!(
            "refused the publisher's acknowledgement ({reason}): dropping the connection, reconnecting in {}s",
            self.ended().as_secs()
        );
        self.close();
    }

    /// Takes the acknowledgements waiting on the open connection (none while it is closing or
    /// gone: [`Self::settle`] reads those).
    fn take_acks(&mut self) -> Result<(), AcksEnd> {
        match (&self.sock, self.closing_until) {
            (Some(sock), None) => read_acks(sock, &mut self.sender),
            _ => Ok(()),
        }
    }

    /// Drops the connection, counting what the publisher took with it unacknowledged.
    fn close(&mut self) {
        self.sock = None;
        self.closing_until = None;
        let lost = self.sender.disconnected();
        if lost > 0 {
            tracing::warn!(
                lost,
                "the publisher ended without acknowledging records it was sent: counted as publisher_lost"
            );
        }
        self.reconnect_delay = self.ended();
        self.lasted = None;
        self.reconnect_at = Instant::now() + self.reconnect_delay;
    }

    /// The wait before the next connection, from how long this one lasted until it was first
    /// found lost or refused (a lost connection may take a while to close): see
    /// [`RECONNECT_MAX`].
    fn ended(&mut self) -> Duration {
        let lasted = match self.lasted {
            Some(lasted) => lasted,
            None => *self.lasted.insert(self.connected_at.elapsed()),
        };
        next_reconnect_delay(self.reconnect_delay, lasted)
    }

    /// Sends what is due and records, oldest first across the rings, until the rings are empty
    /// or the socket is full; each record leaves its ring once sent whole (`ipc_protocol::pump`).
    pub fn pump(&mut self, rings: &mut [Ring<'_>]) -> Pump {
        match self.take_acks() {
            Ok(()) => {}
            Err(AcksEnd::Closed) => self.lost(&"closed by the publisher"),
            Err(AcksEnd::Refused(reason)) => self.refuse(&reason),
            Err(AcksEnd::Failed(e)) => self.lost(&e),
        }
        let (Some(sock), None) = (&self.sock, self.closing_until) else { return Pump::Disconnected };
        match pump(&mut self.sender, &mut BpfRings(rings), &mut Socket(sock), &mut log_refusal) {
            Pumped::Drained => Pump::Drained,
            Pumped::Full => Pump::SocketFull,
            Pumped::AwaitingAcks => Pump::AwaitingAcks,
            Pumped::Failed(e) => {
                self.lost(&e);
                Pump::Disconnected
            }
        }
    }

    /// At shutdown: sends what the rings hold, waiting up to `within` for the publisher to
    /// read it, and for one that is gone to be back (restarted, or started by systemd's socket),
    /// tried as [`Self::reconnect`] tries. What is left then is counted as `loader_stopped`
    /// (`ipc_protocol::pump::abandon`), and those totals get [`LAST_TOTALS_WAIT`] more to go out.
    pub fn drain(&mut self, rings: &mut [Ring<'_>], within: Duration) -> Stopped {
        let deadline = Instant::now() + within;
        // A publisher gone is tried at once, and then once a second whatever the back-off.
        self.reconnect_at = self.reconnect_at.min(Instant::now());
        loop {
            self.reconnect();
            self.reconnect_at = self.reconnect_at.min(Instant::now() + RECONNECT_INTERVAL);
            // Wait until the publisher has read enough for the next datagram, or acknowledged
            // enough for the next record; a lost connection for its last acknowledgements and
            // its close; no connection for the next attempt, if anything waits for one.
            let flags = match self.pump(rings) {
                Pump::Drained => break,
                Pump::SocketFull => PollFlags::OUT,
                Pump::Disconnected if self.sock.is_none() && !self.holds_unsent(rings) => break,
                Pump::AwaitingAcks | Pump::Disconnected => PollFlags::IN,
            };
            if !self.wait(flags, deadline) {
                break;
            }
        }
        // A connection that failed and has not closed by now: what it took unacknowledged is
        // counted as publisher_lost, as when it closes (the publisher may yet publish some).
        if self.closing_until.is_some() {
            self.close();
        }
        // Acknowledgements left unread would make the publisher's next read fail with a reset
        // as the socket closes (it goes on reading what is queued).
        let _ = self.take_acks();
        let unsent = abandon(&mut self.sender, &mut BpfRings(rings));
        let deadline = Instant::now() + LAST_TOTALS_WAIT;
        while self.sender.undelivered_totals().is_some() {
            match self.pump(&mut []) {
                Pump::SocketFull if self.wait(PollFlags::OUT, deadline) => {}
                _ => break,
            }
        }
        let _ = self.take_acks();
        let undelivered = self.sender.undelivered_totals().map(<[DropCount]>::to_vec);
        Stopped { unsent, undelivered }
    }

    /// Whether records or drop totals still wait to go out.
    fn holds_unsent(&self, rings: &mut [Ring<'_>]) -> bool {
        self.sender.holds_unsent() || rings.iter_mut().any(|ring| ring.peek().is_some())
    }

    /// Waits for `flags` on the connection, or without one for the next attempt to reconnect,
    /// until `deadline` at the latest. Returns false once the deadline has passed.
    fn wait(&self, flags: PollFlags, deadline: Instant) -> bool {
        let now = Instant::now();
        let Some(left) = deadline.checked_duration_since(now).filter(|left| !left.is_zero()) else { return false };
        let mut fds: Vec<PollFd<'_>> = self.socket().map(|s| PollFd::from_borrowed_fd(s, flags)).into_iter().collect();
        let left = if fds.is_empty() { left.min(self.reconnect_at.saturating_duration_since(now)) } else { left };
        let timeout = Timespec::try_from(left).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 });
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(Errno::INTR) => true,
            Err(_) => false,
        }
    }
}

/// What a stopping loader could not hand on.
pub struct Stopped {
    /// Records counted as `loader_stopped`.
    pub unsent: u64,
    /// The drop totals no publisher took, if any: they are in the loader's log only.
    pub undelivered: Option<Vec<DropCount>>,
}

/// How long a stopping loader waits for its last drop totals to go out, after `drain`'s wait.
const LAST_TOTALS_WAIT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use ipc_protocol::Tracepoint;

    use super::*;

    #[test]
    fn connections_that_end_at_once_are_retried_ever_less_often() {
        let at_once = Duration::from_millis(5);
        let mut delays = vec![RECONNECT_INTERVAL];
        for _ in 0..7 {
            delays.push(next_reconnect_delay(*delays.last().expect("a delay"), at_once));
        }
        assert_eq!(delays.iter().map(Duration::as_secs).collect::<Vec<_>>(), [1, 2, 4, 8, 16, 32, 32, 32]);
        // A connection that lasted starts over.
        assert_eq!(next_reconnect_delay(RECONNECT_MAX, RECONNECT_MAX), RECONNECT_INTERVAL);
    }

    #[test]
    fn a_flood_of_acknowledgements_is_read_a_bounded_number_at_a_time() {
        use rustix::net::{socketpair, AddressFamily, SendFlags, SocketFlags, SocketType};
        let (loader_end, publisher_end) =
            socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).expect("socketpair");
        let flood = ACKS_PER_READ + 36;
        for _ in 0..flood {
            // Records below 0: valid whenever it comes.
            rustix::net::send(&publisher_end, &ipc_protocol::encode_ack(0), SendFlags::DONTWAIT).expect("queued");
        }
        let hello = ipc_protocol::Hello {
            run_id: 1,
            loader_version: "test".into(),
            pid: 1,
            binary: "bitcoind".into(),
            tracepoints: vec![Tracepoint::MempoolAdded.id()],
        };
        let mut sender = Sender::new(&hello);
        assert!(read_acks(&loader_end, &mut sender).is_ok());
        let mut left = 0;
        let mut buf = [0u8; ACK_LEN];
        while rustix::net::recv(&loader_end, &mut buf, RecvFlags::DONTWAIT).is_ok() {
            left += 1;
        }
        assert_eq!(left, flood - ACKS_PER_READ, "the rest waits for the next turn of the loop");
    }
}
