//! Migration of the store nats-streaming-server 0.25.6 wrote (the fixture): a copy migrated
//! offline and in place must hold everything its manifest lists; damaged copies must be
//! reported with the file and offset of the damage, by `check` and by `migrate`.

mod common;

use std::path::{Path, PathBuf};

use common::{
    assert_same_tree, copy_tree, fixture_limits, fixture_store, manifest, tree,
    verify_store_against_manifest,
};
use rnats_streaming::migrate::{
    self, DamageKind, FindingKind, MigrateError, ReferenceOptions, check, is_reference_store,
    migrate_in_place, migrate_in_place_if_needed,
};
use rnats_streaming::store::file::{FileStore, FileStoreOptions};
use rnats_streaming::store::{ChannelLimitsOverride, Corruption, Store, StoreError, StoreLimits};
use sha2::Digest;

/// A copy of the fixture store in a fresh temporary directory.
fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_tree(&fixture_store(), &dir);
    (tmp, dir)
}

fn opts() -> ReferenceOptions {
    ReferenceOptions::default()
}

/// Offset in `msgs.1.dat` of the record of the `i`-th message (0-based), from the index.
fn record_offset(channel_dir: &Path, i: u64) -> u64 {
    let idx = std::fs::read(channel_dir.join("msgs.1.idx")).unwrap();
    let at = (4 + i * 32 + 8) as usize;
    u64::from_le_bytes(idx[at..at + 8].try_into().unwrap())
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

fn truncate(path: &Path, by: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len - by)
        .unwrap();
}

#[test]
fn the_fixture_is_recognised_by_content() {
    let (_t, dir) = fixture_copy();
    assert!(is_reference_store(&dir).unwrap());
    let empty = tempfile::tempdir().unwrap();
    assert!(!is_reference_store(empty.path()).unwrap());
    // Renaming server.dat away leaves clients.dat, still recognised by its header.
    std::fs::rename(dir.join("server.dat"), dir.join("x")).unwrap();
    assert!(is_reference_store(&dir).unwrap());
    // Our file store refuses to open it.
    std::fs::rename(dir.join("x"), dir.join("server.dat")).unwrap();
    let err = FileStore::open(&dir, FileStoreOptions::default(), fixture_limits())
        .err()
        .expect("our store must not open a reference store");
    assert!(matches!(err, StoreError::ReferenceStore { .. }), "{err}");
}

