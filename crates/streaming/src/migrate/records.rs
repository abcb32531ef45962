//! The reference store's file formats, read-only: the version header, CRC'd records and
//! message index entries, read through a window over the file.
//!
//! ```text
//! every file          version (u32 LE, 1) | records or index entries ...
//! record              word (u32 LE) | CRC-32 of payload (u32 LE) | payload (protobuf)
//!                     typed logs (clients.dat, subs.dat): word = type << 24 | size (24 bits)
//!                     untyped (server.dat, msgs.<n>.dat):  word = size
//! index entry (32 B)  seq u64 | offset in .dat u64 | timestamp i64 | size u32 | CRC-32 of the 28 bytes before
//! ```
//!
//! An all-zero record header (or index entry) is where the valid data ends: the reference
//! truncates the file there on recovery. A record cut short by the end of the file is what
//! the reference calls an unexpected EOF: recovery fails unless `file_truncate_bad_eof` is
//! set, which drops it. The CRC is always written; `file_crc=false` only skips checking it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::crc::Crc;
use super::error::{FindingKind, Issues, MigrateError, io_at};
use crate::store::Corruption;

/// The only file version the reference has written.
pub(crate) const FILE_VERSION: u32 = 1;
pub(crate) const VERSION_LEN: u64 = 4;
pub(crate) const REC_HEADER_LEN: u64 = 8;
pub(crate) const IDX_ENTRY_LEN: u64 = 32;
/// Bytes the reference accounts per message on top of its encoded size (record header and
/// index entry), for `max_bytes`.
pub(crate) const MSG_OVERHEAD: u64 = REC_HEADER_LEN + IDX_ENTRY_LEN;

/// What a reading of the reference store needs besides the files: its CRC options, whether
/// torn records may be dropped, and where damage and findings go.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) crc: Crc,
    pub(crate) check_crc: bool,
    pub(crate) truncate_bad_eof: bool,
    pub(crate) chunk: usize,
    pub(crate) issues: Issues,
}

impl Ctx {
    pub(crate) fn crc(&self) -> Option<&Crc> {
        self.check_crc.then_some(&self.crc)
    }
}

/// A reference file opened read-only, read through a window of `chunk` bytes (one `pread` per
/// window; a larger request reads exactly what it needs).
pub(crate) struct RefFile {
    path: PathBuf,
    file: File,
    len: u64,
    window: Vec<u8>,
    start: u64,
    chunk: usize,
}

