//! The NATS Streaming protobuf messages, hand-written with `#[derive(prost::Message)]` (no
//! build script, no `protoc`).
//!
//! Field numbers and scalar types are those of the official `.proto` files: package `pb`
//! (`nats-io/stan.go` `pb/protocol.proto`, what every client speaks) and package `spb`
//! (`nats-io/nats-streaming-server` `spb/protocol.proto`, server-internal records for stores,
//! fault tolerance and clustering). Both are proto3: zero values are not encoded, so a message
//! whose fields are all default encodes to zero bytes (an empty NATS payload means "OK"), and
//! decoders skip unknown fields.
//!
//! Rust field names are the snake_case of the proto names (`clientID` → `client_id`,
//! `ackWaitInSecs` → `ack_wait_in_secs`, `CRC32` → `crc32`). Payload fields (`PubMsg.data`,
//! `MsgProto.data`) are [`Bytes`], so a message decoded from a `Bytes` buffer shares it
//! instead of copying, and fanning a message out to many subscribers is a reference-count
//! bump.
//!
//! ```text
//! client → server                                   server → client
//! ConnectRequest     on <discover>.<cluster id>     ConnectResponse
//! PubMsg             on <pubPrefix>.<channel>       PubAck            (to the NATS reply)
//! SubscriptionRequest on subRequests                SubscriptionResponse
//! UnsubscribeRequest on unsubRequests/subClose      SubscriptionResponse
//! CloseRequest       on closeRequests               CloseResponse
//! Ping               on pingRequests                PingResponse
//! Ack                on SubscriptionResponse.ackInbox          MsgProto (to the sub inbox)
//! ```

use bytes::Bytes;

// ---------------------------------------------------------------------------------------------
// package pb: client-visible messages
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// package spb: server-internal messages
// ---------------------------------------------------------------------------------------------

/// A persisted subscription.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubState {
    /// Assigned by the subscription store.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub client_id: String,
    #[prost(string, tag = "3")]
    pub q_group: String,
    #[prost(string, tag = "4")]
    pub inbox: String,
    #[prost(string, tag = "5")]
    pub ack_inbox: String,
    #[prost(int32, tag = "6")]
    pub max_in_flight: i32,
    #[prost(int32, tag = "7")]
    pub ack_wait_in_secs: i32,
    #[prost(string, tag = "8")]
    pub durable_name: String,
    #[prost(uint64, tag = "9")]
    pub last_sent: u64,
    #[prost(bool, tag = "10")]
    pub is_durable: bool,
    #[prost(bool, tag = "11")]
    pub is_closed: bool,
}

/// A subscription deletion record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubStateDelete {
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

/// A pending-message or ack record of a subscription.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubStateUpdate {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub seqno: u64,
}

/// Pending-message or ack records of a subscription for many sequences at once (the file
/// store's batched records; not part of the NATS Streaming protocol).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubStateSeqs {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, repeated, tag = "2")]
    pub seqs: Vec<u64>,
}

/// What a store remembers about the server: cluster ID and the request subjects.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerInfo {
    #[prost(string, tag = "1")]
    pub cluster_id: String,
    #[prost(string, tag = "2")]
    pub discovery: String,
    #[prost(string, tag = "3")]
    pub publish: String,
    #[prost(string, tag = "4")]
    pub subscribe: String,
    #[prost(string, tag = "5")]
    pub unsubscribe: String,
    #[prost(string, tag = "6")]
    pub close: String,
    #[prost(string, tag = "7")]
    pub sub_close: String,
    #[prost(string, tag = "8")]
    pub acks_subs: String,
    #[prost(string, tag = "9")]
    pub node_id: String,
}

/// A persisted client.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientInfo {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub hb_inbox: String,
    #[prost(bytes = "vec", tag = "3")]
    pub conn_id: Vec<u8>,
    #[prost(int32, tag = "4")]
    pub protocol: i32,
    #[prost(int32, tag = "5")]
    pub ping_interval: i32,
    #[prost(int32, tag = "6")]
    pub ping_max_out: i32,
}

/// A client deletion record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientDelete {
    #[prost(string, tag = "1")]
    pub id: String,
}

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

/// A field of an encoded protobuf message, as [`walk_fields`] sees it.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed 32/64-bit values (not used by these messages; skipped).
    Fixed,
}

