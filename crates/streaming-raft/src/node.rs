//! [`Replicator`]: the facade the streaming server uses; openraft stays behind it.
//!
//! ```text
//! Replicator::start(opts, machine, transport)
//!   ├─ LogStore::open(<log_path>/log)            recover the log (repair, never refuse)
//!   ├─ StateMachine::open(<log_path>/snapshots)  restore the newest snapshot (Startup)
//!   ├─ reconcile: log purged past the snapshot → drop the log, catch up from the leader
//!   ├─ openraft::Raft::new, then initialize(self + peers) when new and bootstrapping
//!   └─ status task: openraft metrics + the lease rule ─▶ watch::Receiver<Status>
//! propose(cmd) ─▶ client_write ─▶ (index, Response) once committed and applied here
//! ```
//!
//! The caller wires the serving side of the transport to [`Replicator::rpc_handler`]
//! (`MemNet::register`, `NatsTransport::serve`).
//!
//! # Leadership
//!
//! [`Status::role`] is openraft's state with the reference's leader lease on top: a leader
//! that has not heard from a quorum for `raft_lease_timeout` reports `Follower` (with no
//! known leader) and refuses proposals, so a partitioned leader stops serving clients about a
//! second after losing its quorum, as hashicorp/raft's leader does; openraft itself steps
//! down when it meets the newer term. A proposal waiting while its node loses leadership
//! fails with [`ProposeError::LeadershipLost`]: its entry may still commit under the new
//! leader (the client sees a failure and may publish again: at-least-once, as the reference).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{ClusterOptions, ConfigError};
use crate::election::{Elector, campaign};
use crate::log::{LogError, LogFilesOptions, LogStore};
use crate::net::{NetworkFactory, PreVoter, RpcHandler, Transport};
use crate::snapshot::SnapshotStore;
use crate::state::{Machine, OpenError, StateMachine};
use crate::types::{Command, NodeId, NodeInfo, Raft, Response, node_id_of};

/// A node's role, as `/streaming/serverz` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    /// A member that does not vote yet (being added).
    Learner,
    Shutdown,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Leader => "Leader",
            Role::Follower | Role::Learner => "Follower",
            Role::Candidate => "Candidate",
            Role::Shutdown => "Shutdown",
        })
    }
}

/// What a node knows about itself and its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub node_id: String,
    pub role: Role,
    pub leader: Option<String>,
    pub term: u64,
    /// Every member but this node (voters and learners), sorted.
    pub peers: Vec<String>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// Last index covered by the current snapshot.
    pub snapshot: Option<u64>,
    /// Last index removed from the log.
    pub purged: Option<u64>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    State(#[from] OpenError),
    #[error("RAFT node failed to start: {0}")]
    Raft(String),
}

/// Why a proposal was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    #[error("leadership was lost while the command was replicated; it may or may not commit")]
    LeadershipLost,
    #[error("the RAFT node stopped: {0}")]
    Stopped(String),
}

/// Why a membership change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("this node is not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    #[error("invalid node: {0}")]
    InvalidNode(String),
    #[error("membership change failed: {0}")]
    Failed(String),
}

/// One RAFT node: replication, leadership, membership.
pub struct Replicator {
    raft: Raft,
    id: NodeId,
    name: String,
    status: watch::Receiver<Status>,
    log: LogStore,
    snaps: Arc<SnapshotStore>,
    watcher: JoinHandle<()>,
    elector: Arc<Elector>,
    campaigner: JoinHandle<()>,
    /// A peer's delayed bootstrap (see `start`), until it ran.
    bootstrap: Option<JoinHandle<()>>,
}

