use super::*;
use std::collections::{BTreeMap, VecDeque};

use crate::pump::{abandon, pump, Link, Pumped};
use crate::testing::{body, hello, receive, run, Broken, Faults, Peer, Rings};
use crate::{decode_datagram, decode_hello, Datagram, OwnedRecord, MAX_DATAGRAM};

/// The records, each stamped with its index as its time, and numbered as the sender numbers
/// them: the oldest first.
fn sent(records: &[(Tracepoint, Vec<u8>)]) -> Vec<OwnedRecord> {
    records
        .iter()
        .zip(0..)
        .map(|((tracepoint, data), i)| OwnedRecord {
            index: i,
            tracepoint: *tracepoint,
            ktime_ns: i,
            data: data.clone(),
        })
        .collect()
}

fn rings(n: usize, records: &[(Tracepoint, Vec<u8>)]) -> Rings {
    Rings::spread(n, &sent(records).iter().map(OwnedRecord::as_record).collect::<Vec<_>>())
}

fn datagrams(records: &[(Tracepoint, Vec<u8>)]) -> Vec<Vec<u8>> {
    let owned = sent(records);
    crate::testing::datagrams(&mut Sender::new(&hello()), &owned.iter().map(OwnedRecord::as_record).collect::<Vec<_>>())
}

/// Large and small records of every size up to the maximum, a small one after each.
fn mixed() -> Vec<(Tracepoint, Vec<u8>)> {
    let sizes =
        [0, 1, 4096, MAX_DATAGRAM - 40, MAX_DATAGRAM - 20, MAX_DATAGRAM, MAX_DATAGRAM + 1, 1_000_000, MAX_RECORD];
    sizes
        .iter()
        .flat_map(|&size| {
            [(Tracepoint::NetOutboundMessage, body(size)), (Tracepoint::MempoolAdded, b"between".to_vec())]
        })
        .collect()
}

/// How many of each tracepoint.
fn per_tracepoint(tracepoints: impl Iterator<Item = Tracepoint>) -> BTreeMap<Tracepoint, u64> {
    let mut counts = BTreeMap::new();
    for tracepoint in tracepoints {
        *counts.entry(tracepoint).or_default() += 1;
    }
    counts
}

/// The totals of one cause, per tracepoint.
fn of_cause(totals: &[DropCount], cause: DropCause) -> BTreeMap<Tracepoint, u64> {
    totals.iter().filter(|c| c.cause == cause).map(|c| (c.tracepoint, c.total)).collect()
}

#[test]
fn small_records_are_batched_in_order_with_sequence_numbers() {
    let records = [(Tracepoint::MempoolAdded, b"abc".to_vec()), (Tracepoint::NetInboundMessage, vec![])];
    let out = datagrams(&records);
    assert_eq!(out.len(), 2, "the hello and one batch");
    let Ok(Datagram::Records(batch)) = decode_datagram(&out[1]) else { panic!("not a batch") };
    assert_eq!(batch.seq, 0);
    assert_eq!(
        batch.records().map(|r| (r.tracepoint, r.ktime_ns, r.data.to_vec())).collect::<Vec<_>>(),
        [(Tracepoint::MempoolAdded, 0, b"abc".to_vec()), (Tracepoint::NetInboundMessage, 1, vec![])]
    );
}

#[test]
fn records_of_every_size_up_to_the_maximum_arrive_byte_identical_and_in_order() {
    let records = mixed();
    let mut peer = Peer::new(Faults::default());
    run(&mut Sender::new(&hello()), &mut rings(3, &records), &mut peer);
    for d in &peer.connections[0] {
        assert!(d.len() <= MAX_DATAGRAM, "datagram of {} bytes", d.len());
    }
    let received = receive(&peer.connections);
    assert!(received.losses.is_empty(), "{:?}", received.losses);
    assert_eq!(received.records, sent(&records));
}

