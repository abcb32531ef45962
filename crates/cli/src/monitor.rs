//! `rnats server info` and `rnats server ping`: read the server's monitoring endpoint (`/varz`)
//! over plain HTTP. The endpoint is `--monitor URL`, or the host of the first `--server` with
//! the port of `-m/--monitor-port` (8222 by default, as nats-server's `-m`).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rnats_client::ServerAddr;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{human_bytes, human_secs, thousands};
use crate::{Failure, Global, Result};

#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(subcommand)]
    command: ServerCommand,
}

#[derive(Subcommand, Debug)]
enum ServerCommand {
    /// Show the server's version, limits and statistics (from /varz)
    Info(InfoArgs),
    /// Check that the server(s) answer on the monitoring port, with the round-trip time
    Ping(PingArgs),
}

#[derive(Args, Debug)]
struct Endpoint {
    /// Monitoring URL(s), e.g. http://127.0.0.1:8222 (comma separated)
    #[arg(long, env = "NATS_MONITOR_URL", value_name = "URL")]
    monitor: Option<String>,
    /// Monitoring port on the host(s) of --server (nats-server's -m)
    #[arg(
        short = 'm',
        long = "monitor-port",
        default_value_t = 8222,
        value_name = "PORT"
    )]
    monitor_port: u16,
}

#[derive(Args, Debug)]
struct InfoArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Print the raw /varz JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PingArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Ping each server this many times
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Pause between rounds
    #[arg(long, default_value = "1s", value_parser = crate::util::parse_duration)]
    interval: Duration,
}

pub async fn run(g: &Global, a: ServerArgs) -> Result<()> {
    match a.command {
        ServerCommand::Info(a) => info(g, a).await,
        ServerCommand::Ping(a) => ping(g, a).await,
    }
}

/// A plain-HTTP URL: host, port and path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpUrl {
    host: String,
    port: u16,
    base: String,
}

impl HttpUrl {
    fn parse(s: &str) -> Result<HttpUrl, String> {
        let s = s.trim();
        let rest = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "monitoring URL {s:?}: {scheme}:// is not supported, use http://host:port"
                ));
            }
            None => s,
        };
        let (hostport, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("monitoring URL {s:?}: unclosed '['"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(format!(
                "monitoring URL {s:?} has no host: use http://host:port"
            ));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| format!("monitoring URL {s:?}: bad port {p:?}"))?,
            None => 80,
        };
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            base: base.to_string(),
        })
    }

    fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.host_port(), self.base)
    }
}

/// The monitoring endpoints to read: `--monitor`, else one per `--server` host.
fn endpoints(g: &Global, e: &Endpoint) -> Result<Vec<HttpUrl>> {
    let urls: Vec<HttpUrl> = match &e.monitor {
        Some(list) => list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(HttpUrl::parse)
            .collect::<Result<_, _>>()?,
        None => {
            let mut out: Vec<HttpUrl> = Vec::new();
            for s in g.server.split(',').filter(|s| !s.trim().is_empty()) {
                let addr: ServerAddr = s.parse().map_err(|e| {
                    Failure(format!(
                        "cannot derive the monitoring URL from {s:?}: {e}: give --monitor http://host:port"
                    ))
                })?;
                let url = HttpUrl {
                    host: addr.host,
                    port: e.monitor_port,
                    base: String::new(),
                };
                if !out.contains(&url) {
                    out.push(url);
                }
            }
            out
        }
    };
    if urls.is_empty() {
        return Err("no monitoring endpoint: give --monitor http://host:port".into());
    }
    Ok(urls)
}

/// `GET path` over HTTP/1.0 (the server closes the connection after the body); the body of a
/// 200 response.
async fn http_get(url: &HttpUrl, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let full = format!("{url}{path}");
    let work = async {
        let mut s = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("{e}"))?;
        let req = format!(
            "GET {}{path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: rnats\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            url.base,
            url.host_port()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        parse_response(&raw)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(format!("{full}: {e}")),
        Err(_) => Err(format!("{full}: no answer within {timeout:?}")),
    }
}

/// The body of a raw HTTP/1.x response (Content-Length, chunked, or up to the end).
fn parse_response(raw: &[u8]) -> Result<Vec<u8>, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {status:?}"))?;
    if code != 200 {
        return Err(format!(
            "HTTP {}",
            status.split_once(' ').map_or(status, |x| x.1)
        ));
    }
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("truncated chunked body")?;
            let size_text = String::from_utf8_lossy(&rest[..nl]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| "bad chunk size")?;
            rest = &rest[nl + 2..];
            if size == 0 {
                return Ok(out);
            }
            if rest.len() < size {
                return Err("truncated chunked body".into());
            }
            out.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or_default();
        }
    }
    match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) if body.len() >= n => Ok(body[..n].to_vec()),
        Some(n) => Err(format!("body cut short: {} of {n} bytes", body.len())),
        None => Ok(body.to_vec()),
    }
}

