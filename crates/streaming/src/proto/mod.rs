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

mod client;
mod cluster;
mod peek;
mod records;
mod repl;
#[cfg(test)]
mod tests;

pub use client::*;
pub use cluster::*;
pub use peek::{peek_ack, peek_msg_proto};
pub use records::*;
pub use repl::*;
