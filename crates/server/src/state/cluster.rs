//! Cluster state kept by every server: the routes by remote server id, the local interest
//! advertised to them, and the other servers' client URLs (pushed to clients in INFO).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::conn::ClientShared;
use crate::options::ClusterOptions;
use crate::tls::TlsError;

/// The account every client is in; `$G` on the wire.
pub const GLOBAL_ACCOUNT: &[u8] = b"$G";

type InterestKey = (Box<[u8]>, Option<Box<[u8]>>);

/// A registered route.
pub struct RouteEntry {
    pub conn: Arc<ClientShared>,
    /// This server dialed it.
    pub solicited: bool,
    pub server_name: String,
    /// The remote's route listen address, as we would dial it.
    pub route_addr: Option<SocketAddr>,
    pub client_urls: Vec<String>,
    /// The remote's INFO, forwarded to other routes as gossip.
    pub info: serde_json::Value,
}

/// TLS on routes: both sides present certificates signed by the configured CA.
#[derive(Clone)]
pub struct RouteTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
    pub timeout: std::time::Duration,
}

pub struct Cluster {
    pub opts: ClusterOptions,
    pub tls: Option<RouteTls>,
    pub name: Mutex<String>,
    pub dynamic_name: bool,
    pub listen_addr: SocketAddr,
    pub routes: Mutex<HashMap<String, RouteEntry>>,
    /// Local subscriptions by (subject, queue) with their counts: what routes are told.
    interest: Mutex<HashMap<InterestKey, u32>>,
    /// Other servers' client URLs, reference-counted by the routes that announced them.
    remote_client_urls: Mutex<Vec<(String, u32)>>,
    /// Server ids and addresses being dialed, so gossip does not dial them twice.
    pub dialing: Mutex<HashSet<String>>,
}

impl Cluster {
    pub fn new(opts: ClusterOptions, listen_addr: SocketAddr) -> Result<Cluster, TlsError> {
        let (name, dynamic_name) = match &opts.name {
            Some(name) => (name.clone(), false),
            None => (super::random_id(22), true),
        };
        let tls = match &opts.tls {
            Some(t) => {
                // Routes always verify the peer (nats-server implies `verify` on routes).
                let mut t = t.clone();
                t.verify = true;
                Some(RouteTls {
                    acceptor: tokio_rustls::TlsAcceptor::from(crate::tls::server_config(&t)?),
                    connector: tokio_rustls::TlsConnector::from(crate::tls::client_config(&t)?),
                    timeout: t.timeout(),
                })
            }
            None => None,
        };
        Ok(Cluster {
            opts,
            tls,
            name: Mutex::new(name),
            dynamic_name,
            listen_addr,
            routes: Mutex::new(HashMap::new()),
            interest: Mutex::new(HashMap::new()),
            remote_client_urls: Mutex::new(Vec::new()),
            dialing: Mutex::new(HashSet::new()),
        })
    }

    /// Runs `f` while holding the interest lock, giving it a function that writes `RS+`
    /// lines for all local interest: what a new route is sent when it registers.
    pub fn with_interest_locked(&self, f: impl FnOnce(&mut dyn FnMut(&mut bytes::BytesMut))) {
        let interest = self.interest.lock();
        let mut snapshot = |out: &mut bytes::BytesMut| {
            for ((subject, queue), count) in interest.iter() {
                let queue = queue.as_deref().map(|q| (q, *count));
                rnats_protocol::write_rs_plus(out, GLOBAL_ACCOUNT, subject, queue);
            }
        };
        f(&mut snapshot);
    }

    /// Adds a route's client URLs; true when the set of URLs changed.
    pub fn add_client_urls(&self, urls: &[String]) -> bool {
        let mut known = self.remote_client_urls.lock();
        let mut changed = false;
        for url in urls {
            match known.iter_mut().find(|(u, _)| u == url) {
                Some((_, n)) => *n += 1,
                None => {
                    known.push((url.clone(), 1));
                    changed = true;
                }
            }
        }
        changed
    }

    pub fn remove_client_urls(&self, urls: &[String]) -> bool {
        let mut known = self.remote_client_urls.lock();
        let before = known.len();
        for url in urls {
            if let Some(i) = known.iter().position(|(u, _)| u == url) {
                known[i].1 -= 1;
                if known[i].1 == 0 {
                    known.remove(i);
                }
            }
        }
        known.len() != before
    }

    pub fn remote_client_urls(&self) -> Vec<String> {
        self.remote_client_urls
            .lock()
            .iter()
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// A local subscription was added (`delta` 1) or removed (-1): tell every route when the
    /// interest it sees changes (plain: first and last subscriber; queue: every change, as
    /// the weight).
    pub fn interest_changed(&self, subject: &[u8], queue: Option<&[u8]>, delta: i32) {
        let mut interest = self.interest.lock();
        let key: InterestKey = (subject.into(), queue.map(Into::into));
        let count = interest.entry(key.clone()).or_insert(0);
        let before = *count;
        *count = count.saturating_add_signed(delta);
        let after = *count;
        if after == 0 {
            interest.remove(&key);
        }
        let mut line = bytes::BytesMut::new();
        match queue {
            None if before == 0 && after > 0 => {
                rnats_protocol::write_rs_plus(&mut line, GLOBAL_ACCOUNT, subject, None)
            }
            None if before > 0 && after == 0 => {
                rnats_protocol::write_rs_minus(&mut line, GLOBAL_ACCOUNT, subject, None)
            }
            Some(q) if after > 0 && after != before => {
                rnats_protocol::write_rs_plus(&mut line, GLOBAL_ACCOUNT, subject, Some((q, after)));
            }
            Some(q) if after == 0 && before > 0 => {
                rnats_protocol::write_rs_minus(&mut line, GLOBAL_ACCOUNT, subject, Some(q))
            }
            _ => return,
        }
        // Sent under the interest lock, so a new route's snapshot and these updates stay in order.
        for route in self.routes.lock().values() {
            route.conn.send_now(|out| out.extend_from_slice(&line));
        }
    }
}
