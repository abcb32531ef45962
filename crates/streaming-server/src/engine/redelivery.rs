//! Acks and redelivery: an ack removes a pending message (unstalling its subscription); when
//! an ack wait expires the message is sent again (to another member for queue groups).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rnats_streaming::proto::peek_ack;

use super::state::Pending;
use super::{Engine, mark};
use crate::nats::InMsg;

/// Redelivery groups expiries this close together.
pub(super) const REDELIVERY_SLACK: Duration = Duration::from_millis(15);

impl Engine {
    pub(super) fn on_ack(&mut self, msg: InMsg) {
        let Engine {
            acks,
            channels,
            lazy_subs,
            to_deliver,
            acked: to_record,
            ..
        } = self;
        let Some((name, id)) = acks.get(msg.subject.as_bytes()) else {
            return;
        };
        let id = *id;
        let Some((channel, sequence)) = peek_ack(&msg.payload) else {
            return;
        };
        if channel != name.as_str() {
            return;
        }
        let Some(cs) = channels.get_mut(name) else {
            return;
        };
        let Some(sub) = cs.subs.get_mut(&id) else {
            return;
        };
        let was_stalled = sub.stalled();
        let mut acked = None;
        if sub.pending.remove(sequence).is_some() {
            acked = Some((id, was_stalled));
        } else if let Some(q) = sub.queue.clone()
            && let Some(g) = cs.queues.get(&q)
        {
            for mid in &g.members {
                if let Some(m) = cs.subs.get_mut(mid) {
                    let was = m.stalled();
                    if m.pending.remove(sequence).is_some() {
                        acked = Some((*mid, was));
                        break;
                    }
                }
            }
        }
        if let Some((sid, was_stalled)) = acked {
            match to_record.last_mut() {
                Some((ch, id, seqs)) if *id == sid && Arc::ptr_eq(ch, &cs.ch) => {
                    seqs.push(sequence);
                }
                _ => to_record.push((cs.ch.clone(), sid, vec![sequence])),
            }
            mark(lazy_subs, name);
            if was_stalled {
                mark(to_deliver, name);
            }
        }
    }

    pub(super) fn on_redelivery_timer(&mut self, name: &str, id: u64, at: Instant) {
        let Some(sub) = self
            .channels
            .get_mut(name)
            .and_then(|c| c.subs.get_mut(&id))
        else {
            return;
        };
        if sub.timer_at != Some(at) {
            return;
        }
        sub.timer_at = None;
        self.redeliver(name, id, false);
    }

    /// Resends pending messages of a subscription: all of them (`all`, a resumed durable or
    /// group), or those whose ack wait expired.
    pub(super) fn redeliver(&mut self, name: &str, id: u64, all: bool) {
        let Engine {
            channels,
            clients,
            outbox,
            stats,
            timers,
            lazy_subs,
            sink,
            recovering,
            ..
        } = self;
        let keep_member = all || *recovering;
        let Some(cs) = channels.get_mut(name) else {
            return;
        };
        let now = Instant::now();
        let Some(sub) = cs.subs.get_mut(&id) else {
            return;
        };
        if sub.offline || !sub.initialized {
            return;
        }
        let limit = now + REDELIVERY_SLACK;
        let due: Vec<(Instant, u64)> = if all {
            sub.pending.iter().map(|(s, p)| (p.expire, s)).collect()
        } else {
            sub.take_due(limit)
        };
        let healthy = Self::client_healthy(clients, &sub.st.client_id);
        let queue = sub.queue.clone();
        if queue.is_none() && !healthy && !all {
            // The client missed heartbeats: try again after another ack wait.
            let aw = sub.ack_wait();
            for (_, seq) in &due {
                if let Some(p) = sub.pending.get(*seq).copied() {
                    sub.add_pending(
                        *seq,
                        Pending {
                            expire: now + aw,
                            ..p
                        },
                    );
                }
            }
            Self::arm_sub_timer(timers, cs, name, id);
            return;
        }
        let mut touched = vec![id];
        for (_, seq) in due {
            let msg = match cs.ch.msgs().lookup(seq) {
                Ok(Some(m)) => m,
                _ => {
                    // Gone from the store (limits): nothing to redeliver.
                    if let Some(s) = cs.subs.get_mut(&id) {
                        s.pending.remove(seq);
                    }
                    let _ = sink.acked(&cs.ch, id, &[seq]);
                    mark(lazy_subs, name);
                    continue;
                }
            };
            // Queue members: the message may go to another (healthy, least loaded) member.
            let mut target = id;
            if let Some(q) = &queue
                && !keep_member
                && let Some(g) = cs.queues.get(q)
            {
                let mut best: Option<(u64, usize)> = None;
                for mid in &g.members {
                    let Some(m) = cs.subs.get(mid) else { continue };
                    if !m.initialized || !Self::client_healthy(clients, &m.st.client_id) {
                        continue;
                    }
                    if best.is_none_or(|(_, n)| m.pending.len() < n) {
                        best = Some((*mid, m.pending.len()));
                    }
                }
                if let Some((b, _)) = best {
                    target = b;
                }
            }
            let Some(pe) = cs.subs.get_mut(&id).and_then(|s| s.pending.remove(seq)) else {
                continue;
            };
            if target != id {
                let _ = sink.acked(&cs.ch, id, &[seq]);
                let _ = sink.pending(&cs.ch, target, &[seq]);
                mark(lazy_subs, name);
            }
            let Some(t) = cs.subs.get_mut(&target) else {
                continue;
            };
            let count = pe.count + 1;
            let payload = Self::encode_msg(&msg, true, count);
            stats.out_msgs += 1;
            stats.out_bytes += msg.data.len() as u64;
            outbox.push(&t.inbox, payload);
            let expire = now + t.ack_wait();
            t.add_pending(seq, Pending { expire, count });
            touched.push(target);
        }
        touched.sort_unstable();
        touched.dedup();
        for t in touched {
            Self::arm_sub_timer(timers, cs, name, t);
        }
    }
}
