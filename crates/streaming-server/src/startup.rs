//! The phases of starting a streaming server, each on its own: connecting to NATS (embedded
//! server or `-ns`), the duplicate-server check, opening and recovering the store,
//! subscribing the protocol subjects, monitoring.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use rnats_client::ConnectOptions;
use rnats_streaming::proto::{CloseRequest, ConnectRequest, ConnectResponse, ServerInfo};
use rnats_streaming::store::crypto::{
    CryptoOptions, CryptoStore, ENCRYPTION_KEY_ENV, encryption_enabled,
};
use rnats_streaming::store::file::FileStore;
use rnats_streaming::store::memory::MemoryStore;
use rnats_streaming::store::sql::SqlStore;
use rnats_streaming::store::{RecoveredState, Store, StoreError, StoreKind};
use tracing::{debug, info};

use crate::ft::HeldLock;
use crate::nats::{Inbound, Kind, Nats};
use crate::options::Options;
use crate::server::StartError;
use crate::status::Status;
use crate::subjects::{Subjects, new_server_info};

/// The NATS side of a server: the embedded core server (None with `-ns`) and the engine's
/// connection.
pub(crate) struct NatsSide {
    pub(crate) embedded: Option<rnats_server::ServerHandle>,
    pub(crate) nc: Nats,
    pub(crate) url: String,
}

impl NatsSide {
    /// Closes the connection and stops the embedded server (start-up failed).
    pub(crate) async fn abandon<T>(self, e: StartError) -> Result<T, StartError> {
        self.nc.close().await;
        if let Some(n) = self.embedded {
            n.shutdown(Duration::from_secs(1)).await;
        }
        Err(e)
    }
}

pub(crate) fn log_limits(opts: &Options) {
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

/// The embedded NATS server with a local connection to it, or a client connection to the
/// `-ns` servers.
pub(crate) async fn connect_nats(opts: &Options) -> Result<NatsSide, StartError> {
    let name = format!("_NSS-{}-general", opts.cluster_id);
    let Some(url) = &opts.nats_server_url else {
        // The embedded server's monitoring port is the streaming one: `start_monitor` adds
        // the streaming pages to it.
        let nopts = monitor_options(opts);
        let handle = rnats_server::start(nopts)
            .await
            .map_err(|e| StartError::Nats(e.to_string()))?;
        let url = loopback(handle.client_addr());
        // A local connection: no socket in between.
        return match handle.connect_local(&name) {
            Ok(c) => Ok(NatsSide {
                embedded: Some(handle),
                nc: Nats::Local(Arc::new(c)),
                url,
            }),
            Err(e) => {
                handle.shutdown(Duration::from_secs(1)).await;
                Err(StartError::Nats(format!("unable to connect to NATS: {e}")))
            }
        };
    };
    let urls: Vec<String> = url
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    info!("STREAM: Connecting to NATS Server at {}", urls.join(","));
    match client_options(opts, name).connect(urls.clone()).await {
        Ok(nc) => Ok(NatsSide {
            embedded: None,
            nc: Nats::Remote(nc),
            url: urls.join(","),
        }),
        Err(e) => Err(StartError::Nats(format!(
            "unable to connect to NATS at {}: {e}",
            urls.join(",")
        ))),
    }
}

/// The options of the server's client connections (`-ns`).
fn client_options(opts: &Options, name: String) -> ConnectOptions {
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
        copts = copts.user_and_password(u.clone(), opts.password.clone().unwrap_or_default());
    }
    copts
}

impl NatsSide {
    /// Another connection to the same NATS, for server-to-server control traffic (FT
    /// heartbeats, partitioning lists), named `_NSS-<cluster id>-<what>`: it never shares
    /// the client traffic's connection, so a busy engine cannot delay it.
    pub(crate) async fn connect_control(
        &self,
        opts: &Options,
        what: &str,
    ) -> Result<Nats, StartError> {
        let name = format!("_NSS-{}-{what}", opts.cluster_id);
        match &self.embedded {
            Some(n) => n
                .connect_local(&name)
                .map(|c| Nats::Local(Arc::new(c)))
                .map_err(|e| StartError::Nats(format!("unable to connect to NATS: {e}"))),
            None => {
                let urls: Vec<&str> = self.url.split(',').collect();
                client_options(opts, name)
                    .connect(urls)
                    .await
                    .map(Nats::Remote)
                    .map_err(|e| {
                        StartError::Nats(format!("unable to connect to NATS at {}: {e}", self.url))
                    })
            }
        }
    }
}

impl NatsSide {
    /// A client connection to the same NATS, named `_NSS-<cluster id>-<what>` (RAFT traffic,
    /// which the NATS transport carries over client connections, embedded server or not).
    pub(crate) async fn client(
        &self,
        opts: &Options,
        what: &str,
    ) -> Result<rnats_client::Client, StartError> {
        let name = format!("_NSS-{}-{what}", opts.cluster_id);
        let urls: Vec<&str> = self.url.split(',').collect();
        client_options(opts, name).connect(urls).await.map_err(|e| {
            StartError::Nats(format!("unable to connect to NATS at {}: {e}", self.url))
        })
    }
}

