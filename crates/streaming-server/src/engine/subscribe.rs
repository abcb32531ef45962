//! Subscriptions: create (every start position, durables, queue groups), resume, and
//! unsubscribe or close (durables go offline, queue members hand over their pending messages).

use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use rnats_streaming::proto::{
    StartPosition, SubState, SubscriptionRequest, SubscriptionResponse, UnsubscribeRequest,
};
use rnats_streaming::seqmap::SeqMap;
use rnats_streaming::store::{Channel, is_valid_channel_name, now_nanos};
use tracing::debug;

use super::state::{Pending, QGroup, Sub};
use super::{Engine, ProtocolError, encode};
use crate::nats::{InMsg, Subject};

/// Pending messages of a queue member that left go to the others after this delay.
pub(super) const QUEUE_REASSIGN_DELAY: Duration = Duration::from_millis(100);

impl Engine {
    pub(super) fn sub_response(
        &mut self,
        reply: &Option<Subject>,
        ack_inbox: String,
        error: Option<ProtocolError>,
    ) {
        let p = encode(&SubscriptionResponse {
            ack_inbox,
            error: error.map(|e| e.to_string()).unwrap_or_default(),
        });
        self.reply(reply, p);
    }

    pub(super) fn on_subscribe(&mut self, msg: InMsg) {
        let reply = msg.reply.clone();
        let Ok(sr) = SubscriptionRequest::decode(msg.payload.clone()) else {
            return self.sub_response(&reply, String::new(), Some(ProtocolError::InvalidSubReq));
        };
        if !self.serves(&sr.subject) {
            // Partitioning: another server may own the channel; if none does, the client
            // times out (the reference's behaviour).
            return;
        }
        match self.subscribe(&sr) {
            // The response goes out before anything is delivered (commit sends replies first).
            Ok(ack_inbox) => self.sub_response(&reply, ack_inbox, None),
            Err(e) => {
                debug!(
                    "STREAM: [Client:{}] Subscription on {:?} rejected: {e}",
                    sr.client_id, sr.subject
                );
                self.sub_response(&reply, String::new(), Some(e))
            }
        }
    }

    pub(super) fn start_last_sent(
        ch: &Channel,
        sr: &SubscriptionRequest,
        pos: StartPosition,
    ) -> u64 {
        let s = ch.msgs().state();
        if s.msgs == 0 {
            return s.last;
        }
        match pos {
            StartPosition::NewOnly => s.last,
            StartPosition::LastReceived => s.last - 1,
            StartPosition::TimeDeltaStart => {
                let start = now_nanos().saturating_sub(sr.start_time_delta);
                match ch.msgs().sequence_for_timestamp(start) {
                    Ok(seq) => seq.saturating_sub(1).min(s.last),
                    Err(_) => s.last,
                }
            }
            StartPosition::SequenceStart => {
                let q = sr.start_sequence;
                if q == 0 || q < s.first {
                    s.first - 1
                } else if q > s.last {
                    s.last
                } else {
                    q - 1
                }
            }
            StartPosition::First => s.first - 1,
        }
    }

