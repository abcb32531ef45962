//! The file store: crash-safe, append-only files under one directory.
//!
//! # Layout
//!
//! ```text
//! <dir>/
//!   .rootdir.lck              exclusive lock (flock via std File::try_lock) while open
//!   server.dat                header + one record: ServerInfo (replaced atomically)
//!   clients.dat               header + typed records: 1 = add (ClientInfo), 2 = delete (ClientDelete)
//!   channels/<name>/          one directory per channel; bytes outside [A-Za-z0-9._-] are
//!                             written %XX (so any channel name is a safe, unique file name)
//!     subs.dat                header + typed records: 1 = new, 2 = update (SubState),
//!                             3 = delete (SubStateDelete), 4 = ack, 5 = pending (SubStateUpdate),
//!                             6 = pending, 7 = ack, for many sequences at once (SubStateSeqs)
//!     msgs.<first seq>.dat    segment: header + one record per message (encoded MsgProto)
//!     msgs.<first seq>.idx    its index: header + one 32-byte entry per message
//! ```
//!
//! All integers are little-endian. The layout follows the reference file store's ideas (CRC'd
//! records, slices with an index, typed record logs) but is this crate's own format: a
//! nats-streaming-server data directory cannot be opened.
//!
//! ```text
//! segment/index header   magic "RSMD"/"RSMI" (4) | version 1 (u32) | first sequence (u64)
//! log header             magic "RSSB"/"RSCL"/"RSSV" (4) | version 1 (u32)
//! record                 length (u32; typed logs: type << 24 | length) | CRC-32 IEEE of payload (u32) | payload
//! index entry            sequence (u64) | record offset (u64) | timestamp (i64) | payload size (u32) | CRC-32 of the 28 bytes before (u32)
//! ```
//!
//! A segment holds consecutive sequences from the one in its name; the next segment starts
//! where it ends. A new segment starts when the current one reaches `slice_max_msgs`,
//! `slice_max_bytes` (data + index, default 64 MiB) or `slice_max_age`; when all three
//! options are 0 they are derived from the channel limits (¼ of each, age at least 1 s), as
//! in the reference server.
//!
//! # Durability promise
//!
//! Appends and subscription updates go to per-channel write buffers; `flush()` writes them to
//! the kernel (one positional write per file) and then, depending on [`SyncPolicy`]:
//!
//! * [`SyncPolicy::OnFlush`] (default, the reference `file_sync=true`): `MsgStore::flush`
//!   returns after `fdatasync` of the segment being written, and `SubStore::flush` after that
//!   of `subs.dat`. New segment files, their headers and directory entries are synced when
//!   the segment is created, and a segment is synced once more when it is sealed. **Once
//!   `flush()` has returned `Ok`, every message appended before it survives a process crash
//!   (kill -9), a kernel crash and a power loss**, provided the disk honours flushes. The
//!   server sends PubAcks only after that, so an acknowledged message is never lost.
//! * [`SyncPolicy::Periodic`]`(d)` (batched): `flush()` writes to the kernel, which survives
//!   kill -9 of the process but not a power loss; it fsyncs only when `d` has elapsed since
//!   the previous fsync, and [`Store::sync`] (to be called by a timer every `d`) and
//!   [`Store::close`] fsync everything. A power loss loses at most the last ~`d` of writes.
//! * [`SyncPolicy::Never`]: writes only (benchmarks, tests); survives kill -9 only, and after
//!   a power loss the store may report corruption rather than open.
//!
//! When it fsyncs (`OnFlush`, `Periodic`), the store writes zeros ahead of the records in the
//! last segment (1 MiB at a time, when the writes are small), so that a flush overwrites
//! existing blocks and `fdatasync` does not have to commit a file-size change each time. The
//! zeros are cut off when the segment is sealed or the store closed; after a crash, recovery
//! reads them as the end of the log.
//!
//! Client records and server info are written and (unless `Never`) synced before
//! `add_client`/`delete_client`/`init` return.
//!
//! An index entry is written only after the data it describes has been fsynced (under
//! `Never`: at flush), so the entries on disk always describe durable data; until then the
//! entries live in memory and serve reads. Index files are synced when a segment is sealed,
//! not on every flush: they are derived data, checked on open and rebuilt from the segment
//! when missing or damaged (also when a damaged entry is met on a read).
//!
//! # Recovery
//!
//! Opening a store refuses a directory that holds a nats-streaming-server store
//! ([`StoreError::ReferenceStore`]) or an unfinished migration of one
//! ([`StoreError::MigrationPending`]); [`crate::migrate`] converts those first. It then takes
//! the directory lock (a second store on the same directory, in this process or another,
//! fails with [`StoreError::Locked`]), then replays `clients.dat` and each channel's
//! `subs.dat` and segments, applying the current limits (so lowering a limit and restarting
//! drops messages, as in the reference server).
//!
//! * Segments: the valid prefix of the index marks the durable region. A bad record (CRC,
//!   length, sequence) **after** it is where the interrupted last write begins, even if later
//!   records of that write reached the disk (a power loss can persist pages out of order):
//!   the file is truncated there and the store opens with everything before it. A bad record
//!   **inside** the durable region is corruption, unless the file simply ends inside it (a
//!   file cut short, whose tail is dropped). Only the last segment of a channel may have a
//!   tail cut; damage to a sealed segment is always reported. Without a usable index (deleted
//!   or damaged header), a bad record followed by a valid one is reported.
//! * Record logs (`subs.dat`, `clients.dat`): a bad record with nothing valid after it (by its
//!   length) is a torn tail and is cut; followed by a valid record it is reported.
//! * Reporting means opening fails with [`StoreError::Corrupt`] naming the file and the offset
//!   of the bad record. Nothing panics, and nothing is modified.
//! * A missing, short or inconsistent index is rebuilt from its segment.
//! * [`RecoveryCheck::Fast`] (default) trusts a segment whose index is consistent with it and
//!   whose last record checks out, so start-up reads O(1) per sealed segment; damage inside
//!   such a segment is reported when the record is read (every read checks the CRC).
//!   [`RecoveryCheck::Full`] reads and checks every record of every segment on open, and
//!   rewrites every index.
//!
//! # Limits and files
//!
//! `max_msgs`/`max_bytes` are applied on every append and `max_age` on append and
//! [`MsgStore::expire`](super::MsgStore::expire); a segment whose messages must all go is
//! deleted whole without reading its index, and a partly expired first segment keeps its
//! files until it empties (the first sequence lives in memory; on restart the limits are
//! applied again, so raising a limit across a restart can bring back messages of that first
//! segment, as in the reference server). The last segment is never deleted by limits, so the
//! last sequence survives even when every message expired.
//! Bytes are accounted as the encoded message plus 40 bytes, as the reference file store does
//! (its 8-byte record header and 32-byte index entry; ours are the same size).
//!
//! Files are opened through an LRU cache bounded by `fds_limit`: a store with thousands of
//! channels keeps at most that many descriptors open (plus the lock file and the handles in
//! use by concurrent calls, and short-lived ones during recovery and compaction).
//!
//! `subs.dat` and `clients.dat` are compacted (live state rewritten to a temporary file,
//! synced, renamed over the log) when compaction is enabled, the file is at least
//! `compact_min_size`, at least `compact_frag` % of its records are dead, and
//! `compact_interval` has passed since the previous compaction.
//!
//! Unix only (positional I/O through `std::os::unix::fs::FileExt`).

