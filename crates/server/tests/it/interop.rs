//! The official async-nats client against rnats and, when installed, the reference server:
//! every scenario must pass against both.

use std::time::Duration;

use async_nats::header::HeaderMap;
use futures::StreamExt;
use tokio::time::timeout;

use crate::harness::{TestServer, WAIT, both};

async fn client(srv: &TestServer) -> async_nats::Client {
    timeout(WAIT, async_nats::connect(srv.url()))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// A round trip through the server: async-nats's `flush` only drains the client's write
/// buffer, so it proves nothing about what the server processed. A request nobody answers
/// comes back as "no responders" only after the server handled everything sent before it.
async fn sync(nc: &async_nats::Client) {
    nc.flush().await.unwrap();
    let err = timeout(WAIT, nc.request("sync.nobody.listens", "".into()))
        .await
        .expect("round trip in time")
        .unwrap_err();
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    timeout(WAIT, sub.next())
        .await
        .expect("message in time")
        .expect("subscription open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_and_wildcards() {
    for srv in both().await {
        let nc = client(&srv).await;
        let mut star = nc.subscribe("foo.*").await.unwrap();
        let mut gt = nc.subscribe("foo.>").await.unwrap();
        let mut lit = nc.subscribe("foo.bar").await.unwrap();
        sync(&nc).await;
        nc.publish("foo.bar", "a".into()).await.unwrap();
        nc.publish("foo.bar.baz", "b".into()).await.unwrap();
        nc.publish("foo", "c".into()).await.unwrap();
        sync(&nc).await;
        assert_eq!(next(&mut star).await.payload, "a", "{}", srv.name());
        assert_eq!(next(&mut lit).await.payload, "a");
        assert_eq!(next(&mut gt).await.payload, "a");
        assert_eq!(next(&mut gt).await.payload, "b");
        // Nothing more: a request round trip later, the wildcard subs are still empty.
        sync(&nc).await;
        assert!(
            timeout(Duration::from_millis(100), star.next())
                .await
                .is_err(),
            "foo.* must not match foo.bar.baz"
        );
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_groups_deliver_once() {
    for srv in both().await {
        let nc = client(&srv).await;
        let mut members = Vec::new();
        for _ in 0..3 {
            members.push(nc.queue_subscribe("jobs", "workers".into()).await.unwrap());
        }
        sync(&nc).await;
        let n = 300;
        for i in 0..n {
            nc.publish("jobs", i.to_string().into()).await.unwrap();
        }
        sync(&nc).await;
        let mut total = 0;
        let mut seen = std::collections::HashSet::new();
        for m in &mut members {
            let mut count = 0;
            while let Ok(Some(msg)) = timeout(Duration::from_millis(300), m.next()).await {
                assert!(
                    seen.insert(msg.payload.clone()),
                    "duplicate delivery on {}",
                    srv.name()
                );
                count += 1;
            }
            assert!(count > 0, "every member gets some on {}", srv.name());
            total += count;
        }
        assert_eq!(total, n, "{}", srv.name());
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_headers_and_no_responders() {
    for srv in both().await {
        let nc = client(&srv).await;
        let mut service = nc.subscribe("svc.echo").await.unwrap();
        let responder = nc.clone();
        tokio::spawn(async move {
            while let Some(msg) = service.next().await {
                let mut headers = HeaderMap::new();
                headers.insert(
                    "X-Seen",
                    msg.headers
                        .as_ref()
                        .and_then(|h| h.get("X-In"))
                        .map_or("none", |v| v.as_str()),
                );
                headers.append("X-Multi", "1");
                headers.append("X-Multi", "2");
                if let Some(reply) = msg.reply {
                    responder
                        .publish_with_headers(reply, headers, msg.payload)
                        .await
                        .unwrap();
                }
            }
        });
        sync(&nc).await;
        let mut headers = HeaderMap::new();
        headers.insert("X-In", "hello");
        let req = async_nats::Request::new()
            .payload("ping".into())
            .headers(headers)
            .timeout(Some(WAIT));
        let resp = nc.send_request("svc.echo", req).await.unwrap();
        assert_eq!(resp.payload, "ping");
        let h = resp.headers.expect("reply headers");
        assert_eq!(
            h.get("X-Seen").map(|v| v.as_str()),
            Some("hello"),
            "{}",
            srv.name()
        );
        assert_eq!(h.get_all("X-Multi").count(), 2);

        let err = nc.request("svc.nobody", "x".into()).await.unwrap_err();
        assert_eq!(
            err.kind(),
            async_nats::RequestErrorKind::NoResponders,
            "{}",
            srv.name()
        );
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_after_max_and_echo() {
    for srv in both().await {
        let nc = client(&srv).await;
        let mut sub = nc.subscribe("limited").await.unwrap();
        sub.unsubscribe_after(3).await.unwrap();
        sync(&nc).await;
        for i in 0..10 {
            nc.publish("limited", i.to_string().into()).await.unwrap();
        }
        sync(&nc).await;
        let mut got = Vec::new();
        while let Ok(Some(m)) = timeout(Duration::from_millis(500), sub.next()).await {
            got.push(m.payload);
        }
        assert_eq!(got, vec!["0", "1", "2"], "{}", srv.name());

        let quiet = async_nats::ConnectOptions::new()
            .no_echo()
            .connect(srv.url())
            .await
            .unwrap();
        let mut own = quiet.subscribe("echo.test").await.unwrap();
        sync(&quiet).await;
        quiet.publish("echo.test", "mine".into()).await.unwrap();
        nc.publish("echo.test", "theirs".into()).await.unwrap();
        sync(&nc).await;
        let got = timeout(WAIT, own.next())
            .await
            .unwrap_or_else(|_| panic!("no-echo client got nothing on {}", srv.name()));
        assert_eq!(got.unwrap().payload, "theirs", "{}", srv.name());
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients() {
    for srv in both().await {
        let url = srv.url();
        let clients = 50;
        let per_client = 20;
        let watcher = client(&srv).await;
        let mut all = watcher.subscribe("many.>").await.unwrap();
        sync(&watcher).await;
        let mut tasks = Vec::new();
        for c in 0..clients {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let nc = async_nats::connect(url).await.unwrap();
                let mut mine = nc.subscribe(format!("many.{c}")).await.unwrap();
                sync(&nc).await;
                for i in 0..per_client {
                    nc.publish(format!("many.{c}"), i.to_string().into())
                        .await
                        .unwrap();
                }
                sync(&nc).await;
                for i in 0..per_client {
                    let m = timeout(WAIT, mine.next()).await.unwrap().unwrap();
                    assert_eq!(m.payload, i.to_string(), "per-publisher order");
                }
            }));
        }
        for t in tasks {
            timeout(Duration::from_secs(30), t).await.unwrap().unwrap();
        }
        for _ in 0..clients * per_client {
            next(&mut all).await;
        }
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_payload_is_enforced_by_client_and_large_messages_pass() {
    for srv in both().await {
        let nc = client(&srv).await;
        assert_eq!(nc.server_info().max_payload, 1024 * 1024);
        let mut sub = nc.subscribe("big").await.unwrap();
        sync(&nc).await;
        let payload = vec![7u8; 1024 * 1024 - 64];
        nc.publish("big", payload.clone().into()).await.unwrap();
        sync(&nc).await;
        assert_eq!(
            next(&mut sub).await.payload.len(),
            payload.len(),
            "{}",
            srv.name()
        );
        assert!(
            nc.publish("big", vec![0u8; 2 * 1024 * 1024].into())
                .await
                .is_err()
        );
        srv.stop().await;
    }
}
