//! SQL store helpers: throwaway databases (rnats-test-db; skipped when PostgreSQL or MariaDB
//! is not installed, unless `RNATS_REQUIRE_SQL=1`) with the schema created by the binary's
//! own `--sql_create_schema`, and the server arguments that point at them.

use std::process::Command;

#[allow(unused_imports)]
pub use rnats_test_db::{DbServer, Kind};

/// A database on a server, with the store's arguments for it.
pub struct SqlDb<'a> {
    pub server: &'a DbServer,
    pub name: String,
}

impl SqlDb<'_> {
    pub fn source(&self) -> String {
        self.server.source(&self.name)
    }

    /// `-st SQL --sql_driver D --sql_source S`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "-st".into(),
            "SQL".into(),
            "--sql_driver".into(),
            self.server.driver().into(),
            "--sql_source".into(),
            self.source(),
        ]
    }

    /// Runs SQL in this database through the command-line client.
    pub fn sql(&self, s: &str) -> String {
        self.server
            .sql(&self.name, s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .trim()
            .to_string()
    }
}

/// A new database on `server`, with the schema when `schema` (created by
/// `rnats-streaming-server --sql_create_schema`, whose output is checked).
pub fn new_db(server: &DbServer, schema: bool) -> SqlDb<'_> {
    let name = server.create_database().expect("create a database");
    let db = SqlDb { server, name };
    if schema {
        let out = create_schema(server.driver(), &db.source());
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("CREATE TABLE IF NOT EXISTS StoreLock"),
            "{text}"
        );
    }
    db
}

/// `rnats-streaming-server --sql_create_schema --sql_driver D --sql_source S`.
pub fn create_schema(driver: &str, source: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rnats-streaming-server"))
        .args(["--sql_create_schema", "--sql_driver", driver])
        .args(["--sql_source", source])
        .output()
        .expect("run rnats-streaming-server --sql_create_schema")
}

/// The `&str` view of owned arguments, for `ServerProc`.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
