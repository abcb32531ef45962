//! The store's database thread: a single-threaded tokio runtime that owns every connection,
//! and the blocking bridge the store's (blocking) trait methods use to reach it.
//!
//! ```text
//! caller thread (engine task, flusher, ...)          "rnats-sql" thread (current-thread runtime)
//!   Db::call(job) ──── job over an unbounded channel ──▶ spawn_local(job(ctx))
//!   waits on a std channel ◀──────── result ───────────  ctx.with_conn(...) → pool → Conn
//! ```
//!
//! The caller never enters a tokio runtime, so calling from inside one (the server's engine
//! task) is safe: it only blocks its thread until the answer comes. Jobs run concurrently on
//! the database thread (each on its own connection), which is all the parallelism database
//! I/O needs; the CPU work (encoding, decoding) stays with the callers.
//!
//! Connections: at most `max_open_conns` at once (0 = unlimited), up to [`MAX_IDLE`] kept
//! idle. A failed connection is dropped; when a reused (idle) one turns out dead — the
//! database restarted — the idle ones are dropped too and the job runs once more on a fresh
//! connection (every job is safe to replay: the store's writes are idempotent). Connecting
//! after a failure waits a growing delay (50 ms doubling to 5 s): meanwhile calls fail at once
//! with [`SqlError::Unavailable`] instead of each waiting for a connect timeout.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::SqlError;
use super::driver::{Conn, DbFail, Source};
use super::queries::Queries;

/// Idle connections kept when `max_open_conns` is 0.
pub(crate) const MAX_IDLE: usize = 4;
/// How long one database job may take before it fails (and its connection is dropped).
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;
type Task = Box<dyn FnOnce(Rc<Ctx>) -> LocalFuture<()> + Send>;

/// State of the database thread, shared by its jobs.
pub(crate) struct Ctx {
    src: Source,
    pub q: Arc<Queries>,
    idle: RefCell<Vec<Conn>>,
    max_idle: usize,
    limit: Option<Arc<Semaphore>>,
    backoff: RefCell<Backoff>,
    /// Set once no job can arrive any more: connections are closed instead of pooled.
    closing: Cell<bool>,
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    next_try: Option<Instant>,
    last: String,
}

/// A connection taken from the pool.
pub(crate) struct Pooled {
    pub conn: Conn,
    reused: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Ctx {
    /// A connection: an idle one, or a new one (subject to the backoff).
    pub async fn checkout(&self) -> Result<Pooled, SqlError> {
        let permit = match &self.limit {
            Some(s) => Some(
                s.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| SqlError::Stopped)?,
            ),
            None => None,
        };
        loop {
            let c = self.idle.borrow_mut().pop();
            match c {
                Some(c) if c.is_broken() => continue,
                Some(conn) => {
                    return Ok(Pooled {
                        conn,
                        reused: true,
                        _permit: permit,
                    });
                }
                None => break,
            }
        }
        {
            let b = self.backoff.borrow();
            let now = Instant::now();
            if let Some(next) = b.next_try.filter(|t| now < *t) {
                return Err(SqlError::Unavailable {
                    message: b.last.clone(),
                    retry_in: next - now,
                });
            }
        }
        match self.src.connect().await {
            Ok(conn) => {
                *self.backoff.borrow_mut() = Backoff::default();
                Ok(Pooled {
                    conn,
                    reused: false,
                    _permit: permit,
                })
            }
            Err(message) => {
                let mut b = self.backoff.borrow_mut();
                b.failures = b.failures.saturating_add(1);
                let delay = BACKOFF_FIRST
                    .saturating_mul(1 << b.failures.min(10).saturating_sub(1))
                    .min(BACKOFF_MAX);
                b.next_try = Some(Instant::now() + delay);
                b.last = message.clone();
                Err(SqlError::Unavailable {
                    message,
                    retry_in: delay,
                })
            }
        }
    }

    /// Returns a healthy connection to the pool.
    pub fn checkin(&self, p: Pooled) {
        let mut idle = self.idle.borrow_mut();
        if !self.closing.get() && !p.conn.is_broken() && idle.len() < self.max_idle {
            idle.push(p.conn);
        }
    }

