//! The whole migration over stores written in the reference format by `testutil` (layouts
//! the fixture lacks: many slices, holes, other CRC polynomials, leftovers, limits), and the
//! in-place journal stopped at each of its steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{DamageKind, FindingKind, MigrateError};
use super::testutil::{Rec, RefBuilder};
use super::*;
use crate::proto::MsgProto;
use crate::store::file::{FileStore, FileStoreOptions};
use crate::store::{
    ChannelLimitsOverride, Corruption, RecoveredState, Store, StoreLimits, now_nanos,
};

const CASTAGNOLI: u32 = 0x82f6_3b78;

fn unlimited() -> StoreLimits {
    StoreLimits::unlimited()
}

fn open(dir: &Path, limits: StoreLimits) -> (FileStore, RecoveredState) {
    let s = FileStore::open(dir, FileStoreOptions::default(), limits).unwrap();
    let r = s.recover().unwrap();
    (s, r)
}

fn all_msgs(r: &RecoveredState, name: &str) -> Vec<MsgProto> {
    let c = r
        .channels
        .iter()
        .find(|c| c.channel.name() == name)
        .unwrap_or_else(|| panic!("no channel {name}"));
    c.channel
        .msgs()
        .read_batch(0, usize::MAX, usize::MAX)
        .unwrap()
}

/// Channel `foo` in slices 3 (1..=10, indexed), 4 (11..=20, index missing), 6 (21..=25),
/// leftovers of removed slices and of an interrupted compaction, an empty channel `bar`, a
/// durable with pending messages; clients `a` (registered) and `b` (deleted).
fn layered_store(root: &Path, poly: u32) -> RefBuilder {
    let b = RefBuilder::with_crc(root, poly);
    b.server("layers");
    b.clients(&[
        Rec::ClientAdd(RefBuilder::client("a")),
        Rec::ClientAdd(RefBuilder::client("b")),
        Rec::ClientDelete("b".into()),
    ]);
    b.slice("foo", 3, &RefBuilder::msgs("foo", 1..=10), true);
    b.slice("foo", 4, &RefBuilder::msgs("foo", 11..=20), false);
    b.slice("foo", 6, &RefBuilder::msgs("foo", 21..=25), true);
    let foo = b.channel_dir("foo");
    std::fs::write(foo.join("msgs.2.dat.bak"), b"old").unwrap();
    std::fs::write(foo.join("msgs.2.idx.bak"), b"old").unwrap();
    std::fs::write(root.join("clients.dat4242"), [1, 0, 0, 0]).unwrap();
    std::fs::write(root.join("subs777"), [1, 0, 0, 0]).unwrap();
    b.subs(
        "foo",
        &[
            Rec::SubNew(RefBuilder::durable(1, "a", "dur", 0)),
            Rec::SubPending(1, 21),
            Rec::SubPending(1, 22),
            Rec::SubAck(1, 21),
            Rec::SubNew(RefBuilder::durable(2, "a", "", 0)),
        ],
    );
    b.subs("bar", &[]);
    b
}

#[test]
fn many_slices_missing_index_and_leftovers() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    layered_store(&src, IEEE_POLY);
    let dst = d.path().join("dst");
    let r = migrate(
        &src,
        &dst,
        &ReferenceOptions::default(),
        &FileStoreOptions::default(),
        &unlimited(),
    )
    .unwrap();
    assert!(r.is_clean());
    let ignored = r
        .findings
        .iter()
        .filter(|f| matches!(f.kind, FindingKind::Ignored { .. }))
        .count();
    assert_eq!(ignored, 4, "{r}");
    assert!(
        r.findings
            .iter()
            .any(|f| f.path == src.join("foo/msgs.4.idx")
                && matches!(&f.kind, FindingKind::IndexRebuilt { reason } if reason == "missing"))
    );
    assert_eq!(r.clients, ["a"]);

    let (_s, rec) = open(&dst, unlimited());
    assert_eq!(rec.info.as_ref().unwrap().cluster_id, "layers");
    assert_eq!(all_msgs(&rec, "foo"), RefBuilder::msgs("foo", 1..=25));
    assert!(all_msgs(&rec, "foo").iter().any(|m| !m.reply.is_empty()));
    assert!(all_msgs(&rec, "bar").is_empty());
    let foo = rec
        .channels
        .iter()
        .find(|c| c.channel.name() == "foo")
        .unwrap();
    assert_eq!(foo.subscriptions.len(), 2);
    let dur = &foo.subscriptions[0];
    assert_eq!(dur.state.durable_name, "dur");
    assert_eq!(dur.state.last_sent, 22);
    assert_eq!(dur.pending.iter().copied().collect::<Vec<_>>(), [22]);
}

