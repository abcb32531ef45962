//! The routing core: how a published message reaches its receivers. Every publisher (a
//! client's reader, a [`crate::LocalConn`]) owns a [`Router`]; a route's reader, which
//! delivers to local subscribers only, uses [`deliver_to`] and a [`Batch`] directly.
//!
//! A message ([`Message`]) is borrowed from the publisher's read buffer. The router looks its
//! subject up (its own match cache first, valid while the sublist's generation holds, then the
//! sublist), appends it to each local subscriber's outbound buffer (one random member per
//! queue group, weighted by member counts when routes are in the group) and once to each route
//! with interest. The [`Batch`] remembers the writers touched, to be flushed or woken once
//! when the publisher's batch is done, and the subscriber to stall on when one falls far
//! behind.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rand::{Rng, SeedableRng, rngs::SmallRng};
use rnats_protocol::Message;

use crate::conn::Subscription;
use crate::conn::{ClientShared, CloseReason, Enqueued};
use crate::state::ServerShared;
use crate::sublist::{MatchCache, SubResult, Sublist};

/// Most subjects a publisher caches match results (and publish permissions) for.
pub(crate) const LOCAL_CACHE_MAX: usize = 512;

/// Adds what a publisher sent (counted per batch, not per message) to the server's and the
/// connection's inbound counters.
pub(crate) fn count_in(srv: &ServerShared, me: &ClientShared, msgs: u64, bytes: u64) {
    srv.stats.in_msgs.fetch_add(msgs, Ordering::Relaxed);
    srv.stats.in_bytes.fetch_add(bytes, Ordering::Relaxed);
    me.stats.in_msgs.fetch_add(msgs, Ordering::Relaxed);
    me.stats.in_bytes.fetch_add(bytes, Ordering::Relaxed);
}

/// A reader's own cache of sublist match results, so that a message costs no lock and no
/// shared cache line: valid while the sublist's generation holds, at most `LOCAL_CACHE_MAX`
/// subjects.
#[derive(Default)]
pub(crate) struct Matches {
    cache: MatchCache<Subscription>,
    generation: u64,
}

impl Matches {
    /// Empties the cache if the sublist changed since it was filled; true when it did. Once
    /// per message, before [`Matches::get`].
    #[inline]
    pub(crate) fn revalidate(&mut self, sublist: &Sublist<Subscription>) -> bool {
        let generation = sublist.generation();
        if generation == self.generation {
            return false;
        }
        self.cache.clear();
        self.generation = generation;
        true
    }

    /// The subscriptions matching `subject`.
    #[inline]
    pub(crate) fn get(
        &mut self,
        sublist: &Sublist<Subscription>,
        subject: &[u8],
    ) -> Arc<SubResult<Subscription>> {
        if let Some(hit) = self.cache.get(subject) {
            return hit.clone();
        }
        let result = sublist.matches(subject);
        if self.cache.len() >= LOCAL_CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(subject.into(), result.clone());
        result
    }

    pub(crate) fn clear(&mut self) {
        self.cache.clear();
    }
}

/// Routes published messages: to local subscribers (queue groups spread at random) and once
/// per route that has interest. A publisher (a connection's reader, a local connection) owns
/// one, with its match cache and the writers it touched since it last woke them.
pub(crate) struct Router {
    /// Writers to wake and counters to publish once the publisher's batch is processed.
    pub batch: Batch,
    matches: Matches,
    /// The subject routed last and its result (same generation): a run of messages to one
    /// subject, such as a batch of deliveries to one inbox, skips the hash lookup.
    last_subject: Vec<u8>,
    last_result: Option<Arc<SubResult<Subscription>>>,
    rng: SmallRng,
    /// Routes this message goes to, with the queue groups (indices) each is picked for.
    route_targets: Vec<(Arc<ClientShared>, Vec<usize>)>,
}

impl Router {
    pub(crate) fn new() -> Router {
        Router {
            batch: Batch::default(),
            matches: Matches::default(),
            last_subject: Vec::new(),
            last_result: None,
            rng: SmallRng::from_os_rng(),
            route_targets: Vec::new(),
        }
    }

    pub(crate) fn clear_cache(&mut self) {
        self.matches.clear();
        self.last_result = None;
    }

