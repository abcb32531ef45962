//! Delivery: new (durable) messages to every subscription and queue group that can take
//! them, read from the store in batches in their wire form, in rounds (see `DELIVER_ROUND`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use bytes::Bytes;
use rnats_streaming::proto::MsgProto;
use rnats_streaming::store::{Channel, EncodedMsg};
use tracing::warn;

use super::state::{ChannelState, Pending, Sub};
use super::{Engine, Timer, encode, mark};

/// Messages read from the store at once for delivery.
pub(super) const DELIVER_BATCH: usize = 1024;
/// Bytes read from the store at once for delivery (at least one message).
pub(super) const DELIVER_BATCH_BYTES: usize = 1 << 20;
/// What one commit delivers to a subscription (or queue group) at most, so that a large
/// window (MaxInFlight) is read and sent in turns, interleaved with the acks that come back,
/// instead of read whole while the subscriber waits for its first byte.
pub(super) const DELIVER_ROUND: usize = 4 * DELIVER_BATCH;
pub(super) const DELIVER_ROUND_BYTES: usize = DELIVER_BATCH_BYTES;

/// What one commit delivered to a subscription or queue group so far (see `DELIVER_ROUND`).
#[derive(Default)]
pub(super) struct Round {
    pub(super) msgs: usize,
    pub(super) bytes: usize,
}

impl Round {
    pub(super) fn add(&mut self, m: &EncodedMsg) {
        self.msgs += 1;
        self.bytes += m.encoded.len();
    }

    pub(super) fn full(&self) -> bool {
        self.msgs >= DELIVER_ROUND || self.bytes >= DELIVER_ROUND_BYTES
    }
}

impl Engine {
    pub(super) fn encode_msg(m: &MsgProto, redelivered: bool, count: u32) -> Bytes {
        let mut m = m.clone();
        m.redelivered = redelivered;
        m.redelivery_count = count;
        encode(&m)
    }

    /// Up to `n` messages from `seq` for delivery, in their wire form. A message the store
    /// cannot read is skipped, as a lookup would: `Err(seq)` to move past it.
    pub(super) fn read_for_delivery(
        ch: &Channel,
        seq: u64,
        n: usize,
    ) -> Result<Vec<EncodedMsg>, u64> {
        match ch.msgs().read_batch_encoded(seq, n, DELIVER_BATCH_BYTES) {
            Ok(b) => Ok(b),
            Err(e) => {
                warn!(
                    "STREAM: Unable to read messages of {:?} from {seq}: {e}",
                    ch.name()
                );
                match ch.msgs().lookup(seq) {
                    Ok(Some(m)) => Ok(vec![EncodedMsg::from_msg(&m)]),
                    _ => Err(seq),
                }
            }
        }
    }

