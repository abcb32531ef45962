//! `/routez`: the cluster's route connections, as nats-server's `Routez`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::Serialize;

use super::format::{go_duration, rfc3339, uptime};
use super::{Query, Reply, json, since};
use crate::conn::Subscription;
use crate::state::ServerShared;

#[derive(Serialize)]
struct Routez {
    server_id: String,
    server_name: String,
    now: String,
    num_routes: usize,
    routes: Vec<RouteInfo>,
}

/// nats-server's `RouteInfo`, in its field order. rnats has no route permissions
/// (`import`/`export`), no pinned-account routes (`account`) and no route compression.
#[derive(Serialize)]
pub(super) struct RouteInfo {
    pub rid: u64,
    pub remote_id: String,
    pub remote_name: String,
    pub did_solicit: bool,
    pub is_configured: bool,
    pub ip: String,
    pub port: u16,
    pub start: String,
    pub last_activity: String,
    pub rtt: String,
    pub uptime: String,
    pub idle: String,
    pub pending_size: usize,
    pub in_msgs: u64,
    pub out_msgs: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub subscriptions: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions_list_detail: Option<Vec<RouteSubDetail>>,
    pub compression: &'static str,
    /// Seconds since the route connected and of its last PING round trip (for `/metrics`).
    #[serde(skip)]
    pub uptime_secs: f64,
    #[serde(skip)]
    pub rtt_secs: f64,
}

/// A subscription learned over a route, as the reference shows it: its sid is
/// `R <account> <subject>[ <queue>]`, and there is no account field.
#[derive(Serialize)]
pub(super) struct RouteSubDetail {
    subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    qgroup: Option<String>,
    sid: String,
    msgs: u64,
    cid: u64,
}

impl RouteSubDetail {
    fn new(sub: &Subscription) -> RouteSubDetail {
        let subject = String::from_utf8_lossy(&sub.subject).into_owned();
        let qgroup = sub
            .queue
            .as_deref()
            .map(|q| String::from_utf8_lossy(q).into_owned());
        let sid = match &qgroup {
            Some(q) => format!("R $G {subject} {q}"),
            None => format!("R $G {subject}"),
        };
        RouteSubDetail {
            subject,
            qgroup,
            sid,
            msgs: sub.delivered(),
            cid: sub.client.cid,
        }
    }
}

pub(super) fn handle(srv: &ServerShared, q: &Query) -> Reply {
    let (subs, detail) = match q.subs() {
        Ok(v) => v,
        Err(e) => return e,
    };
    srv.monitor.count_request("/routez");
    let routes = route_infos(srv, subs, detail);
    json(&Routez {
        server_id: srv.server_id.clone(),
        server_name: srv.server_name.clone(),
        now: rfc3339(SystemTime::now()),
        num_routes: routes.len(),
        routes,
    })
}

/// Every registered route, ordered by rid; with `subs`/`detail`, the subscriptions each
/// route told us about.
pub(super) fn route_infos(srv: &ServerShared, subs: bool, detail: bool) -> Vec<RouteInfo> {
    let Some(cluster) = &srv.cluster else {
        return Vec::new();
    };
    let entries: Vec<_> = cluster
        .routes
        .lock()
        .iter()
        .map(|(id, r)| {
            (
                id.clone(),
                r.server_name.clone(),
                r.solicited,
                r.conn.clone(),
            )
        })
        .collect();
    // Route-learned subscriptions live in the sublist under the route's connection.
    let mut learned: HashMap<u64, Vec<Arc<Subscription>>> = HashMap::new();
    if !entries.is_empty() {
        srv.sublist.for_each(|sub| {
            if sub.client.is_route {
                learned.entry(sub.client.cid).or_default().push(sub.clone());
            }
        });
    }
    let now = SystemTime::now();
    let mut infos: Vec<RouteInfo> = entries
        .into_iter()
        .map(|(remote_id, remote_name, solicited, conn)| {
            let mon = srv.monitor.route(conn.cid);
            let last = mon
                .as_ref()
                .map_or_else(|| conn.last_activity(), |m| m.last_activity());
            let rtt = mon.as_ref().map(|m| m.rtt()).unwrap_or_default();
            let mut route_subs = learned.remove(&conn.cid).unwrap_or_default();
            route_subs.sort_by(|a, b| (&a.subject, &a.queue).cmp(&(&b.subject, &b.queue)));
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            RouteInfo {
                rid: conn.cid,
                remote_id,
                remote_name,
                did_solicit: solicited,
                is_configured: mon.as_ref().is_some_and(|m| m.configured),
                ip: conn.addr.ip().to_string(),
                port: conn.addr.port(),
                start: rfc3339(conn.started),
                last_activity: rfc3339(last),
                rtt: go_duration(rtt),
                uptime: uptime(since(now, conn.started)),
                idle: uptime(since(now, last)),
                pending_size: conn.pending_bytes(),
                in_msgs: load(&conn.stats.in_msgs),
                out_msgs: load(&conn.stats.out_msgs),
                in_bytes: load(&conn.stats.in_bytes),
                out_bytes: load(&conn.stats.out_bytes),
                subscriptions: route_subs.len(),
                subscriptions_list: (subs && !route_subs.is_empty()).then(|| {
                    route_subs
                        .iter()
                        .map(|s| String::from_utf8_lossy(&s.subject).into_owned())
                        .collect()
                }),
                subscriptions_list_detail: (detail && !route_subs.is_empty())
                    .then(|| route_subs.iter().map(|s| RouteSubDetail::new(s)).collect()),
                compression: "off",
                uptime_secs: since(now, conn.started).as_secs_f64(),
                rtt_secs: rtt.as_secs_f64(),
            }
        })
        .collect();
    infos.sort_by_key(|r| r.rid);
    infos
}