impl Replicator {
    /// Opens the node's files, starts RAFT and bootstraps a new cluster when asked (see the
    /// module docs). `transport` carries this node's calls to the others.
    pub async fn start<M: Machine, T: Transport>(
        opts: ClusterOptions,
        machine: M,
        transport: Arc<T>,
    ) -> Result<Replicator, StartError> {
        let config = Arc::new(opts.openraft_config()?);
        let id = node_id_of(&opts.node_id);
        let log = LogStore::open(
            &opts.log_path.join("log"),
            LogFilesOptions {
                sync: opts.sync,
                cache: opts.log_cache_size,
                cache_bytes: crate::config::DEFAULT_LOG_CACHE_BYTES,
                segment_bytes: opts.segment_bytes,
            },
        )?;
        let sm = StateMachine::open(
            &opts.log_path.join("snapshots"),
            opts.log_snapshots,
            machine,
        )?;
        let snaps = sm.snapshot_store();
        let applied = sm.applied();
        // A purge point past the snapshot means the snapshot that covered it is gone: the
        // entries left can't be applied on top of anything. Keep the vote, drop the rest,
        // and let the leader send a snapshot (instead of refusing to start).
        let purged = log.with(|f| f.purged());
        if let Some(p) = purged
            && applied.is_none_or(|a| a.index < p.index)
        {
            warn!(
                "RAFT node {}: log purged up to {} but the snapshot covers {:?}; dropping the local log to catch up from the leader",
                opts.node_id,
                p.index,
                applied.map(|a| a.index)
            );
            log.with(|f| f.reset())?;
        }
        let existing = log.with(|f| f.has_state()) || applied.is_some();
        let rec = log.with(|f| f.recovery().clone());
        info!(
            "RAFT node {} ({id:#x}) of {}: recovered {} entries{}",
            opts.node_id,
            opts.cluster_id,
            rec.entries,
            if rec.truncated_bytes > 0 || !rec.removed_files.is_empty() {
                format!(
                    ", repaired ({} bytes cut, {} files removed)",
                    rec.truncated_bytes,
                    rec.removed_files.len()
                )
            } else {
                String::new()
            }
        );

        let elector = Arc::new(Elector::new(
            &opts.node_id,
            Duration::from_millis(config.election_timeout_max),
            (
                Duration::from_millis(config.election_timeout_min),
                Duration::from_millis(config.election_timeout_max),
            ),
            existing,
            Instant::now(),
        ));
        let network = NetworkFactory::new(transport.clone(), id);
        let raft = Raft::new(id, config, network, log.clone(), sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let mut bootstrap = None;
        if !existing && (opts.bootstrap || opts.other_peers().next().is_some()) {
            let mut members = BTreeMap::new();
            members.insert(id, NodeInfo::new(&opts.node_id));
            for p in opts.other_peers() {
                members.insert(node_id_of(p), NodeInfo::new(p));
            }
            info!(
                "RAFT node {}: bootstrapping cluster {} with {:?}",
                opts.node_id,
                opts.cluster_id,
                members
                    .values()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
            );
            // openraft campaigns at once on every node it initializes. All peers doing so at
            // start-up let a node that came up a moment after the first leader won campaign in
            // the same term with a larger id, which deposes that leader (seen under load: its
            // publishes in flight failed and the next leader took a second). So only the
            // first peer by name bootstraps at once; the others wait one heartbeat timeout
            // (when a follower would campaign anyway) and bootstrap only if no leader reached
            // them meanwhile (initialize refuses a node that voted or holds entries).
            let first = members.values().map(|n| n.name.as_str()).min() == Some(&opts.node_id);
            if opts.bootstrap || first {
                match raft.initialize(members).await {
                    Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                    Err(e) => {
                        let _ = raft.shutdown().await;
                        return Err(StartError::Raft(e.to_string()));
                    }
                }
            } else {
                let (raft, name, wait) =
                    (raft.clone(), opts.node_id.clone(), opts.heartbeat_timeout);
                bootstrap = Some(tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    match raft.initialize(members).await {
                        Ok(()) => info!(
                            "RAFT node {name}: no leader reached this node within {wait:?}: bootstrapped it"
                        ),
                        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                        Err(e) => warn!("RAFT node {name}: bootstrap failed: {e}"),
                    }
                }));
            }
        } else if !existing {
            info!(
                "RAFT node {}: no state; waiting to be added by the leader of {}",
                opts.node_id, opts.cluster_id
            );
        }

