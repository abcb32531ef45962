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
//! one shared outbound buffer (`shared::Outbound`, under a mutex) and wake the writer:
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

mod shared;
mod task;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::debug;

use crate::connection::{ServerInfo, handshake};
use crate::error::*;
use crate::header::{HeaderMap, NO_RESPONDERS};
use crate::options::{ConnectOptions, Event, ServerAddr};
use crate::pool::ServerPool;
use crate::subject::{is_valid_queue, is_valid_subject};
use crate::subscriber::Subscriber;

pub(crate) use self::shared::Shared;
use self::shared::{Delivery, SubEntry};
use self::task::run;

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
        let shared = Arc::new(Shared::new(opts, est.info.clone()));
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
