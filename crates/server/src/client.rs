//! One client connection: a reader task that parses and routes, and a writer task that
//! drains the connection's outbound buffer.
//!
//! Buffering policy: publishers append `MSG`s straight into each subscriber's outbound
//! buffer (under a short lock) and remember which subscribers they touched; when a
//! publisher has processed everything its last read gave it, it wakes each touched writer
//! once. So a burst of messages reaches a subscriber in one write, and a publisher never
//! waits on a subscriber: one whose buffer would pass `max_pending` is closed as a slow
//! consumer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, BytesMut};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rnats_protocol::{ClientOp, Limits, Parsed, ProtoError, parse_client_op};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, trace};

use crate::auth::{
    Credentials, Permissions, ResponseGrants, ResponsePermission, StoredCredentials,
};
use crate::net::SharedTcp;
use crate::server::ServerShared;
use crate::sublist::{FastMap, MatchCache, SubResult};

/// Why a connection was closed, with nats-server's wording (shown in monitoring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ClientClosed,
    ReadError,
    WriteError,
    SlowConsumerPendingBytes,
    SlowConsumerWriteDeadline,
    ProtocolViolation,
    ParseError,
    AuthenticationTimeout,
    AuthenticationViolation,
    MaxPayloadExceeded,
    MaxControlLineExceeded,
    MaxConnectionsExceeded,
    StaleConnection,
    ServerShutdown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "Client Closed",
            CloseReason::ReadError => "Read Error",
            CloseReason::WriteError => "Write Error",
            CloseReason::SlowConsumerPendingBytes => "Slow Consumer (Pending Bytes)",
            CloseReason::SlowConsumerWriteDeadline => "Slow Consumer (Write Deadline)",
            CloseReason::ProtocolViolation => "Protocol Violation",
            CloseReason::ParseError => "Parse Error",
            CloseReason::AuthenticationTimeout => "Authentication Timeout",
            CloseReason::AuthenticationViolation => "Authentication Failure",
            CloseReason::MaxPayloadExceeded => "Maximum Message Payload Exceeded",
            CloseReason::MaxControlLineExceeded => "Maximum Control Line Exceeded",
            CloseReason::MaxConnectionsExceeded => "Maximum Connections Exceeded",
            CloseReason::StaleConnection => "Stale Connection",
            CloseReason::ServerShutdown => "Server Shutdown",
        }
    }
}

struct OutBuf {
    data: BytesMut,
    /// Bytes the writer took and is still writing: pending = `data` + this.
    in_flight: usize,
    /// Messages and payload bytes appended since the writer last published the counters
    /// (counted under the lock publishers hold anyway, instead of with atomics).
    out_msgs: u64,
    out_bytes: u64,
    /// A publisher has queued this connection for a wake-up at the end of its batch.
    flush_scheduled: bool,
    closed: bool,
    /// The socket, for plain TCP, so publishers can write small batches themselves rather
    /// than wake the writer task (one context switch less per delivery). Dropped at close.
    sock: Option<Arc<TcpStream>>,
    /// A local connection's deliveries: where each message's parts sit in `data` (which then
    /// holds raw subjects and payloads, no protocol text to format and parse again).
    frames: Vec<LocalFrame>,
}

impl OutBuf {
    /// Counts what was just appended (a message of `body` payload bytes, or protocol bytes
    /// with `None`); true when it is the first append since the writer last ran, so the
    /// publisher must wake it at the end of its batch.
    fn appended(&mut self, body: Option<usize>) -> bool {
        if let Some(body) = body {
            self.out_msgs += 1;
            self.out_bytes += body as u64;
        }
        !std::mem::replace(&mut self.flush_scheduled, true)
    }
}

/// One message delivered to a local connection: its parts lie in order from `start` in the
/// outbound buffer (subject, reply, headers, body).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalFrame {
    pub sid: u64,
    pub start: usize,
    pub subject: u32,
    pub reply: Option<u32>,
    pub headers: Option<u32>,
    pub body: u32,
}

/// Counters of one connection, updated by its reader (in) and by publishers (out).
#[derive(Default)]
pub struct ClientStats {
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    pub out_msgs: AtomicU64,
    pub out_bytes: AtomicU64,
}

/// What the client told us in CONNECT, kept for monitoring.
#[derive(Default, Clone)]
pub struct ConnMeta {
    pub name: String,
    pub lang: String,
    pub version: String,
    pub user: Option<String>,
}

/// The part of a connection other tasks touch: its outbound buffer, flags and counters.
pub struct ClientShared {
    pub cid: u64,
    /// A route to another server rather than a client.
    pub is_route: bool,
    /// A connection from inside the process ([`crate::LocalConn`]): deliveries are framed,
    /// not written as `MSG` text.
    pub(crate) local: bool,
    /// The client has seen its post-CONNECT INFO and takes asynchronous INFOs.
    pub(crate) async_info: AtomicBool,
    pub addr: SocketAddr,
    pub started: SystemTime,
    out: Mutex<OutBuf>,
    pub(crate) wake: Notify,
    /// Signalled by the writer after each write, for publishers stalled on this client.
    drained: Notify,
    pub(crate) cancel: CancellationToken,
    headers: AtomicBool,
    pub(crate) max_pending: usize,
    close_reason: Mutex<Option<CloseReason>>,
    pub stats: ClientStats,
    pub subs: Mutex<HashMap<Box<[u8]>, Arc<Subscription>>>,
    pub meta: Mutex<ConnMeta>,
    /// When the client last sent something, in ns since the Unix epoch (monitoring).
    last_activity: AtomicU64,
    /// Reply subjects this connection may answer under `allow_responses`.
    grants: Mutex<ResponseGrants>,
    /// What it authenticated with (configuration reloads check it again).
    creds: Mutex<Option<StoredCredentials>>,
    /// Permissions set by a reload, picked up by the reader before its next op.
    new_perms: Mutex<Option<Option<Arc<Permissions>>>>,
    perms_changed: AtomicBool,
}

