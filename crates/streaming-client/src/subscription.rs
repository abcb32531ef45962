//! [`Subscription`]: the messages of one streaming subscription, as an async `Stream` of
//! [`Msg`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_core::Stream;
use prost::Message as _;
use rnats_client::{Client, Request, Subscriber};
use rnats_streaming::proto::{Ack, MsgProto, SubscriptionResponse, UnsubscribeRequest};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::client::{Outgoing, Shared};
use crate::error::Error;
use crate::options::SubscriptionOptions;

/// The messages of one subscription, in the order the server sent them (redeliveries
/// included). With automatic acks (the default) a message is acked when it is taken from the
/// stream. The stream ends after [`close`](Self::close), [`unsubscribe`](Self::unsubscribe)
/// and when the client closes or is lost. Dropping it closes it on the server (a durable
/// subscription stays; the request is not waited for).
pub struct Subscription {
    shared: Arc<Shared>,
    channel: String,
    inbox: String,
    durable_name: Option<String>,
    queue_group: Option<String>,
    target: Arc<AckTarget>,
    sub: Option<Subscriber>,
    ended: Pin<Box<WaitForCancellationFutureOwned>>,
    removed: bool,
}

/// What a message needs to ack itself.
struct AckTarget {
    nats: Client,
    ack_inbox: Arc<str>,
    manual: bool,
    /// Cancelled when the subscription or the client is closed.
    token: CancellationToken,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.channel)
            .field("inbox", &self.inbox)
            .field("ack_inbox", &self.target.ack_inbox)
            .field("durable_name", &self.durable_name)
            .field("queue_group", &self.queue_group)
            .field("manual_acks", &self.target.manual)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(
        shared: Arc<Shared>,
        channel: String,
        inbox: String,
        ack_inbox: String,
        opts: &SubscriptionOptions,
        sub: Subscriber,
    ) -> Subscription {
        let token = shared.closed.child_token();
        let target = Arc::new(AckTarget {
            nats: shared.nats.clone(),
            ack_inbox: ack_inbox.into(),
            manual: opts.manual_acks,
            token: token.clone(),
        });
        Subscription {
            shared,
            channel,
            inbox,
            durable_name: opts.durable_name.clone(),
            queue_group: opts.queue_group.clone(),
            target,
            sub: Some(sub),
            ended: Box::pin(token.cancelled_owned()),
            removed: false,
        }
    }

    /// The channel subscribed to.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The NATS subject messages are delivered to.
    pub fn inbox(&self) -> &str {
        &self.inbox
    }

    /// The NATS subject acks go to (from the server).
    pub fn ack_inbox(&self) -> &str {
        &self.target.ack_inbox
    }

    pub fn durable_name(&self) -> Option<&str> {
        self.durable_name.as_deref()
    }

    pub fn queue_group(&self) -> Option<&str> {
        self.queue_group.as_deref()
    }

    /// The next message; `None` once the subscription ended.
    pub async fn next(&mut self) -> Option<Msg> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Removes the subscription on the server; for a durable one, its position is forgotten.
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        self.remove(true).await
    }

    /// Stops the subscription; a durable one keeps its position on the server and resumes
    /// when the same client ID subscribes with the same durable name (and queue group).
    pub async fn close(mut self) -> Result<(), Error> {
        self.remove(false).await
    }

    fn request(&self) -> Vec<u8> {
        UnsubscribeRequest {
            client_id: self.shared.client_id.clone(),
            subject: self.channel.clone(),
            inbox: self.target.ack_inbox.to_string(),
            durable_name: self.durable_name.clone().unwrap_or_default(),
        }
        .encode_to_vec()
    }

    async fn remove(&mut self, unsubscribe: bool) -> Result<(), Error> {
        if self.removed {
            return Err(Error::BadSubscription);
        }
        self.removed = true;
        let shared = self.shared.clone();
        shared.check_open()?;
        // Acks taken so far reach the server first.
        shared.barrier().await;
        self.target.token.cancel();
        self.sub = None;
        let subject = if unsubscribe {
            &shared.unsub_requests
        } else {
            &shared.sub_close_requests
        };
        let r = shared
            .nats
            .send_request(
                subject,
                Request::new()
                    .payload(self.request())
                    .timeout(shared.request_timeout),
            )
            .await;
        match r {
            Err(e) => Err(match e.kind() {
                rnats_client::RequestErrorKind::TimedOut
                | rnats_client::RequestErrorKind::NoResponders => Error::UnsubscribeRequestTimeout,
                rnats_client::RequestErrorKind::Closed => Error::ConnectionClosed,
                rnats_client::RequestErrorKind::Publish => Error::nats(e),
            }),
            Ok(m) => match SubscriptionResponse::decode(m.payload) {
                Err(e) => Err(Error::Protocol(format!("SubscriptionResponse: {e}"))),
                Ok(r) if !r.error.is_empty() => Err(Error::Server(r.error)),
                Ok(_) => Ok(()),
            },
        }
    }
}

