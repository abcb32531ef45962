//! Monitoring state: what the server keeps only so that monitoring can show it. The
//! connections feed it through a few hooks ([`MonitorState::connection_closed`],
//! [`MonitorState::route_opened`], [`MonitorState::route_closed`], [`RouteMonitor`]'s
//! `touch`/`ping_sent`/`pong_received`); the HTTP endpoints in [`crate::monitor`] read it.
//! Nothing here runs per message.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use crate::conn::Subscription;
use crate::conn::{ClientShared, CloseReason};
use crate::options::Options;

/// The account every connection is in, as monitoring names it.
pub(crate) const GLOBAL_ACCOUNT: &str = "$G";

/// Monitoring state kept by the server: the closed-connections ring and request counters.
pub struct MonitorState {
    closed: Mutex<VecDeque<Arc<ConnRecord>>>,
    max_closed: usize,
    pub(crate) http_req_stats: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections closed as stale (missed PONGs).
    pub stale_connections: AtomicU64,
    /// The last CPU use sample, for `/varz`'s `cpu` (a rate between two requests).
    pub(crate) cpu: Mutex<CpuSample>,
    /// Every route connection's monitoring data, and the traffic of closed routes.
    routes: Mutex<RouteBook>,
    /// Pages an embedding service added to the monitoring port.
    extra: parking_lot::RwLock<Option<Arc<dyn crate::monitor::MonitorRoutes>>>,
    /// The message and byte totals once a second for the last [`RATE_HISTORY`] seconds, so
    /// the status page's chart shows its whole window as soon as it opens.
    rates: Mutex<VecDeque<RateSample>>,
}

/// Seconds of totals kept for the status page's chart.
pub(crate) const RATE_HISTORY: usize = 121;

/// The server's totals at one instant (ms since the Unix epoch).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RateSample {
    pub t: u64,
    pub in_msgs: u64,
    pub out_msgs: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// Route connections by cid, and what closed ones carried (so the server's totals, which
/// add the routes' counters to the clients', never go down when a route closes).
#[derive(Default)]
struct RouteBook {
    open: HashMap<u64, Arc<RouteMonitor>>,
    closed: RouteTraffic,
}

/// Messages and bytes in and out over routes.
#[derive(Default, Clone, Copy)]
pub(crate) struct RouteTraffic {
    pub in_msgs: u64,
    pub in_bytes: u64,
    pub out_msgs: u64,
    pub out_bytes: u64,
}

impl RouteTraffic {
    fn add(&mut self, conn: &ClientShared) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.in_msgs += load(&conn.stats.in_msgs);
        self.in_bytes += load(&conn.stats.in_bytes);
        self.out_msgs += load(&conn.stats.out_msgs);
        self.out_bytes += load(&conn.stats.out_bytes);
    }
}

/// What monitoring keeps about one route connection beyond its `ClientShared` counters:
/// last activity (routed messages) and the round-trip time of its last PING.
pub struct RouteMonitor {
    pub(crate) conn: Arc<ClientShared>,
    /// Dialed because it is listed in the cluster's `routes` (not learned by gossip).
    pub(crate) configured: bool,
    created: Instant,
    /// Last routed message, in ns since the Unix epoch; 0 = none yet.
    last_activity: AtomicU64,
    /// When the outstanding PING was sent, in ns since `created`; 0 = none outstanding.
    ping_sent: AtomicU64,
    rtt_ns: AtomicU64,
}

impl RouteMonitor {
    /// Notes that messages came over the route.
    pub fn touch(&self) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.last_activity.store(now, Ordering::Relaxed);
    }

    /// A PING went out: the next PONG measures the round trip.
    pub fn ping_sent(&self) {
        let at = self.created.elapsed().as_nanos().max(1) as u64;
        self.ping_sent.store(at, Ordering::Relaxed);
    }

    pub fn pong_received(&self) {
        let sent = self.ping_sent.swap(0, Ordering::Relaxed);
        if sent > 0 {
            let now = self.created.elapsed().as_nanos() as u64;
            self.rtt_ns
                .store(now.saturating_sub(sent).max(1), Ordering::Relaxed);
        }
    }

    pub(crate) fn last_activity(&self) -> SystemTime {
        match self.last_activity.load(Ordering::Relaxed) {
            0 => self.conn.last_activity(),
            ns => SystemTime::UNIX_EPOCH + Duration::from_nanos(ns),
        }
    }

    /// As the reference measures it: truncated to whole µs between 1 µs and 1 ms.
    pub(crate) fn rtt(&self) -> Duration {
        let rtt = Duration::from_nanos(self.rtt_ns.load(Ordering::Relaxed));
        if rtt > Duration::from_micros(1) && rtt < Duration::from_millis(1) {
            Duration::from_micros(rtt.as_micros() as u64)
        } else {
            rtt
        }
    }
}

