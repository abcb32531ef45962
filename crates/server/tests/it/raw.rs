//! Protocol behaviour over real TCP, byte for byte.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::harness::{Raw, TestServer, test_options, wait_until};

const QUIET: &str =
    r#"{"verbose":false,"pedantic":false,"protocol":1,"headers":true,"no_responders":true}"#;

#[tokio::test]
async fn info_carries_what_clients_rely_on() {
    let srv = TestServer::rnats().await;
    let raw = Raw::connect(srv.addr).await;
    let info: serde_json::Value =
        serde_json::from_str(raw.info.trim_start_matches("INFO ")).unwrap();
    for field in [
        "server_id",
        "server_name",
        "version",
        "proto",
        "host",
        "port",
        "headers",
        "max_payload",
        "client_id",
        "client_ip",
    ] {
        assert!(info.get(field).is_some(), "INFO lacks {field}: {info}");
    }
    assert_eq!(info["proto"], 1);
    assert_eq!(info["headers"], true);
    assert_eq!(info["max_payload"], 1048576);
    assert_eq!(info["port"], srv.addr.port());
    assert!(info.get("auth_required").is_none());
    srv.stop().await;
}

#[tokio::test]
async fn pub_sub_wildcards_and_sids() {
    let srv = TestServer::rnats().await;
    let mut sub = Raw::connect_with(srv.addr, QUIET).await;
    sub.send(b"SUB foo.* 1\r\nSUB foo.> 2\r\nSUB foo.bar 3\r\nSUB > 4\r\n")
        .await;
    sub.ping_pong().await;
    let mut publ = Raw::connect_with(srv.addr, QUIET).await;
    publ.send(b"PUB foo.bar reply 5\r\nhello\r\nPUB foo.bar.baz 0\r\n\r\nPUB foo 1\r\nx\r\n")
        .await;
    publ.ping_pong().await;
    let mut got = Vec::new();
    for _ in 0..7 {
        got.push(sub.msg().await.0);
    }
    got[..4].sort();
    got[4..6].sort();
    assert_eq!(
        got,
        [
            "MSG foo.bar 1 reply 5",
            "MSG foo.bar 2 reply 5",
            "MSG foo.bar 3 reply 5",
            "MSG foo.bar 4 reply 5",
            "MSG foo.bar.baz 2 0",
            "MSG foo.bar.baz 4 0",
            "MSG foo 4 1",
        ]
    );
    assert!(sub.ping_pong().await.is_empty(), "nothing else delivered");
    srv.stop().await;
}

#[tokio::test]
async fn verbose_telnet_session_before_connect() {
    let srv = TestServer::rnats().await;
    let mut raw = Raw::connect(srv.addr).await;
    raw.send(b"sub foo 1\r\npub foo 2\r\nhi\r\nping\r\n").await;
    raw.expect_line("+OK").await;
    raw.expect_line("+OK").await;
    raw.expect_line("MSG foo 1 2").await;
    raw.expect_line("hi").await;
    raw.expect_line("PONG").await;
    srv.stop().await;
}

