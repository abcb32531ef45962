//! The SQL store's options, as nats-streaming-server takes them: the `--sql_*` flags and the
//! `sql` / `sql_options` configuration block, kept as given (the driver name unparsed) until
//! [`SqlOptions::store_options`] checks them for `-st SQL` or `--sql_create_schema`.

use std::fmt;

use rnats_conf::{ConfError, Map, Spanned, Value};
use rnats_streaming::store::sql::{SqlDriver, SqlStoreOptions};

use super::OptionsError;
use super::file::{conf_bool, conf_int, conf_str};

/// `--sql_driver`, `--sql_source`, `--sql_no_caching`, `--sql_max_open_conns`,
/// `--sql_bulk_insert_limit` (or the same keys in the `sql_options` block).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SqlOptions {
    /// `postgres` or `mysql` (empty: not given).
    pub driver: String,
    /// The data source in the driver's form (may hold a password: never printed).
    pub source: String,
    pub no_caching: bool,
    /// 0 or less: unlimited, as in Go's `database/sql`.
    pub max_open_conns: i64,
    /// Below 5: one `INSERT` per message. Not given: the store's default
    /// (`rnats_streaming::store::sql::DEFAULT_BULK_INSERT_LIMIT` rows per `INSERT`).
    pub bulk_insert_limit: Option<i64>,
}

impl fmt::Debug for SqlOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlOptions")
            .field("driver", &self.driver)
            .field("source", &if self.source.is_empty() { "" } else { "<set>" })
            .field("no_caching", &self.no_caching)
            .field("max_open_conns", &self.max_open_conns)
            .field("bulk_insert_limit", &self.bulk_insert_limit)
            .finish()
    }
}

impl SqlOptions {
    /// The store's options, or which of driver and source is missing or wrong.
    pub fn store_options(&self) -> Result<SqlStoreOptions, OptionsError> {
        if self.driver.trim().is_empty() {
            return Err(OptionsError::SqlDriverMissing);
        }
        let driver: SqlDriver = self
            .driver
            .trim()
            .parse()
            .map_err(|_| OptionsError::SqlDriver(self.driver.clone()))?;
        if self.source.trim().is_empty() {
            return Err(OptionsError::SqlSourceMissing);
        }
        let mut o = SqlStoreOptions::new(driver, self.source.trim());
        o.no_caching = self.no_caching;
        o.max_open_conns = usize::try_from(self.max_open_conns.max(0)).unwrap_or(0);
        if let Some(limit) = self.bulk_insert_limit {
            o.bulk_insert_limit = usize::try_from(limit.max(0)).unwrap_or(0);
        }
        Ok(o)
    }

