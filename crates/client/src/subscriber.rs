//! [`Subscriber`]: the messages of one subscription, as an async `Stream`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;

use crate::client::{Client, Message};
use crate::error::{DrainError, UnsubscribeError};

/// The messages of one subscription. The stream ends after `unsubscribe`, after the
/// `unsubscribe_after` count is reached, after a drain, or when the connection closes.
/// Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscriber {
    sid: u64,
    rx: mpsc::Receiver<Message>,
    client: Client,
}

impl Subscriber {
    pub(crate) fn new(sid: u64, rx: mpsc::Receiver<Message>, client: Client) -> Subscriber {
        Subscriber { sid, rx, client }
    }

    /// The subscription id on this connection.
    pub fn sid(&self) -> u64 {
        self.sid
    }

    /// Stops the subscription now. Messages already buffered can still be read; then the
    /// stream ends.
    pub async fn unsubscribe(&mut self) -> Result<(), UnsubscribeError> {
        let r = self.client.shared().unsubscribe(self.sid, None);
        self.rx.close();
        r
    }

    /// Ends the subscription after `n` messages in total (counting those already received);
    /// the server stops sending after the `n`th, and so survives a reconnect.
    pub async fn unsubscribe_after(&mut self, n: u64) -> Result<(), UnsubscribeError> {
        self.client.shared().unsubscribe(self.sid, Some(n))
    }

    /// The next message if one is buffered, without waiting (and without using the task's
    /// cooperative budget): `Some(Some(m))` a message, `Some(None)` the stream ended, `None`
    /// nothing buffered now.
    pub fn try_next(&mut self) -> Option<Option<Message>> {
        match self.rx.try_recv() {
            Ok(m) => Some(Some(m)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
        }
    }

    /// Unsubscribes and waits until the server confirmed; the messages it sent before stay
    /// readable, then the stream ends.
    pub async fn drain(&mut self) -> Result<(), DrainError> {
        self.client.shared().drain_sub(self.sid).await
    }
}

impl Stream for Subscriber {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.shared().unsubscribe(self.sid, None);
    }
}