mod fds;
#[cfg(test)]
mod fuzz_tests;
mod msgs;
mod record;
mod subs;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use self::fds::FdCache;
use self::msgs::{FileMsgStore, LogOptions};
use self::record::{
    AppendLog, CLIENTS_MAGIC, ChunkReader, LOG_HEADER_LEN, Parsed, REC_HEADER_LEN, SERVER_MAGIC,
    check_header, decode_at, encode_record, log_header, replay_log, sync_dir,
};
use self::subs::{FileSubStore, rewrite};
use super::memory::duration_nanos;
use super::{
    Channel, Corruption, RecoveredState, Registry, Result, Store, StoreError, StoreKind,
    StoreLimits, is_valid_channel_name, now_nanos,
};
use crate::proto::{ClientDelete, ClientInfo, ServerInfo};

/// When the file store calls `fdatasync`. See the module documentation for the promise each
/// policy makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// On every `flush()` (the default).
    OnFlush,
    /// At a `flush()` at least this long after the previous fsync, and on `sync`/`close`.
    Periodic(Duration),
    /// Never (only `Store::sync` and `close` do).
    Never,
}

impl SyncPolicy {
    pub(crate) fn sync_now(self, last_sync: Instant) -> bool {
        match self {
            SyncPolicy::OnFlush => true,
            SyncPolicy::Periodic(d) => last_sync.elapsed() >= d,
            SyncPolicy::Never => false,
        }
    }
}

