//! Clusters of rnats servers on loopback: interest propagation, one hop, queue groups across
//! servers, gossip to a full mesh, rejoin after restart, and client failover via connect_urls.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use rnats_server::options::ClusterOptions;
use tokio::time::timeout;

use crate::harness::{TestServer, WAIT, test_options, wait_until};

async fn node(name: &str, routes: Vec<String>) -> TestServer {
    let mut opts = test_options();
    opts.server_name = Some(name.into());
    opts.cluster = Some(ClusterOptions {
        name: Some("test".into()),
        host: "127.0.0.1".into(),
        port: 0,
        routes,
        ..Default::default()
    });
    TestServer::rnats_with(opts).await
}

fn route_url(srv: &TestServer) -> String {
    format!(
        "nats-route://{}",
        srv.handle().shared.cluster.as_ref().unwrap().listen_addr
    )
}

fn routes(srv: &TestServer) -> usize {
    srv.handle()
        .shared
        .cluster
        .as_ref()
        .unwrap()
        .routes
        .lock()
        .len()
}

/// A seed and `n - 1` servers that only know the seed; waits for the full mesh.
async fn cluster(n: usize) -> Vec<TestServer> {
    let seed = node("n0", Vec::new()).await;
    let url = route_url(&seed);
    let mut nodes = vec![seed];
    for i in 1..n {
        nodes.push(node(&format!("n{i}"), vec![url.clone()]).await);
    }
    for srv in &nodes {
        wait_until(|| routes(srv) == n - 1).await;
    }
    nodes
}

async fn connect(srv: &TestServer) -> async_nats::Client {
    timeout(WAIT, async_nats::connect(srv.url()))
        .await
        .unwrap()
        .unwrap()
}

