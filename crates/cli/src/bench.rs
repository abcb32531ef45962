//! `rnats bench SUBJECT --pub N --sub N --msgs N --size BYTES [--request]`: natscli's
//! benchmark, on rnats-bench's engine (raw connections, batched writes, HDR latency).
//!
//! * `--pub N` only: publish throughput; with `--sub M`: every subscriber gets every message
//!   (fan-out); with `--queue G`: the subscribers share the messages as one queue group;
//!   with `--request`: N requesters do sequential round trips to M responders (one queue
//!   group), and the round-trip times go into an HDR histogram.
//! * `--msgs` is the total, shared among the publishers (as natscli counts).
//! * While it runs: progress bars on stderr (indicatif; hidden when stderr is not a
//!   terminal). At the end: a table per client and in total, and for `--request` the latency
//!   percentiles. `--json` prints the results as JSON on stdout (the table then goes to
//!   stderr), `--csv FILE` writes natscli's CSV, `--plot FILE.svg` an SVG chart.
//! * Exit status 1 when messages were lost or a client failed (after writing the results).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rnats_bench::{ClientStat, Config, Progress, Report, Scenario};
use rnats_client::ServerAddr;
use serde_json::json;

use crate::plot::{self, PlotData};
use crate::util::{human_bytes, human_secs, parse_size, thousands, thousands_f};
use crate::{Failure, Global, Result};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Subject to use (request mode sends to it; responders listen on it)
    subject: String,
    /// Number of concurrent publishers (requesters with --request)
    #[arg(long = "pub", default_value_t = 1, value_name = "N")]
    pubs: usize,
    /// Number of concurrent subscribers (responders with --request)
    #[arg(long = "sub", default_value_t = 0, value_name = "N")]
    subs: usize,
    /// Pause after each published message (natscli's --pubsleep), e.g. 1ms
    #[arg(long = "pubsleep", value_parser = crate::util::parse_duration, value_name = "DURATION")]
    pub_sleep: Option<Duration>,
    /// Messages per write of a publisher (natscli's --pubbatch); default: what fits in 64 KiB
    #[arg(long = "pubbatch", value_name = "N")]
    pub_batch: Option<usize>,
    /// Number of messages to publish, shared among the publishers
    #[arg(long, default_value_t = 100_000)]
    msgs: u64,
    /// Size of the messages: bytes, or with a unit (1KB, 1MB)
    #[arg(long, default_value = "128", value_parser = parse_size)]
    size: usize,
    /// Request/reply: publishers send requests and wait for each reply from the subscribers
    #[arg(long)]
    request: bool,
    /// Subscribers join this queue group (each message goes to one of them)
    #[arg(long, value_name = "GROUP", conflicts_with = "request")]
    queue: Option<String>,
    /// Unmeasured round trips per requester before the measured ones (--request)
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Write natscli's per-client CSV to this file
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Print the results as JSON on stdout (the table goes to stderr)
    #[arg(long)]
    json: bool,
    /// Write an SVG chart (latency distribution, throughput per client and over time)
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Do not draw progress bars
    #[arg(long)]
    no_progress: bool,
}

fn mode(cfg: &Config) -> &'static str {
    match cfg.scenario {
        Scenario::Pub => "pub",
        Scenario::Pubsub => "pubsub",
        Scenario::Queue => "queue",
        Scenario::Reqrep => "request",
    }
}

/// Names of the two sides in this mode.
fn roles(cfg: &Config) -> (&'static str, &'static str) {
    if cfg.scenario == Scenario::Reqrep {
        ("req", "rep")
    } else {
        ("pub", "sub")
    }
}