#[test]
fn crc_polynomial_and_crc_off() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    layered_store(&src, CASTAGNOLI);
    // Read as IEEE, every record fails its CRC: the first one met is in server.dat.
    let r = check(&src, &ReferenceOptions::default(), &unlimited()).unwrap();
    assert_eq!(r.damage[0].path, src.join("server.dat"));
    assert_eq!(r.damage[0].offset, 4);
    assert!(matches!(
        r.damage[0].kind,
        DamageKind::Record(Corruption::BadCrc { .. })
    ));
    for opts in [
        ReferenceOptions {
            crc_poly: CASTAGNOLI,
            ..Default::default()
        },
        ReferenceOptions {
            check_crc: false,
            ..Default::default()
        },
    ] {
        let r = check(&src, &opts, &unlimited()).unwrap();
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.messages(), 25);
    }
    // The last record of an indexed slice is checked whatever `check_crc` says, as the
    // reference does; with the wrong polynomial the index is not trusted and the data file
    // is read (without CRC checks), still giving every message.
    let dst = d.path().join("dst");
    let opts = ReferenceOptions {
        check_crc: false,
        ..Default::default()
    };
    let r = migrate(
        &src,
        &dst,
        &opts,
        &FileStoreOptions::default(),
        &unlimited(),
    )
    .unwrap();
    assert!(
        r.findings
            .iter()
            .any(|f| matches!(f.kind, FindingKind::IndexRebuilt { .. }))
    );
    let (_s, rec) = open(&dst, unlimited());
    assert_eq!(all_msgs(&rec, "foo"), RefBuilder::msgs("foo", 1..=25));
}

#[test]
fn count_and_bytes_limits_drop_the_oldest_as_the_reference() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let b = RefBuilder::new(&src);
    b.server("lim");
    b.slice("a.count", 1, &RefBuilder::msgs("a.count", 1..=10), true);
    b.slice("a.bytes", 1, &RefBuilder::msgs("a.bytes", 1..=10), true);
    b.slice("one", 1, &RefBuilder::msgs("one", 1..=3), true);
    let mut limits = unlimited();
    let size = |c: &str, s: u64| {
        prost::Message::encoded_len(&RefBuilder::msg(c, s)) as u64 + records::MSG_OVERHEAD
    };
    // Room for exactly the last three messages.
    let bytes: u64 = (8..=10).map(|s| size("a.bytes", s)).sum();
    limits.per_channel.insert(
        "a.count".into(),
        ChannelLimitsOverride {
            max_msgs: Some(4),
            ..Default::default()
        },
    );
    limits.per_channel.insert(
        "a.bytes".into(),
        ChannelLimitsOverride {
            max_bytes: Some(bytes),
            ..Default::default()
        },
    );
    // A byte limit below one message still keeps the newest.
    limits.per_channel.insert(
        "one".into(),
        ChannelLimitsOverride {
            max_bytes: Some(1),
            ..Default::default()
        },
    );
    let r = check(&src, &ReferenceOptions::default(), &limits).unwrap();
    let got: BTreeMap<&str, (u64, u64, u64, u64)> = r
        .channels
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                (c.first_seq, c.last_seq, c.msgs, c.dropped_by_limits),
            )
        })
        .collect();
    assert_eq!(got["a.count"], (7, 10, 4, 6));
    assert_eq!(got["a.bytes"], (8, 10, 3, 7));
    assert_eq!(got["one"], (3, 3, 1, 2));

    let dst = d.path().join("dst");
    migrate(
        &src,
        &dst,
        &ReferenceOptions::default(),
        &FileStoreOptions::default(),
        &limits,
    )
    .unwrap();
    // Reopened with the same limits, our store keeps exactly that.
    let (_s, rec) = open(&dst, limits);
    assert_eq!(
        all_msgs(&rec, "a.count"),
        RefBuilder::msgs("a.count", 7..=10)
    );
    assert_eq!(
        all_msgs(&rec, "a.bytes"),
        RefBuilder::msgs("a.bytes", 8..=10)
    );
    assert_eq!(all_msgs(&rec, "one"), RefBuilder::msgs("one", 3..=3));
}

