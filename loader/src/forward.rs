//! Forwarding raw records to the publisher over the SOCK_SEQPACKET connection.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::Path;

use ipc_protocol::records::RECORD_HEADER_LEN;
use ipc_protocol::{encode_drop_counts, encode_hello, BatchEncoder, DropCause, DropCount, EncodeError, Hello, Tracepoint};
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot connect to the publisher socket {path}: {source}; is ebpf-publisher running and listening there?")]
    Connect { path: String, source: std::io::Error },
    #[error("lost the connection to the publisher: {0}")]
    Send(#[source] std::io::Error),
}

pub struct Forwarder {
    sock: OwnedFd,
    batch: BatchEncoder,
    /// Drops the loader itself counted (records that fit no datagram).
    dropped: BTreeMap<(Tracepoint, DropCause), u64>,
}

impl Forwarder {
    pub fn connect(path: &Path) -> Result<Self, ForwardError> {
        let connect = || -> std::io::Result<OwnedFd> {
            let sock = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
            rustix::net::connect(&sock, &SocketAddrUnix::new(path)?)?;
            Ok(sock)
        };
        let sock = connect().map_err(|source| ForwardError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Forwarder {
            sock,
            batch: BatchEncoder::default(),
            dropped: BTreeMap::new(),
        })
    }

    fn send(&self, datagram: &[u8]) -> Result<(), ForwardError> {
        // Blocks while the publisher's receive queue is full; the BPF ring buffers absorb
        // (and count) what the kernel cannot hold meanwhile. NOSIGNAL: a closed peer is an
        // error here, not a SIGPIPE.
        rustix::net::send(&self.sock, datagram, SendFlags::NOSIGNAL).map_err(|e| ForwardError::Send(e.into()))?;
        Ok(())
    }

    pub fn hello(&self, hello: &Hello) -> Result<(), ForwardError> {
        self.send(&encode_hello(hello))
    }

    /// Queues one ring-buffer record (header + body), sending a datagram when it is full.
    pub fn record(&mut self, raw: &[u8]) -> Result<(), ForwardError> {
        let Some((tracepoint, ktime_ns, body)) = parse_header(raw) else {
            tracing::error!(len = raw.len(), "BPF record without a valid header: BPF object and loader disagree");
            return Ok(());
        };
        match self.batch.push(tracepoint, ktime_ns, body) {
            Ok(()) => Ok(()),
            Err(EncodeError::Full) => {
                self.flush()?;
                self.record(raw)
            }
            Err(EncodeError::TooLarge { size }) => {
                tracing::warn!(%tracepoint, size, "record larger than an IPC datagram, dropped");
                *self.dropped.entry((tracepoint, DropCause::IpcTooLarge)).or_default() += 1;
                Ok(())
            }
        }
    }

    pub fn flush(&mut self) -> Result<(), ForwardError> {
        if !self.batch.is_empty() {
            self.send(self.batch.datagram())?;
            self.batch.sent();
        }
        Ok(())
    }

    /// Sends the BPF counters merged with the loader's own.
    pub fn drop_counts(&self, bpf: &[DropCount]) -> Result<(), ForwardError> {
        let mut all = bpf.to_vec();
        all.extend(self.dropped.iter().map(|(&(tracepoint, cause), &total)| DropCount { tracepoint, cause, total }));
        self.send(&encode_drop_counts(&all))
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
