//! A running streaming server: started standalone (serving at once) or as a member of a
//! fault-tolerance group (a standby that serves once it holds the store lock), and stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rnats_streaming::store::Store;
use rnats_streaming::store::StoreKind;
use rnats_streaming::store::file::SyncPolicy;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::cluster::ClusterNode;
use crate::engine::{Engine, Event, Repl};
use crate::ft::{self, HeldLock, StoreLock};
use crate::nats::Nats;
use crate::options::{Options, VERSION};
use crate::partition::{PartitionError, Partitions};
use crate::startup::{
    NatsSide, another_server_answers, connect_nats, log_limits, open_store, recover_store,
    start_monitor, subscribe_protocol,
};
use crate::status::{ServerState, Status};
use crate::subjects::Subjects;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Nats(String),
    #[error("{0}")]
    Store(String),
    #[error("discovered another streaming server with cluster ID \"{0}\"")]
    Duplicate(String),
    #[error("can't listen on the monitoring port {addr}: {source}")]
    Monitor {
        addr: String,
        source: std::io::Error,
    },
    #[error("Partitioning error: {0}")]
    Partitioning(#[from] PartitionError),
    #[error("{0}")]
    Cluster(String),
    #[error(transparent)]
    Options(#[from] crate::options::OptionsError),
}

/// The serving half of a server: the store, the engine, and the partitioning responder.
pub(crate) struct Active {
    store: Arc<dyn Store>,
    /// False on a clustered node, whose state machine keeps the store open.
    owns_store: bool,
    tx: mpsc::UnboundedSender<Event>,
    engine: JoinHandle<()>,
    partitions: Option<(Arc<Partitions>, JoinHandle<()>)>,
}

impl Active {
    /// Drains the engine, then closes the store (releasing its lock: an FT standby takes
    /// over at once).
    pub(crate) async fn stop(self, nc: &Nats) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Event::Shutdown(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.engine).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), nc.flush()).await;
        if self.owns_store {
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
        if let Some((p, task)) = self.partitions {
            task.abort();
            p.close().await;
        }
    }
}

pub(crate) type ActiveSlot = Arc<tokio::sync::Mutex<Option<Active>>>;

/// The fault-tolerance task of a group member: standby, then active with its heartbeats.
struct FtTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    control: Nats,
}

/// A running streaming server. Stop it with [`StreamingServer::shutdown`].
pub struct StreamingServer {
    opts: Arc<Options>,
    status: Arc<Status>,
    side: NatsSide,
    active: ActiveSlot,
    ft: Option<FtTask>,
    cluster: Option<ClusterNode>,
    monitor: Option<(SocketAddr, crate::startup::MonitorTask)>,
    /// Set when the server stopped serving on its own (two active FT servers).
    failed: watch::Receiver<Option<String>>,
}

impl StreamingServer {
    /// The URL the engine connected to (the embedded server's, or `-ns`).
    pub fn nats_url(&self) -> &str {
        &self.side.url
    }

