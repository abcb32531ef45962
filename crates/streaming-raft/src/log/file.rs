//! The on-disk RAFT log: segment files of checksummed records plus one small meta file.
//!
//! ```text
//! <dir>/
//!   meta                      vote + last purged log id: magic "RSRM1\n", crc32, postcard
//!                             (written to meta.tmp, fsynced, renamed: always atomic)
//!   00000000000000000001.seg  records whose entries start at index 1
//!   00000000000000004097.seg  the next segment (a new one once the active one passes
//!                             `segment_bytes`)
//!
//! record := len u32 LE (kind + body) | crc32 u32 LE (kind + body) | kind u8 | body
//!   kind 1: a log entry, body = postcard(openraft Entry)
//!   kind 2: the committed log id, body = postcard(LogId); written in the next append batch
//!           (no I/O of its own), so a recovered value may lag: a lagging committed index is
//!           still a committed index, which is all openraft asks of it
//! ```
//!
//! * Entries are contiguous; each segment keeps the byte offset of every entry it holds
//!   (8 bytes per entry) so a read is one `pread`. The newest `cache` entries (at most
//!   `cache_bytes` of them) also stay in memory: replication to followers that keep up
//!   never touches the disk.
//! * `sync` is the reference's `cluster_sync`: fsync after every append batch. Without it
//!   the batch is only written (page cache). Votes, truncations and purges are always
//!   fsynced: they are rare and RAFT's safety rests on them.
//! * Purge deletes whole segments; entries at or below the purge point that share a segment
//!   with newer ones stay on disk, hidden, until the segment goes. The log therefore stays
//!   bounded by the purge point (trailing logs) plus one segment.
//! * Recovery never refuses to start over what a crash leaves behind: a torn or corrupt
//!   record truncates the log there (later segments are removed), a gap after a segment does
//!   the same, empty and temp files go, segments entirely below the purge point go. Only
//!   real I/O errors (permissions, a missing disk) fail.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::cache::EntryCache;
use crate::types::{Entry, LogId, Vote};

const META: &str = "meta";
const META_MAGIC: &[u8; 6] = b"RSRM1\n";
const SEG_EXT: &str = "seg";
const KIND_ENTRY: u8 = 1;
const KIND_COMMITTED: u8 = 2;
const HEADER: usize = 8;
/// A record larger than this is corruption, not data (a batch is far smaller).
const MAX_RECORD: u32 = 256 << 20;

/// Failures of the log files.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("RAFT log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("RAFT log: can't encode an entry: {0}")]
    Encode(#[from] postcard::Error),
    #[error(
        "RAFT log: entry {got} does not follow the last one ({last:?}); the caller must truncate first"
    )]
    NotContiguous { got: u64, last: Option<u64> },
    #[error("RAFT log: entry {0} is not in the log (purged or not written yet)")]
    Missing(u64),
    #[error("RAFT log {path}: record at offset {offset} is damaged: {why}")]
    Damaged {
        path: PathBuf,
        offset: u64,
        why: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote>,
    purged: Option<LogId>,
}

struct Segment {
    path: PathBuf,
    file: File,
    len: u64,
    /// Index of `offsets[0]` (the name of the file).
    base: u64,
    offsets: Vec<u64>,
}

impl Segment {
    fn last_index(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.base + self.offsets.len() as u64 - 1)
    }
}

/// Options of [`LogFiles::open`].
#[derive(Debug, Clone)]
pub struct LogFilesOptions {
    /// fsync after every append batch (`cluster_sync`).
    pub sync: bool,
    /// Entries kept in memory (`cluster_log_cache_size`).
    pub cache: usize,
    /// At most this many bytes of commands kept in memory.
    pub cache_bytes: usize,
    /// A segment is closed once it reaches this size.
    pub segment_bytes: u64,
}

impl Default for LogFilesOptions {
    fn default() -> Self {
        LogFilesOptions {
            sync: false,
            cache: crate::config::DEFAULT_LOG_CACHE_SIZE,
            cache_bytes: crate::config::DEFAULT_LOG_CACHE_BYTES,
            segment_bytes: 64 << 20,
        }
    }
}

/// What recovery found and repaired, for logging and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub entries: u64,
    pub truncated_bytes: u64,
    pub removed_files: Vec<PathBuf>,
}