#[test]
fn sequence_numbers_follow_the_sending_order_across_batches_and_fragments() {
    let half = body(MAX_DATAGRAM / 2);
    let records = [
        (Tracepoint::MempoolAdded, half.clone()),
        (Tracepoint::MempoolAdded, half.clone()),
        (Tracepoint::NetInboundMessage, body(3 * MAX_DATAGRAM)),
        (Tracepoint::MempoolAdded, half),
    ];
    let seqs: Vec<u64> = datagrams(&records)[1..]
        .iter()
        .map(|d| match decode_datagram(d).unwrap() {
            Datagram::Records(batch) => batch.seq,
            Datagram::Fragment(f) => f.seq,
            Datagram::DropCounts(_) => panic!("no drops"),
        })
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(seqs.len(), 2 + 4 + 1, "two batches of one half each, four fragments, one batch");
}

#[test]
fn a_socket_that_is_full_now_and_then_delays_but_loses_nothing() {
    let records = mixed();
    for every in 2..5 {
        let mut peer = Peer::new(Faults { full_every: Some(every), ..Faults::default() });
        run(&mut Sender::new(&hello()), &mut rings(2, &records), &mut peer);
        let received = receive(&peer.connections);
        assert!(received.losses.is_empty());
        assert_eq!(received.records, sent(&records), "full every {every}");
    }
}

#[test]
fn a_connection_that_breaks_at_any_datagram_loses_nothing_and_duplicates_nothing() {
    let records = mixed();
    let total = datagrams(&records).len();
    for at in 0..total {
        let break_at: &'static [usize] = Box::leak(vec![at].into_boxed_slice());
        let mut peer = Peer::new(Faults { break_at, ..Faults::default() });
        run(&mut Sender::new(&hello()), &mut rings(2, &records), &mut peer);
        let received = receive(&peer.connections);
        assert_eq!(peer.connections.len(), 2, "break at {at}");
        assert!(received.losses.is_empty(), "break at {at}: {:?}", received.losses);
        assert_eq!(received.records, sent(&records), "break at {at}");
    }
}

/// A sender connected, its hello sent.
fn connected() -> Sender {
    let mut sender = Sender::new(&hello());
    sender.connected();
    assert_eq!(sender.transmitted(), None, "the hello");
    sender
}

#[test]
fn a_record_over_the_maximum_is_refused_and_counted() {
    let mut sender = connected();
    let raw = RingRecord::build(Tracepoint::NetInboundMessage, 0, &body(MAX_RECORD + 1));
    let size = MAX_RECORD + 1;
    assert_eq!(
        sender.offer(0, &raw),
        Offer::Refused(Refusal::TooLarge { tracepoint: Tracepoint::NetInboundMessage, size })
    );
    sender.drop_counts(&[]);
    let counts = sender.poll_transmit().expect("the totals are due");
    let too_large = DropCount { tracepoint: Tracepoint::NetInboundMessage, cause: DropCause::IpcTooLarge, total: 1 };
    assert_eq!(decode_datagram(counts.head), Ok(Datagram::DropCounts(vec![too_large])));
}

#[test]
fn every_new_publisher_gets_the_drop_totals() {
    let mut rings = rings(1, &[(Tracepoint::MempoolAdded, b"next".to_vec())]);
    let mut sender = Sender::new(&hello());
    let totals = vec![DropCount { tracepoint: Tracepoint::MempoolAdded, cause: DropCause::RingFull, total: 3 }];
    sender.drop_counts(&totals);
    let mut peer = Peer::new(Faults::default());
    run(&mut sender, &mut rings, &mut peer);
    sender.disconnected();
    run(&mut sender, &mut rings, &mut peer);
    let received = receive(&peer.connections);
    assert_eq!(received.drop_counts, [totals.clone(), totals]);
    assert_eq!(
        received.records,
        [OwnedRecord { index: 0, tracepoint: Tracepoint::MempoolAdded, ktime_ns: 0, data: b"next".to_vec() }]
    );
}

/// `mempool:added` drop totals of `ring_full`.
fn ring_full(total: u64) -> Vec<DropCount> {
    vec![DropCount { tracepoint: Tracepoint::MempoolAdded, cause: DropCause::RingFull, total }]
}

/// Sends a drop report of `total`, then record `ktime_ns` in a batch of its own.
fn report_then_record(sender: &mut Sender, total: u64, ktime_ns: u64) {
    sender.drop_counts(&ring_full(total));
    assert!(sender.poll_transmit().is_some());
    sender.transmitted();
    assert_eq!(sender.offer(0, &RingRecord::build(Tracepoint::MempoolAdded, ktime_ns, b"x")), Offer::Taken);
    sender.flush();
    assert!(sender.poll_transmit().is_some());
    sender.transmitted();
}