#[test]
fn check_reports_what_the_manifest_lists() {
    let (_t, dir) = fixture_copy();
    let before = tree(&dir);
    let r = check(&dir, &opts(), &fixture_limits()).unwrap();
    println!("{r}");
    assert!(r.is_clean(), "{r}");
    assert!(r.findings.is_empty(), "{r}");
    assert_same_tree(&before, &tree(&dir), "a check writes nothing");

    let m = manifest();
    assert_eq!(r.cluster_id(), m["cluster_id"].as_str());
    assert_eq!(r.clients, ["c-idle"]);
    let chans = m["channels"].as_object().unwrap();
    assert_eq!(r.channels.len(), chans.len());
    let mon = m["monitoring_after_restart"]["channelsz?subs=1"]["channels"]
        .as_array()
        .unwrap();
    for c in &r.channels {
        let mc = &chans[&c.name];
        let mn = mon.iter().find(|x| x["name"] == c.name.as_str()).unwrap();
        assert_eq!(c.first_seq, mc["first_seq"].as_u64().unwrap(), "{}", c.name);
        assert_eq!(c.last_seq, mc["last_seq"].as_u64().unwrap(), "{}", c.name);
        assert_eq!(c.msgs, mc["msgs_stored"].as_u64().unwrap(), "{}", c.name);
        assert_eq!(c.bytes, mn["bytes"].as_u64().unwrap(), "{}", c.name);
        let on_disk = mc["on_disk"]["index_records"].as_u64().unwrap();
        assert_eq!(c.dropped_by_limits, on_disk - c.msgs, "{}", c.name);
        assert_eq!(
            c.subscriptions.len() as u64,
            mn["subs_count"].as_u64().unwrap(),
            "{}",
            c.name
        );
    }
    let capped = r
        .channels
        .iter()
        .find(|c| c.name == "capped.metrics")
        .unwrap();
    assert_eq!((capped.first_seq, capped.dropped_by_limits), (31, 30));
    for d in m["durables"].as_array().unwrap() {
        let c = r
            .channels
            .iter()
            .find(|c| c.name == d["channel"].as_str().unwrap())
            .unwrap();
        let s = &c.subscriptions[0];
        match d["monitoring_queue_name"].as_str() {
            Some(q) => assert_eq!((s.queue_group.as_str(), s.durable_name.as_str()), (q, "")),
            None => assert_eq!(s.durable_name, d["durable_name"].as_str().unwrap()),
        }
        assert_eq!(s.last_sent, d["last_sent"].as_u64().unwrap());
        assert_eq!(s.acked_through(), d["acked_through"].as_u64().unwrap());
        let unacked: Vec<u64> = d["unacked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(s.pending, unacked);
    }
    assert_eq!(r.messages(), 205);
    assert_eq!((r.subscriptions(), r.durables()), (2, 2));
    assert!(
        r.to_string()
            .contains("capped.metrics: first 31 last 50, 20 messages")
    );
}

#[test]
fn migrate_offline_carries_everything_in_the_manifest() {
    let (t, src) = fixture_copy();
    let before = tree(&src);
    let dst = t.path().join("migrated");
    let r = migrate::migrate(
        &src,
        &dst,
        &opts(),
        &FileStoreOptions::default(),
        &fixture_limits(),
    )
    .unwrap();
    assert_eq!(r.destination.as_deref(), Some(dst.as_path()));
    assert_same_tree(&before, &tree(&src), "the source is only read");
    assert!(!is_reference_store(&dst).unwrap());
    assert_eq!(verify_store_against_manifest(&dst), 205);

    // A second migration into the same (now non-empty) directory is refused.
    let again = migrate::migrate(
        &src,
        &dst,
        &opts(),
        &FileStoreOptions::default(),
        &fixture_limits(),
    );
    assert!(matches!(
        again,
        Err(MigrateError::DestinationNotEmpty { .. })
    ));
    // An existing empty directory is a valid destination (the staged store replaces it).
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    migrate::migrate(
        &src,
        &empty,
        &opts(),
        &FileStoreOptions::default(),
        &fixture_limits(),
    )
    .unwrap();
    assert_eq!(verify_store_against_manifest(&empty), 205);
    // Nor into the source.
    let inside = migrate::migrate(
        &src,
        src.join("sub"),
        &opts(),
        &FileStoreOptions::default(),
        &fixture_limits(),
    );
    assert!(matches!(
        inside,
        Err(MigrateError::DestinationInSource { .. })
    ));
}

#[test]
fn migrate_with_small_slices_and_fd_limit_gives_the_same_store() {
    // Our slices and descriptor limit shape only our files, never what is served.
    let (t, src) = fixture_copy();
    let dst = t.path().join("migrated");
    let fo = FileStoreOptions {
        slice_max_msgs: 7,
        fds_limit: 2,
        ..Default::default()
    };
    migrate::migrate(&src, &dst, &opts(), &fo, &fixture_limits()).unwrap();
    let segs = std::fs::read_dir(dst.join("channels/jobs.durable"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".dat")
        })
        .count();
    assert!(segs > 10, "{segs} segment files");
    assert_eq!(verify_store_against_manifest(&dst), 205);
}

#[test]
fn migrate_in_place_keeps_the_originals_and_logs_a_summary() {
    let (_t, dir) = fixture_copy();
    let original = tree(&fixture_store());
    let s = migrate_in_place(
        &dir,
        &opts(),
        &FileStoreOptions::default(),
        &fixture_limits(),
    )
    .unwrap();
    let line = s.to_string();
    println!("{line}");
    assert!(
        line.contains("6 channels, 205 messages, 1 clients, 2 subscriptions (2 durable)"),
        "{line}"
    );
    assert!(line.contains(&dir.join("nats-streaming-backup").display().to_string()));
    assert!(!s.resumed);
    assert_eq!(s.report.as_ref().map(|r| r.messages()), Some(205));
    assert_same_tree(
        &tree(&s.backup),
        &original,
        "the originals are kept as they were",
    );
    assert!(!dir.join(".rnats-migrate").exists());
    assert_eq!(verify_store_against_manifest(&dir), 205);

    // Nothing left to do.
    let none = migrate_in_place_if_needed(
        &dir,
        &opts(),
        &FileStoreOptions::default(),
        &fixture_limits(),
    )
    .unwrap();
    assert!(none.is_none());
    assert!(matches!(
        migrate_in_place(
            &dir,
            &opts(),
            &FileStoreOptions::default(),
            &fixture_limits()
        ),
        Err(MigrateError::NotReferenceStore { .. })
    ));
}

