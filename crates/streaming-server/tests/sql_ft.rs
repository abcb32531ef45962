//! Fault tolerance on the SQL store: binaries of one `--ft_group` sharing a PostgreSQL
//! database (rnats-test-db; skipped when it is not installed, unless `RNATS_REQUIRE_SQL=1`)
//! through one core NATS server in this process. The lock is the `StoreLock` table: a killed
//! active is replaced once its tick stood still for 4.5 s (the reference's timing), a stopped
//! one at once, and an active that loses the lock stops itself.

mod common;

use std::time::{Duration, Instant};

use common::sql::*;
use common::*;

/// Bound on a takeover: 4.5 s of still tick, heartbeats, recovery, on a loaded machine.
const FT_READY: Duration = Duration::from_secs(30);

fn member(url: &str, db: &SqlDb<'_>, until: &str) -> ServerProc {
    let mut args = vec![
        "-ns".to_string(),
        url.to_string(),
        "--ft_group".into(),
        "grp".into(),
        "-m".into(),
        "-1".into(),
        "-SD".into(),
    ];
    args.extend(db.args());
    ServerProc::spawn(&strs(&args), until)
}

fn ft_active_status(p: &ServerProc) -> u16 {
    http_get(
        p.monitor_port.expect("monitor port"),
        "/streaming/isFTActive",
    )
    .0
}

/// The server ID, from `/streaming/serverz`.
fn server_id(p: &ServerProc) -> String {
    let (status, body) = http_get(p.monitor_port.expect("monitor port"), "/streaming/serverz");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["server_id"].as_str().expect("server_id").to_string()
}

fn pg() -> Option<&'static DbServer> {
    DbServer::shared(Kind::Postgres)
}

/// The lock row: (owner, tick).
fn lock_row(db: &SqlDb<'_>) -> String {
    db.sql("SELECT id, tick FROM StoreLock")
}

/// node-nats-streaming publishing every 5 ms with a durable subscriber while the active is
/// killed: every acknowledged message arrives, the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_through_a_kill9_failover_on_postgres() {
    let Some(s) = pg() else { return };
    if !node_available() {
        return;
    }
    let db = new_db(s, true);
    let (_core, url) = core_nats().await;
    let a = member(&url, &db, "Streaming Server is ready");
    let b = member(&url, &db, "Starting in standby mode");
    assert_eq!((ft_active_status(&a), ft_active_status(&b)), (200, 204));
    let pid = a.child.id().to_string();
    let u = url.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run_node_with("ft_failover", &u, &["test-cluster", &pid])
    })
    .await
    .unwrap();
    assert!(ok, "node ft_failover failed:\n{out}");
    eprintln!(
        "{}",
        out.lines()
            .find(|l| l.contains("FAILOVER_MS"))
            .unwrap_or("")
    );
    assert_eq!(ft_active_status(&b), 200);
    assert!(
        lock_row(&db).starts_with(&server_id(&b)),
        "{}",
        lock_row(&db)
    );
}

/// A raw client through a kill -9: messages, the durable's position and the session survive;
/// the standby only steals after the tick stood still.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_steals_a_still_lock_after_kill9() {
    let Some(s) = pg() else { return };
    let db = new_db(s, true);
    let (_core, url) = core_nats().await;
    let mut a = member(&url, &db, "Streaming Server is ready");
    let b = member(&url, &db, "Starting in standby mode");
    let c = Raw::connect(&url, "test-cluster", "ftsql", true).await;
    for i in 0..20 {
        assert_eq!(
            c.publish("orders", format!("m{i}").as_bytes()).await.error,
            ""
        );
    }
    let mut req = c.sub_req("orders", "");
    req.durable_name = "dur".into();
    req.ack_wait_in_secs = 2;
    let mut sub = c.subscribe(req).await.unwrap();
    for seq in 1..=20 {
        let m = sub.next().await;
        assert_eq!(m.sequence, seq);
        if seq <= 10 {
            c.ack(&sub, seq).await;
        }
    }
    // The active moves the tick every second while the standby waits.
    let t0 = lock_row(&db);
    assert!(t0.starts_with(&server_id(&a)), "{t0}");
    assert!(
        eventually(Duration::from_secs(10), async || lock_row(&db) != t0).await,
        "the tick does not move: {t0}"
    );
    assert_eq!(ft_active_status(&b), 204);

    let killed = Instant::now();
    a.kill();
    assert!(
        b.wait_line("Streaming Server is ready", FT_READY).is_some(),
        "the standby did not take over"
    );
    let took = killed.elapsed();
    eprintln!("SQL failover (kill -9 to ready): {took:?}");
    // The tick must stand still for 4.5 s, counted from its last move (at most ~1 s before
    // the kill).
    assert!(
        took >= Duration::from_millis(3400),
        "took over after {took:?}: before the tick could be seen still for 4.5 s"
    );
    let mut acked = None;
    for _ in 0..100 {
        if let Some(ack) = c
            .try_publish("orders", b"after", Duration::from_millis(200))
            .await
        {
            acked = Some(ack);
            break;
        }
    }
    assert_eq!(acked.expect("a PubAck from the new active").error, "");
    let mut seen = std::collections::BTreeSet::new();
    while !(11..=21).all(|q| seen.contains(&q)) {
        let Some(m) = sub.next_within(Duration::from_secs(10)).await else {
            break;
        };
        seen.insert(m.sequence);
    }
    assert!((11..=21).all(|q| seen.contains(&q)), "seen {seen:?}");
    assert!(
        lock_row(&db).starts_with(&server_id(&b)),
        "{}",
        lock_row(&db)
    );
}

