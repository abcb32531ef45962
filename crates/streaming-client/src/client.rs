//! [`StanClient`]: one streaming connection (a client ID registered with the streaming server)
//! over one core NATS connection.
//!
//! # Tasks
//!
//! Connecting subscribes three inboxes on the NATS connection and starts three tasks:
//!
//! * the *pub-ack* task reads `PubAck`s from the ack inbox (`_STAN.acks.<nuid>`) into the
//!   [`PubAckTracker`] and fires the ack timeouts;
//! * the *liveness* task answers the server's heartbeats (empty reply to any request on the
//!   heartbeat inbox) and sends the client PINGs, reading their replies through [`PingState`];
//! * the *outgoing* task publishes, in order, what must not wait for the caller: automatic
//!   message acks (sent when a message is taken from a [`Subscription`]) and the fire-and-forget
//!   requests of dropped subscriptions and clients. Unsubscribe, subscription close and client
//!   close first wait until this queue has been handed to the NATS connection, so the server
//!   sees every ack before the request.
//!
//! Everything stops on one cancellation token, which also ends the subscription streams.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;
use rnats_client::{
    Client, ConnectOptions, PublishError, PublishErrorKind, Request, RequestError,
    RequestErrorKind, Subscriber,
};
use rnats_streaming::proto::{
    CloseRequest, CloseResponse, ConnectRequest, ConnectResponse, Ping, PubAck, PubMsg,
    SubscriptionResponse, UnsubscribeRequest,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::error::Error;
use crate::options::{ConnectionLostHandler, DEFAULT_ACK_PREFIX, Options, SubscriptionOptions};
use crate::ping::{PingAction, PingReply, PingState, ping_period};
use crate::pub_ack::{PubAckTracker, RegisterError};
use crate::subscription::Subscription;

/// Called with the guid and the outcome of an asynchronous publish: `Ok(())` once the server
/// stored the message, else the server's error, [`Error::PubAckTimeout`] or
/// [`Error::ConnectionClosed`].
pub type AckHandler = Box<dyn FnOnce(&str, Result<(), Error>) + Send + 'static>;

/// The state of a streaming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Connected,
    /// Closed by [`StanClient::close`] (or by dropping the last handle).
    Closed,
    /// Lost: PINGs unanswered, the server dropped or replaced this connection, or the NATS
    /// connection closed for good.
    Lost,
}

/// A NATS Streaming connection. Cheap to clone; dropping the last clone closes it (without
/// waiting for the server's answer).
#[derive(Clone)]
pub struct StanClient {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for StanClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.handle.shared;
        f.debug_struct("StanClient")
            .field("cluster_id", &s.cluster_id)
            .field("client_id", &s.client_id)
            .field("state", &s.state())
            .finish()
    }
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close_on_drop();
    }
}

/// Things the outgoing task publishes in order.
pub(crate) enum Outgoing {
    /// Publish without reply (auto acks, fire-and-forget requests).
    Publish { subject: Arc<str>, payload: Bytes },
    /// Completes once everything queued before it was handed to the NATS connection.
    Barrier(oneshot::Sender<()>),
    /// The last item: close the NATS connection if the streaming client owns it, and stop.
    Shutdown { close_nats: bool },
}

pub(crate) struct Shared {
    pub(crate) nats: Client,
    owns_nats: bool,
    pub(crate) cluster_id: String,
    pub(crate) client_id: String,
    conn_id: Vec<u8>,
    pub_prefix: String,
    pub(crate) sub_requests: String,
    pub(crate) unsub_requests: String,
    pub(crate) sub_close_requests: String,
    close_requests: String,
    ack_subject: String,
    pub(crate) request_timeout: Duration,
    pub_ack_wait: Duration,
    acks: Mutex<PubAckTracker<AckHandler>>,
    /// A pub-ack slot was freed.
    slot_freed: Notify,
    /// The tracker went from empty to non-empty: the pub-ack task has a deadline again.
    deadline_wake: Notify,
    pub(crate) closed: CancellationToken,
    state: Mutex<ConnState>,
    connection_lost: Option<ConnectionLostHandler>,
    pub(crate) outgoing: mpsc::UnboundedSender<Outgoing>,
}