        let (tx, rx) = watch::channel(status_of(
            &opts.node_id,
            &raft.metrics().borrow(),
            opts.lease_timeout,
        ));
        let watcher = tokio::spawn(watch_status(
            raft.metrics(),
            tx,
            opts.node_id.clone(),
            opts.lease_timeout,
        ));
        let campaigner = tokio::spawn(campaign::run(
            elector.clone(),
            raft.clone(),
            log.clone(),
            PreVoter::new(transport),
            id,
        ));
        Ok(Replicator {
            raft,
            id,
            name: opts.node_id,
            status: rx,
            log,
            snaps,
            watcher,
            elector,
            campaigner,
            bootstrap,
        })
    }

    /// What the transport's serving side hands incoming RPCs to.
    pub fn rpc_handler(&self) -> RpcHandler {
        RpcHandler::new(
            self.raft.clone(),
            self.id,
            self.elector.clone(),
            self.log.clone(),
        )
    }

    pub fn node_id(&self) -> &str {
        &self.name
    }

    /// The current status (see [`Replicator::watch`] to follow changes).
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Follows role, leader, term and membership changes.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    pub fn is_leader(&self) -> bool {
        self.status.borrow().role == Role::Leader
    }

    /// Replicates `cmd` and returns its log index and the machine's response once a quorum
    /// has it and this node applied it.
    pub async fn propose(&self, cmd: Bytes) -> Result<(u64, Response), ProposeError> {
        self.submit(cmd).await?.wait().await
    }

    /// Hands `cmd` to RAFT at once and returns the wait for its commit (and application
    /// here), so that a caller can submit more before the first is committed: entries are
    /// replicated in submission order, and so are the waits' results.
    pub async fn submit(&self, cmd: Bytes) -> Result<Submitted, ProposeError> {
        let mut status = self.status.clone();
        {
            let s = status.borrow_and_update();
            if s.role != Role::Leader {
                return Err(ProposeError::NotLeader {
                    leader: s.leader.clone(),
                });
            }
        }
        let rx = self
            .raft
            .client_write_ff(Command(cmd))
            .await
            .map_err(|f| ProposeError::Stopped(f.to_string()))?;
        Ok(Submitted { rx, status })
    }

    /// Waits until this node, as leader, has applied everything committed before the call
    /// (what a new leader runs before serving, like the reference's `raft.Barrier()`).
    pub async fn barrier(&self) -> Result<u64, ProposeError> {
        match self.raft.ensure_linearizable().await {
            Ok(l) => Ok(l.map_or(0, |l| l.index)),
            Err(RaftError::APIError(e)) => match e {
                openraft::error::CheckIsLeaderError::ForwardToLeader(f) => {
                    Err(ProposeError::NotLeader {
                        leader: f.leader_node.map(|n| n.name),
                    })
                }
                openraft::error::CheckIsLeaderError::QuorumNotEnough(_) => {
                    Err(ProposeError::LeadershipLost)
                }
            },
            Err(RaftError::Fatal(f)) => Err(ProposeError::Stopped(f.to_string())),
        }
    }

    /// Adds `name` as a voter (leader only): it first catches up as a learner.
    pub async fn add_node(&self, name: &str) -> Result<(), MembershipError> {
        crate::types::validate_node_name(name)
            .map_err(|e| MembershipError::InvalidNode(e.to_string()))?;
        let id = node_id_of(name);
        self.raft
            .add_learner(id, NodeInfo::new(name), true)
            .await
            .map_err(membership_err)?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(membership_err)?;
        Ok(())
    }

    /// Removes `name` from the cluster (leader only).
    pub async fn remove_node(&self, name: &str) -> Result<(), MembershipError> {
        let id = node_id_of(name);
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some();
        if !known {
            return Err(MembershipError::InvalidNode(format!(
                "{name:?} is not a member"
            )));
        }
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(membership_err)?;
        // A removed voter may linger as a learner; drop it from the membership entirely.
        let nodes = BTreeSet::from([id]);
        let still = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some();
        if still {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(nodes), false)
                .await
                .map_err(membership_err)?;
        }
        Ok(())
    }

    /// Log and snapshot sizes, for monitoring and tests.
    pub fn storage_stats(&self) -> StorageStats {
        let (entries, bytes, segments, purged, last, rec) = self.log.with(|f| {
            let first = f.purged().map_or(0, |p| p.index + 1);
            let last = f.last().map(|l| l.index);
            let entries = last.map_or(0, |l| (l + 1).saturating_sub(first));
            (
                entries,
                f.disk_bytes(),
                f.segment_count(),
                f.purged().map(|p| p.index),
                last,
                f.recovery().clone(),
            )
        });
        StorageStats {
            repaired_bytes: rec.truncated_bytes,
            removed_files: rec.removed_files.len(),
            log_entries: entries,
            log_bytes: bytes,
            log_segments: segments,
            purged,
            last_index: last,
            snapshot_files: self.snaps.file_count(),
            snapshot_index: self
                .snaps
                .current()
                .and_then(|s| s.meta.last_log_id.map(|l| l.index)),
        }
    }

    /// Asks for a snapshot now (openraft also takes them by itself every
    /// `snapshot_threshold` entries).
    pub async fn trigger_snapshot(&self) -> Result<(), ProposeError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ProposeError::Stopped(e.to_string()))
    }

    /// The openraft handle, for what the facade does not cover.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Stops RAFT and syncs the log. The transport's serving side is the caller's to stop.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!("RAFT node {}: shutdown: {e}", self.name);
        }
        if let Err(e) = self.log.with(|f| f.sync()) {
            warn!("RAFT node {}: final log sync: {e}", self.name);
        }
        self.abort_tasks();
    }

    fn abort_tasks(&self) {
        self.watcher.abort();
        self.campaigner.abort();
        if let Some(b) = &self.bootstrap {
            b.abort();
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.abort_tasks();
    }
}

