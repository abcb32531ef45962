//! Errors of the migration, and the damage and findings a reading of the reference store
//! reports.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::store::{Corruption, StoreError};

/// Why a migration (or a check) failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The directory does not hold a nats-streaming-server file store (nor an interrupted
    /// migration of one).
    #[error(
        "{} does not hold a nats-streaming-server file store (no server.dat or clients.dat with its file header)",
        dir.display()
    )]
    NotReferenceStore { dir: PathBuf },
    /// The reference store is damaged: what the reference server would refuse to recover, or
    /// a record that cannot be read back. Fix or remove the file (the reference's
    /// `file_truncate_bad_eof` option has the same effect on a torn last record), then retry.
    #[error("{0}")]
    Corrupt(Damage),
    /// Another process holds the store directory's lock (a running nats-streaming-server,
    /// rnats-streaming-server, or another migration). Stop it and retry.
    #[error(
        "store directory {} is in use (lock file {} is held by another process): stop the server using it first",
        dir.display(),
        lock.display()
    )]
    Locked { dir: PathBuf, lock: PathBuf },
    /// The destination of an offline migration exists and is not an empty directory.
    #[error(
        "destination {} already exists and is not empty: choose a new directory",
        dir.display()
    )]
    DestinationNotEmpty { dir: PathBuf },
    /// Source and destination of an offline migration overlap.
    #[error(
        "destination {} must not be the source store {} nor inside it",
        dst.display(),
        src.display()
    )]
    DestinationInSource { src: PathBuf, dst: PathBuf },
    /// The journal of an interrupted in-place migration is not in a state this build can
    /// resume. Nothing was removed: the original files are in the store directory or in the
    /// backup folder the journal names.
    #[error("cannot resume the migration journal {}: {reason}", path.display())]
    Journal { path: PathBuf, reason: String },
    /// The store written does not hold what was read (a bug; nothing was committed).
    #[error("migrated store in {} does not match the source: {what}", dir.display())]
    Verify { dir: PathBuf, what: String },
    /// Writing our store failed.
    #[error("writing the migrated store: {0}")]
    Store(#[from] StoreError),
    /// An I/O error, with the file or directory it happened on.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MigrateError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MigrateError::Io {
            path: path.into(),
            source,
        }
    }

    /// The damage, if this is [`MigrateError::Corrupt`].
    pub fn damage(&self) -> Option<&Damage> {
        match self {
            MigrateError::Corrupt(d) => Some(d),
            _ => None,
        }
    }
}

/// Shorthand for `map_err(|e| MigrateError::io(path, e))`.
pub(crate) fn io_at(path: &Path) -> impl Fn(std::io::Error) -> MigrateError + '_ {
    move |e| MigrateError::io(path, e)
}

/// Something wrong in a reference store file, at a byte offset of that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    pub offset: u64,
    pub kind: DamageKind,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt nats-streaming-server store file {} at offset {}: {}",
            self.path.display(),
            self.offset,
            self.kind
        )
    }
}

/// What is wrong (see [`Damage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageKind {
    /// A record, file header or index entry fails its checks.
    Record(Corruption),
    /// `server.dat` is not exactly one record long (the reference refuses it too).
    ServerFileSize { expected: u64, found: u64 },
    /// A `msgs.<n>.dat` whose `<n>` is not a number (the reference refuses it too).
    SliceName,
    /// Channels exist but the server information was never written (the reference refuses
    /// to start on such a directory).
    NoServerInfo,
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DamageKind::Record(c) => c.fmt(f),
            DamageKind::ServerFileSize { expected, found } => write!(
                f,
                "server file is {found} bytes, its record says {expected}"
            ),
            DamageKind::SliceName => f.write_str("message file name has no valid slice number"),
            DamageKind::NoServerInfo => {
                f.write_str("no server information, yet the directory holds channels")
            }
        }
    }
}

