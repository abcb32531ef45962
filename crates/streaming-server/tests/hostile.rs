//! Hostile clients of the streaming server against its limits (issue #18). Each attack runs
//! while a well-behaved streaming client, the [`Bystander`], keeps publishing (with acks) to
//! a channel it subscribes to; every test asserts the attack was bounded *and* the bystander
//! never stalled.
//!
//! * A flood of connects with fresh client IDs, from one NATS connection that answers every
//!   heartbeat (so nothing would ever expire them): `max_clients` refuses the excess
//!   (an rnats option: the reference has no limit); once the attacker goes, heartbeats remove
//!   its clients and newcomers get in again.
//! * 1,000 concurrent requests on the monitoring port (`/streaming/...` and the core
//!   server's endpoints behind it), with idle connections open: all answered, and the idle
//!   ones closed by the header read timeout.
//!
//! The core server's hostile clients (no CONNECT, slowloris, subscription and PING floods)
//! are in `crates/server/tests/it/hostile.rs`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use prost::Message as _;
use rnats_client::Request;
use rnats_streaming::proto::{ConnectRequest, ConnectResponse};
use rnats_streaming::store::StoreKind;
use rnats_streaming::store::file::SyncPolicy;
use rnats_streaming_server as srv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const CID: &str = "test-cluster";
/// Longest a bystander publish → ack → delivery may take during an attack (generous: other
/// builds share the machine).
const MAX_RTT: Duration = Duration::from_secs(3);

/// A streaming client publishing to its own subscription every few milliseconds, acking
/// what it receives, until stopped. Panics (failing the test at `finish`) when a publish is
/// not acked or its message not delivered within 5 s.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(u64, Duration)>,
}

impl Bystander {
    async fn start(url: &str) -> Bystander {
        let c = Raw::connect(url, CID, "bystander", true).await;
        let mut sub = c.subscribe(c.sub_req("bystander", "")).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut n, mut worst) = (0u64, Duration::ZERO);
            while !flag.load(Ordering::Relaxed) {
                let body = n.to_string();
                let sent = Instant::now();
                let ack = c
                    .try_publish("bystander", body.as_bytes(), WAIT)
                    .await
                    .expect("bystander: publish acked");
                assert_eq!(ack.error, "", "bystander: publish accepted");
                let m = sub.next().await;
                assert_eq!(m.data, body.as_bytes(), "in order, nothing lost");
                c.ack(&sub, m.sequence).await;
                worst = worst.max(sent.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (n, worst)
        });
        Bystander { stop, task }
    }

    /// Stops the bystander and checks it kept going: at least `min` round trips, none slower
    /// than [`MAX_RTT`].
    async fn finish(self, min: u64) {
        self.stop.store(true, Ordering::Relaxed);
        let (n, worst) = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("bystander stops")
            .expect("bystander never failed");
        eprintln!("bystander: {n} round trips, slowest {worst:?}");
        assert!(n >= min, "bystander made {n} round trips, expected {min}");
        assert!(worst < MAX_RTT, "a bystander round trip took {worst:?}");
    }
}

