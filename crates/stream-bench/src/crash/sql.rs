//! The SQL store under the harness: the database (started for the run with rnats-test-db, or
//! given), its schema (created by the server binary's `--sql_create_schema`, so that command
//! is exercised too), and the database outage of `--db-kill-pct` rounds: SIGKILL of the
//! database during the load, a restart, and a probe that the server acknowledges again
//! without being restarted.

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use prost::Message as _;
use rnats_client::Request;
use rnats_streaming::proto::PubAck;
use rnats_test_db::DbServer;

use crate::stan::Stan;
use crate::{CrashArgs, nats};

/// The database of a SQL run.
pub(super) struct SqlDb {
    /// The server the harness started (None with --sql-source).
    pub(super) server: Option<Mutex<DbServer>>,
    pub(super) driver: String,
    pub(super) source: String,
}

impl SqlDb {
    /// The server's store arguments.
    pub(super) fn store_args(&self) -> Vec<String> {
        vec![
            "-st".into(),
            "SQL".into(),
            "--sql_driver".into(),
            self.driver.clone(),
            "--sql_source".into(),
            self.source.clone(),
        ]
    }

    /// A description for the run's header (no password: the harness's own databases have
    /// a fixed test account; a given source is not printed).
    pub(super) fn describe(&self) -> String {
        match &self.server {
            Some(s) => {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                format!(
                    "SQL on a {} started for the run (port {})",
                    s.kind(),
                    s.port()
                )
            }
            None => format!("SQL ({}) on the given --sql-source", self.driver),
        }
    }
}

/// Starts (or takes) the database and creates the schema with the server binary.
pub(super) fn setup(a: &CrashArgs) -> anyhow::Result<SqlDb> {
    let db = match &a.sql_source {
        Some(src) => SqlDb {
            server: None,
            driver: a.sql_driver.clone(),
            source: src.clone(),
        },
        None => {
            let s = crate::db::start(a.sql_db, a.sql_durable)?;
            let name = s.create_database().map_err(|e| anyhow::anyhow!("{e}"))?;
            SqlDb {
                driver: s.driver().to_string(),
                source: s.source(&name),
                server: Some(Mutex::new(s)),
            }
        }
    };
    let out = Command::new(&a.server_bin)
        .args(["--sql_create_schema", "--sql_driver", &db.driver])
        .args(["--sql_source", &db.source])
        .output()
        .with_context(|| format!("running {} --sql_create_schema", a.server_bin.display()))?;
    if !out.status.success() {
        bail!(
            "--sql_create_schema failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("crash: {}", String::from_utf8_lossy(&out.stdout).trim_end());
    Ok(db)
}

/// The outage of one round: kills the database, keeps it down for `down`, restarts it, then
/// publishes on `crash-probe` (a channel no check reads) through a session opened before the
/// kill until a PubAck without error comes. Returns the time from the restart to that ack.
pub(super) async fn outage(
    db: &SqlDb,
    addr: &str,
    cluster: &str,
    round: usize,
    down: Duration,
    wait: Duration,
) -> anyhow::Result<Duration> {
    let Some(server) = &db.server else {
        bail!("--db-kill-pct needs a database started by the harness (not --sql-source)");
    };
    let nc = nats::connect(addr, "crash-probe", false).await?;
    let stan = Stan::connect(nc, cluster, &format!("crash-probe-{round}"), wait).await?;
    let lock = || server.lock().unwrap_or_else(|e| e.into_inner());
    tokio::task::block_in_place(|| lock().kill());
    tokio::time::sleep(down).await;
    tokio::task::block_in_place(|| lock().restart()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let restarted = Instant::now();
    let subject = stan.pub_subject("crash-probe");
    let mut last_err = String::new();
    let mut i = 0u64;
    while restarted.elapsed() < wait {
        i += 1;
        let msg = stan.pub_msg(
            "crash-probe",
            format!("probe-{round}-{i}"),
            Bytes::from_static(b"probe"),
        );
        let r = stan
            .nc
            .send_request(
                &subject,
                Request::new().payload(msg).timeout(Duration::from_secs(2)),
            )
            .await;
        match r.map(|m| PubAck::decode(m.payload)) {
            Ok(Ok(ack)) if ack.error.is_empty() => {
                let took = restarted.elapsed();
                let _ = stan.close(wait).await;
                return Ok(took);
            }
            Ok(Ok(ack)) => last_err = ack.error,
            Ok(Err(e)) => last_err = format!("undecodable PubAck: {e}"),
            Err(e) => last_err = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no PubAck without error within {wait:?} of the database restart (last: {last_err})")
}
