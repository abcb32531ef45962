//! Seed inputs of the clustering targets, written by the code under test: `raft_log` gets
//! RAFT directories a node wrote (entries over several segments, a vote, a committed id, a
//! purge, two snapshots); `raft_entries` gets replicated entries of every kind, the snapshot
//! of a store they built, and RPC messages as the NATS transport sends them.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_raft_corpus -- <dir>`

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use prost::Message;
use rnats_streaming::proto::repl_op::Op;
use rnats_streaming::proto::{
    ChannelMsgs, ChannelSeqs, ChannelSub, ClientInfo, MsgProto, ReplEntry, ReplOp, SubState,
};
use rnats_streaming::store::StoreLimits;
use rnats_streaming::store::memory::MemoryStore;
use rnats_streaming::store::replicate::{self, Applier};
use rnats_streaming_raft::log::{LogFiles, LogFilesOptions};
use rnats_streaming_raft::net::RpcRequest;
use rnats_streaming_raft::snapshot::SnapshotStore;
use rnats_streaming_raft::types::{Command, Entry, SnapshotMeta};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, cmd: &[u8]) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: if cmd.is_empty() {
            EntryPayload::Blank
        } else {
            EntryPayload::Normal(Command(Bytes::copy_from_slice(cmd)))
        },
    }
}

/// The files of `root` (`log/`, `snap/`) as one `raft_log` input.
fn raft_input(root: &Path, flags: u8) -> Vec<u8> {
    let mut out = vec![flags];
    let mut push = |kind: u8, num: Option<u64>, contents: &[u8]| {
        let mut body = Vec::new();
        if let Some(n) = num {
            body.extend_from_slice(&n.to_le_bytes());
        }
        body.extend_from_slice(contents);
        let body = &body[..body.len().min(usize::from(u16::MAX))];
        out.push(kind);
        out.extend_from_slice(&(body.len() as u16).to_le_bytes());
        out.extend_from_slice(body);
    };
    for sub in ["log", "snap"] {
        let mut paths: Vec<PathBuf> = fs::read_dir(root.join(sub))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        paths.sort();
        for p in paths {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let contents = fs::read(&p).unwrap();
            let num = name.get(..20).and_then(|n| n.parse::<u64>().ok());
            match (sub, name.as_str()) {
                ("log", "meta") => push(0, None, &contents),
                ("log", _) if name.ends_with(".seg") => push(1, num, &contents),
                ("snap", _) if name.ends_with(".snap") => push(2, num, &contents),
                _ => {}
            }
        }
    }
    out
}

fn raft_log_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, n, segment_bytes, purge, snaps) in [
        ("small", 5u64, 1 << 20, None, 0),
        ("segments", 40, 256, None, 1),
        ("purged", 40, 256, Some(17u64), 2),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogFilesOptions {
            segment_bytes,
            ..LogFilesOptions::default()
        };
        let mut log = LogFiles::open(&dir.path().join("log"), opts).unwrap();
        log.save_vote(&Vote::new_committed(2, 1)).unwrap();
        let cmds: Vec<Entry> = (1..=n)
            .map(|i| entry(1 + i / 20, i, format!("cmd-{i}").as_bytes()))
            .collect();
        log.append(cmds).unwrap();
        log.set_committed(Some(log_id(2, n - 1)));
        log.append([entry(2, n + 1, b"")]).unwrap();
        if let Some(p) = purge {
            log.purge(log_id(1, p)).unwrap();
        }
        drop(log);
        let snap = SnapshotStore::open(&dir.path().join("snap"), 2).unwrap();
        for s in 0..snaps {
            let meta = SnapshotMeta {
                last_log_id: Some(log_id(1, 10 + s)),
                last_membership: Default::default(),
                snapshot_id: format!("s{s}"),
            };
            snap.save(meta, Bytes::from(store_snapshot())).unwrap();
        }
        seeds.push((name.to_string(), raft_input(dir.path(), 0)));
        seeds.push((format!("{name}-flags"), raft_input(dir.path(), 3)));
    }
    seeds
}

fn msg(seq: u64, data: &[u8]) -> MsgProto {
    MsgProto {
        sequence: seq,
        subject: "orders".into(),
        data: Bytes::copy_from_slice(data),
        timestamp: 1_700_000_000_000_000_000 + seq as i64,
        ..Default::default()
    }
}