/// How much of each segment is checked when the store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryCheck {
    /// Consistent segments are trusted after checking their last record; the rest is checked
    /// when read.
    Fast,
    /// Every record of every segment is read and checked, and every index rebuilt.
    Full,
}

/// File store options (the reference server's `file_options`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStoreOptions {
    /// Default [`SyncPolicy::OnFlush`].
    pub sync: SyncPolicy,
    /// Messages per segment; 0 = no count limit. Default 0.
    pub slice_max_msgs: u64,
    /// Bytes per segment, data + index; 0 = no size limit. Default 64 MiB.
    pub slice_max_bytes: u64,
    /// Age of a segment's first message after which a new segment starts. Default 0 (none).
    pub slice_max_age: Duration,
    /// Compaction of `subs.dat` and `clients.dat`. Default on.
    pub compact_enabled: bool,
    /// Percentage of dead records that triggers compaction. Default 50.
    pub compact_frag: u32,
    /// Minimum time between two compactions of a file. Default 300 s.
    pub compact_interval: Duration,
    /// Files smaller than this are not compacted. Default 1 MiB.
    pub compact_min_size: u64,
    /// Per-channel write buffer: appends beyond it are written out before `flush`. Default
    /// 1 MiB. Buffers over 64 KiB are released after each flush.
    pub write_buffer_size: usize,
    /// Read-ahead when scanning files on open. Default 1 MiB.
    pub read_buffer_size: usize,
    /// Open files kept by the store; 0 = no limit. Default 512.
    pub fds_limit: usize,
    /// Default [`RecoveryCheck::Fast`].
    pub recovery_check: RecoveryCheck,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            sync: SyncPolicy::OnFlush,
            slice_max_msgs: 0,
            slice_max_bytes: 64 << 20,
            slice_max_age: Duration::ZERO,
            compact_enabled: true,
            compact_frag: 50,
            compact_interval: Duration::from_secs(300),
            compact_min_size: 1 << 20,
            write_buffer_size: 1 << 20,
            read_buffer_size: 1 << 20,
            fds_limit: 512,
            recovery_check: RecoveryCheck::Fast,
        }
    }
}

const CLIENT_ADD: u8 = 1;
const CLIENT_DEL: u8 = 2;
const SERVER_INFO: u8 = 1;
const LOCK_FILE: &str = ".rootdir.lck";
const CHANNELS_DIR: &str = "channels";
const DELETED_PREFIX: &str = ".deleted.";

/// The file store.
pub struct FileStore {
    root: PathBuf,
    channels_dir: PathBuf,
    opts: Arc<FileStoreOptions>,
    limits: StoreLimits,
    fds: Arc<FdCache>,
    lock: Mutex<Option<File>>,
    inner: Mutex<Inner>,
    clients: Mutex<ClientsFile>,
    deletions: AtomicU64,
}

struct Inner {
    registry: Registry,
    info: Option<ServerInfo>,
    closed: bool,
}

struct ClientsFile {
    clients: BTreeMap<String, ClientInfo>,
    log: AppendLog,
    last_compact: Instant,
}

impl FileStore {
    /// Opens (creating it if needed) the store in `dir`, takes its lock and recovers its
    /// content, applying `limits`.
    pub fn open(
        dir: impl AsRef<Path>,
        opts: FileStoreOptions,
        limits: StoreLimits,
    ) -> Result<FileStore> {
        Self::open_at(dir.as_ref(), opts, limits, now_nanos(), None)
    }

