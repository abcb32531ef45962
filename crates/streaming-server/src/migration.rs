//! Start-up migration of a nats-streaming-server FILE store (the library side is
//! [`rnats_streaming::migrate`]): `-st FILE --dir D` on a directory that holds the
//! reference's store, or an interrupted migration of one, converts it in place before the
//! file store opens it. The offline modes (`--migrate_from`, `--migrate_check`) are the
//! binary's, in `main.rs`.
//!
//! The migration runs only in the process that holds the directory's lock, under that lock:
//!
//! ```text
//! standalone, partitioned   the migration takes the lock, migrates, lets it go; the store
//!                           takes it next (a second server fails on the lock either way)
//! FT active                 migrates under the lock it took on standby (never let go, so
//!                           no standby can take it meanwhile); a standby never migrates
//! clustered node            refuses a reference store: its state also lives in the
//!                           reference's RAFT log, which is not migrated
//! ```

use std::path::Path;

use rnats_streaming::migrate::{
    InPlaceSummary, MigrateError, has_pending_migration, is_reference_store,
    migrate_in_place_if_needed, migrate_in_place_if_needed_locked,
};
use rnats_streaming::store::StoreKind;
use tracing::{info, warn};

use crate::ft::HeldLock;
use crate::options::Options;
use crate::server::StartError;

/// Migrates the FILE store directory in place when it holds a nats-streaming-server store
/// (or an unfinished migration), logging what was migrated; hands `lock` back for the store
/// to open with. Nothing happens for other stores, our own files, or an empty directory.
pub(crate) async fn migrate_at_startup(
    opts: &Options,
    lock: Option<HeldLock>,
) -> Result<Option<HeldLock>, StartError> {
    let Some(dir) = opts
        .dir
        .clone()
        .filter(|_| opts.store_type == StoreKind::File)
    else {
        return Ok(lock);
    };
    let found = has_pending_migration(&dir) || is_reference_store(&dir).unwrap_or(false);
    if opts.clustering.clustered {
        if found {
            return Err(StartError::Config(format!(
                "{} holds a nats-streaming-server file store: a clustered node cannot migrate it (its state is also in the reference's RAFT log, which is not migrated); start the cluster on new directories",
                dir.display()
            )));
        }
        return Ok(lock);
    }
    if found {
        info!(
            "STREAM: {} holds a nats-streaming-server file store: migrating it to rnats's format",
            dir.display()
        );
    }
    let (ref_opts, fo, limits) = (
        opts.reference_options(),
        opts.file_options.clone(),
        opts.limits.clone(),
    );
    let migrate_dir = dir.clone();
    let run = move || {
        let r = match &lock {
            Some(HeldLock::File(l)) => {
                migrate_in_place_if_needed_locked(l, &ref_opts, &fo, &limits)
            }
            _ => migrate_in_place_if_needed(&migrate_dir, &ref_opts, &fo, &limits),
        };
        (lock, r)
    };
    let (lock, r) = tokio::task::spawn_blocking(run)
        .await
        .map_err(|e| StartError::Store(e.to_string()))?;
    match r {
        Ok(Some(summary)) => log_summary(&summary),
        Ok(None) => {}
        Err(e) => return Err(StartError::Store(failed(&dir, &e))),
    }
    Ok(lock)
}

fn log_summary(summary: &InPlaceSummary) {
    info!("STREAM: {summary}");
    for f in summary.report.iter().flat_map(|r| &r.findings) {
        warn!("STREAM: migration: {f}");
    }
}

/// The start-up error: what failed, where, and that the originals are safe.
fn failed(dir: &Path, e: &MigrateError) -> String {
    let next = if e.damage().is_some() {
        format!(
            "nothing was changed; --migrate_check {} lists every damaged place",
            dir.display()
        )
    } else {
        "the original files are kept; a restart resumes the migration".to_string()
    };
    format!(
        "migrating the nats-streaming-server file store in {} failed: {e} ({next})",
        dir.display()
    )
}