    pub(super) fn subscribe(&mut self, sr: &SubscriptionRequest) -> Result<String, ProtocolError> {
        if sr.client_id.is_empty() {
            return Err(ProtocolError::MissingClient);
        }
        if sr.ack_wait_in_secs <= 0 {
            return Err(ProtocolError::InvalidAckWait);
        }
        if sr.max_in_flight <= 0 {
            return Err(ProtocolError::InvalidMaxInflight);
        }
        let Ok(pos) = StartPosition::try_from(sr.start_position) else {
            return Err(ProtocolError::InvalidStart);
        };
        if !is_valid_channel_name(&sr.subject) {
            return Err(ProtocolError::InvalidSubject);
        }
        if !self.clients.contains_key(&sr.client_id) {
            return Err(ProtocolError::UnknownClient);
        }
        let name = sr.subject.clone();
        let ch = self.lookup_or_create(&name)?;
        let durable = !sr.durable_name.is_empty();
        if !sr.q_group.is_empty() && durable && sr.durable_name.contains(':') {
            return Err(ProtocolError::DurableQueueColon);
        }
        let ack_inbox = format!("{}.{}", self.subjects.acks, nuid::next());
        let cid = sr.client_id.clone();

        // The subscription this request creates or resumes.
        let mut resume: Option<u64> = None;
        let mut queue: Option<String> = None;
        let mut last_sent = 0u64;
        if !sr.q_group.is_empty() {
            let key = if durable {
                format!("{}:{}", sr.durable_name, sr.q_group)
            } else {
                sr.q_group.clone()
            };
            let cs = self
                .channels
                .get_mut(&name)
                .expect("channel just looked up");
            match cs.queues.get(&key) {
                Some(g) if !g.members.is_empty() => last_sent = g.last_sent,
                Some(g) if g.shadow.is_some() => resume = g.shadow,
                _ => last_sent = Self::start_last_sent(&ch, sr, pos),
            }
            queue = Some(key);
        } else if durable {
            let cs = self.channels.get(&name).expect("channel just looked up");
            if let Some(&id) = cs.durables.get(&(cid.clone(), sr.durable_name.clone())) {
                let online = cs.subs.get(&id).is_some_and(|s| !s.offline);
                if online {
                    if !self.opts.replace_durable {
                        return Err(ProtocolError::DuplicateDurable);
                    }
                    self.remove_sub(&name, id, false);
                }
                resume = Some(id);
            } else {
                last_sent = Self::start_last_sent(&ch, sr, pos);
            }
        } else {
            last_sent = Self::start_last_sent(&ch, sr, pos);
        }

        let cs = self
            .channels
            .get_mut(&name)
            .expect("channel just looked up");
        let id = if let Some(id) = resume {
            let sub = cs.subs.get_mut(&id).expect("resumed sub exists");
            sub.st.client_id = cid.clone();
            sub.set_inbox(&sr.inbox);
            sub.st.ack_inbox = ack_inbox.clone();
            sub.st.max_in_flight = sr.max_in_flight;
            sub.st.ack_wait_in_secs = sr.ack_wait_in_secs;
            sub.st.is_closed = false;
            sub.offline = false;
            sub.initialized = false;
            self.sink.sub_update(&cs.ch, &sub.st)?;
            if let Some(q) = &queue
                && let Some(g) = cs.queues.get_mut(q)
            {
                g.shadow = None;
                g.members.push(id);
            }
            id
        } else {
            let mut st = SubState {
                id: 0,
                client_id: cid.clone(),
                q_group: queue.clone().unwrap_or_default(),
                inbox: sr.inbox.clone(),
                ack_inbox: ack_inbox.clone(),
                max_in_flight: sr.max_in_flight,
                ack_wait_in_secs: sr.ack_wait_in_secs,
                durable_name: if queue.is_some() {
                    String::new()
                } else {
                    sr.durable_name.clone()
                },
                last_sent,
                is_durable: durable,
                is_closed: false,
            };
            self.sink
                .sub_create(&cs.ch, &mut cs.max_sub_id, cs.subs.len(), &mut st)?;
            let id = st.id;
            if let Some(q) = &queue {
                let g = cs.queues.entry(q.clone()).or_insert_with(|| QGroup {
                    durable,
                    last_sent,
                    ..Default::default()
                });
                g.members.push(id);
            } else if durable {
                cs.durables
                    .insert((cid.clone(), sr.durable_name.clone()), id);
            }
            cs.subs
                .insert(id, Sub::new(st, SeqMap::new(), queue.clone()));
            id
        };
        cs.inactivity_at = None;
        self.dirty_subs.insert(name.clone());
        self.acks
            .insert(ack_inbox.as_bytes().into(), (name.clone(), id));
        if let Some(c) = self.clients.get_mut(&cid) {
            c.subs.insert((name.clone(), id));
        }
        debug!(
            "STREAM: [Client:{cid}] Started subscription on {name:?} (inbox={}, queue={:?}, durable={:?}, resumed={})",
            sr.inbox,
            queue,
            sr.durable_name,
            resume.is_some()
        );
        // Marked initialized now; its first messages are produced at commit, after the reply.
        if let Some(sub) = self
            .channels
            .get_mut(&name)
            .and_then(|c| c.subs.get_mut(&id))
        {
            sub.initialized = true;
        }
        if resume.is_some() {
            self.redeliver(&name, id, true);
        }
        self.to_deliver.insert(name);
        Ok(ack_inbox)
    }

    // -----------------------------------------------------------------------------------------
    // Unsubscribe / close subscription
    // -----------------------------------------------------------------------------------------

