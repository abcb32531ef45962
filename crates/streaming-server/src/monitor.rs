//! Streaming monitoring on the `-m` port: `/streaming/serverz`, `/storez`, `/clientsz`,
//! `/channelsz` (and `/streaming`, `/streaming/isFTActive`) with nats-streaming-server's JSON
//! field names. Every other path is passed to the embedded rnats server's own monitor
//! (`/varz`, `/connz`, ...), which listens on a private loopback port, so one port serves both
//! as in the reference.
//!
//! Answers are computed by the engine task (a query event with a reply channel), so they see a
//! consistent state without locks.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::engine::Event;
use crate::monitorz::{self, MonitorQuery};
use crate::status::{ServerState, Status};

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

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

fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

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

/// What a monitoring request asks for, decided from its path and query string alone.
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
    /// Anything else: the embedded NATS server's monitor, if any.
    Other,
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
        _ => return Route::Other,
    })
}

async fn handle(
    req: Request<Incoming>,
    status: Arc<Status>,
    nats_monitor: Option<SocketAddr>,
) -> Response<Full<Bytes>> {
    let query = match route(req.uri().path(), req.uri().query().unwrap_or("")) {
        Route::Index => return respond(200, "text/html; charset=utf-8", INDEX),
        Route::IsFtActive => {
            let active = status.state() == ServerState::FtActive;
            return respond(if active { 200 } else { 204 }, "text/plain", "");
        }
        Route::Query(q) => q,
        Route::BadRequest(e) => return respond(400, "text/plain", e),
        Route::Other => {
            let Some(addr) = nats_monitor else {
                return respond(404, "text/plain", "404 page not found\n");
            };
            let target = match req.uri().path_and_query() {
                Some(pq) => pq.as_str().to_string(),
                None => "/".to_string(),
            };
            return match proxy(addr, &target).await {
                Ok(r) => r,
                Err(e) => respond(502, "text/plain", format!("monitor unavailable: {e}\n")),
            };
        }
    };
    let Some(tx) = status.engine() else {
        return reply(monitorz::standby(&status, &query));
    };
    let (rtx, rrx) = oneshot::channel();
    if tx.send(Event::Monitor(query, rtx)).is_err() {
        return respond(503, "text/plain", "server is shutting down\n");
    }
    match rrx.await {
        Ok(r) => reply(r),
        Err(_) => respond(503, "text/plain", "server is shutting down\n"),
    }
}

fn reply(r: monitorz::MonitorReply) -> Response<Full<Bytes>> {
    if r.status == 200 {
        respond(200, "application/json", r.body)
    } else {
        respond(r.status, "text/plain", r.body)
    }
}

/// Forwards a GET to the embedded server's monitor (HTTP/1.1, `Connection: close`).
async fn proxy(addr: SocketAddr, target: &str) -> std::io::Result<Response<Full<Bytes>>> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("bad response"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = Bytes::copy_from_slice(&buf[split + 4..]);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let mut ctype = "text/plain".to_string();
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-type" {
                ctype = v.trim().to_string();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let body = if chunked { dechunk(&body) } else { body };
    Ok(respond(status, &ctype, body))
}

pub(crate) fn dechunk(b: &[u8]) -> Bytes {
    let mut out = Vec::new();
    let mut rest = b;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&rest[..eol]);
        let size =
            usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    Bytes::from(out)
}

/// Accepts monitoring connections until the task is aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    status: Arc<Status>,
    nats_monitor: Option<SocketAddr>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let status = status.clone();
                async move { Ok::<_, Infallible>(handle(req, status, nats_monitor).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
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
        assert_eq!(&dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")[..], b"abcde");
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
        assert!(matches!(route("/varz", ""), Route::Other));
    }
}
