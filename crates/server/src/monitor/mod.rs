//! HTTP monitoring, as nats-server's monitoring port: `/varz`, `/connz`, `/routez`, `/subsz`
//! (alias `/subscriptionsz`), `/healthz`, plus `/metrics` in Prometheus text format and a
//! live status page at `/`. Field names and JSON types follow nats-server (see
//! `shared/spec/monitoring.md`).
//!
//! Every endpoint is answered from state the server already keeps (the client map, the
//! cluster's routes, the sublist, atomics); nothing here runs on the message path. Closed
//! connections are kept in a bounded ring (`max_closed_clients`) for `/connz?state=closed`.
//! That state lives in `state::monitor`; this module serves it over HTTP: one file per
//! endpoint, query parameters in `query`, value formats in [`format`](mod@format).

mod connz;
pub mod format;
mod metrics;
mod query;
mod routez;
mod subsz;
mod varz;

use query::Query;
pub use query::percent_decode;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, error, info};

use crate::options::Options;
use crate::state::ServerShared;

/// Where the monitor listens, from the options; `None` when monitoring is off.
pub(crate) fn bind_addr(opts: &Options) -> Option<String> {
    if opts.http_port == 0 {
        return None;
    }
    let port = if opts.http_port < 0 {
        0
    } else {
        opts.http_port as u16
    };
    let host = opts.http_host.as_deref().unwrap_or(&opts.host);
    Some(crate::net::host_port(host, port))
}

/// Binds the monitoring listener and logs it as the reference does.
pub(crate) async fn bind(addr: &str, host: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = crate::net::listen(addr).await?;
    let local = listener.local_addr()?;
    info!(
        "Starting http monitor on {}",
        crate::net::host_port(host, local.port())
    );
    Ok((listener, local))
}

/// Serves monitoring requests until the server shuts down.
pub(crate) async fn serve(srv: Arc<ServerShared>, listener: TcpListener) {
    let shutdown = srv.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                error!("Temporary monitor accept error: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let srv = srv.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let srv = srv.clone();
                async move { Ok::<_, Infallible>(handle(&srv, &req)) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                res = conn => if let Err(e) = res {
                    debug!("monitor connection error: {e}");
                },
                () = shutdown.cancelled() => {}
            }
        });
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
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let reply = match req.uri().path() {
        "/" => {
            srv.monitor.count_request("/");
            Reply::Html(status_page())
        }
        "/varz" => varz::handle(srv),
        "/connz" => connz::handle(srv, &query),
        "/routez" => routez::handle(srv, &query),
        "/subsz" | "/subscriptionsz" => subsz::subsz(srv, &query),
        "/healthz" => subsz::healthz(srv, &query),
        "/metrics" => metrics::handle(srv),
        _ => Reply::NotFound,
    };
    respond(reply)
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

fn status_page() -> String {
    STATUS_PAGE.replace("{{VERSION}}", crate::options::VERSION)
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
