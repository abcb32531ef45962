//! `/metrics`: Prometheus text exposition format (0.0.4).
//!
//! Names follow prometheus-nats-exporter (`gnatsd_varz_<field>`, label `server_id`), so
//! dashboards built on the exporter work against rnats without running it. Per-route
//! metrics (`gnatsd_routez_*`, labelled by `rid` and `remote_id`) appear once routes exist.

use std::fmt::Write;

use super::{Reply, varz};
use crate::server::ServerShared;

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
    let _ = writeln!(
        out,
        "# HELP gnatsd_routez_num_routes Route connections (routez)."
    );
    let _ = writeln!(out, "# TYPE gnatsd_routez_num_routes gauge");
    let _ = writeln!(out, "gnatsd_routez_num_routes{{{label}}} 0");
    Reply::Text("text/plain; version=0.0.4; charset=utf-8", out)
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
