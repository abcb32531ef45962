//! The schema: the scripts shipped in `crates/streaming/sql/`, creating it on an empty
//! database, and checking at open that every table and column the store uses exists (so a
//! wrong database fails with the name of what is missing, not with the first failing
//! statement).

use std::collections::HashSet;

use super::SqlError;
use super::db::Ctx;
use super::driver::SqlDriver;
use super::queries::Q;

/// The PostgreSQL schema script.
pub const POSTGRES_SCHEMA: &str = include_str!("../../../sql/postgres.db.sql");
/// The MySQL/MariaDB schema script.
pub const MYSQL_SCHEMA: &str = include_str!("../../../sql/mysql.db.sql");

/// Every table the store uses, with its columns (as named by the reference schema).
pub(crate) const TABLES: &[(&str, &[&str])] = &[
    ("ServerInfo", &["uniquerow", "id", "proto", "version"]),
    ("Clients", &["id", "hbinbox", "proto"]),
    (
        "Channels",
        &[
            "id", "name", "maxseq", "maxmsgs", "maxbytes", "maxage", "deleted",
        ],
    ),
    ("Messages", &["id", "seq", "timestamp", "size", "data"]),
    (
        "Subscriptions",
        &["id", "subid", "lastsent", "proto", "deleted"],
    ),
    (
        "SubsPending",
        &["subid", "row", "seq", "lastsent", "pending", "acks"],
    ),
    ("StoreLock", &["id", "tick"]),
];

/// The schema script of `driver`.
pub fn schema_script(driver: SqlDriver) -> &'static str {
    match driver {
        SqlDriver::Postgres => POSTGRES_SCHEMA,
        SqlDriver::Mysql => MYSQL_SCHEMA,
    }
}

/// The script's file name under `crates/streaming/sql/`.
pub(crate) fn script_name(driver: SqlDriver) -> &'static str {
    match driver {
        SqlDriver::Postgres => "postgres.db.sql",
        SqlDriver::Mysql => "mysql.db.sql",
    }
}

/// The statements of a script: `--` comment lines dropped, split at `;`.
pub(crate) fn statements(script: &str) -> Vec<String> {
    let body: String = script
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    body.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Runs the schema script (idempotent: existing tables are left alone).
pub(crate) async fn create(cx: &Ctx, driver: SqlDriver) -> Result<(), SqlError> {
    let stmts = statements(schema_script(driver));
    cx.with_conn(async |c| {
        for s in &stmts {
            c.simple(s).await?;
        }
        Ok(())
    })
    .await
}

/// The largest stored message PostgreSQL takes (`bytea` values are limited to 1 GiB).
const PG_MAX_MESSAGE: u64 = (1 << 30) - 1;
/// Room left in a MySQL packet for the rest of an `INSERT` besides the message.
const MY_PACKET_OVERHEAD: u64 = 4096;

/// Checks that every table and column exists. Returns the largest encoded message the
/// `Messages.data` column (and, for MySQL, `max_allowed_packet`) can take.
pub(crate) async fn check(cx: &Ctx, driver: SqlDriver) -> Result<u64, SqlError> {
    let (cols_q, db_q) = (cx.q.sql(Q::SchemaColumns), cx.q.sql(Q::CurrentDatabase));
    let (rows, mut db) = cx
        .with_conn(async |c| {
            let rows = c.query(&cols_q, &[]).await?;
            let db = c.query(&db_q, &[]).await?;
            Ok((rows, db))
        })
        .await?;
    let database = db
        .first_mut()
        .and_then(|r| r.text(0).ok().flatten())
        .unwrap_or_default();
    let packet = db
        .first()
        .and_then(|r| r.opt_int(1).ok().flatten())
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0);
    let mut have = HashSet::new();
    let mut data_max = None;
    for mut r in rows {
        let t = r.text(0).ok().flatten().unwrap_or_default();
        let c = r.text(1).ok().flatten().unwrap_or_default();
        let (t, c) = (t.to_ascii_lowercase(), c.to_ascii_lowercase());
        if t == "messages" && c == "data" {
            data_max = r
                .opt_int(2)
                .ok()
                .flatten()
                .and_then(|v| u64::try_from(v).ok());
        }
        have.insert((t, c));
    }
    let tables: HashSet<&str> = have.iter().map(|(t, _)| t.as_str()).collect();
    let script = script_name(driver);
    for (table, columns) in TABLES {
        let lt = table.to_ascii_lowercase();
        if !tables.contains(lt.as_str()) {
            return Err(SqlError::MissingTable {
                database,
                table,
                script,
            });
        }
        for column in *columns {
            if !have.contains(&(lt.clone(), column.to_ascii_lowercase())) {
                return Err(SqlError::MissingColumn {
                    database,
                    table,
                    column,
                    script,
                });
            }
        }
    }
    Ok(match driver {
        SqlDriver::Postgres => data_max.unwrap_or(PG_MAX_MESSAGE).min(PG_MAX_MESSAGE),
        SqlDriver::Mysql => {
            let col = data_max.unwrap_or(u64::MAX);
            let pkt = match packet {
                0 => u64::MAX,
                p => p.saturating_sub(MY_PACKET_OVERHEAD),
            };
            col.min(pkt)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_create_every_table_and_column() {
        for driver in [SqlDriver::Postgres, SqlDriver::Mysql] {
            let stmts = statements(schema_script(driver));
            for (table, columns) in TABLES {
                let create = stmts
                    .iter()
                    .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS {table} (")))
                    .unwrap_or_else(|| panic!("{driver}: no CREATE TABLE {table}"));
                for c in *columns {
                    assert!(
                        create.lines().any(|l| {
                            let w = l.trim().trim_start_matches('`');
                            w.starts_with(&format!("{c} ")) || w.starts_with(&format!("{c}` "))
                        }),
                        "{driver}: {table}.{c}"
                    );
                }
            }
            assert!(stmts.iter().all(|s| !s.contains("--")), "{driver}");
        }
        assert_eq!(statements(POSTGRES_SCHEMA).len(), 10);
        assert_eq!(statements(MYSQL_SCHEMA).len(), 7);
    }
}
