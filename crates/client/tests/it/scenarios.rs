//! The same scenarios against rnats-server and the reference nats-server.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rnats_client::{
    Client, ConnectErrorKind, ConnectOptions, Event, HeaderMap, PublishErrorKind, RequestErrorKind,
    State, Subscriber,
};

use crate::support::*;

async fn client(srv: &ServerProc) -> Client {
    within("connect", rnats_client::connect(srv.url()))
        .await
        .unwrap_or_else(|e| panic!("{}: connect: {e}", srv.name()))
}

/// Everything already delivered to the subscription's buffer, without waiting.
fn buffered(sub: &mut Subscriber) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(Some(m)) = sub.next().now_or_never() {
        got.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    got
}

async fn payloads(sub: &mut Subscriber, n: usize, what: &str) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        let m = next(sub, what)
            .await
            .unwrap_or_else(|| panic!("{what}: stream ended"));
        got.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    got
}

#[tokio::test]
async fn pub_sub() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let c = client(&srv).await;
        let mut sub = c.subscribe("greet.joe").await.unwrap();
        c.flush().await.unwrap();
        for i in 0..3 {
            c.publish("greet.joe", format!("hello {i}")).await.unwrap();
        }
        assert_eq!(
            payloads(&mut sub, 3, srv.name()).await,
            ["hello 0", "hello 1", "hello 2"]
        );
        let info = c.server_info();
        assert!(
            info.headers && info.max_payload > 0,
            "{}: {info:?}",
            srv.name()
        );
        // Two clients: a message published by one reaches the other.
        let other = client(&srv).await;
        other.publish("greet.joe", "from other").await.unwrap();
        let m = next(&mut sub, "from other").await.unwrap();
        assert_eq!(m.subject, "greet.joe");
        assert_eq!(&m.payload[..], b"from other");
        assert_eq!(m.headers, None);
        let stats = c.statistics();
        assert_eq!((stats.out_msgs, stats.in_msgs), (3, 4), "{}", srv.name());
        c.close().await;
        assert_eq!(c.state(), State::Closed);
        assert!(
            next(&mut sub, "end").await.is_none(),
            "stream ends on close"
        );
    }
}

#[tokio::test]
async fn publish_batch() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let c = client(&srv).await;
        let mut sub = c.subscribe("batch.>").await.unwrap();
        c.flush().await.unwrap();
        let msgs: Vec<(String, Vec<u8>)> = (0..5)
            .map(|i| (format!("batch.{i}"), format!("m{i}").into_bytes()))
            .collect();
        c.publish_batch(&msgs).await.unwrap();
        assert_eq!(
            payloads(&mut sub, 5, srv.name()).await,
            ["m0", "m1", "m2", "m3", "m4"]
        );
        // An invalid subject is skipped and reported; the others go out, in order.
        let err = c
            .publish_batch(&[("batch.a", "a"), ("bad subject", "x"), ("batch.b", "b")])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), PublishErrorKind::InvalidSubject);
        assert_eq!(payloads(&mut sub, 2, srv.name()).await, ["a", "b"]);
        assert_eq!(c.statistics().out_msgs, 7, "{}", srv.name());
        // Larger than the outbound buffer limit: the batch waits for the writer, nothing lost.
        let big = vec![b'x'; 64 * 1024];
        let n = 200;
        let many: Vec<(&str, &[u8])> = (0..n).map(|_| ("batch.big", big.as_slice())).collect();
        c.publish_batch(&many).await.unwrap();
        for _ in 0..n {
            let m = next(&mut sub, "big").await.unwrap();
            assert_eq!(m.payload.len(), big.len());
        }
        c.close().await;
        assert_eq!(
            c.publish_batch(&[("batch.a", "a")])
                .await
                .unwrap_err()
                .kind(),
            PublishErrorKind::Closed
        );
    }
}

