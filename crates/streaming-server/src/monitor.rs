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
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rnats_server::monitor::format::{rfc3339, uptime};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{ChannelState, Engine, Event, Sub};
use crate::options::VERSION;

/// A monitoring request, answered by the engine.
#[derive(Debug, Clone)]
pub enum MonitorQuery {
    Serverz,
    Storez,
    Clientsz {
        offset: usize,
        limit: usize,
        subs: bool,
        client: Option<String>,
    },
    Channelsz {
        offset: usize,
        limit: usize,
        subs: bool,
        channel: Option<String>,
    },
}

/// Status and JSON body.
#[derive(Debug, Clone)]
pub struct MonitorReply {
    pub status: u16,
    pub body: String,
}

fn ok<T: Serialize>(v: &T) -> MonitorReply {
    MonitorReply {
        status: 200,
        body: serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize)]
struct Serverz<'a> {
    cluster_id: &'a str,
    server_id: &'a str,
    version: &'a str,
    go: &'a str,
    state: &'a str,
    now: String,
    start_time: String,
    uptime: String,
    clients: usize,
    subscriptions: usize,
    channels: usize,
    total_msgs: u64,
    total_bytes: u64,
    in_msgs: u64,
    in_bytes: u64,
    out_msgs: u64,
    out_bytes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    open_fds: u64,
    #[serde(skip_serializing_if = "is_zero")]
    max_fds: u64,
}

#[derive(Serialize)]
struct LimitsJson {
    max_msgs: u64,
    max_bytes: u64,
    max_age: u64,
    max_subscriptions: u64,
    max_inactivity: u64,
}

#[derive(Serialize)]
struct StoreLimitsJson {
    max_channels: u64,
    max_msgs: u64,
    max_bytes: u64,
    max_age: u64,
    max_subscriptions: u64,
    max_inactivity: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<std::collections::BTreeMap<String, LimitsJson>>,
}

#[derive(Serialize)]
struct Storez<'a> {
    cluster_id: &'a str,
    server_id: &'a str,
    now: String,
    #[serde(rename = "type")]
    kind: &'a str,
    limits: StoreLimitsJson,
    total_msgs: u64,
    total_bytes: u64,
}

#[derive(Serialize)]
struct Subscriptionz {
    client_id: String,
    inbox: String,
    ack_inbox: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    durable_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    queue_name: String,
    is_durable: bool,
    is_offline: bool,
    max_inflight: i32,
    ack_wait: i32,
    last_sent: u64,
    pending_count: usize,
    is_stalled: bool,
}

#[derive(Serialize)]
struct Clientz {
    id: String,
    hb_inbox: String,
    subs_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions: Option<std::collections::BTreeMap<String, Vec<Subscriptionz>>>,
}

#[derive(Serialize)]
struct Clientsz<'a> {
    cluster_id: &'a str,
    server_id: &'a str,
    now: String,
    offset: usize,
    limit: usize,
    count: usize,
    total: usize,
    clients: Vec<Clientz>,
}

#[derive(Serialize)]
struct Channelz {
    name: String,
    msgs: u64,
    bytes: u64,
    first_seq: u64,
    last_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    subs_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions: Option<Vec<Subscriptionz>>,
}

#[derive(Serialize)]
struct Channelsz<'a> {
    cluster_id: &'a str,
    server_id: &'a str,
    now: String,
    offset: usize,
    limit: usize,
    count: usize,
    total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<Vec<Channelz>>,
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn subz(s: &Sub) -> Subscriptionz {
    Subscriptionz {
        client_id: s.st.client_id.clone(),
        inbox: s.st.inbox.clone(),
        ack_inbox: s.st.ack_inbox.clone(),
        durable_name: s.st.durable_name.clone(),
        queue_name: s.queue.clone().unwrap_or_default(),
        is_durable: s.st.is_durable,
        is_offline: s.offline,
        max_inflight: s.st.max_in_flight,
        ack_wait: s.st.ack_wait_in_secs,
        last_sent: s.st.last_sent,
        pending_count: s.pending.len(),
        is_stalled: s.stalled(),
    }
}

fn channelz(name: &str, cs: &ChannelState, subs: bool) -> Channelz {
    let st = cs.ch.msgs().state();
    Channelz {
        name: name.to_string(),
        msgs: st.msgs,
        bytes: st.bytes,
        first_seq: st.first_seq_or_zero(),
        last_seq: st.last,
        subs_count: Some(cs.subs.len()),
        subscriptions: subs.then(|| cs.subs.values().map(subz).collect()),
    }
}

fn not_found(msg: String) -> MonitorReply {
    MonitorReply {
        status: 404,
        body: msg,
    }
}

