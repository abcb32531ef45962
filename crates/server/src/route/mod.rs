//! Route connections: the handshake, interest (RS+/RS-), routed messages (RMSG/HMSG),
//! gossip of new servers; making the connections is `dial`.
//!
//! One task reads a route and one writes it (the same writer as clients). Routes are
//! registered by the remote's server id; when two connections link the same pair of
//! servers, both sides keep the one dialed by the server with the smaller id.

mod dial;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rnats_protocol::{Limits, Message, Parsed, ProtoError, RouteOp, parse_route_op};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::{debug, error, info};

use crate::conn::{ClientShared, CloseReason, Subscription, write_loop};
use crate::net::{SharedTcp, host_port};
use crate::reader::{Flow, OpReader, process_ops};
use crate::router::{Batch, Matches, deliver_to};
use crate::state::ServerShared;
use crate::state::cluster::{GLOBAL_ACCOUNT, RouteEntry};
use crate::state::monitor::RouteMonitor;

use self::dial::solicit_implicit;
pub(crate) use self::dial::{Solicit, accept_loop, bind, solicit_forever};

type InterestKey = (Box<[u8]>, Option<Box<[u8]>>);

struct RouteConn {
    srv: Arc<ServerShared>,
    me: Arc<ClientShared>,
    solicit: Option<Solicit>,
    got_connect: bool,
    peer_id: Option<String>,
    registered: bool,
    /// The remote's interest, by (subject, queue).
    subs: HashMap<InterestKey, Arc<Subscription>>,
    batch: Batch,
    matches: Matches,
    rng: SmallRng,
    pings_out: u32,
    limits: Limits,
    /// Monitoring: last activity and PING round trips (counters are in `me.stats`).
    mon: Arc<RouteMonitor>,
}

type RouteFlow = Flow<&'static str>;

/// Runs one route connection (accepted, or dialed with `solicit`) until it closes.
pub async fn run_route(
    srv: Arc<ServerShared>,
    stream: TcpStream,
    addr: SocketAddr,
    solicit: Option<Solicit>,
) {
    let Some(tls) = srv.cluster.as_ref().and_then(|c| c.tls.clone()) else {
        // Plain TCP: shared halves, so publishers can flush route traffic inline.
        let sock = Arc::new(stream);
        let halves = (SharedTcp(sock.clone()), SharedTcp(sock.clone()));
        return run_route_stream(srv, halves, addr, solicit, Some(sock)).await;
    };
    // On routes TLS starts right after the TCP connection, before any INFO.
    match &solicit {
        Some(s) => {
            let host = crate::options::parse_route_url(&s.url)
                .map(|(_, h, _)| h)
                .unwrap_or_default();
            let Ok(name) = rustls_pki_types::ServerName::try_from(host.clone()) else {
                error!("Invalid route host name \"{host}\" for TLS");
                return;
            };
            match tokio::time::timeout(tls.timeout, tls.connector.connect(name, stream)).await {
                Ok(Ok(tls_stream)) => {
                    run_route_stream(srv, tokio::io::split(tls_stream), addr, solicit, None).await
                }
                Ok(Err(e)) => error!("{addr} - rid - TLS route handshake error: {e}"),
                Err(_) => error!("{addr} - rid - TLS route handshake timeout"),
            }
        }
        None => match tokio::time::timeout(tls.timeout, tls.acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => {
                run_route_stream(srv, tokio::io::split(tls_stream), addr, None, None).await
            }
            Ok(Err(e)) => error!("{addr} - rid - TLS route handshake error: {e}"),
            Err(_) => error!("{addr} - rid - TLS route handshake timeout"),
        },
    }
}

