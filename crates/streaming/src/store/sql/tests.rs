//! The SQL store against real PostgreSQL and MariaDB servers (from `rnats-test-db`): what
//! reaches the tables and when, recovery, limits across restarts, a database killed while the
//! store runs, schema errors, an unreachable database, the store lock, and rows in the
//! reference server's formats. Each test gets a fresh database; the tests that kill the
//! database start a server of their own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use rnats_test_db::{DbServer, Kind};

use super::*;
use crate::proto::{ClientInfo, MsgProto, ServerInfo, SubState};
use crate::store::{
    ChannelLimits, NewMessage, Store, StoreError, StoreLimits, SubStore, now_nanos,
};

/// A fresh database with the schema on a server.
struct Env<'a> {
    server: &'a DbServer,
    db: String,
    driver: SqlDriver,
}

impl Env<'_> {
    fn source(&self) -> String {
        self.server.source(&self.db)
    }

    fn opts(&self) -> SqlStoreOptions {
        SqlStoreOptions::new(self.driver, self.source())
    }

    fn open(&self, limits: StoreLimits) -> SqlStore {
        SqlStore::open(self.opts(), limits).unwrap()
    }

    fn open_with(&self, f: impl FnOnce(&mut SqlStoreOptions), limits: StoreLimits) -> SqlStore {
        let mut o = self.opts();
        f(&mut o);
        SqlStore::open(o, limits).unwrap()
    }

    /// Runs SQL through the command-line client.
    fn sql(&self, s: &str) -> String {
        self.server.sql(&self.db, s).unwrap().trim().to_owned()
    }

    fn count(&self, from: &str) -> u64 {
        self.sql(&format!("SELECT COUNT(*) FROM {from}"))
            .parse()
            .unwrap()
    }
}

fn env(server: &DbServer, schema: bool) -> Env<'_> {
    let db = server.create_database().unwrap();
    let driver: SqlDriver = server.driver().parse().unwrap();
    if schema {
        create_schema(driver, &server.source(&db)).unwrap();
    }
    Env { server, db, driver }
}

/// Runs `f` on a fresh database of the shared server of each kind (skipped, with a note, when
/// the server is not installed and `RNATS_REQUIRE_SQL` is not 1).
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn postgres() {
                if let Some(s) = super::DbServer::shared(super::Kind::Postgres) {
                    super::$name(&super::env(s, true));
                }
            }
            #[test]
            fn mariadb() {
                if let Some(s) = super::DbServer::shared(super::Kind::MariaDb) {
                    super::$name(&super::env(s, true));
                }
            }
        }
    };
}

fn msg(data: &str) -> NewMessage {
    NewMessage {
        reply: String::new(),
        data: Bytes::copy_from_slice(data.as_bytes()),
        timestamp: now_nanos(),
    }
}

fn msg_at(data: &str, ts: i64) -> NewMessage {
    NewMessage {
        timestamp: ts,
        ..msg(data)
    }
}

fn limited(max_msgs: u64, max_bytes: u64, max_age: Duration) -> StoreLimits {
    StoreLimits {
        channel: ChannelLimits {
            max_msgs,
            max_bytes,
            max_age,
            ..ChannelLimits::UNLIMITED
        },
        ..StoreLimits::unlimited()
    }
}

