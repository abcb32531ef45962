//! Whole clusters on the in-memory transport: elections, replication, failover, partitions,
//! compaction, restarts and catch-up. Every wait is bounded.

use std::time::{Duration, Instant};

use rnats_streaming_raft::{ProposeError, RestoreKind, Role, node_id_of};

use crate::harness::{Cluster, fast};

const LONG: Duration = Duration::from_secs(20);

fn assert_same_everywhere(c: &Cluster, expect: &[String]) {
    for (name, cmds) in c.applied() {
        assert_eq!(
            cmds, expect,
            "node {name} applied a different sequence than the acknowledged one"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_and_replicate_in_order() {
    let c = Cluster::start(3, fast).await;
    let leader = c.wait_leader(LONG, &[]).await;
    let follower = c.names.iter().find(|n| **n != leader).unwrap().clone();

    // A follower refuses and names the leader.
    match c.propose(&follower, "nope").await {
        Err(ProposeError::NotLeader { leader: Some(l) }) => assert_eq!(l, leader),
        other => panic!("a follower accepted a proposal: {other:?}"),
    }

    let mut acked = Vec::new();
    let mut last = 0;
    for i in 0..200 {
        let cmd = format!("cmd-{i}");
        let idx = c.propose(&leader, &cmd).await.expect("leader commits");
        assert!(idx > last, "indexes grow: {idx} after {last}");
        last = idx;
        acked.push(cmd);
    }
    // Concurrent proposals: each is acknowledged once, in some order that all nodes share.
    let rep = &c.node(&leader).rep;
    let results = futures::future::join_all(
        (200..300).map(|i| rep.propose(bytes::Bytes::from(format!("cmd-{i}")))),
    )
    .await;
    let mut by_index: Vec<(u64, String)> = results
        .into_iter()
        .enumerate()
        .map(|(k, r)| (r.expect("committed").0, format!("cmd-{}", 200 + k)))
        .collect();
    by_index.sort();
    last = by_index.last().unwrap().0;
    acked.extend(by_index.into_iter().map(|(_, c)| c));

    c.wait_all_applied(last, LONG).await;
    assert_same_everywhere(&c, &acked);
    let st = c.node(&leader).rep.status();
    assert_eq!(st.role, Role::Leader);
    assert_eq!(st.peers.len(), 2, "{st:?}");
    c.shutdown().await;
}

/// A new cluster forms around its first peer by name, and the others' delayed bootstrap
/// does not depose it: the leader and its term are the same well after the others would
/// have bootstrapped (before, each peer initialized at once and a later one, campaigning in
/// the same term with a larger id, could take the leadership from the first leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_forms_around_its_first_peer_and_keeps_it() {
    let c = Cluster::start(3, fast).await;
    let leader = c.wait_leader(LONG, &[]).await;
    assert_eq!(leader, "n0");
    let term = c.node("n0").rep.status().term;
    let idx = c.propose("n0", "first").await.expect("commits");
    // Past the others' delayed bootstrap (one heartbeat timeout, 500 ms here).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let st = c.node("n0").rep.status();
    assert_eq!((st.role, st.term), (Role::Leader, term), "{st:?}");
    let idx2 = c.propose("n0", "second").await.expect("commits");
    assert!(idx2 > idx);
    c.wait_all_applied(idx2, LONG).await;
    c.shutdown().await;
}

/// Without its first peer, a new cluster still forms: the others bootstrap themselves once
/// no leader reached them within the heartbeat timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_forms_without_its_first_peer() {
    let c = Cluster::start_some(3, &[1, 2], fast).await;
    let leader = c.wait_leader(LONG, &[]).await;
    assert_ne!(leader, "n0");
    let idx = c
        .propose(&leader, "cmd")
        .await
        .expect("a quorum of two commits");
    c.wait_all_applied(idx, LONG).await;
    c.shutdown().await;
}

/// With the reference's default timers: a killed leader is replaced within 3 s, nothing
/// acknowledged is lost, and the killed node comes back from its disk and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_replaced_within_bound_with_default_timers() {
    let mut c = Cluster::start(3, |o| o).await;
    let leader = c.wait_leader(LONG, &[]).await;
    let mut acked = Vec::new();
    for i in 0..50 {
        let cmd = format!("a-{i}");
        c.propose(&leader, &cmd).await.unwrap();
        acked.push(cmd);
    }
    let t0 = Instant::now();
    c.kill(&leader).await;
    let new_leader = c.wait_leader(Duration::from_secs(10), &[]).await;
    let took = t0.elapsed();
    println!("failover with default timers took {took:?}");
    assert_ne!(new_leader, leader);
    assert!(
        took < Duration::from_secs(3),
        "new leader after {took:?} (bound: 3 s)"
    );
    let mut last = 0;
    for i in 0..50 {
        let cmd = format!("b-{i}");
        last = c.propose(&new_leader, &cmd).await.unwrap();
        acked.push(cmd);
    }
    c.wait_all_applied(last, LONG).await;
    assert_same_everywhere(&c, &acked);

    // The old leader restarts from its files and catches up by itself.
    c.restart(&leader).await;
    c.wait_applied(&leader, last, LONG).await;
    assert_same_everywhere(&c, &acked);
    assert_eq!(c.wait_leader(LONG, &[]).await, new_leader);
    c.shutdown().await;
}

