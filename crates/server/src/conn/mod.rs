//! The shared half of a connection: what other tasks touch. Clients, routes and local
//! connections alike have one [`ClientShared`] (behind an `Arc`), held by their reader, their
//! writer task ([`write_loop`]), every [`Subscription`] of theirs and every publisher that
//! delivers to them.
//!
//! Buffering policy: publishers append `MSG`s straight into a subscriber's outbound buffer
//! ([`OutBuf`], under a short lock) and remember which subscribers they touched; when a
//! publisher has processed everything its last read gave it, it flushes or wakes each touched
//! writer once ([`ClientShared::flush_or_wake`]). So a burst of messages reaches a subscriber
//! in one write, and a publisher never waits on a subscriber beyond the bounded fast-producer
//! stall ([`ClientShared::wait_caught_up`]): one whose buffer would pass `max_pending` is
//! closed as a slow consumer instead.
//!
//! A connection's subscriptions ([`Subscription`], in `subscription`) sit in its sid map
//! ([`ClientShared::subs`]), and each points back at its connection: they are part of the
//! connection's shared state, so they live here too.

mod close;
mod subscription;
pub(crate) mod trace;
mod writer;

pub use close::CloseReason;
pub use subscription::Subscription;
pub(crate) use writer::write_loop;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::{Permissions, ResponseGrants, ResponsePermission, StoredCredentials};

/// Largest outbound buffer kept between bursts.
const KEEP_OUTBOUND: usize = 4 * 1024 * 1024;
/// A subscriber with this much pending makes its publishers wait for its writer.
const STALL_PENDING: usize = 2 * 1024 * 1024;
/// Longest a publisher waits per read for such a subscriber (as the reference's stall).
const STALL_MAX: Duration = Duration::from_millis(10);

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
    #[inline]
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
    /// How log lines name this connection (`ip:port - cid:N`, plus the client's tags once it
    /// sent CONNECT); see `trace`.
    log_id: Mutex<Arc<str>>,
    /// When the client last sent something, in ns since the Unix epoch (monitoring).
    last_activity: AtomicU64,
    /// Monotonic origin of `ping_sent_ns` (the connection's creation, when INFO is queued).
    born: std::time::Instant,
    /// When the server's outstanding PING went out, in ns since `born`; 0 = none.
    ping_sent_ns: AtomicU64,
    /// The last round trip measured (`/connz` `rtt`), in ns; 0 = not yet.
    rtt_ns: AtomicU64,
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