impl RefFile {
    /// `None` if the file does not exist.
    pub(crate) fn open(path: &Path, chunk: usize) -> Result<Option<RefFile>, MigrateError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(MigrateError::io(path, e)),
        };
        let len = file.metadata().map_err(io_at(path))?.len();
        Ok(Some(RefFile {
            path: path.to_owned(),
            file,
            len,
            window: Vec::new(),
            start: 0,
            chunk: chunk.max(4096),
        }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// `n` bytes at `pos`; the caller checked that they are inside the file.
    pub(crate) fn bytes(&mut self, pos: u64, n: usize) -> Result<&[u8], MigrateError> {
        let end = pos + n as u64;
        let cached = pos >= self.start && end <= self.start + self.window.len() as u64;
        if !cached {
            let want = (n.max(self.chunk) as u64).min(self.len.saturating_sub(pos)) as usize;
            let want = want.max(n);
            self.window.resize(want, 0);
            self.file
                .read_exact_at(&mut self.window, pos)
                .map_err(io_at(&self.path))?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(&self.window[from..from + n])
    }

    /// Whether any byte in `[pos, len)` is not zero.
    pub(crate) fn nonzero_from(&mut self, pos: u64) -> Result<bool, MigrateError> {
        let mut p = pos;
        while p < self.len {
            let n = ((self.len - p) as usize).min(self.chunk);
            if self.bytes(p, n)?.iter().any(|&b| b != 0) {
                return Ok(true);
            }
            p += n as u64;
        }
        Ok(false)
    }
}

/// Checks the version header. `Ok(false)` when damaged and the damage was collected (the
/// caller skips the file).
pub(crate) fn check_version(f: &mut RefFile, ctx: &mut Ctx) -> Result<bool, MigrateError> {
    if f.len() < VERSION_LEN {
        ctx.issues.corrupt(f.path(), 0, Corruption::Truncated)?;
        return Ok(false);
    }
    let v = u32::from_le_bytes(le4(f.bytes(0, 4)?));
    if v == 0 || v > FILE_VERSION {
        ctx.issues
            .corrupt(f.path(), 0, Corruption::UnsupportedVersion(v))?;
        return Ok(false);
    }
    Ok(true)
}

/// One step of a record scan.
pub(crate) enum Step<'a> {
    /// End of file, exactly at a record boundary.
    End,
    /// An all-zero header: the valid data ends here.
    Zeros,
    Record {
        rec_type: u8,
        payload: &'a [u8],
        next: u64,
    },
    /// A record that fails its checks (`Truncated` when the file ends inside it).
    Bad(Corruption),
}

/// The record at `pos`, checked against `crc` when given.
pub(crate) fn record_at<'a>(
    f: &'a mut RefFile,
    pos: u64,
    typed: bool,
    crc: Option<&Crc>,
) -> Result<Step<'a>, MigrateError> {
    let len = f.len();
    if pos == len {
        return Ok(Step::End);
    }
    if len - pos < REC_HEADER_LEN {
        return Ok(Step::Bad(Corruption::Truncated));
    }
    let h = f.bytes(pos, REC_HEADER_LEN as usize)?;
    let word = u32::from_le_bytes(le4(&h[..4]));
    let stored = u32::from_le_bytes(le4(&h[4..8]));
    let (rec_type, size) = if typed {
        ((word >> 24) as u8, u64::from(word & 0x00ff_ffff))
    } else {
        (0, u64::from(word))
    };
    if word == 0 && stored == 0 {
        return Ok(Step::Zeros);
    }
    if size > len - pos - REC_HEADER_LEN {
        return Ok(Step::Bad(Corruption::Truncated));
    }
    let payload = f.bytes(pos + REC_HEADER_LEN, size as usize)?;
    if let Some(c) = crc {
        let computed = c.checksum(payload);
        if computed != stored {
            return Ok(Step::Bad(Corruption::BadCrc {
                expected: stored,
                computed,
            }));
        }
    }
    Ok(Step::Record {
        rec_type,
        payload,
        next: pos + REC_HEADER_LEN + size,
    })
}

/// Reads a typed record log (`clients.dat`, `subs.dat`) as the reference recovers it,
/// calling `apply(type, payload, offset)` for each record. A record `apply` rejects, or one
/// that fails its checks, is damage; the reading of the file stops there.
pub(crate) fn read_log(
    path: &Path,
    ctx: &mut Ctx,
    mut apply: impl FnMut(u8, &[u8]) -> Result<(), Corruption>,
) -> Result<(), MigrateError> {
    let Some(mut f) = RefFile::open(path, ctx.chunk)? else {
        return Ok(());
    };
    if !check_version(&mut f, ctx)? {
        return Ok(());
    }
    let mut pos = VERSION_LEN;
    loop {
        let crc = if ctx.check_crc { Some(&ctx.crc) } else { None };
        match record_at(&mut f, pos, true, crc)? {
            Step::End => return Ok(()),
            Step::Zeros => return zero_tail(&mut f, pos, ctx),
            Step::Record {
                rec_type,
                payload,
                next,
            } => {
                if let Err(kind) = apply(rec_type, payload) {
                    return ctx.issues.corrupt(path, pos, kind);
                }
                pos = next;
            }
            Step::Bad(kind) => return bad_record(&f, pos, kind, ctx),
        }
    }
}

/// The end of the valid records at an all-zero header: a finding if anything but zeros
/// follows (the reference truncates there without looking).
pub(crate) fn zero_tail(f: &mut RefFile, pos: u64, ctx: &mut Ctx) -> Result<(), MigrateError> {
    if f.nonzero_from(pos)? {
        let bytes = f.len() - pos;
        ctx.issues
            .note(f.path(), Some(pos), FindingKind::IgnoredTail { bytes });
    }
    Ok(())
}

/// A record that fails its checks: with `truncate_bad_eof`, one cut short by the end of the
/// file is dropped; anything else is damage.
pub(crate) fn bad_record(
    f: &RefFile,
    pos: u64,
    kind: Corruption,
    ctx: &mut Ctx,
) -> Result<(), MigrateError> {
    if kind == Corruption::Truncated && ctx.truncate_bad_eof {
        ctx.issues
            .note(f.path(), Some(pos), FindingKind::TruncatedRecord);
        return Ok(());
    }
    ctx.issues.corrupt(f.path(), pos, kind)
}