impl Stream for Subscription {
    type Item = Msg;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Msg>> {
        let this = self.get_mut();
        loop {
            let Some(sub) = this.sub.as_mut() else {
                return Poll::Ready(None);
            };
            if this.ended.as_mut().poll(cx).is_ready() {
                this.sub = None;
                return Poll::Ready(None);
            }
            let m = match Pin::new(sub).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.sub = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(m)) => m,
            };
            if m.status.is_some() {
                continue;
            }
            let Ok(p) = MsgProto::decode(m.payload) else {
                tracing::debug!(inbox = %this.inbox, "undecodable MsgProto");
                continue;
            };
            if !this.target.manual {
                let ack = Ack {
                    subject: p.subject.clone(),
                    sequence: p.sequence,
                };
                let _ = this.shared.outgoing.send(Outgoing::Publish {
                    subject: this.target.ack_inbox.clone(),
                    payload: ack.encode_to_vec().into(),
                });
            }
            return Poll::Ready(Some(Msg::new(p, this.target.clone())));
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.removed || self.shared.closed.is_cancelled() {
            return;
        }
        self.target.token.cancel();
        let req = self.request();
        self.shared.send_later(&self.shared.sub_close_requests, req);
    }
}

/// A message of a channel.
#[derive(Clone)]
pub struct Msg {
    /// Per-channel sequence, from 1.
    pub sequence: u64,
    /// The channel.
    pub subject: String,
    pub reply: String,
    pub data: Bytes,
    /// When the server stored it: nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// Sent before and not acked in time.
    pub redelivered: bool,
    /// How many times it was redelivered (the server's in-memory count).
    pub redelivery_count: u32,
    target: Arc<AckTarget>,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Msg")
            .field("sequence", &self.sequence)
            .field("subject", &self.subject)
            .field("data", &self.data)
            .field("timestamp", &self.timestamp)
            .field("redelivered", &self.redelivered)
            .field("redelivery_count", &self.redelivery_count)
            .finish_non_exhaustive()
    }
}

impl Msg {
    fn new(p: MsgProto, target: Arc<AckTarget>) -> Msg {
        Msg {
            sequence: p.sequence,
            subject: p.subject,
            reply: p.reply,
            data: p.data,
            timestamp: p.timestamp,
            redelivered: p.redelivered,
            redelivery_count: p.redelivery_count,
            target,
        }
    }

    /// [`timestamp`](Self::timestamp) as a `SystemTime`.
    pub fn time(&self) -> SystemTime {
        if self.timestamp >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_nanos(self.timestamp as u64)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_nanos(self.timestamp.unsigned_abs())
        }
    }

    /// Acks the message (subscriptions with manual acks only): the server will not redeliver
    /// it, and counts it out of max in flight.
    pub async fn ack(&self) -> Result<(), Error> {
        if !self.target.manual {
            return Err(Error::ManualAck);
        }
        if self.target.token.is_cancelled() {
            return Err(Error::BadSubscription);
        }
        let ack = Ack {
            subject: self.subject.clone(),
            sequence: self.sequence,
        };
        self.target
            .nats
            .publish(&*self.target.ack_inbox, ack.encode_to_vec())
            .await
            .map_err(Error::nats)
    }
}
