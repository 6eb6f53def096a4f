//! Events for people and for tools, as `event-tail` prints them: [`readable`] gives one line
//! the way a Bitcoin user reads it, [`json`] the canonical proto3 JSON mapping of the envelope.

use std::fmt::{self, Display, Write};

use serde::{Deserialize, Serialize, Serializer};

use crate::decode::Envelope;
use crate::inventory::Inventory;
use crate::p2p;
use crate::proto::bitcoin_primitives::{
    address::Address as Addr, inventory_item::Item, Address, ConnType, Transaction,
};
use crate::proto::ebpf_extractor::message::{filter_load::BloomFlags, message_event::Msg, reject::RejectReason};
use crate::proto::ebpf_extractor::{addrman, connection, ebpf::EbpfEvent, mempool, message, validation};
use crate::proto::event::event::PeerObserverEvent;
use crate::proto::event_msg::EventMsg;
use crate::proto::peer_observer_ebpf::utxocache;

/// One line: the firing time in UTC, the subject, the event's kind, then its fields. Hashes are
/// hex in the order RPC and block explorers show (the reverse of the bytes the events carry),
/// amounts in sat; free text is quoted and control characters are escaped, so that a peer's
/// string can neither break the line nor drive the terminal.
pub fn readable(subject: &str, envelope: &Envelope) -> String {
    let (timestamp, event) = match envelope {
        Envelope::PeerObserver(e) => (e.timestamp, peer_observer(e.peer_observer_event.as_ref())),
        Envelope::Legacy(e) => (e.timestamp_ms(), legacy(e)),
        Envelope::Utxocache(e) => (e.timestamp, utxocache_event(e.event.as_ref())),
    };
    format!("{}.{:03}Z {} {event}", utc(timestamp / 1000), timestamp % 1000, Clean(subject))
}

/// One JSON object: `{"subject": …, "event": …}`, `event` being the envelope (`event.Event`,
/// the legacy `event_msg.EventMsg`, or `peer_observer_ebpf.utxocache.Event` on the utxocache
/// subject) in the canonical proto3 JSON mapping with the .proto field names: bytes in base64,
/// 64-bit integers as strings, enums by name, every field that is set (all of them but empty
/// repeated ones). pbjson's generated serialisers write the event as they walk it, so that the
/// line takes about its own length beside the event (SECURITY.md). An envelope taken from
/// NATS may hold inventory items that do not decode (src/inventory.rs keeps them as they came)
/// or an enum value the schema does not name (which pbjson, unlike the mapping, does not write
/// as a number): those give the error.
pub fn json(subject: &str, envelope: &Envelope) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Line { subject, event: envelope })
}

/// The inverse of [`json`] for the current envelope: a line back to its subject and envelope,
/// read by the same canonical mapping, the subject choosing the envelope as on NATS
/// ([`Envelope::decode`]). For tools and tests that read `event-tail --json` or
/// `ebpf-publisher --stdout json`.
pub fn from_json(line: &str) -> Result<(String, Envelope), serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Read {
        subject: String,
        event: serde_json::Value,
    }
    let Read { subject, event } = serde_json::from_str(line)?;
    let envelope = if Envelope::is_utxocache(&subject) {
        Envelope::Utxocache(serde_json::from_value(event)?)
    } else {
        Envelope::PeerObserver(serde_json::from_value(event)?)
    };
    Ok((subject, envelope))
}

#[derive(Serialize)]
struct Line<'a> {
    subject: &'a str,
    event: &'a Envelope,
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Envelope::PeerObserver(event) => event.serialize(serializer),
            Envelope::Legacy(event) => event.serialize(serializer),
            Envelope::Utxocache(event) => event.serialize(serializer),
        }
    }
}

fn peer_observer(event: Option<&PeerObserverEvent>) -> String {
    let Some(PeerObserverEvent::EbpfExtractor(ebpf)) = event else { return "(no event)".into() };
    match &ebpf.ebpf_event {
        None => "(no event)".into(),
        Some(EbpfEvent::Message(m)) => p2p_message(m),
        Some(EbpfEvent::Connection(c)) => connection_event(c),
        Some(EbpfEvent::Mempool(m)) => mempool_event(m),
        Some(EbpfEvent::Validation(v)) => validation_event(v),
        Some(EbpfEvent::Addrman(a)) => addrman_event(a),
    }
}