#[tokio::test]
async fn wildcards() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let c = client(&srv).await;
        let mut star = c.subscribe("w.*").await.unwrap();
        let mut gt = c.subscribe("w.>").await.unwrap();
        c.flush().await.unwrap();
        for s in ["w", "w.a", "w.a.b", "x.a", "w.b"] {
            c.publish(s, s).await.unwrap();
        }
        c.flush().await.unwrap();
        // A flush round trip on the same connection: everything sent before it is delivered.
        assert_eq!(buffered(&mut star), ["w.a", "w.b"], "{}", srv.name());
        assert_eq!(buffered(&mut gt), ["w.a", "w.a.b", "w.b"], "{}", srv.name());
        let m = {
            c.publish("w.z", "z").await.unwrap();
            next(&mut star, "w.z").await.unwrap()
        };
        assert_eq!(m.subject, "w.z", "the concrete subject, not the pattern");
    }
}

#[tokio::test]
async fn queue_group() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let a = client(&srv).await;
        let b = client(&srv).await;
        let mut qa = a.queue_subscribe("q.work", "workers").await.unwrap();
        let mut qb = b.queue_subscribe("q.work", "workers").await.unwrap();
        let mut plain = a.subscribe("q.work").await.unwrap();
        a.flush().await.unwrap();
        b.flush().await.unwrap();
        let p = client(&srv).await;
        for i in 0..50 {
            p.publish("q.work", i.to_string()).await.unwrap();
        }
        p.flush().await.unwrap();
        a.flush().await.unwrap();
        b.flush().await.unwrap();
        let (na, nb) = (buffered(&mut qa).len(), buffered(&mut qb).len());
        assert_eq!(
            na + nb,
            50,
            "{}: each message to exactly one member ({na}+{nb})",
            srv.name()
        );
        assert!(
            na > 0 && nb > 0,
            "{}: both members get work ({na}/{nb})",
            srv.name()
        );
        assert_eq!(
            buffered(&mut plain).len(),
            50,
            "{}: plain subscribers get all",
            srv.name()
        );
    }
}

async fn responder(c: Client, subject: &str) -> tokio::task::JoinHandle<()> {
    let mut sub = c.subscribe(subject.to_string()).await.unwrap();
    c.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let mut body = b"re: ".to_vec();
            body.extend_from_slice(&m.payload);
            let mut h = HeaderMap::new();
            if let Some(v) = m.headers.as_ref().and_then(|h| h.get("X-Id")) {
                h.insert("X-Id", v);
            }
            c.publish_with_headers(m.reply.expect("reply subject"), &h, body)
                .await
                .unwrap();
        }
    })
}

#[tokio::test]
async fn request_reply() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let server_side = client(&srv).await;
        let task = responder(server_side, "svc.echo").await;
        let c = client(&srv).await;
        let m = within("request", c.request("svc.echo", "hi"))
            .await
            .unwrap();
        assert_eq!(&m.payload[..], b"re: hi", "{}", srv.name());
        assert!(m.subject.starts_with("_INBOX."), "{}", m.subject);
        // Many at once through the one inbox subscription, each gets its own answer.
        let reqs = (0..20).map(|i| {
            let c = c.clone();
            async move {
                let mut h = HeaderMap::new();
                h.insert("X-Id", i.to_string());
                let m = c
                    .request_with_headers("svc.echo", h, format!("n{i}"))
                    .await
                    .unwrap();
                assert_eq!(m.headers.unwrap().get("X-Id"), Some(i.to_string().as_str()));
                assert_eq!(m.payload, format!("re: n{i}"));
            }
        });
        within("20 concurrent requests", futures::future::join_all(reqs)).await;
        // A request nobody answers in time (the responder only serves svc.echo).
        let slow = c.subscribe("svc.slow").await.unwrap();
        c.flush().await.unwrap();
        let err = c
            .send_request(
                "svc.slow",
                rnats_client::Request::new()
                    .payload("x")
                    .timeout(Duration::from_millis(200)),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            RequestErrorKind::TimedOut,
            "{}: {err}",
            srv.name()
        );
        drop(slow);
        task.abort();
    }
}