    /// [`open`](Self::open) with the directory lock already taken (fault-tolerant mode: the
    /// standby waits for the lock before it recovers anything).
    pub fn open_locked(
        lock: DirLock,
        opts: FileStoreOptions,
        limits: StoreLimits,
    ) -> Result<FileStore> {
        let dir = lock.dir.clone();
        Self::open_at(&dir, opts, limits, now_nanos(), Some(lock))
    }

    /// [`open`](Self::open), applying age limits as of `now` (ns since the epoch).
    pub(crate) fn open_at(
        dir: &Path,
        opts: FileStoreOptions,
        limits: StoreLimits,
        now: i64,
        lock: Option<DirLock>,
    ) -> Result<FileStore> {
        limits.validate()?;
        let root = dir.to_owned();
        if crate::migrate::has_pending_migration(&root) {
            return Err(StoreError::MigrationPending { dir: root });
        }
        if crate::migrate::is_reference_store(&root).unwrap_or(false) {
            return Err(StoreError::ReferenceStore { dir: root });
        }
        let channels_dir = root.join(CHANNELS_DIR);
        fs::create_dir_all(&channels_dir).map_err(|e| StoreError::io(&channels_dir, e))?;
        let lock = match lock {
            Some(l) => l.file,
            None => {
                DirLock::try_acquire(&root)?
                    .ok_or_else(|| StoreError::Locked {
                        dir: root.clone(),
                        lock: root.join(LOCK_FILE),
                    })?
                    .file
            }
        };
        let opts = Arc::new(opts);
        let fds = Arc::new(FdCache::new(opts.fds_limit));

        // Leftovers of interrupted compactions, rewrites and channel deletions.
        for d in [&root, &channels_dir] {
            for entry in fs::read_dir(d).map_err(|e| StoreError::io(d, e))? {
                let entry = entry.map_err(|e| StoreError::io(d, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if name.starts_with(DELETED_PREFIX) {
                    fs::remove_dir_all(&path).map_err(|e| StoreError::io(&path, e))?;
                } else if name.ends_with(".tmp") {
                    fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                }
            }
        }

        let info = read_server_info(&root.join("server.dat"))?;
        let clients = open_clients(&root.join("clients.dat"), &fds, &opts)?;
        let store = FileStore {
            root,
            channels_dir,
            opts,
            limits,
            fds,
            lock: Mutex::new(Some(lock)),
            inner: Mutex::new(Inner {
                registry: Registry::new(),
                info,
                closed: false,
            }),
            clients: Mutex::new(clients),
            deletions: AtomicU64::new(0),
        };

        let mut names = Vec::new();
        let cd = &store.channels_dir;
        for entry in fs::read_dir(cd).map_err(|e| StoreError::io(cd, e))? {
            let entry = entry.map_err(|e| StoreError::io(cd, e))?;
            if !entry
                .file_type()
                .map_err(|e| StoreError::io(entry.path(), e))?
                .is_dir()
            {
                continue;
            }
            let dir_name = entry.file_name();
            if let Some(name) = dir_name.to_str().and_then(decode_channel_dir) {
                names.push(name);
            }
        }
        names.sort();
        {
            let mut inner = store.inner.lock();
            for name in names {
                let ch = store.open_channel(&name, now)?;
                inner.registry.insert(ch);
            }
        }
        Ok(store)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &FileStoreOptions {
        &self.opts
    }

    /// File descriptors of store files open right now (not counting the lock file).
    pub fn open_files(&self) -> usize {
        self.fds.open_count()
    }

    /// Highest number of store file descriptors open at once since the store was opened.
    pub fn peak_open_files(&self) -> usize {
        self.fds.peak()
    }

    /// Tests: dies like a killed process. Nothing buffered is written; what was written to
    /// the kernel stays; the lock is released.
    #[cfg(test)]
    pub(crate) fn crash(self) {
        self.fds.kill();
        drop(self);
    }

    fn log_options(&self, limits: &super::ChannelLimits) -> LogOptions {
        let o = &self.opts;
        let (mut sm, mut sb, mut sa) = (
            o.slice_max_msgs,
            o.slice_max_bytes,
            duration_nanos(o.slice_max_age),
        );
        if sm == 0 && sb == 0 && sa == 0 {
            sm = limits.max_msgs / 4;
            sb = limits.max_bytes / 4;
            if !limits.max_age.is_zero() {
                sa = duration_nanos(limits.max_age / 4).max(1_000_000_000);
            }
        }
        LogOptions {
            sync: o.sync,
            slice_max_msgs: sm,
            slice_max_bytes: sb,
            slice_max_age: sa,
            write_buffer: o.write_buffer_size.max(1),
            read_buffer: o.read_buffer_size,
            check: o.recovery_check,
            max_msgs: limits.max_msgs,
            max_bytes: limits.max_bytes,
            max_age: duration_nanos(limits.max_age),
        }
    }

    fn channel_dir(&self, name: &str) -> Result<PathBuf> {
        let enc =
            encode_channel_dir(name).ok_or_else(|| StoreError::InvalidChannel(name.to_owned()))?;
        Ok(self.channels_dir.join(enc))
    }

    fn open_channel(&self, name: &str, now: i64) -> Result<Arc<Channel>> {
        let dir = self.channel_dir(name)?;
        let limits = self.limits.resolve(name);
        let subs = FileSubStore::open(&dir, self.fds.clone(), self.opts.clone(), limits.max_subs)?;
        let msgs =
            FileMsgStore::open(name, &dir, self.fds.clone(), self.log_options(&limits), now)?;
        Ok(Arc::new(Channel::new(
            name.to_owned(),
            limits,
            Box::new(msgs),
            Box::new(subs),
        )))
    }

    fn create_locked(&self, inner: &mut Inner, name: &str) -> Result<Arc<Channel>> {
        inner.registry.check_create(name, &self.limits)?;
        let dir = self.channel_dir(name)?;
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        if self.opts.sync != SyncPolicy::Never {
            sync_dir(&self.channels_dir)?;
        }
        let ch = self.open_channel(name, now_nanos())?;
        if self.opts.sync != SyncPolicy::Never {
            sync_dir(&dir)?;
        }
        inner.registry.insert(ch.clone());
        Ok(ch)
    }

    fn open_inner(&self) -> Result<parking_lot::MutexGuard<'_, Inner>> {
        let inner = self.inner.lock();
        if inner.closed {
            Err(StoreError::Closed)
        } else {
            Ok(inner)
        }
    }

    fn write_client_record(
        &self,
        f: impl FnOnce(&mut ClientsFile) -> Result<bool>,
    ) -> Result<bool> {
        if self.inner.lock().closed {
            return Err(StoreError::Closed);
        }
        let mut c = self.clients.lock();
        if !f(&mut c)? {
            return Ok(false);
        }
        c.log.write_out(&self.fds)?;
        let live = c.clients.len() as u64;
        if self.should_compact(c.log.len, c.log.records, live, c.last_compact) {
            self.compact_clients(&mut c)?;
        }
        if let Some((file, generation)) = c.log.sync_ticket(&self.fds, self.opts.sync, false)? {
            file.sync_data()
                .map_err(|e| StoreError::io(c.log.file.path(), e))?;
            c.log.synced(generation);
        }
        Ok(true)
    }

    fn should_compact(&self, len: u64, records: u64, live: u64, last: Instant) -> bool {
        let o = &self.opts;
        o.compact_enabled
            && len >= o.compact_min_size
            && records > 0
            && records.saturating_sub(live) * 100 / records >= u64::from(o.compact_frag)
            && last.elapsed() >= o.compact_interval
    }

    fn compact_clients(&self, c: &mut ClientsFile) -> Result<()> {
        let mut buf = log_header(CLIENTS_MAGIC).to_vec();
        for info in c.clients.values() {
            encode_record(&mut buf, info, Some(CLIENT_ADD))?;
        }
        let path = c.log.file.path().to_owned();
        rewrite(&self.root, &path, &buf, self.opts.sync)?;
        self.fds.invalidate(&c.log.file);
        c.log.replaced(buf.len() as u64, c.clients.len() as u64);
        c.last_compact = Instant::now();
        Ok(())
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The exclusive lock on a store directory (`flock` on `.rootdir.lck`), held while the store
/// is open. The kernel releases it when the holder's process dies, so a waiting standby
/// gets it at once.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    file: File,
}

impl DirLock {
    /// Takes the lock of `dir` (created if needed) if nobody holds it: `Ok(None)` when held
    /// by another store, in this process or another.
    pub fn try_acquire(dir: impl AsRef<Path>) -> Result<Option<DirLock>> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DirLock {
                dir: dir.to_owned(),
                file,
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(StoreError::io(&path, e)),
        }
    }

    /// The directory this lock is for.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn read_server_info(path: &Path) -> Result<Option<ServerInfo>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    if bytes.len() < LOG_HEADER_LEN as usize {
        return Err(StoreError::corrupt(path, 0, Corruption::Truncated));
    }
    check_header(path, &bytes, SERVER_MAGIC)?;
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut r = ChunkReader::new(&file, bytes.len() as u64, bytes.len());
    match r
        .record_at(LOG_HEADER_LEN, true)
        .map_err(|e| StoreError::io(path, e))?
    {
        Parsed::Record {
            rec_type: SERVER_INFO,
            size,
        } => {
            let payload = &bytes[(LOG_HEADER_LEN + REC_HEADER_LEN) as usize..][..size as usize];
            Ok(Some(decode_at(path, LOG_HEADER_LEN, payload)?))
        }
        Parsed::Record { rec_type, .. } => Err(StoreError::corrupt(
            path,
            LOG_HEADER_LEN,
            Corruption::UnknownRecordType(rec_type),
        )),
        Parsed::End => Err(StoreError::corrupt(
            path,
            LOG_HEADER_LEN,
            Corruption::Truncated,
        )),
        Parsed::Bad { kind, .. } => Err(StoreError::corrupt(path, LOG_HEADER_LEN, kind)),
    }
}

fn open_clients(path: &Path, fds: &FdCache, opts: &FileStoreOptions) -> Result<ClientsFile> {
    let file = fds.register(path.to_owned());
    let mut clients = BTreeMap::new();
    let (len, records) = if path.exists() {
        let f = fds.get(&file).map_err(|e| StoreError::io(path, e))?;
        replay_log(
            &f,
            path,
            CLIENTS_MAGIC,
            opts.read_buffer_size,
            |t, b, off| {
                match t {
                    CLIENT_ADD => {
                        let c: ClientInfo = decode_at(path, off, b)?;
                        clients.insert(c.id.clone(), c);
                    }
                    CLIENT_DEL => {
                        let d: ClientDelete = decode_at(path, off, b)?;
                        clients.remove(&d.id);
                    }
                    other => {
                        return Err(StoreError::corrupt(
                            path,
                            off,
                            Corruption::UnknownRecordType(other),
                        ));
                    }
                }
                Ok(1)
            },
        )?
    } else {
        use std::os::unix::fs::FileExt;
        let f = fds.create(&file).map_err(|e| StoreError::io(path, e))?;
        f.write_all_at(&log_header(CLIENTS_MAGIC), 0)
            .map_err(|e| StoreError::io(path, e))?;
        (LOG_HEADER_LEN, 0)
    };
    Ok(ClientsFile {
        clients,
        log: AppendLog::new(file, len, records),
        last_compact: Instant::now(),
    })
}

/// The directory name of a channel: bytes outside `[A-Za-z0-9._-]` as `%XX`. `None` if the
/// result is too long for a file name.
fn encode_channel_dir(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    (out.len() <= 240).then_some(out)
}

/// The channel a directory holds, if the name is a canonical encoding of a valid channel.
fn decode_channel_dir(dir: &str) -> Option<String> {
    let b = dir.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (is_valid_channel_name(&name) && encode_channel_dir(&name).as_deref() == Some(dir))
        .then_some(name)
}

impl Store for FileStore {
    fn kind(&self) -> StoreKind {
        StoreKind::File
    }

