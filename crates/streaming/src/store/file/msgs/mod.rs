//! The message log of one channel: a run of segment files with their indexes.
//!
//! * this module: the log's segments and writing (append, roll, index, preallocation);
//! * `read`: index lookups and batched reads of records (decoded or in wire form);
//! * `limits`: dropping old messages (count, bytes, age) and sync tickets;
//! * `store`: [`FileMsgStore`], the `MsgStore` over one locked log;
//! * `recovery`: opening a log after a crash (torn tails, corrupt records, index rebuild).

mod limits;
mod read;
mod recovery;
mod store;

use recovery::recover;

pub(crate) use store::FileMsgStore;

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use prost::Message;

use super::fds::{FdCache, FileRef};
use super::record::{
    ChunkReader, DATA_MAGIC, IDX_ENTRY_LEN, IDX_MAGIC, IdxEntry, MIN_MSG_RECORD, MSG_OVERHEAD,
    Parsed, REC_HEADER_LEN, SEG_HEADER_LEN, check_header, decode_at, encode_record, seg_header,
    sync_dir,
};
use super::{RecoveryCheck, SyncPolicy};
use crate::proto::{MsgProto, peek_msg_proto};
use crate::store::{
    Corruption, EncodedMsg, MsgStore, MsgStoreState, NewMessage, Result, StoreError,
};

/// Index entries read at once to refill the head cache used by limits enforcement.
const HEAD_BATCH: u64 = 256;
/// Index entries read at once by `read_batch`.
const BATCH_ENTRIES: u64 = 1024;

/// Options of one channel's log, derived from the store options and the channel limits.
#[derive(Debug, Clone)]
pub(crate) struct LogOptions {
    pub(crate) sync: SyncPolicy,
    pub(crate) slice_max_msgs: u64,
    pub(crate) slice_max_bytes: u64,
    pub(crate) slice_max_age: i64,
    pub(crate) write_buffer: usize,
    pub(crate) read_buffer: usize,
    pub(crate) check: RecoveryCheck,
    pub(crate) max_msgs: u64,
    pub(crate) max_bytes: u64,
    pub(crate) max_age: i64,
}

fn seg_paths(dir: &Path, first_seq: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("msgs.{first_seq}.dat")),
        dir.join(format!("msgs.{first_seq}.idx")),
    )
}

fn parse_seg_name(name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix("msgs.")?;
    let (num, ext) = rest.split_once('.')?;
    let n: u64 = num.parse().ok()?;
    if n == 0 || num != n.to_string() {
        return None;
    }
    match ext {
        "dat" => Some((n, true)),
        "idx" => Some((n, false)),
        _ => None,
    }
}

/// The data file of the last segment is extended with zeros this far ahead of its records
/// when the store fsyncs. Records then overwrite blocks that exist, so the `fdatasync` after
/// them flushes data only; appending would change the file size, which costs a journal commit
/// on every flush (ext4: 125-160 µs against 85-90 µs per small flush on the benchmark
/// machine). The zeros are cut off when the segment is sealed or the store closed; after a
/// crash, recovery treats them as the end of the log (a zero record length is never valid).
/// Only small writes pay for it: for large ones the journal commit is a small part of the
/// flush, and writing every block twice (zeros, then records) costs more than it saves.
const PREALLOC_CHUNK: u64 = 1 << 20;
const PREALLOC_MAX_WRITE: usize = 32 * 1024;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// One segment: `msgs.<first_seq>.dat` and its index `msgs.<first_seq>.idx`.
#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// Records in the segment (on disk and buffered).
    count: u64,
    /// Records removed from the front by limits (only the first segment has any).
    removed: u64,
    /// Length of the data file including buffered records.
    data_len: u64,
    /// Bytes of the data file actually written.
    written: u64,
    /// Length of the data file: `written` plus zeros written ahead (see [`PREALLOC_CHUNK`]).
    allocated: u64,
    /// Index entries actually written.
    idx_written: u64,
    first_ts: i64,
    last_ts: i64,
    /// Accounted bytes of the records not removed.
    live_bytes: u64,
    dat: FileRef,
    idx: FileRef,
}

impl Segment {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.count
    }

    fn live(&self) -> u64 {
        self.count - self.removed
    }

    /// Bytes counted against `slice_max_bytes`: data plus index.
    fn size(&self) -> u64 {
        self.data_len - SEG_HEADER_LEN + self.count * IDX_ENTRY_LEN
    }
}

