//! The newest log entries, kept in memory so that replication to followers that keep up
//! never reads the disk. Bounded in count (`cluster_log_cache_size`) and in bytes: entries
//! carry whole publish batches (up to 256 KiB), so a count alone let 512 of them hold
//! 128 MiB on every node.

use std::collections::VecDeque;

use openraft::EntryPayload;

use crate::types::Entry;

/// Contiguous entries ending at the log's last one (possibly none).
#[derive(Debug)]
pub(crate) struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

/// What an entry costs the cache: its command's bytes (membership and blank entries are
/// small and rare).
fn size_of(e: &Entry) -> usize {
    match &e.payload {
        EntryPayload::Normal(c) => c.0.len(),
        _ => 0,
    }
}

impl EntryCache {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> EntryCache {
        EntryCache {
            entries: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Appends the entry after the newest one, dropping the oldest ones past either bound.
    pub(crate) fn push_back(&mut self, e: Entry) {
        self.bytes += size_of(&e);
        self.entries.push_back(e);
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            if self.pop_front().is_none() {
                break;
            }
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        self.bytes -= size_of(&e);
        Some(e)
    }

    pub(crate) fn pop_back(&mut self) -> Option<Entry> {
        let e = self.entries.pop_back()?;
        self.bytes -= size_of(&e);
        Some(e)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    pub(crate) fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    pub(crate) fn back(&self) -> Option<&Entry> {
        self.entries.back()
    }

    /// Entries by position from the oldest cached one.
    pub(crate) fn range(
        &self,
        r: std::ops::Range<usize>,
    ) -> std::collections::vec_deque::Iter<'_, Entry> {
        self.entries.range(r)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, LogId};

    use super::*;
    use crate::types::Command;

    fn entry(index: u64, len: usize) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command(Bytes::from(vec![0u8; len]))),
        }
    }

    #[test]
    fn bounded_by_count() {
        let mut c = EntryCache::new(3, usize::MAX);
        for i in 1..=5 {
            c.push_back(entry(i, 10));
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.front().unwrap().log_id.index, 3);
        assert_eq!(c.bytes(), 30);
    }

    #[test]
    fn bounded_by_bytes_and_keeps_the_newest() {
        let mut c = EntryCache::new(512, 100);
        for i in 1..=10 {
            c.push_back(entry(i, 30));
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.back().unwrap().log_id.index, 10);
        assert_eq!(c.bytes(), 90);
        // An entry larger than the bound is not kept at all: reads go to the disk.
        c.push_back(entry(11, 500));
        assert_eq!(c.len(), 0);
        assert_eq!(c.bytes(), 0);
        c.push_back(entry(12, 5));
        assert_eq!(c.front().unwrap().log_id.index, 12);
    }

    #[test]
    fn popping_and_clearing_keep_the_byte_count() {
        let mut c = EntryCache::new(10, 1000);
        for i in 1..=4 {
            c.push_back(entry(i, i as usize));
        }
        assert_eq!(c.pop_back().unwrap().log_id.index, 4);
        assert_eq!(c.pop_front().unwrap().log_id.index, 1);
        assert_eq!(c.bytes(), 5);
        assert_eq!(c.range(0..2).count(), 2);
        c.clear();
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }
}
