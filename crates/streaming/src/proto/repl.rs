//! The entries of rnats' replicated log (clustered mode): every change a leader makes to its
//! store, in order, as one entry per engine commit. This is rnats' own format (a cluster runs
//! one implementation); the snapshot reuses the reference's `RaftSnapshot` records.
//!
//! ```text
//! ReplEntry { repeated ReplOp ops = 1 }
//! ReplOp    { oneof: msgs = 1 (ChannelMsgs)      messages with their sequence and timestamp
//!                    sub_put = 2 (ChannelSub)     create or update a subscription (its ID set)
//!                    sub_delete = 3 (ChannelSeqs) the subscription `id` (seqs unused)
//!                    pending = 4 (ChannelSeqs)    sent to subscription `id`
//!                    acked = 5 (ChannelSeqs)      acknowledged by subscription `id`
//!                    client_put = 6 (ClientInfo)
//!                    client_delete = 7 (string)
//!                    channel_delete = 8 (string) }
//! ```

use super::client::MsgProto;
use super::records::{ClientInfo, SubState};

/// One replicated entry: the store changes of one engine commit, in order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReplEntry {
    #[prost(message, repeated, tag = "1")]
    pub ops: Vec<ReplOp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReplOp {
    #[prost(oneof = "repl_op::Op", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub op: Option<repl_op::Op>,
}

pub mod repl_op {
    /// What one [`ReplOp`](super::ReplOp) does.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Op {
        #[prost(message, tag = "1")]
        Msgs(super::ChannelMsgs),
        #[prost(message, tag = "2")]
        SubPut(super::ChannelSub),
        #[prost(message, tag = "3")]
        SubDelete(super::ChannelSeqs),
        #[prost(message, tag = "4")]
        Pending(super::ChannelSeqs),
        #[prost(message, tag = "5")]
        Acked(super::ChannelSeqs),
        #[prost(message, tag = "6")]
        ClientPut(super::ClientInfo),
        #[prost(string, tag = "7")]
        ClientDelete(String),
        #[prost(string, tag = "8")]
        ChannelDelete(String),
    }
}

/// Messages of one channel, with the sequences and timestamps the leader gave them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelMsgs {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(message, repeated, tag = "2")]
    pub msgs: Vec<MsgProto>,
}

/// A subscription's state (with its ID) in a channel.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelSub {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(message, optional, tag = "2")]
    pub state: Option<SubState>,
}

/// Sequences of a subscription of a channel.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelSeqs {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(uint64, tag = "2")]
    pub id: u64,
    #[prost(uint64, repeated, tag = "3")]
    pub seqs: Vec<u64>,
}
