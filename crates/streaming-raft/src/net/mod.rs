//! RAFT RPCs over any request/reply [`Transport`].
//!
//! ```text
//! openraft ─▶ Network<T> (one per target) ─encode─▶ T::call(target, lane, bytes, timeout)
//!                                                        │  (memory links, or NATS subjects)
//!                        RpcHandler::handle(bytes) ◀─────┘  on the target node
//!                          └─▶ Raft::append_entries / vote / install_full_snapshot ─▶ reply bytes
//! ```
//!
//! * Messages are serde values encoded with postcard (varints, no field names): an append of
//!   small commands costs a few bytes per entry beyond the commands themselves.
//! * Two [`Lane`]s: `Control` carries votes and heartbeats (appends without entries),
//!   `Data` carries appends with entries and snapshots. A transport may give them separate
//!   connections so that a heartbeat never waits behind a large batch (the reference's
//!   leadership flaps under load, nats-streaming-server#629, came from the opposite).
//! * Snapshots are small (no messages), so one RPC carries a whole snapshot
//!   (`full_snapshot`) and the receiver calls `Raft::install_full_snapshot`; openraft's
//!   chunked transfer is not used.

pub mod mem;
pub mod nats;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RPCTypes, ServerState, Snapshot};
use serde::{Deserialize, Serialize};

use crate::election::campaign::Ballot;
use crate::election::{Elector, Local, PreVoteReply, PreVoteRequest};
use crate::log::LogStore;
use crate::types::{NodeId, NodeInfo, Raft, SnapshotMeta, TypeConfig, Vote};

/// Which connection an RPC should travel on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Votes and heartbeats: small and latency critical.
    Control,
    /// Appends with entries, snapshots.
    Data,
}

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Nobody answers for the target (down, partitioned, not started).
    #[error("node {node} is unreachable: {why}")]
    Unreachable { node: String, why: String },
    /// The target did not answer in time.
    #[error("no reply from node {node} within {timeout:?}")]
    Timeout { node: String, timeout: Duration },
    /// Anything else (a closed connection, a send error).
    #[error("RPC to node {node} failed: {why}")]
    Network { node: String, why: String },
}

/// A request/reply carrier between nodes. Implementations: [`mem::MemNet`] for tests,
/// [`nats::NatsTransport`] over core NATS.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to `target` and waits (at most `timeout`) for its reply.
    fn call(
        &self,
        target: &NodeInfo,
        lane: Lane,
        request: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, TransportError>> + Send;

    /// The largest request `lane` can carry; larger appends are split by openraft.
    fn max_request(&self, _lane: Lane) -> usize {
        usize::MAX
    }
}

/// A RAFT request on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Bytes,
    },
    /// Last, so the variants before keep their wire numbers.
    PreVote(PreVoteRequest),
}

/// A RAFT reply on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<SnapshotResponse<NodeId>, Fatal<NodeId>>),
    /// The request could not be decoded or was meant for another node.
    Refused(String),
    PreVote(PreVoteReply),
}

impl RpcRequest {
    pub fn lane(&self) -> Lane {
        match self {
            RpcRequest::Append(a) if !a.entries.is_empty() => Lane::Data,
            RpcRequest::Snapshot { .. } => Lane::Data,
            _ => Lane::Control,
        }
    }
}

/// Serves RAFT RPCs for one node: transports feed it the request bytes they receive.
#[derive(Clone)]
pub struct RpcHandler {
    raft: Raft,
    id: NodeId,
    elector: Arc<Elector>,
    log: LogStore,
}