/// The same events in the legacy envelope.
fn legacy(event: &EventMsg) -> String {
    use crate::proto::event_msg::event_msg::Event as E;
    match &event.event {
        None => "(no event)".into(),
        Some(E::Msg(m)) => p2p_message(m),
        Some(E::Conn(c)) => connection_event(c),
        Some(E::Mempool(m)) => mempool_event(m),
        Some(E::Validation(v)) => validation_event(v),
        Some(E::Addrman(a)) => addrman_event(a),
    }
}

fn connection_event(event: &connection::ConnectionEvent) -> String {
    use connection::connection_event::Event as C;
    let conn = |c: &connection::Connection| {
        format!(
            "peer={} addr={} conn_type={} network={}",
            c.peer_id,
            Clean(&c.addr),
            conn_type(c.conn_type),
            network(c.network)
        )
    };
    match &event.event {
        None => "(no event)".into(),
        Some(C::Inbound(e)) => format!("inbound {} existing_connections={}", conn(&e.conn), e.existing_connections),
        Some(C::Outbound(e)) => format!("outbound {} existing_connections={}", conn(&e.conn), e.existing_connections),
        Some(C::Closed(e)) => format!("closed {} time_established={}", conn(&e.conn), seconds(e.time_established)),
        Some(C::InboundEvicted(e)) => {
            format!("inbound_evicted {} time_established={}", conn(&e.conn), seconds(e.time_established))
        }
        Some(C::Misbehaving(e)) => format!("misbehaving peer={} message={:?}", e.id, e.message),
    }
}

fn mempool_event(event: &mempool::MempoolEvent) -> String {
    use mempool::mempool_event::Event as M;
    match &event.event {
        None => "(no event)".into(),
        Some(M::Added(e)) => format!("added txid={} vsize={} fee={} sat", Hash(&e.txid), e.vsize, e.fee),
        Some(M::Removed(e)) => format!(
            "removed txid={} reason={:?} vsize={} fee={} sat entry_time={}",
            Hash(&e.txid),
            e.reason,
            e.vsize,
            e.fee,
            seconds(e.entry_time)
        ),
        Some(M::Replaced(e)) => format!(
            "replaced txid={} vsize={} fee={} sat entry_time={} replacement_{}={} replacement_vsize={} replacement_fee={} sat",
            Hash(&e.replaced_txid),
            e.replaced_vsize,
            e.replaced_fee,
            seconds(e.replaced_entry_time),
            if e.replaced_by_transaction { "txid" } else { "package" },
            Hash(&e.replacement_id),
            e.replacement_vsize,
            e.replacement_fee
        ),
        Some(M::Rejected(e)) => format!("rejected txid={} reason={:?}", Hash(&e.txid), e.reason),
    }
}

fn validation_event(event: &validation::ValidationEvent) -> String {
    use validation::validation_event::Event as V;
    match &event.event {
        None => "(no event)".into(),
        Some(V::BlockConnected(b)) => format!(
            "block_connected hash={} height={} transactions={} inputs={} sigops={} connection_time={}.{:03} ms",
            Hash(&b.hash),
            b.height,
            b.transactions,
            b.inputs,
            b.sigops,
            b.connection_time / 1_000_000,
            b.connection_time / 1_000 % 1_000
        ),
    }
}

fn addrman_event(event: &addrman::AddrmanEvent) -> String {
    use addrman::addrman_event::Event as A;
    match &event.event {
        None => "(no event)".into(),
        Some(A::New(e)) => format!(
            "new inserted={} bucket={} bucket_pos={} addr={} addr_as={} source={} source_as={}",
            e.inserted,
            e.bucket,
            e.bucket_pos,
            Clean(&e.addr),
            e.addr_as,
            Clean(&e.source),
            e.source_as
        ),
        Some(A::Tried(e)) => format!(
            "tried bucket={} bucket_pos={} addr={} addr_as={} source={} source_as={}",
            e.bucket,
            e.bucket_pos,
            Clean(&e.addr),
            e.addr_as,
            Clean(&e.source),
            e.source_as
        ),
    }
}

