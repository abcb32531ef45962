//! An in-process [`Transport`] for tests: nodes registered by name, links that can be cut,
//! one way or both, or slowed down.
//!
//! ```text
//! MemNet (shared) ── nodes: name → RpcHandler
//!                 ├─ cut:   (from, to) pairs that lose every message
//!                 └─ delay: (from, to) → extra latency
//! MemTransport{me} ── call(target) = check me→target, delay, handle, check target→me
//! ```
//!
//! Every request and reply goes through the real encoding, so the codec is exercised too. A
//! lost request or reply shows as a timeout after the caller's full deadline, like a real
//! partition; a node that is not registered (stopped) is `Unreachable` at once, like NATS's
//! "no responders".

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{Lane, RpcHandler, Transport, TransportError};
use crate::types::NodeInfo;

#[derive(Default)]
struct State {
    nodes: HashMap<String, RpcHandler>,
    cut: HashSet<(String, String)>,
    delay: HashMap<(String, String), Duration>,
}

/// The shared in-memory network.
#[derive(Clone, Default)]
pub struct MemNet {
    state: Arc<Mutex<State>>,
}

impl MemNet {
    pub fn new() -> MemNet {
        MemNet::default()
    }

    /// The transport node `me` sends through.
    pub fn transport(&self, me: &str) -> MemTransport {
        MemTransport {
            net: self.clone(),
            me: me.to_string(),
        }
    }

    /// Makes `name` reachable, served by `handler`.
    pub fn register(&self, name: &str, handler: RpcHandler) {
        self.state.lock().nodes.insert(name.to_string(), handler);
    }

    /// Makes `name` unreachable (a stopped node).
    pub fn unregister(&self, name: &str) {
        self.state.lock().nodes.remove(name);
    }

    /// Loses every message from `from` to `to`.
    pub fn cut(&self, from: &str, to: &str) {
        self.state
            .lock()
            .cut
            .insert((from.to_string(), to.to_string()));
    }

    /// Cuts both directions between `name` and each of `others`.
    pub fn isolate(&self, name: &str, others: &[&str]) {
        for o in others {
            self.cut(name, o);
            self.cut(o, name);
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.state.lock().cut.clear();
    }

    /// Adds `d` of latency to each message from `from` to `to`.
    pub fn set_delay(&self, from: &str, to: &str, d: Duration) {
        self.state
            .lock()
            .delay
            .insert((from.to_string(), to.to_string()), d);
    }

    fn link(&self, from: &str, to: &str) -> (bool, Duration) {
        let st = self.state.lock();
        let key = (from.to_string(), to.to_string());
        (
            !st.cut.contains(&key),
            st.delay.get(&key).copied().unwrap_or_default(),
        )
    }
}

/// One node's end of a [`MemNet`].
#[derive(Clone)]
pub struct MemTransport {
    net: MemNet,
    me: String,
}

impl Transport for MemTransport {
    async fn call(
        &self,
        target: &NodeInfo,
        _lane: Lane,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let to = target.name.as_str();
        let timed_out = || TransportError::Timeout {
            node: to.to_string(),
            timeout,
        };
        let handler = self.net.state.lock().nodes.get(to).cloned();
        let Some(handler) = handler else {
            return Err(TransportError::Unreachable {
                node: to.to_string(),
                why: "not running".into(),
            });
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let (up, delay_there) = self.net.link(&self.me, to);
        if !up {
            tokio::time::sleep_until(deadline).await;
            return Err(timed_out());
        }
        let (down, delay_back) = self.net.link(to, &self.me);
        let exchange = async {
            tokio::time::sleep(delay_there).await;
            let reply = handler.handle(&request).await;
            tokio::time::sleep(delay_back).await;
            reply
        };
        let reply = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| timed_out())?;
        // The link may have been cut while the request was in flight.
        if !down || !self.net.link(to, &self.me).0 {
            tokio::time::sleep_until(deadline).await;
            return Err(timed_out());
        }
        Ok(reply)
    }
}
