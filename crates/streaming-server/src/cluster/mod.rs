//! Clustered mode (`--clustered`): 3 or 5 nodes replicate every store change through RAFT
//! (`rnats-streaming-raft`, openraft), carried over core NATS on connections of their own
//! (control: votes and heartbeats; data: appends and snapshots), never the clients': local
//! connections to the node's embedded NATS server ([`local_rpc`]), or client connections to
//! the server given with `-ns`.
//!
//! ```text
//! every node:  store ◀── StoreMachine.apply(committed entry) ◀── RAFT log ◀── leader
//! the leader:  clients ──▶ engine (Sink::Log) ──propose(entry)──▶ RAFT ──commit──▶ replies,
//!              PubAcks, deliveries (only once a quorum has the entry and it is applied here)
//! ```
//!
//! Only the leader runs an engine and subscribes the client subjects. When a node becomes
//! leader it waits until everything committed is applied to its store (a RAFT barrier), then
//! rebuilds the engine from the store exactly as a restart or an FT standby would: clients
//! keep their sessions and subscriptions, a durable resumes where it was acked. When it
//! loses the leadership (or its lease: no quorum for `raft_lease_timeout`) it stops the
//! engine; proposals in flight fail and their publishers get an error PubAck.
//!
//! Followers never write their store except through committed entries, so a deposed leader
//! has nothing to undo: what it accepted but could not commit never reached any store.

mod fetch;
mod local_rpc;
mod machine;
mod membership;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;

use rnats_streaming::store::Store;
use rnats_streaming::store::crypto::LogSealer;
use rnats_streaming_raft::{NatsServer, NatsTransport, Replicator, Role};

use self::local_rpc::LocalTransport;
use self::transport::RaftTransport;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::engine::Repl;
use crate::nats::Nats;
use crate::options::Options;
use crate::server::{ActiveSlot, StartError, serve};
use crate::startup::{NatsSide, crypto_options, open_store, recover_store};
use crate::status::{RaftView, Status};

/// A running cluster node.
pub(crate) struct ClusterNode {
    replicator: Arc<Replicator>,
    transport: Arc<RaftTransport>,
    rpc: Option<NatsServer>,
    watcher: JoinHandle<()>,
    stop: watch::Sender<bool>,
    store: Arc<dyn Store>,
    raft_conns: Vec<rnats_client::Client>,
    /// The connection the engine subscribes the client subjects on while this node leads.
    engine_nc: Nats,
}

/// What the leadership watcher needs.
struct Node {
    opts: Arc<Options>,
    status: Arc<Status>,
    replicator: Arc<Replicator>,
    store: Arc<dyn Store>,
    sealer: Option<Arc<LogSealer>>,
    engine_nc: Nats,
    active: ActiveSlot,
    /// Where membership requests and message fetches are served from (the RAFT data
    /// connection).
    data: rnats_client::Client,
}

impl ClusterNode {
    pub(crate) async fn start(
        opts: &Arc<Options>,
        status: &Arc<Status>,
        side: &NatsSide,
        active: &ActiveSlot,
    ) -> Result<ClusterNode, StartError> {
        let mut ropts = opts.clustering.raft.clone();
        ropts.cluster_id = opts.cluster_id.clone();
        if ropts.node_id.is_empty() {
            ropts.node_id = nuid::next().to_string();
        }
        ropts.log_path = opts
            .clustering
            .log_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(&opts.cluster_id).join(&ropts.node_id));
        let node_id = ropts.node_id.clone();
        info!(
            "STREAM: Cluster node {node_id:?}, RAFT log in {}",
            ropts.log_path.display()
        );
        let store = open_store(opts, None).await?;
        let fail = |e: StartError| {
            let _ = store.close();
            e
        };
        // A new store gets the server info every node derives alike (`_STAN.ack.<cid>`).
        recover_store(&store, opts).await.map_err(fail)?;
        let sealer = crypto_options(opts)
            .map_err(fail)?
            .map(|c| Arc::new(LogSealer::new(&c)));
        // Snapshot fetches and membership requests (rare) go on a client connection; the
        // RPCs on local connections when the NATS server is embedded.
        let data = side.client(opts, "raft_data").await.map_err(fail)?;
        let mut raft_conns = vec![data.clone()];
        let transport = match &side.embedded {
            Some(h) => {
                let cid = opts.cluster_id.clone();
                let open = |what: &str| h.connect_local(&format!("_NSS-{cid}-{what}"));
                match LocalTransport::new(&opts.cluster_id, open) {
                    Ok(t) => RaftTransport::Local(t),
                    Err(e) => {
                        return Err(fail(StartError::Nats(format!("RAFT transport: {e}"))));
                    }
                }
            }
            None => {
                let control = side.client(opts, "raft").await.map_err(fail)?;
                raft_conns.push(control.clone());
                RaftTransport::Nats(NatsTransport::new(
                    control,
                    data.clone(),
                    opts.cluster_id.clone(),
                ))
            }
        };
        let transport = Arc::new(transport);
        let fetcher = fetch::Fetcher::new(data.clone(), &opts.cluster_id);
        // Applies are short only for a FILE store that does not fsync (page-cache writes);
        // an SQL store's are database round trips.
        let short_applies = opts.store_type == rnats_streaming::store::StoreKind::File
            && !opts.clustering.raft.sync;
        let machine =
            machine::StoreMachine::new(store.clone(), sealer.clone(), fetcher, short_applies);
        let replicator = match Replicator::start(ropts, machine, transport.clone()).await {
            Ok(r) => Arc::new(r),
            Err(e) => return Err(fail(StartError::Cluster(e.to_string()))),
        };
        let rpc = transport
            .serve(&node_id, replicator.rpc_handler())
            .await
            .map_err(|e| fail(StartError::Nats(format!("RAFT transport: {e}"))))?;
        let engine_nc = side.connect_control(opts, "general").await.map_err(fail)?;
        let (stop, stop_rx) = watch::channel(false);
        let node = Node {
            opts: opts.clone(),
            status: status.clone(),
            replicator: replicator.clone(),
            store: store.clone(),
            sealer,
            engine_nc: engine_nc.clone(),
            active: active.clone(),
            data: data.clone(),
        };
        let watcher = tokio::spawn(node.watch_leadership(stop_rx));
        Ok(ClusterNode {
            replicator,
            transport,
            rpc,
            watcher,
            stop,
            store,
            raft_conns,
            engine_nc,
        })
    }

    /// Stops serving (if leading), then RAFT, then closes the store and the connections.
    pub(crate) async fn shutdown(mut self, active: &ActiveSlot) {
        let _ = self.stop.send(true);
        let _ = (&mut self.watcher).await;
        if let Some(a) = active.lock().await.take() {
            a.stop(&self.engine_nc).await;
        }
        self.replicator.shutdown().await;
        drop(self.rpc.take());
        self.transport.close();
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        for c in &self.raft_conns {
            c.close().await;
        }
        self.engine_nc.close().await;
    }
}