fn entries() -> Vec<ReplEntry> {
    let op = |op| ReplOp { op: Some(op) };
    let seqs = |id, seqs: &[u64]| ChannelSeqs {
        channel: "orders".into(),
        id,
        seqs: seqs.to_vec(),
    };
    vec![
        ReplEntry {
            ops: vec![op(Op::ClientPut(ClientInfo {
                id: "me".into(),
                hb_inbox: "_INBOX.hb".into(),
                ..Default::default()
            }))],
        },
        ReplEntry {
            ops: vec![op(Op::Msgs(ChannelMsgs {
                channel: "orders".into(),
                msgs: (1..=3).map(|s| msg(s, b"payload")).collect(),
            }))],
        },
        ReplEntry {
            ops: vec![
                op(Op::SubPut(ChannelSub {
                    channel: "orders".into(),
                    state: Some(SubState {
                        id: 1,
                        client_id: "me".into(),
                        inbox: "_INBOX.sub".into(),
                        ack_inbox: "_STAN.ack".into(),
                        max_in_flight: 16,
                        ack_wait_in_secs: 30,
                        durable_name: "dur".into(),
                        is_durable: true,
                        ..Default::default()
                    }),
                })),
                op(Op::Pending(seqs(1, &[1, 2]))),
                op(Op::Acked(seqs(1, &[1]))),
            ],
        },
        ReplEntry {
            ops: vec![
                op(Op::SubDelete(seqs(1, &[]))),
                op(Op::ClientDelete("me".into())),
                op(Op::ChannelDelete("gone".into())),
            ],
        },
    ]
}

fn store_snapshot() -> Vec<u8> {
    let store = MemoryStore::new(StoreLimits::default()).unwrap();
    let mut applier = Applier::new();
    for e in entries().iter().take(3) {
        applier.apply(&store, e).unwrap();
    }
    applier.flush().unwrap();
    replicate::snapshot(&store).unwrap().encode_to_vec()
}

fn raft_entries_seeds() -> Vec<(String, Vec<u8>)> {
    let mut all = vec![1u8];
    let mut seeds = Vec::new();
    for (i, e) in entries().iter().enumerate() {
        let body = e.encode_to_vec();
        let mut one = vec![1u8];
        for out in [&mut one, &mut all] {
            out.extend_from_slice(&(body.len() as u16).to_le_bytes());
            out.extend_from_slice(&body);
        }
        seeds.push((format!("entry-{i}"), one));
    }
    seeds.push(("entries".into(), all));
    let mut snap = vec![2u8];
    snap.extend_from_slice(&store_snapshot());
    seeds.push(("snapshot".into(), snap));
    let vote = RpcRequest::Vote(openraft::raft::VoteRequest::new(
        Vote::new(3, 2),
        Some(log_id(2, 41)),
    ));
    let mut rpc = vec![0u8];
    rpc.extend_from_slice(&postcard::to_stdvec(&vote).unwrap());
    seeds.push(("rpc-vote".into(), rpc));
    let append = RpcRequest::Append(openraft::raft::AppendEntriesRequest {
        vote: Vote::new_committed(3, 2),
        prev_log_id: Some(log_id(3, 41)),
        entries: vec![
            entry(3, 42, &entries()[1].encode_to_vec()),
            entry(3, 43, b""),
        ],
        leader_commit: Some(log_id(3, 41)),
    });
    let mut rpc = vec![0u8];
    rpc.extend_from_slice(&postcard::to_stdvec(&append).unwrap());
    seeds.push(("rpc-append".into(), rpc));
    seeds
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: gen_raft_corpus <dir>"),
    );
    let mut monitor = Vec::new();
    for q in [
        "/connz?sort=bytes_to&auth=true&subs=detail&offset=1&limit=2&state=closed",
        "/connz?cid=7&acc=A&filter_subject=foo.%3E",
        "/subsz?subs=1&test=foo.bar&offset=0&limit=1024",
        "/routez?subs=detail",
        "/healthz?js-enabled-only=true",
        "/varz",
        "/metrics",
        "/",
    ] {
        monitor.push((q.replace(['/', '?', '&', '='], "_"), q.as_bytes().to_vec()));
    }
    for (target, seeds) in [
        ("raft_log", raft_log_seeds()),
        ("raft_entries", raft_entries_seeds()),
        ("core_monitor", monitor),
    ] {
        let dir = out.join(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        for (name, bytes) in seeds {
            fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        }
    }
}
