//! Embedding the server: [`start`] binds the listeners and starts the accept loops; the
//! [`ServerHandle`] it returns runs operations on the running server (local connections,
//! lame duck mode, reload) and shuts it down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::client;
use crate::local::{LocalConn, LocalError};
use crate::net::host_port;
use crate::ops::ReloadError;
use crate::options::{AuthError, Options, VERSION};
use crate::state::cluster::Cluster;
use crate::state::{ServerShared, Setup, new_server_id};
use crate::tls::TlsError;

/// A running server. Dropping it does not stop it; call [`ServerHandle::shutdown`].
pub struct ServerHandle {
    /// The running server's shared state, readable for inspection (tests look at the sublist,
    /// the routes and the counters through it); its type is internal and may change.
    pub shared: Arc<ServerShared>,
    accept_task: tokio::task::JoinHandle<()>,
    connections: TaskTracker,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
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
    #[error(transparent)]
    Options(#[from] crate::options::OptionsError),
}

impl ServerHandle {
    pub fn client_addr(&self) -> SocketAddr {
        self.shared.client_addr
    }

    /// Where the route listener listens (`None` without clustering): the port a cluster
    /// option of `-1` picked.
    pub fn route_addr(&self) -> Option<SocketAddr> {
        self.shared.cluster.as_ref().map(|c| c.listen_addr)
    }

    /// Where the HTTP (or HTTPS) monitor listens (`None` when monitoring is off).
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        self.shared.monitor_addr
    }

    /// Adds an embedding service's pages to the monitoring port (see
    /// [`crate::monitor::MonitorRoutes`]); replaces routes set before.
    pub fn set_monitor_routes(&self, routes: std::sync::Arc<dyn crate::monitor::MonitorRoutes>) {
        self.shared.monitor.set_routes(routes);
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

    /// Opens a connection from inside this process, named `name` in monitoring.
    pub fn connect_local(&self, name: &str) -> Result<LocalConn, LocalError> {
        LocalConn::open(self.shared.clone(), name)
    }

    /// Starts lame duck mode in the background; the server shuts itself down at its end
    /// (`stopped()` resolves), and the owner then calls `shutdown`.
    pub fn lame_duck(&self) {
        tokio::spawn(crate::ops::lame_duck(self.shared.clone()));
    }

    /// Whether lame duck mode has started.
    pub fn in_lame_duck(&self) -> bool {
        self.shared.lame_duck.load(Ordering::Relaxed)
    }

    /// Applies a reloaded configuration (SIGHUP). Settings that cannot change on a running
    /// server make the whole reload fail, keeping the old configuration.
    pub fn reload(&self, new: Options) -> Result<(), ReloadError> {
        crate::ops::reload(&self.shared, new)
    }
}

/// Binds the client listener and starts accepting. Logs as nats-server does at start.
pub async fn start(opts: Options) -> Result<ServerHandle, StartError> {
    let auth = opts.auth.authenticator()?;
    let tls = match &opts.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            t,
        )?)),
        None => None,
    };
    let port = if opts.port < 0 { 0 } else { opts.port as u16 };
    let bind = format!("{}:{}", opts.host, port);
    let listener = crate::net::listen(&bind)
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
    if opts.auth.has_plaintext_passwords() {
        tracing::warn!("Plaintext passwords detected, use nkeys or bcrypt");
    }
    if let Some(file) = &opts.config_file {
        info!("Using configuration file: {}", file.display());
    }
    let monitor_listener = crate::monitor::bind(&opts).await?;
    let route_listener = match &opts.cluster {
        Some(c) => Some(
            crate::route::bind(c)
                .await
                .map_err(|source| StartError::Listen {
                    addr: host_port(&c.host, c.port.max(0) as u16),
                    source,
                })?,
        ),
        None => None,
    };
    let cluster = match (&opts.cluster, &route_listener) {
        (Some(c), Some(l)) => Some(Cluster::new(
            c.clone(),
            l.local_addr().map_err(|source| StartError::Listen {
                addr: c.host.clone(),
                source,
            })?,
        )?),
        _ => None,
    };
    let shared = Arc::new(ServerShared::new(Setup {
        opts,
        auth,
        tls,
        cluster,
        server_id,
        server_name,
        client_addr,
        monitor_addr: monitor_listener.as_ref().map(|b| b.addr),
    }));
    info!(
        "Listening for client connections on {}",
        host_port(&shared.opts().host, client_addr.port())
    );
    info!("Server is ready");
    let connections = TaskTracker::new();
    if let Some(bound) = monitor_listener {
        crate::monitor::spawn(shared.clone(), bound, &connections);
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