    /// Delivers `msg` to whoever wants it (not to `skip_cid`, a publisher with echo off);
    /// returns how many subscribers and routes got it.
    pub(crate) fn route(
        &mut self,
        srv: &ServerShared,
        msg: &Message<'_>,
        skip_cid: Option<u64>,
    ) -> usize {
        if self.matches.revalidate(&srv.sublist) {
            self.last_result = None;
        }
        // The memo is moved out and back rather than cloned: no atomic per message.
        let result = match self.last_result.take() {
            Some(last) if self.last_subject == msg.subject => last,
            _ => {
                let result = self.matches.get(&srv.sublist, msg.subject);
                self.last_subject.clear();
                self.last_subject.extend_from_slice(msg.subject);
                result
            }
        };
        let mut delivered = 0usize;
        let mut routed = false;
        for sub in &result.plain {
            if sub.client.is_route {
                routed |= self.route_target(&sub.client, None);
            } else {
                delivered += usize::from(deliver_to(srv, &mut self.batch, sub, msg, skip_cid));
            }
        }
        for (gi, group) in result.queues.iter().enumerate() {
            let n = group.members.len();
            // Local members weigh 1, a route its advertised member count.
            let total: u64 = group
                .members
                .iter()
                .map(|m| u64::from(m.weight.load(Ordering::Relaxed).max(1)))
                .sum();
            let mut pick = if n > 1 {
                self.rng.random_range(0..total)
            } else {
                0
            };
            let mut start = 0;
            for (i, m) in group.members.iter().enumerate() {
                let w = u64::from(m.weight.load(Ordering::Relaxed).max(1));
                if pick < w {
                    start = i;
                    break;
                }
                pick -= w;
            }
            let chosen = &group.members[start];
            if chosen.client.is_route {
                routed |= self.route_target(&chosen.client, Some(gi));
                continue;
            }
            for i in 0..n {
                let member = &group.members[(start + i) % n];
                if !member.client.is_route
                    && deliver_to(srv, &mut self.batch, member, msg, skip_cid)
                {
                    delivered += 1;
                    break;
                }
            }
        }
        if routed {
            delivered += self.send_route_targets(&result, msg);
        }
        self.last_result = Some(result);
        delivered
    }

    /// Notes that `route` gets this message (once per route), for queue group `group`.
    fn route_target(&mut self, route: &Arc<ClientShared>, group: Option<usize>) -> bool {
        let entry = match self
            .route_targets
            .iter_mut()
            .position(|(r, _)| r.cid == route.cid)
        {
            Some(i) => &mut self.route_targets[i],
            None => {
                self.route_targets.push((route.clone(), Vec::new()));
                self.route_targets.last_mut().expect("just pushed")
            }
        };
        if let Some(g) = group {
            entry.1.push(g);
        }
        true
    }

    /// Writes one RMSG/HMSG per route target; returns how many routes got the message.
    fn send_route_targets(&mut self, result: &SubResult<Subscription>, msg: &Message<'_>) -> usize {
        let mut sent = 0;
        for (route, groups) in self.route_targets.drain(..) {
            let queues = groups.iter().map(|&g| &*result.queues[g].name);
            let header = msg.header_len.map(|_| (msg.header_token, msg.size_token));
            let len = msg.subject.len() + msg.reply.map_or(0, <[u8]>::len) + msg.payload.len() + 64;
            let enqueued = route.enqueue(len, Some(msg.payload.len()), None, |out| {
                rnats_protocol::write_rmsg(
                    out,
                    b"$G",
                    msg.subject,
                    msg.reply,
                    queues,
                    header,
                    msg.size_token,
                    msg.payload,
                );
            });
            // Routes have no max_pending; a route that falls behind slows its publishers
            // down like a subscriber does, and TCP carries that back to the other server.
            if let Enqueued::Yes {
                schedule, pending, ..
            } = enqueued
            {
                if schedule {
                    self.batch.touched.push(route.clone());
                }
                if pending > route.stall_threshold() && self.batch.stall.is_none() {
                    self.batch.stall = Some(route.clone());
                }
                sent += 1;
            }
        }
        sent
    }
}

/// What one reader's batch of input did to others: writers to wake at its end, and server
/// counters added once per batch rather than per message (no shared cache line per message).
#[derive(Default)]
pub(crate) struct Batch {
    pub touched: Vec<Arc<ClientShared>>,
    /// A subscriber so far behind that the publisher should wait for it before reading on.
    pub stall: Option<Arc<ClientShared>>,
    pub out_msgs: u64,
    pub out_bytes: u64,
    /// `-V`: deliveries are traced on the receiving connection (fixed when the reader starts).
    pub trace: bool,
}

impl Batch {
    /// Publishes the counters; the caller then wakes `touched`.
    pub fn finish(&mut self, srv: &ServerShared) {
        if self.out_msgs > 0 {
            srv.stats
                .out_msgs
                .fetch_add(self.out_msgs, Ordering::Relaxed);
            srv.stats
                .out_bytes
                .fetch_add(self.out_bytes, Ordering::Relaxed);
            self.out_msgs = 0;
            self.out_bytes = 0;
        }
    }

