//! The client handle and the connection task.
//!
//! # Tasks and state
//!
//! One background task per client owns the socket. While connected it runs three loops in one
//! `select!`: the *reader* (parse server ops, deliver messages, answer PINGs, match PONGs,
//! handle INFO), the *writer* (send whatever is buffered) and the *pinger* (keepalive). When
//! any of them ends the connection is over: the task marks the client disconnected and walks
//! the server pool with backoff until a handshake succeeds, then restores the subscriptions
//! and goes back to the connected loops.
//!
//! Client calls never talk to the task through a channel; they append encoded operations to
//! one shared outbound buffer ([`Outbound`], under a mutex) and wake the writer:
//!
//! * connected: a publish appends and returns; when more than `write_buffer_limit` bytes wait
//!   for the socket, it waits until the writer has taken them (backpressure);
//! * disconnected: publishes keep appending up to `reconnect_buffer_size`, then fail with
//!   `ReconnectBufferFull` (nothing is dropped silently). SUB/UNSUB are not buffered: the
//!   subscription table is replayed on reconnect, in front of the buffered publishes;
//! * `flush()` registers a waiter; the writer sends one PING per waiter after the data taken
//!   with it, and the reader completes waiters in order as PONGs arrive. Waiters whose PING
//!   was on a connection that broke fail with `FlushErrorKind::Disconnected`.
//!
//! Lock order (never taken the other way round): `subs` → `mux` → `out`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::connection::{RawConnection as Established, ServerInfo, Transport, handshake};
use crate::error::*;
use crate::header::{HeaderMap, NO_RESPONDERS, parse_headers};
use crate::options::{ConnectOptions, Event, ServerAddr};
use crate::pool::{ServerPool, backoff};
use crate::proto::{self, ServerOp};
use crate::subject::{is_valid_publish_subject, is_valid_queue, is_valid_subject};
use crate::subscriber::Subscriber;

/// A message received on a subscription (or as a reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub reply: Option<String>,
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
    /// Status code of the header block (`NATS/1.0 503` → 503).
    pub status: Option<u16>,
    pub description: Option<String>,
    /// Bytes on the wire: header block plus payload.
    pub length: usize,
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connected,
    Disconnected,
    Closed,
}

/// Counters since the client was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    pub in_msgs: u64,
    pub in_bytes: u64,
    pub out_msgs: u64,
    pub out_bytes: u64,
    pub reconnects: u64,
}

#[derive(Default)]
struct Counters {
    in_msgs: AtomicU64,
    in_bytes: AtomicU64,
    out_msgs: AtomicU64,
    out_bytes: AtomicU64,
    reconnects: AtomicU64,
}

/// A request: payload, optional headers, optional timeout (else the client's default).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
    pub timeout: Option<Duration>,
}

impl Request {
    pub fn new() -> Request {
        Request::default()
    }
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = payload.into();
        self
    }
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Connected,
    Disconnected,
    Closing,
    Closed,
}

type Waiter = Option<oneshot::Sender<()>>;

struct Outbound {
    buf: BytesMut,
    link: Link,
    /// PINGs to send after the buffered data: `Some` for `flush()`, `None` for keepalive.
    flush_waiters: Vec<Waiter>,
    /// PINGs sent, in order, waiting for their PONG.
    in_flight: VecDeque<Waiter>,
    /// Keepalive PINGs since the last PONG.
    pings_out: usize,
}

enum Delivery {
    Channel {
        tx: mpsc::Sender<Message>,
        slow: bool,
    },
    /// The shared request inbox: routed by the last token to a waiting request.
    Mux,
}

struct SubEntry {
    subject: String,
    queue: Option<String>,
    delivery: Delivery,
    /// Auto-unsubscribe after this many messages in total.
    max: Option<u64>,
    delivered: u64,
}

struct Mux {
    sid: Option<u64>,
    /// `_INBOX.<nuid>.`
    prefix: String,
    next_token: u64,
    waiting: HashMap<String, oneshot::Sender<Message>>,
}

pub(crate) struct Shared {
    opts: ConnectOptions,
    out: Mutex<Outbound>,
    write_wake: Notify,
    close_wake: Notify,
    drained: Notify,
    /// By sid (foldhash: looked up for every message received).
    subs: Mutex<HashMap<u64, SubEntry, foldhash::fast::RandomState>>,
    mux: Mutex<Mux>,
    next_sid: AtomicU64,
    info: Mutex<ServerInfo>,
    max_payload: AtomicUsize,
    events: broadcast::Sender<Event>,
    state: watch::Sender<State>,
    counters: Counters,
}

