//! Starting and stopping a streaming server: the embedded (or external) NATS server, the
//! engine's NATS connection and subscriptions, the store, recovery and monitoring.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use rnats_client::ConnectOptions;
use rnats_streaming::proto::{CloseRequest, ConnectRequest, ConnectResponse};
use rnats_streaming::store::file::FileStore;
use rnats_streaming::store::memory::MemoryStore;
use rnats_streaming::store::{Store, StoreKind};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::engine::{Engine, Event};
use crate::nats::{Inbound, Kind, Nats};
use crate::options::{Options, VERSION};
use crate::subjects::{Subjects, new_server_info};

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
}

/// A running streaming server. Stop it with [`StreamingServer::shutdown`].
pub struct StreamingServer {
    opts: Arc<Options>,
    nats: Option<rnats_server::ServerHandle>,
    nc: Nats,
    store: Arc<dyn Store>,
    tx: mpsc::UnboundedSender<Event>,
    engine: JoinHandle<()>,
    monitor: Option<(SocketAddr, JoinHandle<()>)>,
    nats_url: String,
}

impl StreamingServer {
    /// The URL the engine connected to (the embedded server's, or `-ns`).
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// The embedded NATS server's client address (None with `-ns`).
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.nats.as_ref().map(|n| n.client_addr())
    }

    /// Where `/streaming/...` monitoring listens.
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        self.monitor.as_ref().map(|(a, _)| *a)
    }

    pub fn cluster_id(&self) -> &str {
        &self.opts.cluster_id
    }

    /// Resolves when the embedded NATS server has been told to stop.
    pub async fn stopped(&self) {
        match &self.nats {
            Some(n) => n.stopped().await,
            None => std::future::pending().await,
        }
    }

    /// Stops: drains the engine, closes the store and the NATS connection, then stops the
    /// embedded NATS server.
    pub async fn shutdown(self) {
        info!("STREAM: Shutting down.");
        if let Some((_, m)) = &self.monitor {
            m.abort();
        }
        let (done, wait) = oneshot::channel();
        if self.tx.send(Event::Shutdown(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.engine).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.nc.flush()).await;
        self.nc.close().await;
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        if let Some(n) = self.nats {
            n.shutdown(Duration::from_secs(2)).await;
        }
    }
}

fn log_limits(opts: &Options) {
    let l = &opts.limits;
    let c = &l.channel;
    let show = |n: u64| {
        if n == 0 {
            "unlimited".to_string()
        } else {
            n.to_string()
        }
    };
    let dur = |d: Duration| {
        if d.is_zero() {
            "unlimited".to_string()
        } else {
            format!("{d:?}")
        }
    };
    info!("STREAM: ---------- Store Limits ----------");
    info!("STREAM: Channels:            {:>13}", show(l.max_channels));
    info!("STREAM: --------- Channels Limits --------");
    info!("STREAM:   Subscriptions:     {:>13}", show(c.max_subs));
    info!("STREAM:   Messages     :     {:>13}", show(c.max_msgs));
    info!("STREAM:   Bytes        :     {:>13}", show(c.max_bytes));
    info!("STREAM:   Age          :     {:>13}", dur(c.max_age));
    info!("STREAM:   Inactivity   :     {:>13}", dur(c.max_inactivity));
    info!("STREAM: ----------------------------------");
}