/// Outcome of appending to a connection's outbound buffer.
pub(crate) enum Enqueued {
    /// Appended; `schedule` when the caller must wake the writer at the end of its batch;
    /// `pending` is what now waits to be written; `count`, the subscription's deliveries so
    /// far, this one included.
    Yes {
        schedule: bool,
        pending: usize,
        count: u64,
    },
    /// The subscription already had its auto-unsubscribe maximum.
    OverMax,
    Closed,
    SlowConsumer,
}

impl ClientShared {
    pub(crate) fn new(cid: u64, addr: SocketAddr, max_pending: usize, is_route: bool) -> Self {
        ClientShared {
            cid,
            is_route,
            local: false,
            async_info: AtomicBool::new(false),
            addr,
            started: SystemTime::now(),
            out: Mutex::new(OutBuf {
                data: BytesMut::new(),
                in_flight: 0,
                out_msgs: 0,
                out_bytes: 0,
                flush_scheduled: false,
                closed: false,
                sock: None,
                frames: Vec::new(),
            }),
            wake: Notify::new(),
            drained: Notify::new(),
            cancel: CancellationToken::new(),
            headers: AtomicBool::new(false),
            max_pending,
            close_reason: Mutex::new(None),
            stats: ClientStats::default(),
            subs: Mutex::new(HashMap::new()),
            meta: Mutex::new(ConnMeta::default()),
            last_activity: AtomicU64::new(unix_nanos(SystemTime::now())),
            grants: Mutex::new(ResponseGrants::default()),
            creds: Mutex::new(None),
            new_perms: Mutex::new(None),
            perms_changed: AtomicBool::new(false),
        }
    }

    /// Appends a message (`body_len` payload bytes, counted) or, with `None`, protocol
    /// bytes; a slow consumer when pending would pass `max_pending`. With `sub`, the
    /// message is one of that subscription's deliveries (counted, up to its auto-unsubscribe
    /// maximum).
    pub(crate) fn enqueue(
        &self,
        len: usize,
        body_len: Option<usize>,
        sub: Option<&Subscription>,
        write: impl FnOnce(&mut BytesMut),
    ) -> Enqueued {
        let mut out = self.out.lock();
        if out.closed {
            return Enqueued::Closed;
        }
        if out.data.len() + out.in_flight + len > self.max_pending {
            return Enqueued::SlowConsumer;
        }
        let Some(count) = sub.map_or(Some(0), Subscription::count_delivery) else {
            return Enqueued::OverMax;
        };
        write(&mut out.data);
        let schedule = out.appended(body_len);
        Enqueued::Yes {
            schedule,
            pending: out.data.len() + out.in_flight,
            count,
        }
    }

    /// A local connection's [`ClientShared::enqueue`]: the message's parts are appended as
    /// they are and framed.
    pub(crate) fn enqueue_local(
        &self,
        sub: &Subscription,
        msg: &Msg<'_>,
        headers: Option<&[u8]>,
        body: &[u8],
    ) -> Enqueued {
        let mut out = self.out.lock();
        if out.closed {
            return Enqueued::Closed;
        }
        let Some(count) = sub.count_delivery() else {
            return Enqueued::OverMax;
        };
        let start = out.data.len();
        let reply = msg.reply.unwrap_or_default();
        let h = headers.unwrap_or_default();
        out.data
            .reserve(msg.subject.len() + reply.len() + h.len() + body.len());
        out.data.extend_from_slice(msg.subject);
        out.data.extend_from_slice(reply);
        out.data.extend_from_slice(h);
        out.data.extend_from_slice(body);
        // Lengths fit u32: subjects are bounded by the control line, payloads by max_payload.
        out.frames.push(LocalFrame {
            sid: sub.sid_num,
            start,
            subject: msg.subject.len() as u32,
            reply: msg.reply.map(|r| r.len() as u32),
            headers: headers.map(|h| h.len() as u32),
            body: body.len() as u32,
        });
        let schedule = out.appended(Some(h.len() + body.len()));
        Enqueued::Yes {
            schedule,
            pending: out.data.len(),
            count,
        }
    }

