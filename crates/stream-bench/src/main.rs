//! `rnats-stream-bench`: a load tool for persistence, speaking NATS Streaming (to
//! rnats-streaming-server or nats-streaming-server) and JetStream (to nats-server -js) with its
//! own lean protocol code over `rnats-client`, and the crash harness of the streaming file
//! store.
//!
//! ```text
//! rnats-stream-bench bench --server 127.0.0.1:4222 --proto stan --scenario pub --size 16 --window 256 --msgs 200000
//! rnats-stream-bench bench --server 127.0.0.1:4222 --proto js   --scenario pub --size 1024 --window 1 --duration 3
//! rnats-stream-bench bench --server 127.0.0.1:4222 --proto stan --scenario replay --msgs 200000
//! rnats-stream-bench crash --server-bin target/release/rnats-streaming-server --rounds 20
//! rnats-stream-bench crash --server-bin target/debug/rnats-streaming-server --ci
//! rnats-stream-bench crash --server-bin target/release/rnats-streaming-server --store sql --sql-db postgres
//! rnats-stream-bench db --kind mariadb --durable     # a throwaway database for scripts
//! rnats-stream-bench soak --server-bin target/release/rnats-streaming-server --duration 600
//! ```
//!
//! `bench` scenarios:
//! * `pub`: publish with acks, at most `--window` outstanding (1 = synchronous), for `--msgs`
//!   messages or `--duration` seconds; msgs/s = acked ÷ (first send → last ack), ack latency
//!   percentiles. NATS Streaming: ConnectRequest on `_STAN.discover.<cluster>`, PubMsg to
//!   `<pubPrefix>.<channel>` with one ack inbox, PubAcks matched by guid. JetStream: the
//!   stream is created (file storage) if missing, each message carries reply `<inbox>.<i>`,
//!   the JSON PubAcks are matched by that token.
//! * `replay`: read a whole channel/stream of `--msgs` messages from the first sequence.
//!   NATS Streaming: a subscription with StartPosition First and MaxInFlight `--inflight`,
//!   every message acked. JetStream: an ephemeral pull consumer (deliver all; `--js-ack none`
//!   as the ordered consumer, or `explicit` with every message acked) pulled in batches so
//!   that about `--inflight` messages are requested at a time. msgs/s = messages ÷
//!   (subscription or consumer request → last message); sequences are checked for gaps and
//!   repeats.
//!
//! Every wait is bounded by `--timeout` seconds without progress. `--json` prints one JSON
//! object on stdout (the human line goes to stderr). Exit status: 0 when every message was
//! acked / received, 2 when some were not (or errors were acked), 1 on a setup error.
//!
//! `crash`: see the `crash` module; exit status 0 PASS, 2 FAIL, 1 setup error.
//!
//! `db`: see the `db` module.
//!
//! `soak`: see the `soak` module (bench/soak-streaming.sh); exit status 0 PASS, 2 FAIL, 1
//! setup error.

mod bench;
mod crash;
mod db;
mod js;
mod nats;
mod publish;
mod replay;
mod soak;
mod stan;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "rnats-stream-bench",
    version,
    about = "Persistence load tool (NATS Streaming, JetStream) and streaming store crash harness"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One measured run against a running server.
    Bench(BenchArgs),
    /// kill -9 rounds against rnats-streaming-server with a FILE or SQL store.
    Crash(CrashArgs),
    /// A throwaway PostgreSQL or MariaDB server; commands on stdin (new, kill, restart).
    Db(db::DbArgs),
    /// Steady load with restarts for a set time; RSS and fds sampled; acked messages checked
    /// against a durable subscription.
    Soak(soak::SoakArgs),
}

