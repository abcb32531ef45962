//! A scripted fake streaming server (a raw rnats client on a plain `rnats-server`) for what
//! the real server does not do on demand: withhold or fail pub acks, ignore PINGs, send
//! heartbeats at will.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use prost::Message as _;
use rnats_client::Client;
use rnats_streaming::proto::{ConnectRequest, ConnectResponse, Ping, PubAck, PubMsg};
use rnats_streaming_client::{ConnState, Error, Options, StanClient};
use tokio::sync::mpsc;

use crate::support::*;

const FAKE: &str = "fake-cluster";

struct Fake {
    srv: ServerProc,
    nc: Client,
    /// The connect requests it answered.
    connects: Arc<Mutex<Vec<ConnectRequest>>>,
}

impl Fake {
    /// A fake that accepts every connect with `resp` (pub prefix `_FAKE.pub`).
    async fn start(resp: ConnectResponse) -> Fake {
        let srv = ServerProc::nats();
        let nc = rnats_client::connect(srv.url()).await.unwrap();
        let connects = Arc::new(Mutex::new(Vec::new()));
        let mut sub = nc
            .subscribe(format!("_STAN.discover.{FAKE}"))
            .await
            .unwrap();
        nc.flush().await.unwrap();
        let (c, n) = (connects.clone(), nc.clone());
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                c.lock().push(ConnectRequest::decode(m.payload).unwrap());
                if let Some(reply) = m.reply {
                    n.publish(reply, resp.encode_to_vec()).await.unwrap();
                }
            }
        });
        Fake { srv, nc, connects }
    }

    fn opts(&self) -> Options {
        Options::new()
            .nats_url(self.srv.url())
            .connect_timeout(Duration::from_secs(2))
    }

    async fn connect(&self, opts: Options) -> Result<StanClient, Error> {
        StanClient::connect(FAKE, "me", opts).await
    }

    /// The `PubMsg`s published to the fake, with their reply subjects.
    async fn pub_msgs(&self) -> mpsc::UnboundedReceiver<(PubMsg, String)> {
        let mut sub = self.nc.subscribe("_FAKE.pub.>").await.unwrap();
        self.nc.flush().await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let msg = PubMsg::decode(m.payload).unwrap();
                if tx.send((msg, m.reply.unwrap_or_default())).is_err() {
                    break;
                }
            }
        });
        rx
    }

    async fn ack(&self, reply: &str, guid: &str, error: &str) {
        let a = PubAck {
            guid: guid.into(),
            error: error.into(),
        };
        self.nc.publish(reply, a.encode_to_vec()).await.unwrap();
    }
}

fn response() -> ConnectResponse {
    ConnectResponse {
        pub_prefix: "_FAKE.pub".into(),
        sub_requests: "_FAKE.sub".into(),
        unsub_requests: "_FAKE.unsub".into(),
        close_requests: "_FAKE.close".into(),
        sub_close_requests: "_FAKE.subclose".into(),
        protocol: 1,
        ..Default::default()
    }
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
        .unwrap_or_else(|| panic!("{what}: channel closed"))
}

#[tokio::test]
async fn connect_request_fields() {
    let fake = Fake::start(response()).await;
    let sc = fake
        .connect(fake.opts().pings(Duration::from_secs(7), 9))
        .await
        .unwrap();
    let req = fake.connects.lock()[0].clone();
    assert_eq!(req.client_id, "me");
    assert_eq!(req.protocol, 1);
    assert_eq!((req.ping_interval, req.ping_max_out), (7, 9));
    assert!(req.heartbeat_inbox.starts_with("_INBOX."), "{req:?}");
    assert_eq!(req.conn_id, sc.conn_id());
    assert!(!req.conn_id.is_empty());
    // The server heartbeats on the inbox: any request gets an empty reply.
    let hb = tokio::time::timeout(WAIT, fake.nc.request(req.heartbeat_inbox.clone(), ""))
        .await
        .expect("heartbeat answered in time")
        .unwrap();
    assert!(hb.payload.is_empty());
    // A wrong cluster: no responders, reported as the connect timeout.
    let r = StanClient::connect("other", "me", fake.opts()).await;
    assert_eq!(r.err(), Some(Error::ConnectRequestTimeout));
}

