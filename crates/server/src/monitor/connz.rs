//! `/connz`: open and recently closed client connections.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::format::{go_duration, rfc3339, uptime};
use super::{Query, Reply, json, page, since};
use crate::conn::{ClientShared, CloseReason};
use crate::server::ServerShared;
use crate::subscription::Subscription;

const DEFAULT_LIMIT: i64 = 1024;
const GLOBAL_ACCOUNT: &str = "$G";

const SORT_OPTIONS: [&str; 14] = [
    "cid",
    "start",
    "subs",
    "pending",
    "msgs_to",
    "msgs_from",
    "bytes_to",
    "bytes_from",
    "last",
    "idle",
    "uptime",
    "stop",
    "reason",
    "rtt",
];

/// One subscription as monitoring shows it.
#[derive(Serialize, Clone)]
pub(crate) struct SubDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_tag: Option<&'static str>,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qgroup: Option<String>,
    pub sid: String,
    pub msgs: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub cid: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl SubDetail {
    pub(crate) fn new(sub: &Subscription, with_account: bool) -> SubDetail {
        SubDetail {
            account: with_account.then_some(GLOBAL_ACCOUNT),
            account_tag: with_account.then_some(GLOBAL_ACCOUNT),
            subject: String::from_utf8_lossy(&sub.subject).into_owned(),
            qgroup: sub
                .queue
                .as_deref()
                .map(|q| String::from_utf8_lossy(q).into_owned()),
            sid: String::from_utf8_lossy(&sub.sid).into_owned(),
            msgs: sub.delivered(),
            max: sub.max(),
            cid: sub.client.cid,
        }
    }
}

/// The subscriptions of a connection, ordered by sid (numerically when they are numbers).
fn sub_details(client: &ClientShared) -> Vec<SubDetail> {
    let mut subs: Vec<SubDetail> = client
        .subs
        .lock()
        .values()
        .map(|s| SubDetail::new(s, false))
        .collect();
    subs.sort_by(|a, b| {
        (a.sid.len(), &a.sid)
            .cmp(&(b.sid.len(), &b.sid))
            .then_with(|| a.subject.cmp(&b.subject))
    });
    subs
}

/// A connection's monitoring data, taken at one instant (open) or at close (closed).
pub(crate) struct ConnRecord {
    cid: u64,
    addr: SocketAddr,
    start: SystemTime,
    last: SystemTime,
    stop: Option<SystemTime>,
    reason: Option<&'static str>,
    pending: usize,
    in_msgs: u64,
    in_bytes: u64,
    out_msgs: u64,
    out_bytes: u64,
    num_subs: usize,
    name: String,
    lang: String,
    version: String,
    user: Option<String>,
    /// Kept for closed connections; open ones are read from `client` when asked.
    subs: Vec<SubDetail>,
    client: Option<Arc<ClientShared>>,
}

impl ConnRecord {
    fn snapshot(client: &ClientShared) -> ConnRecord {
        let meta = client.meta.lock().clone();
        ConnRecord {
            cid: client.cid,
            addr: client.addr,
            start: client.started,
            last: client.last_activity(),
            stop: None,
            reason: None,
            pending: client.pending_bytes(),
            in_msgs: client.stats.in_msgs.load(Ordering::Relaxed),
            in_bytes: client.stats.in_bytes.load(Ordering::Relaxed),
            out_msgs: client.stats.out_msgs.load(Ordering::Relaxed),
            out_bytes: client.stats.out_bytes.load(Ordering::Relaxed),
            num_subs: client.subs.lock().len(),
            name: meta.name,
            lang: meta.lang,
            version: meta.version,
            user: meta.user,
            subs: Vec::new(),
            client: None,
        }
    }

    fn open(client: &Arc<ClientShared>) -> ConnRecord {
        ConnRecord {
            client: Some(client.clone()),
            ..Self::snapshot(client)
        }
    }

    /// The record kept in the closed ring, with the subscriptions held at close.
    pub(crate) fn closed(client: &ClientShared, reason: CloseReason) -> ConnRecord {
        let subs = sub_details(client);
        ConnRecord {
            stop: Some(SystemTime::now()),
            reason: Some(reason.as_str()),
            num_subs: subs.len(),
            subs,
            ..Self::snapshot(client)
        }
    }