/// The store the crash harness runs the server on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CrashStore {
    /// `-st FILE --dir <dir>/store`.
    File,
    /// `-st SQL` on a database the harness starts (--sql-db) or is given (--sql-source).
    Sql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    /// NATS Streaming (protobuf over core NATS).
    Stan,
    /// JetStream (nats-server -js).
    Js,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Pub,
    Replay,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// NATS address (host:port or URL).
    #[arg(long, default_value = "127.0.0.1:4222")]
    server: String,
    #[arg(long, value_enum, default_value = "stan")]
    proto: Proto,
    #[arg(long, value_enum, default_value = "pub")]
    scenario: Scenario,
    /// Payload bytes.
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// pub: messages to publish (unless --duration); replay: messages the channel holds.
    #[arg(long, default_value_t = 100_000)]
    msgs: u64,
    /// pub: publish for this many seconds instead of --msgs messages.
    #[arg(long)]
    duration: Option<f64>,
    /// pub: acks outstanding at most (1 = synchronous publish).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// replay: MaxInFlight of the streaming subscription / messages requested from JetStream.
    #[arg(long, default_value_t = 16384)]
    inflight: usize,
    /// replay (JetStream): the consumer's ack policy.
    #[arg(long, value_enum, default_value = "none")]
    js_ack: js::JsAck,
    /// JetStream: replicas of the stream the bench creates (3 on a 3-node cluster).
    #[arg(long, default_value_t = 1)]
    js_replicas: u32,
    /// JetStream: move the stream's leader to this server (by name) before measuring.
    #[arg(long)]
    js_leader: Option<String>,
    /// Streaming cluster ID.
    #[arg(long, default_value = "test-cluster")]
    cluster: String,
    /// Streaming channel.
    #[arg(long, default_value = "bench")]
    channel: String,
    /// JetStream stream name.
    #[arg(long, default_value = "BENCH")]
    stream: String,
    /// JetStream subject.
    #[arg(long, default_value = "bench.persist")]
    subject: String,
    /// Seconds without progress before giving up.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// A label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CrashArgs {
    /// The rnats-streaming-server binary.
    #[arg(long, default_value = "target/release/rnats-streaming-server")]
    server_bin: PathBuf,
    /// kill -9 rounds (default 20; 5 with --ci).
    #[arg(long)]
    rounds: Option<usize>,
    /// Short CI mode: 5 rounds of 100–600 ms of load.
    #[arg(long)]
    ci: bool,
    /// Work directory (store and server logs); default a fresh temp dir, removed on PASS.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temp dir even on PASS.
    #[arg(long)]
    keep: bool,
    /// Random seed (printed; to replay a run's choices).
    #[arg(long)]
    seed: Option<u64>,
    /// Publisher connections per round (publisher i writes channel crash<i % channels>).
    #[arg(long, default_value_t = 3)]
    publishers: usize,
    #[arg(long, default_value_t = 2)]
    channels: usize,
    /// Largest filler of a message (payload = `<id>:<n>:` + 0..max_size bytes).
    #[arg(long, default_value_t = 1024)]
    max_size: usize,
    /// Load before the kill: random between these (ms).
    #[arg(long, default_value_t = 200)]
    min_run_ms: u64,
    #[arg(long, default_value_t = 1500)]
    max_run_ms: u64,
    /// Percentage of rounds that also kill the server during start-up/recovery.
    #[arg(long, default_value_t = 25)]
    recovery_kill_pct: u32,
    #[arg(long, default_value = "test-cluster")]
    cluster: String,
    /// The server's store.
    #[arg(long, value_enum, default_value = "file")]
    store: CrashStore,
    /// SQL: the database server to start for the run (system packages, a temp directory;
    /// see rnats-test-db), unless --sql-source is given.
    #[arg(long, value_enum, default_value = "postgres")]
    sql_db: db::DbKind,
    /// SQL: run on this existing database instead (its schema is created if missing).
    #[arg(long)]
    sql_source: Option<String>,
    /// SQL: the driver of --sql-source (postgres or mysql).
    #[arg(long, default_value = "postgres")]
    sql_driver: String,
    /// SQL: the started database fsyncs its commits (not needed to survive kill -9 of the
    /// server or of the database: a commit is in the kernel before it returns).
    #[arg(long)]
    sql_durable: bool,
    /// SQL, started database only: percentage of rounds in which the database is also killed
    /// (SIGKILL) during the load and restarted; the server must acknowledge again without
    /// being restarted, and nothing acknowledged may be lost.
    #[arg(long, default_value_t = 0)]
    db_kill_pct: u32,
    /// Extra server argument (repeatable), e.g. --server-arg=--file_sync=false. The server
    /// runs with `-cid <cluster> -st FILE --dir <dir>/store -a 127.0.0.1 -p -1 -mm 0 -mb 0`
    /// (SQL: `-st SQL --sql_driver D --sql_source S` instead of the FILE store's) and then
    /// these.
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Seconds any single wait may take.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// single: one server killed with kill -9; ft: two fault-tolerant servers (--ft_group) on
    /// one store, the active one killed; cluster: three RAFT nodes, the leader or a follower
    /// killed or paused (SIGSTOP/SIGCONT). ft and cluster attach to a core NATS server.
    #[arg(long, value_enum, default_value = "single")]
    mode: CrashMode,
    /// The core NATS server binary (ft and cluster modes).
    #[arg(long, default_value = "target/release/rnats-server")]
    nats_bin: PathBuf,
    /// Cluster mode: every node embeds its NATS server, routed with the others and with the
    /// core server (which the clients use), instead of attaching to the core with `-ns`; the
    /// RAFT RPCs then travel on local connections.
    #[arg(long)]
    embedded: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    Single,
    Ft,
    Cluster,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A measured run drives one connection: one thread, so that the client's reader and
    // writer tasks and the publisher hand work to each other without waking other threads
    // (on a 2-core machine those wake-ups cost the servers CPU time). RNATS_BENCH_THREADS=2
    // gives the earlier two-worker runtime. The crash harness keeps two workers.
    let threads: usize = std::env::var("RNATS_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if matches!(cli.cmd, Cmd::Bench(_)) {
            1
        } else {
            2
        });
    let built = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rnats-stream-bench: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.cmd {
        Cmd::Bench(a) => match rt.block_on(bench::run(&a)) {
            Ok((v, ok)) => {
                eprintln!("{}", bench::human(&v));
                if a.json {
                    println!("{v}");
                }
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                }
            }
            Err(e) => {
                eprintln!("rnats-stream-bench: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Crash(a) => match rt.block_on(crash::run(&a)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(2),
            Err(e) => {
                eprintln!("rnats-stream-bench crash: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Soak(a) => match rt.block_on(soak::run(&a)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(2),
            Err(e) => {
                eprintln!("rnats-stream-bench soak: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Db(a) => match db::run(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rnats-stream-bench db: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
