//! The engine's NATS connection: a local connection to the embedded NATS server (the default:
//! no socket, no parsing of what the engine publishes, no writer task in between), or a client
//! connection to an external server (`-ns`).

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rnats_client::{Client, Request};
use rnats_server::{LocalConn, LocalInbox};

/// What a NATS message was received on (which of the engine's subscriptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Publish,
    Subscribe,
    Unsubscribe,
    SubClose,
    Close,
    Ping,
    Ack,
    /// Between servers: fault-tolerance heartbeats, partitioning lists (on connections of
    /// their own, never the engine's).
    Control,
}

/// A subject or reply received from NATS, cloned without copying. Read as text it is checked
/// for UTF-8 each time (and reads as empty, a subject nothing answers, when it is not); the
/// acks, the bulk of what arrives, are looked up by their bytes and never need the check.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Subject(Bytes);

impl Subject {
    pub fn new(b: Bytes) -> Subject {
        Subject(b)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for Subject {
    fn from(s: String) -> Subject {
        Subject(Bytes::from(s))
    }
}

impl Deref for Subject {
    type Target = str;
    fn deref(&self) -> &str {
        // Checked in every constructor.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl AsRef<str> for Subject {
    fn as_ref(&self) -> &str {
        self
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// A message the engine received.
pub struct InMsg {
    pub subject: Subject,
    pub reply: Option<Subject>,
    pub payload: Bytes,
}

impl From<rnats_client::Message> for InMsg {
    fn from(m: rnats_client::Message) -> InMsg {
        InMsg {
            subject: m.subject.into(),
            reply: m.reply.map(Subject::from),
            payload: m.payload,
        }
    }
}

/// A publish, request or flush that failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// Over the client connection (`-ns`).
    #[error(transparent)]
    Client(Box<dyn std::error::Error + Send + Sync>),
    /// Over the local connection to the embedded server.
    #[error(transparent)]
    Local(#[from] rnats_server::LocalError),
}

impl NatsError {
    fn client(e: impl std::error::Error + Send + Sync + 'static) -> NatsError {
        NatsError::Client(Box::new(e))
    }
}

/// Where the engine publishes and sends requests.
#[derive(Clone)]
pub enum Nats {
    Remote(Client),
    Local(Arc<LocalConn>),
}

impl Nats {
    pub fn max_payload(&self) -> usize {
        match self {
            Nats::Remote(c) => c.max_payload(),
            Nats::Local(c) => c.max_payload(),
        }
    }

    /// Publishes each `(subject, payload)`, in order, with one call.
    pub async fn publish_batch<S, P>(&self, msgs: &[(S, P)]) -> Result<(), NatsError>
    where
        S: AsRef<str>,
        P: AsRef<[u8]>,
    {
        match self {
            Nats::Remote(c) => c.publish_batch(msgs).await.map_err(NatsError::client),
            Nats::Local(c) => Ok(c.publish_batch(msgs).await?),
        }
    }

    /// Publishes one message with a reply subject.
    pub async fn publish_with_reply(
        &self,
        subject: &str,
        reply: &str,
        payload: &[u8],
    ) -> Result<(), NatsError> {
        match self {
            Nats::Remote(c) => c
                .publish_with_reply(subject, reply, payload)
                .await
                .map_err(NatsError::client),
            Nats::Local(c) => c
                .publish(subject, Some(reply), payload)
                .await
                .map(|_| ())
                .map_err(Into::into),
        }
    }

    /// Subscribes `subjects` for control messages: what they receive is read from the
    /// returned [`Inbound`] as [`Kind::Control`]. Use a connection of its own: over a local
    /// connection, an `Inbound` takes everything the connection receives.
    pub async fn control_inbound(&self, subjects: &[&str]) -> Result<Inbound, NatsError> {
        match self {
            Nats::Remote(c) => {
                let mut subs = Vec::new();
                for s in subjects {
                    let sub = c
                        .subscribe(s.to_string())
                        .await
                        .map_err(NatsError::client)?;
                    subs.push((Kind::Control, sub));
                }
                c.flush().await.map_err(NatsError::client)?;
                Ok(Inbound::remote(subs))
            }
            Nats::Local(c) => {
                let mut kinds = Vec::new();
                for s in subjects {
                    kinds.push((c.subscribe(s, None)?, Kind::Control));
                }
                Ok(Inbound::local(c.clone(), kinds))
            }
        }
    }

    /// Sends a request and waits for the first reply, for at most `timeout`.
    pub async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, NatsError> {
        match self {
            Nats::Remote(c) => c
                .send_request(subject, Request::new().payload(payload).timeout(timeout))
                .await
                .map(|m| m.payload)
                .map_err(NatsError::client),
            Nats::Local(c) => Ok(c.request(subject, &payload, timeout).await?),
        }
    }

    /// A unique subject to receive replies on.
    pub fn new_inbox(&self) -> String {
        match self {
            Nats::Remote(c) => c.new_inbox(),
            Nats::Local(_) => format!("_INBOX.{}", nuid::next()),
        }
    }

    /// Waits until what was published so far reached the server.
    pub async fn flush(&self) -> Result<(), NatsError> {
        match self {
            Nats::Remote(c) => c.flush().await.map_err(NatsError::client),
            Nats::Local(_) => Ok(()),
        }
    }

    pub async fn close(&self) {
        match self {
            Nats::Remote(c) => c.close().await,
            Nats::Local(c) => c.close(),
        }
    }
}

/// The engine's protocol subscriptions.
///
/// Over a local connection everything arrives in one stream, in the order the server routed
/// it. A client connection hands each subscription its own stream, so they are read by
/// priority: acks and publishes first, the requests that end something (unsubscribe,
/// subscription close, connection close) last, behind a *barrier*: before one is handed out,
/// every message already received on a higher-priority subscription is handed out first. The
/// NATS client hands messages to the subscriptions in arrival order, so an ack a client sent
/// before closing is always seen by the engine before the close (the reference server gets
/// the same guarantee by flushing its connections).
pub enum Inbound {
    Remote {
        subs: Vec<(Kind, rnats_client::Subscriber)>,
        ready: VecDeque<(Kind, InMsg)>,
        ended: bool,
    },
    Local {
        conn: Arc<LocalConn>,
        /// Subscription ID → what it receives.
        kinds: Vec<(u64, Kind)>,
        inbox: LocalInbox,
        ready: VecDeque<(Kind, InMsg)>,
        ended: bool,
    },
}

impl Inbound {
    pub fn remote(subs: Vec<(Kind, rnats_client::Subscriber)>) -> Inbound {
        Inbound::Remote {
            subs,
            ready: VecDeque::new(),
            ended: false,
        }
    }

    pub fn local(conn: Arc<LocalConn>, kinds: Vec<(u64, Kind)>) -> Inbound {
        Inbound::Local {
            conn,
            kinds,
            inbox: LocalInbox::default(),
            ready: VecDeque::new(),
            ended: false,
        }
    }

    /// The next message, if one is there now.
    pub fn try_next(&mut self) -> Option<(Kind, InMsg)> {
        match self {
            Inbound::Remote { subs, ready, ended } => {
                if let Some(x) = ready.pop_front() {
                    return Some(x);
                }
                if *ended {
                    return None;
                }
                for i in 0..subs.len() {
                    match subs[i].1.try_next() {
                        Some(Some(m)) => return Some(arrived(subs, ready, i, m)),
                        Some(None) => {
                            *ended = true;
                            return None;
                        }
                        None => {}
                    }
                }
                None
            }
            Inbound::Local {
                conn,
                kinds,
                inbox,
                ready,
                ended,
            } => {
                if ready.is_empty() && !*ended {
                    match conn.try_recv(inbox) {
                        Ok(true) => take_local(kinds, inbox, ready),
                        Ok(false) => {}
                        Err(_) => *ended = true,
                    }
                }
                ready.pop_front()
            }
        }
    }

    /// The next message; never resolves once the connection closed. Cancel safe.
    pub async fn next(&mut self) -> (Kind, InMsg) {
        match self {
            Inbound::Remote { subs, ready, ended } => {
                std::future::poll_fn(|cx| poll_remote(subs, ready, ended, cx)).await
            }
            Inbound::Local {
                conn,
                kinds,
                inbox,
                ready,
                ended,
            } => loop {
                if let Some(x) = ready.pop_front() {
                    return x;
                }
                if *ended {
                    return std::future::pending().await;
                }
                // Nothing is taken from the connection unless `recv` returns.
                match conn.recv(inbox).await {
                    Ok(()) => take_local(kinds, inbox, ready),
                    Err(_) => *ended = true,
                }
            },
        }
    }
}

impl Drop for Inbound {
    /// A local connection outlives its `Inbound` on a cluster node (one per leadership
    /// term): the subscriptions go with the `Inbound` (a client connection's subscribers
    /// unsubscribe when dropped).
    fn drop(&mut self) {
        if let Inbound::Local { conn, kinds, .. } = self {
            for (sid, _) in kinds.iter() {
                conn.unsubscribe(*sid);
            }
        }
    }
}

fn poll_remote(
    subs: &mut [(Kind, rnats_client::Subscriber)],
    ready: &mut VecDeque<(Kind, InMsg)>,
    ended: &mut bool,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<(Kind, InMsg)> {
    use futures_core::Stream;
    use std::task::Poll;
    if let Some(x) = ready.pop_front() {
        return Poll::Ready(x);
    }
    if *ended {
        return Poll::Pending;
    }
    for i in 0..subs.len() {
        match std::pin::Pin::new(&mut subs[i].1).poll_next(cx) {
            Poll::Ready(Some(m)) => return Poll::Ready(arrived(subs, ready, i, m)),
            Poll::Ready(None) => {
                *ended = true;
                return Poll::Pending;
            }
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

/// `m` arrived on subscription `i`: a request that ends something goes after what the
/// subscriptions before it hold (read without the cooperative budget, which could report one
/// of them empty when it is not).
fn arrived(
    subs: &mut [(Kind, rnats_client::Subscriber)],
    ready: &mut VecDeque<(Kind, InMsg)>,
    i: usize,
    m: rnats_client::Message,
) -> (Kind, InMsg) {
    let kind = subs[i].0;
    if !matches!(kind, Kind::Unsubscribe | Kind::SubClose | Kind::Close) {
        return (kind, m.into());
    }
    loop {
        let mut any = false;
        for (k, s) in &mut subs[..i] {
            while let Some(Some(e)) = s.try_next() {
                ready.push_back((*k, e.into()));
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    ready.push_back((kind, m.into()));
    ready.pop_front().expect("just pushed")
}

/// Takes every message out of what a local connection received.
fn take_local(kinds: &[(u64, Kind)], inbox: &mut LocalInbox, ready: &mut VecDeque<(Kind, InMsg)>) {
    for m in inbox.drain() {
        let Some(&(_, kind)) = kinds.iter().find(|(s, _)| *s == m.sid) else {
            continue;
        };
        ready.push_back((
            kind,
            InMsg {
                subject: Subject::new(m.subject),
                reply: m.reply.map(Subject::new),
                payload: m.payload,
            },
        ));
    }
}
