//! In-place migration with a journal, and the offline migration's single-rename commit.
//! The protocol is described in the module documentation of [`migrate`](super).

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::{MigrateError, io_at};
use super::fsutil::{LOCK_FILE, lock_dir, sync_dir, sync_tree, write_durably};
use super::report::Report;
use super::{ReferenceOptions, run_migration};
use crate::store::StoreLimits;
use crate::store::file::FileStoreOptions;

/// The journal directory inside the store directory.
pub(crate) const JOURNAL: &str = ".rnats-migrate";
/// The journal, renamed once the migration is complete, before it is removed.
pub(crate) const DONE: &str = ".rnats-migrate.done";
const STAGING: &str = "staging";
/// Written (atomically) once the staging store is complete and durable: the commit point.
const COMMIT: &str = "COMMIT";
/// Written once every original entry is in the backup folder.
const MOVED: &str = "MOVED";
const BACKUP: &str = "nats-streaming-backup";
const COMMIT_HEADER: &str = "rnats-migrate 1";

/// What an in-place migration did. Its `Display` is the line to log.
#[derive(Debug, Clone)]
pub struct InPlaceSummary {
    pub dir: PathBuf,
    /// Where the original files are now.
    pub backup: PathBuf,
    pub channels: u64,
    pub messages: u64,
    pub clients: u64,
    pub subscriptions: u64,
    pub durables: u64,
    /// An interrupted migration was completed (its report was not kept).
    pub resumed: bool,
    /// The full report, when this call did the reading.
    pub report: Option<Report>,
}

impl fmt::Display for InPlaceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "migrated the nats-streaming-server file store in {} to rnats's format{}: {} channels, {} messages, {} clients, {} subscriptions ({} durable); the original files were moved to {} (remove them once the migrated store is confirmed)",
            self.dir.display(),
            if self.resumed {
                " (completing an interrupted migration)"
            } else {
                ""
            },
            self.channels,
            self.messages,
            self.clients,
            self.subscriptions,
            self.durables,
            self.backup.display()
        )
    }
}

impl InPlaceSummary {
    fn commit_text(&self) -> String {
        let backup = self
            .backup
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!(
            "{COMMIT_HEADER}\nbackup {backup}\nchannels {}\nmessages {}\nclients {}\nsubscriptions {}\ndurables {}\n",
            self.channels, self.messages, self.clients, self.subscriptions, self.durables
        )
    }

