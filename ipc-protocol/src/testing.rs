//! For tests (feature `testing`): the loader's loop ([`crate::pump`], as
//! `loader/src/forward.rs` runs it) over rings held in memory and a peer that can be full, go
//! away, or lose datagrams; and the publisher's side, decoding what arrived per connection.
//! The protocol's own tests and the end-to-end tests that play the loader both drive it.

use std::collections::VecDeque;

use crate::pump::{pump, Link, Pumped};
use crate::records::RingRecord;
use crate::{
    decode_ack, decode_datagram, decode_hello, Acknowledger, Datagram, Hello, Loss, OwnedRecord, Reassembler, Record,
    Sender,
};

pub fn hello() -> Hello {
    Hello { run_id: 7, loader_version: "test".into(), pid: 1, binary: "/usr/bin/bitcoind".into(), tracepoints: vec![] }
}

/// Deterministic bytes of a body of `len` bytes.
pub fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Rings of raw records, as the BPF programs leave them.
pub struct Rings(pub Vec<VecDeque<Vec<u8>>>);

impl Rings {
    /// `records` spread over `n` rings, round robin.
    pub fn spread(n: usize, records: &[Record<'_>]) -> Self {
        let mut rings = vec![VecDeque::new(); n];
        for (i, r) in records.iter().enumerate() {
            rings[i % n].push_back(RingRecord::build(r.tracepoint, r.ktime_ns, r.data));
        }
        Rings(rings)
    }
}

impl crate::pump::Rings for Rings {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn peek(&mut self, ring: usize) -> Option<&[u8]> {
        self.0[ring].front().map(Vec::as_slice)
    }

    fn release(&mut self, ring: usize) {
        self.0[ring].pop_front();
    }
}

/// What the peer does with the `n`th send attempt (from 0).
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// Every this many attempts, the socket is full (the attempt is refused, nothing sent).
    pub full_every: Option<usize>,
    /// The connection breaks at these attempts (nothing sent); the next one is a new peer.
    pub break_at: &'static [usize],
    /// These attempts are sent but never arrive.
    pub lose_at: &'static [usize],
    /// The peer acknowledges nothing (a publisher that is about to die with what it read).
    pub silent: bool,
}

/// The datagrams that arrived, per connection. Unless silent, the peer acknowledges each
/// record as soon as it arrives whole, as a publisher that published it at once would.
pub struct Peer {
    faults: Faults,
    attempts: usize,
    pub connections: Vec<Vec<Vec<u8>>>,
    /// The current connection's reassembly and acknowledgements, from its hello on.
    acks: Option<(Reassembler, Acknowledger)>,
    /// Acknowledgements sent back and not yet read by the loader, oldest first.
    unread: Vec<u64>,
}

/// The connection broke (one of [`Faults::break_at`]).
#[derive(Debug)]
pub struct Broken;

impl Link for Peer {
    type Error = Broken;

    fn send(&mut self, head: &[u8], piece: &[u8]) -> Result<bool, Broken> {
        let n = self.attempts;
        self.attempts += 1;
        if self.faults.full_every.is_some_and(|every| n % every == every - 1) {
            return Ok(false);
        }
        if self.faults.break_at.contains(&n) {
            return Err(Broken);
        }
        if !self.faults.lose_at.contains(&n) {
            let ack = self.deliver([head, piece].concat());
            self.unread.extend(ack);
        }
        Ok(true)
    }
}

impl Peer {
    pub fn new(faults: Faults) -> Self {
        Peer { faults, attempts: 0, connections: Vec::new(), acks: None, unread: Vec::new() }
    }

    /// The loader reads the acknowledgements sent back so far.
    fn acknowledge(&mut self, sender: &mut Sender) {
        for done in self.unread.drain(..) {
            sender.acknowledged(done).expect("the peer acknowledges only what arrived");
        }
    }

