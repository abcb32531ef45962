//! `rnats-bench`: drives any NATS server over raw TCP with its own minimal client, so the
//! client is never the bottleneck, and reports throughput, losses and latency.
//!
//! Scenarios:
//! - `pub`: N publishers only; rate measured at the publishers, the end marked by a
//!   PING/PONG round trip after each publisher's last PUB.
//! - `pubsub`: N publishers, M plain subscribers on the same subject (fan-out 1→M); each
//!   subscriber must receive msgs×pubs messages; rate = total received / (first publish →
//!   last receive).
//! - `queue`: N publishers, M subscribers in one queue group; the group must receive
//!   msgs×pubs messages in total.
//! - `reqrep`: one responder, one requester doing sequential round trips; latency in an HDR
//!   histogram.
//!
//! Every wait is bounded by `--timeout` (seconds without progress), so the tool never hangs.
//! Exit status: 0 when everything arrived, 2 when messages were lost or a connection failed,
//! 1 on a setup error.

mod proto;
mod sink;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::{BufMut, BytesMut};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use proto::{Conn, parse, put_pub};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Pub,
    Pubsub,
    Queue,
    Reqrep,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Pub => "pub",
            Scenario::Pubsub => "pubsub",
            Scenario::Queue => "queue",
            Scenario::Reqrep => "reqrep",
        }
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "rnats-bench",
    version,
    about = "Raw-TCP load generator for NATS servers"
)]
struct Args {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:4222")]
    server: String,
    /// What to measure.
    #[arg(long, value_enum, default_value = "pubsub")]
    scenario: Scenario,
    /// Publisher connections (pub, pubsub, queue).
    #[arg(long, default_value_t = 1)]
    pubs: usize,
    /// Subscriber connections (pubsub: plain subscribers; queue: members of one group).
    #[arg(long, default_value_t = 1)]
    subs: usize,
    /// Messages per publisher; for reqrep, the number of measured round trips.
    #[arg(long, default_value_t = 1_000_000)]
    msgs: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Subject to publish on (reqrep uses SUBJECT.req).
    #[arg(long, default_value = "bench")]
    subject: String,
    /// Queue group name (queue scenario).
    #[arg(long, default_value = "bench-q")]
    queue_group: String,
    /// Bytes of PUBs per socket write.
    #[arg(long, default_value_t = 64 * 1024)]
    batch: usize,
    /// Give up after this many seconds without any progress (also bounds connects).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Unmeasured request/reply round trips before the measured ones (reqrep).
    #[arg(long, default_value_t = 1000)]
    warmup: u64,
    /// Also print one JSON object line on stdout (the human line then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Free-form label copied into the JSON (e.g. the server's name).
    #[arg(long)]
    label: Option<String>,
    /// Ignore --server and publish into a built-in sink that reads and discards
    /// (pub scenario only): measures this tool's own ceiling.
    #[arg(long)]
    sink: bool,
    /// Instead of connecting anywhere, time this tool's subscriber-side parser on --msgs
    /// in-memory `MSG`s of --size bytes (the receive-side ceiling, one core).
    #[arg(long)]
    parse_ceiling: bool,
    /// Worker threads of the tool's runtime (default: number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Default)]
struct Latency {
    count: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

#[derive(Default)]
struct Report {
    elapsed: f64,
    published: u64,
    pub_msgs_per_sec: Option<f64>,
    expected: u64,
    received: u64,
    per_sub: Vec<u64>,
    msgs_per_sec: f64,
    latency: Option<Latency>,
    errors: Vec<String>,
    timed_out: bool,
}

impl Report {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.parse_ceiling {
        parse_ceiling(&args);
        return ExitCode::SUCCESS;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    if args.sink {
        if args.scenario != Scenario::Pub {
            eprintln!("rnats-bench: --sink only works with --scenario pub");
            return ExitCode::from(1);
        }
        match sink::spawn() {
            Ok(addr) => args.server = addr.to_string(),
            Err(e) => {
                eprintln!("rnats-bench: sink: {e:#}");
                return ExitCode::from(1);
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rnats-bench: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(run(&args));
    // Tasks stuck on a dead server must not keep us alive.
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(report) => {
            print_report(&args, &report);
            if report.lost() > 0 || !report.errors.is_empty() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("rnats-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: &Args) -> Result<Report> {
    if args.pubs == 0 && args.scenario != Scenario::Reqrep {
        bail!("--pubs must be at least 1");
    }
    if matches!(args.scenario, Scenario::Pubsub | Scenario::Queue) && args.subs == 0 {
        bail!("--subs must be at least 1");
    }
    match args.scenario {
        Scenario::Pub | Scenario::Pubsub | Scenario::Queue => run_throughput(args).await,
        Scenario::Reqrep => run_reqrep(args).await,
    }
}

fn limit(args: &Args) -> Duration {
    Duration::from_secs_f64(args.timeout.max(0.1))
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
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

async fn run_throughput(args: &Args) -> Result<Report> {
    let lim = limit(args);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_flag = Arc::new(AtomicBool::new(false));

    // Subscribers first, each confirmed by PING/PONG after its SUB.
    let mut sub_counters = Vec::new();
    let mut sub_tasks: Vec<JoinHandle<SubDone>> = Vec::new();
    let per_pub = args.msgs;
    let total_pub = per_pub * args.pubs as u64;
    let subs = if args.scenario == Scenario::Pub {
        0
    } else {
        args.subs
    };
    for i in 0..subs {
        let mut conn = Conn::connect(&args.server, lim)
            .await
            .with_context(|| format!("subscriber {i}"))?;
        let sub = if args.scenario == Scenario::Queue {
            format!("SUB {} {} {}\r\n", args.subject, args.queue_group, i + 1)
        } else {
            format!("SUB {} {}\r\n", args.subject, i + 1)
        };
        conn.flush_with(sub.as_bytes(), lim)
            .await
            .with_context(|| format!("subscriber {i}: SUB"))?;
        let counter = Arc::new(AtomicU64::new(0));
        sub_counters.push(counter.clone());
        let target = (args.scenario == Scenario::Pubsub).then_some(total_pub);
        sub_tasks.push(tokio::spawn(subscriber(
            conn,
            target,
            counter,
            stop_rx.clone(),
        )));
    }

    // Publishers: connected and handshaken before the clock starts.
    let (start_tx, start_rx) = watch::channel(false);
    let batch = Arc::new(build_batch(
        args.subject.as_bytes(),
        &payload(args.size),
        args.batch,
    ));
    let mut pub_counters = Vec::new();
    let mut pub_tasks: Vec<JoinHandle<Result<PubDone>>> = Vec::new();
    for i in 0..args.pubs {
        let conn = Conn::connect(&args.server, lim)
            .await
            .with_context(|| format!("publisher {i}"))?;
        let counter = Arc::new(AtomicU64::new(0));
        pub_counters.push(counter.clone());
        pub_tasks.push(tokio::spawn(publisher(
            conn,
            batch.clone(),
            per_pub,
            counter,
            start_rx.clone(),
            stop_flag.clone(),
            lim,
        )));
    }

    let start = Instant::now();
    start_tx.send_replace(true);

    // Watch progress until everyone is done, or nothing moved for --timeout.
    let expected = if args.scenario == Scenario::Pubsub {
        total_pub * subs as u64
    } else if subs > 0 {
        total_pub
    } else {
        0
    };
    let mut last_sum = 0u64;
    let mut last_progress = Instant::now();
    let mut timed_out = false;
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let sent: u64 = pub_counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let recv: u64 = sub_counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let pubs_done = pub_tasks.iter().all(JoinHandle::is_finished);
        let subs_done = sub_tasks.iter().all(JoinHandle::is_finished)
            || (args.scenario == Scenario::Queue && recv >= expected);
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
    let mut end = start;
    let mut pub_end = start;
    for (i, t) in pub_tasks.into_iter().enumerate() {
        match tokio::time::timeout(lim, t).await {
            Ok(Ok(Ok(done))) => {
                report.published += done.sent;
                pub_end = pub_end.max(done.done);
            }
            Ok(Ok(Err(e))) => {
                report.published += pub_counters[i].load(Ordering::Relaxed);
                report.errors.push(format!("publisher {i}: {e:#}"));
            }
            Ok(Err(e)) => report.errors.push(format!("publisher {i}: task: {e}")),
            Err(_) => {
                report.published += pub_counters[i].load(Ordering::Relaxed);
                report.errors.push(format!("publisher {i}: did not finish"));
            }
        }
    }
    for (i, t) in sub_tasks.into_iter().enumerate() {
        match tokio::time::timeout(lim, t).await {
            Ok(Ok(done)) => {
                report.received += done.received;
                report.per_sub.push(done.received);
                if let Some(last) = done.last {
                    end = end.max(last);
                }
                if let Some(e) = done.error {
                    report.errors.push(format!("subscriber {i}: {e}"));
                }
            }
            Ok(Err(e)) => {
                report.per_sub.push(sub_counters[i].load(Ordering::Relaxed));
                report.errors.push(format!("subscriber {i}: task: {e}"));
            }
            Err(_) => {
                report.per_sub.push(sub_counters[i].load(Ordering::Relaxed));
                report.errors.push(format!("subscriber {i}: did not stop"));
            }
        }
    }
    if timed_out {
        report.errors.push(format!(
            "no progress for {:.1}s: gave up",
            lim.as_secs_f64()
        ));
    }
    let pub_elapsed = pub_end.duration_since(start).as_secs_f64();
    if pub_elapsed > 0.0 {
        report.pub_msgs_per_sec = Some(report.published as f64 / pub_elapsed);
    }
    if args.sink {
        // The final PONG of each publisher came after the sink parsed all its PUBs.
        let swallowed = sink::RECEIVED.load(Ordering::Relaxed);
        if swallowed != report.published {
            report.errors.push(format!(
                "sink parsed {swallowed} PUBs, {} were sent",
                report.published
            ));
        }
    }
    if args.scenario == Scenario::Pub {
        report.elapsed = pub_elapsed;
        report.msgs_per_sec = report.pub_msgs_per_sec.unwrap_or(0.0);
    } else {
        report.elapsed = end.duration_since(start).as_secs_f64();
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
    }
}

async fn publisher(
    mut conn: Conn,
    batch: Arc<Batch>,
    count: u64,
    sent: Arc<AtomicU64>,
    mut start: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    lim: Duration,
) -> Result<PubDone> {
    start
        .wait_for(|s| *s)
        .await
        .map_err(|_| anyhow!("start signal lost"))?;
    let mut left = count;
    let mut done = 0u64;
    while left > 0 {
        if stop.load(Ordering::Relaxed) {
            bail!("stopped after {done} of {count} messages");
        }
        let k = left.min(batch.per_batch);
        let bytes = &batch.bytes[..k as usize * batch.msg_len];
        tokio::time::timeout(lim, conn.stream.write_all(bytes))
            .await
            .map_err(|_| anyhow!("write blocked for {lim:?} after {done} messages"))?
            .with_context(|| format!("write after {done} messages"))?;
        left -= k;
        done += k;
        sent.store(done, Ordering::Relaxed);
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
    counter: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> SubDone {
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
                        .stream
                        .write_all(&b"PONG\r\n".repeat(ev.pings as usize))
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

async fn run_reqrep(args: &Args) -> Result<Report> {
    let lim = limit(args);
    let req_subject = format!("{}.req", args.subject);
    let inbox = format!("_INBOX.bench.{}", std::process::id());

    let mut responder = Conn::connect(&args.server, lim)
        .await
        .context("responder")?;
    responder
        .flush_with(format!("SUB {req_subject} 1\r\n").as_bytes(), lim)
        .await
        .context("responder SUB")?;
    let mut requester = Conn::connect(&args.server, lim)
        .await
        .context("requester")?;
    requester
        .flush_with(format!("SUB {inbox} 1\r\n").as_bytes(), lim)
        .await
        .context("requester SUB")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let responder_task = tokio::spawn(respond(responder, stop_rx));

    let mut request = BytesMut::new();
    put_pub(
        &mut request,
        req_subject.as_bytes(),
        Some(inbox.as_bytes()),
        &payload(args.size),
    );
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).context("histogram")?;
    let mut report = Report {
        expected: args.msgs,
        ..Report::default()
    };
    let mut start = Instant::now();
    let mut failure = None;
    for i in 0..args.warmup + args.msgs {
        if i == args.warmup {
            start = Instant::now();
        }
        let t0 = Instant::now();
        match tokio::time::timeout(lim, round_trip(&mut requester, &request)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure = Some(format!("request {i}: {e:#}"));
                break;
            }
            Err(_) => {
                failure = Some(format!("request {i}: no reply within {lim:?}"));
                report.timed_out = true;
                break;
            }
        }
        if i >= args.warmup {
            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            hist.saturating_record(ns.max(1));
            report.received += 1;
        }
    }
    report.elapsed = start.elapsed().as_secs_f64();
    report.published = report.received;
    stop_tx.send_replace(true);
    match tokio::time::timeout(lim, responder_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => report.errors.push(format!("responder: {e:#}")),
        Ok(Err(e)) => report.errors.push(format!("responder: task: {e}")),
        Err(_) => report.errors.push("responder: did not stop".into()),
    }
    if let Some(f) = failure {
        report.errors.push(f);
    }
    if report.elapsed > 0.0 {
        report.msgs_per_sec = report.received as f64 / report.elapsed;
    }
    report.per_sub = vec![report.received];
    if !hist.is_empty() {
        let us = |ns: u64| ns as f64 / 1000.0;
        report.latency = Some(Latency {
            count: hist.len(),
            p50: us(hist.value_at_quantile(0.50)),
            p90: us(hist.value_at_quantile(0.90)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
            mean: hist.mean() / 1000.0,
        });
    }
    Ok(report)
}

async fn round_trip(conn: &mut Conn, request: &[u8]) -> Result<()> {
    conn.stream.write_all(request).await?;
    loop {
        let mut got = 0;
        let ev = parse(&mut conn.buf, |_, _, _| got += 1)?;
        if let Some(e) = ev.err {
            bail!("server error: {e}");
        }
        if ev.pings > 0 {
            conn.stream
                .write_all(&b"PONG\r\n".repeat(ev.pings as usize))
                .await?;
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

async fn respond(mut conn: Conn, mut stop: watch::Receiver<bool>) -> Result<()> {
    let mut out = BytesMut::with_capacity(4096);
    loop {
        let ev = parse(&mut conn.buf, |_, reply, payload| {
            if let Some(reply) = reply {
                put_pub(&mut out, reply, None, payload);
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
            conn.stream.write_all(&out).await?;
            out.clear();
        }
        tokio::select! {
            biased;
            r = conn.stream.read_buf(&mut conn.buf) => {
                if r? == 0 {
                    bail!("connection closed by server");
                }
            }
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Receive-side ceiling

/// Parses `--msgs` `MSG`s from memory in 64 KiB reads, the way a subscriber does.
fn parse_ceiling(args: &Args) {
    let mut one = Vec::new();
    one.extend_from_slice(format!("MSG {} 1 {}\r\n", args.subject, args.size).as_bytes());
    one.extend_from_slice(&payload(args.size));
    one.extend_from_slice(b"\r\n");
    let per_chunk = (args.batch / one.len()).max(1);
    let chunk: Vec<u8> = one.repeat(per_chunk);
    let mut buf = BytesMut::with_capacity(512 * 1024);
    let mut seen = 0u64;
    let mut fed = 0u64;
    let start = Instant::now();
    // Feed odd-sized pieces so messages straddle reads, as on a socket.
    let piece = 65_521usize.min(chunk.len());
    let mut off = 0usize;
    while seen < args.msgs {
        let end = (off + piece).min(chunk.len());
        buf.extend_from_slice(&chunk[off..end]);
        fed += (end - off) as u64;
        off = if end == chunk.len() { 0 } else { end };
        let mut got = 0u64;
        if parse(&mut buf, |_, _, _| got += 1).is_err() {
            eprintln!("rnats-bench: parse error");
            return;
        }
        seen += got;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "parse ceiling: {} MSGs of {} B ({} MB) parsed in {secs:.3}s: {:.0} msgs/s ({:.0} MB/s of wire data), one core",
        seen,
        args.size,
        fed / 1_000_000,
        seen as f64 / secs,
        fed as f64 / secs / 1e6
    );
}

// ---------------------------------------------------------------------------------------
// Output

fn print_report(args: &Args, r: &Report) {
    let server = if args.sink {
        format!("sink({})", args.server)
    } else {
        args.server.clone()
    };
    let mut line = format!("{:<6} server={server}", args.scenario.name());
    match args.scenario {
        Scenario::Pub => line += &format!(" pubs={}", args.pubs),
        Scenario::Pubsub | Scenario::Queue => {
            line += &format!(" pubs={} subs={}", args.pubs, args.subs)
        }
        Scenario::Reqrep => {}
    }
    line += &format!(" msgs={} size={}: ", args.msgs, args.size);
    if args.scenario == Scenario::Reqrep {
        line += &format!("{:.0} req/s in {:.3}s", r.msgs_per_sec, r.elapsed);
        if let Some(l) = &r.latency {
            line += &format!(
                "; latency us p50={:.1} p90={:.1} p99={:.1} p99.9={:.1} max={:.1}",
                l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        line += &format!("; replies {}/{}", r.received, r.expected);
    } else {
        line += &format!(
            "{:.0} msgs/s ({:.1} MB/s) in {:.3}s",
            r.msgs_per_sec,
            r.msgs_per_sec * args.size as f64 / 1e6,
            r.elapsed
        );
        if args.scenario != Scenario::Pub {
            line += &format!(
                "; published {} ({:.0} msgs/s); received {}/{}",
                r.published,
                r.pub_msgs_per_sec.unwrap_or(0.0),
                r.received,
                r.expected
            );
            if args.subs > 1 {
                let per: Vec<String> = r.per_sub.iter().map(u64::to_string).collect();
                line += &format!(" [per sub: {}]", per.join(" "));
            }
        }
    }
    if r.lost() > 0 {
        line += &format!("; LOST {}", r.lost());
    }
    for e in &r.errors {
        line += &format!("; ERROR {e}");
    }
    if args.json {
        eprintln!("{line}");
        println!("{}", json(args, r));
    } else {
        println!("{line}");
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_f(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

fn json(args: &Args, r: &Report) -> String {
    let mut f: Vec<(&str, String)> = vec![
        ("scenario", json_str(args.scenario.name())),
        (
            "label",
            args.label.as_deref().map_or("null".into(), json_str),
        ),
        ("server", json_str(&args.server)),
        ("sink", args.sink.to_string()),
        (
            "pubs",
            if args.scenario == Scenario::Reqrep {
                "1".into()
            } else {
                args.pubs.to_string()
            },
        ),
        (
            "subs",
            match args.scenario {
                Scenario::Pub => "0".into(),
                Scenario::Reqrep => "1".into(),
                _ => args.subs.to_string(),
            },
        ),
        ("msgs", args.msgs.to_string()),
        ("size", args.size.to_string()),
        ("elapsed_s", json_f(r.elapsed)),
        ("msgs_per_sec", json_f(r.msgs_per_sec)),
        ("bytes_per_sec", json_f(r.msgs_per_sec * args.size as f64)),
        ("published", r.published.to_string()),
        (
            "pub_msgs_per_sec",
            r.pub_msgs_per_sec.map_or("null".into(), json_f),
        ),
        ("expected", r.expected.to_string()),
        ("received", r.received.to_string()),
        ("lost", r.lost().to_string()),
        (
            "per_sub",
            format!(
                "[{}]",
                r.per_sub
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        ("timed_out", r.timed_out.to_string()),
    ];
    f.push((
        "latency_us",
        r.latency.as_ref().map_or("null".into(), |l| {
            format!(
                "{{\"count\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p99_9\":{},\"max\":{},\"mean\":{}}}",
                l.count,
                json_f(l.p50),
                json_f(l.p90),
                json_f(l.p99),
                json_f(l.p999),
                json_f(l.max),
                json_f(l.mean)
            )
        }),
    ));
    f.push((
        "errors",
        format!(
            "[{}]",
            r.errors
                .iter()
                .map(|e| json_str(e))
                .collect::<Vec<_>>()
                .join(",")
        ),
    ));
    let body: Vec<String> = f.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}
