//! The state every task of the server shares, as one [`ServerShared`] behind an `Arc`: the
//! options in force, the sublist, the connections, counters, shutdown tokens, and the two
//! parts kept for other concerns, the cluster's ([`cluster`]) and monitoring's
//! ([`monitor`]). Connections reach the rest of the server only through this type.

pub mod cluster;
pub mod monitor;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use self::cluster::Cluster;
use self::monitor::MonitorState;
use crate::auth::Authenticator;
use crate::conn::ClientShared;
use crate::conn::Subscription;
use crate::options::Options;
use crate::sublist::Sublist;

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
    pub lame_duck: AtomicBool,
    pub started: SystemTime,
    /// The client listener's actual address (after port -1 / 0 is resolved).
    pub client_addr: SocketAddr,
    /// The monitoring listener's address, when monitoring is on.
    pub monitor_addr: Option<SocketAddr>,
    pub monitor: MonitorState,
    next_cid: AtomicU64,
}

/// What [`crate::server::start`] set up before the shared state exists.
pub(crate) struct Setup {
    pub opts: Options,
    pub auth: Authenticator,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub cluster: Option<Cluster>,
    pub server_id: String,
    pub server_name: String,
    pub client_addr: SocketAddr,
    pub monitor_addr: Option<SocketAddr>,
}

impl ServerShared {
    pub(crate) fn new(setup: Setup) -> ServerShared {
        let monitor = MonitorState::new(&setup.opts);
        ServerShared {
            options: RwLock::new(Arc::new(setup.opts)),
            auth: RwLock::new(Arc::new(setup.auth)),
            tls: setup.tls,
            cluster: setup.cluster,
            server_id: setup.server_id,
            server_name: setup.server_name,
            sublist: Sublist::new(),
            clients: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            shutdown: CancellationToken::new(),
            stop_accepting: CancellationToken::new(),
            lame_duck: AtomicBool::new(false),
            started: SystemTime::now(),
            client_addr: setup.client_addr,
            monitor_addr: setup.monitor_addr,
            monitor,
            next_cid: AtomicU64::new(1),
        }
    }

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

    /// A local subscription was added (`delta` 1) or removed (-1): routes hear of it when
    /// the interest they see changes.
    pub fn local_interest_changed(&self, subject: &[u8], queue: Option<&[u8]>, delta: i32) {
        if let Some(cluster) = &self.cluster {
            cluster.interest_changed(subject, queue, delta);
        }
    }
}

/// A 56-character id in the shape of an nkey server public key (`N…`, base32).
pub(crate) fn new_server_id() -> String {
    format!("N{}", random_id(55))
}

/// `len` random base32 characters (server ids, generated cluster names).
pub(crate) fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
