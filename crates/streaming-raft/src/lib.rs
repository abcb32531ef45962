//! RAFT replication for the clustered NATS Streaming server, on openraft 0.9.
//!
//! ```text
//! server ──propose(cmd)──▶ Replicator (node) ──▶ openraft ──▶ LogStore (log: segments, CRC,
//!   ▲                         │ status watch                    │       vote, purge, repair)
//!   │                         ▼                                 ▼
//!   └──apply/snapshot/restore── StateMachine (state) ◀── committed entries, snapshots
//!                                   └─ SnapshotStore (snapshot files)
//! openraft ◀──▶ Network (net) ──▶ Transport: MemNet (tests) | NatsTransport (core NATS)
//! ```
//!
//! Layers, each testable without sockets:
//! * [`types`]: the openraft type config; node names ↔ `u64` ids (FNV-1a).
//! * [`log`]: the durable RAFT log (openraft `RaftLogStorage`).
//! * [`state`]: the [`Machine`] trait the server implements and its openraft adapter;
//!   [`snapshot`]: snapshot files.
//! * [`net`]: RPC codec, [`Transport`] trait, in-memory and NATS transports.
//! * [`config`]: the reference's cluster options and defaults → openraft config;
//!   [`election`]: when to campaign (pre-vote; the follower with the longer log first).
//! * [`node`]: the [`Replicator`] facade.
//! * [`testing`]: a recording [`Machine`] for tests.

pub mod config;
pub mod election;
pub mod log;
pub mod net;
pub mod node;
pub mod snapshot;
pub mod state;
pub mod testing;
pub mod types;

pub use config::{ClusterOptions, ConfigError};
pub use net::mem::{MemNet, MemTransport};
pub use net::nats::{NatsServer, NatsTransport, rpc_subject};
pub use net::{Lane, RpcHandler, Transport, TransportError};
pub use node::{
    MembershipError, ProposeError, Replicator, Role, StartError, Status, StorageStats, Submitted,
};
pub use state::{Machine, MachineError, RestoreKind};
pub use types::{Command, NodeInfo, Response, node_id_of};
