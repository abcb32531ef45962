//! A channel's message log in the reference store: its slices, found and checked as the
//! reference recovers them, the limits it re-applies on recovery, and the messages.
//!
//! ```text
//! <channel>/msgs.<n>.dat   version | one untyped record per message (MsgProto)
//! <channel>/msgs.<n>.idx   version | one 32-byte entry per message of the .dat
//! ```
//!
//! `<n>` numbers the slices in creation order (a new slice starts when the current one
//! reaches the slice limits); the first slices disappear when every message in them was
//! dropped by limits, so numbering may start anywhere and may have holes. Messages dropped by
//! limits otherwise stay in their slice: the reference re-applies the channel limits on
//! every recovery, which [`ChannelLog::plan`] repeats.
//!
//! Which records a slice holds is decided as the reference does: from the index when it reads
//! cleanly and its last entry matches the data file (records past it were never indexed and
//! are ignored), otherwise from the data file, record by record.
//!
//! The scan keeps per slice only counters (and, for the rare slice read from its data file,
//! its entries), so memory does not grow with the number of messages: entries and messages
//! are streamed again from the files when planned and copied.

use std::path::{Path, PathBuf};

use prost::Message;

use super::crc::Crc;
use super::error::{DamageKind, FindingKind, MigrateError};
use super::records::{
    Ctx, IDX_ENTRY_LEN, IdxEntry, IdxStep, MSG_OVERHEAD, REC_HEADER_LEN, RefFile, Step,
    VERSION_LEN, bad_record, check_version, idx_at, record_at, zero_tail,
};
use crate::proto::MsgProto;
use crate::store::{ChannelLimits, Corruption};

/// Where a slice's entries come from.
#[derive(Debug)]
enum Entries {
    /// The first `count` entries of the index file.
    Index { count: u64 },
    /// Rebuilt from the data file.
    Memory(Vec<IdxEntry>),
}

/// One non-empty slice.
#[derive(Debug)]
pub(crate) struct Slice {
    pub(crate) dat: PathBuf,
    pub(crate) idx: PathBuf,
    entries: Entries,
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) count: u64,
    /// Encoded sizes plus the per-message overhead, as the reference accounts them.
    pub(crate) bytes: u64,
}

/// The files of a channel directory the message log is made of.
pub(crate) struct ChannelFiles {
    /// `(n, data file)`, sorted by `n`.
    pub(crate) slices: Vec<(i64, PathBuf)>,
    pub(crate) subs: Option<PathBuf>,
}

/// Lists a channel directory: slices, `subs.dat`, and findings for anything else.
pub(crate) fn list_channel(dir: &Path, ctx: &mut Ctx) -> Result<ChannelFiles, MigrateError> {
    let mut slices = Vec::new();
    let mut subs = None;
    let mut indexes = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| MigrateError::io(dir, e))? {
        let e = e.map_err(|e| MigrateError::io(dir, e))?;
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e
            .file_type()
            .map_err(|e| MigrateError::io(&path, e))?
            .is_dir();
        if is_dir {
            let reason = "directory inside a channel directory";
            ctx.issues
                .note(&path, None, FindingKind::Ignored { reason });
        } else if name == "subs.dat" {
            subs = Some(path);
        } else if let Some(n) = slice_number(&name, ".dat") {
            match n.parse::<i64>() {
                Ok(n) => slices.push((n, path)),
                Err(_) => ctx.issues.damage(&path, 0, DamageKind::SliceName)?,
            }
        } else if let Some(n) = slice_number(&name, ".idx") {
            indexes.push((n.to_owned(), path));
        } else if name.ends_with(".bak") {
            let reason = "slice removed by limits, left for the archive script";
            ctx.issues
                .note(&path, None, FindingKind::Ignored { reason });
        } else {
            let reason = "not a file of the reference store";
            ctx.issues
                .note(&path, None, FindingKind::Ignored { reason });
        }
    }
    for (n, path) in indexes {
        if !slices
            .iter()
            .any(|(_, d)| slice_number(&file_name(d), ".dat") == Some(&n))
        {
            let reason = "index without its data file";
            ctx.issues
                .note(&path, None, FindingKind::Ignored { reason });
        }
    }
    slices.sort();
    Ok(ChannelFiles { slices, subs })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn slice_number<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    name.strip_prefix("msgs.")?.strip_suffix(suffix)
}

/// A channel's message log: its non-empty slices in order.
#[derive(Debug, Default)]
pub(crate) struct ChannelLog {
    pub(crate) slices: Vec<Slice>,
}

/// What the limits keep of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Kept {
    /// First sequence kept (`last + 1` when every message was dropped).
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) msgs: u64,
    pub(crate) bytes: u64,
    /// Messages on disk the limits drop.
    pub(crate) dropped: u64,
    /// Where the first kept message is.
    pub(crate) start: Cursor,
}

