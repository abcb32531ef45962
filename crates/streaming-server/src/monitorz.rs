//! The monitoring model: the queries `/streaming/...` endpoints make, and the JSON documents
//! they answer with (nats-streaming-server's field names). The engine fills them from its
//! state ([`crate::engine`]); [`crate::monitor`] only serves them over HTTP.

use std::time::SystemTime;

use rnats_server::monitor::format::{rfc3339, uptime};
use rnats_streaming::store::StoreLimits;
use serde::Serialize;

use crate::options::VERSION;
use crate::status::Status;

/// A monitoring request, answered by the engine (or from [`Status`] when none runs).
#[derive(Debug, Clone)]
pub enum MonitorQuery {
    Serverz,
    Storez,
    Clientsz {
        offset: usize,
        limit: usize,
        subs: bool,
        client: Option<String>,
    },
    Channelsz {
        offset: usize,
        limit: usize,
        subs: bool,
        channel: Option<String>,
    },
    /// The streaming families of `/metrics` (Prometheus text, see `promz`).
    Metrics,
}

/// Status and JSON body.
#[derive(Debug, Clone)]
pub struct MonitorReply {
    pub status: u16,
    pub body: String,
}

pub(crate) fn ok<T: Serialize>(v: &T) -> MonitorReply {
    MonitorReply {
        status: 200,
        body: serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

pub(crate) fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize)]
pub(crate) struct Serverz<'a> {
    pub(crate) cluster_id: &'a str,
    pub(crate) server_id: &'a str,
    pub(crate) version: &'a str,
    pub(crate) go: &'a str,
    pub(crate) state: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) role: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) node_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) peers: Vec<String>,
    /// Clustered: the last RAFT log index applied to this node's store (an extension).
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) raft_last_applied: u64,
    /// Clustered: the RAFT term this node is in; it moves on with every election, so a
    /// leader change shows even when the same node wins again (an extension).
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) raft_term: u64,
    pub(crate) now: String,
    pub(crate) start_time: String,
    pub(crate) uptime: String,
    pub(crate) clients: usize,
    pub(crate) subscriptions: usize,
    pub(crate) channels: usize,
    pub(crate) total_msgs: u64,
    pub(crate) total_bytes: u64,
    pub(crate) in_msgs: u64,
    pub(crate) in_bytes: u64,
    pub(crate) out_msgs: u64,
    pub(crate) out_bytes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) open_fds: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) max_fds: u64,
}

#[derive(Serialize)]
pub(crate) struct LimitsJson {
    pub(crate) max_msgs: u64,
    pub(crate) max_bytes: u64,
    pub(crate) max_age: u64,
    pub(crate) max_subscriptions: u64,
    pub(crate) max_inactivity: u64,
}

#[derive(Serialize)]
pub(crate) struct StoreLimitsJson {
    pub(crate) max_channels: u64,
    pub(crate) max_msgs: u64,
    pub(crate) max_bytes: u64,
    pub(crate) max_age: u64,
    pub(crate) max_subscriptions: u64,
    pub(crate) max_inactivity: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) channels: Option<std::collections::BTreeMap<String, LimitsJson>>,
}

#[derive(Serialize)]
pub(crate) struct Storez<'a> {
    pub(crate) cluster_id: &'a str,
    pub(crate) server_id: &'a str,
    pub(crate) now: String,
    #[serde(rename = "type")]
    pub(crate) kind: &'a str,
    pub(crate) limits: StoreLimitsJson,
    pub(crate) total_msgs: u64,
    pub(crate) total_bytes: u64,
}

#[derive(Serialize)]
pub(crate) struct Subscriptionz {
    pub(crate) client_id: String,
    pub(crate) inbox: String,
    pub(crate) ack_inbox: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) durable_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) queue_name: String,
    pub(crate) is_durable: bool,
    pub(crate) is_offline: bool,
    pub(crate) max_inflight: i32,
    pub(crate) ack_wait: i32,
    pub(crate) last_sent: u64,
    pub(crate) pending_count: usize,
    pub(crate) is_stalled: bool,
}

#[derive(Serialize)]
pub(crate) struct Clientz {
    pub(crate) id: String,
    pub(crate) hb_inbox: String,
    pub(crate) subs_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subscriptions: Option<std::collections::BTreeMap<String, Vec<Subscriptionz>>>,
}

#[derive(Serialize)]
pub(crate) struct Clientsz<'a> {
    pub(crate) cluster_id: &'a str,
    pub(crate) server_id: &'a str,
    pub(crate) now: String,
    pub(crate) offset: usize,
    pub(crate) limit: usize,
    pub(crate) count: usize,
    pub(crate) total: usize,
    pub(crate) clients: Vec<Clientz>,
}

#[derive(Serialize)]
pub(crate) struct Channelz {
    pub(crate) name: String,
    pub(crate) msgs: u64,
    pub(crate) bytes: u64,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subs_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subscriptions: Option<Vec<Subscriptionz>>,
}

