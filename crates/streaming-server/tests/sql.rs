//! `-st SQL` through the binary, on real PostgreSQL and MariaDB servers (rnats-test-db; the
//! tests skip when the packages are missing, unless `RNATS_REQUIRE_SQL=1`): option errors,
//! an unreachable database, a missing table or column, `--sql_create_schema`, a database
//! killed under a running server (error PubAcks, never a false one, then acks again without
//! a restart), and node-nats-streaming's scenarios (install them with `npm ci` in
//! tests/interop/node), a kill -9 between two phases included.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sql::*;
use common::*;

/// Runs `f` on a fresh database (with the schema) of the shared server of each kind.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn postgres() {
                if let Some(s) = super::DbServer::shared(super::Kind::Postgres) {
                    super::$name(s);
                }
            }
            #[test]
            fn mariadb() {
                if let Some(s) = super::DbServer::shared(super::Kind::MariaDb) {
                    super::$name(s);
                }
            }
        }
    };
}

/// Runs the binary until it exits (at most 30 s): (exit code, stderr).
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rnats-streaming-server"))
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rnats-streaming-server");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read as _;
                let _ = e.read_to_string(&mut err);
            }
            return (st.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rnats-streaming-server {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sql_store_needs_driver_and_source() {
    let (code, err) = run_to_exit(&["-st", "SQL"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("for SQL stores, the SQL driver must be specified"),
        "{err}"
    );
    let (code, err) = run_to_exit(&["-st", "sql", "--sql_driver", "postgres"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("for SQL stores, the SQL source must be specified"),
        "{err}"
    );
    let (code, err) = run_to_exit(&["-st", "SQL", "--sql_driver", "sqlite", "--sql_source", "x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unsupported SQL driver \"sqlite\""), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_rnats-streaming-server"))
        .args(["--sql_create_schema", "--sql_driver", "postgres"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SQL source must be specified"));
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn unreachable_database_is_one_clear_error_and_exit_1() {
    let port = closed_port();
    for (driver, source, want) in [
        (
            "postgres",
            format!("host=127.0.0.1 port={port} user=u dbname=d sslmode=disable"),
            "unable to connect to the postgres database at host=127.0.0.1",
        ),
        (
            "mysql",
            format!("u:secret@tcp(127.0.0.1:{port})/d"),
            "unable to connect to the mysql database at u@tcp(127.0.0.1",
        ),
    ] {
        let (code, err) = run_to_exit(&[
            "-st",
            "SQL",
            "--sql_driver",
            driver,
            "--sql_source",
            &source,
        ]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("secret"), "the password is printed: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!err.contains("Streaming Server is ready"), "{err}");
    }
}

fn missing_schema_names_the_table(s: &DbServer) {
    let db = new_db(s, false);
    let args = db.args();
    let (code, err) = run_to_exit(&strs(&args));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("has no table ServerInfo"), "{err}");
    assert!(
        err.contains("--sql_create_schema") || err.contains(".db.sql"),
        "{err}"
    );

    let out = create_schema(s.driver(), &db.source());
    assert!(out.status.success(), "{out:?}");
    db.sql("DROP TABLE SubsPending");
    let (code, err) = run_to_exit(&strs(&args));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("has no table SubsPending"), "{err}");

    let out = create_schema(s.driver(), &db.source());
    assert!(out.status.success(), "{out:?}");
    db.sql("ALTER TABLE Messages DROP COLUMN size");
    let (code, err) = run_to_exit(&strs(&args));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("table Messages") && err.contains("has no column size"),
        "{err}"
    );
}
on_both!(missing_schema_names_the_table);

/// `--sql_create_schema` twice (idempotent), then a server stores, restarts (SIGTERM) and
/// finds its messages, its client gone and the server info kept.
fn create_schema_then_serve_and_restart(s: &DbServer) {
    let db = new_db(s, true);
    let again = create_schema(s.driver(), &db.source());
    assert!(again.status.success(), "{again:?}");
    assert_eq!(db.sql("SELECT COUNT(*) FROM ServerInfo"), "0");
    let args = db.args();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = ServerProc::start(&strs(&args));
    rt.block_on(async {
        let c = Raw::connect(&server.url(), "test-cluster", "sqlc", true).await;
        for i in 0..10 {
            let ack = c.publish("orders", format!("m{i}").as_bytes()).await;
            assert_eq!(ack.error, "");
        }
        assert_eq!(c.close().await.error, "");
    });
    assert_eq!(db.sql("SELECT COUNT(*) FROM Messages"), "10");
    assert_eq!(db.sql("SELECT id FROM ServerInfo"), "test-cluster");
    server.terminate();
    let mut server = server;
    let _ = server.wait_line("Shutting down", Duration::from_secs(10));
    server.kill();
    let server = ServerProc::start(&strs(&args));
    rt.block_on(async {
        let c = Raw::connect(&server.url(), "test-cluster", "sqlc2", true).await;
        let mut sub = c.subscribe(c.sub_req("orders", "")).await.unwrap();
        for seq in 1..=10u64 {
            let m = sub.next().await;
            assert_eq!(m.sequence, seq);
            assert_eq!(m.data, format!("m{}", seq - 1).as_bytes());
        }
        assert_eq!(c.publish("orders", b"after").await.error, "");
        assert_eq!(sub.next().await.sequence, 11);
    });
}
on_both!(create_schema_then_serve_and_restart);

/// The database is killed under a running server: every publish answered meanwhile gets an
/// error PubAck (never a positive one); once the database is back, publishes are acked again
/// without restarting the server, and every acknowledged message is there.
fn database_killed_while_running(kind: Kind) {
    let Some(mut s) = DbServer::start_or_skip(kind, Default::default()) else {
        return;
    };
    let db = new_db(&s, true);
    let args = db.args();
    let mut server = ServerProc::start(&strs(&args));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Raw::connect(&server.url(), "test-cluster", "outage", true).await;
        let mut acked = Vec::new();
        for i in 0..5 {
            let d = format!("before{i}");
            assert_eq!(c.publish("o", d.as_bytes()).await.error, "");
            acked.push(d);
        }
        tokio::task::block_in_place(|| s.kill());
        let mut errors = 0;
        for i in 0..20 {
            let d = format!("down{i}");
            if let Some(ack) = c
                .try_publish("o", d.as_bytes(), Duration::from_secs(2))
                .await
            {
                assert_ne!(ack.error, "", "{d} acknowledged while the database is down");
                errors += 1;
            }
        }
        assert!(errors > 0, "no error PubAck while the database was down");
        tokio::task::block_in_place(|| s.restart()).expect("restart the database");
        let back = Instant::now();
        let mut ok = false;
        let mut last = String::new();
        let mut i = 0;
        while back.elapsed() < Duration::from_secs(30) {
            i += 1;
            let d = format!("back{i}");
            match c
                .try_publish("o", d.as_bytes(), Duration::from_secs(2))
                .await
            {
                Some(ack) if ack.error.is_empty() => {
                    acked.push(d);
                    ok = true;
                    break;
                }
                Some(ack) => last = ack.error,
                None => last = "no PubAck".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            ok,
            "publishes not acknowledged 30 s after the database restart: {last}"
        );
        eprintln!(
            "{kind}: acknowledging again {:?} after the restart",
            back.elapsed()
        );
        for i in 0..5 {
            let d = format!("after{i}");
            assert_eq!(c.publish("o", d.as_bytes()).await.error, "");
            acked.push(d);
        }
        // Every acknowledged message, in publish order; error-acked ones may be stored too
        // (the client would have published them again: at-least-once).
        let mut sub = c.subscribe(c.sub_req("o", "")).await.unwrap();
        let mut want = acked.iter().peekable();
        let mut seq = 0;
        while want.peek().is_some() {
            let m = sub.next().await;
            seq += 1;
            assert_eq!(m.sequence, seq, "sequence gap");
            if want.peek().is_some_and(|w| m.data == w.as_bytes()) {
                want.next();
            }
        }
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "the server exited"
        );
    });
    server.kill();
}

#[test]
fn postgres_killed_while_running() {
    database_killed_while_running(Kind::Postgres);
}

#[test]
fn mariadb_killed_while_running() {
    database_killed_while_running(Kind::MariaDb);
}

fn node_scenario(s: &DbServer, name: &str) {
    if !node_available() {
        return;
    }
    let db = new_db(s, true);
    let server = ServerProc::start(&strs(&db.args()));
    let (ok, out) = run_node(name, &server.url());
    assert!(ok, "node scenario {name} on {} failed:\n{out}", s.kind());
    assert!(out.contains(&format!("OK {name}")), "{out}");
}

fn node_publish_acks(s: &DbServer) {
    node_scenario(s, "publish_acks");
}
on_both!(node_publish_acks);

fn node_start_positions(s: &DbServer) {
    node_scenario(s, "start_positions");
}
on_both!(node_start_positions);

fn node_durable(s: &DbServer) {
    node_scenario(s, "durable");
}
on_both!(node_durable);

fn node_queue(s: &DbServer) {
    node_scenario(s, "queue");
}
on_both!(node_queue);

fn node_redelivery(s: &DbServer) {
    node_scenario(s, "redelivery");
}
on_both!(node_redelivery);

/// Messages and a durable's position survive a kill -9 of the server.
fn node_restart_after_kill9(s: &DbServer) {
    if !node_available() {
        return;
    }
    let db = new_db(s, true);
    let args = db.args();
    let mut server = ServerProc::start(&strs(&args));
    let (ok, out) = run_node("restart_phase1", &server.url());
    assert!(ok, "phase 1 on {} failed:\n{out}", s.kind());
    server.kill();
    let server = ServerProc::start(&strs(&args));
    let (ok, out) = run_node("restart_phase2", &server.url());
    assert!(ok, "phase 2 on {} failed:\n{out}", s.kind());
}
on_both!(node_restart_after_kill9);

/// `--encryption_key` over the SQL store: no plaintext in `Messages.data`, everything back
/// with the key, a wrong key refused at start.
fn encrypted_payloads_in_the_database(s: &DbServer) {
    const KEY: &str = "correct horse battery staple";
    let db = new_db(s, true);
    let mut args = db.args();
    args.extend(["--encryption_key".to_string(), KEY.to_string()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secret = |i: usize| format!("TOP-SECRET-PAYLOAD-{i:04}");
    let mut server = ServerProc::start(&strs(&args));
    rt.block_on(async {
        let c = Raw::connect(&server.url(), "test-cluster", "enc", true).await;
        for i in 0..20 {
            assert_eq!(c.publish("vault", secret(i).as_bytes()).await.error, "");
        }
    });
    server.kill();
    let hex = match s.kind() {
        Kind::Postgres => db.sql("SELECT encode(data, 'hex') FROM Messages"),
        Kind::MariaDb => db.sql("SELECT HEX(data) FROM Messages"),
    }
    .to_ascii_lowercase();
    assert_eq!(hex.lines().count(), 20, "{hex}");
    let needle: String = b"TOP-SECRET".iter().map(|b| format!("{b:02x}")).collect();
    assert!(!hex.contains(&needle), "plaintext in Messages.data");
    let server = ServerProc::start(&strs(&args));
    rt.block_on(async {
        let c = Raw::connect(&server.url(), "test-cluster", "enc2", true).await;
        let mut sub = c.subscribe(c.sub_req("vault", "")).await.unwrap();
        for i in 0..20 {
            assert_eq!(sub.next().await.data, secret(i).as_bytes());
        }
    });
    drop(server);
    let mut wrong = db.args();
    wrong.extend(["--encryption_key".to_string(), "not the key".to_string()]);
    let (code, err) = run_to_exit(&strs(&wrong));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("vault"), "{err}");
}
on_both!(encrypted_payloads_in_the_database);
