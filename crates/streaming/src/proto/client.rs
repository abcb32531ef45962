//! Package `pb`: the messages clients and servers exchange.

use bytes::Bytes;

/// A published message, client → server on `<pubPrefix>.<channel>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PubMsg {
    #[prost(string, tag = "1")]
    pub client_id: String,
    /// Unique per message (a client NUID), echoed in the [`PubAck`].
    #[prost(string, tag = "2")]
    pub guid: String,
    /// The channel name. Authoritative: not the NATS subject suffix.
    #[prost(string, tag = "3")]
    pub subject: String,
    #[prost(string, tag = "4")]
    pub reply: String,
    #[prost(bytes = "bytes", tag = "5")]
    pub data: Bytes,
    /// Protocol ≥ 1: when non-empty the server validates the publisher by connection ID.
    #[prost(bytes = "vec", tag = "6")]
    pub conn_id: Vec<u8>,
    /// Reserved, unused.
    #[prost(bytes = "vec", tag = "10")]
    pub sha256: Vec<u8>,
}

/// Publish acknowledgement, server → client to the [`PubMsg`]'s NATS reply subject.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PubAck {
    #[prost(string, tag = "1")]
    pub guid: String,
    /// Empty: the message is stored.
    #[prost(string, tag = "2")]
    pub error: String,
}

/// A stored message as delivered to subscribers (and as kept by the stores).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MsgProto {
    /// Per-channel sequence, from 1, gap-free.
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
    /// The channel name.
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, tag = "3")]
    pub reply: String,
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    /// Nanoseconds since the Unix epoch, assigned by the server when stored.
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
    #[prost(bool, tag = "6")]
    pub redelivered: bool,
    #[prost(uint32, tag = "7")]
    pub redelivery_count: u32,
    /// Reserved, unused.
    #[prost(uint32, tag = "10")]
    pub crc32: u32,
}

/// A subscriber's acknowledgement, published to the subscription's ack inbox.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    /// The channel name.
    #[prost(string, tag = "1")]
    pub subject: String,
    #[prost(uint64, tag = "2")]
    pub sequence: u64,
}

/// Connection request on `<discover prefix>.<cluster id>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConnectRequest {
    #[prost(string, tag = "1")]
    pub client_id: String,
    #[prost(string, tag = "2")]
    pub heartbeat_inbox: String,
    #[prost(int32, tag = "3")]
    pub protocol: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub conn_id: Vec<u8>,
    /// Seconds (negative values mean milliseconds in the reference test suites).
    #[prost(int32, tag = "5")]
    pub ping_interval: i32,
    #[prost(int32, tag = "6")]
    pub ping_max_out: i32,
}

/// Reply to a [`ConnectRequest`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConnectResponse {
    #[prost(string, tag = "1")]
    pub pub_prefix: String,
    #[prost(string, tag = "2")]
    pub sub_requests: String,
    #[prost(string, tag = "3")]
    pub unsub_requests: String,
    #[prost(string, tag = "4")]
    pub close_requests: String,
    #[prost(string, tag = "5")]
    pub error: String,
    #[prost(string, tag = "6")]
    pub sub_close_requests: String,
    #[prost(string, tag = "7")]
    pub ping_requests: String,
    #[prost(int32, tag = "8")]
    pub ping_interval: i32,
    #[prost(int32, tag = "9")]
    pub ping_max_out: i32,
    #[prost(int32, tag = "10")]
    pub protocol: i32,
    /// Reserved, never set.
    #[prost(string, tag = "100")]
    pub public_key: String,
}

/// Client → server ping (protocol 1) on `pingRequests`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(bytes = "vec", tag = "1")]
    pub conn_id: Vec<u8>,
}

/// Reply to a [`Ping`]; empty means OK.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PingResponse {
    #[prost(string, tag = "1")]
    pub error: String,
}

/// Where a new subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum StartPosition {
    NewOnly = 0,
    LastReceived = 1,
    TimeDeltaStart = 2,
    SequenceStart = 3,
    First = 4,
}

/// Subscription request on `subRequests`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubscriptionRequest {
    #[prost(string, tag = "1")]
    pub client_id: String,
    /// The channel name (no wildcards).
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, tag = "3")]
    pub q_group: String,
    /// Where [`MsgProto`]s are delivered.
    #[prost(string, tag = "4")]
    pub inbox: String,
    #[prost(int32, tag = "5")]
    pub max_in_flight: i32,
    #[prost(int32, tag = "6")]
    pub ack_wait_in_secs: i32,
    #[prost(string, tag = "7")]
    pub durable_name: String,
    /// A [`StartPosition`]; read it with `start_position()`, which maps unknown values to
    /// the default, or check `StartPosition::try_from(req.start_position)`.
    #[prost(enumeration = "StartPosition", tag = "10")]
    pub start_position: i32,
    #[prost(uint64, tag = "11")]
    pub start_sequence: u64,
    /// Nanoseconds: start time = server now − delta.
    #[prost(int64, tag = "12")]
    pub start_time_delta: i64,
}

/// Reply to a [`SubscriptionRequest`] and to [`UnsubscribeRequest`]s. Field 1 is unused.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubscriptionResponse {
    #[prost(string, tag = "2")]
    pub ack_inbox: String,
    #[prost(string, tag = "3")]
    pub error: String,
}

/// Unsubscribe (on `unsubRequests`) or close (on `subCloseRequests`) a subscription.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnsubscribeRequest {
    #[prost(string, tag = "1")]
    pub client_id: String,
    #[prost(string, tag = "2")]
    pub subject: String,
    /// Clients send the ack inbox here.
    #[prost(string, tag = "3")]
    pub inbox: String,
    #[prost(string, tag = "4")]
    pub durable_name: String,
}

/// Connection close request on `closeRequests`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CloseRequest {
    #[prost(string, tag = "1")]
    pub client_id: String,
}

/// Reply to a [`CloseRequest`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct CloseResponse {
    #[prost(string, tag = "1")]
    pub error: String,
}