impl StanClient {
    /// Connects to the streaming server of cluster `cluster_id` as `client_id` (letters,
    /// digits, `-` and `_`), over [`Options::nats_client`] or a new connection to
    /// [`Options::nats_url`].
    pub async fn connect(
        cluster_id: &str,
        client_id: &str,
        opts: Options,
    ) -> Result<StanClient, Error> {
        opts.validate()?;
        let (nats, owns_nats) = match opts.nats_client.clone() {
            Some(c) => (c, false),
            None => {
                let co = opts.nats_options.clone().unwrap_or_else(|| {
                    ConnectOptions::new()
                        .name(client_id)
                        .max_reconnects(None)
                        .reconnect_buffer_size(0)
                });
                let c = co
                    .connect(opts.nats_url.as_str())
                    .await
                    .map_err(Error::nats)?;
                (c, true)
            }
        };
        match Self::connect_over(nats.clone(), owns_nats, cluster_id, client_id, opts).await {
            Ok(c) => Ok(c),
            Err(e) => {
                if owns_nats {
                    nats.close().await;
                }
                Err(e)
            }
        }
    }

    async fn connect_over(
        nats: Client,
        owns_nats: bool,
        cluster_id: &str,
        client_id: &str,
        opts: Options,
    ) -> Result<StanClient, Error> {
        let hb_inbox = nats.new_inbox();
        let hb_sub = nats
            .subscribe(hb_inbox.clone())
            .await
            .map_err(Error::nats)?;
        let ping_inbox = nats.new_inbox();
        let ping_sub = nats
            .subscribe(ping_inbox.clone())
            .await
            .map_err(Error::nats)?;
        let ack_subject = format!("{DEFAULT_ACK_PREFIX}.{}", nuid::next());
        let ack_sub = nats
            .subscribe(ack_subject.clone())
            .await
            .map_err(Error::nats)?;
        let conn_id = nuid::next().to_string().into_bytes();

        let req = ConnectRequest {
            client_id: client_id.to_string(),
            heartbeat_inbox: hb_inbox,
            protocol: 1,
            conn_id: conn_id.clone(),
            ping_interval: opts.wire_ping_interval(),
            ping_max_out: opts.wire_ping_max_out(),
        };
        let discover = format!("{}.{}", opts.discover_prefix, cluster_id);
        let reply = nats
            .send_request(
                &discover,
                Request::new()
                    .payload(req.encode_to_vec())
                    .timeout(opts.connect_timeout),
            )
            .await
            .map_err(|e| request_error(e, Error::ConnectRequestTimeout))?;
        let resp = ConnectResponse::decode(reply.payload)
            .map_err(|e| Error::Protocol(format!("ConnectResponse: {e}")))?;
        if !resp.error.is_empty() {
            return Err(Error::Server(resp.error));
        }

        let pings = if resp.protocol >= 1 && !resp.ping_requests.is_empty() {
            ping_period(resp.ping_interval).map(|period| PingConfig {
                period,
                max_out: resp.ping_max_out.max(1) as u32,
                requests: resp.ping_requests.clone(),
                inbox: ping_inbox,
                payload: Ping {
                    conn_id: conn_id.clone(),
                }
                .encode_to_vec(),
            })
        } else {
            None
        };

        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            nats: nats.clone(),
            owns_nats,
            cluster_id: cluster_id.to_string(),
            client_id: client_id.to_string(),
            conn_id,
            pub_prefix: resp.pub_prefix,
            sub_requests: resp.sub_requests,
            unsub_requests: resp.unsub_requests,
            sub_close_requests: resp.sub_close_requests,
            close_requests: resp.close_requests,
            ack_subject,
            request_timeout: opts.connect_timeout,
            pub_ack_wait: opts.pub_ack_wait,
            acks: Mutex::new(PubAckTracker::new(
                opts.max_pub_acks_inflight,
                opts.pub_ack_wait,
            )),
            slot_freed: Notify::new(),
            deadline_wake: Notify::new(),
            closed: CancellationToken::new(),
            state: Mutex::new(ConnState::Connected),
            connection_lost: opts.connection_lost.clone(),
            outgoing: out_tx,
        });
        tokio::spawn(outgoing_task(nats, out_rx));
        tokio::spawn(pub_ack_task(shared.clone(), ack_sub));
        let ping_sub = pings.is_some().then_some(ping_sub);
        tokio::spawn(liveness_task(shared.clone(), hb_sub, ping_sub, pings));
        Ok(StanClient {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Publishes `payload` to `channel` and waits for the server to store it; returns the
    /// message's guid.
    pub async fn publish(&self, channel: &str, payload: impl Into<Bytes>) -> Result<String, Error> {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared();
        let guid = shared
            .publish(
                channel,
                payload.into(),
                Box::new(move |_, r| {
                    let _ = tx.send(r);
                }),
            )
            .await?;
        // The tracker times the ack out; the extra second only guards against a stuck task.
        match tokio::time::timeout(shared.pub_ack_wait + Duration::from_secs(1), rx).await {
            Ok(Ok(Ok(()))) => Ok(guid),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::ConnectionClosed),
            Err(_) => Err(Error::PubAckTimeout),
        }
    }

    /// Publishes `payload` to `channel` and returns its guid once it is sent; `ack_handler`
    /// is called with the outcome later. When `max_pub_acks_inflight` publishes already wait
    /// for their ack, this waits for one of them first (at most the pub ack wait). The handler
    /// is not called when this returns an error.
    pub async fn publish_async(
        &self,
        channel: &str,
        payload: impl Into<Bytes>,
        ack_handler: impl FnOnce(&str, Result<(), Error>) + Send + 'static,
    ) -> Result<String, Error> {
        self.shared()
            .publish(channel, payload.into(), Box::new(ack_handler))
            .await
    }

    /// Subscribes to `channel` (no wildcards).
    pub async fn subscribe(
        &self,
        channel: &str,
        opts: SubscriptionOptions,
    ) -> Result<Subscription, Error> {
        let shared = self.shared();
        shared.check_open()?;
        let nats = &shared.nats;
        let inbox = nats.new_inbox();
        let nats_sub = nats.subscribe(inbox.clone()).await.map_err(Error::nats)?;
        let req = opts.to_request(&shared.client_id, channel, &inbox, SystemTime::now());
        let reply = nats
            .send_request(
                &shared.sub_requests,
                Request::new()
                    .payload(req.encode_to_vec())
                    .timeout(shared.request_timeout),
            )
            .await;
        let reply = match reply {
            Ok(m) => m,
            Err(e) => {
                if e.kind() == RequestErrorKind::TimedOut {
                    // The server may have created it after all: ask it to drop it (by the
                    // delivery inbox, the only name the client knows).
                    let un = UnsubscribeRequest {
                        client_id: shared.client_id.clone(),
                        subject: channel.to_string(),
                        inbox,
                        durable_name: String::new(),
                    };
                    shared.send_later(&shared.sub_close_requests, un.encode_to_vec());
                }
                return Err(request_error(e, Error::SubscribeRequestTimeout));
            }
        };
        let resp = SubscriptionResponse::decode(reply.payload)
            .map_err(|e| Error::Protocol(format!("SubscriptionResponse: {e}")))?;
        if !resp.error.is_empty() {
            return Err(Error::Server(resp.error));
        }
        Ok(Subscription::new(
            shared.clone(),
            channel.to_string(),
            inbox,
            resp.ack_inbox,
            &opts,
            nats_sub,
        ))
    }

    /// Subscribes as a member of queue group `group` (durable when `opts` has a durable name).
    pub async fn queue_subscribe(
        &self,
        channel: &str,
        group: &str,
        opts: SubscriptionOptions,
    ) -> Result<Subscription, Error> {
        self.subscribe(channel, opts.queue_group(group)).await
    }

    /// Closes the streaming connection: the server forgets this client, removes its plain
    /// subscriptions and keeps its durable ones. Publishes still waiting for their ack fail
    /// with [`Error::ConnectionClosed`]; subscription streams end. An owned NATS connection is
    /// closed too. Closing again is a no-op.
    pub async fn close(&self) -> Result<(), Error> {
        let shared = self.shared();
        if *shared.state.lock() != ConnState::Connected {
            return Ok(());
        }
        // Acks taken so far reach the server before the close request.
        shared.barrier().await;
        if !shared.transition(ConnState::Closed) {
            return Ok(());
        }
        shared.shut_down(Error::ConnectionClosed);
        let req = CloseRequest {
            client_id: shared.client_id.clone(),
        };
        let r = shared
            .nats
            .send_request(
                &shared.close_requests,
                Request::new()
                    .payload(req.encode_to_vec())
                    .timeout(shared.request_timeout),
            )
            .await;
        let result = match r {
            Err(e) => Err(request_error(e, Error::CloseRequestTimeout)),
            Ok(m) => match CloseResponse::decode(m.payload) {
                Err(e) => Err(Error::Protocol(format!("CloseResponse: {e}"))),
                Ok(r) if !r.error.is_empty() => Err(Error::Server(r.error)),
                Ok(_) => Ok(()),
            },
        };
        if shared.owns_nats {
            shared.nats.close().await;
        }
        result
    }

    pub fn client_id(&self) -> &str {
        &self.shared().client_id
    }

    pub fn cluster_id(&self) -> &str {
        &self.shared().cluster_id
    }

    /// The connection ID sent to the server (a NUID).
    pub fn conn_id(&self) -> &[u8] {
        &self.shared().conn_id
    }

    /// The core NATS connection underneath.
    pub fn nats_client(&self) -> &Client {
        &self.shared().nats
    }

    pub fn state(&self) -> ConnState {
        self.shared().state()
    }

    /// Publishes waiting for their `PubAck`.
    pub fn pending_pub_acks(&self) -> usize {
        self.shared().acks.lock().len()
    }
}

