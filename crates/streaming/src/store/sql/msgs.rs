//! The message log of one channel on the `Messages` table.
//!
//! ```text
//!   first                       recent.front()                         last
//!     │◀──── in the database only ───▶│◀────────── `recent` (memory) ─────────▶│
//!     │ head: (seq, size, ts) window  │  flushed (committed) │ not yet flushed │
//! ```
//!
//! * `recent` holds the newest messages, encoded as stored (the `data` column), consecutive
//!   up to `last`. Every message not yet committed is in it; committed ones stay while the
//!   cache allows (`cache_msgs`, `cache_bytes`), so recent messages are read without a
//!   database round trip.
//! * Caching mode (default): [`append`](MsgStore::append) only touches memory. `flush` sends
//!   the messages not yet committed in one transaction (one pipelined `INSERT` each, or
//!   multi-row `INSERT`s of up to `bulk_insert_limit` rows), together with the deletion of
//!   rows that limits removed, and returns `Ok` only once it committed. A failed flush leaves
//!   the messages pending: the next flush sends them again (inserts are idempotent, so a
//!   commit whose outcome was lost is harmless: a row found in place must hold exactly the
//!   data sent, verify.rs). While the database is away, appends are refused once
//!   [`BACKLOG_MSGS`] messages wait.
//! * Another writer's row at a sequence being flushed fails the flush and resynchronises the
//!   log ([`SqlMsgStore::resync`]): messages not committed are dropped, the rows in the
//!   database are counted in, appends continue after its last sequence.
//! * No-caching mode: `append` inserts the message before it returns (and fails, storing
//!   nothing, when the insert fails); `flush` has nothing to do.
//! * Limits are applied in memory on append and [`expire`](MsgStore::expire), like the memory
//!   store; the rows follow at the next flush (`DELETE ... WHERE seq < first`), or within a
//!   second from the store's background thread when no flush comes. The sizes and
//!   timestamps of the oldest messages, needed to apply limits, are read from the database
//!   in windows of [`HEAD_WINDOW`] rows (`head`), refilled after flushes so that appends
//!   rarely wait for the database.
//! * When every message is gone, `Channels.maxseq` keeps the last sequence (written in the
//!   transaction that deletes the last rows), so sequences never go back across restarts.
//! * Bytes are accounted as the stored size (the encoded `MsgProto`), as in the memory store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;

use super::driver::{Stmt, V};
use super::queries::{MAX_BULK_ROWS, Q};
use super::verify::{Expect, insert_strict, run_checked};
use super::{Shared, SqlError};
use crate::proto::{MsgProto, peek_msg_proto};
use crate::store::{EncodedMsg, MsgStore, MsgStoreState, NewMessage, Result, StoreError};

/// Rows of `(seq, size, timestamp)` read at once to apply limits.
pub(crate) const HEAD_WINDOW: i64 = 1024;
/// Messages that may wait for a failing database before appends are refused.
pub(crate) const BACKLOG_MSGS: usize = 100_000;
/// Bytes that may wait for a failing database before appends are refused.
pub(crate) const BACKLOG_BYTES: usize = 256 << 20;
/// Data per multi-row insert, so that a statement stays well within MySQL's
/// `max_allowed_packet` (16 MiB by default in MariaDB, 64 MiB in MySQL 8).
const BULK_MAX_BYTES: usize = 4 << 20;
/// Most messages asked from the database for one batch read.
const READ_ROWS_MAX: usize = 4096;

/// A message in memory: its sequence, timestamp and stored form.
struct Cached {
    seq: u64,
    ts: i64,
    enc: Bytes,
}

/// Size and timestamp of a held message.
#[derive(Debug, Clone, Copy)]
struct Meta {
    seq: u64,
    size: u64,
    ts: i64,
}

/// What a recovery found for a channel.
pub(crate) struct LogInit {
    pub first: u64,
    pub last: u64,
    pub msgs: u64,
    pub bytes: u64,
    pub last_ts: i64,
    /// `Channels.maxseq` as stored.
    pub maxseq: u64,
}