#[test]
fn max_age_expires_as_of_now_and_keeps_the_last_sequence() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let b = RefBuilder::new(&src);
    b.server("age");
    let now = now_nanos();
    let aged: Vec<MsgProto> = (1..=6u64)
        .map(|s| MsgProto {
            timestamp: now - (7 - s as i64) * 60_000_000_000,
            ..RefBuilder::msg("aged", s)
        })
        .collect();
    b.slice("aged", 1, &aged, true);
    // Written long ago: everything expired.
    b.slice("gone", 1, &RefBuilder::msgs("gone", 1..=4), true);
    let mut limits = unlimited();
    limits.channel.max_age = Duration::from_secs(150);
    let r = check(&src, &ReferenceOptions::default(), &limits).unwrap();
    let c: Vec<(u64, u64, u64)> = r
        .channels
        .iter()
        .map(|c| (c.first_seq, c.last_seq, c.msgs))
        .collect();
    // Ages 6..1 minutes: only those under 2.5 minutes stay.
    assert_eq!(c, [(5, 6, 2), (5, 4, 0)]);

    let dst = d.path().join("dst");
    migrate(
        &src,
        &dst,
        &ReferenceOptions::default(),
        &FileStoreOptions::default(),
        &limits,
    )
    .unwrap();
    let (_s, rec) = open(&dst, limits);
    assert_eq!(all_msgs(&rec, "aged"), aged[4..].to_vec());
    let gone = rec
        .channels
        .iter()
        .find(|c| c.channel.name() == "gone")
        .unwrap();
    let st = gone.channel.msgs().state();
    assert_eq!((st.msgs, st.last, st.first), (0, 4, 5));
}

#[test]
fn a_hole_in_an_old_log_is_filled_with_empty_messages() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let b = RefBuilder::new(&src);
    b.server("gap");
    let mut msgs = RefBuilder::msgs("g", 1..=5);
    msgs.extend(RefBuilder::msgs("g", 8..=10));
    b.slice("g", 1, &msgs, true);
    let dst = d.path().join("dst");
    let r = migrate(
        &src,
        &dst,
        &ReferenceOptions::default(),
        &FileStoreOptions::default(),
        &unlimited(),
    )
    .unwrap();
    assert!(
        r.findings
            .iter()
            .any(|f| f.kind == FindingKind::GapFilled { from: 6, to: 7 }),
        "{r}"
    );
    let (_s, rec) = open(&dst, unlimited());
    let got = all_msgs(&rec, "g");
    assert_eq!(got.len(), 10);
    assert!(got[5].data.is_empty() && got[6].data.is_empty());
    assert_eq!(got[5].timestamp, msgs[5].timestamp);
    assert_eq!(got[7], msgs[5]);
}