fn request_error(e: RequestError, timeout: Error) -> Error {
    match e.kind() {
        // No responders: no streaming server listens there; for the caller the same as no
        // answer.
        RequestErrorKind::TimedOut | RequestErrorKind::NoResponders => timeout,
        RequestErrorKind::Closed => Error::ConnectionClosed,
        RequestErrorKind::Publish => Error::nats(e),
    }
}

fn publish_error(e: PublishError) -> Error {
    match e.kind() {
        PublishErrorKind::Closed => Error::ConnectionClosed,
        _ => Error::nats(e),
    }
}

impl Shared {
    pub(crate) fn state(&self) -> ConnState {
        *self.state.lock()
    }

    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.closed.is_cancelled() {
            Err(Error::ConnectionClosed)
        } else {
            Ok(())
        }
    }

    /// Connected → `to`; false if it was not connected any more.
    fn transition(&self, to: ConnState) -> bool {
        let mut s = self.state.lock();
        if *s != ConnState::Connected {
            return false;
        }
        *s = to;
        true
    }

    /// Stops the tasks and subscription streams and fails the publishes still waiting.
    fn shut_down(&self, err: Error) {
        let drained = {
            let mut acks = self.acks.lock();
            self.closed.cancel();
            acks.drain()
        };
        for (guid, handler) in drained {
            handler(&guid, Err(err.clone()));
        }
        self.slot_freed.notify_waiters();
    }

    /// Queues a publish without reply behind the automatic acks.
    pub(crate) fn send_later(&self, subject: &str, payload: Vec<u8>) {
        let _ = self.outgoing.send(Outgoing::Publish {
            subject: subject.into(),
            payload: payload.into(),
        });
    }

    /// Waits until everything queued for the outgoing task was handed to NATS (bounded).
    pub(crate) async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.outgoing.send(Outgoing::Barrier(tx)).is_ok() {
            let _ = tokio::time::timeout(self.request_timeout, rx).await;
        }
    }

    async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        handler: AckHandler,
    ) -> Result<String, Error> {
        self.check_open()?;
        let guid = nuid::next().to_string();
        let msg = PubMsg {
            client_id: self.client_id.clone(),
            guid: guid.clone(),
            subject: channel.to_string(),
            reply: String::new(),
            data,
            conn_id: self.conn_id.clone(),
            sha256: Vec::new(),
        }
        .encode_to_vec();
        let subject = format!("{}.{}", self.pub_prefix, channel);
        let give_up = tokio::time::Instant::now() + self.pub_ack_wait;
        let mut handler = handler;
        loop {
            let freed = self.slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut acks = self.acks.lock();
                // Checked under the lock: `shut_down` cancels, then drains under it.
                self.check_open()?;
                let was_empty = acks.is_empty();
                match acks.register(guid.clone(), handler, Instant::now()) {
                    Ok(()) => {
                        if was_empty {
                            self.deadline_wake.notify_one();
                        }
                        break;
                    }
                    Err(RegisterError::Full(h)) => handler = h,
                    Err(RegisterError::Duplicate(_)) => {
                        return Err(Error::Protocol(format!("duplicate guid {guid}")));
                    }
                }
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = self.closed.cancelled() => return Err(Error::ConnectionClosed),
                _ = tokio::time::sleep_until(give_up) => return Err(Error::PubAckTimeout),
            }
        }
        if let Err(e) = self
            .nats
            .publish_with_reply(&subject, &self.ack_subject, &msg)
            .await
        {
            self.acks.lock().cancel(&guid);
            self.slot_freed.notify_waiters();
            return Err(publish_error(e));
        }
        Ok(guid)
    }

    fn on_pub_ack(&self, payload: &[u8]) {
        let ack = match PubAck::decode(payload) {
            Ok(a) => a,
            Err(e) => {
                debug!(error = %e, "undecodable PubAck");
                return;
            }
        };
        let done = self.acks.lock().on_ack(&ack);
        match done {
            Some((handler, outcome)) => {
                self.slot_freed.notify_waiters();
                handler(&ack.guid, outcome.map_err(Error::Server));
            }
            None => debug!(guid = %ack.guid, "PubAck for no waiting publish"),
        }
    }

    fn expire_pub_acks(&self) {
        let expired = self.acks.lock().expire(Instant::now());
        if expired.is_empty() {
            return;
        }
        self.slot_freed.notify_waiters();
        for (guid, handler) in expired {
            handler(&guid, Err(Error::PubAckTimeout));
        }
    }

    async fn lose(&self, err: Error) {
        if !self.transition(ConnState::Lost) {
            return;
        }
        debug!(client_id = %self.client_id, error = %err, "streaming connection lost");
        self.shut_down(Error::ConnectionClosed);
        if self.owns_nats {
            self.nats.close().await;
        }
        if let Some(cb) = &self.connection_lost {
            cb(err);
        }
    }

    /// The last handle is gone without `close`: tell the server (no waiting for its answer).
    fn close_on_drop(&self) {
        if !self.transition(ConnState::Closed) {
            return;
        }
        let req = CloseRequest {
            client_id: self.client_id.clone(),
        };
        self.send_later(&self.close_requests, req.encode_to_vec());
        let _ = self.outgoing.send(Outgoing::Shutdown {
            close_nats: self.owns_nats,
        });
        self.shut_down(Error::ConnectionClosed);
    }
}

