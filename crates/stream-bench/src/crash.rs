//! `rnats-stream-bench crash`: the file store's durability promise under kill -9.
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

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::{BufMut, Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rnats_streaming::proto::StartPosition;
use tokio::sync::watch;

use crate::CrashArgs;
use crate::nats::{self, Next};
use crate::publish::{self, Limit, Plan};
use crate::stan::{Stan, StanSub, StanWire, SubOpts, decode_msg};

const DURABLE_CLIENT: &str = "crash-durable";
const DURABLE_NAME: &str = "dur";
const WINDOWS: [usize; 4] = [1, 4, 32, 256];

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
    starts: u64,
    max_start: Duration,
}

impl Findings {
    fn fail(&mut self, s: String) {
        eprintln!("crash: FAILURE: {s}");
        if self.failures.len() < 200 {
            self.failures.push(s);
        }
    }
}

/// The durable consumer's view.
#[derive(Default, Clone)]
struct DurState {
    /// Every sequence up to this one was received and acked.
    contiguous: u64,
    /// Received above `contiguous`.
    above: BTreeSet<u64>,
    received: u64,
    duplicates: u64,
}

impl DurState {
    fn saw(&mut self, seq: u64) -> bool {
        self.received += 1;
        if seq <= self.contiguous || !self.above.insert(seq) {
            self.duplicates += 1;
            return false;
        }
        while self.above.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        true
    }
}

struct Server {
    child: Child,
    addr: String,
    log: PathBuf,
    started: Instant,
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
    eprintln!(
        "crash: seed {seed}, {rounds} rounds, run {}–{} ms, store {}, server {}",
        run_ms.0,
        run_ms.1,
        store.display(),
        a.server_bin.display()
    );
    let wait = Duration::from_secs(a.timeout);
    let mut ledger = Ledger {
        served: vec![Vec::new(); a.channels],
        ..Ledger::default()
    };
    let mut f = Findings::default();
    let mut dur = DurState::default();
    let started_all = Instant::now();
    let mut nstart = 0usize;
    let mut last_ready = Duration::from_millis(100);