/// `check` lists the damage and `migrate` fails on it, both naming the file and offset; the
/// destination is not created.
fn assert_damage(dir: &Path, file: &Path, offset: u64, kind: &DamageKind) {
    let r = check(dir, &opts(), &fixture_limits()).unwrap();
    assert!(
        r.damage
            .iter()
            .any(|d| d.path == file && d.offset == offset && &d.kind == kind),
        "check did not report {kind} at {}:{offset}:\n{r}",
        file.display()
    );
    let dst = dir.with_file_name("dst");
    let e = migrate::migrate(
        dir,
        &dst,
        &opts(),
        &FileStoreOptions::default(),
        &fixture_limits(),
    )
    .expect_err("migrating a damaged store must fail");
    let d = e
        .damage()
        .unwrap_or_else(|| panic!("not a damage error: {e}"));
    assert_eq!(
        (d.path.as_path(), d.offset, &d.kind),
        (file, offset, kind),
        "{e}"
    );
    let text = e.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains(&format!("offset {offset}")), "{text}");
    assert!(!dst.exists());
    assert!(!dir.with_file_name(".dst.rnats-migrate").exists());
}

#[test]
fn a_flipped_payload_byte_is_reported_with_path_and_offset() {
    let (_t, dir) = fixture_copy();
    let ch = dir.join("jobs.durable");
    let off = record_offset(&ch, 49);
    flip(&ch.join("msgs.1.dat"), off + 8 + 20);
    let r = check(&dir, &opts(), &fixture_limits()).unwrap();
    assert_eq!(r.damage.len(), 1, "{r}");
    assert!(matches!(
        r.damage[0].kind,
        DamageKind::Record(Corruption::BadCrc { .. })
    ));
    let kind = r.damage[0].kind.clone();
    assert_damage(&dir, &ch.join("msgs.1.dat"), off, &kind);

    // With CRC checking off (`file_crc=false`), the record is carried over as it is.
    let o = ReferenceOptions {
        check_crc: false,
        ..opts()
    };
    let r = check(&dir, &o, &fixture_limits()).unwrap();
    assert!(r.is_clean(), "{r}");
}

#[test]
fn damage_in_each_kind_of_file_is_reported() {
    // clients.dat: a byte of the second record.
    let (_t, dir) = fixture_copy();
    let p = dir.join("clients.dat");
    let b = std::fs::read(&p).unwrap();
    let first_len = u32::from_le_bytes(b[4..8].try_into().unwrap()) & 0xff_ffff;
    let second = 4 + 8 + u64::from(first_len);
    flip(&p, second + 8 + 3);
    let r = check(&dir, &opts(), &fixture_limits()).unwrap();
    let kind = r.damage[0].kind.clone();
    assert!(
        matches!(kind, DamageKind::Record(Corruption::BadCrc { .. })),
        "{r}"
    );
    assert_damage(&dir, &p, second, &kind);

    // server.dat: one byte too many.
    let (_t, dir) = fixture_copy();
    let p = dir.join("server.dat");
    let mut b = std::fs::read(&p).unwrap();
    b.push(0);
    std::fs::write(&p, &b).unwrap();
    assert_damage(
        &dir,
        &p,
        4,
        &DamageKind::ServerFileSize {
            expected: 208,
            found: 209,
        },
    );

    // subs.dat: the last record cut short (a torn write).
    let (_t, dir) = fixture_copy();
    let p = dir.join("tasks.queue/subs.dat");
    let len = std::fs::metadata(&p).unwrap().len();
    truncate(&p, 3);
    let r = check(&dir, &opts(), &fixture_limits()).unwrap();
    let d = &r.damage[0];
    assert_eq!(d.kind, DamageKind::Record(Corruption::Truncated));
    assert!(d.offset < len - 3 && d.offset > 4);
    let off = d.offset;
    assert_damage(&dir, &p, off, &DamageKind::Record(Corruption::Truncated));
    // truncate_bad_eof drops the torn record, as the reference's option does.
    let o = ReferenceOptions {
        truncate_bad_eof: true,
        ..opts()
    };
    let r = check(&dir, &o, &fixture_limits()).unwrap();
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.findings.len(), 1, "{r}");
    assert_eq!(r.findings[0].kind, FindingKind::TruncatedRecord);
    assert_eq!(r.findings[0].offset, Some(off));

    // A version header the reference never wrote.
    let (_t, dir) = fixture_copy();
    let p = dir.join("bin.blobs/msgs.1.idx");
    flip(&p, 1);
    assert_damage(
        &dir,
        &p,
        0,
        &DamageKind::Record(Corruption::UnsupportedVersion(0x2001)),
    );
}