fn pending_of(subs: &dyn SubStore, id: u64) -> Vec<u64> {
    subs.subscriptions()
        .into_iter()
        .find(|s| s.state.id == id)
        .map(|s| s.pending.into_iter().collect())
        .unwrap_or_default()
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn caching_batches_until_flush(e: &Env) {
    let st = e.open(StoreLimits::unlimited());
    let ch = st.create_channel("foo").unwrap();
    assert_eq!(e.count("Channels"), 1);
    for i in 1..=5 {
        ch.msgs().append(msg(&format!("m{i}"))).unwrap();
    }
    assert_eq!(e.count("Messages"), 0, "appends wait for the flush");
    ch.msgs().flush().unwrap();
    assert_eq!(e.count("Messages"), 5);
    assert_eq!(
        e.sql("SELECT SUM(size) FROM Messages"),
        ch.msgs().state().bytes.to_string()
    );
    let mut sub = SubState {
        client_id: "c".into(),
        inbox: "in".into(),
        ..Default::default()
    };
    ch.subs().create_sub(&mut sub).unwrap();
    for s in 1..=5 {
        ch.subs().add_seq_pending(sub.id, s).unwrap();
    }
    assert_eq!(e.count("Subscriptions"), 0);
    ch.subs().flush().unwrap();
    assert_eq!(e.count("Subscriptions"), 1);
    assert_eq!(e.count("SubsPending"), 1, "one row for the whole batch");
    let text = match e.driver {
        SqlDriver::Postgres => "SELECT convert_from(pending, 'UTF8') FROM SubsPending",
        SqlDriver::Mysql => "SELECT pending FROM SubsPending",
    };
    assert_eq!(e.sql(text), "[1,2,3,4,5]");
    ch.subs().ack_seqs_pending(sub.id, &[1, 2]).unwrap();
    ch.subs().flush().unwrap();
    assert_eq!(e.count("SubsPending"), 2);
    ch.subs().ack_seqs_pending(sub.id, &[3, 4, 5]).unwrap();
    ch.subs().flush().unwrap();
    assert_eq!(e.count("SubsPending"), 0, "nothing pending: no row left");
    assert_eq!(e.sql("SELECT lastsent FROM Subscriptions"), "5");
    // The background flusher writes subscription changes within about a second.
    ch.subs().add_seq_pending(sub.id, 6).unwrap();
    eventually("the background flush", || e.count("SubsPending") == 1);
    st.close().unwrap();
}
on_both!(caching_batches_until_flush);

fn bulk_inserts(e: &Env) {
    let st = e.open_with(|o| o.bulk_insert_limit = 10, StoreLimits::unlimited());
    let ch = st.create_channel("bulk").unwrap();
    for i in 1..=25 {
        ch.msgs().append(msg(&format!("m{i}"))).unwrap();
    }
    ch.msgs().flush().unwrap();
    assert_eq!(e.count("Messages"), 25);
    st.close().unwrap();
    // The URL form (PostgreSQL) and driver parameters (MySQL) of the data source.
    let o = SqlStoreOptions::new(e.driver, e.server.url_source(&e.db));
    let st = SqlStore::open(o, StoreLimits::unlimited()).unwrap();
    let ch = st.lookup_channel("bulk").unwrap();
    let all = ch.msgs().read_batch(1, 100, 1 << 20).unwrap();
    assert_eq!(all.len(), 25);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, m)| m.data == format!("m{}", i + 1))
    );
    st.close().unwrap();
}
on_both!(bulk_inserts);

fn large_messages(e: &Env) {
    let st = e.open_with(|o| o.bulk_insert_limit = 10, StoreLimits::unlimited());
    let ch = st.create_channel("big").unwrap();
    // Larger than a MySQL BLOB (64 KiB), and multi-row inserts split by size.
    let big = "x".repeat(100_000);
    ch.msgs().append(msg(&big)).unwrap();
    let mib = "y".repeat(1 << 20);
    for _ in 0..6 {
        ch.msgs().append(msg(&mib)).unwrap();
    }
    ch.msgs().flush().unwrap();
    assert_eq!(e.count("Messages"), 7);
    st.close().unwrap();
    let st = e.open(StoreLimits::unlimited());
    let ch = st.lookup_channel("big").unwrap();
    assert_eq!(ch.msgs().lookup(1).unwrap().unwrap().data.len(), 100_000);
    st.close().unwrap();
    if e.driver == SqlDriver::Mysql {
        // The reference script's BLOB: a message that cannot fit is refused at append, not
        // left to fail every later flush.
        e.sql("DELETE FROM Messages");
        e.sql("ALTER TABLE Messages MODIFY data BLOB");
        let st = e.open(StoreLimits::unlimited());
        let ch = st.lookup_channel("big").unwrap();
        let err = ch.msgs().append(msg(&big)).unwrap_err();
        assert!(
            matches!(err, StoreError::RecordTooLarge { max: 65_535, .. }),
            "{err}"
        );
        ch.msgs().append(msg("small")).unwrap();
        ch.msgs().flush().unwrap();
        st.close().unwrap();
    }
}
on_both!(large_messages);

