//! The streaming families of `/metrics` (after the core server's), under the names
//! prometheus-nats-exporter gives them when it scrapes `/streaming/serverz` and
//! `/streaming/channelsz?subs=1` (label `server`: this server's id):
//!
//! * `nss_server_{bytes_total,msgs_total,channels,subscriptions,clients}` and
//!   `nss_server_info{cluster_id,server_id,version,go_version,state,role,start_time}`;
//! * per channel `nss_chan_{bytes_total,msgs_total,last_seq}{channel}`, and per subscription
//!   `nss_chan_subs_{last_sent,pending_count,max_inflight}{channel,client_id,inbox,
//!   queue_name,is_durable,is_offline}`.
//!
//! Beyond the exporter (same labels): `nss_server_{in,out}_{msgs,bytes}` counters,
//! `nss_chan_subscriptions`, `nss_chan_subs_redelivered_count` (pending messages sent more
//! than once), `nss_chan_subs_stalled`, `nss_server_ft_active` (fault-tolerance group
//! members: 1 on the active server) and `nss_server_raft_role{role}`,
//! `nss_server_raft_peers`, `nss_server_raft_last_applied` (clustered nodes).

use std::fmt::Write;

use rnats_server::monitor::format::rfc3339;
use rnats_server::monitor::metrics_escape as escape;

use crate::monitorz::Counts;
use crate::options::VERSION;
use crate::status::{ServerState, Status};

/// One channel's numbers.
pub(crate) struct ChannelMetric {
    pub(crate) name: String,
    pub(crate) msgs: u64,
    pub(crate) bytes: u64,
    pub(crate) last_seq: u64,
    pub(crate) subs: Vec<SubMetric>,
}

/// One subscription's numbers and identity.
pub(crate) struct SubMetric {
    pub(crate) client_id: String,
    pub(crate) inbox: String,
    pub(crate) queue_name: String,
    pub(crate) is_durable: bool,
    pub(crate) is_offline: bool,
    pub(crate) last_sent: u64,
    pub(crate) pending: usize,
    pub(crate) redelivered: usize,
    pub(crate) max_inflight: i32,
    pub(crate) stalled: bool,
}

struct Out {
    text: String,
    server: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.text, "{name}{{server=\"{}\"", self.server);
        for (k, v) in labels {
            let _ = write!(self.text, ",{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.text, "}} {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The streaming families; `channels` empty for a server without an engine (standby).
pub(crate) fn render(st: &Status, c: &Counts, channels: &[ChannelMetric]) -> String {
    let mut out = Out {
        text: String::with_capacity(4096),
        server: escape(&st.server_id),
    };
    let o = &mut out;
    let raft = st.raft();
    let state = st.state().as_str();
    let role = raft.as_ref().map(|r| r.role.clone()).unwrap_or_default();
    o.family("nss_server_info", "gauge", "Info");
    o.sample(
        "nss_server_info",
        &[
            ("cluster_id", &st.opts.cluster_id),
            ("server_id", &st.server_id),
            ("version", VERSION),
            ("go_version", concat!("rust-", env!("CARGO_PKG_VERSION"))),
            ("state", state),
            ("role", &role),
            ("start_time", &rfc3339(st.start_time)),
        ],
        1.0,
    );
    // The exporter declares these counters, though some go down.
    o.single(
        "nss_server_bytes_total",
        "counter",
        "Total of bytes",
        c.total_bytes as f64,
    );
    o.single(
        "nss_server_msgs_total",
        "counter",
        "Total of messages",
        c.total_msgs as f64,
    );
    o.single(
        "nss_server_channels",
        "counter",
        "Total channels",
        c.channels as f64,
    );
    o.single(
        "nss_server_subscriptions",
        "counter",
        "Total subscriptions",
        c.subscriptions as f64,
    );
    o.single(
        "nss_server_clients",
        "counter",
        "Total clients",
        c.clients as f64,
    );
    for (name, help, v) in [
        ("nss_server_in_msgs", "Messages published", c.in_msgs),
        ("nss_server_in_bytes", "Bytes published", c.in_bytes),
        ("nss_server_out_msgs", "Messages delivered", c.out_msgs),
        ("nss_server_out_bytes", "Bytes delivered", c.out_bytes),
    ] {
        o.single(name, "counter", help, v as f64);
    }
    if st.opts.ft_group.is_some() {
        o.single(
            "nss_server_ft_active",
            "gauge",
            "1 on the active server of the fault-tolerance group, 0 on a standby",
            f64::from(u8::from(st.state() == ServerState::FtActive)),
        );
    }
    if let Some(r) = &raft {
        o.family(
            "nss_server_raft_role",
            "gauge",
            "This node's RAFT role (value 1)",
        );
        o.sample("nss_server_raft_role", &[("role", &r.role)], 1.0);
        o.single(
            "nss_server_raft_peers",
            "gauge",
            "Other nodes of the cluster",
            r.peers.len() as f64,
        );
        o.single(
            "nss_server_raft_last_applied",
            "gauge",
            "Last RAFT log index applied to the store",
            r.last_applied as f64,
        );
    }
    channel_families(o, channels);
    out.text
}

fn channel_families(o: &mut Out, channels: &[ChannelMetric]) {
    if channels.is_empty() {
        return;
    }
    type ChanValue = fn(&ChannelMetric) -> f64;
    let per_channel: [(&str, &str, &str, ChanValue); 4] = [
        ("nss_chan_bytes_total", "counter", "Total of bytes", |c| {
            c.bytes as f64
        }),
        ("nss_chan_msgs_total", "counter", "Total of messages", |c| {
            c.msgs as f64
        }),
        ("nss_chan_last_seq", "gauge", "Last seq", |c| {
            c.last_seq as f64
        }),
        (
            "nss_chan_subscriptions",
            "gauge",
            "Subscriptions on the channel",
            |c| c.subs.len() as f64,
        ),
    ];
    for (name, kind, help, value) in per_channel {
        o.family(name, kind, help);
        for c in channels {
            o.sample(name, &[("channel", &c.name)], value(c));
        }
    }
    type SubValue = fn(&SubMetric) -> f64;
    let per_sub: [(&str, &str, SubValue); 5] = [
        ("nss_chan_subs_last_sent", "Last message sent", |s| {
            s.last_sent as f64
        }),
        (
            "nss_chan_subs_pending_count",
            "Pending message count",
            |s| s.pending as f64,
        ),
        (
            "nss_chan_subs_max_inflight",
            "Max in flight message count",
            |s| f64::from(s.max_inflight),
        ),
        (
            "nss_chan_subs_redelivered_count",
            "Pending messages sent more than once",
            |s| s.redelivered as f64,
        ),
        (
            "nss_chan_subs_stalled",
            "1 when the subscription has max_inflight messages unacknowledged",
            |s| f64::from(u8::from(s.stalled)),
        ),
    ];
    for (name, help, value) in per_sub {
        o.family(name, "gauge", help);
        for c in channels {
            for s in &c.subs {
                let (durable, offline) = (s.is_durable.to_string(), s.is_offline.to_string());
                o.sample(
                    name,
                    &[
                        ("channel", &c.name),
                        ("client_id", &s.client_id),
                        ("inbox", &s.inbox),
                        ("queue_name", &s.queue_name),
                        ("is_durable", &durable),
                        ("is_offline", &offline),
                    ],
                    value(s),
                );
            }
        }
    }
}
