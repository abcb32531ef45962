//! `rnats-stream-bench crash`: the store's durability promise under kill -9 (FILE store, or
//! SQL with `--store sql`: PostgreSQL or MariaDB, see `sql`; `--db-kill-pct` kills the
//! database too in some rounds).
//!
//! Each round: (sometimes) start the server and kill it at once, during recovery; start it on
//! the same directory; check every channel against everything acknowledged so far; resume the
//! durable subscription and check it continues gap-free from where it had acked; then run
//! publishers (acks recorded per message) and the durable consumer, and `kill -9` the server
//! at a random moment. A final start checks once more, then stops the server with SIGTERM and
//! checks the reopened store again.
//!
//! The checks, for each channel (read from the first sequence to the last one):
//! * sequences are 1, 2, 3, … with no gap and no repeat, timestamps never go back, no message
//!   is flagged redelivered on its first delivery;
//! * every payload is intact (it names its publisher and counter, the filler is a function of
//!   the counter);
//! * every **acknowledged** message is present, exactly once; a publisher's messages are in
//!   the order it published them; messages stored but never acknowledged are allowed
//!   (at-least-once) and counted;
//! * what a previous check read at a sequence is still there (recovery never takes back a
//!   message it once served).
//!
//! The durable (its own client ID, reused every round): before the kill it had received and
//! acked everything up to N; after the restart it resumes (start position NewOnly, so a lost
//! durable would show as a gap) and must receive N+1 … last without a gap. Messages ≤ N sent
//! again are allowed (their acks had not reached the disk) and counted.
//!
//! Layout: a mode drives the server(s) through the rounds (`single`: one server, killed with
//! `kill -9`; fault-tolerant and clustered modes go beside it); what every mode shares is
//! here (the [`Ledger`] of acknowledged messages, the [`Findings`], the report) and in
//! `server` (starting, killing and stopping a server process), `load` (the publishers and
//! their payloads), `check` (reading every channel back against the ledger) and `durable`
//! (the durable subscription that must resume without a gap).

mod check;
mod cluster;
mod durable;
mod ft;
mod ha;
mod load;
mod round;
mod server;
mod single;
mod sql;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{CrashArgs, CrashMode, CrashStore};

use self::durable::DurState;

/// Where and how long a run goes, the same for every mode.
struct Setup {
    /// The server's store arguments (`-st FILE --dir ...` or `-st SQL ...`).
    store_args: Vec<String>,
    /// The SQL store's database (None for FILE).
    sql: Option<sql::SqlDb>,
    /// Where the server logs go (and the store, inside).
    work: PathBuf,
    rounds: usize,
    /// Load runs for a random time in this range (ms) before the kill.
    run_ms: (u64, u64),
    /// How long any one step may take.
    wait: Duration,
}

/// What a run has found so far.
struct Outcome {
    ledger: Ledger,
    findings: Findings,
    durable: DurState,
}

/// Everything acknowledged, and what checks have read.
#[derive(Default)]
struct Ledger {
    /// Publisher ids (the STAN client ids) in order of creation.
    pubs: Vec<PubRecord>,
    pub_index: HashMap<String, usize>,
    /// Per channel: what the last check read at each sequence (index = seq - 1).
    served: Vec<Vec<(u32, u64)>>,
    sent: u64,
    acked: u64,
    error_acks: u64,
    error_samples: Vec<String>,
}

struct PubRecord {
    id: String,
    channel: usize,
    round: usize,
    acked: BTreeSet<u64>,
}

/// Findings; any entry in `failures` fails the run.
#[derive(Default)]
struct Findings {
    failures: Vec<String>,
    lost: u64,
    duplicates: u64,
    order: u64,
    corrupt: u64,
    gaps: u64,
    history: u64,
    stored_unacked: u64,
    durable_resumes: u64,
    durable_redelivered_acked: u64,
    durable_max_redelivered_acked: u64,
    durable_gaps: u64,
    kills: u64,
    recovery_kills: u64,
    db_kills: u64,
    max_db_recovery: Duration,
    starts: u64,
    max_start: Duration,
    /// HA modes: from a fault of the active server or the leader to the first PubAck.
    failovers: Vec<Duration>,
    /// Cluster mode: from a fault of a follower to the first PubAck.
    follower_faults: Vec<Duration>,
    /// Cluster mode: follower faults after which the RAFT term had moved (an election).
    follower_fault_elections: usize,
}

impl Findings {
    fn fail(&mut self, s: String) {
        eprintln!("crash: FAILURE: {s}");
        if self.failures.len() < 200 {
            self.failures.push(s);
        }
    }
}

