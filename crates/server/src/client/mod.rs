//! A client connection's reader: one task per client that reads into a growing buffer,
//! parses every complete op in place (`rnats-protocol`), routes what the client publishes
//! ([`Router`]) and, when the read is processed, flushes or wakes the writers it touched. It
//! also runs the ping timer and the authentication timeout. The other half of the connection
//! (outbound buffer, writer task) is [`crate::conn`].
//!
//! * `connect`: checking `CONNECT` (options, credentials);
//! * `trace`: the `-V` protocol trace, secrets redacted.

mod connect;
mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rnats_protocol::{ClientOp, Limits, Message, Parsed, ProtoError, parse_client_op};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, error};

use self::connect::ConnectFlags;
use crate::auth::{Credentials, Permissions};
use crate::conn::Subscription;
use crate::conn::{ClientShared, CloseReason, Reply, write_loop};
use crate::net::SharedTcp;
use crate::reader::{self, OpReader, process_ops};
use crate::router::{LOCAL_CACHE_MAX, Router, close_slow_consumer, count_in};
use crate::state::ServerShared;
use crate::sublist::FastMap;

type Flow = reader::Flow<CloseReason>;

/// The read buffer starts at this size and doubles, up to `MAX_READ`, while reads fill it.
const MIN_READ: usize = 512;
const MAX_READ: usize = 64 * 1024;
/// When the first PING goes out (unless ping_interval is shorter).
const FIRST_PING: Duration = Duration::from_secs(2);

/// The reader side of a connection and everything only it touches.
struct Reader {
    srv: Arc<ServerShared>,
    me: Arc<ClientShared>,
    flags: ConnectFlags,
    connected: bool,
    auth_required: bool,
    limits: Limits,
    /// Delivers what this connection publishes.
    router: Router,
    in_msgs: u64,
    in_bytes: u64,
    pings_out: u32,
    active_since_ping: bool,
    /// The post-CONNECT INFO went out (after the first PONG to a protocol-1 client); from
    /// then on the client may be sent asynchronous INFOs.
    info_after_pong: bool,
    nonce: Option<String>,
    perms: Option<Arc<Permissions>>,
    /// Publish permission results by subject (permissions are fixed between CONNECTs).
    pub_allowed: FastMap<Box<[u8]>, bool>,
    trace: bool,
}

/// Takes an accepted TCP connection: on a TLS port the INFO goes out in plain text and the
/// handshake must complete within the TLS timeout, then the connection is served.
pub async fn accept(srv: Arc<ServerShared>, mut tcp: TcpStream, addr: SocketAddr) {
    let cid = srv.next_cid();
    let nonce = srv.auth().needs_nonce().then(new_nonce);
    let Some(acceptor) = srv.tls.clone() else {
        let sock = Arc::new(tcp);
        let halves = (SharedTcp(sock.clone()), SharedTcp(sock.clone()));
        return serve(srv, halves, addr, cid, nonce, false, Some(sock)).await;
    };
    debug!("{addr} - cid:{cid} - Client connection created");
    let info = crate::info::client_line(&srv, cid, addr, nonce.as_deref(), false);
    let timeout = srv
        .opts()
        .tls
        .as_ref()
        .map(|t| t.timeout())
        .unwrap_or(Duration::from_secs(2));
    if tokio::time::timeout(timeout, tcp.write_all(&info))
        .await
        .is_err()
    {
        return;
    }
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => serve(srv, tokio::io::split(tls), addr, cid, nonce, true, None).await,
        Ok(Err(e)) => {
            error!("{addr} - cid:{cid} - TLS handshake error: {e}");
        }
        Err(_) => {
            error!("{addr} - cid:{cid} - TLS handshake timeout");
        }
    }
}

/// 11 random bytes, base64url without padding, as the reference's nonce.
fn new_nonce() -> String {
    let bytes: [u8; 11] = rand::random();
    data_encoding::BASE64URL_NOPAD.encode(&bytes)
}

