//! HTTP monitoring, as nats-server's monitoring port: `/varz`, `/connz`, `/routez`, `/subsz`
//! (alias `/subscriptionsz`), `/healthz`, plus `/metrics` in Prometheus text format and a
//! live status page at `/`. Field names and JSON types follow nats-server (see
//! `shared/spec/monitoring.md`).
//!
//! Every endpoint is answered from state the server already keeps (the client map, the
//! cluster's routes, the sublist, atomics); nothing here runs on the message path. Closed
//! connections are kept in a bounded ring (`max_closed_clients`) for `/connz?state=closed`.

mod connz;
pub mod format;
mod metrics;
mod routez;
mod subsz;
mod varz;

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
    let listener = TcpListener::bind(addr).await?;
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

/// Query parameters, decoded; the first value of a name wins (Go's `Query().Get`).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Query {
        Query(
            raw.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    /// The value, or "" when absent.
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Go `strconv.ParseBool` forms; "" is false.
    fn bool(&self, name: &str) -> Result<bool, Reply> {
        let v = self.get(name);
        match v {
            "" => Ok(false),
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
            _ => Err(Reply::BadRequest(format!(
                "Error decoding boolean for '{name}': strconv.ParseBool: parsing \"{v}\": invalid syntax"
            ))),
        }
    }

    fn int(&self, name: &str) -> Result<i64, Reply> {
        let v = self.get(name);
        if v.is_empty() {
            return Ok(0);
        }
        v.parse::<i64>().map_err(|e| {
            let why = if matches!(
                e.kind(),
                std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
            ) {
                "value out of range"
            } else {
                "invalid syntax"
            };
            Reply::BadRequest(format!(
                "Error decoding int for '{name}': strconv.Atoi: parsing \"{v}\": {why}"
            ))
        })
    }

    fn uint(&self, name: &str) -> Result<u64, Reply> {
        let v = self.get(name);
        if v.is_empty() {
            return Ok(0);
        }
        v.parse::<u64>().map_err(|e| {
            let why = if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
                "value out of range"
            } else {
                "invalid syntax"
            };
            Reply::BadRequest(format!(
                "Error decoding uint64 for '{name}': strconv.ParseUint: parsing \"{v}\": {why}"
            ))
        })
    }

    /// `subs`: a boolean, or `detail`. Returns (subs, detail).
    fn subs(&self) -> Result<(bool, bool), Reply> {
        if self.get("subs").eq_ignore_ascii_case("detail") {
            return Ok((false, true));
        }
        Ok((self.bool("subs")?, false))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn query_decoding() {
        let q = Query::parse("subs=detail&test=foo%2Ebar&x=a+b&limit=2&limit=3&flag");
        assert_eq!(q.get("test"), "foo.bar");
        assert_eq!(q.get("x"), "a b");
        assert_eq!(q.get("limit"), "2");
        assert_eq!(q.get("flag"), "");
        assert_eq!(q.get("missing"), "");
        assert!(matches!(q.subs(), Ok((false, true))));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        let q = Query::parse("subs=maybe&limit=x");
        let Err(Reply::BadRequest(msg)) = q.subs() else {
            panic!("subs=maybe accepted")
        };
        assert_eq!(
            msg,
            "Error decoding boolean for 'subs': strconv.ParseBool: parsing \"maybe\": invalid syntax"
        );
        let Err(Reply::BadRequest(msg)) = q.int("limit") else {
            panic!("limit=x accepted")
        };
        assert_eq!(
            msg,
            "Error decoding int for 'limit': strconv.Atoi: parsing \"x\": invalid syntax"
        );
    }

    #[test]
    fn paging() {
        assert_eq!(page(0, 1024, 3), 0..3);
        assert_eq!(page(1, 1, 3), 1..2);
        assert_eq!(page(5, 2, 3), 3..3);
        assert_eq!(page(usize::MAX, usize::MAX, 3), 3..3);
    }
}
