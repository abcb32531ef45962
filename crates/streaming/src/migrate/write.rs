//! Writes a [`Scan`] into a new [`FileStore`] through the store traits, then reopens it with a
//! full recovery check and compares it with the scan before anything is committed.
//!
//! * server info: [`Store::init`]; clients: [`Store::add_client`];
//! * each channel: [`Store::create_channel`], then [`MsgStore::store`] of every kept message
//!   with its original sequence and timestamp (the log starts at the first kept sequence;
//!   holes in old logs are filled with empty messages, a finding), flushed every few MiB;
//! * a channel whose messages all expired keeps its last sequence: its last message is
//!   stored and expired again ([`MsgStore::expire`]), as it is in the reference;
//! * subscriptions in reference-ID order: [`SubStore::create_sub`](crate::store::SubStore::create_sub) (our store assigns new
//!   IDs, which clients never see), then the pending sequences, so that a resumed durable
//!   gets its unacknowledged messages redelivered first.
//!
//! The store is written with fsync off and limits that cannot refuse what the reference
//! held (no `max_channels` / `max_subs`; message limits are those of the plan); the caller
//! syncs the whole directory before committing.

use std::path::Path;

use super::error::MigrateError;
use super::records::Ctx;
use super::source::{Scan, ScannedChannel};
use crate::proto::MsgProto;
use crate::store::file::{FileStore, FileStoreOptions, RecoveryCheck, SyncPolicy};
use crate::store::{MsgStore, Store, StoreLimits};

/// Data written between two flushes of a channel (bounds the index entries held in memory).
const FLUSH_BYTES: u64 = 32 << 20;
const FLUSH_MSGS: u64 = 100_000;

/// `limits` without the limits a migration must not hit: the reference held these channels
/// and subscriptions, so they all carry over.
pub(crate) fn migration_limits(limits: &StoreLimits) -> StoreLimits {
    let mut l = limits.clone();
    l.max_channels = 0;
    l.channel.max_subs = 0;
    for o in l.per_channel.values_mut() {
        if o.max_subs.is_some() {
            o.max_subs = Some(0);
        }
    }
    l
}

fn write_options(file_options: &FileStoreOptions) -> FileStoreOptions {
    FileStoreOptions {
        sync: SyncPolicy::Never,
        recovery_check: RecoveryCheck::Full,
        ..file_options.clone()
    }
}

/// Writes `scan` as a new store in `dst`, reading message payloads again from the reference
/// files through `ctx` (strict). `now` is the instant the plan was made for. Returns per
/// channel the number of empty messages written to fill holes.
pub(crate) fn write_store(
    scan: &Scan,
    dst: &Path,
    file_options: &FileStoreOptions,
    limits: &StoreLimits,
    now: i64,
    ctx: &mut Ctx,
) -> Result<Vec<u64>, MigrateError> {
    let store = FileStore::open(dst, write_options(file_options), migration_limits(limits))?;
    if let Some(info) = &scan.info {
        store.init(info)?;
    }
    for c in &scan.clients {
        store.add_client(c)?;
    }
    let mut fills = Vec::with_capacity(scan.channels.len());
    for sc in &scan.channels {
        let ch = store.create_channel(&sc.name)?;
        fills.push(copy_msgs(sc, ch.msgs(), now, ctx)?);
        ch.msgs().flush()?;
        for s in &sc.subs {
            let mut st = s.state.clone();
            st.id = 0;
            ch.subs().create_sub(&mut st)?;
            if !s.pending.is_empty() {
                let seqs: Vec<u64> = s.pending.iter().copied().collect();
                ch.subs().add_seqs_pending(st.id, &seqs)?;
            }
        }
        ch.subs().flush()?;
    }
    store.close()?;
    Ok(fills)
}

/// Copies the kept messages of a channel; returns how many empty messages filled holes.
fn copy_msgs(
    sc: &ScannedChannel,
    msgs: &dyn MsgStore,
    now: i64,
    ctx: &mut Ctx,
) -> Result<u64, MigrateError> {
    let k = &sc.kept;
    if k.msgs == 0 {
        if k.last > 0 {
            // Everything expired: keep the last sequence the way the reference does.
            sc.log.for_each_msg(sc.log.last_cursor(), ctx, |m| {
                msgs.store(&m)?;
                Ok(())
            })?;
            msgs.expire(now)?;
        }
        return Ok(0);
    }
    let mut prev = 0u64;
    let mut filled = 0;
    let mut since_flush = (0u64, 0u64);
    sc.log.for_each_msg(k.start, ctx, |m| {
        if prev != 0 && m.sequence > prev + 1 {
            for seq in prev + 1..m.sequence {
                msgs.store(&MsgProto {
                    sequence: seq,
                    subject: sc.name.clone(),
                    timestamp: m.timestamp,
                    ..Default::default()
                })?;
                filled += 1;
            }
        }
        msgs.store(&m)?;
        prev = m.sequence;
        since_flush.0 += 1;
        since_flush.1 += m.data.len() as u64;
        if since_flush.0 >= FLUSH_MSGS || since_flush.1 >= FLUSH_BYTES {
            msgs.flush()?;
            since_flush = (0, 0);
        }
        Ok(())
    })?;
    Ok(filled)
}

/// Reopens the store written in `dst` (every record checked) and compares it with `scan`
/// (`fills` as [`write_store`] returned them).
pub(crate) fn verify_store(
    scan: &Scan,
    fills: &[u64],
    dst: &Path,
    file_options: &FileStoreOptions,
    limits: &StoreLimits,
) -> Result<(), MigrateError> {
    let store = FileStore::open(dst, write_options(file_options), migration_limits(limits))?;
    let rec = store.recover()?;
    let bad = |what: String| MigrateError::Verify {
        dir: dst.to_owned(),
        what,
    };
    if rec.info != scan.info {
        return Err(bad("server information differs".into()));
    }
    let mut ids: Vec<&str> = rec.clients.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = scan.clients.iter().map(|c| c.id.as_str()).collect();
    want.sort_unstable();
    if ids != want {
        return Err(bad(format!("clients {ids:?}, expected {want:?}")));
    }
    if rec.channels.len() != scan.channels.len() {
        return Err(bad(format!(
            "{} channels, expected {}",
            rec.channels.len(),
            scan.channels.len()
        )));
    }
    for ((rc, sc), filled) in rec.channels.iter().zip(&scan.channels).zip(fills) {
        let st = rc.channel.msgs().state();
        let k = &sc.kept;
        if rc.channel.name() != sc.name || st.last != k.last || st.msgs != k.msgs + filled {
            return Err(bad(format!(
                "channel {:?}: last {} and {} messages, expected {:?} with last {} and {} messages",
                rc.channel.name(),
                st.last,
                st.msgs,
                sc.name,
                k.last,
                k.msgs + filled
            )));
        }
        if k.msgs > 0 && st.first != k.first {
            return Err(bad(format!(
                "channel {:?}: first {}, expected {}",
                sc.name, st.first, k.first
            )));
        }
        if rc.subscriptions.len() != sc.subs.len() {
            return Err(bad(format!(
                "channel {:?}: {} subscriptions, expected {}",
                sc.name,
                rc.subscriptions.len(),
                sc.subs.len()
            )));
        }
        for (r, s) in rc.subscriptions.iter().zip(&sc.subs) {
            let mut st = r.state.clone();
            st.id = s.state.id;
            if st != s.state || r.pending != s.pending {
                return Err(bad(format!(
                    "channel {:?}: subscription {} differs",
                    sc.name, s.state.id
                )));
            }
        }
    }
    store.close()?;
    Ok(())
}