/// Sizes of a node's RAFT storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageStats {
    /// Entries in the log (after the purge point).
    pub log_entries: u64,
    pub log_bytes: u64,
    pub log_segments: usize,
    pub purged: Option<u64>,
    pub last_index: Option<u64>,
    pub snapshot_files: usize,
    pub snapshot_index: Option<u64>,
    /// Bytes of damaged log tail cut off when this node started.
    pub repaired_bytes: u64,
    /// Files recovery removed when this node started (temp, empty, unusable segments).
    pub removed_files: usize,
}

fn membership_err(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipError::NotLeader {
            leader: f.leader_node.map(|n| n.name),
        },
        other => MembershipError::Failed(other.to_string()),
    }
}

fn status_of(name: &str, m: &RaftMetrics<NodeId, NodeInfo>, lease: Duration) -> Status {
    let membership = m.membership_config.membership();
    let me = node_id_of(name);
    let mut peers: Vec<String> = membership
        .nodes()
        .filter(|(id, _)| **id != me)
        .map(|(_, n)| n.name.clone())
        .collect();
    peers.sort();
    let leader_name = |id: NodeId| {
        membership
            .get_node(&id)
            .map(|n| n.name.clone())
            .or_else(|| (id == me).then(|| name.to_string()))
    };
    let lease_lost = m.state == ServerState::Leader
        && membership.voter_ids().count() > 1
        && m.millis_since_quorum_ack
            .is_some_and(|ms| u128::from(ms) > lease.as_millis());
    let (role, leader) = match m.state {
        ServerState::Leader if lease_lost => (Role::Follower, None),
        ServerState::Leader => (Role::Leader, Some(name.to_string())),
        ServerState::Follower => (Role::Follower, m.current_leader.and_then(leader_name)),
        ServerState::Candidate => (Role::Candidate, None),
        ServerState::Learner => (Role::Learner, m.current_leader.and_then(leader_name)),
        ServerState::Shutdown => (Role::Shutdown, None),
    };
    Status {
        node_id: name.to_string(),
        role,
        leader,
        term: m.current_term,
        peers,
        last_log_index: m.last_log_index,
        last_applied: m.last_applied.map(|l| l.index),
        snapshot: m.snapshot.map(|l| l.index),
        purged: m.purged.map(|l| l.index),
    }
}

async fn watch_status(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, NodeInfo>>,
    tx: watch::Sender<Status>,
    name: String,
    lease: Duration,
) {
    loop {
        let s = status_of(&name, &metrics.borrow_and_update(), lease);
        let stopped = s.role == Role::Shutdown;
        tx.send_if_modified(|cur| {
            if *cur != s {
                *cur = s;
                true
            } else {
                false
            }
        });
        if stopped || metrics.changed().await.is_err() {
            tx.send_if_modified(|cur| {
                let changed = cur.role != Role::Shutdown;
                cur.role = Role::Shutdown;
                cur.leader = None;
                changed
            });
            return;
        }
    }
}

/// A command handed to RAFT by [`Replicator::submit`], not yet known to be committed.
pub struct Submitted {
    rx: tokio::sync::oneshot::Receiver<
        Result<
            openraft::raft::ClientWriteResponse<crate::types::TypeConfig>,
            ClientWriteError<NodeId, NodeInfo>,
        >,
    >,
    status: watch::Receiver<Status>,
}

impl Submitted {
    /// Its log index and the machine's response, once a quorum has it and this node applied
    /// it; [`ProposeError::LeadershipLost`] when this node stops leading first.
    pub async fn wait(self) -> Result<(u64, Response), ProposeError> {
        let Submitted { rx, mut status } = self;
        tokio::pin!(rx);
        loop {
            tokio::select! {
                res = &mut rx => return match res {
                    Ok(Ok(r)) => Ok((r.log_id.index, r.data)),
                    Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                        Err(ProposeError::NotLeader { leader: f.leader_node.map(|n| n.name) })
                    }
                    Ok(Err(e)) => Err(ProposeError::Stopped(e.to_string())),
                    Err(_) => Err(ProposeError::Stopped("the RAFT node dropped the request".into())),
                },
                changed = status.changed() => {
                    if changed.is_err() {
                        return Err(ProposeError::Stopped("status channel closed".into()));
                    }
                    if status.borrow_and_update().role != Role::Leader {
                        return Err(ProposeError::LeadershipLost);
                    }
                }
            }
        }
    }
}
