//! A NATS Streaming (STAN) client on top of [`rnats_client`], speaking the protobuf protocol of
//! [`rnats_streaming::proto`] to `rnats-streaming-server` or `nats-streaming-server`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rnats_streaming_client::Error> {
//! use rnats_streaming_client::{Options, StanClient, SubscriptionOptions};
//!
//! let sc = StanClient::connect(
//!     "test-cluster",
//!     "me",
//!     Options::new().nats_url("nats://127.0.0.1:4222"),
//! )
//! .await?;
//! let guid = sc.publish("orders", "first").await?; // stored once this returns
//! let mut sub = sc
//!     .subscribe(
//!         "orders",
//!         SubscriptionOptions::new().deliver_all_available().durable_name("audit"),
//!     )
//!     .await?;
//! let msg = sub.next().await.expect("a message");
//! assert_eq!((msg.sequence, &msg.data[..]), (1, &b"first"[..]));
//! sub.close().await?; // the durable "audit" keeps its position
//! sc.close().await?;
//! # let _ = guid; Ok(()) }
//! ```
//!
//! * [`StanClient`]: connect (over an existing [`rnats_client::Client`] or a URL), publish
//!   (waiting for the `PubAck`) and `publish_async` (ack handler, bounded outstanding acks,
//!   ack timeout), subscribe / queue_subscribe, close. Server heartbeats are answered; client
//!   PINGs detect a lost connection ([`Options::connection_lost_handler`]).
//! * [`SubscriptionOptions`]: every [`StartPosition`], durable name, queue group, manual acks,
//!   ack wait, max in flight. A [`Subscription`] is a `Stream` of [`Msg`];
//!   [`Subscription::unsubscribe`] removes a durable, [`Subscription::close`] keeps it.
//! * The protocol bookkeeping is in I/O-free state machines, unit-tested on their own:
//!   [`pub_ack::PubAckTracker`] (outstanding publish acks) and [`ping::PingState`].

mod client;
mod error;
mod options;
pub mod ping;
pub mod pub_ack;
mod subscription;

pub use client::{AckHandler, ConnState, StanClient};
pub use error::Error;
pub use options::{
    ConnectionLostHandler, DEFAULT_ACK_PREFIX, DEFAULT_ACK_WAIT, DEFAULT_CONNECT_WAIT,
    DEFAULT_DISCOVER_PREFIX, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PUB_ACKS_INFLIGHT,
    DEFAULT_NATS_URL, DEFAULT_PING_INTERVAL, DEFAULT_PING_MAX_OUT, DEFAULT_PUB_ACK_WAIT, Options,
    StartPosition, SubscriptionOptions,
};
pub use subscription::{Msg, Subscription};