#[tokio::test]
async fn no_responders() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let c = client(&srv).await;
        let started = std::time::Instant::now();
        let err = within("no responders", c.request("svc.none", "hi"))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            RequestErrorKind::NoResponders,
            "{}: {err}",
            srv.name()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered at once, not a timeout"
        );
        // The inbox keeps working for later requests.
        let _task = responder(client(&srv).await, "svc.late").await;
        let m = within("request", c.request("svc.late", "x")).await.unwrap();
        assert_eq!(&m.payload[..], b"re: x");
    }
}

#[tokio::test]
async fn headers() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let c = client(&srv).await;
        let mut sub = c.subscribe("h").await.unwrap();
        c.flush().await.unwrap();
        let mut h = HeaderMap::new();
        h.append("X-A", "1")
            .append("X-A", "2")
            .append("Trace", "abc: def");
        c.publish_with_headers("h", &h, "body").await.unwrap();
        c.publish_with_headers("h", &HeaderMap::new(), "")
            .await
            .unwrap();
        c.publish_with_reply_and_headers("h", "r.1", &h, "b2")
            .await
            .unwrap();
        let m = next(&mut sub, "HMSG").await.unwrap();
        assert_eq!(m.headers.as_ref(), Some(&h), "{}", srv.name());
        assert_eq!(
            m.headers
                .as_ref()
                .unwrap()
                .get_all("X-A")
                .collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!((m.status, &m.payload[..]), (None, &b"body"[..]));
        let m = next(&mut sub, "empty headers").await.unwrap();
        assert_eq!(m.headers, Some(HeaderMap::new()));
        assert!(m.payload.is_empty());
        let m = next(&mut sub, "with reply").await.unwrap();
        assert_eq!(m.reply.as_deref(), Some("r.1"));
        let bad: HeaderMap = [("bad name", "x")].into_iter().collect();
        let err = c.publish_with_headers("h", &bad, "").await.unwrap_err();
        assert_eq!(err.kind(), PublishErrorKind::InvalidHeader);
    }
}

#[tokio::test]
async fn unsubscribe_and_unsubscribe_after() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let c = client(&srv).await;
        let mut sub = c.subscribe("u").await.unwrap();
        sub.unsubscribe_after(3).await.unwrap();
        c.flush().await.unwrap();
        for i in 0..10 {
            c.publish("u", i.to_string()).await.unwrap();
        }
        assert_eq!(payloads(&mut sub, 3, srv.name()).await, ["0", "1", "2"]);
        assert!(
            next(&mut sub, "end after 3").await.is_none(),
            "{}",
            srv.name()
        );

        let mut sub = c.subscribe("u2").await.unwrap();
        c.flush().await.unwrap();
        c.publish("u2", "before").await.unwrap();
        assert_eq!(payloads(&mut sub, 1, srv.name()).await, ["before"]);
        sub.unsubscribe().await.unwrap();
        c.publish("u2", "after").await.unwrap();
        c.flush().await.unwrap();
        assert!(next(&mut sub, "end after unsubscribe").await.is_none());

        // Counted in total: after 2 received, unsubscribe_after(2) ends it at once.
        let mut sub = c.subscribe("u3").await.unwrap();
        c.flush().await.unwrap();
        c.publish("u3", "a").await.unwrap();
        c.publish("u3", "b").await.unwrap();
        assert_eq!(payloads(&mut sub, 2, srv.name()).await, ["a", "b"]);
        sub.unsubscribe_after(2).await.unwrap();
        assert!(next(&mut sub, "ended").await.is_none());
    }
}

