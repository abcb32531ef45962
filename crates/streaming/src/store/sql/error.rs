//! Errors of the SQL store. Compiled with or without the `sql` feature, so that
//! [`StoreError`](super::super::StoreError) has the same shape in every build.

use std::time::Duration;

/// What went wrong talking to the database. Messages never include the password of the data
/// source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// `sql_driver` is neither `postgres` nor `mysql`.
    #[error("unsupported SQL driver {0:?} (use \"postgres\" or \"mysql\")")]
    UnknownDriver(String),
    /// `sql_source` cannot be parsed, or asks for something this build cannot do (TLS).
    #[error("invalid SQL source for driver {driver}: {reason}")]
    InvalidSource {
        driver: &'static str,
        reason: String,
    },
    /// The database could not be reached when the store was opened.
    #[error("unable to connect to the {driver} database at {target}: {message}")]
    Unreachable {
        driver: &'static str,
        target: String,
        message: String,
    },
    /// A table of the schema does not exist.
    #[error(
        "SQL schema incomplete: database {database:?} has no table {table} (create the schema with \
         crates/streaming/sql/{script} or the store's create-schema command)"
    )]
    MissingTable {
        database: String,
        table: &'static str,
        script: &'static str,
    },
    /// A column of the schema does not exist.
    #[error(
        "SQL schema incomplete: table {table} of database {database:?} has no column {column} \
         (compare it with crates/streaming/sql/{script})"
    )]
    MissingColumn {
        database: String,
        table: &'static str,
        column: &'static str,
        script: &'static str,
    },
    /// A statement failed (text as the reference server words it).
    #[error("sql: error executing {statement:?}: {message}")]
    Statement { statement: String, message: String },
    /// The connection was lost and a new one could not be made yet; the store retries with a
    /// growing delay (up to 5 s) instead of hammering the server.
    #[error("database unavailable ({message}); next connection attempt in {retry_in:?}")]
    Unavailable { message: String, retry_in: Duration },
    /// A database operation took longer than the store waits.
    #[error("database operation timed out after {0:?}")]
    Timeout(Duration),
    /// Stored data that cannot be decoded.
    #[error("sql: undecodable {what}: {message}")]
    Corrupt { what: String, message: String },
    /// `ServerInfo.version` is not the schema version this store reads.
    #[error("sql: unsupported version: {0} (supports [1..1])")]
    UnsupportedVersion(i64),
    /// `ServerInfo.id` and the cluster ID inside `ServerInfo.proto` differ.
    #[error("sql: id {column:?} in column does not match cluster ID in data {data:?}")]
    ClusterIdMismatch { column: String, data: String },
    /// Too many messages of a channel wait for a database that does not answer: appends are
    /// refused until flushes succeed again.
    #[error(
        "{pending} messages of channel {channel:?} are waiting for the database; refusing more until it is reachable"
    )]
    Backlog { channel: String, pending: usize },
    /// A flush found a message row it did not write at one of its sequences (another server
    /// wrote to the database, e.g. a stopped server's transaction committed late): nothing
    /// was stored, the messages not yet stored were dropped, and the channel continues after
    /// the database's last sequence.
    #[error(
        "sql: sequence {seq} of channel {channel:?} already holds a message this server did not \
         write (another server wrote to the database); the messages not yet stored were dropped \
         and the channel continues after the database's last sequence: publish them again"
    )]
    SequenceTaken { channel: String, seq: u64 },
    /// Messages were dropped when the channel was resynchronised after
    /// [`SqlError::SequenceTaken`]; this flush may carry their acknowledgements.
    #[error(
        "sql: messages of channel {channel:?} were dropped after another server's rows were \
         found at their sequences: publish them again"
    )]
    MessagesDropped { channel: String },
    /// The channel's view could not be read back from the database after
    /// [`SqlError::SequenceTaken`]; appends are refused until it can.
    #[error(
        "sql: channel {channel:?} must be read back from the database before it takes more \
         messages ({message})"
    )]
    ResyncPending { channel: String, message: String },
    /// A `SubsPending` row this store was writing already existed (another server wrote it):
    /// nothing was stored; the subscription's rows are rewritten at the next flush.
    #[error(
        "sql: a pending row of subscription {subid} was already written by another server; \
         its rows are rewritten at the next flush"
    )]
    PendingRowTaken { subid: u64 },
    /// A `StoreLock` owner ID does not fit the column (`VARCHAR(30)`), or is empty.
    #[error("store lock owner ID {0:?} must be 1 to 30 characters")]
    LockOwner(String),
    /// The store's database thread is gone (the store was closed).
    #[error("the SQL store's database thread has stopped")]
    Stopped,
}
