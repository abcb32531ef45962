//! The store side of replication: applying [`ReplEntry`]s to a store, and the snapshot of a
//! store's replicated state (what a lagging or new node needs besides the messages).
//!
//! Every operation is idempotent, so replaying entries a store already reflects (a node
//! restarting from an older snapshot) changes nothing: messages at or below the channel's last
//! sequence are skipped, subscription puts are upserts, pending/ack records are sets.
//!
//! [`restore`] makes a store equal to a snapshot taken at another node: clients and
//! subscriptions are replaced, channels the snapshot does not have are deleted, and missing
//! messages are fetched through a callback (the server asks the leader over NATS). A channel
//! whose messages cannot be a prefix of the snapshot's (deleted and created again in between)
//! is emptied and refilled: a restore never refuses to start over a mismatch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::proto::repl_op::Op;
use crate::proto::{
    ChannelSnapshot, ClientInfo, MsgProto, RaftSnapshot, ReplEntry, SubscriptionSnapshot,
};
use crate::store::{Channel, Result, Store};

/// Applies entries to one store, remembering the channels touched since the last
/// [`Applier::flush`] (an `Applier` belongs to one store).
#[derive(Default)]
pub struct Applier {
    touched: BTreeMap<String, Arc<Channel>>,
}

impl Applier {
    pub fn new() -> Applier {
        Applier::default()
    }

    /// Applies one entry (buffered in the store until [`Applier::flush`]).
    pub fn apply(&mut self, store: &dyn Store, entry: &ReplEntry) -> Result<()> {
        for op in entry.ops.iter().filter_map(|o| o.op.as_ref()) {
            self.apply_op(store, op)?;
        }
        Ok(())
    }

    fn channel(&mut self, store: &dyn Store, name: &str) -> Result<Arc<Channel>> {
        if let Some(c) = self.touched.get(name) {
            return Ok(c.clone());
        }
        let (c, _) = store.lookup_or_create_channel(name)?;
        self.touched.insert(name.to_string(), c.clone());
        Ok(c)
    }

    fn existing(&mut self, store: &dyn Store, name: &str) -> Option<Arc<Channel>> {
        if let Some(c) = self.touched.get(name) {
            return Some(c.clone());
        }
        let c = store.lookup_channel(name)?;
        self.touched.insert(name.to_string(), c.clone());
        Some(c)
    }

    fn apply_op(&mut self, store: &dyn Store, op: &Op) -> Result<()> {
        match op {
            Op::Msgs(m) => {
                let ch = self.channel(store, &m.channel)?;
                for msg in &m.msgs {
                    ch.msgs().store(msg)?;
                }
            }
            Op::SubPut(s) => {
                if let Some(st) = &s.state {
                    self.channel(store, &s.channel)?.subs().update_sub(st)?;
                }
            }
            Op::SubDelete(s) => {
                if let Some(ch) = self.existing(store, &s.channel) {
                    ch.subs().delete_sub(s.id)?;
                }
            }
            Op::Pending(s) => {
                if let Some(ch) = self.existing(store, &s.channel) {
                    ch.subs().add_seqs_pending(s.id, &s.seqs)?;
                }
            }
            Op::Acked(s) => {
                if let Some(ch) = self.existing(store, &s.channel) {
                    ch.subs().ack_seqs_pending(s.id, &s.seqs)?;
                }
            }
            Op::ClientPut(c) => store.add_client(c)?,
            Op::ClientDelete(id) => {
                store.delete_client(id)?;
            }
            Op::ChannelDelete(name) => {
                self.touched.remove(name);
                store.delete_channel(name)?;
            }
        }
        Ok(())
    }

    /// Makes what was applied durable (the store's sync policy): messages, then
    /// subscriptions of every channel touched.
    pub fn flush(&mut self) -> Result<()> {
        for ch in std::mem::take(&mut self.touched).into_values() {
            ch.msgs().flush()?;
            ch.subs().flush()?;
        }
        Ok(())
    }
}

/// The replicated state of a store, without the messages: clients, and per channel the
/// first and last sequence and the subscriptions with their pending sequences.
pub fn snapshot(store: &dyn Store) -> Result<RaftSnapshot> {
    let rec = store.recover()?;
    let channels = rec
        .channels
        .into_iter()
        .map(|rc| {
            let st = rc.channel.msgs().state();
            ChannelSnapshot {
                channel: rc.channel.name().to_string(),
                first: st.first,
                last: st.last,
                next_sub_id: rc
                    .subscriptions
                    .iter()
                    .map(|s| s.state.id)
                    .max()
                    .unwrap_or(0)
                    + 1,
                subscriptions: rc
                    .subscriptions
                    .into_iter()
                    .map(|s| SubscriptionSnapshot {
                        state: Some(s.state),
                        acks_pending: s.pending.into_iter().collect(),
                    })
                    .collect(),
                channel_id: 0,
            }
        })
        .collect();
    Ok(RaftSnapshot {
        clients: rec.clients,
        channels,
        padding: Vec::new(),
    })
}

