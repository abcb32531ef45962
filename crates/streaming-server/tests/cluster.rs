//! Clustered mode: three `rnats-streaming-server --clustered` binaries on one core NATS server
//! (in this process), killed, paused and restarted; the stores compared at the end.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rnats_streaming::store::file::{FileStore, FileStoreOptions};
use rnats_streaming::store::{Store, StoreLimits};

const NODES: [&str; 3] = ["a", "b", "c"];

struct Cluster {
    url: String,
    dir: PathBuf,
    nodes: BTreeMap<&'static str, ServerProc>,
    /// Flags every node gets besides the cluster's.
    extra: Vec<String>,
    /// Set: every node embeds its NATS server and routes to the core's route port (the
    /// servers gossip the rest of the full mesh), instead of attaching with `-ns`.
    routes: Option<u16>,
}

/// A core NATS server listening for routes too: clients connect to it, and the nodes of an
/// embedded cluster route to it (so killing a node never cuts a client off). Its client URL
/// and route port.
async fn core_nats_routed() -> (rnats_server::ServerHandle, String, u16) {
    let o = rnats_server::Options {
        host: "127.0.0.1".into(),
        port: -1,
        cluster: Some(rnats_server::options::ClusterOptions {
            host: "127.0.0.1".into(),
            port: -1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let h = rnats_server::start(o).await.expect("start core NATS");
    let url = format!("nats://127.0.0.1:{}", h.client_addr().port());
    let route = h.route_addr().expect("a route listener").port();
    (h, url, route)
}

impl Cluster {
    fn args(&self, id: &str) -> Vec<String> {
        let d = self.dir.display();
        let attach: Vec<String> = match &self.routes {
            None => vec!["-ns".into(), self.url.clone()],
            Some(core_route) => vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                "-1".into(),
                "--cluster".into(),
                "nats://127.0.0.1:-1".into(),
                "--routes".into(),
                format!("nats://127.0.0.1:{core_route}"),
            ],
        };
        attach
            .into_iter()
            .chain(
                [
                    "--clustered",
                    "--cluster_node_id",
                    id,
                    "--cluster_peers",
                    "a,b,c",
                    "--cluster_log_path",
                    &format!("{d}/raft-{id}"),
                    "-st",
                    "FILE",
                    "--dir",
                    &format!("{d}/store-{id}"),
                    "-m",
                    "-1",
                ]
                .iter()
                .map(|s| s.to_string()),
            )
            .chain(self.extra.iter().cloned())
            .collect()
    }

    fn start_node(&mut self, id: &'static str) {
        let args = self.args(id);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes
            .insert(id, ServerProc::spawn(&args, "Cluster node"));
    }

    async fn start(url: String, dir: PathBuf) -> Cluster {
        Cluster::start_with(url, dir, &[]).await
    }

    async fn start_with(url: String, dir: PathBuf, extra: &[&str]) -> Cluster {
        Cluster::launch(url, dir, extra, None)
    }

    /// Three nodes embedding their NATS servers, routed to the core's `route` port (see
    /// [`core_nats_routed`]); the RAFT RPCs use local connections.
    async fn start_embedded(url: String, dir: PathBuf, route: u16) -> Cluster {
        Cluster::launch(url, dir, &[], Some(route))
    }

    fn launch(url: String, dir: PathBuf, extra: &[&str], routes: Option<u16>) -> Cluster {
        let mut c = Cluster {
            url,
            dir,
            nodes: BTreeMap::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            routes,
        };
        for id in NODES {
            c.start_node(id);
        }
        c
    }

    fn role(&self, id: &str) -> Option<String> {
        let port = self.nodes.get(id)?.monitor_port?;
        let (status, body) = try_http_get(port, "/streaming/serverz").ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["role"].as_str().map(str::to_string)
    }

    /// The node that reports itself leader, waiting at most `d`.
    async fn leader(&self, d: Duration) -> Option<&'static str> {
        let deadline = Instant::now() + d;
        loop {
            let leaders: Vec<&'static str> = self
                .nodes
                .keys()
                .copied()
                .filter(|id| self.role(id).as_deref() == Some("Leader"))
                .collect();
            if leaders.len() == 1 {
                return Some(leaders[0]);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The RAFT term `id` reports (`raft_term` in serverz).
    fn term(&self, id: &str) -> Option<u64> {
        let port = self.nodes.get(id)?.monitor_port?;
        let (status, body) = try_http_get(port, "/streaming/serverz").ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["raft_term"].as_u64()
    }

    fn applied(&self, id: &str) -> Option<u64> {
        let port = self.nodes.get(id)?.monitor_port?;
        let (status, body) = try_http_get(port, "/streaming/serverz").ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["raft_last_applied"].as_u64()
    }

    /// Waits (at most 20 s) until every running node has applied the same RAFT index.
    async fn settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let applied: Vec<Option<u64>> = self.nodes.keys().map(|id| self.applied(id)).collect();
            if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not catch up: {applied:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every node gracefully, once they all applied the same entries.
    async fn stop_all(&mut self) {
        self.settled().await;
        for p in self.nodes.values() {
            p.terminate();
        }
        for p in self.nodes.values_mut() {
            for _ in 0..250 {
                if p.child.try_wait().unwrap().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.nodes.clear();
    }
}

/// Every message of `channel` in the store of node `id` (opened after the node stopped).
fn stored(dir: &Path, id: &str, channel: &str) -> Vec<(u64, Vec<u8>)> {
    let fs = FileStore::open(
        dir.join(format!("store-{id}")),
        FileStoreOptions::default(),
        StoreLimits::default(),
    )
    .unwrap();
    let out = match fs.lookup_channel(channel) {
        Some(ch) => ch
            .msgs()
            .read_batch(1, 1_000_000, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|m| (m.sequence, m.data.to_vec()))
            .collect(),
        None => Vec::new(),
    };
    fs.close().unwrap();
    out
}

/// A streaming client, once the leader serves (it reports its role a moment before its
/// engine subscribed the client subjects).
async fn connect(url: &str, id: &str) -> Raw {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Raw::try_connect(url, "test-cluster", id, true).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("connect {id}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn publish_until_acked(c: &Raw, channel: &str, data: &[u8], d: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < d {
        if let Some(ack) = c
            .try_publish(channel, data, Duration::from_millis(250))
            .await
            && ack.error.is_empty()
        {
            return start.elapsed();
        }
    }
    panic!("no PubAck within {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_elect_and_keep_every_acknowledged_message() {
    let (_core, url) = core_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let cl = Cluster::start(url.clone(), dir.path().to_path_buf()).await;
    replicate_elect_and_keep_every_acknowledged_message(cl, &url, dir.path()).await;
}

/// The same with every node embedding its NATS server (routed together, and with the core
/// the client uses): the RAFT RPCs then travel on local connections to each node's own
/// server and over the routes between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_cluster_replicates_over_local_connections() {
    let (_core, url, route) = core_nats_routed().await;
    let dir = tempfile::tempdir().unwrap();
    let cl = Cluster::start_embedded(url.clone(), dir.path().to_path_buf(), route).await;
    replicate_elect_and_keep_every_acknowledged_message(cl, &url, dir.path()).await;
}

async fn replicate_elect_and_keep_every_acknowledged_message(
    mut cl: Cluster,
    url: &str,
    dir: &std::path::Path,
) {
    let leader = cl.leader(Duration::from_secs(15)).await.expect("a leader");
    let followers: Vec<&str> = NODES.iter().copied().filter(|n| *n != leader).collect();
    for f in &followers {
        let deadline = Instant::now() + Duration::from_secs(10);
        while cl.role(f).as_deref() != Some("Follower") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(cl.role(f).as_deref(), Some("Follower"), "node {f}");
    }

    let c = connect(url, "clc").await;
    let mut acked: Vec<Vec<u8>> = Vec::new();
    for i in 0..100 {
        let data = format!("before-{i}").into_bytes();
        assert_eq!(c.publish("orders", &data).await.error, "");
        acked.push(data);
    }
    let mut req = c.sub_req("orders", "");
    req.durable_name = "dur".into();
    req.ack_wait_in_secs = 2;
    let mut s = c.subscribe(req).await.unwrap();
    for seq in 1..=100u64 {
        let m = s.next().await;
        assert_eq!(m.sequence, seq);
        if seq <= 60 {
            c.ack(&s, seq).await;
        }
    }

    // Kill -9 the leader: a new one serves the same session within a few seconds.
    let killed = Instant::now();
    cl.nodes.get_mut(leader).unwrap().kill();
    cl.nodes.remove(leader);
    let took = publish_until_acked(&c, "orders", b"after-0", Duration::from_secs(10)).await;
    let failover = killed.elapsed();
    eprintln!("cluster failover (kill -9 to the first PubAck): {failover:?} ({took:?} publishing)");
    assert!(failover < Duration::from_secs(6), "{failover:?}");
    acked.push(b"after-0".to_vec());
    let new_leader = cl
        .leader(Duration::from_secs(5))
        .await
        .expect("a new leader");
    assert_ne!(new_leader, leader);
    for i in 1..50 {
        let data = format!("after-{i}").into_bytes();
        assert_eq!(c.publish("orders", &data).await.error, "");
        acked.push(data);
    }
    // The durable: unacked 61..=100 redelivered, then the new ones (acks of 1..=60 were
    // replicated, so at most a few of them may come again).
    let mut seen = std::collections::BTreeSet::new();
    let want: Vec<u64> = (61..=150).collect();
    while !want.iter().all(|q| seen.contains(q)) {
        let Some(m) = s.next_within(Duration::from_secs(6)).await else {
            break;
        };
        seen.insert(m.sequence);
        c.ack(&s, m.sequence).await;
    }
    assert!(want.iter().all(|q| seen.contains(q)), "seen {seen:?}");

    // The killed node comes back and catches up.
    cl.start_node(leader);
    assert_eq!(
        c.publish("orders", b"last").await.error,
        "",
        "publish with the old leader back"
    );
    acked.push(b"last".to_vec());
    let deadline = Instant::now() + Duration::from_secs(10);
    while cl.role(leader).as_deref() != Some("Follower") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(c);
    cl.stop_all().await;

    // Every node holds every acknowledged message once, in order, with the same sequences.
    let reference = stored(dir, "a", "orders");
    let datas: Vec<Vec<u8>> = reference.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(datas, acked, "node a");
    for (i, (seq, _)) in reference.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
    }
    for id in ["b", "c"] {
        assert_eq!(stored(dir, id, "orders"), reference, "node {id}");
    }
}

/// Encryption at rest in a cluster: what goes into the RAFT logs is sealed as well as the
/// stores, so no payload is on any node's disk in plaintext, and the messages read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_cluster_keeps_payloads_off_every_disk() {
    let (_core, url) = core_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let key = "cluster key for the test";
    let mut cl = Cluster::start_with(
        url.clone(),
        dir.path().to_path_buf(),
        &["--encryption_key", key],
    )
    .await;
    cl.leader(Duration::from_secs(15)).await.expect("a leader");
    let c = connect(&url, "enc").await;
    let secret = |i: usize| format!("TOP-SECRET-CLUSTER-PAYLOAD-{i:04}");
    for i in 0..40 {
        publish_until_acked(&c, "vault", secret(i).as_bytes(), Duration::from_secs(10)).await;
    }
    let mut s = c.subscribe(c.sub_req("vault", "")).await.unwrap();
    for i in 0..40 {
        assert_eq!(s.next().await.data, secret(i).as_bytes());
    }
    drop(c);
    cl.stop_all().await;
    // Every node holds the 40 messages, sealed (read without the key), and a RAFT log
    // (sealed whole, channel names included) larger than the payloads...
    for id in NODES {
        let msgs = stored(dir.path(), id, "vault");
        assert_eq!(msgs.len(), 40, "node {id}");
        for (seq, data) in &msgs {
            assert!(
                data.len() > secret(0).len() && !data.windows(10).any(|w| w == b"TOP-SECRET"),
                "node {id}: message {seq} is not sealed"
            );
        }
        let log: u64 = std::fs::read_dir(dir.path().join(format!("raft-{id}/log")))
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(log > 40 * 30, "node {id}: RAFT log of {log} bytes");
    }
    // ...and no file of any node has a payload, or even their common prefix, in plaintext.
    let hits = files_contain(dir.path(), b"TOP-SECRET");
    assert!(hits.is_empty(), "plaintext payloads in {hits:?}");
}

#[test]
fn clustering_with_the_memory_store_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rnats-streaming-server"))
        .args(["--clustered", "-st", "MEMORY", "-p", "-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stan: clustering mode not supported with MEMORY store type"),
        "{err}"
    );
}

/// node-nats-streaming publishing every 5 ms with a durable subscriber while the leader is
/// killed: every acknowledged message arrives, in order, none overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_through_a_leader_kill() {
    if !node_available() {
        return;
    }
    // Embedded servers routed to the core the client uses: the RAFT RPCs on local
    // connections (the other cluster tests cover the `-ns` transport).
    let (_core, url, route) = core_nats_routed().await;
    let dir = tempfile::tempdir().unwrap();
    let cl = Cluster::start_embedded(url.clone(), dir.path().to_path_buf(), route).await;
    let leader = cl.leader(Duration::from_secs(15)).await.expect("a leader");
    let pid = cl.nodes[leader].child.id().to_string();
    let u = url.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run_node_with("ft_failover", &u, &["test-cluster", &pid])
    })
    .await
    .unwrap();
    assert!(ok, "node failover scenario failed:\n{out}");
    eprintln!(
        "{}",
        out.lines()
            .find(|l| l.contains("FAILOVER_MS"))
            .unwrap_or("")
    );
    let new_leader = cl
        .leader(Duration::from_secs(5))
        .await
        .expect("a new leader");
    assert_ne!(new_leader, leader);
}

fn signal(p: &ServerProc, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status();
}

/// A paused leader (SIGSTOP, a partition stand-in) is replaced; when it wakes up it steps
/// down, and no committed message is overwritten anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_steps_down_when_it_wakes() {
    let (_core, url) = core_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cl = Cluster::start(url.clone(), dir.path().to_path_buf()).await;
    let leader = cl.leader(Duration::from_secs(15)).await.expect("a leader");
    let c = connect(&url, "pause").await;
    let mut acked = Vec::new();
    for i in 0..30 {
        let d = format!("one-{i}").into_bytes();
        assert_eq!(c.publish("p", &d).await.error, "");
        acked.push(d);
    }
    let paused = Instant::now();
    signal(&cl.nodes[leader], "-STOP");
    let took = publish_until_acked(&c, "p", b"two-0", Duration::from_secs(10)).await;
    eprintln!(
        "paused leader replaced: first PubAck {:?} after SIGSTOP ({took:?} publishing)",
        paused.elapsed()
    );
    assert!(paused.elapsed() < Duration::from_secs(6));
    acked.push(b"two-0".to_vec());
    for i in 1..20 {
        let d = format!("two-{i}").into_bytes();
        assert_eq!(c.publish("p", &d).await.error, "");
        acked.push(d);
    }
    signal(&cl.nodes[leader], "-CONT");
    // It hears the new term and follows.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cl.role(leader).as_deref() != Some("Follower") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cl.role(leader).as_deref(), Some("Follower"));
    for i in 0..10 {
        let d = format!("three-{i}").into_bytes();
        assert_eq!(c.publish("p", &d).await.error, "");
        acked.push(d);
    }

    // A follower paused for longer than an election timeout comes back without deposing
    // the leader (it campaigns only after a pre-vote, which the others refuse): the term
    // stays and publishing never fails.
    let new_leader = cl.leader(Duration::from_secs(5)).await.expect("a leader");
    let term = cl.term(new_leader).expect("the leader reports its term");
    let follower = NODES
        .into_iter()
        .find(|id| *id != new_leader && *id != leader)
        .unwrap();
    signal(&cl.nodes[follower], "-STOP");
    let back = Instant::now() + Duration::from_secs(3);
    let mut i = 0;
    while Instant::now() < back {
        let d = format!("four-{i}").into_bytes();
        assert_eq!(c.publish("p", &d).await.error, "");
        acked.push(d);
        i += 1;
    }
    signal(&cl.nodes[follower], "-CONT");
    for i in 0..20 {
        let d = format!("five-{i}").into_bytes();
        assert_eq!(c.publish("p", &d).await.error, "");
        acked.push(d);
    }
    cl.settled().await;
    assert_eq!(cl.leader(Duration::from_secs(5)).await, Some(new_leader));
    for id in NODES {
        assert_eq!(
            cl.term(id),
            Some(term),
            "node {id}: a paused follower moved the term"
        );
    }
    drop(c);
    cl.stop_all().await;
    let reference = stored(dir.path(), "a", "p");
    let mut datas: Vec<Vec<u8>> = reference.iter().map(|(_, d)| d.clone()).collect();
    // A "two-0" attempt that timed out during the election may have been stored once the
    // new leader served it, before the attempt that was acknowledged (at-least-once).
    datas.dedup();
    assert_eq!(datas, acked);
    for id in ["b", "c"] {
        assert_eq!(stored(dir.path(), id, "p"), reference, "node {id}");
    }
}

