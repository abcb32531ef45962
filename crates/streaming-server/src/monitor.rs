//! Streaming monitoring: `/streaming/serverz`, `/storez`, `/clientsz`, `/channelsz` (and
//! `/streaming`, `/streaming/isFTActive`) with nats-streaming-server's JSON field names.
//!
//! They are pages added to the embedded rnats server's own monitoring port
//! ([`rnats_server::monitor::MonitorRoutes`]), as the reference adds its handlers to the
//! embedded nats-server's: one port (`-m`, on the `-a` host, or `-ms` for HTTPS with the
//! server's TLS certificate) serves the NATS endpoints (`/varz`, `/connz`, ...) and the
//! streaming ones, and nothing else listens. With `-ns` (no embedded server) the same pages
//! get a listener of their own ([`rnats_server::monitor::start_standalone`]).
//!
//! At `/`, a live status page (`status_page.html`) shows the channels, subscriptions, clients,
//! store and high-availability state; the core server's own page moves to `/status`.
//!
//! Answers are computed by the engine task (a query event with a reply channel), so they see a
//! consistent state without locks.

use std::sync::Arc;

use rnats_server::monitor::{HttpReply, MetricsFuture, MonitorRoutes, ReplyFuture, percent_decode};
use tokio::sync::oneshot;

use crate::engine::Event;
use crate::monitorz::{self, MonitorQuery};
use crate::status::{ServerState, Status};

fn query_params(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn bool_param(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "true" | "t" | "TRUE" | "True"))
}

fn respond(status: u16, content_type: &str, body: impl Into<bytes::Bytes>) -> HttpReply {
    HttpReply::new(status, content_type, body)
}

/// The live status page at `/` (streaming first; the core server's page is at `/status`):
/// plain HTML and JS that polls the `/streaming/...` endpoints every second.
const STATUS_PAGE: &str = include_str!("status_page.html");

const INDEX: &str = r#"<html lang="en">
<head><title>rnats-streaming-server monitoring</title></head>
<body>
<h1>NATS Streaming monitoring</h1>
<a href="/streaming/serverz">serverz</a><br/>
<a href="/streaming/storez">storez</a><br/>
<a href="/streaming/clientsz">clientsz</a><br/>
<a href="/streaming/channelsz">channelsz</a><br/>
</body>
</html>
"#;

/// The streaming pages, served on the monitoring port.
pub(crate) struct StreamingRoutes {
    pub(crate) status: Arc<Status>,
}

impl MonitorRoutes for StreamingRoutes {
    fn route(&self, path: &str, query: &str) -> Option<ReplyFuture> {
        if path == "/" {
            let page = STATUS_PAGE.replace("{{VERSION}}", crate::options::VERSION);
            let reply = respond(200, "text/html; charset=utf-8", page);
            return Some(Box::pin(async move { reply }));
        }
        let path = path.trim_end_matches('/');
        if path != "/streaming" && !path.starts_with("/streaming/") {
            return None;
        }
        let (path, query, status) = (path.to_string(), query.to_string(), self.status.clone());
        Some(Box::pin(async move { handle(&path, &query, status).await }))
    }

    fn metrics(&self) -> Option<MetricsFuture> {
        let status = self.status.clone();
        Some(Box::pin(async move {
            let r = ask(&status, MonitorQuery::Metrics).await;
            if r.status == 200 {
                r.body
            } else {
                String::new()
            }
        }))
    }
}

/// The engine's answer to `query`, or the standby's when no engine runs.
async fn ask(status: &Status, query: MonitorQuery) -> monitorz::MonitorReply {
    let unavailable = || monitorz::MonitorReply {
        status: 503,
        body: "server is shutting down\n".into(),
    };
    let Some(tx) = status.engine() else {
        return monitorz::standby(status, &query);
    };
    let (rtx, rrx) = oneshot::channel();
    if tx.send(Event::Monitor(query, rtx)).is_err() {
        return unavailable();
    }
    rrx.await.unwrap_or_else(|_| unavailable())
}