fn no_caching_writes_each_operation(e: &Env) {
    let st = e.open_with(|o| o.no_caching = true, StoreLimits::unlimited());
    let ch = st.create_channel("foo").unwrap();
    for i in 1..=3 {
        ch.msgs().append(msg(&format!("m{i}"))).unwrap();
        assert_eq!(e.count("Messages"), i);
    }
    let mut sub = SubState::default();
    ch.subs().create_sub(&mut sub).unwrap();
    assert_eq!(e.count("Subscriptions"), 1);
    ch.subs().add_seq_pending(sub.id, 1).unwrap();
    ch.subs().add_seq_pending(sub.id, 2).unwrap();
    assert_eq!(e.count("SubsPending WHERE seq > 0"), 2);
    ch.subs().ack_seq_pending(sub.id, 1).unwrap();
    assert_eq!(e.sql("SELECT seq FROM SubsPending"), "2");
    assert_eq!(e.sql("SELECT lastsent FROM Subscriptions"), "2");
    ch.subs().delete_sub(sub.id).unwrap();
    assert_eq!(e.count("SubsPending"), 0);
    assert_eq!(ch.msgs().lookup(2).unwrap().unwrap().data, "m2");
    st.close().unwrap();
}
on_both!(no_caching_writes_each_operation);

fn restart_recovers_everything(e: &Env) {
    let st = e.open(StoreLimits::unlimited());
    st.init(&ServerInfo {
        cluster_id: "cid".into(),
        discovery: "_STAN.discover.cid".into(),
        ..Default::default()
    })
    .unwrap();
    let client = ClientInfo {
        id: "me".into(),
        hb_inbox: "hb".into(),
        conn_id: vec![1, 2, 3],
        ..Default::default()
    };
    st.add_client(&client).unwrap();
    st.add_client(&ClientInfo {
        id: "gone".into(),
        ..Default::default()
    })
    .unwrap();
    st.delete_client("gone").unwrap();
    let a = st.create_channel("é.ü").unwrap();
    let b = st.create_channel("b").unwrap();
    for i in 1..=10 {
        a.msgs().append(msg(&format!("a{i}"))).unwrap();
    }
    b.msgs().append(msg("b1")).unwrap();
    let mut s1 = SubState {
        client_id: "me".into(),
        durable_name: "dur".into(),
        is_durable: true,
        ..Default::default()
    };
    let mut s2 = SubState::default();
    a.subs().create_sub(&mut s1).unwrap();
    b.subs().create_sub(&mut s2).unwrap();
    a.subs().add_seqs_pending(s1.id, &[1, 2, 3, 4]).unwrap();
    a.subs().flush().unwrap();
    a.subs().ack_seqs_pending(s1.id, &[1, 3]).unwrap();
    a.subs().add_seq_pending(s1.id, 5).unwrap();
    s1.is_closed = true;
    a.subs().update_sub(&s1).unwrap();
    st.close().unwrap();
    // Stored as the text it is, for other clients of the database too (MySQL connections send
    // parameters as binary strings: driver.rs, `my_init`).
    assert_eq!(
        e.sql("SELECT COUNT(*) FROM Channels WHERE name='é.ü' AND id=1"),
        "1"
    );

    let st = e.open(StoreLimits::unlimited());
    let r = st.recover().unwrap();
    assert_eq!(r.info.unwrap().discovery, "_STAN.discover.cid");
    assert_eq!(r.clients, [client]);
    let names: Vec<&str> = r.channels.iter().map(|c| c.channel.name()).collect();
    assert_eq!(names, ["b", "é.ü"]);
    let a = &r.channels[1];
    let s = a.channel.msgs().state();
    assert_eq!((s.first, s.last, s.msgs), (1, 10, 10));
    assert_eq!(a.channel.msgs().lookup(7).unwrap().unwrap().data, "a7");
    assert_eq!(a.subscriptions.len(), 1);
    let rs = &a.subscriptions[0];
    assert!(rs.state.is_closed && rs.state.is_durable);
    assert_eq!(rs.state.last_sent, 5);
    assert_eq!(rs.pending.iter().copied().collect::<Vec<_>>(), [2, 4, 5]);
    // IDs and sequences continue.
    let mut s3 = SubState::default();
    a.channel.subs().create_sub(&mut s3).unwrap();
    assert_eq!(s3.id, 3);
    assert_eq!(a.channel.msgs().append(msg("a11")).unwrap().sequence, 11);
    st.close().unwrap();

    // The same rows read in no-caching mode, changed there, then read back with caching.
    let st = e.open_with(|o| o.no_caching = true, StoreLimits::unlimited());
    let a = st.lookup_channel("é.ü").unwrap();
    a.subs().ack_seq_pending(s1.id, 4).unwrap();
    a.subs().add_seq_pending(s1.id, 6).unwrap();
    assert_eq!(pending_of(a.subs(), s1.id), [2, 5, 6]);
    st.close().unwrap();
    let st = e.open(StoreLimits::unlimited());
    let a = st.lookup_channel("é.ü").unwrap();
    assert_eq!(pending_of(a.subs(), s1.id), [2, 5, 6]);
    assert_eq!(a.msgs().state().last, 11);
    st.close().unwrap();
}
on_both!(restart_recovers_everything);