    for round in 1..=rounds {
        if rng.random_range(0..100) < a.recovery_kill_pct {
            nstart += 1;
            let mut s = start_server(a, &store, &work, nstart, wait).await?;
            // From the core server's "Listening" line to about when the previous start was
            // ready: the store is opened and recovered in that window.
            let upto = (last_ready.as_millis() as u64 * 3 / 2).max(100);
            let d = Duration::from_millis(rng.random_range(0..upto));
            tokio::time::sleep(d).await;
            kill9(&mut s)?;
            f.kills += 1;
            f.recovery_kills += 1;
            eprintln!("crash: round {round}: killed during start-up after {d:?}");
        }
        nstart += 1;
        let srv = match start_server(a, &store, &work, nstart, wait).await {
            Ok(s) => s,
            Err(e) => {
                f.fail(format!(
                    "round {round}: server did not start on the store: {e:#}"
                ));
                break;
            }
        };
        let mut srv = srv;
        if let Err(e) = await_ready(&srv.addr, &a.cluster, wait).await {
            f.fail(format!(
                "round {round}: the streaming server did not become ready: {e:#}; log {}:\n{}",
                srv.log.display(),
                tail(&srv.log)
            ));
            let _ = kill9(&mut srv);
            break;
        }
        f.starts += 1;
        last_ready = srv.started.elapsed();
        f.max_start = f.max_start.max(last_ready);
        let lasts = check_channels(a, &srv.addr, round, &mut ledger, &mut f, wait).await;
        let lasts = match lasts {
            Ok(l) => l,
            Err(e) => {
                f.fail(format!("round {round}: check failed to run: {e:#}"));
                let _ = kill9(&mut srv);
                break;
            }
        };
        // The durable: resume (or create, in round 1) and catch up to the channel's end.
        let durable =
            match resume_durable(a, &srv.addr, round, &mut dur, lasts[0], &mut f, wait).await {
                Ok(d) => d,
                Err(e) => {
                    f.fail(format!("round {round}: durable resume: {e:#}"));
                    let _ = kill9(&mut srv);
                    break;
                }
            };

        // Load, then kill -9 at a random moment.
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut pubs = Vec::new();
        for i in 0..a.publishers {
            let id = format!("crash-r{round}-p{i}");
            let channel = i % a.channels;
            let window = WINDOWS[rng.random_range(0..WINDOWS.len())];
            let max_size = a.max_size.max(32);
            pubs.push(tokio::spawn(publisher(
                srv.addr.clone(),
                a.cluster.clone(),
                id,
                channel,
                window,
                max_size,
                stop_rx.clone(),
                wait,
            )));
        }
        let dur_task = tokio::spawn(consume_durable(durable, dur.clone(), stop_rx.clone()));
        let run_for = Duration::from_millis(rng.random_range(run_ms.0..run_ms.1));
        tokio::time::sleep(run_for).await;
        if let Ok(Some(st)) = srv.child.try_wait() {
            f.fail(format!(
                "round {round}: the server exited by itself ({st}) under load; log {}",
                srv.log.display()
            ));
        }
        kill9(&mut srv)?;
        f.kills += 1;
        let _ = stop_tx.send(true);
        let mut round_acked = 0;
        let mut round_sent = 0;
        for (i, p) in pubs.into_iter().enumerate() {
            let id = format!("crash-r{round}-p{i}");
            match tokio::time::timeout(wait, p).await {
                Ok(Ok(r)) => {
                    round_acked += r.acked.len() as u64;
                    round_sent += r.sent;
                    ledger.sent += r.sent;
                    ledger.acked += r.acked.len() as u64;
                    ledger.error_acks += r.errors;
                    for e in r.error_samples {
                        if ledger.error_samples.len() < 10 {
                            ledger.error_samples.push(e);
                        }
                    }
                    if let Some(e) = r.setup_error {
                        eprintln!("crash: round {round}: publisher {id}: {e}");
                    }
                    ledger.pub_index.insert(id.clone(), ledger.pubs.len());
                    ledger.pubs.push(PubRecord {
                        id,
                        channel: i % a.channels,
                        round,
                        acked: r.acked,
                    });
                }
                Ok(Err(e)) => f.fail(format!("round {round}: publisher {id} panicked: {e}")),
                Err(_) => f.fail(format!(
                    "round {round}: publisher {id} did not stop in {wait:?}"
                )),
            }
        }
        match tokio::time::timeout(wait, dur_task).await {
            Ok(Ok(d)) => dur = d,
            _ => f.fail(format!("round {round}: durable consumer did not stop")),
        }
        eprintln!(
            "crash: round {round}: killed after {run_for:?} of load: {round_acked} acked of {round_sent} sent; durable acked up to {}",
            dur.contiguous
        );
    }

    // Final: start, check, durable; then a clean stop (SIGTERM) and one more check.
    if f.failures.is_empty() {
        nstart += 1;
        let mut srv = start_server(a, &store, &work, nstart, wait).await?;
        f.starts += 1;
        let lasts = check_channels(a, &srv.addr, rounds + 1, &mut ledger, &mut f, wait).await?;
        let d = resume_durable(a, &srv.addr, rounds + 1, &mut dur, lasts[0], &mut f, wait).await?;
        let _ = d.stan.close_sub(&d.sub, wait).await;
        let _ = d.stan.close(wait).await;
        let graceful = term(&mut srv, wait).await?;
        if !graceful {
            f.fail("the server did not exit within the timeout after SIGTERM".into());
        }
        nstart += 1;
        let mut srv = start_server(a, &store, &work, nstart, wait).await?;
        f.starts += 1;
        check_channels(a, &srv.addr, rounds + 2, &mut ledger, &mut f, wait).await?;
        let _ = term(&mut srv, wait).await;
    }

