//! The subscriptions of one channel on `Subscriptions` and `SubsPending`.
//!
//! The state lives in memory ([`SubsState`], as in the other stores); the tables follow it.
//!
//! * `Subscriptions`: one row per subscription (`proto` = the `SubState`, `lastsent`).
//!   Subscription IDs come from one counter for the whole store, because `SubsPending` rows
//!   carry no channel: recovery restarts it at `MAX(subid)`, and deleting the subscription
//!   with the highest ID only marks its row `deleted` (purged when the channel gets its next
//!   subscription) so that its ID is not given again after a restart.
//! * `SubsPending`, read in `row` order at recovery: a row with `seq > 0` is one pending
//!   message (written by no-caching mode); a row with `seq = 0` holds JSON arrays of
//!   sequences, `pending` added then `acks` removed, and the subscription's `lastsent`.
//!
//! Caching mode (default): every change is recorded in memory and written by
//! [`SubStore::flush`] in one transaction: subscription upserts and deletions, then per
//! changed subscription either
//!   - nothing pending any more → delete its rows (and save `lastsent` in `Subscriptions`),
//!   - a few rows so far → one more row with what was sent and acknowledged since the last
//!     flush (split at [`MAX_SEQS_PER_ROW`] sequences),
//!   - [`MAX_ROWS`] rows, or a previous flush failed → rewrite: delete its rows, write its
//!     whole pending set.
//!
//! So rows never pile up, and after a failed flush (whose commit may or may not have
//! happened) the rewrite puts the table back in step with memory. The store's background
//! thread flushes a store whose changes are more than a second old.
//!
//! No-caching mode: one statement per operation (`INSERT` of a `seq` row per message sent,
//! `DELETE` of it on ack), as the reference server does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;

use super::driver::{Stmt, V};
use super::queries::Q;
use super::verify::{Expect, run_checked};
use super::{Shared, SqlError};
use crate::proto::SubState;
use crate::seqmap::SeqMap;
use crate::store::subs::SubsState;
use crate::store::{RecoveredSubscription, Result, StoreError, SubStore};

/// Most sequences in one JSON array (the reference server flushes at 2000; a MySQL `BLOB`
/// holds 64 KiB).
pub(crate) const MAX_SEQS_PER_ROW: usize = 2000;
/// Rows of one subscription after which the next flush rewrites them as one.
pub(crate) const MAX_ROWS: u64 = 16;

/// How the rows of one subscription stand.
#[derive(Debug, Default)]
pub(crate) struct SubRows {
    /// Its rows in `SubsPending` (as far as this store knows).
    pub rows: u64,
    /// The next `row` value to use.
    pub next_row: u64,
    /// `Subscriptions.lastsent` as stored.
    pub col_lastsent: u64,
    /// Sent since the last flush and still pending.
    new_pending: SeqMap<()>,
    /// Acknowledged since the last flush, of messages whose pending state is in a row.
    new_acks: SeqMap<()>,
    /// No-caching mode: pending sequences that come from JSON rows (a caching-mode run), whose
    /// acks must be written as JSON rows too.
    pub json_pending: SeqMap<()>,
    /// The rows may not match memory (a failed flush): rewrite them.
    rewrite: bool,
    dirty: bool,
}

impl SubRows {
    /// Bookkeeping for a subscription read back with `Subscriptions.lastsent` = `col_lastsent`
    /// (its rows are then counted by [`apply_row`]).
    pub(crate) fn recovered(col_lastsent: u64) -> SubRows {
        SubRows {
            col_lastsent,
            next_row: 1,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Upsert(u64),
    Delete { id: u64, mark: bool },
}

pub(crate) struct SubInner {
    pub subs: SubsState,
    pub rows: HashMap<u64, SubRows>,
    max_subs: u64,
    ops: Vec<Op>,
    /// A row of this channel is marked deleted (purged with the next creation).
    marked: bool,
    dirty_since: Option<Instant>,
    closed: bool,
}

/// The SQL subscription store of one channel.
pub(crate) struct SqlSubStore {
    shared: Arc<Shared>,
    channel_id: i64,
    inner: Mutex<SubInner>,
    flush_lock: Mutex<()>,
}

/// JSON array of sequences, as the reference server stores them: `[3,4,9]`.
pub(crate) fn encode_seqs(seqs: impl Iterator<Item = u64>) -> Bytes {
    let mut s = String::from("[");
    for (i, q) in seqs.enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&q.to_string());
    }
    s.push(']');
    Bytes::from(s)
}

