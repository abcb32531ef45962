//! The commit of a clustered leader: what the handlers changed this round (messages with
//! their sequences, subscriptions, pending and acked sequences, clients, channel deletions)
//! goes to RAFT as entries, and the round's replies, deliveries and PubAcks go out only once
//! the entries are committed by a quorum and applied to this node's store. Rounds are
//! pipelined: a round's entries are handed to RAFT at once (in order) and the engine goes on
//! with the next round while they replicate; a waiter task reports the rounds' commits in
//! order. A round whose entries fail (leadership lost) answers its publishes with an error
//! PubAck and drops its other replies: nothing is reported done that may not have happened.
//!
//! One exception keeps replay from waiting on RAFT: a round that only records what was sent
//! and acked (no message, subscription, client or channel change, no reply) sends its
//! deliveries at once when no earlier round in flight holds anything back. The messages
//! themselves are committed already; if the round's positions are lost with the leadership,
//! the next leader sends those messages again, which at-least-once delivery allows (the
//! reference replicates these positions in the background the same way).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use rnats_streaming::proto::{PubAck, ReplEntry, ReplOp};
use rnats_streaming::store::crypto::LogSealer;
use rnats_streaming_raft::{Replicator, Submitted};
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::flusher::PendingPubAck;
use super::outbox::Outbox;
use super::{Engine, mark};
use crate::nats::Subject;

/// Entries are cut at this size, well below NATS' default maximum payload (1 MiB): a RAFT
/// append carries the entry whole.
const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// What a round sends once its entries are committed.
pub(crate) struct Job {
    pubacks: Vec<PendingPubAck>,
    replies: Vec<(Subject, Bytes)>,
    outbox: Outbox,
    /// Per channel, the last sequence the round's entries store.
    upto: Vec<(String, u64)>,
    /// It holds back what later rounds send (anything but a positions-only round).
    holds: bool,
}

impl Job {
    /// Nothing to send for this round (an empty round must not be queued: a settling engine
    /// commits until no round is in flight).
    fn is_empty(&self) -> bool {
        self.pubacks.is_empty()
            && self.replies.is_empty()
            && self.outbox.is_empty()
            && self.upto.is_empty()
    }
}

type Done = (Job, Result<(), String>);

/// A clustered leader's link to RAFT.
pub(crate) struct Repl {
    pub(crate) replicator: Arc<Replicator>,
    /// Seals entries when the store is encrypted (what goes into the RAFT log is too).
    pub(crate) sealer: Option<Arc<LogSealer>>,
    /// Entries sealed in this session: the sealer's nonce counter.
    sealed: u64,
    /// Rounds handed to the waiter task, not reported yet.
    pub(crate) outstanding: usize,
    /// Of those, the rounds that hold back later deliveries (see the module documentation).
    holding: usize,
    waits: mpsc::UnboundedSender<(Vec<Submitted>, Job)>,
    done: mpsc::UnboundedReceiver<Done>,
    /// Replies and deliveries of committed rounds, sent with the next commit (kept apart
    /// from what the round being committed produced).
    released: (Vec<(Subject, Bytes)>, Outbox),
}

impl Repl {
    pub(crate) fn new(replicator: Arc<Replicator>, sealer: Option<Arc<LogSealer>>) -> Repl {
        let (waits, mut rounds) = mpsc::unbounded_channel::<(Vec<Submitted>, Job)>();
        let (report, done) = mpsc::unbounded_channel();
        // Rounds complete in submission order: the waiter takes them one after the other.
        tokio::spawn(async move {
            while let Some((subs, job)) = rounds.recv().await {
                let mut res = Ok(());
                for s in subs {
                    if let Err(e) = s.wait().await {
                        warn!("STREAM: Replication failed: {e}");
                        res = Err(format!("stan: {e}"));
                        break;
                    }
                }
                if report.send((job, res)).is_err() {
                    return;
                }
            }
        });
        Repl {
            replicator,
            sealer,
            sealed: 0,
            outstanding: 0,
            holding: 0,
            waits,
            done,
            released: Default::default(),
        }
    }
}

/// The next replicated round reported (never resolves without rounds in flight).
pub(super) async fn replicated(repl: &mut Option<Repl>) -> Done {
    match repl {
        Some(r) if r.outstanding > 0 => match r.done.recv().await {
            Some(d) => {
                r.outstanding -= 1;
                if d.0.holds {
                    r.holding -= 1;
                }
                d
            }
            None => {
                r.outstanding = 0;
                r.holding = 0;
                std::future::pending().await
            }
        },
        _ => std::future::pending().await,
    }
}