/// Whether another streaming server with this cluster ID answers on the discovery subject
/// (its test connection is closed again).
pub(crate) async fn another_server_answers(nc: &Nats, opts: &Options) -> bool {
    let discover = format!("{}.{}", opts.discover_prefix, opts.cluster_id);
    let req = ConnectRequest {
        client_id: opts.cluster_id.clone(),
        heartbeat_inbox: nc.new_inbox(),
        ..Default::default()
    };
    let wait = Duration::from_millis(250);
    let r = nc
        .request(&discover, Bytes::from(req.encode_to_vec()), wait)
        .await;
    let Ok(resp) = r.map(ConnectResponse::decode) else {
        return false;
    };
    let Ok(resp) = resp else {
        return false;
    };
    if resp.error.is_empty() && !resp.close_requests.is_empty() {
        let close = CloseRequest {
            client_id: opts.cluster_id.clone(),
        };
        let _ = nc
            .request(
                &resp.close_requests,
                Bytes::from(close.encode_to_vec()),
                wait,
            )
            .await;
    }
    true
}

/// The encryption settings when the store is to be encrypted (`--encrypt`, or a key given
/// by flag or configuration), the key taken from `NATS_STREAMING_ENCRYPTION_KEY` first.
pub(crate) fn crypto_options(opts: &Options) -> Result<Option<CryptoOptions>, StartError> {
    let configured = opts.encryption_key.as_ref().map(|k| k.as_bytes());
    if !encryption_enabled(opts.encrypt, configured) {
        return Ok(None);
    }
    let env = std::env::var_os(ENCRYPTION_KEY_ENV).map(|v| v.into_encoded_bytes());
    CryptoOptions::resolve(&opts.encryption_cipher, env.as_deref(), configured)
        .map(Some)
        .map_err(|e| StartError::Config(e.to_string()))
}

/// Opens the store `-st` names (on a blocking thread: the file store reads its files, the SQL
/// store its database), with its lock when the FT standby took it already, encrypted when
/// asked; a nats-streaming-server file store is migrated first (see `migration`). A wrong
/// encryption key is refused here, naming the channel it does not open.
pub(crate) async fn open_store(
    opts: &Options,
    lock: Option<HeldLock>,
) -> Result<Arc<dyn Store>, StartError> {
    let limits = opts.limits.clone();
    let crypto = crypto_options(opts)?;
    let kind = opts.store_type;
    let dir = opts.dir.clone().unwrap_or_default();
    let fo = opts.file_options.clone();
    // A nats-streaming-server file store in `dir` is converted first (FILE only).
    let lock = crate::migration::migrate_at_startup(opts, lock).await?;
    // SQL: the options were checked at start; this only converts them.
    let sql = match kind {
        StoreKind::Sql => Some(opts.sql.store_options()?),
        _ => None,
    };
    let open = move || -> Result<Arc<dyn Store>, StoreError> {
        let inner: Box<dyn Store> = match (kind, lock) {
            (StoreKind::File, Some(HeldLock::File(l))) => {
                Box::new(FileStore::open_locked(l, fo, limits)?)
            }
            (StoreKind::File, None) => Box::new(FileStore::open(dir, fo, limits)?),
            (StoreKind::Sql, held) => {
                let so = sql.ok_or(StoreError::Closed)?;
                match held {
                    Some(HeldLock::Sql(h)) => h.open_store(so, limits)?,
                    _ => Box::new(SqlStore::open(so, limits)?),
                }
            }
            _ => Box::new(MemoryStore::new(limits)?),
        };
        match crypto {
            None => Ok(Arc::from(inner)),
            Some(c) => {
                let store = CryptoStore::new(inner, c);
                if let Err(e) = store.verify_key() {
                    let _ = store.close();
                    return Err(e);
                }
                Ok(Arc::new(store))
            }
        }
    };
    match tokio::task::spawn_blocking(open).await {
        Ok(r) => r.map_err(|e| StartError::Store(e.to_string())),
        Err(e) => Err(StartError::Store(e.to_string())),
    }
}

/// Recovers the store's state and the server info (written to a new store).
pub(crate) async fn recover_store(
    store: &Arc<dyn Store>,
    opts: &Options,
) -> Result<(ServerInfo, RecoveredState), StartError> {
    info!("STREAM: Recovering the state...");
    let st = store.clone();
    let recovered = match tokio::task::spawn_blocking(move || st.recover()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(StartError::Store(e.to_string())),
        Err(e) => return Err(StartError::Store(e.to_string())),
    };
    let info = match &recovered.info {
        Some(i) => {
            if i.cluster_id != opts.cluster_id {
                return Err(StartError::Config(format!(
                    "cluster ID \"{}\" does not match recovered value of \"{}\"",
                    opts.cluster_id, i.cluster_id
                )));
            }
            let mut i = i.clone();
            i.discovery = format!("{}.{}", opts.discover_prefix, opts.cluster_id);
            i
        }
        None => {
            let i = new_server_info(opts);
            store
                .init(&i)
                .map_err(|e| StartError::Store(e.to_string()))?;
            i
        }
    };
    if recovered.info.is_none() || (recovered.clients.is_empty() && recovered.channels.is_empty()) {
        info!("STREAM: No recovered state");
    } else {
        info!("STREAM: Recovered {} channel(s)", recovered.channels.len());
        info!("STREAM: Recovered {} client(s)", recovered.clients.len());
    }
    Ok((info, recovered))
}

