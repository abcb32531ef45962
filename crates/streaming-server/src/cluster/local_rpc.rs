//! RAFT RPCs over local connections to the embedded NATS server.
//!
//! With the NATS transport, an append went leader → (client socket) → its server → route →
//! the follower's server → (client socket) → the follower, and its reply the same way back:
//! four socket hops of the six were a node talking to its own server, each a copy and a
//! protocol parse of up to a megabyte. A [`LocalConn`] has no socket, no parser and no
//! writer task: a 3-node 1 KiB windowed publish run went from ~124 to ~140 k/s with ~10 %
//! less CPU on the leader (docs/BENCHMARKS.md, session 7). The subjects, the routes between
//! the servers and what other servers see are the NATS transport's (`rpc_subject`), so
//! nodes on the two transports interoperate.
//!
//! ```text
//! per lane (control, data): one LocalConn
//!   subscribes  _INBOX.<random>.*          replies to this node's calls, by token
//!               _STAN.raft.<cid>.rpc.<node>.<lane>   (once serving) requests for this node
//!   reader task: a reply completes its call; a request is handled on a task of its own
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rnats_server::{LocalConn, LocalError, LocalInbox};
use rnats_streaming_raft::{Lane, NodeInfo, RpcHandler, Transport, TransportError, rpc_subject};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::debug;

/// One lane's connection and the calls waiting on it.
struct LaneConn {
    conn: Arc<LocalConn>,
    /// `_INBOX.<random>.`: a call's reply subject is this and its token.
    prefix: String,
    replies_sid: u64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    next: AtomicU64,
    /// The requests' subscription and their handler, once this node serves.
    serving: OnceLock<(u64, RpcHandler)>,
}

impl LaneConn {
    fn open(conn: LocalConn) -> Result<LaneConn, LocalError> {
        let prefix = format!("_INBOX.{}.", nuid::next());
        let replies_sid = conn.subscribe(&format!("{prefix}*"), None)?;
        Ok(LaneConn {
            conn: Arc::new(conn),
            prefix,
            replies_sid,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            serving: OnceLock::new(),
        })
    }

    /// Reads the lane until its connection closes.
    async fn read(self: Arc<LaneConn>) {
        let mut inbox = LocalInbox::default();
        while self.conn.recv(&mut inbox).await.is_ok() {
            for m in inbox.drain() {
                if m.sid == self.replies_sid {
                    let token = m
                        .subject
                        .strip_prefix(self.prefix.as_bytes())
                        .and_then(|t| std::str::from_utf8(t).ok())
                        .and_then(|t| t.parse::<u64>().ok());
                    // A reply to a call that gave up (timed out) finds nobody: dropped.
                    if let Some(tx) = token.and_then(|t| self.pending.lock().remove(&t)) {
                        let _ = tx.send(m.payload);
                    }
                    continue;
                }
                let Some((sid, handler)) = self.serving.get() else {
                    continue;
                };
                let reply = m.reply.as_ref().and_then(|r| std::str::from_utf8(r).ok());
                let (true, Some(reply)) = (m.sid == *sid, reply) else {
                    debug!("RAFT transport: request without reply subject ignored");
                    continue;
                };
                // Its own task: a slow append must not hold up the votes and heartbeats
                // behind it, nor the replies this reader completes.
                let (reply, handler, conn) =
                    (reply.to_string(), handler.clone(), self.conn.clone());
                tokio::spawn(async move {
                    let answer = handler.handle(&m.payload).await;
                    if let Err(e) = conn.publish(&reply, None, &answer).await {
                        debug!("RAFT transport: reply failed: {e}");
                    }
                });
            }
        }
    }
}

/// Removes a call's entry when the call ends, however it ends (openraft drops calls it
/// stops waiting for).
struct PendingGuard<'a> {
    lane: &'a LaneConn,
    token: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.lane.pending.lock().remove(&self.token);
    }
}

/// RAFT calls and serving over two local connections (see the module documentation).
pub(crate) struct LocalTransport {
    control: Arc<LaneConn>,
    data: Arc<LaneConn>,
    cluster_id: String,
    readers: Vec<JoinHandle<()>>,
}

impl LocalTransport {
    /// Opens the lanes with `open` (one local connection each) and starts their readers.
    pub(crate) fn new(
        cluster_id: &str,
        mut open: impl FnMut(&str) -> Result<LocalConn, LocalError>,
    ) -> Result<LocalTransport, LocalError> {
        let control = Arc::new(LaneConn::open(open("raft")?)?);
        let data = Arc::new(LaneConn::open(open("raft_data")?)?);
        let readers = vec![
            tokio::spawn(control.clone().read()),
            tokio::spawn(data.clone().read()),
        ];
        Ok(LocalTransport {
            control,
            data,
            cluster_id: cluster_id.to_string(),
            readers,
        })
    }

    fn lane(&self, lane: Lane) -> &LaneConn {
        match lane {
            Lane::Control => &self.control,
            Lane::Data => &self.data,
        }
    }

    /// Starts answering the RPCs addressed to `node` with `handler`.
    pub(crate) fn serve(&self, node: &str, handler: RpcHandler) -> Result<(), LocalError> {
        for lane in [Lane::Control, Lane::Data] {
            let l = self.lane(lane);
            let sid = l
                .conn
                .subscribe(&rpc_subject(&self.cluster_id, node, lane), None)?;
            let _ = l.serving.set((sid, handler.clone()));
        }
        Ok(())
    }

    /// Closes both connections (their subscriptions go) and stops the readers.
    pub(crate) fn close(&self) {
        for l in [&self.control, &self.data] {
            l.conn.close();
        }
        for r in &self.readers {
            r.abort();
        }
    }
}

impl Drop for LocalTransport {
    fn drop(&mut self) {
        self.close();
    }
}

impl Transport for LocalTransport {
    async fn call(
        &self,
        target: &NodeInfo,
        lane: Lane,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let l = self.lane(lane);
        let node = || target.name.clone();
        let token = l.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        l.pending.lock().insert(token, tx);
        let _guard = PendingGuard { lane: l, token };
        let subject = rpc_subject(&self.cluster_id, &target.name, lane);
        let reply = format!("{}{token}", l.prefix);
        match l.conn.publish(&subject, Some(&reply), &request).await {
            Ok(0) => {
                return Err(TransportError::Unreachable {
                    node: node(),
                    why: "no responders".into(),
                });
            }
            Ok(_) => {}
            Err(e) => {
                return Err(TransportError::Network {
                    node: node(),
                    why: e.to_string(),
                });
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(TransportError::Network {
                node: node(),
                why: "the transport closed".into(),
            }),
            Err(_) => Err(TransportError::Timeout {
                node: node(),
                timeout,
            }),
        }
    }

    fn max_request(&self, lane: Lane) -> usize {
        self.lane(lane).conn.max_payload()
    }
}
