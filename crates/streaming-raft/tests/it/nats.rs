//! Three nodes replicating over core NATS through an embedded rnats-server, each on two
//! dedicated connections (control and data lanes), with the reference's default timers:
//! replication, and no leader change while proposers push as fast as they can
//! (nats-streaming-server#629 at small scale).

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
        let machine = MemMachine::new();
        let rep = Replicator::start(o, machine.clone(), transport.clone())
            .await
            .expect("node starts");
        let serving = transport.serve(name, rep.rpc_handler()).await.unwrap();
        nodes.push((rep, machine, serving));
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        if let Some((rep, _, _)) = nodes
            .iter()
            .find(|(r, _, _)| r.status().role == Role::Leader)
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
        assert!(machine.commands().len() >= 100);
    }
    // Sustained load: 4 proposers with 1 KiB commands for 2 s; leadership must not move.
    let before = leader.status();
    let load_until = Instant::now() + Duration::from_secs(2);
    let proposers = (0..4).map(|p| async move {
        let mut n = 0u64;
        let mut last = 0;
        while Instant::now() < load_until {
            let cmd = Bytes::from(format!("load-{p}-{n}-{}", "z".repeat(1000)));
            last = leader.propose(cmd).await.expect("committed under load").0;
            n += 1;
        }
        (n, last)
    });
    let done = futures::future::join_all(proposers).await;
    let total: u64 = done.iter().map(|(n, _)| n).sum();
    last = done.iter().map(|(_, l)| *l).max().unwrap_or(last);
    let after = leader.status();
    println!(
        "over NATS: {total} proposals in 2 s under load, term {} -> {}",
        before.term, after.term
    );
    assert_eq!(after.role, Role::Leader, "leader kept its role under load");
    assert_eq!(before.term, after.term, "no election under load");
    for (rep, _, _) in &nodes {
        rep.raft()
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(Some(last), "nats catch-up after load")
            .await
            .expect("applied everywhere");
        assert_eq!(rep.status().term, before.term, "followers saw no election");
    }
    let first = nodes[0].1.commands();
    assert_eq!(first.len() as u64, 100 + total);
    assert!(nodes.iter().all(|(_, m, _)| m.commands() == first));
    for (rep, _, serving) in nodes {
        rep.shutdown().await;
        serving.stop();
    }
    server.shutdown(Duration::from_secs(1)).await;
}