pub async fn run(a: &CrashArgs) -> anyhow::Result<bool> {
    let seed = a.seed.unwrap_or_else(|| rand::rng().random());
    let mut rng = StdRng::seed_from_u64(seed);
    let (rounds, run_ms) = if a.ci {
        (a.rounds.unwrap_or(5), (100, 600))
    } else {
        (
            a.rounds.unwrap_or(20),
            (a.min_run_ms, a.max_run_ms.max(a.min_run_ms + 1)),
        )
    };
    let tmp;
    let work: PathBuf = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempdir()?;
            tmp.clone()
        }
    };
    let store = work.join("store");
    if store.exists() {
        bail!("{} already exists: give an empty --dir", store.display());
    }
    std::fs::create_dir_all(&store)?;
    let (store_args, sql, store_name) = match a.store {
        CrashStore::File => (
            vec![
                "-st".into(),
                "FILE".into(),
                "--dir".into(),
                store.display().to_string(),
            ],
            None,
            format!("FILE {}", store.display()),
        ),
        CrashStore::Sql => {
            let db = sql::setup(a)?;
            let name = db.describe();
            (db.store_args(), Some(db), name)
        }
    };
    if a.db_kill_pct > 0 && sql.as_ref().is_none_or(|d| d.server.is_none()) {
        bail!("--db-kill-pct needs --store sql with a database started by the harness");
    }
    eprintln!(
        "crash: seed {seed}, {rounds} rounds, run {}–{} ms, store {store_name}, server {}",
        run_ms.0,
        run_ms.1,
        a.server_bin.display()
    );
    let setup = Setup {
        store_args,
        sql,
        work: work.clone(),
        rounds,
        run_ms,
        wait: Duration::from_secs(a.timeout),
    };
    let mut out = Outcome {
        ledger: Ledger {
            served: vec![Vec::new(); a.channels],
            ..Ledger::default()
        },
        findings: Findings::default(),
        durable: DurState::default(),
    };
    let started_all = Instant::now();
    match a.mode {
        CrashMode::Single => single::run(a, &setup, &mut rng, &mut out).await?,
        CrashMode::Ft => ft::run(a, &setup, &mut rng, &mut out).await?,
        CrashMode::Cluster => cluster::run(a, &setup, &mut rng, &mut out).await?,
    }

    let (ledger, f) = (&out.ledger, &out.findings);
    let ok = f.failures.is_empty();
    report(ledger, f, rounds, seed, started_all.elapsed());
    drop(setup);
    if ok && a.dir.is_none() && !a.keep {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("crash: store and server logs kept in {}", work.display());
    }
    Ok(ok)
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("rnats-crash.{}", nuid::next()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

fn report(l: &Ledger, f: &Findings, rounds: usize, seed: u64, took: Duration) {
    let lasts: Vec<String> = l
        .served
        .iter()
        .enumerate()
        .map(|(c, v)| format!("crash{c}: {}", v.len()))
        .collect();
    println!(
        "crash harness: {rounds} rounds, seed {seed}, {:.1}s",
        took.as_secs_f64()
    );
    println!(
        "  kills: {} (of which {} during start-up/recovery), server starts checked: {}, slowest start (spawn to streaming ready): {:.2}s",
        f.kills,
        f.recovery_kills,
        f.starts,
        f.max_start.as_secs_f64()
    );
    if f.db_kills > 0 {
        println!(
            "  database killed (SIGKILL) and restarted under load: {} times; slowest return to acknowledging after a restart: {:.2}s",
            f.db_kills,
            f.max_db_recovery.as_secs_f64()
        );
    }
    println!(
        "  published: {} sent, {} acknowledged, {} error acks{}",
        l.sent,
        l.acked,
        l.error_acks,
        if l.error_samples.is_empty() {
            String::new()
        } else {
            format!(" ({})", l.error_samples.join("; "))
        }
    );
    println!("  channels (last sequence): {}", lasts.join(", "));
    println!(
        "  stored but never acknowledged (allowed, at-least-once): {}",
        f.stored_unacked
    );
    println!(
        "  acknowledged messages LOST: {}; stored twice: {}; out of publish order: {}; corrupt payloads: {}; sequence gaps/repeats: {}; served then changed: {}",
        f.lost, f.duplicates, f.order, f.corrupt, f.gaps, f.history
    );
    println!(
        "  durable: {} resumes, gaps after resume: {}; acked before a kill but sent again after it: {} in total, at most {} in one resume",
        f.durable_resumes,
        f.durable_gaps,
        f.durable_redelivered_acked,
        f.durable_max_redelivered_acked
    );
    if !f.failovers.is_empty() {
        println!(
            "  {}",
            ha::summary(
                "fault of the active server / leader to the first PubAck",
                &f.failovers
            )
        );
    }
    if !f.follower_faults.is_empty() {
        println!(
            "  {}",
            ha::summary(
                "fault of a follower to the first PubAck",
                &f.follower_faults
            )
        );
        println!(
            "  follower faults after which the leader's term had moved (an election): {} of {}",
            f.follower_fault_elections,
            f.follower_faults.len()
        );
    }
    if f.failures.is_empty() {
        println!("  result: PASS");
    } else {
        println!("  result: FAIL ({} findings)", f.failures.len());
        for s in &f.failures {
            println!("    - {s}");
        }
    }
}
