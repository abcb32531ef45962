//! Another writer's rows at the sequences (or pending `row` numbers) the store writes: a
//! stopped server's transaction that commits late, reproduced with a second connection that
//! writes behind the store's back, committed at once or held open and committed (or rolled
//! back) later. The store must fail the write (never acknowledge over a foreign row), accept
//! rows identical to its own (an earlier commit whose reply was lost), resynchronise the
//! channel and go on, and wait at open for a transaction in flight.

use std::sync::mpsc;

use super::super::db::Db;
use super::super::driver::{Source, Stmt, V, translate};
use super::*;
use crate::proto::MsgProto;

/// A second connection writing behind the store's back.
struct Side {
    db: Db,
    driver: SqlDriver,
}

impl Side {
    fn open(e: &Env) -> Side {
        let src = Source::parse(e.driver, &e.source()).unwrap();
        Side {
            db: Db::open(src, 2).unwrap(),
            driver: e.driver,
        }
    }

    fn stmt(&self, sql: &str, params: Vec<V>) -> Stmt {
        Stmt {
            sql: translate(self.driver, sql).into(),
            params,
        }
    }

    /// Runs one statement (committed at once).
    fn exec(&self, sql: &str, params: Vec<V>) {
        let s = [self.stmt(sql, params)];
        self.db
            .call(move |cx| async move { cx.with_conn(async |c| c.run(&s, false).await).await })
            .unwrap();
    }

    /// Runs `stmts` in a transaction left open for `hold`, then commits (or rolls back).
    /// Returns once the statements ran (their rows are locked, not visible yet).
    fn hold(&self, stmts: Vec<Stmt>, hold: Duration, commit: bool) -> mpsc::Receiver<()> {
        let (ran_tx, ran) = mpsc::sync_channel(1);
        let (done_tx, done) = mpsc::sync_channel(1);
        self.db
            .spawn(move |cx| async move {
                let end = if commit { "COMMIT" } else { "ROLLBACK" };
                let r = cx
                    .with_conn(async |c| {
                        c.simple("BEGIN").await?;
                        c.run(&stmts, false).await?;
                        let _ = ran_tx.try_send(());
                        tokio::time::sleep(hold).await;
                        c.simple(end).await
                    })
                    .await;
                r.unwrap();
                let _ = done_tx.send(());
            })
            .unwrap();
        ran.recv_timeout(Duration::from_secs(15))
            .expect("the held transaction ran its statements");
        done
    }

    /// An insert of message `seq` of channel `ch` with `data` (as another server writes it).
    fn foreign_msg(&self, ch: i64, seq: u64, data: &str) -> Stmt {
        let enc = Bytes::from(foreign(seq, data).encode_to_vec());
        self.stmt(
            "INSERT INTO Messages (id, seq, timestamp, size, data) VALUES (?, ?, ?, ?, ?)",
            vec![
                V::Int(ch),
                V::from(seq),
                V::Int(now_nanos()),
                V::Int(enc.len() as i64),
                V::Bytes(enc),
            ],
        )
    }
}

fn foreign(seq: u64, data: &str) -> MsgProto {
    MsgProto {
        sequence: seq,
        subject: "c".into(),
        data: Bytes::copy_from_slice(data.as_bytes()),
        timestamp: now_nanos(),
        ..Default::default()
    }
}

/// The data of every row, in sequence order.
fn rows(st: &SqlStore, from: u64) -> Vec<(u64, String)> {
    let ch = st.lookup_channel("c").unwrap();
    ch.msgs()
        .read_batch(from, 1000, 1 << 30)
        .unwrap()
        .into_iter()
        .map(|m| (m.sequence, String::from_utf8_lossy(&m.data).into_owned()))
        .collect()
}

fn expected(range: std::ops::RangeInclusive<u64>, f: impl Fn(u64) -> String) -> Vec<(u64, String)> {
    range.map(|s| (s, f(s))).collect()
}

fn is_taken(e: &StoreError, at: u64) -> bool {
    matches!(e, StoreError::Sql(SqlError::SequenceTaken { seq, .. }) if *seq == at)
}

fn is_dropped(e: &StoreError) -> bool {
    matches!(e, StoreError::Sql(SqlError::MessagesDropped { .. }))
}

/// Channel "c" (id 1) with messages m1..m10 committed.
fn ten(e: &Env, opts: impl FnOnce(&mut SqlStoreOptions)) -> (SqlStore, Arc<crate::store::Channel>) {
    let st = e.open_with(opts, StoreLimits::unlimited());
    let ch = st.create_channel("c").unwrap();
    for i in 1..=10 {
        ch.msgs().append(msg(&format!("m{i}"))).unwrap();
    }
    ch.msgs().flush().unwrap();
    (st, ch)
}