#[test]
fn structural_damage_and_stray_entries() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let b = RefBuilder::new(&src);
    b.server("s");
    b.slice("foo", 1, &RefBuilder::msgs("foo", 1..=3), true);
    std::fs::write(src.join("foo/msgs.x.dat"), [1, 0, 0, 0]).unwrap();
    std::fs::create_dir_all(src.join("foo/sub")).unwrap();
    std::fs::create_dir_all(src.join(".hidden")).unwrap();
    // Slice 2 overlaps slice 1.
    b.slice("foo", 2, &RefBuilder::msgs("foo", 3..=4), true);
    let r = check(&src, &ReferenceOptions::default(), &unlimited()).unwrap();
    let kinds: Vec<&DamageKind> = r.damage.iter().map(|d| &d.kind).collect();
    assert_eq!(
        kinds,
        [
            &DamageKind::SliceName,
            &DamageKind::Record(Corruption::SequenceMismatch {
                expected: 4,
                found: 3
            })
        ],
        "{r}"
    );
    assert_eq!(r.damage[1].path, src.join("foo/msgs.2.dat"));
    assert_eq!(
        r.findings
            .iter()
            .filter(|f| matches!(f.kind, FindingKind::Ignored { .. }))
            .count(),
        2,
        "{r}"
    );

    // Channels but no server information: the reference refuses to start.
    std::fs::write(src.join("server.dat"), [1, 0, 0, 0]).unwrap();
    let r = check(&src, &ReferenceOptions::default(), &unlimited()).unwrap();
    assert_eq!(r.damage.len(), 1);
    assert_eq!(r.damage[0].kind, DamageKind::NoServerInfo);
}

#[test]
fn a_store_never_initialised_migrates_to_an_empty_store() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("server.dat"), [1, 0, 0, 0]).unwrap();
    std::fs::write(src.join("clients.dat"), [1, 0, 0, 0]).unwrap();
    let dst = d.path().join("dst");
    let r = migrate(
        &src,
        &dst,
        &ReferenceOptions::default(),
        &FileStoreOptions::default(),
        &unlimited(),
    )
    .unwrap();
    assert_eq!(r.cluster_id(), None);
    let (_s, rec) = open(&dst, unlimited());
    assert!(rec.is_empty());
}

#[test]
fn nothing_to_do_on_our_own_or_an_empty_directory() {
    let d = tempfile::tempdir().unwrap();
    let o = ReferenceOptions::default();
    let fo = FileStoreOptions::default();
    assert!(
        migrate_in_place_if_needed(d.path().join("none"), &o, &fo, &unlimited())
            .unwrap()
            .is_none()
    );
    drop(FileStore::open(d.path(), fo.clone(), unlimited()).unwrap());
    assert!(
        migrate_in_place_if_needed(d.path(), &o, &fo, &unlimited())
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        check(d.path(), &o, &unlimited()),
        Err(MigrateError::NotReferenceStore { .. })
    ));
}

#[test]
fn in_place_under_a_lock_the_caller_holds() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("s");
    layered_store(&dir, IEEE_POLY);
    let o = ReferenceOptions::default();
    let fo = FileStoreOptions::default();
    let lock = crate::store::file::DirLock::try_acquire(&dir)
        .unwrap()
        .unwrap();
    // Taking the lock again (the unlocked form) fails while it is held...
    assert!(matches!(
        migrate_in_place_if_needed(&dir, &o, &fo, &unlimited()),
        Err(MigrateError::Locked { .. })
    ));
    // ...the locked form migrates under it, and the store opens with that same lock.
    let s = migrate_in_place_if_needed_locked(&lock, &o, &fo, &unlimited())
        .unwrap()
        .expect("a reference store is migrated");
    assert_eq!((s.channels, s.messages), (2, 25));
    assert!(s.backup.join("server.dat").exists());
    assert!(
        migrate_in_place_if_needed_locked(&lock, &o, &fo, &unlimited())
            .unwrap()
            .is_none()
    );
    let store = FileStore::open_locked(lock, fo, unlimited()).unwrap();
    let r = store.recover().unwrap();
    assert_eq!(all_msgs(&r, "foo").len(), 25);
}

