//! The server: listener, accept loop, shared state and shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rand::Rng;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::auth::Authenticator;
use crate::client;
use crate::cluster::Cluster;
use crate::conn::ClientShared;
use crate::options::{Options, VERSION};
use crate::sublist::Sublist;
use crate::subscription::Subscription;

/// Server-wide counters.
#[derive(Default)]
pub struct Stats {
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    pub out_msgs: AtomicU64,
    pub out_bytes: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub total_connections: AtomicU64,
}

/// State shared by every connection task.
pub struct ServerShared {
    /// The options in force; replaced as a whole by a configuration reload.
    options: RwLock<Arc<Options>>,
    auth: RwLock<Arc<Authenticator>>,
    /// Set when the client port requires TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Set when clustering is on.
    pub cluster: Option<Cluster>,
    pub server_id: String,
    pub server_name: String,
    pub sublist: Sublist<Subscription>,
    pub clients: Mutex<HashMap<u64, Arc<ClientShared>>>,
    pub stats: Stats,
    pub shutdown: CancellationToken,
    /// Cancelled when lame duck mode closes the client listener.
    pub stop_accepting: CancellationToken,
    /// Lame duck mode: INFO says `ldm` and lists only the other servers.
    pub lame_duck: std::sync::atomic::AtomicBool,
    pub started: SystemTime,
    /// The client listener's actual address (after port -1 / 0 is resolved).
    pub client_addr: SocketAddr,
    /// The monitoring listener's address, when monitoring is on.
    pub monitor_addr: Option<SocketAddr>,
    pub monitor: crate::monitor::MonitorState,
    next_cid: AtomicU64,
}

/// The INFO fields a client sees, in the reference's order.
#[derive(Serialize)]
struct Info<'a> {
    server_id: &'a str,
    server_name: &'a str,
    version: &'a str,
    proto: u8,
    go: &'a str,
    host: &'a str,
    port: u16,
    headers: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    auth_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_verify: bool,
    max_payload: usize,
    client_id: u64,
    client_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_urls: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ldm: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    connect_info: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_account: Option<&'a str>,
}

impl ServerShared {
    /// The options in force (a reload may replace them; existing connections keep theirs
    /// where nats-server does too).
    pub fn opts(&self) -> Arc<Options> {
        self.options.read().clone()
    }

    /// How clients authenticate now.
    pub fn auth(&self) -> Arc<Authenticator> {
        self.auth.read().clone()
    }

    pub(crate) fn replace_options(&self, opts: Options, auth: Authenticator) {
        *self.options.write() = Arc::new(opts);
        *self.auth.write() = Arc::new(auth);
    }

    pub fn next_cid(&self) -> u64 {
        self.next_cid.fetch_add(1, Ordering::Relaxed)
    }

    /// The `INFO {…} ␍␊` line for a new client, or (with `connect_info`) the one that
    /// follows the first PONG of a protocol-1 client and names its account.
    pub fn client_info_line(
        &self,
        cid: u64,
        addr: SocketAddr,
        nonce: Option<&str>,
        connect_info: bool,
    ) -> Vec<u8> {
        let (host, port) = self.advertised_client_host_port();
        let info = Info {
            server_id: &self.server_id,
            server_name: &self.server_name,
            version: VERSION,
            proto: 1,
            go: "rnats",
            host: &host,
            port,
            headers: !self.opts().no_header_support,
            auth_required: self.auth().required(),
            tls_required: self.tls.is_some(),
            tls_verify: self.opts().tls.as_ref().is_some_and(|t| t.verify),
            max_payload: self.opts().max_payload,
            client_id: cid,
            client_ip: addr.ip().to_string(),
            nonce,
            cluster: self.cluster.as_ref().map(|c| c.name.lock().clone()),
            connect_urls: self.connect_urls(),
            ldm: self.lame_duck.load(Ordering::Relaxed),
            connect_info,
            remote_account: connect_info.then_some("$G"),
        };
        let mut line = b"INFO ".to_vec();
        serde_json::to_writer(&mut line, &info).expect("INFO serializes");
        line.extend_from_slice(b" \r\n");
        line
    }

    fn advertised_client_host_port(&self) -> (String, u16) {
        if let Some(adv) = &self.opts().client_advertise {
            if let Some((h, p)) = adv.rsplit_once(':')
                && let Ok(p) = p.parse()
            {
                return (h.trim_matches(['[', ']']).to_string(), p);
            }
            return (adv.clone(), self.client_addr.port());
        }
        (self.opts().host.clone(), self.client_addr.port())
    }

    /// Adds a connection; false when `max_connections` is reached.
    pub fn register(&self, client: &Arc<ClientShared>) -> bool {
        let mut clients = self.clients.lock();
        let max = self.opts().max_connections.unwrap_or(0);
        if clients.len() >= max {
            return false;
        }
        clients.insert(client.cid, client.clone());
        self.stats.total_connections.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub fn unregister(&self, client: &Arc<ClientShared>) {
        self.clients.lock().remove(&client.cid);
    }

    pub fn num_clients(&self) -> usize {
        self.clients.lock().len()
    }

    /// Removes a subscription from the index and its connection (UNSUB, auto-unsubscribe).
    pub fn remove_subscription(&self, sub: &Arc<Subscription>) {
        if sub.mark_closed() {
            return;
        }
        sub.client.subs.lock().remove(&sub.sid);
        self.sublist.remove(&sub.subject, sub.queue.as_deref(), sub);
        self.local_interest_changed(&sub.subject, sub.queue.as_deref(), -1);
    }
}

/// A 56-character id in the shape of an nkey server public key (`N…`, base32).
fn new_server_id() -> String {
    format!("N{}", random_id(55))
}

/// `len` random base32 characters (server ids, generated cluster names).
pub fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A running server. Dropping it does not stop it; call [`ServerHandle::shutdown`].
pub struct ServerHandle {
    pub shared: Arc<ServerShared>,
    accept_task: tokio::task::JoinHandle<()>,
    connections: TaskTracker,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("Error listening on port: {addr}, \"{source}\"")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "Can't start monitoring: can't listen to the monitor port: listen tcp {addr}: {source}"
    )]
    Monitor {
        addr: String,
        source: std::io::Error,
    },
}

