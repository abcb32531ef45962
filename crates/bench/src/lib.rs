//! rnats-bench's engine, as a library: drives any NATS server with its own minimal client over
//! raw connections, so that the client is never the bottleneck, and reports throughput, losses
//! and request/reply latency (HDR histogram).
//!
//! Used by the `rnats-bench` binary (bench/compare.sh) and by `rnats bench`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use rnats_bench::{Config, Scenario};
//! let cfg = Config { server: "127.0.0.1:4222".into(), scenario: Scenario::Pubsub, ..Config::default() };
//! let report = rnats_bench::run(&cfg, None).await?;
//! println!("{:.0} msgs/s, lost {}", report.msgs_per_sec, report.lost());
//! # Ok(()) }
//! ```
//!
//! * [`engine`]: the scenarios (`pub`, `pubsub`, `queue`, `reqrep`), [`Config`], live
//!   [`Progress`] counters, the [`Report`] with per-client stats.
//! * [`proto`]: the minimal client protocol (handshake, `PUB` batches, `MSG` parser).
//! * [`sink`]: a read-and-discard server, to measure the tool's own ceiling.
//! * [`ceiling`]: the subscriber parser's speed on in-memory data.
//! * [`report`]: the one-line human summary and the JSON object of `rnats-bench`.
//! * [`soak`]: `rnats-bench soak` (mixed load for a set time, memory and fds sampled, losses
//!   counted) and `rnats-bench subs-flood` (a million subscriptions on one connection).

pub mod ceiling;
pub mod engine;
pub mod proto;
pub mod report;
pub mod sink;
pub mod soak;

pub use engine::{ClientStat, Config, Latency, Progress, Report, Scenario, payload, run};