#[test]
fn a_damaged_index_is_rebuilt_from_the_data_file() {
    let (t, dir) = fixture_copy();
    let idx = dir.join("jobs.durable/msgs.1.idx");
    flip(&idx, 4 + 32 * 10 + 16);
    let r = check(&dir, &opts(), &fixture_limits()).unwrap();
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.findings.len(), 1, "{r}");
    assert_eq!(r.findings[0].path, idx);
    assert!(matches!(
        r.findings[0].kind,
        FindingKind::IndexRebuilt { .. }
    ));
    // Same with the index gone.
    std::fs::remove_file(&idx).unwrap();
    let dst = t.path().join("dst");
    let r = migrate::migrate(
        &dir,
        &dst,
        &opts(),
        &FileStoreOptions::default(),
        &fixture_limits(),
    )
    .unwrap();
    assert!(
        matches!(r.findings[0].kind, FindingKind::IndexRebuilt { .. }),
        "{r}"
    );
    assert_eq!(verify_store_against_manifest(&dst), 205);
}

#[test]
fn a_torn_last_message_is_damage_unless_truncate_bad_eof() {
    let (t, dir) = fixture_copy();
    let ch = dir.join("orders.eu.paris");
    let last = record_offset(&ch, 11);
    truncate(&ch.join("msgs.1.dat"), 5);
    // The index's last entry no longer matches: the data file is read, and its last record
    // is cut short.
    assert_damage(
        &dir,
        &ch.join("msgs.1.dat"),
        last,
        &DamageKind::Record(Corruption::Truncated),
    );
    let o = ReferenceOptions {
        truncate_bad_eof: true,
        ..opts()
    };
    let dst = t.path().join("dst2");
    let r = migrate::migrate(
        &dir,
        &dst,
        &o,
        &FileStoreOptions::default(),
        &fixture_limits(),
    )
    .unwrap();
    let c = r
        .channels
        .iter()
        .find(|c| c.name == "orders.eu.paris")
        .unwrap();
    assert_eq!((c.first_seq, c.last_seq, c.msgs), (1, 11, 11));
    assert!(
        r.findings
            .iter()
            .any(|f| f.kind == FindingKind::TruncatedRecord)
    );
    assert!(
        r.findings
            .iter()
            .any(|f| matches!(f.kind, FindingKind::IndexRebuilt { .. }))
    );
}

#[test]
fn a_locked_store_is_not_read() {
    let (_t, dir) = fixture_copy();
    let f = std::fs::File::create(dir.join(".rootdir.lck")).unwrap();
    f.try_lock().unwrap();
    assert!(matches!(
        check(&dir, &opts(), &fixture_limits()),
        Err(MigrateError::Locked { .. })
    ));
    assert!(matches!(
        migrate_in_place(
            &dir,
            &opts(),
            &FileStoreOptions::default(),
            &fixture_limits()
        ),
        Err(MigrateError::Locked { .. })
    ));
    drop(f);
    check(&dir, &opts(), &fixture_limits()).unwrap();
}

/// Stores written by the reference's own `stores` package (`fixtures/stan-0.25.6-generated`):
/// `check` and the migrated store must hold exactly what that package recovers.
fn generated(name: &str) -> (tempfile::TempDir, PathBuf, serde_json::Value) {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stan-0.25.6-generated")
        .join(name);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_tree(&base.join("store"), &dir);
    let exp = serde_json::from_slice(&std::fs::read(base.join("expected.json")).unwrap()).unwrap();
    (tmp, dir, exp)
}

fn generated_limits(name: &str) -> StoreLimits {
    let mut l = StoreLimits::default();
    let o = match name {
        "slices" => (
            "capped",
            ChannelLimitsOverride {
                max_msgs: Some(25),
                ..Default::default()
            },
        ),
        _ => (
            "old",
            ChannelLimitsOverride {
                max_age: Some(std::time::Duration::from_secs(3600)),
                ..Default::default()
            },
        ),
    };
    l.per_channel.insert(o.0.into(), o.1);
    l
}