/// Waits until a server sees interest on `subject` (from any route or client).
async fn wait_interest(srv: &TestServer, subject: &str) {
    let shared = srv.handle().shared.clone();
    wait_until(|| !shared.sublist.matches(subject.as_bytes()).is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_hop_interest_and_queues() {
    let nodes = cluster(3).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let nb = connect(b).await;
    let nc = connect(c).await;
    let mut sub_b = nb.subscribe("news.>").await.unwrap();
    let mut sub_c = nc.subscribe("news.>").await.unwrap();
    let mut q_b = nb.queue_subscribe("jobs", "workers".into()).await.unwrap();
    let mut q_c = nc.queue_subscribe("jobs", "workers".into()).await.unwrap();
    nb.flush().await.unwrap();
    nc.flush().await.unwrap();
    wait_interest(a, "news.x").await;
    wait_interest(a, "jobs").await;
    let shared_a = a.handle().shared.clone();
    wait_until(|| {
        shared_a
            .sublist
            .matches(b"jobs")
            .queues
            .first()
            .is_some_and(|g| g.members.len() == 2)
    })
    .await;

    let na = connect(a).await;
    for i in 0..100 {
        na.publish("news.today", i.to_string().into())
            .await
            .unwrap();
        na.publish("jobs", i.to_string().into()).await.unwrap();
    }
    na.flush().await.unwrap();
    for i in 0..100 {
        assert_eq!(
            timeout(WAIT, sub_b.next()).await.unwrap().unwrap().payload,
            i.to_string()
        );
        assert_eq!(
            timeout(WAIT, sub_c.next()).await.unwrap().unwrap().payload,
            i.to_string()
        );
    }
    let mut seen = std::collections::HashSet::new();
    for q in [&mut q_b, &mut q_c] {
        while let Ok(Some(m)) = timeout(Duration::from_millis(300), q.next()).await {
            assert!(
                seen.insert(m.payload.clone()),
                "a queue message delivered twice"
            );
        }
    }
    assert_eq!(
        seen.len(),
        100,
        "each queue message exactly once in the whole cluster"
    );
    // One hop: nothing arrives twice on B or C (no route-to-route forwarding).
    assert!(
        timeout(Duration::from_millis(200), sub_b.next())
            .await
            .is_err()
    );

    // No interest, no traffic: a subject only A's own client wants never crosses a route.
    let before: u64 = route_out_msgs(a);
    let mut local = na.subscribe("local.only").await.unwrap();
    na.flush().await.unwrap();
    for _ in 0..50 {
        na.publish("local.only", "x".into()).await.unwrap();
    }
    na.flush().await.unwrap();
    for _ in 0..50 {
        timeout(WAIT, local.next()).await.unwrap().unwrap();
    }
    assert_eq!(
        route_out_msgs(a),
        before,
        "messages sent to routes without interest"
    );

    // Unsubscribing on B withdraws its interest from A.
    drop(sub_b);
    drop(q_b);
    nb.flush().await.unwrap();
    let shared_a = a.handle().shared.clone();
    wait_until(|| {
        shared_a
            .sublist
            .matches(b"jobs")
            .queues
            .first()
            .is_some_and(|g| g.members.len() == 1)
    })
    .await;
    for srv in nodes {
        srv.stop().await;
    }
}

fn route_out_msgs(srv: &TestServer) -> u64 {
    let cluster = srv.handle().shared.cluster.as_ref().unwrap();
    cluster
        .routes
        .lock()
        .values()
        .map(|r| r.conn.stats.out_msgs.load(Ordering::Relaxed))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_form_a_full_mesh_from_one_seed() {
    let nodes = cluster(5).await;
    let mut subs = Vec::new();
    for srv in &nodes[1..] {
        let nc = connect(srv).await;
        let sub = nc.subscribe("all").await.unwrap();
        nc.flush().await.unwrap();
        subs.push((nc, sub));
    }
    for srv in &nodes {
        let shared = srv.handle().shared.clone();
        let expected = if std::ptr::eq(srv, &nodes[0]) { 4 } else { 3 };
        wait_until(|| shared.sublist.matches(b"all").plain.len() >= expected).await;
    }
    let publisher = connect(&nodes[0]).await;
    publisher.publish("all", "hello".into()).await.unwrap();
    publisher.flush().await.unwrap();
    for (_, sub) in &mut subs {
        assert_eq!(
            timeout(WAIT, sub.next()).await.unwrap().unwrap().payload,
            "hello"
        );
        assert!(
            timeout(Duration::from_millis(100), sub.next())
                .await
                .is_err(),
            "duplicate"
        );
    }
    for srv in nodes {
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_rejoins_and_clients_fail_over() {
    let nodes = cluster(3).await;
    let seed_url = route_url(&nodes[0]);
    let mut nodes = nodes.into_iter();
    let (a, b, c) = (
        nodes.next().unwrap(),
        nodes.next().unwrap(),
        nodes.next().unwrap(),
    );

    // A client that only knows C learns A and B from INFO connect_urls.
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(c.url())
        .await
        .unwrap();
    let mut sub = client.subscribe("failover").await.unwrap();
    client.flush().await.unwrap();
    wait_interest(&a, "failover").await;
    let info = client.server_info();
    assert!(
        info.connect_urls.len() >= 3,
        "connect_urls: {:?}",
        info.connect_urls
    );

    // C goes away: the client moves to A or B and its subscription follows it.
    c.stop().await;
    let publisher = connect(&a).await;
    let got = timeout(Duration::from_secs(20), async {
        loop {
            publisher.publish("failover", "after".into()).await.unwrap();
            if let Ok(Some(m)) = timeout(Duration::from_millis(200), sub.next()).await {
                return m;
            }
        }
    })
    .await
    .expect("client failed over and got a message");
    assert_eq!(got.payload, "after");

    // A new C, seeded with A only, rejoins the full mesh and its interest propagates.
    let c2 = node("n2b", vec![seed_url]).await;
    wait_until(|| routes(&c2) == 2 && routes(&a) == 2 && routes(&b) == 2).await;
    let nc2 = connect(&c2).await;
    let mut sub2 = nc2.subscribe("rejoin").await.unwrap();
    nc2.flush().await.unwrap();
    wait_interest(&b, "rejoin").await;
    let nb = connect(&b).await;
    nb.publish("rejoin", "welcome".into()).await.unwrap();
    nb.flush().await.unwrap();
    assert_eq!(
        timeout(WAIT, sub2.next()).await.unwrap().unwrap().payload,
        "welcome"
    );
    for srv in [a, b, c2] {
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_across_servers_and_route_auth() {
    let mut opts = test_options();
    opts.cluster = Some(ClusterOptions {
        name: Some("auth".into()),
        host: "127.0.0.1".into(),
        user: Some("ruser".into()),
        password: Some("rpass".into()),
        ..Default::default()
    });
    let a = TestServer::rnats_with(opts.clone()).await;
    let url = route_url(&a).replace("nats-route://", "nats-route://ruser:rpass@");
    let mut b_opts = opts.clone();
    b_opts.cluster.as_mut().unwrap().routes = vec![url.clone()];
    let b = TestServer::rnats_with(b_opts).await;
    wait_until(|| routes(&a) == 1 && routes(&b) == 1).await;

    // Wrong route credentials never form a route.
    let mut bad_opts = opts.clone();
    bad_opts.cluster.as_mut().unwrap().routes = vec![url.replace("rpass", "wrong")];
    let bad = TestServer::rnats_with(bad_opts).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(routes(&bad), 0);

    let responder = connect(&a).await;
    let mut service = responder.subscribe("svc").await.unwrap();
    responder.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(m) = service.next().await {
            if let Some(reply) = m.reply {
                responder.publish(reply, m.payload).await.unwrap();
            }
        }
    });
    wait_interest(&b, "svc").await;
    let requester = connect(&b).await;
    let resp = timeout(WAIT, requester.request("svc", "ping".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.payload, "ping");
    for srv in [a, b, bad] {
        srv.stop().await;
    }
}

/// A port the OS just handed out, for a reference server's route listener (it must be
/// known before the reference starts: it cannot report its route port to us).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stretch of the clustering issue: an rnats server joins a cluster of reference servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rnats_joins_a_reference_cluster() {
    let (p1, p2) = (free_port(), free_port());
    let Some(ref1) = TestServer::reference(&[
        "--cluster",
        &format!("nats://127.0.0.1:{p1}"),
        "--cluster_name",
        "mix",
        "-n",
        "ref1",
    ]) else {
        return;
    };
    let ref2 = TestServer::reference(&[
        "--cluster",
        &format!("nats://127.0.0.1:{p2}"),
        "--cluster_name",
        "mix",
        "-n",
        "ref2",
        "--routes",
        &format!("nats://127.0.0.1:{p1}"),
    ])
    .unwrap();
    let mut opts = test_options();
    opts.server_name = Some("rn".into());
    opts.cluster = Some(ClusterOptions {
        name: Some("mix".into()),
        host: "127.0.0.1".into(),
        routes: vec![format!("nats-route://127.0.0.1:{p1}")],
        ..Default::default()
    });
    let rn = TestServer::rnats_with(opts).await;
    // Through gossip, rnats also connects to ref2.
    wait_until(|| routes(&rn) == 2).await;

    let on_ref2 = connect(&ref2).await;
    let mut sub_ref2 = on_ref2.subscribe("mixed.>").await.unwrap();
    let mut q_ref2 = on_ref2.queue_subscribe("mq", "g".into()).await.unwrap();
    on_ref2.flush().await.unwrap();
    let on_rn = connect(&rn).await;
    let mut sub_rn = on_rn.subscribe("mixed.>").await.unwrap();
    let mut q_rn = on_rn.queue_subscribe("mq", "g".into()).await.unwrap();
    on_rn.flush().await.unwrap();
    wait_interest(&rn, "mixed.a").await;
    let shared = rn.handle().shared.clone();
    wait_until(|| {
        shared
            .sublist
            .matches(b"mq")
            .queues
            .first()
            .is_some_and(|g| g.members.len() == 2)
    })
    .await;

    // Published on ref1: both subscribers get it (the reference routes it to rnats).
    let on_ref1 = connect(&ref1).await;
    let got = timeout(Duration::from_secs(10), async {
        loop {
            on_ref1
                .publish("mixed.a", "from ref1".into())
                .await
                .unwrap();
            on_ref1.flush().await.unwrap();
            if let Ok(Some(m)) = timeout(Duration::from_millis(200), sub_rn.next()).await {
                return m;
            }
        }
    })
    .await
    .expect("a message from the reference cluster reaches an rnats client");
    assert_eq!(got.payload, "from ref1");
    assert_eq!(
        timeout(WAIT, sub_ref2.next())
            .await
            .unwrap()
            .unwrap()
            .payload,
        "from ref1"
    );
    // Published on rnats: reaches the reference's client.
    on_rn.publish("mixed.b", "from rnats".into()).await.unwrap();
    on_rn.flush().await.unwrap();
    loop {
        let m = timeout(WAIT, sub_ref2.next()).await.unwrap().unwrap();
        if m.payload == "from rnats" {
            break;
        }
    }
    // A queue group spread over rnats and a reference server: each message once.
    for i in 0..100 {
        on_rn.publish("mq", i.to_string().into()).await.unwrap();
    }
    on_rn.flush().await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for q in [&mut q_rn, &mut q_ref2] {
        while let Ok(Some(m)) = timeout(Duration::from_millis(300), q.next()).await {
            assert!(seen.insert(m.payload.clone()), "delivered twice");
        }
    }
    assert_eq!(seen.len(), 100);
    for srv in [rn, ref1, ref2] {
        srv.stop().await;
    }
}

/// Routes over TLS: certificates verified both ways; a server without them cannot join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_over_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::make_pki(dir.path());
    let tls = rnats_server::options::TlsOptions {
        cert_file: Some(pki.cert.clone()),
        key_file: Some(pki.key.clone()),
        ca_file: Some(pki.ca.clone()),
        verify: true,
        ..Default::default()
    };
    let cluster = |routes: Vec<String>, tls: Option<rnats_server::options::TlsOptions>| {
        let mut opts = test_options();
        opts.cluster = Some(ClusterOptions {
            name: Some("tls".into()),
            host: "127.0.0.1".into(),
            routes,
            tls,
            ..Default::default()
        });
        opts
    };
    let a = TestServer::rnats_with(cluster(Vec::new(), Some(tls.clone()))).await;
    let seed = route_url(&a);
    let b = TestServer::rnats_with(cluster(vec![seed.clone()], Some(tls))).await;
    wait_until(|| routes(&a) == 1 && routes(&b) == 1).await;
    let plain = TestServer::rnats_with(cluster(vec![seed], None)).await;

    let nb = connect(&b).await;
    let mut sub = nb.subscribe("secure.route").await.unwrap();
    nb.flush().await.unwrap();
    wait_interest(&a, "secure.route").await;
    let na = connect(&a).await;
    na.publish("secure.route", "over tls".into()).await.unwrap();
    na.flush().await.unwrap();
    assert_eq!(
        timeout(WAIT, sub.next()).await.unwrap().unwrap().payload,
        "over tls"
    );
    // Absence cannot be awaited: give the plain server time for a few dial attempts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        routes(&plain),
        0,
        "a plain-text server joined a TLS cluster"
    );
    assert_eq!(routes(&a), 1);
    for srv in [a, b, plain] {
        srv.stop().await;
    }
}
