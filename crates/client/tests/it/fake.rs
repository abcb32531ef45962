//! Behaviour that a real server does not show on demand, driven by a scripted fake server:
//! discovery, lame duck, server PING, -ERR, and a server that stops answering PINGs.

use std::time::Duration;

use rnats_client::{ConnectOptions, Event};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

struct Peer {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Peer {
    /// Accepts one client and completes its handshake (INFO, CONNECT, PING → PONG).
    async fn accept(l: &TcpListener) -> Peer {
        let (s, _) = within("accept", l.accept()).await.unwrap();
        let mut p = Peer::new(s);
        p.send(&info(&[], false)).await;
        let connect = p.line().await;
        assert!(connect.starts_with("CONNECT {"), "{connect}");
        assert!(
            connect.contains("\"protocol\":1") && connect.contains("\"headers\":true"),
            "{connect}"
        );
        assert_eq!(p.line().await, "PING");
        p.send("PONG\r\n").await;
        p
    }

    fn new(s: TcpStream) -> Peer {
        let (r, w) = s.into_split();
        Peer {
            r: BufReader::new(r),
            w,
        }
    }

    async fn send(&mut self, s: &str) {
        self.w.write_all(s.as_bytes()).await.unwrap();
    }

    async fn line(&mut self) -> String {
        let mut l = String::new();
        let n = within("a line from the client", self.r.read_line(&mut l))
            .await
            .unwrap();
        assert!(n > 0, "client closed the connection");
        l.trim_end().to_string()
    }
}

fn info(urls: &[&str], ldm: bool) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "INFO {{\"server_id\":\"FAKE\",\"version\":\"2.11.0\",\"proto\":1,\"headers\":true,\"max_payload\":1048576,\"connect_urls\":[{}]{}}}\r\n",
        urls.join(","),
        if ldm { ",\"ldm\":true" } else { "" }
    )
}

#[tokio::test]
async fn discovery_lame_duck_ping_and_errors() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("nats://{}", l.local_addr().unwrap());
    let (c, mut peer) = tokio::join!(
        async { ConnectOptions::new().connect(url.as_str()).await.unwrap() },
        Peer::accept(&l)
    );
    let mut events = c.events();

    peer.send(&info(&["127.0.0.1:1", "127.0.0.1:2"], false))
        .await;
    let mut found = Vec::new();
    for _ in 0..2 {
        match wait_event(&mut events, "ServerDiscovered", |e| {
            matches!(e, Event::ServerDiscovered(_))
        })
        .await
        {
            Event::ServerDiscovered(s) => found.push(s),
            _ => unreachable!(),
        }
    }
    found.sort();
    assert_eq!(found, ["127.0.0.1:1", "127.0.0.1:2"]);
    assert_eq!(c.server_info().connect_urls.len(), 2);

    peer.send(&info(&["127.0.0.1:2"], true)).await;
    wait_event(&mut events, "LameDuck", |e| *e == Event::LameDuck).await;

    peer.send("PING\r\n").await;
    assert_eq!(peer.line().await, "PONG", "the client answers server PINGs");

    peer.send("-ERR 'Permissions Violation for Publish to \"x\"'\r\n")
        .await;
    let ev = wait_event(&mut events, "ServerError", |e| {
        matches!(e, Event::ServerError(_))
    })
    .await;
    assert_eq!(
        ev,
        Event::ServerError("Permissions Violation for Publish to \"x\"".into())
    );

    // flush is a real round trip: it returns only when the PONG comes.
    let flush = tokio::spawn({
        let c = c.clone();
        async move { c.flush().await }
    });
    assert_eq!(peer.line().await, "PING");
    assert!(!flush.is_finished());
    peer.send("PONG\r\n").await;
    within("flush", flush).await.unwrap().unwrap();
}

#[tokio::test]
async fn unanswered_pings_mean_a_dead_connection() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("nats://{}", l.local_addr().unwrap());
    let (c, mut peer) = tokio::join!(
        async {
            ConnectOptions::new()
                .ping_interval(Duration::from_millis(100))
                .max_pings_outstanding(2)
                .reconnect_delay(
                    Duration::from_millis(10),
                    Duration::from_millis(50),
                    Duration::ZERO,
                )
                .max_reconnects(None)
                .connect(url.as_str())
                .await
                .unwrap()
        },
        Peer::accept(&l)
    );
    let mut events = c.events();
    let _sub = c.subscribe("keep.me").await.unwrap();
    let _q = c.queue_subscribe("keep.q", "grp").await.unwrap();
    assert_eq!(peer.line().await, "SUB keep.me 1");
    assert_eq!(peer.line().await, "SUB keep.q grp 2");
    // The server goes silent: the keepalive PINGs get no PONG.
    assert_eq!(peer.line().await, "PING");
    assert_eq!(peer.line().await, "PING");
    wait_event(&mut events, "Disconnected", |e| *e == Event::Disconnected).await;
    // The same listener takes the reconnect: subscriptions are replayed.
    let mut peer2 = Peer::accept(&l).await;
    assert_eq!(peer2.line().await, "SUB keep.me 1");
    assert_eq!(peer2.line().await, "SUB keep.q grp 2");
    wait_event(&mut events, "Reconnected", |e| {
        matches!(e, Event::Reconnected(_))
    })
    .await;
    drop(peer);
}

#[tokio::test]
async fn slow_consumer_drops_and_reports() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("nats://{}", l.local_addr().unwrap());
    let (c, mut peer) = tokio::join!(
        async {
            ConnectOptions::new()
                .subscription_capacity(2)
                .connect(url.as_str())
                .await
                .unwrap()
        },
        Peer::accept(&l)
    );
    let mut events = c.events();
    let mut sub = c.subscribe("s").await.unwrap();
    assert_eq!(peer.line().await, "SUB s 1");
    for i in 0..5 {
        peer.send(&format!("MSG s 1 1\r\n{i}\r\n")).await;
    }
    assert_eq!(
        wait_event(&mut events, "SlowConsumer", |e| matches!(
            e,
            Event::SlowConsumer(_)
        ))
        .await,
        Event::SlowConsumer(1)
    );
    let first: Vec<_> = vec![
        next(&mut sub, "1st").await.unwrap(),
        next(&mut sub, "2nd").await.unwrap(),
    ];
    assert_eq!(
        first.iter().map(|m| &m.payload[..]).collect::<Vec<_>>(),
        [b"0", b"1"]
    );
    // Caught up: delivery resumes.
    peer.send("MSG s 1 1\r\n9\r\n").await;
    assert_eq!(&next(&mut sub, "after").await.unwrap().payload[..], b"9");
}
