//! The RAFT transport a node uses: local connections to its embedded NATS server, or client
//! connections to an external one (`-ns`). Both use the same subjects, so they interoperate.

use std::time::Duration;

use bytes::Bytes;
use rnats_streaming_raft::{
    Lane, NatsServer, NatsTransport, NodeInfo, RpcHandler, Transport, TransportError,
};

use super::local_rpc::LocalTransport;

pub(crate) enum RaftTransport {
    Nats(NatsTransport),
    Local(LocalTransport),
}

impl RaftTransport {
    /// Starts answering the RPCs addressed to `node`. The NATS transport returns what stops
    /// it when dropped; the local one stops with [`RaftTransport::close`].
    pub(crate) async fn serve(
        &self,
        node: &str,
        handler: RpcHandler,
    ) -> Result<Option<NatsServer>, String> {
        match self {
            RaftTransport::Nats(t) => t
                .serve(node, handler)
                .await
                .map(Some)
                .map_err(|e| e.to_string()),
            RaftTransport::Local(t) => t
                .serve(node, handler)
                .map(|()| None)
                .map_err(|e| e.to_string()),
        }
    }

    pub(crate) fn close(&self) {
        if let RaftTransport::Local(t) = self {
            t.close();
        }
    }
}

impl Transport for RaftTransport {
    async fn call(
        &self,
        target: &NodeInfo,
        lane: Lane,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        match self {
            RaftTransport::Nats(t) => t.call(target, lane, request, timeout).await,
            RaftTransport::Local(t) => t.call(target, lane, request, timeout).await,
        }
    }

    fn max_request(&self, lane: Lane) -> usize {
        match self {
            RaftTransport::Nats(t) => t.max_request(lane),
            RaftTransport::Local(t) => t.max_request(lane),
        }
    }
}