async fn run_route_stream<R, W>(
    srv: Arc<ServerShared>,
    (mut reader, writer): (R, W),
    addr: SocketAddr,
    solicit: Option<Solicit>,
    sock: Option<Arc<TcpStream>>,
) where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Send + 'static,
{
    let cid = srv.next_cid();
    let me = Arc::new(ClientShared::new(cid, addr, usize::MAX, true));
    me.set_headers(true);
    me.set_socket(sock);
    let writer_task = tokio::spawn(write_loop(me.clone(), writer, srv.opts().write_deadline));
    let cluster = srv
        .cluster
        .as_ref()
        .expect("routes only exist with a cluster");
    let info = crate::info::route_line(&srv, cluster);
    if let Some(s) = &solicit {
        let mut connect = serde_json::json!({
            "echo": true, "verbose": false, "pedantic": false, "tls_required": false, "headers": true,
            "name": srv.server_id, "cluster": *cluster.name.lock(),
        });
        if cluster.dynamic_name {
            connect["cluster_dynamic"] = Value::Bool(true);
        }
        if let Some((user, pass)) = &s.user {
            connect["user"] = Value::String(user.clone());
            connect["pass"] = Value::String(pass.clone());
        }
        let line = format!("CONNECT {connect}\r\n");
        me.send_now(|out| {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(&info);
        });
    } else {
        me.send_now(|out| out.extend_from_slice(&info));
    }
    let configured = solicit
        .as_ref()
        .is_some_and(|s| cluster.opts.routes.contains(&s.url));
    let mon = srv.monitor.route_opened(&me, configured);
    let mut conn = RouteConn {
        mon,
        limits: Limits {
            max_control_line: srv.opts().max_control_line,
            max_payload: srv.opts().max_payload,
        },
        srv,
        me: me.clone(),
        solicit,
        got_connect: false,
        peer_id: None,
        registered: false,
        subs: HashMap::new(),
        batch: Batch {
            trace: tracing::enabled!(tracing::Level::TRACE),
            ..Batch::default()
        },
        matches: Matches::default(),
        rng: SmallRng::from_os_rng(),
        pings_out: 0,
    };
    let reason = conn.read_loop(&mut reader).await;
    conn.cleanup(reason);
    let _ = writer_task.await;
}