fn compare_generated(name: &str, opts: &ReferenceOptions, findings: usize) {
    let (t, dir, exp) = generated(name);
    let limits = generated_limits(name);
    let r = check(&dir, opts, &limits).unwrap();
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.findings.len(), findings, "{r}");
    assert_eq!(r.cluster_id(), exp["cluster_id"].as_str());
    let chans = exp["channels"].as_object().unwrap();
    assert_eq!(r.channels.len(), chans.len());
    for c in &r.channels {
        let e = &chans[&c.name];
        let n = |k: &str| e[k].as_u64().unwrap();
        assert_eq!(
            (c.last_seq, c.msgs, c.bytes),
            (n("last_seq"), n("msgs"), n("bytes")),
            "{}",
            c.name
        );
        if c.msgs > 0 || n("first_seq") > 0 {
            assert_eq!(c.first_seq, n("first_seq"), "{}", c.name);
        }
    }

    let dst = t.path().join("dst");
    migrate::migrate(&dir, &dst, opts, &FileStoreOptions::default(), &limits).unwrap();
    let store = FileStore::open(&dst, FileStoreOptions::default(), limits).unwrap();
    let rec = store.recover().unwrap();
    let clients: Vec<(&str, &str)> = rec
        .clients
        .iter()
        .map(|c| (c.id.as_str(), c.hb_inbox.as_str()))
        .collect();
    let want: Vec<(&str, &str)> = exp["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["hb_inbox"].as_str().unwrap()))
        .collect();
    assert_eq!(clients, want);
    let mut checked = 0;
    for rc in &rec.channels {
        let name = rc.channel.name();
        let e = &chans[name];
        let st = rc.channel.msgs().state();
        assert_eq!(
            (st.last, st.msgs, st.bytes),
            (
                e["last_seq"].as_u64().unwrap(),
                e["msgs"].as_u64().unwrap(),
                e["bytes"].as_u64().unwrap()
            ),
            "{name}"
        );
        let got = rc
            .channel
            .msgs()
            .read_batch(0, usize::MAX, usize::MAX)
            .unwrap();
        let want = e["messages"].as_array().cloned().unwrap_or_default();
        assert_eq!(got.len(), want.len(), "{name}");
        for (m, w) in got.iter().zip(&want) {
            assert_eq!(m.sequence, w["seq"].as_u64().unwrap());
            assert_eq!(m.timestamp, w["timestamp"].as_i64().unwrap());
            assert_eq!(m.reply, w["reply"].as_str().unwrap());
            assert_eq!(m.data.len() as u64, w["size"].as_u64().unwrap());
            let sha: String = sha2::Sha256::digest(&m.data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(sha, w["sha256"].as_str().unwrap());
            checked += 1;
        }
        let subs = e["subs"].as_array().cloned().unwrap_or_default();
        assert_eq!(rc.subscriptions.len(), subs.len(), "{name}");
        for (s, w) in rc.subscriptions.iter().zip(&subs) {
            let st = &s.state;
            assert_eq!(st.client_id, w["client_id"].as_str().unwrap());
            assert_eq!(st.q_group, w["q_group"].as_str().unwrap());
            assert_eq!(st.inbox, w["inbox"].as_str().unwrap());
            assert_eq!(st.ack_inbox, w["ack_inbox"].as_str().unwrap());
            assert_eq!(st.durable_name, w["durable_name"].as_str().unwrap());
            assert_eq!(st.last_sent, w["last_sent"].as_u64().unwrap());
            assert_eq!(st.is_durable, w["is_durable"].as_bool().unwrap());
            assert_eq!(st.is_closed, w["is_closed"].as_bool().unwrap());
            assert_eq!(
                i64::from(st.max_in_flight),
                w["max_in_flight"].as_i64().unwrap()
            );
            assert_eq!(
                i64::from(st.ack_wait_in_secs),
                w["ack_wait"].as_i64().unwrap()
            );
            let pending: Vec<u64> = w["pending"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(
                s.pending.iter().copied().collect::<Vec<_>>(),
                pending,
                "{name}"
            );
        }
    }
    assert!(checked > 0);
    store.close().unwrap();
}

#[test]
fn reference_written_slices_removed_slices_and_durables() {
    // The 14 .bak files of removed slices are ignored.
    compare_generated("slices", &opts(), 14);
}

#[test]
fn reference_written_castagnoli_compacted_and_expired() {
    let o = ReferenceOptions {
        crc_poly: 0x82f6_3b78,
        ..opts()
    };
    compare_generated("castagnoli", &o, 0);
    // Read with the default polynomial, it is damage.
    let (_t, dir, _) = generated("castagnoli");
    let r = check(&dir, &opts(), &generated_limits("castagnoli")).unwrap();
    assert!(!r.is_clean());
}
