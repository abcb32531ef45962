//! Messages a node lacks after installing a leader's snapshot, read from the leader's store
//! over NATS: a `FetchRequest {channel, from, to}` to `_STAN.raft.<cid>.fetch`, answered with
//! a `ChannelMsgs` of the messages held from `from` on (at most [`FETCH_BYTES`]; empty when
//! none is held). Only the leader serves that subject (on its RAFT data connection), so the
//! asking node need not know the leader's name: a node added to a running cluster gets the
//! snapshot before any entry that names its members, and could not name the leader then.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use prost::Message as _;
use rnats_client::{Client, Request};
use rnats_streaming::proto::{ChannelMsgs, MsgProto};
use rnats_streaming::store::{Store, StoreError};
use tracing::{debug, warn};

/// Bytes of messages in one answer (well below NATS' 1 MiB default maximum payload).
const FETCH_BYTES: usize = 512 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, PartialEq, prost::Message)]
struct FetchRequest {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(uint64, tag = "2")]
    from: u64,
    #[prost(uint64, tag = "3")]
    to: u64,
}

fn subject(cluster_id: &str) -> String {
    format!("_STAN.raft.{cluster_id}.fetch")
}

/// The requesting side, used by the state machine while it restores a snapshot.
pub(crate) struct Fetcher {
    client: Client,
    cluster_id: String,
}

fn fetch_error(msg: String) -> StoreError {
    StoreError::Io {
        path: "<fetch from the leader>".into(),
        source: std::io::Error::other(msg),
    }
}

impl Fetcher {
    pub(crate) fn new(client: Client, cluster_id: &str) -> Fetcher {
        Fetcher {
            client,
            cluster_id: cluster_id.to_string(),
        }
    }

    /// Messages `from..=to` of `channel` (or what the leader still holds of them). Blocking:
    /// called from the state machine, which runs inside `block_in_place`.
    pub(crate) fn fetch(
        &self,
        channel: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<MsgProto>, StoreError> {
        let req = FetchRequest {
            channel: channel.to_string(),
            from,
            to,
        };
        let subject = subject(&self.cluster_id);
        let request = Request::new()
            .payload(Bytes::from(req.encode_to_vec()))
            .timeout(FETCH_TIMEOUT);
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| fetch_error(format!("no runtime to fetch messages: {e}")))?;
        let reply = handle
            .block_on(self.client.send_request(subject.clone(), request))
            .map_err(|e| {
                fetch_error(format!(
                    "fetching {channel:?} from {from} on {subject}: {e}"
                ))
            })?;
        let msgs = ChannelMsgs::decode(reply.payload)
            .map_err(|e| fetch_error(format!("undecodable fetch answer: {e}")))?;
        Ok(msgs.msgs.into_iter().filter(|m| m.sequence <= to).collect())
    }
}

/// Answers fetch requests from `store` until the subscription ends (the leadership watcher
/// runs it while this node leads).
pub(crate) async fn serve(client: Client, cluster_id: String, store: Arc<dyn Store>) {
    let subject = subject(&cluster_id);
    let mut sub = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            warn!("STREAM: Unable to serve message fetches on {subject}: {e}");
            return;
        }
    };
    while let Some(m) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut sub).poll_next(cx)).await
    {
        let Some(reply) = m.reply else { continue };
        let Ok(req) = FetchRequest::decode(m.payload) else {
            debug!("STREAM: Ignoring an undecodable fetch request");
            continue;
        };
        let store = store.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let msgs = match store.lookup_channel(&req.channel) {
                Some(ch) => ch
                    .msgs()
                    .read_batch(req.from, 4096, FETCH_BYTES)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|m| m.sequence <= req.to)
                    .collect(),
                None => Vec::new(),
            };
            ChannelMsgs {
                channel: req.channel,
                msgs,
            }
            .encode_to_vec()
        })
        .await;
        if let Ok(a) = answer
            && let Err(e) = client.publish(reply, a).await
        {
            debug!("STREAM: Unable to answer a fetch request: {e}");
        }
    }
}