struct MsgLog {
    channel: String,
    dir: PathBuf,
    fds: Arc<FdCache>,
    o: LogOptions,
    segs: VecDeque<Segment>,
    /// First sequence held, `last + 1` when none.
    first: u64,
    last: u64,
    msgs: u64,
    bytes: u64,
    last_ts: i64,
    /// (size, timestamp) of the messages from `first` on, read ahead from the index.
    head: VecDeque<(u32, i64)>,
    /// Records of the last segment not yet written.
    wbuf: Vec<u8>,
    /// Index entries of the last segment not yet in its index file. An entry is written only
    /// once the data it describes has been fsynced (except under `SyncPolicy::Never`), so the
    /// entries on disk always describe durable data: recovery treats damage they cover as
    /// corruption, and damage after them as a torn tail.
    pending: VecDeque<IdxEntry>,
    write_gen: u64,
    synced_gen: u64,
    last_sync: Instant,
    closed: bool,
    /// Where records are read into. What a read hands out shares it; once those messages are
    /// gone (delivered), the next read takes the same memory back instead of fresh pages.
    rbuf: BytesMut,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |e| StoreError::io(path, e)
}

impl MsgLog {
    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// Writes the buffered records of the last segment (no fsync).
    fn write_out(&mut self) -> Result<()> {
        let Some(seg) = self.segs.back_mut() else {
            return Ok(());
        };
        if !self.wbuf.is_empty() {
            let f = self.fds.get(&seg.dat).map_err(io_err(seg.dat.path()))?;
            f.write_all_at(&self.wbuf, seg.written)
                .map_err(io_err(seg.dat.path()))?;
            let small = self.wbuf.len() <= PREALLOC_MAX_WRITE;
            seg.written += self.wbuf.len() as u64;
            seg.allocated = seg.allocated.max(seg.written);
            self.wbuf.clear();
            self.write_gen += 1;
            if self.o.sync != SyncPolicy::Never
                && small
                && seg.written > seg.allocated.saturating_sub(4096)
            {
                // Zeros ahead, synced with these records (the size changes once per chunk).
                let from = seg.written.max(seg.allocated);
                let to = (from / PREALLOC_CHUNK + 1) * PREALLOC_CHUNK;
                let mut at = from;
                while at < to {
                    let n = (to - at).min(ZEROS.len() as u64);
                    f.write_all_at(&ZEROS[..n as usize], at)
                        .map_err(io_err(seg.dat.path()))?;
                    at += n;
                }
                seg.allocated = to;
            }
        }
        Ok(())
    }

