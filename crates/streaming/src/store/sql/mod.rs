//! The SQL store: channels, messages, subscriptions and clients in PostgreSQL or MySQL
//! (MariaDB), on the reference NATS Streaming server's schema (`crates/streaming/sql/`), so a
//! database created with either server's script works with both. Built with the `sql`
//! feature; [`SqlError`] exists in every build.
//!
//! ```text
//! SqlStore ── Shared ── Db: "rnats-sql" thread, one tokio current-thread runtime owning the
//!    │                      connections (≤ max_open_conns); blocking calls hand jobs over
//!    ├── clients, server info: written before the call returns (upserts)
//!    ├── channels: Channels row at creation; deletion marks the row, purges in background
//!    │     ├── SqlMsgStore  (msgs.rs)  Messages: memory first, one transaction per flush
//!    │     └── SqlSubStore  (subs.rs)  Subscriptions + SubsPending, batched per flush
//!    └── background thread: flushes subscription changes older than a second and row
//!        deletions left by limits when no flush came (the reference's 1 s flusher)
//! SqlStoreLock (lock.rs): StoreLock table, for fault tolerance; its own connection.
//! recover.rs: reading everything back at open; schema.rs: scripts and the check at open.
//! ```
//!
//! The traits are blocking and are called from the server's async tasks: the store never
//! enters a runtime on the caller's thread (see db.rs), so it is safe there. Appends, lookups
//! of recent messages and subscription updates stay in memory in caching mode (default);
//! `flush` returns `Ok` only once its transaction committed. `no_caching` runs one statement
//! per operation instead.
//!
//! Faults: an unreachable database at open is [`SqlError::Unreachable`]; a missing table or
//! column is [`SqlError::MissingTable`] / [`SqlError::MissingColumn`]; a database lost while
//! running makes flushes fail (nothing is acknowledged falsely; the data waits in memory and
//! the next flush sends it again) while new connections are tried with a growing delay.

mod error;

pub use error::SqlError;

#[cfg(feature = "sql")]
mod db;
#[cfg(feature = "sql")]
mod driver;
#[cfg(feature = "sql")]
mod dsn;
#[cfg(feature = "sql")]
mod lock;
#[cfg(feature = "sql")]
mod msgs;
#[cfg(feature = "sql")]
mod queries;
#[cfg(feature = "sql")]
mod recover;
#[cfg(feature = "sql")]
mod schema;
#[cfg(feature = "sql")]
mod store;
#[cfg(feature = "sql")]
mod subs;

#[cfg(feature = "sql")]
pub use driver::SqlDriver;
#[cfg(feature = "sql")]
pub use lock::{LOCK_LOST_COUNT, LOCK_UPDATE_INTERVAL, LockLost, Refresher, SqlStoreLock};
#[cfg(feature = "sql")]
pub use schema::{MYSQL_SCHEMA, POSTGRES_SCHEMA, schema_script};
#[cfg(feature = "sql")]
pub use store::{SqlStore, SqlStoreOptions, create_schema};

#[cfg(feature = "sql")]
pub(crate) use store::Shared;

/// A `bulk_insert_limit` below this inserts one row per statement (as the reference does).
#[cfg(feature = "sql")]
pub(crate) const MIN_BULK_INSERT_LIMIT: usize = 5;

#[cfg(all(test, feature = "sql"))]
mod tests;
