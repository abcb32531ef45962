//! Thin helpers over `rnats-client`: connecting with the tool's options and bounded reads
//! from a [`Subscriber`].

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use futures_core::Stream;
use rnats_client::{Client, ConnectOptions, Message, Subscriber};

/// Messages a subscription may buffer in the client before it counts as a slow consumer.
/// Far above any window or MaxInFlight the tool uses.
const SUB_CAPACITY: usize = 1 << 20;

/// Connects to `server` (`host:port` or a URL). `reconnect: false` makes the client give up
/// as soon as the connection breaks (the crash harness kills the server on purpose).
pub async fn connect(server: &str, name: &str, reconnect: bool) -> anyhow::Result<Client> {
    let mut opts = ConnectOptions::new()
        .name(name)
        .subscription_capacity(SUB_CAPACITY)
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(5));
    if !reconnect {
        opts = opts.max_reconnects(Some(0));
    }
    opts.connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))
}

/// What a bounded wait on a subscription gave.
pub enum Next {
    Msg(Message),
    /// The stream ended (unsubscribed, connection closed).
    Closed,
    TimedOut,
}

/// The next message, waiting at most `wait`.
pub async fn next(sub: &mut Subscriber, wait: Duration) -> Next {
    match tokio::time::timeout(wait, poll_fn(|cx| Pin::new(&mut *sub).poll_next(cx))).await {
        Ok(Some(m)) => Next::Msg(m),
        Ok(None) => Next::Closed,
        Err(_) => Next::TimedOut,
    }
}

/// A message already buffered, without waiting (nor using the task's cooperative budget,
/// which would make a batch end early at the budget): `Some(None)` when the stream has ended.
pub fn try_next(sub: &mut Subscriber) -> Option<Option<Message>> {
    sub.try_next()
}