async fn outgoing_task(nats: Client, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(item) = rx.recv().await {
        match item {
            Outgoing::Publish { subject, payload } => {
                if let Err(e) = nats.publish(&*subject, &payload).await {
                    debug!(%subject, error = %e, "streaming client publish failed");
                }
            }
            Outgoing::Barrier(tx) => {
                let _ = tx.send(());
            }
            Outgoing::Shutdown { close_nats } => {
                if close_nats {
                    nats.close().await;
                }
                break;
            }
        }
    }
}

async fn pub_ack_task(shared: Arc<Shared>, mut acks: Subscriber) {
    use futures_core::Stream;
    let mut acks_open = true;
    loop {
        let next = shared.acks.lock().next_deadline();
        let wake_at = next.map_or_else(
            || tokio::time::Instant::now() + Duration::from_secs(3600),
            tokio::time::Instant::from_std,
        );
        tokio::select! {
            _ = shared.closed.cancelled() => break,
            m = std::future::poll_fn(|cx| std::pin::Pin::new(&mut acks).poll_next(cx)), if acks_open => {
                match m {
                    // The NATS connection is closed: keep timing out what waits.
                    None => acks_open = false,
                    // A status message (503: no streaming server) answers no publish.
                    Some(m) if m.status.is_some() => {}
                    Some(m) => shared.on_pub_ack(&m.payload),
                }
            }
            _ = tokio::time::sleep_until(wake_at) => shared.expire_pub_acks(),
            _ = shared.deadline_wake.notified() => {}
        }
    }
}

