//! `rnats-stream-bench soak`: the streaming server (FILE store) under steady load for a set
//! time, restarted every `--restart-every` seconds (SIGTERM and SIGKILL in turn), with its
//! RSS and open fds sampled from `/proc` and its `/streaming/serverz` counters. The verdict:
//!
//! * every message whose PubAck came back was delivered to the durable subscription (which
//!   resumes after every restart): nothing acknowledged is lost;
//! * after the warm-up (and a settling time after each start), memory and descriptors grow
//!   no more than the stated tolerance, across restarts too;
//! * the short-lived clients all worked, and once every client has gone (those that dropped
//!   their connection removed by the server's heartbeats) the server holds no client.
//!
//! Load and accounting are in `load`, the server process in `server`; the samples and the
//! growth rule are rnats-bench's (`rnats_bench::soak::sample`).

mod load;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rnats_bench::soak::sample::{self, Sample, Tolerance};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::load::{Ledger, PubPlan};

/// `rnats-stream-bench soak` options.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// The rnats-streaming-server binary.
    #[arg(long, default_value = "target/release/rnats-streaming-server")]
    pub server_bin: PathBuf,
    /// Work directory (store, server logs); default a fresh temp dir, removed on PASS.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds of load.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Seconds before the growth baseline is taken.
    #[arg(long, default_value_t = 20.0)]
    pub warmup: f64,
    /// Seconds after each (re)start whose samples do not count for growth.
    #[arg(long, default_value_t = 10.0)]
    pub settle: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5.0)]
    pub sample: f64,
    /// Seconds between restarts (0: never); SIGTERM and SIGKILL in turn.
    #[arg(long, default_value_t = 30.0)]
    pub restart_every: f64,
    /// Publishers (publisher i writes channel soak.<i % channels>).
    #[arg(long, default_value_t = 3)]
    pub publishers: usize,
    #[arg(long, default_value_t = 2)]
    pub channels: usize,
    /// Messages per second per publisher.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Most PubAcks a publisher waits for at once.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Payload bytes.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Short-lived clients per second.
    #[arg(long, default_value_t = 5.0)]
    pub churn_rate: f64,
    /// Messages kept per channel (the server's -mm): the store reaches a steady size.
    #[arg(long, default_value_t = 100_000)]
    pub max_msgs: u64,
    #[arg(long, default_value = "test-cluster")]
    pub cluster: String,
    /// Allowed RSS growth after the warm-up, % of the baseline ...
    #[arg(long, default_value_t = 10.0)]
    pub rss_pct: f64,
    /// ... or this many MiB, whichever is larger.
    #[arg(long, default_value_t = 8.0)]
    pub rss_mib: f64,
    /// Allowed growth of open file descriptors.
    #[arg(long, default_value_t = 20)]
    pub fds: u64,
    /// Extra server argument (repeatable), e.g. --server-arg=--file_sync=false.
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
}

const SERVERZ: &[&str] = &["clients", "subscriptions", "channels", "total_msgs"];

/// The client tasks of one server incarnation.
struct Clients {
    pub_stop: watch::Sender<bool>,
    dur_stop: watch::Sender<bool>,
    churn_stop: watch::Sender<bool>,
    publishers: Vec<JoinHandle<anyhow::Result<()>>>,
    durable: JoinHandle<anyhow::Result<()>>,
    churn: JoinHandle<()>,
}

fn start_clients(a: &SoakArgs, addr: &str, channels: &[String], ledger: &Arc<Ledger>) -> Clients {
    let (pub_stop, ps) = watch::channel(false);
    let (dur_stop, ds) = watch::channel(false);
    let (churn_stop, cs) = watch::channel(false);
    let publishers = (0..a.publishers)
        .map(|p| {
            let plan = PubPlan {
                cluster: a.cluster.clone(),
                channel: channels[p % channels.len()].clone(),
                rate: a.rate,
                window: a.window,
                size: a.size,
            };
            tokio::spawn(load::publisher(
                addr.to_string(),
                p,
                plan,
                ledger.clone(),
                ps.clone(),
            ))
        })
        .collect();
    let durable = tokio::spawn(load::durable(
        addr.to_string(),
        a.cluster.clone(),
        channels.to_vec(),
        ledger.clone(),
        ds,
    ));
    let churn = tokio::spawn(load::churn(
        addr.to_string(),
        a.cluster.clone(),
        a.churn_rate,
        ledger.clone(),
        cs,
    ));
    Clients {
        pub_stop,
        dur_stop,
        churn_stop,
        publishers,
        durable,
        churn,
    }
}

