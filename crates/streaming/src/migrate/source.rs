//! Reads a whole reference store directory into a [`Scan`]: server info, clients, and per
//! channel its message log (slices, what the limits keep) and subscriptions. Message payloads
//! are not held: they are streamed from the files when checked or copied.
//!
//! ```text
//! <dir>/server.dat, clients.dat       see logs.rs
//! <dir>/<channel>/                    every directory is a channel (its name is the channel)
//! <dir>/.rootdir.lck, .truncate.lck   lock and witness files, no data
//! <dir>/clients.dat<N>, subs<N>       temporary files of an interrupted compaction (ignored)
//! ```

use std::path::{Path, PathBuf};

use super::error::{DamageKind, FindingKind, MigrateError};
use super::logs::{RefSub, read_clients, read_server_info, read_subs};
use super::msgs::{ChannelLog, Kept, list_channel};
use super::records::{Ctx, VERSION_LEN};
use crate::proto::{ClientInfo, ServerInfo};
use crate::store::{StoreLimits, is_valid_channel_name};

/// Names in a store directory that belong to a migration, never to the reference store.
pub(crate) const OWN_NAMES: [&str; 2] = [super::inplace::JOURNAL, super::inplace::DONE];

/// A reference store, read.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) root: PathBuf,
    pub(crate) info: Option<ServerInfo>,
    /// Registered clients, by ID.
    pub(crate) clients: Vec<ClientInfo>,
    /// By name.
    pub(crate) channels: Vec<ScannedChannel>,
}

#[derive(Debug)]
pub(crate) struct ScannedChannel {
    pub(crate) name: String,
    pub(crate) log: ChannelLog,
    pub(crate) kept: Kept,
    /// By reference ID.
    pub(crate) subs: Vec<RefSub>,
}

/// Reads the store in `root`, applying `limits` as of `now` (ns since the epoch) as the
/// reference does when it recovers.
pub(crate) fn scan(
    root: &Path,
    limits: &StoreLimits,
    now: i64,
    ctx: &mut Ctx,
) -> Result<Scan, MigrateError> {
    let mut channel_names = Vec::new();
    let rd = std::fs::read_dir(root).map_err(|e| MigrateError::io(root, e))?;
    for e in rd {
        let e = e.map_err(|e| MigrateError::io(root, e))?;
        let path = e.path();
        let name = e.file_name();
        let name = name.to_str();
        if name.is_some_and(|n| OWN_NAMES.contains(&n)) {
            continue;
        }
        let is_dir = e
            .file_type()
            .map_err(|e| MigrateError::io(&path, e))?
            .is_dir();
        match name {
            Some(n) if is_dir && is_valid_channel_name(n) => channel_names.push(n.to_owned()),
            _ if is_dir => {
                let reason = "directory name is not a valid channel name";
                ctx.issues
                    .note(&path, None, FindingKind::Ignored { reason });
            }
            Some("server.dat" | "clients.dat" | ".rootdir.lck" | ".truncate.lck") => {}
            Some(n) if is_compaction_leftover(n) => {
                let reason = "temporary file of an interrupted compaction";
                ctx.issues
                    .note(&path, None, FindingKind::Ignored { reason });
            }
            _ => {
                let reason = "not a file of the reference store";
                ctx.issues
                    .note(&path, None, FindingKind::Ignored { reason });
            }
        }
    }
    channel_names.sort();

    let server_path = root.join("server.dat");
    let info = read_server_info(&server_path, ctx)?;
    let mut scan = Scan {
        root: root.to_owned(),
        info,
        clients: Vec::new(),
        channels: Vec::new(),
    };
    if scan.info.is_none() {
        // The reference recovers nothing without server information, and refuses to start
        // when channels exist.
        if !channel_names.is_empty() {
            ctx.issues
                .damage(&server_path, VERSION_LEN, DamageKind::NoServerInfo)?;
        }
        return Ok(scan);
    }
    scan.clients = read_clients(&root.join("clients.dat"), ctx)?
        .into_values()
        .collect();
    for name in channel_names {
        let dir = root.join(&name);
        let files = list_channel(&dir, ctx)?;
        let log = ChannelLog::scan(&files, ctx)?;
        let kept = log.plan(&limits.resolve(&name), now, ctx)?;
        let subs = match &files.subs {
            Some(p) => read_subs(p, ctx)?.into_values().collect(),
            None => Vec::new(),
        };
        scan.channels.push(ScannedChannel {
            name,
            log,
            kept,
            subs,
        });
    }
    Ok(scan)
}

/// `clients.dat<random>` or `subs<random>`: what the reference's compaction writes before
/// renaming it over the real file.
fn is_compaction_leftover(name: &str) -> bool {
    name.strip_prefix("clients.dat")
        .or_else(|| name.strip_prefix("subs"))
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_leftovers() {
        assert!(is_compaction_leftover("clients.dat123456"));
        assert!(is_compaction_leftover("subs987"));
        assert!(!is_compaction_leftover("clients.dat"));
        assert!(!is_compaction_leftover("subs.dat"));
        assert!(!is_compaction_leftover("subsx1"));
    }
}
