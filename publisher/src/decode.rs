//! Record bodies → peer-observer events. Every record is validated against its tracepoint's
//! layout before a field is used: exact size, NUL-terminated strings, value ranges.

use bytemuck::Pod;
use ipc_protocol::records::*;
use ipc_protocol::{Record, Tracepoint};

use crate::p2p;
use crate::proto::bitcoin_primitives::ConnType;
use crate::proto::ebpf_extractor::ebpf::EbpfEvent;
use crate::proto::ebpf_extractor::{self as ebpf, addrman, connection, mempool, message, validation};
use crate::proto::event::{event::PeerObserverEvent, Event};
use crate::proto::event_msg::{event_msg, EventMsg};
use crate::proto::peer_observer_ebpf::utxocache;

/// Why a record was refused. The event is counted as invalid and not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {got} bytes, its layout needs {expected}")]
    WrongSize { expected: usize, got: usize },
    #[error("string field {0} has no terminating NUL")]
    MissingNul(&'static str),
    #[error("field {field} out of range: {value}")]
    OutOfRange { field: &'static str, value: u64 },
}

impl RecordError {
    /// Every [`RecordError::label`].
    pub const LABELS: [&'static str; 3] = ["wrong_size", "missing_nul", "out_of_range"];

    /// Short label for counters.
    pub fn label(&self) -> &'static str {
        match self {
            RecordError::WrongSize { .. } => "wrong_size",
            RecordError::MissingNul(_) => "missing_nul",
            RecordError::OutOfRange { .. } => "out_of_range",
        }
    }
}

/// Something worth counting about an event that was still published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// A string was longer than its cap and was cut, ending in `...` (docs/wire-format.md, "Whole strings").
    Truncated(&'static str),
    /// A string was not UTF-8; invalid sequences became U+FFFD, as upstream does.
    InvalidUtf8(&'static str),
    /// A known P2P message whose payload did not decode; published as `unknown`
    /// (docs/wire-format.md, "Undecodable payloads").
    Undecodable(String),
    /// A known P2P message whose decoded form would pass its budget (`p2p::BUDGET_PER_BYTE`,
    /// `p2p::MAX_ENCODED_LEN`); published as `unknown`.
    OverBudget(String),
    /// A P2P message whose decoded event would pass the NATS server's `max_payload` (less the
    /// `Nats-Msg-Id` header in JetStream mode) where its payload as `unknown` fits; published so.
    OverMaxPayload(String),
}

impl Anomaly {
    /// Its counter's label.
    pub fn label(&self) -> String {
        match self {
            Anomaly::Truncated(field) => format!("truncated_{field}"),
            Anomaly::InvalidUtf8(field) => format!("invalid_utf8_{field}"),
            Anomaly::Undecodable(command) => format!("undecodable_{command}"),
            Anomaly::OverBudget(command) => format!("over_decode_budget_{command}"),
            Anomaly::OverMaxPayload(command) => format!("{UNDECODED_OVER_MAX_PAYLOAD}{command}"),
        }
    }
}

/// The label of [`Anomaly::OverMaxPayload`] before its command.
pub const UNDECODED_OVER_MAX_PAYLOAD: &str = "undecoded_over_max_payload_";

#[derive(Debug)]
pub struct Decoded {
    /// Its NATS subject (docs/wire-format.md, "Subjects").
    pub subject: &'static str,
    pub payload: Payload,
    pub anomalies: Vec<Anomaly>,
}

/// An event without its envelope.
#[derive(Debug)]
pub enum Payload {
    /// One of peer-observer's eBPF events.
    PeerObserver(ebpf::Ebpf),
    /// One of this project's own utxocache events.
    Utxocache(utxocache::event::Event),
}

/// An event in its envelope, as published.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    /// peer-observer's `event.Event`.
    PeerObserver(Event),
    /// peer-observer's `event_msg.EventMsg`, from before 2025-12-15 (`--nats-legacy-envelope`).
    Legacy(EventMsg),
    /// This project's `peer_observer_ebpf.utxocache.Event`.
    Utxocache(utxocache::Event),
}

/// Which of peer-observer's envelopes its events go out in (docs/wire-format.md, "Envelope");
/// this project's own utxocache events have one of their own either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeVersion {
    /// `event.Event`.
    Current,
    /// `event_msg.EventMsg`, for peer-observer's tools from before 2025-12-15.
    Legacy,
}

