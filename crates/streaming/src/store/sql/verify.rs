//! Writes that must not succeed silently over rows another writer put in place.
//!
//! Inserts into `Messages` and `SubsPending` are idempotent (PostgreSQL `ON CONFLICT DO
//! NOTHING`, MySQL `ON DUPLICATE KEY UPDATE` of nothing), so that a flush whose commit outcome
//! was lost can simply be sent again. Such an insert that finds a row at its key does nothing,
//! without error, and reports it in its affected-row count (0 for that row: PostgreSQL counts
//! inserted rows; MySQL counts changed rows, the driver never asking for found rows).
//!
//! [`run_checked`] runs the statements of one write (in one transaction when there are several
//! statements or rows) and, before committing, compares the counts with what was expected:
//!
//! * messages ([`Expect::Messages`]): when the inserts fell short, the rows at the flushed
//!   sequences are read back (locking read, latest committed version) and each must hold
//!   exactly the data this store sends. Identical rows are an earlier commit of this store
//!   whose reply was lost; any other row means another writer (typically the late commit of a
//!   dead server's transaction) holds that sequence: the transaction is rolled back and the
//!   sequence reported, so the flush fails instead of acknowledging messages it did not store.
//! * pending rows ([`Expect::OneEach`]): a `(subid, row)` is written once with a new `row`
//!   number, so a row found in place is never this store's: rolled back, reported.
//!
//! An insert blocked by another transaction's uncommitted row at the same key waits until that
//! transaction ends (both databases), so the count and the read back see its outcome.
//!
//! A flush that is one multi-row insert first tries [`insert_strict`]: the insert without its
//! conflict clause, outside any transaction. A single statement is atomic in both databases,
//! so it either wrote every row or, on a row in place, failed with a duplicate key having
//! written none; only then does the flush take the checked path above. That saves the
//! `BEGIN` and `COMMIT` round trips of almost every flush (issue 16: a flush of ~128 rows
//! spent about 470 µs outside its rows).

use bytes::Bytes;

use super::driver::{Conn, DbFail, Stmt, V};
use super::queries::{Q, Queries};

/// What a write's statements must have done.
pub(crate) enum Expect<'a> {
    /// Statements `..inserts` insert the messages `rows` (consecutive sequences, as stored) of
    /// channel `channel`; every row must end up holding this data.
    Messages {
        channel: i64,
        inserts: usize,
        rows: &'a [(u64, Bytes)],
    },
    /// The statements at these indices insert one row each; the value is what to report when
    /// one inserted nothing (the subscription ID).
    OneEach(&'a [(usize, u64)]),
}

/// Runs `stmts` (in a transaction when `tx`) and checks them against `expect` before
/// committing. `Ok(None)`: committed. `Ok(Some(x))`: rolled back because of a row found in
/// place (`x` is the message sequence or the subscription ID concerned). Errors leave nothing
/// committed (or, for a lost connection, an unknown outcome the idempotent inserts absorb).
pub(crate) async fn run_checked(
    c: &mut Conn,
    q: &Queries,
    stmts: &[Stmt],
    tx: bool,
    expect: &Expect<'_>,
) -> Result<Option<u64>, DbFail> {
    if tx {
        c.simple("BEGIN").await?;
    }
    let r = async {
        let counts = c.run(stmts, false).await?;
        check(c, q, &counts, expect).await
    }
    .await;
    match r {
        Ok(None) => {
            if tx {
                c.simple("COMMIT").await?;
            }
            Ok(None)
        }
        Ok(Some(x)) => {
            if tx {
                c.simple("ROLLBACK").await?;
            }
            Ok(Some(x))
        }
        Err(f) => {
            if tx && !c.is_broken() {
                // A failed rollback breaks the connection: it is dropped, not reused.
                let _ = c.simple("ROLLBACK").await;
            }
            Err(f)
        }
    }
}

/// Runs `stmt`, one plain (strict) multi-row insert, on its own. `Ok(true)`: every row was
/// written and committed. `Ok(false)`: a row was in place, nothing was written; the caller
/// runs the idempotent insert through [`run_checked`]. Errors as [`run_checked`]'s.
pub(crate) async fn insert_strict(c: &mut Conn, stmt: &Stmt) -> Result<bool, DbFail> {
    match c.run(std::slice::from_ref(stmt), false).await {
        Ok(_) => Ok(true),
        Err(f) if f.duplicate && !f.broken => Ok(false),
        Err(f) => Err(f),
    }
}

async fn check(
    c: &mut Conn,
    q: &Queries,
    counts: &[u64],
    expect: &Expect<'_>,
) -> Result<Option<u64>, DbFail> {
    match *expect {
        Expect::OneEach(at) => Ok(at
            .iter()
            .find(|(i, _)| counts.get(*i).is_some_and(|n| *n == 0))
            .map(|(_, id)| *id)),
        Expect::Messages {
            channel,
            inserts,
            rows,
        } => {
            let inserted: u64 = counts.iter().take(inserts).sum();
            if inserted >= rows.len() as u64 {
                return Ok(None);
            }
            check_messages(c, q, channel, rows).await
        }
    }
}

/// Reads back the rows at the sequences of `rows` and returns the first sequence whose row is
/// missing or holds other data.
async fn check_messages(
    c: &mut Conn,
    q: &Queries,
    channel: i64,
    rows: &[(u64, Bytes)],
) -> Result<Option<u64>, DbFail> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    let sql = q.sql(Q::MsgsCheck);
    let params = [V::Int(channel), V::from(first.0), V::from(last.0)];
    let found = c.query(&sql, &params).await?;
    let mut found = found.into_iter();
    for (seq, ours) in rows {
        // Rows come in sequence order; ours are consecutive.
        let theirs = loop {
            let Some(mut r) = found.next() else {
                break None;
            };
            let s = r.int(0).ok().and_then(|s| u64::try_from(s).ok());
            match s {
                Some(s) if s < *seq => continue,
                Some(s) if s == *seq => break r.bytes(1).ok().flatten(),
                _ => break None,
            }
        };
        if theirs.as_ref() != Some(ours) {
            return Ok(Some(*seq));
        }
    }
    Ok(None)
}
