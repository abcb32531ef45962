//! Adding and removing cluster nodes (`--cluster_allow_add_remove_node`): while a node leads,
//! it answers `_STAN.raft.<cid>.node.add` and `.node.remove`, whose payload is a node ID,
//! with `+OK` or `-ERR <what failed>`, as the reference does.

use std::sync::Arc;

use futures_core::Stream;
use rnats_client::{Client, Message, Subscriber};
use rnats_streaming_raft::Replicator;
use tracing::{error, info};

async fn next(sub: &mut Subscriber) -> Option<Message> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *sub).poll_next(cx)).await
}

/// Serves membership requests until the task is aborted (leadership lost) or the
/// subscriptions end.
pub(crate) async fn serve(client: Client, cluster_id: String, replicator: Arc<Replicator>) {
    let subscribe = |what: &str| client.subscribe(format!("_STAN.raft.{cluster_id}.node.{what}"));
    let (mut add, mut remove) = match (subscribe("add").await, subscribe("remove").await) {
        (Ok(a), Ok(r)) => (a, r),
        (Err(e), _) | (_, Err(e)) => {
            error!("STREAM: Unable to serve node add/remove requests: {e}");
            return;
        }
    };
    loop {
        let (m, adding) = tokio::select! {
            m = next(&mut add) => (m, true),
            m = next(&mut remove) => (m, false),
        };
        let Some(m) = m else { return };
        let node = String::from_utf8_lossy(&m.payload).trim().to_string();
        let (verb, r) = if node.is_empty() {
            let verb = if adding { "adding" } else { "removing" };
            (verb, Err("invalid node ID".to_string()))
        } else if adding {
            (
                "adding",
                replicator.add_node(&node).await.map_err(|e| e.to_string()),
            )
        } else {
            (
                "removing",
                replicator
                    .remove_node(&node)
                    .await
                    .map_err(|e| e.to_string()),
            )
        };
        let answer = match r {
            Ok(()) => {
                info!(
                    "STREAM: {} node {node:?}",
                    if adding { "Added" } else { "Removed" }
                );
                "+OK".to_string()
            }
            Err(e) => {
                error!("STREAM: Error {verb} node {node:?}: {e}");
                format!("-ERR {verb} node {node:?}: {e}")
            }
        };
        if let Some(reply) = m.reply {
            let _ = client.publish(reply, answer.into_bytes()).await;
        }
    }
}
