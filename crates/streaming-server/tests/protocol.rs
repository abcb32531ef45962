//! Protocol tests with a raw client: bad input and its documented errors, redelivery timing,
//! max in flight, duplicate client IDs, heartbeats, limits, queue groups, restart recovery.
//! Every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use prost::Message as _;
use rnats_streaming::proto::*;
use rnats_streaming_server as srv;

/// The error text a response carries.
fn text(e: srv::ProtocolError) -> String {
    e.to_string()
}

const CID: &str = "test-cluster";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_documented_errors_and_nobody_loses_anything() {
    let server = start_server(|_| {}).await;
    let url = server.nats_url().to_string();
    let good = Raw::connect(&url, CID, "good", true).await;
    let mut watcher = good
        .subscribe(good.sub_req("work", ""))
        .await
        .expect("subscribe");
    assert_eq!(good.publish("work", b"before").await.error, "");
    assert_eq!(watcher.next().await.data, Bytes::from_static(b"before"));

    let nc = nats(&url).await;
    let disc = discover(CID);
    // Connect: garbage, empty heartbeat inbox, bad client ID.
    let r =
        ConnectResponse::decode(request(&nc, &disc, vec![0xff, 0xff, 0xff]).await.payload).unwrap();
    assert_eq!(r.error, text(srv::ProtocolError::InvalidConnReq));
    let req = ConnectRequest {
        client_id: "x".into(),
        ..Default::default()
    };
    let r =
        ConnectResponse::decode(request(&nc, &disc, req.encode_to_vec()).await.payload).unwrap();
    assert_eq!(r.error, text(srv::ProtocolError::InvalidConnReq));
    let req = ConnectRequest {
        client_id: "bad id!".into(),
        heartbeat_inbox: "hb".into(),
        ..Default::default()
    };
    let r =
        ConnectResponse::decode(request(&nc, &disc, req.encode_to_vec()).await.payload).unwrap();
    assert_eq!(r.error, text(srv::ProtocolError::InvalidClientId));
    assert!(r.pub_prefix.is_empty());

    // Publish: garbage, unknown client, bad channel names, missing guid, oversized.
    let ack = good.publish_raw("work", vec![0xff, 0x01]).await;
    assert_eq!(ack.error, text(srv::ProtocolError::InvalidPubReq));
    let mut pm = good.pub_msg("work", b"x");
    pm.client_id = "nobody".into();
    pm.conn_id.clear();
    let ack = good.publish_raw("work", pm.encode_to_vec()).await;
    assert_eq!(
        (ack.error.as_str(), ack.guid == pm.guid),
        (text(srv::ProtocolError::InvalidPubReq).as_str(), true)
    );
    let mut pm = good.pub_msg("work", b"x");
    pm.conn_id = b"someone else".to_vec();
    let ack = good.publish_raw("work", pm.encode_to_vec()).await;
    assert_eq!(ack.error, text(srv::ProtocolError::InvalidPubReq));
    for bad in ["foo..bar", "foo.*", "foo.>", ".foo", "foo.", "", "a/b"] {
        let pm = good.pub_msg(bad, b"x");
        let ack = good.publish_raw("work", pm.encode_to_vec()).await;
        assert_eq!(
            ack.error,
            text(srv::ProtocolError::InvalidPubReq),
            "channel {bad:?}"
        );
    }
    let mut pm = good.pub_msg("work", b"x");
    pm.guid.clear();
    assert_eq!(
        good.publish_raw("work", pm.encode_to_vec()).await.error,
        text(srv::ProtocolError::InvalidPubReq)
    );
    // Oversized: core NATS refuses a PUB beyond max_payload with its documented error and
    // closes that connection only.
    let addr = server.client_addr().unwrap();
    let max = good.nc.max_payload();
    let oversized = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap(); // INFO
        let n = max + 1;
        write!(
            s,
            "CONNECT {{\"verbose\":false}}\r\nPUB _STAN.pub.{CID}.work {n}\r\n"
        )
        .unwrap();
        let _ = s.write_all(&vec![b'z'; n]);
        let _ = s.write_all(b"\r\n");
        let mut out = String::new();
        while r.read_line(&mut out).is_ok_and(|n| n > 0) {}
        out
    })
    .await
    .unwrap();
    assert!(
        oversized.contains("-ERR 'Maximum Payload Violation'"),
        "{oversized}"
    );
    let ack = good.publish("work", &vec![b'z'; max - 200]).await;
    assert_eq!(ack.error, "", "the largest message that fits is stored");
    assert_eq!(watcher.next().await.data.len(), max - 200);

    // Subscribe: garbage, each validation step.
    let r = SubscriptionResponse::decode(
        request(&nc, &good.resp.sub_requests, vec![0xff; 3])
            .await
            .payload,
    )
    .unwrap();
    assert_eq!(r.error, text(srv::ProtocolError::InvalidSubReq));
    let base = good.sub_req("work", "");
    type Case = (Box<dyn Fn(&mut SubscriptionRequest)>, String);
    let cases: Vec<Case> = vec![
        (
            Box::new(|r| r.client_id.clear()),
            text(srv::ProtocolError::MissingClient),
        ),
        (
            Box::new(|r| r.ack_wait_in_secs = 0),
            text(srv::ProtocolError::InvalidAckWait),
        ),
        (
            Box::new(|r| r.max_in_flight = 0),
            text(srv::ProtocolError::InvalidMaxInflight),
        ),
        (
            Box::new(|r| r.start_position = 9),
            text(srv::ProtocolError::InvalidStart),
        ),
        (
            Box::new(|r| r.subject = "foo..bar".into()),
            text(srv::ProtocolError::InvalidSubject),
        ),
        (
            Box::new(|r| r.subject = "foo.*".into()),
            text(srv::ProtocolError::InvalidSubject),
        ),
        (
            Box::new(|r| r.client_id = "nobody".into()),
            text(srv::ProtocolError::UnknownClient),
        ),
        (
            Box::new(|r| {
                r.q_group = "q".into();
                r.durable_name = "a:b".into();
            }),
            text(srv::ProtocolError::DurableQueueColon),
        ),
    ];
    for (f, want) in cases {
        let mut req = base.clone();
        f(&mut req);
        assert_eq!(
            good.subscribe(req).await.err().as_deref(),
            Some(want.as_str())
        );
    }

    // Unsubscribe / close sub / close connection with bad input.
    let r = SubscriptionResponse::decode(
        request(&nc, &good.resp.unsub_requests, vec![0xff; 3])
            .await
            .payload,
    )
    .unwrap();
    assert_eq!(r.error, text(srv::ProtocolError::InvalidUnsubReq));
    let unsub = |subject: &str, inbox: &str, client: &str| UnsubscribeRequest {
        client_id: client.into(),
        subject: subject.into(),
        inbox: inbox.into(),
        ..Default::default()
    };
    for (req, want) in [
        (
            unsub("nochannel", "x", "good"),
            text(srv::ProtocolError::UnknownChannel),
        ),
        (
            unsub("work", "nosuchinbox", "good"),
            text(srv::ProtocolError::InvalidSub),
        ),
        (
            unsub("work", &watcher.ack_inbox, "other"),
            text(srv::ProtocolError::UnknownClient),
        ),
    ] {
        let m = request(&nc, &good.resp.sub_close_requests, req.encode_to_vec()).await;
        assert_eq!(SubscriptionResponse::decode(m.payload).unwrap().error, want);
    }
    let m = request(&nc, &good.resp.close_requests, vec![0xff; 3]).await;
    assert_eq!(
        CloseResponse::decode(m.payload).unwrap().error,
        text(srv::ProtocolError::InvalidCloseReq)
    );
    let m = request(
        &nc,
        &good.resp.close_requests,
        CloseRequest {
            client_id: "nobody".into(),
        }
        .encode_to_vec(),
    )
    .await;
    assert_eq!(
        CloseResponse::decode(m.payload).unwrap().error,
        text(srv::ProtocolError::UnknownClient)
    );
    // Pings: unknown connID gets the "replaced" error; a known one an empty payload.
    let m = good.ping(b"unknown").await;
    assert_eq!(
        PingResponse::decode(m.payload).unwrap().error,
        text(srv::ProtocolError::ClientReplaced)
    );
    assert!(good.ping(&good.conn_id).await.payload.is_empty());
    // Garbage acks on the ack inbox are ignored.
    good.nc
        .publish(&watcher.ack_inbox, vec![0xff, 0xff])
        .await
        .unwrap();

    // The good client lost nothing and the server still works.
    assert_eq!(good.publish("work", b"after").await.error, "");
    let m = watcher.next().await;
    assert_eq!((m.sequence, &m.data[..]), (3, &b"after"[..]));
    watcher.none_for(Duration::from_millis(200)).await;
    assert!(good.close().await.error.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_timing_and_counts() {
    let server = start_server(|_| {}).await;
    let c = Raw::connect(server.nats_url(), CID, "redeliver", true).await;
    let mut req = c.sub_req("rd", "");
    req.ack_wait_in_secs = 1;
    let mut s = c.subscribe(req).await.unwrap();
    c.publish("rd", b"one").await;
    let t0 = Instant::now();
    let m = s.next().await;
    assert_eq!(
        (m.sequence, m.redelivered, m.redelivery_count),
        (1, false, 0)
    );
    // Not before the ack wait.
    s.none_for(Duration::from_millis(800)).await;
    let m = s.next().await;
    let dt = t0.elapsed();
    assert_eq!(
        (m.sequence, m.redelivered, m.redelivery_count),
        (1, true, 1)
    );
    assert!(
        dt >= Duration::from_millis(950) && dt < Duration::from_millis(2500),
        "{dt:?}"
    );
    let m = s.next().await;
    assert_eq!(
        (m.sequence, m.redelivered, m.redelivery_count),
        (1, true, 2)
    );
    c.ack(&s, 1).await;
    s.none_for(Duration::from_millis(1300)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_stalls_until_acks() {
    let server = start_server(|_| {}).await;
    let c = Raw::connect(server.nats_url(), CID, "mif", true).await;
    for i in 0..10u8 {
        assert_eq!(c.publish("mf", &[i]).await.error, "");
    }
    let mut req = c.sub_req("mf", "");
    req.max_in_flight = 3;
    let mut s = c.subscribe(req).await.unwrap();
    for want in 1..=3 {
        assert_eq!(s.next().await.sequence, want);
    }
    s.none_for(Duration::from_millis(300)).await;
    c.ack(&s, 2).await;
    assert_eq!(s.next().await.sequence, 4);
    s.none_for(Duration::from_millis(200)).await;
    for seq in [1, 3, 4] {
        c.ack(&s, seq).await;
    }
    for want in 5..=7 {
        assert_eq!(s.next().await.sequence, want);
    }
    s.none_for(Duration::from_millis(200)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_larger_than_one_delivery_round_is_sent_whole_without_acks() {
    // More messages and bytes than the engine sends a subscription per commit: the rest must
    // follow without an ack to trigger it.
    const N: u64 = 9000;
    let server = start_server(|_| {}).await;
    let c = Raw::connect(server.nats_url(), CID, "window", true).await;
    let body = [7u8; 200];
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let acks = futures::future::join_all(chunk.iter().map(|_| c.publish("big", &body))).await;
        assert!(acks.iter().all(|a| a.error.is_empty()));
    }
    let mut req = c.sub_req("big", "");
    req.max_in_flight = 20_000;
    let mut s = c.subscribe(req).await.unwrap();
    for want in 1..=N {
        let m = s.next().await;
        assert_eq!((m.sequence, m.data.len()), (want, body.len()));
    }
    s.none_for(Duration::from_millis(200)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_client_id_replaces_a_dead_connection_only() {
    let server = start_server(|_| {}).await;
    let url = server.nats_url().to_string();
    let alive = Raw::connect(&url, CID, "dup", true).await;
    let err = Raw::try_connect(&url, CID, "dup", true).await.err();
    assert_eq!(
        err.as_deref(),
        Some(text(srv::ProtocolError::ClientRegistered).as_str())
    );
    drop(alive);

    // A client that does not answer its heartbeat inbox is replaced.
    let dead = Raw::connect(&url, CID, "dup2", false).await;
    let t0 = Instant::now();
    let fresh = Raw::connect(&url, CID, "dup2", true).await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    // The old connection is no longer valid: publishes rejected, pings get an error.
    assert_eq!(
        dead.publish("d", b"x").await.error,
        text(srv::ProtocolError::InvalidPubReq)
    );
    let m = dead.ping(&dead.conn_id).await;
    assert_eq!(
        PingResponse::decode(m.payload).unwrap().error,
        text(srv::ProtocolError::ClientReplaced)
    );
    assert_eq!(fresh.publish("d", b"x").await.error, "");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_clients_are_removed_by_heartbeats() {
    let server = start_server(|o| {
        o.hb_interval = Duration::from_millis(100);
        o.hb_timeout = Duration::from_millis(100);
        o.hb_fail_count = 2;
    })
    .await;
    let url = server.nats_url().to_string();
    let live = Raw::connect(&url, CID, "live", true).await;
    let dead = Raw::connect(&url, CID, "dead", false).await;
    let mut dreq = dead.sub_req("hb", "");
    dreq.durable_name = "d".into();
    dead.subscribe(dreq).await.unwrap();
    let gone = eventually(Duration::from_secs(5), async || {
        dead.publish("hb", b"x").await.error == text(srv::ProtocolError::InvalidPubReq)
    })
    .await;
    assert!(gone, "dead client not removed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live.publish("hb", b"y").await.error, "", "live client kept");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_enforced() {
    let server = start_server(|o| {
        o.limits.max_channels = 2;
        o.limits.channel.max_msgs = 3;
        o.limits.channel.max_subs = 2;
    })
    .await;
    let c = Raw::connect(server.nats_url(), CID, "lim", true).await;
    for i in 1..=5u8 {
        assert_eq!(c.publish("a", &[i]).await.error, "");
    }
    let mut s = c.subscribe(c.sub_req("a", "")).await.unwrap();
    for want in 3..=5 {
        assert_eq!(s.next().await.sequence, want);
    }
    c.subscribe(c.sub_req("a", "")).await.unwrap();
    assert_eq!(
        c.subscribe(c.sub_req("a", "")).await.err().as_deref(),
        Some("too many subscriptions per channel")
    );
    assert_eq!(c.publish("b", b"x").await.error, "");
    assert_eq!(c.publish("c", b"x").await.error, "too many channels");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_member_leaving_hands_its_pending_to_the_others() {
    let server = start_server(|_| {}).await;
    let url = server.nats_url().to_string();
    let a = Raw::connect(&url, CID, "qa", true).await;
    let b = Raw::connect(&url, CID, "qb", true).await;
    let mut ra = a.sub_req("qq", "");
    ra.q_group = "g".into();
    let mut rb = b.sub_req("qq", "");
    rb.q_group = "g".into();
    let mut sa = a.subscribe(ra).await.unwrap();
    let mut sb = b.subscribe(rb).await.unwrap();
    for i in 1..=4u8 {
        a.publish("qq", &[i]).await;
    }
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    while got_a.len() + got_b.len() < 4 {
        tokio::select! {
            m = sa.next() => got_a.push(m.sequence),
            m = sb.next() => got_b.push(m.sequence),
        }
    }
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "{got_a:?} {got_b:?}"
    );
    // b acks nothing and leaves: its messages go to a, flagged redelivered.
    assert!(b.unsubscribe(&sb, false).await.error.is_empty());
    for _ in 0..got_b.len() {
        let m = sa.next().await;
        assert!(m.redelivered && got_b.contains(&m.sequence), "{m:?}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_restart_redelivers_pending_and_keeps_clients() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let conf = |o: &mut srv::Options| {
        o.store_type = rnats_streaming::store::StoreKind::File;
        o.dir = Some(path.clone());
    };
    let server = start_server(conf).await;
    let c = Raw::connect(server.nats_url(), CID, "persist", true).await;
    let mut req = c.sub_req("fs", "");
    req.durable_name = "dd".into();
    req.ack_wait_in_secs = 1;
    let mut s = c.subscribe(req.clone()).await.unwrap();
    for i in 1..=3u8 {
        assert_eq!(c.publish("fs", &[i]).await.error, "");
    }
    for want in 1..=3 {
        assert_eq!(s.next().await.sequence, want);
    }
    c.ack(&s, 1).await;
    assert!(c.close().await.error.is_empty());
    server.shutdown().await;

    let server = start_server(conf).await;
    let c = Raw::connect(server.nats_url(), CID, "persist", true).await;
    let mut s = c.subscribe(req).await.unwrap();
    // Pending 2 and 3 come back first, redelivered; then new messages.
    let m = s.next().await;
    assert_eq!((m.sequence, m.redelivered), (2, true));
    let m = s.next().await;
    assert_eq!((m.sequence, m.redelivered), (3, true));
    assert_eq!(c.publish("fs", b"4").await.error, "");
    let m = s.next().await;
    assert_eq!((m.sequence, m.redelivered), (4, false));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_flags_logs_and_monitoring() {
    let dir = tempfile::tempdir().unwrap();
    let server = tokio::task::spawn_blocking({
        let d = dir.path().to_str().unwrap().to_string();
        move || {
            ServerProc::start(&[
                "-cid",
                "mon",
                "-m",
                "-1",
                "-st",
                "FILE",
                "--dir",
                &d,
                "-mm",
                "100",
                "--max_age",
                "1h",
            ])
        }
    })
    .await
    .unwrap();
    let mport = server.monitor_port.expect("monitor port in the log");
    let c = Raw::connect(&server.url(), "mon", "mon-client", true).await;
    let mut req = c.sub_req("m.1", "");
    req.durable_name = "dur".into();
    let mut s = c.subscribe(req).await.unwrap();
    c.publish("m.1", b"hello").await;
    s.next().await;

    let get = |p: &'static str| tokio::task::spawn_blocking(move || http_get(mport, p));
    let (st, body) = get("/streaming/serverz").await.unwrap();
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["cluster_id"], "mon");
    assert_eq!(v["state"], "STANDALONE");
    assert_eq!(
        (v["clients"].as_u64(), v["channels"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (v["subscriptions"].as_u64(), v["total_msgs"].as_u64()),
        (Some(1), Some(1))
    );
    for k in [
        "server_id",
        "version",
        "now",
        "start_time",
        "uptime",
        "in_msgs",
        "out_bytes",
    ] {
        assert!(v.get(k).is_some(), "serverz.{k}");
    }
    let (_, body) = get("/streaming/storez").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "FILE");
    assert_eq!(v["limits"]["max_msgs"], 100);
    assert_eq!(v["limits"]["max_age"], 3_600_000_000_000u64);
    let (_, body) = get("/streaming/clientsz?subs=1").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["clients"][0]["id"], "mon-client");
    assert_eq!(
        v["clients"][0]["subscriptions"]["m.1"][0]["durable_name"],
        "dur"
    );
    let (_, body) = get("/streaming/channelsz").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["names"], serde_json::json!(["m.1"]));
    let (_, body) = get("/streaming/channelsz?subs=1").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ch = &v["channels"][0];
    assert_eq!(
        (ch["name"].as_str(), ch["msgs"].as_u64()),
        (Some("m.1"), Some(1))
    );
    assert_eq!(
        (ch["first_seq"].as_u64(), ch["last_seq"].as_u64()),
        (Some(1), Some(1))
    );
    let sub = &ch["subscriptions"][0];
    for k in [
        "client_id",
        "inbox",
        "ack_inbox",
        "is_durable",
        "is_offline",
        "max_inflight",
        "ack_wait",
        "last_sent",
        "pending_count",
        "is_stalled",
    ] {
        assert!(sub.get(k).is_some(), "subscription.{k}");
    }
    assert_eq!(sub["last_sent"], 1);
    let (st, _) = get("/streaming/channelsz?channel=m.1").await.unwrap();
    assert_eq!(st, 200);
    let (st, body) = get("/streaming/channelsz?channel=nope").await.unwrap();
    assert_eq!((st, body.trim()), (404, "Channel nope not found"));
    // The core server's own endpoints are served on the same port.
    let (st, body) = get("/varz").await.unwrap();
    assert_eq!(st, 200);
    assert!(body.contains("\"server_id\""), "{body}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_server_with_same_cluster_id_refuses_to_start() {
    let first = start_server(|_| {}).await;
    let url = first.nats_url().to_string();
    let mut opts = srv::Options {
        nats_server_url: Some(url.clone()),
        ..Default::default()
    };
    opts.startup_check = true;
    let err = srv::start(opts).await.err().expect("must refuse");
    assert!(
        err.to_string()
            .contains("discovered another streaming server"),
        "{err}"
    );
    // With another cluster ID it runs next to the first one on the same NATS server (-ns).
    let second = srv::start(srv::Options {
        nats_server_url: Some(url.clone()),
        cluster_id: "other".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let c = Raw::connect(&url, "other", "x", true).await;
    assert_eq!(c.publish("ch", b"1").await.error, "");
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_expires_messages_and_max_inactivity_deletes_channels() {
    let server = start_server(|o| {
        o.limits.channel.max_age = Duration::from_millis(300);
        o.limits.channel.max_inactivity = Duration::from_millis(400);
        o.http_port = -1;
        o.http_host = "127.0.0.1".into();
    })
    .await;
    let c = Raw::connect(server.nats_url(), CID, "ages", true).await;
    assert_eq!(c.publish("old", b"1").await.error, "");
    // Expired by age: a new subscription from the first message gets nothing.
    let expired = eventually(Duration::from_secs(5), async || {
        let mut s = c.subscribe(c.sub_req("old", "")).await.unwrap();
        let none = s.next_within(Duration::from_millis(50)).await.is_none();
        c.unsubscribe(&s, false).await;
        none
    })
    .await;
    assert!(expired, "message not expired by max_age");
    // Without subscription nor message, the channel is deleted: sequences start again at 1.
    let mport = server.monitor_addr().unwrap().port();
    let deleted = eventually(Duration::from_secs(5), async || {
        let (_, body) =
            tokio::task::spawn_blocking(move || http_get(mport, "/streaming/channelsz"))
                .await
                .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["total"] == 0
    })
    .await;
    assert!(deleted, "channel not deleted by max_inactivity");
    assert_eq!(c.publish("old", b"2").await.error, "");
    let mut s = c.subscribe(c.sub_req("old", "")).await.unwrap();
    assert_eq!(s.next().await.sequence, 1, "channel was recreated");
    server.shutdown().await;
}

/// The engine's local connection in a cluster: its subscriptions are announced over routes,
/// so a client of another server connects, publishes, subscribes and acks through the route,
/// and PubAcks, deliveries and the duplicate-client probe (a request) come back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_routed_server_reach_the_embedded_engine() {
    use rnats_server::options::ClusterOptions;
    let cluster = |routes: Vec<String>| ClusterOptions {
        name: Some("c".into()),
        host: "127.0.0.1".into(),
        port: 0,
        routes,
        ..Default::default()
    };
    let other = rnats_server::start(rnats_server::Options {
        host: "127.0.0.1".into(),
        port: 0,
        cluster: Some(cluster(Vec::new())),
        ..Default::default()
    })
    .await
    .expect("plain server starts");
    let route = format!(
        "nats-route://{}",
        other.shared.cluster.as_ref().expect("cluster").listen_addr
    );
    let server = start_server(|o| o.nats.cluster = Some(cluster(vec![route]))).await;
    let url = format!("nats://{}", other.client_addr());
    // The engine's discover subscription reaches the other server.
    let deadline = Instant::now() + Duration::from_secs(10);
    while other
        .shared
        .sublist
        .matches(discover(CID).as_bytes())
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no interest over the route");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = Raw::connect(&url, CID, "far", true).await;
    for i in 0..5u8 {
        assert_eq!(c.publish("routed", &[i]).await.error, "");
    }
    let mut s = c.subscribe(c.sub_req("routed", "")).await.unwrap();
    for want in 1..=5u64 {
        let m = s.next().await;
        assert_eq!((m.sequence, m.data.to_vec()), (want, vec![want as u8 - 1]));
        c.ack(&s, want).await;
    }
    s.none_for(Duration::from_millis(200)).await;
    // Same client ID again: the engine asks the first connection (a request over the route),
    // which answers, so the newcomer is refused.
    let dup = Raw::try_connect(&url, CID, "far", true).await;
    assert_eq!(
        dup.err().as_deref(),
        Some(text(srv::ProtocolError::ClientRegistered).as_str()),
        "the live client keeps its ID"
    );
    server.shutdown().await;
    other.shutdown(Duration::from_secs(1)).await;
}