/// Records clients that ended on their own (an error while the server was up).
async fn reap_early(c: &mut Clients, errors: &mut Vec<String>) {
    for (p, t) in c.publishers.iter_mut().enumerate() {
        if t.is_finished() {
            match (&mut *t).await {
                Ok(Err(e)) => errors.push(format!("publisher {p}: {e:#}")),
                Ok(Ok(())) => errors.push(format!("publisher {p} stopped early")),
                Err(e) => errors.push(format!("publisher {p}: {e}")),
            }
            *t = tokio::spawn(async { Ok(()) });
        }
    }
    if c.durable.is_finished() {
        match (&mut c.durable).await {
            Ok(Err(e)) => errors.push(format!("durable: {e:#}")),
            Ok(Ok(())) => errors.push("durable stopped early".into()),
            Err(e) => errors.push(format!("durable: {e}")),
        }
        c.durable = tokio::spawn(async { Ok(()) });
    }
}

fn args_for(a: &SoakArgs, store: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = ["-cid", &a.cluster, "-st", "FILE", "--dir"]
        .map(String::from)
        .to_vec();
    v.push(store.display().to_string());
    v.extend(
        [
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "-m",
            "-1",
            "-hbi",
            "2s",
            "-hbt",
            "1s",
            "-hbf",
            "3",
            "-mm",
        ]
        .map(String::from),
    );
    v.push(a.max_msgs.to_string());
    v.extend(a.server_arg.iter().cloned());
    v
}

/// Runs the soak and prints the report; Ok(true) when it passed.
pub async fn run(a: &SoakArgs) -> anyhow::Result<bool> {
    let (work, temp) = match &a.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("rnats-soak-stan.{}", nuid::next())),
            true,
        ),
    };
    std::fs::create_dir_all(&work)?;
    let store = work.join("store");
    let args = args_for(a, &store);
    let wait = Duration::from_secs(30);
    let ledger = Arc::new(Ledger::new(a.publishers));
    let channels: Vec<String> = (0..a.channels.max(1))
        .map(|c| format!("soak.{c}"))
        .collect();
    let tol = Tolerance {
        rss_pct: a.rss_pct,
        rss_floor_kib: (a.rss_mib * 1024.0) as u64,
        fds: a.fds,
    };
    let start = Instant::now();
    let end = Duration::from_secs_f64(a.duration);
    let every = Duration::from_secs_f64(a.sample.max(0.5));
    let warmup = Duration::from_secs_f64(a.warmup);
    let mut samples: Vec<Sample> = Vec::new();
    let mut starts: Vec<Duration> = Vec::new();
    let mut restarts: Vec<(bool, Duration, bool)> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut incarnation = 0u32;
    eprintln!(
        "soak: {} s of load, restarts every {} s, work dir {}",
        a.duration,
        a.restart_every,
        work.display()
    );
    let mut srv = server::start(&a.server_bin, &args, work.join("server.1.log"), wait).await?;
    loop {
        starts.push(start.elapsed());
        let mut c = start_clients(a, &srv.addr, &channels, &ledger);
        let seg_end = if a.restart_every > 0.0 {
            end.min(start.elapsed() + Duration::from_secs_f64(a.restart_every))
        } else {
            end
        };
        while start.elapsed() < seg_end {
            let (rss_kib, fds) = sample::proc_sample(srv.pid())?;
            let counters = sample::counters(&srv.monitor, "/streaming/serverz", SERVERZ).await;
            let s = Sample {
                at: start.elapsed(),
                rss_kib,
                fds,
                counters,
                incarnation,
            };
            eprint!(
                "soak: {}",
                sample::table(std::slice::from_ref(&s), warmup)
                    .lines()
                    .nth(1)
                    .unwrap_or_default()
            );
            eprintln!(
                "  acked={} durable={} churn={}",
                ledger.acked_total(),
                ledger.durable_total(),
                ledger.churn_ok.load(Ordering::Relaxed)
            );
            samples.push(s);
            reap_early(&mut c, &mut errors).await;
            let left = seg_end.saturating_sub(start.elapsed());
            tokio::time::sleep(every.min(left)).await;
        }
        if start.elapsed() >= end {
            break finish(
                a,
                &mut srv,
                c,
                &ledger,
                &mut errors,
                &mut samples,
                incarnation,
                start,
                warmup,
                &starts,
                &restarts,
                &tol,
                &work,
                temp,
            )
            .await;
        }
        // Restart under load: the churn first (so that its failures are all real), then the
        // server, then the clients its end broke.
        let kill = restarts.len() % 2 == 1;
        let _ = c.churn_stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(25), c.churn).await;
        let stopped_in_time = server::stop(&mut srv, kill, Duration::from_secs(15)).await?;
        let _ = c.pub_stop.send(true);
        let _ = c.dur_stop.send(true);
        for t in c.publishers {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), c.durable).await;
        incarnation += 1;
        let t0 = Instant::now();
        let log = work.join(format!("server.{}.log", incarnation + 1));
        srv = server::start(&a.server_bin, &args, log, wait).await?;
        restarts.push((kill, t0.elapsed(), stopped_in_time));
        eprintln!(
            "soak: restart {} ({}) ready in {:?}",
            restarts.len(),
            if kill { "SIGKILL" } else { "SIGTERM" },
            t0.elapsed()
        );
    }
}