struct Log {
    channel: String,
    max_msgs: u64,
    max_bytes: u64,
    max_age: i64,
    first: u64,
    last: u64,
    msgs: u64,
    bytes: u64,
    last_ts: i64,
    head: VecDeque<Meta>,
    recent: VecDeque<Cached>,
    recent_bytes: usize,
    /// Bytes of the messages not committed yet.
    unflushed_bytes: usize,
    /// Highest sequence committed to the database.
    flushed: u64,
    /// Rows below this sequence are known to be deleted.
    db_low: u64,
    /// `Channels.maxseq` as stored.
    maxseq: u64,
    /// A limit could not be applied (the database did not answer); retried later.
    enforce_pending: bool,
    /// Another writer's row was found at a flushed sequence and the channel could not be read
    /// back yet: appends wait for [`SqlMsgStore::resync`].
    needs_resync: bool,
    /// A resync dropped messages whose PubAcks may wait on the next flush: it reports an
    /// error even if it succeeds.
    dropped_unreported: bool,
    last_flush: Instant,
    closed: bool,
}

impl Log {
    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// Sequence of the first message in `recent`, or `last + 1`: the database holds the
    /// messages of `[first, db_end)`.
    fn db_end(&self) -> u64 {
        self.recent.front().map_or(self.last + 1, |c| c.seq)
    }

    /// Messages not committed yet: the tail of `recent` past `flushed`.
    fn unflushed(&self) -> usize {
        let n = self.last.saturating_sub(self.flushed);
        usize::try_from(n).map_or(self.recent.len(), |n| n.min(self.recent.len()))
    }

    fn cached(&self, seq: u64) -> Option<&Cached> {
        let front = self.recent.front()?.seq;
        if seq < front {
            return None;
        }
        self.recent.get(usize::try_from(seq - front).ok()?)
    }

    fn push(&mut self, seq: u64, ts: i64, enc: Bytes, committed: bool) {
        if self.msgs == 0 {
            self.first = seq;
        }
        if self.recent.back().is_none_or(|c| c.seq + 1 != seq) {
            // A jump forward (store() on an empty log): `recent` must stay consecutive.
            self.recent.clear();
            self.recent_bytes = 0;
            self.unflushed_bytes = 0;
        }
        self.last = seq;
        self.last_ts = self.last_ts.max(ts);
        self.msgs += 1;
        self.bytes += enc.len() as u64;
        self.recent_bytes += enc.len();
        if committed {
            self.flushed = seq;
        } else {
            self.unflushed_bytes += enc.len();
        }
        self.recent.push_back(Cached { seq, ts, enc });
    }

    /// Drops committed messages from `recent` beyond the cache limits.
    fn evict(&mut self, max_msgs: usize, max_bytes: usize) {
        while let Some(c) = self.recent.front() {
            let over = self.recent.len() > max_msgs.max(1) || self.recent_bytes > max_bytes;
            if !over || c.seq > self.flushed || self.recent.len() == 1 {
                break;
            }
            self.recent_bytes -= c.enc.len();
            self.recent.pop_front();
        }
    }
}

/// The SQL message log of one channel.
pub(crate) struct SqlMsgStore {
    shared: Arc<Shared>,
    channel_id: i64,
    log: Mutex<Log>,
    flush_lock: Mutex<()>,
}

impl SqlMsgStore {
    pub(crate) fn new(
        shared: Arc<Shared>,
        channel: &str,
        channel_id: i64,
        limits: &crate::store::ChannelLimits,
        init: Option<LogInit>,
    ) -> SqlMsgStore {
        let init = init.unwrap_or(LogInit {
            first: 1,
            last: 0,
            msgs: 0,
            bytes: 0,
            last_ts: 0,
            maxseq: 0,
        });
        SqlMsgStore {
            shared,
            channel_id,
            log: Mutex::new(Log {
                channel: channel.to_owned(),
                max_msgs: limits.max_msgs,
                max_bytes: limits.max_bytes,
                max_age: crate::store::memory::duration_nanos(limits.max_age),
                first: init.first,
                last: init.last,
                msgs: init.msgs,
                bytes: init.bytes,
                last_ts: init.last_ts,
                head: VecDeque::new(),
                recent: VecDeque::new(),
                recent_bytes: 0,
                unflushed_bytes: 0,
                flushed: init.last,
                db_low: init.first,
                maxseq: init.maxseq,
                enforce_pending: false,
                needs_resync: false,
                dropped_unreported: false,
                last_flush: Instant::now(),
                closed: false,
            }),
            flush_lock: Mutex::new(()),
        }
    }

    fn no_caching(&self) -> bool {
        self.shared.opts.no_caching
    }

