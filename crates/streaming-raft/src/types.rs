//! The openraft type configuration and the few value types every layer shares.
//!
//! ```text
//! TypeConfig ── D = Command(Bytes)      an opaque, already encoded server operation
//!             ├ R = Response(Bytes)     the machine's small answer, returned to the proposer
//!             ├ NodeId = u64            node_id_of(name): FNV-1a 64 of the string id
//!             ├ Node = NodeInfo{name}   the reference's string id, kept in the membership
//!             └ SnapshotData = Cursor<Vec<u8>>   snapshots are small (no messages in them)
//! ```
//!
//! # Node ids
//!
//! The reference names nodes with free strings (`--cluster_node_id`, `--cluster_peers`);
//! openraft wants a `u64`. We map a name to its FNV-1a 64-bit hash, so every node computes the
//! same id for a peer without any registry or handshake, and the name itself travels in
//! [`NodeInfo`] inside every membership entry (so metrics, `/serverz` and transports can show
//! and address it). A collision between two names of one cluster (odds about n²/2⁶⁵) is
//! detected when the configuration is validated ([`check_distinct_ids`]), never silently
//! merged. Names must be usable as one NATS subject token ([`validate_node_name`]), since the
//! NATS transport puts them in subjects.

use std::fmt;
// `declare_raft_types!` names `Cursor` unqualified for its default snapshot type.
use std::io::Cursor;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The openraft node id type.
pub type NodeId = u64;

/// A replicated operation: the server's own encoding (a publish batch, a subscription
/// change...). The replication core never looks inside.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(pub Bytes);

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} bytes)", self.0.len())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What [`Machine::apply`](crate::Machine::apply) answered for one command; blank and
/// membership entries answer an empty response.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response(pub Bytes);

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Response({} bytes)", self.0.len())
    }
}

/// What the membership records about a node: its string id.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
}

impl NodeInfo {
    pub fn new(name: impl Into<String>) -> NodeInfo {
        NodeInfo { name: name.into() }
    }
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

openraft::declare_raft_types!(
    /// The replication core's openraft configuration.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Raft = openraft::Raft<TypeConfig>;

/// The openraft id of a node name: FNV-1a, 64 bits. Stable across versions and platforms
/// (it is part of the on-disk log and of the wire), so never change it.
pub fn node_id_of(name: &str) -> NodeId {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    name.bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Why a node name is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    #[error("cluster node id is empty: set --cluster_node_id")]
    Empty,
    #[error(
        "cluster node id {0:?} can't be used in a NATS subject: remove spaces, '.', '*' and '>'"
    )]
    Invalid(String),
    #[error("cluster node ids {0:?} and {1:?} map to the same RAFT id: rename one of them")]
    Collision(String, String),
    #[error("cluster node id {0:?} is listed twice")]
    Duplicate(String),
}

/// A node name must be one NATS subject token.
pub fn validate_node_name(name: &str) -> Result<(), NodeNameError> {
    if name.is_empty() {
        return Err(NodeNameError::Empty);
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
    {
        return Err(NodeNameError::Invalid(name.to_string()));
    }
    Ok(())
}

/// Validates every name and checks that no two distinct names share an openraft id.
pub fn check_distinct_ids<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), NodeNameError> {
    let mut seen: Vec<(&str, NodeId)> = Vec::new();
    for n in names {
        validate_node_name(n)?;
        let id = node_id_of(n);
        if let Some((other, _)) = seen.iter().find(|(_, i)| *i == id) {
            return Err(if *other == n {
                NodeNameError::Duplicate(n.to_string())
            } else {
                NodeNameError::Collision(other.to_string(), n.to_string())
            });
        }
        seen.push((n, id));
    }
    Ok(())
}

/// Keeps the `Cursor` import honest: the macro above uses it for `SnapshotData`.
pub type SnapshotData = Cursor<Vec<u8>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_fnv1a() {
        // Published FNV-1a 64 test vectors: the mapping must never change.
        assert_eq!(node_id_of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(node_id_of("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(node_id_of("foobar"), 0x8594_4171_f739_67e8);
        assert_ne!(node_id_of("a"), node_id_of("b"));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(validate_node_name(""), Err(NodeNameError::Empty));
        for bad in ["a.b", "a b", "a*", ">", "x\t"] {
            assert!(
                matches!(validate_node_name(bad), Err(NodeNameError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(validate_node_name("node-1_A").is_ok());
        assert!(check_distinct_ids(["a", "b", "c"]).is_ok());
        assert_eq!(
            check_distinct_ids(["a", "b", "a"]),
            Err(NodeNameError::Duplicate("a".into()))
        );
    }
}