/// What a monitoring request asks for, decided from its path and query string alone (a pure
/// function, so it is unit-tested and fuzzed without a server).
#[derive(Debug)]
pub(crate) enum Route {
    /// `/streaming`: the index page.
    Index,
    /// `/streaming/isFTActive`.
    IsFtActive,
    /// An endpoint the engine answers.
    Query(MonitorQuery),
    /// A malformed parameter: 400 with this text.
    BadRequest(String),
    /// No such streaming page.
    NotFound,
}

/// Routes `path` (without its query) and `raw_query` (still percent-encoded).
pub(crate) fn route(path: &str, raw_query: &str) -> Route {
    let path = path.trim_end_matches('/');
    let params = query_params(raw_query);
    let int = |name: &str, default: usize| -> Result<usize, String> {
        match param(&params, name) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .map(|n| if n < 0 { default } else { n as usize })
                .map_err(|_| format!("invalid {name} value {v:?}")),
        }
    };
    Route::Query(match path {
        "/streaming" => return Route::Index,
        "/streaming/isFTActive" => return Route::IsFtActive,
        "/streaming/serverz" => MonitorQuery::Serverz,
        "/streaming/storez" => MonitorQuery::Storez,
        "/streaming/clientsz" | "/streaming/channelsz" => {
            let (offset, limit) = match (int("offset", 0), int("limit", 1024)) {
                (Ok(o), Ok(l)) => (o, if l == 0 { 1024 } else { l }),
                (Err(e), _) | (_, Err(e)) => return Route::BadRequest(e),
            };
            let subs = bool_param(param(&params, "subs"));
            if path.ends_with("clientsz") {
                MonitorQuery::Clientsz {
                    offset,
                    limit,
                    subs,
                    client: param(&params, "client").map(str::to_string),
                }
            } else {
                MonitorQuery::Channelsz {
                    offset,
                    limit,
                    subs,
                    channel: param(&params, "channel").map(str::to_string),
                }
            }
        }
        _ => return Route::NotFound,
    })
}

async fn handle(path: &str, raw_query: &str, status: Arc<Status>) -> HttpReply {
    let query = match route(path, raw_query) {
        Route::Index => return respond(200, "text/html; charset=utf-8", INDEX),
        Route::IsFtActive => {
            let active = status.state() == ServerState::FtActive;
            return respond(if active { 200 } else { 204 }, "text/plain", "");
        }
        Route::Query(q) => q,
        Route::BadRequest(e) => return respond(400, "text/plain", e),
        Route::NotFound => {
            return respond(404, "text/plain; charset=utf-8", "404 page not found\n");
        }
    };
    reply(ask(&status, query).await)
}

fn reply(r: monitorz::MonitorReply) -> HttpReply {
    if r.status == 200 {
        respond(200, "application/json", r.body)
    } else {
        respond(r.status, "text/plain", r.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("foo%2Ebar"), "foo.bar");
        assert_eq!(percent_decode("a+b%"), "a b%");
        let p = query_params("subs=1&channel=foo%2Ebar&x");
        assert_eq!(param(&p, "channel"), Some("foo.bar"));
        assert!(bool_param(param(&p, "subs")));
        assert_eq!(param(&p, "x"), Some(""));
    }

    #[test]
    fn routing() {
        assert!(matches!(route("/streaming/", "x=1"), Route::Index));
        assert!(matches!(
            route("/streaming/isFTActive", ""),
            Route::IsFtActive
        ));
        assert!(matches!(
            route("/streaming/channelsz", "offset=2&limit=0&subs=1&channel=a%2Eb"),
            Route::Query(MonitorQuery::Channelsz { offset: 2, limit: 1024, subs: true, channel: Some(c) })
                if c == "a.b"
        ));
        assert!(matches!(
            route("/streaming/clientsz", "offset=-3"),
            Route::Query(MonitorQuery::Clientsz {
                offset: 0,
                limit: 1024,
                subs: false,
                client: None
            })
        ));
        assert!(matches!(
            route("/streaming/clientsz", "limit=x"),
            Route::BadRequest(e) if e == "invalid limit value \"x\""
        ));
        assert!(matches!(route("/streaming/varz", ""), Route::NotFound));
    }
}