/// A connection to a NATS server (pool). Cheap to clone; the connection closes (after sending
/// what is buffered) when the last clone and the last [`Subscriber`] are dropped, or on
/// [`close`](Client::close) / [`drain`](Client::drain).
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientRef>,
}

struct ClientRef {
    shared: Arc<Shared>,
}

impl Drop for ClientRef {
    fn drop(&mut self) {
        self.shared.start_close();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .field("server", &self.shared().info.lock().server_id)
            .finish()
    }
}

impl Client {
    pub(crate) async fn connect_with(
        addrs: Vec<ServerAddr>,
        opts: ConnectOptions,
    ) -> Result<Client, ConnectError> {
        let mut pool = ServerPool::new(addrs, !opts.retain_servers_order, &mut rand::rng());
        if pool.len() == 0 {
            return Err(ConnectError::new(ConnectErrorKind::NoServers));
        }
        let mut last_err = None;
        let mut established = None;
        for _ in 0..pool.len() {
            let addr = pool.next().expect("pool not empty");
            match handshake(&addr, &opts).await {
                Ok(est) => {
                    established = Some(est);
                    break;
                }
                Err(e) => {
                    debug!(%addr, error = %e, "connect attempt failed");
                    last_err = Some(e);
                }
            }
        }
        let Some(est) = established else {
            return Err(last_err.expect("at least one attempt"));
        };
        let (events, _) = broadcast::channel(256);
        let (state, _) = watch::channel(State::Connected);
        let mux_prefix = format!("{}.{}.", opts.inbox_prefix, nuid::next());
        let shared = Arc::new(Shared {
            out: Mutex::new(Outbound {
                buf: BytesMut::with_capacity(64 * 1024),
                link: Link::Connected,
                flush_waiters: Vec::new(),
                in_flight: VecDeque::new(),
                pings_out: 0,
            }),
            write_wake: Notify::new(),
            close_wake: Notify::new(),
            drained: Notify::new(),
            subs: Mutex::new(HashMap::default()),
            mux: Mutex::new(Mux {
                sid: None,
                prefix: mux_prefix,
                next_token: 0,
                waiting: HashMap::new(),
            }),
            next_sid: AtomicU64::new(1),
            max_payload: AtomicUsize::new(est.info.max_payload),
            info: Mutex::new(est.info.clone()),
            events,
            state,
            counters: Counters::default(),
            opts,
        });
        if !shared.opts.ignore_discovered_servers && !est.info.connect_urls.is_empty() {
            pool.update_discovered(&est.info.connect_urls, &est.addr, &mut rand::rng());
        }
        shared.emit(Event::Connected(est.addr.to_string()));
        tokio::spawn(run(shared.clone(), est, pool));
        Ok(Client {
            inner: Arc::new(ClientRef { shared }),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Publishes `payload` to `subject`.
    pub async fn publish(
        &self,
        subject: impl AsRef<str>,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), PublishError> {
        self.shared()
            .publish(subject.as_ref(), None, None, payload.as_ref())
            .await
    }

    /// Publishes with a reply subject, for a responder to answer on.
    pub async fn publish_with_reply(
        &self,
        subject: impl AsRef<str>,
        reply: impl AsRef<str>,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), PublishError> {
        self.shared()
            .publish(
                subject.as_ref(),
                Some(reply.as_ref()),
                None,
                payload.as_ref(),
            )
            .await
    }

    /// Publishes several messages (no reply, no headers) in order, taking the outbound buffer
    /// once per `write_buffer_limit` worth of data and waking the writer once, instead of
    /// once per message. A message that cannot be sent (invalid subject, larger than the
    /// server's max payload) is skipped and the first such error is returned once the others
    /// were queued; a closed connection (or a full reconnect buffer) stops the batch there.
    pub async fn publish_batch<S, P>(&self, msgs: &[(S, P)]) -> Result<(), PublishError>
    where
        S: AsRef<str>,
        P: AsRef<[u8]>,
    {
        self.shared().publish_batch(msgs).await
    }

    /// Publishes with headers (`HPUB`).
    pub async fn publish_with_headers(
        &self,
        subject: impl AsRef<str>,
        headers: &HeaderMap,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), PublishError> {
        self.shared()
            .publish(subject.as_ref(), None, Some(headers), payload.as_ref())
            .await
    }

    pub async fn publish_with_reply_and_headers(
        &self,
        subject: impl AsRef<str>,
        reply: impl AsRef<str>,
        headers: &HeaderMap,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), PublishError> {
        self.shared()
            .publish(
                subject.as_ref(),
                Some(reply.as_ref()),
                Some(headers),
                payload.as_ref(),
            )
            .await
    }

    /// Subscribes to `subject` (wildcards allowed). The subscription is active on the server
    /// once a later [`flush`](Client::flush) returns.
    pub async fn subscribe(
        &self,
        subject: impl Into<String>,
    ) -> Result<Subscriber, SubscribeError> {
        self.subscribe_inner(subject.into(), None)
    }

    /// Subscribes as a member of queue group `queue`: each message goes to one member.
    pub async fn queue_subscribe(
        &self,
        subject: impl Into<String>,
        queue: impl Into<String>,
    ) -> Result<Subscriber, SubscribeError> {
        self.subscribe_inner(subject.into(), Some(queue.into()))
    }

    fn subscribe_inner(
        &self,
        subject: String,
        queue: Option<String>,
    ) -> Result<Subscriber, SubscribeError> {
        if !is_valid_subject(&subject) {
            return Err(SubscribeError::with_source(
                SubscribeErrorKind::InvalidSubject,
                format!("{subject:?}"),
            ));
        }
        if let Some(q) = queue.as_ref().filter(|q| !is_valid_queue(q)) {
            return Err(SubscribeError::with_source(
                SubscribeErrorKind::InvalidQueue,
                format!("{q:?}"),
            ));
        }
        let shared = self.shared();
        let (tx, rx) = mpsc::channel(shared.opts.subscription_capacity);
        let sid = shared.next_sid.fetch_add(1, Ordering::Relaxed);
        shared.add_sub(
            sid,
            SubEntry {
                subject,
                queue,
                delivery: Delivery::Channel { tx, slow: false },
                max: None,
                delivered: 0,
            },
        )?;
        Ok(Subscriber::new(sid, rx, self.clone()))
    }

    /// Sends a request and waits for the first reply, within the client's request timeout.
    /// Replies come through one shared inbox subscription (`_INBOX.<nuid>.*`).
    pub async fn request(
        &self,
        subject: impl AsRef<str>,
        payload: impl Into<Bytes>,
    ) -> Result<Message, RequestError> {
        self.send_request(subject, Request::new().payload(payload))
            .await
    }

    pub async fn request_with_headers(
        &self,
        subject: impl AsRef<str>,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<Message, RequestError> {
        self.send_request(subject, Request::new().payload(payload).headers(headers))
            .await
    }

    /// A request with everything spelled out. Errors: `TimedOut`, `NoResponders` (the server
    /// answered with status 503: nobody subscribes to the subject), `Publish`, `Closed`.
    pub async fn send_request(
        &self,
        subject: impl AsRef<str>,
        request: Request,
    ) -> Result<Message, RequestError> {
        let shared = self.shared();
        let (token, reply, rx) = shared.register_request()?;
        let _guard = RequestGuard { shared, token };
        shared
            .publish(
                subject.as_ref(),
                Some(&reply),
                request.headers.as_ref(),
                &request.payload,
            )
            .await?;
        let timeout = request.timeout.unwrap_or(shared.opts.request_timeout);
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(RequestError::with_source(
                RequestErrorKind::TimedOut,
                format!("no reply on {:?} within {timeout:?}", subject.as_ref()),
            )),
            Ok(Err(_)) => Err(RequestError::new(RequestErrorKind::Closed)),
            Ok(Ok(msg)) if msg.status == Some(NO_RESPONDERS) && msg.payload.is_empty() => {
                Err(RequestError::with_source(
                    RequestErrorKind::NoResponders,
                    format!("subject {:?}", subject.as_ref()),
                ))
            }
            Ok(Ok(msg)) => Ok(msg),
        }
    }

    /// Waits until the server has processed everything sent before this call (a PING/PONG
    /// round trip). While disconnected it waits for the reconnect.
    pub async fn flush(&self) -> Result<(), FlushError> {
        self.shared().flush().await
    }

    /// Unsubscribes every subscription, waits until the server confirmed (so that messages
    /// already on the way are delivered to the subscribers' streams, which then end), and
    /// closes the connection. Bounded by the drain timeout.
    pub async fn drain(&self) -> Result<(), DrainError> {
        let shared = self.shared();
        shared.unsub_all()?;
        let flushed = tokio::time::timeout(shared.opts.drain_timeout, shared.flush()).await;
        shared.remove_channel_subs();
        self.close().await;
        match flushed {
            Err(_) => Err(DrainError::new(DrainErrorKind::TimedOut)),
            Ok(Err(e)) => Err(DrainError::with_source(DrainErrorKind::Flush, e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Sends what is buffered and closes the connection; subscriber streams end. Publishes
    /// buffered while disconnected are discarded.
    pub async fn close(&self) {
        let shared = self.shared();
        shared.start_close();
        let mut rx = shared.state.subscribe();
        let _ = rx.wait_for(|s| *s == State::Closed).await;
    }

    /// A fresh unique inbox subject (`_INBOX.<nuid>`).
    pub fn new_inbox(&self) -> String {
        format!("{}.{}", self.shared().opts.inbox_prefix, nuid::next())
    }

    pub fn state(&self) -> State {
        *self.shared().state.borrow()
    }

    /// A watch of the connection state.
    pub fn state_watch(&self) -> watch::Receiver<State> {
        self.shared().state.subscribe()
    }

    /// The latest INFO of the current server.
    pub fn server_info(&self) -> ServerInfo {
        self.shared().info.lock().clone()
    }

    pub fn max_payload(&self) -> usize {
        self.shared().max_payload.load(Ordering::Relaxed)
    }

    /// Events from now on (the receiver lags, rather than blocking the client, if not read).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared().events.subscribe()
    }

    pub fn statistics(&self) -> Statistics {
        let c = &self.shared().counters;
        Statistics {
            in_msgs: c.in_msgs.load(Ordering::Relaxed),
            in_bytes: c.in_bytes.load(Ordering::Relaxed),
            out_msgs: c.out_msgs.load(Ordering::Relaxed),
            out_bytes: c.out_bytes.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
        }
    }
}

/// Removes a request's waiter however the request ends (reply, timeout, cancellation).
struct RequestGuard<'a> {
    shared: &'a Shared,
    token: String,
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        self.shared.mux.lock().waiting.remove(&self.token);
    }
}

impl Shared {
    fn emit(&self, ev: Event) {
        if let Some(cb) = &self.opts.event_callback {
            cb(ev.clone());
        }
        let _ = self.events.send(ev);
    }

    async fn publish(
        &self,
        subject: &str,
        reply: Option<&str>,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        if !is_valid_publish_subject(subject) {
            return Err(invalid_subject(subject));
        }
        if let Some(r) = reply.filter(|r| !is_valid_publish_subject(r)) {
            return Err(PublishError::with_source(
                PublishErrorKind::InvalidReply,
                format!("{r:?}"),
            ));
        }
        let header_block = match headers {
            Some(h) => {
                h.validate()
                    .map_err(|e| PublishError::with_source(PublishErrorKind::InvalidHeader, e))?;
                Some(h.to_bytes())
            }
            None => None,
        };
        // A tight publish loop yields now and then, so that the writer (and, on a
        // current-thread runtime, everything else) gets to run.
        tokio::task::coop::consume_budget().await;
        let size = header_block.as_ref().map_or(0, Vec::len) + payload.len();
        let max = self.max_payload.load(Ordering::Relaxed);
        if max > 0 && size > max {
            return Err(too_large(size, max));
        }
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let mut out = self.out.lock();
                match out.link {
                    Link::Closing | Link::Closed => {
                        return Err(PublishError::new(PublishErrorKind::Closed));
                    }
                    Link::Connected if out.buf.len() >= self.opts.write_buffer_limit => {}
                    link => {
                        self.append_pub(
                            &mut out,
                            subject,
                            reply,
                            header_block.as_deref(),
                            payload,
                        )?;
                        drop(out);
                        self.counters.out_msgs.fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .out_bytes
                            .fetch_add(size as u64, Ordering::Relaxed);
                        if link == Link::Connected {
                            self.write_wake.notify_one();
                        }
                        return Ok(());
                    }
                }
            }
            self.write_wake.notify_one();
            drained.await;
        }
    }

    async fn publish_batch<S, P>(&self, msgs: &[(S, P)]) -> Result<(), PublishError>
    where
        S: AsRef<str>,
        P: AsRef<[u8]>,
    {
        tokio::task::coop::consume_budget().await;
        let mut first_err: Option<PublishError> = None;
        let mut next = 0;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let mut out = self.out.lock();
                let link = out.link;
                if matches!(link, Link::Closing | Link::Closed) {
                    return Err(PublishError::new(PublishErrorKind::Closed));
                }
                let max = self.max_payload.load(Ordering::Relaxed);
                let (mut n, mut bytes) = (0u64, 0u64);
                let mut done = false;
                loop {
                    if link == Link::Connected && out.buf.len() >= self.opts.write_buffer_limit {
                        break;
                    }
                    let Some((subject, payload)) = msgs.get(next) else {
                        done = true;
                        break;
                    };
                    next += 1;
                    let (subject, payload) = (subject.as_ref(), payload.as_ref());
                    if !is_valid_publish_subject(subject) {
                        first_err.get_or_insert_with(|| invalid_subject(subject));
                        continue;
                    }
                    if max > 0 && payload.len() > max {
                        first_err.get_or_insert_with(|| too_large(payload.len(), max));
                        continue;
                    }
                    if let Err(e) = self.append_pub(&mut out, subject, None, None, payload) {
                        drop(out);
                        self.count_out(n, bytes);
                        return Err(e);
                    }
                    n += 1;
                    bytes += payload.len() as u64;
                }
                drop(out);
                self.count_out(n, bytes);
                if link == Link::Connected && n > 0 {
                    self.write_wake.notify_one();
                }
                if done {
                    return first_err.map_or(Ok(()), Err);
                }
                // The buffer is full: the rest goes once the writer took it.
            }
            self.write_wake.notify_one();
            drained.await;
        }
    }

