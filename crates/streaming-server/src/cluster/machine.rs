//! The replicated state machine of a node: committed entries applied to its store, snapshots
//! of the store's replicated state, and their restore (fetching missing messages from the
//! leader). The same store serves the engine when this node leads.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use rnats_streaming::proto::{RaftSnapshot, ReplEntry};
use rnats_streaming::store::Store;
use rnats_streaming::store::crypto::LogSealer;
use rnats_streaming::store::replicate::{self, Applier};
use rnats_streaming_raft::{Machine, MachineError, Response, RestoreKind};
use tracing::{info, warn};

use super::fetch::Fetcher;

pub(crate) struct StoreMachine {
    store: Arc<dyn Store>,
    applier: Applier,
    sealer: Option<Arc<LogSealer>>,
    fetcher: Fetcher,
    /// Applies only write the page cache (a FILE store without `cluster_sync`): they may run
    /// on the async worker itself.
    short: bool,
}

impl StoreMachine {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        sealer: Option<Arc<LogSealer>>,
        fetcher: Fetcher,
        short: bool,
    ) -> StoreMachine {
        StoreMachine {
            store,
            applier: Applier::new(),
            sealer,
            fetcher,
            short,
        }
    }
}

impl Machine for StoreMachine {
    fn apply(&mut self, index: u64, cmd: &Bytes) -> Result<Response, MachineError> {
        let data = match &self.sealer {
            Some(s) => s.open(index, cmd).map_err(MachineError::new)?,
            None => cmd.clone(),
        };
        let entry = ReplEntry::decode(data)
            .map_err(|e| MachineError::new(format!("undecodable replicated entry {index}: {e}")))?;
        self.applier
            .apply(&*self.store, &entry)
            .map_err(|e| MachineError::new(format!("applying entry {index}: {e}")))?;
        Ok(Response(Bytes::new()))
    }

    fn flush(&mut self) -> Result<(), MachineError> {
        self.applier.flush().map_err(MachineError::new)
    }

    fn short_applies(&self) -> bool {
        self.short
    }

    fn snapshot(&mut self) -> Result<Bytes, MachineError> {
        self.applier.flush().map_err(MachineError::new)?;
        let snap = replicate::snapshot(&*self.store).map_err(MachineError::new)?;
        Ok(Bytes::from(snap.encode_to_vec()))
    }

    fn restore(
        &mut self,
        index: u64,
        snapshot: &[u8],
        kind: RestoreKind,
    ) -> Result<(), MachineError> {
        if kind == RestoreKind::Startup {
            // The store was written after every applied batch (and fsynced with
            // cluster_sync, as the log): it is at least as recent as this node's own
            // snapshot, and the log after it is replayed (idempotent).
            return Ok(());
        }
        let snap = RaftSnapshot::decode(snapshot)
            .map_err(|e| MachineError::new(format!("undecodable snapshot {index}: {e}")))?;
        info!(
            "STREAM: Restoring the snapshot of the leader at index {index} ({} channel(s), {} client(s))",
            snap.channels.len(),
            snap.clients.len()
        );
        let fetcher = &self.fetcher;
        let mut fetch = |ch: &str, from: u64, to: u64| fetcher.fetch(ch, from, to);
        replicate::restore(&*self.store, &snap, &mut fetch).map_err(|e| {
            warn!("STREAM: Restoring snapshot {index} failed: {e}");
            MachineError::new(format!("restoring snapshot {index}: {e}"))
        })
    }
}
