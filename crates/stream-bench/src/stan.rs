//! The NATS Streaming side, in as few lines as the protocol allows: discovery/connect, PubMsg
//! with an ack inbox, subscriptions (any start position, durable), Ack, close.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::{Bytes, BytesMut};
use prost::Message as _;
use rnats_client::{Client, Message, Request, Subscriber};
use rnats_streaming::proto::{
    Ack, CloseRequest, CloseResponse, ConnectRequest, ConnectResponse, MsgProto, PubAck, PubMsg,
    StartPosition, SubscriptionRequest, SubscriptionResponse, UnsubscribeRequest,
};
use tokio::task::JoinHandle;

use crate::nats;
use crate::publish::{AckResult, Wire};

/// A connected streaming session over one NATS connection.
pub struct Stan {
    pub nc: Client,
    pub client_id: String,
    pub conn_id: Vec<u8>,
    pub info: ConnectResponse,
    heartbeats: JoinHandle<()>,
}

impl Drop for Stan {
    fn drop(&mut self) {
        self.heartbeats.abort();
    }
}

impl Stan {
    /// Connects through `_STAN.discover.<cluster>`. Server heartbeats (empty requests on the
    /// heartbeat inbox) are answered by a background task.
    pub async fn connect(
        nc: Client,
        cluster: &str,
        client_id: &str,
        wait: Duration,
    ) -> anyhow::Result<Stan> {
        let hb_inbox = nc.new_inbox();
        let mut hb_sub = nc.subscribe(hb_inbox.clone()).await?;
        let hb_nc = nc.clone();
        let heartbeats = tokio::spawn(async move {
            loop {
                match nats::next(&mut hb_sub, Duration::from_secs(3600)).await {
                    nats::Next::Msg(m) => {
                        if let Some(r) = m.reply {
                            let _ = hb_nc.publish(r, b"").await;
                        }
                    }
                    nats::Next::TimedOut => {}
                    nats::Next::Closed => break,
                }
            }
        });
        let conn_id = nuid::next().to_string().into_bytes();
        let req = ConnectRequest {
            client_id: client_id.to_string(),
            heartbeat_inbox: hb_inbox,
            protocol: 1,
            conn_id: conn_id.clone(),
            ping_interval: 5,
            ping_max_out: 88,
        };
        let subject = format!("_STAN.discover.{cluster}");
        let reply = nc
            .send_request(
                &subject,
                Request::new().payload(req.encode_to_vec()).timeout(wait),
            )
            .await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                heartbeats.abort();
                bail!("connect request on {subject}: {e}");
            }
        };
        let info = ConnectResponse::decode(reply.payload).context("decoding ConnectResponse")?;
        if !info.error.is_empty() {
            heartbeats.abort();
            bail!("connect refused: {}", info.error);
        }
        Ok(Stan {
            nc,
            client_id: client_id.to_string(),
            conn_id,
            info,
            heartbeats,
        })
    }

    /// The NATS subject PubMsgs for `channel` go to.
    pub fn pub_subject(&self, channel: &str) -> String {
        format!("{}.{}", self.info.pub_prefix, channel)
    }

    /// Encodes a PubMsg.
    pub fn pub_msg(&self, channel: &str, guid: String, data: Bytes) -> Vec<u8> {
        PubMsg {
            client_id: self.client_id.clone(),
            guid,
            subject: channel.to_string(),
            reply: String::new(),
            data,
            conn_id: self.conn_id.clone(),
            sha256: Vec::new(),
        }
        .encode_to_vec()
    }

    /// Creates (or resumes, for a durable) a subscription. Messages arrive on the returned
    /// subscriber; nothing is sent before the SubscriptionResponse (server rule), and the NATS
    /// SUB precedes the request on this connection, so nothing is missed.
    pub async fn subscribe(&self, channel: &str, o: &SubOpts) -> anyhow::Result<StanSub> {
        let inbox = self.nc.new_inbox();
        let sub = self.nc.subscribe(inbox.clone()).await?;
        let req = SubscriptionRequest {
            client_id: self.client_id.clone(),
            subject: channel.to_string(),
            q_group: String::new(),
            inbox: inbox.clone(),
            max_in_flight: o.max_in_flight,
            ack_wait_in_secs: o.ack_wait_secs,
            durable_name: o.durable.clone().unwrap_or_default(),
            start_position: o.start as i32,
            start_sequence: o.start_sequence,
            start_time_delta: 0,
        };
        let reply = self
            .nc
            .send_request(
                &self.info.sub_requests,
                Request::new().payload(req.encode_to_vec()).timeout(o.wait),
            )
            .await
            .map_err(|e| anyhow::anyhow!("subscription request: {e}"))?;
        let resp = SubscriptionResponse::decode(reply.payload)?;
        if !resp.error.is_empty() {
            bail!("subscription refused: {}", resp.error);
        }
        Ok(StanSub {
            sub,
            channel: channel.to_string(),
            ack_inbox: resp.ack_inbox,
        })
    }

    /// Appends the `Ack` of `seq` on a subscription to `buf`.
    pub fn encode_ack(&self, s: &StanSub, seq: u64, buf: &mut BytesMut) {
        let ack = Ack {
            subject: String::new(),
            sequence: seq,
        };
        // The channel field, then the sequence: the same bytes prost writes for the whole
        // message, without cloning the channel name per ack.
        prost::encoding::string::encode(1, &s.channel, buf);
        let _ = ack.encode(buf);
    }

    /// Acknowledges `seq` on a subscription (plain publish, never answered).
    pub async fn ack(&self, s: &StanSub, seq: u64) -> anyhow::Result<()> {
        let ack = Ack {
            subject: s.channel.clone(),
            sequence: seq,
        };
        self.nc.publish(&s.ack_inbox, ack.encode_to_vec()).await?;
        Ok(())
    }

    /// Closes a subscription (a durable keeps its position) and waits for the answer.
    pub async fn close_sub(&self, s: &StanSub, wait: Duration) -> anyhow::Result<()> {
        let req = UnsubscribeRequest {
            client_id: self.client_id.clone(),
            subject: s.channel.clone(),
            inbox: s.ack_inbox.clone(),
            durable_name: String::new(),
        };
        let subj = if self.info.sub_close_requests.is_empty() {
            &self.info.unsub_requests
        } else {
            &self.info.sub_close_requests
        };
        let reply = self
            .nc
            .send_request(
                subj,
                Request::new().payload(req.encode_to_vec()).timeout(wait),
            )
            .await
            .map_err(|e| anyhow::anyhow!("sub close request: {e}"))?;
        let resp = SubscriptionResponse::decode(reply.payload)?;
        if !resp.error.is_empty() {
            bail!("sub close refused: {}", resp.error);
        }
        Ok(())
    }

    /// Closes the session (CloseRequest) and the NATS connection.
    pub async fn close(self, wait: Duration) -> anyhow::Result<()> {
        let req = CloseRequest {
            client_id: self.client_id.clone(),
        };
        let r = self
            .nc
            .send_request(
                &self.info.close_requests,
                Request::new().payload(req.encode_to_vec()).timeout(wait),
            )
            .await;
        self.heartbeats.abort();
        let nc = self.nc.clone();
        drop(self);
        let out = match r {
            Ok(m) => {
                let resp = CloseResponse::decode(m.payload)?;
                if resp.error.is_empty() {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("close refused: {}", resp.error))
                }
            }
            Err(e) => Err(anyhow::anyhow!("close request: {e}")),
        };
        nc.close().await;
        out
    }
}