    /// Reads the next window of `(seq, size, timestamp)` of the oldest messages held only in
    /// the database.
    fn load_head(&self, log: &mut Log) -> std::result::Result<(), SqlError> {
        let from = log.head.back().map_or(log.first, |m| m.seq + 1);
        let to = log.db_end();
        if from >= to {
            return Ok(());
        }
        let (id, sql) = (self.channel_id, self.shared.db.q.sql(Q::MsgsMeta));
        let rows = self.shared.db.call(move |cx| async move {
            let params = [V::Int(id), V::from(from), V::from(to), V::Int(HEAD_WINDOW)];
            let rows = cx.with_conn(async |c| c.query(&sql, &params).await).await?;
            rows.iter()
                .map(|r| -> std::result::Result<Meta, String> {
                    Ok(Meta {
                        seq: u64::try_from(r.int(0)?).map_err(|e| e.to_string())?,
                        size: u64::try_from(r.int(1)?).unwrap_or(0),
                        ts: r.opt_int(2)?.unwrap_or(0),
                    })
                })
                .collect::<std::result::Result<Vec<_>, String>>()
                .map_err(|message| SqlError::Corrupt {
                    what: "Messages row".into(),
                    message,
                })
        })?;
        if rows.is_empty() && log.head.is_empty() {
            // Rows missing from the database (never counted): continue with `recent`.
            log.first = to;
        }
        log.head.extend(rows);
        Ok(())
    }

    /// Size and timestamp of the first held message.
    fn front(&self, log: &mut Log) -> std::result::Result<Option<Meta>, SqlError> {
        for _ in 0..4 {
            if log.msgs == 0 {
                return Ok(None);
            }
            while log.head.front().is_some_and(|m| m.seq < log.first) {
                log.head.pop_front();
            }
            if let Some(m) = log.head.front() {
                if m.seq > log.first {
                    // A gap in the database: the first held message is the next row.
                    log.first = m.seq;
                }
                return Ok(Some(*m));
            }
            if log.first >= log.db_end() {
                return Ok(match log.cached(log.first) {
                    Some(c) => Some(Meta {
                        seq: c.seq,
                        size: c.enc.len() as u64,
                        ts: c.ts,
                    }),
                    None => {
                        // Counters say more than memory and database hold: trust the latter.
                        log.msgs = 0;
                        log.bytes = 0;
                        log.first = log.last + 1;
                        None
                    }
                });
            }
            self.load_head(log)?;
        }
        Ok(None)
    }

    fn pop_front(&self, log: &mut Log) -> std::result::Result<bool, SqlError> {
        let Some(m) = self.front(log)? else {
            return Ok(false);
        };
        if log.head.front().is_some_and(|h| h.seq == m.seq) {
            log.head.pop_front();
        }
        if log.recent.front().is_some_and(|c| c.seq == m.seq)
            && let Some(c) = log.recent.pop_front()
        {
            log.recent_bytes -= c.enc.len();
            if c.seq > log.flushed {
                log.unflushed_bytes -= c.enc.len();
            }
        }
        log.first = m.seq + 1;
        log.msgs -= 1;
        log.bytes = log.bytes.saturating_sub(m.size);
        if log.msgs == 0 {
            log.first = log.last + 1;
            log.bytes = 0;
        }
        Ok(true)
    }

    fn expire_age(&self, log: &mut Log, now: i64) -> std::result::Result<(), SqlError> {
        if log.max_age <= 0 {
            return Ok(());
        }
        let cutoff = now.saturating_sub(log.max_age);
        while let Some(m) = self.front(log)? {
            if m.ts > cutoff {
                break;
            }
            self.pop_front(log)?;
        }
        Ok(())
    }

    /// Applies the limits after an append whose timestamp is `now`. A database failure
    /// (reading the sizes of old messages) leaves the limits for later, not the append.
    fn enforce(&self, log: &mut Log, now: i64) {
        let r = (|| -> std::result::Result<(), SqlError> {
            self.expire_age(log, now)?;
            while log.msgs > 1
                && ((log.max_msgs > 0 && log.msgs > log.max_msgs)
                    || (log.max_bytes > 0 && log.bytes > log.max_bytes))
            {
                if !self.pop_front(log)? {
                    break;
                }
            }
            Ok(())
        })();
        log.enforce_pending = r.is_err();
    }

