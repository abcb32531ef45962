//! Shared by the migration tests: the nats-streaming-server 0.25.6 fixture (a copy of
//! `shared/fixtures/stan-0.25.6-file-store`, see its README), copies of it, and the
//! comparison of a migrated store with everything its manifest lists.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rnats_streaming::store::file::{FileStore, FileStoreOptions};
use rnats_streaming::store::{ChannelLimitsOverride, RecoveredState, Store, StoreLimits};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stan-0.25.6-file-store")
}

/// The `store/` directory the reference left.
pub fn fixture_store() -> PathBuf {
    fixture_dir().join("store")
}

pub fn manifest() -> Value {
    let p = fixture_dir().join("manifest.json");
    serde_json::from_slice(&std::fs::read(&p).expect("read manifest.json")).expect("manifest.json")
}

/// The limits the reference ran with (`stan.conf`): no global message count limit, and at
/// most 20 messages on `capped.>`; everything else at the defaults.
pub fn fixture_limits() -> StoreLimits {
    let mut l = StoreLimits::default();
    l.channel.max_msgs = 0;
    l.per_channel.insert(
        "capped.>".into(),
        ChannelLimitsOverride {
            max_msgs: Some(20),
            ..Default::default()
        },
    );
    l
}

/// Copies a directory tree (fresh, writable files).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::write(&to, std::fs::read(e.path()).unwrap()).unwrap();
        }
    }
}

