//! On-disk formats: file headers, CRC-checked records, index entries, and the torn-tail rule.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;

use super::fds::{FdCache, FileRef};
use super::{StoreError, SyncPolicy};
use crate::store::{Corruption, Result};

pub(crate) const VERSION: u32 = 1;
pub(crate) const DATA_MAGIC: [u8; 4] = *b"RSMD";
pub(crate) const IDX_MAGIC: [u8; 4] = *b"RSMI";
pub(crate) const SUBS_MAGIC: [u8; 4] = *b"RSSB";
pub(crate) const CLIENTS_MAGIC: [u8; 4] = *b"RSCL";
pub(crate) const SERVER_MAGIC: [u8; 4] = *b"RSSV";

/// Segment data and index files: magic, version, first sequence.
pub(crate) const SEG_HEADER_LEN: u64 = 16;
/// Typed logs (`subs.dat`, `clients.dat`, `server.dat`): magic, version.
pub(crate) const LOG_HEADER_LEN: u64 = 8;
/// Record header: length word, CRC-32 of the payload.
pub(crate) const REC_HEADER_LEN: u64 = 8;
/// Index entry: seq u64, offset u64, timestamp i64, size u32, CRC-32 of the first 28 bytes.
pub(crate) const IDX_ENTRY_LEN: u64 = 32;
/// Bytes accounted per message on top of its encoded size: 40, what the reference file store
/// reports (its 8-byte record header and 32-byte index entry: `msgRecordOverhead`), so that
/// `max_bytes` and monitoring numbers match it (checked against the monitoring output of
/// nats-streaming-server 0.25.6 in the migration fixture). Our own overhead on disk is the
/// same (8 + 32).
pub(crate) const MSG_OVERHEAD: u64 = 40;
/// Smallest message record: a header and a non-empty payload (a zero length is never valid).
pub(crate) const MIN_MSG_RECORD: u64 = REC_HEADER_LEN + 1;
/// Largest message record.
pub(crate) const MAX_MSG_RECORD: u64 = 256 << 20;
/// How far past a bad record to look for a valid one when there is no index to tell.
pub(crate) const RESYNC_WINDOW: u64 = 16 << 20;
/// Largest typed record (the length has 24 bits).
pub(crate) const MAX_TYPED_RECORD: u64 = (1 << 24) - 1;

pub(crate) fn seg_header(magic: [u8; 4], first_seq: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&magic);
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..].copy_from_slice(&first_seq.to_le_bytes());
    h
}

pub(crate) fn log_header(magic: [u8; 4]) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&magic);
    h[4..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Checks magic and version of a header; returns the first sequence of a segment header.
pub(crate) fn check_header(path: &Path, h: &[u8], magic: [u8; 4]) -> Result<u64> {
    if h[..4] != magic {
        return Err(StoreError::corrupt(path, 0, Corruption::BadMagic));
    }
    let v = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default());
    if v != VERSION {
        return Err(StoreError::corrupt(
            path,
            4,
            Corruption::UnsupportedVersion(v),
        ));
    }
    Ok(if h.len() >= 16 {
        u64::from_le_bytes(h[8..16].try_into().unwrap_or_default())
    } else {
        0
    })
}

/// Appends `[len | type<<24][crc][payload]` to `buf`; returns the payload size.
pub(crate) fn encode_record<M: Message>(
    buf: &mut Vec<u8>,
    msg: &M,
    rec_type: Option<u8>,
) -> Result<u64> {
    let size = msg.encoded_len() as u64;
    let max = if rec_type.is_some() {
        MAX_TYPED_RECORD
    } else {
        MAX_MSG_RECORD
    };
    if size > max {
        return Err(StoreError::RecordTooLarge { size, max });
    }
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 8]);
    // Encoding into a Vec cannot fail: it grows as needed.
    let _ = msg.encode(buf);
    let crc = crc32fast::hash(&buf[start + 8..]);
    let word = size as u32 | (u32::from(rec_type.unwrap_or(0)) << 24);
    buf[start..start + 4].copy_from_slice(&word.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(size)
}

/// An index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdxEntry {
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) size: u32,
}

impl IdxEntry {
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        buf.extend_from_slice(&self.seq.to_le_bytes());
        buf.extend_from_slice(&self.offset.to_le_bytes());
        buf.extend_from_slice(&self.timestamp.to_le_bytes());
        buf.extend_from_slice(&self.size.to_le_bytes());
        let crc = crc32fast::hash(&buf[start..]);
        buf.extend_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a 32-byte entry; `None` if its CRC is wrong.
    pub(crate) fn decode(b: &[u8]) -> Option<IdxEntry> {
        let b: &[u8; 32] = b.get(..32)?.try_into().ok()?;
        let crc = u32::from_le_bytes(b[28..32].try_into().ok()?);
        if crc32fast::hash(&b[..28]) != crc {
            return None;
        }
        Some(IdxEntry {
            seq: u64::from_le_bytes(b[0..8].try_into().ok()?),
            offset: u64::from_le_bytes(b[8..16].try_into().ok()?),
            timestamp: i64::from_le_bytes(b[16..24].try_into().ok()?),
            size: u32::from_le_bytes(b[24..28].try_into().ok()?),
        })
    }