/// The log's files and in-memory index. Every call does its I/O synchronously.
pub struct LogFiles {
    dir: PathBuf,
    opts: LogFilesOptions,
    meta: Meta,
    committed: Option<LogId>,
    committed_dirty: bool,
    segments: VecDeque<Segment>,
    /// The newest entries, contiguous, ending at `last`.
    cache: EntryCache,
    last: Option<LogId>,
    buf: Vec<u8>,
    recovery: Recovery,
}

impl LogFiles {
    /// Opens (creating) the log in `dir` and recovers it; see the module docs.
    pub fn open(dir: &Path, opts: LogFilesOptions) -> Result<LogFiles, LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cache = EntryCache::new(opts.cache, opts.cache_bytes);
        let mut log = LogFiles {
            dir: dir.to_path_buf(),
            opts,
            meta: Meta::default(),
            committed: None,
            committed_dirty: false,
            segments: VecDeque::new(),
            cache,
            last: None,
            buf: Vec::new(),
            recovery: Recovery::default(),
        };
        log.meta = log.read_meta()?;
        log.recover()?;
        Ok(log)
    }

    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn vote(&self) -> Option<Vote> {
        self.meta.vote
    }

    pub fn purged(&self) -> Option<LogId> {
        self.meta.purged
    }

    /// The last log id, or the purge point when every entry was purged.
    pub fn last(&self) -> Option<LogId> {
        self.last.or(self.meta.purged)
    }

    pub fn committed(&self) -> Option<LogId> {
        self.committed
    }

    /// Remembers the committed id; it reaches the disk with the next append.
    pub fn set_committed(&mut self, c: Option<LogId>) {
        if c != self.committed {
            self.committed = c;
            self.committed_dirty = true;
        }
    }

    /// Whether there is anything at all: a vote, an entry or a purge point.
    pub fn has_state(&self) -> bool {
        self.meta.vote.is_some() || self.last().is_some()
    }

    pub fn save_vote(&mut self, vote: &Vote) -> Result<(), LogError> {
        let mut meta = self.meta.clone();
        meta.vote = Some(*vote);
        self.write_meta(&meta)?;
        self.meta = meta;
        Ok(())
    }

    /// Appends contiguous entries: one write per touched segment, then fsync when `sync`.
    pub fn append(&mut self, entries: impl IntoIterator<Item = Entry>) -> Result<(), LogError> {
        let mut pending: Option<usize> = None; // segment position with unwritten bytes in buf
        self.buf.clear();
        for entry in entries {
            let index = entry.log_id.index;
            // At or below the purge point an entry is already part of a snapshot: nothing
            // will ever read it (openraft's suite appends such entries; a real run doesn't).
            if self.purged().is_some_and(|p| index <= p.index) {
                continue;
            }
            let expect = self.last().map(|l| l.index + 1);
            if expect.is_some_and(|e| e != index) {
                self.flush_buf(pending.take())?;
                return Err(LogError::NotContiguous {
                    got: index,
                    last: self.last().map(|l| l.index),
                });
            }
            let buffered = if pending.is_some() {
                self.buf.len() as u64
            } else {
                0
            };
            let need_new = match self.segments.back() {
                None => true,
                Some(s) => s.len + buffered >= self.opts.segment_bytes || s.last_index().is_none(),
            };
            if need_new {
                self.flush_buf(pending.take())?;
                // An empty active segment (only committed records) is reused only if it is
                // named for this index.
                if !matches!(self.segments.back(), Some(s) if s.offsets.is_empty() && s.base == index)
                {
                    self.new_segment(index)?;
                }
            }
            let pos = self.segments.len() - 1;
            pending = Some(pos);
            let seg = &mut self.segments[pos];
            let offset = seg.len + self.buf.len() as u64;
            encode_record(&mut self.buf, KIND_ENTRY, &entry)?;
            seg.offsets.push(offset);
            self.last = Some(entry.log_id);
            self.cache.push_back(entry);
        }
        if self.committed_dirty
            && let Some(c) = self.committed
            && let Some(pos) = pending.or(self.segments.len().checked_sub(1))
        {
            encode_record(&mut self.buf, KIND_COMMITTED, &c)?;
            self.committed_dirty = false;
            pending = Some(pos);
        }
        self.flush_buf(pending)?;
        if self.opts.sync
            && let Some(seg) = self.segments.back()
        {
            seg.file.sync_data().map_err(io_err(&seg.path))?;
        }
        Ok(())
    }

    fn flush_buf(&mut self, pos: Option<usize>) -> Result<(), LogError> {
        let Some(pos) = pos else { return Ok(()) };
        if self.buf.is_empty() {
            return Ok(());
        }
        let seg = &mut self.segments[pos];
        // write_all_at keeps the file length under our control after a failed write.
        seg.file
            .write_all_at(&self.buf, seg.len)
            .map_err(io_err(&seg.path))?;
        seg.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn new_segment(&mut self, base: u64) -> Result<(), LogError> {
        if let Some(prev) = self.segments.back()
            && !self.opts.sync
        {
            // The closed segment reaches the disk in the background of the next ones.
            let _ = prev.file.sync_data();
        }
        let path = self.dir.join(format!("{base:020}.{SEG_EXT}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment {
            path,
            file,
            len: 0,
            base,
            offsets: Vec::new(),
        });
        Ok(())
    }

    /// Entries with `start <= index < end`; fewer when the range runs past the last entry.
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, LogError> {
        let Some(last) = self.last else {
            return Ok(Vec::new());
        };
        let end = end.min(last.index + 1);
        let Some(first) = self.segments.front().map(|s| s.base) else {
            return Ok(Vec::new());
        };
        let first = first.max(self.purged().map_or(0, |p| p.index + 1));
        let start = start.max(first);
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - start) as usize);
        let cache_first = self.cache.front().map(|e| e.log_id.index);
        let mut i = start;
        while i < end {
            if let Some(cf) = cache_first
                && i >= cf
            {
                let from = (i - cf) as usize;
                let to = (end - cf) as usize;
                out.extend(self.cache.range(from..to).cloned());
                break;
            }
            out.push(self.read_disk(i)?);
            i += 1;
        }
        Ok(out)
    }

    fn read_disk(&self, index: u64) -> Result<Entry, LogError> {
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.base <= index && s.last_index().is_some_and(|l| l >= index))
            .ok_or(LogError::Missing(index))?;
        let offset = seg.offsets[(index - seg.base) as usize];
        let mut head = [0u8; HEADER];
        seg.file
            .read_exact_at(&mut head, offset)
            .map_err(io_err(&seg.path))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let damaged = |why: String| LogError::Damaged {
            path: seg.path.clone(),
            offset,
            why,
        };
        if len == 0 || len > MAX_RECORD {
            return Err(damaged(format!("length {len}")));
        }
        let mut body = vec![0u8; len as usize];
        seg.file
            .read_exact_at(&mut body, offset + HEADER as u64)
            .map_err(io_err(&seg.path))?;
        if crc32fast::hash(&body) != crc {
            return Err(damaged("checksum mismatch".into()));
        }
        if body[0] != KIND_ENTRY {
            return Err(damaged(format!("kind {} where an entry was", body[0])));
        }
        postcard::from_bytes(&body[1..]).map_err(|e| damaged(e.to_string()))
    }

    /// Removes every entry with index >= `index` (a conflict with the leader's log).
    pub fn truncate(&mut self, index: u64) -> Result<(), LogError> {
        while let Some(seg) = self.segments.back() {
            if seg.base >= index {
                let seg = self.segments.pop_back().expect("checked above");
                drop(seg.file);
                remove(&seg.path)?;
                continue;
            }
            break;
        }
        if let Some(seg) = self.segments.back_mut()
            && seg.last_index().is_some_and(|l| l >= index)
        {
            let keep = index.saturating_sub(seg.base) as usize;
            let cut = seg.offsets[keep];
            seg.offsets.truncate(keep);
            seg.file.set_len(cut).map_err(io_err(&seg.path))?;
            seg.file.sync_all().map_err(io_err(&seg.path))?;
            seg.len = cut;
        }
        sync_dir(&self.dir)?;
        while self.cache.back().is_some_and(|e| e.log_id.index >= index) {
            self.cache.pop_back();
        }
        self.last = match self.segments.back().and_then(Segment::last_index) {
            None => None,
            Some(l) => match self.cache.back() {
                Some(e) if e.log_id.index == l => Some(e.log_id),
                _ => Some(self.read_disk(l)?.log_id),
            },
        };
        if self
            .last
            .is_some_and(|l| self.purged().is_some_and(|p| l.index <= p.index))
        {
            self.last = None;
        }
        if self.committed.is_some_and(|c| c.index >= index) {
            self.committed = self.last;
        }
        Ok(())
    }

    /// Records `upto` as purged and deletes the segments entirely at or below it.
    pub fn purge(&mut self, upto: LogId) -> Result<(), LogError> {
        if self.purged().is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        let mut meta = self.meta.clone();
        meta.purged = Some(upto);
        self.write_meta(&meta)?;
        self.meta = meta;
        while let Some(seg) = self.segments.front() {
            if seg.last_index().is_none_or(|l| l <= upto.index) {
                let seg = self.segments.pop_front().expect("checked above");
                drop(seg.file);
                remove(&seg.path)?;
                continue;
            }
            break;
        }
        while self
            .cache
            .front()
            .is_some_and(|e| e.log_id.index <= upto.index)
        {
            self.cache.pop_front();
        }
        if self.last.is_some_and(|l| l.index <= upto.index) {
            self.last = None;
        }
        sync_dir(&self.dir)
    }

    /// Drops every entry and the purge point, keeping the vote (which RAFT safety needs):
    /// the node then catches up from the leader like a new one.
    pub fn reset(&mut self) -> Result<(), LogError> {
        for seg in self.segments.drain(..) {
            drop(seg.file);
            remove(&seg.path)?;
        }
        self.cache.clear();
        self.last = None;
        self.committed = None;
        self.committed_dirty = false;
        let meta = Meta {
            vote: self.meta.vote,
            purged: None,
        };
        self.write_meta(&meta)?;
        self.meta = meta;
        sync_dir(&self.dir)
    }

    /// Bytes of segment files (what the log costs on disk).
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Writes a pending committed record and fsyncs (used at shutdown).
    pub fn sync(&mut self) -> Result<(), LogError> {
        if self.committed_dirty && !self.segments.is_empty() {
            self.append(std::iter::empty())?;
        }
        if let Some(seg) = self.segments.back() {
            seg.file.sync_data().map_err(io_err(&seg.path))?;
        }
        Ok(())
    }

    fn read_meta(&mut self) -> Result<Meta, LogError> {
        let path = self.dir.join(META);
        let _ = fs::remove_file(self.dir.join(format!("{META}.tmp")));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Meta::default()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        // Written atomically, so a bad meta file is disk damage: losing the vote is the least
        // bad choice left (the node may vote twice in that term), so say so loudly.
        match decode_meta(&bytes) {
            Some(m) => Ok(m),
            None => {
                warn!(
                    "RAFT log meta file {} is damaged; starting without a saved vote",
                    path.display()
                );
                Ok(Meta::default())
            }
        }
    }

    fn write_meta(&self, meta: &Meta) -> Result<(), LogError> {
        let body = postcard::to_stdvec(meta)?;
        let mut out = Vec::with_capacity(body.len() + 10);
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        write_atomic(&self.dir, META, &out)
    }

    fn recover(&mut self) -> Result<(), LogError> {
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for de in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let de = de.map_err(io_err(&self.dir))?;
            let path = de.path();
            let name = de.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                self.remove_leftover(&path)?;
                continue;
            }
            if let Some(stem) = name.strip_suffix(&format!(".{SEG_EXT}")) {
                match stem.parse::<u64>() {
                    Ok(base) => names.push((base, path)),
                    Err(_) => warn!("RAFT log: ignoring unknown file {}", path.display()),
                }
            }
        }
        names.sort();
        let purged_index = self.meta.purged.map(|p| p.index);
        let mut expect: Option<u64> = None;
        let mut broken = false;
        for (base, path) in names {
            if broken {
                self.remove_leftover(&path)?;
                continue;
            }
            if expect.is_some_and(|e| e != base) {
                warn!(
                    "RAFT log: segment {} does not follow entry {:?}; dropping it and the rest",
                    path.display(),
                    expect.map(|e| e - 1)
                );
                broken = true;
                self.remove_leftover(&path)?;
                continue;
            }
            let (seg, torn) = self.scan_segment(base, &path)?;
            if torn {
                broken = true;
            }
            if let Some(l) = seg.last_index() {
                expect = Some(l + 1);
            }
            let below_purge = purged_index.is_some_and(|p| seg.last_index().is_none_or(|l| l <= p));
            if seg.offsets.is_empty() || below_purge {
                drop(seg.file);
                self.remove_leftover(&seg.path)?;
                continue;
            }
            self.segments.push_back(seg);
        }
        // The entries must start right after the purge point (at 1 when nothing was purged);
        // otherwise openraft would be told of entries it cannot read, and they are useless.
        let expected_first = purged_index.map_or(1, |p| p + 1);
        if let Some(first) = self.segments.front().map(|s| s.base)
            && first > expected_first
        {
            warn!(
                "RAFT log: entries start at {first} but the log must start at {expected_first} (purged up to {purged_index:?}); dropping them"
            );
            for seg in std::mem::take(&mut self.segments) {
                drop(seg.file);
                self.remove_leftover(&seg.path)?;
            }
            self.cache.clear();
            self.last = None;
        }
        if self
            .last
            .is_some_and(|l| purged_index.is_some_and(|p| l.index <= p))
        {
            self.last = None;
        }
        while self
            .cache
            .front()
            .is_some_and(|e| purged_index.is_some_and(|p| e.log_id.index <= p))
        {
            self.cache.pop_front();
        }
        // A lagging committed id is fine; one past a lost tail is not.
        if let Some(c) = self.committed
            && self.last().is_none_or(|l| c.index > l.index)
        {
            self.committed = self.last();
        }
        if self.segments.is_empty() {
            self.cache.clear();
            self.last = None;
        }
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Reads one segment, truncating it at the first torn or damaged record.
    fn scan_segment(&mut self, base: u64, path: &Path) -> Result<(Segment, bool), LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let size = file.metadata().map_err(io_err(path))?.len();
        let mut rd = BufReader::with_capacity(1 << 20, &file);
        let mut seg_offsets = Vec::new();
        let mut off = 0u64;
        let mut next = base;
        let mut torn: Option<String> = None;
        let mut body = Vec::new();
        loop {
            let mut head = [0u8; HEADER];
            match read_full(&mut rd, &mut head).map_err(io_err(path))? {
                0 => break,
                HEADER => {}
                _ => {
                    torn = Some("partial header".into());
                    break;
                }
            }
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if len == 0 || len > MAX_RECORD || off + HEADER as u64 + u64::from(len) > size {
                torn = Some(format!("length {len}"));
                break;
            }
            body.resize(len as usize, 0);
            if read_full(&mut rd, &mut body).map_err(io_err(path))? != body.len() {
                torn = Some("partial record".into());
                break;
            }
            if crc32fast::hash(&body) != crc {
                torn = Some("checksum mismatch".into());
                break;
            }
            match body[0] {
                KIND_ENTRY => {
                    let entry: Entry = match postcard::from_bytes(&body[1..]) {
                        Ok(e) => e,
                        Err(e) => {
                            torn = Some(format!("undecodable entry: {e}"));
                            break;
                        }
                    };
                    if entry.log_id.index != next {
                        torn = Some(format!(
                            "entry {} where {next} was expected",
                            entry.log_id.index
                        ));
                        break;
                    }
                    seg_offsets.push(off);
                    next += 1;
                    self.last = Some(entry.log_id);
                    self.recovery.entries += 1;
                    self.cache.push_back(entry);
                }
                KIND_COMMITTED => {
                    if let Ok(c) = postcard::from_bytes::<LogId>(&body[1..])
                        && Some(c) > self.committed
                    {
                        self.committed = Some(c);
                    }
                }
                k => {
                    torn = Some(format!("unknown record kind {k}"));
                    break;
                }
            }
            off += HEADER as u64 + u64::from(len);
        }
        drop(rd);
        let damaged = torn.is_some();
        if let Some(why) = torn {
            warn!(
                "RAFT log: {} is damaged at offset {off} ({why}); truncating the log there",
                path.display()
            );
            file.set_len(off).map_err(io_err(path))?;
            file.sync_all().map_err(io_err(path))?;
            self.recovery.truncated_bytes += size - off;
        }
        Ok((
            Segment {
                path: path.to_path_buf(),
                file,
                len: off,
                base,
                offsets: seg_offsets,
            },
            damaged,
        ))
    }

    fn remove_leftover(&mut self, path: &Path) -> Result<(), LogError> {
        remove(path)?;
        self.recovery.removed_files.push(path.to_path_buf());
        Ok(())
    }
}