fn loopback(addr: SocketAddr) -> String {
    let ip = addr.ip();
    let host = if ip.is_unspecified() {
        if ip.is_ipv4() {
            "127.0.0.1".to_string()
        } else {
            "[::1]".to_string()
        }
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!("nats://{host}:{}", addr.port())
}

/// Starts a streaming server.
pub async fn start(opts: Options) -> Result<StreamingServer, StartError> {
    opts.validate().map_err(StartError::Config)?;
    let mut opts = opts;
    info!(
        "STREAM: Starting nats-streaming-server[{}] version {VERSION}",
        opts.cluster_id
    );

    // The NATS server: embedded, or external with -ns.
    let mut nats = None;
    let urls: Vec<String> = match &opts.nats_server_url {
        Some(u) => u
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => {
            let mut nopts = opts.nats.clone();
            // The streaming monitor takes the -m port and forwards NATS paths to this one.
            nopts.http_port = if opts.http_port != 0 { -1 } else { 0 };
            nopts.http_host = Some("127.0.0.1".to_string());
            let handle = rnats_server::start(nopts)
                .await
                .map_err(|e| StartError::Nats(e.to_string()))?;
            let url = loopback(handle.client_addr());
            nats = Some(handle);
            vec![url]
        }
    };
    if opts.nats_server_url.is_some() {
        info!("STREAM: Connecting to NATS Server at {}", urls.join(","));
    }

    let name = format!("_NSS-{}-general", opts.cluster_id);
    let nc = match &nats {
        // The embedded server: a local connection, no socket in between.
        Some(n) => match n.connect_local(&name) {
            Ok(c) => Nats::Local(Arc::new(c)),
            Err(e) => {
                if let Some(n) = nats {
                    n.shutdown(Duration::from_secs(1)).await;
                }
                return Err(StartError::Nats(format!("unable to connect to NATS: {e}")));
            }
        },
        None => {
            let mut copts = ConnectOptions::new()
                .name(name)
                .max_reconnects(None)
                .reconnect_delay(
                    Duration::from_millis(250),
                    Duration::from_millis(250),
                    Duration::ZERO,
                )
                .request_timeout(Duration::from_secs(2));
            if let Some(t) = &opts.token {
                copts = copts.token(t.clone());
            } else if let Some(u) = &opts.username {
                copts =
                    copts.user_and_password(u.clone(), opts.password.clone().unwrap_or_default());
            }
            match copts.connect(urls.clone()).await {
                Ok(nc) => Nats::Remote(nc),
                Err(e) => {
                    return Err(StartError::Nats(format!(
                        "unable to connect to NATS at {}: {e}",
                        urls.join(",")
                    )));
                }
            }
        }
    };
    let nats_url = urls.join(",");

    let fail = |nats: Option<rnats_server::ServerHandle>, nc: Nats, e: StartError| async move {
        nc.close().await;
        if let Some(n) = nats {
            n.shutdown(Duration::from_secs(1)).await;
        }
        Err::<StreamingServer, StartError>(e)
    };

    // Refuse to run next to another server with the same cluster ID.
    if opts.startup_check {
        let discover = format!("{}.{}", opts.discover_prefix, opts.cluster_id);
        let req = ConnectRequest {
            client_id: opts.cluster_id.clone(),
            heartbeat_inbox: nc.new_inbox(),
            ..Default::default()
        };
        let r = nc
            .request(
                &discover,
                Bytes::from(req.encode_to_vec()),
                Duration::from_millis(250),
            )
            .await;
        if let Ok(payload) = r
            && let Ok(resp) = ConnectResponse::decode(payload)
        {
            if resp.error.is_empty() && !resp.close_requests.is_empty() {
                let close = CloseRequest {
                    client_id: opts.cluster_id.clone(),
                };
                let _ = nc
                    .request(
                        &resp.close_requests,
                        Bytes::from(close.encode_to_vec()),
                        Duration::from_millis(250),
                    )
                    .await;
            }
            return fail(nats, nc, StartError::Duplicate(opts.cluster_id.clone())).await;
        }
    }

    // The store.
    let server_id = nuid::next().to_string();
    info!("STREAM: ServerID: {server_id}");
    info!("STREAM: Go version: rust (rnats-streaming-server)");
    info!("STREAM: Git commit: [not set]");
    let limits = opts.limits.clone();
    let store: Arc<dyn Store> = match opts.store_type {
        StoreKind::Memory => match MemoryStore::new(limits) {
            Ok(s) => Arc::new(s),
            Err(e) => return fail(nats, nc, StartError::Store(e.to_string())).await,
        },
        StoreKind::File => {
            let dir = opts.dir.clone().unwrap_or_default();
            let fo = opts.file_options.clone();
            let r = tokio::task::spawn_blocking(move || FileStore::open(dir, fo, limits)).await;
            match r {
                Ok(Ok(s)) => Arc::new(s),
                Ok(Err(e)) => return fail(nats, nc, StartError::Store(e.to_string())).await,
                Err(e) => return fail(nats, nc, StartError::Store(e.to_string())).await,
            }
        }
        StoreKind::Sql => {
            return fail(
                nats,
                nc,
                StartError::Config("SQL store not supported".into()),
            )
            .await;
        }
    };
    info!("STREAM: Recovering the state...");
    let st = store.clone();
    let recovered = match tokio::task::spawn_blocking(move || st.recover()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return fail(nats, nc, StartError::Store(e.to_string())).await,
        Err(e) => return fail(nats, nc, StartError::Store(e.to_string())).await,
    };
    let info = match &recovered.info {
        Some(i) => {
            if i.cluster_id != opts.cluster_id {
                let e = format!(
                    "cluster ID \"{}\" does not match recovered value of \"{}\"",
                    opts.cluster_id, i.cluster_id
                );
                let _ = store.close();
                return fail(nats, nc, StartError::Config(e)).await;
            }
            let mut i = i.clone();
            i.discovery = format!("{}.{}", opts.discover_prefix, opts.cluster_id);
            i
        }
        None => {
            let i = new_server_info(&opts);
            if let Err(e) = store.init(&i) {
                return fail(nats, nc, StartError::Store(e.to_string())).await;
            }
            i
        }
    };
    if recovered.info.is_none() || (recovered.clients.is_empty() && recovered.channels.is_empty()) {
        info!("STREAM: No recovered state");
    } else {
        info!("STREAM: Recovered {} channel(s)", recovered.channels.len());
        info!("STREAM: Recovered {} client(s)", recovered.clients.len());
    }
    opts.nats.http_port = 0;
    let opts = Arc::new(opts);
    let subjects = Subjects::from_info(&info, &opts);
    info!("STREAM: Message store is {}", store.kind());
    if let Some(d) = &opts.dir
        && store.kind() == StoreKind::File
    {
        info!("STREAM: Store location: {}", d.display());
    }
    log_limits(&opts);

    let (tx, rx) = mpsc::unbounded_channel();
    let mut engine = Engine::new(
        opts.clone(),
        nc.clone(),
        store.clone(),
        &info,
        server_id,
        tx.clone(),
    );
    engine.recover(recovered);

    // Protocol subscriptions, by priority (see `nats::Inbound`).
    let subs = [
        (format!("{}.*", subjects.acks), Kind::Ack),
        (format!("{}.>", subjects.publish), Kind::Publish),
        (subjects.discover.clone(), Kind::Connect),
        (subjects.ping.clone(), Kind::Ping),
        (subjects.subscribe.clone(), Kind::Subscribe),
        (subjects.unsubscribe.clone(), Kind::Unsubscribe),
        (subjects.sub_close.clone(), Kind::SubClose),
        (subjects.close.clone(), Kind::Close),
    ];
    let inbound = match &nc {
        Nats::Local(conn) => {
            let mut kinds = Vec::new();
            for (subject, kind) in subs {
                match conn.subscribe(&subject, None) {
                    Ok(sid) => kinds.push((sid, kind)),
                    Err(e) => {
                        let e = StartError::Nats(format!("subscribe {subject}: {e}"));
                        return fail(nats, nc, e).await;
                    }
                }
                debug!("STREAM: Subscribed to {subject}");
            }
            Inbound::local(conn.clone(), kinds)
        }
        Nats::Remote(client) => {
            let mut streams = Vec::new();
            for (subject, kind) in subs {
                match client.subscribe(subject.clone()).await {
                    Ok(s) => streams.push((kind, s)),
                    Err(e) => {
                        let e = StartError::Nats(format!("subscribe {subject}: {e}"));
                        return fail(nats, nc, e).await;
                    }
                }
                debug!("STREAM: Subscribed to {subject}");
            }
            if let Err(e) = client.flush().await {
                return fail(nats, nc, StartError::Nats(e.to_string())).await;
            }
            Inbound::remote(streams)
        }
    };
    let engine = tokio::spawn(engine.run(rx, inbound));

    // Monitoring.
    let mut monitor = None;
    if opts.http_port != 0 {
        let port = if opts.http_port < 0 {
            0
        } else {
            opts.http_port
        };
        let addr = format!("{}:{port}", opts.http_host);
        let listener = match TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(source) => {
                engine.abort();
                return fail(nats, nc, StartError::Monitor { addr, source }).await;
            }
        };
        let local = listener
            .local_addr()
            .map_err(|source| StartError::Monitor {
                addr: addr.clone(),
                source,
            })?;
        info!("STREAM: Starting monitoring on http://{local}/streaming");
        let nats_monitor = nats.as_ref().and_then(|n| n.monitor_addr());
        let task = tokio::spawn(crate::monitor::serve(listener, tx.clone(), nats_monitor));
        monitor = Some((local, task));
    }

    info!("STREAM: Streaming Server is ready");
    Ok(StreamingServer {
        opts,
        nats,
        nc,
        store,
        tx,
        engine,
        monitor,
        nats_url,
    })
}