async fn varz(url: &HttpUrl, timeout: Duration) -> Result<Value, String> {
    let body = http_get(url, "/varz", timeout).await?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}/varz: not JSON: {e}"))
}

fn unreachable_hint(e: &str) -> Failure {
    Failure(format!(
        "cannot read the monitoring endpoint {e}: start the server with -m PORT, or point at it with --monitor http://host:port or -m PORT"
    ))
}

async fn info(g: &Global, a: InfoArgs) -> Result<()> {
    let url = endpoints(g, &a.endpoint)?.remove(0);
    let v = match varz(&url, g.timeout).await {
        Ok(v) => v,
        Err(e) => return info_from_connection(g, &a, &e).await,
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
        );
        return Ok(());
    }
    print!("{}", render_info(&v));
    Ok(())
}

/// Without a monitoring endpoint: what the server says about itself when a client connects
/// (its INFO), after a note saying which URL was tried and how to turn monitoring on.
async fn info_from_connection(g: &Global, a: &InfoArgs, varz_error: &str) -> Result<()> {
    let opts = g.connect_options()?;
    let client = match opts.connect(g.server.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            return Err(Failure(format!(
                "{}; connecting to {} for its INFO failed too: {e}",
                unreachable_hint(varz_error).0,
                g.server
            )));
        }
    };
    let i = client.server_info();
    client.close().await;
    eprintln!(
        "No monitoring endpoint at {varz_error}: showing the server's INFO instead (no statistics).          For everything, start the server with -m 8222 (monitoring port) and point here with -m PORT or --monitor http://host:port"
    );
    let v = serde_json::json!({
        "server_id": i.server_id,
        "server_name": i.server_name,
        "version": i.version,
        "go": i.go,
        "host": i.host,
        "port": i.port,
        "auth_required": i.auth_required,
        "tls_required": i.tls_required,
        "max_payload": i.max_payload,
        "connect_urls": i.connect_urls,
        "cluster": { "name": i.cluster },
        "headers": i.headers,
        "proto": i.proto,
    });
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
        );
    } else {
        print!("{}", render_server_info(&v));
    }
    Ok(())
}

/// The part of `server info` a server's INFO can fill.
fn render_server_info(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let (name, id) = (s("server_name"), s("server_id"));
    let mut out = if name.is_empty() || name == id {
        format!("Server information for {id} (from INFO)\n\n")
    } else {
        format!("Server information for {name} ({id}) (from INFO)\n\n")
    };
    let o = &mut out;
    row(o, "Version", s("version"));
    if !s("go").is_empty() {
        row(o, "Go Version", s("go"));
    }
    row(o, "Auth Required", b("auth_required"));
    row(o, "TLS Required", b("tls_required"));
    row(o, "Host", format!("{}:{}", s("host"), n("port")));
    row(o, "Headers", b("headers"));
    row(o, "Max Payload", human_bytes(n("max_payload") as f64));
    if let Some(c) = v.pointer("/cluster/name").and_then(Value::as_str) {
        row(o, "Cluster", c);
    }
    out
}

fn row(out: &mut String, key: &str, val: impl std::fmt::Display) {
    out.push_str(&format!("{key:>20}: {val}\n"));
}

/// natscli's `server info` layout, from a /varz document.
fn render_info(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let (name, id) = (s("server_name"), s("server_id"));
    let mut out = if name.is_empty() || name == id {
        format!("Server information for {id}\n\n")
    } else {
        format!("Server information for {name} ({id})\n\n")
    };
    let o = &mut out;

    o.push_str("Process Details:\n\n");
    row(o, "Version", s("version"));
    for (key, field) in [("Go Version", "go"), ("Git Commit", "git_commit")] {
        if !s(field).is_empty() {
            row(o, key, s(field));
        }
    }
    row(o, "Start Time", s("start"));
    row(o, "Uptime", s("uptime"));

    o.push_str("\nConnection Details:\n\n");
    row(o, "Auth Required", b("auth_required"));
    row(o, "TLS Required", b("tls_required"));
    row(o, "Host", format!("{}:{}", s("host"), n("port")));
    let urls: Vec<&str> = v
        .get("connect_urls")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !urls.is_empty() {
        row(o, "Client URLs", urls.join(", "));
    }
    if let Some(c) = v
        .get("cluster")
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
    {
        row(o, "Cluster", c);
    }

    o.push_str("\nLimits:\n\n");
    row(o, "Max Conn", thousands(n("max_connections")));
    row(o, "Max Subs", thousands(n("max_subscriptions")));
    row(o, "Max Payload", human_bytes(n("max_payload") as f64));
    row(o, "Max Pending", human_bytes(n("max_pending") as f64));
    row(
        o,
        "Write Deadline",
        human_secs(n("write_deadline") as f64 / 1e9),
    );

    o.push_str("\nStatistics:\n\n");
    let cpu = v.get("cpu").and_then(Value::as_f64).unwrap_or(0.0);
    row(o, "CPU Cores", format!("{} ({cpu:.2}%)", n("cores")));
    row(o, "Memory", human_bytes(n("mem") as f64));
    row(
        o,
        "Connections",
        format!(
            "{} ({} in total)",
            thousands(n("connections")),
            thousands(n("total_connections"))
        ),
    );
    row(o, "Subscriptions", thousands(n("subscriptions")));
    row(
        o,
        "Messages",
        format!(
            "{} in, {} out",
            thousands(n("in_msgs")),
            thousands(n("out_msgs"))
        ),
    );
    row(
        o,
        "Bytes",
        format!(
            "{} in, {} out",
            human_bytes(n("in_bytes") as f64),
            human_bytes(n("out_bytes") as f64)
        ),
    );
    row(o, "Slow Consumers", thousands(n("slow_consumers")));
    if n("routes") > 0 {
        row(o, "Routes", thousands(n("routes")));
    }
    out
}

