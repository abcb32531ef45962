//! An async (tokio) NATS client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//!
//! let client = rnats_client::connect("nats://127.0.0.1:4222").await?;
//! let mut sub = client.subscribe("greet.*").await?;
//! client.publish("greet.joe", "hello").await?;
//! let msg = sub.next().await.expect("a message");
//! assert_eq!(&msg.payload[..], b"hello");
//!
//! // Request/reply through one shared inbox; no subscriber → RequestErrorKind::NoResponders.
//! let reply = client.request("service", "ping").await;
//! # Ok(()) }
//! ```
//!
//! * [`ConnectOptions`]: server pool, credentials (user/password, token, nkey seed, `.creds`
//!   file), TLS (`tls://`, CA file, client certificate for mutual TLS, require TLS), timeouts,
//!   keepalive, reconnect backoff, reconnect buffer, events.
//! * [`Client`]: publish (with reply, with headers), subscribe / queue_subscribe → a
//!   [`Subscriber`] stream, request (shared inbox mux), flush (a PING/PONG round trip), drain,
//!   close.
//! * Resilience: keepalive PINGs, reconnect through the pool with backoff and jitter,
//!   publishes buffered while disconnected (bounded; a full buffer is an error), subscriptions
//!   replayed after reconnect, pool extended from INFO `connect_urls`, [`Event`]s.
//! * Errors are [`Error<Kind>`](Error) with a `kind()` per operation.
//!
//! Everything a NATS Streaming client needs from core NATS is here: raw-byte publish with a
//! reply inbox, request/reply with a timeout, and subscriptions on inboxes
//! ([`Client::new_inbox`]). How it works inside: see the `client` module docs.

mod auth;
mod client;
mod connection;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod header;
mod options;
mod pool;
pub mod proto;
mod subject;
mod subscriber;
mod tls;

pub use client::{Client, Message, Request, State, Statistics};
pub use connection::{RawConnection, ServerInfo, Transport};
pub use error::{
    ConnectError, ConnectErrorKind, DrainError, DrainErrorKind, Error, FlushError, FlushErrorKind,
    PublishError, PublishErrorKind, RequestError, RequestErrorKind, SubscribeError,
    SubscribeErrorKind, UnsubscribeError, UnsubscribeErrorKind,
};
pub use header::{HeaderMap, InvalidHeader, NO_RESPONDERS, ParsedHeaders, parse_headers};
pub use options::{ConnectOptions, Event, ServerAddr, ToServerAddrs};
pub use subject::{is_valid_publish_subject, is_valid_queue, is_valid_subject};
pub use subscriber::Subscriber;

/// Connects with default options.
pub async fn connect(servers: impl ToServerAddrs) -> Result<Client, ConnectError> {
    ConnectOptions::new().connect(servers).await
}