    pub(super) fn on_unsubscribe(&mut self, msg: InMsg, unsubscribe: bool) {
        let reply = msg.reply.clone();
        let Ok(req) = UnsubscribeRequest::decode(msg.payload.clone()) else {
            return self.sub_response(&reply, String::new(), Some(ProtocolError::InvalidUnsubReq));
        };
        if !self.serves(&req.subject) {
            return;
        }
        let Some(cs) = self.channels.get(&req.subject) else {
            return self.sub_response(&reply, String::new(), Some(ProtocolError::UnknownChannel));
        };
        let by_ack = self
            .acks
            .get(req.inbox.as_bytes())
            .filter(|(c, _)| *c == req.subject)
            .map(|(_, id)| *id);
        let id = by_ack.or_else(|| {
            cs.subs
                .values()
                .find(|s| !s.offline && s.st.inbox == req.inbox)
                .map(|s| s.st.id)
        });
        let Some(id) = id else {
            return self.sub_response(&reply, String::new(), Some(ProtocolError::InvalidSub));
        };
        let owner = cs.subs[&id].st.client_id.clone();
        if owner != req.client_id || !self.clients.contains_key(&req.client_id) {
            return self.sub_response(&reply, String::new(), Some(ProtocolError::UnknownClient));
        }
        if let Some(c) = self.clients.get_mut(&req.client_id) {
            c.subs.remove(&(req.subject.clone(), id));
        }
        debug!(
            "STREAM: [Client:{}] {} subscription on {:?}",
            req.client_id,
            if unsubscribe {
                "Unsubscribed"
            } else {
                "Closed"
            },
            req.subject
        );
        self.remove_sub(&req.subject, id, unsubscribe);
        self.reply(&reply, Bytes::new());
    }

    /// Removes a subscription (unsubscribe) or takes it offline (close of a durable, last
    /// member of a durable queue group).
    pub(super) fn remove_sub(&mut self, name: &str, id: u64, unsubscribe: bool) {
        let Some(cs) = self.channels.get_mut(name) else {
            return;
        };
        let Some(sub) = cs.subs.get_mut(&id) else {
            return;
        };
        if sub.offline {
            if unsubscribe {
                let key = (sub.st.client_id.clone(), sub.st.durable_name.clone());
                if let Some(q) = sub.queue.clone() {
                    cs.queues.remove(&q);
                } else {
                    cs.durables.remove(&key);
                }
                let _ = self.sink.sub_delete(&cs.ch, id);
                cs.subs.remove(&id);
                self.dirty_subs.insert(name.to_string());
            }
            return;
        }
        self.acks.remove(sub.st.ack_inbox.as_bytes());
        if let Some(c) = self.clients.get_mut(&sub.st.client_id) {
            c.subs.remove(&(name.to_string(), id));
        }
        self.dirty_subs.insert(name.to_string());
        sub.timer_at = None;
        if let Some(q) = sub.queue.clone() {
            let group = cs.queues.get_mut(&q).expect("member's group exists");
            group.members.retain(|m| *m != id);
            if !group.members.is_empty() {
                // Its pending messages go to the remaining members, redelivered shortly.
                let sub = cs.subs.remove(&id).expect("sub exists");
                let _ = self.sink.sub_delete(&cs.ch, id);
                let members = group.members.clone();
                let at = Instant::now() + QUEUE_REASSIGN_DELAY;
                for (i, (seq, pe)) in sub.pending.into_iter().enumerate() {
                    let to = members[i % members.len()];
                    let _ = self.sink.pending(&cs.ch, to, &[seq]);
                    if let Some(m) = cs.subs.get_mut(&to) {
                        m.add_pending(
                            seq,
                            Pending {
                                expire: at,
                                count: pe.count,
                            },
                        );
                    }
                }
                for m in members {
                    self.arm_redelivery(name, m);
                }
                self.to_deliver.insert(name.to_string());
            } else if group.durable && !unsubscribe {
                group.shadow = Some(id);
                sub.offline = true;
                sub.st.client_id.clear();
                let _ = self.sink.sub_update(&cs.ch, &sub.st);
            } else {
                cs.queues.remove(&q);
                cs.subs.remove(&id);
                let _ = self.sink.sub_delete(&cs.ch, id);
            }
        } else if sub.st.is_durable && !unsubscribe {
            sub.offline = true;
            sub.st.is_closed = true;
            let _ = self.sink.sub_update(&cs.ch, &sub.st);
        } else {
            if sub.st.is_durable {
                let key = (sub.st.client_id.clone(), sub.st.durable_name.clone());
                cs.durables.remove(&key);
            }
            cs.subs.remove(&id);
            let _ = self.sink.sub_delete(&cs.ch, id);
        }
        self.check_inactivity(name);
    }
}