/// The entry only records sent and acknowledged sequences.
fn positions_only(entry: &ReplEntry) -> bool {
    use rnats_streaming::proto::repl_op::Op;
    entry
        .ops
        .iter()
        .all(|op| matches!(op.op, Some(Op::Pending(_) | Op::Acked(_))))
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
        self.dirty_subs.clear();
        self.lazy_subs.clear();
        let mut job = Job {
            pubacks: std::mem::take(&mut self.pubacks),
            replies: std::mem::take(&mut self.replies),
            outbox: std::mem::take(&mut self.outbox),
            upto: std::mem::take(&mut self.dirty_msgs)
                .into_iter()
                .filter_map(|n| self.channels.get(&n).map(|c| (n, c.next.seq)))
                .collect(),
            holds: true,
        };
        let entry = self.sink.take_entry();
        let outstanding = self.repl.as_ref().map_or(0, |r| r.outstanding);
        let holding = self.repl.as_ref().map_or(0, |r| r.holding);
        // Deliveries that need not wait (see the module documentation). A positions-only
        // entry stores no message, so the round has no PubAck to wait for either.
        let mut early = Outbox::default();
        if holding == 0 && job.replies.is_empty() && entry.as_ref().is_some_and(positions_only) {
            job.holds = false;
            early = std::mem::take(&mut job.outbox);
        }
        let subs = match entry {
            Some(e) => self.submit(e).await,
            None if outstanding == 0 => Ok(Vec::new()),
            // Nothing to replicate, but what it answers may depend on rounds in flight.
            None => {
                if !job.is_empty() {
                    self.queue(Vec::new(), job);
                }
                self.release();
                return self.send().await;
            }
        };
        match subs {
            Ok(s) if s.is_empty() => self.on_replicated(job, Ok(())),
            Ok(s) => self.queue(s, job),
            Err(e) => self.on_replicated(job, Err(e)),
        }
        self.release();
        self.outbox.append(early);
        self.send().await;
    }

    /// Moves what committed rounds released to the buffers `send` empties (the round being
    /// committed took its own out of them).
    fn release(&mut self) {
        if let Some(r) = self.repl.as_mut() {
            let (replies, outbox) = std::mem::take(&mut r.released);
            self.replies.extend(replies);
            self.outbox.append(outbox);
        }
    }

    fn queue(&mut self, subs: Vec<Submitted>, job: Job) {
        if let Some(r) = self.repl.as_mut() {
            let holds = job.holds;
            if r.waits.send((subs, job)).is_ok() {
                r.outstanding += 1;
                r.holding += usize::from(holds);
            } else {
                error!("STREAM: The replication waiter stopped");
            }
        }
    }

    /// A round's entries were committed (or failed): what it answers goes out.
    pub(super) fn on_replicated(&mut self, job: Job, res: Result<(), String>) {
        let Job {
            pubacks,
            replies,
            outbox,
            upto,
            holds: _,
        } = job;
        let error = match res {
            Ok(()) => {
                for (name, seq) in upto {
                    if let Some(cs) = self.channels.get_mut(&name) {
                        cs.durable = cs.durable.max(seq);
                        if !cs.subs.is_empty() {
                            mark(&mut self.to_deliver, &name);
                        }
                    }
                }
                if let Some(r) = self.repl.as_mut() {
                    r.released.0.extend(replies);
                    r.released.1.append(outbox);
                }
                String::new()
            }
            Err(e) => e,
        };
        self.ready_acks.extend(pubacks.into_iter().map(|a| {
            (
                a.reply,
                PubAck {
                    guid: a.guid,
                    error: error.clone(),
                },
            )
        }));
    }

    /// Hands `entry` to RAFT (cut to size, sealed when encrypted). `Err` is the text for the
    /// round's PubAcks.
    async fn submit(&mut self, mut entry: ReplEntry) -> Result<Vec<Submitted>, String> {
        let Some(repl) = self.repl.as_mut() else {
            return Err("stan: not clustered".into());
        };
        cut_batches(&mut entry);
        let mut subs = Vec::new();
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
            match repl.replicator.submit(cmd).await {
                Ok(s) => subs.push(s),
                Err(e) => {
                    warn!("STREAM: Replication failed: {e}");
                    return Err(format!("stan: {e}"));
                }
            }
        }
        Ok(subs)
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
