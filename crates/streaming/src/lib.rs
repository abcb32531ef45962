//! NATS Streaming (STAN) for rnats: the protobuf messages of the protocol and the stores.
//!
//! * [`proto`]: every NATS Streaming protobuf message (client-visible `pb` and server-internal
//!   `spb`), with field numbers as the official clients use them.
//! * [`store`]: the store interface ([`store::Store`], [`store::MsgStore`],
//!   [`store::SubStore`]), the [`store::memory`] store, the crash-safe [`store::file`]
//!   store, and [`store::crypto`], encryption at rest over any of them.
//! * [`seqmap`]: [`seqmap::SeqMap`], the map of messages in flight (pending sequences).
//! * [`migrate`]: reads a nats-streaming-server file store and migrates it into ours.
//!
//! The server loop (request handling, delivery, redelivery, heartbeats) builds on these.

#[doc(hidden)]
pub mod fuzzing;
pub mod migrate;
pub mod proto;
pub mod seqmap;
pub mod store;
