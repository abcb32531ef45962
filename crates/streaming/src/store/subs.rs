//! Subscription bookkeeping shared by the stores: states, pending sequences, ID allocation
//! and the `max_subs` check.

use std::collections::BTreeMap;

use super::{RecoveredSubscription, Result, StoreError};
use crate::proto::SubState;
use crate::seqmap::SeqMap;

#[derive(Debug, Default)]
pub(crate) struct SubEntry {
    pub(crate) state: SubState,
    pub(crate) pending: SeqMap<()>,
}

#[derive(Debug, Default)]
pub(crate) struct SubsState {
    pub(crate) subs: BTreeMap<u64, SubEntry>,
    /// Highest ID ever assigned or seen; IDs are never reused.
    pub(crate) max_id: u64,
    max_subs: u64,
}

impl SubsState {
    pub(crate) fn new(max_subs: u64) -> Self {
        SubsState {
            subs: BTreeMap::new(),
            max_id: 0,
            max_subs,
        }
    }

    pub(crate) fn create(&mut self, state: &mut SubState) -> Result<()> {
        if self.max_subs > 0 && self.subs.len() as u64 >= self.max_subs {
            return Err(StoreError::TooManySubs);
        }
        self.max_id += 1;
        state.id = self.max_id;
        self.subs.insert(
            state.id,
            SubEntry {
                state: state.clone(),
                pending: SeqMap::new(),
            },
        );
        Ok(())
    }

    /// Inserts or replaces (recovery and updates); `last_sent` never goes back. Returns
    /// whether it replaced an entry.
    pub(crate) fn put(&mut self, mut state: SubState) -> bool {
        self.max_id = self.max_id.max(state.id);
        match self.subs.get_mut(&state.id) {
            Some(e) => {
                state.last_sent = state.last_sent.max(e.state.last_sent);
                e.state = state;
                true
            }
            None => {
                self.subs.insert(
                    state.id,
                    SubEntry {
                        state,
                        pending: SeqMap::new(),
                    },
                );
                false
            }
        }
    }

    /// Removes a subscription; returns its number of pending sequences if it existed.
    pub(crate) fn delete(&mut self, id: u64) -> Option<usize> {
        self.max_id = self.max_id.max(id);
        self.subs.remove(&id).map(|e| e.pending.len())
    }

    /// Returns whether the subscription exists.
    pub(crate) fn add_pending(&mut self, id: u64, seq: u64) -> bool {
        match self.subs.get_mut(&id) {
            Some(e) => {
                e.pending.insert(seq, ());
                if seq > e.state.last_sent {
                    e.state.last_sent = seq;
                }
                true
            }
            None => false,
        }
    }

    /// Returns whether a pending sequence was removed.
    pub(crate) fn ack(&mut self, id: u64, seq: u64) -> bool {
        self.subs
            .get_mut(&id)
            .is_some_and(|e| e.pending.remove(seq).is_some())
    }

    pub(crate) fn snapshot(&self) -> Vec<RecoveredSubscription> {
        self.subs
            .values()
            .map(|e| RecoveredSubscription {
                state: e.state.clone(),
                pending: e.pending.keys().collect(),
            })
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.subs.len()
    }

    /// Live records a compacted log would hold: one per subscription plus one per pending.
    pub(crate) fn live_records(&self) -> u64 {
        self.subs.values().map(|e| 1 + e.pending.len() as u64).sum()
    }
}