/// Calls `f(field number, value)` for each field of an encoded message, without decoding it
/// (no allocation). False if the bytes are not well-formed protobuf.
fn walk_fields<'a>(mut b: &'a [u8], mut f: impl FnMut(u64, Field<'a>)) -> bool {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else {
            return false;
        };
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return false;
        }
        let value = match wire {
            0 => match varint(&mut b) {
                Some(v) => Field::Varint(v),
                None => return false,
            },
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                match b.get(n..) {
                    Some(rest) => b = rest,
                    None => return false,
                }
                Field::Fixed
            }
            2 => {
                let Some(n) = varint(&mut b).and_then(|n| usize::try_from(n).ok()) else {
                    return false;
                };
                if n > b.len() {
                    return false;
                }
                let (v, rest) = b.split_at(n);
                b = rest;
                Field::Bytes(v)
            }
            _ => return false,
        };
        f(field, value);
    }
    true
}

/// The sequence and the `data` length of an encoded [`MsgProto`], read without decoding it
/// (no allocation). `None` if the bytes are not a well-formed protobuf message. Scalars
/// repeated on the wire count as proto3 does (the last one wins).
pub fn peek_msg_proto(b: &[u8]) -> Option<(u64, usize)> {
    let (mut seq, mut data_len) = (0u64, 0usize);
    let ok = walk_fields(b, |field, value| match (field, value) {
        (1, Field::Varint(v)) => seq = v,
        (4, Field::Bytes(d)) => data_len = d.len(),
        _ => {}
    });
    ok.then_some((seq, data_len))
}