fn utxocache_event(event: Option<&utxocache::event::Event>) -> String {
    use utxocache::event::Event as U;
    let coin = |kind: &str, c: &utxocache::Coin| {
        format!(
            "{kind} outpoint={}:{} height={} value={} sat coinbase={}",
            Hash(&c.txid),
            c.index,
            c.height,
            c.value,
            c.is_coinbase
        )
    };
    match event {
        None => "(no event)".into(),
        Some(U::Add(c)) => coin("add", c),
        Some(U::Spent(c)) => coin("spent", c),
        Some(U::Uncache(c)) => coin("uncache", c),
        Some(U::Flush(f)) => format!(
            "flush duration_us={} mode={} coins_count={} coins_mem_usage={} bytes for_prune={}",
            f.duration_us, f.mode, f.coins_count, f.coins_mem_usage, f.for_prune
        ),
    }
}

/// `<command> <in|out> peer= addr= conn_type= size=`, then what the payload says.
fn p2p_message(event: &message::MessageEvent) -> String {
    let meta = &event.meta;
    let mut line = format!(
        "{} {} peer={} addr={} conn_type={} size={}",
        Clean(&meta.command),
        if meta.inbound { "in" } else { "out" },
        meta.peer_id,
        Clean(&meta.addr),
        conn_type(meta.conn_type),
        meta.size
    );
    let summary = match &event.msg {
        None => "(no payload)".into(),
        Some(msg) => payload(msg),
    };
    if !summary.is_empty() {
        line.push(' ');
        line.push_str(&summary);
    }
    line
}

/// A payload in a few fields; empty for the messages that carry nothing (verack, …).
fn payload(msg: &Msg) -> String {
    match msg {
        Msg::Ping(p) => format!("nonce={}", p.value),
        Msg::Pong(p) => format!("nonce={}", p.value),
        Msg::Oldping(_) => "nonce=none".into(),
        Msg::Inv(m) | Msg::Getdata(m) | Msg::Notfound(m) => inventory(m),
        Msg::Tx(m) => transaction(&m.tx),
        Msg::Block(b) => format!("hash={} transactions={}", Hash(&b.header.hash), b.transactions.len()),
        Msg::Headers(h) => {
            format!("headers={}{}", h.headers.len(), first_hash(h.headers.first().map(|h| h.hash.as_slice())))
        }
        Msg::Addr(a) => addresses(&a.addresses),
        Msg::Addrv2(a) => addresses(&a.addresses),
        Msg::Emptyaddrv2(_) => "addresses=0".into(),
        Msg::Version(v) => format!(
            "version={} services={} user_agent={:?} start_height={} relay={}",
            v.version,
            services(v.services),
            v.user_agent,
            v.start_height,
            v.relay
        ),
        Msg::Feefilter(f) => format!("feerate={} sat/kvB", f.fee),
        Msg::Getheaders(g) => locator(g.version, &g.locator_hashes, &g.stop_hash),
        Msg::Getblocks(g) => locator(g.version, &g.locator_hashes, &g.stop_hash),
        Msg::Sendcompact(s) => format!("high_bandwidth={} version={}", s.send_compact, s.version),
        Msg::Compactblock(c) => {
            format!("hash={} short_ids={} prefilled={}", Hash(&c.header.hash), c.short_ids.len(), c.transactions.len())
        }
        Msg::Getblocktxn(g) => format!("block={} indexes={}", Hash(&g.block_hash), g.tx_indexes.len()),
        Msg::Blocktxn(b) => format!("block={} transactions={}", Hash(&b.block_hash), b.transactions.len()),
        Msg::Merkleblock(m) => format!(
            "hash={} transactions={} hashes={} flag_bits={}",
            Hash(&m.header.hash),
            m.num_transactions,
            m.hashes.len(),
            m.bits.len()
        ),
        Msg::Reject(r) => format!(
            "rejected_command={} reason={} details={:?} hash={}",
            Clean(&r.rejected_command),
            RejectReason::try_from(r.reason).map_or_else(|_| r.reason.to_string(), |r| r.as_str_name().into()),
            r.reason_details,
            Hash(&r.hash)
        ),
        Msg::Alert(a) => format!("bytes={}", a.alert.len()),
        Msg::Filteradd(f) => format!("bytes={}", f.filter.len()),
        Msg::Filterload(f) => format!(
            "bytes={} hash_funcs={} tweak={} flags={}",
            f.filter.len(),
            f.hash_funcs,
            f.tweak,
            BloomFlags::try_from(f.flags).map_or_else(|_| f.flags.to_string(), |b| b.as_str_name().into())
        ),
        Msg::Getcfilter(g) => {
            format!("filter_type={} start_height={} stop={}", g.filter_type, g.start_height, Hash(&g.stop_hash))
        }
        Msg::Getcfheaders(g) => {
            format!("filter_type={} start_height={} stop={}", g.filter_type, g.start_height, Hash(&g.stop_hash))
        }
        Msg::Getcfcheckpt(g) => format!("filter_type={} stop={}", g.filter_type, Hash(&g.stop_hash)),
        Msg::Cfilter(c) => {
            format!("filter_type={} block={} bytes={}", c.filter_type, Hash(&c.block_hash), c.filter.len())
        }
        Msg::Cfheaders(c) => format!(
            "filter_type={} stop={} previous_filter_header={} filter_hashes={}",
            c.filter_type,
            Hash(&c.stop_hash),
            Hash(&c.previous_filter_header),
            c.filter_hashes.len()
        ),
        Msg::Cfcheckpt(c) => {
            format!(
                "filter_type={} stop={} filter_headers={}",
                c.filter_type,
                Hash(&c.stop_hash),
                c.filter_headers.len()
            )
        }
        // Both a command without a decoder and a known one whose payload did not decode
        // (docs/wire-format.md, "Undecodable payloads").
        Msg::Unknown(u) => format!("unknown bytes={}", u.payload.len()),
        Msg::Verack(_)
        | Msg::Sendheaders(_)
        | Msg::Getaddr(_)
        | Msg::Mempool(_)
        | Msg::Wtxidrelay(_)
        | Msg::Sendaddrv2(_)
        | Msg::Filterclear(_) => String::new(),
    }
}

