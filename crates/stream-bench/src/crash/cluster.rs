//! The clustered mode: three RAFT nodes (`--clustered`, each with its own FILE store),
//! attached to a core NATS server (`-ns`), or with `--embedded` each embedding its own NATS
//! server routed with the core's (the RAFT RPCs then use local connections); the clients
//! always use the core server. Each round, under load, one fault at a random moment:
//! `kill -9` of the leader or of a follower, or a pause (SIGSTOP, then SIGCONT after up to
//! 3 s: a partition stand-in) of the leader or of a follower. The time from the fault to
//! the first PubAck is measured (for leader faults: the election plus the new leader's
//! start). Killed nodes are restarted; after every round the channels are read back through
//! whoever leads and checked against everything acknowledged. At the end every node is
//! stopped and the three stores are read directly: they must be identical.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rand::Rng;
use rand::rngs::StdRng;
use rnats_streaming::store::file::{FileStore, FileStoreOptions};
use rnats_streaming::store::{Store, StoreLimits};

use super::check::check_channels;
use super::durable::resume_durable;
use super::ha::Prober;
use super::round;
use super::server::{
    Server, kill9, monitor_get, signal, start_core, start_core_routed, start_embedded_member,
    start_member, term,
};
use super::{Outcome, Setup};
use crate::CrashArgs;

const NODES: [&str; 3] = ["a", "b", "c"];

struct Cluster {
    core: String,
    nodes: Vec<Option<Server>>,
    starts: usize,
    /// `--embedded`: the core's route port.
    routes: Option<u16>,
}