/// The channel (`subject`) and sequence of an encoded [`Ack`], read without decoding it (no
/// allocation); `None` if it is not well-formed protobuf or the channel is not UTF-8.
pub fn peek_ack(b: &[u8]) -> Option<(&str, u64)> {
    let (mut subject, mut seq): (&[u8], u64) = (b"", 0);
    let ok = walk_fields(b, |field, value| match (field, value) {
        (1, Field::Bytes(s)) => subject = s,
        (2, Field::Varint(v)) => seq = v,
        _ => {}
    });
    if !ok {
        return None;
    }
    Some((std::str::from_utf8(subject).ok()?, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn peek_ack_reads_what_prost_writes() {
        for (subject, sequence) in [("foo", 1u64), ("", 0), ("ch.a", u64::MAX)] {
            let b = Ack {
                subject: subject.into(),
                sequence,
            }
            .encode_to_vec();
            assert_eq!(peek_ack(&b), Some((subject, sequence)));
        }
        assert_eq!(peek_ack(&[0x0a, 0x05, b'a']), None, "length past the end");
        assert_eq!(peek_ack(&[0x0a, 0x01, 0xff]), None, "not UTF-8");
        assert_eq!(peek_ack(&[0x00]), None, "field 0");
    }

    fn enc<M: Message>(m: &M) -> Vec<u8> {
        m.encode_to_vec()
    }

    // Expected bytes below are derived by hand from the .proto field numbers:
    // key = (field << 3) | wire type, wire types 0 = varint, 2 = length-delimited.

    #[test]
    fn empty_messages_encode_to_nothing() {
        assert!(enc(&PubAck::default()).is_empty());
        assert!(enc(&CloseResponse::default()).is_empty());
        assert!(enc(&SubscriptionResponse::default()).is_empty());
        assert!(enc(&PingResponse::default()).is_empty());
        assert!(enc(&SubscriptionRequest::default()).is_empty());
        assert_eq!(
            PingResponse::decode(&b""[..]).unwrap(),
            PingResponse::default()
        );
    }

    #[test]
    fn pub_msg_bytes() {
        let m = PubMsg {
            client_id: "me".into(),
            guid: "g1".into(),
            subject: "foo".into(),
            reply: String::new(),
            data: Bytes::from_static(b"hi"),
            conn_id: vec![0xAB],
            sha256: vec![],
        };
        let want: &[u8] = &[
            0x0A, 2, b'm', b'e', // 1: clientID
            0x12, 2, b'g', b'1', // 2: guid
            0x1A, 3, b'f', b'o', b'o', // 3: subject
            0x2A, 2, b'h', b'i', // 5: data
            0x32, 1, 0xAB, // 6: connID
        ];
        assert_eq!(enc(&m), want);
        assert_eq!(PubMsg::decode(want).unwrap(), m);
        // sha256 is field 10: key 0x52.
        let m2 = PubMsg {
            sha256: vec![1],
            ..Default::default()
        };
        assert_eq!(enc(&m2), [0x52, 1, 1]);
    }

    #[test]
    fn pub_ack_bytes() {
        let a = PubAck {
            guid: "abc".into(),
            error: "e".into(),
        };
        assert_eq!(enc(&a), [0x0A, 3, b'a', b'b', b'c', 0x12, 1, b'e']);
    }

    #[test]
    fn msg_proto_bytes() {
        let m = MsgProto {
            sequence: 300,
            subject: "ch".into(),
            reply: "r".into(),
            data: Bytes::from_static(b"x"),
            timestamp: 1,
            redelivered: true,
            redelivery_count: 2,
            crc32: 5,
        };
        let want: &[u8] = &[
            0x08, 0xAC, 0x02, // 1: sequence = 300 (varint 0b10_0101100)
            0x12, 2, b'c', b'h', // 2: subject
            0x1A, 1, b'r', // 3: reply
            0x22, 1, b'x', // 4: data
            0x28, 1, // 5: timestamp
            0x30, 1, // 6: redelivered
            0x38, 2, // 7: redeliveryCount
            0x50, 5, // 10: CRC32
        ];
        assert_eq!(enc(&m), want);
        assert_eq!(MsgProto::decode(want).unwrap(), m);
    }

    #[test]
    fn ack_and_ping_bytes() {
        let a = Ack {
            subject: "c".into(),
            sequence: 7,
        };
        assert_eq!(enc(&a), [0x0A, 1, b'c', 0x10, 7]);
        let p = Ping {
            conn_id: vec![1, 2],
        };
        assert_eq!(enc(&p), [0x0A, 2, 1, 2]);
        let r = PingResponse { error: "x".into() };
        assert_eq!(enc(&r), [0x0A, 1, b'x']);
    }

    #[test]
    fn connect_bytes() {
        let c = ConnectRequest {
            client_id: "c".into(),
            heartbeat_inbox: "h".into(),
            protocol: 1,
            conn_id: vec![9],
            ping_interval: 5,
            ping_max_out: 88,
        };
        assert_eq!(
            enc(&c),
            [
                0x0A, 1, b'c', 0x12, 1, b'h', 0x18, 1, 0x22, 1, 9, 0x28, 5, 0x30, 88
            ]
        );
        // A negative int32 is sign-extended to a 10-byte varint.
        let neg = ConnectRequest {
            ping_interval: -1,
            ..Default::default()
        };
        assert_eq!(
            enc(&neg),
            [
                0x28, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01
            ]
        );
        assert_eq!(
            ConnectRequest::decode(&enc(&neg)[..])
                .unwrap()
                .ping_interval,
            -1
        );

        let r = ConnectResponse {
            pub_prefix: "p".into(),
            sub_requests: "s".into(),
            unsub_requests: "u".into(),
            close_requests: "c".into(),
            error: String::new(),
            sub_close_requests: "x".into(),
            ping_requests: "i".into(),
            ping_interval: 5,
            ping_max_out: 3,
            protocol: 1,
            public_key: "k".into(),
        };
        let want: &[u8] = &[
            0x0A, 1, b'p', 0x12, 1, b's', 0x1A, 1, b'u', 0x22, 1, b'c', // 1..4
            0x32, 1, b'x', 0x3A, 1, b'i', // 6, 7
            0x40, 5, 0x48, 3, 0x50, 1, // 8, 9, 10
            0xA2, 0x06, 1, b'k', // 100: key 802 = varint A2 06
        ];
        assert_eq!(enc(&r), want);
        assert_eq!(ConnectResponse::decode(want).unwrap(), r);
        let e = ConnectResponse {
            error: "no".into(),
            ..Default::default()
        };
        assert_eq!(enc(&e), [0x2A, 2, b'n', b'o']);
    }

    #[test]
    fn subscription_bytes() {
        let s = SubscriptionRequest {
            client_id: "c".into(),
            subject: "foo".into(),
            q_group: "q".into(),
            inbox: "i".into(),
            max_in_flight: 1024,
            ack_wait_in_secs: 30,
            durable_name: "d".into(),
            start_position: StartPosition::SequenceStart as i32,
            start_sequence: 22,
            start_time_delta: 1_000_000_000,
        };
        let want: &[u8] = &[
            0x0A, 1, b'c', 0x12, 3, b'f', b'o', b'o', 0x1A, 1, b'q', 0x22, 1, b'i', // 1..4
            0x28, 0x80, 0x08, // 5: 1024
            0x30, 30, // 6
            0x3A, 1, b'd', // 7
            0x50, 3, // 10: startPosition
            0x58, 22, // 11
            0x60, 0x80, 0x94, 0xEB, 0xDC, 0x03, // 12: 1e9
        ];
        assert_eq!(enc(&s), want);
        let d = SubscriptionRequest::decode(want).unwrap();
        assert_eq!(d, s);
        assert_eq!(d.start_position(), StartPosition::SequenceStart);

        let r = SubscriptionResponse {
            ack_inbox: "a".into(),
            error: "e".into(),
        };
        assert_eq!(enc(&r), [0x12, 1, b'a', 0x1A, 1, b'e']);
        let u = UnsubscribeRequest {
            client_id: "c".into(),
            subject: "s".into(),
            inbox: "i".into(),
            durable_name: "d".into(),
        };
        assert_eq!(
            enc(&u),
            [0x0A, 1, b'c', 0x12, 1, b's', 0x1A, 1, b'i', 0x22, 1, b'd']
        );
        assert_eq!(
            enc(&CloseRequest {
                client_id: "c".into()
            }),
            [0x0A, 1, b'c']
        );
        assert_eq!(enc(&CloseResponse { error: "e".into() }), [0x0A, 1, b'e']);
    }

    #[test]
    fn unknown_start_position_is_kept_and_checkable() {
        let bytes = [0x50, 9];
        let d = SubscriptionRequest::decode(&bytes[..]).unwrap();
        assert_eq!(d.start_position, 9);
        assert!(StartPosition::try_from(d.start_position).is_err());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // Ping with an extra field 15 (varint) and field 16 (bytes) after connID.
        let bytes = [0x0A, 1, 7, 0x78, 1, 0x82, 0x01, 2, b'z', b'z'];
        assert_eq!(Ping::decode(&bytes[..]).unwrap(), Ping { conn_id: vec![7] });
    }

    #[test]
    fn spb_bytes() {
        let s = SubState {
            id: 1,
            client_id: "c".into(),
            q_group: "q".into(),
            inbox: "i".into(),
            ack_inbox: "a".into(),
            max_in_flight: 2,
            ack_wait_in_secs: 3,
            durable_name: "d".into(),
            last_sent: 4,
            is_durable: true,
            is_closed: true,
        };
        let want: &[u8] = &[
            0x08, 1, 0x12, 1, b'c', 0x1A, 1, b'q', 0x22, 1, b'i', 0x2A, 1, b'a', 0x30, 2, 0x38, 3,
            0x42, 1, b'd', 0x48, 4, 0x50, 1, 0x58, 1,
        ];
        assert_eq!(enc(&s), want);
        assert_eq!(enc(&SubStateDelete { id: 2 }), [0x08, 2]);
        assert_eq!(enc(&SubStateUpdate { id: 2, seqno: 3 }), [0x08, 2, 0x10, 3]);
        let info = ServerInfo {
            cluster_id: "c".into(),
            node_id: "n".into(),
            acks_subs: "a".into(),
            ..Default::default()
        };
        assert_eq!(enc(&info), [0x0A, 1, b'c', 0x42, 1, b'a', 0x4A, 1, b'n']);
        let ci = ClientInfo {
            id: "i".into(),
            hb_inbox: "h".into(),
            conn_id: vec![1],
            protocol: 1,
            ping_interval: 5,
            ping_max_out: 6,
        };
        assert_eq!(
            enc(&ci),
            [
                0x0A, 1, b'i', 0x12, 1, b'h', 0x1A, 1, 1, 0x20, 1, 0x28, 5, 0x30, 6
            ]
        );
        assert_eq!(enc(&ClientDelete { id: "i".into() }), [0x0A, 1, b'i']);
        let ctrl = CtrlMsg {
            msg_type: ctrl_msg::Type::FtHeartbeat as i32,
            server_id: "s".into(),
            data: vec![1],
            ref_id: String::new(),
        };
        assert_eq!(enc(&ctrl), [0x08, 3, 0x12, 1, b's', 0x1A, 1, 1]);
        // Repeated uint64 are packed: field 3 as one length-delimited run.
        let sa = SubSentAndAck {
            channel: String::new(),
            ack_inbox: String::new(),
            sent: vec![1, 300],
            ack: vec![2],
        };
        assert_eq!(enc(&sa), [0x1A, 3, 1, 0xAC, 0x02, 0x22, 1, 2]);
        let op = RaftOperation {
            op_type: raft_operation::Type::Connect as i32,
            client_disconnect: Some(CloseRequest {
                client_id: "c".into(),
            }),
            channel_id: 1,
            ..Default::default()
        };
        assert_eq!(enc(&op), [0x08, 6, 0x42, 3, 0x0A, 1, b'c', 0x50, 1]);
        let snap = ChannelSnapshot {
            channel: "c".into(),
            first: 1,
            last: 2,
            ..Default::default()
        };
        assert_eq!(enc(&snap), [0x0A, 1, b'c', 0x10, 1, 0x18, 2]);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn decode_all(b: &[u8]) {
            let _ = PubMsg::decode(b);
            let _ = PubAck::decode(b);
            let _ = MsgProto::decode(b);
            let _ = Ack::decode(b);
            let _ = ConnectRequest::decode(b);
            let _ = ConnectResponse::decode(b);
            let _ = Ping::decode(b);
            let _ = PingResponse::decode(b);
            let _ = SubscriptionRequest::decode(b);
            let _ = SubscriptionResponse::decode(b);
            let _ = UnsubscribeRequest::decode(b);
            let _ = CloseRequest::decode(b);
            let _ = CloseResponse::decode(b);
            let _ = SubState::decode(b);
            let _ = SubStateDelete::decode(b);
            let _ = SubStateUpdate::decode(b);
            let _ = ServerInfo::decode(b);
            let _ = ClientInfo::decode(b);
            let _ = ClientDelete::decode(b);
            let _ = CtrlMsg::decode(b);
            let _ = RaftJoinRequest::decode(b);
            let _ = RaftJoinResponse::decode(b);
            let _ = RaftOperation::decode(b);
            let _ = Batch::decode(b);
            let _ = AddSubscription::decode(b);
            let _ = SubSentAndAck::decode(b);
            let _ = AddClient::decode(b);
            let _ = RaftSnapshot::decode(b);
            let _ = ChannelSnapshot::decode(b);
            let _ = SubscriptionSnapshot::decode(b);
        }

        proptest! {
            #[test]
            fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..256)) {
                decode_all(&b);
            }

            #[test]
            fn msg_proto_roundtrip(
                sequence in any::<u64>(),
                subject in ".{0,20}",
                reply in ".{0,8}",
                data in proptest::collection::vec(any::<u8>(), 0..64),
                timestamp in any::<i64>(),
                redelivered in any::<bool>(),
                redelivery_count in any::<u32>(),
            ) {
                let m = MsgProto {
                    sequence, subject, reply, data: Bytes::from(data), timestamp,
                    redelivered, redelivery_count, crc32: 0,
                };
                let b = m.encode_to_vec();
                prop_assert_eq!(b.len(), m.encoded_len());
                prop_assert_eq!(peek_msg_proto(&b), Some((m.sequence, m.data.len())));
                prop_assert_eq!(MsgProto::decode(&b[..]).unwrap(), m);
            }

            #[test]
            fn peek_never_panics(b in proptest::collection::vec(any::<u8>(), 0..256)) {
                if let (Some((seq, len)), Ok(m)) = (peek_msg_proto(&b), MsgProto::decode(&b[..])) {
                    prop_assert_eq!((seq, len), (m.sequence, m.data.len()));
                }
            }

            #[test]
            fn sub_request_roundtrip(
                client_id in "[a-z]{0,8}",
                max_in_flight in any::<i32>(),
                ack_wait in any::<i32>(),
                start_position in 0i32..5,
                start_sequence in any::<u64>(),
                start_time_delta in any::<i64>(),
            ) {
                let m = SubscriptionRequest {
                    client_id, subject: "s".into(), q_group: String::new(), inbox: "i".into(),
                    max_in_flight, ack_wait_in_secs: ack_wait, durable_name: String::new(),
                    start_position, start_sequence, start_time_delta,
                };
                prop_assert_eq!(SubscriptionRequest::decode(&m.encode_to_vec()[..]).unwrap(), m);
            }
        }
    }
}