/// The end of the run: publishers stop, the durable catches up, everybody leaves, the
/// report.
#[allow(clippy::too_many_arguments)]
async fn finish(
    a: &SoakArgs,
    srv: &mut server::Server,
    c: Clients,
    ledger: &Ledger,
    errors: &mut Vec<String>,
    samples: &mut [Sample],
    incarnation: u32,
    start: Instant,
    warmup: Duration,
    starts: &[Duration],
    restarts: &[(bool, Duration, bool)],
    tol: &Tolerance,
    work: &std::path::Path,
    temp: bool,
) -> anyhow::Result<bool> {
    let _ = c.churn_stop.send(true);
    let _ = c.pub_stop.send(true);
    for (p, t) in c.publishers.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(20), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => errors.push(format!("publisher {p} at the end: {e:#}")),
            _ => errors.push(format!("publisher {p} did not stop")),
        }
    }
    // The durable catches up with everything acknowledged (or makes no progress for 15 s).
    let missing = || -> u64 {
        ledger
            .acked
            .iter()
            .zip(&ledger.durable)
            .map(|(acked, got)| acked.lock().missing_from(&got.lock()).0)
            .sum()
    };
    let mut last = (missing(), Instant::now());
    while last.0 > 0 && last.1.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = missing();
        if m != last.0 {
            last = (m, Instant::now());
        }
    }
    let _ = c.dur_stop.send(true);
    match tokio::time::timeout(Duration::from_secs(20), c.durable).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => errors.push(format!("durable at the end: {e:#}")),
        _ => errors.push("durable did not stop".into()),
    }
    let _ = tokio::time::timeout(Duration::from_secs(25), c.churn).await;
    // Everybody has gone; dropped clients go when their heartbeats fail.
    let deadline = Instant::now() + Duration::from_secs(40);
    let left = loop {
        let counters = sample::counters(&srv.monitor, "/streaming/serverz", &["clients"]).await;
        let clients = counters.first().map_or(-1, |c| c.1);
        if clients == 0 || Instant::now() > deadline {
            break clients;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (rss_after, fds_after) = sample::proc_sample(srv.pid())?;
    server::stop(srv, false, Duration::from_secs(15)).await?;

    // The report.
    let mut fail = errors.clone();
    println!(
        "== rnats-stream-bench soak: {:.0} s, {} restarts, warm-up {:.0} s, settle {:.0} s ==",
        a.duration,
        restarts.len(),
        a.warmup,
        a.settle
    );
    print!("{}", sample::table(samples, warmup));
    // Steady: after the warm-up and after each start has settled.
    let settle = Duration::from_secs_f64(a.settle);
    let steady: Vec<Sample> = samples
        .iter()
        .filter(|s| s.at >= warmup && s.at >= starts[s.incarnation as usize].saturating_add(settle))
        .cloned()
        .collect();
    match sample::growth(&steady, Duration::ZERO, tol) {
        Some((rss, fds)) => {
            println!(
                "{} (over {} steady samples)",
                sample::growth_line("RSS", &rss, true),
                steady.len()
            );
            println!("{}", sample::growth_line("fds", &fds, false));
            if !rss.ok() {
                fail.push("RSS grew beyond the tolerance".into());
            }
            if !fds.ok() {
                fail.push("open fds grew beyond the tolerance".into());
            }
        }
        None => fail.push(format!(
            "too few steady samples to judge growth ({}, need 6): run longer or restart less often",
            steady.len()
        )),
    }
    println!(
        "after all clients left: RSS {:.1} MiB, fds {fds_after}",
        rss_after as f64 / 1024.0
    );
    for (i, (kill, ready, in_time)) in restarts.iter().enumerate() {
        println!(
            "restart {}: {}{}, ready again in {:.2} s",
            i + 1,
            if *kill { "SIGKILL" } else { "SIGTERM" },
            if *kill || *in_time {
                ""
            } else {
                " (did not exit in 15 s: killed)"
            },
            ready.as_secs_f64()
        );
        if !*kill && !*in_time {
            fail.push(format!(
                "restart {}: SIGTERM did not stop the server in 15 s",
                i + 1
            ));
        }
    }
    let acked = ledger.acked_total();
    println!(
        "published: {acked} acknowledged by the server, {} ack errors, {} answered 'no responders' (server stopping)",
        ledger.ack_errors.load(Ordering::Relaxed),
        ledger.no_responders.load(Ordering::Relaxed)
    );
    for (text, n) in ledger.ack_error_texts.lock().iter() {
        println!("  {n} x {text:?}");
    }
    if ledger.ack_errors.load(Ordering::Relaxed) > 0 {
        fail.push("some publishes were answered with an error".into());
    }
    println!(
        "durable: {} deliveries, {} distinct, {} repeats (redelivered after a restart), resumed {} times",
        ledger.durable_received.load(Ordering::Relaxed),
        ledger.durable_total(),
        ledger.durable_repeats.load(Ordering::Relaxed),
        ledger.durable_resumes.load(Ordering::Relaxed)
    );
    for (p, (acked, got)) in ledger.acked.iter().zip(&ledger.durable).enumerate() {
        let (n, first) = acked.lock().missing_from(&got.lock());
        if n > 0 {
            println!("  publisher {p}: {n} acknowledged messages never delivered, e.g. {first:?}");
            fail.push(format!("publisher {p}: {n} acknowledged messages lost"));
        }
    }
    let (ok, failed) = (
        ledger.churn_ok.load(Ordering::Relaxed),
        ledger.churn_failed.load(Ordering::Relaxed),
    );
    println!("churn: {ok} short-lived clients, {failed} failed");
    for (why, n) in ledger.churn_error_texts.lock().iter() {
        println!("  {n} × {why}");
    }
    if failed > 0 {
        fail.push(format!("churn: {failed} short-lived clients failed"));
    }
    println!(
        "at the end: {left} clients left on the server (server #{})",
        incarnation + 1
    );
    if left != 0 {
        fail.push(format!("{left} clients left behind"));
    }
    println!(
        "tolerance: RSS +{}% or +{} MiB, fds +{}",
        a.rss_pct, a.rss_mib, a.fds
    );
    println!(
        "load: {} publishers x {} msgs/s, {} channels, churn {}/s; took {:.0} s",
        a.publishers,
        a.rate,
        a.channels,
        a.churn_rate,
        start.elapsed().as_secs_f64()
    );
    if fail.is_empty() {
        println!("SOAK PASS");
        if temp {
            let _ = std::fs::remove_dir_all(work);
        }
        Ok(true)
    } else {
        for f in &fail {
            println!("SOAK FAIL: {f}");
        }
        println!("work directory kept: {}", work.display());
        Ok(false)
    }
}