    /// Writes the pending index entries of the last segment up to sequence `upto` (their data
    /// must be durable already, or the policy be `Never`).
    fn write_index(&mut self, upto: u64) -> Result<()> {
        let Some(seg) = self.segs.back_mut() else {
            return Ok(());
        };
        let n = self.pending.iter().take_while(|e| e.seq <= upto).count();
        if n == 0 {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(n * IDX_ENTRY_LEN as usize);
        for e in self.pending.iter().take(n) {
            e.encode(&mut buf);
        }
        let f = self.fds.get(&seg.idx).map_err(io_err(seg.idx.path()))?;
        let at = SEG_HEADER_LEN + seg.idx_written * IDX_ENTRY_LEN;
        f.write_all_at(&buf, at).map_err(io_err(seg.idx.path()))?;
        seg.idx_written += n as u64;
        self.pending.drain(..n);
        Ok(())
    }

    /// Truncates the zeros written ahead in the last segment (not synced here: sealing and
    /// closing sync afterwards).
    fn cut_zeros(&mut self) -> Result<()> {
        let Some(seg) = self.segs.back_mut() else {
            return Ok(());
        };
        if seg.allocated > seg.written {
            let f = self.fds.get(&seg.dat).map_err(io_err(seg.dat.path()))?;
            f.set_len(seg.written).map_err(io_err(seg.dat.path()))?;
            seg.allocated = seg.written;
        }
        Ok(())
    }

    fn release_buffers(&mut self) {
        if self.wbuf.capacity() > 64 << 10 {
            self.wbuf = Vec::new();
        }
    }

    fn create_segment(&mut self, first_seq: u64) -> Result<Segment> {
        let (dp, ip) = seg_paths(&self.dir, first_seq);
        let dat = self.fds.register(dp);
        let idx = self.fds.register(ip);
        for (r, magic) in [(&dat, DATA_MAGIC), (&idx, IDX_MAGIC)] {
            let f = self.fds.create(r).map_err(io_err(r.path()))?;
            f.write_all_at(&seg_header(magic, first_seq), 0)
                .map_err(io_err(r.path()))?;
            if self.o.sync != SyncPolicy::Never {
                f.sync_data().map_err(io_err(r.path()))?;
            }
        }
        if self.o.sync != SyncPolicy::Never {
            sync_dir(&self.dir)?;
        }
        Ok(Segment {
            first_seq,
            count: 0,
            removed: 0,
            data_len: SEG_HEADER_LEN,
            written: SEG_HEADER_LEN,
            allocated: SEG_HEADER_LEN,
            idx_written: 0,
            first_ts: 0,
            last_ts: 0,
            live_bytes: 0,
            dat,
            idx,
        })
    }

    /// Seals the last segment (written and, unless the policy is `Never`, synced) and starts
    /// a new one at `first_seq`.
    fn roll(&mut self, first_seq: u64) -> Result<()> {
        self.write_out()?;
        self.cut_zeros()?;
        if let Some(seg) = self.segs.back() {
            let sync = self.o.sync != SyncPolicy::Never;
            let (dat, idx) = (seg.dat.clone(), seg.idx.clone());
            if sync {
                let f = self.fds.get(&dat).map_err(io_err(dat.path()))?;
                f.sync_data().map_err(io_err(dat.path()))?;
                self.synced_gen = self.write_gen;
            }
            self.write_index(u64::MAX)?;
            if sync {
                let f = self.fds.get(&idx).map_err(io_err(idx.path()))?;
                f.sync_data().map_err(io_err(idx.path()))?;
            }
        }
        let seg = self.create_segment(first_seq)?;
        self.segs.push_back(seg);
        Ok(())
    }

    fn needs_roll(&self, ts: i64) -> bool {
        match self.segs.back() {
            None => true,
            Some(s) if s.count == 0 => false,
            Some(s) => {
                (self.o.slice_max_msgs > 0 && s.count >= self.o.slice_max_msgs)
                    || (self.o.slice_max_bytes > 0 && s.size() >= self.o.slice_max_bytes)
                    || (self.o.slice_max_age > 0
                        && ts.saturating_sub(s.first_ts) >= self.o.slice_max_age)
            }
        }
    }

    /// Appends `m`, whose sequence must be `last + 1`.
    /// Segments end at `first_seq + count`, so 2^64 - 1 is no sequence a log can hold.
    fn check_sequence(&self, seq: u64) -> Result<()> {
        if seq == u64::MAX {
            return Err(StoreError::SequencesExhausted {
                channel: self.channel.clone(),
            });
        }
        Ok(())
    }

    fn push(&mut self, m: &MsgProto) -> Result<()> {
        debug_assert_eq!(m.sequence, self.last + 1);
        self.check_sequence(m.sequence)?;
        if self.needs_roll(m.timestamp) {
            self.roll(m.sequence)?;
        }
        let Some(seg) = self.segs.back_mut() else {
            return Err(StoreError::Closed);
        };
        let offset = seg.data_len;
        let size = encode_record(&mut self.wbuf, m, None)?;
        self.pending.push_back(IdxEntry {
            seq: m.sequence,
            offset,
            timestamp: m.timestamp,
            size: size as u32,
        });
        let acc = size + MSG_OVERHEAD;
        seg.count += 1;
        seg.data_len += REC_HEADER_LEN + size;
        if seg.count == 1 {
            seg.first_ts = m.timestamp;
        }
        seg.last_ts = m.timestamp;
        seg.live_bytes += acc;
        if self.msgs == 0 {
            self.first = m.sequence;
            self.head.clear();
        }
        self.msgs += 1;
        self.bytes += acc;
        self.last = m.sequence;
        self.last_ts = self.last_ts.max(m.timestamp);
        if self.wbuf.len() >= self.o.write_buffer {
            self.write_out()?;
        }
        Ok(())
    }

    fn remove_files(&self, seg: &Segment) -> Result<()> {
        self.fds.unregister(&seg.dat);
        self.fds.unregister(&seg.idx);
        for r in [&seg.dat, &seg.idx] {
            match fs::remove_file(r.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(StoreError::io(r.path(), e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Drops the first segment whole.
    fn drop_front(&mut self) -> Result<()> {
        let Some(seg) = self.segs.pop_front() else {
            return Ok(());
        };
        if self.segs.is_empty() {
            self.wbuf.clear();
            self.pending.clear();
        }
        self.msgs -= seg.live();
        self.bytes -= seg.live_bytes;
        self.first = self
            .segs
            .front()
            .map_or(self.last + 1, |s| s.first_seq + s.removed);
        self.head.clear();
        self.remove_files(&seg)
    }

    /// Removes every segment and starts an empty one at `next` (`empty` and sequence jumps).
    fn restart_at(&mut self, next: u64) -> Result<()> {
        while !self.segs.is_empty() {
            self.drop_front()?;
        }
        let seg = self.create_segment(next)?;
        self.segs.push_back(seg);
        self.first = next;
        self.last = next - 1;
        self.msgs = 0;
        self.bytes = 0;
        Ok(())
    }
}
