//! A cluster of [`Replicator`]s on a [`MemNet`], each node with its own directory and its
//! recording [`MemMachine`] (which survives a node's stop, standing for its durable store).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rnats_streaming_raft::testing::MemMachine;
use rnats_streaming_raft::{ClusterOptions, MemNet, ProposeError, Replicator, Role, Status};
use tempfile::TempDir;

/// Fast timers for most tests: a follower campaigns 525–600 ms after losing its leader.
pub fn fast(mut o: ClusterOptions) -> ClusterOptions {
    o.heartbeat_timeout = Duration::from_millis(500);
    o.election_timeout = Duration::from_millis(500);
    o.lease_timeout = Duration::from_millis(400);
    o.commit_timeout = Duration::from_millis(50);
    o
}

pub struct Node {
    pub rep: Replicator,
    pub machine: MemMachine,
}

pub struct Cluster {
    pub net: MemNet,
    pub dir: TempDir,
    pub names: Vec<String>,
    pub nodes: BTreeMap<String, Node>,
    /// Machines of stopped nodes, kept for their restart.
    pub stopped: BTreeMap<String, MemMachine>,
    pub tune: Arc<dyn Fn(ClusterOptions) -> ClusterOptions + Send + Sync>,
}

impl Cluster {
    /// Starts `n` nodes named n0.. that bootstrap together through `--cluster_peers`.
    pub async fn start(
        n: usize,
        tune: impl Fn(ClusterOptions) -> ClusterOptions + Send + Sync + 'static,
    ) -> Cluster {
        let all: Vec<usize> = (0..n).collect();
        Cluster::start_some(n, &all, tune).await
    }

    /// Like [`Cluster::start`], but only the nodes numbered in `running` start (the others
    /// are peers that never came up).
    pub async fn start_some(
        n: usize,
        running: &[usize],
        tune: impl Fn(ClusterOptions) -> ClusterOptions + Send + Sync + 'static,
    ) -> Cluster {
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let mut c = Cluster {
            net: MemNet::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            names: names.clone(),
            nodes: BTreeMap::new(),
            stopped: BTreeMap::new(),
            tune: Arc::new(tune),
        };
        for &i in running {
            c.start_node(&names[i], MemMachine::new(), true).await;
        }
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn options(&self, name: &str, with_peers: bool) -> ClusterOptions {
        let mut o = ClusterOptions::new("test-cluster", name, self.path(name));
        if with_peers {
            o.peers = self.names.clone();
        }
        (self.tune)(o)
    }

    pub async fn start_node(&mut self, name: &str, machine: MemMachine, with_peers: bool) {
        let opts = self.options(name, with_peers);
        let rep = Replicator::start(opts, machine.clone(), Arc::new(self.net.transport(name)))
            .await
            .expect("node starts");
        self.net.register(name, rep.rpc_handler());
        self.nodes.insert(name.to_string(), Node { rep, machine });
    }

    /// Stops a node the hard way: unreachable at once, RAFT stopped, files left as they are.
    pub async fn kill(&mut self, name: &str) {
        self.net.unregister(name);
        let node = self.nodes.remove(name).expect("node is running");
        node.rep.shutdown().await;
        self.stopped.insert(name.to_string(), node.machine);
    }

    /// Restarts a stopped node from its directory and its machine.
    pub async fn restart(&mut self, name: &str) {
        let machine = self.stopped.remove(name).expect("node was stopped");
        self.start_node(name, machine, true).await;
    }

    pub fn node(&self, name: &str) -> &Node {
        &self.nodes[name]
    }

    /// Waits until one running node is leader and every running node (but `except`) agrees.
    pub async fn wait_leader(&self, within: Duration, except: &[&str]) -> String {
        let deadline = Instant::now() + within;
        loop {
            let statuses: Vec<Status> = self
                .nodes
                .iter()
                .filter(|(n, _)| !except.contains(&n.as_str()))
                .map(|(_, n)| n.rep.status())
                .collect();
            let leaders: Vec<&Status> =
                statuses.iter().filter(|s| s.role == Role::Leader).collect();
            if let [l] = leaders.as_slice()
                && statuses
                    .iter()
                    .all(|s| s.leader.as_deref() == Some(&l.node_id))
            {
                return l.node_id.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {within:?}: {statuses:#?}"
            );
            self.changed(Duration::from_millis(50)).await;
        }
    }

    /// Waits for any status change on any node (or `max`).
    pub async fn changed(&self, max: Duration) {
        let mut watches: Vec<_> = self.nodes.values().map(|n| n.rep.watch()).collect();
        let any = futures::future::select_all(
            watches
                .iter_mut()
                .map(|w| Box::pin(async move { w.changed().await.ok() })),
        );
        let _ = tokio::time::timeout(max, any).await;
    }

    /// Waits until `name` has applied at least `index`.
    pub async fn wait_applied(&self, name: &str, index: u64, within: Duration) {
        let res = self
            .node(name)
            .rep
            .raft()
            .wait(Some(within))
            .applied_index_at_least(Some(index), "test wait")
            .await;
        assert!(
            res.is_ok(),
            "{name} did not apply {index} within {within:?}: {:?}",
            self.node(name).rep.status()
        );
    }

    pub async fn wait_all_applied(&self, index: u64, within: Duration) {
        for name in self.nodes.keys() {
            self.wait_applied(name, index, within).await;
        }
    }

    /// Proposes `cmd` on `leader`, retrying for at most `within` when leadership moves.
    pub async fn propose(&self, leader: &str, cmd: &str) -> Result<u64, ProposeError> {
        self.node(leader)
            .rep
            .propose(Bytes::from(cmd.to_string()))
            .await
            .map(|(i, resp)| {
                assert_eq!(&resp.0[..], &i.to_le_bytes(), "machine answered its index");
                i
            })
    }

    /// Every running node's applied commands, as strings.
    pub fn applied(&self) -> BTreeMap<String, Vec<String>> {
        self.nodes
            .iter()
            .map(|(n, node)| {
                let cmds = node
                    .machine
                    .commands()
                    .iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                (n.clone(), cmds)
            })
            .collect()
    }

    pub async fn shutdown(self) {
        for (_, n) in self.nodes {
            n.rep.shutdown().await;
        }
    }
}
