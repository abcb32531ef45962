//! The state machine: openraft's [`RaftStateMachine`] over the server's [`Machine`].
//!
//! ```text
//! openraft ──apply(entries)──▶ StateMachine<M> ──apply(index, cmd)*, flush()──▶ M (the server)
//!          ──build snapshot──▶                 ──snapshot()──▶ bytes ─▶ SnapshotStore (file)
//!          ──install snapshot─▶                ──restore(index, bytes, FromLeader)──▶ M
//! start-up: newest snapshot file ─▶ restore(index, bytes, Startup) ─▶ openraft replays the
//!           log after it (committed entries at once, the rest once a leader confirms them)
//! ```
//!
//! # What the server implements
//!
//! * `apply` runs commands in log order, once per commit on a running node. After a restart
//!   the entries after the newest snapshot are applied **again** (the snapshot is the only
//!   apply point the adapter persists), so `apply` must be idempotent for an index the
//!   machine's own store already reflects (for example: a publish batch whose sequences the
//!   channel already holds is skipped). The index is strictly increasing within a run.
//! * `flush` ends each batch of `apply` calls: the place to make the batch durable (one
//!   fsync per batch rather than per command). Responses reach proposers after it returns.
//! * `snapshot` returns a compact image of what is not in the message store (per channel
//!   first/last sequence, clients, subscriptions with pending sequences...). It runs on the
//!   state-machine task, so it sees exactly the state after the last applied entry.
//! * `restore` adopts a snapshot. `Startup` means "this is this node's own newest snapshot;
//!   the store may already be ahead of it": reconcile, never wipe. `FromLeader` means "this
//!   node was behind; the leader's state at `index` replaces yours": fetch missing messages
//!   from the leader (the reference's `_STAN.snap.<cid>.<channel>` protocol) or drop what
//!   the snapshot no longer has.
//!
//! An `Err` from `apply`, `flush` or `snapshot` is fatal for the node (openraft stops it:
//! a state machine that failed half-way can't keep applying). Rejections of a command
//! (unknown channel, limits...) are answers, i.e. an `Ok(Response)`.

use std::fmt;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, StorageIOError, StoredMembership,
};

use crate::log::LogError;
use crate::snapshot::SnapshotStore;
use crate::types::{
    Entry, LogId, NodeInfo, Response, SnapshotData, SnapshotMeta, StorageError, TypeConfig,
};

/// A failure inside the server's state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MachineError(pub String);

impl MachineError {
    pub fn new(msg: impl fmt::Display) -> MachineError {
        MachineError(msg.to_string())
    }
}

/// Why [`Machine::restore`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreKind {
    /// The node starts from its own newest snapshot; its store may be ahead of it.
    Startup,
    /// The leader sent this snapshot because this node was too far behind (or new).
    FromLeader,
}

/// The replicated state the server keeps. See the module docs for the contract.
pub trait Machine: Send + Sync + 'static {
    /// Applies one committed command (the log entry's own buffer: keep slices of it
    /// instead of copying).
    fn apply(&mut self, index: u64, cmd: &Bytes) -> Result<Response, MachineError>;

    /// Ends a batch of `apply` calls: make it durable here.
    fn flush(&mut self) -> Result<(), MachineError> {
        Ok(())
    }

    /// Whether applying a batch of at most [`INLINE_APPLY_BYTES`] of commands (and its
    /// `flush`) is short work — no fsync, no network — that may run on the async worker
    /// itself. Otherwise it runs in `block_in_place`, whose hand-off of the worker to another
    /// thread costs more than a ~130 KB apply to page cache does (measured on a 3-node
    /// cluster, interleaved runs: about 8 % of windowed 1 KiB throughput).
    fn short_applies(&self) -> bool {
        false
    }

    /// A compact image of the replicated state (not the messages).
    fn snapshot(&mut self) -> Result<Bytes, MachineError>;

    /// Adopts a snapshot taken at log `index`.
    fn restore(
        &mut self,
        index: u64,
        snapshot: &[u8],
        kind: RestoreKind,
    ) -> Result<(), MachineError>;
}

/// The largest batch of commands a machine with [`Machine::short_applies`] applies on the
/// async worker; larger ones (catching up) run in `block_in_place`. Not much smaller: a
/// leader that falls behind gets larger batches, which in `block_in_place` would make it
/// fall further behind.
pub const INLINE_APPLY_BYTES: usize = 2 << 20;

/// Runs a possibly blocking machine call without stalling the runtime's other tasks when
/// the runtime has spare worker threads.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The openraft state machine over `M`.
pub struct StateMachine<M: Machine> {
    machine: M,
    applied: Option<LogId>,
    membership: crate::types::StoredMembership,
    snaps: Arc<SnapshotStore>,
    builds: u64,
}

/// Why the state machine could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Files(#[from] LogError),
    #[error(
        "restoring the RAFT snapshot at index {index} failed: {source}; fix the store or remove the node's RAFT directory to rejoin as a new node"
    )]
    Restore { index: u64, source: MachineError },
}

impl<M: Machine> StateMachine<M> {
    /// Opens the snapshot directory and restores the newest snapshot into `machine`.
    pub fn open(dir: &Path, retain: usize, mut machine: M) -> Result<StateMachine<M>, OpenError> {
        let snaps = SnapshotStore::open(dir, retain)?;
        let mut applied = None;
        let mut membership = StoredMembership::default();
        if let Some(s) = snaps.current() {
            let index = s.meta.last_log_id.map_or(0, |l| l.index);
            blocking(|| machine.restore(index, &s.data, RestoreKind::Startup))
                .map_err(|source| OpenError::Restore { index, source })?;
            applied = s.meta.last_log_id;
            membership = s.meta.last_membership.clone();
        }
        Ok(StateMachine {
            machine,
            applied,
            membership,
            snaps: Arc::new(snaps),
            builds: 0,
        })
    }

