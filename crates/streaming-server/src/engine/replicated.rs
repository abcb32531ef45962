//! The commit of a clustered leader: what the handlers changed this round (messages with
//! their sequences, subscriptions, pending and acked sequences, clients, channel deletions)
//! goes to RAFT as entries, and the replies, deliveries and PubAcks of the round go out only
//! once the entries are committed by a quorum and applied to this node's store. A proposal
//! that fails (leadership lost) answers its publishes with an error PubAck and drops the
//! round's other replies: nothing is reported done that may not have happened.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use rnats_streaming::proto::{PubAck, ReplEntry, ReplOp};
use rnats_streaming::store::crypto::LogSealer;
use rnats_streaming_raft::Replicator;
use tracing::{error, warn};

use super::{Engine, mark};

/// Entries are cut at this size, well below NATS' default maximum payload (1 MiB): a RAFT
/// append carries the entry whole.
const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// A clustered leader's link to RAFT.
pub(crate) struct Repl {
    pub(crate) replicator: Arc<Replicator>,
    /// Seals entries when the store is encrypted (what goes into the RAFT log is too).
    pub(crate) sealer: Option<Arc<LogSealer>>,
    /// Entries sealed in this session: the sealer's nonce counter.
    sealed: u64,
}

impl Repl {
    pub(crate) fn new(replicator: Arc<Replicator>, sealer: Option<Arc<LogSealer>>) -> Repl {
        Repl {
            replicator,
            sealer,
            sealed: 0,
        }
    }
}

/// `entry` split into entries of at most about `MAX_ENTRY_BYTES` (an op is never split).
fn split(entry: ReplEntry) -> Vec<ReplEntry> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for op in entry.ops {
        let len = op.encoded_len() + 4;
        if size + len > MAX_ENTRY_BYTES && !cur.is_empty() {
            out.push(ReplEntry {
                ops: std::mem::take(&mut cur),
            });
            size = 0;
        }
        size += len;
        cur.push(op);
    }
    if !cur.is_empty() {
        out.push(ReplEntry { ops: cur });
    }
    out
}

/// Splits oversized message batches into ops of at most `MAX_ENTRY_BYTES / 2` each, so that
/// [`split`] can respect its bound.
fn cut_batches(entry: &mut ReplEntry) {
    use rnats_streaming::proto::ChannelMsgs;
    use rnats_streaming::proto::repl_op::Op;
    let mut ops = Vec::with_capacity(entry.ops.len());
    for op in std::mem::take(&mut entry.ops) {
        match op.op {
            Some(Op::Msgs(b)) if b.encoded_len() > MAX_ENTRY_BYTES / 2 => {
                let mut cur = ChannelMsgs {
                    channel: b.channel.clone(),
                    msgs: Vec::new(),
                };
                let mut size = 0;
                for m in b.msgs {
                    let len = m.encoded_len() + 4;
                    if size + len > MAX_ENTRY_BYTES / 2 && !cur.msgs.is_empty() {
                        let next = ChannelMsgs {
                            channel: b.channel.clone(),
                            msgs: Vec::new(),
                        };
                        ops.push(ReplOp {
                            op: Some(Op::Msgs(std::mem::replace(&mut cur, next))),
                        });
                        size = 0;
                    }
                    size += len;
                    cur.msgs.push(m);
                }
                if !cur.msgs.is_empty() {
                    ops.push(ReplOp {
                        op: Some(Op::Msgs(cur)),
                    });
                }
            }
            other => ops.push(ReplOp { op: other }),
        }
    }
    entry.ops = ops;
}

impl Engine {
    /// The commit of a clustered leader (see the module documentation).
    pub(super) async fn commit_replicated(&mut self) {
        for (ch, id, seqs) in std::mem::take(&mut self.acked) {
            let _ = self.sink.acked(&ch, id, &seqs);
        }
        let chans: Vec<String> = std::mem::take(&mut self.to_deliver).into_iter().collect();
        let mut more = Vec::new();
        for name in chans {
            if self.deliver(&name) {
                more.push(name);
            }
        }
        self.to_deliver.extend(more);
        // What the stores of this round's channels will hold once committed.
        let upto: Vec<(String, u64)> = std::mem::take(&mut self.dirty_msgs)
            .into_iter()
            .filter_map(|n| self.channels.get(&n).map(|c| (n, c.next.seq)))
            .collect();
        self.dirty_subs.clear();
        self.lazy_subs.clear();
        let pubacks = std::mem::take(&mut self.pubacks);
        let failed = match self.sink.take_entry() {
            Some(entry) => self.propose(entry).await.err(),
            None => None,
        };
        match failed {
            None => {
                for (name, seq) in upto {
                    if let Some(cs) = self.channels.get_mut(&name) {
                        cs.durable = cs.durable.max(seq);
                        if !cs.subs.is_empty() {
                            mark(&mut self.to_deliver, &name);
                        }
                    }
                }
                self.ready_acks.extend(pubacks.into_iter().map(|a| {
                    (
                        a.reply,
                        PubAck {
                            guid: a.guid,
                            error: String::new(),
                        },
                    )
                }));
            }
            Some(e) => {
                self.replies.clear();
                self.ready_acks.extend(pubacks.into_iter().map(|a| {
                    (
                        a.reply,
                        PubAck {
                            guid: a.guid,
                            error: e.clone(),
                        },
                    )
                }));
            }
        }
        self.send().await;
    }

    /// Proposes `entry` (cut to size, sealed when encrypted) and waits until every part is
    /// committed and applied here. `Err` is the text for the round's PubAcks.
    async fn propose(&mut self, mut entry: ReplEntry) -> Result<(), String> {
        let Some(repl) = self.repl.as_mut() else {
            return Err("stan: not clustered".into());
        };
        cut_batches(&mut entry);
        for part in split(entry) {
            let mut buf = BytesMut::with_capacity(part.encoded_len());
            // Encoding into a BytesMut cannot fail: it grows as needed.
            let _ = part.encode(&mut buf);
            let mut cmd: Bytes = buf.freeze();
            if let Some(s) = &repl.sealer {
                repl.sealed += 1;
                cmd = match s.seal(repl.sealed, &cmd) {
                    Ok(c) => c,
                    Err(e) => {
                        error!("STREAM: Unable to encrypt a replicated entry: {e}");
                        return Err(format!("stan: {e}"));
                    }
                };
            }
            if let Err(e) = repl.replicator.propose(cmd).await {
                warn!("STREAM: Replication failed: {e}");
                return Err(format!("stan: {e}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rnats_streaming::proto::repl_op::Op;
    use rnats_streaming::proto::{ChannelMsgs, MsgProto};

    use super::*;

    #[test]
    fn entries_are_cut_to_size_in_order() {
        let msgs: Vec<MsgProto> = (1..=300)
            .map(|s| MsgProto {
                sequence: s,
                data: Bytes::from(vec![7u8; 2000]),
                ..Default::default()
            })
            .collect();
        let mut e = ReplEntry {
            ops: vec![ReplOp {
                op: Some(Op::Msgs(ChannelMsgs {
                    channel: "c".into(),
                    msgs,
                })),
            }],
        };
        cut_batches(&mut e);
        let parts = split(e);
        assert!(parts.len() >= 3);
        let mut seqs = Vec::new();
        for p in &parts {
            assert!(
                p.encoded_len() <= MAX_ENTRY_BYTES + 4096,
                "{}",
                p.encoded_len()
            );
            for op in &p.ops {
                if let Some(Op::Msgs(b)) = &op.op {
                    seqs.extend(b.msgs.iter().map(|m| m.sequence));
                }
            }
        }
        assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
    }
}
