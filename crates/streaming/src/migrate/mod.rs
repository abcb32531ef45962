//! Migration of a nats-streaming-server (the Go reference) FILE store into our
//! [`FileStore`](crate::store::file::FileStore).
//!
//! # Shape
//!
//! ```text
//! detect     is_reference_store: by the files' version header, never by names
//! records    the reference's framing: version header, CRC'd records, 32-byte index entries
//! crc        IEEE or any `file_crc_poly`; checking can be off (`file_crc=false`)
//! logs       server.dat, clients.dat, subs.dat replayed with the reference's rules
//! msgs       a channel's slices: index or data file, limits re-applied, messages streamed
//! source     the whole directory → Scan (no payload held)
//! report     Report: channels, messages, clients, subscriptions, damage, findings
//! write      Scan → our store through the Store traits, then reopened and compared
//! inplace    the in-place journal and the offline single-rename commit
//! ```
//!
//! The reference's files are only ever read. What carries over is what the reference would
//! recover and serve: it re-applies the channel limits on every start (messages dropped by
//! `max_msgs` stay in its files until their slice is removed), so the [`StoreLimits`] given
//! here decide the first sequence of each channel as they did for the reference; pass the
//! limits the reference ran with.
//!
//! Reading holds at most three reference files open at once (an index, its data file, a
//! record log) whatever the number of channels and slices, so the reference's
//! `file_descriptors_limit` needs no counterpart; the reference's slice options only decide
//! how many `msgs.<n>` files there are, and any layout is read. Our own files are shaped by
//! the [`FileStoreOptions`] given (slices, `fds_limit`), as for any store we write.
//!
//! # Crash safety of [`migrate_in_place`]
//!
//! Our store and the reference's use the same names at the top of the directory
//! (`server.dat`, `clients.dat`), so the switch cannot be a single rename of files. It is a
//! journal whose commit point is one atomic rename:
//!
//! ```text
//! D/.rootdir.lck                      flock held throughout (the lock both servers take)
//! D/.rnats-migrate/staging/           1. our store written here, reopened and compared,
//!                                        then every file and directory fsynced
//! D/.rnats-migrate/COMMIT             2. COMMIT.new written, fsynced, renamed: THE COMMIT
//! D/nats-streaming-backup/            3. every original entry of D renamed into it
//! D/.rnats-migrate/MOVED              4. written once step 3 is complete
//! D/server.dat, clients.dat, channels 5. the staged entries renamed into D
//! D/.rnats-migrate.done               6. the journal renamed, then removed (COMMIT last)
//! ```
//!
//! * Killed before step 2: the originals were never touched. The next start removes
//!   `.rnats-migrate` and migrates again from the start. A migration that fails before
//!   step 2 (damage found, an I/O error) removes `.rnats-migrate` itself.
//! * Killed after step 2: the next start finds `COMMIT` and rolls forward. Step 3 moves every
//!   entry of D except the lock file, the journal and the backup folder, which is right
//!   until `MOVED` exists, since no staged entry is in D before that; step 5 moves whatever
//!   is still in the staging directory. Each rename is atomic, so every step can be
//!   repeated; directories are fsynced after each step. Killed while the retired journal
//!   is removed: the next start finishes removing it (and still reports the summary kept
//!   in its `COMMIT`).
//! * The originals are never modified nor deleted: they end in the backup folder (named in
//!   `COMMIT`, chosen so that it does not collide), for the operator to remove.
//! * While a journal exists our file store refuses to open the directory
//!   ([`StoreError::MigrationPending`](crate::store::StoreError::MigrationPending)), and it
//!   refuses a directory that still holds a reference store, so a partly moved directory
//!   is never served; [`migrate_in_place_if_needed`] at start-up completes or restarts it.
//!
//! If the operator goes back to nats-streaming-server after a migration was interrupted
//! before its commit, `D/.rnats-migrate` must be removed first (the reference would take it
//! for a channel directory).
//!
//! The offline [`migrate`] writes into a staging directory next to the destination and
//! renames it to the destination: the destination either does not exist (or is still empty)
//! or holds the complete store.
//!
//! Not handled: stores encrypted by the reference (`encrypt`), whose payloads would be
//! carried over still encrypted.

mod crc;
mod detect;
mod error;
mod fsutil;
mod inplace;
mod logs;
mod msgs;
mod records;
mod report;
mod source;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
mod write;

use std::path::Path;

pub use crc::IEEE_POLY;
pub use detect::{has_pending_migration, is_reference_store};
pub use error::{Damage, DamageKind, Finding, FindingKind, MigrateError};
pub use inplace::InPlaceSummary;
pub use report::{ChannelReport, Report, SubReport};

use self::error::Issues;
use self::records::Ctx;
use crate::store::file::{DirLock, FileStoreOptions};
use crate::store::{StoreLimits, now_nanos};

/// How the reference store was written: its file store options that matter for reading
/// (`file_crc`, `file_crc_poly`, `file_truncate_bad_eof`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceOptions {
    /// Check record CRCs (`file_crc`, default true). The reference always writes them.
    pub check_crc: bool,
    /// The CRC-32 polynomial, reflected as Go's `crc32.MakeTable` takes it
    /// (`file_crc_poly`, default [`IEEE_POLY`]).
    pub crc_poly: u32,
    /// Drop a last record cut short by a crash instead of failing
    /// (`file_truncate_bad_eof`, default false). The reference's files are not changed.
    pub truncate_bad_eof: bool,
    /// Read-ahead per file. Default 1 MiB.
    pub read_buffer_size: usize,
}