#[test]
fn a_retired_journal_whose_summary_is_gone_is_removed_without_a_report() {
    // Killed after the retired journal's COMMIT was removed, before its directory was.
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("s");
    layered_store(&dir, IEEE_POLY);
    let (o, fo) = (ReferenceOptions::default(), FileStoreOptions::default());
    migrate_in_place(&dir, &o, &fo, &unlimited()).unwrap();
    std::fs::create_dir(dir.join(inplace::DONE)).unwrap();
    assert!(
        migrate_in_place_if_needed(&dir, &o, &fo, &unlimited())
            .unwrap()
            .is_none()
    );
    assert!(!dir.join(inplace::DONE).exists());
    std::fs::create_dir(dir.join(inplace::DONE)).unwrap();
    let lock = crate::store::file::DirLock::try_acquire(&dir)
        .unwrap()
        .unwrap();
    assert!(
        migrate_in_place_if_needed_locked(&lock, &o, &fo, &unlimited())
            .unwrap()
            .is_none()
    );
    assert!(!dir.join(inplace::DONE).exists());
    let store = FileStore::open_locked(lock, fo, unlimited()).unwrap();
    assert_eq!(all_msgs(&store.recover().unwrap(), "foo").len(), 25);
}

#[test]
fn a_failed_in_place_migration_leaves_the_directory_as_it_was() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("s");
    let b = RefBuilder::new(&dir);
    b.server("s");
    b.slice("foo", 1, &RefBuilder::msgs("foo", 1..=3), true);
    // Slice 2 overlaps slice 1: damage, the migration stops.
    b.slice("foo", 2, &RefBuilder::msgs("foo", 3..=4), true);
    std::fs::File::create(dir.join(".rootdir.lck")).unwrap();
    let before = tree(&dir);
    let e = migrate_in_place(
        &dir,
        &ReferenceOptions::default(),
        &FileStoreOptions::default(),
        &unlimited(),
    )
    .unwrap_err();
    assert_eq!(e.damage().unwrap().path, dir.join("foo/msgs.2.dat"), "{e}");
    assert_eq!(diff(&before, &tree(&dir)), Vec::<PathBuf>::new());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!names.iter().any(|n| n == inplace::JOURNAL), "{names:?}");
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stan-0.25.6-file-store/store")
}

