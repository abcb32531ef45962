//! What a clustered node decodes from its peers: RAFT RPC requests and replies (postcard, as
//! the NATS transport receives them), committed replicated entries applied to a store (the
//! state machine's `apply`), and a leader's snapshot restored into a store.
//!
//! Input: `mode (u8, modulo 3) | rest`. Mode 0: `rest` as an `RpcRequest` and as an
//! `RpcReply`. Mode 1: `rest` as `length (u16 LE) | ReplEntry` records, applied in order to a
//! memory store and flushed. Mode 2: `rest` as a `RaftSnapshot`, restored into a memory store
//! whose fetches return nothing.
//!
//! Checks: no panic, no unbounded allocation; after mode 1, the store's own snapshot
//! restores into a fresh store, and that store's snapshot is the same (a follower that
//! installs it ends up equal to the node it came from).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use rnats_fuzz::CappedAlloc;
use rnats_streaming::proto::{RaftSnapshot, ReplEntry};
use rnats_streaming::store::memory::MemoryStore;
use rnats_streaming::store::replicate::{self, Applier};
use rnats_streaming::store::{Store, StoreLimits};
use rnats_streaming_raft::net::{RpcReply, RpcRequest};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fn store() -> MemoryStore {
    MemoryStore::new(StoreLimits::default()).expect("memory store")
}

fn no_fetch(
    _: &str,
    _: u64,
    _: u64,
) -> rnats_streaming::store::Result<Vec<rnats_streaming::proto::MsgProto>> {
    Ok(Vec::new())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = postcard::from_bytes::<RpcRequest>(rest);
            let _ = postcard::from_bytes::<RpcReply>(rest);
        }
        1 => {
            let s = store();
            let mut applier = Applier::new();
            let mut rest = rest;
            while rest.len() >= 2 {
                let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
                let end = (2 + len).min(rest.len());
                let body = &rest[2..end];
                rest = &rest[end..];
                if let Ok(entry) = ReplEntry::decode(body) {
                    let _ = applier.apply(&s, &entry);
                }
            }
            if applier.flush().is_err() {
                return;
            }
            let Ok(snap) = replicate::snapshot(&s) else {
                return;
            };
            let copy = store();
            let mut fetch = |ch: &str, from: u64, to: u64| -> rnats_streaming::store::Result<_> {
                let c = s
                    .lookup_channel(ch)
                    .expect("snapshot names a channel of the store");
                let mut out = Vec::new();
                for q in from..=to {
                    out.extend(c.msgs().lookup(q)?);
                }
                Ok(out)
            };
            replicate::restore(&copy, &snap, &mut fetch).expect("a store's own snapshot restores");
            let again = replicate::snapshot(&copy).expect("snapshot of the restored store");
            assert_eq!(again.encode_to_vec(), snap.encode_to_vec());
        }
        _ => {
            if let Ok(snap) = RaftSnapshot::decode(rest) {
                let s = store();
                let _ = replicate::restore(&s, &snap, &mut no_fetch);
            }
        }
    }
});
