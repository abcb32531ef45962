//! Three nodes replicating over core NATS through an embedded rnats-server, each on two
//! dedicated connections (control and data lanes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rnats_streaming_raft::testing::MemMachine;
use rnats_streaming_raft::{ClusterOptions, NatsTransport, Replicator, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_nats() {
    let server = rnats_server::start(rnats_server::Options {
        host: "127.0.0.1".into(),
        port: 0,
        ..Default::default()
    })
    .await
    .expect("embedded server starts");
    let url = format!("nats://{}", server.client_addr());
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c"];
    let mut nodes = Vec::new();
    for name in names {
        let connect = |lane: &str| {
            rnats_client::ConnectOptions::new()
                .name(format!("_NSS-test-raft-{lane}-{name}"))
                .connect(url.clone())
        };
        let transport = Arc::new(NatsTransport::new(
            connect("ctl").await.unwrap(),
            connect("data").await.unwrap(),
            "test",
        ));
        let mut o = ClusterOptions::new("test", name, dir.path().join(name));
        o.peers = names.iter().map(|s| s.to_string()).collect();
        o.heartbeat_timeout = Duration::from_millis(500);
        o.election_timeout = Duration::from_millis(500);
        o.lease_timeout = Duration::from_millis(400);
        let machine = MemMachine::new();
        let rep = Replicator::start(o, machine.clone(), transport.clone())
            .await
            .expect("node starts");
        let serving = transport.serve(name, rep.rpc_handler()).await.unwrap();
        nodes.push((rep, machine, serving));
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        if let Some((rep, _, _)) = nodes.iter().find(|(r, _, _)| r.status().role == Role::Leader)
        {
            break rep;
        }
        assert!(Instant::now() < deadline, "no leader over NATS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut last = 0;
    for i in 0..100 {
        // Some commands larger than a heartbeat, to use the data lane for real.
        let cmd = Bytes::from(format!("m-{i}-{}", "y".repeat(i * 10)));
        last = leader.propose(cmd).await.expect("committed over NATS").0;
    }
    for (rep, machine, _) in &nodes {
        rep.raft()
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(Some(last), "nats catch-up")
            .await
            .expect("applied everywhere");
        assert_eq!(machine.commands().len(), 100);
    }
    let first = nodes[0].1.commands();
    assert!(nodes.iter().all(|(_, m, _)| m.commands() == first));
    for (rep, _, serving) in nodes {
        rep.shutdown().await;
        serving.stop();
    }
    server.shutdown(Duration::from_secs(1)).await;
}