    fn evict(&self, log: &mut Log) {
        let o = &self.shared.opts;
        log.evict(o.cache_msgs, o.cache_bytes);
    }

    /// Adds a stamped message: inserted at once without caching, buffered otherwise.
    fn add(&self, log: &mut Log, m: &MsgProto) -> Result<()> {
        let enc = Bytes::from(m.encode_to_vec());
        if enc.len() as u64 > self.shared.max_message {
            return Err(StoreError::RecordTooLarge {
                size: enc.len() as u64,
                max: self.shared.max_message,
            });
        }
        if self.no_caching() {
            let stmt = self.insert_stmt(m.sequence, m.timestamp, &enc);
            if let Some(seq) = self.write(vec![stmt], 1, vec![(m.sequence, enc.clone())])? {
                return Err(self.taken(log, seq));
            }
            log.push(m.sequence, m.timestamp, enc, true);
        } else {
            let pending = log.unflushed();
            if pending >= BACKLOG_MSGS || log.unflushed_bytes >= BACKLOG_BYTES {
                return Err(SqlError::Backlog {
                    channel: log.channel.clone(),
                    pending,
                }
                .into());
            }
            log.push(m.sequence, m.timestamp, enc, false);
        }
        self.enforce(log, m.timestamp);
        if self.no_caching() && log.first > log.db_low {
            // Best effort: rows left behind are deleted by the next append or the janitor.
            let (stmts, low, maxseq) = self.delete_plan(log);
            if self.run(stmts).is_ok() {
                log.db_low = low;
                log.maxseq = log.maxseq.max(maxseq);
            }
        }
        self.evict(log);
        Ok(())
    }

    fn insert_stmt(&self, seq: u64, ts: i64, enc: &Bytes) -> Stmt {
        self.shared.db.q.stmt(
            Q::MsgInsert,
            vec![
                V::Int(self.channel_id),
                V::from(seq),
                V::Int(ts),
                V::Int(enc.len() as i64),
                V::Bytes(enc.clone()),
            ],
        )
    }

    /// Statements deleting the rows below `first` (and saving `maxseq` when no message is
    /// left), the new `db_low`, and the `maxseq` written (0 if none).
    fn delete_plan(&self, log: &Log) -> (Vec<Stmt>, u64, u64) {
        let q = &self.shared.db.q;
        let mut stmts = Vec::new();
        let mut maxseq = 0;
        if log.msgs == 0 && log.last > log.maxseq {
            maxseq = log.last;
            stmts.push(q.stmt(
                Q::ChannelMaxSeq,
                vec![V::from(log.last), V::Int(self.channel_id)],
            ));
        }
        stmts.push(q.stmt(
            Q::MsgsDeleteBelow,
            vec![V::Int(self.channel_id), V::from(log.first)],
        ));
        (stmts, log.first, maxseq)
    }

    /// Runs statements on the database, in one transaction when there are several.
    fn run(&self, stmts: Vec<Stmt>) -> std::result::Result<(), SqlError> {
        if stmts.is_empty() {
            return Ok(());
        }
        let tx = stmts.len() > 1;
        self.shared
            .db
            .call(move |cx| async move { cx.with_conn(async |c| c.run(&stmts, tx).await).await })
            .map(|_| ())
    }

    /// Runs `stmts`, whose first `inserts` insert the messages `rows`, checking that every row
    /// ends up holding this store's data (verify.rs). `Ok(Some(seq))`: another writer's row
    /// is at `seq`, nothing was written.
    fn write(
        &self,
        stmts: Vec<Stmt>,
        inserts: usize,
        rows: Vec<(u64, Bytes)>,
    ) -> std::result::Result<Option<u64>, SqlError> {
        if stmts.is_empty() {
            return Ok(None);
        }
        // A statement inserting several rows may insert some: only a transaction undoes them.
        let tx = stmts.len() > 1 || rows.len() > 1;
        // One multi-row insert and nothing else: tried first as a strict insert on its own.
        let strict = (stmts.len() == 1 && inserts == 1 && rows.len() > 1).then(|| Stmt {
            sql: self.shared.db.q.bulk_insert_strict(rows.len()),
            params: stmts[0].params.clone(),
        });
        let channel = self.channel_id;
        self.shared.db.call(move |cx| async move {
            let expect = Expect::Messages {
                channel,
                inserts,
                rows: &rows,
            };
            let q = cx.q.clone();
            cx.with_conn(async |c| {
                if let Some(s) = &strict
                    && insert_strict(c, s).await?
                {
                    return Ok(None);
                }
                run_checked(c, &q, &stmts, tx, &expect).await
            })
            .await
        })
    }