fn foreign_rows_fail_the_flush(e: &Env, bulk: usize) {
    let (st, ch) = ten(e, |o| o.bulk_insert_limit = bulk);
    let side = Side::open(e);
    for i in 11..=13 {
        assert_eq!(ch.msgs().append(msg(&format!("m{i}"))).unwrap().sequence, i);
    }
    // A late commit of another server: rows 11 and 12.
    side.exec_stmt(side.foreign_msg(1, 11, "z11"));
    side.exec_stmt(side.foreign_msg(1, 12, "z12"));
    let err = ch.msgs().flush().unwrap_err();
    assert!(is_taken(&err, 11), "{err}");
    // Nothing of ours was written (m13 included: the transaction rolled back).
    assert_eq!(e.count("Messages"), 12);
    // Resynchronised: the foreign rows are the channel's 11 and 12.
    let s = ch.msgs().state();
    assert_eq!((s.first, s.last, s.msgs), (1, 12, 12));
    assert_eq!(ch.msgs().lookup(11).unwrap().unwrap().data, "z11");
    assert!(ch.msgs().lookup(13).unwrap().is_none(), "m13 was dropped");
    // The next flush may carry the PubAcks of dropped messages: it fails, but stores.
    assert_eq!(ch.msgs().append(msg("n13")).unwrap().sequence, 13);
    let err = ch.msgs().flush().unwrap_err();
    assert!(is_dropped(&err), "{err}");
    assert_eq!(e.count("Messages"), 13);
    // Then the channel works as before.
    for i in 14..=16 {
        assert_eq!(ch.msgs().append(msg(&format!("n{i}"))).unwrap().sequence, i);
    }
    ch.msgs().flush().unwrap();
    let want: Vec<(u64, String)> = expected(1..=16, |s| match s {
        1..=10 => format!("m{s}"),
        11 | 12 => format!("z{s}"),
        _ => format!("n{s}"),
    });
    assert_eq!(rows(&st, 1), want);
    st.close().unwrap();
    // And so does the database, read back.
    let st = e.open(StoreLimits::unlimited());
    assert_eq!(rows(&st, 1), want);
    st.close().unwrap();
}

fn foreign_rows_fail_the_flush_single(e: &Env) {
    foreign_rows_fail_the_flush(e, 0);
}
on_both!(foreign_rows_fail_the_flush_single);

fn foreign_rows_fail_the_flush_bulk(e: &Env) {
    foreign_rows_fail_the_flush(e, 10);
}
on_both!(foreign_rows_fail_the_flush_bulk);

impl Side {
    fn exec_stmt(&self, s: Stmt) {
        let s = [s];
        self.db
            .call(move |cx| async move { cx.with_conn(async |c| c.run(&s, false).await).await })
            .unwrap();
    }
}

/// Rows identical to the store's own (its earlier commit whose reply was lost) are accepted.
fn identical_rows_are_ours(e: &Env) {
    for bulk in [0, 10] {
        let e = &env(e.server, true);
        let (st, ch) = ten(e, |o| o.bulk_insert_limit = bulk);
        let side = Side::open(e);
        let m11 = ch.msgs().append(msg("m11")).unwrap();
        let m12 = ch.msgs().append(msg("m12")).unwrap();
        ch.msgs().append(msg("m13")).unwrap();
        for m in [&m11, &m12] {
            let enc = Bytes::from(m.encode_to_vec());
            side.exec(
                "INSERT INTO Messages (id, seq, timestamp, size, data) VALUES (?, ?, ?, ?, ?)",
                vec![
                    V::Int(1),
                    V::from(m.sequence),
                    V::Int(m.timestamp),
                    V::Int(enc.len() as i64),
                    V::Bytes(enc),
                ],
            );
        }
        ch.msgs().flush().unwrap();
        assert_eq!(e.count("Messages"), 13);
        ch.msgs().append(msg("m14")).unwrap();
        ch.msgs().flush().unwrap();
        assert_eq!(rows(&st, 1), expected(1..=14, |s| format!("m{s}")));
        st.close().unwrap();
    }
}
on_both!(identical_rows_are_ours);

/// The reported case: a transaction holding row 11 commits after the store has read the
/// channel. The store's insert waits for it, then sees the foreign row.
fn late_commit_is_detected(e: &Env) {
    let (st, ch) = ten(e, |_| {});
    let side = Side::open(e);
    let done = side.hold(
        vec![side.foreign_msg(1, 11, "z11")],
        Duration::from_millis(700),
        true,
    );
    ch.msgs().append(msg("m11")).unwrap();
    let err = ch.msgs().flush().unwrap_err();
    assert!(is_taken(&err, 11), "{err}");
    done.recv_timeout(Duration::from_secs(15)).unwrap();
    assert_eq!(ch.msgs().state().last, 11);
    assert_eq!(ch.msgs().append(msg("m12")).unwrap().sequence, 12);
    // (m11 was dropped: this flush reports it, then the channel is clean.)
    assert!(is_dropped(&ch.msgs().flush().unwrap_err()));
    ch.msgs().append(msg("m13")).unwrap();
    ch.msgs().flush().unwrap();
    let got = rows(&st, 10);
    assert_eq!(
        got,
        [
            (10, "m10".into()),
            (11, "z11".into()),
            (12, "m12".into()),
            (13, "m13".into())
        ]
    );
    // A transaction that rolls back instead leaves the sequence to the store.
    let done = side.hold(
        vec![side.foreign_msg(1, 14, "z14")],
        Duration::from_millis(500),
        false,
    );
    ch.msgs().append(msg("m14")).unwrap();
    ch.msgs().flush().unwrap();
    done.recv_timeout(Duration::from_secs(15)).unwrap();
    assert_eq!(ch.msgs().lookup(14).unwrap().unwrap().data, "m14");
    st.close().unwrap();
}
on_both!(late_commit_is_detected);

