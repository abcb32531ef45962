//! Where the engine's store changes go: straight to the store (standalone and FT), or, on a
//! clustered leader, into the next replicated entry, which every node (this one included)
//! applies to its store once RAFT committed it (`rnats_streaming::store::replicate`).
//!
//! In log mode the engine assigns what the store would: message sequences and timestamps
//! (from the channel's last ones), subscription IDs (from the channel's largest), and checks
//! `max_subs` itself. Reads still go to the store, which holds what was committed.

use std::sync::Arc;

use rnats_streaming::proto::repl_op::Op;
use rnats_streaming::proto::{
    ChannelMsgs, ChannelSeqs, ChannelSub, ClientInfo, MsgProto, ReplEntry, ReplOp, SubState,
};
use rnats_streaming::store::{Channel, NewMessage, Result, Store, StoreError};

/// The last sequence and timestamp given out in a channel (log mode).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Assigned {
    pub(crate) seq: u64,
    pub(crate) ts: i64,
}

impl Assigned {
    /// What the store of `ch` holds.
    pub(crate) fn of(ch: &Channel) -> Assigned {
        let st = ch.msgs().state();
        let ts = ch
            .msgs()
            .last_msg()
            .ok()
            .flatten()
            .map_or(0, |m| m.timestamp);
        Assigned { seq: st.last, ts }
    }
}

pub(crate) enum Sink {
    Direct,
    Log(Vec<ReplOp>),
}

impl Sink {
    pub(crate) fn is_log(&self) -> bool {
        matches!(self, Sink::Log(_))
    }

    /// The entry of what was logged since the last call (None when nothing was).
    pub(crate) fn take_entry(&mut self) -> Option<ReplEntry> {
        match self {
            Sink::Log(ops) if !ops.is_empty() => Some(ReplEntry {
                ops: std::mem::take(ops),
            }),
            _ => None,
        }
    }

    fn push(&mut self, op: Op) {
        if let Sink::Log(ops) = self {
            ops.push(ReplOp { op: Some(op) });
        }
    }

    fn last_op(&mut self) -> Option<&mut Op> {
        match self {
            Sink::Log(ops) => ops.last_mut().and_then(|o| o.op.as_mut()),
            Sink::Direct => None,
        }
    }

    /// Appends a message to `ch`.
    pub(crate) fn append(
        &mut self,
        ch: &Channel,
        next: &mut Assigned,
        msg: NewMessage,
    ) -> Result<MsgProto> {
        if !self.is_log() {
            return ch.msgs().append(msg);
        }
        next.seq += 1;
        next.ts = next.ts.max(msg.timestamp);
        let m = MsgProto {
            sequence: next.seq,
            subject: ch.name().to_string(),
            reply: msg.reply,
            data: msg.data,
            timestamp: next.ts,
            ..Default::default()
        };
        match self.last_op() {
            Some(Op::Msgs(b)) if b.channel == ch.name() => b.msgs.push(m.clone()),
            _ => self.push(Op::Msgs(ChannelMsgs {
                channel: ch.name().to_string(),
                msgs: vec![m.clone()],
            })),
        }
        Ok(m)
    }

    /// Creates a subscription, assigning its ID (above `max_id`, which it raises). `count`
    /// is the channel's number of subscriptions (offline durables included).
    pub(crate) fn sub_create(
        &mut self,
        ch: &Channel,
        max_id: &mut u64,
        count: usize,
        st: &mut SubState,
    ) -> Result<()> {
        if !self.is_log() {
            ch.subs().create_sub(st)?;
            *max_id = (*max_id).max(st.id);
            return Ok(());
        }
        let max = ch.limits().max_subs;
        if max > 0 && count as u64 >= max {
            return Err(StoreError::TooManySubs);
        }
        *max_id += 1;
        st.id = *max_id;
        self.sub_update(ch, st)
    }

    pub(crate) fn sub_update(&mut self, ch: &Channel, st: &SubState) -> Result<()> {
        if !self.is_log() {
            return ch.subs().update_sub(st);
        }
        self.push(Op::SubPut(ChannelSub {
            channel: ch.name().to_string(),
            state: Some(st.clone()),
        }));
        Ok(())
    }

    pub(crate) fn sub_delete(&mut self, ch: &Channel, id: u64) -> Result<()> {
        if !self.is_log() {
            return ch.subs().delete_sub(id);
        }
        self.push(Op::SubDelete(ChannelSeqs {
            channel: ch.name().to_string(),
            id,
            seqs: Vec::new(),
        }));
        Ok(())
    }

    /// Records that `seqs` were sent to subscription `id`.
    pub(crate) fn pending(&mut self, ch: &Channel, id: u64, seqs: &[u64]) -> Result<()> {
        if !self.is_log() {
            return ch.subs().add_seqs_pending(id, seqs);
        }
        self.seqs(ch, id, seqs, true);
        Ok(())
    }

    /// Records that subscription `id` acknowledged `seqs`.
    pub(crate) fn acked(&mut self, ch: &Channel, id: u64, seqs: &[u64]) -> Result<()> {
        if !self.is_log() {
            return ch.subs().ack_seqs_pending(id, seqs);
        }
        self.seqs(ch, id, seqs, false);
        Ok(())
    }

    fn seqs(&mut self, ch: &Channel, id: u64, seqs: &[u64], pending: bool) {
        if seqs.is_empty() {
            return;
        }
        match self.last_op() {
            Some(Op::Pending(s)) if pending && s.id == id && s.channel == ch.name() => {
                s.seqs.extend_from_slice(seqs)
            }
            Some(Op::Acked(s)) if !pending && s.id == id && s.channel == ch.name() => {
                s.seqs.extend_from_slice(seqs)
            }
            _ => {
                let s = ChannelSeqs {
                    channel: ch.name().to_string(),
                    id,
                    seqs: seqs.to_vec(),
                };
                self.push(if pending {
                    Op::Pending(s)
                } else {
                    Op::Acked(s)
                });
            }
        }
    }

    pub(crate) fn client_add(&mut self, store: &Arc<dyn Store>, info: &ClientInfo) -> Result<()> {
        if !self.is_log() {
            return store.add_client(info);
        }
        self.push(Op::ClientPut(info.clone()));
        Ok(())
    }

    pub(crate) fn client_delete(&mut self, store: &Arc<dyn Store>, id: &str) -> Result<()> {
        if !self.is_log() {
            return store.delete_client(id).map(|_| ());
        }
        self.push(Op::ClientDelete(id.to_string()));
        Ok(())
    }

    pub(crate) fn channel_delete(&mut self, store: &Arc<dyn Store>, name: &str) -> Result<()> {
        if !self.is_log() {
            return store.delete_channel(name).map(|_| ());
        }
        self.push(Op::ChannelDelete(name.to_string()));
        Ok(())
    }
}
