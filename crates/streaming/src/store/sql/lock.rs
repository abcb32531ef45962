//! The `StoreLock` table: which server of a fault-tolerance group owns the database.
//!
//! One row `(id, tick)`. The owner writes its ID and moves `tick` every second
//! ([`LOCK_UPDATE_INTERVAL`]); a standby that finds another ID watches the tick and takes the
//! lock when it has not moved for [`LOCK_LOST_COUNT`] checks 1.5 intervals apart (the owner is
//! gone), as the reference server does. A clean shutdown clears the ID so a standby may take
//! over at once.
//!
//! ```text
//! let lock = SqlStoreLock::open(driver, source, "server-a")?;   // its own connection
//! if lock.acquire(LOCK_UPDATE_INTERVAL, LOCK_LOST_COUNT)? {       // try, watch, steal
//!     let refresher = lock.start_refresher(LOCK_UPDATE_INTERVAL, |lost| /* abort */);
//!     // open the SqlStore and serve ...
//!     refresher.stop(); lock.release()?;
//! }
//! ```
//!
//! Every attempt is one transaction that reads the row `FOR UPDATE` (PostgreSQL also locks the
//! table first, so two candidates finding no row cannot both insert one).

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::SqlError;
use super::db::{Ctx, Db};
use super::driver::{Conn, DbFail, Source, SqlDriver, V};
use super::queries::Q;

/// How often the owner moves the tick.
pub const LOCK_UPDATE_INTERVAL: Duration = Duration::from_secs(1);
/// Checks without a tick change after which a standby takes the lock; also the number of
/// failed refreshes after which an owner considers the lock lost.
pub const LOCK_LOST_COUNT: u32 = 3;

/// Why an owner lost the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockLost {
    /// Another server wrote its ID.
    TakenBy(String),
    /// Refreshing failed [`LOCK_LOST_COUNT`] times in a row.
    Unreachable(SqlError),
}

/// The store lock of one server (see the module documentation).
pub struct SqlStoreLock {
    db: Db,
    owner: String,
}

/// What one attempt saw and did.
struct Attempt {
    acquired: bool,
    holder: Option<(String, u64)>,
}

async fn attempt(cx: &Ctx, owner: &str, steal: bool, write: bool) -> Result<Attempt, SqlError> {
    let q = cx.q.clone();
    cx.with_conn(async |c: &mut Conn| {
        c.simple("BEGIN").await?;
        let r = locked_step(c, &q, owner, steal, write).await;
        match r {
            Ok(a) => {
                c.simple("COMMIT").await?;
                Ok(a)
            }
            Err(f) => {
                let _ = c.simple("ROLLBACK").await;
                Err(f)
            }
        }
    })
    .await
}

async fn locked_step(
    c: &mut Conn,
    q: &super::queries::Queries,
    owner: &str,
    steal: bool,
    write: bool,
) -> Result<Attempt, DbFail> {
    if q.driver == SqlDriver::Postgres {
        c.simple(&q.sql(Q::LockTable)).await?;
    }
    let mut rows = c.query(&q.sql(Q::LockSelect), &[]).await?;
    let holder = match rows.first_mut() {
        Some(r) => {
            let bad = |m: String| DbFail {
                statement: q.sql(Q::LockSelect).to_string(),
                message: m,
                broken: false,
                duplicate: false,
            };
            let id = r.text(0).map_err(bad)?.unwrap_or_default();
            let tick = r.opt_int(1).map_err(bad)?.unwrap_or(0);
            Some((id, u64::try_from(tick).unwrap_or(0)))
        }
        None => None,
    };
    let free = match &holder {
        None => true,
        Some((id, _)) => id.is_empty() || id == owner,
    };
    if !write || !(free || steal) {
        return Ok(Attempt {
            acquired: false,
            holder,
        });
    }
    let tick = match (&holder, steal) {
        (Some((_, t)), false) => t.saturating_add(1),
        _ => 1,
    };
    let stmt = if holder.is_none() {
        q.stmt(Q::LockInsert, vec![V::from(owner), V::from(tick)])
    } else {
        q.stmt(Q::LockUpdate, vec![V::from(owner), V::from(tick)])
    };
    c.run(&[stmt], false).await?;
    Ok(Attempt {
        acquired: true,
        holder,
    })
}

impl SqlStoreLock {
    /// Connects (one connection of its own) for owner ID `owner` (1 to 30 characters, the
    /// column's size; e.g. the server ID). Fails with [`SqlError::Unreachable`] when the
    /// database cannot be reached.
    pub fn open(driver: SqlDriver, source: &str, owner: &str) -> Result<SqlStoreLock, SqlError> {
        if owner.is_empty() || owner.chars().count() > 30 {
            return Err(SqlError::LockOwner(owner.to_owned()));
        }
        let src = Source::parse(driver, source)?;
        Ok(SqlStoreLock {
            db: Db::open(src, 1)?,
            owner: owner.to_owned(),
        })
    }

