//! `rnats-stream-bench db`: a throwaway PostgreSQL or MariaDB server (rnats-test-db: the
//! system's packages, a temporary directory, a free loopback port) for scripts that measure
//! or exercise the SQL store, such as `bench/persist.sh`.
//!
//! ```text
//! $ rnats-stream-bench db --kind postgres --durable
//! READY postgres 127.0.0.1:40123          (stdout; then one line per command read on stdin)
//! new         → SOURCE postgres host=127.0.0.1 port=40123 user=postgres dbname=t123_0 sslmode=disable
//! kill        → KILLED          (SIGKILL of every server process)
//! restart     → RESTARTED
//! EOF / quit  → the server is stopped and its directory removed
//! ```
//!
//! The databases are empty: create the schema with `rnats-streaming-server
//! --sql_create_schema --sql_driver D --sql_source S`.

use std::io::{BufRead as _, Write as _};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use rnats_test_db::{DbServer, Kind, Options};

/// Which database server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DbKind {
    Postgres,
    Mariadb,
}

impl DbKind {
    pub fn kind(self) -> Kind {
        match self {
            DbKind::Postgres => Kind::Postgres,
            DbKind::Mariadb => Kind::MariaDb,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct DbArgs {
    #[arg(long, value_enum, default_value = "postgres")]
    kind: DbKind,
    /// Commits reach the disk (PostgreSQL fsync=on, MariaDB innodb_flush_log_at_trx_commit=1);
    /// without it a commit reaches the kernel only (enough to survive kill -9, not power loss).
    #[arg(long)]
    durable: bool,
}

/// Starts a database server (see [`DbServer::start_with`]).
pub fn start(kind: DbKind, durable: bool) -> anyhow::Result<DbServer> {
    DbServer::start_with(kind.kind(), Options { durable })
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("starting a {} server", kind.kind()))
}

/// Runs the `db` command: serves commands from stdin until EOF.
pub fn run(a: &DbArgs) -> anyhow::Result<()> {
    let mut server = start(a.kind, a.durable)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {} 127.0.0.1:{}", server.driver(), server.port())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        match line.trim() {
            "" => continue,
            "new" => {
                let db = server
                    .create_database()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                writeln!(out, "SOURCE {} {}", server.driver(), server.source(&db))?;
            }
            "kill" => {
                server.kill();
                writeln!(out, "KILLED")?;
            }
            "restart" => {
                server.restart().map_err(|e| anyhow::anyhow!("{e}"))?;
                writeln!(out, "RESTARTED")?;
            }
            "quit" => break,
            other => bail!("unknown command {other:?} (new, kill, restart, quit)"),
        }
        out.flush()?;
    }
    Ok(())
}