/// The item count, the count of each kind present (in the protobuf's order) and the first hash.
fn inventory(inventory: &Inventory) -> String {
    // A published inventory came out of src/inventory.rs; one taken from NATS may not have.
    let items = match inventory.items() {
        Ok(items) => items,
        Err(e) => return format!("undecodable inventory: {e}"),
    };
    const KINDS: [&str; 8] =
        ["transaction", "block", "wtx", "witness_transaction", "witness_block", "compact_block", "unknown", "error"];
    let mut counts = [0usize; KINDS.len()];
    let mut first = None;
    for item in &items {
        let (kind, hash) = match &item.item {
            Some(Item::Transaction(h)) => (0, Some(h)),
            Some(Item::Block(h)) => (1, Some(h)),
            Some(Item::Wtx(h)) => (2, Some(h)),
            Some(Item::WitnessTransaction(h)) => (3, Some(h)),
            Some(Item::WitnessBlock(h)) => (4, Some(h)),
            Some(Item::CompactBlock(h)) => (5, Some(h)),
            Some(Item::Unknown(u)) => (6, Some(&u.hash)),
            Some(Item::Error(_)) | None => (7, None),
        };
        counts[kind] += 1;
        if first.is_none() {
            first = hash.map(|h| (KINDS[kind], h));
        }
    }
    let mut out = format!("items={}", items.len());
    for (kind, count) in KINDS.iter().zip(counts).filter(|(_, count)| *count > 0) {
        let _ = write!(out, " {kind}={count}");
    }
    if let Some((kind, hash)) = first {
        let _ = write!(out, " first={kind}:{}", Hash(hash));
    }
    out
}

fn transaction(tx: &Transaction) -> String {
    let mut out = format!("txid={} wtxid={}", Hash(&tx.txid), Hash(&tx.wtxid));
    if let Some((inputs, outputs)) = tx.raw.as_deref().and_then(p2p::tx_counts) {
        let _ = write!(out, " inputs={inputs} outputs={outputs}");
    }
    out
}

fn first_hash(hash: Option<&[u8]>) -> String {
    hash.map(|h| format!(" first={}", Hash(h))).unwrap_or_default()
}