#[tokio::test]
async fn queue_group_gets_each_message_once_spread_over_members() {
    let srv = TestServer::rnats().await;
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut m = Raw::connect_with(srv.addr, QUIET).await;
        m.send(b"SUB work q 1\r\nSUB work 2\r\n").await;
        m.ping_pong().await;
        members.push(m);
    }
    let mut publ = Raw::connect_with(srv.addr, QUIET).await;
    let n = 300;
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(format!("PUB work {}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
    publ.send(&batch).await;
    publ.ping_pong().await;
    let mut queue_total = 0;
    for m in &mut members {
        let mut queue_count = 0;
        let mut plain_count = 0;
        for line in m.ping_pong().await {
            if line.starts_with("MSG work 1 ") {
                queue_count += 1;
            } else if line.starts_with("MSG work 2 ") {
                plain_count += 1;
            }
        }
        assert_eq!(plain_count, n, "every plain subscriber gets every message");
        assert!(queue_count > 30, "spread over members: {queue_count}");
        queue_total += queue_count;
    }
    assert_eq!(queue_total, n, "each message to exactly one queue member");
    srv.stop().await;
}

#[tokio::test]
async fn echo_off_and_auto_unsubscribe() {
    let srv = TestServer::rnats().await;
    let mut c = Raw::connect_with(srv.addr, r#"{"verbose":false,"echo":false,"protocol":1}"#).await;
    c.send(b"SUB t 1\r\nPUB t 1\r\na\r\n").await;
    assert!(c.ping_pong().await.is_empty(), "own message not echoed");
    let mut d = Raw::connect_with(srv.addr, QUIET).await;
    d.send(b"SUB t 7\r\nUNSUB 7 2\r\nPUB t 1\r\na\r\nPUB t 1\r\nb\r\nPUB t 1\r\nc\r\n")
        .await;
    let lines = d.ping_pong().await;
    assert_eq!(lines, ["MSG t 7 1", "a", "MSG t 7 1", "b"]);
    // The other connection got all three.
    assert_eq!(c.ping_pong().await.len(), 6);
    assert_eq!(
        srv.handle().shared.sublist.count(),
        1,
        "auto-unsubscribed sub removed"
    );
    srv.stop().await;
}

#[tokio::test]
async fn headers_reach_header_clients_and_are_stripped_for_others() {
    let srv = TestServer::rnats().await;
    let mut h = Raw::connect_with(srv.addr, QUIET).await;
    let mut plain = Raw::connect_with(srv.addr, r#"{"verbose":false,"protocol":1}"#).await;
    h.send(b"SUB foo 1\r\n").await;
    plain.send(b"SUB foo 1\r\n").await;
    h.ping_pong().await;
    plain.ping_pong().await;
    h.send(b"HPUB foo 22 33\r\nNATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n")
        .await;
    h.expect_line("HMSG foo 1 22 33").await;
    assert_eq!(
        h.bytes(35).await,
        b"NATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n"
    );
    plain.expect_line("MSG foo 1 11").await;
    plain.expect_line("Hello NATS!").await;
    srv.stop().await;
}

#[tokio::test]
async fn no_responders_status() {
    let srv = TestServer::rnats().await;
    let mut c = Raw::connect_with(srv.addr, QUIET).await;
    c.send(b"SUB _INBOX.k1.* 3\r\nPUB svc.none _INBOX.k1.1 2\r\nhi\r\n")
        .await;
    c.expect_line("HMSG _INBOX.k1.1 3 40 40").await;
    assert_eq!(
        c.bytes(42).await,
        b"NATS/1.0 503\r\nNats-Subject: svc.none\r\n\r\n\r\n"
    );
    srv.stop().await;
}

#[tokio::test]
async fn slow_consumer_is_cut_off_and_others_get_everything() {
    let opts = rnats_server::Options {
        max_pending: 256 * 1024,
        ..test_options()
    };
    let srv = TestServer::rnats_with(opts).await;
    let mut stalled = Raw::connect_with(srv.addr, QUIET).await;
    stalled.send(b"SUB flood 1\r\n").await;
    stalled.ping_pong().await;
    let mut healthy = Raw::connect_with(srv.addr, QUIET).await;
    healthy.send(b"SUB ok 1\r\n").await;
    healthy.ping_pong().await;

    // 30 MiB towards a client that never reads: far past max_pending plus socket buffers.
    let mut publ = Raw::connect_with(srv.addr, QUIET).await;
    let mut flood = Vec::new();
    for _ in 0..1000 {
        flood.extend_from_slice(b"PUB flood 1024\r\n");
        flood.extend_from_slice(&[b'x'; 1024]);
        flood.extend_from_slice(b"\r\n");
    }
    for i in 0..30 {
        publ.send(&flood).await;
        publ.send(format!("PUB ok {}\r\n{i}\r\n", i.to_string().len()).as_bytes())
            .await;
    }
    publ.ping_pong().await;
    for i in 0..30 {
        assert_eq!(
            healthy.msg().await.1,
            i.to_string().as_bytes(),
            "the healthy subscriber gets everything"
        );
    }
    let shared = srv.handle().shared.clone();
    wait_until(|| shared.stats.slow_consumers.load(Ordering::Relaxed) == 1).await;
    // The stalled client is gone: reading drains what the kernel held, then EOF.
    assert!(
        stalled.until_closed().await.is_some(),
        "slow consumer closed"
    );
    srv.stop().await;
}

#[tokio::test]
async fn max_connections_and_max_subscriptions() {
    let opts = rnats_server::Options {
        max_connections: Some(1),
        max_subs: 2,
        ..test_options()
    };
    let srv = TestServer::rnats_with(opts).await;
    let mut first = Raw::connect_with(srv.addr, QUIET).await;
    let mut second = Raw::connect(srv.addr).await;
    assert_eq!(
        second.until_closed().await.as_deref(),
        Some("-ERR 'maximum connections exceeded'\r\n")
    );
    first.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\n").await;
    assert_eq!(
        first.ping_pong().await,
        ["-ERR 'maximum subscriptions exceeded'"]
    );
    srv.stop().await;
}

#[tokio::test]
async fn stale_connection_is_closed_after_unanswered_pings() {
    let opts = rnats_server::Options {
        ping_interval: Duration::from_millis(50),
        ping_max: 2,
        ..test_options()
    };
    let srv = TestServer::rnats_with(opts).await;
    let mut c = Raw::connect_with(srv.addr, QUIET).await;
    let rest = c.until_closed().await.expect("closed");
    assert_eq!(rest, "PING\r\nPING\r\n-ERR 'Stale Connection'\r\n");
    // A client that answers stays.
    let mut d = Raw::connect_with(srv.addr, QUIET).await;
    for _ in 0..4 {
        d.expect_line("PING").await;
        d.send(b"PONG\r\n").await;
    }
    d.ping_pong().await;
    srv.stop().await;
}

#[tokio::test]
async fn authentication_user_password_and_timeout() {
    let mut opts = test_options();
    opts.auth.user = Some("alice".into());
    opts.auth.password = Some("s3cret".into());
    opts.auth.timeout = Some(Duration::from_millis(200));
    let srv = TestServer::rnats_with(opts).await;
    let mut ok = Raw::connect(srv.addr).await;
    assert!(ok.info.contains("\"auth_required\":true"));
    ok.send(b"CONNECT {\"user\":\"alice\",\"pass\":\"s3cret\",\"verbose\":false}\r\nPING\r\n")
        .await;
    ok.expect_line("PONG").await;
    let mut bad = Raw::connect(srv.addr).await;
    bad.send(b"CONNECT {\"user\":\"alice\",\"pass\":\"nope\"}\r\nPING\r\n")
        .await;
    assert_eq!(
        bad.until_closed().await.as_deref(),
        Some("-ERR 'Authorization Violation'\r\n")
    );
    let mut early = Raw::connect(srv.addr).await;
    early.send(b"PING\r\n").await;
    assert_eq!(
        early.until_closed().await.as_deref(),
        Some("-ERR 'Authorization Violation'\r\n")
    );
    let mut silent = Raw::connect(srv.addr).await;
    assert_eq!(
        silent.until_closed().await.as_deref(),
        Some("-ERR 'Authentication Timeout'\r\n")
    );
    ok.ping_pong().await;
    srv.stop().await;
}

#[tokio::test]
async fn large_payload_and_one_byte_reads() {
    let srv = TestServer::rnats().await;
    let mut sub = Raw::connect_with(srv.addr, QUIET).await;
    sub.send(b"SUB big 1\r\n").await;
    sub.ping_pong().await;
    let mut publ = Raw::connect_with(srv.addr, QUIET).await;
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut msg = format!("PUB big {}\r\n", payload.len()).into_bytes();
    msg.extend_from_slice(&payload);
    msg.extend_from_slice(b"\r\nPUB big 2\r\nok\r\n");
    publ.send(&msg).await;
    let (line, got) = sub.msg().await;
    assert_eq!(line, "MSG big 1 1048576");
    assert!(got == payload);
    // The same ops, one byte per write.
    for b in b"PUB big 3\r\nabc\r\n" {
        publ.send(&[*b]).await;
    }
    assert_eq!(sub.msg().await, ("MSG big 1 2".to_string(), b"ok".to_vec()));
    assert_eq!(
        sub.msg().await,
        ("MSG big 1 3".to_string(), b"abc".to_vec())
    );
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_closes_clients() {
    let srv = TestServer::rnats().await;
    let mut c = Raw::connect_with(srv.addr, QUIET).await;
    let addr = srv.addr;
    srv.stop().await;
    assert!(c.until_closed().await.is_some());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}