/// An isolated leader stops serving within its lease, fails its in-flight proposal instead
/// of hanging, and after the partition heals follows the new leader without overwriting
/// anything committed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_steps_down_and_never_overwrites() {
    let c = Cluster::start(3, fast).await;
    let old = c.wait_leader(LONG, &[]).await;
    let others: Vec<String> = c.names.iter().filter(|n| **n != old).cloned().collect();
    let mut acked = Vec::new();
    for i in 0..20 {
        let cmd = format!("a-{i}");
        c.propose(&old, &cmd).await.unwrap();
        acked.push(cmd);
    }

    let other_refs: Vec<&str> = others.iter().map(String::as_str).collect();
    c.net.isolate(&old, &other_refs);
    let t0 = Instant::now();
    // In flight on the isolated leader: must fail (never acknowledged), not hang.
    let stale = tokio::time::timeout(Duration::from_secs(10), c.propose(&old, "stale"))
        .await
        .expect("the isolated leader's proposal returns");
    assert!(
        matches!(
            stale,
            Err(ProposeError::LeadershipLost | ProposeError::NotLeader { .. })
        ),
        "{stale:?}"
    );
    assert!(!c.node(&old).rep.is_leader(), "lease expired");
    println!("isolated leader gave up after {:?}", t0.elapsed());

    let new_leader = c.wait_leader(LONG, &[&old]).await;
    assert_ne!(new_leader, old);
    let mut last = 0;
    for i in 0..20 {
        let cmd = format!("b-{i}");
        last = c.propose(&new_leader, &cmd).await.unwrap();
        acked.push(cmd);
    }

    c.net.heal();
    assert_eq!(c.wait_leader(LONG, &[]).await, new_leader);
    c.wait_all_applied(last, LONG).await;
    // The stale command was never acknowledged and was not committed by the new term.
    assert_same_everywhere(&c, &acked);
    c.shutdown().await;
}

/// Snapshots keep the log bounded; a follower restarted after the leader compacted past its
/// log gets a snapshot, and so does a brand-new node added at run time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_bounds_the_log_and_lagging_nodes_get_snapshots() {
    let tune = |o| {
        let mut o = fast(o);
        o.snapshot_threshold = 50;
        o.trailing_logs = 20;
        o.segment_bytes = 2048;
        o.log_cache_size = 16;
        o
    };
    let mut c = Cluster::start(3, tune).await;
    let leader = c.wait_leader(LONG, &[]).await;
    let lagging = c.names.iter().find(|n| **n != leader).unwrap().clone();
    let mut acked = Vec::new();
    for i in 0..100 {
        let cmd = format!("a-{i}");
        c.propose(&leader, &cmd).await.unwrap();
        acked.push(cmd);
    }
    c.kill(&lagging).await;
    let mut last = 0;
    for i in 0..600 {
        let cmd = format!("b-{i:04}-{}", "x".repeat(40));
        last = c.propose(&leader, &cmd).await.unwrap();
        acked.push(cmd);
    }
    c.wait_all_applied(last, LONG).await;
    // Snapshots are taken in the background; wait (bounded) until the leader's covers most.
    let deadline = Instant::now() + LONG;
    loop {
        let s = c.node(&leader).rep.storage_stats();
        if s.snapshot_index.is_some_and(|i| i + 60 >= last) && s.purged.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no recent snapshot: {s:?}");
        c.changed(Duration::from_millis(50)).await;
    }
    for (name, node) in &c.nodes {
        let s = node.rep.storage_stats();
        println!("{name}: {s:?}");
        // threshold + trailing, twice over: each node snapshots on its own and the last
        // snapshot (and its purge) may still be in progress; 700 entries were written.
        assert!(
            s.log_entries <= 2 * (50 + 20),
            "{name} log unbounded: {s:?}"
        );
        assert!(
            s.snapshot_files <= 2,
            "{name} keeps too many snapshots: {s:?}"
        );
        assert!(s.log_bytes < 64 * 1024, "{name} log bytes unbounded: {s:?}");
    }

    // The lagging node's log ends before the leader's purge point: it needs a snapshot.
    c.restart(&lagging).await;
    c.wait_applied(&lagging, last, LONG).await;
    assert!(
        c.node(&lagging)
            .machine
            .restores()
            .iter()
            .any(|(_, k)| *k == RestoreKind::FromLeader),
        "lagging node caught up through a snapshot: {:?}",
        c.node(&lagging).machine.restores()
    );
    assert_same_everywhere(&c, &acked);

    // A brand-new node joins (no peers, no bootstrap) and is added by the leader.
    let mut c = c;
    c.start_node(
        "fresh",
        rnats_streaming_raft::testing::MemMachine::new(),
        false,
    )
    .await;
    tokio::time::timeout(LONG, c.node(&leader).rep.add_node("fresh"))
        .await
        .expect("add_node returns")
        .expect("node added");
    let idx = c.propose(&leader, "after-join").await.unwrap();
    acked.push("after-join".into());
    c.wait_all_applied(idx, LONG).await;
    assert!(
        c.node("fresh")
            .machine
            .restores()
            .iter()
            .any(|(_, k)| *k == RestoreKind::FromLeader),
        "new node started from a snapshot"
    );
    assert_same_everywhere(&c, &acked);
    assert_eq!(c.node(&leader).rep.status().peers.len(), 3);
    c.shutdown().await;
}

