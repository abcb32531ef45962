//! Package `spb`, between servers: fault-tolerance and partitioning control messages, the
//! replicated operations and snapshots of the clustered mode.

use super::client::{
    CloseRequest, ConnectRequest, MsgProto, SubscriptionRequest, UnsubscribeRequest,
};
use super::records::{ClientInfo, SubState};

/// Server-to-server control message (fault-tolerance heartbeats, partitioning checks).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CtrlMsg {
    #[prost(enumeration = "ctrl_msg::Type", tag = "1")]
    pub msg_type: i32,
    #[prost(string, tag = "2")]
    pub server_id: String,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
    /// Deprecated.
    #[prost(string, tag = "4")]
    pub ref_id: String,
}

/// Nested types of [`CtrlMsg`].
pub mod ctrl_msg {
    /// `CtrlMsg.Type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Type {
        /// Deprecated.
        SubUnsubscribe = 0,
        /// Deprecated.
        SubClose = 1,
        /// Deprecated.
        ConnClose = 2,
        FtHeartbeat = 3,
        Partitioning = 4,
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftJoinRequest {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(string, tag = "2")]
    pub node_addr: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftJoinResponse {
    #[prost(string, tag = "1")]
    pub error: String,
}

/// One replicated operation of the clustered mode.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftOperation {
    #[prost(enumeration = "raft_operation::Type", tag = "1")]
    pub op_type: i32,
    #[prost(message, optional, tag = "2")]
    pub publish_batch: Option<Batch>,
    #[prost(message, optional, tag = "3")]
    pub sub: Option<AddSubscription>,
    #[prost(message, optional, tag = "4")]
    pub unsub: Option<UnsubscribeRequest>,
    #[prost(message, optional, tag = "5")]
    pub sub_sent_ack: Option<SubSentAndAck>,
    #[prost(message, optional, tag = "7")]
    pub client_connect: Option<AddClient>,
    #[prost(message, optional, tag = "8")]
    pub client_disconnect: Option<CloseRequest>,
    #[prost(string, tag = "9")]
    pub channel: String,
    #[prost(uint64, tag = "10")]
    pub channel_id: u64,
}

/// Nested types of [`RaftOperation`].
pub mod raft_operation {
    /// `RaftOperation.Type` (5 is unused).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Type {
        Publish = 0,
        Subscribe = 1,
        RemoveSubscription = 2,
        CloseSubscription = 3,
        SendAndAck = 4,
        Connect = 6,
        Disconnect = 7,
        DeleteChannel = 8,
    }
}

/// Messages of one channel replicated together.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<MsgProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddSubscription {
    #[prost(message, optional, tag = "1")]
    pub request: Option<SubscriptionRequest>,
    #[prost(string, tag = "2")]
    pub ack_inbox: String,
    #[prost(uint64, tag = "3")]
    pub id: u64,
}

/// Sequences sent to and acked by one subscription (repeated scalars are packed in proto3).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubSentAndAck {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(string, tag = "2")]
    pub ack_inbox: String,
    #[prost(uint64, repeated, tag = "3")]
    pub sent: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    pub ack: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddClient {
    #[prost(message, optional, tag = "1")]
    pub request: Option<ConnectRequest>,
    #[prost(bool, tag = "2")]
    pub refresh: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftSnapshot {
    #[prost(message, repeated, tag = "1")]
    pub clients: Vec<ClientInfo>,
    #[prost(message, repeated, tag = "2")]
    pub channels: Vec<ChannelSnapshot>,
    #[prost(bytes = "vec", tag = "3")]
    pub padding: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelSnapshot {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(uint64, tag = "2")]
    pub first: u64,
    #[prost(uint64, tag = "3")]
    pub last: u64,
    #[prost(message, repeated, tag = "4")]
    pub subscriptions: Vec<SubscriptionSnapshot>,
    #[prost(uint64, tag = "5")]
    pub next_sub_id: u64,
    #[prost(uint64, tag = "6")]
    pub channel_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SubscriptionSnapshot {
    #[prost(message, optional, tag = "1")]
    pub state: Option<SubState>,
    #[prost(uint64, repeated, tag = "2")]
    pub acks_pending: Vec<u64>,
}
