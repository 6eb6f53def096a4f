//! The loader's loop around a [`Sender`]: what it sends next, and which record it offers next,
//! the oldest across the rings. The loader runs it over the BPF rings and its socket
//! (`loader/src/forward.rs`); the protocol's tests run the same loop over rings in memory and
//! a peer that can be full, break or lose datagrams (`testing`). The rings and the connection
//! are traits: the loop itself makes no system call.

use crate::records::RingRecord;
use crate::{Offer, Refusal, Sender};

/// Where records wait until sent whole: the BPF ring buffers, one per [`crate::Ring`].
pub trait Rings {
    fn count(&self) -> usize;
    /// The record at the head of ring `ring`, header and body as the BPF program wrote it.
    fn peek(&mut self, ring: usize) -> Option<&[u8]>;
    /// Frees the record at the head of ring `ring`.
    fn release(&mut self, ring: usize);
}

/// The connection to the publisher, for sending.
pub trait Link {
    type Error;
    /// Sends `head` followed by `piece` as one datagram; `Ok(false)` when the socket takes no
    /// more for now (nothing was sent).
    fn send(&mut self, head: &[u8], piece: &[u8]) -> Result<bool, Self::Error>;
}

/// Why [`pump`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped<E> {
    /// Everything the rings held is sent: wait for records.
    Drained,
    /// The socket takes no more: wait until it does.
    Full,
    /// The publisher acknowledged too little of what it was sent: wait for its
    /// acknowledgements.
    AwaitingAcks,
    /// The send failed: the connection is gone.
    Failed(E),
}

/// Sends what is due and offers records, oldest first across the rings, until the rings are
/// empty, the socket is full or the sender awaits acknowledgements; each record leaves its
/// ring once sent whole. A record the sender refuses is released and handed to `refused`.
/// Call only while the sender is connected.
pub fn pump<L: Link>(
    sender: &mut Sender,
    rings: &mut impl Rings,
    link: &mut L,
    refused: &mut impl FnMut(Refusal),
) -> Pumped<L::Error> {
    loop {
        if let Some(transmit) = sender.poll_transmit() {
            let piece = match &transmit.piece {
                Some(p) => {
                    &rings.peek(p.ring).expect("a record being sent stays at the head of its ring")[p.range.clone()]
                }
                None => &[],
            };
            match link.send(transmit.head, piece) {
                Ok(true) => {
                    if let Some(ring) = sender.transmitted() {
                        rings.release(ring);
                    }
                }
                Ok(false) => return Pumped::Full,
                Err(e) => return Pumped::Failed(e),
            }
            continue;
        }
        let Some(index) = oldest(rings) else {
            sender.flush();
            if sender.poll_transmit().is_none() {
                return Pumped::Drained;
            }
            continue;
        };
        match sender.offer(index, rings.peek(index).expect("the oldest ring holds a record")) {
            Offer::Taken => rings.release(index),
            Offer::Held if sender.awaiting_acks() && sender.poll_transmit().is_none() => return Pumped::AwaitingAcks,
            Offer::Held => {}
            Offer::Refused(refusal) => {
                rings.release(index);
                refused(refusal);
            }
        }
    }
}

/// At the loader's stop, after [`pump`] had its last chance: releases what the rings still
/// hold and the open batch, counting each record as `loader_stopped` for its tracepoint (one
/// too large for the protocol too, which could not have gone out either; one without a valid
/// header is only released, as [`pump`] refuses it). Returns how many were counted; the totals
/// are the next datagram [`pump`] sends.
pub fn abandon(sender: &mut Sender, rings: &mut impl Rings) -> u64 {
    let mut left = Vec::new();
    for ring in 0..rings.count() {
        while let Some(raw) = rings.peek(ring) {
            left.extend(RingRecord::parse(raw).map(|record| record.tracepoint));
            rings.release(ring);
        }
    }
    sender.abandon(left)
}

/// The ring whose next record is the oldest, by kernel time; a record too short for its time
/// comes first, to be refused.
fn oldest(rings: &mut impl Rings) -> Option<usize> {
    let mut oldest: Option<(u64, usize)> = None;
    for index in 0..rings.count() {
        let Some(ktime_ns) = rings.peek(index).map(|raw| RingRecord::parse(raw).map_or(0, |r| r.ktime_ns)) else {
            continue;
        };
        if oldest.is_none_or(|(t, _)| ktime_ns < t) {
            oldest = Some((ktime_ns, index));
        }
    }
    oldest.map(|(_, index)| index)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::Tracepoint;

    #[test]
    fn the_oldest_record_across_rings_goes_first_and_a_headless_one_before_all() {
        let record = |tracepoint, ktime_ns| RingRecord::build(tracepoint, ktime_ns, b"");
        let mut rings = crate::testing::Rings(vec![
            VecDeque::from([record(Tracepoint::NetInboundMessage, 30)]),
            VecDeque::from([record(Tracepoint::MempoolAdded, 20)]),
            VecDeque::new(),
        ]);
        assert_eq!(oldest(&mut rings), Some(1));
        rings.release(1);
        assert_eq!(oldest(&mut rings), Some(0));
        rings.0[2].push_back(b"short".to_vec());
        assert_eq!(oldest(&mut rings), Some(2));
        rings.release(2);
        rings.release(0);
        assert_eq!(oldest(&mut rings), None);
    }
}