    fn init(&self, info: &ServerInfo) -> Result<()> {
        let mut inner = self.open_inner()?;
        let mut buf = log_header(SERVER_MAGIC).to_vec();
        encode_record(&mut buf, info, Some(SERVER_INFO))?;
        rewrite(
            &self.root,
            &self.root.join("server.dat"),
            &buf,
            self.opts.sync,
        )?;
        inner.info = Some(info.clone());
        Ok(())
    }

    fn recover(&self) -> Result<RecoveredState> {
        let inner = self.open_inner()?;
        let clients = self.clients.lock().clients.values().cloned().collect();
        Ok(RecoveredState {
            info: inner.info.clone(),
            clients,
            channels: inner.registry.recovered(),
        })
    }

    fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    fn create_channel(&self, name: &str) -> Result<Arc<Channel>> {
        let mut inner = self.open_inner()?;
        self.create_locked(&mut inner, name)
    }

    fn lookup_channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.inner.lock().registry.channels.get(name).cloned()
    }

    fn lookup_or_create_channel(&self, name: &str) -> Result<(Arc<Channel>, bool)> {
        let mut inner = self.open_inner()?;
        if let Some(c) = inner.registry.channels.get(name) {
            return Ok((c.clone(), false));
        }
        Ok((self.create_locked(&mut inner, name)?, true))
    }

