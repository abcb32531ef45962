//! What the server is doing right now, shared by the start-up/FT task, the engine's owner and
//! monitoring: the state (standalone, FT standby or active) and, once the engine runs, the
//! channel monitoring queries go to. A standby has no engine: monitoring answers from here.

use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::engine::Event;
use crate::options::Options;

/// The server's state, as `/streaming/serverz` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Standalone,
    FtStandby,
    FtActive,
    /// Stopped after a fatal error (two active FT servers).
    Failed,
    /// A node of a RAFT cluster (leader or not: see the role).
    Clustered,
}

/// A cluster node's RAFT view, for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RaftView {
    pub(crate) role: String,
    pub(crate) node_id: String,
    pub(crate) peers: Vec<String>,
    /// The last RAFT log index applied to this node's store.
    pub(crate) last_applied: u64,
    /// The RAFT term this node is in (each election moves it on).
    pub(crate) term: u64,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Standalone => "STANDALONE",
            ServerState::FtStandby => "FT_STANDBY",
            ServerState::FtActive => "FT_ACTIVE",
            ServerState::Failed => "FAILED",
            ServerState::Clustered => "CLUSTERED",
        }
    }
}

pub(crate) struct Status {
    pub(crate) opts: Arc<Options>,
    pub(crate) server_id: String,
    pub(crate) start_time: SystemTime,
    state: Mutex<ServerState>,
    engine: Mutex<Option<mpsc::UnboundedSender<Event>>>,
    raft: Mutex<Option<RaftView>>,
}

impl Status {
    pub(crate) fn new(opts: Arc<Options>, server_id: String, state: ServerState) -> Status {
        Status {
            opts,
            server_id,
            start_time: SystemTime::now(),
            state: Mutex::new(state),
            engine: Mutex::new(None),
            raft: Mutex::new(None),
        }
    }

    pub(crate) fn state(&self) -> ServerState {
        *self.state.lock()
    }

    pub(crate) fn set_state(&self, s: ServerState) {
        *self.state.lock() = s;
    }

    pub(crate) fn raft(&self) -> Option<RaftView> {
        self.raft.lock().clone()
    }

    pub(crate) fn set_raft(&self, v: Option<RaftView>) {
        *self.raft.lock() = v;
    }

    /// Where monitoring queries go (None: no engine runs).
    pub(crate) fn engine(&self) -> Option<mpsc::UnboundedSender<Event>> {
        self.engine.lock().clone()
    }

    pub(crate) fn set_engine(&self, tx: Option<mpsc::UnboundedSender<Event>>) {
        *self.engine.lock() = tx;
    }
}