/// Subscribes the protocol subjects, by priority (see `nats::Inbound`): acks, connects
/// (before publishes, so that a publish never overtakes the connect of its client), then
/// publishes on every channel, or only on `channels` (partitioning).
pub(crate) async fn subscribe_protocol(
    nc: &Nats,
    subjects: &Subjects,
    channels: Option<&[String]>,
) -> Result<Inbound, StartError> {
    let mut subs = vec![
        (format!("{}.*", subjects.acks), Kind::Ack),
        (subjects.discover.clone(), Kind::Connect),
    ];
    match channels {
        Some(list) => {
            for c in list {
                subs.push((format!("{}.{c}", subjects.publish), Kind::Publish));
            }
        }
        None => subs.push((format!("{}.>", subjects.publish), Kind::Publish)),
    }
    subs.extend([
        (subjects.ping.clone(), Kind::Ping),
        (subjects.subscribe.clone(), Kind::Subscribe),
        (subjects.unsubscribe.clone(), Kind::Unsubscribe),
        (subjects.sub_close.clone(), Kind::SubClose),
        (subjects.close.clone(), Kind::Close),
    ]);
    let failed = |subject: &str, e: &dyn std::fmt::Display| {
        StartError::Nats(format!("subscribe {subject}: {e}"))
    };
    match nc {
        Nats::Local(conn) => {
            let mut kinds = Vec::new();
            for (subject, kind) in subs {
                let sid = conn
                    .subscribe(&subject, None)
                    .map_err(|e| failed(&subject, &e))?;
                kinds.push((sid, kind));
                debug!("STREAM: Subscribed to {subject}");
            }
            Ok(Inbound::local(conn.clone(), kinds))
        }
        Nats::Remote(client) => {
            let mut streams = Vec::new();
            for (subject, kind) in subs {
                let s = client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| failed(&subject, &e))?;
                streams.push((kind, s));
                debug!("STREAM: Subscribed to {subject}");
            }
            client
                .flush()
                .await
                .map_err(|e| StartError::Nats(e.to_string()))?;
            Ok(Inbound::remote(streams))
        }
    }
}

/// The NATS options with the monitoring port the streaming options ask for: `-m` (else the
/// NATS configuration's `http`/`http_port`), or `-ms`/`https` for HTTPS; on the
/// configuration's `http` host if given, else on the `-a` host, as nats-server.
fn monitor_options(opts: &Options) -> rnats_server::Options {
    let mut nopts = opts.nats.clone();
    if opts.http_port != 0 {
        nopts.http_port = opts.http_port;
    }
    if !opts.http_host.is_empty() {
        nopts.http_host = Some(opts.http_host.clone());
    }
    nopts
}

/// Monitoring that needs stopping with the server: only the `-ns` listener (the embedded
/// server's monitor stops with it).
pub(crate) struct MonitorTask(Option<rnats_server::monitor::StandaloneMonitor>);

impl MonitorTask {
    pub(crate) fn abort(&self) {
        if let Some(m) = &self.0 {
            m.stop();
        }
    }
}

/// Adds the `/streaming` pages to the monitoring port (None when monitoring is off): the
/// embedded server's, or with `-ns` a listener of their own.
pub(crate) async fn start_monitor(
    opts: &Options,
    side: &NatsSide,
    status: &Arc<Status>,
) -> Result<Option<(SocketAddr, MonitorTask)>, StartError> {
    let routes = Arc::new(crate::monitor::StreamingRoutes {
        status: status.clone(),
    });
    let (addr, secure, task) = match &side.embedded {
        Some(n) => {
            let Some(addr) = n.monitor_addr() else {
                return Ok(None);
            };
            n.set_monitor_routes(routes);
            let secure = opts.nats.https_port != 0 && opts.http_port == 0;
            (addr, secure, MonitorTask(None))
        }
        None => {
            let nopts = monitor_options(opts);
            let started = rnats_server::monitor::start_standalone(&nopts, routes).await;
            match started.map_err(|e| StartError::Nats(e.to_string()))? {
                Some(m) => (m.addr(), m.secure(), MonitorTask(Some(m))),
                None => return Ok(None),
            }
        }
    };
    let scheme = if secure { "https" } else { "http" };
    info!("STREAM: Starting monitoring on {scheme}://{addr}/streaming");
    Ok(Some((addr, task)))
}