fn limits_apply_again_on_restart(e: &Env) {
    let old = now_nanos() - 3_600_000_000_000;
    let st = e.open(StoreLimits::unlimited());
    let ch = st.create_channel("foo").unwrap();
    for i in 1..=10 {
        ch.msgs()
            .append(msg_at(&format!("m{i:02}"), old + i))
            .unwrap();
    }
    ch.msgs().flush().unwrap();
    let per = ch.msgs().state().bytes / 10;
    assert_eq!(per * 10, ch.msgs().state().bytes, "same size each");
    st.close().unwrap();

    let st = e.open(limited(4, 0, Duration::ZERO));
    let s = st.lookup_channel("foo").unwrap().msgs().state();
    assert_eq!((s.first, s.last, s.msgs), (7, 10, 4));
    assert_eq!(e.count("Messages"), 4);
    assert_eq!(e.sql("SELECT maxmsgs FROM Channels"), "4");
    st.close().unwrap();

    let st = e.open(limited(0, per * 2, Duration::ZERO));
    let s = st.lookup_channel("foo").unwrap().msgs().state();
    assert_eq!((s.first, s.last, s.msgs, s.bytes), (9, 10, 2, 2 * per));
    st.close().unwrap();

    // Everything expired: the last sequence survives in Channels.maxseq.
    let st = e.open(limited(0, 0, Duration::from_secs(60)));
    let s = st.lookup_channel("foo").unwrap().msgs().state();
    assert_eq!((s.first, s.last, s.msgs), (11, 10, 0));
    assert_eq!(e.count("Messages"), 0);
    assert_eq!(e.sql("SELECT maxseq FROM Channels"), "10");
    st.close().unwrap();
    let st = e.open(StoreLimits::unlimited());
    let ch = st.lookup_channel("foo").unwrap();
    assert_eq!(ch.msgs().append(msg("m11")).unwrap().sequence, 11);
    st.close().unwrap();
}
on_both!(limits_apply_again_on_restart);

fn limits_at_run_time_reach_the_tables(e: &Env) {
    let st = e.open(limited(3, 0, Duration::from_millis(1)));
    let ch = st.create_channel("foo").unwrap();
    let base = now_nanos();
    for i in 1..=10 {
        ch.msgs()
            .append(msg_at(&format!("m{i}"), base + i))
            .unwrap();
        ch.msgs().flush().unwrap();
    }
    assert_eq!(e.count("Messages"), 3);
    // Expiry without a later append or flush: the background thread deletes the rows.
    assert_eq!(ch.msgs().expire(base + 1_000_000_000).unwrap(), None);
    eventually("expired rows deleted", || e.count("Messages") == 0);
    assert_eq!(e.sql("SELECT maxseq FROM Channels"), "10");
    st.close().unwrap();
}
on_both!(limits_at_run_time_reach_the_tables);

