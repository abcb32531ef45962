//! Scenarios against the real `rnats-streaming-server` (memory store, embedded NATS server).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use prost::Message as _;
use rnats_streaming::proto::{CloseRequest, CloseResponse};
use rnats_streaming_client::{ConnState, Error, Options, StartPosition, SubscriptionOptions};
use tokio::sync::mpsc;

use crate::support::*;

fn new_only() -> SubscriptionOptions {
    SubscriptionOptions::new()
}

#[tokio::test]
async fn publish_subscribe() {
    let srv = ServerProc::streaming();
    let sc = srv.connect("pubsub").await;
    assert_eq!(sc.state(), ConnState::Connected);
    let mut sub = sc.subscribe("greetings", new_only()).await.unwrap();
    let mut guids = BTreeSet::new();
    for p in ["one", "two", "three"] {
        guids.insert(sc.publish("greetings", p).await.unwrap());
    }
    assert_eq!(guids.len(), 3, "a fresh guid per message");
    let msgs = take(&mut sub, 3, "greetings").await;
    assert_eq!(seqs(&msgs), [1, 2, 3]);
    assert_eq!(texts(&msgs), ["one", "two", "three"]);
    for m in &msgs {
        assert_eq!(m.subject, "greetings");
        assert!(!m.redelivered && m.redelivery_count == 0, "{m:?}");
        assert!(m.timestamp > 0);
        let age = SystemTime::now()
            .duration_since(m.time())
            .unwrap_or_default();
        assert!(age < WAIT, "timestamp is now-ish: {m:?}");
    }
    assert!(
        msgs.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "timestamps monotonic"
    );
    // Another client's messages reach this subscription; a second channel is separate.
    let other = srv.connect("pubsub-other").await;
    other.publish("other-channel", "elsewhere").await.unwrap();
    other.publish("greetings", "four").await.unwrap();
    let m = next(&mut sub, "four").await;
    assert_eq!((m.sequence, &m.data[..]), (4, &b"four"[..]));
    // Auto-ack mode: a manual ack is refused.
    assert_eq!(m.ack().await, Err(Error::ManualAck));
    // Empty payloads are messages too.
    sc.publish("greetings", "").await.unwrap();
    let m = next(&mut sub, "empty").await;
    assert_eq!((m.sequence, m.data.len()), (5, 0));
    other.close().await.unwrap();
    sc.close().await.unwrap();
}