    /// Handles another writer's row found at `seq`: resynchronises the channel (see
    /// [`resync`](Self::resync)) and returns the error for the caller.
    fn taken(&self, log: &mut Log, seq: u64) -> StoreError {
        let channel = log.channel.clone();
        if let Err(e) = self.resync(log) {
            return SqlError::ResyncPending {
                channel,
                message: e.to_string(),
            }
            .into();
        }
        SqlError::SequenceTaken { channel, seq }.into()
    }

    /// Brings the log in step with the database after another writer's rows were found at
    /// sequences this store was flushing (a stopped server's transaction that committed late,
    /// after this store had read the channel): the messages not committed are dropped (their
    /// flush failed, they get error PubAcks), the rows past what this store committed are
    /// counted in, and the log continues after the database's last sequence. Until this
    /// succeeds (it reads the database), appends are refused.
    fn resync(&self, log: &mut Log) -> std::result::Result<(), SqlError> {
        if log.last > log.flushed && !log.needs_resync {
            // Messages appended while the failed flush ran, or before it but after the
            // server's flusher took the PubAcks it carries, have their PubAcks on the next
            // flush: it must fail too (whatever it writes).
            log.dropped_unreported = true;
        }
        log.needs_resync = true;
        log.recent.clear();
        log.recent_bytes = 0;
        log.unflushed_bytes = 0;
        log.head.clear();
        // Rows this store did not commit lie above `flushed`; its own held rows from `first`.
        let from = log.first.min(log.flushed + 1);
        let (id, sql) = (self.channel_id, self.shared.db.q.sql(Q::MsgsStatsFrom));
        let stats = self.shared.db.call(move |cx| async move {
            let params = [V::Int(id), V::from(from)];
            let rows = cx.with_conn(async |c| c.query(&sql, &params).await).await?;
            let e = |message| SqlError::Corrupt {
                what: "Messages statistics".into(),
                message,
            };
            let Some(r) = rows.first() else {
                return Ok((0, 0, 0, 0, 0));
            };
            let u = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok((
                u(r.int(0).map_err(e)?),
                u(r.int(1).map_err(e)?),
                u(r.int(2).map_err(e)?),
                u(r.int(3).map_err(e)?),
                r.int(4).map_err(e)?,
            ))
        })?;
        let (count, min, max, bytes, max_ts) = stats;
        log.last = log.flushed.max(max);
        log.flushed = log.last;
        log.msgs = count;
        log.bytes = bytes;
        log.first = if count > 0 { min } else { log.last + 1 };
        log.last_ts = log.last_ts.max(max_ts);
        log.needs_resync = false;
        let now = log.last_ts;
        self.enforce(log, now);
        Ok(())
    }

    /// Resynchronises first if an earlier conflict left the log unsynchronised.
    fn ensure_synced(&self, log: &mut Log) -> Result<()> {
        if !log.needs_resync {
            return Ok(());
        }
        self.resync(log).map_err(|e| {
            SqlError::ResyncPending {
                channel: log.channel.clone(),
                message: e.to_string(),
            }
            .into()
        })
    }