    /// Publishes the counters and wakes every touched writer.
    pub fn wake_all(&mut self, srv: &ServerShared) {
        self.finish(srv);
        for client in self.touched.drain(..) {
            client.flush_or_wake();
        }
    }
}

/// Queues `msg` for the local subscription `sub`; false when it was not delivered (the
/// publisher itself with echo off, closed, past its max, filtered by permissions).
pub(crate) fn deliver_to(
    srv: &ServerShared,
    batch: &mut Batch,
    sub: &Arc<Subscription>,
    msg: &Message<'_>,
    skip_cid: Option<u64>,
) -> bool {
    {
        let client = &sub.client;
        if skip_cid == Some(client.cid) || sub.is_closed() {
            return false;
        }
        if let Some(perms) = &sub.deliver_filter
            && !perms.can_deliver(msg.subject)
        {
            return false;
        }
        let to_headers = client.wants_headers();
        let body = match msg.header_len {
            Some(h) if !to_headers => &msg.payload[h..],
            _ => msg.payload,
        };
        let len = msg.subject.len()
            + sub.sid.len()
            + msg.reply.map_or(0, <[u8]>::len)
            + msg.payload.len()
            + 40;
        let enqueued = if client.local {
            let (headers, body) = match msg.header_len {
                Some(h) => (Some(&msg.payload[..h]), &msg.payload[h..]),
                None => (None, msg.payload),
            };
            client.enqueue_local(sub, msg.subject, msg.reply, headers, body)
        } else {
            client.enqueue(len, Some(body.len()), Some(sub), |out| {
                match msg.header_len {
                    Some(_) if to_headers => rnats_protocol::write_hmsg(
                        out,
                        msg.subject,
                        &sub.sid,
                        msg.reply,
                        msg.header_token,
                        msg.size_token,
                        msg.payload,
                    ),
                    Some(_) => {
                        rnats_protocol::write_msg(out, msg.subject, &sub.sid, msg.reply, None, body)
                    }
                    None => rnats_protocol::write_msg(
                        out,
                        msg.subject,
                        &sub.sid,
                        msg.reply,
                        Some(msg.size_token),
                        body,
                    ),
                }
            })
        };
        match enqueued {
            Enqueued::Yes {
                schedule,
                pending,
                count,
            } => {
                if schedule {
                    batch.touched.push(client.clone());
                }
                if pending > client.stall_threshold() && batch.stall.is_none() {
                    batch.stall = Some(client.clone());
                }
                if batch.trace && !client.local {
                    trace_delivery(srv, client, sub, msg, body, to_headers);
                }
                if let (Some(perm), Some(reply)) = (sub.response_perm, msg.reply) {
                    client.grant_reply(reply, perm);
                }
                batch.out_msgs += 1;
                batch.out_bytes += body.len() as u64;
                if count == sub.max() {
                    srv.remove_subscription(sub);
                }
                true
            }
            Enqueued::Closed | Enqueued::OverMax => false,
            Enqueued::SlowConsumer => {
                close_slow_consumer(srv, client);
                false
            }
        }
    }
}

/// Closes `client`, whose pending bytes would pass `max_pending`, as a slow consumer.
pub(crate) fn close_slow_consumer(srv: &ServerShared, client: &ClientShared) {
    if client.close(CloseReason::SlowConsumerPendingBytes, false) {
        srv.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "{} - Slow Consumer Detected: MaxPending of {} Exceeded",
            client.log_id(),
            srv.opts().max_pending
        );
    }
}

/// `-V`: the `MSG`/`HMSG` line and payload a subscriber was sent, as nats-server traces them.
fn trace_delivery(
    srv: &ServerShared,
    client: &ClientShared,
    sub: &Subscription,
    msg: &Message<'_>,
    body: &[u8],
    to_headers: bool,
) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let reply = msg
        .reply
        .map(|r| format!(" {}", text(r)))
        .unwrap_or_default();
    let (line, payload) = match msg.header_len {
        Some(h) if to_headers => (
            format!(
                "HMSG {} {}{reply} {h} {}",
                text(msg.subject),
                text(&sub.sid),
                msg.payload.len()
            ),
            msg.payload,
        ),
        _ => (
            format!(
                "MSG {} {}{reply} {}",
                text(msg.subject),
                text(&sub.sid),
                body.len()
            ),
            body,
        ),
    };
    client.trace_msg_out(&line, payload, srv.opts().max_traced_msg_len);
}