/// Serves one client connection until it closes.
/// Takes the two halves separately so plain TCP uses tokio's lock-free owned halves.
async fn serve<R, W>(
    srv: Arc<ServerShared>,
    (mut reader, writer): (R, W),
    addr: SocketAddr,
    cid: u64,
    nonce: Option<String>,
    info_sent: bool,
    sock: Option<Arc<TcpStream>>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Send + 'static,
{
    let me = Arc::new(ClientShared::new(cid, addr, srv.opts().max_pending, false));
    me.set_socket(sock);
    if !info_sent {
        debug!("{addr} - cid:{cid} - Client connection created");
    }
    if !info_sent {
        let info = crate::info::client_line(&srv, cid, addr, nonce.as_deref(), false);
        let _ = me.enqueue(info.len(), None, None, |b| b.put_slice(&info));
    }
    let writer_task = tokio::spawn(write_loop(me.clone(), writer, srv.opts().write_deadline));
    me.wake.notify_one();

    let admitted = srv.register(&me);
    let trace = tracing::enabled!(tracing::Level::TRACE);
    let mut router = Router::new();
    router.batch.trace = trace;
    let mut conn = Reader {
        auth_required: srv.auth().required(),
        limits: Limits {
            max_control_line: srv.opts().max_control_line,
            max_payload: srv.opts().max_payload,
        },
        srv,
        me: me.clone(),
        flags: ConnectFlags::default(),
        connected: false,
        router,
        in_msgs: 0,
        in_bytes: 0,
        pings_out: 0,
        active_since_ping: false,
        info_after_pong: false,
        nonce: nonce.clone(),
        perms: None,
        pub_allowed: FastMap::default(),
        trace,
    };
    if conn.srv.auth().no_auth_user.is_some() {
        // Until (or unless) it authenticates, the connection acts as no_auth_user.
        conn.perms = conn
            .srv
            .auth()
            .authenticate(&Credentials::default(), None)
            .and_then(|a| a.permissions);
    }
    if admitted {
        conn.read_loop(&mut reader).await;
    } else {
        conn.send_err("maximum connections exceeded");
        me.close(CloseReason::MaxConnectionsExceeded, true);
    }
    conn.srv.monitor.connection_closed(&me);
    conn.cleanup();
    let _ = writer_task.await;
    let reason = me.close_reason().unwrap_or(CloseReason::ClientClosed);
    debug!(
        "{} - Client connection closed: {}",
        me.log_id(),
        reason.as_str()
    );
}

impl Reader {
    async fn read_loop<R: AsyncRead + Unpin>(&mut self, reader: &mut R) {
        let mut buf = BytesMut::with_capacity(MIN_READ);
        let mut read_size = MIN_READ;
        let cancel = self.me.cancel.clone();
        let shutdown = self.srv.shutdown.clone();
        let ping_interval = self.srv.opts().ping_interval;
        // As nats-server, the first PING comes early (it measures the round trip for
        // monitoring's `rtt`), then every ping_interval.
        let mut next_ping = tokio::time::Instant::now() + ping_interval.min(FIRST_PING);
        let mut first_ping = true;
        let auth_deadline = tokio::time::Instant::now() + self.srv.opts().auth_timeout();
        loop {
            if buf.is_empty() && buf.capacity() > 2 * read_size {
                buf = BytesMut::with_capacity(read_size);
            }
            buf.reserve(read_size);
            let spare = buf.capacity() - buf.len();
            let auth_pending = self.auth_required && !self.connected;
            let flow = tokio::select! {
                () = cancel.cancelled() => return,
                () = shutdown.cancelled() => Flow::Close(CloseReason::ServerShutdown),
                res = reader.read_buf(&mut buf) => match res {
                    Ok(0) => Flow::Close(CloseReason::ClientClosed),
                    Ok(n) => {
                        self.me.touch();
                        if n == spare && read_size < MAX_READ {
                            read_size *= 2;
                        } else if n < read_size / 4 && read_size > MIN_READ {
                            read_size /= 2;
                        }
                        self.process_buffer(&mut buf)
                    }
                    Err(_) => Flow::Close(CloseReason::ReadError),
                },
                () = tokio::time::sleep_until(next_ping) => {
                    next_ping = tokio::time::Instant::now() + ping_interval;
                    self.ping_timer(std::mem::take(&mut first_ping))
                }
                () = tokio::time::sleep_until(auth_deadline), if auth_pending => {
                    self.send_err("Authentication Timeout");
                    Flow::Close(CloseReason::AuthenticationTimeout)
                }
            };
            self.wake_touched();
            if let Flow::Close(reason) = flow {
                self.me.close(reason, true);
                return;
            }
            // Fast producer: let a subscriber that fell behind catch up before going on
            // (bounded, so a slow consumer cannot hold publishers for long: it is cut off at
            // max_pending instead), then finish what is already buffered.
            while let Some(behind) = self.router.batch.stall.take() {
                behind.wait_caught_up().await;
                let flow = self.process_buffer(&mut buf);
                self.wake_touched();
                if let Flow::Close(reason) = flow {
                    self.me.close(reason, true);
                    return;
                }
            }
        }
    }

    /// Takes permissions a configuration reload set: drops cached publish decisions and the
    /// subscriptions no longer allowed.
    fn apply_new_permissions(&mut self, perms: Option<Arc<Permissions>>) {
        self.perms = perms;
        self.pub_allowed.clear();
        let Some(perms) = self.perms.clone() else {
            return;
        };
        let denied: Vec<Arc<Subscription>> = self
            .me
            .subs
            .lock()
            .values()
            .filter(|s| !perms.can_subscribe(&s.subject, s.queue.as_deref()))
            .cloned()
            .collect();
        for sub in denied {
            self.srv.remove_subscription(&sub);
        }
    }

    /// Runs every complete op in `buf`, then drops the consumed bytes.
    fn process_buffer(&mut self, buf: &mut BytesMut) -> Flow {
        if let Some(perms) = self.me.take_new_permissions() {
            self.apply_new_permissions(perms);
        }
        let flow = process_ops(self, buf);
        self.flush_counters();
        flow
    }

    fn process_connect(&mut self, json: &[u8]) -> Flow {
        let checked = connect::check(
            json,
            &self.srv.auth(),
            self.srv.opts().no_header_support,
            self.nonce.as_deref(),
            (self.me.addr, self.me.cid),
        );
        let accepted = match checked {
            Ok(accepted) => accepted,
            Err(refused) => {
                if let Some(text) = refused.err {
                    self.send_err(text);
                }
                return Flow::Close(refused.reason);
            }
        };
        if let Some((creds, perms)) = accepted.auth {
            self.me.set_credentials(creds);
            self.perms = perms;
            self.pub_allowed.clear();
        }
        *self.me.meta.lock() = accepted.meta;
        self.me.set_log_tags(&accepted.log_tags);
        self.me.connect_received();
        self.flags = accepted.flags;
        self.me.set_headers(accepted.flags.headers);
        self.connected = true;
        self.ok();
        Flow::Continue
    }

    fn process_sub(&mut self, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) -> Flow {
        if !rnats_protocol::is_valid_subject(subject) {
            self.send_err("Invalid Subject");
            return Flow::Continue;
        }
        if let Some(perms) = &self.perms
            && !perms.can_subscribe(subject, queue)
        {
            let subject = String::from_utf8_lossy(subject);
            let sid = String::from_utf8_lossy(sid);
            let (text, logged) = match queue {
                Some(q) => {
                    let q = String::from_utf8_lossy(q);
                    (
                        format!(
                            "Permissions Violation for Subscription to \"{subject}\" using queue \"{q}\""
                        ),
                        format!("Subject \"{subject}\", Queue: \"{q}\", SID {sid}"),
                    )
                }
                None => (
                    format!("Permissions Violation for Subscription to \"{subject}\""),
                    format!("Subject \"{subject}\", SID {sid}"),
                ),
            };
            self.send_err(&text);
            error!("{} - Subscription Violation - {logged}", self.me.log_id());
            return Flow::Continue;
        }
        let deliver_filter = self.perms.clone().filter(|p| p.has_deliver_filter());
        let response_perm = self.perms.as_ref().and_then(|p| p.allow_responses);
        {
            let mut subs = self.me.subs.lock();
            if subs.contains_key(sid) {
                drop(subs);
                self.ok();
                return Flow::Continue;
            }
            let max_subs = self.srv.opts().max_subs;
            if max_subs > 0 && subs.len() >= max_subs {
                drop(subs);
                self.send_err("maximum subscriptions exceeded");
                return Flow::Continue;
            }
            let sub = Arc::new(Subscription::new(
                self.me.clone(),
                subject,
                queue,
                sid,
                deliver_filter,
                response_perm,
            ));
            subs.insert(sid.into(), sub.clone());
            self.srv.sublist.insert(subject, queue, sub);
            self.srv.local_interest_changed(subject, queue, 1);
        }
        self.ok();
        Flow::Continue
    }

    fn process_unsub(&mut self, sid: &[u8], max: Option<Option<u64>>) -> Flow {
        let sub = self.me.subs.lock().get(sid).cloned();
        if let Some(sub) = sub {
            match max {
                Some(Some(max)) if max > sub.delivered() => sub.set_max(max),
                _ => {
                    self.srv.remove_subscription(&sub);
                    if self.trace {
                        self.me.trace_delsub(&sub.sid);
                    }
                }
            }
        }
        self.ok();
        Flow::Continue
    }

    fn process_pub(&mut self, msg: &mut Message<'_>) -> Flow {
        if msg.header_len.is_some() && !self.flags.headers {
            error!("{} - HPUB without headers support", self.me.log_id());
            return Flow::Close(CloseReason::ProtocolViolation);
        }
        if msg.header_len == Some(0) {
            // An empty header block is no header block: delivered as a plain MSG.
            msg.header_len = None;
        }
        self.in_msgs += 1;
        self.in_bytes += msg.payload.len() as u64;
        if self.flags.pedantic && !rnats_protocol::is_valid_literal_subject(msg.subject) {
            self.send_err("Invalid Publish Subject");
        }
        if self.perms.is_some() && !self.may_publish(msg.subject) {
            let subject = String::from_utf8_lossy(msg.subject);
            let text = format!("Permissions Violation for Publish to \"{subject}\"");
            self.send_err(&text);
            error!(
                "{} - Publish Violation - Subject \"{subject}\"",
                self.me.log_id()
            );
            return Flow::Continue;
        }
        self.ok();

        let skip = (!self.flags.echo).then_some(self.me.cid);
        let delivered = self.router.route(&self.srv, msg, skip);
        if delivered == 0
            && self.flags.no_responders
            && let Some(reply) = msg.reply
        {
            self.no_responders(msg.subject, reply);
        }
        Flow::Continue
    }

    fn may_publish(&mut self, subject: &[u8]) -> bool {
        let Some(perms) = &self.perms else {
            return true;
        };
        let allowed = match self.pub_allowed.get(subject) {
            Some(&allowed) => allowed,
            None => {
                let allowed = perms.can_publish(subject);
                if self.pub_allowed.len() >= LOCAL_CACHE_MAX {
                    self.pub_allowed.clear();
                }
                self.pub_allowed.insert(subject.into(), allowed);
                allowed
            }
        };
        allowed || (perms.allow_responses.is_some() && self.me.take_grant(subject))
    }

    /// Tells a requester nobody is listening: a 503 status on its own reply subscription.
    fn no_responders(&mut self, subject: &[u8], reply: &[u8]) {
        let sid = {
            let subs = self.me.subs.lock();
            subs.values()
                .find(|s| s.queue.is_none() && rnats_protocol::subject_matches(&s.subject, reply))
                .map(|s| s.sid.clone())
        };
        let Some(sid) = sid else { return };
        let mut header = BytesMut::with_capacity(64 + subject.len());
        header.put_slice(b"NATS/1.0 503\r\nNats-Subject: ");
        header.put_slice(subject);
        header.put_slice(b"\r\n\r\n");
        let mut len_token = BytesMut::new();
        rnats_protocol::write_u64(&mut len_token, header.len() as u64);
        self.enqueue_own(header.len() + reply.len() + sid.len() + 32, |out| {
            rnats_protocol::write_hmsg(out, reply, &sid, None, &len_token, &len_token, &header);
        });
    }

    /// The ping timer fired: PING, unless the client was active since the last one (the
    /// first PING goes out regardless: it measures the round trip).
    fn ping_timer(&mut self, first: bool) -> Flow {
        if !first && self.active_since_ping && self.pings_out == 0 {
            self.active_since_ping = false;
            return Flow::Continue;
        }
        self.active_since_ping = false;
        if self.pings_out + 1 > self.srv.opts().ping_max {
            self.send_err("Stale Connection");
            return Flow::Close(CloseReason::StaleConnection);
        }
        self.pings_out += 1;
        self.me.ping_sent();
        if self.trace {
            self.me.trace_out("PING");
        }
        self.send_raw(b"PING\r\n");
        Flow::Continue
    }

    fn enqueue_own(&mut self, len: usize, write: impl FnOnce(&mut BytesMut)) {
        match self.me.enqueue_reply(len, write) {
            Reply::Wake => self.router.batch.touched.push(self.me.clone()),
            Reply::Queued => {}
            Reply::SlowConsumer => close_slow_consumer(&self.srv, &self.me),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.enqueue_own(bytes.len(), |out| out.put_slice(bytes));
    }

    fn send_err(&mut self, text: &str) {
        if self.trace {
            self.me.trace_out(&format!("-ERR {text}"));
        }
        self.enqueue_own(text.len() + 9, |out| rnats_protocol::write_err(out, text));
    }

    fn ok(&mut self) {
        if self.flags.verbose {
            if self.trace {
                self.me.trace_out("OK");
            }
            self.send_raw(b"+OK\r\n");
        }
    }

    fn wake_touched(&mut self) {
        self.router.batch.wake_all(&self.srv);
    }

    fn flush_counters(&mut self) {
        if self.in_msgs > 0 {
            count_in(&self.srv, &self.me, self.in_msgs, self.in_bytes);
            self.in_msgs = 0;
            self.in_bytes = 0;
        }
    }

    fn cleanup(&mut self) {
        self.wake_touched();
        let subs: Vec<Arc<Subscription>> = self.me.subs.lock().drain().map(|(_, s)| s).collect();
        for sub in subs {
            if self.trace {
                self.me.trace_delsub(&sub.sid);
            }
            if !sub.mark_closed() {
                self.srv
                    .sublist
                    .remove(&sub.subject, sub.queue.as_deref(), &sub);
                self.srv
                    .local_interest_changed(&sub.subject, sub.queue.as_deref(), -1);
            }
        }
        self.router.clear_cache();
        self.srv.unregister(&self.me);
    }
}

impl OpReader for Reader {
    type Op<'a> = ClientOp<'a>;
    type Reason = CloseReason;

    fn parse<'a>(&self, buf: &'a [u8]) -> Result<Parsed<ClientOp<'a>>, ProtoError> {
        parse_client_op(buf, &self.limits)
    }

    fn stalled(&self) -> bool {
        self.router.batch.stall.is_some()
    }

    fn protocol_error(&mut self, e: ProtoError) -> Flow {
        if let Some(text) = e.err_text() {
            self.send_err(text);
        }
        error!("{} - {}", self.me.log_id(), e);
        Flow::Close(match e {
            ProtoError::MaxPayload { .. } => CloseReason::MaxPayloadExceeded,
            ProtoError::MaxControlLine => CloseReason::MaxControlLineExceeded,
            ProtoError::ClientErr => CloseReason::ClientClosed,
            ProtoError::UnknownOp | ProtoError::BadArgs { .. } => CloseReason::ProtocolViolation,
        })
    }

    fn process_op(&mut self, op: ClientOp<'_>) -> Flow {
        self.active_since_ping = true;
        if self.trace {
            trace::trace_op(&self.me, &op, self.srv.opts().max_traced_msg_len);
        }
        if self.auth_required && !self.connected && !matches!(op, ClientOp::Connect(_)) {
            self.send_err("Authorization Violation");
            return Flow::Close(CloseReason::AuthenticationViolation);
        }
        match op {
            ClientOp::Connect(json) => self.process_connect(json),
            ClientOp::Pub(mut msg) => self.process_pub(&mut msg),
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => self.process_sub(subject, queue, sid),
            ClientOp::Unsub { sid, max } => self.process_unsub(sid, max),
            ClientOp::Ping => {
                if self.trace {
                    self.me.trace_out("PONG");
                }
                self.send_raw(b"PONG\r\n");
                if self.connected && self.flags.protocol >= 1 && !self.info_after_pong {
                    self.info_after_pong = true;
                    self.me.async_info.store(true, Ordering::Relaxed);
                    let info = crate::info::client_line(
                        &self.srv,
                        self.me.cid,
                        self.me.addr,
                        self.nonce.as_deref(),
                        true,
                    );
                    self.send_raw(&info);
                }
                Flow::Continue
            }
            ClientOp::Pong => {
                self.pings_out = 0;
                self.me.pong_received();
                Flow::Continue
            }
            ClientOp::Ok => Flow::Continue,
            ClientOp::Info(json) => {
                if serde_json::from_slice::<Value>(json).is_ok_and(|v| v.is_object()) {
                    Flow::Continue
                } else {
                    Flow::Close(CloseReason::ProtocolViolation)
                }
            }
        }
    }
}
