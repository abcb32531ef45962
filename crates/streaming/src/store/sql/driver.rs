//! The two database clients behind one small interface: connect, run a list of statements
//! (in a transaction or not), query rows. Statements are written once in MySQL's dialect
//! (`?` placeholders, `` `row` ``) and translated for PostgreSQL ([`translate`]).
//!
//! * PostgreSQL (tokio-postgres): statements are prepared once per connection and cached;
//!   the statements of a plan are pipelined (sent together, one round trip for all).
//! * MySQL/MariaDB (mysql_async): the client caches prepared statements itself; the
//!   statements of a plan run one after the other.
//!
//! Parameters are owned values ([`V`]); PostgreSQL integers are written in the width the
//! server expects for that parameter (`INTEGER` or `BIGINT` columns alike), so callers need
//! not care which columns are which.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mysql_async::prelude::Queryable as _;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::SqlError;
use super::dsn::{self, MyAddr};

/// The database flavour (`sql_driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlDriver {
    Postgres,
    Mysql,
}

impl SqlDriver {
    /// `"postgres"` or `"mysql"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SqlDriver::Postgres => "postgres",
            SqlDriver::Mysql => "mysql",
        }
    }
}

impl FromStr for SqlDriver {
    type Err = SqlError;

    fn from_str(s: &str) -> Result<Self, SqlError> {
        match s.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(SqlDriver::Postgres),
            "mysql" | "mariadb" => Ok(SqlDriver::Mysql),
            _ => Err(SqlError::UnknownDriver(s.to_owned())),
        }
    }
}

impl fmt::Display for SqlDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rewrites a statement written for MySQL into PostgreSQL's dialect: `?` → `$1, $2, ...`,
/// `` `row` `` → `row`.
pub(crate) fn translate(driver: SqlDriver, sql: &str) -> String {
    if driver == SqlDriver::Mysql {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        match c {
            '?' => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            '`' => {}
            c => out.push(c),
        }
    }
    out
}

/// A statement parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum V {
    Int(i64),
    Str(String),
    Bytes(Bytes),
    Null,
}

impl From<i64> for V {
    fn from(v: i64) -> Self {
        V::Int(v)
    }
}