/// A message index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdxEntry {
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) size: u32,
}

/// One step of an index scan.
pub(crate) enum IdxStep {
    End,
    Zeros,
    Entry(IdxEntry),
    /// The file ends inside the entry.
    Partial,
    BadCrc {
        expected: u32,
        computed: u32,
    },
}

/// The index entry at `pos`, its CRC checked against `crc` when given.
pub(crate) fn idx_at(
    f: &mut RefFile,
    pos: u64,
    crc: Option<&Crc>,
) -> Result<IdxStep, MigrateError> {
    let len = f.len();
    if pos == len {
        return Ok(IdxStep::End);
    }
    if len - pos < IDX_ENTRY_LEN {
        return Ok(IdxStep::Partial);
    }
    let b = f.bytes(pos, IDX_ENTRY_LEN as usize)?;
    let stored = u32::from_le_bytes(le4(&b[28..32]));
    if stored == 0 && b[..28].iter().all(|&x| x == 0) {
        return Ok(IdxStep::Zeros);
    }
    if let Some(c) = crc {
        let computed = c.checksum(&b[..28]);
        if computed != stored {
            return Ok(IdxStep::BadCrc {
                expected: stored,
                computed,
            });
        }
    }
    Ok(IdxStep::Entry(IdxEntry {
        seq: u64::from_le_bytes(le8(&b[0..8])),
        offset: u64::from_le_bytes(le8(&b[8..16])),
        timestamp: i64::from_le_bytes(le8(&b[16..24])),
        size: u32::from_le_bytes(le4(&b[24..28])),
    }))
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::testutil::{record, typed_record};

    fn ctx() -> Ctx {
        Ctx {
            crc: Crc::new(super::super::crc::IEEE_POLY),
            check_crc: true,
            truncate_bad_eof: false,
            chunk: 4096,
            issues: Issues::collecting(),
        }
    }

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> RefFile {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        RefFile::open(&p, 4096).unwrap().unwrap()
    }

    #[test]
    fn window_reads_across_chunks_and_large_requests() {
        let d = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut f = file(d.path(), "x", &data);
        assert_eq!(f.bytes(0, 10).unwrap(), &data[..10]);
        assert_eq!(f.bytes(4090, 20).unwrap(), &data[4090..4110]);
        assert_eq!(f.bytes(100, 9000).unwrap(), &data[100..9100]);
        assert_eq!(f.bytes(19_990, 10).unwrap(), &data[19_990..]);
        assert!(f.nonzero_from(19_999).unwrap());
        let mut z = file(d.path(), "z", &[0u8; 9000]);
        assert!(!z.nonzero_from(0).unwrap());
    }

    #[test]
    fn records_typed_untyped_zeros_torn_and_crc() {
        let d = tempfile::tempdir().unwrap();
        let mut b = 1u32.to_le_bytes().to_vec();
        b.extend(typed_record(2, b"hello"));
        b.extend(record(b"untyped-ish"));
        let mut f = file(d.path(), "a", &b);
        let c = Crc::new(super::super::crc::IEEE_POLY);
        let Step::Record {
            rec_type,
            payload,
            next,
        } = record_at(&mut f, 4, true, Some(&c)).unwrap()
        else {
            panic!("record expected")
        };
        assert_eq!((rec_type, payload, next), (2, &b"hello"[..], 17));
        let Step::Record { payload, next, .. } = record_at(&mut f, 17, false, Some(&c)).unwrap()
        else {
            panic!("record expected")
        };
        assert_eq!(payload, b"untyped-ish");
        assert!(matches!(
            record_at(&mut f, next, false, None).unwrap(),
            Step::End
        ));

        // Cut short, in the header and in the payload.
        let mut t = file(d.path(), "t", &b[..b.len() - 3]);
        assert!(matches!(
            record_at(&mut t, 17, false, None).unwrap(),
            Step::Bad(Corruption::Truncated)
        ));
        let mut t = file(d.path(), "t2", &b[..20]);
        assert!(matches!(
            record_at(&mut t, 17, false, None).unwrap(),
            Step::Bad(Corruption::Truncated)
        ));
        // A flipped payload byte fails the CRC, unless CRC checking is off.
        let mut flipped = b.clone();
        flipped[14] ^= 0x40;
        let mut x = file(d.path(), "x", &flipped);
        assert!(matches!(
            record_at(&mut x, 4, true, Some(&c)).unwrap(),
            Step::Bad(Corruption::BadCrc { .. })
        ));
        assert!(matches!(
            record_at(&mut x, 4, true, None).unwrap(),
            Step::Record { .. }
        ));
        // Zeros.
        let mut zb = b.clone();
        zb.extend([0u8; 40]);
        let mut z = file(d.path(), "z", &zb);
        assert!(matches!(
            record_at(&mut z, b.len() as u64, false, None).unwrap(),
            Step::Zeros
        ));
    }

    #[test]
    fn log_reading_reports_damage_where_it_is() {
        let d = tempfile::tempdir().unwrap();
        let mut b = 1u32.to_le_bytes().to_vec();
        b.extend(typed_record(1, b"one"));
        let second = b.len() as u64;
        b.extend(typed_record(1, b"two"));
        let p = d.path().join("log");

        // Torn last record: damage by default, a finding with truncate_bad_eof.
        std::fs::write(&p, &b[..b.len() - 1]).unwrap();
        let mut c = ctx();
        let mut seen = Vec::new();
        read_log(&p, &mut c, |_, pl| {
            seen.push(pl.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![b"one".to_vec()]);
        assert_eq!(c.issues.damage.len(), 1);
        assert_eq!(c.issues.damage[0].offset, second);
        let mut c = ctx();
        c.truncate_bad_eof = true;
        read_log(&p, &mut c, |_, _| Ok(())).unwrap();
        assert!(c.issues.damage.is_empty());
        assert_eq!(c.issues.findings[0].kind, FindingKind::TruncatedRecord);

        // A rejected record is damage at its offset.
        std::fs::write(&p, &b).unwrap();
        let mut c = ctx();
        read_log(&p, &mut c, |_, pl| {
            if pl == b"two" {
                Err(Corruption::UnknownRecordType(9))
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(c.issues.damage[0].offset, second);

        // Bad versions.
        for (bytes, kind) in [
            (&[1u8, 0][..], Corruption::Truncated),
            (&[2, 0, 0, 0][..], Corruption::UnsupportedVersion(2)),
            (&[0, 0, 0, 0][..], Corruption::UnsupportedVersion(0)),
        ] {
            std::fs::write(&p, bytes).unwrap();
            let mut c = ctx();
            read_log(&p, &mut c, |_, _| Ok(())).unwrap();
            assert_eq!(
                c.issues.damage[0].kind,
                crate::migrate::error::DamageKind::Record(kind)
            );
        }

        // Zeros then data: a finding, the records before are read.
        let mut zb = b.clone();
        zb.extend([0u8; 8]);
        zb.extend(typed_record(1, b"lost"));
        std::fs::write(&p, &zb).unwrap();
        let mut c = ctx();
        let mut n = 0;
        read_log(&p, &mut c, |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        assert!(matches!(
            c.issues.findings[0].kind,
            FindingKind::IgnoredTail { .. }
        ));
    }

    #[test]
    fn index_entries() {
        let d = tempfile::tempdir().unwrap();
        let c = Crc::new(super::super::crc::IEEE_POLY);
        let e = IdxEntry {
            seq: 7,
            offset: 4,
            timestamp: -3,
            size: 99,
        };
        let mut b = 1u32.to_le_bytes().to_vec();
        b.extend(crate::migrate::testutil::index_entry(&e, &c));
        b.extend([0u8; 32]);
        b.extend([1u8; 5]);
        let mut f = file(d.path(), "i", &b);
        assert!(matches!(idx_at(&mut f, 4, Some(&c)).unwrap(), IdxStep::Entry(x) if x == e));
        assert!(matches!(
            idx_at(&mut f, 36, Some(&c)).unwrap(),
            IdxStep::Zeros
        ));
        assert!(matches!(
            idx_at(&mut f, 68, Some(&c)).unwrap(),
            IdxStep::Partial
        ));
        b[10] ^= 1;
        let mut f = file(d.path(), "j", &b);
        assert!(matches!(
            idx_at(&mut f, 4, Some(&c)).unwrap(),
            IdxStep::BadCrc { .. }
        ));
        assert!(matches!(
            idx_at(&mut f, 4, None).unwrap(),
            IdxStep::Entry(_)
        ));
    }
}