    fn channels(&self) -> Vec<Arc<Channel>> {
        self.inner
            .lock()
            .registry
            .channels
            .values()
            .cloned()
            .collect()
    }

    fn delete_channel(&self, name: &str) -> Result<bool> {
        let mut inner = self.open_inner()?;
        let Some(ch) = inner.registry.remove(name) else {
            return Ok(false);
        };
        let _ = ch.msgs().close();
        let _ = ch.subs().close();
        let dir = self.channel_dir(name)?;
        let n = self.deletions.fetch_add(1, Ordering::Relaxed);
        let trash = self.channels_dir.join(format!("{DELETED_PREFIX}{n}"));
        fs::rename(&dir, &trash).map_err(|e| StoreError::io(&dir, e))?;
        if self.opts.sync != SyncPolicy::Never {
            sync_dir(&self.channels_dir)?;
        }
        drop(inner);
        fs::remove_dir_all(&trash).map_err(|e| StoreError::io(&trash, e))?;
        Ok(true)
    }

    fn add_client(&self, info: &ClientInfo) -> Result<()> {
        self.write_client_record(|c| {
            c.log.push(CLIENT_ADD, info)?;
            c.clients.insert(info.id.clone(), info.clone());
            Ok(true)
        })
        .map(|_| ())
    }

