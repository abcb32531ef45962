//! RAFT RPCs over core NATS request/reply, on connections of their own.
//!
//! ```text
//! node "b" serves:  _STAN.raft.<cid>.rpc.b.ctl    votes, heartbeats    (control connection)
//!                   _STAN.raft.<cid>.rpc.b.data   appends, snapshots   (data connection)
//! node "a" calls b: request on the lane's subject through a's connection of the same lane;
//!                   the reply comes back on that connection's shared inbox
//! ```
//!
//! The reference tunnels hashicorp's byte streams through per-peer inboxes
//! (`raft.<addr>.accept` + chunks) over one connection that, unless `nodes_connections` was
//! set, also carried other traffic; under publish load its heartbeats queued behind data and
//! leaders flapped (nats-streaming-server#629). Here each RPC is one request and one reply,
//! and the two [`Lane`]s use two **dedicated** connections that the server opens only for
//! RAFT (never the client-facing one): a heartbeat never waits behind a batch. Requests are
//! served concurrently (one task each); openraft orders what must be ordered.
//!
//! "No responders" (the target is down or not serving) maps to `Unreachable`, so openraft
//! backs off instead of waiting for a timeout. A request larger than the connection's
//! `max_payload` is never sent: the network layer asks openraft to split the batch.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use rnats_client::{Client, Request, RequestErrorKind, Subscriber};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{Lane, RpcHandler, Transport, TransportError};
use crate::types::NodeInfo;

/// The subject node `node` of cluster `cluster_id` serves `lane` on.
pub fn rpc_subject(cluster_id: &str, node: &str, lane: Lane) -> String {
    let lane = match lane {
        Lane::Control => "ctl",
        Lane::Data => "data",
    };
    format!("_STAN.raft.{cluster_id}.rpc.{node}.{lane}")
}

/// Calls other nodes over two dedicated NATS connections.
#[derive(Clone)]
pub struct NatsTransport {
    control: Client,
    data: Client,
    cluster_id: String,
}

impl NatsTransport {
    /// `control` and `data` must be connections opened for RAFT alone (they may be the
    /// same connection in tests; production should not share them with client traffic).
    pub fn new(control: Client, data: Client, cluster_id: impl Into<String>) -> NatsTransport {
        NatsTransport {
            control,
            data,
            cluster_id: cluster_id.into(),
        }
    }

    fn client(&self, lane: Lane) -> &Client {
        match lane {
            Lane::Control => &self.control,
            Lane::Data => &self.data,
        }
    }

    /// Serves `node`'s RPCs with `handler` until the returned server is stopped or dropped.
    pub async fn serve(
        &self,
        node: &str,
        handler: RpcHandler,
    ) -> Result<NatsServer, rnats_client::SubscribeError> {
        let mut tasks = Vec::new();
        for lane in [Lane::Control, Lane::Data] {
            let client = self.client(lane).clone();
            let sub = client
                .subscribe(rpc_subject(&self.cluster_id, node, lane))
                .await?;
            tasks.push(tokio::spawn(serve_lane(client, sub, handler.clone())));
        }
        // The subscriptions are live once the server has seen them.
        for lane in [Lane::Control, Lane::Data] {
            if let Err(e) = self.client(lane).flush().await {
                warn!("RAFT transport: flush after subscribing failed: {e}");
            }
        }
        Ok(NatsServer { tasks })
    }
}

async fn next(sub: &mut Subscriber) -> Option<rnats_client::Message> {
    std::future::poll_fn(|cx| Pin::new(&mut *sub).poll_next(cx)).await
}

async fn serve_lane(client: Client, mut sub: Subscriber, handler: RpcHandler) {
    while let Some(msg) = next(&mut sub).await {
        let Some(reply_to) = msg.reply else {
            debug!("RAFT transport: request without reply subject ignored");
            continue;
        };
        let (client, handler) = (client.clone(), handler.clone());
        tokio::spawn(async move {
            let reply = handler.handle(&msg.payload).await;
            if let Err(e) = client.publish(&reply_to, &reply).await {
                debug!("RAFT transport: reply failed: {e}");
            }
        });
    }
}

/// The serving side of a node; stops serving when stopped or dropped.
pub struct NatsServer {
    tasks: Vec<JoinHandle<()>>,
}

impl NatsServer {
    pub fn stop(self) {}
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Transport for NatsTransport {
    async fn call(
        &self,
        target: &NodeInfo,
        lane: Lane,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let node = target.name.clone();
        let subject = rpc_subject(&self.cluster_id, &target.name, lane);
        match self
            .client(lane)
            .send_request(subject, Request::new().payload(request).timeout(timeout))
            .await
        {
            Ok(m) => Ok(m.payload),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => TransportError::Unreachable {
                    node,
                    why: "no responders".into(),
                },
                RequestErrorKind::TimedOut => TransportError::Timeout { node, timeout },
                _ => TransportError::Network {
                    node,
                    why: e.to_string(),
                },
            }),
        }
    }

    fn max_request(&self, lane: Lane) -> usize {
        // Room for the subject and reply inbox on the wire is not part of max_payload.
        self.client(lane).max_payload()
    }
}