    /// Takes a datagram on the current connection; returns the acknowledgement it sends back.
    fn deliver(&mut self, datagram: Vec<u8>) -> Option<u64> {
        let connection = self.connections.last_mut().expect("connected first");
        let first = connection.is_empty();
        connection.push(datagram);
        let datagram = connection.last().expect("just pushed");
        // A connection whose hello went out before this peer saw it (a sender connected in an
        // earlier call of `datagrams`) is not acknowledged.
        if first {
            if let Ok(greeting) = decode_hello(datagram) {
                self.acks = Some((Reassembler::new(greeting.first_seq), Acknowledger::new()));
                return None;
            }
        }
        let (rx, acks) = self.acks.as_mut()?;
        let mut arrived = |index| {
            acks.received(index);
            acks.done(index);
        };
        match decode_datagram(datagram).expect("the sender's datagrams decode") {
            Datagram::Records(batch) => {
                rx.records(batch.seq);
                (batch.first_record..).take(batch.records().count()).for_each(&mut arrived);
            }
            Datagram::Fragment(fragment) => {
                if let (_, Some(record)) = rx.fragment(&fragment) {
                    arrived(record.index);
                }
            }
            Datagram::DropCounts(_) => {}
        }
        let ack = acks.due().filter(|_| !self.faults.silent)?;
        acks.sent(ack);
        decode_ack(&ack)
    }
}

/// Runs the loader's loop until the rings are empty and everything due went out, reading the
/// peer's acknowledgements between turns, as the loader does.
pub fn run(sender: &mut Sender, rings: &mut Rings, peer: &mut Peer) {
    for _ in 0..10_000_000 {
        if !sender.is_connected() {
            peer.connections.push(Vec::new());
            sender.connected();
        } else if peer.connections.is_empty() {
            peer.connections.push(Vec::new());
        }
        let pumped = pump(sender, rings, peer, &mut |_| {});
        let acknowledged = !peer.unread.is_empty();
        peer.acknowledge(sender);
        match pumped {
            Pumped::Full => {}
            Pumped::Failed(Broken) => {
                sender.disconnected();
            }
            // Nothing more goes out until the publisher acknowledges some.
            Pumped::AwaitingAcks if acknowledged => {}
            Pumped::Drained | Pumped::AwaitingAcks => return,
        }
    }
    panic!("the loop does not end");
}

/// What the publisher got from each connection, in order.
#[derive(Debug, Default)]
pub struct Received {
    pub records: Vec<OwnedRecord>,
    pub losses: Vec<Loss>,
    pub drop_counts: Vec<Vec<crate::DropCount>>,
    pub hellos: usize,
    /// Each hello's totals that an earlier publisher counted.
    pub reported: Vec<Vec<crate::DropCount>>,
}

pub fn receive(connections: &[Vec<Vec<u8>>]) -> Received {
    let mut received = Received::default();
    for datagrams in connections {
        let Some((hello, rest)) = datagrams.split_first() else { continue };
        let greeting = decode_hello(hello).expect("every connection starts with the hello");
        received.hellos += 1;
        received.reported.push(greeting.reported);
        let mut rx = Reassembler::new(greeting.first_seq);
        for d in rest {
            match decode_datagram(d).expect("the sender's datagrams decode") {
                Datagram::Records(batch) => {
                    received.losses.push(rx.records(batch.seq));
                    let first = batch.first_record;
                    received.records.extend(batch.records().zip(first..).map(|(r, index)| OwnedRecord {
                        index,
                        tracepoint: r.tracepoint,
                        ktime_ns: r.ktime_ns,
                        data: r.data.to_vec(),
                    }));
                }
                Datagram::Fragment(f) => {
                    let (loss, done) = rx.fragment(&f);
                    received.losses.push(loss);
                    received.records.extend(done);
                }
                Datagram::DropCounts(counts) => received.drop_counts.push(counts),
            }
        }
    }
    received.losses.retain(|l| !l.is_empty());
    received
}

/// Every datagram `sender` sends for `records` on a faultless connection (the hello first, if
/// it was not connected yet); its sequence goes on across calls.
pub fn datagrams(sender: &mut Sender, records: &[Record<'_>]) -> Vec<Vec<u8>> {
    let mut peer = Peer::new(Faults::default());
    run(sender, &mut Rings::spread(1, records), &mut peer);
    assert_eq!(peer.connections.len(), 1);
    peer.connections.remove(0)
}
