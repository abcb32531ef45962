//! Monitoring answers computed from the engine's state (one consistent view, no locks: the
//! engine task answers between two batches of events).

use std::time::SystemTime;

use rnats_server::monitor::format::rfc3339;

use super::Engine;
use super::state::{ChannelState, Sub};
use crate::monitorz::*;
use crate::promz::{ChannelMetric, SubMetric};

fn subz(s: &Sub) -> Subscriptionz {
    Subscriptionz {
        client_id: s.st.client_id.clone(),
        inbox: s.st.inbox.clone(),
        ack_inbox: s.st.ack_inbox.clone(),
        durable_name: s.st.durable_name.clone(),
        queue_name: s.queue.clone().unwrap_or_default(),
        is_durable: s.st.is_durable,
        is_offline: s.offline,
        max_inflight: s.st.max_in_flight,
        ack_wait: s.st.ack_wait_in_secs,
        last_sent: s.st.last_sent,
        pending_count: s.pending.len(),
        is_stalled: s.stalled(),
    }
}

fn channelz(name: &str, cs: &ChannelState, subs: bool) -> Channelz {
    let st = cs.ch.msgs().state();
    Channelz {
        name: name.to_string(),
        msgs: st.msgs,
        bytes: st.bytes,
        first_seq: st.first_seq_or_zero(),
        last_seq: st.last,
        subs_count: Some(cs.subs.len()),
        subscriptions: subs.then(|| cs.subs.values().map(subz).collect()),
    }
}

fn sub_metric(s: &Sub) -> SubMetric {
    SubMetric {
        client_id: s.st.client_id.clone(),
        inbox: s.st.inbox.clone(),
        queue_name: s.queue.clone().unwrap_or_default(),
        is_durable: s.st.is_durable,
        is_offline: s.offline,
        last_sent: s.st.last_sent,
        pending: s.pending.len(),
        redelivered: s.pending.iter().filter(|(_, p)| p.count > 1).count(),
        max_inflight: s.st.max_in_flight,
        stalled: s.stalled(),
    }
}

impl Engine {
    /// Every channel's numbers, for `/metrics`.
    fn channel_metrics(&self) -> Vec<ChannelMetric> {
        self.channels
            .iter()
            .map(|(name, cs)| {
                let st = cs.ch.msgs().state();
                ChannelMetric {
                    name: name.clone(),
                    msgs: st.msgs,
                    bytes: st.bytes,
                    last_seq: st.last,
                    subs: cs.subs.values().map(sub_metric).collect(),
                }
            })
            .collect()
    }

    /// Computes the answer to a query from the engine's state.
    pub(super) fn answer(&self, q: &MonitorQuery) -> MonitorReply {
        let e = self;
        let now = rfc3339(SystemTime::now());
        let cid = e.opts.cluster_id.as_str();
        let sid = e.status.server_id.as_str();
        let (total_msgs, total_bytes) = e.channels.values().fold((0, 0), |(m, b), c| {
            let s = c.ch.msgs().state();
            (m + s.msgs, b + s.bytes)
        });
        let counts = || Counts {
            clients: e.clients.len(),
            subscriptions: e.channels.values().map(|c| c.subs.len()).sum(),
            channels: e.channels.len(),
            total_msgs,
            total_bytes,
            in_msgs: e.stats.in_msgs,
            in_bytes: e.stats.in_bytes,
            out_msgs: e.stats.out_msgs,
            out_bytes: e.stats.out_bytes,
        };
        match q {
            MonitorQuery::Serverz => serverz(&e.status, &counts()),
            MonitorQuery::Metrics => MonitorReply {
                status: 200,
                body: crate::promz::render(&e.status, &counts(), &self.channel_metrics()),
            },
            MonitorQuery::Storez => storez(&e.status, e.store.limits(), total_msgs, total_bytes),
            MonitorQuery::Clientsz {
                offset,
                limit,
                subs,
                client,
            } => {
                let clientz = |id: &str| -> Option<Clientz> {
                    let c = e.clients.get(id)?;
                    let subscriptions = subs.then(|| {
                        let mut m: std::collections::BTreeMap<String, Vec<Subscriptionz>> =
                            Default::default();
                        for (ch, sid) in &c.subs {
                            if let Some(s) = e.channels.get(ch).and_then(|cs| cs.subs.get(sid)) {
                                m.entry(ch.clone()).or_default().push(subz(s));
                            }
                        }
                        m
                    });
                    Some(Clientz {
                        id: id.to_string(),
                        hb_inbox: c.info.hb_inbox.clone(),
                        subs_count: c.subs.len(),
                        subscriptions,
                    })
                };
                if let Some(id) = client {
                    return match clientz(id) {
                        Some(c) => ok(&c),
                        None => not_found(format!("Client {id} not found")),
                    };
                }
                let total = e.clients.len();
                let clients: Vec<Clientz> = e
                    .clients
                    .keys()
                    .skip(*offset)
                    .take(*limit)
                    .filter_map(|id| clientz(id))
                    .collect();
                ok(&Clientsz {
                    cluster_id: cid,
                    server_id: sid,
                    now,
                    offset: *offset,
                    limit: *limit,
                    count: clients.len(),
                    total,
                    clients,
                })
            }
            MonitorQuery::Channelsz {
                offset,
                limit,
                subs,
                channel,
            } => {
                if let Some(name) = channel {
                    return match e.channels.get(name) {
                        Some(cs) => ok(&channelz(name, cs, *subs)),
                        None => not_found(format!("Channel {name} not found")),
                    };
                }
                let total = e.channels.len();
                let page: Vec<(&String, &ChannelState)> =
                    e.channels.iter().skip(*offset).take(*limit).collect();
                let (names, channels) = if *subs {
                    (
                        None,
                        Some(
                            page.iter()
                                .map(|(n, cs)| channelz(n, cs, true))
                                .collect::<Vec<_>>(),
                        ),
                    )
                } else {
                    (Some(page.iter().map(|(n, _)| (*n).clone()).collect()), None)
                };
                ok(&Channelsz {
                    cluster_id: cid,
                    server_id: sid,
                    now,
                    offset: *offset,
                    limit: *limit,
                    count: page.len(),
                    total,
                    names,
                    channels,
                })
            }
        }
    }
}
