//! `rnats-bench soak`: mixed load on a core NATS server for a set time while its memory and
//! file descriptors are sampled, then a verdict: no growth after the warm-up beyond a stated
//! tolerance, nothing lost by the healthy clients, nothing left behind once every client
//! has gone. `rnats-bench subs-flood` (in `flood`): a million subscriptions on one
//! connection. Both drive a server started by the caller (bench/soak-core.sh).
//!
//! The load ([`load`]): publishers at a steady rate fanned out to plain subscribers, a queue
//! group, request/reply with a per-request timeout, short-lived clients connecting and
//! dropping (half of them abruptly), and a slow consumer now and then that never reads. The
//! healthy receivers are exact: each plain subscriber must get every message published
//! (a final PING/PONG per publisher makes that count exact), the queue group every queue
//! message exactly once between its members, every request its reply.
//!
//! The samples ([`sample`]): `/proc/<pid>` (RSS, fds) and, with `--monitor`, `/varz`
//! (connections, subscriptions, slow consumers). At the end the server must come back to no
//! connections and no subscriptions.

pub mod flood;
pub mod load;
pub mod sample;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::load::{Counters, LIMIT, Tally};
use self::sample::{Sample, Tolerance};
use crate::proto::Conn;

/// `rnats-bench soak` options.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub server: String,
    /// The server's process ID (its /proc entry is sampled).
    #[arg(long)]
    pub pid: u32,
    /// The server's monitoring address (host:port): /varz counters in the samples, and the
    /// end-of-run check that no connection or subscription is left.
    #[arg(long)]
    pub monitor: Option<String>,
    /// Seconds of load.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Seconds before the growth baseline is taken.
    #[arg(long, default_value_t = 20.0)]
    pub warmup: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5.0)]
    pub sample: f64,
    /// Publishers, each on its own subject soak.ps.<i>.
    #[arg(long, default_value_t = 2)]
    pub pubs: usize,
    /// Plain subscribers to soak.ps.> (each must receive every message).
    #[arg(long, default_value_t = 2)]
    pub subs: usize,
    /// Messages per second per publisher.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Payload bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Members of the queue group on soak.q (together they must receive each message once).
    #[arg(long, default_value_t = 3)]
    pub queue_members: usize,
    /// Messages per second to the queue group.
    #[arg(long, default_value_t = 1000.0)]
    pub queue_rate: f64,
    /// Responders (one queue group) on soak.rr.
    #[arg(long, default_value_t = 2)]
    pub responders: usize,
    /// Requesters, each sequential.
    #[arg(long, default_value_t = 2)]
    pub requesters: usize,
    /// Requests per second per requester.
    #[arg(long, default_value_t = 50.0)]
    pub req_rate: f64,
    /// Short-lived clients per second.
    #[arg(long, default_value_t = 20.0)]
    pub churn_rate: f64,
    /// Seconds between slow consumers (0: none).
    #[arg(long, default_value_t = 15.0)]
    pub slow_every: f64,
    /// Seconds a slow consumer goes without reading before it checks it was cut off.
    #[arg(long, default_value_t = 30.0)]
    pub slow_life: f64,
    /// Allowed RSS growth after the warm-up, % of the baseline ...
    #[arg(long, default_value_t = 10.0)]
    pub rss_pct: f64,
    /// ... or this many MiB, whichever is larger.
    #[arg(long, default_value_t = 4.0)]
    pub rss_mib: f64,
    /// Allowed growth of open file descriptors.
    #[arg(long, default_value_t = 20)]
    pub fds: u64,
    /// Seconds without progress before the receivers are considered drained.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
}

impl SoakArgs {
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            rss_pct: self.rss_pct,
            rss_floor_kib: (self.rss_mib * 1024.0) as u64,
            fds: self.fds,
        }
    }
}

const VARZ: &[&str] = &["connections", "subscriptions", "slow_consumers"];

