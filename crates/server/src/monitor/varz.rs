//! `/varz`: configuration and global statistics.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::format::{go_float, rfc3339, uptime};
use super::{Reply, json, since};
use crate::info::InfoHead;
use crate::state::ServerShared;
use crate::state::monitor::CpuSample;

/// An object nats-server always shows, empty when the feature is off.
#[derive(Serialize)]
struct Empty {}

/// nats-server's `ClusterOptsVarz`: every field is omitted when empty, so `{}` when not
/// clustered.
#[derive(Serialize, Default)]
struct ClusterVarz {
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(rename = "addr", skip_serializing_if = "String::is_empty")]
    host: String,
    #[serde(rename = "cluster_port", skip_serializing_if = "is_zero")]
    port: usize,
    #[serde(serialize_with = "go_float", skip_serializing_if = "is_zero_f64")]
    auth_timeout: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    urls: Vec<String>,
    #[serde(serialize_with = "go_float", skip_serializing_if = "is_zero_f64")]
    tls_timeout: f64,
    /// rnats keeps one connection per remote server: pooling off, as the reference's
    /// `pool_size: -1`.
    #[serde(skip_serializing_if = "is_zero_i32")]
    pool_size: i32,
}

/// How long a route has to finish its handshake (`route.rs`), shown as the cluster's
/// `auth_timeout`.
const ROUTE_AUTH_TIMEOUT_SECS: f64 = 5.0;
/// The reference's default TLS handshake timeout, shown although routes have no TLS.
const ROUTE_TLS_TIMEOUT_SECS: f64 = 2.0;

fn cluster_varz(srv: &ServerShared) -> ClusterVarz {
    let Some(cluster) = &srv.cluster else {
        return ClusterVarz::default();
    };
    ClusterVarz {
        name: cluster.name.lock().clone(),
        host: cluster.opts.host.clone(),
        port: usize::from(cluster.listen_addr.port()),
        auth_timeout: ROUTE_AUTH_TIMEOUT_SECS,
        urls: cluster
            .opts
            .routes
            .iter()
            .filter_map(|url| crate::options::parse_route_url(url))
            .map(|(_, host, port)| crate::net::host_port(&host, port as u16))
            .collect(),
        tls_timeout: ROUTE_TLS_TIMEOUT_SECS,
        pool_size: -1,
    }
}

#[derive(Serialize)]
struct PerKind {
    clients: u64,
    routes: u64,
    gateways: u64,
    leafs: u64,
}

/// nats-server's `Varz`, in its field order (fields for features rnats lacks are left out).
#[derive(Serialize)]
pub(super) struct Varz<'a> {
    #[serde(flatten)]
    head: InfoHead<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    connect_urls: Vec<String>,
    max_connections: usize,
    #[serde(skip_serializing_if = "is_zero")]
    max_subscriptions: usize,
    ping_interval: u64,
    ping_max: u32,
    http_host: String,
    http_port: i32,
    http_base_path: &'static str,
    https_port: i32,
    #[serde(serialize_with = "go_float")]
    auth_timeout: f64,
    max_control_line: usize,
    max_payload: usize,
    max_pending: usize,
    cluster: ClusterVarz,
    gateway: Empty,
    leaf: Empty,
    mqtt: Empty,
    websocket: Empty,
    jetstream: Empty,
    #[serde(serialize_with = "go_float")]
    tls_timeout: f64,
    write_deadline: u64,
    start: String,
    now: String,
    uptime: String,
    mem: u64,
    cores: usize,
    gomaxprocs: usize,
    #[serde(serialize_with = "go_float")]
    cpu: f64,
    connections: usize,
    total_connections: u64,
    routes: usize,
    remotes: usize,
    leafnodes: usize,
    in_msgs: u64,
    in_bytes: u64,
    in_client_msgs: u64,
    in_client_bytes: u64,
    out_msgs: u64,
    out_bytes: u64,
    out_client_msgs: u64,
    out_client_bytes: u64,
    slow_consumers: u64,
    stale_connections: u64,
    stalled_clients: u64,
    subscriptions: u64,
    http_req_stats: BTreeMap<&'static str, u64>,
    config_load_time: String,
    config_digest: String,
    slow_consumer_stats: PerKind,
    stale_connection_stats: PerKind,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

pub(super) fn handle(srv: &ServerShared) -> Reply {
    srv.monitor.count_request("/varz");
    json(&varz(srv))
}