impl EnvelopeVersion {
    /// The version `--nats-legacy-envelope` chooses.
    pub fn of(legacy_envelope: bool) -> Self {
        if legacy_envelope {
            EnvelopeVersion::Legacy
        } else {
            EnvelopeVersion::Current
        }
    }
}

impl Decoded {
    /// Wraps the event in its envelope of `version`, for the wall-clock instant `timestamp_us`
    /// (microseconds since the Unix epoch).
    pub fn into_envelope(self, timestamp_us: u64, version: EnvelopeVersion) -> Envelope {
        let timestamp_ms = timestamp_us / 1_000;
        match (self.payload, version) {
            (Payload::PeerObserver(event), EnvelopeVersion::Legacy) => Envelope::Legacy(EventMsg {
                event: event.ebpf_event.map(Into::into),
                timestamp: timestamp_us / 1_000_000,
                timestamp_subsec_micros: (timestamp_us % 1_000_000) as u32,
            }),
            (Payload::PeerObserver(event), EnvelopeVersion::Current) => Envelope::PeerObserver(Event {
                peer_observer_event: Some(PeerObserverEvent::EbpfExtractor(event)),
                timestamp: timestamp_ms,
            }),
            (Payload::Utxocache(event), _) => {
                Envelope::Utxocache(utxocache::Event { event: Some(event), timestamp: timestamp_ms })
            }
        }
    }
}

/// The legacy envelope's member for an event: the same message, its field numbered alike
/// (docs/wire-format.md, "Legacy envelope").
impl From<EbpfEvent> for event_msg::Event {
    fn from(event: EbpfEvent) -> Self {
        match event {
            EbpfEvent::Message(e) => event_msg::Event::Msg(e),
            EbpfEvent::Connection(e) => event_msg::Event::Conn(e),
            EbpfEvent::Addrman(e) => event_msg::Event::Addrman(e),
            EbpfEvent::Mempool(e) => event_msg::Event::Mempool(e),
            EbpfEvent::Validation(e) => event_msg::Event::Validation(e),
        }
    }
}

/// The current envelope's member for an event of the legacy one.
impl From<event_msg::Event> for EbpfEvent {
    fn from(event: event_msg::Event) -> Self {
        match event {
            event_msg::Event::Msg(e) => EbpfEvent::Message(e),
            event_msg::Event::Conn(e) => EbpfEvent::Connection(e),
            event_msg::Event::Addrman(e) => EbpfEvent::Addrman(e),
            event_msg::Event::Mempool(e) => EbpfEvent::Mempool(e),
            event_msg::Event::Validation(e) => EbpfEvent::Validation(e),
        }
    }
}

impl EventMsg {
    /// The firing time in milliseconds, as the current envelope carries it; saturating, since
    /// an event from another publisher may carry any seconds.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp.saturating_mul(1_000).saturating_add(u64::from(self.timestamp_subsec_micros / 1_000))
    }
}

impl Envelope {
    pub fn encoded_len(&self) -> usize {
        match self {
            Envelope::PeerObserver(e) => prost::Message::encoded_len(e),
            Envelope::Legacy(e) => prost::Message::encoded_len(e),
            Envelope::Utxocache(e) => prost::Message::encoded_len(e),
        }
    }

    /// Appends the encoding to `buf`.
    pub fn encode_to(&self, buf: &mut Vec<u8>) {
        match self {
            Envelope::PeerObserver(e) => prost::Message::encode_raw(e, buf),
            Envelope::Legacy(e) => prost::Message::encode_raw(e, buf),
            Envelope::Utxocache(e) => prost::Message::encode_raw(e, buf),
        }
    }

