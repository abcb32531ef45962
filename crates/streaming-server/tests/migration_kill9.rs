//! kill -9 over the start-up migration, through the binary: each round starts
//! `rnats-streaming-server -st FILE --dir <copy of the fixture>` and kills it with SIGKILL at
//! a random moment of the migration, up to three times. After each kill the directory must
//! hold either the original store untouched, or a committed migration with every original
//! file kept (in the backup folder, or not moved yet). A last start must then complete the
//! migration and serve everything in the manifest.
//!
//! 5 rounds (`RNATS_KILL9_ROUNDS` overrides); the seed is printed (`RNATS_KILL9_SEED` replays
//! it). The kill moments are spread over the duration of one migration, measured first, half
//! of them in its last part, where it commits and moves the files.

mod common;
mod migration_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use migration_support::*;

const MIGRATING: &str = "holds a nats-streaming-server file store: migrating it";
const MIGRATED: &str = "STREAM: migrated the nats-streaming-server file store";
const READY: &str = "Streaming Server is ready";
const WAIT: Duration = Duration::from_secs(60);

/// xorshift64*: enough randomness for kill moments, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Waits for the first log line that contains one of `what`; returns its index.
fn wait_any(p: &ServerProc, what: &[&str]) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut log = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = p.lines.recv_timeout(left) else {
            panic!(
                "none of {what:?} logged within {WAIT:?}; log:\n{}",
                log.join("\n")
            );
        };
        if let Some(i) = what.iter().position(|w| line.contains(w)) {
            return i;
        }
        log.push(line);
    }
}

/// Where a kill left the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    /// Not committed: the original store must be untouched.
    BeforeCommit,
    /// Committed, originals and staged store being moved.
    Committed,
    /// Complete, the retired journal being removed.
    Retiring,
    /// Complete.
    Done,
}

/// Checks the invariant after a kill and says which state the migration was in.
fn check_after_kill(dir: &Path, original: &BTreeMap<std::path::PathBuf, Vec<u8>>) -> State {
    let journal = dir.join(".rnats-migrate");
    let retired = dir.join(".rnats-migrate.done");
    let backup = dir.join("nats-streaming-backup");
    assert!(!dir.join("nats-streaming-backup.1").exists());
    let committed = journal.join("COMMIT").exists() || retired.exists() || backup.exists();
    if !committed {
        let mut now = tree(dir);
        now.retain(|p, _| !p.starts_with(".rnats-migrate") && p != Path::new(".rootdir.lck"));
        assert_eq!(
            differences(original, &now),
            Vec::<&Path>::new(),
            "not committed, yet the original store changed"
        );
        return State::BeforeCommit;
    }
    // Every original file, byte for byte, in the backup folder or still in place.
    for (p, content) in original {
        let kept = std::fs::read(backup.join(p))
            .or_else(|_| std::fs::read(dir.join(p)))
            .unwrap_or_else(|e| panic!("original {} lost: {e}", p.display()));
        assert!(&kept == content, "original {} changed", p.display());
    }
    if journal.exists() {
        State::Committed
    } else if retired.exists() {
        State::Retiring
    } else {
        State::Done
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_start_up_migration_then_restart_serves_the_manifest() {
    let m = manifest();
    let conf = conf();
    let rounds = env_u64("RNATS_KILL9_ROUNDS").unwrap_or(5);
    let seed = env_u64("RNATS_KILL9_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    println!("migration kill -9: {rounds} rounds, RNATS_KILL9_SEED={seed}");
    let mut rng = Rng(seed);

    // How long one migration takes here (from its first log line to its summary).
    let span = {
        let (_t, dir) = fixture_copy();
        let d = dir.to_str().unwrap();
        let p = ServerProc::spawn(&["-st", "FILE", "--dir", d, "-sc", &conf], MIGRATING);
        let t0 = Instant::now();
        wait_any(&p, &[MIGRATED]);
        t0.elapsed()
    };
    println!("one migration: {span:?}");
    let span_us = (span.as_micros() as u64 * 12 / 10).max(1000);

    let mut seen: BTreeMap<State, u32> = BTreeMap::new();
    for round in 0..rounds {
        let (_t, dir) = fixture_copy();
        let original = tree(&dir);
        let d = dir.to_str().unwrap();
        let args = ["-st", "FILE", "--dir", d, "-sc", &conf, "-m", "-1"];
        for _ in 0..1 + rng.below(3) {
            let mut p = ServerProc::spawn(&args, "STREAM: Starting monitoring on");
            if wait_any(&p, &[MIGRATING, READY]) == 1 {
                break; // complete already: nothing left to interrupt
            }
            // Half the kills anywhere in the migration, half near its end, where the commit
            // and the moves are (most of its time is spent writing and checking the staging
            // store).
            let delay = Duration::from_micros(match rng.below(2) {
                0 => rng.below(span_us),
                _ => span_us * 6 / 10 + rng.below(span_us * 4 / 10),
            });
            std::thread::sleep(delay);
            p.kill();
            let state = check_after_kill(&dir, &original);
            println!("round {round}: killed {delay:?} into the migration: {state:?}");
            *seen.entry(state).or_default() += 1;
        }
        let p = ServerProc::spawn(&args, "STREAM: Starting monitoring on");
        let log = lines_until(&p, READY, WAIT);
        assert!(
            !log.iter().any(|l| l.contains("[ERR]")),
            "{}",
            log.join("\n")
        );
        check_monitoring(p.monitor_port.expect("monitor port"), &m);
        replay_exact(&p.url(), &m).await;
        assert_eq!(
            differences(&original, &tree(&dir.join("nats-streaming-backup"))),
            Vec::<&Path>::new()
        );
        assert!(!dir.join(".rnats-migrate").exists());
        assert!(!dir.join(".rnats-migrate.done").exists());
        assert!(!dir.join("nats-streaming-backup.1").exists());
    }
    println!("states where the kills landed: {seen:?}");
}
