//! The engine's state: clients, subscriptions with their pending messages and redelivery
//! deadlines, queue groups, channels, counters. Plain data with the small invariants that
//! belong to it; the handlers that change it live in the other rooms of the engine.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rnats_streaming::proto::{ClientInfo, SubState};
use rnats_streaming::seqmap::SeqMap;
use rnats_streaming::store::Channel;

use super::writes::Assigned;

/// A registered client.
pub(super) struct ClientState {
    pub(super) info: ClientInfo,
    /// (channel, subscription ID) of its subscriptions.
    pub(super) subs: BTreeSet<(String, u64)>,
    pub(super) hb_fails: u32,
    pub(super) hb_in_flight: bool,
    pub(super) hb_at: Option<Instant>,
}

/// A message sent and not yet acknowledged.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub(super) expire: Instant,
    pub(super) count: u32,
}

pub(super) struct Sub {
    pub(super) st: SubState,
    /// Sent and not acknowledged. Insert only through [`Sub::add_pending`], which keeps
    /// `deadlines` in step; removing needs nothing more.
    pub(super) pending: SeqMap<Pending>,
    /// (expiry, sequence) of the pending messages. Entries of messages acked or re-armed
    /// since are stale and dropped when they reach the front (or in a rebuild when they pile
    /// up).
    pub(super) deadlines: Deadlines,
    /// `st.inbox`, shared by every delivery.
    pub(super) inbox: Arc<str>,
    pub(super) initialized: bool,
    /// Durable without a client (closed), or the shadow of a durable queue group.
    pub(super) offline: bool,
    /// Group key (`q` or `durable:q`).
    pub(super) queue: Option<String>,
    pub(super) timer_at: Option<Instant>,
}