/// Computes the answer to a query from the engine's state.
pub(crate) fn answer(e: &Engine, q: &MonitorQuery) -> MonitorReply {
    let now = rfc3339(SystemTime::now());
    let cid = e.opts.cluster_id.as_str();
    let sid = e.server_id.as_str();
    let (total_msgs, total_bytes) = e.channels.values().fold((0, 0), |(m, b), c| {
        let s = c.ch.msgs().state();
        (m + s.msgs, b + s.bytes)
    });
    match q {
        MonitorQuery::Serverz => ok(&Serverz {
            cluster_id: cid,
            server_id: sid,
            version: VERSION,
            go: concat!("rust-", env!("CARGO_PKG_VERSION")),
            state: "STANDALONE",
            now,
            start_time: rfc3339(e.start_time),
            uptime: uptime(e.start_time.elapsed().unwrap_or_default()),
            clients: e.clients.len(),
            subscriptions: e.channels.values().map(|c| c.subs.len()).sum(),
            channels: e.channels.len(),
            total_msgs,
            total_bytes,
            in_msgs: e.stats.in_msgs,
            in_bytes: e.stats.in_bytes,
            out_msgs: e.stats.out_msgs,
            out_bytes: e.stats.out_bytes,
            open_fds: 0,
            max_fds: 0,
        }),
        MonitorQuery::Storez => {
            let l = e.store.limits();
            let channels = (!l.per_channel.is_empty()).then(|| {
                l.per_channel
                    .keys()
                    .map(|name| {
                        let r = l.resolve(name);
                        (
                            name.clone(),
                            LimitsJson {
                                max_msgs: r.max_msgs,
                                max_bytes: r.max_bytes,
                                max_age: nanos(r.max_age),
                                max_subscriptions: r.max_subs,
                                max_inactivity: nanos(r.max_inactivity),
                            },
                        )
                    })
                    .collect()
            });
            ok(&Storez {
                cluster_id: cid,
                server_id: sid,
                now,
                kind: e.store.kind().as_str(),
                limits: StoreLimitsJson {
                    max_channels: l.max_channels,
                    max_msgs: l.channel.max_msgs,
                    max_bytes: l.channel.max_bytes,
                    max_age: nanos(l.channel.max_age),
                    max_subscriptions: l.channel.max_subs,
                    max_inactivity: nanos(l.channel.max_inactivity),
                    channels,
                },
                total_msgs,
                total_bytes,
            })
        }
        MonitorQuery::Clientsz {
            offset,
            limit,
            subs,
            client,
        } => {
            let clientz = |id: &str| -> Option<Clientz> {
                let c = e.clients.get(id)?;
                let subscriptions = subs.then(|| {
                    let mut m: std::collections::BTreeMap<String, Vec<Subscriptionz>> =
                        Default::default();
                    for (ch, sid) in &c.subs {
                        if let Some(s) = e.channels.get(ch).and_then(|cs| cs.subs.get(sid)) {
                            m.entry(ch.clone()).or_default().push(subz(s));
                        }
                    }
                    m
                });
                Some(Clientz {
                    id: id.to_string(),
                    hb_inbox: c.info.hb_inbox.clone(),
                    subs_count: c.subs.len(),
                    subscriptions,
                })
            };
            if let Some(id) = client {
                return match clientz(id) {
                    Some(c) => ok(&c),
                    None => not_found(format!("Client {id} not found")),
                };
            }
            let total = e.clients.len();
            let clients: Vec<Clientz> = e
                .clients
                .keys()
                .skip(*offset)
                .take(*limit)
                .filter_map(|id| clientz(id))
                .collect();
            ok(&Clientsz {
                cluster_id: cid,
                server_id: sid,
                now,
                offset: *offset,
                limit: *limit,
                count: clients.len(),
                total,
                clients,
            })
        }
        MonitorQuery::Channelsz {
            offset,
            limit,
            subs,
            channel,
        } => {
            if let Some(name) = channel {
                return match e.channels.get(name) {
                    Some(cs) => ok(&channelz(name, cs, *subs)),
                    None => not_found(format!("Channel {name} not found")),
                };
            }
            let total = e.channels.len();
            let page: Vec<(&String, &ChannelState)> =
                e.channels.iter().skip(*offset).take(*limit).collect();
            let (names, channels) = if *subs {
                (
                    None,
                    Some(
                        page.iter()
                            .map(|(n, cs)| channelz(n, cs, true))
                            .collect::<Vec<_>>(),
                    ),
                )
            } else {
                (Some(page.iter().map(|(n, _)| (*n).clone()).collect()), None)
            };
            ok(&Channelsz {
                cluster_id: cid,
                server_id: sid,
                now,
                offset: *offset,
                limit: *limit,
                count: page.len(),
                total,
                names,
                channels,
            })
        }
    }
}

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

async fn handle(
    req: Request<Incoming>,
    tx: mpsc::UnboundedSender<Event>,
    nats_monitor: Option<SocketAddr>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let params = query_params(&raw_query);
    let int = |name: &str, default: usize| -> Result<usize, String> {
        match param(&params, name) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .map(|n| if n < 0 { default } else { n as usize })
                .map_err(|_| format!("invalid {name} value {v:?}")),
        }
    };
    let query = match path.as_str() {
        "/streaming" => return respond(200, "text/html; charset=utf-8", INDEX),
        "/streaming/isFTActive" => return respond(204, "text/plain", ""),
        "/streaming/serverz" => MonitorQuery::Serverz,
        "/streaming/storez" => MonitorQuery::Storez,
        "/streaming/clientsz" | "/streaming/channelsz" => {
            let (offset, limit) = match (int("offset", 0), int("limit", 1024)) {
                (Ok(o), Ok(l)) => (o, if l == 0 { 1024 } else { l }),
                (Err(e), _) | (_, Err(e)) => return respond(400, "text/plain", e),
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
        _ => {
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
    let (rtx, rrx) = oneshot::channel();
    if tx.send(Event::Monitor(query, rtx)).is_err() {
        return respond(503, "text/plain", "server is shutting down\n");
    }
    match rrx.await {
        Ok(r) if r.status == 200 => respond(200, "application/json", r.body),
        Ok(r) => respond(r.status, "text/plain", r.body),
        Err(_) => respond(503, "text/plain", "server is shutting down\n"),
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

fn dechunk(b: &[u8]) -> Bytes {
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
    tx: mpsc::UnboundedSender<Event>,
    nats_monitor: Option<SocketAddr>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let tx = tx.clone();
                async move { Ok::<_, Infallible>(handle(req, tx, nats_monitor).await) }
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
}
