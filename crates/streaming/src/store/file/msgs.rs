//! The message log of one channel: a run of segment files with their indexes.

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
    ChunkReader, DATA_MAGIC, IDX_ENTRY_LEN, IDX_MAGIC, IdxEntry, MSG_OVERHEAD, Parsed,
    REC_HEADER_LEN, SEG_HEADER_LEN, check_header, decode_at, encode_record, seg_header, sync_dir,
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
    fn push(&mut self, m: &MsgProto) -> Result<()> {
        debug_assert_eq!(m.sequence, self.last + 1);
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

    /// Index entries `from .. from + n` of segment `i`, checked. An index entry that fails
    /// its checks gets the segment's index rebuilt from the data (the index is derived data);
    /// only damage in the data itself is an error.
    fn read_entries(&mut self, i: usize, from: u64, n: u64) -> Result<Vec<IdxEntry>> {
        match self.try_read_entries(i, from, n)? {
            Ok(entries) => Ok(entries),
            Err(_) => {
                self.rebuild_index(i)?;
                self.try_read_entries(i, from, n)?
                    .map_err(|(off, kind)| StoreError::corrupt(self.segs[i].idx.path(), off, kind))
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn try_read_entries(
        &mut self,
        i: usize,
        from: u64,
        n: u64,
    ) -> Result<std::result::Result<Vec<IdxEntry>, (u64, Corruption)>> {
        let seg = &self.segs[i];
        let in_file_end = seg.first_seq + seg.idx_written;
        let file_n = in_file_end.saturating_sub(from).min(n);
        let mut out = Vec::with_capacity(n as usize);
        if file_n > 0 {
            let path = seg.idx.path();
            let at = SEG_HEADER_LEN + (from - seg.first_seq) * IDX_ENTRY_LEN;
            let mut buf = vec![0u8; (file_n * IDX_ENTRY_LEN) as usize];
            let f = self.fds.get(&seg.idx).map_err(io_err(path))?;
            if let Err(e) = f.read_exact_at(&mut buf, at) {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    return Ok(Err((at, Corruption::Truncated)));
                }
                return Err(StoreError::io(path, e));
            }
            for (j, chunk) in buf.chunks_exact(IDX_ENTRY_LEN as usize).enumerate() {
                let off = at + j as u64 * IDX_ENTRY_LEN;
                let Some(e) = IdxEntry::decode(chunk) else {
                    return Ok(Err((off, Corruption::IndexMismatch)));
                };
                if e.seq != from + j as u64 {
                    let kind = Corruption::SequenceMismatch {
                        expected: from + j as u64,
                        found: e.seq,
                    };
                    return Ok(Err((off, kind)));
                }
                out.push(e);
            }
        }
        if file_n < n {
            // Entries of the last segment still in memory.
            let skip = (from + file_n - in_file_end) as usize;
            out.extend(self.pending.iter().skip(skip).take((n - file_n) as usize));
        }
        Ok(Ok(out))
    }

    /// Rewrites the index entries of segment `i` that were in its file, from its data.
    fn rebuild_index(&mut self, i: usize) -> Result<()> {
        let seg = &self.segs[i];
        let dp = seg.dat.path();
        let df = self.fds.get(&seg.dat).map_err(io_err(dp))?;
        let mut r = ChunkReader::new(&df, seg.written, self.o.read_buffer);
        let mut buf = seg_header(IDX_MAGIC, seg.first_seq).to_vec();
        let mut pos = SEG_HEADER_LEN;
        for seq in seg.first_seq..seg.first_seq + seg.idx_written {
            match r.record_at(pos, false).map_err(io_err(dp))? {
                Parsed::Record { size, .. } => {
                    let payload = r.payload(pos, size).map_err(io_err(dp))?;
                    let m: MsgProto = decode_at(dp, pos, payload)?;
                    if m.sequence != seq {
                        let kind = Corruption::SequenceMismatch {
                            expected: seq,
                            found: m.sequence,
                        };
                        return Err(StoreError::corrupt(dp, pos, kind));
                    }
                    IdxEntry {
                        seq,
                        offset: pos,
                        timestamp: m.timestamp,
                        size: size as u32,
                    }
                    .encode(&mut buf);
                    pos += REC_HEADER_LEN + size;
                }
                Parsed::End => return Err(StoreError::corrupt(dp, pos, Corruption::Truncated)),
                Parsed::Bad { kind, .. } => return Err(StoreError::corrupt(dp, pos, kind)),
            }
        }
        drop(r);
        drop(df);
        let f = self.fds.create(&seg.idx).map_err(io_err(seg.idx.path()))?;
        f.write_all_at(&buf, 0).map_err(io_err(seg.idx.path()))?;
        Ok(())
    }

    /// The messages of consecutive `entries` of segment `i`, read with one positional read and
    /// checked (offsets, lengths, CRC, then the sequence `decode` finds in each record against
    /// the index). `decode` gets each record's payload, a slice of the shared read buffer.
    fn read_records<T>(
        &mut self,
        i: usize,
        entries: &[IdxEntry],
        decode: impl Fn(Bytes) -> std::result::Result<(u64, T), Corruption>,
    ) -> Result<Vec<T>> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        if last.end() > self.segs[i].written {
            self.write_out()?;
        }
        let seg = &self.segs[i];
        let path = seg.dat.path();
        let start = first.offset;
        self.rbuf.clear();
        self.rbuf.resize((last.end() - start) as usize, 0);
        let file = self.fds.get(&seg.dat).map_err(io_err(path))?;
        file.read_exact_at(&mut self.rbuf, start)
            .map_err(io_err(path))?;
        drop(file);
        let buf = self.rbuf.split().freeze();
        let mut out = Vec::with_capacity(entries.len());
        let mut expected_off = start;
        for e in entries {
            let corrupt = |kind| StoreError::corrupt(path, e.offset, kind);
            if e.offset != expected_off {
                return Err(corrupt(Corruption::IndexMismatch));
            }
            let p = (e.offset - start) as usize;
            let word = u32::from_le_bytes([buf[p], buf[p + 1], buf[p + 2], buf[p + 3]]);
            let crc = u32::from_le_bytes([buf[p + 4], buf[p + 5], buf[p + 6], buf[p + 7]]);
            if word != e.size {
                return Err(corrupt(Corruption::IndexMismatch));
            }
            let payload = buf.slice(p + 8..p + 8 + e.size as usize);
            let computed = crc32fast::hash(&payload);
            if computed != crc {
                return Err(corrupt(Corruption::BadCrc {
                    expected: crc,
                    computed,
                }));
            }
            let (found, item) = decode(payload).map_err(corrupt)?;
            if found != e.seq {
                return Err(corrupt(Corruption::SequenceMismatch {
                    expected: e.seq,
                    found,
                }));
            }
            out.push(item);
            expected_off = e.end();
        }
        Ok(out)
    }

    /// The messages of consecutive `entries` of segment `i`, decoded.
    fn read_data(&mut self, i: usize, entries: &[IdxEntry]) -> Result<Vec<MsgProto>> {
        self.read_records(i, entries, |payload| {
            MsgProto::decode(payload)
                .map(|m| (m.sequence, m))
                .map_err(|e| Corruption::Decode(e.to_string()))
        })
    }

    /// The messages of consecutive `entries` of segment `i` as stored (encoded `MsgProto`s,
    /// as a first delivery sends them), checked but not decoded.
    fn read_encoded(&mut self, i: usize, entries: &[IdxEntry]) -> Result<Vec<EncodedMsg>> {
        self.read_records(i, entries, |payload| {
            let (sequence, data_len) = peek_msg_proto(&payload)
                .ok_or_else(|| Corruption::Decode("malformed MsgProto".into()))?;
            Ok((
                sequence,
                EncodedMsg {
                    sequence,
                    data_len,
                    encoded: payload,
                },
            ))
        })
    }

    /// Up to `max_msgs` consecutive messages from `start`, within `max_bytes` (at least one),
    /// each segment's part read by `read`.
    fn batch<T>(
        &mut self,
        start: u64,
        max_msgs: usize,
        max_bytes: usize,
        read: impl Fn(&mut MsgLog, usize, &[IdxEntry]) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        self.check_open()?;
        let mut out = Vec::new();
        if self.msgs == 0 {
            return Ok(out);
        }
        let mut seq = start.max(self.first);
        let mut budget = 0usize;
        while out.len() < max_msgs && seq <= self.last {
            let i = self.seg_index(seq);
            let end = self.segs[i].end_seq();
            let n = ((max_msgs - out.len()) as u64)
                .min(end - seq)
                .min(BATCH_ENTRIES);
            let entries = self.read_entries(i, seq, n)?;
            let mut k = 0;
            for e in &entries {
                let size = e.size as usize;
                if budget + size > max_bytes && (k > 0 || !out.is_empty()) {
                    break;
                }
                budget += size;
                k += 1;
            }
            out.extend(read(self, i, &entries[..k])?);
            seq += k as u64;
            if k < entries.len() {
                break;
            }
        }
        Ok(out)
    }

    fn seg_index(&self, seq: u64) -> usize {
        self.segs
            .partition_point(|s| s.first_seq <= seq)
            .saturating_sub(1)
    }

    /// (size, timestamp) of the first held message.
    fn head_entry(&mut self) -> Result<(u32, i64)> {
        if let Some(h) = self.head.front() {
            return Ok(*h);
        }
        let end = self.segs[0].end_seq();
        let n = HEAD_BATCH.min(end - self.first);
        let entries = self.read_entries(0, self.first, n)?;
        self.head
            .extend(entries.iter().map(|e| (e.size, e.timestamp)));
        self.head.front().copied().ok_or(StoreError::Closed)
    }

    fn remove_first(&mut self) -> Result<()> {
        let (size, _) = self.head_entry()?;
        self.head.pop_front();
        let acc = u64::from(size) + MSG_OVERHEAD;
        let seg = &mut self.segs[0];
        seg.removed += 1;
        seg.live_bytes -= acc;
        self.msgs -= 1;
        self.bytes -= acc;
        self.first += 1;
        if self.segs[0].live() == 0 && self.segs.len() > 1 {
            self.drop_front()?;
        }
        Ok(())
    }

    /// Applies the limits: age (if `now` is given), then count and bytes keeping the newest
    /// message. Whole segments are dropped without reading their index when they must go.
    fn enforce(&mut self, now: Option<i64>) -> Result<()> {
        let cutoff = now
            .filter(|_| self.o.max_age > 0)
            .map(|n| n.saturating_sub(self.o.max_age));
        loop {
            if self.segs.len() > 1 && self.segs[0].live() == 0 {
                self.drop_front()?;
                continue;
            }
            if self.msgs == 0 {
                return Ok(());
            }
            let (max_msgs, max_bytes) = (self.o.max_msgs, self.o.max_bytes);
            let pressure = self.msgs > 1
                && ((max_msgs > 0 && self.msgs > max_msgs)
                    || (max_bytes > 0 && self.bytes > max_bytes));
            if self.segs.len() > 1 {
                let s = &self.segs[0];
                let rest_msgs = self.msgs - s.live();
                let rest_bytes = self.bytes - s.live_bytes;
                let whole = (pressure
                    && rest_msgs >= 1
                    && ((max_msgs > 0 && rest_msgs >= max_msgs)
                        || (max_bytes > 0 && rest_bytes >= max_bytes)))
                    || cutoff.is_some_and(|c| s.last_ts <= c);
                if whole {
                    self.drop_front()?;
                    continue;
                }
            }
            let expired = match cutoff {
                Some(c) => self.head_entry()?.1 <= c,
                None => false,
            };
            if !(pressure || expired) {
                return Ok(());
            }
            self.remove_first()?;
        }
    }

    fn store_msg(&mut self, m: &MsgProto) -> Result<()> {
        if m.sequence > self.last + 1 {
            if self.msgs > 0 {
                return Err(StoreError::SequenceGap {
                    channel: self.channel.clone(),
                    expected: self.last + 1,
                    got: m.sequence,
                });
            }
            self.restart_at(m.sequence)?;
        }
        self.push(m)?;
        self.enforce(Some(m.timestamp))
    }

    /// What a flush must fsync, if anything, to do it outside the lock. When no fsync is
    /// needed (or the policy is `Never`), the index entries of durable data are written now.
    fn sync_ticket(&mut self, force: bool) -> Result<Option<SyncTicket>> {
        let durable = self.write_gen == self.synced_gen;
        if durable || (self.o.sync == SyncPolicy::Never && !force) {
            self.write_index(self.last)?;
            return Ok(None);
        }
        if !(force || self.o.sync.sync_now(self.last_sync)) {
            return Ok(None);
        }
        let Some(seg) = self.segs.back() else {
            return Ok(None);
        };
        let file = self.fds.get(&seg.dat).map_err(io_err(seg.dat.path()))?;
        Ok(Some(SyncTicket {
            file,
            path: seg.dat.path().to_owned(),
            generation: self.write_gen,
            upto: self.last,
        }))
    }
}

struct SyncTicket {
    file: Arc<super::fds::OpenFile>,
    path: PathBuf,
    generation: u64,
    /// Last sequence whose data the fsync covers.
    upto: u64,
}

/// The file message log of one channel.
pub(crate) struct FileMsgStore {
    log: Mutex<MsgLog>,
}

impl FileMsgStore {
    /// Opens (recovering whatever is in `dir`) the log of `channel`, then applies the limits
    /// at `now`.
    pub(crate) fn open(
        channel: &str,
        dir: &Path,
        fds: Arc<FdCache>,
        o: LogOptions,
        now: i64,
    ) -> Result<Self> {
        let mut log = MsgLog {
            channel: channel.to_owned(),
            dir: dir.to_owned(),
            fds,
            o,
            segs: VecDeque::new(),
            first: 1,
            last: 0,
            msgs: 0,
            bytes: 0,
            last_ts: 0,
            head: VecDeque::new(),
            wbuf: Vec::new(),
            pending: VecDeque::new(),
            write_gen: 0,
            synced_gen: 0,
            last_sync: Instant::now(),
            closed: false,
            rbuf: BytesMut::new(),
        };
        recover(&mut log)?;
        log.enforce(Some(now))?;
        Ok(FileMsgStore {
            log: Mutex::new(log),
        })
    }

    fn flush_impl(&self, force: bool) -> Result<()> {
        let ticket = {
            let mut log = self.log.lock();
            log.check_open()?;
            log.write_out()?;
            log.release_buffers();
            log.sync_ticket(force)?
        };
        let Some(t) = ticket else { return Ok(()) };
        t.file.sync_data().map_err(|e| StoreError::io(&t.path, e))?;
        drop(t.file);
        let mut log = self.log.lock();
        log.synced_gen = log.synced_gen.max(t.generation);
        log.last_sync = Instant::now();
        if log.closed {
            return Ok(());
        }
        // The data up to `upto` is durable: its index entries can be written.
        log.write_index(t.upto)
    }
}

impl MsgStore for FileMsgStore {
    fn append(&self, msg: NewMessage) -> Result<MsgProto> {
        let mut log = self.log.lock();
        log.check_open()?;
        let m = msg.stamp(log.last + 1, log.channel.clone(), log.last_ts);
        log.push(&m)?;
        log.enforce(Some(m.timestamp))?;
        Ok(m)
    }

    fn store(&self, msg: &MsgProto) -> Result<u64> {
        let mut log = self.log.lock();
        log.check_open()?;
        if msg.sequence <= log.last {
            return Ok(msg.sequence);
        }
        if msg.redelivered || msg.redelivery_count != 0 {
            let m = MsgProto {
                redelivered: false,
                redelivery_count: 0,
                ..msg.clone()
            };
            log.store_msg(&m)?;
        } else {
            log.store_msg(msg)?;
        }
        Ok(msg.sequence)
    }

    fn lookup(&self, seq: u64) -> Result<Option<MsgProto>> {
        let mut log = self.log.lock();
        log.check_open()?;
        if log.msgs == 0 || seq < log.first || seq > log.last {
            return Ok(None);
        }
        let i = log.seg_index(seq);
        let e = log.read_entries(i, seq, 1)?;
        Ok(log.read_data(i, &e)?.pop())
    }

    fn read_batch(&self, start: u64, max_msgs: usize, max_bytes: usize) -> Result<Vec<MsgProto>> {
        self.log
            .lock()
            .batch(start, max_msgs, max_bytes, MsgLog::read_data)
    }

    fn read_batch_encoded(
        &self,
        start: u64,
        max_msgs: usize,
        max_bytes: usize,
    ) -> Result<Vec<EncodedMsg>> {
        self.log
            .lock()
            .batch(start, max_msgs, max_bytes, MsgLog::read_encoded)
    }

    fn state(&self) -> MsgStoreState {
        let log = self.log.lock();
        MsgStoreState {
            first: log.first,
            last: log.last,
            msgs: log.msgs,
            bytes: log.bytes,
        }
    }

    fn sequence_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        let mut log = self.log.lock();
        log.check_open()?;
        if log.msgs == 0 {
            return Ok(log.last + 1);
        }
        for i in 0..log.segs.len() {
            let s = &log.segs[i];
            if s.live() == 0 || s.last_ts < timestamp {
                continue;
            }
            let (mut lo, mut hi) = (s.first_seq + s.removed, s.end_seq());
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let e = log.read_entries(i, mid, 1)?;
                if e[0].timestamp < timestamp {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            return Ok(lo);
        }
        Ok(log.last + 1)
    }

    fn expire(&self, now: i64) -> Result<Option<i64>> {
        let mut log = self.log.lock();
        log.check_open()?;
        log.enforce(Some(now))?;
        if log.o.max_age <= 0 || log.msgs == 0 {
            return Ok(None);
        }
        let max_age = log.o.max_age;
        Ok(Some(log.head_entry()?.1.saturating_add(max_age)))
    }

    fn flush(&self) -> Result<()> {
        self.flush_impl(false)
    }

    fn sync(&self) -> Result<()> {
        self.flush_impl(true)
    }

    fn empty(&self) -> Result<()> {
        let mut log = self.log.lock();
        log.check_open()?;
        let next = log.last + 1;
        log.restart_at(next)
    }

    fn close(&self) -> Result<()> {
        let res = if self.log.lock().closed {
            Ok(())
        } else {
            self.flush_impl(true).and_then(|()| {
                // A cleanly closed segment has no zeros after its records.
                let mut log = self.log.lock();
                let cut = log.segs.back().is_some_and(|s| s.allocated > s.written);
                log.cut_zeros()?;
                if cut
                    && log.o.sync != SyncPolicy::Never
                    && let Some(seg) = log.segs.back()
                {
                    let f = log.fds.get(&seg.dat).map_err(io_err(seg.dat.path()))?;
                    f.sync_data().map_err(io_err(seg.dat.path()))?;
                }
                Ok(())
            })
        };
        let mut log = self.log.lock();
        log.closed = true;
        for s in &log.segs {
            log.fds.unregister(&s.dat);
            log.fds.unregister(&s.idx);
        }
        res
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------------

fn recover(log: &mut MsgLog) -> Result<()> {
    let dir = log.dir.clone();
    let mut dats = BTreeSet::new();
    let mut idxs = BTreeSet::new();
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            // An interrupted compaction of subs.dat.
            fs::remove_file(entry.path()).map_err(io_err(&dir))?;
        } else if let Some((n, is_dat)) = parse_seg_name(name) {
            if is_dat {
                dats.insert(n)
            } else {
                idxs.insert(n)
            };
        }
    }
    for n in idxs.difference(&dats) {
        let (_, ip) = seg_paths(&dir, *n);
        fs::remove_file(&ip).map_err(io_err(&ip))?;
    }
    let count = dats.len();
    for (i, n) in dats.iter().enumerate() {
        let seg = recover_segment(log, *n, i + 1 == count, idxs.contains(n))?;
        if let Some(prev) = log.segs.back()
            && prev.end_seq() != seg.first_seq
        {
            return Err(StoreError::corrupt(
                seg.dat.path(),
                8,
                Corruption::HeaderMismatch {
                    expected: prev.end_seq(),
                    found: seg.first_seq,
                },
            ));
        }
        log.segs.push_back(seg);
    }
    if let (Some(f), Some(l)) = (log.segs.front(), log.segs.back()) {
        log.first = f.first_seq;
        log.last = l.end_seq() - 1;
        log.msgs = log.segs.iter().map(|s| s.count).sum();
        log.bytes = log.segs.iter().map(|s| s.live_bytes).sum();
        log.last_ts = log
            .segs
            .iter()
            .rev()
            .find(|s| s.count > 0)
            .map_or(0, |s| s.last_ts);
        if log.msgs == 0 {
            log.first = log.last + 1;
        }
    }
    Ok(())
}

fn valid_record(r: &mut ChunkReader<'_>, e: &IdxEntry) -> io::Result<bool> {
    Ok(
        matches!(r.record_at(e.offset, false)?, Parsed::Record { size, .. } if size == u64::from(e.size)),
    )
}

fn read_idx_entry(r: &mut ChunkReader<'_>, j: u64) -> io::Result<Option<IdxEntry>> {
    Ok(
        r.slice(SEG_HEADER_LEN + j * IDX_ENTRY_LEN, IDX_ENTRY_LEN as usize)?
            .and_then(IdxEntry::decode),
    )
}

/// Recovers segment `n`.
///
/// The index entries on disk describe durable data (see [`MsgLog::pending`]), so the longest
/// valid prefix of the index is the region a crash cannot have damaged. A bad record there
/// is corruption unless it is the very end of the file (a file cut short); a bad record after
/// it is where the last, interrupted write begins, and the file is truncated there. Without a
/// usable index there is no such mark, and a bad record followed by a valid one is reported.
fn recover_segment(log: &mut MsgLog, n: u64, is_last: bool, has_idx: bool) -> Result<Segment> {
    let (dp, ip) = seg_paths(&log.dir, n);
    let dat = log.fds.register(dp.clone());
    let idx = log.fds.register(ip.clone());
    let dio = io_err(&dp);
    let iio = io_err(&ip);
    let sync = log.o.sync != SyncPolicy::Never;
    let full = log.o.check == RecoveryCheck::Full;
    let df = log.fds.get(&dat).map_err(&dio)?;
    let mut dat_len = df.metadata().map_err(&dio)?.len();
    if dat_len < SEG_HEADER_LEN {
        if !is_last {
            return Err(StoreError::corrupt(&dp, 0, Corruption::Truncated));
        }
        // Created, but the header never reached the disk.
        df.set_len(0).map_err(&dio)?;
        df.write_all_at(&seg_header(DATA_MAGIC, n), 0)
            .map_err(&dio)?;
        dat_len = SEG_HEADER_LEN;
    } else {
        let mut h = [0u8; 16];
        df.read_exact_at(&mut h, 0).map_err(&dio)?;
        let found = check_header(&dp, &h, DATA_MAGIC)?;
        if found != n {
            return Err(StoreError::corrupt(
                &dp,
                8,
                Corruption::HeaderMismatch { expected: n, found },
            ));
        }
    }

    // What the index says.
    let mut idx_n = 0;
    let mut idx_exact = false;
    let mut idx_usable = false;
    let ifile = if has_idx {
        Some(log.fds.get(&idx).map_err(&iio)?)
    } else {
        None
    };
    if let Some(f) = &ifile {
        let len = f.metadata().map_err(&iio)?.len();
        if len >= SEG_HEADER_LEN {
            let mut h = [0u8; 16];
            f.read_exact_at(&mut h, 0).map_err(&iio)?;
            if check_header(&ip, &h, IDX_MAGIC).ok() == Some(n) {
                idx_usable = true;
                idx_n = (len - SEG_HEADER_LEN) / IDX_ENTRY_LEN;
                idx_exact = (len - SEG_HEADER_LEN).is_multiple_of(IDX_ENTRY_LEN);
            }
        }
    }
    let ilen = SEG_HEADER_LEN + idx_n * IDX_ENTRY_LEN;
    let mut ir = ifile
        .as_ref()
        .filter(|_| idx_usable)
        .map(|f| ChunkReader::new(f, ilen, log.o.read_buffer));
    let mut r = ChunkReader::new(&df, dat_len, log.o.read_buffer);
    let segment = |count: u64, data_len: u64, first_ts: i64, last_ts: i64| Segment {
        first_seq: n,
        count,
        removed: 0,
        data_len,
        written: data_len,
        allocated: data_len,
        idx_written: count,
        first_ts,
        last_ts,
        // Accounted as in `push`: each record's length plus the index share of the overhead.
        live_bytes: data_len - SEG_HEADER_LEN + count * (MSG_OVERHEAD - REC_HEADER_LEN),
        dat: dat.clone(),
        idx: idx.clone(),
    };

    // Fast path: the index covers the whole file and the last record checks out.
    if let Some(ir) = ir.as_mut().filter(|_| idx_exact && !full) {
        if idx_n == 0 && dat_len == SEG_HEADER_LEN {
            return Ok(segment(0, dat_len, 0, 0));
        }
        if idx_n > 0 {
            let first = read_idx_entry(ir, 0).map_err(&iio)?;
            let last = read_idx_entry(ir, idx_n - 1).map_err(&iio)?;
            if let (Some(f), Some(l)) = (first, last)
                && f.seq == n
                && f.offset == SEG_HEADER_LEN
                && l.seq == n + idx_n - 1
                && l.end() == dat_len
                && valid_record(&mut r, &l).map_err(&dio)?
            {
                return Ok(segment(idx_n, dat_len, f.timestamp, l.timestamp));
            }
        }
    }

    // The longest valid prefix of the index: durable data.
    let mut covered: Vec<IdxEntry> = Vec::new();
    if let Some(ir) = ir.as_mut() {
        let mut expected_off = SEG_HEADER_LEN;
        for j in 0..idx_n {
            let Some(e) = read_idx_entry(ir, j).map_err(&iio)? else {
                break;
            };
            if e.seq != n + j || e.offset != expected_off || e.end() > dat_len {
                break;
            }
            expected_off = e.end();
            covered.push(e);
        }
    }
    drop(ir);
    let covered_end = covered.last().map_or(SEG_HEADER_LEN, IdxEntry::end);

    // Fast check: the covered records are trusted, but the file may end inside them (cut
    // short, or zero-filled at the end): drop those from the end. Full check: keep nothing,
    // scan and verify everything.
    let keep = if full {
        0
    } else {
        let mut end = dat_len;
        while let Some(e) = covered.last() {
            let kind = match r.record_at(e.offset, false).map_err(&dio)? {
                Parsed::Record { size, .. } if size == u64::from(e.size) => break,
                Parsed::Bad { kind, .. } => kind,
                _ => Corruption::IndexMismatch,
            };
            if e.end() < end || !is_last {
                return Err(StoreError::corrupt(&dp, e.offset, kind));
            }
            end = e.offset;
            covered.pop();
        }
        if end < dat_len {
            truncate(&df, &dp, end, sync)?;
            dat_len = end;
            r = ChunkReader::new(&df, dat_len, log.o.read_buffer);
        }
        covered.len() as u64
    };
    let mut first_ts = covered
        .first()
        .filter(|_| keep > 0)
        .map_or(0, |e| e.timestamp);
    let mut last_ts = covered
        .last()
        .filter(|_| keep > 0)
        .map_or(0, |e| e.timestamp);
    let mut pos = if keep > 0 {
        covered_end.min(dat_len)
    } else {
        SEG_HEADER_LEN
    };
    let mut seq = n + keep;
    let mut fresh = Vec::new();
    loop {
        match r.record_at(pos, false).map_err(&dio)? {
            Parsed::End => break,
            Parsed::Record { size, .. } => {
                let payload = r.payload(pos, size).map_err(&dio)?;
                let m: MsgProto = decode_at(&dp, pos, payload)?;
                if m.sequence != seq {
                    return Err(StoreError::corrupt(
                        &dp,
                        pos,
                        Corruption::SequenceMismatch {
                            expected: seq,
                            found: m.sequence,
                        },
                    ));
                }
                fresh.push(IdxEntry {
                    seq,
                    offset: pos,
                    timestamp: m.timestamp,
                    size: size as u32,
                });
                if seq == n {
                    first_ts = m.timestamp;
                }
                last_ts = m.timestamp;
                pos += REC_HEADER_LEN + size;
                seq += 1;
            }
            Parsed::Bad { kind, next } => {
                let damage = if pos < covered_end {
                    // Durable data (full check): damage unless nothing follows it.
                    covered
                        .get((seq - n) as usize)
                        .is_none_or(|e| e.end() < dat_len)
                } else if !idx_usable {
                    r.valid_after(next, false).map_err(&dio)?
                        || r.msg_record_after(pos).map_err(&dio)?
                } else {
                    false
                };
                if damage || !is_last {
                    return Err(StoreError::corrupt(&dp, pos, kind));
                }
                // The interrupted last write: cut it off.
                drop(r);
                truncate(&df, &dp, pos, sync)?;
                dat_len = pos;
                break;
            }
        }
    }

    // Index entries for the records found, after making their data durable.
    if sync && !fresh.is_empty() {
        df.sync_data().map_err(&dio)?;
    }
    let f = match ifile {
        Some(f) if keep > 0 => f,
        _ => {
            drop(ifile);
            let f = log.fds.create(&idx).map_err(&iio)?;
            f.write_all_at(&seg_header(IDX_MAGIC, n), 0).map_err(&iio)?;
            f
        }
    };
    let at = SEG_HEADER_LEN + keep * IDX_ENTRY_LEN;
    f.set_len(at).map_err(&iio)?;
    let mut buf = Vec::with_capacity(fresh.len() * IDX_ENTRY_LEN as usize);
    for e in &fresh {
        e.encode(&mut buf);
    }
    f.write_all_at(&buf, at).map_err(&iio)?;
    if sync {
        f.sync_data().map_err(&iio)?;
    }
    Ok(segment(
        keep + fresh.len() as u64,
        dat_len,
        first_ts,
        last_ts,
    ))
}

fn truncate(f: &std::fs::File, path: &Path, len: u64, sync: bool) -> Result<()> {
    f.set_len(len).map_err(io_err(path))?;
    if sync {
        f.sync_data().map_err(io_err(path))?;
    }
    Ok(())
}
