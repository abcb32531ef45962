//! Snapshot files: the machine's (small) snapshot bytes plus openraft's metadata.
//!
//! ```text
//! <dir>/<last index:020>-<unique>.snap :=
//!     magic "RSRS1\n" | meta_len u32 LE | crc32(meta ++ data) u32 LE | postcard(SnapshotMeta) | data
//! ```
//!
//! Written through a fsynced temp file and a rename, so a file is whole or absent. The
//! newest `retain` files are kept (`cluster_log_snapshots`); loading takes the newest one that
//! decodes and checks, so a damaged newest file falls back to the one before it instead of
//! stopping the node. The current snapshot also stays in memory (it is small: the messages
//! live in the message store, not here).

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::Mutex;
use tracing::warn;

use crate::log::file::{LogError, sync_dir, write_atomic};
use crate::types::SnapshotMeta;

const MAGIC: &[u8; 6] = b"RSRS1\n";
const EXT: &str = "snap";

/// A snapshot held in memory.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// The snapshot directory and the current snapshot.
pub struct SnapshotStore {
    dir: PathBuf,
    retain: usize,
    current: Mutex<Option<StoredSnapshot>>,
    /// Serializes writers, and lets `file_count` see a save with its pruning, never between.
    io: Mutex<()>,
}

impl SnapshotStore {
    /// Opens `dir` (creating it), drops leftover temp files, and loads the newest valid
    /// snapshot as the current one.
    pub fn open(dir: &Path, retain: usize) -> Result<SnapshotStore, LogError> {
        fs::create_dir_all(dir).map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = SnapshotStore {
            dir: dir.to_path_buf(),
            retain: retain.max(1),
            current: Mutex::new(None),
            io: Mutex::new(()),
        };
        let mut files = store.list()?;
        files.sort();
        for path in files.iter().rev() {
            match fs::read(path).ok().and_then(|b| decode(&b)) {
                Some(s) => {
                    *store.current.lock() = Some(s);
                    break;
                }
                None => warn!(
                    "RAFT snapshot {} is damaged or unreadable; trying an older one",
                    path.display()
                ),
            }
        }
        Ok(store)
    }

    fn list(&self) -> Result<Vec<PathBuf>, LogError> {
        let io = |source| LogError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for de in fs::read_dir(&self.dir).map_err(io)? {
            let path = de.map_err(io)?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some(EXT) => out.push(path),
                Some("tmp") => {
                    let _ = fs::remove_file(&path);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    pub fn current(&self) -> Option<StoredSnapshot> {
        self.current.lock().clone()
    }

    /// Persists a snapshot, makes it current and prunes the old files.
    pub fn save(&self, meta: SnapshotMeta, data: Bytes) -> Result<(), LogError> {
        let _io = self.io.lock();
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let meta_bytes = postcard::to_stdvec(&meta)?;
        let mut out = Vec::with_capacity(MAGIC.len() + 8 + meta_bytes.len() + data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&meta_bytes);
        h.update(&data);
        out.extend_from_slice(&h.finalize().to_le_bytes());
        out.extend_from_slice(&meta_bytes);
        out.extend_from_slice(&data);
        // The id is unique per build; keep only file-name-safe characters.
        let id: String = meta
            .snapshot_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        write_atomic(&self.dir, &format!("{index:020}-{id}.{EXT}"), &out)?;
        *self.current.lock() = Some(StoredSnapshot { meta, data });
        let mut files = self.list()?;
        files.sort();
        if files.len() > self.retain {
            for p in &files[..files.len() - self.retain] {
                let _ = fs::remove_file(p);
            }
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Number of snapshot files on disk (tests, metrics).
    pub fn file_count(&self) -> usize {
        let _io = self.io.lock();
        self.list().map_or(0, |l| l.len())
    }
}

fn decode(b: &[u8]) -> Option<StoredSnapshot> {
    let rest = b.strip_prefix(MAGIC.as_slice())?;
    let (len, rest) = rest.split_at_checked(4)?;
    let (crc, rest) = rest.split_at_checked(4)?;
    let meta_len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    if crc32fast::hash(rest).to_le_bytes() != crc {
        return None;
    }
    let (meta, data) = rest.split_at_checked(meta_len)?;
    Some(StoredSnapshot {
        meta: postcard::from_bytes(meta).ok()?,
        data: Bytes::copy_from_slice(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: Default::default(),
            snapshot_id: format!("1-{index}-x"),
        }
    }

    #[test]
    fn keeps_newest_and_falls_back_over_damage() {
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(dir.path(), 2).unwrap();
        assert!(s.current().is_none());
        for i in [10, 20, 30] {
            s.save(meta(i), Bytes::from(format!("state-{i}"))).unwrap();
        }
        assert_eq!(s.file_count(), 2);
        drop(s);
        let s = SnapshotStore::open(dir.path(), 2).unwrap();
        assert_eq!(&s.current().unwrap().data[..], b"state-30");
        // Damage the newest: the older one is used.
        let mut files: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|d| d.unwrap().path())
            .collect();
        files.sort();
        let newest = files.last().unwrap();
        let mut b = fs::read(newest).unwrap();
        let n = b.len();
        b[n - 1] ^= 1;
        fs::write(newest, b).unwrap();
        fs::write(dir.path().join("x.tmp"), b"junk").unwrap();
        let s = SnapshotStore::open(dir.path(), 2).unwrap();
        assert_eq!(&s.current().unwrap().data[..], b"state-20");
        assert!(!dir.path().join("x.tmp").exists());
    }
}