/// Every node stops and starts again from its files: same state, new proposals go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restarts_from_disk() {
    let mut c = Cluster::start(3, |o| {
        let mut o = fast(o);
        o.snapshot_threshold = 40;
        o.trailing_logs = 10;
        o
    })
    .await;
    let leader = c.wait_leader(LONG, &[]).await;
    let mut acked = Vec::new();
    let mut last = 0;
    for i in 0..130 {
        let cmd = format!("a-{i}");
        last = c.propose(&leader, &cmd).await.unwrap();
        acked.push(cmd);
    }
    c.wait_all_applied(last, LONG).await;
    for n in c.names.clone() {
        c.kill(&n).await;
    }
    for n in c.names.clone() {
        c.restart(&n).await;
    }
    let leader = c.wait_leader(LONG, &[]).await;
    let next = c.propose(&leader, "after-restart").await.unwrap();
    assert!(next > last, "index {next} continues after {last}");
    acked.push("after-restart".into());
    c.wait_all_applied(next, LONG).await;
    // Replayed entries after the snapshot were skipped by the machine, not doubled.
    assert_same_everywhere(&c, &acked);
    c.shutdown().await;
}

/// Five nodes survive the loss of the leader and then of one more node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_two_failures() {
    let mut c = Cluster::start(5, fast).await;
    let l1 = c.wait_leader(LONG, &[]).await;
    let mut acked = Vec::new();
    for i in 0..30 {
        let cmd = format!("a-{i}");
        c.propose(&l1, &cmd).await.unwrap();
        acked.push(cmd);
    }
    c.kill(&l1).await;
    let l2 = c.wait_leader(LONG, &[]).await;
    let victim = c.nodes.keys().find(|n| **n != l2).unwrap().clone();
    c.kill(&victim).await;
    let mut last = 0;
    for i in 0..30 {
        let cmd = format!("b-{i}");
        last = c.propose(&l2, &cmd).await.unwrap();
        acked.push(cmd);
    }
    c.wait_all_applied(last, LONG).await;
    assert_same_everywhere(&c, &acked);
    assert_eq!(c.nodes.len(), 3);
    c.shutdown().await;
}

/// A node that died mid-write and whose newest snapshot file is damaged still starts (no
/// refusal over leftovers, nats-streaming-server#1008/#1010/#1283) and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_over_torn_log_and_damaged_snapshot() {
    let mut c = Cluster::start(3, |o| {
        let mut o = fast(o);
        o.snapshot_threshold = 30;
        o.trailing_logs = 40;
        o
    })
    .await;
    let leader = c.wait_leader(LONG, &[]).await;
    let victim = c.names.iter().find(|n| **n != leader).unwrap().clone();
    let mut acked = Vec::new();
    let mut last = 0;
    for i in 0..100 {
        let cmd = format!("a-{i}");
        last = c.propose(&leader, &cmd).await.unwrap();
        acked.push(cmd);
    }
    c.wait_all_applied(last, LONG).await;
    c.kill(&victim).await;

    let newest = |dir: std::path::PathBuf, ext: &str| {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|d| d.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        files.sort();
        files.pop().expect("a file")
    };
    // Torn tail: the last record loses its end.
    let seg = newest(c.path(&victim).join("log"), "seg");
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    // Damaged newest snapshot: one flipped byte.
    let snap = newest(c.path(&victim).join("snapshots"), "snap");
    let damaged_index: u64 = snap.file_name().unwrap().to_str().unwrap()[..20]
        .parse()
        .unwrap();
    let mut b = std::fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x5a;
    std::fs::write(&snap, b).unwrap();

    for i in 0..20 {
        let cmd = format!("b-{i}");
        last = c.propose(&leader, &cmd).await.unwrap();
        acked.push(cmd);
    }
    c.restart(&victim).await;
    let stats = c.node(&victim).rep.storage_stats();
    assert!(stats.repaired_bytes > 0, "torn tail cut: {stats:?}");
    let restores = c.node(&victim).machine.restores();
    assert!(
        matches!(restores.first(), Some((i, RestoreKind::Startup)) if *i < damaged_index),
        "started from the older snapshot, not the damaged {damaged_index}: {restores:?}"
    );
    c.wait_applied(&victim, last, LONG).await;
    assert_same_everywhere(&c, &acked);
    c.shutdown().await;
}