    fn uptime(&self, now: SystemTime) -> Duration {
        since(self.stop.unwrap_or(now), self.start)
    }

    fn info(&self, now: SystemTime, subs: bool, detail: bool, auth: bool) -> ConnInfo {
        let end = self.stop.unwrap_or(now);
        let mut info = ConnInfo {
            cid: self.cid,
            kind: "Client",
            kind_type: "nats",
            ip: self.addr.ip().to_string(),
            port: self.addr.port(),
            start: rfc3339(self.start),
            last_activity: rfc3339(self.last),
            stop: self.stop.map(rfc3339),
            reason: self.reason,
            rtt: go_duration(Duration::ZERO),
            uptime: uptime(since(end, self.start)),
            idle: uptime(since(end, self.last)),
            pending_bytes: self.pending,
            in_msgs: self.in_msgs,
            out_msgs: self.out_msgs,
            in_bytes: self.in_bytes,
            out_bytes: self.out_bytes,
            subscriptions: self.num_subs,
            name: self.name.clone(),
            lang: self.lang.clone(),
            version: self.version.clone(),
            authorized_user: None,
            subscriptions_list: None,
            subscriptions_list_detail: None,
            name_tag: None,
        };
        if auth {
            info.authorized_user = self.user.clone().filter(|u| !u.is_empty());
            if self.client.is_some() {
                info.name_tag = Some(GLOBAL_ACCOUNT);
            }
        }
        if subs || detail {
            let list = match &self.client {
                Some(client) => sub_details(client),
                None => self.subs.clone(),
            };
            if !list.is_empty() {
                if detail {
                    info.subscriptions_list_detail = Some(list);
                } else {
                    info.subscriptions_list = Some(list.into_iter().map(|s| s.subject).collect());
                }
            }
        }
        info
    }
}

/// nats-server's `ConnInfo`, in its field order.
#[derive(Serialize)]
struct ConnInfo {
    cid: u64,
    kind: &'static str,
    #[serde(rename = "type")]
    kind_type: &'static str,
    ip: String,
    port: u16,
    start: String,
    last_activity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    rtt: String,
    uptime: String,
    idle: String,
    pending_bytes: usize,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    subscriptions: usize,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    lang: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorized_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_list_detail: Option<Vec<SubDetail>>,
    /// The account's name tag (with `auth`, open connections only, as the reference).
    #[serde(skip_serializing_if = "Option::is_none")]
    name_tag: Option<&'static str>,
}

#[derive(Serialize)]
struct Connz {
    server_id: String,
    now: String,
    num_connections: usize,
    total: usize,
    offset: usize,
    limit: usize,
    connections: Vec<ConnInfo>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Closed,
    All,
}

pub(super) fn handle(srv: &ServerShared, q: &Query) -> Reply {
    connz(srv, q).unwrap_or_else(|e| e)
}

