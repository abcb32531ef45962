//! The SQL store's lock for fault tolerance: the `StoreLock` table (owner ID and a tick the
//! owner moves every second, see `rnats_streaming::store::sql::SqlStoreLock`).
//!
//! ```text
//! standby: SqlLockWatch::attempt every SQL_POLL
//!            free / released / ours ─▶ taken
//!            held, tick moving       ─▶ wait
//!            held, tick still for 4.5 s (3 checks 1.5 s apart, the reference's timing)
//!              and the active's heartbeats missed ─▶ stolen
//! active:  SqlHeld: the refresher moves the tick every second; when the lock is lost (another
//!          owner, or 3 failed refreshes) it tells the FT task, which stops the server.
//!          The store is wrapped in LockedStore: closing it stops the refresher and clears
//!          the owner, so a standby takes over at its next poll.
//! ```
//!
//! A killed active is replaced after about 4.5 s plus recovery (the tick must be seen still
//! that long); a stopped one within one poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rnats_streaming::proto::{ClientInfo, ServerInfo};
use rnats_streaming::store::sql::{
    LOCK_LOST_COUNT, LOCK_UPDATE_INTERVAL, LockLost, Refresher, SqlDriver, SqlError, SqlStore,
    SqlStoreLock, SqlStoreOptions,
};
use rnats_streaming::store::{Channel, RecoveredState, Result, Store, StoreKind, StoreLimits};
use tokio::sync::oneshot;
use tracing::warn;

/// How often a standby looks at the lock row (one small transaction).
pub(crate) const SQL_POLL: Duration = Duration::from_millis(250);

/// How long the tick must stay still before a standby takes the lock: the reference checks
/// [`LOCK_LOST_COUNT`] times, 1.5 update intervals apart.
fn stale_after() -> Duration {
    LOCK_UPDATE_INTERVAL.mul_f64(1.5) * LOCK_LOST_COUNT
}

/// A standby's view of the lock: its connection (opened on first use, so an unreachable
/// database is retried) and the holder it saw last, since when.
pub(crate) struct SqlLockWatch {
    driver: SqlDriver,
    source: String,
    owner: String,
    state: Mutex<WatchState>,
}

struct WatchState {
    lock: Option<Arc<SqlStoreLock>>,
    seen: Option<(String, u64)>,
    since: Instant,
}

impl std::fmt::Debug for SqlLockWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlLockWatch")
            .field("driver", &self.driver)
            .field("owner", &self.owner)
            .finish()
    }
}

impl SqlLockWatch {
    /// The lock of the database `opts` names, for owner `server_id` (cut to the column's 30
    /// characters; NUIDs have 22).
    pub(crate) fn new(opts: &SqlStoreOptions, server_id: &str) -> SqlLockWatch {
        SqlLockWatch {
            driver: opts.driver,
            source: opts.source.clone(),
            owner: server_id.chars().take(30).collect(),
            state: Mutex::new(WatchState {
                lock: None,
                seen: None,
                since: Instant::now(),
            }),
        }
    }

    /// One look (blocking): the lock when it is free, released, ours, or its owner stopped
    /// moving the tick for [`stale_after`] while the active's heartbeats are missed
    /// (`hb_missed`); `Ok(None)` otherwise.
    pub(crate) fn attempt(
        &self,
        hb_missed: bool,
    ) -> std::result::Result<Option<SqlHeld>, SqlError> {
        let mut st = self.state.lock();
        let lock = match &st.lock {
            Some(l) => l.clone(),
            None => {
                let l = Arc::new(SqlStoreLock::open(self.driver, &self.source, &self.owner)?);
                st.lock = Some(l.clone());
                l
            }
        };
        if lock.try_lock()? {
            return Ok(Some(SqlHeld::new(lock)));
        }
        let holder = lock.holder()?;
        if holder != st.seen {
            st.seen = holder;
            st.since = Instant::now();
            return Ok(None);
        }
        if hb_missed && st.since.elapsed() >= stale_after() {
            let (id, tick) = st.seen.clone().unwrap_or_default();
            warn!(
                "STREAM: ft: store lock of {id:?} not refreshed for {:?} (tick {tick}), taking it over",
                st.since.elapsed()
            );
            lock.steal()?;
            return Ok(Some(SqlHeld::new(lock)));
        }
        Ok(None)
    }
}

