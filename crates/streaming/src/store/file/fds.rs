//! A bounded cache of open files, least recently used first out.
//!
//! Every file of the store (segment data and index files, `subs.dat` of each channel,
//! `clients.dat`) is registered once and gets a [`FileRef`]. [`FdCache::get`] returns an open
//! handle, opening the file if needed and closing the least recently used cached handle when
//! the limit is reached. Handles are `Arc`s used only for the duration of one read, write or
//! fsync (positional I/O, no shared cursor), so the number of open descriptors is at most the
//! limit plus the handles in use at that instant (one or two per thread inside the store).
//! Write buffers live in the stores, never in the file objects, so closing a handle never
//! loses data.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// A registered file: a cheap handle naming it.
#[derive(Debug, Clone)]
pub(crate) struct FileRef {
    id: u64,
    path: Arc<Path>,
}

impl FileRef {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// An open file whose descriptor is counted.
pub(crate) struct OpenFile {
    file: File,
    counters: Arc<Counters>,
}

impl Deref for OpenFile {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    peak: AtomicUsize,
    /// Tests: every access fails, as if the process had died.
    #[cfg(test)]
    dead: std::sync::atomic::AtomicBool,
}

struct Slot {
    cached: Option<(Arc<OpenFile>, u64)>,
}

struct Inner {
    next_id: u64,
    tick: u64,
    slots: HashMap<u64, Slot>,
    /// tick → id of cached handles, oldest first.
    lru: BTreeMap<u64, u64>,
}

pub(crate) struct FdCache {
    limit: usize,
    inner: Mutex<Inner>,
    counters: Arc<Counters>,
}

impl FdCache {
    /// `limit` = 0: no limit.
    pub(crate) fn new(limit: usize) -> Self {
        FdCache {
            limit,
            inner: Mutex::new(Inner {
                next_id: 1,
                tick: 0,
                slots: HashMap::new(),
                lru: BTreeMap::new(),
            }),
            counters: Arc::default(),
        }
    }

    /// Registers a file (existing or about to be created).
    pub(crate) fn register(&self, path: PathBuf) -> FileRef {
        let mut inner = self.inner.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let path: Arc<Path> = path.into();
        inner.slots.insert(id, Slot { cached: None });
        FileRef { id, path }
    }

    /// Creates (or truncates) a registered file and caches the handle.
    pub(crate) fn create(&self, f: &FileRef) -> io::Result<Arc<OpenFile>> {
        #[cfg(test)]
        if self.counters.dead.load(Ordering::Relaxed) {
            return Err(io::Error::other("simulated crash"));
        }
        let mut inner = self.inner.lock();
        self.invalidate_locked(&mut inner, f.id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&f.path)?;
        Ok(self.cache_locked(&mut inner, f.id, file))
    }

    /// An open handle on a registered file, opening it (read + write) if needed.
    pub(crate) fn get(&self, f: &FileRef) -> io::Result<Arc<OpenFile>> {
        #[cfg(test)]
        if self.counters.dead.load(Ordering::Relaxed) {
            return Err(io::Error::other("simulated crash"));
        }
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let slot = inner.slots.get_mut(&f.id).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "file is no longer registered")
        })?;
        if let Some((file, old_tick)) = &mut slot.cached {
            let file = file.clone();
            let old = std::mem::replace(old_tick, tick);
            inner.lru.remove(&old);
            inner.lru.insert(tick, f.id);
            return Ok(file);
        }
        let file = OpenOptions::new().read(true).write(true).open(&f.path)?;
        Ok(self.cache_locked(&mut inner, f.id, file))
    }

    fn cache_locked(&self, inner: &mut Inner, id: u64, file: File) -> Arc<OpenFile> {
        if self.limit > 0 {
            while inner.lru.len() >= self.limit {
                let Some((_, victim)) = inner.lru.pop_first() else {
                    break;
                };
                if let Some(slot) = inner.slots.get_mut(&victim) {
                    slot.cached = None;
                }
            }
        }
        let open = self.counters.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.counters.peak.fetch_max(open, Ordering::Relaxed);
        let file = Arc::new(OpenFile {
            file,
            counters: self.counters.clone(),
        });
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(slot) = inner.slots.get_mut(&id) {
            slot.cached = Some((file.clone(), tick));
            inner.lru.insert(tick, id);
        }
        file
    }

    fn invalidate_locked(&self, inner: &mut Inner, id: u64) {
        if let Some(slot) = inner.slots.get_mut(&id)
            && let Some((_, tick)) = slot.cached.take()
        {
            inner.lru.remove(&tick);
        }
    }

    /// Closes the cached handle (the file was replaced by a rename, or is being removed).
    pub(crate) fn invalidate(&self, f: &FileRef) {
        let mut inner = self.inner.lock();
        self.invalidate_locked(&mut inner, f.id);
    }

    /// Forgets a file, closing its cached handle.
    pub(crate) fn unregister(&self, f: &FileRef) {
        let mut inner = self.inner.lock();
        self.invalidate_locked(&mut inner, f.id);
        inner.slots.remove(&f.id);
    }

    /// Tests: from now on every access fails, and cached handles are closed.
    #[cfg(test)]
    pub(crate) fn kill(&self) {
        self.counters.dead.store(true, Ordering::Relaxed);
        let mut inner = self.inner.lock();
        inner.lru.clear();
        for slot in inner.slots.values_mut() {
            slot.cached = None;
        }
    }

    /// Descriptors open right now (cached and in use).
    pub(crate) fn open_count(&self) -> usize {
        self.counters.open.load(Ordering::Relaxed)
    }

    /// Highest number of descriptors open at once since the cache was created.
    pub(crate) fn peak(&self) -> usize {
        self.counters.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FdCache::new(2);
        let refs: Vec<FileRef> = (0..4)
            .map(|i| cache.register(dir.path().join(format!("f{i}"))))
            .collect();
        for r in &refs {
            drop(cache.create(r).unwrap());
            assert!(cache.open_count() <= 2);
        }
        assert_eq!(cache.open_count(), 2);
        // f2 and f3 are cached; touching f2 then opening f0 evicts f3.
        drop(cache.get(&refs[2]).unwrap());
        drop(cache.get(&refs[0]).unwrap());
        let inner = cache.inner.lock();
        assert!(inner.slots[&refs[2].id].cached.is_some());
        assert!(inner.slots[&refs[0].id].cached.is_some());
        assert!(inner.slots[&refs[3].id].cached.is_none());
        drop(inner);
        assert_eq!(cache.peak(), 2);
        cache.unregister(&refs[0]);
        assert_eq!(cache.open_count(), 1);
        assert!(cache.get(&refs[0]).is_err());
    }
}
