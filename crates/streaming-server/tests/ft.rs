//! Fault-tolerant standby (`--ft_group`): binaries sharing a FILE store through one core NATS
//! server (in this process), killed with SIGKILL or stopped with SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::*;
use prost::Message as _;
use rnats_streaming::proto::{CtrlMsg, ctrl_msg};

const FT_READY: Duration = Duration::from_secs(15);

fn member(url: &str, dir: &str, until: &str) -> ServerProc {
    ServerProc::spawn(
        &[
            "-ns",
            url,
            "--ft_group",
            "grp",
            "-st",
            "FILE",
            "--dir",
            dir,
            "-m",
            "-1",
            "-SD",
        ],
        until,
    )
}

fn json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = http_get(port, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn ft_active_status(p: &ServerProc) -> u16 {
    http_get(
        p.monitor_port.expect("monitor port"),
        "/streaming/isFTActive",
    )
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_after_kill9_and_sessions_go_on() {
    let (_core, url) = core_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut a = member(&url, d, "Streaming Server is ready");
    let b = member(&url, d, "Starting in standby mode");
    let (am, bm) = (a.monitor_port.unwrap(), b.monitor_port.unwrap());
    assert_eq!(json(am, "/streaming/serverz")["state"], "FT_ACTIVE");
    assert_eq!(json(bm, "/streaming/serverz")["state"], "FT_STANDBY");
    assert_eq!(json(bm, "/streaming/channelsz")["total"], 0);
    assert_eq!((ft_active_status(&a), ft_active_status(&b)), (200, 204));

    let c = Raw::connect(&url, "test-cluster", "ftc", true).await;
    for i in 0..20 {
        assert_eq!(
            c.publish("orders", format!("m{i}").as_bytes()).await.error,
            ""
        );
    }
    let mut req = c.sub_req("orders", "");
    req.durable_name = "dur".into();
    req.max_in_flight = 100;
    // Recovered pending messages are redelivered when their ack wait (counted from the
    // message's timestamp, as in the reference) expires.
    req.ack_wait_in_secs = 2;
    let mut s = c.subscribe(req).await.unwrap();
    for seq in 1..=20 {
        let m = s.next().await;
        assert_eq!(m.sequence, seq);
        if seq <= 10 {
            c.ack(&s, seq).await;
        }
    }
    // A live (non-durable) subscription too: it must go on receiving.
    let mut live = c.subscribe(c.sub_req("live", "")).await.unwrap();
    assert_eq!(c.publish("live", b"before").await.error, "");
    assert_eq!(live.next().await.data, &b"before"[..]);

    let killed = Instant::now();
    a.kill();
    let line = b.wait_line("Streaming Server is ready", FT_READY);
    assert!(line.is_some(), "the standby did not take over");
    // Same client, same NATS connection, same session: publishes are acked by the new one.
    let mut acked = None;
    for _ in 0..200 {
        if let Some(ack) = c
            .try_publish("orders", b"after", Duration::from_millis(100))
            .await
        {
            acked = Some(ack);
            break;
        }
    }
    let failover = killed.elapsed();
    assert_eq!(acked.expect("a PubAck from the new active").error, "");
    eprintln!("failover (kill -9 to first PubAck): {failover:?}");
    assert_eq!(json(bm, "/streaming/serverz")["state"], "FT_ACTIVE");
    assert_eq!(ft_active_status(&b), 200);
    let clients = json(bm, "/streaming/clientsz");
    assert_eq!(clients["total"], 1, "{clients}");
    // The new message and the durable's unacked ones (redelivered) come on the same inbox.
    // Acked ones may come again too: ack records are written in the background (at most
    // 10 ms late) and a kill can lose the last of them (at-least-once).
    let want: Vec<u64> = (11..=21).collect();
    let mut seen = std::collections::BTreeSet::new();
    while !want.iter().all(|q| seen.contains(q)) {
        let Some(m) = s.next_within(Duration::from_secs(5)).await else {
            break;
        };
        assert!(m.sequence <= 21, "unknown sequence {}", m.sequence);
        seen.insert(m.sequence);
    }
    assert!(want.iter().all(|q| seen.contains(q)), "seen {seen:?}");
    assert_eq!(c.publish("live", b"after").await.error, "");
    // "before" may come again: its pending record is written in the background (at most
    // 10 ms late) and the kill may have beaten it; at-least-once allows the redelivery.
    let mut m = live.next().await;
    if m.data == b"before"[..] {
        m = live.next().await;
    }
    assert_eq!(m.data, &b"after"[..]);
    // Every acknowledged message is there, once, in order.
    let mut all = c.subscribe(c.sub_req("orders", "")).await.unwrap();
    for seq in 1..=21u64 {
        let m = all.next().await;
        assert_eq!(m.sequence, seq);
        let want = if seq == 21 {
            "after".to_string()
        } else {
            format!("m{}", seq - 1)
        };
        assert_eq!(m.data, want.as_bytes());
    }
    assert_eq!(c.close().await.error, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_hands_over_at_once_and_the_old_active_can_return_as_standby() {
    let (_core, url) = core_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let a = member(&url, d, "Streaming Server is ready");
    let b = member(&url, d, "Starting in standby mode");
    let c = Raw::connect(&url, "test-cluster", "grace", true).await;
    assert_eq!(c.publish("x", b"1").await.error, "");
    let stopped = Instant::now();
    a.terminate();
    assert!(b.wait_line("Streaming Server is ready", FT_READY).is_some());
    eprintln!("handover after SIGTERM: {:?}", stopped.elapsed());
    assert_eq!(c.publish("x", b"2").await.error, "");
    // The old active comes back as a standby of the new one.
    let a2 = member(&url, d, "Starting in standby mode");
    assert_eq!(ft_active_status(&a2), 204);
    assert_eq!(ft_active_status(&b), 200);
    let mut s = c.subscribe(c.sub_req("x", "")).await.unwrap();
    assert_eq!(s.next().await.data, &b"1"[..]);
    assert_eq!(s.next().await.data, &b"2"[..]);
}

/// Two actives (here: the same group on two directories, so no lock keeps them apart): the
/// one activated later stops itself and exits with an error; the first keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_later_of_two_actives_stops_itself() {
    let (core, url) = core_nats().await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = member(&url, d1.path().to_str().unwrap(), "Server is active");
    let mut second = member(&url, d2.path().to_str().unwrap(), "Server is active");
    let line = second.wait_line("claims to be active, aborting", FT_READY);
    assert!(line.is_some(), "the later active did not stop");
    let mut exited = None;
    for _ in 0..250 {
        if let Some(st) = second.child.try_wait().unwrap() {
            exited = Some(st);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = exited.expect("the later active exits");
    assert!(!st.success(), "exit status {st}");
    assert!(
        first
            .wait_line("claims to be active", FT_READY)
            .is_some_and(|l| !l.contains("aborting"))
    );
    assert_eq!(ft_active_status(&first), 200);
    let c = Raw::connect(&url, "test-cluster", "still", true).await;
    assert_eq!(c.publish("x", b"1").await.error, "");
    drop(core);
}

/// A message on the heartbeat subject that does not decode is logged and ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_heartbeat_subject_is_ignored() {
    let (_core, url) = core_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let a = member(&url, d, "Streaming Server is ready");
    let b = member(&url, d, "Starting in standby mode");
    let nc = nats(&url).await;
    let subject = "_STAN.ft.test-cluster.grp";
    nc.publish(subject, &b"\xff\xff\xff"[..]).await.unwrap();
    let other = CtrlMsg {
        msg_type: ctrl_msg::Type::Partitioning as i32,
        server_id: "X".into(),
        ..Default::default()
    };
    nc.publish(subject, other.encode_to_vec()).await.unwrap();
    nc.flush().await.unwrap();
    assert!(
        b.wait_line("ignoring a message on the heartbeat subject", FT_READY)
            .is_some()
    );
    assert!(
        a.wait_line("ignoring a message on the heartbeat subject", FT_READY)
            .is_some()
    );
    assert_eq!((ft_active_status(&a), ft_active_status(&b)), (200, 204));
    let c = Raw::connect(&url, "test-cluster", "ok", true).await;
    assert_eq!(c.publish("x", b"1").await.error, "");
}

#[test]
fn ft_with_the_memory_store_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rnats-streaming-server"))
        .args(["--ft_group", "g", "-st", "MEMORY", "-p", "-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ft: only FILE or SQL stores supported in FT mode"),
        "{err}"
    );
}

/// node-nats-streaming publishing every 5 ms with a durable subscriber while the active is
/// killed: every acknowledged message arrives, the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_through_a_kill9_failover() {
    if !node_available() {
        return;
    }
    let (_core, url) = core_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let a = member(&url, d, "Streaming Server is ready");
    let b = member(&url, d, "Starting in standby mode");
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
}
