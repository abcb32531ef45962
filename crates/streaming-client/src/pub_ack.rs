//! Outstanding publish acks, as an I/O-free state machine: which guids wait for a `PubAck`, with
//! what handler, until when; how many may be outstanding at once.
//!
//! The client registers a guid before it publishes, feeds every `PubAck` it receives to
//! [`PubAckTracker::on_ack`], and, whenever [`PubAckTracker::next_deadline`] passes, calls
//! [`PubAckTracker::expire`]. Time is passed in (never read here); it must not go backwards.
//! Every publish gets the same ack wait, so deadlines come in registration order and one
//! queue (oldest first) is enough: acks leave stale queue entries behind, skipped lazily and
//! compacted when they outnumber the live ones.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rnats_streaming::proto::PubAck;

struct Pending<H> {
    handler: H,
    deadline: Instant,
}

/// Guids waiting for their `PubAck`, each with a handler `H`.
pub struct PubAckTracker<H> {
    max_inflight: usize,
    ack_wait: Duration,
    pending: HashMap<String, Pending<H>>,
    /// (deadline, guid) in registration order; may hold guids already acked.
    deadlines: VecDeque<(Instant, String)>,
}

/// Why [`PubAckTracker::register`] refused; the handler comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError<H> {
    /// `max_inflight` acks are already outstanding: wait for one to complete.
    Full(H),
    /// The guid is already waiting.
    Duplicate(H),
}

impl<H> PubAckTracker<H> {
    /// At most `max_inflight` (at least 1) outstanding; each times out `ack_wait` after it
    /// was registered.
    pub fn new(max_inflight: usize, ack_wait: Duration) -> Self {
        PubAckTracker {
            max_inflight: max_inflight.max(1),
            ack_wait,
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
        }
    }

    /// Number of outstanding acks.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether one more may be registered now.
    pub fn has_room(&self) -> bool {
        self.pending.len() < self.max_inflight
    }

    /// Starts waiting for the ack of `guid`, until `now + ack_wait`.
    pub fn register(
        &mut self,
        guid: String,
        handler: H,
        now: Instant,
    ) -> Result<(), RegisterError<H>> {
        if !self.has_room() {
            return Err(RegisterError::Full(handler));
        }
        if self.pending.contains_key(&guid) {
            return Err(RegisterError::Duplicate(handler));
        }
        let deadline = now + self.ack_wait;
        self.deadlines.push_back((deadline, guid.clone()));
        self.pending.insert(guid, Pending { handler, deadline });
        self.compact();
        Ok(())
    }

    /// Stops waiting for `guid` without an outcome (the publish itself failed).
    pub fn cancel(&mut self, guid: &str) -> Option<H> {
        let p = self.pending.remove(guid)?;
        self.compact();
        Some(p.handler)
    }

    /// A `PubAck` arrived: the handler of its guid with the outcome (`Err(text)` when the
    /// server refused the message). `None` for a guid not (or no longer) waiting: a late ack
    /// after the timeout, or a duplicate.
    pub fn on_ack(&mut self, ack: &PubAck) -> Option<(H, Result<(), String>)> {
        let p = self.pending.remove(&ack.guid)?;
        self.compact();
        let outcome = if ack.error.is_empty() {
            Ok(())
        } else {
            Err(ack.error.clone())
        };
        Some((p.handler, outcome))
    }