#[tokio::test]
async fn connect_refused() {
    let fake = Fake::start(ConnectResponse {
        error: "stan: clientID already registered".into(),
        ..Default::default()
    })
    .await;
    let r = fake.connect(fake.opts()).await;
    assert_eq!(
        r.err(),
        Some(Error::Server("stan: clientID already registered".into()))
    );
}

#[tokio::test]
async fn pub_msg_fields_and_ack_outcomes() {
    let fake = Fake::start(response()).await;
    let mut pubs = fake.pub_msgs().await;
    let sc = fake.connect(fake.opts()).await.unwrap();
    let c = sc.clone();
    let ok = tokio::spawn(async move { c.publish("orders", "payload").await });
    let (msg, reply) = recv(&mut pubs, "PubMsg").await;
    assert_eq!(msg.client_id, "me");
    assert_eq!(msg.subject, "orders");
    assert_eq!(&msg.data[..], b"payload");
    assert_eq!(msg.conn_id, sc.conn_id());
    assert!(!msg.guid.is_empty());
    assert!(reply.starts_with("_STAN.acks."), "{reply}");
    // A stray ack for another guid changes nothing; the right one completes the publish.
    fake.ack(&reply, "not-mine", "").await;
    fake.ack(&reply, &msg.guid, "").await;
    assert_eq!(ok.await.unwrap(), Ok(msg.guid.clone()));

    // An error ack fails the publish with the server's text.
    let c = sc.clone();
    let failed = tokio::spawn(async move { c.publish("orders", "x").await });
    let (msg, reply) = recv(&mut pubs, "PubMsg 2").await;
    fake.ack(&reply, &msg.guid, "stan: invalid publish request")
        .await;
    assert_eq!(
        failed.await.unwrap(),
        Err(Error::Server("stan: invalid publish request".into()))
    );
    assert_eq!(sc.pending_pub_acks(), 0);
}

#[tokio::test]
async fn publish_ack_timeout() {
    let fake = Fake::start(response()).await;
    let sc = fake
        .connect(fake.opts().pub_ack_wait(Duration::from_millis(300)))
        .await
        .unwrap();
    // Nobody acks (the NATS server's no-responders status on the ack inbox is no ack).
    let started = tokio::time::Instant::now();
    assert_eq!(sc.publish("void", "x").await, Err(Error::PubAckTimeout));
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let guid = sc
        .publish_async("void", "y", move |g, r| {
            let _ = tx.send((g.to_string(), r));
        })
        .await
        .unwrap();
    assert_eq!(
        recv(&mut rx, "async timeout").await,
        (guid, Err(Error::PubAckTimeout))
    );
    assert_eq!(sc.pending_pub_acks(), 0);
}

#[tokio::test]
async fn max_pub_acks_inflight_blocks_publishers() {
    let fake = Fake::start(response()).await;
    let mut pubs = fake.pub_msgs().await;
    let sc = fake
        .connect(fake.opts().max_pub_acks_inflight(2))
        .await
        .unwrap();
    let (tx, mut acks) = mpsc::unbounded_channel();
    let c = sc.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..3 {
            let tx = tx.clone();
            c.publish_async("flow", format!("{i}"), move |g, r| {
                let _ = tx.send((g.to_string(), r));
            })
            .await
            .unwrap();
        }
    });
    let (m0, reply) = recv(&mut pubs, "first").await;
    let (_m1, _) = recv(&mut pubs, "second").await;
    // The third waits for a slot.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), pubs.recv())
            .await
            .is_err(),
        "only 2 outstanding"
    );
    assert_eq!(sc.pending_pub_acks(), 2);
    assert!(!publisher.is_finished());
    fake.ack(&reply, &m0.guid, "").await;
    assert_eq!(recv(&mut acks, "ack 0").await, (m0.guid.clone(), Ok(())));
    let (m2, _) = recv(&mut pubs, "third after a slot freed").await;
    assert_eq!(&m2.data[..], b"2");
    tokio::time::timeout(WAIT, publisher)
        .await
        .expect("publisher done")
        .unwrap();
    // Closing fails what is still outstanding.
    sc.close().await.ok();
    let mut failed = vec![
        recv(&mut acks, "failed 1").await.1,
        recv(&mut acks, "failed 2").await.1,
    ];
    failed.dedup();
    assert_eq!(failed, vec![Err(Error::ConnectionClosed)]);
}