/// A node added to a running cluster (`node.add`) catches up from a snapshot of the leader
/// (the log was compacted) plus the messages it fetches; a removed node leaves the
/// membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_added_and_removed_and_a_new_node_catches_up_from_a_snapshot() {
    let (_core, url) = core_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let extra = |id: &str, peers: &str| -> Vec<String> {
        let mut v: Vec<String> = [
            "-ns",
            &url,
            "--clustered",
            "--cluster_node_id",
            id,
            "--cluster_log_path",
            &format!("{d}/raft-{id}"),
            "-st",
            "FILE",
            "--dir",
            &format!("{d}/store-{id}"),
            "-m",
            "-1",
            "--cluster_allow_add_remove_node",
            "--cluster_snapshot_threshold",
            "20",
            "--cluster_trailing_logs",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !peers.is_empty() {
            v.extend(["--cluster_peers".to_string(), peers.to_string()]);
        }
        v
    };
    let mut cl = Cluster {
        url: url.clone(),
        dir: dir.path().to_path_buf(),
        nodes: BTreeMap::new(),
        extra: Vec::new(),
        routes: None,
    };
    for id in NODES {
        let a = extra(id, "a,b,c");
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        cl.nodes.insert(id, ServerProc::spawn(&a, "Cluster node"));
    }
    cl.leader(Duration::from_secs(15)).await.expect("a leader");
    let c = connect(&url, "grow").await;
    let mut acked = Vec::new();
    // One entry per publish: far more than the snapshot threshold.
    for i in 0..120 {
        let m = format!("m{i}").into_bytes();
        assert_eq!(c.publish("g", &m).await.error, "");
        acked.push(m);
    }
    let mut req = c.sub_req("g", "");
    req.durable_name = "keep".into();
    let mut s = c.subscribe(req).await.unwrap();
    for seq in 1..=120u64 {
        assert_eq!(s.next().await.sequence, seq);
        if seq <= 100 {
            c.ack(&s, seq).await;
        }
    }
    // A new node with no state waits to be added.
    let a = extra("d", "");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    cl.nodes
        .insert("d", ServerProc::spawn(&a, "waiting to be added"));
    let nc = nats(&url).await;
    // Membership changes wait for a quorum: generous bounds for a loaded machine.
    let request = |subject: &'static str, payload: Vec<u8>| {
        let nc = nc.clone();
        async move {
            nc.send_request(
                subject,
                rnats_client::Request::new()
                    .payload(bytes::Bytes::from(payload))
                    .timeout(Duration::from_secs(15)),
            )
            .await
            .unwrap_or_else(|e| panic!("request on {subject}: {e}"))
        }
    };
    let r = request("_STAN.raft.test-cluster.node.add", b"d".to_vec()).await;
    assert_eq!(&r.payload[..], b"+OK");
    for i in 120..130 {
        let m = format!("m{i}").into_bytes();
        assert_eq!(c.publish("g", &m).await.error, "");
        acked.push(m);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while cl.role("d").as_deref() != Some("Follower") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cl.role("d").as_deref(), Some("Follower"));
    assert!(
        cl.nodes["d"]
            .wait_line(
                "Restoring the snapshot of the leader",
                Duration::from_secs(10)
            )
            .is_some(),
        "the new node did not install a snapshot"
    );
    let r = request("_STAN.raft.test-cluster.node.remove", b"c".to_vec()).await;
    assert_eq!(&r.payload[..], b"+OK");
    // No longer a member: it gets no more entries.
    if let Some(p) = cl.nodes.remove("c") {
        p.terminate();
    }
    let r = request("_STAN.raft.test-cluster.node.add", Vec::new()).await;
    assert!(String::from_utf8_lossy(&r.payload).starts_with("-ERR adding node"));
    assert_eq!(c.publish("g", b"end").await.error, "");
    acked.push(b"end".to_vec());
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(c);
    cl.stop_all().await;
    let leader_store = stored(dir.path(), "a", "g");
    let datas: Vec<Vec<u8>> = leader_store.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(datas, acked);
    assert_eq!(stored(dir.path(), "d", "g"), leader_store, "the added node");
    // The durable's position and pending messages reached the new node too.
    let fs = FileStore::open(
        dir.path().join("store-d"),
        FileStoreOptions::default(),
        StoreLimits::default(),
    )
    .unwrap();
    let subs = fs.lookup_channel("g").unwrap().subs().subscriptions();
    let dur = subs
        .iter()
        .find(|s| s.state.durable_name == "keep")
        .unwrap();
    // (Still online: it received the 11 later messages too, without acking them.)
    assert_eq!(dur.state.last_sent, 131);
    assert_eq!(dur.pending, (101..=131).collect());
}