fn copy_tree(src: &Path, dst: &Path) {
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

fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                out.insert(
                    e.path().strip_prefix(root).unwrap().to_owned(),
                    std::fs::read(e.path()).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Paths whose content differs between two trees (or exist in one only).
fn diff(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = a
        .iter()
        .filter(|(p, c)| b.get(*p) != Some(c))
        .map(|(p, _)| p.clone())
        .collect();
    out.extend(b.keys().filter(|p| !a.contains_key(*p)).cloned());
    out
}

fn fixture_limits() -> StoreLimits {
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

/// The in-place migration stopped right after each of its steps (as a crash there would
/// leave the disk, page cache included), then run again: before the commit the originals
/// are untouched; after it they are all kept; the second run always ends with the whole
/// store in place.
#[test]
fn in_place_stopped_after_every_step_then_resumed() {
    let original = tree(&fixture());
    let o = ReferenceOptions::default();
    let fo = FileStoreOptions::default();
    let mut steps_seen = Vec::new();
    for stop_at in 0.. {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("store");
        copy_tree(&fixture(), &dir);
        let mut n = 0;
        let mut at = "";
        let res = inplace::in_place(&dir, &o, &fo, &fixture_limits(), &mut |step| {
            if n == stop_at {
                at = step;
                return Err(MigrateError::Journal {
                    path: PathBuf::from("stop"),
                    reason: step.to_owned(),
                });
            }
            n += 1;
            Ok(())
        });
        if let Ok(s) = res {
            // No step left to stop at.
            assert!(!s.resumed);
            break;
        }
        steps_seen.push(at);
        let committed = dir.join(inplace::JOURNAL).join("COMMIT").exists()
            || dir.join(inplace::DONE).join("COMMIT").exists();
        let backup = dir.join("nats-streaming-backup");
        if committed {
            for (rel, content) in &original {
                let kept = std::fs::read(backup.join(rel))
                    .ok()
                    .or_else(|| std::fs::read(dir.join(rel)).ok());
                assert!(
                    kept.as_ref() == Some(content),
                    "{at}: {} lost",
                    rel.display()
                );
            }
        } else {
            let mut now = tree(&dir);
            now.retain(|p, _| !p.starts_with(inplace::JOURNAL) && !p.ends_with(".rootdir.lck"));
            let d = diff(&now, &original);
            assert!(d.is_empty(), "stopped after {at}: originals changed: {d:?}");
        }
        // The store is not served while the journal exists.
        if dir.join(inplace::JOURNAL).exists() {
            assert!(matches!(
                FileStore::open(&dir, fo.clone(), fixture_limits()),
                Err(crate::store::StoreError::MigrationPending { .. })
            ));
        }
        let s = migrate_in_place_if_needed(&dir, &o, &fo, &fixture_limits())
            .unwrap()
            .expect("work left after a stop");
        assert_eq!(s.resumed, committed, "stopped after {at}");
        assert_eq!(
            (s.channels, s.messages, s.clients, s.durables),
            (6, 205, 1, 2)
        );
        let d = diff(&tree(&backup), &original);
        assert!(d.is_empty(), "stopped after {at}: backup differs: {d:?}");
        assert!(!dir.join(inplace::JOURNAL).exists() && !dir.join(inplace::DONE).exists());
        let (_st, rec) = open(&dir, fixture_limits());
        let msgs: u64 = rec
            .channels
            .iter()
            .map(|c| c.channel.msgs().state().msgs)
            .sum();
        assert_eq!(msgs, 205, "stopped after {at}");
        assert_eq!(rec.clients.len(), 1);
    }
    // journal, staging written, synced, committed, 8 originals + done, 3 staged + in place,
    // retired.
    assert!(steps_seen.len() >= 17, "{steps_seen:?}");
    assert!(steps_seen.contains(&"committed") && steps_seen.contains(&"journal retired"));
}

/// Records written to the data file after the last index entry were never acknowledged to
/// the reference's index: it ignores them (and overwrites nothing), so they are not carried
/// over; zeros after the last record of a data file read without index end it.
#[test]
fn unindexed_records_and_zero_tails_are_ignored() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let b = RefBuilder::new(&src);
    b.server("tail");
    b.slice("t", 1, &RefBuilder::msgs("t", 1..=4), true);
    let dat = src.join("t/msgs.1.dat");
    let mut bytes = std::fs::read(&dat).unwrap();
    let end = bytes.len() as u64;
    bytes.extend(testutil::record(&prost::Message::encode_to_vec(
        &RefBuilder::msg("t", 5),
    )));
    std::fs::write(&dat, &bytes).unwrap();
    b.slice("z", 1, &RefBuilder::msgs("z", 1..=3), false);
    let zdat = src.join("z/msgs.1.dat");
    let mut zb = std::fs::read(&zdat).unwrap();
    let zend = zb.len() as u64;
    zb.extend([0u8; 64]);
    std::fs::write(&zdat, &zb).unwrap();

    let r = check(&src, &ReferenceOptions::default(), &unlimited()).unwrap();
    assert!(r.is_clean(), "{r}");
    let t = r.channels.iter().find(|c| c.name == "t").unwrap();
    assert_eq!((t.last_seq, t.msgs), (4, 4));
    assert!(r.findings.iter().any(|f| f.path == dat
        && f.offset == Some(end)
        && matches!(f.kind, FindingKind::IgnoredTail { .. })));
    let z = r.channels.iter().find(|c| c.name == "z").unwrap();
    assert_eq!((z.last_seq, z.msgs), (3, 3));
    // Only zeros after the last record: nothing to report but the missing index.
    assert!(!r.findings.iter().any(|f| f.path == zdat));
    assert!(zend > 4);
}