    /// Appends one `PUB`/`HPUB` to the outbound buffer; while disconnected, refuses (and
    /// takes back) one that would pass the reconnect buffer's limit.
    fn append_pub(
        &self,
        out: &mut Outbound,
        subject: &str,
        reply: Option<&str>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let before = out.buf.len();
        proto::encode_pub(&mut out.buf, subject, reply, headers, payload);
        if out.link == Link::Disconnected && out.buf.len() > self.opts.reconnect_buffer_size {
            out.buf.truncate(before);
            return Err(PublishError::with_source(
                PublishErrorKind::ReconnectBufferFull,
                format!(
                    "{before} bytes buffered, limit {}: wait for the reconnect or raise reconnect_buffer_size",
                    self.opts.reconnect_buffer_size
                ),
            ));
        }
        Ok(())
    }

    fn count_out(&self, n: u64, bytes: u64) {
        if n > 0 {
            self.counters.out_msgs.fetch_add(n, Ordering::Relaxed);
            self.counters.out_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn add_sub(&self, sid: u64, entry: SubEntry) -> Result<(), SubscribeError> {
        let mut subs = self.subs.lock();
        let mut out = self.out.lock();
        match out.link {
            Link::Closing | Link::Closed => {
                return Err(SubscribeError::new(SubscribeErrorKind::Closed));
            }
            Link::Connected => {
                proto::encode_sub(&mut out.buf, &entry.subject, entry.queue.as_deref(), sid);
                drop(out);
                self.write_wake.notify_one();
            }
            // Sent with the subscription table on reconnect.
            Link::Disconnected => {}
        }
        subs.insert(sid, entry);
        Ok(())
    }

    /// `max`: `None` unsubscribes now; `Some(n)` after `n` messages in total.
    pub(crate) fn unsubscribe(&self, sid: u64, max: Option<u64>) -> Result<(), UnsubscribeError> {
        let mut subs = self.subs.lock();
        let Some(entry) = subs.get_mut(&sid) else {
            return Err(UnsubscribeError::new(
                if self.out.lock().link == Link::Closed {
                    UnsubscribeErrorKind::Closed
                } else {
                    UnsubscribeErrorKind::NotFound
                },
            ));
        };
        let wire_max = match max {
            Some(n) if n > entry.delivered => {
                entry.max = Some(n);
                Some(n - entry.delivered)
            }
            _ => {
                subs.remove(&sid);
                None
            }
        };
        let mut out = self.out.lock();
        if out.link == Link::Connected {
            proto::encode_unsub(&mut out.buf, sid, wire_max);
            drop(out);
            self.write_wake.notify_one();
        }
        Ok(())
    }

    /// Stops delivery to `sid` once the server confirms the UNSUB: messages already sent
    /// still reach the stream, which then ends.
    pub(crate) async fn drain_sub(&self, sid: u64) -> Result<(), DrainError> {
        {
            let subs = self.subs.lock();
            if !subs.contains_key(&sid) {
                return Ok(());
            }
            let mut out = self.out.lock();
            match out.link {
                Link::Closed | Link::Closing => {
                    return Err(DrainError::new(DrainErrorKind::Closed));
                }
                Link::Connected => proto::encode_unsub(&mut out.buf, sid, None),
                Link::Disconnected => {}
            }
        }
        self.write_wake.notify_one();
        let flushed = tokio::time::timeout(self.opts.drain_timeout, self.flush()).await;
        self.subs.lock().remove(&sid);
        match flushed {
            Err(_) => Err(DrainError::new(DrainErrorKind::TimedOut)),
            Ok(Err(e)) => Err(DrainError::with_source(DrainErrorKind::Flush, e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    fn unsub_all(&self) -> Result<(), DrainError> {
        let subs = self.subs.lock();
        let mut out = self.out.lock();
        match out.link {
            Link::Closed | Link::Closing => return Err(DrainError::new(DrainErrorKind::Closed)),
            Link::Disconnected => {}
            Link::Connected => {
                for (sid, e) in subs.iter() {
                    if matches!(e.delivery, Delivery::Channel { .. }) {
                        proto::encode_unsub(&mut out.buf, *sid, None);
                    }
                }
            }
        }
        drop(out);
        drop(subs);
        self.write_wake.notify_one();
        Ok(())
    }

    fn remove_channel_subs(&self) {
        self.subs
            .lock()
            .retain(|_, e| matches!(e.delivery, Delivery::Mux));
    }

    async fn flush(&self) -> Result<(), FlushError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut out = self.out.lock();
            if matches!(out.link, Link::Closing | Link::Closed) {
                return Err(FlushError::new(FlushErrorKind::Closed));
            }
            out.flush_waiters.push(Some(tx));
        }
        self.write_wake.notify_one();
        match rx.await {
            Ok(()) => Ok(()),
            Err(_) if self.out.lock().link == Link::Closed => {
                Err(FlushError::new(FlushErrorKind::Closed))
            }
            Err(_) => Err(FlushError::new(FlushErrorKind::Disconnected)),
        }
    }

    fn register_request(
        &self,
    ) -> Result<(String, String, oneshot::Receiver<Message>), RequestError> {
        let mut subs = self.subs.lock();
        let mut mux = self.mux.lock();
        if mux.sid.is_none() {
            let sid = self.next_sid.fetch_add(1, Ordering::Relaxed);
            let subject = format!("{}*", mux.prefix);
            let mut out = self.out.lock();
            match out.link {
                Link::Closing | Link::Closed => {
                    return Err(RequestError::new(RequestErrorKind::Closed));
                }
                Link::Connected => {
                    proto::encode_sub(&mut out.buf, &subject, None, sid);
                }
                Link::Disconnected => {}
            }
            drop(out);
            subs.insert(
                sid,
                SubEntry {
                    subject,
                    queue: None,
                    delivery: Delivery::Mux,
                    max: None,
                    delivered: 0,
                },
            );
            mux.sid = Some(sid);
        }
        let token = mux.next_token.to_string();
        mux.next_token += 1;
        let reply = format!("{}{token}", mux.prefix);
        let (tx, rx) = oneshot::channel();
        mux.waiting.insert(token.clone(), tx);
        Ok((token, reply, rx))
    }

    fn start_close(&self) {
        {
            let mut out = self.out.lock();
            match out.link {
                Link::Connected | Link::Disconnected => out.link = Link::Closing,
                Link::Closing | Link::Closed => return,
            }
        }
        self.write_wake.notify_one();
        self.close_wake.notify_one();
        self.drained.notify_waiters();
    }

    fn is_closing(&self) -> bool {
        matches!(self.out.lock().link, Link::Closing | Link::Closed)
    }

    /// Delivers a MSG/HMSG to its subscription.
    fn deliver(
        &self,
        subject: Bytes,
        sid: u64,
        reply: Option<Bytes>,
        headers: Option<Bytes>,
        payload: Bytes,
    ) {
        let length = headers.as_ref().map_or(0, Bytes::len) + payload.len();
        self.counters.in_msgs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .in_bytes
            .fetch_add(length as u64, Ordering::Relaxed);
        let parsed = headers
            .as_deref()
            .and_then(parse_headers)
            .unwrap_or_default();
        let msg = Message {
            subject: bytes_to_string(&subject),
            reply: reply.as_ref().map(bytes_to_string),
            payload,
            headers: headers.is_some().then_some(parsed.headers),
            status: parsed.status,
            description: parsed.description,
            length,
        };
        let mut event = None;
        let mut subs = self.subs.lock();
        let Some(entry) = subs.get_mut(&sid) else {
            return;
        };
        entry.delivered += 1;
        let mut remove = entry.max.is_some_and(|m| entry.delivered >= m);
        let mut send_unsub = false;
        match &mut entry.delivery {
            Delivery::Channel { tx, slow } => match tx.try_send(msg) {
                Ok(()) => *slow = false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !*slow {
                        *slow = true;
                        event = Some(Event::SlowConsumer(sid));
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    remove = true;
                    send_unsub = true;
                }
            },
            Delivery::Mux => {
                let mut mux = self.mux.lock();
                let token = msg
                    .subject
                    .strip_prefix(mux.prefix.as_str())
                    .map(str::to_owned);
                if let Some(tx) = token.and_then(|t| mux.waiting.remove(&t)) {
                    let _ = tx.send(msg);
                }
            }
        }
        if remove {
            subs.remove(&sid);
            if send_unsub {
                let mut out = self.out.lock();
                if out.link == Link::Connected {
                    proto::encode_unsub(&mut out.buf, sid, None);
                    drop(out);
                    self.write_wake.notify_one();
                }
            }
        }
        drop(subs);
        if let Some(ev) = event {
            warn!(
                sid,
                "slow consumer: subscription buffer full, dropping messages"
            );
            self.emit(ev);
        }
    }

    /// After a successful reconnect handshake: replays the subscriptions in front of what was
    /// buffered while disconnected, and marks the client connected. `false` if the client was
    /// closed meanwhile.
    fn restore(&self, est: &Established) -> bool {
        let subs = self.subs.lock();
        let mut out = self.out.lock();
        if matches!(out.link, Link::Closing | Link::Closed) {
            return false;
        }
        let mut replay = BytesMut::with_capacity(subs.len() * 32 + out.buf.len());
        let mut sids: Vec<&u64> = subs.keys().collect();
        sids.sort();
        for sid in sids {
            let e = &subs[sid];
            proto::encode_sub(&mut replay, &e.subject, e.queue.as_deref(), *sid);
            if let Some(max) = e.max {
                proto::encode_unsub(&mut replay, *sid, Some(max.saturating_sub(e.delivered)));
            }
        }
        replay.put_slice(&out.buf);
        out.buf = replay;
        out.link = Link::Connected;
        out.pings_out = 0;
        drop(out);
        drop(subs);
        self.max_payload
            .store(est.info.max_payload, Ordering::Relaxed);
        *self.info.lock() = est.info.clone();
        self.state.send_replace(State::Connected);
        self.write_wake.notify_one();
        true
    }

    fn finish_close(&self) {
        self.subs.lock().clear();
        {
            let mut mux = self.mux.lock();
            mux.waiting.clear();
            mux.sid = None;
        }
        {
            let mut out = self.out.lock();
            out.link = Link::Closed;
            out.buf = BytesMut::new();
            out.flush_waiters.clear();
            out.in_flight.clear();
        }
        self.drained.notify_waiters();
        self.state.send_replace(State::Closed);
        self.emit(Event::Closed);
    }
}

fn invalid_subject(subject: &str) -> PublishError {
    PublishError::with_source(PublishErrorKind::InvalidSubject, format!("{subject:?}"))
}

fn too_large(size: usize, max: usize) -> PublishError {
    PublishError::with_source(
        PublishErrorKind::MaxPayloadExceeded,
        format!("{size} bytes, the server allows {max}"),
    )
}

fn bytes_to_string(b: &Bytes) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The connection task.

async fn run(shared: Arc<Shared>, mut est: Established, mut pool: ServerPool) {
    loop {
        let Established {
            stream,
            mut read_buf,
            addr,
            ..
        } = est;
        let (mut r, mut w) = tokio::io::split(stream);
        let ended: io::Result<()> = tokio::select! {
            e = reader(&shared, &mut r, &mut read_buf, &addr, &mut pool) => Err(e),
            r = writer(&shared, &mut w) => r,
            e = pinger(&shared) => Err(e),
        };
        let closing = {
            let mut out = shared.out.lock();
            // PINGs of this connection will never be answered.
            out.in_flight.clear();
            out.pings_out = 0;
            if matches!(out.link, Link::Closing | Link::Closed) {
                true
            } else {
                out.link = Link::Disconnected;
                false
            }
        };
        shared.drained.notify_waiters();
        if closing || ended.is_ok() {
            break;
        }
        if let Err(e) = &ended {
            debug!(%addr, error = %e, "disconnected");
        }
        shared.state.send_replace(State::Disconnected);
        shared.emit(Event::Disconnected);
        match reconnect(&shared, &mut pool).await {
            Some(next) => {
                shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                shared.emit(Event::Reconnected(next.addr.to_string()));
                est = next;
            }
            None => break,
        }
    }
    shared.finish_close();
}

async fn reconnect(shared: &Shared, pool: &mut ServerPool) -> Option<Established> {
    let opts = &shared.opts;
    let mut attempt = 0usize;
    loop {
        if shared.is_closing() {
            return None;
        }
        if opts.max_reconnects.is_some_and(|max| attempt >= max) {
            warn!(attempts = attempt, "giving up reconnecting");
            return None;
        }
        let delay = match (&opts.reconnect_delay_callback, attempt) {
            (_, 0) => Duration::ZERO,
            (Some(cb), n) => cb(n),
            (None, n) => backoff(
                n,
                opts.reconnect_delay,
                opts.max_reconnect_delay,
                opts.reconnect_jitter,
                &mut rand::rng(),
            ),
        };
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shared.close_wake.notified() => return None,
            }
        }
        let addr = pool.next()?;
        attempt += 1;
        let result = tokio::select! {
            r = handshake(&addr, opts) => r,
            _ = shared.close_wake.notified() => return None,
        };
        match result {
            Ok(est) => {
                if !opts.ignore_discovered_servers && !est.info.connect_urls.is_empty() {
                    for added in
                        pool.update_discovered(&est.info.connect_urls, &est.addr, &mut rand::rng())
                    {
                        shared.emit(Event::ServerDiscovered(added.host_port()));
                    }
                }
                return shared.restore(&est).then_some(est);
            }
            Err(e) => debug!(%addr, attempt, error = %e, "reconnect attempt failed"),
        }
    }
}

async fn reader(
    shared: &Shared,
    r: &mut ReadHalf<Transport>,
    buf: &mut BytesMut,
    current: &ServerAddr,
    pool: &mut ServerPool,
) -> io::Error {
    loop {
        loop {
            let op = match proto::parse_server_op(buf) {
                Ok(Some(op)) => op,
                Ok(None) => break,
                Err(e) => return io::Error::new(io::ErrorKind::InvalidData, e),
            };
            match op {
                ServerOp::Msg {
                    subject,
                    sid,
                    reply,
                    headers,
                    payload,
                } => shared.deliver(subject, sid, reply, headers, payload),
                ServerOp::Ping => {
                    shared.out.lock().buf.put_slice(proto::PONG);
                    shared.write_wake.notify_one();
                }
                ServerOp::Pong => {
                    let waiter = {
                        let mut out = shared.out.lock();
                        out.pings_out = 0;
                        out.in_flight.pop_front()
                    };
                    if let Some(Some(tx)) = waiter {
                        let _ = tx.send(());
                    }
                }
                ServerOp::Info(json) => match ServerInfo::parse(&json) {
                    Ok(info) => {
                        if !shared.opts.ignore_discovered_servers && !info.connect_urls.is_empty() {
                            for added in pool.update_discovered(
                                &info.connect_urls,
                                current,
                                &mut rand::rng(),
                            ) {
                                shared.emit(Event::ServerDiscovered(added.host_port()));
                            }
                        }
                        let ldm = info.ldm;
                        if info.max_payload > 0 {
                            shared
                                .max_payload
                                .store(info.max_payload, Ordering::Relaxed);
                        }
                        *shared.info.lock() = info;
                        if ldm {
                            shared.emit(Event::LameDuck);
                        }
                    }
                    Err(e) => warn!(error = %e, "ignoring an INFO that does not parse"),
                },
                ServerOp::Ok => {}
                ServerOp::Err(text) => {
                    warn!(%text, "server error");
                    shared.emit(Event::ServerError(text));
                }
            }
        }
        buf.reserve(64 * 1024);
        match r.read_buf(buf).await {
            Ok(0) => {
                return io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the server",
                );
            }
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

/// Sends whatever is buffered. Returns `Ok` once the client is closing and everything is
/// written, `Err` when the socket fails.
async fn writer(shared: &Shared, w: &mut WriteHalf<Transport>) -> io::Result<()> {
    let mut chunk = BytesMut::with_capacity(64 * 1024);
    loop {
        let closing = {
            let mut out = shared.out.lock();
            std::mem::swap(&mut chunk, &mut out.buf);
            let waiters = std::mem::take(&mut out.flush_waiters);
            for waiter in waiters {
                chunk.put_slice(proto::PING);
                out.in_flight.push_back(waiter);
            }
            out.link == Link::Closing
        };
        shared.drained.notify_waiters();
        if chunk.is_empty() {
            if closing {
                let _ = w.shutdown().await;
                return Ok(());
            }
            shared.write_wake.notified().await;
            continue;
        }
        w.write_all(&chunk).await?;
        w.flush().await?;
        if chunk.capacity() > 4 * 1024 * 1024 {
            chunk = BytesMut::with_capacity(64 * 1024);
        } else {
            chunk.clear();
        }
    }
}

/// Keepalive: a PING every `ping_interval`; too many unanswered ones mean the connection is
/// dead even if the socket has not noticed.
async fn pinger(shared: &Shared) -> io::Error {
    let every = shared.opts.ping_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        {
            let mut out = shared.out.lock();
            if out.pings_out >= shared.opts.max_pings_outstanding {
                return io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("stale connection: {} PINGs unanswered", out.pings_out),
                );
            }
            out.pings_out += 1;
            out.flush_waiters.push(None);
        }
        shared.write_wake.notify_one();
    }
}
