//! The crash harness, short (5 rounds of kill -9), against the workspace's
//! rnats-streaming-server binary: every acknowledged message must survive and the durable
//! must resume without a gap; on the FILE store (single server, fault-tolerant pair,
//! 3-node cluster) and on the SQL store (PostgreSQL, with database kills).
//!
//! The server binary is `$RNATS_STREAMING_SERVER_BIN`, else `rnats-streaming-server` next to
//! this package's binary (`cargo build --workspace --bins` puts it there; CI does). Without it
//! the test is skipped, unless `CI` is set, where a missing binary fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn server_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RNATS_STREAMING_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    let tool = PathBuf::from(env!("CARGO_BIN_EXE_rnats-stream-bench"));
    let p = tool.parent()?.join("rnats-streaming-server");
    p.exists().then_some(p)
}

#[test]
fn crash_harness_ci() {
    run_mode("single", &[], 180);
}

#[test]
fn crash_harness_ci_fault_tolerant() {
    run_mode("ft", &[], 240);
}

#[test]
fn crash_harness_ci_cluster() {
    run_mode("cluster", &[], 300);
}

/// The SQL store on a PostgreSQL the harness starts (skipped when PostgreSQL is not
/// installed, unless `RNATS_REQUIRE_SQL=1`), its database killed and restarted in some rounds.
#[test]
fn crash_harness_ci_sql_postgres() {
    if std::env::var(rnats_test_db::REQUIRE_ENV).as_deref() != Ok("1")
        && let Err(e @ rnats_test_db::TestDbError::Missing { .. }) =
            rnats_test_db::DbServer::start(rnats_test_db::Kind::Postgres)
    {
        eprintln!("skipped: {e}");
        return;
    }
    run_mode(
        "single",
        &[
            "--store",
            "sql",
            "--sql-db",
            "postgres",
            "--db-kill-pct",
            "40",
        ],
        240,
    );
}

/// The core NATS server (ft and cluster modes): `rnats-server` beside the streaming server.
fn nats_bin(server: &std::path::Path) -> PathBuf {
    server.with_file_name("rnats-server")
}

fn run_mode(mode: &str, extra: &[&str], limit_secs: u64) {
    let Some(server) = server_bin() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "rnats-streaming-server binary not found (build it with cargo build --workspace --bins)"
        );
        eprintln!("skipped: no rnats-streaming-server binary next to rnats-stream-bench");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rnats-stream-bench"))
        .arg("crash")
        .arg("--ci")
        .arg("--mode")
        .arg(mode)
        .arg("--server-bin")
        .arg(&server)
        .arg("--nats-bin")
        .arg(nats_bin(&server))
        .arg("--dir")
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn rnats-stream-bench");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::Read as _;
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(limit_secs);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("crash harness ({mode}) did not finish within {limit_secs} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap_or_default();
    println!("{out}");
    assert!(
        status.success(),
        "crash harness ({mode}) failed ({status}); store and logs in {}:\n{out}",
        dir.keep().display()
    );
    assert!(out.contains("result: PASS"), "{out}");
}