    /// At the end of a publisher's batch: writes what is queued straight to the socket when
    /// the writer task is idle and the socket takes it all; otherwise wakes the writer.
    pub(crate) fn flush_or_wake(&self) {
        let mut out = self.out.lock();
        if out.in_flight == 0
            && !out.data.is_empty()
            && let Some(sock) = out.sock.clone()
        {
            match sock.try_write(&out.data) {
                Ok(n) if n == out.data.len() => {
                    out.data.clear();
                    out.flush_scheduled = false;
                    let (msgs, bytes) = (
                        std::mem::take(&mut out.out_msgs),
                        std::mem::take(&mut out.out_bytes),
                    );
                    drop(out);
                    if msgs > 0 {
                        self.stats.out_msgs.fetch_add(msgs, Ordering::Relaxed);
                        self.stats.out_bytes.fetch_add(bytes, Ordering::Relaxed);
                    }
                    self.drained.notify_waiters();
                    return;
                }
                // The rest goes through the writer task, in order, after this part.
                Ok(n) => out.data.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    drop(out);
                    self.close(CloseReason::WriteError, false);
                    return;
                }
            }
        }
        drop(out);
        self.wake.notify_one();
    }

    /// For a local connection: hands what is queued over to `data` and `frames` (both
    /// empty: the buffers are swapped, nothing is copied) and counts it as sent. Some(false)
    /// when nothing is queued, None once closed and drained.
    pub(crate) fn take_frames(
        &self,
        data: &mut BytesMut,
        frames: &mut Vec<LocalFrame>,
    ) -> Option<bool> {
        debug_assert!(data.is_empty() && frames.is_empty());
        let (msgs, bytes) = {
            let mut out = self.out.lock();
            out.flush_scheduled = false;
            if out.frames.is_empty() {
                // (Protocol text a local connection has no use for, if any, goes too.)
                out.data.clear();
                return if out.closed { None } else { Some(false) };
            }
            std::mem::swap(&mut out.data, data);
            std::mem::swap(&mut out.frames, frames);
            (
                std::mem::take(&mut out.out_msgs),
                std::mem::take(&mut out.out_bytes),
            )
        };
        if msgs > 0 {
            self.stats.out_msgs.fetch_add(msgs, Ordering::Relaxed);
            self.stats.out_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        self.drained.notify_waiters();
        Some(true)
    }

    /// Records activity now (monitoring's `last_activity`).
    pub(crate) fn touch(&self) {
        self.last_activity
            .store(unix_nanos(SystemTime::now()), Ordering::Relaxed);
    }

    /// Pending bytes past which a publisher stops to let this connection catch up.
    fn stall_threshold(&self) -> usize {
        STALL_PENDING.min(self.max_pending / 2)
    }

    /// A publisher's fast-producer stall on this connection: waits, at most `STALL_MAX`, until
    /// its pending bytes are down to half the stall threshold (or it closed).
    pub(crate) async fn wait_caught_up(&self) {
        let _ = tokio::time::timeout(STALL_MAX, self.drained_to(self.stall_threshold() / 2)).await;
    }

    /// Waits until pending bytes are at most `threshold`.
    async fn drained_to(&self, threshold: usize) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let out = self.out.lock();
                if out.closed || out.data.len() + out.in_flight <= threshold {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Appends regardless of `max_pending` (protocol replies, route traffic) and wakes the
    /// writer at once.
    pub(crate) fn send_now(&self, write: impl FnOnce(&mut BytesMut)) {
        {
            let mut out = self.out.lock();
            if out.closed {
                return;
            }
            write(&mut out.data);
            out.flush_scheduled = true;
        }
        self.wake.notify_one();
    }

    /// Closes the connection. With `flush`, what is already queued (an `-ERR`, say) is still
    /// written before the socket closes; otherwise it is dropped. Returns whether this call
    /// was the one that closed it.
    pub fn close(&self, reason: CloseReason, flush: bool) -> bool {
        {
            let mut out = self.out.lock();
            if out.closed {
                return false;
            }
            out.closed = true;
            out.sock = None;
            if !flush {
                out.data.clear();
                out.frames.clear();
            }
        }
        *self.close_reason.lock() = Some(reason);
        self.cancel.cancel();
        true
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.close_reason.lock()
    }

    /// The plain TCP socket, for inline flushes (not for TLS connections).
    pub(crate) fn set_socket(&self, sock: Option<Arc<TcpStream>>) {
        self.out.lock().sock = sock;
    }

    pub(crate) fn set_headers(&self, headers: bool) {
        self.headers.store(headers, Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Bytes waiting to be written.
    pub fn pending_bytes(&self) -> usize {
        self.out.lock().data.len()
    }

    /// When the client last sent something.
    pub fn last_activity(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.last_activity.load(Ordering::Relaxed))
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Adds what a publisher sent (counted per batch, not per message) to the server's and the
/// connection's inbound counters.
pub(crate) fn count_in(srv: &ServerShared, me: &ClientShared, msgs: u64, bytes: u64) {
    srv.stats.in_msgs.fetch_add(msgs, Ordering::Relaxed);
    srv.stats.in_bytes.fetch_add(bytes, Ordering::Relaxed);
    me.stats.in_msgs.fetch_add(msgs, Ordering::Relaxed);
    me.stats.in_bytes.fetch_add(bytes, Ordering::Relaxed);
}

/// A client subscription, shared by the sublist, its connection and match caches.
pub struct Subscription {
    pub client: Arc<ClientShared>,
    pub subject: Box<[u8]>,
    pub queue: Option<Box<[u8]>>,
    pub sid: Box<[u8]>,
    /// `sid` as a number, for local connections (which number their subscriptions).
    sid_num: u64,
    /// Auto-unsubscribe after this many deliveries; 0 = never.
    max: AtomicU64,
    /// For a route's queue interest: how many members the remote server has.
    pub(crate) weight: AtomicU32,
    delivered: AtomicU64,
    closed: AtomicBool,
    /// The subscriber's permissions, when they deny subjects this subscription may match.
    deliver_filter: Option<Arc<Permissions>>,
    /// Set when the subscriber may answer requests it receives (`allow_responses`).
    response_perm: Option<ResponsePermission>,
}

impl Subscription {
    pub(crate) fn new(
        client: Arc<ClientShared>,
        subject: &[u8],
        queue: Option<&[u8]>,
        sid: &[u8],
        deliver_filter: Option<Arc<Permissions>>,
        response_perm: Option<ResponsePermission>,
    ) -> Subscription {
        Subscription {
            client,
            subject: subject.into(),
            queue: queue.map(Into::into),
            sid: sid.into(),
            sid_num: std::str::from_utf8(sid)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            max: AtomicU64::new(0),
            weight: AtomicU32::new(1),
            delivered: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            deliver_filter,
            response_perm,
        }
    }

    /// Counts one more delivery, or None past the auto-unsubscribe maximum. Called under the
    /// subscriber's outbound lock, which every delivery to it takes: a plain load and store,
    /// no atomic read-modify-write on the hot path.
    fn count_delivery(&self) -> Option<u64> {
        let max = self.max.load(Ordering::Relaxed);
        let count = self.delivered.load(Ordering::Relaxed) + 1;
        if max > 0 && count > max {
            return None;
        }
        self.delivered.store(count, Ordering::Relaxed);
        Some(count)
    }

    pub(crate) fn mark_closed(&self) -> bool {
        self.closed.swap(true, Ordering::Relaxed)
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// The auto-unsubscribe limit; 0 = none.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

/// A message being routed, as parsed from the publisher's read buffer.
pub(crate) struct Msg<'a> {
    pub subject: &'a [u8],
    pub reply: Option<&'a [u8]>,
    pub header_len: Option<usize>,
    pub header_token: &'a [u8],
    pub size_token: &'a [u8],
    pub payload: &'a [u8],
}

/// Options from CONNECT; absent fields keep the reference's defaults.
#[derive(Clone, Copy)]
struct ConnectFlags {
    verbose: bool,
    pedantic: bool,
    echo: bool,
    headers: bool,
    no_responders: bool,
    protocol: i64,
}

impl Default for ConnectFlags {
    fn default() -> Self {
        ConnectFlags {
            verbose: true,
            pedantic: true,
            echo: true,
            headers: false,
            no_responders: false,
            protocol: 0,
        }
    }
}

enum Flow {
    Continue,
    Close(CloseReason),
}

/// Most subjects a connection caches match results for.
const LOCAL_CACHE_MAX: usize = 512;
const MIN_READ: usize = 512;
/// Largest outbound buffer kept between bursts.
const KEEP_OUTBOUND: usize = 4 * 1024 * 1024;
/// A subscriber with this much pending makes its publishers wait for its writer.
const STALL_PENDING: usize = 2 * 1024 * 1024;
/// Longest a publisher waits per read for such a subscriber (as the reference's stall).
const STALL_MAX: Duration = Duration::from_millis(10);
const MAX_READ: usize = 64 * 1024;

/// The reader side of a connection and everything only it touches.
struct Conn {
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
    let info = srv.client_info_line(cid, addr, nonce.as_deref(), false);
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
    me.out.lock().sock = sock;
    if !info_sent {
        debug!("{addr} - cid:{cid} - Client connection created");
    }
    if !info_sent {
        let info = srv.client_info_line(cid, addr, nonce.as_deref(), false);
        let _ = me.enqueue(info.len(), None, None, |b| b.put_slice(&info));
    }
    let writer_task = tokio::spawn(write_loop(me.clone(), writer, srv.opts().write_deadline));
    me.wake.notify_one();

    let admitted = srv.register(&me);
    let mut conn = Conn {
        auth_required: srv.auth().required(),
        limits: Limits {
            max_control_line: srv.opts().max_control_line,
            max_payload: srv.opts().max_payload,
        },
        srv,
        me: me.clone(),
        flags: ConnectFlags::default(),
        connected: false,
        router: Router::new(),
        in_msgs: 0,
        in_bytes: 0,
        pings_out: 0,
        active_since_ping: false,
        info_after_pong: false,
        nonce: nonce.clone(),
        perms: None,
        pub_allowed: FastMap::default(),
        trace: tracing::enabled!(tracing::Level::TRACE),
    };
    if srv_auth_no_auth_user(&conn) {
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
    crate::monitor::connection_closed(&conn.srv, &me);
    conn.cleanup();
    let _ = writer_task.await;
    let reason = me.close_reason().unwrap_or(CloseReason::ClientClosed);
    debug!(
        "{addr} - cid:{cid} - Client connection closed: {}",
        reason.as_str()
    );
}

fn srv_auth_no_auth_user(conn: &Conn) -> bool {
    conn.srv.auth().no_auth_user.is_some()
}

pub(crate) async fn write_loop<W: AsyncWrite>(
    me: Arc<ClientShared>,
    writer: W,
    deadline: Duration,
) {
    tokio::pin!(writer);
    let mut chunk = BytesMut::new();
    loop {
        let cancelled = tokio::select! {
            () = me.wake.notified() => false,
            () = me.cancel.cancelled() => true,
        };
        loop {
            let (msgs, bytes) = {
                let mut out = me.out.lock();
                out.flush_scheduled = false;
                out.in_flight = 0;
                if out.data.is_empty() {
                    break;
                }
                // The publishers get this (empty, already grown) buffer back: no regrowth.
                std::mem::swap(&mut out.data, &mut chunk);
                out.in_flight = chunk.len();
                (
                    std::mem::take(&mut out.out_msgs),
                    std::mem::take(&mut out.out_bytes),
                )
            };
            if msgs > 0 {
                me.stats.out_msgs.fetch_add(msgs, Ordering::Relaxed);
                me.stats.out_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            let limit = if cancelled {
                deadline.min(Duration::from_secs(2))
            } else {
                deadline
            };
            match tokio::time::timeout(limit, write_chunk(&me, &mut writer, &chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    me.close(CloseReason::WriteError, false);
                    return;
                }
                Err(_) => {
                    if me.close(CloseReason::SlowConsumerWriteDeadline, false) {
                        debug!(
                            "cid:{} - Slow Consumer Detected: WriteDeadline of {deadline:?} exceeded",
                            me.cid
                        );
                    }
                    return;
                }
            }
            chunk.clear();
            me.drained.notify_waiters();
            // Keep buffers for the next burst, but not huge ones.
            if chunk.capacity() > KEEP_OUTBOUND {
                chunk = BytesMut::new();
            }
        }
        {
            let mut out = me.out.lock();
            out.in_flight = 0;
            // Idle: give back a large publisher-side buffer too.
            if out.data.is_empty() && out.data.capacity() > KEEP_OUTBOUND {
                out.data = BytesMut::new();
            }
        }
        me.drained.notify_waiters();
        if cancelled {
            let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
            return;
        }
    }
}

/// Writes `chunk` whole, lowering the connection's `in_flight` after each write so that a
/// publisher stalled on it goes on as soon as the socket took enough, not only once the whole
/// chunk (megabytes for a fast producer) is out.
async fn write_chunk<W: AsyncWrite>(
    me: &ClientShared,
    writer: &mut std::pin::Pin<&mut W>,
    chunk: &[u8],
) -> std::io::Result<()> {
    let mut written = 0;
    while written < chunk.len() {
        let n = writer.write(&chunk[written..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        written += n;
        if written < chunk.len() {
            me.out.lock().in_flight = chunk.len() - written;
            me.drained.notify_waiters();
        }
    }
    Ok(())
}

impl Conn {
    async fn read_loop<R: AsyncRead + Unpin>(&mut self, reader: &mut R) {
        let mut buf = BytesMut::with_capacity(MIN_READ);
        let mut read_size = MIN_READ;
        let cancel = self.me.cancel.clone();
        let shutdown = self.srv.shutdown.clone();
        let ping_interval = self.srv.opts().ping_interval;
        let mut next_ping = tokio::time::Instant::now() + ping_interval;
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
                        self.me.last_activity.store(unix_nanos(SystemTime::now()), Ordering::Relaxed);
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
                    self.ping_timer()
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
    fn apply_new_permissions(&mut self) {
        self.me.perms_changed.store(false, Ordering::Relaxed);
        let Some(perms) = self.me.new_perms.lock().take() else {
            return;
        };
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
        if self.me.perms_changed.load(Ordering::Relaxed) {
            self.apply_new_permissions();
        }
        let mut pos = 0;
        let mut flow = Flow::Continue;
        loop {
            match parse_client_op(&buf[pos..], &self.limits) {
                Ok(Parsed::Op(op, used)) => {
                    pos += used;
                    flow = self.process_op(op);
                    // A closing connection stops here; so does a publisher that must wait
                    // for a subscriber (the rest of the buffer is processed after the wait).
                    if matches!(flow, Flow::Close(_)) || self.router.batch.stall.is_some() {
                        break;
                    }
                }
                Ok(Parsed::Incomplete { need }) => {
                    if let Some(need) = need {
                        buf.reserve(need.saturating_sub(buf.len() - pos));
                    }
                    break;
                }
                Err(e) => {
                    flow = self.protocol_error(e);
                    break;
                }
            }
        }
        buf.advance(pos);
        self.flush_counters();
        flow
    }

    fn protocol_error(&mut self, e: ProtoError) -> Flow {
        if let Some(text) = e.err_text() {
            self.send_err(text);
        }
        error!("{} - cid:{} - {}", self.me.addr, self.me.cid, e);
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
            trace_op(&self.me, &op);
        }
        if self.auth_required && !self.connected && !matches!(op, ClientOp::Connect(_)) {
            self.send_err("Authorization Violation");
            return Flow::Close(CloseReason::AuthenticationViolation);
        }
        match op {
            ClientOp::Connect(json) => self.process_connect(json),
            ClientOp::Pub {
                subject,
                reply,
                header_len,
                header_token,
                size_token,
                payload,
            } => self.process_pub(&mut Msg {
                subject,
                reply,
                header_len,
                header_token,
                size_token,
                payload,
            }),
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => self.process_sub(subject, queue, sid),
            ClientOp::Unsub { sid, max } => self.process_unsub(sid, max),
            ClientOp::Ping => {
                self.send_raw(b"PONG\r\n");
                if self.connected && self.flags.protocol >= 1 && !self.info_after_pong {
                    self.info_after_pong = true;
                    self.me.async_info.store(true, Ordering::Relaxed);
                    let info = self.srv.client_info_line(
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

    fn process_connect(&mut self, json: &[u8]) -> Flow {
        let Some(obj) = serde_json::from_slice::<Value>(json)
            .ok()
            .and_then(|v| match v {
                Value::Object(obj) if connect_types_ok(&obj) => Some(obj),
                _ => None,
            })
        else {
            error!(
                "{} - cid:{} - invalid CONNECT json",
                self.me.addr, self.me.cid
            );
            return Flow::Close(CloseReason::ProtocolViolation);
        };
        let get_bool =
            |key: &str, default: bool| obj.get(key).and_then(Value::as_bool).unwrap_or(default);
        let get_str = |key: &str| {
            obj.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let defaults = ConnectFlags::default();
        let flags = ConnectFlags {
            verbose: get_bool("verbose", defaults.verbose),
            pedantic: get_bool("pedantic", defaults.pedantic),
            echo: get_bool("echo", defaults.echo),
            headers: get_bool("headers", false) && !self.srv.opts().no_header_support,
            no_responders: get_bool("no_responders", false),
            protocol: obj.get("protocol").and_then(Value::as_i64).unwrap_or(0),
        };
        if !(0..=1).contains(&flags.protocol) {
            self.send_err("invalid client protocol");
            return Flow::Close(CloseReason::ProtocolViolation);
        }
        if flags.no_responders && !get_bool("headers", false) {
            self.send_err("no responders requires headers support");
            return Flow::Close(CloseReason::ProtocolViolation);
        }
        let user = obj.get("user").and_then(Value::as_str);
        if self.srv.auth().enabled() {
            let creds = Credentials {
                user,
                pass: obj.get("pass").and_then(Value::as_str),
                token: obj.get("auth_token").and_then(Value::as_str),
                nkey: obj.get("nkey").and_then(Value::as_str),
                sig: obj.get("sig").and_then(Value::as_str),
            };
            let legacy_account = obj.get("account").is_some_and(|a| !a.is_null())
                || obj.get("new_account").is_some_and(|a| !a.is_null());
            match self.srv.auth().authenticate(&creds, self.nonce.as_deref()) {
                Some(who) if !legacy_account => {
                    *self.me.creds.lock() = Some(StoredCredentials::from(&creds));
                    self.perms = who.permissions;
                    self.pub_allowed.clear();
                }
                _ => {
                    error!(
                        "{} - cid:{} - authentication error",
                        self.me.addr, self.me.cid
                    );
                    self.send_err("Authorization Violation");
                    return Flow::Close(CloseReason::AuthenticationViolation);
                }
            }
        }
        *self.me.meta.lock() = ConnMeta {
            name: get_str("name"),
            lang: get_str("lang"),
            version: get_str("version"),
            user: user.map(str::to_string),
        };
        self.flags = flags;
        self.me.headers.store(flags.headers, Ordering::Relaxed);
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
            let text = match queue {
                Some(q) => format!(
                    "Permissions Violation for Subscription to \"{subject}\" using queue \"{}\"",
                    String::from_utf8_lossy(q)
                ),
                None => format!("Permissions Violation for Subscription to \"{subject}\""),
            };
            self.send_err(&text);
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
                Some(Some(max)) if max > sub.delivered() => sub.max.store(max, Ordering::Relaxed),
                _ => self.srv.remove_subscription(&sub),
            }
        }
        self.ok();
        Flow::Continue
    }

    fn process_pub(&mut self, msg: &mut Msg<'_>) -> Flow {
        if msg.header_len.is_some() && !self.flags.headers {
            error!(
                "{} - cid:{} - HPUB without headers support",
                self.me.addr, self.me.cid
            );
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
            let text = format!(
                "Permissions Violation for Publish to \"{}\"",
                String::from_utf8_lossy(msg.subject)
            );
            self.send_err(&text);
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
        allowed || (perms.allow_responses.is_some() && self.me.grants.lock().take(subject))
    }
}

/// Routes published messages: to local subscribers (queue groups spread at random) and once
/// per route that has interest. A publisher (a connection's reader, a local connection) owns
/// one, with its match cache and the writers it touched since it last woke them.
pub(crate) struct Router {
    /// Writers to wake and counters to publish once the publisher's batch is processed.
    pub batch: Batch,
    cache: MatchCache<Subscription>,
    cache_generation: u64,
    /// The subject routed last and its result (same generation): a run of messages to one
    /// subject, such as a batch of deliveries to one inbox, skips the hash lookup.
    last_subject: Vec<u8>,
    last_result: Option<Arc<SubResult<Subscription>>>,
    rng: SmallRng,
    /// Routes this message goes to, with the queue groups (indices) each is picked for.
    route_targets: Vec<(Arc<ClientShared>, Vec<usize>)>,
}

impl Router {
    pub(crate) fn new() -> Router {
        Router {
            batch: Batch::default(),
            cache: MatchCache::default(),
            cache_generation: 0,
            last_subject: Vec::new(),
            last_result: None,
            rng: SmallRng::from_os_rng(),
            route_targets: Vec::new(),
        }
    }

    pub(crate) fn clear_cache(&mut self) {
        self.cache.clear();
        self.last_result = None;
    }

    /// Delivers `msg` to whoever wants it (not to `skip_cid`, a publisher with echo off);
    /// returns how many subscribers and routes got it.
    pub(crate) fn route(
        &mut self,
        srv: &ServerShared,
        msg: &Msg<'_>,
        skip_cid: Option<u64>,
    ) -> usize {
        let generation = srv.sublist.generation();
        if generation != self.cache_generation {
            self.cache.clear();
            self.last_result = None;
            self.cache_generation = generation;
        }
        // The memo is moved out and back rather than cloned: no atomic per message.
        let result = match self.last_result.take() {
            Some(last) if self.last_subject == msg.subject => last,
            _ => {
                let result = match self.cache.get(msg.subject) {
                    Some(hit) => hit.clone(),
                    None => {
                        let result = srv.sublist.matches(msg.subject);
                        if self.cache.len() >= LOCAL_CACHE_MAX {
                            self.cache.clear();
                        }
                        self.cache.insert(msg.subject.into(), result.clone());
                        result
                    }
                };
                self.last_subject.clear();
                self.last_subject.extend_from_slice(msg.subject);
                result
            }
        };
        let mut delivered = 0usize;
        let mut routed = false;
        for sub in &result.plain {
            if sub.client.is_route {
                routed |= self.route_target(&sub.client, None);
            } else {
                delivered += usize::from(deliver_to(srv, &mut self.batch, sub, msg, skip_cid));
            }
        }
        for (gi, group) in result.queues.iter().enumerate() {
            let n = group.members.len();
            // Local members weigh 1, a route its advertised member count.
            let total: u64 = group
                .members
                .iter()
                .map(|m| u64::from(m.weight.load(Ordering::Relaxed).max(1)))
                .sum();
            let mut pick = if n > 1 {
                self.rng.random_range(0..total)
            } else {
                0
            };
            let mut start = 0;
            for (i, m) in group.members.iter().enumerate() {
                let w = u64::from(m.weight.load(Ordering::Relaxed).max(1));
                if pick < w {
                    start = i;
                    break;
                }
                pick -= w;
            }
            let chosen = &group.members[start];
            if chosen.client.is_route {
                routed |= self.route_target(&chosen.client, Some(gi));
                continue;
            }
            for i in 0..n {
                let member = &group.members[(start + i) % n];
                if !member.client.is_route
                    && deliver_to(srv, &mut self.batch, member, msg, skip_cid)
                {
                    delivered += 1;
                    break;
                }
            }
        }
        if routed {
            delivered += self.send_route_targets(&result, msg);
        }
        self.last_result = Some(result);
        delivered
    }

    /// Notes that `route` gets this message (once per route), for queue group `group`.
    fn route_target(&mut self, route: &Arc<ClientShared>, group: Option<usize>) -> bool {
        let entry = match self
            .route_targets
            .iter_mut()
            .position(|(r, _)| r.cid == route.cid)
        {
            Some(i) => &mut self.route_targets[i],
            None => {
                self.route_targets.push((route.clone(), Vec::new()));
                self.route_targets.last_mut().expect("just pushed")
            }
        };
        if let Some(g) = group {
            entry.1.push(g);
        }
        true
    }

    /// Writes one RMSG/HMSG per route target; returns how many routes got the message.
    fn send_route_targets(&mut self, result: &SubResult<Subscription>, msg: &Msg<'_>) -> usize {
        let mut sent = 0;
        for (route, groups) in self.route_targets.drain(..) {
            let queues = groups.iter().map(|&g| &*result.queues[g].name);
            let header = msg.header_len.map(|_| (msg.header_token, msg.size_token));
            let len = msg.subject.len() + msg.reply.map_or(0, <[u8]>::len) + msg.payload.len() + 64;
            let enqueued = route.enqueue(len, Some(msg.payload.len()), None, |out| {
                rnats_protocol::write_rmsg(
                    out,
                    b"$G",
                    msg.subject,
                    msg.reply,
                    queues,
                    header,
                    msg.size_token,
                    msg.payload,
                );
            });
            // Routes have no max_pending; a route that falls behind slows its publishers
            // down like a subscriber does, and TCP carries that back to the other server.
            if let Enqueued::Yes {
                schedule, pending, ..
            } = enqueued
            {
                if schedule {
                    self.batch.touched.push(route.clone());
                }
                if pending > route.stall_threshold() && self.batch.stall.is_none() {
                    self.batch.stall = Some(route.clone());
                }
                sent += 1;
            }
        }
        sent
    }
}

/// What one reader's batch of input did to others: writers to wake at its end, and server
/// counters added once per batch rather than per message (no shared cache line per message).
#[derive(Default)]
pub(crate) struct Batch {
    pub touched: Vec<Arc<ClientShared>>,
    /// A subscriber so far behind that the publisher should wait for it before reading on.
    pub stall: Option<Arc<ClientShared>>,
    pub out_msgs: u64,
    pub out_bytes: u64,
}

impl Batch {
    /// Publishes the counters; the caller then wakes `touched`.
    pub fn finish(&mut self, srv: &ServerShared) {
        if self.out_msgs > 0 {
            srv.stats
                .out_msgs
                .fetch_add(self.out_msgs, Ordering::Relaxed);
            srv.stats
                .out_bytes
                .fetch_add(self.out_bytes, Ordering::Relaxed);
            self.out_msgs = 0;
            self.out_bytes = 0;
        }
    }

    /// Publishes the counters and wakes every touched writer.
    pub fn wake_all(&mut self, srv: &ServerShared) {
        self.finish(srv);
        for client in self.touched.drain(..) {
            client.flush_or_wake();
        }
    }
}

/// Queues `msg` for the local subscription `sub`; false when it was not delivered (the
/// publisher itself with echo off, closed, past its max, filtered by permissions).
pub(crate) fn deliver_to(
    srv: &ServerShared,
    batch: &mut Batch,
    sub: &Arc<Subscription>,
    msg: &Msg<'_>,
    skip_cid: Option<u64>,
) -> bool {
    {
        let client = &sub.client;
        if skip_cid == Some(client.cid) || sub.closed.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(perms) = &sub.deliver_filter
            && !perms.can_deliver(msg.subject)
        {
            return false;
        }
        let to_headers = client.headers.load(Ordering::Relaxed);
        let body = match msg.header_len {
            Some(h) if !to_headers => &msg.payload[h..],
            _ => msg.payload,
        };
        let len = msg.subject.len()
            + sub.sid.len()
            + msg.reply.map_or(0, <[u8]>::len)
            + msg.payload.len()
            + 40;
        let enqueued = if client.local {
            let (headers, body) = match msg.header_len {
                Some(h) => (Some(&msg.payload[..h]), &msg.payload[h..]),
                None => (None, msg.payload),
            };
            client.enqueue_local(sub, msg, headers, body)
        } else {
            client.enqueue(len, Some(body.len()), Some(sub), |out| {
                match msg.header_len {
                    Some(_) if to_headers => rnats_protocol::write_hmsg(
                        out,
                        msg.subject,
                        &sub.sid,
                        msg.reply,
                        msg.header_token,
                        msg.size_token,
                        msg.payload,
                    ),
                    Some(_) => {
                        rnats_protocol::write_msg(out, msg.subject, &sub.sid, msg.reply, None, body)
                    }
                    None => rnats_protocol::write_msg(
                        out,
                        msg.subject,
                        &sub.sid,
                        msg.reply,
                        Some(msg.size_token),
                        body,
                    ),
                }
            })
        };
        match enqueued {
            Enqueued::Yes {
                schedule,
                pending,
                count,
            } => {
                if schedule {
                    batch.touched.push(client.clone());
                }
                if pending > client.stall_threshold() && batch.stall.is_none() {
                    batch.stall = Some(client.clone());
                }
                if let (Some(perm), Some(reply)) = (sub.response_perm, msg.reply) {
                    client.grants.lock().grant(reply, perm);
                }
                batch.out_msgs += 1;
                batch.out_bytes += body.len() as u64;
                if count == sub.max.load(Ordering::Relaxed) {
                    srv.remove_subscription(sub);
                }
                true
            }
            Enqueued::Closed | Enqueued::OverMax => false,
            Enqueued::SlowConsumer => {
                if client.close(CloseReason::SlowConsumerPendingBytes, false) {
                    srv.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "{} - cid:{} - Slow Consumer Detected: MaxPending of {} Exceeded",
                        client.addr,
                        client.cid,
                        srv.opts().max_pending
                    );
                }
                false
            }
        }
    }
}

impl Conn {
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

    fn ping_timer(&mut self) -> Flow {
        if self.active_since_ping && self.pings_out == 0 {
            self.active_since_ping = false;
            return Flow::Continue;
        }
        self.active_since_ping = false;
        if self.pings_out + 1 > self.srv.opts().ping_max {
            self.send_err("Stale Connection");
            return Flow::Close(CloseReason::StaleConnection);
        }
        self.pings_out += 1;
        self.send_raw(b"PING\r\n");
        Flow::Continue
    }

    fn enqueue_own(&mut self, len: usize, write: impl FnOnce(&mut BytesMut)) {
        // Our own replies ignore max_pending: they are tiny and must not be lost.
        let mut out = self.me.out.lock();
        if out.closed {
            return;
        }
        out.data.reserve(len);
        write(&mut out.data);
        if !out.flush_scheduled {
            out.flush_scheduled = true;
            drop(out);
            self.router.batch.touched.push(self.me.clone());
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.enqueue_own(bytes.len(), |out| out.put_slice(bytes));
    }

    fn send_err(&mut self, text: &str) {
        debug!(
            "{} - cid:{} - Sending -ERR '{text}'",
            self.me.addr, self.me.cid
        );
        self.enqueue_own(text.len() + 9, |out| rnats_protocol::write_err(out, text));
    }

    fn ok(&mut self) {
        if self.flags.verbose {
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
            if !sub.closed.swap(true, Ordering::Relaxed) {
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

impl ServerShared {
    /// After a reload: closes clients whose credentials no longer pass and hands the others
    /// their new permissions.
    pub(crate) fn reauthorize_clients(&self) {
        let auth = self.auth();
        let clients: Vec<Arc<ClientShared>> = self.clients.lock().values().cloned().collect();
        for client in clients {
            let creds = client.creds.lock().clone();
            let outcome = match creds {
                Some(creds) => auth.reauthenticate(&creds),
                None if auth.enabled() => auth.authenticate(&Credentials::default(), None),
                None => Some(crate::auth::Authenticated {
                    user: None,
                    permissions: None,
                }),
            };
            match outcome {
                Some(who) => {
                    *client.new_perms.lock() = Some(who.permissions);
                    client.perms_changed.store(true, Ordering::Relaxed);
                }
                None => {
                    client
                        .send_now(|out| rnats_protocol::write_err(out, "Authorization Violation"));
                    client.close(CloseReason::AuthenticationViolation, true);
                }
            }
        }
    }

    /// Removes a subscription from the index and its connection (UNSUB, auto-unsubscribe).
    pub fn remove_subscription(&self, sub: &Arc<Subscription>) {
        if sub.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        sub.client.subs.lock().remove(&sub.sid);
        self.sublist.remove(&sub.subject, sub.queue.as_deref(), sub);
        self.local_interest_changed(&sub.subject, sub.queue.as_deref(), -1);
    }
}

/// Field types the reference's JSON decoding insists on; a mismatch closes the connection.
fn connect_types_ok(obj: &serde_json::Map<String, Value>) -> bool {
    const BOOLS: [&str; 6] = [
        "verbose",
        "pedantic",
        "tls_required",
        "echo",
        "headers",
        "no_responders",
    ];
    const STRINGS: [&str; 9] = [
        "auth_token",
        "user",
        "pass",
        "name",
        "lang",
        "version",
        "sig",
        "jwt",
        "nkey",
    ];
    obj.iter().all(|(key, value)| {
        value.is_null()
            || if BOOLS.contains(&key.as_str()) {
                value.is_boolean()
            } else if STRINGS.contains(&key.as_str()) {
                value.is_string()
            } else if key == "protocol" {
                value.is_i64()
            } else {
                true
            }
    })
}

/// CONNECT JSON for the trace log, with passwords and tokens replaced by `[REDACTED]` (as
/// nats-server does): secrets never reach the logs.
pub(crate) fn redact_secrets(json: &[u8]) -> String {
    match serde_json::from_slice::<Value>(json) {
        Ok(Value::Object(mut obj)) => {
            for key in ["pass", "auth_token"] {
                if let Some(v) = obj.get_mut(key)
                    && !v.is_null()
                {
                    *v = Value::String("[REDACTED]".into());
                }
            }
            Value::Object(obj).to_string()
        }
        // Not JSON: nothing structured to redact, so show none of it.
        _ => "[invalid JSON]".into(),
    }
}

fn trace_op(me: &ClientShared, op: &ClientOp<'_>) {
    let text = match op {
        ClientOp::Connect(json) => format!("CONNECT {}", redact_secrets(json)),
        ClientOp::Pub {
            subject,
            reply,
            size_token,
            header_len,
            ..
        } => format!(
            "{} {}{} {}",
            if header_len.is_some() { "HPUB" } else { "PUB" },
            String::from_utf8_lossy(subject),
            reply
                .map(|r| format!(" {}", String::from_utf8_lossy(r)))
                .unwrap_or_default(),
            String::from_utf8_lossy(size_token)
        ),
        ClientOp::Sub {
            subject,
            queue,
            sid,
        } => format!(
            "SUB {}{} {}",
            String::from_utf8_lossy(subject),
            queue
                .map(|q| format!(" {}", String::from_utf8_lossy(q)))
                .unwrap_or_default(),
            String::from_utf8_lossy(sid)
        ),
        ClientOp::Unsub { sid, .. } => format!("UNSUB {}", String::from_utf8_lossy(sid)),
        ClientOp::Ping => "PING".into(),
        ClientOp::Pong => "PONG".into(),
        ClientOp::Ok => "+OK".into(),
        ClientOp::Info(json) => format!("INFO {}", String::from_utf8_lossy(json)),
    };
    trace!("{} - cid:{} - <<- [{text}]", me.addr, me.cid);
}
