//! Acknowledgements, the one thing the publisher writes back (docs/ipc.md,
//! "Acknowledgements"): a datagram of exactly [`ACK_LEN`] bytes, the little-endian number
//! below which every record the connection carried is done, that is published, acknowledged
//! by JetStream, or counted. The loader counts the records a publisher took with it, sent and
//! never acknowledged, as `publisher_lost` ([`crate::Sender::disconnected`]); this is the
//! publisher's side.

use std::collections::VecDeque;

/// Bytes of an acknowledgement datagram.
pub const ACK_LEN: usize = 8;

pub fn encode_ack(done_below: u64) -> [u8; ACK_LEN] {
    done_below.to_le_bytes()
}

/// `None` unless the datagram is exactly an acknowledgement.
pub fn decode_ack(datagram: &[u8]) -> Option<u64> {
    <[u8; ACK_LEN]>::try_from(datagram).ok().map(u64::from_le_bytes)
}

/// Which of the records received on one connection are done, and the acknowledgement due.
/// Records are received in number order; they may be done in any order (JetStream
/// acknowledges them concurrently).
#[derive(Debug, Default)]
pub struct Acknowledger {
    /// Records received and not yet acknowledgeable, by number, with whether each is done: the
    /// first is not done.
    waiting: VecDeque<(u64, bool)>,
    /// One past the last record received.
    next: u64,
    /// What the last acknowledgement sent said.
    acknowledged: u64,
    /// The connection is being dropped: no acknowledgement is due any more.
    abandoned: bool,
}

impl Acknowledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record `record` arrived. Numbers it skips never arrived on this connection: an earlier
    /// publisher's, or counted as lost (`lost_datagrams`, `fragment_lost`).
    pub fn received(&mut self, record: u64) {
        if record < self.next {
            return;
        }
        self.waiting.push_back((record, false));
        // The loader numbers records from 0; a peer's u64::MAX must not overflow.
        self.next = record.saturating_add(1);
    }

    /// Record `record` is published, acknowledged or counted.
    pub fn done(&mut self, record: u64) {
        if let Ok(i) = self.waiting.binary_search_by_key(&record, |&(number, _)| number) {
            self.waiting[i].1 = true;
        }
        while self.waiting.front().is_some_and(|&(_, done)| done) {
            self.waiting.pop_front();
        }
    }

    /// Every record numbered below this that this connection carried is done.
    pub fn done_below(&self) -> u64 {
        self.waiting.front().map_or(self.next, |&(number, _)| number)
    }

    /// Whether a record received is not done yet.
    pub fn waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The acknowledgement to send, if more is done than the last one sent said.
    pub fn due(&self) -> Option<[u8; ACK_LEN]> {
        let done = self.done_below();
        (done > self.acknowledged && !self.abandoned).then(|| encode_ack(done))
    }

    /// The publisher drops the connection with records it did not account for (published,
    /// acknowledged by JetStream, or counted), which mark themselves done as they are freed:
    /// from now on nothing is acknowledged, so the loader counts them as `publisher_lost`.
    pub fn abandon(&mut self) {
        self.abandoned = true;
    }

    /// The acknowledgement [`Self::due`] gave went out.
    pub fn sent(&mut self, ack: [u8; ACK_LEN]) {
        self.acknowledged = self.acknowledged.max(u64::from_le_bytes(ack));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_is_eight_bytes_and_nothing_else() {
        assert_eq!(decode_ack(&encode_ack(0x0102_0304_0506_0708)), Some(0x0102_0304_0506_0708));
        assert_eq!(encode_ack(1), [1, 0, 0, 0, 0, 0, 0, 0]);
        for bad in [&[][..], &[1; 7], &[1; 9]] {
            assert_eq!(decode_ack(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn records_done_out_of_order_are_acknowledged_up_to_the_first_still_waiting() {
        let mut acks = Acknowledger::new();
        assert_eq!(acks.due(), None, "nothing received");
        for record in 100..105 {
            acks.received(record);
        }
        assert_eq!(acks.due(), Some(encode_ack(100)), "records before the connection's first are an earlier one's");
        acks.sent(encode_ack(100));
        acks.done(102);
        acks.done(101);
        assert_eq!(acks.due(), None, "100 is still waiting");
        acks.done(100);
        assert_eq!(acks.due(), Some(encode_ack(103)));
        acks.sent(encode_ack(103));
        acks.done(104);
        acks.done(103);
        assert!(!acks.waiting());
        assert_eq!(acks.due(), Some(encode_ack(105)));
    }

    #[test]
    fn nothing_is_acknowledged_once_the_connection_is_abandoned() {
        let mut acks = Acknowledger::new();
        for record in 0..3 {
            acks.received(record);
        }
        acks.done(0);
        assert_eq!(acks.due(), Some(encode_ack(1)));
        acks.abandon();
        acks.done(1);
        acks.done(2);
        assert_eq!(acks.due(), None, "1 and 2 were dropped, not published");
    }

    #[test]
    fn numbers_that_never_arrived_do_not_hold_the_acknowledgement_back() {
        let mut acks = Acknowledger::new();
        acks.received(0);
        acks.received(5);
        acks.done(0);
        assert_eq!(acks.done_below(), 5, "1 to 4 were lost on the way, and counted");
        acks.done(5);
        assert_eq!(acks.done_below(), 6);
        acks.received(3);
        acks.done(3);
        assert_eq!(acks.done_below(), 6, "a number again is ignored");
    }
}