    let ok = f.failures.is_empty();
    report(&ledger, &f, rounds, seed, started_all.elapsed());
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
    if f.failures.is_empty() {
        println!("  result: PASS");
    } else {
        println!("  result: FAIL ({} findings)", f.failures.len());
        for s in &f.failures {
            println!("    - {s}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

async fn start_server(
    a: &CrashArgs,
    store: &Path,
    work: &Path,
    n: usize,
    wait: Duration,
) -> anyhow::Result<Server> {
    let log = work.join(format!("server.{n}.log"));
    let out = File::create(&log)?;
    let err = out.try_clone()?;
    let started = Instant::now();
    let mut child = Command::new(&a.server_bin)
        .args(["-cid", &a.cluster, "-st", "FILE", "--dir"])
        .arg(store)
        .args(["-a", "127.0.0.1", "-p", "-1"])
        // No channel limits: every message ever acknowledged must stay (the defaults, 1M
        // messages or ~1 GB per channel, would drop the oldest ones in a long run).
        .args(["-mm", "0", "-mb", "0"])
        .args(&a.server_arg)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawning {}", a.server_bin.display()))?;
    let deadline = Instant::now() + wait;
    let needle = "Listening for client connections on ";
    let mut port = None;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait()? {
            bail!(
                "exited with {st} before listening; log {}:\n{}",
                log.display(),
                tail(&log)
            );
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(i) = text.find(needle) {
            let rest = &text[i + needle.len()..];
            let hp: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            if let Some(p) = hp.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) {
                port = Some(p);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some(port) = port else {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "no client port logged within {wait:?}; log {}:\n{}",
            log.display(),
            tail(&log)
        );
    };
    let srv = Server {
        child,
        addr: format!("127.0.0.1:{port}"),
        log,
        started,
    };
    Ok(srv)
}

/// Waits until the streaming server answers a connect (store recovered), closing that
/// session again.
async fn await_ready(srv_addr: &str, cluster: &str, wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let r = async {
            let nc = nats::connect(srv_addr, "crash-ready", false).await?;
            let s = Stan::connect(
                nc,
                cluster,
                &format!("crash-ready-{}", nuid::next()),
                Duration::from_millis(500),
            )
            .await?;
            s.close(Duration::from_secs(2)).await
        }
        .await;
        match r {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e.context("not ready")),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn kill9(s: &mut Server) -> anyhow::Result<()> {
    let _ = s.child.kill(); // SIGKILL
    s.child.wait()?;
    Ok(())
}

/// SIGTERM, then waits; true when the process exited in time.
async fn term(s: &mut Server, wait: Duration) -> anyhow::Result<bool> {
    let _ = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if s.child.try_wait()?.is_some() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill9(s)?;
    Ok(false)
}

fn tail(p: &Path) -> String {
    let Ok(mut f) = File::open(p) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(3000)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

// ---------------------------------------------------------------------------------------------
// Publishers
// ---------------------------------------------------------------------------------------------

struct PubResult {
    sent: u64,
    acked: BTreeSet<u64>,
    errors: u64,
    error_samples: Vec<String>,
    setup_error: Option<String>,
}

/// The payload of message `counter`: `<id>:<counter>:` then a filler that depends on the
/// counter, `size(counter)` bytes in all.
fn payload(id: &str, counter: u64, max_size: usize) -> Bytes {
    let head = format!("{id}:{counter}:");
    let size = head.len() + (mix(counter) % max_size as u64) as usize;
    let mut b = BytesMut::with_capacity(size);
    b.put_slice(head.as_bytes());
    for j in head.len()..size {
        b.put_u8(filler(counter, j));
    }
    b.freeze()
}

fn filler(counter: u64, j: usize) -> u8 {
    b'a' + ((counter + j as u64) % 26) as u8
}

fn mix(x: u64) -> u64 {
    // splitmix64
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Parses and checks a payload: (publisher id, counter) when intact.
fn parse_payload(data: &[u8]) -> Option<(&str, u64)> {
    let s1 = data.iter().position(|&b| b == b':')?;
    let s2 = s1 + 1 + data[s1 + 1..].iter().position(|&b| b == b':')?;
    let id = std::str::from_utf8(&data[..s1]).ok()?;
    let counter: u64 = std::str::from_utf8(&data[s1 + 1..s2]).ok()?.parse().ok()?;
    let head = s2 + 1;
    for (j, &b) in data.iter().enumerate().skip(head) {
        if b != filler(counter, j) {
            return None;
        }
    }
    Some((id, counter))
}

fn payload_len_ok(id: &str, counter: u64, len: usize, max_size: usize) -> bool {
    let head = format!("{id}:{counter}:").len();
    len == head + (mix(counter) % max_size as u64) as usize
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    addr: String,
    cluster: String,
    id: String,
    channel: usize,
    window: usize,
    max_size: usize,
    stop: watch::Receiver<bool>,
    wait: Duration,
) -> PubResult {
    let mut res = PubResult {
        sent: 0,
        acked: BTreeSet::new(),
        errors: 0,
        error_samples: Vec::new(),
        setup_error: None,
    };
    let setup = async {
        let nc = nats::connect(&addr, &id, false).await?;
        Stan::connect(nc, &cluster, &id, wait).await
    };
    let stan = tokio::select! {
        s = setup => match s {
            Ok(s) => s,
            Err(e) => {
                res.setup_error = Some(format!("{e:#}"));
                return res;
            }
        },
        () = wait_stop(stop.clone()) => {
            res.setup_error = Some("stopped before connected".into());
            return res;
        }
    };
    let pid = id.clone();
    let w = StanWire::new(
        &stan,
        &format!("crash{channel}"),
        Box::new(move |i| payload(&pid, i, max_size)),
    )
    .await;
    let (mut w, mut acks) = match w {
        Ok(x) => x,
        Err(e) => {
            res.setup_error = Some(format!("{e:#}"));
            return res;
        }
    };
    let plan = Plan {
        window,
        limit: Limit::Msgs(u64::MAX),
        progress_timeout: wait,
    };
    let acked = &mut res.acked;
    let o = publish::run(
        &mut w,
        &mut acks,
        plan,
        Some(stop),
        Duration::from_secs(1),
        |i, ok| {
            if ok {
                acked.insert(i);
            }
        },
    )
    .await;
    res.sent = o.sent;
    res.errors = o.errors;
    res.error_samples = o.error_samples;
    res
}

async fn wait_stop(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Reads every channel from the first sequence and checks it against the ledger. Returns the
/// last sequence of each channel.
async fn check_channels(
    a: &CrashArgs,
    addr: &str,
    round: usize,
    l: &mut Ledger,
    f: &mut Findings,
    wait: Duration,
) -> anyhow::Result<Vec<u64>> {
    await_ready(addr, &a.cluster, wait).await?;
    let nc = nats::connect(addr, "crash-check", false).await?;
    let stan = Stan::connect(nc, &a.cluster, &format!("crash-check-{round}"), wait).await?;
    let mut lasts = Vec::new();
    let mut unacked_total = 0u64;
    for c in 0..a.channels {
        let channel = format!("crash{c}");
        let acked_here: u64 = l
            .pubs
            .iter()
            .filter(|p| p.channel == c)
            .map(|p| p.acked.len() as u64)
            .sum();
        let prev_served = l.served[c].len() as u64;
        // The last sequence: a LastReceived subscription gets the last message at once; an
        // empty channel sends nothing (only acceptable when nothing was acknowledged or
        // served there).
        let must_have = acked_here > 0 || prev_served > 0;
        let last = {
            let mut o = SubOpts::new(StartPosition::LastReceived);
            o.max_in_flight = 1;
            let mut s = stan.subscribe(&channel, &o).await?;
            let w = if must_have {
                wait
            } else {
                Duration::from_millis(500)
            };
            let last = match nats::next(&mut s.sub, w).await {
                Next::Msg(m) => decode_msg(&m)?.sequence,
                _ => 0,
            };
            let _ = stan.close_sub(&s, wait).await;
            last
        };
        if last == 0 && must_have {
            f.fail(format!(
                "round {round}: channel {channel} is empty or gone after restart, but {acked_here} messages were acknowledged and {prev_served} served before"
            ));
        }
        if last < prev_served {
            f.history += prev_served - last;
            f.fail(format!(
                "round {round}: channel {channel} ends at {last}, but sequence {prev_served} was served before the restart"
            ));
        }
        let mut served = Vec::with_capacity(last as usize);
        if last > 0 {
            let mut o = SubOpts::new(StartPosition::First);
            o.max_in_flight = 8192;
            o.ack_wait_secs = 60;
            let mut s = stan.subscribe(&channel, &o).await?;
            read_channel(
                &stan,
                &mut s,
                &channel,
                last,
                round,
                l,
                f,
                &mut served,
                wait,
                a.max_size.max(32),
            )
            .await?;
            let _ = stan.close_sub(&s, wait).await;
        }
        // What was served before must still be there.
        let prev = &l.served[c];
        let mut changed = 0u64;
        for (i, (old, new)) in prev.iter().zip(served.iter()).enumerate() {
            if old != new {
                changed += 1;
                if changed <= 3 {
                    f.fail(format!(
                        "round {round}: {channel} seq {}: was {} before the restart, now {}",
                        i + 1,
                        describe(l, *old),
                        describe(l, *new)
                    ));
                }
            }
        }
        f.history += changed;
        // Every acknowledged message present exactly once, publishers' order kept.
        let mut at: HashMap<(u32, u64), u64> = HashMap::with_capacity(served.len());
        for (i, &(p, k)) in served.iter().enumerate() {
            if p == u32::MAX {
                continue;
            }
            if let Some(first) = at.insert((p, k), i as u64 + 1) {
                f.duplicates += 1;
                f.fail(format!(
                    "round {round}: {channel}: {} stored twice, at seq {first} and {}",
                    describe(l, (p, k)),
                    i + 1
                ));
            }
        }
        let mut stored_unacked = 0u64;
        for (pi, p) in l.pubs.iter().enumerate().filter(|(_, p)| p.channel == c) {
            let mut last_seq = 0u64;
            for &k in &p.acked {
                match at.get(&(pi as u32, k)) {
                    None => {
                        f.lost += 1;
                        if f.lost <= 20 {
                            let before = p
                                .acked
                                .range(..k)
                                .next_back()
                                .and_then(|b| at.get(&(pi as u32, *b)));
                            f.fail(format!(
                                "round {round}: LOST acknowledged message {}:{k} (acked in round {}) on {channel}: not in sequences 1..={last}; its publisher's previous acked message is at {before:?}",
                                p.id, p.round
                            ));
                        }
                    }
                    Some(&seq) => {
                        if seq < last_seq {
                            f.order += 1;
                            f.fail(format!(
                                "round {round}: {channel}: {}:{k} at seq {seq}, before an earlier message of the same publisher at {last_seq}",
                                p.id
                            ));
                        }
                        last_seq = seq;
                    }
                }
            }
            stored_unacked += at
                .keys()
                .filter(|(q, k)| *q == pi as u32 && !p.acked.contains(k))
                .count() as u64;
        }
        unacked_total += stored_unacked;
        l.served[c] = served;
        lasts.push(last);
    }
    // Re-counted at every check: the latest total is the figure.
    f.stored_unacked = unacked_total;
    let _ = stan.close(wait).await;
    Ok(lasts)
}

fn describe(l: &Ledger, (p, k): (u32, u64)) -> String {
    if p == u32::MAX {
        "an unparsable message".to_string()
    } else {
        format!(
            "{}:{k}",
            l.pubs.get(p as usize).map_or("?", |r| r.id.as_str())
        )
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_channel(
    stan: &Stan,
    s: &mut StanSub,
    channel: &str,
    last: u64,
    round: usize,
    l: &mut Ledger,
    f: &mut Findings,
    served: &mut Vec<(u32, u64)>,
    wait: Duration,
    max_size: usize,
) -> anyhow::Result<()> {
    let mut expect = 1u64;
    let mut last_ts = i64::MIN;
    let mut idle_since = Instant::now();
    while expect <= last {
        let m = match nats::next(&mut s.sub, wait.saturating_sub(idle_since.elapsed())).await {
            Next::Msg(m) => m,
            _ => {
                f.gaps += last + 1 - expect;
                f.fail(format!(
                    "round {round}: {channel}: reading from the first sequence stopped at {} of {last} (nothing more within {wait:?})",
                    expect - 1
                ));
                return Ok(());
            }
        };
        idle_since = Instant::now();
        let msg = decode_msg(&m)?;
        stan.ack(s, msg.sequence).await?;
        if msg.redelivered {
            // A redelivery (ack wait expired) of something already read: ignore it.
            if msg.sequence < expect {
                continue;
            }
        }
        if msg.sequence != expect {
            f.gaps += 1;
            f.fail(format!(
                "round {round}: {channel}: expected sequence {expect}, got {}",
                msg.sequence
            ));
            if msg.sequence < expect {
                continue;
            }
            // Mark the skipped ones as unreadable and go on from there.
            while expect < msg.sequence {
                served.push((u32::MAX, 0));
                expect += 1;
            }
        }
        if msg.timestamp < last_ts {
            f.fail(format!(
                "round {round}: {channel} seq {}: timestamp {} goes back from {last_ts}",
                msg.sequence, msg.timestamp
            ));
        }
        last_ts = msg.timestamp;
        let entry = match parse_payload(&msg.data) {
            Some((id, k)) if payload_len_ok(id, k, msg.data.len(), max_size) => {
                match l.pub_index.get(id) {
                    Some(&p) => (p as u32, k),
                    None => {
                        // A publisher whose result was not recorded (e.g. it never got its
                        // first ack); register it so its messages are tracked.
                        let p = l.pubs.len();
                        l.pub_index.insert(id.to_string(), p);
                        l.pubs.push(PubRecord {
                            id: id.to_string(),
                            channel: channel.trim_start_matches("crash").parse().unwrap_or(0),
                            round,
                            acked: BTreeSet::new(),
                        });
                        (p as u32, k)
                    }
                }
            }
            _ => {
                f.corrupt += 1;
                f.fail(format!(
                    "round {round}: {channel} seq {}: corrupt payload ({} bytes): {:?}",
                    msg.sequence,
                    msg.data.len(),
                    String::from_utf8_lossy(&msg.data[..msg.data.len().min(60)])
                ));
                (u32::MAX, 0)
            }
        };
        served.push(entry);
        expect += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The durable subscription
// ---------------------------------------------------------------------------------------------

struct Durable {
    stan: Stan,
    sub: StanSub,
}

/// Connects as the durable's client and resumes it (round 1: creates it from the first
/// sequence), then reads until every sequence after the last acked one up to `last` arrived.
#[allow(clippy::too_many_arguments)]
async fn resume_durable(
    a: &CrashArgs,
    addr: &str,
    round: usize,
    d: &mut DurState,
    last: u64,
    f: &mut Findings,
    wait: Duration,
) -> anyhow::Result<Durable> {
    let nc = nats::connect(addr, DURABLE_CLIENT, false).await?;
    // The previous incarnation of this client died with the server: the server checks it
    // (heartbeat) and replaces it, which may take a moment; retry until then.
    let deadline = Instant::now() + wait;
    let stan = loop {
        match Stan::connect(nc.clone(), &a.cluster, DURABLE_CLIENT, wait).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline && e.to_string().contains("already registered") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let first = round == 1;
    let mut o = SubOpts::new(if first {
        StartPosition::First
    } else {
        StartPosition::NewOnly
    });
    o.durable = Some(DURABLE_NAME.to_string());
    o.max_in_flight = 256;
    o.ack_wait_secs = 10;
    let mut sub = stan.subscribe("crash0", &o).await?;
    if !first {
        f.durable_resumes += 1;
    }
    let n = d.contiguous;
    let mut redelivered_acked = 0u64;
    let mut first_seen = None;
    let mut idle_since = Instant::now();
    while d.contiguous < last {
        match nats::next(&mut sub.sub, wait.saturating_sub(idle_since.elapsed())).await {
            Next::Msg(m) => {
                idle_since = Instant::now();
                let msg = decode_msg(&m)?;
                first_seen.get_or_insert(msg.sequence);
                if msg.sequence <= n {
                    redelivered_acked += 1;
                }
                d.saw(msg.sequence);
                stan.ack(&sub, msg.sequence).await?;
            }
            _ => {
                let missing: Vec<u64> = (d.contiguous + 1..=last)
                    .filter(|s| !d.above.contains(s))
                    .take(10)
                    .collect();
                f.durable_gaps += 1;
                f.fail(format!(
                    "round {round}: durable {DURABLE_NAME} had acked up to {n} before the kill; after resuming it got up to {} of {last} (first delivered: {first_seen:?}), missing e.g. {missing:?}",
                    d.contiguous
                ));
                break;
            }
        }
    }
    if last < n {
        f.durable_gaps += 1;
        f.fail(format!(
            "round {round}: durable {DURABLE_NAME} had acked up to {n}, but the channel now ends at {last}"
        ));
    }
    f.durable_redelivered_acked += redelivered_acked;
    f.durable_max_redelivered_acked = f.durable_max_redelivered_acked.max(redelivered_acked);
    if !first {
        eprintln!(
            "crash: round {round}: durable resumed: acked up to {n} before the kill, first delivery after restart {first_seen:?}, caught up to {} (channel last {last}), {redelivered_acked} already-acked sent again",
            d.contiguous
        );
    }
    Ok(Durable { stan, sub })
}

/// Keeps consuming and acking until stopped; returns the state at the kill.
async fn consume_durable(
    mut dur: Durable,
    mut d: DurState,
    stop: watch::Receiver<bool>,
) -> DurState {
    loop {
        tokio::select! {
            n = nats::next(&mut dur.sub.sub, Duration::from_secs(3600)) => match n {
                Next::Msg(m) => {
                    if let Ok(msg) = decode_msg(&m) {
                        // Only what was acked counts: record after the ack was handed over.
                        if dur.stan.ack(&dur.sub, msg.sequence).await.is_ok() {
                            d.saw(msg.sequence);
                        }
                    }
                }
                _ => break,
            },
            () = wait_stop(stop.clone()) => break,
        }
    }
    d
}