    /// The inserts for the messages not committed yet (with their sequences and stored form,
    /// to check what the inserts found in place), and the sequence they end at.
    #[allow(clippy::type_complexity)]
    fn insert_plan(&self, log: &Log) -> (Vec<Stmt>, Vec<(u64, Bytes)>, u64) {
        let pending: Vec<&Cached> = {
            let n = log.unflushed();
            log.recent.iter().skip(log.recent.len() - n).collect()
        };
        let Some(upto) = pending.last().map(|c| c.seq) else {
            return (Vec::new(), Vec::new(), log.flushed);
        };
        let rows = pending.iter().map(|c| (c.seq, c.enc.clone())).collect();
        let limit = self.shared.opts.bulk_insert_limit.min(MAX_BULK_ROWS);
        let mut stmts = Vec::new();
        if limit >= super::MIN_BULK_INSERT_LIMIT && pending.len() > 1 {
            // At most `limit` rows, and about BULK_MAX_BYTES of data, per statement.
            let mut chunks = Vec::new();
            let (mut start, mut bytes) = (0, 0);
            for (i, c) in pending.iter().enumerate() {
                if i > start && (i - start == limit || bytes + c.enc.len() > BULK_MAX_BYTES) {
                    chunks.push(&pending[start..i]);
                    (start, bytes) = (i, 0);
                }
                bytes += c.enc.len();
            }
            chunks.push(&pending[start..]);
            for chunk in chunks {
                let mut params = Vec::with_capacity(chunk.len() * 5);
                for c in chunk {
                    params.extend([
                        V::Int(self.channel_id),
                        V::from(c.seq),
                        V::Int(c.ts),
                        V::Int(c.enc.len() as i64),
                        V::Bytes(c.enc.clone()),
                    ]);
                }
                stmts.push(Stmt {
                    sql: self.shared.db.q.bulk_insert(chunk.len()),
                    params,
                });
            }
        } else {
            stmts.extend(
                pending
                    .iter()
                    .map(|c| self.insert_stmt(c.seq, c.ts, &c.enc)),
            );
        }
        (stmts, rows, upto)
    }

    /// Flushes; with `deletes_only`, only when rows wait for deletion and nothing was
    /// flushed for a second (the store's background thread).
    pub(crate) fn flush_inner(&self, deletes_only: bool) -> Result<()> {
        let _f = self.flush_lock.lock();
        let (stmts, inserts, rows, upto, low, maxseq, report) = {
            let mut log = self.log.lock();
            log.check_open()?;
            if deletes_only
                && (log.needs_resync
                    || log.first <= log.db_low
                    || log.last_flush.elapsed().as_secs() < 1)
            {
                return Ok(());
            }
            // Messages dropped by a resync: this flush may carry their PubAcks (not the
            // background thread's, which carries none).
            let report =
                (!deletes_only && std::mem::take(&mut log.dropped_unreported)).then(|| {
                    StoreError::from(SqlError::MessagesDropped {
                        channel: log.channel.clone(),
                    })
                });
            if let Err(e) = self.ensure_synced(&mut log) {
                return Err(report.unwrap_or(e));
            }
            if log.enforce_pending {
                let now = log.last_ts;
                self.enforce(&mut log, now);
            }
            let (ins, rows, upto) = if deletes_only {
                (Vec::new(), Vec::new(), log.flushed)
            } else {
                self.insert_plan(&log)
            };
            let (dels, low, maxseq) = if log.first > log.db_low {
                self.delete_plan(&log)
            } else {
                (Vec::new(), log.db_low, 0)
            };
            let inserts = ins.len();
            let mut stmts = ins;
            stmts.extend(dels);
            (stmts, inserts, rows, upto, low, maxseq, report)
        };
        let done = |r: Result<()>| match (r, report) {
            (Ok(()), Some(e)) => Err(e),
            (r, _) => r,
        };
        if stmts.is_empty() {
            return done(Ok(()));
        }
        match self.write(stmts, inserts, rows) {
            Ok(None) => {}
            Ok(Some(seq)) => {
                let mut log = self.log.lock();
                return Err(self.taken(&mut log, seq));
            }
            Err(e) => return Err(e.into()),
        }
        let mut log = self.log.lock();
        log.flushed = log.flushed.max(upto);
        log.unflushed_bytes = log
            .recent
            .iter()
            .filter(|c| c.seq > log.flushed)
            .map(|c| c.enc.len())
            .sum();
        log.db_low = log.db_low.max(low);
        log.maxseq = log.maxseq.max(maxseq);
        log.last_flush = Instant::now();
        self.evict(&mut log);
        // Read the next sizes now, on the flushing thread, rather than in a later append.
        let limited = log.max_msgs > 0 || log.max_bytes > 0 || log.max_age > 0;
        if limited && log.head.len() < (HEAD_WINDOW / 4) as usize {
            let _ = self.load_head(&mut log);
        }
        done(Ok(()))
    }

    /// Marks the log closed without flushing (its channel was deleted).
    pub(crate) fn abandon(&self) {
        self.log.lock().closed = true;
    }

    fn decode(enc: &Bytes) -> Result<MsgProto> {
        MsgProto::decode(enc.clone()).map_err(|e| {
            SqlError::Corrupt {
                what: "message".into(),
                message: e.to_string(),
            }
            .into()
        })
    }

