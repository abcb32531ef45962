//! kill -9 over the in-place migration: a child process (this binary, re-executed) migrates a
//! copy of the nats-streaming-server fixture and is killed with SIGKILL at a random moment,
//! up to three times per round. After each kill the directory must hold either the original
//! store, untouched, or a committed migration whose originals are all kept; a final run
//! must then complete and serve everything in the manifest.
//!
//! `harness = false`: `main` is the test. 30 rounds, 8 when `CI=true`
//! (`RNATS_KILL9_ROUNDS` overrides); the seed is printed (`RNATS_KILL9_SEED` replays it).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_same_tree, copy_tree, fixture_limits, fixture_store, tree, verify_store_against_manifest,
};
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng};
use rnats_streaming::migrate::{ReferenceOptions, migrate_in_place, migrate_in_place_if_needed};
use rnats_streaming::store::file::FileStoreOptions;

const CHILD_ENV: &str = "RNATS_MIGRATE_CHILD_DIR";

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let s = migrate_in_place(
            &dir,
            &ReferenceOptions::default(),
            &FileStoreOptions::default(),
            &fixture_limits(),
        )
        .expect("child migration");
        println!("{s}");
        return;
    }
    // Test runners that list tests first (cargo-nextest) see one test, in libtest's terse
    // format; any other arguments run it.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("migrate_kill9: test");
        }
        return;
    }
    parent();
}

fn child(dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("own executable"));
    c.env(CHILD_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    /// The journal did not reach its commit: the originals must be untouched.
    BeforeCommit,
    /// Committed, moving the originals into the backup folder.
    Moving,
    /// Committed, originals moved, moving the staged store into place.
    Placing,
    /// Complete.
    Done,
}

/// Classifies `dir` after a kill and checks the invariant of that state.
fn check_after_kill(dir: &Path, original: &BTreeMap<PathBuf, Vec<u8>>) -> State {
    let journal = dir.join(".rnats-migrate");
    let backup = dir.join("nats-streaming-backup");
    if journal.join("COMMIT").exists() {
        // Every original file is in exactly one of D and the backup folder, unchanged.
        for (rel, content) in original {
            let in_dir = std::fs::read(dir.join(rel)).ok();
            let in_backup = std::fs::read(backup.join(rel)).ok();
            match (in_dir, in_backup) {
                (Some(a), None) if &a == content => {}
                (None, Some(b)) if &b == content => {}
                // A staged store file with the same name may already be in D (server.dat,
                // clients.dat) once the originals are all moved.
                (Some(_), Some(b)) if &b == content => {}
                other => panic!(
                    "committed state: original {} lost or changed ({:?})",
                    rel.display(),
                    (other.0.map(|x| x.len()), other.1.map(|x| x.len()))
                ),
            }
        }
        return if journal.join("MOVED").exists() {
            State::Placing
        } else {
            State::Moving
        };
    }
    if backup.exists() && !journal.exists() {
        assert_same_tree(
            &tree(&backup),
            original,
            "complete: the backup holds the originals",
        );
        return State::Done;
    }
    if backup.exists() {
        // The journal exists without COMMIT only after its retirement was interrupted
        // mid-removal, which cannot happen: it is renamed to `.rnats-migrate.done` first.
        panic!("backup folder without a commit");
    }
    // Before the commit: D holds exactly the originals, plus the lock file and journal.
    let mut now = tree(dir);
    now.retain(|p, _| !p.starts_with(".rnats-migrate") && p != Path::new(".rootdir.lck"));
    assert_same_tree(
        &now,
        original,
        "before the commit the originals are untouched",
    );
    State::BeforeCommit
}

fn parent() {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let rounds: u64 = std::env::var("RNATS_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if ci { 8 } else { 30 });
    let seed = std::env::var("RNATS_KILL9_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (t.as_nanos() as u64) ^ u64::from(std::process::id()) | 1
        });
    println!("migrate_kill9: {rounds} rounds, seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let original = tree(&fixture_store());
    let tmp = tempfile::tempdir().expect("tempdir");

    // How long an uninterrupted child takes, process start included (the fastest of three).
    let mut full = Duration::MAX;
    for i in 0..3 {
        let dir = tmp.path().join(format!("timing{i}"));
        copy_tree(&fixture_store(), &dir);
        let t = Instant::now();
        let status = child(&dir).status().expect("spawn child");
        assert!(status.success(), "uninterrupted child failed: {status}");
        full = full.min(t.elapsed());
        assert_eq!(verify_store_against_manifest(&dir), 205);
    }
    println!("migrate_kill9: an uninterrupted migration takes {full:?}");

    let mut seen: BTreeMap<State, u64> = BTreeMap::new();
    let mut target = full.as_micros() as u64 / 2 + 1;
    let mut kills = 0u64;
    for round in 0..rounds {
        let dir = tmp.path().join(format!("round{round}"));
        copy_tree(&fixture_store(), &dir);
        for _ in 0..=(round % 3) {
            // A third of the kills at any moment of a run, a third around `target`, which
            // follows the commit point (run times vary a lot with the disk and the load),
            // and a third a few microseconds after the commit file appears (the window of
            // the roll forward is short).
            let mode = rng.random_range(0..3);
            let delay = match mode {
                0 => rng.random_range(0..full.as_micros() as u64 + 1),
                1 => target * (80 + rng.random_range(0..41)) / 100,
                _ => rng.random_range(0..300),
            };
            let delay = Duration::from_micros(delay);
            let mut c = child(&dir).spawn().expect("spawn child");
            if mode == 2 {
                let commit = dir.join(".rnats-migrate/COMMIT");
                let t = Instant::now();
                while !commit.exists()
                    && c.try_wait().expect("try_wait").is_none()
                    && t.elapsed() < Duration::from_secs(30)
                {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            std::thread::sleep(delay);
            let finished = c.try_wait().expect("try_wait").is_some();
            if !finished {
                c.kill().expect("SIGKILL");
                kills += 1;
            }
            let status = c.wait().expect("wait");
            assert!(
                !finished || status.success(),
                "child failed on its own: {status}"
            );
            let st = check_after_kill(&dir, &original);
            *seen.entry(st).or_default() += 1;
            target = match st {
                State::BeforeCommit => target * 5 / 4 + 1,
                State::Moving | State::Placing => target,
                State::Done => target * 4 / 5,
            };
            if st == State::Done {
                break;
            }
        }
        // The next start completes (or redoes) the migration.
        let s = migrate_in_place_if_needed(
            &dir,
            &ReferenceOptions::default(),
            &FileStoreOptions::default(),
            &fixture_limits(),
        )
        .expect("final migration");
        if let Some(s) = &s {
            assert_eq!((s.channels, s.messages, s.durables), (6, 205, 2), "{s}");
        }
        assert_eq!(check_after_kill(&dir, &original), State::Done);
        assert_eq!(verify_store_against_manifest(&dir), 205);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
    println!(
        "migrate_kill9: ok, {rounds} rounds, {kills} kills; states seen after a kill: {seen:?}; commit around {target} us"
    );
}
