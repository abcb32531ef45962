//! Shared helpers: running the `rnats-streaming-server` binary, and a bare-bones streaming
//! client speaking the protobuf protocol over rnats-client (so that tests can send exactly
//! the bytes they want, including bad ones).
#![allow(dead_code)]

pub mod sql;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use rnats_client::{Client, Request, Subscriber};
use rnats_streaming::proto::*;

/// The streaming server binary, running until dropped (SIGKILL).
pub struct ServerProc {
    pub child: Child,
    pub port: u16,
    pub monitor_port: Option<u16>,
    pub lines: mpsc::Receiver<String>,
}

impl ServerProc {
    /// Starts the binary with `args` (plus `-a 127.0.0.1 -p -1`, a port from the OS) and waits,
    /// at most 15 s, for `Streaming Server is ready`.
    pub fn start(args: &[&str]) -> ServerProc {
        let p = ServerProc::spawn(args, "Streaming Server is ready");
        assert!(p.port != 0, "client port in the log");
        p
    }

    /// Starts the binary with `args` (plus `-a 127.0.0.1 -p -1`) and waits, at most 15 s,
    /// for a log line containing `until` (a `-ns` server has no client port: 0).
    pub fn spawn(args: &[&str], until: &str) -> ServerProc {
        Self::spawn_env(args, until, &[])
    }