    /// Messages of `[from, to)` from the database, at most `rows`, as stored.
    fn read_db(
        &self,
        from: u64,
        to: u64,
        rows: usize,
    ) -> std::result::Result<Vec<(u64, Bytes)>, SqlError> {
        let (id, sql) = (self.channel_id, self.shared.db.q.sql(Q::MsgsRange));
        self.shared.db.call(move |cx| async move {
            let params = [V::Int(id), V::from(from), V::from(to), V::Int(rows as i64)];
            let rows = cx.with_conn(async |c| c.query(&sql, &params).await).await?;
            rows.into_iter()
                .map(|mut r| -> std::result::Result<(u64, Bytes), String> {
                    let seq = u64::try_from(r.int(0)?).map_err(|e| e.to_string())?;
                    Ok((seq, r.bytes(1)?.unwrap_or_default()))
                })
                .collect::<std::result::Result<Vec<_>, String>>()
                .map_err(|message| SqlError::Corrupt {
                    what: "Messages row".into(),
                    message,
                })
        })
    }
}

fn encoded(seq: u64, enc: Bytes) -> Result<EncodedMsg> {
    match peek_msg_proto(&enc) {
        Some((s, data_len)) if s == seq => Ok(EncodedMsg {
            sequence: seq,
            data_len,
            encoded: enc,
        }),
        _ => Err(SqlError::Corrupt {
            what: format!("message {seq}"),
            message: "the data column is not this message's MsgProto".into(),
        }
        .into()),
    }
}

impl MsgStore for SqlMsgStore {
    fn append(&self, msg: NewMessage) -> Result<MsgProto> {
        let mut log = self.log.lock();
        log.check_open()?;
        self.ensure_synced(&mut log)?;
        let m = msg.stamp(log.last + 1, log.channel.clone(), log.last_ts);
        self.add(&mut log, &m)?;
        Ok(m)
    }

    fn store(&self, msg: &MsgProto) -> Result<u64> {
        let mut log = self.log.lock();
        log.check_open()?;
        self.ensure_synced(&mut log)?;
        if msg.sequence <= log.last {
            return Ok(msg.sequence);
        }
        if msg.sequence > log.last + 1 && log.msgs > 0 {
            return Err(StoreError::SequenceGap {
                channel: log.channel.clone(),
                expected: log.last + 1,
                got: msg.sequence,
            });
        }
        let mut m = msg.clone();
        m.redelivered = false;
        m.redelivery_count = 0;
        self.add(&mut log, &m)?;
        Ok(msg.sequence)
    }

    fn lookup(&self, seq: u64) -> Result<Option<MsgProto>> {
        {
            let log = self.log.lock();
            log.check_open()?;
            if log.msgs == 0 || seq < log.first || seq > log.last {
                return Ok(None);
            }
            if let Some(c) = log.cached(seq) {
                return Self::decode(&c.enc).map(Some);
            }
        }
        let (id, sql) = (self.channel_id, self.shared.db.q.sql(Q::MsgLookup));
        let data = self.shared.db.call(move |cx| async move {
            let params = [V::Int(id), V::from(seq)];
            let mut rows = cx.with_conn(async |c| c.query(&sql, &params).await).await?;
            match rows.first_mut() {
                Some(r) => r.bytes(0).map_err(|message| SqlError::Corrupt {
                    what: "Messages row".into(),
                    message,
                }),
                None => Ok(None),
            }
        })?;
        match data {
            // Deleted by limits meanwhile?
            Some(d) if seq >= self.log.lock().first => Self::decode(&d).map(Some),
            _ => Ok(None),
        }
    }

    fn read_batch(&self, start: u64, max_msgs: usize, max_bytes: usize) -> Result<Vec<MsgProto>> {
        self.read_batch_encoded(start, max_msgs, max_bytes)?
            .iter()
            .map(|e| Self::decode(&e.encoded))
            .collect()
    }

