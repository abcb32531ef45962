//! `/connz`: open and recently closed client connections.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::format::{go_duration, rfc3339, uptime};
use super::{Query, Reply, json, page, since};
use crate::conn::ClientShared;
use crate::state::ServerShared;
use crate::state::monitor::{ConnRecord, GLOBAL_ACCOUNT, SubDetail, sub_details};

const DEFAULT_LIMIT: i64 = 1024;

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

/// A connection record as nats-server's `ConnInfo`.
fn conn_info(r: &ConnRecord, now: SystemTime, subs: bool, detail: bool, auth: bool) -> ConnInfo {
    let end = r.stop.unwrap_or(now);
    let mut info = ConnInfo {
        cid: r.cid,
        kind: "Client",
        kind_type: "nats",
        ip: r.addr.ip().to_string(),
        port: r.addr.port(),
        start: rfc3339(r.start),
        last_activity: rfc3339(r.last),
        stop: r.stop.map(rfc3339),
        reason: r.reason,
        rtt: go_duration(r.rtt),
        uptime: uptime(since(end, r.start)),
        idle: uptime(since(end, r.last)),
        pending_bytes: r.pending,
        in_msgs: r.in_msgs,
        out_msgs: r.out_msgs,
        in_bytes: r.in_bytes,
        out_bytes: r.out_bytes,
        subscriptions: r.num_subs,
        name: r.name.clone(),
        lang: r.lang.clone(),
        version: r.version.clone(),
        authorized_user: None,
        subscriptions_list: None,
        subscriptions_list_detail: None,
        name_tag: None,
    };
    if auth {
        info.authorized_user = r.user.clone().filter(|u| !u.is_empty());
        if r.client.is_some() {
            info.name_tag = Some(GLOBAL_ACCOUNT);
        }
    }
    if subs || detail {
        let list = match &r.client {
            Some(client) => sub_details(client),
            None => r.subs.clone(),
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
        "uptime" => records.sort_by_key(|r| since(r.stop.unwrap_or(now), r.start)),
        "stop" => records.sort_by_key(|r| Reverse(r.stop)),
        "reason" => records.sort_by_key(|r| r.reason),
        "rtt" => records.sort_by_key(|r| Reverse(r.rtt)),
        _ => {} // cid, start (= cid order)
    }

    connz.connections = records[page(offset, limit, records.len())]
        .iter()
        .map(|r| conn_info(r, now, subs, detail, auth))
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
