//! End to end: the binary publishes into its built-in sink and reports a clean run.

use std::process::Command;

#[test]
fn pub_into_sink_reports_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_rnats-bench"))
        .args([
            "--sink",
            "--scenario",
            "pub",
            "--pubs",
            "2",
            "--msgs",
            "100000",
            "--size",
            "16",
            "--json",
            "--timeout",
            "5",
        ])
        .output()
        .expect("run rnats-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    assert!(line.contains("\"scenario\":\"pub\""), "{line}");
    assert!(line.contains("\"published\":200000"), "{line}");
    assert!(line.contains("\"errors\":[]"), "{line}");
    assert!(stderr.contains("msgs/s"), "human line on stderr: {stderr}");
}

#[test]
fn sink_rejects_other_scenarios() {
    let out = Command::new(env!("CARGO_BIN_EXE_rnats-bench"))
        .args(["--sink", "--scenario", "pubsub"])
        .output()
        .expect("run rnats-bench");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn unreachable_server_fails_fast() {
    let out = Command::new(env!("CARGO_BIN_EXE_rnats-bench"))
        .args([
            "--server",
            "127.0.0.1:1",
            "--scenario",
            "pub",
            "--timeout",
            "2",
        ])
        .output()
        .expect("run rnats-bench");
    assert_eq!(out.status.code(), Some(1));
}
