//! `/metrics`: Prometheus text exposition format (0.0.4), with prometheus-nats-exporter's
//! names, so dashboards built on the exporter work against rnats without running it:
//!
//! * `gnatsd_varz_<field>` for every number `/varz` has (label `server_id`), plus
//!   `gnatsd_varz_uptime_seconds`;
//! * `gnatsd_connz_*`: the exporter's totals over the open connections (`num_connections`,
//!   `total`, `offset`, `limit`, `pending_bytes`, `subscriptions`, `in/out_msgs`,
//!   `in/out_bytes`), and its detailed series (labels `cid`, `kind`, `type`, `ip`, `port`,
//!   `name`, `lang`, `version`, `tls_version`, `tls_cipher_suite`, and also `start`,
//!   `last_activity`, `rtt` in µs, `uptime` and `idle` in ms) for the top connections only:
//!   the [`TOP`] with the most pending bytes and the [`TOP`] with the most messages, so the
//!   label set stays bounded however many clients connect;
//! * `gnatsd_subsz_*` (subject index), `gnatsd_healthz_status` (0 = ok);
//! * `gnatsd_routez_*`: `server_id`/`server_name` info, `num_routes`, and per route
//!   `route_info` and `route_*` (label `rid`).
//!
//! An embedding service appends its own families (see [`super::MonitorRoutes::metrics`]).

use std::fmt::Write;
use std::time::SystemTime;

use super::{Reply, routez, varz};
use crate::state::ServerShared;
use crate::state::monitor::ConnRecord;

/// Prometheus' text exposition format.
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections with detailed series, per ranking (pending bytes, messages).
pub const TOP: usize = 10;

/// varz fields that are counters (the rest are gauges), with the help text the common
/// ones get.
const VARZ_HELP: &[(&str, &str, &str)] = &[
    ("connections", "gauge", "Current client connections."),
    (
        "total_connections",
        "counter",
        "Client connections accepted since start.",
    ),
    (
        "subscriptions",
        "gauge",
        "Subscriptions in the subject index.",
    ),
    ("in_msgs", "counter", "Messages received."),
    ("out_msgs", "counter", "Messages delivered."),
    ("in_bytes", "counter", "Payload bytes received."),
    ("out_bytes", "counter", "Payload bytes delivered."),
    (
        "slow_consumers",
        "counter",
        "Connections closed as slow consumers.",
    ),
    (
        "stale_connections",
        "counter",
        "Connections closed as stale (missed PONGs).",
    ),
    ("routes", "gauge", "Route connections."),
    ("remotes", "gauge", "Remote servers with a route."),
    ("mem", "gauge", "Resident memory in bytes."),
    ("cpu", "gauge", "Process CPU use in percent."),
];

/// Writes families and samples, every sample labelled with the server id.
struct Out {
    text: String,
    server_label: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// A sample; `labels` are more `k="v"` pairs (escaped), after the server id.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.text, "{name}{{{}", self.server_label);
        for (k, v) in labels {
            let _ = write!(self.text, ",{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.text, "}} {}", number(value));
    }

    /// A family of one sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Prometheus' number format (Go's shortest float form is fine for the parser).
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

pub(super) fn handle(srv: &ServerShared) -> Reply {
    srv.monitor.count_request("/metrics");
    let mut out = Out {
        text: String::with_capacity(8192),
        server_label: format!("server_id=\"{}\"", escape(&srv.server_id)),
    };
    varz_families(srv, &mut out);
    connz_families(srv, &mut out);
    subsz_families(srv, &mut out);
    out.single(
        "gnatsd_healthz_status",
        "gauge",
        "Health: 0 when /healthz says ok.",
        if srv.shutdown.is_cancelled() {
            1.0
        } else {
            0.0
        },
    );
    routez_families(srv, &mut out);
    Reply::Text(CONTENT_TYPE, out.text)
}

fn varz_families(srv: &ServerShared, out: &mut Out) {
    let fields = varz::varz(srv).fields();
    for (field, value) in &fields {
        let Some(value) = value.as_f64() else {
            continue;
        };
        let (kind, help) = VARZ_HELP
            .iter()
            .find(|(f, _, _)| f == field)
            .map_or(("gauge", field.as_str()), |(_, k, h)| (*k, *h));
        out.single(&format!("gnatsd_varz_{field}"), kind, help, value);
    }
    let uptime = srv.started.elapsed().unwrap_or_default().as_secs_f64();
    out.single(
        "gnatsd_varz_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        (uptime * 1000.0).round() / 1000.0,
    );
}