    fn parse_commit(dir: &Path, path: &Path, text: &str) -> Result<InPlaceSummary, MigrateError> {
        let bad = |reason: &str| MigrateError::Journal {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let mut lines = text.lines();
        if lines.next() != Some(COMMIT_HEADER) {
            return Err(bad("unknown header"));
        }
        let mut s = InPlaceSummary {
            dir: dir.to_owned(),
            backup: PathBuf::new(),
            channels: 0,
            messages: 0,
            clients: 0,
            subscriptions: 0,
            durables: 0,
            resumed: true,
            report: None,
        };
        for l in lines {
            let (k, v) = l.split_once(' ').ok_or_else(|| bad("malformed line"))?;
            let n = || v.parse::<u64>().map_err(|_| bad("malformed number"));
            match k {
                "backup" if is_backup_name(v) => s.backup = dir.join(v),
                "channels" => s.channels = n()?,
                "messages" => s.messages = n()?,
                "clients" => s.clients = n()?,
                "subscriptions" => s.subscriptions = n()?,
                "durables" => s.durables = n()?,
                _ => return Err(bad("unknown entry")),
            }
        }
        if s.backup.as_os_str().is_empty() {
            return Err(bad("no backup folder"));
        }
        Ok(s)
    }
}

fn is_backup_name(n: &str) -> bool {
    n == BACKUP
        || n.strip_prefix(BACKUP)
            .and_then(|r| r.strip_prefix('.'))
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
}

/// Hook called at each step of an in-place migration (tests stop there to simulate a
/// crash). Returning an error stops the migration where it is.
pub(crate) type StepHook<'a> = &'a mut dyn FnMut(&'static str) -> Result<(), MigrateError>;

/// See [`migrate_in_place`](super::migrate_in_place).
pub(crate) fn in_place(
    dir: &Path,
    opts: &ReferenceOptions,
    file_options: &FileStoreOptions,
    limits: &StoreLimits,
    hook: StepHook<'_>,
) -> Result<InPlaceSummary, MigrateError> {
    let _lock = lock_dir(dir, true)?;
    in_place_locked(dir, opts, file_options, limits, hook)?.ok_or_else(|| {
        MigrateError::NotReferenceStore {
            dir: dir.to_owned(),
        }
    })
}

/// [`in_place`] for a caller that holds the directory lock already. `None` when nothing is
/// left to do: the last migration was complete, and only its retired journal, whose summary
/// had been removed already, was left (now removed too).
pub(crate) fn in_place_locked(
    dir: &Path,
    opts: &ReferenceOptions,
    file_options: &FileStoreOptions,
    limits: &StoreLimits,
    hook: StepHook<'_>,
) -> Result<Option<InPlaceSummary>, MigrateError> {
    let journal = dir.join(JOURNAL);
    let done = dir.join(DONE);
    if done.exists() {
        // Complete, but killed while retiring the journal (possibly before it reported).
        let summary = match std::fs::read_to_string(done.join(COMMIT)) {
            Ok(text) => Some(InPlaceSummary::parse_commit(
                dir,
                &done.join(COMMIT),
                &text,
            )?),
            Err(_) => None,
        };
        remove_retired(&done)?;
        if summary.is_some() {
            return Ok(summary);
        }
        if !journal.exists() && !super::is_reference_store(dir)? {
            // Killed after the summary was removed, before the directory was.
            return Ok(None);
        }
    }
    let commit = journal.join(COMMIT);
    if commit.exists() {
        let text = std::fs::read_to_string(&commit).map_err(io_at(&commit))?;
        let summary = InPlaceSummary::parse_commit(dir, &commit, &text)?;
        roll_forward(dir, &summary, hook)?;
        return Ok(Some(summary));
    }
    if journal.exists() {
        // An attempt that did not reach its commit: the originals were not touched.
        std::fs::remove_dir_all(&journal).map_err(io_at(&journal))?;
        sync_dir(dir)?;
    }
    if !super::is_reference_store(dir)? {
        return Err(MigrateError::NotReferenceStore {
            dir: dir.to_owned(),
        });
    }
    std::fs::create_dir(&journal).map_err(io_at(&journal))?;
    sync_dir(dir)?;
    hook("journal created")?;
    let staging = journal.join(STAGING);
    let report = match run_migration(dir, &staging, opts, file_options, limits) {
        Ok(r) => r,
        Err(e) => {
            // Nothing was committed: leave the directory as it was found (the reference
            // would take the journal for a channel if the operator goes back to it).
            if std::fs::remove_dir_all(&journal).is_ok() {
                let _ = sync_dir(dir);
            }
            return Err(e);
        }
    };
    hook("staging written")?;
    sync_tree(&journal)?;
    hook("staging synced")?;

    let mut summary = InPlaceSummary {
        dir: dir.to_owned(),
        backup: dir.join(backup_name(dir)),
        channels: report.channels.len() as u64,
        messages: report.messages(),
        clients: report.clients.len() as u64,
        subscriptions: report.subscriptions() as u64,
        durables: report.durables() as u64,
        resumed: false,
        report: None,
    };
    write_durably(&commit, summary.commit_text().as_bytes())?;
    hook("committed")?;
    roll_forward(dir, &summary, hook)?;
    summary.report = Some(report);
    Ok(Some(summary))
}

/// The first of `nats-streaming-backup`, `nats-streaming-backup.1`, ... not in `dir`.
fn backup_name(dir: &Path) -> String {
    (0u32..)
        .map(|i| {
            if i == 0 {
                BACKUP.to_owned()
            } else {
                format!("{BACKUP}.{i}")
            }
        })
        .find(|n| !dir.join(n).exists())
        .unwrap_or_else(|| BACKUP.to_owned())
}

/// After the commit: moves the originals into the backup folder, then the staged store into
/// place, then removes the journal. Every step can be repeated after a crash.
fn roll_forward(
    dir: &Path,
    summary: &InPlaceSummary,
    hook: StepHook<'_>,
) -> Result<(), MigrateError> {
    let journal = dir.join(JOURNAL);
    let staging = journal.join(STAGING);
    let moved = journal.join(MOVED);
    let backup = &summary.backup;
    let backup_name = backup.file_name().unwrap_or_default();
    if !moved.exists() {
        if !backup.exists() {
            std::fs::create_dir(backup).map_err(io_at(backup))?;
            sync_dir(dir)?;
        }
        for e in std::fs::read_dir(dir).map_err(io_at(dir))? {
            let e = e.map_err(io_at(dir))?;
            let name = e.file_name();
            if name == LOCK_FILE || name == JOURNAL || name == DONE || name == backup_name {
                continue;
            }
            let to = backup.join(&name);
            std::fs::rename(e.path(), &to).map_err(io_at(&to))?;
            hook("original moved")?;
        }
        sync_dir(backup)?;
        sync_dir(dir)?;
        write_durably(&moved, b"")?;
        hook("originals moved")?;
    }
    if !staging.exists() {
        return Err(MigrateError::Journal {
            path: staging,
            reason: "the staged store is missing".into(),
        });
    }
    for e in std::fs::read_dir(&staging).map_err(io_at(&staging))? {
        let e = e.map_err(io_at(&staging))?;
        let name = e.file_name();
        if name == LOCK_FILE {
            continue;
        }
        let to = dir.join(&name);
        std::fs::rename(e.path(), &to).map_err(io_at(&to))?;
        hook("staged entry moved")?;
    }
    sync_dir(dir)?;
    hook("store in place")?;
    let done = dir.join(DONE);
    std::fs::rename(&journal, &done).map_err(io_at(&done))?;
    sync_dir(dir)?;
    hook("journal retired")?;
    remove_retired(&done)
}

/// Removes the retired journal, its commit file last: while that exists, a later call can
/// still report the summary.
fn remove_retired(done: &Path) -> Result<(), MigrateError> {
    for e in std::fs::read_dir(done).map_err(io_at(done))? {
        let e = e.map_err(io_at(done))?;
        let p = e.path();
        if e.file_name() == COMMIT {
            continue;
        }
        if e.file_type().map_err(io_at(&p))?.is_dir() {
            std::fs::remove_dir_all(&p).map_err(io_at(&p))?;
        } else {
            std::fs::remove_file(&p).map_err(io_at(&p))?;
        }
    }
    let commit = done.join(COMMIT);
    if commit.exists() {
        std::fs::remove_file(&commit).map_err(io_at(&commit))?;
    }
    std::fs::remove_dir(done).map_err(io_at(done))?;
    if let Some(parent) = done.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// See [`migrate`](super::migrate): writes into a staging directory next to `dst`, then
/// renames it to `dst` (one atomic step).
pub(crate) fn offline(
    src: &Path,
    dst: &Path,
    opts: &ReferenceOptions,
    file_options: &FileStoreOptions,
    limits: &StoreLimits,
) -> Result<Report, MigrateError> {
    let src_abs = std::fs::canonicalize(src).map_err(io_at(src))?;
    let name = dst
        .file_name()
        .ok_or_else(|| MigrateError::DestinationNotEmpty {
            dir: dst.to_owned(),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let parent_abs = std::fs::canonicalize(&parent).map_err(io_at(&parent))?;
    if parent_abs.join(&name).starts_with(&src_abs) {
        return Err(MigrateError::DestinationInSource {
            src: src.to_owned(),
            dst: dst.to_owned(),
        });
    }
    match std::fs::read_dir(dst) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(MigrateError::DestinationNotEmpty {
                    dir: dst.to_owned(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(MigrateError::io(dst, e)),
    }
    let _lock = lock_dir(src, false)?;
    let staging = parent.join(format!(".{name}.rnats-migrate"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_at(&staging))?;
    }
    let mut report = match run_migration(src, &staging, opts, file_options, limits) {
        Ok(r) => r,
        Err(e) => {
            // No half-written store left next to the destination.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    sync_tree(&staging)?;
    std::fs::rename(&staging, dst).map_err(io_at(dst))?;
    sync_dir(&parent)?;
    report.destination = Some(dst.to_owned());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_text_round_trips() {
        let s = InPlaceSummary {
            dir: "/d".into(),
            backup: "/d/nats-streaming-backup.2".into(),
            channels: 6,
            messages: 205,
            clients: 1,
            subscriptions: 2,
            durables: 2,
            resumed: false,
            report: None,
        };
        let p = Path::new("/d/.rnats-migrate/COMMIT");
        let back = InPlaceSummary::parse_commit(Path::new("/d"), p, &s.commit_text()).unwrap();
        assert_eq!(back.backup, s.backup);
        assert_eq!(
            (
                back.channels,
                back.messages,
                back.clients,
                back.subscriptions,
                back.durables
            ),
            (6, 205, 1, 2, 2)
        );
        assert!(back.resumed);
        for bad in [
            "",
            "rnats-migrate 2\n",
            "rnats-migrate 1\nbackup ../x\n",
            "rnats-migrate 1\nchannels\n",
        ] {
            assert!(
                InPlaceSummary::parse_commit(Path::new("/d"), p, bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(is_backup_name("nats-streaming-backup.12"));
        assert!(!is_backup_name("nats-streaming-backup.x"));
    }

    #[test]
    fn backup_names_do_not_collide() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(backup_name(d.path()), "nats-streaming-backup");
        std::fs::create_dir(d.path().join("nats-streaming-backup")).unwrap();
        std::fs::create_dir(d.path().join("nats-streaming-backup.1")).unwrap();
        assert_eq!(backup_name(d.path()), "nats-streaming-backup.2");
    }
}