/// Parses a JSON array of sequences (`null` and an empty column are empty).
pub(crate) fn decode_seqs(b: &[u8]) -> std::result::Result<Vec<u64>, String> {
    let s = std::str::from_utf8(b)
        .map_err(|_| "not UTF-8".to_owned())?
        .trim();
    if s.is_empty() || s == "null" {
        return Ok(Vec::new());
    }
    let inner = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("not a JSON array: {s:.40}"))?
        .trim();
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(',')
        .map(|t| {
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("not a sequence: {:.20}", t.trim()))
        })
        .collect()
}

impl SqlSubStore {
    pub(crate) fn new(
        shared: Arc<Shared>,
        channel_id: i64,
        max_subs: u64,
        recovered: Option<(SubsState, HashMap<u64, SubRows>)>,
    ) -> SqlSubStore {
        let (subs, mut rows) =
            recovered.unwrap_or_else(|| (SubsState::new(max_subs), HashMap::new()));
        if !shared.opts.no_caching {
            // Only no-caching mode writes acks per origin; caching mode rewrites rows instead.
            for r in rows.values_mut() {
                r.json_pending = SeqMap::new();
            }
        }
        SqlSubStore {
            shared,
            channel_id,
            inner: Mutex::new(SubInner {
                subs,
                rows,
                max_subs,
                ops: Vec::new(),
                marked: false,
                dirty_since: None,
                closed: false,
            }),
            flush_lock: Mutex::new(()),
        }
    }

    fn caching(&self) -> bool {
        !self.shared.opts.no_caching
    }

    fn stmt(&self, q: Q, params: Vec<V>) -> Stmt {
        self.shared.db.q.stmt(q, params)
    }