struct PingConfig {
    period: Duration,
    max_out: u32,
    requests: String,
    inbox: String,
    payload: Vec<u8>,
}

async fn liveness_task(
    shared: Arc<Shared>,
    mut hb: Subscriber,
    mut ping_sub: Option<Subscriber>,
    pings: Option<PingConfig>,
) {
    use futures_core::Stream;
    let mut state = PingState::new(pings.as_ref().map_or(1, |p| p.max_out));
    let mut ticker = pings.as_ref().map(|p| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + p.period, p.period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut hb_open = true;
    loop {
        tokio::select! {
            _ = shared.closed.cancelled() => break,
            m = std::future::poll_fn(|cx| std::pin::Pin::new(&mut hb).poll_next(cx)), if hb_open => {
                match m {
                    None => hb_open = false,
                    Some(m) => {
                        if let Some(reply) = m.reply {
                            let _ = shared.nats.publish(reply, b"").await;
                        }
                    }
                }
            }
            m = next_of(&mut ping_sub) => {
                match m {
                    None => ping_sub = None,
                    Some(m) => {
                        if let PingReply::Lost(text) = state.on_reply(m.status, &m.payload) {
                            shared.lose(Error::Server(text)).await;
                            break;
                        }
                    }
                }
            }
            _ = tick(&mut ticker) => {
                let p = pings.as_ref().expect("ticking only with pings");
                let lost = match state.tick() {
                    PingAction::Lost => Some(Error::MaxPings),
                    PingAction::Send => match shared
                        .nats
                        .publish_with_reply(&p.requests, &p.inbox, &p.payload)
                        .await
                    {
                        Err(e) if e.kind() == PublishErrorKind::Closed => {
                            state.send_failed_closed();
                            Some(Error::ConnectionClosed)
                        }
                        // Disconnected (no reconnect buffer): counts as unanswered.
                        _ => None,
                    },
                };
                if let Some(err) = lost {
                    shared.lose(err).await;
                    break;
                }
            }
        }
    }
}

async fn next_of(sub: &mut Option<Subscriber>) -> Option<rnats_client::Message> {
    use futures_core::Stream;
    match sub {
        Some(s) => std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await,
        None => std::future::pending().await,
    }
}

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
