//! `/metrics`: Prometheus text exposition format (0.0.4).
//!
//! Names follow prometheus-nats-exporter (`gnatsd_varz_<field>`, label `server_id`), so
//! dashboards built on the exporter work against rnats without running it. Per-route
//! series follow the exporter's `-routez` collector: `gnatsd_routez_route_*`, labelled by
//! `server_id` and `rid`, plus `gnatsd_routez_route_info` with the remote's id and name.

use std::fmt::Write;

use super::{Reply, routez, varz};
use crate::state::ServerShared;

/// Prometheus' text exposition format.
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// (varz field, type, help).
const METRICS: &[(&str, &str, &str)] = &[
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
    ("leafnodes", "gauge", "Leaf node connections."),
    ("mem", "gauge", "Resident memory in bytes."),
    ("cpu", "gauge", "Process CPU use in percent."),
    ("cores", "gauge", "CPU cores."),
    (
        "max_connections",
        "gauge",
        "Configured maximum connections.",
    ),
    ("max_payload", "gauge", "Configured maximum payload."),
];

pub(super) fn handle(srv: &ServerShared) -> Reply {
    srv.monitor.count_request("/metrics");
    let fields = varz::varz(srv).fields();
    let label = format!("server_id=\"{}\"", escape(&srv.server_id));
    let mut out = String::with_capacity(4096);
    for (field, kind, help) in METRICS {
        let Some(value) = fields.get(*field).and_then(serde_json::Value::as_f64) else {
            continue;
        };
        let name = format!("gnatsd_varz_{field}");
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{{label}}} {value}");
    }
    let uptime = srv.started.elapsed().unwrap_or_default().as_secs_f64();
    let _ = writeln!(
        out,
        "# HELP gnatsd_varz_uptime_seconds Seconds since the server started."
    );
    let _ = writeln!(out, "# TYPE gnatsd_varz_uptime_seconds gauge");
    let _ = writeln!(out, "gnatsd_varz_uptime_seconds{{{label}}} {uptime:.3}");
    let routes = routez::route_infos(srv, false, false);
    let _ = writeln!(
        out,
        "# HELP gnatsd_routez_num_routes Route connections (routez)."
    );
    let _ = writeln!(out, "# TYPE gnatsd_routez_num_routes gauge");
    let _ = writeln!(out, "gnatsd_routez_num_routes{{{label}}} {}", routes.len());
    if !routes.is_empty() {
        let _ = writeln!(
            out,
            "# HELP gnatsd_routez_route_info A route and its remote server (value 1)."
        );
        let _ = writeln!(out, "# TYPE gnatsd_routez_route_info gauge");
        for r in &routes {
            let _ = writeln!(
                out,
                "gnatsd_routez_route_info{{{label},rid=\"{}\",remote_id=\"{}\",remote_name=\"{}\",account=\"\",ip=\"{}\",compression=\"{}\"}} 1",
                r.rid,
                escape(&r.remote_id),
                escape(&r.remote_name),
                escape(&r.ip),
                r.compression
            );
        }
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
    if !routes.is_empty() {
        for (field, kind, help, value) in per_route {
            let name = format!("gnatsd_routez_route_{field}");
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for r in &routes {
                let _ = writeln!(out, "{name}{{{label},rid=\"{}\"}} {}", r.rid, value(r));
            }
        }
    }
    Reply::Text(CONTENT_TYPE, out)
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