impl Cluster {
    async fn start_node(&mut self, a: &CrashArgs, setup: &Setup, i: usize) -> Result<()> {
        let id = NODES[i];
        self.starts += 1;
        let args: Vec<String> = [
            "--clustered",
            "--cluster_node_id",
            id,
            "--cluster_peers",
            "a,b,c",
            "--cluster_log_path",
            &setup.work.join(format!("raft-{id}")).display().to_string(),
            "-st",
            "FILE",
            "--dir",
            &setup.work.join(format!("store-{id}")).display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let log = setup.work.join(format!("node-{id}.{}.log", self.starts));
        let s = match &self.routes {
            None => start_member(a, &self.core, &args, log, "Cluster node", setup.wait).await,
            Some(route) => {
                start_embedded_member(
                    a,
                    (&self.core, *route),
                    &args,
                    log,
                    "Cluster node",
                    setup.wait,
                )
                .await
            }
        }
        .with_context(|| format!("node {id}"))?;
        self.nodes[i] = Some(s);
        Ok(())
    }

    async fn role(&self, i: usize) -> Option<String> {
        let port = self.nodes[i].as_ref()?.monitor?;
        let body = monitor_get(port, "/streaming/serverz").await?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["role"].as_str().map(str::to_string)
    }

    async fn term(&self, i: usize) -> Option<u64> {
        let port = self.nodes[i].as_ref()?.monitor?;
        let body = monitor_get(port, "/streaming/serverz").await?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["raft_term"].as_u64()
    }

    async fn applied(&self, i: usize) -> Option<u64> {
        let port = self.nodes[i].as_ref()?.monitor?;
        let body = monitor_get(port, "/streaming/serverz").await?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["raft_last_applied"].as_u64()
    }

    /// The node that reports itself leader (waiting at most `wait`).
    async fn leader(&self, wait: Duration) -> Result<usize> {
        let deadline = Instant::now() + wait;
        loop {
            let mut leaders = Vec::new();
            for i in 0..NODES.len() {
                if self.role(i).await.as_deref() == Some("Leader") {
                    leaders.push(i);
                }
            }
            if leaders.len() == 1 {
                return Ok(leaders[0]);
            }
            if Instant::now() > deadline {
                bail!("no single leader within {wait:?} (leaders: {leaders:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What a round does to the cluster.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillLeader,
    KillFollower,
    PauseLeader,
    PauseFollower,
}

pub(super) async fn run(
    a: &CrashArgs,
    setup: &Setup,
    rng: &mut StdRng,
    out: &mut Outcome,
) -> Result<()> {
    let Outcome {
        ledger,
        findings: f,
        durable: dur,
    } = out;
    if setup.sql.is_some() {
        bail!("the cluster mode runs on the FILE store (each node has its own)");
    }
    let wait = setup.wait;
    let (mut core, routes) = if a.embedded {
        let (core, route) = start_core_routed(a, &setup.work, wait).await?;
        (core, Some(route))
    } else {
        (start_core(a, &setup.work, wait).await?, None)
    };
    let addr = core.addr.clone();
    let mut cl = Cluster {
        core: addr.clone(),
        nodes: vec![None, None, None],
        starts: 0,
        routes,
    };
    for i in 0..NODES.len() {
        cl.start_node(a, setup, i).await?;
    }
    for round in 1..=setup.rounds {
        let leader = match cl.leader(wait).await {
            Ok(l) => l,
            Err(e) => {
                f.fail(format!("round {round}: {e:#}"));
                break;
            }
        };
        f.starts += 1;
        let lasts = match check_channels(a, &addr, round, ledger, f, wait).await {
            Ok(l) => l,
            Err(e) => {
                f.fail(format!("round {round}: check failed to run: {e:#}"));
                break;
            }
        };
        let durable = match resume_durable(a, &addr, round, dur, lasts[0], f, wait).await {
            Ok(d) => d,
            Err(e) => {
                f.fail(format!("round {round}: durable resume: {e:#}"));
                break;
            }
        };
        let term = cl.term(leader).await;
        let mut prober = Prober::connect(a, &addr, wait).await?;
        let load = round::start(a, &addr, round, rng, durable, dur, wait);
        let run_for = Duration::from_millis(rng.random_range(setup.run_ms.0..setup.run_ms.1));
        tokio::time::sleep(run_for).await;
        let fault = match rng.random_range(0..4) {
            0 => Fault::KillLeader,
            1 => Fault::KillFollower,
            2 => Fault::PauseLeader,
            _ => Fault::PauseFollower,
        };
        let target = match fault {
            Fault::KillLeader | Fault::PauseLeader => leader,
            _ => (leader + 1 + rng.random_range(0..2)) % NODES.len(),
        };
        let t0 = Instant::now();
        let paused = matches!(fault, Fault::PauseLeader | Fault::PauseFollower);
        if let Some(s) = cl.nodes[target].as_mut() {
            if paused {
                signal(s, "-STOP");
            } else {
                kill9(s)?;
                f.kills += 1;
            }
        }
        let took = prober.first_ack_since(t0, wait).await;
        match (took, fault) {
            (Some(d), Fault::KillLeader | Fault::PauseLeader) => f.failovers.push(d),
            (Some(d), _) => f.follower_faults.push(d),
            (None, _) => f.fail(format!(
                "round {round}: no PubAck within {wait:?} after {fault:?} of node {}",
                NODES[target]
            )),
        }
        if paused {
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..3000))).await;
            if let Some(s) = cl.nodes[target].as_ref() {
                signal(s, "-CONT");
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
        let (acked, sent) = load.finish(a, ledger, f, dur, wait).await;
        if !paused {
            cl.nodes[target] = None;
            cl.start_node(a, setup, target).await?;
        }
        // The faulty node follows again (bounded).
        let deadline = Instant::now() + wait;
        while !matches!(
            cl.role(target).await.as_deref(),
            Some("Follower" | "Leader")
        ) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if matches!(fault, Fault::KillFollower | Fault::PauseFollower)
            && (cl.leader(wait).await.ok() != Some(leader) || cl.term(leader).await != term)
        {
            eprintln!("crash: round {round}: an election followed the fault of a follower");
            f.follower_fault_elections += 1;
        }
        eprintln!(
            "crash: round {round}: {fault:?} (node {}) after {run_for:?} of load, first PubAck after {:?}: {acked} acked of {sent} sent; durable acked up to {}",
            NODES[target],
            took.unwrap_or_default(),
            dur.contiguous
        );
    }
    if f.failures.is_empty() {
        let round = setup.rounds + 1;
        cl.leader(wait).await?;
        let lasts = check_channels(a, &addr, round, ledger, f, wait).await?;
        let d = resume_durable(a, &addr, round, dur, lasts[0], f, wait).await?;
        let _ = d.stan.close_sub(&d.sub, wait).await;
        let _ = d.stan.close(wait).await;
        // Let the followers apply the last entries, then stop every node.
        let deadline = Instant::now() + wait;
        loop {
            let mut applied = Vec::new();
            for i in 0..NODES.len() {
                applied.push(cl.applied(i).await);
            }
            if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
                break;
            }
            if Instant::now() > deadline {
                f.fail(format!("the nodes did not catch up: applied {applied:?}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for s in cl.nodes.iter_mut().flatten() {
        let _ = term(s, wait).await;
    }
    let _ = term(&mut core, wait).await;
    if f.failures.is_empty() {
        compare_stores(a, setup, f)?;
    }
    Ok(())
}

/// Per channel: (sequence, payload) of every message held.
type Channels = Vec<Vec<(u64, Vec<u8>)>>;

/// Reads every channel of every node's store: they must hold the same messages.
fn compare_stores(a: &CrashArgs, setup: &Setup, f: &mut super::Findings) -> Result<()> {
    let mut first: Option<Channels> = None;
    for id in NODES {
        let dir = setup.work.join(format!("store-{id}"));
        let fs = FileStore::open(&dir, FileStoreOptions::default(), StoreLimits::unlimited())
            .with_context(|| format!("opening {}", dir.display()))?;
        let mut chans = Vec::new();
        for c in 0..a.channels {
            let msgs = match fs.lookup_channel(&format!("crash{c}")) {
                Some(ch) => ch
                    .msgs()
                    .read_batch(1, usize::MAX, usize::MAX)?
                    .into_iter()
                    .map(|m| (m.sequence, m.data.to_vec()))
                    .collect(),
                None => Vec::new(),
            };
            chans.push(msgs);
        }
        fs.close()?;
        match &first {
            None => {
                eprintln!(
                    "crash: node {id}'s store: {:?} messages per channel",
                    chans.iter().map(Vec::len).collect::<Vec<_>>()
                );
                first = Some(chans);
            }
            Some(reference) => {
                for (c, (x, y)) in reference.iter().zip(chans.iter()).enumerate() {
                    if x != y {
                        f.fail(format!(
                            "node {id}'s store differs from node a's on crash{c}: {} against {} messages",
                            y.len(),
                            x.len()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