#[derive(Default)]
pub(crate) struct CpuSample {
    pub at: Option<Instant>,
    pub ticks: u64,
    pub percent: f64,
}

impl MonitorState {
    pub fn new(opts: &Options) -> Self {
        MonitorState {
            closed: Mutex::new(VecDeque::new()),
            max_closed: opts.max_closed_clients,
            http_req_stats: Mutex::new(BTreeMap::new()),
            stale_connections: AtomicU64::new(0),
            cpu: Mutex::new(CpuSample::default()),
            routes: Mutex::new(RouteBook::default()),
            extra: parking_lot::RwLock::new(None),
            rates: Mutex::new(VecDeque::with_capacity(RATE_HISTORY)),
        }
    }

    /// Records the totals now (the monitor's sampler, once a second).
    pub(crate) fn sample_rates(&self, stats: &super::Stats) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let routed = self.route_traffic();
        let sample = RateSample {
            t: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            in_msgs: load(&stats.in_msgs) + routed.in_msgs,
            out_msgs: load(&stats.out_msgs) + routed.out_msgs,
            in_bytes: load(&stats.in_bytes) + routed.in_bytes,
            out_bytes: load(&stats.out_bytes) + routed.out_bytes,
        };
        let mut rates = self.rates.lock();
        if rates.len() == RATE_HISTORY {
            rates.pop_front();
        }
        rates.push_back(sample);
    }

    /// The recorded totals, oldest first.
    pub(crate) fn rate_history(&self) -> Vec<RateSample> {
        self.rates.lock().iter().copied().collect()
    }

    /// The pages an embedding service added, if any.
    pub(crate) fn routes(&self) -> Option<Arc<dyn crate::monitor::MonitorRoutes>> {
        self.extra.read().clone()
    }

    pub(crate) fn set_routes(&self, routes: Arc<dyn crate::monitor::MonitorRoutes>) {
        *self.extra.write() = Some(routes);
    }

    /// Records a connection that is closing (called by the connection task before it removes
    /// its subscriptions, so they are kept with the record).
    pub(crate) fn connection_closed(&self, client: &ClientShared) {
        let reason = client.close_reason().unwrap_or(CloseReason::ClientClosed);
        if reason == CloseReason::StaleConnection {
            self.stale_connections.fetch_add(1, Ordering::Relaxed);
        }
        if self.max_closed == 0 {
            return;
        }
        let record = Arc::new(ConnRecord::closed(client, reason));
        let mut ring = self.closed.lock();
        while ring.len() >= self.max_closed {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// Registers a new route connection; `configured` when it was dialed because the
    /// cluster's `routes` list it (not learned by gossip).
    pub(crate) fn route_opened(
        &self,
        conn: &Arc<ClientShared>,
        configured: bool,
    ) -> Arc<RouteMonitor> {
        let mon = Arc::new(RouteMonitor {
            conn: conn.clone(),
            configured,
            created: Instant::now(),
            last_activity: AtomicU64::new(0),
            ping_sent: AtomicU64::new(0),
            rtt_ns: AtomicU64::new(0),
        });
        self.routes.lock().open.insert(conn.cid, mon.clone());
        mon
    }

    /// A route connection is gone: its counters move to the closed routes' totals.
    pub(crate) fn route_closed(&self, cid: u64) {
        let mut book = self.routes.lock();
        if let Some(mon) = book.open.remove(&cid) {
            book.closed.add(&mon.conn);
        }
    }

    /// Traffic over all routes since start, open and closed.
    pub(crate) fn route_traffic(&self) -> RouteTraffic {
        let book = self.routes.lock();
        let mut total = book.closed;
        for mon in book.open.values() {
            total.add(&mon.conn);
        }
        total
    }

    /// The monitoring data of an open route connection.
    pub(crate) fn route(&self, cid: u64) -> Option<Arc<RouteMonitor>> {
        self.routes.lock().open.get(&cid).cloned()
    }

    pub(crate) fn count_request(&self, path: &'static str) {
        *self.http_req_stats.lock().entry(path).or_insert(0) += 1;
    }

    /// The closed connections, oldest first.
    pub(crate) fn closed(&self) -> Vec<Arc<ConnRecord>> {
        self.closed.lock().iter().cloned().collect()
    }
}

/// One subscription as monitoring shows it.
#[derive(Serialize, Clone)]
pub(crate) struct SubDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_tag: Option<&'static str>,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qgroup: Option<String>,
    pub sid: String,
    pub msgs: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub cid: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl SubDetail {
    pub(crate) fn new(sub: &Subscription, with_account: bool) -> SubDetail {
        SubDetail {
            account: with_account.then_some(GLOBAL_ACCOUNT),
            account_tag: with_account.then_some(GLOBAL_ACCOUNT),
            subject: String::from_utf8_lossy(&sub.subject).into_owned(),
            qgroup: sub
                .queue
                .as_deref()
                .map(|q| String::from_utf8_lossy(q).into_owned()),
            sid: String::from_utf8_lossy(&sub.sid).into_owned(),
            msgs: sub.delivered(),
            max: sub.max(),
            cid: sub.client.cid,
        }
    }
}

/// The subscriptions of a connection, ordered by sid (numerically when they are numbers).
pub(crate) fn sub_details(client: &ClientShared) -> Vec<SubDetail> {
    let mut subs: Vec<SubDetail> = client
        .subs
        .lock()
        .values()
        .map(|s| SubDetail::new(s, false))
        .collect();
    subs.sort_by(|a, b| {
        (a.sid.len(), &a.sid)
            .cmp(&(b.sid.len(), &b.sid))
            .then_with(|| a.subject.cmp(&b.subject))
    });
    subs
}

/// A connection's monitoring data, taken at one instant (open) or at close (closed).
pub(crate) struct ConnRecord {
    pub(crate) cid: u64,
    pub(crate) addr: SocketAddr,
    pub(crate) start: SystemTime,
    pub(crate) last: SystemTime,
    pub(crate) stop: Option<SystemTime>,
    pub(crate) reason: Option<&'static str>,
    pub(crate) pending: usize,
    pub(crate) in_msgs: u64,
    pub(crate) in_bytes: u64,
    pub(crate) out_msgs: u64,
    pub(crate) out_bytes: u64,
    pub(crate) num_subs: usize,
    pub(crate) name: String,
    pub(crate) lang: String,
    pub(crate) version: String,
    pub(crate) user: Option<String>,
    pub(crate) rtt: Duration,
    /// Kept for closed connections; open ones are read from `client` when asked.
    pub(crate) subs: Vec<SubDetail>,
    pub(crate) client: Option<Arc<ClientShared>>,
}

impl ConnRecord {
    fn snapshot(client: &ClientShared) -> ConnRecord {
        let meta = client.meta.lock().clone();
        ConnRecord {
            cid: client.cid,
            addr: client.addr,
            start: client.started,
            last: client.last_activity(),
            stop: None,
            reason: None,
            pending: client.pending_bytes(),
            in_msgs: client.stats.in_msgs.load(Ordering::Relaxed),
            in_bytes: client.stats.in_bytes.load(Ordering::Relaxed),
            out_msgs: client.stats.out_msgs.load(Ordering::Relaxed),
            out_bytes: client.stats.out_bytes.load(Ordering::Relaxed),
            num_subs: client.subs.lock().len(),
            name: meta.name,
            lang: meta.lang,
            version: meta.version,
            user: meta.user,
            rtt: client.rtt(),
            subs: Vec::new(),
            client: None,
        }
    }

    pub(crate) fn open(client: &Arc<ClientShared>) -> ConnRecord {
        ConnRecord {
            client: Some(client.clone()),
            ..Self::snapshot(client)
        }
    }

    /// The record kept in the closed ring, with the subscriptions held at close.
    pub(crate) fn closed(client: &ClientShared, reason: CloseReason) -> ConnRecord {
        let subs = sub_details(client);
        ConnRecord {
            stop: Some(SystemTime::now()),
            reason: Some(reason.as_str()),
            num_subs: subs.len(),
            subs,
            ..Self::snapshot(client)
        }
    }
}