#[derive(Serialize)]
pub(crate) struct Channelsz<'a> {
    pub(crate) cluster_id: &'a str,
    pub(crate) server_id: &'a str,
    pub(crate) now: String,
    pub(crate) offset: usize,
    pub(crate) limit: usize,
    pub(crate) count: usize,
    pub(crate) total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) channels: Option<Vec<Channelz>>,
}

pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn not_found(msg: String) -> MonitorReply {
    MonitorReply {
        status: 404,
        body: msg,
    }
}

/// The counters `/streaming/serverz` reports.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) clients: usize,
    pub(crate) subscriptions: usize,
    pub(crate) channels: usize,
    pub(crate) total_msgs: u64,
    pub(crate) total_bytes: u64,
    pub(crate) in_msgs: u64,
    pub(crate) in_bytes: u64,
    pub(crate) out_msgs: u64,
    pub(crate) out_bytes: u64,
}

pub(crate) fn serverz(st: &Status, c: &Counts) -> MonitorReply {
    let raft = st.raft();
    ok(&Serverz {
        role: raft.as_ref().map(|r| r.role.clone()).unwrap_or_default(),
        node_id: raft.as_ref().map(|r| r.node_id.clone()).unwrap_or_default(),
        raft_last_applied: raft.as_ref().map_or(0, |r| r.last_applied),
        raft_term: raft.as_ref().map_or(0, |r| r.term),
        peers: raft.map(|r| r.peers).unwrap_or_default(),
        cluster_id: &st.opts.cluster_id,
        server_id: &st.server_id,
        version: VERSION,
        go: concat!("rust-", env!("CARGO_PKG_VERSION")),
        state: st.state().as_str(),
        now: rfc3339(SystemTime::now()),
        start_time: rfc3339(st.start_time),
        uptime: uptime(st.start_time.elapsed().unwrap_or_default()),
        clients: c.clients,
        subscriptions: c.subscriptions,
        channels: c.channels,
        total_msgs: c.total_msgs,
        total_bytes: c.total_bytes,
        in_msgs: c.in_msgs,
        in_bytes: c.in_bytes,
        out_msgs: c.out_msgs,
        out_bytes: c.out_bytes,
        open_fds: 0,
        max_fds: 0,
    })
}

pub(crate) fn storez(
    st: &Status,
    l: &StoreLimits,
    total_msgs: u64,
    total_bytes: u64,
) -> MonitorReply {
    let channels = (!l.per_channel.is_empty()).then(|| {
        l.per_channel
            .keys()
            .map(|name| {
                let r = l.resolve(name);
                (
                    name.clone(),
                    LimitsJson {
                        max_msgs: r.max_msgs,
                        max_bytes: r.max_bytes,
                        max_age: nanos(r.max_age),
                        max_subscriptions: r.max_subs,
                        max_inactivity: nanos(r.max_inactivity),
                    },
                )
            })
            .collect()
    });
    ok(&Storez {
        cluster_id: &st.opts.cluster_id,
        server_id: &st.server_id,
        now: rfc3339(SystemTime::now()),
        kind: st.opts.store_type.as_str(),
        limits: StoreLimitsJson {
            max_channels: l.max_channels,
            max_msgs: l.channel.max_msgs,
            max_bytes: l.channel.max_bytes,
            max_age: nanos(l.channel.max_age),
            max_subscriptions: l.channel.max_subs,
            max_inactivity: nanos(l.channel.max_inactivity),
            channels,
        },
        total_msgs,
        total_bytes,
    })
}

/// The answer of a server without an engine (an FT standby): its identity, no clients, no
/// channels.
pub(crate) fn standby(st: &Status, q: &MonitorQuery) -> MonitorReply {
    let now = rfc3339(SystemTime::now());
    let (cluster_id, server_id) = (st.opts.cluster_id.as_str(), st.server_id.as_str());
    match q {
        MonitorQuery::Serverz => serverz(st, &Counts::default()),
        MonitorQuery::Metrics => MonitorReply {
            status: 200,
            body: crate::promz::render(st, &Counts::default(), &[]),
        },
        MonitorQuery::Storez => storez(st, &st.opts.limits, 0, 0),
        MonitorQuery::Clientsz {
            client: Some(id), ..
        } => not_found(format!("Client {id} not found")),
        MonitorQuery::Channelsz {
            channel: Some(name),
            ..
        } => not_found(format!("Channel {name} not found")),
        MonitorQuery::Clientsz { offset, limit, .. } => ok(&Clientsz {
            cluster_id,
            server_id,
            now,
            offset: *offset,
            limit: *limit,
            count: 0,
            total: 0,
            clients: Vec::new(),
        }),
        MonitorQuery::Channelsz {
            offset,
            limit,
            subs,
            ..
        } => ok(&Channelsz {
            cluster_id,
            server_id,
            now,
            offset: *offset,
            limit: *limit,
            count: 0,
            total: 0,
            names: (!subs).then(Vec::new),
            channels: subs.then(Vec::new),
        }),
    }
}