pub(super) fn varz(srv: &ServerShared) -> Varz<'_> {
    let opts = &srv.opts();
    let now = SystemTime::now();
    let stats = &srv.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    // The server's counters are the clients'; the routes' are added for the totals.
    let (in_client_msgs, in_client_bytes) = (load(&stats.in_msgs), load(&stats.in_bytes));
    let (out_client_msgs, out_client_bytes) = (load(&stats.out_msgs), load(&stats.out_bytes));
    let routed = srv.monitor.route_traffic();
    let routes = srv.cluster.as_ref().map_or(0, |c| c.routes.lock().len());
    let slow = load(&stats.slow_consumers);
    let stale = load(&srv.monitor.stale_connections);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tls = opts.tls.as_ref();
    Varz {
        head: InfoHead {
            auth_required: srv.auth().required(),
            tls_required: srv.tls.is_some(),
            tls_verify: tls.is_some_and(|t| t.verify || t.verify_and_map),
            ..InfoHead::new(srv, 1, opts.host.clone(), srv.client_addr.port())
        },
        connect_urls: crate::info::connect_urls(srv).unwrap_or_default(),
        max_connections: opts.max_connections.unwrap_or(0),
        max_subscriptions: opts.max_subs,
        ping_interval: opts.ping_interval.as_nanos() as u64,
        ping_max: opts.ping_max,
        http_host: opts.http_host.clone().unwrap_or_else(|| opts.host.clone()),
        http_port: opts.http_port,
        http_base_path: "",
        https_port: opts.https_port,
        auth_timeout: opts.auth_timeout().as_secs_f64(),
        max_control_line: opts.max_control_line,
        max_payload: opts.max_payload,
        max_pending: opts.max_pending,
        cluster: cluster_varz(srv),
        gateway: Empty {},
        leaf: Empty {},
        mqtt: Empty {},
        websocket: Empty {},
        jetstream: Empty {},
        tls_timeout: tls.map_or(2.0, |t| t.timeout().as_secs_f64()),
        write_deadline: opts.write_deadline.as_nanos() as u64,
        start: rfc3339(srv.started),
        now: rfc3339(now),
        uptime: uptime(since(now, srv.started)),
        mem: resident_memory(),
        cores,
        gomaxprocs: cores,
        cpu: cpu_percent(srv),
        connections: srv.num_clients(),
        total_connections: load(&stats.total_connections),
        // One connection per remote server (no pooling).
        routes,
        remotes: routes,
        leafnodes: 0,
        in_msgs: in_client_msgs + routed.in_msgs,
        in_bytes: in_client_bytes + routed.in_bytes,
        in_client_msgs,
        in_client_bytes,
        out_msgs: out_client_msgs + routed.out_msgs,
        out_bytes: out_client_bytes + routed.out_bytes,
        out_client_msgs,
        out_client_bytes,
        slow_consumers: slow,
        stale_connections: stale,
        stalled_clients: 0,
        subscriptions: srv.sublist.count(),
        http_req_stats: srv.monitor.http_req_stats.lock().clone(),
        config_load_time: rfc3339(srv.started),
        config_digest: String::new(),
        slow_consumer_stats: PerKind {
            clients: slow,
            routes: 0,
            gateways: 0,
            leafs: 0,
        },
        stale_connection_stats: PerKind {
            clients: stale,
            routes: 0,
            gateways: 0,
            leafs: 0,
        },
    }
}

impl Varz<'_> {
    pub(super) fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }
}

/// Resident set size in bytes (Linux `/proc`; 0 elsewhere).
pub(super) fn resident_memory() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// User + system CPU time of the process, in clock ticks (Linux `/proc`; 0 elsewhere).
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    get(11).unwrap_or(0) + get(12).unwrap_or(0)
}

/// Process CPU use in percent (over 100 on several cores), measured since the previous
/// sample (at least 500 ms ago) or since the server started.
pub(super) fn cpu_percent(srv: &ServerShared) -> f64 {
    const TICKS_PER_SEC: f64 = 100.0;
    let mut sample = srv.monitor.cpu.lock();
    let now = Instant::now();
    if let Some(at) = sample.at
        && now.duration_since(at).as_millis() < 500
    {
        return sample.percent;
    }
    let ticks = cpu_ticks();
    let (elapsed, used) = match sample.at {
        Some(at) => (
            now.duration_since(at).as_secs_f64(),
            ticks.saturating_sub(sample.ticks),
        ),
        None => (since(SystemTime::now(), srv.started).as_secs_f64(), ticks),
    };
    let percent = if elapsed > 0.0 {
        (used as f64 / TICKS_PER_SEC) / elapsed * 100.0
    } else {
        0.0
    };
    // One decimal, as the reference rounds.
    let percent = (percent * 10.0).round() / 10.0;
    *sample = CpuSample {
        at: Some(now),
        ticks,
        percent,
    };
    percent
}
