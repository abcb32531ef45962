//! Recovery: the engine's state rebuilt from what the store recovered (clients, subscriptions
//! with their pending messages, durables and queue groups), then a redelivery pass for what
//! expired while the server was down.

use std::time::{Duration, Instant};

use rnats_streaming::seqmap::SeqMap;
use rnats_streaming::store::{RecoveredState, now_nanos};

use super::state::{ChannelState, Pending, Sub};
use super::{Engine, instant_from_nanos};

impl Engine {
    pub(crate) fn recover(&mut self, state: RecoveredState) {
        let now = Instant::now();
        let now_ns = now_nanos();
        for info in state.clients {
            self.add_client_state(info, now);
        }
        for rc in state.channels {
            let name = rc.channel.name().to_string();
            let mut cs = ChannelState::new(rc.channel.clone());
            for rs in rc.subscriptions {
                let mut st = rs.state;
                let client_known = self.clients.contains_key(&st.client_id);
                let durable_queue = st.is_durable && !st.q_group.is_empty();
                let plain_durable = st.is_durable && st.q_group.is_empty();
                if !client_known && !st.is_durable {
                    let _ = self.sink.sub_delete(&cs.ch, st.id);
                    self.dirty_subs.insert(name.clone());
                    continue;
                }
                let mut pending = SeqMap::new();
                let aw = Duration::from_secs(st.ack_wait_in_secs.max(1) as u64);
                for seq in rs.pending {
                    let ts = match cs.ch.msgs().lookup(seq) {
                        Ok(Some(m)) => m.timestamp,
                        _ => now_ns,
                    };
                    let expire = instant_from_nanos(ts, now_ns, now) + aw;
                    pending.insert(seq, Pending { expire, count: 0 });
                }
                let offline = if plain_durable {
                    st.is_closed || !client_known
                } else if durable_queue {
                    !client_known || st.client_id.is_empty()
                } else {
                    false
                };
                if plain_durable && offline && !st.is_closed {
                    st.is_closed = true;
                    let _ = self.sink.sub_update(&cs.ch, &st);
                    self.dirty_subs.insert(name.clone());
                }
                let queue = (!st.q_group.is_empty()).then(|| st.q_group.clone());
                let id = st.id;
                if let Some(q) = &queue {
                    let g = cs.queues.entry(q.clone()).or_default();
                    g.durable = st.is_durable;
                    g.last_sent = g.last_sent.max(st.last_sent);
                    if offline {
                        if let Some(prev) = g.shadow {
                            // Only one shadow per group: merge this one's pending into it.
                            let _ = self.sink.sub_delete(&cs.ch, id);
                            self.dirty_subs.insert(name.clone());
                            if let Some(p) = cs.subs.get_mut(&prev) {
                                for (seq, pe) in pending {
                                    let _ = self.sink.pending(&cs.ch, prev, &[seq]);
                                    p.add_pending(seq, pe);
                                }
                            }
                            continue;
                        }
                        g.shadow = Some(id);
                    } else {
                        g.members.push(id);
                    }
                }
                if plain_durable {
                    cs.durables
                        .insert((st.client_id.clone(), st.durable_name.clone()), id);
                }
                if !offline {
                    self.acks
                        .insert(st.ack_inbox.as_bytes().into(), (name.clone(), id));
                    if let Some(c) = self.clients.get_mut(&st.client_id) {
                        c.subs.insert((name.clone(), id));
                    }
                }
                let mut sub = Sub::new(st, pending, queue);
                sub.initialized = true;
                sub.offline = offline;
                cs.subs.insert(id, sub);
            }
            // A group with online members and a shadow: the members take the shadow's pending.
            let groups: Vec<String> = cs.queues.keys().cloned().collect();
            for g in groups {
                let (shadow, members) = {
                    let q = &cs.queues[&g];
                    (q.shadow, q.members.clone())
                };
                if let (Some(sh), false) = (shadow, members.is_empty()) {
                    if let Some(s) = cs.subs.remove(&sh) {
                        for (i, (seq, pe)) in s.pending.into_iter().enumerate() {
                            let to = members[i % members.len()];
                            let _ = self.sink.pending(&cs.ch, to, &[seq]);
                            if let Some(m) = cs.subs.get_mut(&to) {
                                m.add_pending(seq, pe);
                            }
                        }
                    }
                    let _ = self.sink.sub_delete(&cs.ch, sh);
                    self.dirty_subs.insert(name.clone());
                    if let Some(q) = cs.queues.get_mut(&g) {
                        q.shadow = None;
                    }
                }
            }
            self.channels.insert(name.clone(), cs);
            self.arm_channel_timers(&name);
            // Redeliver what expired while the server was down, before any new message.
            let ids: Vec<u64> = self.channels[&name].subs.keys().copied().collect();
            self.recovering = true;
            for id in ids {
                self.redeliver(&name, id, false);
            }
            self.recovering = false;
            self.to_deliver.insert(name);
        }
    }
}
