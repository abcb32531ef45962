//! Package `spb`, store records: subscriptions, clients, server info.

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