/// Opening waits for a transaction in flight on the store's tables (fence.rs), so the rows
/// it commits are read back, and their sequences are not handed out again.
fn open_waits_for_a_late_commit(e: &Env) {
    let (st, _) = ten(e, |_| {});
    st.close().unwrap();
    let side = Side::open(e);
    let done = side.hold(
        vec![
            side.foreign_msg(1, 11, "z11"),
            side.foreign_msg(1, 12, "z12"),
        ],
        Duration::from_millis(1500),
        true,
    );
    let st = e.open(StoreLimits::unlimited());
    let ch = st.lookup_channel("c").unwrap();
    assert_eq!(ch.msgs().state().last, 12, "the open read the late commit");
    done.recv_timeout(Duration::from_secs(15)).unwrap();
    assert_eq!(ch.msgs().append(msg("m13")).unwrap().sequence, 13);
    ch.msgs().flush().unwrap();
    assert_eq!(rows(&st, 11).len(), 3);
    st.close().unwrap();
}
on_both!(open_waits_for_a_late_commit);

/// Without caching an append inserts at once: a foreign row makes it fail, the next goes on.
fn no_caching_append_fails_on_a_foreign_row(e: &Env) {
    let (st, _) = ten(e, |_| {});
    st.close().unwrap();
    let st = e.open_with(|o| o.no_caching = true, StoreLimits::unlimited());
    let ch = st.lookup_channel("c").unwrap();
    let side = Side::open(e);
    side.exec_stmt(side.foreign_msg(1, 11, "z11"));
    let err = ch.msgs().append(msg("m11")).unwrap_err();
    assert!(is_taken(&err, 11), "{err}");
    assert_eq!(ch.msgs().append(msg("m12")).unwrap().sequence, 12);
    ch.msgs().flush().unwrap();
    assert_eq!(rows(&st, 11), [(11, "z11".into()), (12, "m12".into())]);
    st.close().unwrap();
}
on_both!(no_caching_append_fails_on_a_foreign_row);

fn pending_insert(side: &Side, subid: u64, row: u64, seq: u64) {
    side.exec(
        "INSERT INTO SubsPending (subid, `row`, seq) VALUES (?, ?, ?)",
        vec![V::from(subid), V::from(row), V::from(seq)],
    );
}

fn max_row(e: &Env) -> u64 {
    let sql = match e.driver {
        SqlDriver::Postgres => "SELECT MAX(row) FROM SubsPending",
        SqlDriver::Mysql => "SELECT MAX(`row`) FROM SubsPending",
    };
    e.sql(sql).parse().unwrap()
}

/// A `SubsPending` row already at a `(subid, row)` the store writes: the flush fails, the
/// next rewrites the subscription's rows, and its pending set survives a restart.
fn pending_row_taken(e: &Env) {
    let st = e.open(StoreLimits::unlimited());
    let ch = st.create_channel("c").unwrap();
    let mut sub = SubState::default();
    ch.subs().create_sub(&mut sub).unwrap();
    ch.subs().add_seqs_pending(sub.id, &[1, 2, 3]).unwrap();
    ch.subs().flush().unwrap();
    assert_eq!(e.count("SubsPending"), 1);
    let side = Side::open(e);
    // At the `row` the store writes next.
    pending_insert(&side, sub.id, max_row(e) + 1, 99);
    ch.subs().add_seq_pending(sub.id, 4).unwrap();
    let err = ch.subs().flush().unwrap_err();
    assert!(
        matches!(&err, StoreError::Sql(SqlError::PendingRowTaken { subid }) if *subid == sub.id),
        "{err}"
    );
    ch.subs().flush().unwrap();
    st.close().unwrap();
    let st = e.open(StoreLimits::unlimited());
    let ch = st.lookup_channel("c").unwrap();
    assert_eq!(pending_of(ch.subs(), sub.id), [1, 2, 3, 4]);
    st.close().unwrap();

    // Without caching, one row per pending message: the next operation goes past the row.
    let st = e.open_with(|o| o.no_caching = true, StoreLimits::unlimited());
    let ch = st.lookup_channel("c").unwrap();
    pending_insert(&side, sub.id, max_row(e) + 1, 98);
    let err = ch.subs().add_seq_pending(sub.id, 5).unwrap_err();
    assert!(
        matches!(&err, StoreError::Sql(SqlError::PendingRowTaken { .. })),
        "{err}"
    );
    ch.subs().add_seq_pending(sub.id, 6).unwrap();
    st.close().unwrap();
}
on_both!(pending_row_taken);
