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
//! - `reqrep`: responders (one by default; several form a queue group) and requesters (one by
//!   default) doing sequential round trips; latency in an HDR histogram.
//!
//! Every wait is bounded by `--timeout` (seconds without progress), so the tool never hangs.
//! Exit status: 0 when everything arrived, 2 when messages were lost or a connection failed,
//! 1 on a setup error. The engine is the `rnats_bench` library (also used by `rnats bench`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rnats_bench::report::{Target, human_line, json};
use rnats_bench::{Config, Scenario, ceiling, sink, soak};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "rnats-bench",
    version,
    about = "Raw-TCP load generator for NATS servers",
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// Long-running checks instead of one measured run (see bench/soak-core.sh).
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:4222")]
    server: String,
    /// Subscribers (responders) on this other server of the same cluster: publish on one
    /// server, receive on another.
    #[arg(long)]
    sub_server: Option<String>,
    /// What to measure.
    #[arg(long, value_enum, default_value = "pubsub")]
    scenario: Scenario,
    /// Publisher connections (pub, pubsub, queue; requesters for reqrep).
    #[arg(long, default_value_t = 1)]
    pubs: usize,
    /// Subscriber connections (pubsub: plain subscribers; queue: members of one group;
    /// reqrep: responders).
    #[arg(long, default_value_t = 1)]
    subs: usize,
    /// Messages per publisher; for reqrep, the number of measured round trips per requester.
    #[arg(long, default_value_t = 1_000_000)]
    msgs: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Subject to publish on (reqrep uses SUBJECT.req).
    #[arg(long, default_value = "bench")]
    subject: String,
    /// Queue group name (queue scenario; reqrep with several responders).
    #[arg(long, default_value = "bench-q")]
    queue_group: String,
    /// Bytes of PUBs per socket write.
    #[arg(long, default_value_t = 64 * 1024)]
    batch: usize,
    /// Give up after this many seconds without any progress (also bounds connects).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Unmeasured request/reply round trips per requester before the measured ones (reqrep).
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

#[derive(clap::Subcommand, Debug, Clone)]
enum Cmd {
    /// Mixed load for a set time; RSS and fds sampled; losses and growth judged.
    Soak(soak::SoakArgs),
    /// A million subscriptions (--subs) from one connection.
    SubsFlood(soak::flood::FloodArgs),
}

/// Runs a subcommand on a multi-threaded runtime: exit 0 on PASS, 2 on FAIL, 1 on error.
fn run_cmd(cmd: &Cmd) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rnats-bench: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cmd {
            Cmd::Soak(a) => soak::run(a).await,
            Cmd::SubsFlood(a) => soak::flood::run(a).await,
        }
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("rnats-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(cmd) = &args.cmd {
        return run_cmd(cmd);
    }
    if args.parse_ceiling {
        return match ceiling::parse_ceiling(&args.subject, args.size, args.msgs, args.batch) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rnats-bench: {e:#}");
                ExitCode::from(1)
            }
        };
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
    let cfg = Config {
        server: args.server.clone(),
        sub_server: args.sub_server.clone(),
        scenario: args.scenario,
        pubs: args.pubs,
        subs: args.subs,
        msgs: args.msgs,
        split_msgs: false,
        size: args.size,
        subject: args.subject.clone(),
        queue_group: args.queue_group.clone(),
        batch: args.batch,
        pub_sleep: Duration::ZERO,
        timeout: Duration::from_secs_f64(args.timeout.max(0.1)),
        warmup: args.warmup,
        connect: None,
    };
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
    let result = rt.block_on(rnats_bench::run(&cfg, None));
    // Tasks stuck on a dead server must not keep us alive.
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(mut report) => {
            if args.sink {
                // The final PONG of each publisher came after the sink parsed all its PUBs.
                let swallowed = sink::RECEIVED.load(std::sync::atomic::Ordering::Relaxed);
                if swallowed != report.published {
                    report.errors.push(format!(
                        "sink parsed {swallowed} PUBs, {} were sent",
                        report.published
                    ));
                }
            }
            let target = Target {
                server: &args.server,
                sink: args.sink,
                label: args.label.as_deref(),
            };
            let line = human_line(&cfg, &target, &report);
            if args.json {
                eprintln!("{line}");
                println!("{}", json(&cfg, &target, &report));
            } else {
                println!("{line}");
            }
            if report.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("rnats-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