impl RouteConn {
    async fn read_loop<R: tokio::io::AsyncRead + Unpin>(&mut self, reader: &mut R) -> &'static str {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let cancel = self.me.cancel.clone();
        let shutdown = self.srv.shutdown.clone();
        let ping_interval = self.srv.opts().ping_interval.min(Duration::from_secs(30));
        let mut next_ping = tokio::time::Instant::now() + Duration::from_secs(1);
        // The dialing side must see the peer's INFO, the accepting side its CONNECT, in time.
        let handshake_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            buf.reserve(32 * 1024);
            let flow = tokio::select! {
                () = cancel.cancelled() => return "Closed",
                () = shutdown.cancelled() => RouteFlow::Close("Server Shutdown"),
                res = reader.read_buf(&mut buf) => match res {
                    Ok(0) | Err(_) => RouteFlow::Close("Client Closed"),
                    Ok(_) => self.process_buffer(&mut buf),
                },
                () = tokio::time::sleep_until(next_ping) => {
                    next_ping = tokio::time::Instant::now() + ping_interval;
                    if self.pings_out + 1 > self.srv.opts().ping_max {
                        self.me.send_now(|out| out.extend_from_slice(b"-ERR 'Stale Connection'\r\n"));
                        RouteFlow::Close("Stale Connection")
                    } else {
                        self.pings_out += 1;
                        self.mon.ping_sent();
                        self.me.send_now(|out| out.extend_from_slice(b"PING\r\n"));
                        RouteFlow::Continue
                    }
                }
                () = tokio::time::sleep_until(handshake_deadline), if !self.registered => {
                    RouteFlow::Close("Authentication Timeout")
                }
            };
            self.batch.wake_all(&self.srv);
            if let RouteFlow::Close(reason) = flow {
                return reason;
            }
            // A local subscriber fell behind: wait for it (bounded) before reading more from
            // the route, so the other server is slowed down instead of the subscriber cut.
            while let Some(behind) = self.batch.stall.take() {
                behind.wait_caught_up().await;
                let flow = self.process_buffer(&mut buf);
                self.batch.wake_all(&self.srv);
                if let RouteFlow::Close(reason) = flow {
                    return reason;
                }
            }
        }
    }

    fn process_buffer(&mut self, buf: &mut BytesMut) -> RouteFlow {
        let msgs_before = self.me.stats.in_msgs.load(Ordering::Relaxed);
        let flow = process_ops(self, buf);
        if self.me.stats.in_msgs.load(Ordering::Relaxed) != msgs_before {
            self.mon.touch();
        }
        flow
    }

    fn send_err(&self, text: &str) {
        let line = format!("-ERR '{text}'\r\n");
        self.me
            .send_now(|out| out.extend_from_slice(line.as_bytes()));
    }

    fn check_cluster_name(&mut self, theirs: &str, theirs_dynamic: bool) -> Option<RouteFlow> {
        let cluster = self.srv.cluster.as_ref().expect("cluster");
        let mut ours = cluster.name.lock();
        if *ours == theirs {
            return None;
        }
        if cluster.dynamic_name && (!theirs_dynamic || theirs > ours.as_str()) {
            info!("Cluster name updated to {theirs}");
            *ours = theirs.to_string();
            return None;
        }
        if theirs_dynamic {
            // They will adopt ours.
            return None;
        }
        let text =
            format!("Rejecting connection, cluster name \"{theirs}\" does not match \"{ours}\"");
        drop(ours);
        self.send_err(&text);
        Some(RouteFlow::Close("Cluster Name Conflict"))
    }

    fn process_info(&mut self, json: &[u8]) -> RouteFlow {
        let Ok(info) = serde_json::from_slice::<Value>(json) else {
            return RouteFlow::Close("Protocol Violation");
        };
        let Some(id) = info
            .get("server_id")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return RouteFlow::Close("Protocol Violation");
        };
        let srv = self.srv.clone();
        let cluster = srv.cluster.as_ref().expect("cluster");
        if let Some(peer) = &self.peer_id {
            if *peer != id {
                // Gossip: a server our peer knows about. Dial it unless we know it already.
                self.gossiped(id, &info);
            } else if info.get("ldm").and_then(Value::as_bool) == Some(true) {
                // The peer is in lame duck mode: stop sending our clients to it.
                let urls = cluster
                    .routes
                    .lock()
                    .get(peer)
                    .map(|r| r.client_urls.clone())
                    .unwrap_or_default();
                if let Some(r) = cluster.routes.lock().get_mut(peer) {
                    r.client_urls.clear();
                }
                if cluster.remove_client_urls(&urls) {
                    crate::info::push_async_info(&srv);
                }
            }
            return RouteFlow::Continue;
        }
        if id == srv.server_id {
            debug!(
                "{} - rid:{} - Detected route to self, ignoring",
                self.me.addr, self.me.cid
            );
            return RouteFlow::Close("Duplicate Route");
        }
        let name = info
            .get("server_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name == srv.server_name && srv.opts().server_name.is_some() {
            error!(
                "{} - rid:{} - Remote server has a duplicate name: \"{name}\"",
                self.me.addr, self.me.cid
            );
            return RouteFlow::Close("Duplicate Server Name");
        }
        if let Some(theirs) = info.get("cluster").and_then(Value::as_str)
            && let Some(flow) = self.check_cluster_name(
                theirs,
                info.get("cluster_dynamic")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            )
        {
            return flow;
        }
        self.peer_id = Some(id.clone());
        let port = info.get("port").and_then(Value::as_u64).unwrap_or(0) as u16;
        let route_addr = info
            .get("ip")
            .and_then(Value::as_str)
            .and_then(crate::options::parse_route_url)
            .and_then(|(_, h, p)| host_port(&h, p as u16).to_string().parse().ok())
            .or_else(|| (port != 0).then(|| SocketAddr::new(self.me.addr.ip(), port)));
        let client_urls: Vec<String> = info
            .get("connect_urls")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut gossip = info.clone();
        if let Value::Object(obj) = &mut gossip {
            obj.remove("nonce");
            if let Some(addr) = route_addr {
                obj.insert("ip".into(), Value::String(format!("nats-route://{addr}/")));
            }
        }
        let solicited = self.solicit.is_some();
        // Keep the connection dialed by the server with the smaller id, on both sides.
        let dialer = |solicited: bool| {
            if solicited {
                srv.server_id.clone()
            } else {
                id.clone()
            }
        };
        let urls_changed;
        {
            let mut routes = cluster.routes.lock();
            if let Some(existing) = routes.get(&id) {
                if dialer(existing.solicited) <= dialer(solicited) {
                    debug!(
                        "{} - rid:{} - Duplicate route to {id}, keeping the older one",
                        self.me.addr, self.me.cid
                    );
                    self.peer_id = None;
                    return RouteFlow::Close("Duplicate Route");
                }
                let old = routes.remove(&id).expect("present");
                old.conn.close(CloseReason::ServerShutdown, false);
                cluster.remove_client_urls(&old.client_urls);
            }
            drop(routes);
            // Register and send our whole interest under the interest lock, so that no
            // update slips between the snapshot and the registration.
            let mut snapshot = BytesMut::new();
            cluster.with_interest_locked(|snapshot_fn| {
                snapshot_fn(&mut snapshot);
                let mut routes = cluster.routes.lock();
                // Gossip the newcomer to the routes we already have.
                let line = crate::info::line(&gossip);
                for other in routes.values() {
                    other.conn.send_now(|out| out.extend_from_slice(&line));
                }
                routes.insert(
                    id.clone(),
                    RouteEntry {
                        conn: self.me.clone(),
                        solicited,
                        server_name: name.clone(),
                        route_addr,
                        client_urls: client_urls.clone(),
                        info: gossip.clone(),
                    },
                );
                self.me.send_now(|out| out.extend_from_slice(&snapshot));
            });
            urls_changed = cluster.add_client_urls(&client_urls);
        }
        self.registered = true;
        info!(
            "{} - rid:{} - Route connection created to {id} ({name})",
            self.me.addr, self.me.cid
        );
        if urls_changed {
            crate::info::push_async_info(&srv);
        }
        RouteFlow::Continue
    }

    fn gossiped(&mut self, id: String, info: &Value) {
        let srv = self.srv.clone();
        let cluster = srv.cluster.as_ref().expect("cluster");
        if id == srv.server_id || cluster.routes.lock().contains_key(&id) {
            return;
        }
        let Some(url) = info.get("ip").and_then(Value::as_str).map(str::to_string) else {
            return;
        };
        if !cluster.dialing.lock().insert(id.clone()) {
            return;
        }
        debug!("Gossiped route to {id} at {url}");
        tokio::spawn(solicit_implicit(srv.clone(), url, id));
    }

    fn remote_sub(&mut self, subject: &[u8], queue: Option<&[u8]>, weight: u32) {
        let key = (Box::<[u8]>::from(subject), queue.map(Box::<[u8]>::from));
        if let Some(existing) = self.subs.get(&key) {
            existing.weight.store(weight.max(1), Ordering::Relaxed);
            return;
        }
        let sub = Arc::new(Subscription::new(
            self.me.clone(),
            subject,
            queue,
            b"",
            None,
            None,
        ));
        sub.weight.store(weight.max(1), Ordering::Relaxed);
        self.srv.sublist.insert(subject, queue, sub.clone());
        self.subs.insert(key, sub);
    }

    /// Delivers a message that came over this route to local subscribers only (one hop).
    fn deliver_routed(&mut self, msg: &Message<'_>, queues: &[u8]) {
        self.matches.revalidate(&self.srv.sublist);
        let result = self.matches.get(&self.srv.sublist, msg.subject);
        let srv = self.srv.clone();
        for sub in &result.plain {
            if !sub.client.is_route {
                deliver_to(&srv, &mut self.batch, sub, msg, None);
            }
        }
        if queues.is_empty() {
            return;
        }
        for name in queues.split(|&b| b == b' ').filter(|q| !q.is_empty()) {
            let Some(group) = result.queues.iter().find(|g| &*g.name == name) else {
                continue;
            };
            let locals: Vec<&Arc<Subscription>> = group
                .members
                .iter()
                .filter(|m| !m.client.is_route)
                .collect();
            if locals.is_empty() {
                continue;
            }
            let start = self.rng.random_range(0..locals.len());
            for i in 0..locals.len() {
                if deliver_to(
                    &srv,
                    &mut self.batch,
                    locals[(start + i) % locals.len()],
                    msg,
                    None,
                ) {
                    break;
                }
            }
        }
    }

    fn cleanup(&mut self, reason: &str) {
        self.batch.wake_all(&self.srv);
        self.me.close(CloseReason::ClientClosed, true);
        for ((subject, queue), sub) in self.subs.drain() {
            sub.mark_closed();
            self.srv.sublist.remove(&subject, queue.as_deref(), &sub);
        }
        let cluster = self.srv.cluster.as_ref().expect("cluster");
        let mut urls_changed = false;
        if let Some(id) = &self.peer_id {
            let mut routes = cluster.routes.lock();
            if routes.get(id).is_some_and(|r| r.conn.cid == self.me.cid) {
                let entry = routes.remove(id).expect("present");
                urls_changed = cluster.remove_client_urls(&entry.client_urls);
                info!(
                    "{} - rid:{} - Router connection closed: {reason}",
                    self.me.addr, self.me.cid
                );
            }
        }
        if urls_changed {
            crate::info::push_async_info(&self.srv);
        }
        self.srv.monitor.route_closed(self.me.cid);
    }
}