#[tokio::test]
async fn drain_delivers_what_was_sent_then_closes() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let c = client(&srv).await;
        let mut sub = c.subscribe("d").await.unwrap();
        c.flush().await.unwrap();
        for i in 0..100 {
            c.publish("d", i.to_string()).await.unwrap();
        }
        within("drain", c.drain()).await.unwrap();
        assert_eq!(c.state(), State::Closed);
        let mut n = 0;
        while next(&mut sub, "drained messages").await.is_some() {
            n += 1;
        }
        assert_eq!(n, 100, "{}", srv.name());
        let err = c.publish("d", "late").await.unwrap_err();
        assert_eq!(err.kind(), PublishErrorKind::Closed);

        // One subscription: the messages sent before the drain arrive, then its stream ends,
        // and the client stays connected.
        let c = client(&srv).await;
        let mut sub = c.subscribe("d1").await.unwrap();
        c.flush().await.unwrap();
        for i in 0..10 {
            c.publish("d1", i.to_string()).await.unwrap();
        }
        within("subscriber drain", sub.drain()).await.unwrap();
        assert_eq!(payloads(&mut sub, 10, "drained").await.len(), 10);
        assert!(
            next(&mut sub, "end of drained sub").await.is_none(),
            "{}",
            srv.name()
        );
        assert_eq!(c.state(), State::Connected);
        c.publish("d1", "x").await.unwrap();
        c.flush().await.unwrap();
    }
}

#[tokio::test]
async fn limits_and_bad_input_fail_locally() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let c = client(&srv).await;
        let too_big = vec![0u8; c.max_payload() + 1];
        let err = c.publish("big", &too_big).await.unwrap_err();
        assert_eq!(err.kind(), PublishErrorKind::MaxPayloadExceeded);
        assert_eq!(
            c.publish("a b", "x").await.unwrap_err().kind(),
            PublishErrorKind::InvalidSubject
        );
        assert!(c.subscribe("a..b").await.is_err());
        assert!(c.queue_subscribe("a", "q q").await.is_err());
        // Still usable.
        c.flush().await.unwrap();
    }
}

#[tokio::test]
async fn no_echo() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let c = ConnectOptions::new()
            .no_echo()
            .connect(srv.url())
            .await
            .unwrap();
        let mut own = c.subscribe("e").await.unwrap();
        let other = client(&srv).await;
        let mut theirs = other.subscribe("e").await.unwrap();
        c.flush().await.unwrap();
        other.flush().await.unwrap();
        c.publish("e", "x").await.unwrap();
        c.flush().await.unwrap();
        assert_eq!(payloads(&mut theirs, 1, "other").await, ["x"]);
        assert!(buffered(&mut own).is_empty(), "{}: no echo", srv.name());
    }
}

#[tokio::test]
async fn auth_user_password_and_token() {
    for kind in kinds() {
        let srv = ServerProc::start_with(kind, &["--user", "alice", "--pass", "s3cret"]);
        let err = rnats_client::connect(srv.url()).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{}: {err}",
            srv.name()
        );
        let url = format!("nats://alice:s3cret@127.0.0.1:{}", srv.port);
        let c = rnats_client::connect(url).await.unwrap();
        c.flush().await.unwrap();
        let c = ConnectOptions::new()
            .user_and_password("alice", "s3cret")
            .connect(srv.url())
            .await
            .unwrap();
        c.flush().await.unwrap();

        let srv = ServerProc::start_with(kind, &["--auth", "tok"]);
        let c = ConnectOptions::new()
            .token("tok")
            .connect(srv.url())
            .await
            .unwrap();
        c.flush().await.unwrap();
        let c = rnats_client::connect(format!("nats://tok@127.0.0.1:{}", srv.port))
            .await
            .unwrap();
        c.flush().await.unwrap();
        let err = ConnectOptions::new()
            .token("nope")
            .connect(srv.url())
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{}",
            srv.name()
        );
    }
}

#[tokio::test]
async fn connect_errors() {
    // A port nobody listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = rnats_client::connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Io, "{err}");
    let err = rnats_client::connect("nats://host:notaport")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::InvalidAddress);
    let err = rnats_client::connect("").await.unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::NoServers);
}