fn locator(version: u32, hashes: &[Vec<u8>], stop: &[u8]) -> String {
    format!(
        "version={version} locator_hashes={}{} stop={}",
        hashes.len(),
        first_hash(hashes.first().map(Vec::as_slice)),
        Hash(stop)
    )
}

fn addresses(list: &[Address]) -> String {
    let mut out = format!("addresses={}", list.len());
    if let Some(first) = list.first() {
        let _ = write!(out, " first={}", address(first));
    }
    out
}

/// `host:port` as Bitcoin Core writes it, IPv6 and CJDNS in brackets.
fn address(a: &Address) -> String {
    match &a.address {
        Some(Addr::Ipv4(host) | Addr::Torv2(host) | Addr::Torv3(host) | Addr::I2p(host)) => {
            format!("{}:{}", Clean(host), a.port)
        }
        Some(Addr::Ipv6(host) | Addr::Cjdns(host)) => format!("[{}]:{}", Clean(host), a.port),
        Some(Addr::Unknown(u)) => format!("unknown-network-{}:{}", u.id, a.port),
        None => format!("?:{}", a.port),
    }
}

/// Bitcoin Core's own spelling (getpeerinfo's `connection_type`); `unknown` covers the types
/// the protobuf has no member for (manual, addr-fetch, …).
fn conn_type(value: i32) -> String {
    match ConnType::try_from(value) {
        Ok(ConnType::Inbound) => "inbound".into(),
        Ok(ConnType::OutboundFullRelay) => "outbound-full-relay".into(),
        Ok(ConnType::BlockRelayOnly) => "block-relay-only".into(),
        Ok(ConnType::Feeler) => "feeler".into(),
        Ok(ConnType::Unknown) => "unknown".into(),
        Err(_) => value.to_string(),
    }
}

/// Bitcoin Core's `GetNetworkName` of its `enum Network` value.
fn network(value: u32) -> String {
    const NAMES: [&str; 7] = ["not_publicly_routable", "ipv4", "ipv6", "onion", "i2p", "cjdns", "internal"];
    NAMES.get(value as usize).map_or_else(|| value.to_string(), |name| (*name).into())
}

/// Service bits by Bitcoin Core's names (getpeerinfo's `servicesnames`), `NONE` for none.
fn services(bits: u64) -> String {
    const NAMES: [(u32, &str); 6] =
        [(0, "NETWORK"), (2, "BLOOM"), (3, "WITNESS"), (6, "COMPACT_FILTERS"), (10, "NETWORK_LIMITED"), (11, "P2P_V2")];
    if bits == 0 {
        return "NONE".into();
    }
    let names: Vec<String> = (0..64)
        .filter(|bit| bits & (1 << bit) != 0)
        .map(|bit| {
            NAMES.iter().find(|(b, _)| *b == bit).map_or_else(|| format!("UNKNOWN[2^{bit}]"), |(_, n)| (*n).into())
        })
        .collect();
    names.join("|")
}

/// UNIX seconds as UTC.
fn seconds(secs: u64) -> String {
    format!("{}Z", utc(secs))
}

/// `YYYY-MM-DDTHH:MM:SS` of UNIX seconds, in UTC (proleptic Gregorian calendar; Howard
/// Hinnant's `civil_from_days`, unsigned since no time here precedes 1970).
fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", rest / 3_600, rest / 60 % 60, rest % 60)
}

/// A hash in display order: the byte-reverse of Bitcoin Core's internal order, which the events
/// carry (docs/wire-format.md, "Hashes").
struct Hash<'a>(&'a [u8]);

impl Display for Hash<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().rev().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A string as written, escaped as Rust's `{:?}` escapes text (control characters as `\n`,
/// `\u{1b}`; invisible ones such as a bidirectional override as `\u{202e}`; quotes and
/// backslashes) and its spaces as `\u{20}`. Addresses and commands are unquoted, but come from
/// the traced node and its peers: a space would let a peer's command forge the fields after it
/// (a command may hold any printable ASCII, `x out peer=1`).
struct Clean<'a>(&'a str);

impl Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.chars().try_for_each(|c| match c {
            ' ' => f.write_str("\\u{20}"),
            c => write!(f, "{}", c.escape_debug()),
        })
    }
}

#[cfg(test)]
mod tests;