/// The SQL lock held by this server: refreshed from [`SqlHeld::keep`] on, released when the
/// store it is handed to closes.
pub(crate) struct SqlHeld {
    lock: Arc<SqlStoreLock>,
    refresher: Option<Refresher>,
}

impl std::fmt::Debug for SqlHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlHeld")
            .field("owner", &self.lock.owner())
            .finish()
    }
}

impl SqlHeld {
    fn new(lock: Arc<SqlStoreLock>) -> SqlHeld {
        SqlHeld {
            lock,
            refresher: None,
        }
    }

    /// Starts refreshing the lock every second; the receiver learns why, if it is lost.
    pub(crate) fn keep(&mut self) -> oneshot::Receiver<LockLost> {
        let (tx, rx) = oneshot::channel();
        self.refresher = Some(self.lock.start_refresher(LOCK_UPDATE_INTERVAL, move |l| {
            let _ = tx.send(l);
        }));
        rx
    }

    /// Stops refreshing and clears the owner (blocking), so a standby takes over at once.
    fn release(mut self) {
        if let Some(r) = self.refresher.take() {
            r.stop();
        }
        if let Err(e) = self.lock.release() {
            warn!("STREAM: ft: unable to release the store lock: {e}");
        }
    }

    /// Opens the SQL store under this lock (blocking): closing the store releases the lock,
    /// and so does a failure to open it.
    pub(crate) fn open_store(
        self,
        opts: SqlStoreOptions,
        limits: StoreLimits,
    ) -> Result<Box<dyn Store>> {
        match SqlStore::open(opts, limits) {
            Ok(s) => Ok(Box::new(LockedStore {
                inner: Box::new(s),
                held: Mutex::new(Some(self)),
            })),
            Err(e) => {
                self.release();
                Err(e)
            }
        }
    }
}

/// Why the lock was lost, for the error that stops the server.
pub(crate) fn describe(l: &LockLost) -> String {
    match l {
        LockLost::TakenBy(id) => format!("lost store lock, aborting (taken by server {id:?})"),
        LockLost::Unreachable(e) => {
            format!("lost store lock, aborting (unable to refresh it: {e})")
        }
    }
}

/// A store that releases the SQL lock after it closed (everything else is the inner
/// store's).
struct LockedStore {
    inner: Box<dyn Store>,
    held: Mutex<Option<SqlHeld>>,
}

impl Store for LockedStore {
    fn kind(&self) -> StoreKind {
        self.inner.kind()
    }
    fn init(&self, info: &ServerInfo) -> Result<()> {
        self.inner.init(info)
    }
    fn recover(&self) -> Result<RecoveredState> {
        self.inner.recover()
    }
    fn limits(&self) -> &StoreLimits {
        self.inner.limits()
    }
    fn create_channel(&self, name: &str) -> Result<Arc<Channel>> {
        self.inner.create_channel(name)
    }
    fn lookup_channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.inner.lookup_channel(name)
    }
    fn lookup_or_create_channel(&self, name: &str) -> Result<(Arc<Channel>, bool)> {
        self.inner.lookup_or_create_channel(name)
    }
    fn channels(&self) -> Vec<Arc<Channel>> {
        self.inner.channels()
    }
    fn delete_channel(&self, name: &str) -> Result<bool> {
        self.inner.delete_channel(name)
    }
    fn add_client(&self, info: &ClientInfo) -> Result<()> {
        self.inner.add_client(info)
    }
    fn delete_client(&self, id: &str) -> Result<bool> {
        self.inner.delete_client(id)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
    fn close(&self) -> Result<()> {
        let r = self.inner.close();
        if let Some(h) = self.held.lock().take() {
            h.release();
        }
        r
    }
}