/// SIGTERM releases the lock: the standby takes over at its next look, well before a still
/// tick would let it; the old active comes back as a standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_hands_over_at_once() {
    let Some(s) = pg() else { return };
    let db = new_db(s, true);
    let (_core, url) = core_nats().await;
    let a = member(&url, &db, "Streaming Server is ready");
    let b = member(&url, &db, "Starting in standby mode");
    let c = Raw::connect(&url, "test-cluster", "grace", true).await;
    assert_eq!(c.publish("x", b"1").await.error, "");
    let stopped = Instant::now();
    a.terminate();
    assert!(b.wait_line("Streaming Server is ready", FT_READY).is_some());
    let took = stopped.elapsed();
    eprintln!("SQL handover after SIGTERM: {took:?}");
    assert!(took < Duration::from_secs(4), "handover took {took:?}");
    assert_eq!(c.publish("x", b"2").await.error, "");
    let a2 = member(&url, &db, "Starting in standby mode");
    assert_eq!((ft_active_status(&a2), ft_active_status(&b)), (204, 200));
    let mut sub = c.subscribe(c.sub_req("x", "")).await.unwrap();
    assert_eq!(sub.next().await.data, &b"1"[..]);
    assert_eq!(sub.next().await.data, &b"2"[..]);
}

/// Another owner writes the lock row: the active stops itself with "lost store lock,
/// aborting" and a non-zero exit; the standby takes the lock once that owner's tick stood
/// still and the heartbeats stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_that_loses_the_lock_stops_itself() {
    let Some(s) = pg() else { return };
    let db = new_db(s, true);
    let (_core, url) = core_nats().await;
    let mut a = member(&url, &db, "Streaming Server is ready");
    let b = member(&url, &db, "Starting in standby mode");
    db.sql("UPDATE StoreLock SET id = 'intruder', tick = 1");
    let line = a.wait_line("lost store lock, aborting", FT_READY);
    let line = line.expect("the active did not notice it lost the lock");
    assert!(line.contains("intruder"), "{line}");
    let mut exited = None;
    for _ in 0..500 {
        if let Some(st) = a.child.try_wait().unwrap() {
            exited = Some(st);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = exited.expect("the active exits");
    assert!(!st.success(), "exit status {st}");
    assert!(b.wait_line("Streaming Server is ready", FT_READY).is_some());
    assert!(
        lock_row(&db).starts_with(&server_id(&b)),
        "{}",
        lock_row(&db)
    );
    let c = Raw::connect(&url, "test-cluster", "after", true).await;
    assert_eq!(c.publish("x", b"1").await.error, "");
}

#[test]
fn ft_with_sql_passes_the_option_checks_and_waits_for_the_database() {
    // Nothing listens on the port: the standby reports the error and keeps trying.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let src = format!("host=127.0.0.1 port={port} user=u dbname=d sslmode=disable");
    let p = ServerProc::spawn(
        &[
            "--ft_group",
            "g",
            "-st",
            "SQL",
            "--sql_driver",
            "postgres",
            "--sql_source",
            &src,
        ],
        "Starting in standby mode",
    );
    let line = p.wait_line(
        "error attempting to get the store lock",
        Duration::from_secs(10),
    );
    let line = line.expect("the standby reports the unreachable database");
    assert!(
        line.contains("unable to connect to the postgres database"),
        "{line}"
    );
}