/// The engine's configuration, and the server it goes to.
fn config(g: &Global, a: &BenchArgs) -> Result<Config> {
    if a.pubs == 0 {
        return Err("--pub must be at least 1: this benchmark needs a publisher".into());
    }
    if a.msgs == 0 {
        return Err("--msgs must be at least 1".into());
    }
    let scenario = if a.request {
        if a.subs == 0 {
            return Err("--request needs responders: add --sub N (N ≥ 1)".into());
        }
        Scenario::Reqrep
    } else if a.queue.is_some() {
        if a.subs == 0 {
            return Err("--queue needs subscribers: add --sub N (N ≥ 1)".into());
        }
        Scenario::Queue
    } else if a.subs == 0 {
        Scenario::Pub
    } else {
        Scenario::Pubsub
    };
    if a.subject.is_empty()
        || a.subject.contains(char::is_whitespace)
        || a.subject.contains(['*', '>'])
    {
        return Err(format!(
            "invalid subject {:?}: use a literal subject such as bench.test",
            a.subject
        )
        .into());
    }
    let first = g
        .server
        .split(',')
        .map(str::trim)
        .find(|s| !s.is_empty())
        .ok_or("no server: give one with --server or NATS_URL")?;
    let addr: ServerAddr = first.parse().map_err(|e| {
        Failure(format!(
            "invalid server {first:?}: {e}: use nats://host:port"
        ))
    })?;
    // The engine's own handshake is the fastest; credentials and TLS need rnats-client's.
    let secure = g.has_security() || addr.tls || addr.user.is_some();
    let connect = if secure {
        Some(g.connect_options()?)
    } else {
        None
    };
    Ok(Config {
        sub_server: None,
        server: if secure {
            first.to_string()
        } else {
            addr.host_port()
        },
        scenario,
        pubs: a.pubs,
        subs: a.subs,
        msgs: a.msgs,
        split_msgs: true,
        size: a.size,
        subject: a.subject.clone(),
        queue_group: a.queue.clone().unwrap_or_else(|| "rnats-bench".into()),
        batch: match a.pub_batch {
            Some(0) => return Err("--pubbatch must be at least 1".into()),
            Some(n) => n.saturating_mul(rnats_bench::engine::pub_len(&a.subject, a.size)),
            None => 64 * 1024,
        },
        pub_sleep: a.pub_sleep.unwrap_or_default(),
        timeout: g.timeout,
        warmup: a.warmup,
        connect,
    })
}

// ---------------------------------------------------------------------------------------------
// Progress bars

enum Source {
    Pub(usize),
    Sub(usize),
    AllSubs,
}

struct Bars {
    _multi: MultiProgress,
    bars: Vec<(ProgressBar, Source)>,
}

impl Bars {
    fn new(cfg: &Config, hidden: bool) -> Bars {
        let target = if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr_with_hz(10)
        };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template(
            "{prefix:>14} [{bar:40.cyan/blue}] {percent:>3}% {pos:>10}/{len:<10} {rate:>16}",
        )
        .expect("valid template")
        .with_key(
            "rate",
            |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{} msgs/s", thousands_f(st.per_sec()));
            },
        )
        .progress_chars("=> ");
        let (p, s) = roles(cfg);
        let mut bars = Vec::new();
        let mut add = |len: u64, prefix: String, src: Source| {
            let bar = multi.add(ProgressBar::new(len));
            bar.set_style(style.clone());
            bar.set_prefix(prefix);
            bars.push((bar, src));
        };
        for i in 0..cfg.pubs {
            add(cfg.msgs_of(i), format!("{p} {}", i + 1), Source::Pub(i));
        }
        match cfg.scenario {
            Scenario::Pub => {}
            Scenario::Pubsub => {
                for i in 0..cfg.subs {
                    add(cfg.total_msgs(), format!("{s} {}", i + 1), Source::Sub(i));
                }
            }
            Scenario::Queue => add(cfg.expected(), "queue group".into(), Source::AllSubs),
            Scenario::Reqrep => add(cfg.expected(), "responders".into(), Source::AllSubs),
        }
        Bars {
            _multi: multi,
            bars,
        }
    }

    fn update(&self, progress: &Progress) {
        for (bar, src) in &self.bars {
            let pos = match src {
                Source::Pub(i) => progress.published[*i].load(Ordering::Relaxed),
                Source::Sub(i) => progress.received[*i].load(Ordering::Relaxed),
                Source::AllSubs => progress.received_total(),
            };
            bar.set_position(pos);
        }
    }

    fn finish(&self, progress: &Progress) {
        self.update(progress);
        // Left on screen at their final position, as natscli does.
        for (bar, _) in &self.bars {
            bar.abandon();
        }
    }
}

/// Samples of the counters every 100 ms while the measured phase runs: (seconds since the
/// start, published, received).
type Samples = Vec<(f64, u64, u64)>;