/// Reads messages `from..=to` of a channel from another node (fewer, or none, when that node
/// no longer holds them).
pub type Fetch<'a> = dyn FnMut(&str, u64, u64) -> Result<Vec<MsgProto>> + 'a;

/// Makes `store` hold the state of `snap`, fetching the messages it lacks.
pub fn restore(store: &dyn Store, snap: &RaftSnapshot, fetch: &mut Fetch<'_>) -> Result<()> {
    restore_clients(store, &snap.clients)?;
    let keep: BTreeSet<&str> = snap.channels.iter().map(|c| c.channel.as_str()).collect();
    for ch in store.channels() {
        if !keep.contains(ch.name()) {
            store.delete_channel(ch.name())?;
        }
    }
    for cs in &snap.channels {
        let ch = restore_messages(store, cs, fetch)?;
        restore_subs(&ch, &cs.subscriptions)?;
        ch.msgs().flush()?;
        ch.subs().flush()?;
    }
    Ok(())
}

fn restore_clients(store: &dyn Store, clients: &[ClientInfo]) -> Result<()> {
    let want: BTreeSet<&str> = clients.iter().map(|c| c.id.as_str()).collect();
    for c in store.recover()?.clients {
        if !want.contains(c.id.as_str()) {
            store.delete_client(&c.id)?;
        }
    }
    for c in clients {
        store.add_client(c)?;
    }
    Ok(())
}

fn restore_messages(
    store: &dyn Store,
    cs: &ChannelSnapshot,
    fetch: &mut Fetch<'_>,
) -> Result<Arc<Channel>> {
    let (mut ch, _) = store.lookup_or_create_channel(&cs.channel)?;
    let st = ch.msgs().state();
    if st.last > cs.last {
        // Not a prefix of the snapshot's log (the channel was deleted and created again).
        store.delete_channel(&cs.channel)?;
        ch = store.lookup_or_create_channel(&cs.channel)?.0;
    }
    let mut next = ch.msgs().state().last + 1;
    if next < cs.first {
        next = cs.first;
    }
    while next <= cs.last {
        let batch = fetch(&cs.channel, next, cs.last)?;
        let Some(first) = batch.first() else {
            break;
        };
        let held = ch.msgs().state();
        if first.sequence > held.last + 1 && held.msgs > 0 {
            // A hole (the other node dropped messages by limits): restart the log there.
            ch.msgs().empty()?;
        }
        for m in &batch {
            ch.msgs().store(m)?;
        }
        next = batch.last().map_or(cs.last + 1, |m| m.sequence + 1);
    }
    Ok(ch)
}