impl ServerHandle {
    pub fn client_addr(&self) -> SocketAddr {
        self.shared.client_addr
    }

    /// Where the HTTP monitor listens (`None` when `http_port` is 0).
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        self.shared.monitor_addr
    }

    /// Closes the listener and every connection (flushing what they have queued), then
    /// waits for the connection tasks to finish, for at most `grace`.
    pub async fn shutdown(self, grace: Duration) {
        self.shared.shutdown.cancel();
        let _ = self.accept_task.await;
        self.connections.close();
        let _ = tokio::time::timeout(grace, self.connections.wait()).await;
    }

    /// Resolves when the server has been told to shut down.
    pub async fn stopped(&self) {
        self.shared.shutdown.cancelled().await;
    }
}

/// Binds the client listener and starts accepting. Logs as nats-server does at start.
pub async fn start(opts: Options) -> Result<ServerHandle, StartError> {
    let auth = opts.auth.authenticator().map_err(StartError::Config)?;
    let tls = match &opts.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::server_config(t).map_err(StartError::Config)?,
        )),
        None => None,
    };
    let port = if opts.port < 0 { 0 } else { opts.port as u16 };
    let bind = format!("{}:{}", opts.host, port);
    let listener = TcpListener::bind(&bind)
        .await
        .map_err(|source| StartError::Listen {
            addr: bind.clone(),
            source,
        })?;
    let client_addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr: bind, source })?;
    let server_id = new_server_id();
    let server_name = opts
        .server_name
        .clone()
        .unwrap_or_else(|| server_id.clone());
    info!("Starting rnats-server");
    info!("  Version:  {VERSION}");
    info!("  Git:      [not set]");
    info!("  Name:     {server_name}");
    info!("  ID:       {server_id}");
    if let Some(file) = &opts.config_file {
        info!("Using configuration file: {}", file.display());
    }
    let monitor_listener = match crate::monitor::bind_addr(&opts) {
        Some(addr) => {
            let host = opts.http_host.as_deref().unwrap_or(&opts.host);
            let (listener, local) = crate::monitor::bind(&addr, host)
                .await
                .map_err(|source| StartError::Monitor { addr, source })?;
            Some((listener, local))
        }
        None => None,
    };
    let monitor = crate::monitor::MonitorState::new(&opts);
    let route_listener = match &opts.cluster {
        Some(c) => Some(
            crate::route::bind(c)
                .await
                .map_err(|source| StartError::Listen {
                    addr: crate::cluster::format_host_port(&c.host, c.port.max(0) as u16),
                    source,
                })?,
        ),
        None => None,
    };
    let cluster = match (&opts.cluster, &route_listener) {
        (Some(c), Some(l)) => Some(
            Cluster::new(
                c.clone(),
                l.local_addr().map_err(|source| StartError::Listen {
                    addr: c.host.clone(),
                    source,
                })?,
            )
            .map_err(StartError::Config)?,
        ),
        _ => None,
    };
    let shared = Arc::new(ServerShared {
        options: RwLock::new(Arc::new(opts)),
        auth: RwLock::new(Arc::new(auth)),
        tls,
        cluster,
        server_id,
        server_name,
        sublist: Sublist::new(),
        clients: Mutex::new(HashMap::new()),
        stats: Stats::default(),
        shutdown: CancellationToken::new(),
        stop_accepting: CancellationToken::new(),
        lame_duck: std::sync::atomic::AtomicBool::new(false),
        started: SystemTime::now(),
        client_addr,
        monitor_addr: monitor_listener.as_ref().map(|(_, addr)| *addr),
        monitor,
        next_cid: AtomicU64::new(1),
    });
    info!(
        "Listening for client connections on {}",
        format_addr(&shared.opts().host, client_addr.port())
    );
    info!("Server is ready");
    let connections = TaskTracker::new();
    if let Some((listener, _)) = monitor_listener {
        connections.spawn(crate::monitor::serve(shared.clone(), listener));
    }
    let accept_task = tokio::spawn(accept_loop(shared.clone(), listener, connections.clone()));
    if let Some(listener) = route_listener {
        if shared.cluster.as_ref().is_some_and(|c| c.dynamic_name) {
            tracing::warn!("Cluster name was dynamically generated, consider setting one");
        }
        tokio::spawn(crate::route::accept_loop(shared.clone(), listener));
        for url in shared
            .opts()
            .cluster
            .as_ref()
            .map(|c| c.routes.clone())
            .unwrap_or_default()
        {
            tokio::spawn(crate::route::solicit_forever(shared.clone(), url));
        }
    }
    Ok(ServerHandle {
        shared,
        accept_task,
        connections,
    })
}

pub(crate) fn format_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn accept_loop(shared: Arc<ServerShared>, listener: TcpListener, connections: TaskTracker) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            () = shared.stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                backoff = Duration::from_millis(10);
                let _ = stream.set_nodelay(true);
                connections.spawn(client::accept(shared.clone(), stream, addr));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                error!(
                    "Temporary accept error: {e}, sleeping {}ms",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    info!("Server Exiting..");
}