/// How soon a leader that could not confirm its leadership tries again.
const LEADERSHIP_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

impl Node {
    /// Serves clients while this node leads, and only then.
    async fn watch_leadership(self, mut stop: watch::Receiver<bool>) {
        let mut changes = self.replicator.watch();
        let mut membership: Option<JoinHandle<()>> = None;
        // Message fetches are answered while openraft says this node leads, before the
        // engine serves: the snapshots it sends from then on name no leader to fetch from.
        let mut fetches: Option<JoinHandle<()>> = None;
        // When this node, leading, first tried to serve (a barrier may be retried).
        let mut promoting: Option<std::time::Instant> = None;
        while !*stop.borrow() {
            // Set when this node leads but could not confirm it (peers not answering yet, as
            // right after a whole-cluster restart): the state may not change again, so retry.
            let mut retry = false;
            let st = changes.borrow_and_update().clone();
            self.status.set_raft(Some(RaftView {
                role: st.role.to_string(),
                node_id: st.node_id.clone(),
                peers: st.peers.clone(),
                last_applied: st.last_applied.unwrap_or(0),
                term: st.term,
            }));
            let leading = st.role == Role::Leader;
            if !leading {
                promoting = None;
            }
            if leading && fetches.is_none() {
                fetches = Some(tokio::spawn(fetch::serve(
                    self.data.clone(),
                    self.opts.cluster_id.clone(),
                    self.store.clone(),
                )));
            } else if !leading && let Some(f) = fetches.take() {
                f.abort();
            }
            let mut active = self.active.lock().await;
            if leading && active.is_none() {
                // Everything committed is applied here before the engine reads the store.
                let promotion = *promoting.get_or_insert_with(|| {
                    info!(
                        "STREAM: server became leader (term {}), performing leader promotion actions",
                        st.term
                    );
                    std::time::Instant::now()
                });
                let barrier = self.replicator.barrier().await;
                if barrier.is_ok() && self.replicator.is_leader() {
                    let applied = promotion.elapsed();
                    let repl = Repl::new(self.replicator.clone(), self.sealer.clone());
                    let r = serve(
                        &self.opts,
                        &self.status,
                        &self.engine_nc,
                        None,
                        self.store.clone(),
                        Some(repl),
                    )
                    .await;
                    promoting = None;
                    match r {
                        Ok(a) => {
                            info!(
                                "STREAM: finished leader promotion actions in {:.0?} (committed entries applied in {:.0?})",
                                promotion.elapsed(),
                                applied
                            );
                            info!("STREAM: This node is the leader (term {})", st.term);
                            *active = Some(a);
                            if self.opts.clustering.allow_add_remove_node {
                                membership = Some(tokio::spawn(membership::serve(
                                    self.data.clone(),
                                    self.opts.cluster_id.clone(),
                                    self.replicator.clone(),
                                )));
                            }
                        }
                        Err(e) => error!("STREAM: Unable to serve as the leader: {e}"),
                    }
                } else {
                    retry = true;
                }
            } else if !leading && let Some(a) = active.take() {
                if let Some(m) = membership.take() {
                    m.abort();
                }
                self.status.set_engine(None);
                a.stop(&self.engine_nc).await;
                info!(
                    "STREAM: This node is no longer the leader ({}): stopped serving clients",
                    st.role
                );
            }
            drop(active);
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                _ = stop.changed() => {}
                () = tokio::time::sleep(LEADERSHIP_RETRY), if retry => {}
            }
        }
        for t in [membership, fetches].into_iter().flatten() {
            t.abort();
        }
    }
}