/// The follower that missed the last entries loses its leader first and campaigns first,
/// with the shorter log: the other follower refuses it, and must still take over within the
/// 3 s bound (openraft alone lets the two campaign in the same term, where the larger node id
/// wins the tie, and the follower that is ahead waits one more election timeout: 3.2–3.5 s
/// with the defaults).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_with_a_shorter_log_does_not_delay_the_election() {
    let mut c = Cluster::start(3, |o| o).await;
    let leader = c.wait_leader(LONG, &[]).await;
    let mut followers: Vec<String> = c.names.iter().filter(|n| **n != leader).cloned().collect();
    // Votes of one term are ordered by node id: the case openraft alone gets wrong is the
    // one where the follower that is ahead has the smaller id (it loses the tie).
    followers.sort_by_key(|n| node_id_of(n));
    let (ahead, behind) = (followers[0].clone(), followers[1].clone());
    let mut acked = Vec::new();
    for i in 0..10 {
        let cmd = format!("a-{i}");
        c.propose(&leader, &cmd).await.unwrap();
        acked.push(cmd);
    }
    // `behind` stops hearing from the leader 500 ms before the kill: more than openraft's
    // 300 ms spread of election timeouts, so it campaigns first.
    c.net.cut(&leader, &behind);
    let cut_at = Instant::now();
    for i in 0..10 {
        let cmd = format!("b-{i}");
        c.propose(&leader, &cmd).await.unwrap();
        acked.push(cmd);
    }
    tokio::time::sleep_until((cut_at + Duration::from_millis(500)).into()).await;
    let t0 = Instant::now();
    c.kill(&leader).await;
    c.net.heal();
    let new_leader = c.wait_leader(Duration::from_secs(10), &[]).await;
    let took = t0.elapsed();
    println!("failover past a shorter-log candidate took {took:?}");
    assert_eq!(
        new_leader, ahead,
        "only the follower with every entry can win"
    );
    assert!(
        took < Duration::from_secs(3),
        "new leader after {took:?} (bound: 3 s)"
    );
    let last = c.propose(&new_leader, "c").await.unwrap();
    acked.push("c".into());
    c.wait_all_applied(last, LONG).await;
    assert_same_everywhere(&c, &acked);
    c.shutdown().await;
}

/// A follower cut off for several election timeouts (a paused process, a partition) comes
/// back without deposing the leader: it campaigns only after a pre-vote, which the leader
/// and the follower still in contact refuse, so no term moves and publishing never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_follower_does_not_depose_the_leader() {
    let c = Cluster::start(3, fast).await;
    let leader = c.wait_leader(LONG, &[]).await;
    let term = c.node(&leader).rep.status().term;
    let others: Vec<&str> = c
        .names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != leader)
        .collect();
    let away = others[0];
    let mut acked = Vec::new();
    c.net.isolate(away, &others[1..]);
    c.net.isolate(away, &[leader.as_str()]);
    // Three times the 525–600 ms after which it would campaign.
    let back = Instant::now() + Duration::from_millis(1800);
    let mut i = 0;
    while Instant::now() < back {
        let cmd = format!("a-{i}");
        c.propose(&leader, &cmd).await.unwrap();
        acked.push(cmd);
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.net.heal();
    for i in 0..20 {
        let cmd = format!("b-{i}");
        c.propose(&leader, &cmd).await.unwrap();
        acked.push(cmd);
    }
    let last = c.propose(&leader, "c").await.unwrap();
    acked.push("c".into());
    c.wait_all_applied(last, LONG).await;
    assert_eq!(c.wait_leader(LONG, &[]).await, leader);
    for name in &c.names {
        assert_eq!(
            c.node(name).rep.status().term,
            term,
            "node {name}: the term moved while a follower was away"
        );
    }
    assert_same_everywhere(&c, &acked);
    c.shutdown().await;
}