    fn delete_client(&self, id: &str) -> Result<bool> {
        self.write_client_record(|c| {
            if c.clients.remove(id).is_none() {
                return Ok(false);
            }
            c.log
                .push(CLIENT_DEL, &ClientDelete { id: id.to_owned() })?;
            Ok(true)
        })
    }

    fn sync(&self) -> Result<()> {
        let channels: Vec<Arc<Channel>> = self
            .open_inner()?
            .registry
            .channels
            .values()
            .cloned()
            .collect();
        for ch in channels {
            ch.msgs().sync()?;
            ch.subs().sync()?;
        }
        let mut c = self.clients.lock();
        c.log.write_out(&self.fds)?;
        if let Some((f, generation)) = c.log.sync_ticket(&self.fds, self.opts.sync, true)? {
            f.sync_data()
                .map_err(|e| StoreError::io(c.log.file.path(), e))?;
            c.log.synced(generation);
        }
        Ok(())
    }

    fn close(&self) -> Result<()> {
        let channels: Vec<Arc<Channel>> = {
            let mut inner = self.inner.lock();
            if inner.closed {
                return Ok(());
            }
            inner.closed = true;
            inner.registry.channels.values().cloned().collect()
        };
        let mut res = Ok(());
        for ch in channels {
            let r = ch.msgs().close().and(ch.subs().close());
            if res.is_ok() {
                res = r;
            }
        }
        {
            let mut c = self.clients.lock();
            let r = c.log.write_out(&self.fds).and_then(|()| {
                if let Some((f, generation)) = c.log.sync_ticket(&self.fds, self.opts.sync, true)? {
                    f.sync_data()
                        .map_err(|e| StoreError::io(c.log.file.path(), e))?;
                    c.log.synced(generation);
                }
                Ok(())
            });
            self.fds.unregister(&c.log.file);
            if res.is_ok() {
                res = r;
            }
        }
        // Dropping the file releases the lock.
        self.lock.lock().take();
        res
    }
}