    /// Runs `stmts` (in a transaction when several), checking that each `SubsPending` insert
    /// wrote its row: a row already at that `(subid, row)` was written by another server
    /// (verify.rs), and the write is rolled back with [`SqlError::PendingRowTaken`].
    fn run(&self, stmts: Vec<Stmt>) -> std::result::Result<(), SqlError> {
        if stmts.is_empty() {
            return Ok(());
        }
        let q = &self.shared.db.q;
        let (by_row, by_seq) = (q.sql(Q::PendingInsertRow), q.sql(Q::PendingInsertSeq));
        let inserts: Vec<(usize, u64)> = stmts
            .iter()
            .enumerate()
            .filter(|(_, s)| s.sql == by_row || s.sql == by_seq)
            .map(|(i, s)| match s.params.first() {
                Some(V::Int(id)) => (i, u64::try_from(*id).unwrap_or(0)),
                _ => (i, 0),
            })
            .collect();
        let tx = stmts.len() > 1;
        let taken = self.shared.db.call(move |cx| async move {
            let q = cx.q.clone();
            let expect = Expect::OneEach(&inserts);
            cx.with_conn(async |c| run_checked(c, &q, &stmts, tx, &expect).await)
                .await
        })?;
        match taken {
            None => Ok(()),
            Some(subid) => Err(SqlError::PendingRowTaken { subid }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut SubInner) -> Result<T>) -> Result<T> {
        let mut g = self.inner.lock();
        if g.closed {
            return Err(StoreError::Closed);
        }
        f(&mut g)
    }

    fn touch(inner: &mut SubInner) {
        inner.dirty_since.get_or_insert_with(Instant::now);
    }

    fn upsert_stmt(&self, inner: &mut SubInner, id: u64) -> Option<Stmt> {
        let e = inner.subs.subs.get(&id)?;
        let last_sent = e.state.last_sent;
        let proto = Bytes::from(e.state.encode_to_vec());
        inner.rows.entry(id).or_default().col_lastsent = last_sent;
        Some(self.stmt(
            Q::SubUpsert,
            vec![
                V::Int(self.channel_id),
                V::from(id),
                V::from(last_sent),
                V::Bytes(proto),
            ],
        ))
    }

    fn delete_stmts(&self, id: u64, mark: bool) -> [Stmt; 2] {
        let q = if mark {
            Q::SubMarkDeleted
        } else {
            Q::SubDelete
        };
        [
            self.stmt(q, vec![V::Int(self.channel_id), V::from(id)]),
            self.stmt(Q::PendingDeleteSub, vec![V::from(id)]),
        ]
    }

    fn purge_stmt(&self, below: u64) -> Stmt {
        self.stmt(
            Q::SubsPurgeMarked,
            vec![V::Int(self.channel_id), V::from(below)],
        )
    }

    /// A pending-row insert.
    fn row_stmt(
        &self,
        id: u64,
        row: u64,
        last_sent: u64,
        p: Option<Bytes>,
        a: Option<Bytes>,
    ) -> Stmt {
        self.stmt(
            Q::PendingInsertRow,
            vec![
                V::from(id),
                V::from(row),
                V::from(last_sent),
                V::from(p),
                V::from(a),
            ],
        )
    }

    /// The statements bringing the rows of subscription `id` in step with memory.
    fn rows_plan(&self, inner: &mut SubInner, id: u64, out: &mut Vec<Stmt>) {
        let Some(e) = inner.subs.subs.get(&id) else {
            inner.rows.remove(&id);
            return;
        };
        let last_sent = e.state.last_sent;
        let r = inner.rows.entry(id).or_default();
        if !r.dirty {
            return;
        }
        let chunks = |n: usize| n.div_ceil(MAX_SEQS_PER_ROW) as u64;
        let delta_rows = chunks(r.new_pending.len().max(r.new_acks.len()));
        if e.pending.is_empty() {
            if r.rows > 0 || r.rewrite {
                out.push(self.stmt(Q::PendingDeleteSub, vec![V::from(id)]));
                r.rows = 0;
            }
            if last_sent > r.col_lastsent {
                out.push(self.stmt(
                    Q::SubLastSent,
                    vec![V::from(last_sent), V::Int(self.channel_id), V::from(id)],
                ));
                r.col_lastsent = last_sent;
            }
        } else if r.rewrite || r.rows + delta_rows > MAX_ROWS {
            out.push(self.stmt(Q::PendingDeleteSub, vec![V::from(id)]));
            let all: Vec<u64> = e.pending.keys().collect();
            r.rows = 0;
            for c in all.chunks(MAX_SEQS_PER_ROW) {
                let row = r.next_row;
                r.next_row += 1;
                r.rows += 1;
                out.push(self.row_stmt(
                    id,
                    row,
                    last_sent,
                    Some(encode_seqs(c.iter().copied())),
                    None,
                ));
            }
        } else {
            let p: Vec<u64> = r.new_pending.keys().collect();
            let a: Vec<u64> = r.new_acks.keys().collect();
            let mut pc = p.chunks(MAX_SEQS_PER_ROW);
            let mut ac = a.chunks(MAX_SEQS_PER_ROW);
            loop {
                let (pp, aa) = (pc.next(), ac.next());
                if pp.is_none() && aa.is_none() {
                    break;
                }
                let row = r.next_row;
                r.next_row += 1;
                r.rows += 1;
                out.push(self.row_stmt(
                    id,
                    row,
                    last_sent,
                    pp.map(|c| encode_seqs(c.iter().copied())),
                    aa.map(|c| encode_seqs(c.iter().copied())),
                ));
            }
        }
        r.new_pending = SeqMap::new();
        r.new_acks = SeqMap::new();
        r.rewrite = false;
        r.dirty = false;
    }

    /// Records `seq` as sent to `id`.
    fn add_pending(&self, inner: &mut SubInner, id: u64, seq: u64, out: &mut Vec<Stmt>) {
        let already = inner
            .subs
            .subs
            .get(&id)
            .is_some_and(|e| e.pending.get(seq).is_some());
        if !inner.subs.add_pending(id, seq) || already {
            return;
        }
        let r = inner.rows.entry(id).or_default();
        if self.caching() {
            // Sent again after an ack not yet written: the ack and the new send cancel out.
            if r.new_acks.remove(seq).is_none() {
                r.new_pending.insert(seq, ());
            }
            r.dirty = true;
        } else {
            let row = r.next_row;
            r.next_row += 1;
            r.rows += 1;
            out.push(self.stmt(
                Q::PendingInsertSeq,
                vec![V::from(id), V::from(row), V::from(seq)],
            ));
        }
    }

    /// Records the ack of `seq` by `id`.
    fn ack(&self, inner: &mut SubInner, id: u64, seq: u64, out: &mut Vec<Stmt>) {
        if !inner.subs.ack(id, seq) {
            return;
        }
        let last_sent = inner.subs.subs.get(&id).map_or(0, |e| e.state.last_sent);
        let r = inner.rows.entry(id).or_default();
        if self.caching() {
            if r.new_pending.remove(seq).is_none() {
                r.new_acks.insert(seq, ());
            }
            r.dirty = true;
            return;
        }
        if last_sent > r.col_lastsent {
            // The row about to go may be the only record of how far the subscription got.
            out.push(self.stmt(
                Q::SubLastSent,
                vec![V::from(last_sent), V::Int(self.channel_id), V::from(id)],
            ));
            r.col_lastsent = last_sent;
        }
        if r.json_pending.remove(seq).is_some() {
            let row = r.next_row;
            r.next_row += 1;
            r.rows += 1;
            out.push(self.row_stmt(
                id,
                row,
                last_sent,
                None,
                Some(encode_seqs([seq].into_iter())),
            ));
        } else {
            out.push(self.stmt(Q::PendingDeleteSeq, vec![V::from(id), V::from(seq)]));
        }
    }

    /// Runs the statements of a no-caching operation. When another server's row was found
    /// at a `row` number this store gave, the subscription's next `row` moves past the rows
    /// the table holds, so that the next operations write again.
    fn run_now(&self, inner: &mut SubInner, stmts: Vec<Stmt>) -> Result<()> {
        let r = self.run(stmts);
        if let Err(SqlError::PendingRowTaken { subid }) = &r {
            let (id, sql) = (*subid, self.shared.db.q.sql(Q::PendingMaxRow));
            let max = self.shared.db.call(move |cx| async move {
                let rows = cx
                    .with_conn(async |c| c.query(&sql, &[V::from(id)]).await)
                    .await?;
                Ok(rows.first().and_then(|r| r.int(0).ok()).unwrap_or(0))
            });
            if let (Ok(max), Some(sr)) = (max, inner.rows.get_mut(subid)) {
                sr.next_row = sr.next_row.max(u64::try_from(max).unwrap_or(0) + 1);
            }
        }
        r.map_err(StoreError::from)
    }

    /// Whether changes wait for a flush since more than a second (background flusher).
    pub(crate) fn due(&self) -> bool {
        let g = self.inner.lock();
        !g.closed && g.dirty_since.is_some_and(|t| t.elapsed().as_secs() >= 1)
    }

    /// Marks the store closed without flushing (its channel was deleted).
    pub(crate) fn abandon(&self) {
        self.inner.lock().closed = true;
    }

    fn flush_inner(&self) -> Result<()> {
        let _f = self.flush_lock.lock();
        let (stmts, ops, ids) = {
            let mut g = self.inner.lock();
            if g.closed {
                return Err(StoreError::Closed);
            }
            if !self.caching() || g.dirty_since.is_none() {
                return Ok(());
            }
            let inner = &mut *g;
            let ops = std::mem::take(&mut inner.ops);
            let mut stmts = Vec::new();
            let mut created = 0;
            for op in &ops {
                match *op {
                    Op::Upsert(id) => {
                        if let Some(s) = self.upsert_stmt(inner, id) {
                            stmts.push(s);
                            created = created.max(id);
                        }
                    }
                    Op::Delete { id, mark } => stmts.extend(self.delete_stmts(id, mark)),
                }
            }
            if inner.marked && created > 0 {
                stmts.push(self.purge_stmt(created));
                inner.marked = false;
            }
            let ids: Vec<u64> = inner
                .rows
                .iter()
                .filter(|(_, r)| r.dirty)
                .map(|(id, _)| *id)
                .collect();
            for id in &ids {
                self.rows_plan(inner, *id, &mut stmts);
            }
            inner.dirty_since = None;
            (stmts, ops, ids)
        };
        let r = self.run(stmts);
        if let Err(e) = r {
            let mut g = self.inner.lock();
            let inner = &mut *g;
            // Replay the subscription changes; rewrite the pending rows of those touched.
            let later = std::mem::take(&mut inner.ops);
            inner.ops = ops;
            inner.ops.extend(later);
            inner.marked = true;
            for id in ids {
                if let Some(r) = inner.rows.get_mut(&id) {
                    r.rewrite = true;
                    r.dirty = true;
                    r.col_lastsent = 0;
                }
            }
            Self::touch(inner);
            return Err(e.into());
        }
        Ok(())
    }
}

impl SubStore for SqlSubStore {
    fn create_sub(&self, state: &mut SubState) -> Result<()> {
        self.with(|inner| {
            if inner.max_subs > 0 && inner.subs.len() as u64 >= inner.max_subs {
                return Err(StoreError::TooManySubs);
            }
            let id = self.shared.next_sub_id();
            state.id = id;
            inner.subs.put(state.clone());
            inner.rows.entry(id).or_default();
            if self.caching() {
                inner.ops.push(Op::Upsert(id));
                Self::touch(inner);
                return Ok(());
            }
            let mut stmts: Vec<Stmt> = self.upsert_stmt(inner, id).into_iter().collect();
            if inner.marked {
                stmts.push(self.purge_stmt(id));
            }
            let r = self.run_now(inner, stmts);
            if r.is_err() {
                inner.subs.delete(id);
                inner.rows.remove(&id);
                state.id = 0;
            } else {
                inner.marked = false;
            }
            r
        })
    }