/// Subscription options the tool needs.
#[derive(Debug, Clone)]
pub struct SubOpts {
    pub start: StartPosition,
    pub start_sequence: u64,
    pub max_in_flight: i32,
    pub ack_wait_secs: i32,
    pub durable: Option<String>,
    pub wait: Duration,
}

impl SubOpts {
    pub fn new(start: StartPosition) -> SubOpts {
        SubOpts {
            start,
            start_sequence: 0,
            max_in_flight: 1024,
            ack_wait_secs: 30,
            durable: None,
            wait: Duration::from_secs(5),
        }
    }
}

/// One streaming subscription: its NATS subscriber and its ack inbox.
pub struct StanSub {
    pub sub: Subscriber,
    pub channel: String,
    pub ack_inbox: String,
}

/// Decodes a delivered message.
pub fn decode_msg(m: &Message) -> anyhow::Result<MsgProto> {
    Ok(MsgProto::decode(m.payload.clone())?)
}

/// Publishing to one channel for [`crate::publish::run`]: guid = `<nuid>-<i>`, one ack inbox.
pub struct StanWire<'a> {
    pub stan: &'a Stan,
    pub channel: String,
    pub subject: String,
    pub ack_inbox: String,
    pub guid_prefix: String,
    pub payload: Box<dyn Fn(u64) -> Bytes + Send + Sync + 'a>,
}

impl<'a> StanWire<'a> {
    /// Prepares publishing to `channel`; subscribes the ack inbox (returned separately so the
    /// publisher loop can own it).
    pub async fn new(
        stan: &'a Stan,
        channel: &str,
        payload: Box<dyn Fn(u64) -> Bytes + Send + Sync + 'a>,
    ) -> anyhow::Result<(StanWire<'a>, Subscriber)> {
        let ack_inbox = format!("_STAN.acks.{}", nuid::next());
        let sub = stan.nc.subscribe(ack_inbox.clone()).await?;
        Ok((
            StanWire {
                stan,
                channel: channel.to_string(),
                subject: stan.pub_subject(channel),
                ack_inbox,
                guid_prefix: format!("{}-", nuid::next()),
                payload,
            },
            sub,
        ))
    }

    pub fn guid(&self, i: u64) -> String {
        format!("{}{i}", self.guid_prefix)
    }
}

impl Wire for StanWire<'_> {
    async fn send(&mut self, i: u64) -> anyhow::Result<usize> {
        let data = (self.payload)(i);
        let n = data.len();
        let bytes = self.stan.pub_msg(&self.channel, self.guid(i), data);
        self.stan
            .nc
            .publish_with_reply(&self.subject, &self.ack_inbox, bytes)
            .await?;
        Ok(n)
    }

    fn parse_ack(&self, m: &Message) -> AckResult {
        // The core server's answer when no server subscribes the publish subject (a cluster
        // between two leaders): the publish failed, but it is no PubAck.
        if m.status == Some(rnats_client::NO_RESPONDERS) && m.payload.is_empty() {
            return AckResult::Err(None, "no responders (no server subscribed)".into());
        }
        let ack = match PubAck::decode(m.payload.clone()) {
            Ok(a) => a,
            Err(e) => return AckResult::Err(None, format!("undecodable PubAck: {e}")),
        };
        let id = ack
            .guid
            .strip_prefix(&self.guid_prefix)
            .and_then(|s| s.parse::<u64>().ok());
        match (id, ack.error.is_empty()) {
            (Some(i), true) => AckResult::Ok(i),
            (id, false) => AckResult::Err(id, ack.error),
            (None, true) => AckResult::Err(None, format!("PubAck for unknown guid {}", ack.guid)),
        }
    }
}