/// A publisher read a report once it acknowledged a record sent after it: those totals go in
/// the next connection's hello, so that a new publisher counts only the rest. A report sent
/// last, before the connection ended, is not known to have been read.
#[test]
fn a_new_publisher_learns_which_totals_the_last_one_read() {
    let mut sender = Sender::new(&hello());
    let mut peer = Peer::new(Faults::default());
    sender.drop_counts(&ring_full(3));
    run(&mut sender, &mut rings(1, &[(Tracepoint::MempoolAdded, b"after".to_vec())]), &mut peer);
    sender.drop_counts(&ring_full(5));
    run(&mut sender, &mut Rings(vec![VecDeque::new()]), &mut peer);
    sender.disconnected();
    let next = RingRecord::build(Tracepoint::MempoolAdded, 1, b"next");
    run(&mut sender, &mut Rings(vec![VecDeque::from([next])]), &mut peer);
    let received = receive(&peer.connections);
    assert_eq!(received.reported, [vec![], ring_full(3)]);
    assert_eq!(received.drop_counts, [ring_full(3), ring_full(5), ring_full(5)]);
    assert_eq!(received.records.len(), 2);
}

/// Acknowledgements that lag behind several reports still confirm the latest report sent
/// before the record they acknowledge.
#[test]
fn a_late_acknowledgement_confirms_the_last_report_before_its_record() {
    let mut sender = connected();
    for (ktime_ns, total) in [(0, 1), (1, 2), (2, 3)] {
        report_then_record(&mut sender, total, ktime_ns);
    }
    // Records 0 and 1 are done: the reports of 1 and 2 were read, not yet that of 3.
    sender.acknowledged(2).unwrap();
    assert_eq!(sender.reported, ring_full(2));
    sender.acknowledged(3).unwrap();
    assert_eq!(sender.reported, ring_full(3));
}

/// A connection that ends with records lost falls back to what was known read before it: the
/// publisher that took records with it may have taken its counts unseen.
#[test]
fn a_connection_that_lost_records_reports_nothing_new_as_read() {
    let mut sender = connected();
    report_then_record(&mut sender, 4, 0);
    report_then_record(&mut sender, 5, 1);
    // The report of 4 is known read; the connection then ends with record 1 lost.
    sender.acknowledged(1).unwrap();
    assert_eq!(sender.reported, ring_full(4));
    assert_eq!(sender.disconnected(), 1);
    sender.connected();
    assert_eq!(decode_hello(sender.poll_transmit().expect("the hello").head).unwrap().reported, []);
}

#[test]
fn unchanged_totals_are_not_sent_again() {
    let mut sender = connected();
    let bpf = [DropCount { tracepoint: Tracepoint::MempoolAdded, cause: DropCause::RingFull, total: 3 }];
    sender.drop_counts(&bpf);
    assert!(sender.poll_transmit().is_some());
    sender.transmitted();
    sender.drop_counts(&bpf);
    assert_eq!(sender.poll_transmit(), None);
}

#[test]
fn a_record_without_a_valid_header_is_refused() {
    let mut sender = connected();
    assert_eq!(sender.offer(0, &[1, 2, 3]), Offer::Refused(Refusal::BadHeader));
    assert_eq!(sender.taken(), 0);
}

#[test]
fn nothing_is_taken_while_disconnected() {
    let raw = RingRecord::build(Tracepoint::MempoolAdded, 1, b"x");
    let mut sender = Sender::new(&hello());
    assert_eq!(sender.poll_transmit(), None);
    assert_eq!(sender.offer(0, &raw), Offer::Held);
    sender.connected();
    assert_eq!(sender.offer(0, &raw), Offer::Held, "the hello goes first");
    sender.transmitted();
    assert_eq!(sender.offer(0, &raw), Offer::Taken);
    assert_eq!(sender.taken(), 1);
}