fn spawn_updater(
    bars: Arc<Bars>,
    progress: Arc<Progress>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Samples> {
    let mut stop = stop;
    tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut start: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            bars.update(&progress);
            if progress.started.load(Ordering::Relaxed) {
                let t0 = *start.get_or_insert_with(Instant::now);
                samples.push((
                    t0.elapsed().as_secs_f64(),
                    progress.published_total(),
                    progress.received_total(),
                ));
            }
        }
        samples
    })
}

// ---------------------------------------------------------------------------------------------
// Results

/// One row of the results: a client, or all clients of one side.
struct Row {
    client: String,
    stat: ClientStat,
}

fn rows(cfg: &Config, r: &Report) -> (Vec<Row>, Vec<Row>) {
    let (p, s) = roles(cfg);
    let named = |side: &str, stats: &[ClientStat]| -> Vec<Row> {
        stats
            .iter()
            .enumerate()
            .map(|(i, st)| Row {
                client: format!("{side} {}", i + 1),
                stat: *st,
            })
            .collect()
    };
    (named(p, &r.pub_stats), named(s, &r.sub_stats))
}

/// Messages and the longest time of one side: its aggregate rate.
fn total(stats: &[ClientStat]) -> ClientStat {
    ClientStat {
        msgs: stats.iter().map(|s| s.msgs).sum(),
        elapsed: stats.iter().map(|s| s.elapsed).fold(0.0, f64::max),
    }
}