fn connz_families(srv: &ServerShared, out: &mut Out) {
    let open: Vec<_> = srv.clients.lock().values().cloned().collect();
    let records: Vec<ConnRecord> = open
        .iter()
        .filter(|c| !c.is_route)
        .map(ConnRecord::open)
        .collect();
    let n = records.len() as f64;
    out.single(
        "gnatsd_connz_num_connections",
        "gauge",
        "num_connections",
        n,
    );
    out.single("gnatsd_connz_total", "gauge", "total", n);
    out.single("gnatsd_connz_offset", "gauge", "offset", 0.0);
    out.single("gnatsd_connz_limit", "gauge", "limit", 1024.0);

    // The top connections: most pending bytes, then most messages, without repeats.
    let mut by_pending: Vec<&ConnRecord> = records.iter().collect();
    by_pending.sort_by_key(|r| (std::cmp::Reverse(r.pending), r.cid));
    let mut by_msgs: Vec<&ConnRecord> = records.iter().collect();
    by_msgs.sort_by_key(|r| (std::cmp::Reverse(r.in_msgs + r.out_msgs), r.cid));
    let mut top: Vec<&ConnRecord> = by_pending.into_iter().take(TOP).collect();
    for r in by_msgs.into_iter().take(TOP) {
        if !top.iter().any(|t| t.cid == r.cid) {
            top.push(r);
        }
    }
    type Field = fn(&ConnRecord, SystemTime) -> f64;
    let since = |now: SystemTime, t: SystemTime| now.duration_since(t).unwrap_or_default();
    let fields: [(&str, &str, &str, Field, Option<f64>); 10] = [
        (
            "pending_bytes",
            "gauge",
            "pending_bytes",
            |r, _| r.pending as f64,
            Some(records.iter().map(|r| r.pending as f64).sum()),
        ),
        (
            "subscriptions",
            "gauge",
            "subscriptions",
            |r, _| r.num_subs as f64,
            Some(records.iter().map(|r| r.num_subs as f64).sum()),
        ),
        (
            "in_bytes",
            "counter",
            "in_bytes",
            |r, _| r.in_bytes as f64,
            Some(records.iter().map(|r| r.in_bytes as f64).sum()),
        ),
        (
            "out_bytes",
            "counter",
            "out_bytes",
            |r, _| r.out_bytes as f64,
            Some(records.iter().map(|r| r.out_bytes as f64).sum()),
        ),
        (
            "in_msgs",
            "counter",
            "in_msgs",
            |r, _| r.in_msgs as f64,
            Some(records.iter().map(|r| r.in_msgs as f64).sum()),
        ),
        (
            "out_msgs",
            "counter",
            "out_msgs",
            |r, _| r.out_msgs as f64,
            Some(records.iter().map(|r| r.out_msgs as f64).sum()),
        ),
        (
            "start",
            "gauge",
            "epoch time at which the connection was started",
            |r, _| epoch_ms(r.start),
            None,
        ),
        (
            "last_activity",
            "gauge",
            "epoch time at which the last activity was registred",
            |r, _| epoch_ms(r.last),
            None,
        ),
        (
            "rtt",
            "gauge",
            "response time latency in microseconds",
            |r, _| r.rtt.as_micros() as f64,
            None,
        ),
        (
            "uptime",
            "gauge",
            "uptime duration in milliseconds",
            |r, now| (now.duration_since(r.start).unwrap_or_default().as_millis()) as f64,
            None,
        ),
    ];
    let now = SystemTime::now();
    let labels: Vec<Vec<(&str, String)>> = top.iter().map(|r| detail_labels(r)).collect();
    for (field, kind, help, value, total) in fields {
        let name = format!("gnatsd_connz_{field}");
        out.family(&name, kind, help);
        if let Some(total) = total {
            out.sample(&name, &[], total);
        }
        for (r, l) in top.iter().zip(&labels) {
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            out.sample(&name, &l, value(r, now));
        }
    }
    out.family(
        "gnatsd_connz_idle",
        "gauge",
        "idle time duration in milliseconds",
    );
    for (r, l) in top.iter().zip(&labels) {
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        out.sample(
            "gnatsd_connz_idle",
            &l,
            since(now, r.last).as_millis() as f64,
        );
    }
}