fn encode_record<T: Serialize>(buf: &mut Vec<u8>, kind: u8, value: &T) -> Result<(), LogError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER]);
    buf.push(kind);
    let buf_taken = std::mem::take(buf);
    let mut out = postcard::to_extend(value, buf_taken)?;
    let len = (out.len() - start - HEADER) as u32;
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    *buf = out;
    Ok(())
}

fn decode_meta(bytes: &[u8]) -> Option<Meta> {
    let rest = bytes.strip_prefix(META_MAGIC.as_slice())?;
    let (crc, body) = rest.split_at_checked(4)?;
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    postcard::from_bytes(body).ok()
}

fn read_full(rd: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match rd.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn remove(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes `name` in `dir` through a fsynced temp file and a rename.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, TypeConfig};
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn lid(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn ent(term: u64, index: u64) -> Entry {
        openraft::Entry::<TypeConfig> {
            log_id: lid(term, index),
            payload: EntryPayload::Normal(Command(Bytes::from(format!("cmd-{index}")))),
        }
    }

    fn opts(seg: u64, cache: usize) -> LogFilesOptions {
        LogFilesOptions {
            sync: false,
            cache,
            cache_bytes: usize::MAX,
            segment_bytes: seg,
        }
    }

    fn payload(e: &Entry) -> Vec<u8> {
        match &e.payload {
            EntryPayload::Normal(c) => c.0.to_vec(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn append_read_reopen_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LogFiles::open(dir.path(), opts(200, 4)).unwrap();
            log.append((1..=50).map(|i| ent(1, i))).unwrap();
            assert!(log.segment_count() > 3, "small segments roll");
            let got = log.read(1, 51).unwrap();
            assert_eq!(got.len(), 50);
            for (i, e) in got.iter().enumerate() {
                assert_eq!(e.log_id.index, i as u64 + 1);
                assert_eq!(payload(e), format!("cmd-{}", i + 1).into_bytes());
            }
            log.save_vote(&Vote::new(3, 7)).unwrap();
            log.set_committed(Some(lid(1, 40)));
            log.append([ent(1, 51)]).unwrap();
        }
        let log = LogFiles::open(dir.path(), opts(200, 4)).unwrap();
        assert_eq!(log.recovery().entries, 51);
        assert_eq!(log.last(), Some(lid(1, 51)));
        assert_eq!(log.vote(), Some(Vote::new(3, 7)));
        assert_eq!(log.committed(), Some(lid(1, 40)));
        assert_eq!(log.read(10, 13).unwrap().len(), 3);
        assert_eq!(payload(&log.read(10, 11).unwrap()[0]), b"cmd-10");
        // Past the end: only what exists.
        assert_eq!(log.read(50, 100).unwrap().len(), 2);
    }

    #[test]
    fn torn_tail_is_truncated_and_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let seg_path;
        {
            let mut log = LogFiles::open(dir.path(), opts(1 << 20, 8)).unwrap();
            log.append((1..=10).map(|i| ent(1, i))).unwrap();
            seg_path = log.segments[0].path.clone();
        }
        // A crash mid-write: cut the last record in half, and add garbage to another copy.
        let len = fs::metadata(&seg_path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg_path).unwrap();
        f.set_len(len - 5).unwrap();
        drop(f);
        fs::write(dir.path().join("meta.tmp"), b"junk").unwrap();
        let mut log = LogFiles::open(dir.path(), opts(1 << 20, 8)).unwrap();
        assert_eq!(log.last(), Some(lid(1, 9)));
        assert!(log.recovery().truncated_bytes > 0);
        assert!(!dir.path().join("meta.tmp").exists());
        log.append([ent(2, 10)]).unwrap();
        drop(log);
        let log = LogFiles::open(dir.path(), opts(1 << 20, 8)).unwrap();
        assert_eq!(log.last(), Some(lid(2, 10)));
        assert_eq!(log.recovery().truncated_bytes, 0);
    }

    #[test]
    fn flipped_bit_in_middle_segment_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf>;
        {
            let mut log = LogFiles::open(dir.path(), opts(100, 2)).unwrap();
            log.append((1..=30).map(|i| ent(1, i))).unwrap();
            paths = log.segments.iter().map(|s| s.path.clone()).collect();
        }
        assert!(paths.len() >= 3);
        let mut bytes = fs::read(&paths[1]).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        fs::write(&paths[1], bytes).unwrap();
        let log = LogFiles::open(dir.path(), opts(100, 2)).unwrap();
        let last = log.last().unwrap().index;
        assert!(last < 30, "log ends before the damage: {last}");
        assert_eq!(log.read(1, last + 1).unwrap().len() as u64, last);
        assert!(!paths[2].exists(), "segments after the damage are gone");
    }

    #[test]
    fn truncate_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFiles::open(dir.path(), opts(150, 3)).unwrap();
        log.append((1..=40).map(|i| ent(1, i))).unwrap();
        let segs = log.segment_count();
        // Conflict: drop 25.. and write a newer term there.
        log.truncate(25).unwrap();
        assert_eq!(log.last(), Some(lid(1, 24)));
        log.append((25..=30).map(|i| ent(2, i))).unwrap();
        assert_eq!(log.read(24, 26).unwrap()[1].log_id, lid(2, 25));
        // Purge deletes whole segments below the point.
        let bytes_before = log.disk_bytes();
        log.purge(lid(1, 20)).unwrap();
        assert!(log.segment_count() < segs);
        assert!(log.disk_bytes() < bytes_before);
        assert_eq!(log.read(1, 31).unwrap().first().unwrap().log_id.index, 21);
        drop(log);
        let mut log = LogFiles::open(dir.path(), opts(150, 3)).unwrap();
        assert_eq!(log.purged(), Some(lid(1, 20)));
        assert_eq!(log.last(), Some(lid(2, 30)));
        // Purge beyond the end (a snapshot install): the log is empty, appends go on from it.
        log.purge(lid(3, 100)).unwrap();
        assert_eq!(log.last(), Some(lid(3, 100)));
        assert_eq!(log.segment_count(), 0);
        log.append([ent(3, 101)]).unwrap();
        drop(log);
        let log = LogFiles::open(dir.path(), opts(150, 3)).unwrap();
        assert_eq!(log.last(), Some(lid(3, 101)));
        assert_eq!(log.read(0, 200).unwrap().len(), 1);
    }

    #[test]
    fn entries_that_do_not_start_the_log_are_dropped() {
        // Found by the raft_log fuzz target: with the first segment gone and nothing purged,
        // the log claimed entries 1.. while only the later ones could be read.
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf>;
        {
            let mut log = LogFiles::open(dir.path(), opts(100, 2)).unwrap();
            log.append((1..=30).map(|i| ent(1, i))).unwrap();
            paths = log.segments.iter().map(|s| s.path.clone()).collect();
        }
        assert!(paths.len() >= 2);
        fs::remove_file(&paths[0]).unwrap();
        let log = LogFiles::open(dir.path(), opts(100, 2)).unwrap();
        assert_eq!(log.last(), None);
        assert_eq!(log.segment_count(), 0);
        assert!(paths.iter().all(|p| !p.exists()));
        // A log that starts at 0 (openraft's initial membership entry) is whole.
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LogFiles::open(dir.path(), opts(100, 2)).unwrap();
            log.append((0..=5).map(|i| ent(1, i))).unwrap();
        }
        let log = LogFiles::open(dir.path(), opts(100, 2)).unwrap();
        assert_eq!(log.last(), Some(lid(1, 5)));
        assert_eq!(log.read(0, 6).unwrap().len(), 6);
    }

    #[test]
    fn rejects_gaps_and_resets_keep_the_vote() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFiles::open(dir.path(), opts(1 << 20, 3)).unwrap();
        log.append((1..=3).map(|i| ent(1, i))).unwrap();
        assert!(matches!(
            log.append([ent(1, 5)]),
            Err(LogError::NotContiguous { got: 5, .. })
        ));
        log.save_vote(&Vote::new(4, 2)).unwrap();
        log.reset().unwrap();
        assert_eq!(log.last(), None);
        drop(log);
        let log = LogFiles::open(dir.path(), opts(1 << 20, 3)).unwrap();
        assert_eq!(log.vote(), Some(Vote::new(4, 2)));
        assert_eq!(log.last(), None);
    }
}