    fn update_sub(&self, state: &SubState) -> Result<()> {
        self.with(|inner| {
            inner.subs.put(state.clone());
            if self.caching() {
                inner.ops.push(Op::Upsert(state.id));
                Self::touch(inner);
                return Ok(());
            }
            let stmts = self.upsert_stmt(inner, state.id).into_iter().collect();
            self.run_now(inner, stmts)
        })
    }

    fn delete_sub(&self, id: u64) -> Result<()> {
        self.with(|inner| {
            inner.subs.delete(id);
            inner.rows.remove(&id);
            // The highest ID stays in the table (marked) so it is not reused after a restart.
            let mark = id >= self.shared.max_sub_id();
            if mark {
                inner.marked = true;
            }
            if self.caching() {
                inner.ops.push(Op::Delete { id, mark });
                Self::touch(inner);
                return Ok(());
            }
            self.run_now(inner, self.delete_stmts(id, mark).into())
        })
    }

    fn add_seq_pending(&self, id: u64, seq: u64) -> Result<()> {
        self.add_seqs_pending(id, &[seq])
    }

    fn ack_seq_pending(&self, id: u64, seq: u64) -> Result<()> {
        self.ack_seqs_pending(id, &[seq])
    }

    fn add_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        self.with(|inner| {
            let mut stmts = Vec::new();
            for &seq in seqs {
                self.add_pending(inner, id, seq, &mut stmts);
            }
            if self.caching() {
                if inner.rows.get(&id).is_some_and(|r| r.dirty) {
                    Self::touch(inner);
                }
                return Ok(());
            }
            self.run_now(inner, stmts)
        })
    }