impl OpReader for RouteConn {
    type Op<'a> = RouteOp<'a>;
    type Reason = &'static str;

    fn parse<'a>(&self, buf: &'a [u8]) -> Result<Parsed<RouteOp<'a>>, ProtoError> {
        parse_route_op(buf, &self.limits)
    }

    fn stalled(&self) -> bool {
        self.batch.stall.is_some()
    }

    fn protocol_error(&mut self, e: ProtoError) -> RouteFlow {
        error!(
            "{} - rid:{} - route protocol error: {e}",
            self.me.addr, self.me.cid
        );
        RouteFlow::Close("Protocol Violation")
    }

    fn process_op(&mut self, op: RouteOp<'_>) -> RouteFlow {
        let cluster = self.srv.cluster.as_ref().expect("cluster");
        // The accepting side must hear CONNECT first.
        if self.solicit.is_none() && !self.got_connect && !matches!(op, RouteOp::Connect(_)) {
            self.send_err("Authorization Violation");
            return RouteFlow::Close("Authentication Failure");
        }
        match op {
            RouteOp::Connect(json) => {
                let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(json) else {
                    return RouteFlow::Close("Protocol Violation");
                };
                if obj
                    .get("lang")
                    .and_then(Value::as_str)
                    .is_some_and(|l| !l.is_empty())
                {
                    self.send_err("attempted to connect to route port");
                    return RouteFlow::Close("Protocol Violation");
                }
                if let Some(user) = &cluster.opts.user {
                    let ok = obj.get("user").and_then(Value::as_str) == Some(user)
                        && obj.get("pass").and_then(Value::as_str).unwrap_or_default()
                            == cluster.opts.password.as_deref().unwrap_or_default();
                    if !ok {
                        self.send_err("Authorization Violation");
                        return RouteFlow::Close("Authentication Failure");
                    }
                }
                if let Some(theirs) = obj.get("cluster").and_then(Value::as_str)
                    && let Some(flow) = self.check_cluster_name(
                        theirs,
                        obj.get("cluster_dynamic")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    )
                {
                    return flow;
                }
                self.got_connect = true;
                RouteFlow::Continue
            }
            RouteOp::Info(json) => self.process_info(json),
            RouteOp::Ping => {
                self.me.send_now(|out| out.extend_from_slice(b"PONG\r\n"));
                RouteFlow::Continue
            }
            RouteOp::Pong => {
                self.pings_out = 0;
                self.mon.pong_received();
                RouteFlow::Continue
            }
            RouteOp::Ok => RouteFlow::Continue,
            RouteOp::Err(text) => {
                error!(
                    "{} - rid:{} - Route Error {}",
                    self.me.addr,
                    self.me.cid,
                    String::from_utf8_lossy(text)
                );
                RouteFlow::Close("Parse Error")
            }
            RouteOp::Sub {
                account,
                subject,
                queue,
                weight,
            } => {
                if self.registered
                    && account == GLOBAL_ACCOUNT
                    && rnats_protocol::is_valid_subject(subject)
                {
                    self.remote_sub(subject, queue, weight);
                }
                RouteFlow::Continue
            }
            RouteOp::Unsub {
                account,
                subject,
                queue,
            } => {
                if account == GLOBAL_ACCOUNT {
                    let key = (Box::<[u8]>::from(subject), queue.map(Box::<[u8]>::from));
                    if let Some(sub) = self.subs.remove(&key) {
                        sub.mark_closed();
                        self.srv.sublist.remove(subject, queue, &sub);
                    }
                }
                RouteFlow::Continue
            }
            RouteOp::Msg {
                account,
                queues,
                msg,
            } => {
                let stats = &self.me.stats;
                stats.in_msgs.fetch_add(1, Ordering::Relaxed);
                stats
                    .in_bytes
                    .fetch_add(msg.payload.len() as u64, Ordering::Relaxed);
                if self.registered && account == GLOBAL_ACCOUNT {
                    self.deliver_routed(&msg, queues);
                }
                RouteFlow::Continue
            }
        }
    }
}
