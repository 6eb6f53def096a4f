//! Acknowledging to the loader the records this publisher is done with, so that the loader
//! counts what a publisher that died never handled as `publisher_lost`.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipc_protocol::Acknowledger;
use rustix::io::Errno;
use rustix::net::SendFlags;
use tokio::sync::Notify;

use crate::sink::FLUSH_TIMEOUT;

/// The records of one connection the loader has not been told are done (docs/ipc.md,
/// "Acknowledgements"). Each is tracked from its arrival by a [`Done`].
pub(crate) struct Acks {
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
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Acks { state: Mutex::new(Acknowledger::new()), changed: Notify::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Acknowledger> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The record number below which every record is done.
    #[cfg(test)]
    pub(crate) fn done_below(&self) -> u64 {
        self.lock().done_below()
    }

    /// Record `record` arrived.
    pub(crate) fn arrived(self: &Arc<Self>, record: u64) -> Done {
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

/// The task acknowledging a connection's records as they are done. Dropped, it abandons the
/// connection's acknowledgements: the records still held, unpublished, then free their
/// [`Done`]s unacknowledged, and the loader counts them as `publisher_lost`.
pub(crate) struct Acknowledging {
    acks: Arc<Acks>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Acknowledging {
    pub(crate) fn start(sock: &Arc<OwnedFd>, acks: &Arc<Acks>) -> Self {
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
pub(crate) async fn settle(flushed: bool, sock: &OwnedFd, acks: &Acks) {
    let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
    while flushed && acks.lock().waiting() && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline, acks.changed.notified()).await;
    }
    // The loader reads acknowledgements as it goes; a full socket empties within moments.
    while !acks.send(sock) && tokio::time::Instant::now() < deadline + FLUSH_TIMEOUT {
        tokio::time::sleep(ACK_RETRY).await;
    }
}