    /// Sends new (durable) messages to every subscription of the channel that can take them,
    /// up to `DELIVER_ROUND` each. True when one could take more than that right now.
    pub(super) fn deliver(&mut self, name: &str) -> bool {
        let Engine {
            channels,
            clients,
            outbox,
            stats,
            timers,
            lazy_subs,
            sink,
            ..
        } = self;
        let Some(cs) = channels.get_mut(name) else {
            return false;
        };
        let state = cs.ch.msgs().state();
        let last = state.last.min(cs.durable);
        let now = Instant::now();
        let mut sent_any = false;
        let mut more = false;
        let mut to_arm: Vec<u64> = Vec::new();
        // Plain subscriptions.
        for sub in cs.subs.values_mut() {
            if sub.queue.is_some() || sub.offline || !sub.initialized {
                continue;
            }
            let mut armed = false;
            let mut round = Round::default();
            loop {
                let room = sub.room();
                let seq = (sub.st.last_sent + 1).max(state.first);
                if room == 0 || seq > last {
                    break;
                }
                if round.full() {
                    more = true;
                    break;
                }
                let n = room.min((last - seq + 1) as usize).min(DELIVER_BATCH);
                let batch = match Self::read_for_delivery(&cs.ch, seq, n) {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => b,
                    Err(skip) => {
                        sub.st.last_sent = skip;
                        continue;
                    }
                };
                if batch[0].sequence > last {
                    break;
                }
                let expire = now + sub.ack_wait();
                let mut sent = Vec::with_capacity(batch.len());
                for m in batch {
                    if m.sequence > last {
                        break;
                    }
                    sub.st.last_sent = m.sequence;
                    stats.out_msgs += 1;
                    stats.out_bytes += m.data_len as u64;
                    round.add(&m);
                    outbox.push(&sub.inbox, m.encoded);
                    sub.add_pending(m.sequence, Pending { expire, count: 0 });
                    sent.push(m.sequence);
                    sent_any = true;
                    armed = true;
                }
                let _ = sink.pending(&cs.ch, sub.st.id, &sent);
            }
            if armed {
                to_arm.push(sub.st.id);
            }
        }
        // Queue groups: each message to the least loaded healthy member.
        for group in cs.queues.values_mut() {
            if group.members.is_empty() {
                continue;
            }
            let mut round = Round::default();
            'group: loop {
                let seq = (group.last_sent + 1).max(state.first);
                if seq > last {
                    break;
                }
                if round.full() {
                    more = true;
                    break;
                }
                let room: usize = group
                    .members
                    .iter()
                    .filter_map(|mid| cs.subs.get(mid))
                    .filter(|m| m.initialized && Self::client_healthy(clients, &m.st.client_id))
                    .map(Sub::room)
                    .sum();
                if room == 0 {
                    break;
                }
                let n = room.min((last - seq + 1) as usize).min(DELIVER_BATCH);
                let batch = match Self::read_for_delivery(&cs.ch, seq, n) {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => b,
                    Err(skip) => {
                        group.last_sent = skip;
                        continue;
                    }
                };
                for m in batch {
                    if m.sequence > last {
                        break 'group;
                    }
                    let mut best: Option<(usize, usize)> = None;
                    for (i, mid) in group.members.iter().enumerate() {
                        let Some(m) = cs.subs.get(mid) else { continue };
                        if !m.initialized
                            || m.stalled()
                            || !Self::client_healthy(clients, &m.st.client_id)
                        {
                            continue;
                        }
                        if best.is_none_or(|(_, n)| m.pending.len() < n) {
                            best = Some((i, m.pending.len()));
                        }
                    }
                    let Some((idx, _)) = best else {
                        break 'group;
                    };
                    group.last_sent = m.sequence;
                    let mid = group.members.remove(idx);
                    group.members.push(mid);
                    let sub = cs.subs.get_mut(&mid).expect("member exists");
                    sub.st.last_sent = m.sequence;
                    stats.out_msgs += 1;
                    stats.out_bytes += m.data_len as u64;
                    round.add(&m);
                    outbox.push(&sub.inbox, m.encoded);
                    let expire = now + sub.ack_wait();
                    sub.add_pending(m.sequence, Pending { expire, count: 0 });
                    let _ = sink.pending(&cs.ch, mid, &[m.sequence]);
                    sent_any = true;
                    to_arm.push(mid);
                }
            }
        }
        if sent_any {
            mark(lazy_subs, name);
        }
        to_arm.sort_unstable();
        to_arm.dedup();
        for id in to_arm {
            Self::arm_sub_timer(timers, cs, name, id);
        }
        more
    }

    /// Makes sure a redelivery timer fires at the subscription's earliest expiry.
    pub(super) fn arm_sub_timer(
        timers: &mut BinaryHeap<Reverse<(Instant, Timer)>>,
        cs: &mut ChannelState,
        name: &str,
        id: u64,
    ) {
        let Some(sub) = cs.subs.get_mut(&id) else {
            return;
        };
        if sub.offline {
            return;
        }
        let Some(min) = sub.next_expiry() else {
            return;
        };
        if sub.timer_at.is_some_and(|t| t <= min) {
            return;
        }
        sub.timer_at = Some(min);
        timers.push(Reverse((min, Timer::Redeliver(name.to_string(), id))));
    }

    pub(super) fn arm_redelivery(&mut self, name: &str, id: u64) {
        let Engine {
            channels, timers, ..
        } = self;
        if let Some(cs) = channels.get_mut(name) {
            Self::arm_sub_timer(timers, cs, name, id);
        }
    }
}
