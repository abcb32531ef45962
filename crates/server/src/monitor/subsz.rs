//! `/subsz` (subject index statistics and subscriptions) and `/healthz`.

use std::time::SystemTime;

use serde::Serialize;

use super::format::{go_float, rfc3339};
use super::{Query, Reply, json, page};
use crate::state::ServerShared;
use crate::state::monitor::SubDetail;

const DEFAULT_LIMIT: i64 = 1024;

#[derive(Serialize)]
struct Subsz {
    server_id: String,
    now: String,
    num_subscriptions: u64,
    num_cache: u64,
    num_inserts: u64,
    num_removes: u64,
    num_matches: u64,
    #[serde(serialize_with = "go_float")]
    cache_hit_rate: f64,
    max_fanout: u64,
    #[serde(serialize_with = "go_float")]
    avg_fanout: f64,
    total: usize,
    offset: usize,
    limit: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subscriptions_list: Vec<SubDetail>,
}

pub(super) fn subsz(srv: &ServerShared, q: &Query) -> Reply {
    srv.monitor.count_request("/subsz");
    subsz_inner(srv, q).unwrap_or_else(|e| e)
}

fn subsz_inner(srv: &ServerShared, q: &Query) -> Result<Reply, Reply> {
    let subs = q.bool("subs")?;
    let offset = q.int("offset")?.max(0) as usize;
    let limit = q.int("limit")?;
    let limit = if limit <= 0 { DEFAULT_LIMIT } else { limit } as usize;
    let test = q.get("test");
    let acc = q.get("acc");
    if !test.is_empty() && !rnats_protocol::is_valid_literal_subject(test.as_bytes()) {
        return Err(Reply::BadRequest(format!(
            "invalid test subject, must be valid publish subject: {test}"
        )));
    }
    // Everything lives in the global account.
    let in_account = acc.is_empty() || acc == "$G";
    let stats = if in_account {
        srv.sublist.stats()
    } else {
        Default::default()
    };
    let mut sz = Subsz {
        server_id: srv.server_id.clone(),
        now: rfc3339(SystemTime::now()),
        num_subscriptions: stats.num_subscriptions,
        num_cache: stats.num_cache,
        num_inserts: stats.num_inserts,
        num_removes: stats.num_removes,
        num_matches: stats.num_matches,
        cache_hit_rate: stats.cache_hit_rate,
        max_fanout: stats.max_fanout,
        avg_fanout: stats.avg_fanout,
        total: 0,
        offset,
        limit,
        subscriptions_list: Vec::new(),
    };
    if subs && in_account {
        let mut details = Vec::new();
        srv.sublist.for_each(|sub| {
            if test.is_empty() || rnats_protocol::subject_matches(&sub.subject, test.as_bytes()) {
                details.push(SubDetail::new(sub, true));
            }
        });
        sz.total = details.len();
        let range = page(offset, limit, details.len());
        details.truncate(range.end);
        details.drain(..range.start);
        sz.subscriptions_list = details;
    }
    Ok(json(&sz))
}

pub(super) fn healthz(srv: &ServerShared, q: &Query) -> Reply {
    srv.monitor.count_request("/healthz");
    let details = q.bool("details").unwrap_or(false);
    // JetStream checks (js-enabled-only, js-server-only, ...) pass: there is no JetStream.
    if !q.get("stream").is_empty() && q.get("account").is_empty() {
        let error = "\"account\" must not be empty when checking stream health";
        let body = if details {
            serde_json::json!({
                "status": "error",
                "errors": [{"type": "BAD_REQUEST", "error": error}],
            })
        } else {
            serde_json::json!({"status": "error", "error": error})
        };
        return Reply::JsonStatus(
            hyper::StatusCode::BAD_REQUEST,
            serde_json::to_vec(&body).expect("serializes"),
        );
    }
    if srv.shutdown.is_cancelled() {
        return Reply::JsonStatus(
            hyper::StatusCode::SERVICE_UNAVAILABLE,
            br#"{"status":"unavailable","error":"server is shutting down"}"#.to_vec(),
        );
    }
    Reply::Json(br#"{"status":"ok"}"#.to_vec())
}