/// What [`ClientShared::enqueue_reply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Queued (or dropped: the connection is closed); the writer is already due to run.
    Queued,
    /// Queued, first since the writer last ran: wake it at the end of the batch.
    Wake,
    /// Not queued: pending would pass `max_pending`.
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
            log_id: Mutex::new(Arc::from(format!("{addr} - cid:{cid}"))),
            last_activity: AtomicU64::new(unix_nanos(SystemTime::now())),
            born: std::time::Instant::now(),
            ping_sent_ns: AtomicU64::new(0),
            rtt_ns: AtomicU64::new(0),
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
    #[inline]
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
        subject: &[u8],
        reply: Option<&[u8]>,
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
        let reply_bytes = reply.unwrap_or_default();
        let h = headers.unwrap_or_default();
        out.data
            .reserve(subject.len() + reply_bytes.len() + h.len() + body.len());
        out.data.extend_from_slice(subject);
        out.data.extend_from_slice(reply_bytes);
        out.data.extend_from_slice(h);
        out.data.extend_from_slice(body);
        // Lengths fit u32: subjects are bounded by the control line, payloads by max_payload.
        out.frames.push(LocalFrame {
            sid: sub.sid_num,
            start,
            subject: subject.len() as u32,
            reply: reply.map(|r| r.len() as u32),
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

    /// How log lines name this connection.
    pub fn log_id(&self) -> Arc<str> {
        self.log_id.lock().clone()
    }

    /// Adds the client's tags (from CONNECT) to its log id.
    pub(crate) fn set_log_tags(&self, tags: &str) {
        *self.log_id.lock() = Arc::from(format!("{} - cid:{}{tags}", self.addr, self.cid));
    }

    /// CONNECT arrived: the first round trip is INFO out to CONNECT in, as nats-server
    /// measures it before it has sent a PING of its own.
    pub(crate) fn connect_received(&self) {
        if self.rtt_ns.load(Ordering::Relaxed) == 0 {
            self.store_rtt(self.born.elapsed());
        }
    }

    /// The server sent a PING: the PONG that answers it measures the round trip.
    pub(crate) fn ping_sent(&self) {
        let at = self.born.elapsed().as_nanos().max(1) as u64;
        self.ping_sent_ns.store(at, Ordering::Relaxed);
    }

    /// A PONG came: the round trip of the server's outstanding PING, if one is.
    pub(crate) fn pong_received(&self) {
        let sent = self.ping_sent_ns.swap(0, Ordering::Relaxed);
        if sent > 0 {
            let now = self.born.elapsed().as_nanos() as u64;
            self.store_rtt(Duration::from_nanos(now.saturating_sub(sent)));
        }
    }

    fn store_rtt(&self, rtt: Duration) {
        self.rtt_ns
            .store((rtt.as_nanos() as u64).max(1), Ordering::Relaxed);
    }

    /// The last round trip, as nats-server reports it: whole µs between 1 µs and 1 ms.
    pub fn rtt(&self) -> Duration {
        let rtt = Duration::from_nanos(self.rtt_ns.load(Ordering::Relaxed));
        if rtt > Duration::from_micros(1) && rtt < Duration::from_millis(1) {
            Duration::from_micros(rtt.as_micros() as u64)
        } else {
            rtt
        }
    }

    /// Pending bytes past which a publisher stops to let this connection catch up.
    #[inline]
    pub(crate) fn stall_threshold(&self) -> usize {
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

    /// Whether deliveries keep their headers (`HMSG`); without, they go as `MSG` bodies.
    #[inline]
    pub(crate) fn wants_headers(&self) -> bool {
        self.headers.load(Ordering::Relaxed)
    }

    /// Appends one of the connection's own replies (`+OK`, `PONG`, `-ERR`). They count
    /// against `max_pending` like messages (as in the reference): a client that floods PINGs
    /// and never reads would otherwise grow its buffer until the write deadline.
    pub(crate) fn enqueue_reply(&self, len: usize, write: impl FnOnce(&mut BytesMut)) -> Reply {
        let mut out = self.out.lock();
        if out.closed {
            return Reply::Queued;
        }
        if out.data.len() + out.in_flight + len > self.max_pending {
            return Reply::SlowConsumer;
        }
        out.data.reserve(len);
        write(&mut out.data);
        if out.appended(None) {
            Reply::Wake
        } else {
            Reply::Queued
        }
    }

    /// Lets the connection answer `reply` (`allow_responses`).
    pub(crate) fn grant_reply(&self, reply: &[u8], perm: ResponsePermission) {
        self.grants.lock().grant(reply, perm);
    }

    /// Uses up a grant to publish to `subject`, if the connection holds one.
    pub(crate) fn take_grant(&self, subject: &[u8]) -> bool {
        self.grants.lock().take(subject)
    }

    /// Keeps what the connection authenticated with, for configuration reloads.
    pub(crate) fn set_credentials(&self, creds: StoredCredentials) {
        *self.creds.lock() = Some(creds);
    }

    pub(crate) fn credentials(&self) -> Option<StoredCredentials> {
        self.creds.lock().clone()
    }

    /// Hands the reader permissions set by a reload (picked up before its next op).
    pub(crate) fn set_new_permissions(&self, perms: Option<Arc<Permissions>>) {
        *self.new_perms.lock() = Some(perms);
        self.perms_changed.store(true, Ordering::Relaxed);
    }

    /// Permissions a reload set since the last call, if any (a cheap check when none).
    pub(crate) fn take_new_permissions(&self) -> Option<Option<Arc<Permissions>>> {
        if !self.perms_changed.load(Ordering::Relaxed) {
            return None;
        }
        self.perms_changed.store(false, Ordering::Relaxed);
        self.new_perms.lock().take()
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