impl From<u64> for V {
    fn from(v: u64) -> Self {
        V::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<&str> for V {
    fn from(v: &str) -> Self {
        V::Str(v.to_owned())
    }
}

impl From<Bytes> for V {
    fn from(v: Bytes) -> Self {
        V::Bytes(v)
    }
}

impl From<Option<Bytes>> for V {
    fn from(v: Option<Bytes>) -> Self {
        v.map_or(V::Null, V::Bytes)
    }
}

impl ToSql for V {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            V::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => Err(format!("integer parameter for a column of type {ty}").into()),
            },
            V::Str(s) => s.as_str().to_sql(ty, out),
            V::Bytes(b) => match *ty {
                Type::BYTEA => b.as_ref().to_sql(ty, out),
                _ => Err(format!("bytes parameter for a column of type {ty}").into()),
            },
            V::Null => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`, which knows the variant.
        true
    }

    to_sql_checked!();
}

impl V {
    fn to_mysql(&self) -> mysql_async::Value {
        match self {
            V::Int(v) => mysql_async::Value::Int(*v),
            V::Str(s) => mysql_async::Value::Bytes(s.as_bytes().to_vec()),
            V::Bytes(b) => mysql_async::Value::Bytes(b.to_vec()),
            V::Null => mysql_async::Value::NULL,
        }
    }
}

/// A statement's text: a fixed one, or one built at run time (bulk inserts).
pub(crate) type Sql = Arc<str>;

/// One statement with its parameters.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub sql: Sql,
    pub params: Vec<V>,
}

/// A failure of one database call. `broken` means the connection cannot be used again.
#[derive(Debug)]
pub(crate) struct DbFail {
    pub statement: String,
    pub message: String,
    pub broken: bool,
    /// The statement failed on a unique key already in place (and wrote nothing).
    pub duplicate: bool,
}

impl DbFail {
    pub fn into_error(self) -> SqlError {
        SqlError::Statement {
            statement: self.statement,
            message: self.message,
        }
    }
}

/// A result row.
pub(crate) enum Row {
    Pg(tokio_postgres::Row),
    My(mysql_async::Row),
}

impl Row {
    /// An integer column (NULL is an error).
    pub fn int(&self, i: usize) -> Result<i64, String> {
        self.opt_int(i)?
            .ok_or_else(|| format!("column {i} is NULL"))
    }

    /// An integer column, `None` for NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, String> {
        match self {
            Row::Pg(r) => {
                let ty = r
                    .columns()
                    .get(i)
                    .ok_or_else(|| format!("no column {i}"))?
                    .type_()
                    .clone();
                let e = |e: tokio_postgres::Error| e.to_string();
                Ok(match ty {
                    Type::INT8 => r.try_get::<_, Option<i64>>(i).map_err(e)?,
                    Type::INT4 => r.try_get::<_, Option<i32>>(i).map_err(e)?.map(i64::from),
                    Type::INT2 => r.try_get::<_, Option<i16>>(i).map_err(e)?.map(i64::from),
                    Type::BOOL => r.try_get::<_, Option<bool>>(i).map_err(e)?.map(i64::from),
                    t => return Err(format!("column {i} has type {t}, not an integer")),
                })
            }
            Row::My(r) => match r.as_ref(i) {
                None => Err(format!("no column {i}")),
                Some(mysql_async::Value::NULL) => Ok(None),
                Some(mysql_async::Value::Int(v)) => Ok(Some(*v)),
                Some(mysql_async::Value::UInt(v)) => i64::try_from(*v)
                    .map(Some)
                    .map_err(|_| format!("column {i}: {v} is too large")),
                // DECIMAL (SUM) and text-protocol results.
                Some(mysql_async::Value::Bytes(b)) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.split('.').next())
                    .and_then(|s| s.parse::<i64>().ok())
                    .map(Some)
                    .ok_or_else(|| format!("column {i} is not an integer")),
                Some(v) => Err(format!("column {i} is not an integer: {v:?}")),
            },
        }
    }

    /// A binary or text column as bytes, `None` for NULL.
    pub fn bytes(&mut self, i: usize) -> Result<Option<Bytes>, String> {
        match self {
            Row::Pg(r) => {
                let ty = r
                    .columns()
                    .get(i)
                    .ok_or_else(|| format!("no column {i}"))?
                    .type_()
                    .clone();
                if ty == Type::BYTEA {
                    r.try_get::<_, Option<&[u8]>>(i)
                        .map(|o| o.map(Bytes::copy_from_slice))
                        .map_err(|e| e.to_string())
                } else {
                    r.try_get::<_, Option<&str>>(i)
                        .map(|o| o.map(|s| Bytes::copy_from_slice(s.as_bytes())))
                        .map_err(|e| e.to_string())
                }
            }
            Row::My(r) => match r.take::<mysql_async::Value, _>(i) {
                None => Err(format!("no column {i}")),
                Some(mysql_async::Value::NULL) => Ok(None),
                Some(mysql_async::Value::Bytes(b)) => Ok(Some(Bytes::from(b))),
                Some(v) => Err(format!("column {i} is not binary: {v:?}")),
            },
        }
    }

    /// A text column, `None` for NULL.
    pub fn text(&mut self, i: usize) -> Result<Option<String>, String> {
        match self.bytes(i)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b.to_vec())
                .map(Some)
                .map_err(|_| format!("column {i} is not UTF-8")),
        }
    }
}

/// How to connect (a parsed data source).
#[derive(Debug, Clone)]
pub(crate) enum ConnCfg {
    Pg(Box<tokio_postgres::Config>),
    My(Box<mysql_async::Opts>),
}

/// The default time allowed to connect when the data source does not say.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed data source: how to connect, what to call it in errors, how long connecting may
/// take.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub driver: SqlDriver,
    pub cfg: ConnCfg,
    pub target: String,
    pub connect_timeout: Duration,
}

impl Source {
    /// Parses `source` for `driver`.
    pub fn parse(driver: SqlDriver, source: &str) -> Result<Source, SqlError> {
        let invalid = |reason: String| SqlError::InvalidSource {
            driver: driver.as_str(),
            reason,
        };
        match driver {
            SqlDriver::Postgres => {
                let d = dsn::parse_pg(source).map_err(invalid)?;
                let mut c = tokio_postgres::Config::new();
                if d.hosts.is_empty() {
                    c.host("localhost");
                }
                for h in &d.hosts {
                    if h.starts_with('/') {
                        c.host_path(h);
                    } else {
                        c.host(h);
                    }
                }
                for p in &d.ports {
                    c.port(*p);
                }
                let user = d
                    .user
                    .clone()
                    .or_else(|| std::env::var("PGUSER").ok())
                    .or_else(|| std::env::var("USER").ok())
                    .unwrap_or_else(|| "postgres".to_owned());
                c.user(&user);
                if let Some(p) = &d.password {
                    c.password(p);
                }
                c.dbname(d.dbname.as_deref().unwrap_or(&user));
                c.application_name(d.application_name.as_deref().unwrap_or("rnats-streaming"));
                if !d.options.is_empty() {
                    c.options(d.options.join(" "));
                }
                c.keepalives(true);
                let timeout = d.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
                c.connect_timeout(timeout);
                Ok(Source {
                    driver,
                    target: d.describe(),
                    cfg: ConnCfg::Pg(Box::new(c)),
                    connect_timeout: timeout,
                })
            }
            SqlDriver::Mysql => {
                let d = dsn::parse_mysql(source).map_err(invalid)?;
                let mut b = mysql_async::OptsBuilder::default()
                    .user(Some(d.user.clone()).filter(|u| !u.is_empty()))
                    .pass(d.password.clone())
                    .db_name(Some(d.dbname.clone()).filter(|n| !n.is_empty()))
                    .init(my_init(&d.init))
                    .prefer_socket(false)
                    .tcp_keepalive(Some(Duration::from_secs(30)))
                    // Affected rows must count only rows changed: an idempotent insert that
                    // finds a row then reports 0, which is how verify.rs notices it.
                    .client_found_rows(false)
                    .stmt_cache_size(64);
                b = match &d.addr {
                    MyAddr::Tcp { host, port } => b.ip_or_hostname(host.clone()).tcp_port(*port),
                    MyAddr::Unix(p) => b.socket(Some(p.clone())),
                };
                Ok(Source {
                    driver,
                    target: d.describe(),
                    cfg: ConnCfg::My(Box::new(b.into())),
                    connect_timeout: d.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                })
            }
        }
    }

    /// Opens a connection (must run on the store's runtime: PostgreSQL spawns its connection
    /// task there).
    pub async fn connect(&self) -> Result<Conn, String> {
        let fut = async {
            match &self.cfg {
                ConnCfg::Pg(c) => {
                    let (client, conn) = c
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(|e| pg_message(&e))?;
                    tokio::task::spawn_local(async move {
                        // Ends when the client is dropped or the server goes away; the client
                        // reports the latter as "closed" on its next call.
                        let _ = conn.await;
                    });
                    Ok(Conn::Pg {
                        client,
                        stmts: HashMap::new(),
                    })
                }
                ConnCfg::My(o) => mysql_async::Conn::new((**o).clone())
                    .await
                    .map(|c| Conn::My(Box::new(c), false))
                    .map_err(|e| e.to_string()),
            }
        };
        match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {:?} (connect timeout)",
                self.connect_timeout
            )),
        }
    }
}

/// A PostgreSQL error with its server-side detail, if any.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match e.source() {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

/// One open connection.
pub(crate) enum Conn {
    Pg {
        client: tokio_postgres::Client,
        /// Statements prepared on this connection, by text.
        stmts: HashMap<Sql, tokio_postgres::Statement>,
    },
    /// The flag says the connection failed below SQL (I/O, protocol) and must not be reused.
    My(Box<mysql_async::Conn>, bool),
}

fn pg_fail(sql: &str, e: &tokio_postgres::Error) -> DbFail {
    DbFail {
        statement: sql.to_owned(),
        message: pg_message(e),
        broken: e.as_db_error().is_none(),
        duplicate: e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
    }
}

/// The statements a new MySQL connection runs: parameters arrive as binary strings (the
/// message data is a blob; parameters in the connection's utf8mb4 made MariaDB scan every
/// byte of every message for its characters, 20 % of its CPU under 1 KiB messages; text
/// columns still store and compare in their own character set), then the source's own.
fn my_init(source: &[String]) -> Vec<String> {
    let mut init = vec!["SET character_set_client=binary".to_owned()];
    init.extend(source.iter().cloned());
    init
}

/// MySQL's ER_DUP_ENTRY.
const MY_DUP_ENTRY: u16 = 1062;

fn my_fail(sql: &str, e: mysql_async::Error) -> DbFail {
    DbFail {
        statement: sql.to_owned(),
        duplicate: matches!(&e, mysql_async::Error::Server(s) if s.code == MY_DUP_ENTRY),
        broken: !matches!(e, mysql_async::Error::Server(_)),
        message: e.to_string(),
    }
}

impl Conn {
    /// Whether the connection failed below SQL and must be dropped.
    pub fn is_broken(&self) -> bool {
        match self {
            Conn::Pg { client, .. } => client.is_closed(),
            Conn::My(_, broken) => *broken,
        }
    }

    async fn pg_prepare(&mut self, sql: &Sql) -> Result<tokio_postgres::Statement, DbFail> {
        let Conn::Pg { client, stmts } = self else {
            unreachable!("pg_prepare on a MySQL connection")
        };
        if let Some(s) = stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = client.prepare(sql).await.map_err(|e| pg_fail(sql, &e))?;
        // Dynamic statements (bulk inserts of many sizes) must not pile up forever.
        if stmts.len() >= 256 {
            stmts.clear();
        }
        stmts.insert(sql.clone(), s.clone());
        Ok(s)
    }

    /// Runs a statement with no parameters through the simple protocol (transaction control,
    /// DDL).
    pub async fn simple(&mut self, sql: &str) -> Result<(), DbFail> {
        match self {
            Conn::Pg { client, .. } => client
                .batch_execute(sql)
                .await
                .map_err(|e| pg_fail(sql, &e)),
            Conn::My(c, broken) => c.query_drop(sql).await.map_err(|e| {
                let f = my_fail(sql, e);
                *broken |= f.broken;
                f
            }),
        }
    }

    /// Runs `stmts` in order, in one transaction when `tx` (committed before returning `Ok`).
    /// Returns the number of rows each statement affected. On error the transaction is rolled
    /// back (or the connection marked broken).
    pub async fn run(&mut self, stmts: &[Stmt], tx: bool) -> Result<Vec<u64>, DbFail> {
        if tx {
            self.simple("BEGIN").await?;
        }
        let r = self.run_stmts(stmts).await;
        match r {
            Ok(counts) => {
                if tx {
                    self.simple("COMMIT").await?;
                }
                Ok(counts)
            }
            Err(f) => {
                if tx && !self.is_broken() && self.simple("ROLLBACK").await.is_err() {
                    self.mark_broken();
                }
                Err(f)
            }
        }
    }

    fn mark_broken(&mut self) {
        if let Conn::My(_, b) = self {
            *b = true;
        }
        // A PostgreSQL connection that cannot roll back has failed, and says so itself.
    }

    async fn run_stmts(&mut self, stmts: &[Stmt]) -> Result<Vec<u64>, DbFail> {
        if stmts.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Conn::Pg { .. } => {
                let mut prepared = Vec::with_capacity(stmts.len());
                for s in stmts {
                    prepared.push(self.pg_prepare(&s.sql).await?);
                }
                let Conn::Pg { client, .. } = self else {
                    unreachable!()
                };
                let client = &*client;
                let params: Vec<Vec<&(dyn ToSql + Sync)>> = stmts
                    .iter()
                    .map(|s| s.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect())
                    .collect();
                // Pipelined: every statement is sent before the first answer is awaited.
                let futs = prepared
                    .iter()
                    .zip(&params)
                    .map(|(st, ps)| client.execute(st, ps));
                let results = futures_util::future::join_all(futs).await;
                let mut out = Vec::with_capacity(results.len());
                for (r, s) in results.into_iter().zip(stmts) {
                    out.push(r.map_err(|e| pg_fail(&s.sql, &e))?);
                }
                Ok(out)
            }
            Conn::My(c, broken) => {
                let mut out = Vec::with_capacity(stmts.len());
                for s in stmts {
                    let params: Vec<mysql_async::Value> =
                        s.params.iter().map(V::to_mysql).collect();
                    let r = if params.is_empty() {
                        c.query_drop(&*s.sql).await
                    } else {
                        c.exec_drop(&*s.sql, mysql_async::Params::Positional(params))
                            .await
                    };
                    if let Err(e) = r {
                        let f = my_fail(&s.sql, e);
                        *broken |= f.broken;
                        return Err(f);
                    }
                    out.push(c.affected_rows());
                }
                Ok(out)
            }
        }
    }

    /// Runs a query and returns its rows.
    pub async fn query(&mut self, sql: &Sql, params: &[V]) -> Result<Vec<Row>, DbFail> {
        match self {
            Conn::Pg { .. } => {
                let st = self.pg_prepare(sql).await?;
                let Conn::Pg { client, .. } = self else {
                    unreachable!()
                };
                let ps: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let rows = client.query(&st, &ps).await.map_err(|e| pg_fail(sql, &e))?;
                Ok(rows.into_iter().map(Row::Pg).collect())
            }
            Conn::My(c, broken) => {
                let r = if params.is_empty() {
                    c.query::<mysql_async::Row, _>(&**sql).await
                } else {
                    let ps: Vec<mysql_async::Value> = params.iter().map(V::to_mysql).collect();
                    c.exec::<mysql_async::Row, _, _>(&**sql, mysql_async::Params::Positional(ps))
                        .await
                };
                match r {
                    Ok(rows) => Ok(rows.into_iter().map(Row::My).collect()),
                    Err(e) => {
                        let f = my_fail(sql, e);
                        *broken |= f.broken;
                        Err(f)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects() {
        let s = "INSERT INTO SubsPending (subid, `row`, seq) VALUES (?, ?, ?)";
        assert_eq!(translate(SqlDriver::Mysql, s), s);
        assert_eq!(
            translate(SqlDriver::Postgres, s),
            "INSERT INTO SubsPending (subid, row, seq) VALUES ($1, $2, $3)"
        );
        assert_eq!(
            "Postgres".parse::<SqlDriver>().unwrap(),
            SqlDriver::Postgres
        );
        assert_eq!("mysql".parse::<SqlDriver>().unwrap(), SqlDriver::Mysql);
        assert_eq!(
            "sqlite".parse::<SqlDriver>().unwrap_err().to_string(),
            "unsupported SQL driver \"sqlite\" (use \"postgres\" or \"mysql\")"
        );
    }

    #[test]
    fn sources_hide_passwords() {
        let s = Source::parse(
            SqlDriver::Postgres,
            "host=h port=1 user=u password=secret dbname=d connect_timeout=2",
        )
        .unwrap();
        assert_eq!(s.target, "host=h port=1 user=u dbname=d");
        assert_eq!(s.connect_timeout, Duration::from_secs(2));
        let s = Source::parse(SqlDriver::Mysql, "u:secret@tcp(h:1)/d?timeout=250ms").unwrap();
        assert_eq!(s.target, "u@tcp(h:1)/d");
        assert_eq!(s.connect_timeout, Duration::from_millis(250));
        let e = Source::parse(SqlDriver::Mysql, "nonsense").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid SQL source for driver mysql: missing the slash separating the database name"
        );
    }

    #[test]
    fn integer_params_fit_the_column() {
        let mut out = BytesMut::new();
        V::Int(7).to_sql(&Type::INT4, &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 7]);
        out.clear();
        V::Int(7).to_sql(&Type::INT8, &mut out).unwrap();
        assert_eq!(out.len(), 8);
        assert!(V::Int(1 << 40).to_sql(&Type::INT4, &mut out).is_err());
        assert!(
            V::Bytes(Bytes::from_static(b"x"))
                .to_sql(&Type::INT4, &mut out)
                .is_err()
        );
    }
}
