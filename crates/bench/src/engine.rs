//! The scenarios: throughput (`pub`, `pubsub`, `queue`) and request/reply latency (`reqrep`).
//!
//! Each publisher, subscriber, requester and responder is its own tokio task with its own
//! connection. Publishers write pre-encoded `PUB` batches; subscribers parse `MSG`s in place and
//! only count them. Every wait is bounded by [`Config::timeout`] without progress, so a run
//! never hangs: it ends with the counts so far and an error in the report.
//!
//! Callers may pass a [`Progress`] to watch the counters while the run goes on (the `rnats
//! bench` progress bars do).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::{BufMut, BytesMut};
use hdrhistogram::Histogram;
use rnats_client::ConnectOptions;
use tokio::io::AsyncReadExt;
use tokio::sync::{Barrier, watch};
use tokio::task::JoinHandle;

use crate::proto::{Conn, parse, put_pub};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Publishers only.
    Pub,
    /// Publishers and plain subscribers on one subject (fan-out: each gets everything).
    Pubsub,
    /// Publishers and subscribers in one queue group (the group gets everything once).
    Queue,
    /// Requesters doing sequential round trips to responders; latency in an HDR histogram.
    Reqrep,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Pub => "pub",
            Scenario::Pubsub => "pubsub",
            Scenario::Queue => "queue",
            Scenario::Reqrep => "reqrep",
        }
    }
}

/// One run's parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// `host:port`; with [`connect`](Self::connect) also a URL (`tls://host:port`).
    pub server: String,
    /// Another server of the same cluster for the subscribers (responders): the
    /// cross-server scenarios. `None`: everyone on `server`.
    pub sub_server: Option<String>,
    pub scenario: Scenario,
    /// Publisher connections (requesters for `reqrep`).
    pub pubs: usize,
    /// Subscriber connections (queue members for `queue`, responders for `reqrep`).
    pub subs: usize,
    /// Messages per publisher (measured round trips per requester), unless
    /// [`split_msgs`](Self::split_msgs).
    pub msgs: u64,
    /// `msgs` is the total, shared among the publishers (the first ones get the remainder),
    /// as natscli counts.
    pub split_msgs: bool,
    /// Payload size in bytes.
    pub size: usize,
    /// Subject to publish on (`reqrep` uses SUBJECT.req).
    pub subject: String,
    /// Queue group (`queue`; `reqrep` with more than one responder).
    pub queue_group: String,
    /// Bytes of PUBs per socket write.
    pub batch: usize,
    /// Pause after each message a publisher sends (natscli's `--pubsleep`): a batch of `k`
    /// messages is followed by `k` times this. Zero: as fast as possible.
    pub pub_sleep: Duration,
    /// Give up after this long without any progress (also bounds connects).
    pub timeout: Duration,
    /// Unmeasured round trips per requester before the measured ones (`reqrep`).
    pub warmup: u64,
    /// TLS and credentials: the handshake is then rnats-client's. `None`: the tool's own
    /// minimal plain-TCP handshake.
    pub connect: Option<ConnectOptions>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: "127.0.0.1:4222".into(),
            sub_server: None,
            scenario: Scenario::Pubsub,
            pubs: 1,
            subs: 1,
            msgs: 100_000,
            split_msgs: false,
            size: 16,
            subject: "bench".into(),
            queue_group: "bench-q".into(),
            batch: 64 * 1024,
            pub_sleep: Duration::ZERO,
            timeout: Duration::from_secs(10),
            warmup: 1000,
            connect: None,
        }
    }
}

impl Config {
    /// Subscriber-side connections this scenario uses (0 for `pub`).
    pub fn sub_count(&self) -> usize {
        if self.scenario == Scenario::Pub {
            0
        } else {
            self.subs
        }
    }

    /// Messages (round trips) of publisher `i`.
    pub fn msgs_of(&self, i: usize) -> u64 {
        if !self.split_msgs {
            return self.msgs;
        }
        let n = self.pubs.max(1) as u64;
        self.msgs / n + u64::from((i as u64) < self.msgs % n)
    }

    /// Messages of all publishers together.
    pub fn total_msgs(&self) -> u64 {
        (0..self.pubs).map(|i| self.msgs_of(i)).sum()
    }