/// Something a reading noticed that does not stop the migration: the reference server would
/// have handled it the same way (documented per kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    /// Byte offset in `path`, where it applies.
    pub offset: Option<u64>,
    pub kind: FindingKind,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(o) = self.offset {
            write!(f, " at offset {o}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// The kinds of [`Finding`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingKind {
    /// The slice's index is missing, damaged or disagrees with its data file; the messages
    /// were read from the data file instead (the reference rebuilds the index the same way).
    IndexRebuilt { reason: String },
    /// Bytes after the last record the reference would recover (zeros of an interrupted
    /// write, or data records never indexed); the reference ignores them too.
    IgnoredTail { bytes: u64 },
    /// A record cut short by a crash, dropped because `truncate_bad_eof` was set (the
    /// reference's `file_truncate_bad_eof`).
    TruncatedRecord,
    /// Sequences missing inside a channel's log (older reference versions could leave such
    /// gaps): filled with empty messages, as the reference itself fills gaps.
    GapFilled { from: u64, to: u64 },
    /// A file or directory the reference does not recover from (temporary file of an
    /// interrupted compaction, slice kept for the archive script, stray entry).
    Ignored { reason: &'static str },
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FindingKind::IndexRebuilt { reason } => {
                write!(
                    f,
                    "index not used ({reason}); messages read from the data file"
                )
            }
            FindingKind::IgnoredTail { bytes } => {
                write!(f, "{bytes} bytes after the last valid record ignored")
            }
            FindingKind::TruncatedRecord => {
                f.write_str("record cut short by a crash dropped (truncate_bad_eof)")
            }
            FindingKind::GapFilled { from, to } => {
                write!(
                    f,
                    "sequences {from}..={to} missing, filled with empty messages"
                )
            }
            FindingKind::Ignored { reason } => write!(f, "ignored ({reason})"),
        }
    }
}

/// Collects damage and findings. In strict mode (a migration) the first damage is returned as
/// an error; in collecting mode (a check) it is recorded and the reading goes on where it
/// can.
#[derive(Debug, Default)]
pub(crate) struct Issues {
    collect: bool,
    pub(crate) damage: Vec<Damage>,
    pub(crate) findings: Vec<Finding>,
}

impl Issues {
    pub(crate) fn strict() -> Self {
        Issues::default()
    }

    pub(crate) fn collecting() -> Self {
        Issues {
            collect: true,
            ..Default::default()
        }
    }

    /// Reports damage: `Err` in strict mode, recorded otherwise (the caller then skips what
    /// it could not read).
    pub(crate) fn damage(
        &mut self,
        path: &Path,
        offset: u64,
        kind: DamageKind,
    ) -> Result<(), MigrateError> {
        let d = Damage {
            path: path.to_owned(),
            offset,
            kind,
        };
        if self.collect {
            self.damage.push(d);
            Ok(())
        } else {
            Err(MigrateError::Corrupt(d))
        }
    }

    /// [`damage`](Self::damage) of a record.
    pub(crate) fn corrupt(
        &mut self,
        path: &Path,
        offset: u64,
        kind: Corruption,
    ) -> Result<(), MigrateError> {
        self.damage(path, offset, DamageKind::Record(kind))
    }

    pub(crate) fn note(&mut self, path: &Path, offset: Option<u64>, kind: FindingKind) {
        self.findings.push(Finding {
            path: path.to_owned(),
            offset,
            kind,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_returns_the_first_damage_and_collecting_keeps_going() {
        let p = Path::new("/s/foo/msgs.1.dat");
        let mut strict = Issues::strict();
        let e = strict
            .corrupt(p, 12, Corruption::Truncated)
            .expect_err("strict mode fails");
        assert_eq!(
            e.to_string(),
            "corrupt nats-streaming-server store file /s/foo/msgs.1.dat at offset 12: record truncated"
        );
        assert_eq!(e.damage().map(|d| d.offset), Some(12));

        let mut c = Issues::collecting();
        c.corrupt(p, 12, Corruption::Truncated).unwrap();
        c.damage(p, 0, DamageKind::SliceName).unwrap();
        assert_eq!(c.damage.len(), 2);
    }
}