    /// The encoding, `size` bytes (its [`Self::encoded_len`], which `encode_to_vec` would
    /// compute a second time). The event is gone once encoded: a decoded block is as large as
    /// its encoding, and is not held while NATS takes that.
    pub fn into_encoding(self, size: usize) -> Vec<u8> {
        let mut encoding = Vec::with_capacity(size);
        self.encode_to(&mut encoding);
        encoding
    }

    /// Whether `subject` carries this project's own envelope (docs/wire-format.md, "Subjects").
    pub fn is_utxocache(subject: &str) -> bool {
        // Behind a `--nats-subject-prefix` too: the subject's last tokens say what it carries.
        let own = ipc_protocol::Category::Utxocache.subject();
        subject.strip_suffix(own).is_some_and(|prefix| prefix.is_empty() || prefix.ends_with('.'))
    }

    /// Decodes a payload taken from NATS: the utxocache subject carries this project's own
    /// envelope, every other subject peer-observer's of `version` (docs/wire-format.md,
    /// "Subjects"; the bytes do not say which).
    pub fn decode(subject: &str, payload: &[u8], version: EnvelopeVersion) -> Result<Envelope, prost::DecodeError> {
        match version {
            _ if Envelope::is_utxocache(subject) => prost::Message::decode(payload).map(Envelope::Utxocache),
            EnvelopeVersion::Current => prost::Message::decode(payload).map(Envelope::PeerObserver),
            EnvelopeVersion::Legacy => prost::Message::decode(payload).map(Envelope::Legacy),
        }
    }
}

/// [`decode_to_at_most`] for a server that takes events of any size.
pub fn decode(record: &Record<'_>) -> Result<Decoded, RecordError> {
    decode_to_at_most(record, usize::MAX)
}

/// Decodes a record for a sink that takes events of at most `max_event_len` bytes (the NATS
/// server's `max_payload`, less the `Nats-Msg-Id` header in JetStream mode): a P2P message
/// whose decoded event would pass it is published as `unknown`, its payload whole
/// ([`Anomaly::OverMaxPayload`]), rather than not at all.
pub fn decode_to_at_most(record: &Record<'_>, max_event_len: usize) -> Result<Decoded, RecordError> {
    let mut cx = Context { anomalies: Vec::new(), max_event_len };
    let payload = cx.payload(record.tracepoint, record.data)?;
    Ok(Decoded { subject: record.tracepoint.subject(), payload, anomalies: cx.anomalies })
}

/// Maps Bitcoin Core's connection type string (docs/wire-format.md, "Connection type").
pub fn conn_type(s: &[u8]) -> ConnType {
    match s {
        b"inbound" => ConnType::Inbound,
        b"outbound-full-relay" => ConnType::OutboundFullRelay,
        b"block-relay-only" => ConnType::BlockRelayOnly,
        b"feeler" => ConnType::Feeler,
        _ => ConnType::Unknown,
    }
}

fn fixed<T: Pod>(data: &[u8]) -> Result<T, RecordError> {
    let expected = std::mem::size_of::<T>();
    if data.len() != expected {
        return Err(RecordError::WrongSize { expected, got: data.len() });
    }
    Ok(bytemuck::pod_read_unaligned(data))
}

fn until_nul<'a>(buf: &'a [u8], field: &'static str) -> Result<&'a [u8], RecordError> {
    let len = buf.iter().position(|b| *b == 0).ok_or(RecordError::MissingNul(field))?;
    Ok(&buf[..len])
}

fn boolean(value: u8, field: &'static str) -> Result<bool, RecordError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(RecordError::OutOfRange { field, value: v.into() }),
    }
}

/// Bitcoin Core's `enum Network` without the `NET_MAX` sentinel.
fn network(value: u32) -> Result<u32, RecordError> {
    if value <= 6 {
        Ok(value)
    } else {
        Err(RecordError::OutOfRange { field: "network", value: value.into() })
    }
}