/// Milliseconds since the Unix epoch.
fn epoch_ms(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as f64
}

/// The exporter's detailed connz labels.
fn detail_labels(r: &ConnRecord) -> Vec<(&'static str, String)> {
    vec![
        ("cid", r.cid.to_string()),
        ("kind", "Client".into()),
        ("type", "nats".into()),
        ("ip", r.addr.ip().to_string()),
        ("port", r.addr.port().to_string()),
        ("name", r.name.clone()),
        ("lang", r.lang.clone()),
        ("version", r.version.clone()),
        ("tls_version", String::new()),
        ("tls_cipher_suite", String::new()),
    ]
}

fn subsz_families(srv: &ServerShared, out: &mut Out) {
    let s = srv.sublist.stats();
    let families: [(&str, &str, f64); 8] = [
        ("num_subscriptions", "gauge", s.num_subscriptions as f64),
        ("num_cache", "gauge", s.num_cache as f64),
        ("num_inserts", "counter", s.num_inserts as f64),
        ("num_removes", "counter", s.num_removes as f64),
        ("num_matches", "counter", s.num_matches as f64),
        ("cache_hit_rate", "gauge", s.cache_hit_rate),
        ("max_fanout", "gauge", s.max_fanout as f64),
        ("avg_fanout", "gauge", s.avg_fanout),
    ];
    for (field, kind, value) in families {
        out.single(&format!("gnatsd_subsz_{field}"), kind, field, value);
    }
}

fn routez_families(srv: &ServerShared, out: &mut Out) {
    out.family("gnatsd_routez_server_id", "gauge", "server_id");
    out.sample("gnatsd_routez_server_id", &[("value", &srv.server_id)], 1.0);
    out.family("gnatsd_routez_server_name", "gauge", "server_name");
    out.sample(
        "gnatsd_routez_server_name",
        &[("value", &srv.server_name)],
        1.0,
    );
    let routes = routez::route_infos(srv, false, false);
    out.single(
        "gnatsd_routez_num_routes",
        "gauge",
        "Route connections (routez).",
        routes.len() as f64,
    );
    if routes.is_empty() {
        return;
    }
    out.family(
        "gnatsd_routez_route_info",
        "gauge",
        "A route and its remote server (value 1).",
    );
    for r in &routes {
        let rid = r.rid.to_string();
        out.sample(
            "gnatsd_routez_route_info",
            &[
                ("rid", &rid),
                ("remote_id", &r.remote_id),
                ("remote_name", &r.remote_name),
                ("account", ""),
                ("ip", &r.ip),
                ("compression", r.compression),
            ],
            1.0,
        );
    }
    type RouteValue = fn(&routez::RouteInfo) -> f64;
    let per_route: [(&str, &str, &str, RouteValue); 8] = [
        (
            "in_msgs",
            "counter",
            "Messages received over the route.",
            |r| r.in_msgs as f64,
        ),
        (
            "out_msgs",
            "counter",
            "Messages sent over the route.",
            |r| r.out_msgs as f64,
        ),
        (
            "in_bytes",
            "counter",
            "Payload bytes received over the route.",
            |r| r.in_bytes as f64,
        ),
        (
            "out_bytes",
            "counter",
            "Payload bytes sent over the route.",
            |r| r.out_bytes as f64,
        ),
        (
            "subscriptions",
            "gauge",
            "Subscriptions the remote server has told us about.",
            |r| r.subscriptions as f64,
        ),
        (
            "pending_bytes",
            "gauge",
            "Bytes waiting to be written to the route.",
            |r| r.pending_size as f64,
        ),
        (
            "rtt_seconds",
            "gauge",
            "Round-trip time of the route's last PING.",
            |r| r.rtt_secs,
        ),
        (
            "uptime_seconds",
            "gauge",
            "Seconds since the route connected.",
            |r| r.uptime_secs,
        ),
    ];
    for (field, kind, help, value) in per_route {
        let name = format!("gnatsd_routez_route_{field}");
        out.family(&name, kind, help);
        for r in &routes {
            out.sample(&name, &[("rid", &r.rid.to_string())], value(r));
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