    fn read_batch_encoded(
        &self,
        start: u64,
        max_msgs: usize,
        max_bytes: usize,
    ) -> Result<Vec<EncodedMsg>> {
        let mut out = Vec::new();
        let mut budget = 0usize;
        // Whether `m` fits the budget (the first message always does).
        let mut fits = |out: &Vec<EncodedMsg>, len: usize| {
            budget += len;
            out.is_empty() || budget <= max_bytes
        };
        let (mut seq, db_part) = {
            let log = self.log.lock();
            log.check_open()?;
            if log.msgs == 0 || max_msgs == 0 {
                return Ok(out);
            }
            let seq = start.max(log.first);
            let end = log.db_end();
            let avg = (log.bytes / log.msgs.max(1)).max(1) as usize;
            let rows = (max_bytes / avg + 1).clamp(1, max_msgs.min(READ_ROWS_MAX));
            (seq, (seq < end).then_some((end, rows)))
        };
        if let Some((end, rows)) = db_part {
            let got = self.read_db(seq, end, rows)?;
            let full = got.len() == rows;
            for (s, enc) in got {
                if s != seq && !out.is_empty() {
                    return Ok(out); // a gap: the batch stops before it
                }
                if out.len() >= max_msgs || !fits(&out, enc.len()) {
                    return Ok(out);
                }
                out.push(encoded(s, enc)?);
                seq = s + 1;
            }
            if seq < end {
                if full || !out.is_empty() {
                    // As many rows as asked for (the caller asks again for more), or rows
                    // deleted meanwhile.
                    return Ok(out);
                }
                seq = end;
            }
        }
        let log = self.log.lock();
        log.check_open()?;
        seq = seq.max(log.first);
        while out.len() < max_msgs {
            let Some(c) = log.cached(seq) else { break };
            if !fits(&out, c.enc.len()) {
                break;
            }
            out.push(encoded(c.seq, c.enc.clone())?);
            seq += 1;
        }
        Ok(out)
    }

    fn state(&self) -> MsgStoreState {
        let log = self.log.lock();
        MsgStoreState {
            first: log.first,
            last: log.last,
            msgs: log.msgs,
            bytes: log.bytes,
        }
    }

    fn sequence_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        let (first, end, last) = {
            let log = self.log.lock();
            log.check_open()?;
            if log.msgs == 0 {
                return Ok(log.last + 1);
            }
            let end = log.db_end();
            // Timestamps never decrease: if the oldest cached message is older, so is every
            // message in the database.
            let in_memory = log.recent.front().is_some_and(|c| c.ts < timestamp);
            if in_memory || log.first >= end {
                // Every message in `recent` is held (limits pop it from the front).
                let front = log.recent.front().map_or(log.last + 1, |c| c.seq);
                let i = log.recent.iter().position(|c| c.ts >= timestamp);
                return Ok(i.map_or(log.last + 1, |i| front + i as u64));
            }
            (log.first, end, log.last)
        };
        let (id, sql) = (self.channel_id, self.shared.db.q.sql(Q::MsgSeqForTimestamp));
        let found = self.shared.db.call(move |cx| async move {
            let params = [V::Int(id), V::from(first), V::from(end), V::Int(timestamp)];
            let rows = cx.with_conn(async |c| c.query(&sql, &params).await).await?;
            match rows.first() {
                Some(r) => r
                    .int(0)
                    .map(|s| Some(s as u64))
                    .map_err(|message| SqlError::Corrupt {
                        what: "Messages row".into(),
                        message,
                    }),
                None => Ok(None),
            }
        })?;
        // Not in the database: the first cached message (newer than `timestamp`).
        Ok(found.unwrap_or(if end <= last { end } else { last + 1 }))
    }

    fn expire(&self, now: i64) -> Result<Option<i64>> {
        let mut log = self.log.lock();
        log.check_open()?;
        if log.max_age <= 0 {
            return Ok(None);
        }
        self.expire_age(&mut log, now)?;
        let max_age = log.max_age;
        Ok(self.front(&mut log)?.map(|m| m.ts.saturating_add(max_age)))
    }

    fn flush(&self) -> Result<()> {
        self.flush_inner(false)
    }

    fn empty(&self) -> Result<()> {
        {
            let mut log = self.log.lock();
            log.check_open()?;
            log.recent.clear();
            log.head.clear();
            log.recent_bytes = 0;
            log.unflushed_bytes = 0;
            log.msgs = 0;
            log.bytes = 0;
            log.first = log.last + 1;
            log.flushed = log.last;
        }
        self.flush_inner(false)
    }

    fn close(&self) -> Result<()> {
        if self.log.lock().closed {
            return Ok(());
        }
        let r = self.flush_inner(false);
        self.log.lock().closed = true;
        r
    }
}