    fn ack_seqs_pending(&self, id: u64, seqs: &[u64]) -> Result<()> {
        self.with(|inner| {
            let mut stmts = Vec::new();
            for &seq in seqs {
                self.ack(inner, id, seq, &mut stmts);
            }
            if self.caching() {
                if inner.rows.get(&id).is_some_and(|r| r.dirty) {
                    Self::touch(inner);
                }
                return Ok(());
            }
            self.run_now(inner, stmts)
        })
    }

    fn subscriptions(&self) -> Vec<RecoveredSubscription> {
        self.inner.lock().subs.snapshot()
    }

    fn count(&self) -> usize {
        self.inner.lock().subs.len()
    }

    fn flush(&self) -> Result<()> {
        self.flush_inner()
    }

    fn close(&self) -> Result<()> {
        if self.inner.lock().closed {
            return Ok(());
        }
        let r = self.flush_inner();
        self.inner.lock().closed = true;
        r
    }
}

/// Applies the `SubsPending` rows of one subscription, in `row` order, to its recovered
/// state. `row` is `(row, seq, lastsent, pending JSON, acks JSON)`.
pub(crate) fn apply_row(
    e: &mut crate::store::subs::SubEntry,
    r: &mut SubRows,
    row: (u64, u64, u64, Option<Bytes>, Option<Bytes>),
) -> std::result::Result<(), String> {
    let (rowid, seq, lastsent, pending, acks) = row;
    r.rows += 1;
    r.next_row = r.next_row.max(rowid + 1);
    if seq > 0 {
        e.pending.insert(seq, ());
        e.state.last_sent = e.state.last_sent.max(seq);
        return Ok(());
    }
    e.state.last_sent = e.state.last_sent.max(lastsent);
    if let Some(p) = pending {
        for s in decode_seqs(&p)? {
            e.pending.insert(s, ());
            r.json_pending.insert(s, ());
        }
    }
    if let Some(a) = acks {
        for s in decode_seqs(&a)? {
            e.pending.remove(s);
            r.json_pending.remove(s);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_sequences() {
        assert_eq!(&encode_seqs([1u64, 22, 333].into_iter())[..], b"[1,22,333]");
        assert_eq!(&encode_seqs(std::iter::empty())[..], b"[]");
        assert_eq!(decode_seqs(b"[1,22,333]").unwrap(), [1, 22, 333]);
        assert_eq!(decode_seqs(b" [ 4 , 5 ] ").unwrap(), [4, 5]);
        for empty in [&b""[..], b"null", b"[]", b"[ ]"] {
            assert!(decode_seqs(empty).unwrap().is_empty());
        }
        for bad in [&b"[1,"[..], b"1,2", b"[a]", b"[-1]", b"\xff"] {
            assert!(decode_seqs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rows_replay_in_order() {
        let mut e = crate::store::subs::SubEntry::default();
        let mut r = SubRows::default();
        let j = |s: &str| Some(Bytes::copy_from_slice(s.as_bytes()));
        apply_row(&mut e, &mut r, (1, 0, 5, j("[3,4,5]"), None)).unwrap();
        apply_row(&mut e, &mut r, (2, 0, 7, j("[6,7]"), j("[3,5]"))).unwrap();
        apply_row(&mut e, &mut r, (5, 9, 0, None, None)).unwrap();
        assert_eq!(e.pending.keys().collect::<Vec<_>>(), [4, 6, 7, 9]);
        assert_eq!(e.state.last_sent, 9);
        assert_eq!((r.rows, r.next_row), (3, 6));
        assert_eq!(r.json_pending.keys().collect::<Vec<_>>(), [4, 6, 7]);
        assert!(apply_row(&mut e, &mut r, (6, 0, 0, j("{"), None)).is_err());
    }
}