/// Sends `n` ConnectRequests with fresh client IDs over `nc`, 100 at a time; heartbeats go
/// to `_INBOX.flood.<i>`. Returns each answer's error text ("" when accepted).
async fn connect_flood(nc: &rnats_client::Client, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| {
            let nc = nc.clone();
            async move {
                let req = ConnectRequest {
                    client_id: format!("flood-{i}"),
                    heartbeat_inbox: format!("_INBOX.flood.{i}"),
                    protocol: 1,
                    conn_id: nuid::next().to_string().into_bytes(),
                    ping_interval: 5,
                    ping_max_out: 3,
                };
                let m = nc
                    .send_request(
                        discover(CID),
                        Request::new()
                            .payload(Bytes::from(req.encode_to_vec()))
                            .timeout(Duration::from_secs(10)),
                    )
                    .await
                    .expect("the server answers every connect");
                ConnectResponse::decode(m.payload)
                    .expect("a ConnectResponse")
                    .error
            }
        })
        .buffer_unordered(100)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_flood_with_fresh_client_ids_stops_at_max_clients() {
    const MAX: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = start_server(|o| {
        o.store_type = StoreKind::File;
        o.dir = Some(store);
        // Each accepted connect writes the clients file on the engine task; with fsync (the
        // default) that is the disk's latency per connect, which this test is not about.
        o.file_options.sync = SyncPolicy::Never;
        o.max_clients = MAX;
        o.hb_interval = Duration::from_millis(300);
        o.hb_timeout = Duration::from_millis(200);
        o.hb_fail_count = 2;
    })
    .await;
    let url = server.nats_url().to_string();
    let by = Bystander::start(&url).await;

    // The attacker answers every heartbeat of its clients: only the limit stops them.
    let attacker = nats(&url).await;
    let mut hb = attacker.subscribe("_INBOX.flood.>").await.unwrap();
    let answer_nc = attacker.clone();
    let answering = tokio::spawn(async move {
        while let Some(m) = hb.next().await {
            if let Some(r) = m.reply {
                let _ = answer_nc.publish(r, b"").await;
            }
        }
    });
    attacker.flush().await.unwrap();
    let answers = connect_flood(&attacker, 2000).await;
    let accepted = answers.iter().filter(|e| e.is_empty()).count() as u64;
    let refused = srv::ProtocolError::TooManyClients.to_string();
    assert_eq!(accepted, MAX - 1, "the bystander holds one place");
    assert!(
        answers.iter().all(|e| e.is_empty() || *e == refused),
        "{:?}",
        answers.iter().find(|e| !e.is_empty() && **e != refused)
    );
    // Full: a newcomer is refused too (the limit is global, as max_connections).
    let late = Raw::try_connect(&url, CID, "late", true).await;
    assert_eq!(late.err().as_deref(), Some(refused.as_str()));

    // The attacker goes; its clients stop answering heartbeats and are removed.
    answering.abort();
    attacker.close().await;
    let back = eventually(Duration::from_secs(15), async || {
        Raw::try_connect(&url, CID, "late", true).await.is_ok()
    })
    .await;
    assert!(back, "the flood's clients were never removed");
    by.finish(20).await;
    server.shutdown().await;
}

/// One `GET path` over a fresh connection: the status code (0 if none).
async fn http_status(port: u16, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to monitor");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_monitoring_requests_are_all_served() {
    let server = start_server(|o| {
        o.http_host = "127.0.0.1".into();
        o.http_port = -1;
    })
    .await;
    let url = server.nats_url().to_string();
    let port = server.monitor_addr().expect("monitoring on").port();
    let by = Bystander::start(&url).await;
    // Some clients and channels, so that the endpoints have work to do.
    let mut others = Vec::new();
    for i in 0..10 {
        let c = Raw::connect(&url, CID, &format!("other-{i}"), true).await;
        assert_eq!(c.publish(&format!("ch.{i}"), b"x").await.error, "");
        others.push(c);
    }
    // Connections that never send a request hold nothing up, and are closed in the end.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("idle connect"),
        );
    }
    let paths = [
        "/streaming/serverz",
        "/streaming/clientsz?subs=1",
        "/streaming/channelsz?subs=1",
        "/streaming/storez",
        "/varz",
    ];
    let start = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|i| tokio::spawn(http_status(port, paths[i % paths.len()])))
        .collect();
    let mut ok = 0;
    for t in tasks {
        let status = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("response in time")
            .expect("request task");
        ok += usize::from(status == 200);
    }
    assert_eq!(ok, 1000, "every request answered 200");
    eprintln!("1000 concurrent monitoring requests: {:?}", start.elapsed());
    by.finish(3).await;
    // The header read timeout (10 s) closes the idle connections.
    let closing: Vec<_> = idle
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await
            })
        })
        .collect();
    for c in closing {
        assert!(
            c.await.expect("task").is_ok(),
            "an idle monitoring connection stayed open"
        );
    }
    for c in &others {
        assert_eq!(c.publish("ch.0", b"y").await.error, "");
    }
    server.shutdown().await;
}
