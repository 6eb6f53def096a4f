use super::*;
use crate::testing::{body, datagrams, hello, receive};
use crate::{Record, Sender};

/// Datagrams of records stamped with their index as their time.
fn of(records: &[(Tracepoint, &[u8])]) -> Vec<Vec<u8>> {
    let records: Vec<Record<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, &(tracepoint, data))| Record { tracepoint, ktime_ns: i as u64, data })
        .collect();
    datagrams(&mut Sender::new(&hello()), &records)
}

/// Datagrams of two fragmented records with a small one between (the hello first), and the
/// index of the second record's first fragment.
fn fragmented() -> (Vec<Vec<u8>>, usize) {
    let big = body(3 * crate::MAX_DATAGRAM);
    let first = of(&[(Tracepoint::NetInboundMessage, &big)]).len();
    let all = of(&[
        (Tracepoint::NetInboundMessage, &big),
        (Tracepoint::NetOutboundMessage, &big),
        (Tracepoint::MempoolAdded, b"after"),
    ]);
    (all, first)
}

fn times(datagrams: Vec<Vec<u8>>) -> (Vec<u64>, Vec<Loss>) {
    let received = receive(&[datagrams]);
    (received.records.iter().map(|r| r.ktime_ns).collect(), received.losses)
}

#[test]
fn a_lost_fragment_discards_its_record_and_is_counted() {
    let (mut datagrams, second) = fragmented();
    datagrams.remove(2);
    assert!(second > 2);
    assert_eq!(
        times(datagrams),
        (vec![1, 2], vec![Loss { datagrams: 1, records: vec![Tracepoint::NetInboundMessage] }])
    );
}

#[test]
fn a_lost_first_or_last_fragment_is_never_glued_to_another_record() {
    let (datagrams, second) = fragmented();
    let mut no_last = datagrams.clone();
    no_last.remove(second - 1);
    assert_eq!(times(no_last), (vec![1, 2], vec![Loss { datagrams: 1, records: vec![Tracepoint::NetInboundMessage] }]));

    let mut no_first = datagrams;
    no_first.remove(second);
    assert_eq!(
        times(no_first),
        (vec![0, 2], vec![Loss { datagrams: 1, records: vec![Tracepoint::NetOutboundMessage] }])
    );
}

#[test]
fn reordered_fragments_are_detected() {
    let (mut datagrams, _) = fragmented();
    datagrams.swap(2, 3);
    let (times, losses) = times(datagrams);
    let lost: Vec<_> = losses.iter().flat_map(|l| l.records.clone()).collect();
    assert_eq!(lost, [Tracepoint::NetInboundMessage], "{losses:?}");
    assert_eq!(times, [1, 2]);
}

#[test]
fn a_datagram_lost_right_after_the_hello_is_counted() {
    let (mut datagrams, _) = fragmented();
    datagrams.remove(1);
    assert_eq!(
        times(datagrams),
        (vec![1, 2], vec![Loss { datagrams: 1, records: vec![Tracepoint::NetInboundMessage] }])
    );
}

#[test]
fn records_of_a_mib_or_more_get_buffers_in_whole_64_kib_steps() {
    const STEP: usize = 64 * 1024;
    assert_eq!(record_capacity((1 << 20) - 1), (1 << 20) - 1);
    assert_eq!(record_capacity(1 << 20), 1 << 20);
    // Blocks of 4,000,000 bytes from peers whose addresses take 16 to 520 bytes: one size.
    for room in [16, 264, 520] {
        assert_eq!(record_capacity(4_000_000 + 72 + room), 62 * STEP);
    }
    let big = body((1 << 20) + 1);
    let received = receive(&[of(&[(Tracepoint::NetInboundMessage, &big)])]);
    assert_eq!(received.records.len(), 1);
    assert_eq!(received.records[0].data, big);
    assert!(received.records[0].data.capacity() >= 17 * STEP);
}