    pub fn snapshot_store(&self) -> Arc<SnapshotStore> {
        self.snaps.clone()
    }

    /// The last applied log id (what openraft will be told at start).
    pub fn applied(&self) -> Option<LogId> {
        self.applied
    }
}

/// Builds a snapshot from bytes captured when openraft asked for the builder.
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    data: Result<Bytes, MachineError>,
    snaps: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let sig = Some(self.meta.signature());
        let data = self
            .data
            .clone()
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let (snaps, meta, d) = (self.snaps.clone(), self.meta.clone(), data.clone());
        blocking(move || snaps.save(meta, d))
            .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(data.to_vec())),
        })
    }
}

impl<M: Machine> RaftStateMachine<TypeConfig> for StateMachine<M> {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, NodeInfo>), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let inline = self.machine.short_applies()
            && entries
                .iter()
                .map(|e| match &e.payload {
                    EntryPayload::Normal(cmd) => cmd.0.len(),
                    _ => 0,
                })
                .sum::<usize>()
                <= INLINE_APPLY_BYTES;
        let mut out = Vec::with_capacity(entries.len());
        let machine = &mut self.machine;
        let applied = &mut self.applied;
        let membership = &mut self.membership;
        // Failures carry the entry they hit (None: the batch flush).
        let run = || {
            for e in entries {
                *applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => out.push(Response::default()),
                    EntryPayload::Normal(cmd) => out.push(
                        machine
                            .apply(e.log_id.index, &cmd.0)
                            .map_err(|err| (Some(e.log_id), err))?,
                    ),
                    EntryPayload::Membership(m) => {
                        *membership = StoredMembership::new(Some(e.log_id), m);
                        out.push(Response::default());
                    }
                }
            }
            machine.flush().map_err(|err| (None, err))
        };
        let res: Result<(), (Option<LogId>, MachineError)> =
            if inline { run() } else { blocking(run) };
        res.map_err(|(at, err)| -> StorageError {
            match at {
                Some(l) => StorageIOError::apply(l, &err).into(),
                None => StorageIOError::write_state_machine(&err).into(),
            }
        })?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.builds += 1;
        let last = self.applied;
        let snapshot_id = match last {
            Some(l) => format!(
                "{}-{}-{}-{}",
                l.leader_id.term,
                l.index,
                self.builds,
                std::process::id()
            ),
            None => format!("0-0-{}-{}", self.builds, std::process::id()),
        };
        let machine = &mut self.machine;
        SnapshotBuilder {
            meta: SnapshotMeta {
                last_log_id: last,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            data: blocking(|| machine.snapshot()),
            snaps: self.snaps.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let data = Bytes::from(snapshot.into_inner());
        let sig = Some(meta.signature());
        let index = meta.last_log_id.map_or(0, |l| l.index);
        // Saved first: if the restore fails, the next start retries it from the file.
        let (snaps, m, d) = (self.snaps.clone(), meta.clone(), data.clone());
        blocking(move || snaps.save(m, d))
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let machine = &mut self.machine;
        blocking(|| machine.restore(index, &data, RestoreKind::FromLeader))
            .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.snaps.current().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data.to_vec())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry as RaftEntry};

    use super::*;
    use crate::testing::MemMachine;
    use crate::types::Command;

    /// A [`MemMachine`] that says its applies are (or are not) short work.
    struct Paced(MemMachine, bool);

    impl Machine for Paced {
        fn apply(&mut self, index: u64, cmd: &Bytes) -> Result<Response, MachineError> {
            self.0.apply(index, cmd)
        }
        fn short_applies(&self) -> bool {
            self.1
        }
        fn snapshot(&mut self) -> Result<Bytes, MachineError> {
            self.0.snapshot()
        }
        fn restore(&mut self, i: u64, s: &[u8], k: RestoreKind) -> Result<(), MachineError> {
            self.0.restore(i, s, k)
        }
    }

    fn entries(from: u64, sizes: &[usize]) -> Vec<Entry> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| RaftEntry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), from + i as u64),
                payload: EntryPayload::Normal(Command(Bytes::from(vec![i as u8; *n]))),
            })
            .collect()
    }

    /// Small batches of a machine with short applies run on the worker, large ones and every
    /// batch of other machines in `block_in_place` (a multi-thread runtime): all apply alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn applies_inline_or_off_the_worker_alike() {
        let big = INLINE_APPLY_BYTES / 2 + 1;
        for short in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mem = MemMachine::new();
            let mut sm = StateMachine::open(dir.path(), 2, Paced(mem.clone(), short)).unwrap();
            let small = entries(1, &[10, 20, 30]);
            let large = entries(4, &[big, big]);
            let mut want: Vec<Bytes> = Vec::new();
            for e in small.iter().chain(&large) {
                if let EntryPayload::Normal(c) = &e.payload {
                    want.push(c.0.clone());
                }
            }
            assert_eq!(sm.apply(small).await.unwrap().len(), 3);
            assert_eq!(sm.apply(large).await.unwrap().len(), 2);
            assert_eq!(mem.commands(), want, "short_applies {short}");
            let (applied, _) = sm.applied_state().await.unwrap();
            assert_eq!(applied.map(|l| l.index), Some(5));
        }
    }
}