/// Every node restarted in turn (SIGTERM, start again) while a client publishes: nothing
/// acknowledged is lost, every store ends identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_loses_nothing() {
    let (_core, url) = core_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cl = Cluster::start(url.clone(), dir.path().to_path_buf()).await;
    cl.leader(Duration::from_secs(15)).await.expect("a leader");
    let c = std::sync::Arc::new(connect(&url, "roll").await);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let pc = c.clone();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let progress = |n: usize| {
        let count = count.clone();
        async move {
            let want = count.load(std::sync::atomic::Ordering::Relaxed) + n;
            let deadline = Instant::now() + Duration::from_secs(20);
            while count.load(std::sync::atomic::Ordering::Relaxed) < want {
                assert!(Instant::now() < deadline, "the publisher made no progress");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let publisher = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0u64;
        while !*stop_rx.borrow() && i < 100_000 {
            let d = format!("r{i}").into_bytes();
            i += 1;
            if let Some(a) = pc.try_publish("roll", &d, Duration::from_millis(500)).await
                && a.error.is_empty()
            {
                acked.push(d);
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if stop_rx.has_changed().unwrap_or(true) {
                let _ = stop_rx.borrow_and_update();
            }
        }
        acked
    });
    for id in NODES {
        progress(30).await;
        let p = cl.nodes.remove(id).unwrap();
        p.terminate();
        let mut p = p;
        for _ in 0..250 {
            if p.child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cl.start_node(id);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !matches!(cl.role(id).as_deref(), Some("Follower" | "Leader"))
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            cl.leader(Duration::from_secs(10)).await.is_some(),
            "after {id}"
        );
    }
    progress(30).await;
    let _ = stop_tx.send(true);
    let acked = publisher.await.unwrap();
    assert!(acked.len() > 50, "only {} acked", acked.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(c);
    cl.stop_all().await;
    let reference = stored(dir.path(), "a", "roll");
    let have: std::collections::HashSet<&Vec<u8>> = reference.iter().map(|(_, d)| d).collect();
    let missing: Vec<String> = acked
        .iter()
        .filter(|d| !have.contains(d))
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect();
    assert!(missing.is_empty(), "acknowledged but missing: {missing:?}");
    for id in ["b", "c"] {
        assert_eq!(stored(dir.path(), id, "roll"), reference, "node {id}");
    }
}
