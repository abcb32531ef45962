//! HTTP monitoring, as nats-server's monitoring port: `/varz`, `/connz`, `/routez`, `/subsz`
//! (alias `/subscriptionsz`), `/healthz`, plus `/metrics` in Prometheus text format and a
//! live status page at `/`. Field names and JSON types follow nats-server (see
//! `shared/spec/monitoring.md`).
//!
//! Every endpoint is answered from state the server already keeps (the client map, the
//! cluster's routes, the sublist, atomics); nothing here runs on the message path. Closed
//! connections are kept in a bounded ring (`max_closed_clients`) for `/connz?state=closed`.
//! That state lives in `state::monitor`; this module serves it over HTTP: one file per
//! endpoint, query parameters in `query`, value formats in [`format`](mod@format), the
//! listener (HTTP or HTTPS) and the pages an embedding service adds in `http`.

mod connz;
pub mod format;
mod http;
mod metrics;
mod query;
mod routez;
mod subsz;
mod varz;

use http::Target;
pub(crate) use http::{Bound, bind};
pub use http::{
    HttpReply, MetricsFuture, MonitorRoutes, ReplyFuture, StandaloneMonitor, start_standalone,
};
/// Connections per ranking that get series of their own in `/metrics`.
pub use metrics::TOP as METRICS_TOP_CONNECTIONS;
pub use metrics::escape as metrics_escape;
use query::Query;
pub use query::percent_decode;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use crate::state::ServerShared;

/// Starts serving the bound monitoring listener for `srv`, until the server shuts down.
pub(crate) fn spawn(srv: Arc<ServerShared>, bound: Bound, tracker: &tokio_util::task::TaskTracker) {
    let stop = srv.shutdown.clone();
    tracker.spawn(sample_rates(srv.clone()));
    tracker.spawn(http::serve(bound, Target::Server(srv), stop));
}

/// Records the server's totals once a second for the status page's chart (only while
/// monitoring is on).
async fn sample_rates(srv: Arc<ServerShared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = srv.shutdown.cancelled() => return,
            _ = tick.tick() => srv.monitor.sample_rates(&srv.stats),
        }
    }
}

/// Answers one request: an embedder's routes first, then the server's own pages.
async fn answer(target: &Target, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let raw_query = req.uri().query().unwrap_or("");
    let routes = match target {
        Target::Server(srv) => srv.monitor.routes(),
        Target::Routes(r) => Some(r.clone()),
    };
    if let Some(reply) = routes.as_ref().and_then(|r| r.route(path, raw_query)) {
        return http::response(reply.await);
    }
    let extra_metrics = async {
        match routes.as_ref().and_then(|r| r.metrics()) {
            Some(m) => m.await,
            None => String::new(),
        }
    };
    match target {
        Target::Server(srv) if path == "/metrics" => {
            let Reply::Text(ctype, mut text) = metrics::handle(srv) else {
                return respond(Reply::NotFound);
            };
            text.push_str(&extra_metrics.await);
            respond(Reply::Text(ctype, text))
        }
        Target::Server(srv) => handle(srv, req),
        Target::Routes(_) if path == "/metrics" => {
            respond(Reply::Text(metrics::CONTENT_TYPE, extra_metrics.await))
        }
        Target::Routes(_) => respond(Reply::NotFound),
    }
}

/// What a handler answers.
enum Reply {
    /// 200, pretty-printed JSON.
    Json(Vec<u8>),
    /// JSON with another status (healthz errors).
    JsonStatus(StatusCode, Vec<u8>),
    /// 400 with a plain-text message, as the reference's parameter errors.
    BadRequest(String),
    Html(String),
    Text(&'static str, String),
    NotFound,
}

fn json<T: Serialize>(value: &T) -> Reply {
    Reply::Json(serde_json::to_vec_pretty(value).expect("monitoring JSON serializes"))
}

fn handle(srv: &ServerShared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    respond(reply_for(
        srv,
        req.uri().path(),
        req.uri().query().unwrap_or(""),
    ))
}

/// The server's own pages, by path and raw query string.
fn reply_for(srv: &ServerShared, path: &str, raw_query: &str) -> Reply {
    let query = Query::parse(raw_query);
    match path {
        // `/status` too: where an embedding service that replaces `/` links to it.
        "/" | "/status" => {
            srv.monitor.count_request("/");
            Reply::Html(status_page(srv))
        }
        "/varz" => varz::handle(srv),
        "/connz" => connz::handle(srv, &query),
        "/routez" => routez::handle(srv, &query),
        "/subsz" | "/subscriptionsz" => subsz::subsz(srv, &query),
        "/healthz" => subsz::healthz(srv, &query),
        "/metrics" => metrics::handle(srv),
        _ => Reply::NotFound,
    }
}

/// Fuzzing hook: answers `path?raw_query` from a server with no connections (built once),
/// as the HTTP handler would, and returns the status code and body length.
#[doc(hidden)]
pub fn fuzz_request(path: &str, raw_query: &str) -> (u16, usize) {
    static SERVER: std::sync::OnceLock<ServerShared> = std::sync::OnceLock::new();
    let srv = SERVER.get_or_init(|| {
        let opts = crate::options::Options::default();
        let auth = opts.auth.authenticator().expect("default auth");
        ServerShared::new(crate::state::Setup {
            opts,
            auth,
            tls: None,
            cluster: None,
            server_id: crate::state::new_server_id(),
            server_name: "fuzz".into(),
            client_addr: ([127, 0, 0, 1], 4222).into(),
            monitor_addr: None,
        })
    });
    let response = respond(reply_for(srv, path, raw_query));
    let len = hyper::body::Body::size_hint(response.body()).exact();
    (response.status().as_u16(), len.unwrap_or(0) as usize)
}

fn respond(reply: Reply) -> Response<Full<Bytes>> {
    let (status, content_type, body, cors) = match reply {
        Reply::Json(body) => (StatusCode::OK, "application/json", body, true),
        Reply::JsonStatus(status, body) => (status, "application/json", body, true),
        Reply::BadRequest(text) => (
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            text.into_bytes(),
            false,
        ),
        Reply::Html(html) => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            html.into_bytes(),
            false,
        ),
        Reply::Text(content_type, text) => (StatusCode::OK, content_type, text.into_bytes(), true),
        Reply::NotFound => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            b"404 page not found\n".to_vec(),
            false,
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if cors {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    if status == StatusCode::NOT_FOUND {
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    response
}

/// The live status page: plain HTML and JS, embedded at build time (no build step). It
/// polls `/varz`, `/connz` and `/routez` every second and computes rates from the deltas.
const STATUS_PAGE: &str = include_str!("status.html");

fn status_page(srv: &ServerShared) -> String {
    let history =
        serde_json::to_string(&srv.monitor.rate_history()).unwrap_or_else(|_| "[]".into());
    STATUS_PAGE
        .replace("{{VERSION}}", crate::options::VERSION)
        .replace("{{RATE_HISTORY}}", &history)
}

/// Offset/limit paging over `n` items, as the reference clamps them.
fn page(offset: usize, limit: usize, n: usize) -> std::ops::Range<usize> {
    let start = offset.min(n);
    let end = offset.saturating_add(limit).min(n);
    start..end
}

/// Time since `t` (zero if `t` is in the future).
fn since(now: SystemTime, t: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging() {
        assert_eq!(page(0, 1024, 3), 0..3);
        assert_eq!(page(1, 1, 3), 1..2);
        assert_eq!(page(5, 2, 3), 3..3);
        assert_eq!(page(usize::MAX, usize::MAX, 3), 3..3);
    }
}
