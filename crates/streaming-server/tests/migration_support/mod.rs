//! Shared by the migration tests: the nats-streaming-server 0.25.6 fixture (a store written
//! by the reference, its `stan.conf` and the manifest of what it holds), copies of it, and the
//! checks of a server that serves it against the manifest: monitoring, an exact replay with
//! the raw protocol client, and the node-nats-streaming scenario.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{Raw, ServerProc, http_get, node_available, run_node_with};

/// The fixture folder: `store/`, `stan.conf`, `manifest.json`.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../streaming/tests/fixtures/stan-0.25.6-file-store")
}

/// The `-sc` file the reference ran with (its `capped.>` limit decides a first sequence).
pub fn conf() -> String {
    fixture_dir().join("stan.conf").display().to_string()
}

pub fn manifest_path() -> String {
    fixture_dir().join("manifest.json").display().to_string()
}

pub fn manifest() -> Value {
    serde_json::from_slice(&std::fs::read(manifest_path()).expect("read manifest.json"))
        .expect("manifest.json")
}

/// A copy of the fixture's store in a fresh temporary directory: (guard, store dir).
pub fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_tree(&fixture_dir().join("store"), &dir);
    (tmp, dir)
}

pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
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

/// The names directly in `dir`.
pub fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The paths whose content differs between two trees, or that one of them lacks.
pub fn differences(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<PathBuf> {
    let mut d: Vec<PathBuf> = a
        .iter()
        .filter(|(p, c)| b.get(*p) != Some(c))
        .map(|(p, _)| p.clone())
        .collect();
    d.extend(b.keys().filter(|p| !a.contains_key(*p)).cloned());
    d
}

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The binary run to completion (at most `limit`, then killed and the test fails).
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_bin(args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rnats-streaming-server"))
        .args(args)
        .env_remove("NATS_STREAMING_ENCRYPTION_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rnats-streaming-server");
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "rnats-streaming-server {args:?} still running after {limit:?}:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Log lines of `p` up to and including the first that contains `until` (at most `d`).
pub fn lines_until(p: &ServerProc, until: &str, d: Duration) -> Vec<String> {
    let deadline = Instant::now() + d;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.lines.recv_timeout(left) {
            Ok(l) => {
                let done = l.contains(until);
                out.push(l);
                if done {
                    return out;
                }
            }
            Err(_) => panic!("no {until:?} within {d:?}; log:\n{}", out.join("\n")),
        }
    }
}

fn json(port: u16, path: &str) -> Value {
    let (status, body) = http_get(port, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// `/streaming/channelsz?subs=1` and `clientsz?subs=1` against what the reference's own
/// monitoring answered (the manifest's `monitoring_after_restart`): per channel the counts,
/// bytes, first and last sequence, and every field of every subscription; the registered
/// clients with their heartbeat inboxes.
pub fn check_monitoring(port: u16, m: &Value) {
    let want = &m["monitoring_after_restart"]["channelsz?subs=1"];
    let got = json(port, "/streaming/channelsz?subs=1");
    assert_eq!(got["total"], want["total"], "channelsz total");
    assert_eq!(got["count"], want["count"], "channelsz count");
    let ours: BTreeMap<&str, &Value> = got["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c))
        .collect();
    for w in want["channels"].as_array().unwrap() {
        let name = w["name"].as_str().unwrap();
        let g = ours
            .get(name)
            .unwrap_or_else(|| panic!("channel {name} missing: {got}"));
        for k in ["msgs", "bytes", "first_seq", "last_seq", "subs_count"] {
            assert_eq!(g[k], w[k], "channel {name}: {k}");
        }
        // The reference leaves out an empty list (`omitempty`); ours may show `[]`.
        let subs = |v: &Value| v["subscriptions"].as_array().cloned().unwrap_or_default();
        let (gs, ws) = (subs(g), subs(w));
        assert_eq!(gs.len(), ws.len(), "channel {name}: subscriptions");
        for (gs, ws) in gs.iter().zip(&ws) {
            for (k, v) in ws.as_object().unwrap() {
                assert_eq!(&gs[k], v, "channel {name}: subscription field {k}");
            }
        }
    }
    let want = &m["monitoring_after_restart"]["clientsz?subs=1"];
    let got = json(port, "/streaming/clientsz?subs=1");
    assert_eq!(got["total"], want["total"], "clientsz total: {got}");
    let ids = |v: &Value| -> Vec<(Value, Value, Value)> {
        v["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].clone(),
                    c["hb_inbox"].clone(),
                    c["subs_count"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(ids(&got), ids(want), "clients");
}

/// Every channel replayed from its first message with the raw protocol client: the
/// reference's sequences, exact 64-bit timestamps, payload sizes and sha256.
pub async fn replay_exact(url: &str, m: &Value) {
    let c = Raw::connect(url, "test-cluster", "exact-replay", true).await;
    for (name, ch) in m["channels"].as_object().unwrap() {
        let want = ch["msgs"].as_array().unwrap();
        let mut s = c
            .subscribe(c.sub_req(name, ""))
            .await
            .unwrap_or_else(|e| panic!("subscribe {name}: {e}"));
        for w in want {
            let got = s.next().await;
            let seq = w["seq"].as_u64().unwrap();
            assert_eq!(got.sequence, seq, "{name}: sequence");
            assert_eq!(
                got.timestamp,
                w["timestamp"].as_i64().unwrap(),
                "{name} seq {seq}: timestamp"
            );
            assert_eq!(
                got.data.len() as u64,
                w["size"].as_u64().unwrap(),
                "{name} seq {seq}: size"
            );
            assert_eq!(
                sha256_hex(&got.data),
                w["sha256"].as_str().unwrap(),
                "{name} seq {seq}: sha256"
            );
            assert!(!got.redelivered, "{name} seq {seq}: redelivered");
        }
        s.none_for(Duration::from_millis(100)).await;
        c.unsubscribe(&s, false).await;
    }
    c.close().await;
}

/// The node-nats-streaming scenario over the migrated store (see `migrated_fixture` in
/// `tests/interop/node/scenarios.js`). False when node is not installed (the test skips
/// that part, except in CI).
pub fn node_checks(url: &str) -> bool {
    if !node_available() {
        return false;
    }
    let (ok, out) = run_node_with("migrated_fixture", url, &["test-cluster", &manifest_path()]);
    assert!(ok && out.contains("OK migrated_fixture"), "node: {out}");
    true
}

/// After [`node_checks`]: both durables acknowledged everything and are offline again.
pub fn check_durables_resumed(port: u16) {
    let got = json(port, "/streaming/channelsz?subs=1");
    let sub = |channel: &str| -> Value {
        got["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == channel)
            .and_then(|c| c["subscriptions"].get(0).cloned())
            .unwrap_or_else(|| panic!("no subscription on {channel}: {got}"))
    };
    for (channel, last) in [("jobs.durable", 100), ("tasks.queue", 60)] {
        let s = sub(channel);
        assert_eq!(s["last_sent"], last, "{channel}: {s}");
        assert_eq!(s["pending_count"], 0, "{channel}: {s}");
        assert_eq!(s["is_offline"], true, "{channel}: {s}");
    }
}