/// Kill the server mid-stream, publish while it is down, start a new one on the same port:
/// the buffered publishes arrive on the restored subscription; a publish that does not fit in
/// the reconnect buffer fails instead of being lost.
#[tokio::test]
async fn server_restart_mid_stream() {
    for kind in kinds() {
        let mut srv = ServerProc::start(kind);
        let c = ConnectOptions::new()
            .reconnect_delay(
                Duration::from_millis(20),
                Duration::from_millis(200),
                Duration::from_millis(20),
            )
            .max_reconnects(None)
            .reconnect_buffer_size(64 * 1024)
            .connect(srv.url())
            .await
            .unwrap();
        let mut events = c.events();
        let mut sub = c.subscribe("stream.>").await.unwrap();
        let mut queue = c.queue_subscribe("stream.q", "g").await.unwrap();
        let mut limited = c.subscribe("stream.limited").await.unwrap();
        limited.unsubscribe_after(3).await.unwrap();
        c.flush().await.unwrap();
        for i in 0..5 {
            c.publish(format!("stream.{i}"), format!("before {i}"))
                .await
                .unwrap();
        }
        c.publish("stream.limited", "L1").await.unwrap();
        assert_eq!(payloads(&mut limited, 1, "L1").await, ["L1"]);
        assert_eq!(payloads(&mut sub, 6, "before").await.len(), 6);

        srv.kill();
        wait_event(&mut events, "Disconnected", |e| *e == Event::Disconnected).await;
        assert_eq!(c.state(), State::Disconnected);

        for i in 0..10 {
            c.publish(format!("stream.{i}"), format!("during {i}"))
                .await
                .unwrap();
        }
        c.publish("stream.q", "queued").await.unwrap();
        for l in ["L2", "L3", "L4"] {
            c.publish("stream.limited", l).await.unwrap();
        }
        let err = c
            .publish("stream.big", vec![b'x'; 64 * 1024])
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            PublishErrorKind::ReconnectBufferFull,
            "{}: {err}",
            srv.name()
        );
        // A flush issued while down completes after the reconnect.
        let flush = tokio::spawn({
            let c = c.clone();
            async move { c.flush().await }
        });

        srv.start_again();
        let ev = wait_event(&mut events, "Reconnected", |e| {
            matches!(e, Event::Reconnected(_))
        })
        .await;
        assert_eq!(ev, Event::Reconnected(srv.url()));
        within("flush after reconnect", flush)
            .await
            .unwrap()
            .unwrap();
        let during = payloads(&mut sub, 14, "buffered publishes").await;
        let want: Vec<String> = (0..10)
            .map(|i| format!("during {i}"))
            .chain(["queued".to_string(), "L2".into(), "L3".into(), "L4".into()])
            .collect();
        assert_eq!(
            during,
            want,
            "{}: buffered publishes arrive in order",
            srv.name()
        );
        assert_eq!(
            payloads(&mut queue, 1, "queue sub restored").await,
            ["queued"]
        );
        // unsubscribe_after(3) survives the reconnect: L2 and L3, then the stream ends.
        assert_eq!(payloads(&mut limited, 2, "limited").await, ["L2", "L3"]);
        assert!(
            next(&mut limited, "limited ends").await.is_none(),
            "{}",
            srv.name()
        );
        // And the connection is fully usable afterwards.
        c.publish("stream.after", "after").await.unwrap();
        assert_eq!(payloads(&mut sub, 1, "after").await, ["after"]);
        let _r = responder(client(&srv).await, "svc.after").await;
        assert_eq!(
            &c.request("svc.after", "x").await.unwrap().payload[..],
            b"re: x"
        );
        assert_eq!(c.statistics().reconnects, 1);
    }
}