/// Every file under `root` (relative path → content).
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_owned();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts two trees are equal, naming the paths that differ (not their bytes).
pub fn assert_same_tree(
    a: &BTreeMap<PathBuf, Vec<u8>>,
    b: &BTreeMap<PathBuf, Vec<u8>>,
    what: &str,
) {
    let mut d: Vec<&PathBuf> = a
        .iter()
        .filter(|(p, c)| b.get(*p) != Some(c))
        .map(|(p, _)| p)
        .collect();
    d.extend(b.keys().filter(|p| !a.contains_key(*p)));
    assert!(d.is_empty(), "{what}: these paths differ: {d:?}");
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

/// Opens our store in `dir` with the fixture's limits and checks everything the manifest
/// lists (channels, every message, clients, durables, server info). Returns the number of
/// messages checked.
pub fn verify_store_against_manifest(dir: &Path) -> usize {
    let store = FileStore::open(dir, FileStoreOptions::default(), fixture_limits())
        .expect("open the migrated store");
    let rec = store.recover().expect("recover");
    let n = verify_recovered(&rec, &manifest());
    store.close().unwrap();
    n
}

pub fn verify_recovered(rec: &RecoveredState, m: &Value) -> usize {
    let info = rec.info.as_ref().expect("server info migrated");
    assert_eq!(info.cluster_id, m["cluster_id"].as_str().unwrap());
    assert_eq!(info.discovery, "_STAN.discover.test-cluster");

    // Clients: only the one still registered when the reference stopped.
    let registered: Vec<&Value> = m["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["registered"].as_bool() == Some(true))
        .collect();
    let ids: Vec<&str> = rec.clients.iter().map(|c| c.id.as_str()).collect();
    let want: Vec<&str> = registered
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, want);
    for (c, w) in rec.clients.iter().zip(&registered) {
        assert_eq!(c.hb_inbox, w["hb_inbox"].as_str().unwrap());
    }

    // Channels, as the reference's monitoring showed them after its restart.
    let mon = &m["monitoring_after_restart"]["channelsz?subs=1"]["channels"];
    let mon: BTreeMap<&str, &Value> = mon
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c))
        .collect();
    let chans = m["channels"].as_object().unwrap();
    let names: Vec<&str> = rec.channels.iter().map(|c| c.channel.name()).collect();
    let mut want: Vec<&str> = chans.keys().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(names, want);

    let mut checked = 0;
    for rc in &rec.channels {
        let name = rc.channel.name();
        let mc = &chans[name];
        let mn = mon[name];
        let st = rc.channel.msgs().state();
        assert_eq!(st.first, u(&mc["first_seq"]), "{name} first");
        assert_eq!(st.last, u(&mc["last_seq"]), "{name} last");
        assert_eq!(st.msgs, u(&mc["msgs_stored"]), "{name} msgs");
        assert_eq!(st.msgs, u(&mn["msgs"]), "{name} monitoring msgs");
        assert_eq!(st.bytes, u(&mn["bytes"]), "{name} monitoring bytes");

        let msgs = mc["msgs"].as_array().unwrap();
        assert_eq!(msgs.len() as u64, st.msgs);
        // Replay from the start, as a subscriber starting at the first message gets it.
        let replay = rc
            .channel
            .msgs()
            .read_batch(0, usize::MAX, usize::MAX)
            .unwrap();
        assert_eq!(replay.len(), msgs.len(), "{name} replay");
        for (got, want) in replay.iter().zip(msgs) {
            let seq = u(&want["seq"]);
            let one = rc.channel.msgs().lookup(seq).unwrap().expect("message");
            assert_eq!(&one, got);
            assert_eq!(got.sequence, seq);
            assert_eq!(got.subject, name);
            assert_eq!(
                got.timestamp,
                want["timestamp"].as_i64().unwrap(),
                "{name} #{seq} ts"
            );
            assert_eq!(
                got.data.len() as u64,
                u(&want["size"]),
                "{name} #{seq} size"
            );
            assert_eq!(
                sha256_hex(&got.data),
                want["sha256"].as_str().unwrap(),
                "{name} #{seq} payload"
            );
            if let Some(b64) = want["data_b64"].as_str() {
                let data = data_encoding::BASE64.decode(b64.as_bytes()).unwrap();
                assert_eq!(got.data.as_ref(), &data[..]);
            }
            if let Some(reply) = want.get("reply").and_then(Value::as_str) {
                assert_eq!(got.reply, reply);
            }
            assert!(!got.redelivered);
            checked += 1;
        }

        // Subscriptions: what the reference recovered (monitoring after its restart).
        let mon_subs = mn["subscriptions"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            rc.subscriptions.len(),
            mon_subs.len(),
            "{name} subscriptions"
        );
        for ms in &mon_subs {
            let s = rc
                .subscriptions
                .iter()
                .find(|s| s.state.inbox == ms["inbox"].as_str().unwrap())
                .expect("subscription by inbox");
            assert_eq!(s.state.client_id, ms["client_id"].as_str().unwrap());
            assert_eq!(s.state.ack_inbox, ms["ack_inbox"].as_str().unwrap());
            assert_eq!(
                i64::from(s.state.max_in_flight),
                ms["max_inflight"].as_i64().unwrap()
            );
            assert_eq!(
                i64::from(s.state.ack_wait_in_secs),
                ms["ack_wait"].as_i64().unwrap()
            );
            assert_eq!(s.state.last_sent, u(&ms["last_sent"]));
            assert_eq!(s.pending.len() as u64, u(&ms["pending_count"]));
            assert!(s.state.is_durable);
        }
    }

    // Durables, plain and queue groups: positions and unacknowledged messages.
    for d in m["durables"].as_array().unwrap() {
        let ch = d["channel"].as_str().unwrap();
        let rc = rec
            .channels
            .iter()
            .find(|c| c.channel.name() == ch)
            .unwrap();
        let name = d["durable_name"].as_str().unwrap();
        let queue = d["monitoring_queue_name"].as_str().unwrap_or("");
        // The reference stores a durable queue group as queue `durable:group` with no
        // durable name of its own.
        let s = rc
            .subscriptions
            .iter()
            .find(|s| {
                if queue.is_empty() {
                    s.state.durable_name == name && s.state.q_group.is_empty()
                } else {
                    s.state.q_group == queue && s.state.durable_name.is_empty()
                }
            })
            .expect("durable migrated");
        assert!(queue.is_empty() || queue.starts_with(&format!("{name}:")));
        assert!(s.state.is_durable);
        if queue.is_empty() {
            // A plain durable keeps its client ID; its client is gone, so it is offline.
            assert_eq!(s.state.client_id, d["client_id"].as_str().unwrap());
            assert!(!rec.clients.iter().any(|c| c.id == s.state.client_id));
        } else {
            // An offline durable queue group has no member left.
            assert_eq!(s.state.client_id, "");
        }
        assert_eq!(
            i64::from(s.state.max_in_flight),
            d["max_inflight"].as_i64().unwrap()
        );
        assert_eq!(
            i64::from(s.state.ack_wait_in_secs),
            d["ack_wait_s"].as_i64().unwrap()
        );
        assert_eq!(s.state.last_sent, u(&d["last_sent"]));
        let pending: Vec<u64> = s.pending.iter().copied().collect();
        let unacked: Vec<u64> = d["unacked"].as_array().unwrap().iter().map(u).collect();
        assert_eq!(pending, unacked);
        assert_eq!(pending.len() as u64, u(&d["pending_count"]));
        assert_eq!(
            pending.first().map_or(s.state.last_sent, |p| p - 1),
            u(&d["acked_through"])
        );
        // On resume: the unacknowledged ones first, then from last_sent + 1 to the end.
        let r = &d["expect_on_resume"];
        let first: Vec<u64> = r["redelivered_first"]
            .as_array()
            .unwrap()
            .iter()
            .map(u)
            .collect();
        assert_eq!(pending, first);
        assert_eq!(s.state.last_sent + 1, u(&r["then_new_from"]));
        assert_eq!(rc.channel.msgs().state().last, u(&r["then_new_to"]));
        for seq in &pending {
            assert!(rc.channel.msgs().lookup(*seq).unwrap().is_some());
        }
    }
    checked
}