    /// Messages the subscriber side must receive for a clean run (`reqrep`: replies).
    pub fn expected(&self) -> u64 {
        match self.scenario {
            Scenario::Pub => 0,
            Scenario::Pubsub => self.total_msgs() * self.subs as u64,
            Scenario::Queue | Scenario::Reqrep => self.total_msgs(),
        }
    }
}

/// Live counters of a run, one per publisher (requester) and per subscriber (responder).
#[derive(Debug)]
pub struct Progress {
    pub published: Vec<AtomicU64>,
    pub received: Vec<AtomicU64>,
    /// Set when the measured phase starts (after connects and warm-up).
    pub started: AtomicBool,
}

impl Progress {
    pub fn new(cfg: &Config) -> Progress {
        Progress {
            published: (0..cfg.pubs).map(|_| AtomicU64::new(0)).collect(),
            received: (0..cfg.sub_count()).map(|_| AtomicU64::new(0)).collect(),
            started: AtomicBool::new(false),
        }
    }

    pub fn published_total(&self) -> u64 {
        self.published
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn received_total(&self) -> u64 {
        self.received
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// What one client did: messages sent or received (replies answered, for responders) and the
/// time from the common start to its last message.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientStat {
    pub msgs: u64,
    pub elapsed: f64,
}

impl ClientStat {
    pub fn msgs_per_sec(&self) -> f64 {
        if self.elapsed > 0.0 {
            self.msgs as f64 / self.elapsed
        } else {
            0.0
        }
    }
}

/// Request/reply latency percentiles, in microseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn from_histogram(hist: &Histogram<u64>) -> Option<Latency> {
        if hist.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            count: hist.len(),
            p50: us(hist.value_at_quantile(0.50)),
            p90: us(hist.value_at_quantile(0.90)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
            mean: hist.mean() / 1000.0,
        })
    }
}

/// The outcome of a run.
#[derive(Default)]
pub struct Report {
    /// Seconds of the measured phase.
    pub elapsed: f64,
    pub published: u64,
    pub pub_msgs_per_sec: Option<f64>,
    pub expected: u64,
    pub received: u64,
    /// Messages each subscriber received (replies each responder sent).
    pub per_sub: Vec<u64>,
    /// The headline rate: received msgs/s (published for `pub`, round trips for `reqrep`).
    pub msgs_per_sec: f64,
    pub pub_stats: Vec<ClientStat>,
    pub sub_stats: Vec<ClientStat>,
    pub latency: Option<Latency>,
    /// Round-trip times in nanoseconds (`reqrep`).
    pub histogram: Option<Histogram<u64>>,
    pub errors: Vec<String>,
    pub timed_out: bool,
}

impl Report {
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    /// Nothing lost, no error.
    pub fn clean(&self) -> bool {
        self.lost() == 0 && self.errors.is_empty()
    }
}

/// Runs the scenario of `cfg`. `progress` (made with [`Progress::new`] for this `cfg`) is
/// updated as the run goes. An error means the run could not start (a connect failed);
/// trouble during the run is in [`Report::errors`].
pub async fn run(cfg: &Config, progress: Option<Arc<Progress>>) -> Result<Report> {
    if cfg.pubs == 0 {
        bail!("at least one publisher is needed");
    }
    if matches!(
        cfg.scenario,
        Scenario::Pubsub | Scenario::Queue | Scenario::Reqrep
    ) && cfg.subs == 0
    {
        bail!("at least one subscriber is needed");
    }
    let progress = progress.unwrap_or_else(|| Arc::new(Progress::new(cfg)));
    if progress.published.len() != cfg.pubs || progress.received.len() != cfg.sub_count() {
        bail!("progress counters do not match the configuration");
    }
    match cfg.scenario {
        Scenario::Pub | Scenario::Pubsub | Scenario::Queue => run_throughput(cfg, progress).await,
        Scenario::Reqrep => run_reqrep(cfg, progress).await,
    }
}

/// A payload of `size` bytes (`abc…`).
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

fn limit(cfg: &Config) -> Duration {
    cfg.timeout.max(Duration::from_millis(100))
}

async fn connect(cfg: &Config, what: &str) -> Result<Conn> {
    Conn::connect(&cfg.server, limit(cfg), cfg.connect.as_ref())
        .await
        .with_context(|| what.to_string())
}