    /// Runs `op` on a pooled connection. When a reused connection turns out to be dead, the
    /// idle ones are dropped and `op` runs once more on a new connection, so `op` must be
    /// safe to replay.
    pub async fn with_conn<T>(
        &self,
        mut op: impl AsyncFnMut(&mut Conn) -> Result<T, DbFail>,
    ) -> Result<T, SqlError> {
        let mut retried = false;
        loop {
            let mut p = self.checkout().await?;
            match op(&mut p.conn).await {
                Ok(v) => {
                    self.checkin(p);
                    return Ok(v);
                }
                Err(f) => {
                    let broken = f.broken || p.conn.is_broken();
                    if !broken {
                        self.checkin(p);
                        return Err(f.into_error());
                    }
                    if p.reused && !retried {
                        retried = true;
                        self.idle.borrow_mut().clear();
                        continue;
                    }
                    return Err(f.into_error());
                }
            }
        }
    }
}

/// Handle to the database thread.
pub(crate) struct Db {
    jobs: Mutex<Option<mpsc::UnboundedSender<Task>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub q: Arc<Queries>,
    pub target: String,
}

impl Db {
    /// Starts the database thread and opens a first connection: a database that cannot be
    /// reached fails here with [`SqlError::Unreachable`].
    pub fn open(src: Source, max_open_conns: usize) -> Result<Db, SqlError> {
        let q = Arc::new(Queries::new(src.driver));
        let (tx, mut rx) = mpsc::unbounded_channel::<Task>();
        let driver = src.driver;
        let target = src.target.clone();
        let ctx = Ctx {
            src,
            q: q.clone(),
            idle: RefCell::new(Vec::new()),
            max_idle: if max_open_conns == 0 {
                MAX_IDLE
            } else {
                max_open_conns
            },
            limit: (max_open_conns > 0).then(|| Arc::new(Semaphore::new(max_open_conns))),
            backoff: RefCell::new(Backoff::default()),
            closing: Cell::new(false),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SqlError::Unreachable {
                driver: driver.as_str(),
                target: target.clone(),
                message: format!("cannot start the database runtime: {e}"),
            })?;
        let thread = std::thread::Builder::new()
            .name("rnats-sql".into())
            .spawn(move || {
                let ctx = Rc::new(ctx);
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async {
                    while let Some(job) = rx.recv().await {
                        tokio::task::spawn_local(job(ctx.clone()));
                    }
                });
                // Close the idle connections (a PostgreSQL connection task lives as long as
                // its client), then let running jobs finish (a channel purge in progress):
                // their connections close as they are returned.
                local.block_on(&rt, async {
                    ctx.closing.set(true);
                    ctx.idle.borrow_mut().clear();
                });
                rt.block_on(local);
            })
            .map_err(|e| SqlError::Unreachable {
                driver: driver.as_str(),
                target: target.clone(),
                message: format!("cannot start the database thread: {e}"),
            })?;
        let db = Db {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            q,
            target,
        };
        let first = db.call(|cx| async move {
            let p = cx.checkout().await?;
            cx.checkin(p);
            Ok(())
        });
        if let Err(e) = first {
            db.close();
            let message = match e {
                SqlError::Unavailable { message, .. } => message,
                e => e.to_string(),
            };
            return Err(SqlError::Unreachable {
                driver: driver.as_str(),
                target: db.target.clone(),
                message,
            });
        }
        Ok(db)
    }

    fn send(&self, task: Task) -> Result<(), SqlError> {
        match &*self.jobs.lock() {
            Some(tx) => tx.send(task).map_err(|_| SqlError::Stopped),
            None => Err(SqlError::Stopped),
        }
    }

    /// Runs `job` on the database thread and waits for its result (at most [`OP_TIMEOUT`],
    /// plus queueing). Must not be called from the database thread itself.
    pub fn call<T, F, Fut>(&self, job: F) -> Result<T, SqlError>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Ctx>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, SqlError>> + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(Box::new(move |cx| {
            Box::pin(async move {
                let r = match tokio::time::timeout(OP_TIMEOUT, job(cx)).await {
                    Ok(r) => r,
                    Err(_) => Err(SqlError::Timeout(OP_TIMEOUT)),
                };
                let _ = tx.send(r);
            })
        }))?;
        rx.recv().map_err(|_| SqlError::Stopped)?
    }

    /// Runs `job` on the database thread without waiting. [`Db::close`] waits for it.
    pub fn spawn<F, Fut>(&self, job: F) -> Result<(), SqlError>
    where
        F: FnOnce(Rc<Ctx>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.send(Box::new(move |cx| Box::pin(job(cx))))
    }

    /// Stops accepting jobs, waits for those running, closes the connections.
    pub fn close(&self) {
        drop(self.jobs.lock().take());
        let t = self.thread.lock().take();
        if let Some(t) = t
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.close();
    }
}