#[tokio::test]
async fn unanswered_pings_lose_the_connection() {
    let fake = Fake::start(ConnectResponse {
        ping_requests: "_FAKE.pings".into(),
        ping_interval: -50,
        ping_max_out: 3,
        ..response()
    })
    .await;
    let mut pings = fake.nc.subscribe("_FAKE.pings").await.unwrap();
    fake.nc.flush().await.unwrap();
    let (tx, mut lost) = mpsc::unbounded_channel();
    let sc = fake
        .connect(fake.opts().connection_lost_handler(move |e| {
            let _ = tx.send(e);
        }))
        .await
        .unwrap();
    // PINGs carry the connection ID; answering them keeps the connection.
    for _ in 0..6 {
        let p = tokio::time::timeout(WAIT, pings.next())
            .await
            .expect("a ping")
            .unwrap();
        assert_eq!(Ping::decode(p.payload).unwrap().conn_id, sc.conn_id());
        fake.nc.publish(p.reply.unwrap(), "").await.unwrap();
    }
    assert_eq!(sc.state(), ConnState::Connected);
    assert!(lost.try_recv().is_err());
    // Silence: lost after more than 3 unanswered.
    drop(pings);
    assert_eq!(recv(&mut lost, "lost").await, Error::MaxPings);
    assert_eq!(sc.state(), ConnState::Lost);
    assert_eq!(sc.publish("x", "y").await, Err(Error::ConnectionClosed));
}

#[tokio::test]
async fn ping_error_loses_the_connection() {
    let fake = Fake::start(ConnectResponse {
        ping_requests: "_FAKE.pings".into(),
        ping_interval: -50,
        ping_max_out: 100,
        ..response()
    })
    .await;
    let mut pings = fake.nc.subscribe("_FAKE.pings").await.unwrap();
    fake.nc.flush().await.unwrap();
    let (tx, mut lost) = mpsc::unbounded_channel();
    let sc = fake
        .connect(fake.opts().connection_lost_handler(move |e| {
            let _ = tx.send(e);
        }))
        .await
        .unwrap();
    let p = tokio::time::timeout(WAIT, pings.next())
        .await
        .expect("a ping")
        .unwrap();
    let text = "client has been replaced or is no longer registered";
    let resp = rnats_streaming::proto::PingResponse { error: text.into() };
    fake.nc
        .publish(p.reply.unwrap(), resp.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(recv(&mut lost, "lost").await, Error::Server(text.into()));
    assert_eq!(sc.state(), ConnState::Lost);
}

#[tokio::test]
async fn no_pings_for_protocol_zero_servers() {
    let fake = Fake::start(ConnectResponse {
        ping_requests: "_FAKE.pings".into(),
        ping_interval: -20,
        ping_max_out: 1,
        protocol: 0,
        ..response()
    })
    .await;
    let mut pings = fake.nc.subscribe("_FAKE.pings").await.unwrap();
    fake.nc.flush().await.unwrap();
    let sc = fake.connect(fake.opts()).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), pings.next())
            .await
            .is_err(),
        "no PINGs"
    );
    assert_eq!(sc.state(), ConnState::Connected);
}