/// min, avg, max and standard deviation of the clients' msgs/s.
fn spread(stats: &[ClientStat]) -> (f64, f64, f64, f64) {
    let rates: Vec<f64> = stats.iter().map(ClientStat::msgs_per_sec).collect();
    let n = rates.len().max(1) as f64;
    let avg = rates.iter().sum::<f64>() / n;
    let min = rates.iter().copied().fold(f64::MAX, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    let var = rates.iter().map(|r| (r - avg).powi(2)).sum::<f64>() / n;
    (min, avg, max, var.sqrt())
}

/// A table with a header, right-aligned numeric columns and box lines.
fn table(headers: &[&str], body: &[Vec<String>], footer: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in body.iter().chain(footer) {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |l: &str, m: &str, r: &str| {
        let parts: Vec<String> = width.iter().map(|w| "─".repeat(w + 2)).collect();
        format!("{l}{}{r}\n", parts.join(m))
    };
    let fmt_row = |cells: &[String]| {
        let mut out = String::from("│");
        for (i, w) in width.iter().enumerate() {
            let c = cells.get(i).map(String::as_str).unwrap_or("");
            let pad = w - c.chars().count();
            if i == 0 {
                out.push_str(&format!(" {c}{} │", " ".repeat(pad)));
            } else {
                out.push_str(&format!(" {}{c} │", " ".repeat(pad)));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line("╭", "┬", "╮");
    out.push_str(&fmt_row(
        &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    ));
    out.push_str(&line("├", "┼", "┤"));
    for r in body {
        out.push_str(&fmt_row(r));
    }
    if !footer.is_empty() {
        out.push_str(&line("├", "┼", "┤"));
        for r in footer {
            out.push_str(&fmt_row(r));
        }
    }
    out.push_str(&line("╰", "┴", "╯"));
    out
}

fn stat_cells(name: &str, st: &ClientStat, size: usize) -> Vec<String> {
    let rate = st.msgs_per_sec();
    vec![
        name.to_string(),
        thousands(st.msgs),
        thousands_f(rate),
        format!("{}/s", human_bytes(rate * size as f64)),
        human_secs(st.elapsed),
    ]
}

/// The human report: headline, the per-client table, the spread, the latency summary.
fn render(cfg: &Config, r: &Report) -> String {
    let (pubs, subs) = rows(cfg, r);
    let (p_total, s_total) = (total(&r.pub_stats), total(&r.sub_stats));
    let mut out = String::new();
    let (title, headline) = match cfg.scenario {
        Scenario::Pub => ("NATS Pub stats", p_total.msgs_per_sec()),
        Scenario::Reqrep => ("NATS Request/Reply stats", r.msgs_per_sec),
        Scenario::Pubsub | Scenario::Queue => {
            let elapsed = p_total.elapsed.max(s_total.elapsed);
            let rate = if elapsed > 0.0 {
                (p_total.msgs + s_total.msgs) as f64 / elapsed
            } else {
                0.0
            };
            ("NATS Pub/Sub stats", rate)
        }
    };
    let unit = if cfg.scenario == Scenario::Reqrep {
        "req/sec"
    } else {
        "msgs/sec"
    };
    out.push_str(&format!(
        "{title}: {} {unit} ~ {}/sec\n\n",
        thousands_f(headline),
        human_bytes(headline * cfg.size as f64)
    ));
    let body: Vec<Vec<String>> = pubs
        .iter()
        .chain(&subs)
        .map(|row| stat_cells(&row.client, &row.stat, cfg.size))
        .collect();
    let (p, s) = roles(cfg);
    let mut footer = vec![stat_cells(&format!("{p} (all)"), &p_total, cfg.size)];
    if !subs.is_empty() {
        footer.push(stat_cells(&format!("{s} (all)"), &s_total, cfg.size));
    }
    out.push_str(&table(
        &["Client", "Msgs", "Msgs/sec", "Throughput", "Time"],
        &body,
        &footer,
    ));
    for (side, stats) in [(p, &r.pub_stats), (s, &r.sub_stats)] {
        if stats.len() > 1 {
            let (min, avg, max, sd) = spread(stats);
            out.push_str(&format!(
                " {side}: min {} | avg {} | max {} | stddev {} msgs/sec\n",
                thousands_f(min),
                thousands_f(avg),
                thousands_f(max),
                thousands_f(sd)
            ));
        }
    }
    if let Some(l) = &r.latency {
        let us = |v: f64| human_secs(v / 1e6);
        out.push_str("\nRequest/reply latency (HDR histogram):\n");
        out.push_str(&table(
            &["Requests", "p50", "p90", "p99", "p99.9", "max", "mean"],
            &[vec![
                thousands(l.count),
                us(l.p50),
                us(l.p90),
                us(l.p99),
                us(l.p999),
                us(l.max),
                us(l.mean),
            ]],
            &[],
        ));
    }
    if r.lost() > 0 {
        out.push_str(&format!(
            "\nLOST {} of {} messages\n",
            thousands(r.lost()),
            thousands(r.expected)
        ));
    }
    for e in &r.errors {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}

fn client_json(row: &Row, size: usize) -> serde_json::Value {
    let rate = row.stat.msgs_per_sec();
    json!({
        "client": row.client,
        "msgs": row.stat.msgs,
        "elapsed_s": row.stat.elapsed,
        "msgs_per_sec": rate,
        "bytes_per_sec": rate * size as f64,
    })
}

fn results_json(cfg: &Config, server: &str, r: &Report) -> serde_json::Value {
    let (pubs, subs) = rows(cfg, r);
    json!({
        "subject": cfg.subject,
        "mode": mode(cfg),
        "server": server,
        "pubs": cfg.pubs,
        "subs": cfg.sub_count(),
        "msgs": cfg.total_msgs(),
        "size": cfg.size,
        "elapsed_s": r.elapsed,
        "msgs_per_sec": r.msgs_per_sec,
        "bytes_per_sec": r.msgs_per_sec * cfg.size as f64,
        "published": r.published,
        "expected": r.expected,
        "received": r.received,
        "lost": r.lost(),
        "publishers": pubs.iter().map(|row| client_json(row, cfg.size)).collect::<Vec<_>>(),
        "subscribers": subs.iter().map(|row| client_json(row, cfg.size)).collect::<Vec<_>>(),
        "latency_us": r.latency.as_ref().map(|l| json!({
            "count": l.count,
            "p50": l.p50,
            "p90": l.p90,
            "p99": l.p99,
            "p99_9": l.p999,
            "max": l.max,
            "mean": l.mean,
        })),
        "errors": r.errors,
    })
}

/// natscli's CSV: one line per client.
fn csv(cfg: &Config, r: &Report) -> String {
    let (pubs, subs) = rows(cfg, r);
    let run_id = crate::util::random_id();
    let mut out = String::from(
        "#RunID, ClientID, MsgCount, MsgBytes, MsgsPerSec, BytesPerSec, DurationSecs\n",
    );
    for row in pubs.iter().chain(&subs) {
        let rate = row.stat.msgs_per_sec();
        out.push_str(&format!(
            "{run_id},{},{},{},{:.0},{:.0},{:.6}\n",
            row.client.replace(' ', "-"),
            row.stat.msgs,
            row.stat.msgs * cfg.size as u64,
            rate,
            rate * cfg.size as f64,
            row.stat.elapsed
        ));
    }
    out
}

pub async fn run(g: &Global, a: BenchArgs) -> Result<()> {
    let cfg = config(g, &a)?;
    let say = |text: &str| {
        if a.json {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    };
    let kind = match cfg.scenario {
        Scenario::Pub => "publish",
        Scenario::Pubsub => "pub/sub",
        Scenario::Queue => "queue group",
        Scenario::Reqrep => "request/reply",
    };
    say(&format!(
        "Starting Core NATS {kind} benchmark [subject={}, msgs={}, size={} B, pubs={}, subs={}{}]\n\n",
        cfg.subject,
        thousands(cfg.total_msgs()),
        thousands(cfg.size as u64),
        cfg.pubs,
        cfg.sub_count(),
        a.queue
            .as_ref()
            .map(|q| format!(", queue={q}"))
            .unwrap_or_default()
    ));

    let progress = Arc::new(Progress::new(&cfg));
    let bars = Arc::new(Bars::new(&cfg, a.no_progress));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let updater = spawn_updater(bars.clone(), progress.clone(), stop_rx);
    let result = rnats_bench::run(&cfg, Some(progress.clone())).await;
    stop_tx.send_replace(true);
    let samples = updater.await.unwrap_or_default();
    bars.finish(&progress);
    let report = result.map_err(|e| {
        Failure(format!(
            "cannot run the benchmark against {}: {e:#}: is a NATS server running there? Pick one with --server or NATS_URL",
            cfg.server
        ))
    })?;

    say(&render(&cfg, &report));
    if a.json {
        let doc = results_json(&cfg, &cfg.server, &report);
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON serializes")
        );
    }
    if let Some(path) = &a.csv {
        std::fs::write(path, csv(&cfg, &report))
            .map_err(|e| format!("cannot write the CSV to {}: {e}", path.display()))?;
        eprintln!("Wrote the per-client results to {}", path.display());
    }
    if let Some(path) = &a.plot {
        let (pubs, subs) = rows(&cfg, &report);
        let data = PlotData {
            title: format!(
                "rnats bench {} — {} {} msgs of {} B, {} pub / {} sub",
                cfg.subject,
                mode(&cfg),
                thousands(cfg.total_msgs()),
                cfg.size,
                cfg.pubs,
                cfg.sub_count()
            ),
            latency: report.histogram.as_ref().filter(|h| !h.is_empty()),
            clients: pubs
                .iter()
                .chain(&subs)
                .map(|r| (r.client.clone(), r.stat.msgs_per_sec()))
                .collect(),
            timeline: plot::rates(&samples),
        };
        plot::write_svg(path, &data)
            .map_err(|e| format!("cannot write the chart to {}: {e}", path.display()))?;
        eprintln!("Wrote the chart to {}", path.display());
    }
    if report.clean() {
        return Ok(());
    }
    let mut why = Vec::new();
    if report.lost() > 0 {
        why.push(format!(
            "{} of {} messages were lost",
            report.lost(),
            report.expected
        ));
    }
    why.extend(report.errors.iter().take(1).cloned());
    Err(Failure(format!(
        "the benchmark did not complete: {}: check the server (slow consumers, limits), or raise --timeout",
        why.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up() {
        let t = table(
            &["Client", "Msgs"],
            &[vec!["pub 1".into(), "1,000".into()]],
            &[vec!["pub (all)".into(), "1,000".into()]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 7, "{t}");
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{t}");
        assert!(
            lines[1].contains("Client") && lines[3].contains("pub 1"),
            "{t}"
        );
    }

    #[test]
    fn spread_of_rates() {
        let s = [
            ClientStat {
                msgs: 100,
                elapsed: 1.0,
            },
            ClientStat {
                msgs: 300,
                elapsed: 1.0,
            },
        ];
        assert_eq!(spread(&s), (100.0, 200.0, 300.0, 100.0));
        assert_eq!(
            total(&s),
            ClientStat {
                msgs: 400,
                elapsed: 1.0
            }
        );
    }
}
