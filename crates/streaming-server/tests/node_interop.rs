//! Interop with the official npm client `node-nats-streaming` (0.3.2), driving the binary.
//! The scenarios live in `tests/interop/node/scenarios.js`; install their dependencies with
//! `npm ci` in that directory. Without them these tests skip, unless `CI=true` or `RNATS_REQUIRE_NODE=1`.

mod common;

use common::*;

fn scenario(name: &str) {
    if !node_available() {
        return;
    }
    let server = ServerProc::start(&[]);
    let (ok, out) = run_node(name, &server.url());
    assert!(ok, "node scenario {name} failed:\n{out}");
    assert!(out.contains(&format!("OK {name}")), "{out}");
}

#[test]
fn node_publish_with_acks_and_bad_channels() {
    scenario("publish_acks");
}

#[test]
fn node_every_start_position() {
    scenario("start_positions");
}

#[test]
fn node_durable_resume_after_reconnect() {
    scenario("durable");
}

#[test]
fn node_queue_group_and_durable_queue_group() {
    scenario("queue");
}

#[test]
fn node_manual_ack_and_redelivery() {
    scenario("redelivery");
}

#[test]
fn node_max_in_flight() {
    scenario("max_inflight");
}

#[test]
fn node_duplicate_client_id() {
    scenario("duplicate_client");
}

/// Messages and a durable's position survive a kill -9 of a FILE store server.
#[test]
fn node_file_store_restart() {
    if !node_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut server = ServerProc::start(&["-st", "FILE", "--dir", d]);
    let (ok, out) = run_node("restart_phase1", &server.url());
    assert!(ok, "phase 1 failed:\n{out}");
    server.kill();
    let server = ServerProc::start(&["-st", "file", "--dir", d]);
    let (ok, out) = run_node("restart_phase2", &server.url());
    assert!(ok, "phase 2 failed:\n{out}");
}