fn connz(srv: &ServerShared, q: &Query) -> Result<Reply, Reply> {
    // Parameters in the reference's order, so the first bad one is the one reported.
    let sort = q.get("sort");
    let auth = q.bool("auth")?;
    let (subs, detail) = q.subs()?;
    let offset = q.int("offset")?;
    let limit = q.int("limit")?;
    let cid = q.uint("cid")?;
    let state = match q.get("state").to_ascii_lowercase().as_str() {
        "" | "open" => State::Open,
        "closed" => State::Closed,
        "any" | "all" => State::All,
        _ => {
            return Err(Reply::BadRequest(format!(
                "Error decoding state for {}",
                q.get("state")
            )));
        }
    };
    let user = q.get("user");
    let acc = q.get("acc");
    let mqtt_client = q.get("mqtt_client");
    let filter = q.get("filter_subject");
    srv.monitor.count_request("/connz");

    let sort = if sort.is_empty() { "cid" } else { sort };
    if !SORT_OPTIONS.contains(&sort) {
        return Err(Reply::BadRequest(format!("invalid sorting option: {sort}")));
    }
    for closed_only in ["stop", "reason"] {
        if sort == closed_only && state != State::Closed {
            return Err(Reply::BadRequest(format!(
                "sort by {closed_only} only valid on closed connections"
            )));
        }
    }
    let offset = offset.max(0) as usize;
    let mut limit = if limit <= 0 { DEFAULT_LIMIT } else { limit } as usize;
    if cid > 0 {
        limit = 1;
    }
    let filter = (!filter.is_empty() && filter != ">").then_some(filter);
    if filter.is_some() && acc.is_empty() {
        return Err(Reply::BadRequest(
            "filter by subject only valid with account filtering".into(),
        ));
    }

    let now = SystemTime::now();
    let mut connz = Connz {
        server_id: srv.server_id.clone(),
        now: rfc3339(now),
        num_connections: 0,
        total: 0,
        offset,
        limit,
        connections: Vec::new(),
    };
    // Every connection is in the global account; another account has none.
    if !acc.is_empty() && acc != GLOBAL_ACCOUNT {
        return Ok(json(&connz));
    }

    let open: Vec<Arc<ClientShared>> = if state == State::Closed {
        Vec::new()
    } else {
        srv.clients.lock().values().cloned().collect()
    };
    let closed = if state == State::Open {
        Vec::new()
    } else {
        srv.monitor.closed()
    };
    connz.total = open.len() + closed.len();

    let mut records: Vec<Arc<ConnRecord>> = Vec::new();
    if cid > 0 {
        if let Some(c) = open.iter().find(|c| c.cid == cid) {
            records.push(Arc::new(ConnRecord::open(c)));
        } else if let Some(r) = closed.iter().find(|r| r.cid == cid) {
            records.push(r.clone());
        }
    } else {
        records.extend(open.iter().map(|c| Arc::new(ConnRecord::open(c))));
        records.extend(closed);
    }
    records.retain(|r| {
        (user.is_empty() || r.user.as_deref() == Some(user))
            && mqtt_client.is_empty()
            && filter.is_none_or(|f| {
                let subs = match &r.client {
                    Some(client) => sub_details(client),
                    None => r.subs.clone(),
                };
                subs.iter().any(|s| subjects_collide(f, &s.subject))
            })
    });

    records.sort_by_key(|r| r.cid);
    match sort {
        "subs" => records.sort_by_key(|r| Reverse(r.num_subs)),
        "pending" => records.sort_by_key(|r| Reverse(r.pending)),
        "msgs_to" => records.sort_by_key(|r| Reverse(r.out_msgs)),
        "msgs_from" => records.sort_by_key(|r| Reverse(r.in_msgs)),
        "bytes_to" => records.sort_by_key(|r| Reverse(r.out_bytes)),
        "bytes_from" => records.sort_by_key(|r| Reverse(r.in_bytes)),
        "last" => records.sort_by_key(|r| Reverse(r.last)),
        "idle" => records.sort_by_key(|r| Reverse(since(r.stop.unwrap_or(now), r.last))),
        "uptime" => records.sort_by_key(|r| r.uptime(now)),
        "stop" => records.sort_by_key(|r| Reverse(r.stop)),
        "reason" => records.sort_by_key(|r| r.reason),
        _ => {} // cid, start (= cid order), rtt (not measured: all equal)
    }

    connz.connections = records[page(offset, limit, records.len())]
        .iter()
        .map(|r| r.info(now, subs, detail, auth))
        .collect();
    connz.num_connections = connz.connections.len();
    Ok(json(&connz))
}

/// Whether some subject could match both `a` and `b` (each may hold wildcards).
fn subjects_collide(a: &str, b: &str) -> bool {
    let mut ta = a.split('.');
    let mut tb = b.split('.');
    loop {
        match (ta.next(), tb.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) => {
                if x != y && x != "*" && y != "*" {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subjects_collide;

    #[test]
    fn collide() {
        assert!(subjects_collide("foo.*", "foo.bar"));
        assert!(subjects_collide("foo.>", "*.bar.baz"));
        assert!(!subjects_collide("foo.bar", "foo.baz"));
        assert!(!subjects_collide("foo", "foo.bar"));
        assert!(subjects_collide(">", "a"));
    }
}
