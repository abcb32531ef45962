//! openraft's [`RaftLogStorage`] over [`LogFiles`] (the segment files, see [`file`]).
//!
//! ```text
//! LogStore ──(clone)── LogStore used as the LogReader by replication tasks
//!     └── Arc<Mutex<LogFiles>>   one lock; the RAFT core appends, readers pread or hit the cache
//! ```
//!
//! Appends complete their `LogFlushed` callback only after the write (and, with `sync`, the
//! fsync) returned, so openraft never counts an entry as persisted before it is.

mod cache;
pub mod file;

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError};
use parking_lot::Mutex;

pub use file::{LogError, LogFiles, LogFilesOptions, Recovery};

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The durable RAFT log. Cheap to clone (shared state).
#[derive(Clone)]
pub struct LogStore {
    files: Arc<Mutex<LogFiles>>,
}

impl LogStore {
    pub fn open(dir: &Path, opts: LogFilesOptions) -> Result<LogStore, LogError> {
        Ok(LogStore {
            files: Arc::new(Mutex::new(LogFiles::open(dir, opts)?)),
        })
    }

    /// Direct access for start-up checks, metrics and tests.
    pub fn with<R>(&self, f: impl FnOnce(&mut LogFiles) -> R) -> R {
        f(&mut self.files.lock())
    }
}

fn read_err(e: LogError) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: LogError) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        self.files.lock().read(start, end).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let f = self.files.lock();
        Ok(LogState {
            last_purged_log_id: f.purged(),
            last_log_id: f.last(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.files
            .lock()
            .save_vote(vote)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.files.lock().vote())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.files.lock().set_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.files.lock().committed())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let res = self.files.lock().append(entries);
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.files.lock().truncate(log_id.index).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.files.lock().purge(log_id).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use super::*;
    use crate::state::StateMachine;
    use crate::testing::MemMachine;

    struct Builder {
        segment_bytes: u64,
    }

    impl StoreBuilder<TypeConfig, LogStore, StateMachine<MemMachine>, TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(TempDir, LogStore, StateMachine<MemMachine>), StorageError> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let log = LogStore::open(
                &dir.path().join("log"),
                LogFilesOptions {
                    sync: true,
                    cache: 4,
                    cache_bytes: 1 << 20,
                    segment_bytes: self.segment_bytes,
                },
            )
            .map_err(|e| StorageIOError::write(&e))?;
            let sm = StateMachine::open(&dir.path().join("snapshots"), 2, MemMachine::new())
                .map_err(|e| StorageIOError::write(&e))?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder {
            segment_bytes: 64 << 20,
        })
        .unwrap();
    }

    /// The same suite with tiny segments and cache: every read and purge crosses files.
    #[test]
    fn openraft_storage_suite_tiny_segments() {
        Suite::test_all(Builder { segment_bytes: 64 }).unwrap();
    }
}