/// Cuts `bytes` to at most `cap` bytes without splitting a UTF-8 sequence at the end.
fn cut_to_char_boundary(bytes: &[u8], cap: usize) -> &[u8] {
    let cut = &bytes[..cap];
    // Look back at most 3 bytes for the start of a sequence that the cut left incomplete.
    for back in 1..=cut.len().min(3) {
        let b = cut[cut.len() - back];
        if b & 0xc0 == 0x80 {
            continue; // continuation byte
        }
        let needed = match b {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if needed > back { &cut[..cut.len() - back] } else { cut };
    }
    cut
}

struct Context {
    anomalies: Vec<Anomaly>,
    /// The largest event the sink takes (`decode_to_at_most`).
    max_event_len: usize,
}

impl Context {
    /// A published string: whole up to `cap` bytes, else explicitly truncated.
    fn text(&mut self, buf: &[u8], cap: usize, field: &'static str) -> Result<String, RecordError> {
        let bytes = until_nul(buf, field)?;
        let (bytes, truncated) = if bytes.len() > cap {
            self.anomalies.push(Anomaly::Truncated(field));
            (cut_to_char_boundary(bytes, cap), true)
        } else {
            (bytes, false)
        };
        // The strict check is the cheaper one; the lossy conversion runs only where it fails.
        let mut text = match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                self.anomalies.push(Anomaly::InvalidUtf8(field));
                String::from_utf8_lossy(bytes).into_owned()
            }
        };
        if truncated {
            text.push_str("...");
        }
        Ok(text)
    }

    fn conn(
        &mut self,
        peer_id: i64,
        addr: &[u8],
        conn_type_buf: &[u8],
        network_value: u32,
    ) -> Result<connection::Connection, RecordError> {
        Ok(connection::Connection {
            peer_id: peer_id as u64,
            addr: self.text(addr, ADDR_CAP, "addr")?,
            conn_type: conn_type(until_nul(conn_type_buf, "conn_type")?) as i32,
            network: network(network_value)?,
        })
    }

    fn payload(&mut self, tp: Tracepoint, data: &[u8]) -> Result<Payload, RecordError> {
        use utxocache::event::Event as U;
        use Tracepoint as T;
        let event = match tp {
            T::NetInboundMessage | T::NetOutboundMessage => EbpfEvent::Message(self.message(tp, data)?),
            T::NetInboundConnection
            | T::NetOutboundConnection
            | T::NetClosedConnection
            | T::NetEvictedInboundConnection => {
                let r: ConnectionRecord = fixed(data)?;
                let conn = self.conn(r.peer_id, &r.addr, &r.conn_type, r.network)?;
                use connection::connection_event::Event as C;
                let event = match tp {
                    T::NetInboundConnection => {
                        C::Inbound(connection::InboundConnection { conn, existing_connections: r.value })
                    }
                    T::NetOutboundConnection => {
                        C::Outbound(connection::OutboundConnection { conn, existing_connections: r.value })
                    }
                    T::NetClosedConnection => {
                        C::Closed(connection::ClosedConnection { conn, time_established: r.value })
                    }
                    _ => C::InboundEvicted(connection::EvictedInboundConnection { conn, time_established: r.value }),
                };
                EbpfEvent::Connection(connection::ConnectionEvent { event: Some(event) })
            }
            T::NetMisbehavingConnection => {
                let r: MisbehavingRecord = fixed(data)?;
                let event = connection::connection_event::Event::Misbehaving(connection::MisbehavingConnection {
                    id: r.peer_id as u64,
                    message: self.text(&r.message, REASON_CAP, "message")?,
                });
                EbpfEvent::Connection(connection::ConnectionEvent { event: Some(event) })
            }
            T::MempoolAdded => {
                let r: MempoolAddedRecord = fixed(data)?;
                mempool_event(mempool::mempool_event::Event::Added(mempool::Added {
                    txid: r.txid.to_vec(),
                    vsize: r.vsize,
                    fee: r.fee,
                }))
            }
            T::MempoolRemoved => {
                let r: MempoolRemovedRecord = fixed(data)?;
                mempool_event(mempool::mempool_event::Event::Removed(mempool::Removed {
                    txid: r.txid.to_vec(),
                    reason: self.text(&r.reason, REASON_CAP, "reason")?,
                    vsize: r.vsize,
                    fee: r.fee,
                    entry_time: r.entry_time,
                }))
            }
            T::MempoolReplaced => {
                let r: MempoolReplacedRecord = fixed(data)?;
                mempool_event(mempool::mempool_event::Event::Replaced(mempool::Replaced {
                    replaced_txid: r.replaced_txid.to_vec(),
                    replaced_vsize: r.replaced_vsize,
                    replaced_fee: r.replaced_fee,
                    replaced_entry_time: r.replaced_entry_time,
                    replacement_id: r.replacement_id.to_vec(),
                    replacement_vsize: r.replacement_vsize,
                    replacement_fee: r.replacement_fee,
                    replaced_by_transaction: boolean(r.replaced_by_tx, "replaced_by_tx")?,
                }))
            }
            T::MempoolRejected => {
                let r: MempoolRejectedRecord = fixed(data)?;
                mempool_event(mempool::mempool_event::Event::Rejected(mempool::Rejected {
                    txid: r.txid.to_vec(),
                    reason: self.text(&r.reason, REASON_CAP, "reason")?,
                }))
            }
            T::ValidationBlockConnected => {
                let r: BlockConnectedRecord = fixed(data)?;
                let event = validation::validation_event::Event::BlockConnected(validation::BlockConnected {
                    hash: r.hash.to_vec(),
                    height: r.height,
                    transactions: r.transactions as i64,
                    inputs: r.inputs,
                    sigops: r.sigops,
                    connection_time: r.connection_time_ns as u64,
                });
                EbpfEvent::Validation(validation::ValidationEvent { event: Some(event) })
            }
            T::AddrmanAttemptAdd => {
                let r: AddrmanNewRecord = fixed(data)?;
                let event = addrman::addrman_event::Event::New(addrman::InsertNew {
                    inserted: boolean(r.inserted, "inserted")?,
                    bucket: r.bucket,
                    bucket_pos: r.bucket_pos,
                    addr: self.text(&r.addr, ADDR_CAP, "addr")?,
                    addr_as: r.addr_as,
                    source: self.text(&r.source, ADDR_CAP, "source")?,
                    source_as: r.source_as,
                });
                EbpfEvent::Addrman(addrman::AddrmanEvent { event: Some(event) })
            }
            T::AddrmanMoveToGood => {
                let r: AddrmanTriedRecord = fixed(data)?;
                let event = addrman::addrman_event::Event::Tried(addrman::InsertTried {
                    bucket: r.bucket,
                    bucket_pos: r.bucket_pos,
                    addr: self.text(&r.addr, ADDR_CAP, "addr")?,
                    addr_as: r.addr_as,
                    source: self.text(&r.source, ADDR_CAP, "source")?,
                    source_as: r.source_as,
                });
                EbpfEvent::Addrman(addrman::AddrmanEvent { event: Some(event) })
            }
            T::UtxocacheAdd | T::UtxocacheSpent | T::UtxocacheUncache => {
                let r: UtxocacheCoinRecord = fixed(data)?;
                let coin = utxocache::Coin {
                    txid: r.txid.to_vec(),
                    index: r.index,
                    height: r.height,
                    value: r.value,
                    is_coinbase: boolean(r.is_coinbase, "is_coinbase")?,
                };
                return Ok(Payload::Utxocache(match tp {
                    T::UtxocacheAdd => U::Add(coin),
                    T::UtxocacheSpent => U::Spent(coin),
                    _ => U::Uncache(coin),
                }));
            }
            T::UtxocacheFlush => {
                let r: UtxocacheFlushRecord = fixed(data)?;
                return Ok(Payload::Utxocache(U::Flush(utxocache::Flush {
                    duration_us: r.duration_us,
                    mode: r.mode,
                    coins_count: r.coins_count,
                    coins_mem_usage: r.coins_mem_usage,
                    for_prune: boolean(r.for_prune, "for_prune")?,
                })));
            }
        };
        Ok(Payload::PeerObserver(ebpf::Ebpf { ebpf_event: Some(event) }))
    }

    fn message(&mut self, tp: Tracepoint, data: &[u8]) -> Result<message::MessageEvent, RecordError> {
        let header_len = std::mem::size_of::<MessageRecord>();
        if data.len() < header_len {
            return Err(RecordError::WrongSize { expected: header_len, got: data.len() });
        }
        let (header, rest) = data.split_at(header_len);
        let r: MessageRecord = bytemuck::pod_read_unaligned(header);
        let addr_room = r.addr_room as usize;
        if addr_room > ADDR_BUF {
            return Err(RecordError::OutOfRange { field: "addr_room", value: r.addr_room.into() });
        }
        if rest.len() < addr_room || (rest.len() - addr_room) as u64 != r.msg_size {
            let payload = usize::try_from(r.msg_size).unwrap_or(usize::MAX);
            return Err(RecordError::WrongSize {
                expected: (header_len + addr_room).saturating_add(payload),
                got: data.len(),
            });
        }
        let (addr, payload) = rest.split_at(addr_room);
        let command = self.text(&r.msg_type, MSG_TYPE_CAP, "msg_type")?;
        let meta = message::Metadata {
            peer_id: r.peer_id as u64,
            addr: self.text(addr, ADDR_CAP, "addr")?,
            conn_type: conn_type(until_nul(&r.conn_type, "conn_type")?) as i32,
            command,
            inbound: tp == Tracepoint::NetInboundMessage,
            size: r.msg_size,
        };
        let max_encoded_len = self.max_event_len.saturating_sub(message_event_room(&meta, self.max_event_len));
        let command = &meta.command;
        let msg = match p2p::decode_to_at_most(command, payload, max_encoded_len) {
            Ok(msg) => msg,
            Err(p2p::PayloadError::OverEncodedLen(len)) if len <= p2p::MAX_ENCODED_LEN => {
                let unknown = p2p::unknown(command, payload);
                // Where even that is too large, the sink counts it as over_max_payload. (The
                // room is reckoned a few bytes large: one that just fits goes out uncounted.)
                if unknown.encoded_len() <= max_encoded_len {
                    tracing::trace!(%command, "decoded event of {len} bytes would pass max_payload: sent undecoded");
                    self.anomalies.push(Anomaly::OverMaxPayload(command.clone()));
                }
                unknown
            }
            Err(e) => {
                tracing::trace!(%command, "undecodable payload: {e}");
                self.anomalies.push(match e {
                    p2p::PayloadError::OverBudget | p2p::PayloadError::OverEncodedLen(_) => {
                        Anomaly::OverBudget(command.clone())
                    }
                    _ => Anomaly::Undecodable(command.clone()),
                });
                p2p::unknown(command, payload)
            }
        };
        Ok(message::MessageEvent { meta, msg: Some(msg) })
    }
}

/// What a message event of at most `max_event_len` bytes takes besides its payload's member
/// (whose own key and length `Msg::encoded_len` counts): the metadata, the keys and lengths of
/// the envelope's members down to it, each at most as long as `max_event_len`'s, and the
/// timestamp's key and varint (at most 10 bytes). A few bytes more than the event takes. The
/// legacy envelope has one member fewer to the event, and its seconds and microseconds take
/// 10 bytes with their keys until the year 3058: the same room holds it.
fn message_event_room(meta: &message::Metadata, max_event_len: usize) -> usize {
    let key_and_len = 1 + prost::encoding::encoded_len_varint(max_event_len as u64);
    prost::Message::encoded_len(meta) + 3 * key_and_len + 1 + 10
}

fn mempool_event(event: mempool::mempool_event::Event) -> EbpfEvent {
    EbpfEvent::Mempool(mempool::MempoolEvent { event: Some(event) })
}

#[cfg(test)]
mod tests;