    /// [`ServerProc::spawn`] with environment variables (and without an inherited
    /// `NATS_STREAMING_ENCRYPTION_KEY`).
    pub fn spawn_env(args: &[&str], until: &str, env: &[(&str, &str)]) -> ServerProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rnats-streaming-server"))
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .args(args)
            .env_remove("NATS_STREAMING_ENCRYPTION_KEY")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rnats-streaming-server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Keep draining so the server never blocks on a full pipe.
                    continue;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        let (mut port, mut monitor_port) = (None, None);
        let mut log = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!("server not ready in time; log:\n{}", log.join("\n"));
                }
            };
            if let Some(p) = line.split("Listening for client connections on ").nth(1) {
                port = p.rsplit(':').next().and_then(|p| p.trim().parse().ok());
            }
            if let Some(p) = line.split("Starting monitoring on http://").nth(1) {
                monitor_port = p
                    .split('/')
                    .next()
                    .and_then(|hp| hp.rsplit(':').next())
                    .and_then(|p| p.parse().ok());
            }
            let ready = line.contains(until);
            log.push(line);
            if ready {
                break;
            }
        }
        ServerProc {
            child,
            port: port.unwrap_or(0),
            monitor_port,
            lines: rx,
        }
    }

    /// Waits at most `d` for a log line containing `what`; returns it.
    pub fn wait_line(&self, what: &str, d: Duration) -> Option<String> {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(what) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET path` on the monitoring port: (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path).unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
}

/// [`http_get`], with an error when nothing answers.
pub fn try_http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// The files under `dir` (recursively) whose bytes contain `needle` (a plaintext search of
/// a store or a RAFT log).
pub fn files_contain(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path())
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Where the node interop scenarios live.
pub fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/node")
}

/// Runs a node scenario (bounded by 60 s); returns (success, output).
pub fn run_node(scenario: &str, url: &str) -> (bool, String) {
    run_node_with(scenario, url, &[])
}

/// [`run_node`] with more arguments after the URL (the cluster ID first).
pub fn run_node_with(scenario: &str, url: &str, extra: &[&str]) -> (bool, String) {
    let mut child = Command::new("node")
        .arg("scenarios.js")
        .arg(scenario)
        .arg(url)
        .args(extra)
        .current_dir(node_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait node") {
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut out);
            }
            return (status.success(), out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (false, format!("node scenario {scenario} timed out"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the node dependencies are installed; when not, the node tests skip, except in CI
/// (`CI=true`) or with `RNATS_REQUIRE_NODE=1`, where they fail.
pub fn node_available() -> bool {
    let ok = node_dir().join("node_modules/node-nats-streaming").is_dir()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var("RNATS_REQUIRE_NODE").as_deref() == Ok("1")
            || std::env::var("CI").as_deref() == Ok("true");
        if required {
            panic!("node-nats-streaming is not installed (npm ci in tests/interop/node)");
        }
        eprintln!("skipped: node-nats-streaming is not installed (npm ci in tests/interop/node)");
    }
    ok
}

// ---------------------------------------------------------------------------------------------
// A raw protocol client.
// ---------------------------------------------------------------------------------------------

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Raw {
    pub nc: Client,
    pub client_id: String,
    pub conn_id: Vec<u8>,
    pub resp: ConnectResponse,
    pub hb_inbox: String,
    /// Answers server heartbeats while alive.
    pub hb_task: Option<tokio::task::JoinHandle<()>>,
}

pub async fn nats(url: &str) -> Client {
    rnats_client::ConnectOptions::new()
        .request_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .expect("connect to NATS")
}

pub fn discover(cluster: &str) -> String {
    format!("_STAN.discover.{cluster}")
}

pub async fn request(nc: &Client, subject: &str, payload: Vec<u8>) -> rnats_client::Message {
    nc.send_request(
        subject,
        Request::new()
            .payload(Bytes::from(payload))
            .timeout(Duration::from_secs(3)),
    )
    .await
    .unwrap_or_else(|e| panic!("request on {subject}: {e}"))
}

impl Raw {
    /// Connects a streaming client that answers heartbeats (when `answer_hb`).
    pub async fn connect(url: &str, cluster: &str, client_id: &str, answer_hb: bool) -> Raw {
        Self::try_connect(url, cluster, client_id, answer_hb)
            .await
            .unwrap_or_else(|e| panic!("connect {client_id}: {e}"))
    }

    pub async fn try_connect(
        url: &str,
        cluster: &str,
        client_id: &str,
        answer_hb: bool,
    ) -> Result<Raw, String> {
        let nc = nats(url).await;
        let hb_inbox = nc.new_inbox();
        let hb_task = if answer_hb {
            let mut hb = nc.subscribe(hb_inbox.clone()).await.unwrap();
            let nc2 = nc.clone();
            Some(tokio::spawn(async move {
                while let Some(m) = hb.next().await {
                    if let Some(r) = m.reply {
                        let _ = nc2.publish(r, b"").await;
                    }
                }
            }))
        } else {
            None
        };
        nc.flush().await.unwrap();
        let conn_id = nuid::next().to_string().into_bytes();
        let req = ConnectRequest {
            client_id: client_id.to_string(),
            heartbeat_inbox: hb_inbox.clone(),
            protocol: 1,
            conn_id: conn_id.clone(),
            ping_interval: 5,
            ping_max_out: 3,
        };
        let m = nc
            .send_request(
                discover(cluster),
                Request::new()
                    .payload(Bytes::from(req.encode_to_vec()))
                    .timeout(Duration::from_secs(3)),
            )
            .await
            .map_err(|e| format!("connect request: {e}"))?;
        let resp = ConnectResponse::decode(m.payload).map_err(|e| e.to_string())?;
        if !resp.error.is_empty() {
            return Err(resp.error);
        }
        Ok(Raw {
            nc,
            client_id: client_id.to_string(),
            conn_id,
            resp,
            hb_inbox,
            hb_task,
        })
    }

    pub fn pub_msg(&self, channel: &str, data: &[u8]) -> PubMsg {
        PubMsg {
            client_id: self.client_id.clone(),
            guid: nuid::next().to_string(),
            subject: channel.to_string(),
            data: Bytes::copy_from_slice(data),
            conn_id: self.conn_id.clone(),
            ..Default::default()
        }
    }

    /// Publishes and waits for the PubAck.
    pub async fn publish(&self, channel: &str, data: &[u8]) -> PubAck {
        let pm = self.pub_msg(channel, data);
        self.publish_raw(channel, pm.encode_to_vec()).await
    }

    /// Sends bytes to `<pubPrefix>.<subject>` and decodes the PubAck.
    pub async fn publish_raw(&self, subject: &str, payload: Vec<u8>) -> PubAck {
        let m = request(
            &self.nc,
            &format!("{}.{subject}", self.resp.pub_prefix),
            payload,
        )
        .await;
        PubAck::decode(m.payload).unwrap()
    }

    pub fn sub_req(&self, channel: &str, inbox: &str) -> SubscriptionRequest {
        SubscriptionRequest {
            client_id: self.client_id.clone(),
            subject: channel.to_string(),
            inbox: inbox.to_string(),
            max_in_flight: 1024,
            ack_wait_in_secs: 30,
            start_position: StartPosition::First as i32,
            ..Default::default()
        }
    }

    /// Subscribes with `req` (its inbox replaced by a fresh one): (ack inbox, messages).
    pub async fn subscribe(&self, mut req: SubscriptionRequest) -> Result<RawSub, String> {
        let inbox = self.nc.new_inbox();
        req.inbox = inbox.clone();
        let sub = self.nc.subscribe(inbox.clone()).await.unwrap();
        self.nc.flush().await.unwrap();
        let m = request(&self.nc, &self.resp.sub_requests, req.encode_to_vec()).await;
        let r = SubscriptionResponse::decode(m.payload).unwrap();
        if !r.error.is_empty() {
            return Err(r.error);
        }
        Ok(RawSub {
            ack_inbox: r.ack_inbox,
            inbox,
            channel: req.subject,
            sub,
        })
    }

    pub async fn unsubscribe(&self, s: &RawSub, close: bool) -> SubscriptionResponse {
        let req = UnsubscribeRequest {
            client_id: self.client_id.clone(),
            subject: s.channel.clone(),
            inbox: s.ack_inbox.clone(),
            ..Default::default()
        };
        let subj = if close {
            &self.resp.sub_close_requests
        } else {
            &self.resp.unsub_requests
        };
        let m = request(&self.nc, subj, req.encode_to_vec()).await;
        SubscriptionResponse::decode(m.payload).unwrap()
    }

    pub async fn close(&self) -> CloseResponse {
        let req = CloseRequest {
            client_id: self.client_id.clone(),
        };
        let m = request(&self.nc, &self.resp.close_requests, req.encode_to_vec()).await;
        CloseResponse::decode(m.payload).unwrap()
    }

    pub async fn ping(&self, conn_id: &[u8]) -> rnats_client::Message {
        let p = Ping {
            conn_id: conn_id.to_vec(),
        };
        request(&self.nc, &self.resp.ping_requests, p.encode_to_vec()).await
    }

    pub async fn ack(&self, s: &RawSub, seq: u64) {
        let a = Ack {
            subject: s.channel.clone(),
            sequence: seq,
        };
        self.nc
            .publish(&s.ack_inbox, a.encode_to_vec())
            .await
            .unwrap();
        self.nc.flush().await.unwrap();
    }
}

pub struct RawSub {
    pub ack_inbox: String,
    pub inbox: String,
    pub channel: String,
    pub sub: Subscriber,
}

impl RawSub {
    /// The next message, within `d`.
    pub async fn next_within(&mut self, d: Duration) -> Option<MsgProto> {
        match tokio::time::timeout(d, self.sub.next()).await {
            Ok(Some(m)) => Some(MsgProto::decode(m.payload).unwrap()),
            _ => None,
        }
    }

    pub async fn next(&mut self) -> MsgProto {
        self.next_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("no message on {} within {WAIT:?}", self.channel))
    }

    /// Asserts that nothing arrives for `d`.
    pub async fn none_for(&mut self, d: Duration) {
        if let Some(m) = self.next_within(d).await {
            panic!("unexpected message seq {} on {}", m.sequence, self.channel);
        }
    }
}

/// Polls `f` every 20 ms until it returns true, for at most `d`.
pub async fn eventually(d: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An in-process server on a random port, with options tweaked by `f`.
pub async fn start_server(
    f: impl FnOnce(&mut rnats_streaming_server::Options),
) -> rnats_streaming_server::StreamingServer {
    let mut opts = rnats_streaming_server::Options::default();
    opts.nats.host = "127.0.0.1".into();
    opts.nats.port = -1;
    f(&mut opts);
    rnats_streaming_server::start(opts)
        .await
        .expect("start streaming server")
}

/// A core NATS server (rnats-server, in this process) on a random loopback port, for servers
/// started with `-ns`. Stops when the runtime that started it ends.
pub async fn core_nats() -> (rnats_server::ServerHandle, String) {
    let o = rnats_server::Options {
        host: "127.0.0.1".into(),
        port: -1,
        ..Default::default()
    };
    let h = rnats_server::start(o).await.expect("start core NATS");
    let url = format!("nats://127.0.0.1:{}", h.client_addr().port());
    (h, url)
}

impl Raw {
    /// Publishes and waits at most `d` for the PubAck (None: no answer).
    pub async fn try_publish(&self, channel: &str, data: &[u8], d: Duration) -> Option<PubAck> {
        let pm = self.pub_msg(channel, data);
        let r = self
            .nc
            .send_request(
                format!("{}.{channel}", self.resp.pub_prefix),
                Request::new()
                    .payload(Bytes::from(pm.encode_to_vec()))
                    .timeout(d),
            )
            .await
            .ok()?;
        PubAck::decode(r.payload).ok()
    }

    /// Sends a subscription request and waits at most `d` for the answer (None: none came).
    pub async fn try_subscribe(&self, req: SubscriptionRequest, d: Duration) -> Option<String> {
        let r = self
            .nc
            .send_request(
                self.resp.sub_requests.clone(),
                Request::new()
                    .payload(Bytes::from(req.encode_to_vec()))
                    .timeout(d),
            )
            .await
            .ok()?;
        let r = SubscriptionResponse::decode(r.payload).ok()?;
        Some(r.error)
    }
}