fn restore_subs(ch: &Channel, subs: &[SubscriptionSnapshot]) -> Result<()> {
    let want: BTreeMap<u64, &SubscriptionSnapshot> = subs
        .iter()
        .filter_map(|s| s.state.as_ref().map(|st| (st.id, s)))
        .collect();
    let current = ch.subs().subscriptions();
    for s in &current {
        if !want.contains_key(&s.state.id) {
            ch.subs().delete_sub(s.state.id)?;
        }
    }
    for (id, s) in want {
        let Some(st) = &s.state else { continue };
        let mut have: BTreeSet<u64> = BTreeSet::new();
        if let Some(c) = current.iter().find(|c| c.state.id == id) {
            if c.state.last_sent > st.last_sent {
                // `last_sent` never goes back in an update: replace the record.
                ch.subs().delete_sub(id)?;
            } else {
                have = c.pending.clone();
            }
        }
        ch.subs().update_sub(st)?;
        let need: BTreeSet<u64> = s.acks_pending.iter().copied().collect();
        let add: Vec<u64> = need.difference(&have).copied().collect();
        let drop: Vec<u64> = have.difference(&need).copied().collect();
        ch.subs().add_seqs_pending(id, &add)?;
        ch.subs().ack_seqs_pending(id, &drop)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::proto::repl_op::Op;
    use crate::proto::{ChannelMsgs, ChannelSeqs, ChannelSub, ReplOp, SubState};
    use crate::store::StoreLimits;
    use crate::store::memory::MemoryStore;

    fn msg(seq: u64, data: &str) -> MsgProto {
        MsgProto {
            sequence: seq,
            subject: "c".into(),
            data: Bytes::from(data.to_string()),
            timestamp: seq as i64,
            ..Default::default()
        }
    }

    fn entry(ops: Vec<Op>) -> ReplEntry {
        ReplEntry {
            ops: ops.into_iter().map(|op| ReplOp { op: Some(op) }).collect(),
        }
    }

    fn sub(id: u64) -> SubState {
        SubState {
            id,
            client_id: "cl".into(),
            inbox: "in".into(),
            ack_inbox: format!("ack{id}"),
            max_in_flight: 10,
            ack_wait_in_secs: 30,
            is_durable: true,
            durable_name: format!("d{id}"),
            ..Default::default()
        }
    }

    fn store() -> MemoryStore {
        MemoryStore::new(StoreLimits::default()).unwrap()
    }

    fn history() -> Vec<ReplEntry> {
        vec![
            entry(vec![
                Op::ClientPut(ClientInfo {
                    id: "cl".into(),
                    hb_inbox: "hb".into(),
                    ..Default::default()
                }),
                Op::Msgs(ChannelMsgs {
                    channel: "c".into(),
                    msgs: (1..=5).map(|s| msg(s, &format!("m{s}"))).collect(),
                }),
                Op::SubPut(ChannelSub {
                    channel: "c".into(),
                    state: Some(sub(7)),
                }),
            ]),
            entry(vec![
                Op::Pending(ChannelSeqs {
                    channel: "c".into(),
                    id: 7,
                    seqs: vec![1, 2, 3],
                }),
                Op::Acked(ChannelSeqs {
                    channel: "c".into(),
                    id: 7,
                    seqs: vec![1],
                }),
                Op::Msgs(ChannelMsgs {
                    channel: "gone".into(),
                    msgs: vec![msg(1, "x")],
                }),
                Op::ChannelDelete("gone".into()),
            ]),
        ]
    }

    fn state(s: &dyn Store) -> String {
        let snap = snapshot(s).unwrap();
        let msgs: Vec<String> = s
            .channels()
            .iter()
            .map(|c| {
                let m = c.msgs().read_batch(1, 100, 1 << 20).unwrap();
                format!(
                    "{}:{}",
                    c.name(),
                    m.iter()
                        .map(|m| format!("{}={:?}", m.sequence, m.data))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect();
        format!("{snap:?} {msgs:?}")
    }

    #[test]
    fn applying_twice_changes_nothing() {
        let (a, b) = (store(), store());
        let (mut ap, mut bp) = (Applier::new(), Applier::new());
        for e in history() {
            ap.apply(&a, &e).unwrap();
            bp.apply(&b, &e).unwrap();
        }
        ap.flush().unwrap();
        bp.flush().unwrap();
        let once = state(&a);
        for e in history() {
            ap.apply(&a, &e).unwrap();
        }
        ap.flush().unwrap();
        assert_eq!(state(&a), once);
        assert_eq!(state(&b), once);
        let snap = snapshot(&a).unwrap();
        assert_eq!(snap.channels.len(), 1);
        assert_eq!(snap.channels[0].subscriptions[0].acks_pending, vec![2, 3]);
    }

    #[test]
    fn restore_makes_a_lagging_or_diverged_store_equal() {
        let leader = store();
        let mut ap = Applier::new();
        for e in history() {
            ap.apply(&leader, &e).unwrap();
        }
        let snap = snapshot(&leader).unwrap();
        let mut fetched = 0;
        let mut fetch = |ch: &str, from: u64, to: u64| -> Result<Vec<MsgProto>> {
            fetched += 1;
            let c = leader.lookup_channel(ch).unwrap();
            // Two at a time, as a small max payload would.
            let v = c.msgs().read_batch(from, 2, 1 << 20)?;
            Ok(v.into_iter().filter(|m| m.sequence <= to).collect())
        };
        // A new node.
        let fresh = store();
        restore(&fresh, &snap, &mut fetch).unwrap();
        assert_eq!(state(&fresh), state(&leader));
        // A node that lags, with a stale client, subscription, channel and pending seq.
        let lag = store();
        Applier::new()
            .apply(
                &lag,
                &entry(vec![
                    Op::ClientPut(ClientInfo {
                        id: "old".into(),
                        ..Default::default()
                    }),
                    Op::Msgs(ChannelMsgs {
                        channel: "c".into(),
                        msgs: vec![msg(1, "m1"), msg(2, "m2")],
                    }),
                    Op::SubPut(ChannelSub {
                        channel: "c".into(),
                        state: Some(sub(9)),
                    }),
                    Op::SubPut(ChannelSub {
                        channel: "c".into(),
                        state: Some(sub(7)),
                    }),
                    Op::Pending(ChannelSeqs {
                        channel: "c".into(),
                        id: 7,
                        seqs: vec![1, 5],
                    }),
                    Op::Msgs(ChannelMsgs {
                        channel: "stale".into(),
                        msgs: vec![msg(1, "s")],
                    }),
                ]),
            )
            .unwrap();
        restore(&lag, &snap, &mut fetch).unwrap();
        assert_eq!(state(&lag), state(&leader));
        // A channel deleted and created again on the leader: the old log is replaced.
        let diverged = store();
        Applier::new()
            .apply(
                &diverged,
                &entry(vec![Op::Msgs(ChannelMsgs {
                    channel: "c".into(),
                    msgs: (1..=9).map(|s| msg(s, "old")).collect(),
                })]),
            )
            .unwrap();
        restore(&diverged, &snap, &mut fetch).unwrap();
        assert_eq!(state(&diverged), state(&leader));
        assert!(fetched > 3);
    }
}