    /// Applies one streaming flag if it is an SQL one; false when it is not.
    pub(super) fn apply_flag(&mut self, name: &str, v: &str) -> Result<bool, OptionsError> {
        let int = || {
            v.trim().parse::<i64>().map_err(|_| {
                OptionsError::Flag(rnats_server::flags::FlagError::InvalidValue {
                    flag: name.into(),
                    value: v.into(),
                })
            })
        };
        match name {
            "sql_driver" => self.driver = v.to_string(),
            "sql_source" => self.source = v.to_string(),
            "sql_no_caching" => self.no_caching = v == "true",
            "sql_max_open_conns" => self.max_open_conns = int()?,
            "sql_bulk_insert_limit" => self.bulk_insert_limit = Some(int()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Applies the `sql` / `sql_options` block: keys case-insensitive, unknown keys ignored
    /// (as the reference does).
    pub(super) fn apply_config(&mut self, v: &Spanned) -> Result<(), ConfError> {
        let Some(map) = v.as_map() else {
            return Err(v.error(format!(
                "expected SQL options to be a map/struct, got {}",
                shown(v)
            )));
        };
        self.apply_map(map)
    }

    fn apply_map(&mut self, map: &Map) -> Result<(), ConfError> {
        for entry in map {
            let key = entry.key.to_ascii_lowercase();
            let v = &entry.value;
            match key.as_str() {
                "driver" => self.driver = conf_str(&key, v)?,
                "source" => self.source = conf_str(&key, v)?,
                "no_caching" => self.no_caching = conf_bool(&key, v)?,
                "max_open_conns" | "max_conns" => self.max_open_conns = conf_int(&key, v)?,
                "bulk_insert_limit" => self.bulk_insert_limit = Some(conf_int(&key, v)?),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A value as Go's `%v` would show it (scalars as written, containers by kind).
fn shown(v: &Spanned) -> String {
    match &v.value {
        Value::String(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::DateTime(d) => d.clone(),
        other => other.type_name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::CommandLine;
    use rnats_streaming::store::StoreKind;

    fn parse(args: &[&str]) -> Result<crate::Options, String> {
        CommandLine::parse(args.iter().map(|s| s.to_string()))
            .map_err(OptionsError::from)
            .and_then(|cl| cl.options())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags_set_every_sql_option() {
        let o = parse(&[
            "-st",
            "sql",
            "--sql_driver",
            "postgres",
            "--sql_source",
            "host=h dbname=d",
            "--sql_no_caching",
            "--sql_max_open_conns",
            "7",
            "--sql_bulk_insert_limit=100",
        ])
        .unwrap();
        assert_eq!(o.store_type, StoreKind::Sql);
        let s = o.sql.store_options().unwrap();
        assert_eq!(s.driver, SqlDriver::Postgres);
        assert_eq!(s.source, "host=h dbname=d");
        assert!(s.no_caching);
        assert_eq!((s.max_open_conns, s.bulk_insert_limit), (7, 100));
        // Negative counts mean "unlimited" / "one row per INSERT", as in the reference.
        let o = parse(&[
            "-st",
            "SQL",
            "--sql_driver=mysql",
            "--sql_source=u:p@tcp(h:1)/d",
            "--sql_max_open_conns=-1",
            "--sql_bulk_insert_limit=-3",
        ])
        .unwrap();
        let s = o.sql.store_options().unwrap();
        assert_eq!(s.driver, SqlDriver::Mysql);
        assert_eq!((s.max_open_conns, s.bulk_insert_limit), (0, 0));
        // Not given: multi-row inserts (the reference inserts one row per statement).
        let o = parse(&[
            "-st",
            "SQL",
            "--sql_driver=mysql",
            "--sql_source=u:p@tcp(h:1)/d",
        ])
        .unwrap();
        let s = o.sql.store_options().unwrap();
        assert_eq!(
            s.bulk_insert_limit,
            rnats_streaming::store::sql::DEFAULT_BULK_INSERT_LIMIT
        );
        assert!(!s.no_caching);
        // The password never shows in the options' debug form.
        assert!(!format!("{o:?}").contains("u:p@"), "{o:?}");
    }

    #[test]
    fn sql_store_needs_a_known_driver_and_a_source() {
        let e = parse(&["-st", "SQL"]).unwrap_err();
        assert!(e.contains("SQL driver must be specified"), "{e}");
        assert!(e.contains("--sql_driver"), "{e}");
        let e = parse(&["-st", "SQL", "--sql_driver", "postgres"]).unwrap_err();
        assert!(e.contains("SQL source must be specified"), "{e}");
        let e = parse(&["-st", "SQL", "--sql_driver", "oracle", "--sql_source", "x"]).unwrap_err();
        assert!(e.contains("\"oracle\"") && e.contains("postgres"), "{e}");
        let e = parse(&["--sql_max_open_conns", "many"]).unwrap_err();
        assert!(e.contains("many"), "{e}");
        // SQL flags without -st SQL are accepted (and unused), as by the reference.
        assert!(parse(&["--sql_driver", "postgres"]).is_ok());
        // FT on SQL passes the option checks.
        assert!(
            parse(&[
                "-st",
                "SQL",
                "--sql_driver",
                "postgres",
                "--sql_source",
                "x",
                "--ft_group",
                "g"
            ])
            .is_ok()
        );
    }

    #[test]
    fn config_block_under_both_names() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (block, conns)) in [("sql_options", "max_open_conns"), ("SQL", "max_conns")]
            .iter()
            .enumerate()
        {
            let path = dir.path().join(format!("c{i}.conf"));
            std::fs::write(
                &path,
                format!(
                    "streaming {{\n  store: sql\n  {block} {{\n    DRIVER: mysql\n    source: \"u:p@tcp(127.0.0.1:3306)/nss\"\n    no_caching: true\n    {conns}: 5\n    bulk_insert_limit: 50\n    other: 1\n  }}\n}}\n"
                ),
            )
            .unwrap();
            let o = parse(&["-sc", path.to_str().unwrap()]).unwrap();
            assert_eq!(o.store_type, StoreKind::Sql);
            let s = o.sql.store_options().unwrap();
            assert_eq!(s.driver, SqlDriver::Mysql);
            assert_eq!(s.source, "u:p@tcp(127.0.0.1:3306)/nss");
            assert!(s.no_caching);
            assert_eq!((s.max_open_conns, s.bulk_insert_limit), (5, 50));
            // The command line wins over the file.
            let o = parse(&[
                "-sc",
                path.to_str().unwrap(),
                "--sql_driver",
                "postgres",
                "--sql_no_caching=false",
            ])
            .unwrap();
            assert_eq!(o.sql.driver, "postgres");
            assert!(!o.sql.no_caching);
        }
    }

    #[test]
    fn config_block_errors_in_the_references_words() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "sql_options: true",
                "expected SQL options to be a map/struct, got true",
            ),
            (
                "sql: \"x\"",
                "expected SQL options to be a map/struct, got x",
            ),
            (
                "sql { no_caching: \"yes please\" }",
                "parameter \"no_caching\" value is expected to be bool, got string",
            ),
            (
                "sql { max_conns: true }",
                "parameter \"max_conns\" value is expected to be int64, got boolean",
            ),
            (
                "sql { driver: [1] }",
                "parameter \"driver\" value is expected to be string, got array",
            ),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("e{i}.conf"));
            std::fs::write(&path, format!("streaming {{ {text} }}\n")).unwrap();
            let e = parse(&["-sc", path.to_str().unwrap()]).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