#[tokio::test]
async fn publish_async_with_bounded_acks() {
    let srv = ServerProc::streaming();
    let sc = srv
        .connect_with("async-pub", srv.opts().max_pub_acks_inflight(4))
        .await;
    let mut sub = sc.subscribe("async", new_only()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sent = Vec::new();
    for i in 0..50 {
        let tx = tx.clone();
        let guid = sc
            .publish_async("async", format!("m{i}"), move |guid, r| {
                let _ = tx.send((guid.to_string(), r));
            })
            .await
            .unwrap();
        assert!(sc.pending_pub_acks() <= 4, "bounded outstanding acks");
        sent.push(guid);
    }
    let mut acked = Vec::new();
    while acked.len() < 50 {
        let (guid, r) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("acks within WAIT")
            .expect("channel open");
        assert_eq!(r, Ok(()), "ack of {guid}");
        acked.push(guid);
    }
    assert_eq!(acked, sent, "acks in publish order");
    assert_eq!(sc.pending_pub_acks(), 0);
    let msgs = take(&mut sub, 50, "async").await;
    assert_eq!(seqs(&msgs), (1..=50).collect::<Vec<_>>());
    assert_eq!(texts(&msgs)[49], "m49");
    sc.close().await.unwrap();
}

#[tokio::test]
async fn every_start_position() {
    let srv = ServerProc::streaming();
    let sc = srv.connect("starts").await;
    publish_all(&sc, "pos", &["1", "2", "3"]).await;
    // A point in time between message 3 and message 4.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_all(&sc, "pos", &["4", "5"]).await;

    // All available.
    let mut all = sc
        .subscribe("pos", new_only().deliver_all_available())
        .await
        .unwrap();
    assert_eq!(seqs(&take(&mut all, 5, "all").await), [1, 2, 3, 4, 5]);

    // From a sequence.
    let mut from3 = sc
        .subscribe("pos", new_only().start_at_sequence(3))
        .await
        .unwrap();
    assert_eq!(seqs(&take(&mut from3, 3, "seq 3").await), [3, 4, 5]);

    // Last received.
    let mut last = sc
        .subscribe("pos", new_only().start_with_last_received())
        .await
        .unwrap();
    assert_eq!(next(&mut last, "last").await.sequence, 5);

    // Start time (sent as a delta) and time delta: both land between 3 and 4.
    let mut at = sc
        .subscribe("pos", new_only().start_at_time(between))
        .await
        .unwrap();
    assert_eq!(seqs(&take(&mut at, 2, "start time").await), [4, 5]);
    let ago = SystemTime::now().duration_since(between).unwrap();
    let mut delta = sc
        .subscribe("pos", new_only().start(StartPosition::TimeDelta(ago)))
        .await
        .unwrap();
    assert_eq!(seqs(&take(&mut delta, 2, "time delta").await), [4, 5]);

    // New only: nothing old.
    let mut new = sc.subscribe("pos", new_only()).await.unwrap();
    nothing_within(&mut new, Duration::from_millis(300), "new only").await;

    // Every subscription then gets the next message, and only once.
    sc.publish("pos", "6").await.unwrap();
    for (sub, name) in [
        (&mut all, "all"),
        (&mut from3, "seq"),
        (&mut last, "last"),
        (&mut at, "time"),
        (&mut delta, "delta"),
        (&mut new, "new"),
    ] {
        assert_eq!(next(sub, name).await.sequence, 6, "{name}");
    }
    nothing_within(&mut all, Duration::from_millis(200), "no duplicates").await;

    sc.close().await.unwrap();
}

#[tokio::test]
async fn durable_resumes_after_close_and_reconnect() {
    let srv = ServerProc::streaming();
    let publisher = srv.connect("dur-pub").await;
    let sc = srv.connect("dur-client").await;
    let durable = || new_only().durable_name("audit").deliver_all_available();
    publish_all(&publisher, "ledger", &["1", "2", "3"]).await;
    let mut sub = sc.subscribe("ledger", durable()).await.unwrap();
    assert_eq!(sub.durable_name(), Some("audit"));
    assert_eq!(seqs(&take(&mut sub, 3, "first run").await), [1, 2, 3]);
    // Close keeps the durable: it resumes after what it acked, not from the start position.
    sub.close().await.unwrap();
    publish_all(&publisher, "ledger", &["4", "5"]).await;
    let mut sub = sc.subscribe("ledger", durable()).await.unwrap();
    assert_eq!(seqs(&take(&mut sub, 2, "resumed").await), [4, 5]);

    // Closing the connection keeps it too; the same client ID reconnects and resumes.
    sc.close().await.unwrap();
    assert!(
        next_within(&mut sub, Duration::from_secs(2))
            .await
            .is_none(),
        "stream ends when the client closes"
    );
    publish_all(&publisher, "ledger", &["6"]).await;
    let sc = srv.connect("dur-client").await;
    let mut sub = sc.subscribe("ledger", durable()).await.unwrap();
    let m = next(&mut sub, "after reconnect").await;
    assert_eq!((m.sequence, &m.data[..]), (6, &b"6"[..]));
    nothing_within(
        &mut sub,
        Duration::from_millis(300),
        "nothing before 6 again",
    )
    .await;

    // Unsubscribe removes it: the same name starts afresh from its start position.
    sub.unsubscribe().await.unwrap();
    let mut sub = sc.subscribe("ledger", durable()).await.unwrap();
    assert_eq!(next(&mut sub, "fresh durable").await.sequence, 1);
    sc.close().await.unwrap();
    publisher.close().await.unwrap();
}

#[tokio::test]
async fn queue_group_delivers_each_message_once() {
    let srv = ServerProc::streaming();
    let a = srv.connect("q-a").await;
    let b = srv.connect("q-b").await;
    let mut qa = a
        .queue_subscribe("jobs", "workers", new_only())
        .await
        .unwrap();
    let mut qb = b
        .queue_subscribe("jobs", "workers", new_only())
        .await
        .unwrap();
    assert_eq!(qa.queue_group(), Some("workers"));
    let mut plain = a.subscribe("jobs", new_only()).await.unwrap();
    let payloads: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    publish_all(&a, "jobs", &refs).await;
    assert_eq!(
        seqs(&take(&mut plain, 20, "plain").await),
        (1..=20).collect::<Vec<_>>(),
        "a plain subscriber gets everything"
    );
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < 20 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            Some(m) = qa.next() => got.push(m.sequence),
            Some(m) = qb.next() => got.push(m.sequence),
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (1..=20).collect::<Vec<_>>(),
        "each message to one member"
    );
    let extra_a = next_within(&mut qa, Duration::from_millis(300)).await;
    let extra_b = next_within(&mut qb, Duration::from_millis(1)).await;
    assert!(extra_a.is_none() && extra_b.is_none(), "no duplicates");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn durable_queue_group_survives_its_members() {
    let srv = ServerProc::streaming();
    let sc = srv.connect("dq").await;
    let opts = || new_only().durable_name("dur").deliver_all_available();
    publish_all(&sc, "dq-chan", &["1", "2"]).await;
    let mut m1 = sc.queue_subscribe("dq-chan", "grp", opts()).await.unwrap();
    assert_eq!(seqs(&take(&mut m1, 2, "member 1").await), [1, 2]);
    // The last member closes: the durable group stays and resumes after 2.
    m1.close().await.unwrap();
    publish_all(&sc, "dq-chan", &["3"]).await;
    let mut m2 = sc.queue_subscribe("dq-chan", "grp", opts()).await.unwrap();
    assert_eq!(next(&mut m2, "member 2").await.sequence, 3);
    m2.unsubscribe().await.unwrap();
    sc.close().await.unwrap();
}

#[tokio::test]
async fn manual_ack_and_redelivery() {
    let srv = ServerProc::streaming();
    let sc = srv.connect("acker").await;
    let mut sub = sc
        .subscribe(
            "work",
            new_only().manual_acks().ack_wait(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    sc.publish("work", "task").await.unwrap();
    let first = next(&mut sub, "first delivery").await;
    assert_eq!(first.sequence, 1);
    assert!(!first.redelivered);
    // Not acked: redelivered after the ack wait, flagged.
    let again = next(&mut sub, "redelivery").await;
    assert_eq!(again.sequence, 1);
    assert!(again.redelivered, "{again:?}");
    assert!(again.redelivery_count >= 1, "{again:?}");
    assert_eq!(&again.data[..], b"task");
    again.ack().await.unwrap();
    // Acked: no more redeliveries (a bounded check over more than one ack wait).
    nothing_within(&mut sub, Duration::from_millis(2500), "after ack").await;
    // The next message is delivered normally.
    sc.publish("work", "next").await.unwrap();
    let m = next(&mut sub, "second").await;
    assert_eq!((m.sequence, m.redelivered), (2, false));
    m.ack().await.unwrap();
    sub.unsubscribe().await.unwrap();
    sc.close().await.unwrap();
}

#[tokio::test]
async fn max_in_flight_holds_back_until_acked() {
    let srv = ServerProc::streaming();
    let sc = srv.connect("flow").await;
    let mut sub = sc
        .subscribe(
            "flow",
            new_only()
                .manual_acks()
                .max_in_flight(2)
                .ack_wait(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    publish_all(&sc, "flow", &["1", "2", "3", "4", "5"]).await;
    let first = take(&mut sub, 2, "first two").await;
    assert_eq!(seqs(&first), [1, 2]);
    nothing_within(
        &mut sub,
        Duration::from_millis(500),
        "max in flight reached",
    )
    .await;
    // Each ack lets exactly one more through.
    first[0].ack().await.unwrap();
    let m3 = next(&mut sub, "third").await;
    assert_eq!(m3.sequence, 3);
    nothing_within(&mut sub, Duration::from_millis(300), "still 2 in flight").await;
    first[1].ack().await.unwrap();
    m3.ack().await.unwrap();
    let rest = take(&mut sub, 2, "rest").await;
    assert_eq!(seqs(&rest), [4, 5]);
    for m in &rest {
        m.ack().await.unwrap();
    }
    sub.close().await.unwrap();
    sc.close().await.unwrap();
}

#[tokio::test]
async fn close_ends_everything() {
    let srv = ServerProc::streaming();
    let sc = srv.connect("closer").await;
    let mut sub = sc.subscribe("c", new_only()).await.unwrap();
    sc.publish("c", "before").await.unwrap();
    assert_eq!(next(&mut sub, "before close").await.sequence, 1);
    sc.close().await.unwrap();
    assert_eq!(sc.state(), ConnState::Closed);
    assert!(
        next_within(&mut sub, Duration::from_secs(2))
            .await
            .is_none(),
        "the stream ends"
    );
    assert_eq!(sc.publish("c", "after").await, Err(Error::ConnectionClosed));
    assert!(matches!(
        sc.subscribe("c", new_only()).await,
        Err(Error::ConnectionClosed)
    ));
    assert_eq!(sc.close().await, Ok(()), "closing twice is fine");
    assert_eq!(sub.close().await, Err(Error::ConnectionClosed));
    // The server forgot the client: the same ID connects again at once.
    let again = srv.connect("closer").await;
    again.publish("c", "after").await.unwrap();
    again.close().await.unwrap();
}

#[tokio::test]
async fn connect_errors() {
    let srv = ServerProc::streaming();
    let first = srv.connect("dup").await;
    // Wrong cluster ID: nobody answers.
    let r = rnats_streaming_client::StanClient::connect(
        "no-such-cluster",
        "lonely",
        srv.opts().connect_timeout(Duration::from_millis(500)),
    )
    .await;
    assert_eq!(r.err(), Some(Error::ConnectRequestTimeout));
    // A duplicate client ID while the first one answers heartbeats: refused.
    let r = rnats_streaming_client::StanClient::connect(CLUSTER, "dup", srv.opts()).await;
    assert_eq!(
        r.err(),
        Some(Error::Server("stan: clientID already registered".into()))
    );
    // An invalid client ID.
    let r = rnats_streaming_client::StanClient::connect(CLUSTER, "bad id!", srv.opts()).await;
    assert!(
        matches!(&r, Err(Error::Server(e)) if e.starts_with("stan: invalid clientID")),
        "{r:?}"
    );
    // A subscription error comes back as the server's text.
    let r = first.subscribe("bad.*.channel", new_only()).await;
    assert_eq!(r.err(), Some(Error::Server("stan: invalid subject".into())));
    // One durable name is one subscription while it is active.
    let _d = first
        .subscribe("d", new_only().durable_name("once"))
        .await
        .unwrap();
    let r = first.subscribe("d", new_only().durable_name("once")).await;
    assert_eq!(
        r.err(),
        Some(Error::Server("stan: duplicate durable registration".into()))
    );
    first.close().await.unwrap();
}

#[tokio::test]
async fn connection_lost_when_server_forgets_the_client() {
    let srv = ServerProc::streaming();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let opts = srv
        .opts()
        .pings(Duration::from_millis(100), 50)
        .connection_lost_handler(move |e| {
            let _ = tx.send(e);
        });
    let sc = srv.connect_with("forgotten", opts).await;
    // Someone closes this client on the server (the default close subject of a new store).
    let raw = rnats_client::connect(srv.url()).await.unwrap();
    let req = CloseRequest {
        client_id: "forgotten".into(),
    };
    let reply = raw
        .request(format!("_STAN.close.{CLUSTER}"), req.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(CloseResponse::decode(reply.payload).unwrap().error, "");
    // The next PING is answered with an error: the connection is lost.
    let err = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("lost within WAIT")
        .unwrap();
    assert!(
        matches!(&err, Error::Server(t) if t.contains("no longer registered")),
        "{err:?}"
    );
    assert_eq!(sc.state(), ConnState::Lost);
    assert_eq!(sc.publish("x", "y").await, Err(Error::ConnectionClosed));
    raw.close().await;
}

#[tokio::test]
async fn connection_lost_when_server_dies() {
    let mut srv = ServerProc::streaming();
    let lost = Arc::new(Mutex::new(Vec::new()));
    let l = lost.clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let opts = srv
        .opts()
        .pings(Duration::from_millis(100), 3)
        .connection_lost_handler(move |e| {
            l.lock().push(e.clone());
            let _ = tx.send(e);
        });
    let sc = srv.connect_with("orphan", opts).await;
    sc.publish("x", "stored").await.unwrap();
    srv.kill();
    let err = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("lost within WAIT")
        .unwrap();
    assert_eq!(err, Error::MaxPings);
    assert_eq!(sc.state(), ConnState::Lost);
    assert_eq!(sc.close().await, Ok(()), "close after loss is a no-op");
    assert_eq!(lost.lock().len(), 1, "the handler runs once");
}

#[tokio::test]
async fn over_an_existing_nats_connection() {
    let srv = ServerProc::streaming();
    // Wait until the streaming server answers, with an owned connection first.
    srv.connect("probe").await.close().await.unwrap();
    let nc = rnats_client::connect(srv.url()).await.unwrap();
    let sc = rnats_streaming_client::StanClient::connect(
        CLUSTER,
        "borrowed",
        Options::new().nats_client(nc.clone()),
    )
    .await
    .unwrap();
    let mut sub = sc.subscribe("b", new_only()).await.unwrap();
    sc.publish("b", "hi").await.unwrap();
    assert_eq!(&next(&mut sub, "borrowed").await.data[..], b"hi");
    sc.close().await.unwrap();
    // The NATS connection stays usable.
    assert_eq!(nc.state(), rnats_client::State::Connected);
    nc.flush().await.unwrap();
    nc.close().await;
}