    /// This lock's owner ID.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn attempt(&self, steal: bool, write: bool) -> Result<Attempt, SqlError> {
        let owner = self.owner.clone();
        self.db
            .call(move |cx| async move { attempt(&cx, &owner, steal, write).await })
    }

    /// One attempt: takes (or keeps) the lock when there is no row, no owner, or this owner,
    /// moving the tick. `Ok(false)` when another owner holds it.
    pub fn try_lock(&self) -> Result<bool, SqlError> {
        Ok(self.attempt(false, true)?.acquired)
    }

    /// The current owner ID and tick (`None` when the table has no row; an empty ID means
    /// released).
    pub fn holder(&self) -> Result<Option<(String, u64)>, SqlError> {
        Ok(self.attempt(false, false)?.holder)
    }

    /// Takes the lock whatever its owner (the tick restarts at 1).
    pub fn steal(&self) -> Result<(), SqlError> {
        self.attempt(true, true).map(|_| ())
    }

    /// Acquires the lock as a standby does: [`try_lock`](Self::try_lock); if another owner
    /// holds it, checks its tick `checks` times, 1.5 `interval` apart, and steals the lock
    /// when the tick never moved. `Ok(false)` when the owner is alive (or another standby got
    /// there first). Blocks for up to `checks × 1.5 × interval`.
    pub fn acquire(&self, interval: Duration, checks: u32) -> Result<bool, SqlError> {
        let first = self.attempt(false, true)?;
        if first.acquired {
            return Ok(true);
        }
        let mut seen = first.holder;
        for _ in 0..checks {
            std::thread::sleep(interval.mul_f64(1.5));
            let a = self.attempt(false, true)?;
            if a.acquired {
                // Released meanwhile.
                return Ok(true);
            }
            if a.holder != seen {
                return Ok(false);
            }
            seen = a.holder;
        }
        self.steal()?;
        Ok(true)
    }

    /// Clears the lock row if this owner holds it, so a standby can take over at once.
    pub fn release(&self) -> Result<(), SqlError> {
        let owner = self.owner.clone();
        self.db.call(move |cx| async move {
            let q = cx.q.clone();
            cx.with_conn(async |c: &mut Conn| {
                c.simple("BEGIN").await?;
                let r = async {
                    let mut rows = c.query(&q.sql(Q::LockSelect), &[]).await?;
                    let mine = rows
                        .first_mut()
                        .and_then(|r| r.text(0).ok().flatten())
                        .is_some_and(|id| id == owner);
                    if mine {
                        let s = q.stmt(Q::LockUpdate, vec![V::from(""), V::Int(0)]);
                        c.run(&[s], false).await?;
                    }
                    Ok(())
                }
                .await;
                match r {
                    Ok(()) => c.simple("COMMIT").await,
                    Err(f) => {
                        let _ = c.simple("ROLLBACK").await;
                        Err(f)
                    }
                }
            })
            .await
        })
    }

    /// Refreshes the lock every `interval` on a thread of its own. `on_lost` is called once,
    /// and refreshing stops, when another owner took the lock or [`LOCK_LOST_COUNT`]
    /// refreshes in a row failed (the server must then stop serving: another may be active).
    pub fn start_refresher(
        self: &Arc<Self>,
        interval: Duration,
        on_lost: impl FnOnce(LockLost) + Send + 'static,
    ) -> Refresher {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let lock = self.clone();
        let thread = std::thread::Builder::new()
            .name("rnats-sql-lock".into())
            .spawn(move || {
                let mut failures = 0;
                loop {
                    match stop_rx.recv_timeout(interval) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    match lock.attempt(false, true) {
                        Ok(a) if a.acquired => failures = 0,
                        Ok(a) => {
                            let by = a.holder.map(|(id, _)| id).unwrap_or_default();
                            on_lost(LockLost::TakenBy(by));
                            return;
                        }
                        Err(e) => {
                            failures += 1;
                            if failures >= LOCK_LOST_COUNT {
                                on_lost(LockLost::Unreachable(e));
                                return;
                            }
                        }
                    }
                }
            })
            .ok();
        Refresher {
            stop: Some(stop_tx),
            thread,
        }
    }
}

/// A running refresher; stopped by [`Refresher::stop`] or when dropped.
pub struct Refresher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Refresher {
    /// Stops refreshing (the lock stays held until released or stolen).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Whether the refresher still runs (it stops after calling `on_lost`).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.halt();
    }
}