async fn ping(g: &Global, a: PingArgs) -> Result<()> {
    let urls = endpoints(g, &a.endpoint)?;
    let mut rtts = Vec::new();
    let mut failures = Vec::new();
    println!("{:<56} {:<10} {:>8}", "SERVER", "VERSION", "RTT");
    for round in 0..a.count.max(1) {
        if round > 0 {
            tokio::time::sleep(a.interval).await;
        }
        for url in &urls {
            let t0 = Instant::now();
            match varz(url, g.timeout).await {
                Ok(v) => {
                    let rtt = t0.elapsed();
                    rtts.push(rtt);
                    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
                    let (name, id) = (s("server_name"), s("server_id"));
                    let who = if name == id || name == "-" {
                        id
                    } else {
                        format!("{name} ({id})")
                    };
                    println!(
                        "{who:<56} {:<10} {:>8}",
                        s("version"),
                        human_secs(rtt.as_secs_f64())
                    );
                }
                Err(e) => {
                    println!("{:<56} {:<10} {:>8}", url.to_string(), "-", "failed");
                    failures.push(e);
                }
            }
        }
    }
    println!();
    println!("---- ping statistics ----");
    if rtts.is_empty() {
        println!("0 replies");
    } else {
        let secs: Vec<f64> = rtts.iter().map(Duration::as_secs_f64).collect();
        let min = secs.iter().copied().fold(f64::MAX, f64::min);
        let max = secs.iter().copied().fold(0.0, f64::max);
        let avg = secs.iter().sum::<f64>() / secs.len() as f64;
        println!(
            "{} replies, {} failed; min {} avg {} max {}",
            rtts.len(),
            failures.len(),
            human_secs(min),
            human_secs(avg),
            human_secs(max)
        );
    }
    match failures.first() {
        None => Ok(()),
        Some(e) => Err(unreachable_hint(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8222").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base.as_str()),
            ("127.0.0.1", 8222, "")
        );
        let u = HttpUrl::parse("localhost:1/base/").unwrap();
        assert_eq!((u.port, u.base.as_str()), (1, "/base"));
        assert_eq!(u.to_string(), "http://localhost:1/base");
        let u = HttpUrl::parse("http://[::1]:9").unwrap();
        assert_eq!(u.host_port(), "[::1]:9");
        assert!(
            HttpUrl::parse("https://h:1")
                .unwrap_err()
                .contains("http://")
        );
        assert!(HttpUrl::parse("http://:1").is_err());
        assert!(HttpUrl::parse("http://h:x").is_err());
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}junk";
        assert_eq!(parse_response(ok).unwrap(), b"{}");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), b"{\"a\":1}");
        let close = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(parse_response(close).unwrap(), b"body");
        let nf = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert_eq!(parse_response(nf).unwrap_err(), "HTTP 404 Not Found");
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn info_layout() {
        let v: Value = serde_json::from_str(
            r#"{"server_id":"NABC","server_name":"n1","version":"2.15.1","go":"go1.24","host":"0.0.0.0","port":4222,
                "max_connections":65536,"max_payload":1048576,"cores":2,"cpu":1.5,"mem":1048576,
                "connections":3,"total_connections":10,"subscriptions":7,"in_msgs":1234,"out_msgs":5678,
                "in_bytes":2048,"out_bytes":4096,"slow_consumers":0,"uptime":"1m2s","start":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let text = render_info(&v);
        assert!(
            text.starts_with("Server information for n1 (NABC)"),
            "{text}"
        );
        for want in [
            "Version: 2.15.1",
            "Host: 0.0.0.0:4222",
            "Max Payload: 1.00 MiB",
            "Connections: 3 (10 in total)",
            "Messages: 1,234 in, 5,678 out",
            "Uptime: 1m2s",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }
}
