//! Partitioning: streaming servers of one cluster ID, each serving the channels of its
//! `store_limits.channels`, attached to one core NATS server.

mod common;

use std::time::Duration;

use common::*;
use prost::Message as _;
use rnats_streaming::proto::{CtrlMsg, ctrl_msg};
use rnats_streaming::store::ChannelLimitsOverride;
use rnats_streaming_server::{Options, StreamingServer};

async fn partition(url: &str, channels: &[&str]) -> Result<StreamingServer, String> {
    let mut o = Options {
        nats_server_url: Some(url.to_string()),
        partitioning: true,
        ..Default::default()
    };
    for c in channels {
        o.limits
            .per_channel
            .insert(c.to_string(), ChannelLimitsOverride::default());
    }
    rnats_streaming_server::start(o)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_served_by_their_owner_and_unowned_ones_time_out() {
    let (_core, url) = core_nats().await;
    let p1 = partition(&url, &["orders.*", "audit"]).await.unwrap();
    let p2 = partition(&url, &["users", "events.>"]).await.unwrap();
    let c = Raw::connect(&url, "test-cluster", "part", true).await;
    for ch in ["orders.eu", "audit", "users", "events.a.b"] {
        for i in 0..3 {
            let ack = c.publish(ch, format!("{ch}-{i}").as_bytes()).await;
            assert_eq!(ack.error, "", "{ch}");
        }
    }
    for ch in ["orders.eu", "users"] {
        let mut s = c.subscribe(c.sub_req(ch, "")).await.unwrap();
        for i in 0..3 {
            let m = s.next().await;
            assert_eq!(
                (m.sequence, m.data.as_ref()),
                (i + 1, format!("{ch}-{i}").as_bytes())
            );
        }
        assert_eq!(c.unsubscribe(&s, false).await.error, "");
    }
    // Nobody owns "other" (nor "orders.eu.x"): no PubAck, no subscription response.
    for ch in ["other", "orders.eu.x"] {
        assert!(
            c.try_publish(ch, b"x", Duration::from_millis(500))
                .await
                .is_none(),
            "{ch} was answered"
        );
        assert!(
            c.try_subscribe(c.sub_req(ch, &c.nc.new_inbox()), Duration::from_millis(500))
                .await
                .is_none(),
            "{ch} subscription was answered"
        );
    }
    // Every server answered the close.
    assert_eq!(c.close().await.error, "");
    p1.shutdown().await;
    p2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_server_is_refused_naming_the_channel() {
    let (_core, url) = core_nats().await;
    let p1 = partition(&url, &["orders.*", "audit"]).await.unwrap();
    let e = partition(&url, &["billing", "orders.>"])
        .await
        .err()
        .unwrap();
    assert!(
        e.contains("channel \"orders.>\" causes conflict with channels on server"),
        "{e}"
    );
    let e = partition(&url, &["*.eu"]).await.err().unwrap();
    assert!(e.contains("channel \"*.eu\" causes conflict"), "{e}");
    // A disjoint one is fine, and the first one still serves.
    let p2 = partition(&url, &["billing"]).await.unwrap();
    let c = Raw::connect(&url, "test-cluster", "still", true).await;
    assert_eq!(c.publish("orders.us", b"1").await.error, "");
    assert_eq!(c.publish("billing", b"1").await.error, "");
    p1.shutdown().await;
    p2.shutdown().await;
}

#[tokio::test]
async fn an_empty_channel_list_is_refused() {
    let e = partition("nats://127.0.0.1:1", &[]).await.err().unwrap();
    assert_eq!(e, "stan: no configured channel");
}

/// A list request that does not decode is logged and ignored; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_partitioning_message_is_ignored() {
    let (_core, url) = core_nats().await;
    let p1 = partition(&url, &["orders.*"]).await.unwrap();
    let nc = nats(&url).await;
    let inbox = nc.new_inbox();
    let mut replies = nc.subscribe(inbox.clone()).await.unwrap();
    nc.publish_with_reply("_STAN.part.test-cluster", &inbox, &b"\xff\xff"[..])
        .await
        .unwrap();
    // A list whose channel data is cut short.
    let bad = CtrlMsg {
        msg_type: ctrl_msg::Type::Partitioning as i32,
        server_id: "X".into(),
        data: vec![9, 0, b'a'],
        ..Default::default()
    };
    nc.publish_with_reply("_STAN.part.test-cluster", &inbox, bad.encode_to_vec())
        .await
        .unwrap();
    // A good one gets an answer naming the overlap.
    let good = CtrlMsg {
        msg_type: ctrl_msg::Type::Partitioning as i32,
        server_id: "X".into(),
        data: [&[8u8, 0][..], b"orders.x"].concat(),
        ..Default::default()
    };
    nc.publish_with_reply("_STAN.part.test-cluster", &inbox, good.encode_to_vec())
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut replies))
        .await
        .unwrap()
        .unwrap();
    let r = CtrlMsg::decode(m.payload).unwrap();
    assert_eq!(r.data, b"orders.x");
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            futures::StreamExt::next(&mut replies)
        )
        .await
        .is_err(),
        "the bad requests got no answer"
    );
    let c = Raw::connect(&url, "test-cluster", "ok", true).await;
    assert_eq!(c.publish("orders.a", b"1").await.error, "");
    p1.shutdown().await;
}

/// The binary reads `partitioning: true` and the channel list from its configuration file,
/// and node-nats-streaming publishes and subscribes across two partitions on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_across_two_partitions_from_config_files() {
    let (_core, url) = core_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = |name: &str, channels: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!("partitioning: true\nstore_limits: {{ channels: {{ {channels} }} }}\n"),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let (c1, c2) = (
        conf("p1.conf", "\"part1.>\": {}"),
        conf("p2.conf", "\"part2.*\": { max_msgs: 100 }"),
    );
    let _p1 = ServerProc::spawn(&["-ns", &url, "-sc", &c1], "Streaming Server is ready");
    let _p2 = ServerProc::spawn(&["-ns", &url, "-sc", &c2], "Streaming Server is ready");
    if !node_available() {
        return;
    }
    let u = url.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || run_node("partitions", &u))
        .await
        .unwrap();
    assert!(ok, "node partitions failed:\n{out}");
}