impl Default for ReferenceOptions {
    fn default() -> Self {
        ReferenceOptions {
            check_crc: true,
            crc_poly: IEEE_POLY,
            truncate_bad_eof: false,
            read_buffer_size: 1 << 20,
        }
    }
}

impl ReferenceOptions {
    fn ctx(&self, issues: Issues) -> Ctx {
        Ctx {
            crc: crc::Crc::new(self.crc_poly),
            check_crc: self.check_crc,
            truncate_bad_eof: self.truncate_bad_eof,
            chunk: self.read_buffer_size,
            issues,
        }
    }
}

/// Dry run: reads the whole reference store in `dir` (every message record checked) and
/// reports what a migration with `limits` would carry over, with every damaged place found
/// (path and offset) in [`Report::damage`]. Nothing is written. Fails with
/// [`MigrateError::Locked`] while a server uses the directory.
pub fn check(
    dir: impl AsRef<Path>,
    opts: &ReferenceOptions,
    limits: &StoreLimits,
) -> Result<Report, MigrateError> {
    let dir = dir.as_ref();
    if !is_reference_store(dir)? {
        return Err(MigrateError::NotReferenceStore {
            dir: dir.to_owned(),
        });
    }
    let _lock = fsutil::lock_dir(dir, false)?;
    let mut ctx = opts.ctx(Issues::collecting());
    let scan = source::scan(dir, limits, now_nanos(), &mut ctx)?;
    for c in &scan.channels {
        c.log.for_each_msg(c.kept.start, &mut ctx, |_| Ok(()))?;
    }
    let mut report = Report::from_scan(&scan);
    report.damage = ctx.issues.damage;
    report.findings = ctx.issues.findings;
    Ok(report)
}

/// Offline migration: reads the reference store in `src` and writes our file store in `dst`
/// (which must not exist, or be an empty directory), with `file_options` shaping our files
/// and `limits` applied as the reference applied them. The first damage found fails the
/// migration and leaves `dst` as it was. `src` is not modified.
pub fn migrate(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    opts: &ReferenceOptions,
    file_options: &FileStoreOptions,
    limits: &StoreLimits,
) -> Result<Report, MigrateError> {
    let src = src.as_ref();
    if !is_reference_store(src)? {
        return Err(MigrateError::NotReferenceStore {
            dir: src.to_owned(),
        });
    }
    inplace::offline(src, dst.as_ref(), opts, file_options, limits)
}

/// In-place migration, for a server started with `-st FILE --dir D` on a reference store:
/// afterwards D holds our store and the original files are in a backup folder inside D. Safe
/// against a crash at any moment (see the module documentation); a call after an
/// interrupted one completes it or starts it again. Fails with
/// [`MigrateError::NotReferenceStore`] if there is nothing to migrate.
pub fn migrate_in_place(
    dir: impl AsRef<Path>,
    opts: &ReferenceOptions,
    file_options: &FileStoreOptions,
    limits: &StoreLimits,
) -> Result<InPlaceSummary, MigrateError> {
    inplace::in_place(dir.as_ref(), opts, file_options, limits, &mut |_| Ok(()))
}

/// [`migrate_in_place`] when `dir` holds a reference store or an unfinished migration;
/// `Ok(None)` otherwise (our own store, an empty or missing directory, or a migration
/// killed at the very end of removing its journal, which this call finishes). For the
/// server's start-up, before it opens its file store.
pub fn migrate_in_place_if_needed(
    dir: impl AsRef<Path>,
    opts: &ReferenceOptions,
    file_options: &FileStoreOptions,
    limits: &StoreLimits,
) -> Result<Option<InPlaceSummary>, MigrateError> {
    let dir = dir.as_ref();
    if needs_migration(dir)? {
        let _lock = fsutil::lock_dir(dir, true)?;
        inplace::in_place_locked(dir, opts, file_options, limits, &mut |_| Ok(()))
    } else {
        Ok(None)
    }
}

/// [`migrate_in_place_if_needed`] under a directory lock the caller holds already: the
/// active server of a fault-tolerance group, which took the lock while on standby and must
/// not let it go (a standby would take it). The migration runs under that lock.
pub fn migrate_in_place_if_needed_locked(
    lock: &DirLock,
    opts: &ReferenceOptions,
    file_options: &FileStoreOptions,
    limits: &StoreLimits,
) -> Result<Option<InPlaceSummary>, MigrateError> {
    let dir = lock.dir();
    if needs_migration(dir)? {
        inplace::in_place_locked(dir, opts, file_options, limits, &mut |_| Ok(()))
    } else {
        Ok(None)
    }
}

/// A reference store, an unfinished migration, or a retired journal still to remove.
fn needs_migration(dir: &Path) -> Result<bool, MigrateError> {
    Ok(dir.join(inplace::DONE).exists() || has_pending_migration(dir) || is_reference_store(dir)?)
}

/// Scan (strict), write into `staging`, reopen and compare.
fn run_migration(
    src: &Path,
    staging: &Path,
    opts: &ReferenceOptions,
    file_options: &FileStoreOptions,
    limits: &StoreLimits,
) -> Result<Report, MigrateError> {
    let now = now_nanos();
    let mut ctx = opts.ctx(Issues::strict());
    let scan = source::scan(src, limits, now, &mut ctx)?;
    let fills = write::write_store(&scan, staging, file_options, limits, now, &mut ctx)?;
    write::verify_store(&scan, &fills, staging, file_options, limits)?;
    let mut report = Report::from_scan(&scan);
    report.findings = ctx.issues.findings;
    Ok(report)
}