impl ChannelLog {
    /// Scans the slices of a channel (see the module documentation).
    pub(crate) fn scan(files: &ChannelFiles, ctx: &mut Ctx) -> Result<ChannelLog, MigrateError> {
        let mut log = ChannelLog::default();
        for (_, dat) in &files.slices {
            let idx = dat.with_extension("idx");
            let Some(s) = scan_slice(dat, &idx, ctx)? else {
                continue;
            };
            if let Some(prev) = log.slices.last()
                && s.first <= prev.last
            {
                ctx.issues.corrupt(
                    &s.dat,
                    VERSION_LEN,
                    Corruption::SequenceMismatch {
                        expected: prev.last + 1,
                        found: s.first,
                    },
                )?;
                continue;
            }
            log.slices.push(s);
        }
        Ok(log)
    }

    pub(crate) fn last(&self) -> u64 {
        self.slices.last().map_or(0, |s| s.last)
    }

    pub(crate) fn count(&self) -> u64 {
        self.slices.iter().map(|s| s.count).sum()
    }

    /// Appends to `out` up to `max` entries from `cur` on, in sequence order, and moves
    /// `cur` past them.
    fn read_entries(
        &self,
        cur: &mut Cursor,
        max: usize,
        out: &mut Vec<(usize, IdxEntry)>,
        ctx: &mut Ctx,
    ) -> Result<(), MigrateError> {
        while out.len() < max {
            let Some(s) = self.slices.get(cur.slice) else {
                return Ok(());
            };
            match &s.entries {
                Entries::Memory(v) => {
                    let from = cur.entry as usize;
                    let n = (max - out.len()).min(v.len().saturating_sub(from));
                    out.extend(v[from..from + n].iter().map(|e| (cur.slice, *e)));
                    cur.entry += n as u64;
                }
                Entries::Index { count } => {
                    let n = (max - out.len()) as u64;
                    let n = n.min(count.saturating_sub(cur.entry));
                    if n > 0 {
                        let Some(mut file) = RefFile::open(&s.idx, ctx.chunk)? else {
                            return Err(changed(&s.idx));
                        };
                        for i in cur.entry..cur.entry + n {
                            let pos = VERSION_LEN + i * IDX_ENTRY_LEN;
                            let IdxStep::Entry(e) = idx_at(&mut file, pos, ctx.crc())? else {
                                return Err(changed(&s.idx));
                            };
                            out.push((cur.slice, e));
                        }
                        cur.entry += n;
                    }
                }
            }
            if cur.entry >= s.count {
                cur.slice += 1;
                cur.entry = 0;
            }
        }
        Ok(())
    }

    /// What the reference keeps on recovery with `limits` at `now` (ns since the epoch):
    /// first the oldest messages over `max_msgs` / `max_bytes` go (the newest one always
    /// stays), then those at least `max_age` old.
    pub(crate) fn plan(
        &self,
        limits: &ChannelLimits,
        now: i64,
        ctx: &mut Ctx,
    ) -> Result<Kept, MigrateError> {
        let last = self.last();
        let mut k = Kept {
            first: last + 1,
            last,
            msgs: self.count(),
            bytes: self.slices.iter().map(|s| s.bytes).sum(),
            dropped: 0,
            start: Cursor::default(),
        };
        let max_age = i64::try_from(limits.max_age.as_nanos()).unwrap_or(i64::MAX);
        let mut cur = Cursor::default();
        let mut batch = Vec::new();
        loop {
            let at = cur;
            batch.clear();
            self.read_entries(&mut cur, ENTRY_BATCH, &mut batch, ctx)?;
            if batch.is_empty() {
                k.start = cur;
                return Ok(k);
            }
            for (i, (_, e)) in batch.iter().enumerate() {
                let over = k.msgs > 1
                    && ((limits.max_msgs > 0 && k.msgs > limits.max_msgs)
                        || (limits.max_bytes > 0 && k.bytes > limits.max_bytes));
                let expired = max_age > 0 && now.saturating_sub(e.timestamp) >= max_age;
                if !(over || expired) {
                    k.first = e.seq;
                    k.start = self.advance(at, i as u64);
                    return Ok(k);
                }
                k.msgs -= 1;
                k.bytes -= u64::from(e.size) + MSG_OVERHEAD;
                k.dropped += 1;
            }
        }
    }

    /// The position of the last entry.
    pub(crate) fn last_cursor(&self) -> Cursor {
        match self.slices.last() {
            Some(s) => Cursor {
                slice: self.slices.len() - 1,
                entry: s.count - 1,
            },
            None => Cursor::default(),
        }
    }