/// Expiries of a subscription's pending messages: a queue for those armed in order (every
/// delivery and redelivery: now + ack wait), a heap for the rest (recovery, messages taken
/// over from a queue member that left, a changed ack wait). Pushing, popping and finding the
/// earliest are O(1) for the queue, O(log n) for the heap.
#[derive(Default)]
pub(super) struct Deadlines {
    pub(super) queue: VecDeque<(Instant, u64)>,
    pub(super) heap: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Deadlines {
    pub(super) fn from_pending(pending: &SeqMap<Pending>) -> Deadlines {
        let mut v: Vec<(Instant, u64)> = pending.iter().map(|(s, p)| (p.expire, s)).collect();
        v.sort_unstable();
        Deadlines {
            queue: v.into(),
            heap: BinaryHeap::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len() + self.heap.len()
    }

    pub(super) fn push(&mut self, at: Instant, seq: u64) {
        match self.queue.back() {
            Some(&(last, _)) if at < last => self.heap.push(Reverse((at, seq))),
            _ => self.queue.push_back((at, seq)),
        }
    }

    /// The earliest entry.
    pub(super) fn peek(&self) -> Option<(Instant, u64)> {
        let q = self.queue.front().copied();
        let h = self.heap.peek().map(|Reverse(e)| *e);
        match (q, h) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn pop(&mut self) {
        let from_queue = match (self.queue.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => a <= b,
            (a, _) => a.is_some(),
        };
        if from_queue {
            self.queue.pop_front();
        } else {
            self.heap.pop();
        }
    }
}

impl Sub {
    pub(super) fn new(st: SubState, pending: SeqMap<Pending>, queue: Option<String>) -> Sub {
        let deadlines = Deadlines::from_pending(&pending);
        Sub {
            inbox: Arc::from(st.inbox.as_str()),
            st,
            pending,
            deadlines,
            initialized: false,
            offline: false,
            queue,
            timer_at: None,
        }
    }

    pub(super) fn stalled(&self) -> bool {
        self.pending.len() >= self.max_in_flight()
    }

    pub(super) fn max_in_flight(&self) -> usize {
        self.st.max_in_flight.max(1) as usize
    }

    /// Messages it can take before it stalls.
    pub(super) fn room(&self) -> usize {
        self.max_in_flight().saturating_sub(self.pending.len())
    }

    pub(super) fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.st.ack_wait_in_secs.max(1) as u64)
    }

    pub(super) fn add_pending(&mut self, seq: u64, p: Pending) {
        self.pending.insert(seq, p);
        self.deadlines.push(p.expire, seq);
    }

    pub(super) fn is_live(&self, at: Instant, seq: u64) -> bool {
        self.pending.get(seq).is_some_and(|p| p.expire == at)
    }

    /// The earliest expiry among the pending messages.
    pub(super) fn next_expiry(&mut self) -> Option<Instant> {
        if self.deadlines.len() > 2 * self.pending.len() + 64 {
            self.deadlines = Deadlines::from_pending(&self.pending);
        }
        while let Some((at, seq)) = self.deadlines.peek() {
            if self.is_live(at, seq) {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Takes the pending messages expiring at or before `limit`, earliest first.
    pub(super) fn take_due(&mut self, limit: Instant) -> Vec<(Instant, u64)> {
        let mut due = Vec::new();
        while let Some((at, seq)) = self.deadlines.peek() {
            if self.is_live(at, seq) {
                if at > limit {
                    break;
                }
                if due.last() != Some(&(at, seq)) {
                    due.push((at, seq));
                }
            }
            self.deadlines.pop();
        }
        due
    }

    pub(super) fn set_inbox(&mut self, inbox: &str) {
        self.st.inbox = inbox.to_string();
        self.inbox = Arc::from(inbox);
    }
}

#[derive(Default)]
pub(super) struct QGroup {
    pub(super) durable: bool,
    pub(super) members: Vec<u64>,
    pub(super) last_sent: u64,
    pub(super) shadow: Option<u64>,
}

pub(super) struct ChannelState {
    pub(super) ch: Arc<Channel>,
    /// Last sequence known to be flushed: messages after it are not delivered yet.
    pub(super) durable: u64,
    pub(super) subs: BTreeMap<u64, Sub>,
    /// (client ID, durable name) → subscription ID, for plain durables.
    pub(super) durables: HashMap<(String, String), u64>,
    pub(super) queues: BTreeMap<String, QGroup>,
    pub(super) expire_at: Option<Instant>,
    pub(super) inactivity_at: Option<Instant>,
    pub(super) last_activity: Instant,
    /// The largest subscription ID given out (log mode assigns IDs itself).
    pub(super) max_sub_id: u64,
    /// The last sequence and timestamp given out (log mode assigns them itself).
    pub(super) next: Assigned,
}

impl ChannelState {
    pub(super) fn new(ch: Arc<Channel>) -> Self {
        ChannelState {
            durable: ch.msgs().state().last,
            max_sub_id: ch
                .subs()
                .subscriptions()
                .iter()
                .map(|s| s.state.id)
                .max()
                .unwrap_or(0),
            next: Assigned::of(&ch),
            ch,
            subs: BTreeMap::new(),
            durables: HashMap::new(),
            queues: BTreeMap::new(),
            expire_at: None,
            inactivity_at: None,
            last_activity: Instant::now(),
        }
    }

    pub(super) fn active_subs(&self) -> usize {
        self.subs.values().filter(|s| !s.offline).count()
    }
}

/// Counters for `/streaming/serverz`.
#[derive(Default, Clone, Copy)]
pub(super) struct Stats {
    pub(super) in_msgs: u64,
    pub(super) in_bytes: u64,
    pub(super) out_msgs: u64,
    pub(super) out_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_pending() {
        let now = Instant::now();
        let st = SubState {
            max_in_flight: 3,
            ..Default::default()
        };
        let mut sub = Sub::new(st, SeqMap::new(), None);
        let at = |ms| now + Duration::from_millis(ms);
        for (seq, ms) in [(1, 30), (2, 10), (3, 20)] {
            sub.add_pending(
                seq,
                Pending {
                    expire: at(ms),
                    count: 0,
                },
            );
        }
        assert!(sub.stalled());
        assert_eq!(sub.room(), 0);
        assert_eq!(sub.next_expiry(), Some(at(10)));
        // Acked: its deadline goes stale.
        sub.pending.remove(2);
        assert_eq!(sub.next_expiry(), Some(at(20)));
        // Re-armed later: the old deadline is stale.
        sub.add_pending(
            3,
            Pending {
                expire: at(40),
                count: 1,
            },
        );
        assert_eq!(sub.next_expiry(), Some(at(30)));
        assert_eq!(sub.take_due(at(35)), vec![(at(30), 1)]);
        assert_eq!(sub.take_due(at(100)), vec![(at(40), 3)]);
        assert_eq!(sub.next_expiry(), None);
        // The caller redelivers (re-adds) or drops what it took.
        sub.pending.remove(1);
        sub.pending.remove(3);
        // Many acks: the heap is rebuilt instead of growing without bound.
        for seq in 10..1000 {
            sub.add_pending(
                seq,
                Pending {
                    expire: at(seq),
                    count: 0,
                },
            );
            sub.pending.remove(seq);
        }
        sub.add_pending(
            5000,
            Pending {
                expire: at(5000),
                count: 0,
            },
        );
        assert_eq!(sub.next_expiry(), Some(at(5000)));
        assert!(sub.deadlines.len() <= 2 * sub.pending.len() + 64);
    }
}