    /// The embedded NATS server's client address (None with `-ns`).
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.side.embedded.as_ref().map(|n| n.client_addr())
    }

    /// Where `/streaming/...` monitoring listens.
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        self.monitor.as_ref().map(|(a, _)| *a)
    }

    pub fn cluster_id(&self) -> &str {
        &self.opts.cluster_id
    }

    /// This server's ID (as in `/streaming/serverz`).
    pub fn server_id(&self) -> &str {
        &self.status.server_id
    }

    /// Standalone, FT standby, FT active, or failed.
    pub fn state(&self) -> ServerState {
        self.status.state()
    }

    /// Resolves once the server serves clients (at once unless it is an FT standby), or
    /// with the error that stopped it.
    pub async fn ready(&self) -> Result<(), String> {
        let mut failed = self.failed.clone();
        loop {
            if let Some(e) = failed.borrow().clone() {
                return Err(e);
            }
            if matches!(
                self.status.state(),
                ServerState::Standalone | ServerState::FtActive | ServerState::Clustered
            ) {
                return Ok(());
            }
            // State changes come with a `failed` update or within a poll interval.
            tokio::select! {
                _ = failed.changed() => {}
                () = tokio::time::sleep(ft::LOCK_POLL) => {}
            }
        }
    }

    /// Why the server stopped serving on its own, if it did.
    pub fn error(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Resolves when the embedded NATS server has been told to stop, or the server stopped
    /// serving on its own ([`StreamingServer::error`] says why).
    pub async fn stopped(&self) {
        let mut failed = self.failed.clone();
        let fatal = async move {
            while failed.borrow().is_none() {
                if failed.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        match &self.side.embedded {
            Some(n) => tokio::select! {
                () = n.stopped() => {}
                () = fatal => {}
            },
            None => fatal.await,
        }
    }

    /// Stops: the FT task, the engine (drained), the store, the NATS connections, then the
    /// embedded NATS server.
    pub async fn shutdown(self) {
        info!("STREAM: Shutting down.");
        if let Some((_, m)) = &self.monitor {
            m.abort();
        }
        if let Some(ft) = &self.ft {
            let _ = ft.stop.send(true);
        }
        let ft = self.ft;
        let control = match ft {
            Some(f) => {
                let _ = tokio::time::timeout(Duration::from_secs(10), f.task).await;
                Some(f.control)
            }
            None => None,
        };
        self.status.set_engine(None);
        if let Some(c) = self.cluster {
            c.shutdown(&self.active).await;
        }
        if let Some(a) = self.active.lock().await.take() {
            a.stop(&self.side.nc).await;
        }
        if let Some(c) = control {
            c.close().await;
        }
        self.side.nc.close().await;
        if let Some(n) = self.side.embedded {
            n.shutdown(Duration::from_secs(2)).await;
        }
    }
}

/// Starts a streaming server: NATS, the duplicate check, monitoring, then either the store,
/// its recovery and the engine, or (`--ft_group`) a standby that does that once it holds
/// the store lock.
pub async fn start(opts: Options) -> Result<StreamingServer, StartError> {
    opts.check()?;
    let mut opts = opts;
    info!(
        "STREAM: Starting nats-streaming-server[{}] version {VERSION}",
        opts.cluster_id
    );
    let side = connect_nats(&opts).await?;
    // FT members, partitions and cluster nodes share the cluster ID with other servers by
    // design.
    if opts.ft_group.is_none()
        && !opts.partitioning
        && !opts.clustering.clustered
        && opts.startup_check
        && another_server_answers(&side.nc, &opts).await
    {
        let e = StartError::Duplicate(opts.cluster_id.clone());
        return side.abandon(e).await;
    }
    let server_id = nuid::next().to_string();
    info!("STREAM: ServerID: {server_id}");
    info!("STREAM: Go version: rust (rnats-streaming-server)");
    info!("STREAM: Git commit: [not set]");
    opts.nats.http_port = 0;
    if opts.clustering.clustered {
        // As the reference does: a clustered node's store syncs when its RAFT log does
        // (`cluster_sync`). A PubAck means a quorum holds the batch; without cluster_sync
        // neither the log nor the store waits for a disk (a process kill loses nothing).
        opts.file_options.sync = if opts.clustering.raft.sync {
            SyncPolicy::OnFlush
        } else {
            SyncPolicy::Never
        };
    }
    let opts = Arc::new(opts);
    let state = if opts.ft_group.is_some() {
        ServerState::FtStandby
    } else if opts.clustering.clustered {
        ServerState::Clustered
    } else {
        ServerState::Standalone
    };
    let status = Arc::new(Status::new(opts.clone(), server_id, state));
    let monitor = match start_monitor(&opts, &side, &status).await {
        Ok(m) => m,
        Err(e) => return side.abandon(e).await,
    };
    let (fail_tx, failed) = watch::channel(None);
    let active: ActiveSlot = Arc::default();
    let mut cluster = None;
    let ft = match &opts.ft_group {
        None if opts.clustering.clustered => {
            match ClusterNode::start(&opts, &status, &side, &active).await {
                Ok(c) => cluster = Some(c),
                Err(e) => {
                    if let Some((_, m)) = monitor {
                        m.abort();
                    }
                    return side.abandon(e).await;
                }
            }
            None
        }
        None => {
            let pc = match partition_connection(&opts, &side).await {
                Ok(pc) => pc,
                Err(e) => return side.abandon(e).await,
            };
            match activate(&opts, &status, &side.nc, pc, None).await {
                Ok(a) => *active.lock().await = Some(a),
                Err(e) => {
                    if let Some((_, m)) = monitor {
                        m.abort();
                    }
                    return side.abandon(e).await;
                }
            }
            None
        }
        Some(group) => match start_ft(&opts, &status, &side, group, &active, fail_tx).await {
            Ok(f) => Some(f),
            Err(e) => return side.abandon(e).await,
        },
    };
    Ok(StreamingServer {
        opts,
        status,
        side,
        active,
        ft,
        cluster,
        monitor,
        failed,
    })
}

/// Opens and recovers the store, checks the partition, starts the engine and subscribes the
/// protocol subjects: from here the server serves clients.
/// The connection partitioning uses (None without partitioning).
async fn partition_connection(opts: &Options, side: &NatsSide) -> Result<Option<Nats>, StartError> {
    if opts.partitioning {
        Ok(Some(side.connect_control(opts, "pc").await?))
    } else {
        Ok(None)
    }
}

async fn activate(
    opts: &Arc<Options>,
    status: &Arc<Status>,
    nc: &Nats,
    pc: Option<Nats>,
    lock: Option<HeldLock>,
) -> Result<Active, StartError> {
    let store = open_store(opts, lock).await?;
    serve(opts, status, nc, pc, store, None).await
}

/// Recovers the store's state and serves clients on `nc`: the partition check, the engine,
/// the protocol subscriptions. With `repl` (a clustered leader) the store stays open on
/// failure and when the engine stops: the node's state machine owns it.
pub(crate) async fn serve(
    opts: &Arc<Options>,
    status: &Arc<Status>,
    nc: &Nats,
    pc: Option<Nats>,
    store: Arc<dyn Store>,
    repl: Option<Repl>,
) -> Result<Active, StartError> {
    let owns_store = repl.is_none();
    let (info, recovered) = match recover_store(&store, opts).await {
        Ok(r) => r,
        Err(e) => {
            if owns_store {
                let _ = store.close();
            }
            return Err(e);
        }
    };
    info!("STREAM: Message store is {}", store.kind());
    if let Some(d) = &opts.dir
        && store.kind() == StoreKind::File
    {
        info!("STREAM: Store location: {}", d.display());
    }
    log_limits(opts);
    let close = |e: StartError| {
        if owns_store {
            let _ = store.close();
        }
        e
    };
    let channels: Option<Vec<String>> = opts
        .partitioning
        .then(|| opts.limits.per_channel.keys().cloned().collect());
    let partitions = match (&channels, pc) {
        (Some(list), Some(pc)) => {
            info!("STREAM: Partitioning: serving channels {list:?}");
            let (p, mut inbound) =
                Partitions::new(pc, &opts.cluster_id, &status.server_id, list.clone())
                    .await
                    .map_err(|e| close(StartError::Partitioning(e.into())))?;
            if let Err(e) = p.check_unique(&mut inbound).await {
                p.close().await;
                return Err(close(e.into()));
            }
            let p = Arc::new(p);
            let serving = p.clone();
            let task = tokio::spawn(async move { serving.serve(&mut inbound).await });
            Some((p, task))
        }
        _ => None,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut engine = Engine::new(
        opts.clone(),
        nc.clone(),
        store.clone(),
        &info,
        status.clone(),
        tx.clone(),
        repl,
    );
    engine.recover(recovered);
    let subjects = Subjects::from_info(&info, opts);
    let inbound = match subscribe_protocol(nc, &subjects, channels.as_deref()).await {
        Ok(i) => i,
        Err(e) => {
            if let Some((p, task)) = partitions {
                task.abort();
                p.close().await;
            }
            return Err(close(e));
        }
    };
    let engine = tokio::spawn(engine.run(rx, inbound));
    status.set_engine(Some(tx.clone()));
    info!("STREAM: Streaming Server is ready");
    Ok(Active {
        store,
        owns_store,
        tx,
        engine,
        partitions,
    })
}

/// Starts the fault-tolerance task: standby until the store lock is ours, then active.
async fn start_ft(
    opts: &Arc<Options>,
    status: &Arc<Status>,
    side: &NatsSide,
    group: &str,
    active: &ActiveSlot,
    failed: watch::Sender<Option<String>>,
) -> Result<FtTask, StartError> {
    let lock = match opts.store_type {
        StoreKind::File => StoreLock::File(opts.dir.clone().unwrap_or_default()),
        StoreKind::Sql => StoreLock::sql(&opts.sql.store_options()?, &status.server_id),
        kind => {
            return Err(StartError::Config(format!(
                "ft: the {kind} store is not supported in FT mode"
            )));
        }
    };
    let control = side.connect_control(opts, "ft").await?;
    let subject = ft::subject(&opts.cluster_id, group);
    let mut heartbeats = control
        .control_inbound(&[&subject])
        .await
        .map_err(|e| StartError::Nats(format!("ft: unable to subscribe on ft subject: {e}")))?;
    let pc = partition_connection(opts, side).await?;
    let (stop_tx, mut stop) = watch::channel(false);
    let (opts, status, active) = (opts.clone(), status.clone(), active.clone());
    let ctl = control.clone();
    // The engine's connection (and the control connection) outlive the task: they belong to
    // the server handle, which closes them after the task.
    let nc = side.nc.clone();
    let task = tokio::spawn(async move {
        let hb_interval = ft::randomized(opts.ft_hb_interval);
        let missed = ft::randomized(opts.ft_hb_missed_interval);
        let server_id = status.server_id.clone();
        let held = match ft::standby(&mut heartbeats, &lock, &server_id, missed, &mut stop).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                error!("STREAM: ft: fatal error getting the store lock: {e}");
                status.set_state(ServerState::Failed);
                let _ = failed.send(Some(e.to_string()));
                return;
            }
        };
        // SQL: the lock is refreshed from now on (recovery may take longer than a standby
        // waits for a still tick); losing it stops this server.
        let mut held = held;
        let lost = held.keep();
        let activation = SystemTime::now();
        match activate(&opts, &status, &nc, pc, Some(held)).await {
            Ok(a) => {
                *active.lock().await = Some(a);
                status.set_state(ServerState::FtActive);
                let _ = failed.send(None);
            }
            Err(e) => {
                error!("STREAM: ft: unable to start as the active server: {e}");
                status.set_state(ServerState::Failed);
                let _ = failed.send(Some(e.to_string()));
                return;
            }
        }
        let r = tokio::select! {
            r = ft::active(
                &ctl,
                &mut heartbeats,
                &subject,
                &server_id,
                activation,
                hb_interval,
                &mut stop,
            ) => r.map_err(|e| e.to_string()),
            e = ft::lock_lost(lost) => Err(e),
        };
        if let Err(e) = r {
            status.set_engine(None);
            status.set_state(ServerState::Failed);
            if let Some(a) = active.lock().await.take() {
                a.stop(&nc).await;
            }
            let _ = failed.send(Some(e));
        }
    });
    Ok(FtTask {
        stop: stop_tx,
        task,
        control,
    })
}
