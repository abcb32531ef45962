//! A small reference [`Machine`] for tests (this crate's and the server's): it records
//! every applied command, and its snapshot is the whole record.
//!
//! The record lives behind an `Arc`, standing for a durable store: a test "restarts" a node
//! by handing the same [`MemMachine`] to a new [`Replicator`](crate::Replicator), and sees
//! the replay-after-snapshot contract at work (entries it already has are skipped).

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::state::{Machine, MachineError, RestoreKind};
use crate::types::Response;

/// The applied commands, as (log index, command).
pub type Applied = Vec<(u64, Bytes)>;

/// A recording machine. Clones share the record.
#[derive(Clone, Default)]
pub struct MemMachine {
    applied: Arc<Mutex<Applied>>,
    /// Counts of restores by kind, for assertions.
    restores: Arc<Mutex<Vec<(u64, RestoreKind)>>>,
}

impl MemMachine {
    pub fn new() -> MemMachine {
        MemMachine::default()
    }

    /// The commands applied so far, in order.
    pub fn commands(&self) -> Vec<Bytes> {
        self.applied.lock().iter().map(|(_, c)| c.clone()).collect()
    }

    pub fn applied(&self) -> Applied {
        self.applied.lock().clone()
    }

    pub fn last_index(&self) -> u64 {
        self.applied.lock().last().map_or(0, |(i, _)| *i)
    }

    pub fn restores(&self) -> Vec<(u64, RestoreKind)> {
        self.restores.lock().clone()
    }
}

fn encode(applied: &Applied) -> Bytes {
    let mut out = Vec::new();
    for (i, c) in applied {
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(c);
    }
    Bytes::from(out)
}

fn decode(mut b: &[u8]) -> Result<Applied, MachineError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (i, rest) = b
            .split_at_checked(8)
            .ok_or_else(|| MachineError::new("short snapshot"))?;
        let (n, rest) = rest
            .split_at_checked(4)
            .ok_or_else(|| MachineError::new("short snapshot"))?;
        let n = u32::from_le_bytes(n.try_into().map_err(MachineError::new)?) as usize;
        let (c, rest) = rest
            .split_at_checked(n)
            .ok_or_else(|| MachineError::new("short snapshot"))?;
        out.push((
            u64::from_le_bytes(i.try_into().map_err(MachineError::new)?),
            Bytes::copy_from_slice(c),
        ));
        b = rest;
    }
    Ok(out)
}

impl Machine for MemMachine {
    fn short_applies(&self) -> bool {
        true
    }

    fn apply(&mut self, index: u64, cmd: &Bytes) -> Result<Response, MachineError> {
        let mut a = self.applied.lock();
        // Replays after a restart: already applied, answer the same way.
        if a.last().is_some_and(|(i, _)| *i >= index) {
            return Ok(Response(Bytes::from(index.to_le_bytes().to_vec())));
        }
        a.push((index, cmd.clone()));
        Ok(Response(Bytes::from(index.to_le_bytes().to_vec())))
    }

    fn snapshot(&mut self) -> Result<Bytes, MachineError> {
        Ok(encode(&self.applied.lock()))
    }

    fn restore(
        &mut self,
        index: u64,
        snapshot: &[u8],
        kind: RestoreKind,
    ) -> Result<(), MachineError> {
        let snap = decode(snapshot)?;
        self.restores.lock().push((index, kind));
        let mut a = self.applied.lock();
        match kind {
            // Our own store may be ahead of our own snapshot: keep it.
            RestoreKind::Startup if a.last().is_some_and(|(i, _)| *i >= index) => {}
            _ => *a = snap,
        }
        Ok(())
    }
}
