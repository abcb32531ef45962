//! Waiting at open for write transactions a previous owner left in flight.
//!
//! A server killed right after sending `COMMIT` leaves a transaction that the database may
//! still commit a moment later (the reference's crash harness saw 1.5 s). A server opening the
//! store meanwhile (a restart, an FT standby taking over) would read the tables without those
//! rows and give their sequences (or subscription IDs, pending `row` numbers) to new data.
//!
//! So before reading anything, [`wait_for_writers`] takes a table lock that conflicts with any
//! open write transaction on the store's tables, and releases it at once:
//!
//! * PostgreSQL: `LOCK TABLE ... IN SHARE MODE` (conflicts with the `ROW EXCLUSIVE` lock every
//!   `INSERT`/`UPDATE`/`DELETE` holds until its transaction ends), bounded by `lock_timeout`;
//! * MySQL/MariaDB: `LOCK TABLES ... READ` (waits for the metadata lock every transaction that
//!   wrote to a table holds until it ends), bounded by `lock_wait_timeout`.
//!
//! This is a bound, not the guarantee: after [`FENCE_WAIT`], or without the privilege to lock
//! tables, the store opens anyway, and the checked writes (verify.rs) remain what makes sure
//! no message is acknowledged over another writer's row. The reference server has no such
//! wait; it relies on its `StoreLock` only, which says who owns the store, not whether the
//! previous owner's last transaction has ended.

use std::time::Duration;

use super::SqlError;
use super::db::Ctx;
use super::driver::SqlDriver;

/// Longest wait for the transactions in flight.
pub(crate) const FENCE_WAIT: Duration = Duration::from_secs(10);

/// The store's tables written by its flushes (not `StoreLock`, which an FT lock updates
/// every second from another connection).
const TABLES: &str = "Channels, Messages, Subscriptions, SubsPending";

/// Waits until no other transaction has written to the store's tables and not ended, at most
/// [`FENCE_WAIT`]. `Ok(true)` when that moment came; `Ok(false)` when the wait timed out or
/// the database refused the lock (nothing else to do: the checked writes cover the rest);
/// `Err` when the database could not be reached.
pub(crate) async fn wait_for_writers(cx: &Ctx) -> Result<bool, SqlError> {
    let driver = cx.q.driver;
    let secs = FENCE_WAIT.as_secs();
    cx.with_conn(async |c| {
        Ok(match driver {
            SqlDriver::Postgres => {
                c.simple("BEGIN").await?;
                let r = async {
                    c.simple(&format!("SET LOCAL lock_timeout = '{secs}s'"))
                        .await?;
                    c.simple(&format!("LOCK TABLE {TABLES} IN SHARE MODE"))
                        .await
                }
                .await;
                let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
                c.simple(end).await?;
                r.is_ok()
            }
            SqlDriver::Mysql => {
                c.simple(&format!("SET SESSION lock_wait_timeout = {secs}"))
                    .await?;
                let tables = TABLES.replace(',', " READ,") + " READ";
                let r = c.simple(&format!("LOCK TABLES {tables}")).await;
                c.simple("UNLOCK TABLES").await?;
                c.simple("SET SESSION lock_wait_timeout = DEFAULT").await?;
                r.is_ok()
            }
        })
    })
    .await
}