fn appends_race_flushes(e: &Env) {
    // One connection for the flusher, the appends (reading sizes) and the background thread.
    let st = Arc::new(e.open_with(|o| o.max_open_conns = 1, limited(100, 0, Duration::ZERO)));
    let ch = st.create_channel("race").unwrap();
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let flushes = Arc::new(AtomicU64::new(0));
    let flusher = {
        let (ch, stop, flushes) = (ch.clone(), stop.clone(), flushes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                ch.msgs().flush().unwrap();
                flushes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for i in 0..3000 {
        ch.msgs().append(msg(&format!("m{i}"))).unwrap();
        if i % 500 == 499 {
            // Make sure flushes really run between the appends.
            let seen = flushes.load(Ordering::Relaxed);
            eventually("a flush", || flushes.load(Ordering::Relaxed) > seen);
        }
    }
    stop.store(true, Ordering::Relaxed);
    flusher.join().unwrap();
    ch.msgs().flush().unwrap();
    assert_eq!(e.count("Messages"), 100);
    assert_eq!(e.sql("SELECT MIN(seq) FROM Messages"), "2901");
    let batch = ch.msgs().read_batch(1, 1000, 1 << 30).unwrap();
    assert_eq!(batch.len(), 100);
    assert_eq!(batch[0].sequence, 2901);
    st.close().unwrap();
}
on_both!(appends_race_flushes);

fn reads_beyond_the_cache(e: &Env) {
    let st = e.open_with(|o| o.cache_msgs = 4, StoreLimits::unlimited());
    let ch = st.create_channel("foo").unwrap();
    for i in 1..=50 {
        ch.msgs().append(msg_at(&format!("m{i}"), i * 10)).unwrap();
    }
    ch.msgs().flush().unwrap();
    let enc = ch.msgs().read_batch_encoded(3, 30, 1 << 20).unwrap();
    assert_eq!(enc.len(), 30);
    assert_eq!(enc[0].sequence, 3);
    assert_eq!(enc[29].sequence, 32);
    let all = ch.msgs().read_batch(40, 100, 1 << 20).unwrap();
    assert_eq!(all.len(), 11, "database rows, then the cached tail");
    assert_eq!(ch.msgs().lookup(5).unwrap().unwrap().data, "m5");
    assert_eq!(ch.msgs().sequence_for_timestamp(95).unwrap(), 10);
    assert_eq!(ch.msgs().sequence_for_timestamp(495).unwrap(), 50);
    assert_eq!(ch.msgs().sequence_for_timestamp(501).unwrap(), 51);
    st.close().unwrap();
}
on_both!(reads_beyond_the_cache);

fn deleted_channel_is_purged(e: &Env) {
    let st = e.open(StoreLimits::unlimited());
    let ch = st.create_channel("doomed").unwrap();
    ch.msgs().append(msg("x")).unwrap();
    let mut sub = SubState::default();
    ch.subs().create_sub(&mut sub).unwrap();
    ch.subs().add_seq_pending(sub.id, 1).unwrap();
    st.sync().unwrap();
    assert!(st.delete_channel("doomed").unwrap());
    let rows = || {
        e.count("Channels")
            + e.count("Messages")
            + e.count("Subscriptions")
            + e.count("SubsPending")
    };
    eventually("the purge", || rows() == 0);
    // A purge interrupted by a stop is finished by the next open.
    let ch = st.create_channel("half").unwrap();
    ch.msgs().append(msg("x")).unwrap();
    st.close().unwrap();
    e.sql("UPDATE Channels SET deleted=TRUE");
    let st = e.open(StoreLimits::unlimited());
    assert!(st.lookup_channel("half").is_none());
    eventually("the purge at open", || rows() == 0);
    st.close().unwrap();
}
on_both!(deleted_channel_is_purged);

fn schema_errors_name_what_is_missing(e: &Env) {
    let err = |e: &Env| match SqlStore::open(e.opts(), StoreLimits::unlimited()) {
        Ok(_) => panic!("opened with a broken schema"),
        Err(err) => err.to_string(),
    };
    let db = &e.db;
    let m = err(e);
    assert_eq!(
        m,
        format!(
            "SQL schema incomplete: database \"{db}\" has no table ServerInfo (create the schema \
             with crates/streaming/sql/{} or the store's create-schema command)",
            schema::script_name(e.driver)
        )
    );
    create_schema(e.driver, &e.source()).unwrap();
    e.sql("DROP TABLE SubsPending");
    assert!(err(e).contains("has no table SubsPending"), "{}", err(e));
    create_schema(e.driver, &e.source()).unwrap();
    e.sql("ALTER TABLE Clients DROP COLUMN proto");
    let m = err(e);
    assert!(
        m.contains(&format!(
            "table Clients of database \"{db}\" has no column proto"
        )),
        "{m}"
    );
    e.sql(match e.driver {
        SqlDriver::Postgres => "ALTER TABLE Clients ADD proto BYTEA",
        SqlDriver::Mysql => "ALTER TABLE Clients ADD proto BLOB",
    });
    SqlStore::open(e.opts(), StoreLimits::unlimited())
        .unwrap()
        .close()
        .unwrap();
}

mod schema_errors_name_what_is_missing {
    #[test]
    fn postgres() {
        if let Some(s) = super::DbServer::shared(super::Kind::Postgres) {
            super::schema_errors_name_what_is_missing(&super::env(s, false));
        }
    }
    #[test]
    fn mariadb() {
        if let Some(s) = super::DbServer::shared(super::Kind::MariaDb) {
            super::schema_errors_name_what_is_missing(&super::env(s, false));
        }
    }
}

fn store_lock(e: &Env) {
    let src = e.source();
    let a = Arc::new(SqlStoreLock::open(e.driver, &src, "server-a").unwrap());
    let b = SqlStoreLock::open(e.driver, &src, "server-b").unwrap();
    assert_eq!(a.holder().unwrap(), None);
    assert!(a.try_lock().unwrap());
    assert!(a.try_lock().unwrap(), "the owner keeps it");
    assert!(!b.try_lock().unwrap());
    assert_eq!(a.holder().unwrap(), Some(("server-a".into(), 2)));
    let interval = Duration::from_millis(100);
    let (lost_tx, lost_rx) = std::sync::mpsc::channel();
    let refresher = a.start_refresher(interval, move |l| {
        let _ = lost_tx.send(l);
    });
    // The owner's tick moves: no steal.
    assert!(!b.acquire(interval, 3).unwrap());
    refresher.stop();
    // The owner stopped: its tick freezes and the standby takes over.
    assert!(b.acquire(interval, 3).unwrap());
    assert_eq!(b.holder().unwrap().unwrap().0, "server-b");
    assert!(!a.try_lock().unwrap());
    // A refresher of an owner that lost the lock reports it, and stops.
    let r2 = {
        let (tx, rx) = std::sync::mpsc::channel();
        let r = a.start_refresher(interval, move |l| {
            let _ = tx.send(l);
        });
        let l = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(l, LockLost::TakenBy("server-b".into()));
        r
    };
    eventually("the refresher to stop", || !r2.is_running());
    assert!(lost_rx.try_recv().is_err(), "stopped before losing it");
    // Release: anyone may take it at once.
    b.release().unwrap();
    assert_eq!(b.holder().unwrap(), Some((String::new(), 0)));
    assert!(a.try_lock().unwrap());
    assert!(SqlStoreLock::open(e.driver, &src, "").is_err());
    assert!(SqlStoreLock::open(e.driver, &src, &"x".repeat(31)).is_err());
}
on_both!(store_lock);

/// Rows as the reference server writes them (both pending formats), read by this store.
fn reads_reference_rows(e: &Env) {
    let hex = |b: &[u8]| -> String {
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        match e.driver {
            SqlDriver::Postgres => format!("'\\x{h}'::bytea"),
            SqlDriver::Mysql => format!("X'{h}'"),
        }
    };
    let info = ServerInfo {
        cluster_id: "ref".into(),
        ..Default::default()
    };
    e.sql(&format!(
        "INSERT INTO ServerInfo (id, proto, version) VALUES ('ref', {}, 1)",
        hex(&info.encode_to_vec())
    ));
    e.sql("INSERT INTO Clients (id, hbinbox) VALUES ('old', 'hb.old')");
    e.sql("INSERT INTO Channels (id, name, maxseq) VALUES (3, 'foo', 0)");
    for seq in 1..=4u64 {
        let m = MsgProto {
            sequence: seq,
            subject: "foo".into(),
            data: Bytes::from(format!("d{seq}")),
            timestamp: now_nanos(),
            ..Default::default()
        };
        let enc = m.encode_to_vec();
        e.sql(&format!(
            "INSERT INTO Messages VALUES (3, {seq}, {}, {}, {})",
            m.timestamp,
            enc.len(),
            hex(&enc)
        ));
    }
    let sub = |id: u64| SubState {
        id,
        client_id: "old".into(),
        ..Default::default()
    };
    let row = match e.driver {
        SqlDriver::Postgres => "row",
        SqlDriver::Mysql => "`row`",
    };
    e.sql(&format!(
        "INSERT INTO Subscriptions (id, subid, lastsent, proto) VALUES (3, 7, 0, {}), (3, 9, 4, {})",
        hex(&sub(7).encode_to_vec()),
        hex(&sub(9).encode_to_vec())
    ));
    // Caching-mode rows for 7, no-caching rows for 9.
    e.sql(&format!(
        "INSERT INTO SubsPending (subid, {row}, lastsent, pending, acks) VALUES \
         (7, 1, 3, {}, NULL), (7, 2, 4, {}, {})",
        hex(b"[1,2,3]"),
        hex(b"[4]"),
        hex(b"[1,3]")
    ));
    e.sql(&format!(
        "INSERT INTO SubsPending (subid, {row}, seq) VALUES (9, 1, 2), (9, 2, 3)"
    ));
    let st = e.open(StoreLimits::unlimited());
    let r = st.recover().unwrap();
    assert_eq!(r.info.unwrap().cluster_id, "ref");
    assert_eq!(r.clients[0].hb_inbox, "hb.old");
    let ch = &r.channels[0];
    assert_eq!(ch.channel.name(), "foo");
    let s = ch.channel.msgs().state();
    assert_eq!((s.first, s.last, s.msgs), (1, 4, 4));
    assert_eq!(ch.channel.msgs().lookup(4).unwrap().unwrap().data, "d4");
    let p: Vec<(u64, u64, Vec<u64>)> = ch
        .subscriptions
        .iter()
        .map(|s| {
            (
                s.state.id,
                s.state.last_sent,
                s.pending.iter().copied().collect(),
            )
        })
        .collect();
    assert_eq!(p, [(7, 4, vec![2, 4]), (9, 4, vec![2, 3])]);
    // New subscriptions get IDs after the highest in the table.
    let mut s = SubState::default();
    ch.channel.subs().create_sub(&mut s).unwrap();
    assert_eq!(s.id, 10);
    // Acks of both formats are written so that a restart agrees.
    ch.channel.subs().ack_seqs_pending(7, &[2]).unwrap();
    ch.channel.subs().ack_seqs_pending(9, &[3]).unwrap();
    st.close().unwrap();
    let st = e.open(StoreLimits::unlimited());
    let ch = st.lookup_channel("foo").unwrap();
    assert_eq!(pending_of(ch.subs(), 7), [4]);
    assert_eq!(pending_of(ch.subs(), 9), [2]);
    st.close().unwrap();
}
on_both!(reads_reference_rows);

/// A port with nothing listening.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn source_for(driver: SqlDriver, port: u16) -> String {
    match driver {
        SqlDriver::Postgres => {
            format!("host=127.0.0.1 port={port} user=u password=secret dbname=d connect_timeout=1")
        }
        SqlDriver::Mysql => format!("u:secret@tcp(127.0.0.1:{port})/d?timeout=1s"),
    }
}

#[test]
fn unreachable_database_fails_at_open() {
    for driver in [SqlDriver::Postgres, SqlDriver::Mysql] {
        let port = closed_port();
        let t = Instant::now();
        let e = SqlStore::open(
            SqlStoreOptions::new(driver, source_for(driver, port)),
            StoreLimits::unlimited(),
        )
        .err()
        .expect("no database there");
        assert!(t.elapsed() < Duration::from_secs(5));
        let StoreError::Sql(SqlError::Unreachable { message, .. }) = &e else {
            panic!("{e}");
        };
        assert!(!message.is_empty());
        let text = e.to_string();
        let want = match driver {
            SqlDriver::Postgres => format!(
                "unable to connect to the postgres database at host=127.0.0.1 port={port} user=u dbname=d: "
            ),
            SqlDriver::Mysql => {
                format!("unable to connect to the mysql database at u@tcp(127.0.0.1:{port})/d: ")
            }
        };
        assert!(text.starts_with(&want), "{text}");
        assert!(!text.contains("secret"), "{text}");
        // A server that accepts the connection but never answers: the connect timeout.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let t = Instant::now();
        let e = SqlStore::open(
            SqlStoreOptions::new(driver, source_for(driver, port)),
            StoreLimits::unlimited(),
        )
        .err()
        .expect("nothing answers");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(
            matches!(e, StoreError::Sql(SqlError::Unreachable { .. })),
            "{e}"
        );
    }
}

#[test]
fn invalid_sources_are_refused() {
    let e = SqlStore::open(
        SqlStoreOptions::new(SqlDriver::Mysql, "user:pw@tcp(localhost:3306)"),
        StoreLimits::unlimited(),
    )
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "invalid SQL source for driver mysql: missing the slash separating the database name"
    );
}