impl RpcHandler {
    pub fn new(raft: Raft, id: NodeId, elector: Arc<Elector>, log: LogStore) -> RpcHandler {
        RpcHandler {
            raft,
            id,
            elector,
            log,
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// Decodes, dispatches to the RAFT node and encodes its reply.
    pub async fn handle(&self, request: &[u8]) -> Bytes {
        let reply = match postcard::from_bytes::<RpcRequest>(request) {
            Err(e) => RpcReply::Refused(format!("undecodable RAFT request: {e}")),
            Ok(RpcRequest::Append(a)) => {
                let reply = self.raft.append_entries(a).await;
                if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                    self.elector.contact(Instant::now());
                }
                RpcReply::Append(reply)
            }
            Ok(RpcRequest::Vote(v)) => {
                let candidate_log = v.last_log_id;
                let reply = self.raft.vote(v).await;
                if let Ok(resp) = &reply {
                    if resp.vote_granted {
                        self.elector.contact(Instant::now());
                    } else if resp.last_log_id > candidate_log {
                        self.elector.refused_shorter_log(Instant::now());
                    }
                }
                RpcReply::Vote(reply)
            }
            Ok(RpcRequest::Snapshot { vote, meta, data }) => {
                let snapshot = Snapshot {
                    meta,
                    snapshot: Box::new(std::io::Cursor::new(data.to_vec())),
                };
                RpcReply::Snapshot(self.raft.install_full_snapshot(vote, snapshot).await)
            }
            Ok(RpcRequest::PreVote(req)) => RpcReply::PreVote(self.pre_vote(&req)),
        };
        encode(&reply)
    }

    fn pre_vote(&self, req: &PreVoteRequest) -> PreVoteReply {
        let (leading, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let lease = u64::try_from(self.elector.lease().as_millis()).unwrap_or(u64::MAX);
            (
                m.state == ServerState::Leader
                    && m.millis_since_quorum_ack.is_some_and(|ms| ms <= lease),
                m.current_term,
            )
        };
        let local = Local {
            leading,
            term,
            last_log: self.log.with(|f| f.last()),
        };
        self.elector.answer(req, &local, Instant::now())
    }
}

fn encoded_len<T: Serialize>(v: &T) -> usize {
    postcard::experimental::serialized_size(v).unwrap_or(usize::MAX)
}

fn encode<T: Serialize>(v: &T) -> Bytes {
    // Serializing our own in-memory values into a Vec cannot fail.
    Bytes::from(postcard::to_stdvec(v).unwrap_or_default())
}

/// openraft's per-target client over a [`Transport`].
pub struct Network<T: Transport> {
    transport: Arc<T>,
    me: NodeId,
    target: NodeId,
    node: NodeInfo,
}

/// Creates a [`Network`] per target node.
pub struct NetworkFactory<T: Transport> {
    transport: Arc<T>,
    me: NodeId,
}

impl<T: Transport> NetworkFactory<T> {
    pub fn new(transport: Arc<T>, me: NodeId) -> NetworkFactory<T> {
        NetworkFactory { transport, me }
    }
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for NetworkFactory<T> {
    type Network = Network<T>;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Network<T> {
        Network {
            transport: self.transport.clone(),
            me: self.me,
            target,
            node: node.clone(),
        }
    }
}

/// Pre-votes over a [`Transport`] (the campaign task's [`Ballot`]).
pub struct PreVoter<T: Transport> {
    transport: Arc<T>,
}

impl<T: Transport> PreVoter<T> {
    pub fn new(transport: Arc<T>) -> PreVoter<T> {
        PreVoter { transport }
    }
}

impl<T: Transport> Ballot for PreVoter<T> {
    async fn pre_vote(
        &self,
        target: &NodeInfo,
        req: &PreVoteRequest,
        timeout: Duration,
    ) -> Option<PreVoteReply> {
        let bytes = encode(&RpcRequest::PreVote(req.clone()));
        let reply = self
            .transport
            .call(target, Lane::Control, bytes, timeout)
            .await
            .ok()?;
        match postcard::from_bytes::<RpcReply>(&reply) {
            Ok(RpcReply::PreVote(r)) => Some(r),
            _ => None,
        }
    }
}

/// The ways a call fails before a remote answer, mapped to openraft's error kinds.
enum CallError {
    Unreachable(Unreachable),
    Timeout(Duration),
    Network(NetworkError),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl<T: Transport> Network<T> {
    async fn call(&self, req: &RpcRequest, timeout: Duration) -> Result<RpcReply, CallError> {
        let bytes = encode(req);
        let reply = self
            .transport
            .call(&self.node, req.lane(), bytes, timeout)
            .await
            .map_err(|e| match e {
                TransportError::Unreachable { .. } => CallError::Unreachable(Unreachable::new(&e)),
                TransportError::Timeout { timeout, .. } => CallError::Timeout(timeout),
                TransportError::Network { .. } => CallError::Network(NetworkError::new(&e)),
            })?;
        match postcard::from_bytes::<RpcReply>(&reply) {
            Ok(RpcReply::Refused(why)) => Err(CallError::Network(NetworkError::new(&Msg(why)))),
            Ok(r) => Ok(r),
            Err(e) => Err(CallError::Network(NetworkError::new(&Msg(format!(
                "undecodable RAFT reply from {}: {e}",
                self.node
            ))))),
        }
    }

    fn rpc_err<E: std::error::Error>(
        &self,
        e: CallError,
        action: RPCTypes,
    ) -> RPCError<NodeId, NodeInfo, E> {
        match e {
            CallError::Unreachable(u) => RPCError::Unreachable(u),
            CallError::Network(n) => RPCError::Network(n),
            CallError::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout,
            }),
        }
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, NodeInfo, E> {
        RPCError::Network(NetworkError::new(&Msg(format!(
            "node {} answered with the wrong reply kind",
            self.node
        ))))
    }
}

impl<T: Transport> RaftNetwork<TypeConfig> for Network<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let n = rpc.entries.len() as u64;
        let req = RpcRequest::Append(rpc);
        let limit = self.transport.max_request(req.lane());
        if n > 1 && limit != usize::MAX && encoded_len(&req) > limit {
            // openraft resends fewer entries; one entry over the limit can't be split and
            // fails below as a network error (the server keeps commands under max_payload).
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(n / 2),
            ));
        }
        match self
            .call(&req, option.hard_ttl())
            .await
            .map_err(|e| self.rpc_err(e, RPCTypes::AppendEntries))?
        {
            RpcReply::Append(Ok(r)) => Ok(r),
            RpcReply::Append(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // `full_snapshot` below sends snapshots whole; openraft only reaches this method
        // through the default `full_snapshot`, which is replaced.
        Err(RPCError::Network(NetworkError::new(&Msg(
            "chunked snapshot transfer is not used; snapshots travel whole".into(),
        ))))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        match self
            .call(&RpcRequest::Vote(rpc), option.hard_ttl())
            .await
            .map_err(|e| self.rpc_err(e, RPCTypes::Vote))?
        {
            RpcReply::Vote(Ok(r)) => Ok(r),
            RpcReply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))),
            _ => Err(self.unexpected()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let req = RpcRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: Bytes::from(snapshot.snapshot.into_inner()),
        };
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = self.call(&req, option.hard_ttl()) => r,
        };
        match reply {
            Ok(RpcReply::Snapshot(Ok(r))) => Ok(r),
            Ok(RpcReply::Snapshot(Err(e))) => Err(StreamingError::RemoteError(
                RemoteError::new_with_node(self.target, self.node.clone(), e),
            )),
            Ok(_) => Err(StreamingError::Network(NetworkError::new(&Msg(
                "wrong reply kind to a snapshot".into(),
            )))),
            Err(CallError::Unreachable(u)) => Err(StreamingError::Unreachable(u)),
            Err(CallError::Network(n)) => Err(StreamingError::Network(n)),
            Err(CallError::Timeout(timeout)) => Err(StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: self.me,
                target: self.target,
                timeout,
            })),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // An unreachable peer is retried soon enough to notice its return within an
        // election timeout, without spinning.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;
    use crate::types::{Command, Entry};

    fn append(n: usize) -> RpcRequest {
        let entries = (1..=n as u64)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(2, 7), i),
                payload: EntryPayload::Normal(Command(Bytes::from(vec![b'x'; 16]))),
            })
            .collect();
        RpcRequest::Append(AppendEntriesRequest {
            vote: Vote::new_committed(2, 7),
            prev_log_id: None,
            entries,
            leader_commit: Some(LogId::new(CommittedLeaderId::new(2, 7), 1)),
        })
    }

    #[test]
    fn lanes_and_compact_round_trip() {
        assert_eq!(
            append(0).lane(),
            Lane::Control,
            "heartbeats use the control lane"
        );
        assert_eq!(append(3).lane(), Lane::Data);
        let vote = RpcRequest::Vote(VoteRequest::new(Vote::new(3, 1), None));
        assert_eq!(vote.lane(), Lane::Control);

        let req = append(100);
        let bytes = encode(&req);
        // 100 commands of 16 bytes: the framing costs a few bytes per entry.
        assert!(bytes.len() < 100 * (16 + 8) + 32, "{} bytes", bytes.len());
        assert_eq!(encoded_len(&req), bytes.len());
        match postcard::from_bytes::<RpcRequest>(&bytes).unwrap() {
            RpcRequest::Append(a) => {
                assert_eq!(a.entries.len(), 100);
                assert_eq!(a.entries[99].log_id.index, 100);
            }
            other => panic!("decoded {other:?}"),
        }
        // Garbage never panics.
        assert!(postcard::from_bytes::<RpcRequest>(&[0xff, 0xff, 0x01]).is_err());
    }
}