    /// The cursor `n` entries after `cur`.
    fn advance(&self, mut cur: Cursor, mut n: u64) -> Cursor {
        while let Some(s) = self.slices.get(cur.slice) {
            let left = s.count - cur.entry;
            if n < left {
                cur.entry += n;
                return cur;
            }
            n -= left;
            cur = Cursor {
                slice: cur.slice + 1,
                entry: 0,
            };
        }
        cur
    }

    /// Reads, checks and hands to `f` every message from `start` (a [`Kept::start`]) on. A
    /// message that cannot be read is damage (skipped when collecting); a hole in the
    /// sequences is a finding (the writer fills it).
    pub(crate) fn for_each_msg(
        &self,
        start: Cursor,
        ctx: &mut Ctx,
        mut f: impl FnMut(MsgProto) -> Result<(), MigrateError>,
    ) -> Result<(), MigrateError> {
        // Entries are read a batch at a time, then their records, so that the index and
        // data files are not read interleaved (each has its own window).
        let mut cur = start;
        let mut batch = Vec::with_capacity(ENTRY_BATCH);
        let mut dat: Option<(usize, RefFile)> = None;
        let mut prev = 0u64;
        loop {
            batch.clear();
            self.read_entries(&mut cur, ENTRY_BATCH, &mut batch, ctx)?;
            if batch.is_empty() {
                return Ok(());
            }
            for &(si, e) in &batch {
                if dat.as_ref().is_none_or(|(i, _)| *i != si) {
                    let path = &self.slices[si].dat;
                    let Some(file) = RefFile::open(path, ctx.chunk)? else {
                        return Err(changed(path));
                    };
                    dat = Some((si, file));
                }
                let Some((_, file)) = dat.as_mut() else {
                    continue;
                };
                match read_msg(file, &e, ctx.crc())? {
                    Ok(m) => {
                        if prev != 0 && m.sequence > prev + 1 {
                            let dir = file.path().parent().unwrap_or(Path::new(""));
                            let (from, to) = (prev + 1, m.sequence - 1);
                            ctx.issues
                                .note(dir, None, FindingKind::GapFilled { from, to });
                        }
                        prev = m.sequence;
                        f(m)?
                    }
                    Err(kind) => ctx.issues.corrupt(file.path(), e.offset, kind)?,
                }
            }
        }
    }
}

/// Entries read at once.
const ENTRY_BATCH: usize = 4096;

/// A position in a log's entries: slice, and entry within it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    slice: usize,
    entry: u64,
}

fn changed(path: &Path) -> MigrateError {
    MigrateError::io(
        path,
        std::io::Error::other("file changed or disappeared while it was read"),
    )
}

/// The message an index entry points to, checked against it.
fn read_msg(
    f: &mut RefFile,
    e: &IdxEntry,
    crc: Option<&Crc>,
) -> Result<Result<MsgProto, Corruption>, MigrateError> {
    if e.offset < VERSION_LEN || e.offset >= f.len() {
        return Ok(Err(Corruption::IndexMismatch));
    }
    let m = match record_at(f, e.offset, false, crc)? {
        Step::Record { payload, .. } if payload.len() as u64 == u64::from(e.size) => {
            match MsgProto::decode(payload) {
                Ok(m) => m,
                Err(err) => return Ok(Err(Corruption::Decode(err.to_string()))),
            }
        }
        Step::Bad(kind) => return Ok(Err(kind)),
        _ => return Ok(Err(Corruption::IndexMismatch)),
    };
    if m.sequence != e.seq {
        return Ok(Err(Corruption::SequenceMismatch {
            expected: e.seq,
            found: m.sequence,
        }));
    }
    if m.timestamp != e.timestamp {
        return Ok(Err(Corruption::IndexMismatch));
    }
    Ok(Ok(m))
}