/// Out of reconnect attempts: the client closes, streams end, calls fail with Closed.
#[tokio::test]
async fn gives_up_after_max_reconnects() {
    let mut srv = ServerProc::start(Kind::Rnats);
    let c = ConnectOptions::new()
        .reconnect_delay(
            Duration::from_millis(10),
            Duration::from_millis(20),
            Duration::ZERO,
        )
        .max_reconnects(Some(3))
        .connect(srv.url())
        .await
        .unwrap();
    let mut events = c.events();
    let mut sub = c.subscribe("x").await.unwrap();
    c.flush().await.unwrap();
    srv.kill();
    wait_event(&mut events, "Disconnected", |e| *e == Event::Disconnected).await;
    wait_event(&mut events, "Closed", |e| *e == Event::Closed).await;
    assert_eq!(c.state(), State::Closed);
    assert!(next(&mut sub, "end").await.is_none());
    assert_eq!(
        c.publish("x", "y").await.unwrap_err().kind(),
        PublishErrorKind::Closed
    );
    assert_eq!(
        c.request("x", "y").await.unwrap_err().kind(),
        RequestErrorKind::Closed
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A two-server cluster: the client learns the second server from INFO `connect_urls`
/// (it was only given the first), and fails over to it when the first dies.
#[tokio::test]
async fn cluster_discovery_and_failover() {
    for kind in kinds() {
        let (ca, cb) = (free_port(), free_port());
        let route_a = format!("nats://127.0.0.1:{ca}");
        let mut a = ServerProc::start_with(kind, &["--cluster", &route_a, "--cluster_name", "t"]);
        let c = ConnectOptions::new()
            .reconnect_delay(
                Duration::from_millis(20),
                Duration::from_millis(100),
                Duration::ZERO,
            )
            .connect(a.url())
            .await
            .unwrap();
        let mut events = c.events();
        let mut sub = c.subscribe("fo").await.unwrap();
        c.flush().await.unwrap();
        let b = ServerProc::start_with(
            kind,
            &[
                "--cluster",
                &format!("nats://127.0.0.1:{cb}"),
                "--cluster_name",
                "t",
                "--routes",
                &route_a,
            ],
        );
        let found = wait_event(&mut events, "ServerDiscovered", |e| {
            matches!(e, Event::ServerDiscovered(_))
        })
        .await;
        assert_eq!(
            found,
            Event::ServerDiscovered(format!("127.0.0.1:{}", b.port)),
            "{}",
            a.name()
        );
        a.kill();
        let ev = wait_event(&mut events, "Reconnected", |e| {
            matches!(e, Event::Reconnected(_))
        })
        .await;
        assert_eq!(ev, Event::Reconnected(b.url()), "{}", b.name());
        c.publish("fo", "on b").await.unwrap();
        assert_eq!(payloads(&mut sub, 1, "after failover").await, ["on b"]);
    }
}

/// Volume: many messages from a separate publisher, all delivered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_in_order() {
    const N: usize = 100_000;
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        // Room for every message: this is about throughput and order, not slow consumers.
        let sub_client = ConnectOptions::new()
            .subscription_capacity(N)
            .connect(srv.url())
            .await
            .unwrap();
        let mut sub = sub_client.subscribe("bulk").await.unwrap();
        sub_client.flush().await.unwrap();
        let publisher = client(&srv).await;
        let started = std::time::Instant::now();
        let produce = tokio::spawn(async move {
            let body = [b'x'; 64];
            for i in 0..N {
                let mut p = body;
                p[..8].copy_from_slice(&(i as u64).to_be_bytes());
                publisher.publish("bulk", p).await.unwrap();
            }
            publisher.flush().await.unwrap();
        });
        for i in 0..N {
            let m = next(&mut sub, "bulk message").await.expect("stream open");
            let got = u64::from_be_bytes(m.payload[..8].try_into().unwrap());
            assert_eq!(got, i as u64, "{}: in order", srv.name());
        }
        within("publisher", produce).await.unwrap();
        eprintln!("{}: {N} messages in {:?}", srv.name(), started.elapsed());
    }
}

/// SIGUSR2 puts the server in lame duck mode: it tells its clients with an INFO `ldm`.
#[tokio::test]
async fn lame_duck_is_reported() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let c = client(&srv).await;
        let mut events = c.events();
        c.flush().await.unwrap();
        srv.signal("USR2");
        wait_event(&mut events, "LameDuck", |e| *e == Event::LameDuck).await;
        assert!(c.server_info().ldm, "{}", srv.name());
    }
}