async fn connect_sub(cfg: &Config, what: &str) -> Result<Conn> {
    let server = cfg.sub_server.as_deref().unwrap_or(&cfg.server);
    Conn::connect(server, limit(cfg), cfg.connect.as_ref())
        .await
        .with_context(|| what.to_string())
}

/// With subscribers on another server of a cluster, waits until the publishers' server
/// routes to them: a probe published there must reach a probe subscription made on the
/// subscribers' server after the bench subscriptions (interest crosses a route in order,
/// so theirs has arrived too).
async fn await_route_interest(cfg: &Config) -> Result<()> {
    let lim = limit(cfg);
    let probe = format!("{}.probe.{}", cfg.subject, std::process::id());
    let mut sub = connect_sub(cfg, "interest probe subscriber").await?;
    sub.flush_with(format!("SUB {probe} 1\r\n").as_bytes(), lim)
        .await?;
    let mut publ = connect(cfg, "interest probe publisher").await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        publ.flush_with(format!("PUB {probe} 0\r\n\r\n").as_bytes(), lim)
            .await?;
        let arrived = tokio::time::timeout(Duration::from_millis(50), async {
            loop {
                let mut seen = false;
                parse(&mut sub.buf, |_, _, _| seen = true)?;
                if seen {
                    return Ok::<(), anyhow::Error>(());
                }
                if sub.stream.read_buf(&mut sub.buf).await? == 0 {
                    bail!("probe connection closed");
                }
            }
        })
        .await;
        if let Ok(result) = arrived {
            return result;
        }
        if Instant::now() > deadline {
            bail!("the publishers' server never routed to the subscribers' server (10 s)");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Throughput scenarios

struct PubDone {
    sent: u64,
    done: Instant,
}

struct SubDone {
    received: u64,
    last: Option<Instant>,
    error: Option<String>,
}

async fn run_throughput(cfg: &Config, progress: Arc<Progress>) -> Result<Report> {
    let lim = limit(cfg);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_flag = Arc::new(AtomicBool::new(false));

    // Subscribers first, each confirmed by PING/PONG after its SUB.
    let mut sub_tasks: Vec<JoinHandle<SubDone>> = Vec::new();
    let total_pub = cfg.total_msgs();
    let subs = cfg.sub_count();
    for i in 0..subs {
        let mut conn = connect_sub(cfg, &format!("subscriber {i}")).await?;
        let sub = if cfg.scenario == Scenario::Queue {
            format!("SUB {} {} {}\r\n", cfg.subject, cfg.queue_group, i + 1)
        } else {
            format!("SUB {} {}\r\n", cfg.subject, i + 1)
        };
        conn.flush_with(sub.as_bytes(), lim)
            .await
            .with_context(|| format!("subscriber {i}: SUB"))?;
        let target = (cfg.scenario == Scenario::Pubsub).then_some(total_pub);
        sub_tasks.push(tokio::spawn(subscriber(
            conn,
            target,
            progress.clone(),
            i,
            stop_rx.clone(),
        )));
    }

    if cfg.sub_server.is_some() && subs > 0 {
        await_route_interest(cfg).await?;
    }

    // Publishers: connected and handshaken before the clock starts.
    let (start_tx, start_rx) = watch::channel(false);
    let batch = Arc::new(Batch {
        sleep: cfg.pub_sleep,
        ..build_batch(cfg.subject.as_bytes(), &payload(cfg.size), cfg.batch)
    });
    let mut pub_tasks: Vec<JoinHandle<Result<PubDone>>> = Vec::new();
    for i in 0..cfg.pubs {
        let conn = connect(cfg, &format!("publisher {i}")).await?;
        pub_tasks.push(tokio::spawn(publisher(
            conn,
            batch.clone(),
            cfg.msgs_of(i),
            progress.clone(),
            i,
            start_rx.clone(),
            stop_flag.clone(),
            lim,
        )));
    }

    let start = Instant::now();
    progress.started.store(true, Ordering::Relaxed);
    start_tx.send_replace(true);

    // Watch progress until everyone is done, or nothing moved for the timeout.
    let expected = cfg.expected();
    let mut last_sum = 0u64;
    let mut last_progress = Instant::now();
    let mut timed_out = false;
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let sent = progress.published_total();
        let recv = progress.received_total();
        let pubs_done = pub_tasks.iter().all(JoinHandle::is_finished);
        let subs_done = sub_tasks.iter().all(JoinHandle::is_finished)
            || (cfg.scenario == Scenario::Queue && recv >= expected);
        if pubs_done && subs_done {
            break;
        }
        let sum = sent + recv;
        if sum != last_sum {
            last_sum = sum;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > lim {
            timed_out = true;
            break;
        }
    }
    stop_flag.store(true, Ordering::Relaxed);
    stop_tx.send_replace(true);

    let mut report = Report {
        expected,
        timed_out,
        ..Report::default()
    };
    let since = |t: Instant| t.duration_since(start).as_secs_f64();
    let mut end = start;
    let mut pub_end = start;
    for (i, t) in pub_tasks.into_iter().enumerate() {
        let counted = progress.published[i].load(Ordering::Relaxed);
        let stat = match tokio::time::timeout(lim, t).await {
            Ok(Ok(Ok(done))) => {
                pub_end = pub_end.max(done.done);
                ClientStat {
                    msgs: done.sent,
                    elapsed: since(done.done),
                }
            }
            failed => {
                report.errors.push(match failed {
                    Ok(Ok(Err(e))) => format!("publisher {i}: {e:#}"),
                    Ok(Err(e)) => format!("publisher {i}: task: {e}"),
                    _ => format!("publisher {i}: did not finish"),
                });
                ClientStat {
                    msgs: counted,
                    elapsed: since(Instant::now()),
                }
            }
        };
        report.published += stat.msgs;
        report.pub_stats.push(stat);
    }
    for (i, t) in sub_tasks.into_iter().enumerate() {
        let stat = match tokio::time::timeout(lim, t).await {
            Ok(Ok(done)) => {
                if let Some(last) = done.last {
                    end = end.max(last);
                }
                if let Some(e) = done.error {
                    report.errors.push(format!("subscriber {i}: {e}"));
                }
                ClientStat {
                    msgs: done.received,
                    elapsed: done.last.map_or(0.0, since),
                }
            }
            failed => {
                report.errors.push(match failed {
                    Ok(Err(e)) => format!("subscriber {i}: task: {e}"),
                    _ => format!("subscriber {i}: did not stop"),
                });
                ClientStat {
                    msgs: progress.received[i].load(Ordering::Relaxed),
                    elapsed: since(Instant::now()),
                }
            }
        };
        report.received += stat.msgs;
        report.per_sub.push(stat.msgs);
        report.sub_stats.push(stat);
    }
    if timed_out {
        report.errors.push(format!(
            "no progress for {:.1}s: gave up",
            lim.as_secs_f64()
        ));
    }
    let pub_elapsed = since(pub_end);
    if pub_elapsed > 0.0 {
        report.pub_msgs_per_sec = Some(report.published as f64 / pub_elapsed);
    }
    if cfg.scenario == Scenario::Pub {
        report.elapsed = pub_elapsed;
        report.msgs_per_sec = report.pub_msgs_per_sec.unwrap_or(0.0);
    } else {
        report.elapsed = since(end);
        if report.elapsed > 0.0 {
            report.msgs_per_sec = report.received as f64 / report.elapsed;
        }
    }
    Ok(report)
}

/// As many whole `PUB`s as fit in `batch_bytes` (at least one), and how many that is.
struct Batch {
    bytes: Vec<u8>,
    msg_len: usize,
    per_batch: u64,
    /// Pause per message sent (see [`Config::pub_sleep`]).
    sleep: Duration,
}

/// The length of one encoded `PUB` of `size` bytes to `subject` (for a batch size given in
/// messages).
pub fn pub_len(subject: &str, size: usize) -> usize {
    let mut one = BytesMut::new();
    put_pub(&mut one, subject.as_bytes(), None, &payload(size));
    one.len()
}

fn build_batch(subject: &[u8], payload: &[u8], batch_bytes: usize) -> Batch {
    let mut one = BytesMut::new();
    put_pub(&mut one, subject, None, payload);
    let per_batch = (batch_bytes / one.len()).max(1);
    let mut bytes = Vec::with_capacity(per_batch * one.len());
    for _ in 0..per_batch {
        bytes.extend_from_slice(&one);
    }
    Batch {
        bytes,
        msg_len: one.len(),
        per_batch: per_batch as u64,
        sleep: Duration::ZERO,
    }
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    mut conn: Conn,
    batch: Arc<Batch>,
    count: u64,
    progress: Arc<Progress>,
    index: usize,
    mut start: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    lim: Duration,
) -> Result<PubDone> {
    start
        .wait_for(|s| *s)
        .await
        .map_err(|_| anyhow!("start signal lost"))?;
    let sent = &progress.published[index];
    let mut left = count;
    let mut done = 0u64;
    while left > 0 {
        if stop.load(Ordering::Relaxed) {
            bail!("stopped after {done} of {count} messages");
        }
        let k = left.min(batch.per_batch);
        let bytes = &batch.bytes[..k as usize * batch.msg_len];
        tokio::time::timeout(lim, conn.send(bytes))
            .await
            .map_err(|_| anyhow!("write blocked for {lim:?} after {done} messages"))?
            .with_context(|| format!("write after {done} messages"))?;
        left -= k;
        done += k;
        sent.store(done, Ordering::Relaxed);
        if !batch.sleep.is_zero() && left > 0 {
            tokio::time::sleep(batch.sleep * k as u32).await;
        }
    }
    // The PONG comes after the server has processed every PUB before the PING.
    conn.flush_with(b"", lim).await.context("final PING")?;
    Ok(PubDone {
        sent: done,
        done: Instant::now(),
    })
}

async fn subscriber(
    mut conn: Conn,
    target: Option<u64>,
    progress: Arc<Progress>,
    index: usize,
    mut stop: watch::Receiver<bool>,
) -> SubDone {
    let counter = &progress.received[index];
    let mut received = 0u64;
    let mut last = None;
    let mut error = None;
    loop {
        let mut got = 0u64;
        match parse(&mut conn.buf, |_, _, _| got += 1) {
            Ok(ev) => {
                if got > 0 {
                    received += got;
                    last = Some(Instant::now());
                    counter.store(received, Ordering::Relaxed);
                }
                if ev.pings > 0
                    && conn
                        .send(&b"PONG\r\n".repeat(ev.pings as usize))
                        .await
                        .is_err()
                {
                    error.get_or_insert_with(|| "write error".to_string());
                    break;
                }
                if let Some(e) = ev.err {
                    error.get_or_insert(e);
                }
            }
            Err(e) => {
                error = Some(format!("{e:#}"));
                break;
            }
        }
        if target.is_some_and(|t| received >= t) {
            break;
        }
        if conn.buf.capacity() - conn.buf.len() < 64 * 1024 {
            conn.buf.reserve(256 * 1024);
        }
        tokio::select! {
            biased;
            r = conn.stream.read_buf(&mut conn.buf) => match r {
                Ok(0) => {
                    let why = error.take().map_or(String::new(), |e| format!(" after {e}"));
                    error = Some(format!("connection closed by server{why} ({received} msgs received)"));
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    error = Some(format!("read error: {e} ({received} msgs received)"));
                    break;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    SubDone {
        received,
        last,
        error,
    }
}

// ---------------------------------------------------------------------------------------
// Request/reply latency

struct Requested {
    hist: Histogram<u64>,
    done: u64,
    start: Option<Instant>,
    end: Instant,
    failure: Option<(String, bool)>,
}

async fn run_reqrep(cfg: &Config, progress: Arc<Progress>) -> Result<Report> {
    let lim = limit(cfg);
    let req_subject = format!("{}.req", cfg.subject);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut responders = Vec::new();
    for i in 0..cfg.subs {
        let mut conn = connect(cfg, &format!("responder {i}")).await?;
        // One responder: a plain subscription; several: one queue group, each request
        // answered once.
        let sub = if cfg.subs == 1 {
            format!("SUB {req_subject} 1\r\n")
        } else {
            format!("SUB {req_subject} {} 1\r\n", cfg.queue_group)
        };
        conn.flush_with(sub.as_bytes(), lim)
            .await
            .with_context(|| format!("responder {i}: SUB"))?;
        responders.push(tokio::spawn(respond(
            conn,
            progress.clone(),
            i,
            stop_rx.clone(),
        )));
    }
    let payload = payload(cfg.size);
    let warm = Arc::new(Barrier::new(cfg.pubs + 1));
    let (go_tx, go_rx) = watch::channel(false);
    let mut requesters = Vec::new();
    for i in 0..cfg.pubs {
        let inbox = format!("_INBOX.bench.{}.{i}", std::process::id());
        let mut conn = connect(cfg, &format!("requester {i}")).await?;
        conn.flush_with(format!("SUB {inbox} 1\r\n").as_bytes(), lim)
            .await
            .with_context(|| format!("requester {i}: SUB"))?;
        let mut request = BytesMut::new();
        put_pub(
            &mut request,
            req_subject.as_bytes(),
            Some(inbox.as_bytes()),
            &payload,
        );
        requesters.push(tokio::spawn(request_loop(
            conn,
            request,
            cfg.warmup,
            cfg.msgs_of(i),
            progress.clone(),
            i,
            lim,
            warm.clone(),
            go_rx.clone(),
        )));
    }
    // Responders count only measured requests: the flag is up before any is sent.
    warm.wait().await;
    progress.started.store(true, Ordering::SeqCst);
    go_tx.send_replace(true);

    let mut report = Report {
        expected: cfg.total_msgs(),
        ..Report::default()
    };
    let mut hist = new_histogram()?;
    let mut first_start: Option<Instant> = None;
    let mut last_end: Option<Instant> = None;
    let mut runs = Vec::new();
    for (i, t) in requesters.into_iter().enumerate() {
        // A requester bounds each round trip by the timeout: it ends on its own.
        match t.await {
            Ok(r) => {
                if let Some((f, timed_out)) = &r.failure {
                    report.errors.push(format!("requester {i}: {f}"));
                    report.timed_out |= timed_out;
                }
                hist.add(&r.hist).context("merging histograms")?;
                report.received += r.done;
                if let Some(s) = r.start {
                    first_start = Some(first_start.map_or(s, |f| f.min(s)));
                    last_end = Some(last_end.map_or(r.end, |e| e.max(r.end)));
                }
                runs.push((r.start, r.end, r.done));
            }
            Err(e) => {
                report.errors.push(format!("requester {i}: task: {e}"));
                runs.push((None, Instant::now(), 0));
            }
        }
    }
    stop_tx.send_replace(true);
    let origin = first_start.unwrap_or_else(Instant::now);
    for (start, end, done) in runs {
        report.pub_stats.push(ClientStat {
            msgs: done,
            elapsed: start.map_or(0.0, |s| end.duration_since(s).as_secs_f64()),
        });
    }
    report.elapsed = match (first_start, last_end) {
        (Some(s), Some(e)) => e.duration_since(s).as_secs_f64(),
        _ => 0.0,
    };
    report.published = report.received;
    for (i, t) in responders.into_iter().enumerate() {
        let answered = match tokio::time::timeout(lim, t).await {
            Ok(Ok(Ok((n, last)))) => (n, last),
            failed => {
                report.errors.push(match failed {
                    Ok(Ok(Err(e))) => format!("responder {i}: {e:#}"),
                    Ok(Err(e)) => format!("responder {i}: task: {e}"),
                    _ => format!("responder {i}: did not stop"),
                });
                (progress.received[i].load(Ordering::Relaxed), None)
            }
        };
        report.per_sub.push(answered.0);
        report.sub_stats.push(ClientStat {
            msgs: answered.0,
            elapsed: answered
                .1
                .map_or(0.0, |l| l.saturating_duration_since(origin).as_secs_f64()),
        });
    }
    if report.elapsed > 0.0 {
        report.msgs_per_sec = report.received as f64 / report.elapsed;
        report.pub_msgs_per_sec = Some(report.msgs_per_sec);
    }
    report.latency = Latency::from_histogram(&hist);
    report.histogram = Some(hist);
    Ok(report)
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).context("histogram")
}

#[allow(clippy::too_many_arguments)]
async fn request_loop(
    mut conn: Conn,
    request: BytesMut,
    warmup: u64,
    msgs: u64,
    progress: Arc<Progress>,
    index: usize,
    lim: Duration,
    warm: Arc<Barrier>,
    mut go: watch::Receiver<bool>,
) -> Requested {
    let mut r = Requested {
        hist: new_histogram().expect("valid histogram bounds"),
        done: 0,
        start: None,
        end: Instant::now(),
        failure: None,
    };
    for i in 0..warmup {
        if let Err(f) = trip(&mut conn, &request, lim, i).await {
            r.failure = Some(f);
            break;
        }
    }
    // Everyone warmed up, then the measured phase starts for all at once.
    warm.wait().await;
    let _ = go.wait_for(|g| *g).await;
    if r.failure.is_none() {
        r.start = Some(Instant::now());
        for i in warmup..warmup + msgs {
            let t0 = Instant::now();
            if let Err(f) = trip(&mut conn, &request, lim, i).await {
                r.failure = Some(f);
                break;
            }
            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            r.hist.saturating_record(ns.max(1));
            r.done += 1;
            progress.published[index].store(r.done, Ordering::Relaxed);
        }
    }
    r.end = Instant::now();
    r
}

/// One bounded round trip; a failure says what happened and whether it was a timeout.
async fn trip(
    conn: &mut Conn,
    request: &[u8],
    lim: Duration,
    i: u64,
) -> Result<(), (String, bool)> {
    match tokio::time::timeout(lim, round_trip(conn, request)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err((format!("request {i}: {e:#}"), false)),
        Err(_) => Err((format!("request {i}: no reply within {lim:?}"), true)),
    }
}

async fn round_trip(conn: &mut Conn, request: &[u8]) -> Result<()> {
    conn.send(request).await?;
    loop {
        let mut got = 0;
        let ev = parse(&mut conn.buf, |_, _, _| got += 1)?;
        if let Some(e) = ev.err {
            bail!("server error: {e}");
        }
        if ev.pings > 0 {
            conn.send(&b"PONG\r\n".repeat(ev.pings as usize)).await?;
        }
        if got > 1 {
            bail!("{got} replies to one request");
        }
        if got == 1 {
            return Ok(());
        }
        if conn.stream.read_buf(&mut conn.buf).await? == 0 {
            bail!("connection closed by server");
        }
    }
}

/// Answers every request until stopped; returns how many and when the last one was.
async fn respond(
    mut conn: Conn,
    progress: Arc<Progress>,
    index: usize,
    mut stop: watch::Receiver<bool>,
) -> Result<(u64, Option<Instant>)> {
    let mut out = BytesMut::with_capacity(4096);
    let mut answered = 0u64;
    let mut last = None;
    loop {
        // Read before answering: once the last warm-up reply is sent, the measured phase (and
        // the flag) can start before this task looks again, and that reply must not count.
        let measuring = progress.started.load(Ordering::SeqCst);
        let mut n = 0u64;
        let ev = parse(&mut conn.buf, |_, reply, payload| {
            if let Some(reply) = reply {
                put_pub(&mut out, reply, None, payload);
                n += 1;
            }
        })?;
        if ev.pings > 0 {
            for _ in 0..ev.pings {
                out.put_slice(b"PONG\r\n");
            }
        }
        if let Some(e) = ev.err {
            bail!("server error: {e}");
        }
        if !out.is_empty() {
            conn.send(&out).await?;
            out.clear();
        }
        if n > 0 && measuring {
            answered += n;
            last = Some(Instant::now());
            progress.received[index].store(answered, Ordering::Relaxed);
        }
        tokio::select! {
            biased;
            r = conn.stream.read_buf(&mut conn.buf) => {
                if r? == 0 {
                    bail!("connection closed by server");
                }
            }
            _ = stop.wait_for(|s| *s) => return Ok((answered, last)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_messages_like_natscli() {
        let cfg = Config {
            pubs: 3,
            msgs: 10,
            split_msgs: true,
            ..Config::default()
        };
        assert_eq!(
            (0..3).map(|i| cfg.msgs_of(i)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(cfg.total_msgs(), 10);
        let per_pub = Config {
            split_msgs: false,
            subs: 2,
            ..cfg
        };
        assert_eq!(per_pub.total_msgs(), 30);
        assert_eq!(per_pub.expected(), 60);
    }
}