/// Takes one sample of the server (and its `/varz` counters with a monitor).
pub async fn take_sample(
    pid: u32,
    monitor: Option<&str>,
    path: &str,
    names: &[&'static str],
    at: Duration,
) -> Result<Sample> {
    let (rss_kib, fds) = sample::proc_sample(pid)?;
    let counters = match monitor {
        Some(m) => sample::counters(m, path, names).await,
        None => Vec::new(),
    };
    Ok(Sample {
        at,
        rss_kib,
        fds,
        counters,
        incarnation: 0,
    })
}

/// What each group of receivers got.
struct Receivers {
    subs: Vec<Arc<Tally>>,
    queue: Vec<Arc<Tally>>,
    tasks: Vec<JoinHandle<Result<()>>>,
    responders: Vec<JoinHandle<Result<u64>>>,
}

/// Runs the soak; prints the samples as they come (stderr) and the report (stdout).
/// Ok(true) when it passed.
pub async fn run(a: &SoakArgs) -> Result<bool> {
    let addr = a.server.clone();
    let (stop_tx, stop) = watch::channel(false);
    let (recv_stop_tx, recv_stop) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    let mut errors: Vec<String> = Vec::new();

    // Receivers first, so that nothing published is missed.
    let mut rx = Receivers {
        subs: Vec::new(),
        queue: Vec::new(),
        tasks: Vec::new(),
        responders: Vec::new(),
    };
    for i in 0..a.subs {
        let conn = load::subscribed(&addr, &["soak.ps.> 1".to_string()]).await?;
        let t = Arc::new(Tally::default());
        rx.subs.push(t.clone());
        rx.tasks.push(tokio::spawn(load::subscriber(
            conn,
            format!("subscriber {i}"),
            t,
            recv_stop.clone(),
        )));
    }
    for i in 0..a.queue_members {
        let conn = load::subscribed(&addr, &["soak.q soak-q 1".to_string()]).await?;
        let t = Arc::new(Tally::default());
        rx.queue.push(t.clone());
        rx.tasks.push(tokio::spawn(load::subscriber(
            conn,
            format!("queue member {i}"),
            t,
            recv_stop.clone(),
        )));
    }
    for _ in 0..a.responders {
        let conn = load::subscribed(&addr, &["soak.rr soak-rr 1".to_string()]).await?;
        rx.responders
            .push(tokio::spawn(load::responder(conn, recv_stop.clone())));
    }

    // Then the load.
    let mut requesters = Vec::new();
    for i in 0..a.requesters {
        let inbox = format!("soak.reply.{i}");
        let conn = load::subscribed(&addr, &[format!("{inbox} 1")]).await?;
        requesters.push(tokio::spawn(load::requester(
            conn,
            "soak.rr".into(),
            inbox,
            a.req_rate,
            counters.clone(),
            stop.clone(),
        )));
    }
    let mut publishers = Vec::new();
    let mut published = Vec::new();
    for i in 0..=a.pubs {
        // The last one feeds the queue group.
        let (subject, rate) = if i < a.pubs {
            (format!("soak.ps.{i}"), a.rate)
        } else {
            ("soak.q".to_string(), a.queue_rate)
        };
        let conn = Conn::connect(&addr, LIMIT, None).await?;
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        published.push(count.clone());
        publishers.push(tokio::spawn(load::publisher(
            conn,
            subject,
            rate,
            a.size,
            count,
            stop.clone(),
        )));
    }
    let churn = tokio::spawn(load::churn(
        addr.clone(),
        a.churn_rate,
        "soak.ps.>".into(),
        counters.clone(),
        stop.clone(),
    ));
    let slow = tokio::spawn(load::slow_consumers(
        addr.clone(),
        "soak.ps.>".into(),
        Duration::from_secs_f64(a.slow_every),
        Duration::from_secs_f64(a.slow_life),
        counters.clone(),
        stop.clone(),
    ));

    // Sample until the end.
    let start = Instant::now();
    let warmup = Duration::from_secs_f64(a.warmup);
    let every = Duration::from_secs_f64(a.sample.max(0.5));
    let mut samples = Vec::new();
    let mut next = start;
    eprintln!(
        "soak: {}s of load on {addr}, samples every {every:?}",
        a.duration
    );
    while start.elapsed() < Duration::from_secs_f64(a.duration) {
        let s = take_sample(a.pid, a.monitor.as_deref(), "/varz", VARZ, start.elapsed()).await?;
        eprint!(
            "soak: {}",
            sample::table(std::slice::from_ref(&s), warmup)
                .lines()
                .nth(1)
                .unwrap_or_default()
        );
        eprintln!(
            "  pubsub={} requests={} churn={} slow={}",
            published
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .sum::<u64>(),
            counters.requests.load(Ordering::Relaxed),
            counters.churn_connects.load(Ordering::Relaxed),
            counters.slow_opened.load(Ordering::Relaxed)
        );
        samples.push(s);
        next += every;
        tokio::time::sleep_until(next).await;
    }

    // Stop the load; the publishers' counts are final once each has had its PONG.
    let _ = stop_tx.send(true);
    let mut sent = Vec::new();
    for (i, p) in publishers.into_iter().enumerate() {
        match p.await? {
            Ok(n) => sent.push(n),
            Err(e) => {
                errors.push(format!("publisher {i}: {e:#}"));
                sent.push(published[i].load(Ordering::Relaxed));
            }
        }
    }
    for (i, r) in requesters.into_iter().enumerate() {
        if let Err(e) = r.await? {
            errors.push(format!("requester {i}: {e:#}"));
        }
    }
    let _ = tokio::time::timeout(LIMIT, churn).await;
    let _ = tokio::time::timeout(LIMIT, slow).await;
    let pubsub_sent: u64 = sent[..a.pubs].iter().sum();
    let queue_sent = sent[a.pubs];

    // Let the receivers drain: until each has its due, or no progress for --drain seconds.
    let total =
        |v: &[Arc<Tally>]| -> u64 { v.iter().map(|t| t.received.load(Ordering::Relaxed)).sum() };
    let done = |rx: &Receivers| {
        rx.subs
            .iter()
            .all(|t| t.received.load(Ordering::Relaxed) >= pubsub_sent)
            && total(&rx.queue) >= queue_sent
    };
    let mut last = (total(&rx.subs), total(&rx.queue));
    let mut progress_at = Instant::now();
    while !done(&rx) && progress_at.elapsed() < Duration::from_secs_f64(a.drain) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = (total(&rx.subs), total(&rx.queue));
        if now != last {
            last = now;
            progress_at = Instant::now();
        }
    }
    let _ = recv_stop_tx.send(true);
    for (i, t) in rx.tasks.into_iter().enumerate() {
        if let Err(e) = t.await? {
            errors.push(format!("receiver {i}: {e:#}"));
        }
    }
    let mut answered = 0;
    for (i, r) in rx.responders.into_iter().enumerate() {
        match r.await? {
            Ok(n) => answered += n,
            Err(e) => errors.push(format!("responder {i}: {e:#}")),
        }
    }

    // Every client is gone: the server must be back to nothing.
    let mut leftover = None;
    if let Some(m) = &a.monitor {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let c = sample::counters(m, "/varz", &["connections", "subscriptions"]).await;
            let get = |n| c.iter().find(|(k, _)| *k == n).map_or(-1, |(_, v)| *v);
            let (conns, subs) = (get("connections"), get("subscriptions"));
            if (conns, subs) == (0, 0) || Instant::now() > deadline {
                leftover = Some((conns, subs));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let after = take_sample(a.pid, None, "", &[], start.elapsed()).await?;

    // The report.
    let tol = a.tolerance();
    let mut fail = errors.clone();
    println!(
        "== rnats-bench soak: {addr}, {:.0} s, warm-up {:.0} s ==",
        a.duration, a.warmup
    );
    print!("{}", sample::table(&samples, warmup));
    match sample::growth(&samples, warmup, &tol) {
        Some((rss, fds)) => {
            println!("{}", sample::growth_line("RSS", &rss, true));
            println!("{}", sample::growth_line("fds", &fds, false));
            if !rss.ok() {
                fail.push("RSS grew beyond the tolerance".into());
            }
            if !fds.ok() {
                fail.push("open fds grew beyond the tolerance".into());
            }
        }
        None => fail.push("too few samples after the warm-up to judge growth (need 6)".into()),
    }
    println!(
        "after all clients left: RSS {:.1} MiB, fds {}",
        after.rss_kib as f64 / 1024.0,
        after.fds
    );
    println!(
        "pub/sub: {} publishers, {pubsub_sent} messages; each of {} subscribers must get all of them",
        a.pubs, a.subs
    );
    for (i, t) in rx.subs.iter().enumerate() {
        let got = t.received.load(Ordering::Relaxed);
        let disorder = t.out_of_order.load(Ordering::Relaxed);
        println!("  subscriber {i}: {got} received, out of order {disorder}");
        if got != pubsub_sent || disorder > 0 {
            fail.push(format!(
                "subscriber {i}: {got} of {pubsub_sent} ({} lost), {disorder} out of order",
                pubsub_sent as i64 - got as i64
            ));
        }
    }
    let q = total(&rx.queue);
    let per_member: Vec<String> = rx
        .queue
        .iter()
        .map(|t| t.received.load(Ordering::Relaxed).to_string())
        .collect();
    println!(
        "queue group: {queue_sent} published, {q} received ({})",
        per_member.join(" + ")
    );
    if q != queue_sent {
        fail.push(format!("queue group: {q} received of {queue_sent}"));
    }
    let (req, rep, lost) = (
        counters.requests.load(Ordering::Relaxed),
        counters.replies.load(Ordering::Relaxed),
        counters.lost_replies.load(Ordering::Relaxed),
    );
    println!(
        "request/reply: {req} requests, {rep} replies, {lost} lost, slowest {:.1} ms ({answered} answered)",
        counters.worst_rtt_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    if lost > 0 {
        fail.push(format!("request/reply: {lost} replies lost"));
    }
    let (cc, cf) = (
        counters.churn_connects.load(Ordering::Relaxed),
        counters.churn_failures.load(Ordering::Relaxed),
    );
    println!("churn: {cc} short-lived clients, {cf} failed");
    if cf > 0 {
        fail.push(format!(
            "churn: {cf} clients failed to connect or subscribe"
        ));
    }
    println!(
        "slow consumers: {} opened, {} cut off by the server, {} still open after {:.0} s",
        counters.slow_opened.load(Ordering::Relaxed),
        counters.slow_cut_off.load(Ordering::Relaxed),
        counters.slow_survived.load(Ordering::Relaxed),
        a.slow_life
    );
    if let Some((conns, subs)) = leftover {
        println!("at the end: {conns} connections, {subs} subscriptions left on the server");
        if (conns, subs) != (0, 0) {
            fail.push(format!(
                "left behind: {conns} connections, {subs} subscriptions"
            ));
        }
    }
    println!(
        "tolerance: RSS +{}% or +{} MiB, fds +{}",
        a.rss_pct, a.rss_mib, a.fds
    );
    if fail.is_empty() {
        println!("SOAK PASS");
        Ok(true)
    } else {
        for f in &fail {
            println!("SOAK FAIL: {f}");
        }
        Ok(false)
    }
}