/// The database is killed while the store runs: flushes fail (nothing is acknowledged
/// falsely), the store reconnects once it is back, and everything appended is stored.
fn database_lost_while_running(kind: Kind) {
    let Some(mut server) = DbServer::start_or_skip(kind, Default::default()) else {
        return;
    };
    let e = env(&server, true);
    let (opts, source) = (e.opts(), e.source());
    drop(e);
    let st = SqlStore::open(opts.clone(), StoreLimits::unlimited()).unwrap();
    let ch = st.create_channel("foo").unwrap();
    for i in 1..=3 {
        ch.msgs().append(msg(&format!("m{i}"))).unwrap();
    }
    ch.msgs().flush().unwrap();

    server.kill();
    for i in 4..=5 {
        ch.msgs().append(msg(&format!("m{i}"))).unwrap();
    }
    let err = ch.msgs().flush().unwrap_err();
    assert!(matches!(err, StoreError::Sql(_)), "{err}");
    assert!(st.add_client(&ClientInfo::default()).is_err());
    // Recent messages are still served from memory.
    assert_eq!(ch.msgs().lookup(5).unwrap().unwrap().data, "m5");

    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ch.msgs().flush() {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "no reconnection: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ch.msgs().append(msg("m6")).unwrap();
    ch.msgs().flush().unwrap();
    st.close().unwrap();
    let st = SqlStore::open(opts, StoreLimits::unlimited()).unwrap();
    let ch = st.lookup_channel("foo").unwrap();
    let all = ch.msgs().read_batch(1, 100, 1 << 20).unwrap();
    let data: Vec<String> = all
        .iter()
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .collect();
    assert_eq!(data, ["m1", "m2", "m3", "m4", "m5", "m6"]);
    st.close().unwrap();

    // Without caching, an append fails while the database is away and stores nothing.
    let mut o = SqlStoreOptions::new(server.driver().parse().unwrap(), source);
    o.no_caching = true;
    let st = SqlStore::open(o, StoreLimits::unlimited()).unwrap();
    let ch = st.lookup_channel("foo").unwrap();
    server.kill();
    assert!(ch.msgs().append(msg("lost")).is_err());
    assert_eq!(ch.msgs().state().last, 6);
    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        match ch.msgs().append(msg("m7")) {
            Ok(m) => break m,
            Err(e) => assert!(Instant::now() < deadline, "no reconnection: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(m.sequence, 7);
    st.close().unwrap();
}

#[test]
fn postgres_lost_while_running() {
    database_lost_while_running(Kind::Postgres);
}

#[test]
fn mariadb_lost_while_running() {
    database_lost_while_running(Kind::MariaDb);
}

mod conflict;