/// Scans one slice; `None` when it holds no message (the reference skips such slices) or
/// when its damage was collected.
fn scan_slice(dat: &Path, idx: &Path, ctx: &mut Ctx) -> Result<Option<Slice>, MigrateError> {
    let Some(mut df) = RefFile::open(dat, ctx.chunk)? else {
        return Err(changed(dat));
    };
    if !check_version(&mut df, ctx)? {
        return Ok(None);
    }
    let mut slice = Slice {
        dat: dat.to_owned(),
        idx: idx.to_owned(),
        entries: Entries::Index { count: 0 },
        first: 0,
        last: 0,
        count: 0,
        bytes: 0,
    };
    let rebuild = match RefFile::open(idx, ctx.chunk)? {
        None => Some("missing".to_owned()),
        Some(mut xf) => {
            if !check_version(&mut xf, ctx)? {
                return Ok(None);
            }
            match scan_index(&mut xf, &mut slice, ctx)? {
                Err(reason) => Some(reason),
                Ok(None) => Some("empty".to_owned()),
                // The last record is checked with its CRC whatever `file_crc` says, as the
                // reference does.
                Ok(Some(last)) => match read_msg(&mut df, &last, Some(&ctx.crc))? {
                    Ok(_) => {
                        let end = last.offset + REC_HEADER_LEN + u64::from(last.size);
                        if df.nonzero_from(end)? {
                            let bytes = df.len() - end;
                            ctx.issues
                                .note(dat, Some(end), FindingKind::IgnoredTail { bytes });
                        }
                        None
                    }
                    Err(kind) => Some(format!(
                        "its last entry (sequence {}) does not match the data file: {kind}",
                        last.seq
                    )),
                },
            }
        }
    };
    if let Some(reason) = rebuild {
        slice.count = 0;
        slice.bytes = 0;
        let Some(entries) = scan_data(&mut df, ctx)? else {
            return Ok(None);
        };
        // A missing or empty index next to an empty data file is just an empty slice.
        if !entries.is_empty() {
            ctx.issues
                .note(idx, None, FindingKind::IndexRebuilt { reason });
        }
        for e in &entries {
            add(&mut slice, e);
        }
        slice.entries = Entries::Memory(entries);
    }
    Ok((slice.count > 0).then_some(slice))
}

fn add(s: &mut Slice, e: &IdxEntry) {
    if s.count == 0 {
        s.first = e.seq;
    }
    s.last = e.seq;
    s.count += 1;
    s.bytes += u64::from(e.size) + MSG_OVERHEAD;
}

/// Reads the index: `Ok(Some(last entry))`, `Ok(None)` if it has no entry, `Err(reason)` if
/// it cannot be used.
fn scan_index(
    xf: &mut RefFile,
    slice: &mut Slice,
    ctx: &mut Ctx,
) -> Result<Result<Option<IdxEntry>, String>, MigrateError> {
    let mut pos = VERSION_LEN;
    let mut last: Option<IdxEntry> = None;
    loop {
        match idx_at(xf, pos, ctx.crc())? {
            IdxStep::End | IdxStep::Zeros => break,
            IdxStep::Partial => {
                return Ok(Err(format!("it ends inside the entry at offset {pos}")));
            }
            IdxStep::BadCrc { expected, computed } => {
                return Ok(Err(format!(
                    "the entry at offset {pos} fails its CRC (stored {expected:#010x}, computed {computed:#010x})"
                )));
            }
            IdxStep::Entry(e) => {
                if let Some(prev) = last
                    && e.seq <= prev.seq
                {
                    return Ok(Err(format!(
                        "sequence {} at offset {pos} after {}",
                        e.seq, prev.seq
                    )));
                }
                add(slice, &e);
                last = Some(e);
            }
        }
        pos += IDX_ENTRY_LEN;
    }
    slice.entries = Entries::Index { count: slice.count };
    Ok(Ok(last))
}

/// Reads the data file record by record (no usable index). `None` when damage was
/// collected.
fn scan_data(df: &mut RefFile, ctx: &mut Ctx) -> Result<Option<Vec<IdxEntry>>, MigrateError> {
    let mut entries: Vec<IdxEntry> = Vec::new();
    let mut pos = VERSION_LEN;
    loop {
        let crc = ctx.crc().cloned();
        match record_at(df, pos, false, crc.as_ref())? {
            Step::End => break,
            Step::Zeros => {
                zero_tail(df, pos, ctx)?;
                break;
            }
            Step::Bad(kind) => {
                let torn = kind == Corruption::Truncated && ctx.truncate_bad_eof;
                bad_record(df, pos, kind, ctx)?;
                if torn {
                    break;
                }
                return Ok(None);
            }
            Step::Record { payload, next, .. } => {
                let m = match MsgProto::decode(payload) {
                    Ok(m) => m,
                    Err(e) => {
                        let path = df.path().to_owned();
                        ctx.issues
                            .corrupt(&path, pos, Corruption::Decode(e.to_string()))?;
                        return Ok(None);
                    }
                };
                if let Some(prev) = entries.last()
                    && m.sequence <= prev.seq
                {
                    let path = df.path().to_owned();
                    ctx.issues.corrupt(
                        &path,
                        pos,
                        Corruption::SequenceMismatch {
                            expected: prev.seq + 1,
                            found: m.sequence,
                        },
                    )?;
                    return Ok(None);
                }
                entries.push(IdxEntry {
                    seq: m.sequence,
                    offset: pos,
                    timestamp: m.timestamp,
                    size: (next - pos - REC_HEADER_LEN) as u32,
                });
                pos = next;
            }
        }
    }
    Ok(Some(entries))
}