#[test]
fn a_datagram_lost_on_the_way_is_counted_and_loses_only_its_own_records() {
    let records = mixed();
    let all = datagrams(&records);
    // The last datagram's loss shows in no later sequence number; every other one's does, the
    // first one's against the hello's.
    for (at, lost) in all.iter().enumerate().take(all.len() - 1).skip(1) {
        let lose_at: &'static [usize] = Box::leak(vec![at].into_boxed_slice());
        let mut peer = Peer::new(Faults { lose_at, ..Faults::default() });
        run(&mut Sender::new(&hello()), &mut rings(1, &records), &mut peer);
        let received = receive(&peer.connections);
        let lost_times: Vec<u64> = match decode_datagram(lost).unwrap() {
            Datagram::Records(batch) => batch.records().map(|r| r.ktime_ns).collect(),
            Datagram::Fragment(f) => vec![f.ktime_ns],
            Datagram::DropCounts(_) => panic!("no drops here"),
        };
        let want: Vec<OwnedRecord> = sent(&records).into_iter().filter(|r| !lost_times.contains(&r.ktime_ns)).collect();
        assert_eq!(received.records, want, "datagram {at} lost");
        assert_eq!(received.losses.iter().map(|l| l.datagrams).sum::<u64>(), 1, "datagram {at} lost");
    }
}

#[test]
fn records_a_publisher_took_with_it_unacknowledged_are_counted_as_publisher_lost() {
    let records = mixed();
    let total = datagrams(&records).len();
    for at in 2..total {
        let break_at: &'static [usize] = Box::leak(vec![at].into_boxed_slice());
        let mut peer = Peer::new(Faults { break_at, silent: true, ..Faults::default() });
        run(&mut Sender::new(&hello()), &mut rings(2, &records), &mut peer);
        let first = receive(&peer.connections[..1]);
        let received = receive(&peer.connections);
        assert_eq!(received.records, sent(&records), "break at {at}: nothing is sent twice");
        let want: Vec<DropCount> = per_tracepoint(first.records.iter().map(|r| r.tracepoint))
            .into_iter()
            .map(|(tracepoint, total)| DropCount { tracepoint, cause: DropCause::PublisherLost, total })
            .collect();
        let told = if want.is_empty() { vec![] } else { vec![want] };
        assert_eq!(received.drop_counts, told, "break at {at}: the next publisher is told");
    }
}

#[test]
fn an_acknowledgement_only_grows_and_only_over_records_sent() {
    let mut sender = connected();
    let raw = RingRecord::build(Tracepoint::MempoolAdded, 1, b"x");
    assert_eq!(sender.offer(0, &raw), Offer::Taken);
    assert_eq!(sender.acknowledged(1), Err(AckError { done: 1, acked: 0, sent: 0 }), "still in the open batch");
    sender.flush();
    assert!(sender.poll_transmit().is_some());
    sender.transmitted();
    assert_eq!(sender.acknowledged(2), Err(AckError { done: 2, acked: 0, sent: 1 }));
    assert_eq!(sender.acknowledged(1), Ok(()));
    assert_eq!(sender.acknowledged(1), Ok(()), "the same again");
    assert_eq!(sender.acknowledged(0), Err(AckError { done: 0, acked: 1, sent: 1 }));
    sender.disconnected();
    sender.connected();
    assert_eq!(sender.poll_transmit().map(|t| t.head.len() > 4), Some(true), "the hello; no drop totals: nothing lost");
    sender.transmitted();
    assert_eq!(sender.poll_transmit(), None);
}

#[test]
fn a_publisher_that_never_acknowledges_gets_no_more_than_unacked_max_records() {
    let records: Vec<(Tracepoint, Vec<u8>)> =
        (0..UNACKED_MAX + 10).map(|_| (Tracepoint::MempoolAdded, vec![])).collect();
    let mut rings = rings(1, &records);
    let mut peer = Peer::new(Faults { silent: true, ..Faults::default() });
    let mut sender = Sender::new(&hello());
    run(&mut sender, &mut rings, &mut peer);
    assert!(sender.awaiting_acks());
    assert_eq!(receive(&peer.connections).records.len(), UNACKED_MAX);
    assert_eq!(rings.0[0].len(), 10, "the rest waits in the ring");
}

/// The publisher's socket, full after `room` more datagrams.
struct Filling<'a> {
    peer: &'a mut Peer,
    room: usize,
}

impl Link for Filling<'_> {
    type Error = Broken;

    fn send(&mut self, head: &[u8], piece: &[u8]) -> Result<bool, Broken> {
        if self.room == 0 {
            return Ok(false);
        }
        self.room -= 1;
        self.peer.send(head, piece)
    }
}

