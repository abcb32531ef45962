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
//! fence.rs: waiting at open for transactions in flight; verify.rs: checked inserts.
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
//!
//! Another writer. Sequences (and subscription IDs, pending `row` numbers) are handed out
//! from what the store read at open. A server killed just after sending `COMMIT` leaves a
//! transaction the database may commit a moment later (seen: 1.5 s), after a restarted server
//! or an FT standby has read the tables; its rows then sit at sequences the new owner hands
//! out again. Two defences, the second being the guarantee:
//!
//! 1. At open, before reading, the store waits (at most 10 s) until no transaction that wrote
//!    to its tables is still open (fence.rs: a table lock that conflicts with writers,
//!    released at once). The reference server has no such wait: its `StoreLock` says who
//!    owns the store, not whether the previous owner's last transaction has ended. Waiting
//!    for the previous owner's backends by name (`pg_stat_activity`) was not used: nothing
//!    there tells its sessions from other clients', while the table lock waits for exactly
//!    the transactions that matter, on both databases. It bounds the window; it cannot close
//!    it (a statement still unread in the database's socket buffer, a wait that timed out).
//! 2. Every insert is checked (verify.rs). The inserts stay idempotent (a flush whose commit
//!    outcome was lost is sent again), but an insert that finds a row in place makes the
//!    flush compare that row with its own data: identical rows are its own earlier commit;
//!    any other row rolls the transaction back and fails the flush
//!    ([`SqlError::SequenceTaken`]). An insert meeting another transaction's uncommitted row
//!    waits for it to end, so a late commit is always seen. The channel is then
//!    resynchronised (msgs.rs): the messages not yet stored are dropped (their PubAcks are
//!    errors, and so is the next flush's, which may carry PubAcks of messages dropped:
//!    [`SqlError::MessagesDropped`]), the rows past what the store committed join the log,
//!    and appends continue after the database's last sequence, without a restart. Pending
//!    rows found in place fail the subscription flush ([`SqlError::PendingRowTaken`]); the
//!    next one rewrites that subscription's rows. `Subscriptions` rows are upserts keyed by
//!    channel: a subscription ID given twice across channels is covered by the wait at open
//!    only.
//!
//! So a message is acknowledged only once a row holding its exact data is committed at its
//! sequence.

mod error;

pub use error::SqlError;

#[cfg(feature = "sql")]
mod db;
#[cfg(feature = "sql")]
mod driver;
#[cfg(feature = "sql")]
mod dsn;
#[cfg(feature = "sql")]
mod fence;
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
mod verify;

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

/// Rows per multi-row `INSERT` when `sql_bulk_insert_limit` is not given. The reference
/// inserts one row per statement by default; multi-row statements store the same rows and
/// take windowed publishing from about 0.1x to about 0.35x of the FILE store's rate
/// (docs/BENCHMARKS.md), so they are the default here; an explicit 0 restores the
/// reference's behaviour.
#[cfg(feature = "sql")]
pub const DEFAULT_BULK_INSERT_LIMIT: usize = 256;

/// A `bulk_insert_limit` below this inserts one row per statement (as the reference does).
#[cfg(feature = "sql")]
pub(crate) const MIN_BULK_INSERT_LIMIT: usize = 5;

#[cfg(all(test, feature = "sql"))]
mod tests;