    /// The earliest deadline of an outstanding ack.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale_front();
        self.deadlines.front().map(|(d, _)| *d)
    }

    /// Removes and returns every outstanding ack whose deadline is at or before `now`, oldest
    /// first.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, H)> {
        let mut out = Vec::new();
        while let Some((deadline, _)) = self.deadlines.front() {
            if *deadline > now {
                break;
            }
            let (deadline, guid) = self.deadlines.pop_front().expect("front exists");
            if self
                .pending
                .get(&guid)
                .is_some_and(|p| p.deadline == deadline)
            {
                let p = self.pending.remove(&guid).expect("checked");
                out.push((guid, p.handler));
            }
        }
        out
    }

    /// Removes and returns everything outstanding (the connection is closing), oldest first.
    pub fn drain(&mut self) -> Vec<(String, H)> {
        let mut out = Vec::with_capacity(self.pending.len());
        for (deadline, guid) in self.deadlines.drain(..) {
            if self
                .pending
                .get(&guid)
                .is_some_and(|p| p.deadline == deadline)
            {
                let p = self.pending.remove(&guid).expect("checked");
                out.push((guid, p.handler));
            }
        }
        debug_assert!(self.pending.is_empty());
        out
    }

    fn drop_stale_front(&mut self) {
        while let Some((deadline, guid)) = self.deadlines.front() {
            if self
                .pending
                .get(guid)
                .is_some_and(|p| p.deadline == *deadline)
            {
                break;
            }
            self.deadlines.pop_front();
        }
    }

    /// Keeps the queue within a constant factor of the live entries.
    fn compact(&mut self) {
        self.drop_stale_front();
        if self.deadlines.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.deadlines
                .retain(|(d, g)| pending.get(g).is_some_and(|p| p.deadline == *d));
        }
    }

    #[cfg(test)]
    fn queue_len(&self) -> usize {
        self.deadlines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(30);

    fn ack(guid: &str, error: &str) -> PubAck {
        PubAck {
            guid: guid.into(),
            error: error.into(),
        }
    }

    #[test]
    fn ack_completes_its_handler_once() {
        let now = Instant::now();
        let mut t = PubAckTracker::new(10, WAIT);
        t.register("a".into(), 1, now).unwrap();
        t.register("b".into(), 2, now).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.on_ack(&ack("b", "")), Some((2, Ok(()))));
        assert_eq!(t.on_ack(&ack("b", "")), None, "duplicate ack");
        assert_eq!(t.on_ack(&ack("zz", "")), None, "unknown guid");
        assert_eq!(
            t.on_ack(&ack("a", "stan: invalid publish request")),
            Some((1, Err("stan: invalid publish request".into())))
        );
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn bounded_inflight() {
        let now = Instant::now();
        let mut t = PubAckTracker::new(2, WAIT);
        t.register("a".into(), 'a', now).unwrap();
        t.register("b".into(), 'b', now).unwrap();
        assert!(!t.has_room());
        assert_eq!(
            t.register("c".into(), 'c', now),
            Err(RegisterError::Full('c'))
        );
        assert!(t.on_ack(&ack("a", "")).is_some());
        assert!(t.has_room());
        t.register("c".into(), 'c', now).unwrap();
        assert_eq!(t.len(), 2);
        // Zero is taken as one.
        let mut one = PubAckTracker::new(0, WAIT);
        one.register("x".into(), (), now).unwrap();
        assert!(!one.has_room());
    }

    #[test]
    fn duplicate_guid_refused() {
        let now = Instant::now();
        let mut t = PubAckTracker::new(4, WAIT);
        t.register("a".into(), 1, now).unwrap();
        assert_eq!(
            t.register("a".into(), 2, now),
            Err(RegisterError::Duplicate(2))
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn timeouts_in_order_and_late_ack_ignored() {
        let t0 = Instant::now();
        let mut t = PubAckTracker::new(10, WAIT);
        t.register("a".into(), 1, t0).unwrap();
        t.register("b".into(), 2, t0 + Duration::from_secs(1))
            .unwrap();
        t.register("c".into(), 3, t0 + Duration::from_secs(2))
            .unwrap();
        assert_eq!(t.next_deadline(), Some(t0 + WAIT));
        assert!(t.expire(t0 + WAIT - Duration::from_millis(1)).is_empty());
        // b is acked in time; a and c time out.
        assert!(t.on_ack(&ack("b", "")).is_some());
        let expired = t.expire(t0 + WAIT + Duration::from_secs(5));
        assert_eq!(expired, vec![("a".to_string(), 1), ("c".to_string(), 3)]);
        assert!(t.is_empty());
        assert_eq!(t.on_ack(&ack("a", "")), None, "ack after its timeout");
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn next_deadline_skips_acked() {
        let t0 = Instant::now();
        let mut t = PubAckTracker::new(10, WAIT);
        t.register("a".into(), 1, t0).unwrap();
        t.register("b".into(), 2, t0 + Duration::from_secs(3))
            .unwrap();
        assert!(t.on_ack(&ack("a", "")).is_some());
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(3) + WAIT));
    }

    #[test]
    fn cancel_and_reregister_same_guid() {
        let t0 = Instant::now();
        let mut t = PubAckTracker::new(10, WAIT);
        t.register("a".into(), 1, t0).unwrap();
        assert_eq!(t.cancel("a"), Some(1));
        assert_eq!(t.cancel("a"), None);
        // The same guid again, later: only the new registration counts.
        let t1 = t0 + Duration::from_secs(10);
        t.register("a".into(), 2, t1).unwrap();
        assert!(t.expire(t0 + WAIT).is_empty(), "the old entry is stale");
        assert_eq!(t.expire(t1 + WAIT), vec![("a".to_string(), 2)]);
    }

    #[test]
    fn drain_returns_all_outstanding() {
        let t0 = Instant::now();
        let mut t = PubAckTracker::new(10, WAIT);
        for (i, g) in ["a", "b", "c"].into_iter().enumerate() {
            t.register(g.into(), i, t0).unwrap();
        }
        assert!(t.on_ack(&ack("b", "")).is_some());
        assert_eq!(t.drain(), vec![("a".to_string(), 0), ("c".to_string(), 2)]);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn queue_stays_bounded_under_out_of_order_acks() {
        // One old publish never acked, thousands acked: stale entries behind it are compacted.
        let t0 = Instant::now();
        let mut t = PubAckTracker::new(100_000, WAIT);
        t.register("old".into(), 0, t0).unwrap();
        for i in 0..10_000u32 {
            let g = format!("g{i}");
            t.register(g.clone(), i, t0).unwrap();
            assert!(t.on_ack(&ack(&g, "")).is_some());
        }
        assert_eq!(t.len(), 1);
        assert!(t.queue_len() <= 2 + 64 + 1, "queue {}", t.queue_len());
        assert_eq!(t.expire(t0 + WAIT), vec![("old".to_string(), 0)]);
    }
}