    /// Offset just past this entry's data record (saturating: an entry read from a damaged
    /// index can hold any offset, and must compare as past the end of the file).
    pub(crate) fn end(&self) -> u64 {
        self.offset
            .saturating_add(REC_HEADER_LEN + u64::from(self.size))
    }
}

/// What is found at a position of a record file.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// The end of the file, exactly.
    End,
    /// A record whose CRC checks out; `payload` is relative to the reader's window.
    Record { rec_type: u8, size: u64 },
    /// Not a valid record; `next` is where the record claims to end, if plausible.
    Bad { kind: Corruption, next: Option<u64> },
}

/// Sequential reads of a record file through a window buffer (positional reads).
pub(crate) struct ChunkReader<'a> {
    file: &'a File,
    len: u64,
    chunk: usize,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> ChunkReader<'a> {
    pub(crate) fn new(file: &'a File, len: u64, chunk: usize) -> Self {
        ChunkReader {
            file,
            len,
            chunk: chunk.max(4096),
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// `len` bytes at `pos`, or `None` if the file is shorter.
    pub(crate) fn slice(&mut self, pos: u64, len: usize) -> io::Result<Option<&[u8]>> {
        let end = pos + len as u64;
        if end > self.len {
            return Ok(None);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if pos < self.buf_start || end > buf_end {
            let want = (self.len - pos).min(len.max(self.chunk) as u64) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.buf_start = pos;
        }
        let at = (pos - self.buf_start) as usize;
        Ok(Some(&self.buf[at..at + len]))
    }

    /// Parses the record at `pos`. `typed`: the length word carries a type in its top byte.
    pub(crate) fn record_at(&mut self, pos: u64, typed: bool) -> io::Result<Parsed> {
        if pos == self.len {
            return Ok(Parsed::End);
        }
        let Some(h) = self.slice(pos, REC_HEADER_LEN as usize)? else {
            return Ok(Parsed::Bad {
                kind: Corruption::Truncated,
                next: None,
            });
        };
        let word = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let (rec_type, size, max) = if typed {
            (
                (word >> 24) as u8,
                u64::from(word & 0x00FF_FFFF),
                MAX_TYPED_RECORD,
            )
        } else {
            (0, u64::from(word), MAX_MSG_RECORD)
        };
        if word == 0 || size > max || (typed && rec_type == 0) {
            return Ok(Parsed::Bad {
                kind: Corruption::BadLength(size),
                next: None,
            });
        }
        let next = pos + REC_HEADER_LEN + size;
        let Some(payload) = self.slice(pos + REC_HEADER_LEN, size as usize)? else {
            return Ok(Parsed::Bad {
                kind: Corruption::Truncated,
                next: None,
            });
        };
        let computed = crc32fast::hash(payload);
        if computed != crc {
            return Ok(Parsed::Bad {
                kind: Corruption::BadCrc {
                    expected: crc,
                    computed,
                },
                next: Some(next),
            });
        }
        Ok(Parsed::Record { rec_type, size })
    }

    /// The payload of the record just parsed at `pos`.
    pub(crate) fn payload(&mut self, pos: u64, size: u64) -> io::Result<&[u8]> {
        Ok(self
            .slice(pos + REC_HEADER_LEN, size as usize)?
            .unwrap_or_default())
    }

    /// Whether a valid message record starts anywhere in the `RESYNC_WINDOW` bytes after
    /// `from` (a record whose length is plausible, whose payload starts like an encoded
    /// `MsgProto` — field 1, the sequence — and whose CRC checks out).
    pub(crate) fn msg_record_after(&mut self, from: u64) -> io::Result<bool> {
        let end = self.len.min(from.saturating_add(RESYNC_WINDOW));
        let mut q = from + 1;
        while q + REC_HEADER_LEN < end {
            let Some(h) = self.slice(q, REC_HEADER_LEN as usize + 1)? else {
                break;
            };
            let size = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
            let starts_like_msg = h[8] == 0x08;
            if size > 0
                && size <= MAX_MSG_RECORD
                && q + REC_HEADER_LEN + size <= self.len
                && starts_like_msg
                && matches!(self.record_at(q, false)?, Parsed::Record { .. })
            {
                return Ok(true);
            }
            q += 1;
        }
        Ok(false)
    }

    /// Whether a valid record follows a bad one that claims to end at `next`: proof that the
    /// bad record is damage in the middle of the file, not a torn tail.
    pub(crate) fn valid_after(&mut self, next: Option<u64>, typed: bool) -> io::Result<bool> {
        match next {
            Some(n) if n < self.len => {
                Ok(matches!(self.record_at(n, typed)?, Parsed::Record { .. }))
            }
            _ => Ok(false),
        }
    }
}

/// An append-only log of typed records (`subs.dat`, `clients.dat`) with a write buffer.
pub(crate) struct AppendLog {
    pub(crate) file: FileRef,
    /// Bytes in the file.
    pub(crate) len: u64,
    pub(crate) buf: Vec<u8>,
    /// Records in the file and the buffer.
    pub(crate) records: u64,
    write_gen: u64,
    synced_gen: u64,
    last_sync: Instant,
}

impl AppendLog {
    pub(crate) fn new(file: FileRef, len: u64, records: u64) -> Self {
        AppendLog {
            file,
            len,
            buf: Vec::new(),
            records,
            write_gen: 0,
            synced_gen: 0,
            last_sync: Instant::now(),
        }
    }

    pub(crate) fn push<M: Message>(&mut self, rec_type: u8, msg: &M) -> Result<()> {
        encode_record(&mut self.buf, msg, Some(rec_type))?;
        self.records += 1;
        Ok(())
    }

    /// Writes the buffer to the file (no fsync).
    pub(crate) fn write_out(&mut self, fds: &FdCache) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.file.path();
        let f = fds.get(&self.file).map_err(|e| StoreError::io(path, e))?;
        f.write_all_at(&self.buf, self.len)
            .map_err(|e| StoreError::io(path, e))?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        if self.buf.capacity() > 64 << 10 {
            self.buf = Vec::new();
        }
        self.write_gen += 1;
        Ok(())
    }

    /// If the policy (or `force`) calls for an fsync now: the handle and the generation it
    /// will cover, to sync outside the owner's lock and then pass to [`Self::synced`].
    pub(crate) fn sync_ticket(
        &self,
        fds: &FdCache,
        policy: SyncPolicy,
        force: bool,
    ) -> Result<Option<(Arc<super::fds::OpenFile>, u64)>> {
        if self.write_gen == self.synced_gen || !(force || policy.sync_now(self.last_sync)) {
            return Ok(None);
        }
        let f = fds
            .get(&self.file)
            .map_err(|e| StoreError::io(self.file.path(), e))?;
        Ok(Some((f, self.write_gen)))
    }

    pub(crate) fn synced(&mut self, generation: u64) {
        self.synced_gen = self.synced_gen.max(generation);
        self.last_sync = Instant::now();
    }

    /// After a compaction replaced the file with a synced copy of length `len`.
    pub(crate) fn replaced(&mut self, len: u64, records: u64) {
        self.len = len;
        self.records = records;
        self.buf.clear();
        self.synced_gen = self.write_gen;
        self.last_sync = Instant::now();
    }
}

/// Reads a whole typed log: calls `f(type, payload, offset)` for each record, which returns
/// how many entries the record holds (records are counted by entries, for compaction). A bad
/// record with nothing valid after it is a torn tail: the file is truncated there (returns the
/// new length). A bad record followed by a valid one is an error naming the path and offset.
pub(crate) fn replay_log(
    file: &File,
    path: &Path,
    magic: [u8; 4],
    chunk: usize,
    mut f: impl FnMut(u8, &[u8], u64) -> Result<u64>,
) -> Result<(u64, u64)> {
    let io = |e| StoreError::io(path, e);
    let len = file.metadata().map_err(io)?.len();
    if len < LOG_HEADER_LEN {
        // Created but the header never made it: an empty log.
        file.set_len(0).map_err(io)?;
        file.write_all_at(&log_header(magic), 0).map_err(io)?;
        return Ok((LOG_HEADER_LEN, 0));
    }
    let mut r = ChunkReader::new(file, len, chunk);
    let h = r
        .slice(0, LOG_HEADER_LEN as usize)
        .map_err(io)?
        .unwrap_or_default()
        .to_vec();
    check_header(path, &h, magic)?;
    let mut pos = LOG_HEADER_LEN;
    let mut records = 0;
    loop {
        match r.record_at(pos, true).map_err(io)? {
            Parsed::End => return Ok((pos, records)),
            Parsed::Record { rec_type, size } => {
                let payload = r.payload(pos, size).map_err(io)?;
                records += f(rec_type, payload, pos)?;
                pos += REC_HEADER_LEN + size;
            }
            Parsed::Bad { kind, next } => {
                if r.valid_after(next, true).map_err(io)? {
                    return Err(StoreError::corrupt(path, pos, kind));
                }
                file.set_len(pos).map_err(io)?;
                return Ok((pos, records));
            }
        }
    }
}

/// Decodes a record payload, mapping failure to a corruption error at `offset`.
pub(crate) fn decode_at<M: Message + Default>(path: &Path, offset: u64, b: &[u8]) -> Result<M> {
    M::decode(b).map_err(|e| StoreError::corrupt(path, offset, Corruption::Decode(e.to_string())))
}

/// fsync of a directory, so that entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| StoreError::io(dir, e))?;
    d.sync_all().map_err(|e| StoreError::io(dir, e))
}