#[test]
fn what_the_loader_stops_with_is_counted_as_loader_stopped_and_the_totals_go_out() {
    let records = mixed();
    let total = datagrams(&records).len();
    let fired = per_tracepoint(records.iter().map(|(tracepoint, _)| *tracepoint));
    // The socket fills after every number of datagrams: within a batch, within a record's
    // fragments, after everything.
    for room in 1..=total {
        let mut sender = Sender::new(&hello());
        sender.connected();
        let mut rings = rings(2, &records);
        let mut peer = Peer::new(Faults::default());
        peer.connections.push(Vec::new());
        let mut link = Filling { peer: &mut peer, room };
        let _ = pump(&mut sender, &mut rings, &mut link, &mut |_| {});

        let counted = abandon(&mut sender, &mut rings);
        assert!(rings.0.iter().all(VecDeque::is_empty), "room {room}: the rings are released");
        let totals = sender.undelivered_totals().map(<[_]>::to_vec).unwrap_or_default();
        assert_eq!(totals.is_empty(), counted == 0, "room {room}: the totals change with a count");
        link.room = usize::MAX;
        assert!(matches!(pump(&mut sender, &mut rings, &mut link, &mut |_| {}), Pumped::Drained));
        assert_eq!(sender.undelivered_totals(), None, "room {room}: the totals went out");

        let received = receive(&peer.connections);
        assert!(received.losses.is_empty(), "room {room}: {:?}", received.losses);
        assert_eq!(received.records, sent(&records)[..received.records.len()], "room {room}: in order");
        let mut accounted = of_cause(&totals, DropCause::LoaderStopped);
        assert_eq!(accounted.values().sum::<u64>(), counted, "room {room}");
        for (tracepoint, n) in per_tracepoint(received.records.iter().map(|r| r.tracepoint)) {
            *accounted.entry(tracepoint).or_default() += n;
        }
        assert_eq!(accounted, fired, "room {room}: every record arrived or is counted, once");
        let last = received.drop_counts.last().cloned().unwrap_or_default();
        assert_eq!(last, totals, "room {room}: the publisher is told");
    }
}

/// The connection broke (the publisher died, acknowledging nothing) and the loader stops before
/// another: what the dead publisher took is `publisher_lost`, the rest `loader_stopped`, and a
/// publisher reached after all gets those totals first.
#[test]
fn a_loader_stopping_without_a_publisher_owes_the_totals_to_the_next() {
    let records = mixed();
    let total = datagrams(&records).len();
    let fired = per_tracepoint(records.iter().map(|(tracepoint, _)| *tracepoint));
    for at in 1..total {
        let break_at: &'static [usize] = Box::leak(vec![at].into_boxed_slice());
        let mut peer = Peer::new(Faults { break_at, silent: true, ..Faults::default() });
        peer.connections.push(Vec::new());
        let mut sender = Sender::new(&hello());
        sender.connected();
        let mut rings = rings(2, &records);
        assert!(matches!(pump(&mut sender, &mut rings, &mut peer, &mut |_| {}), Pumped::Failed(Broken)));
        sender.disconnected();
        let counted = abandon(&mut sender, &mut rings);
        let totals = sender.undelivered_totals().expect("owed to the next publisher").to_vec();
        assert!(sender.holds_unsent(), "break at {at}");

        peer.connections.push(Vec::new());
        sender.connected();
        assert!(matches!(pump(&mut sender, &mut rings, &mut peer, &mut |_| {}), Pumped::Drained));
        let first = receive(&peer.connections[..1]);
        let next = receive(&peer.connections[1..]);
        assert_eq!((next.records.len(), next.drop_counts.clone()), (0, vec![totals.clone()]), "break at {at}");
        let took = per_tracepoint(first.records.iter().map(|r| r.tracepoint));
        assert_eq!(of_cause(&totals, DropCause::PublisherLost), took, "break at {at}");
        let mut accounted = of_cause(&totals, DropCause::LoaderStopped);
        assert_eq!(accounted.values().sum::<u64>(), counted, "break at {at}");
        for (tracepoint, n) in took {
            *accounted.entry(tracepoint).or_default() += n;
        }
        assert_eq!(accounted, fired, "break at {at}: every record counted once");
    }
}
