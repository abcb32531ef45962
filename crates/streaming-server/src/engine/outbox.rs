//! The outbox of deliveries for one commit.

use std::sync::Arc;

use bytes::Bytes;

/// Deliveries waiting to be published: each inbox is held once per run of messages to it (a
/// window's worth of deliveries to one subscription shares one), not cloned per message.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) inboxes: Vec<Arc<str>>,
    pub(super) msgs: Vec<(u32, Bytes)>,
}

impl Outbox {
    pub(super) fn push(&mut self, inbox: &Arc<str>, payload: Bytes) {
        if !self
            .inboxes
            .last()
            .is_some_and(|last| Arc::ptr_eq(last, inbox))
        {
            self.inboxes.push(inbox.clone());
        }
        self.msgs.push((self.inboxes.len() as u32 - 1, payload));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The messages as (subject, payload) pairs, for one publish.
    pub(super) fn pairs(&self) -> Vec<(&str, &[u8])> {
        self.msgs
            .iter()
            .map(|(i, p)| (&*self.inboxes[*i as usize], &p[..]))
            .collect()
    }

    /// Appends `other`'s messages after this outbox's.
    pub(super) fn append(&mut self, other: Outbox) {
        let base = self.inboxes.len() as u32;
        self.inboxes.extend(other.inboxes);
        self.msgs
            .extend(other.msgs.into_iter().map(|(i, p)| (i + base, p)));
    }

    pub(super) fn clear(&mut self) {
        self.inboxes.clear();
        self.msgs.clear();
    }
}
