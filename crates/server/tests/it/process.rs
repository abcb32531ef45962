//! The `rnats-server` binary: nats-server's flags, config file, logs and signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{ChildGuard, Raw};

const BIN: &str = env!("CARGO_BIN_EXE_rnats-server");

/// Starts the binary and returns it with the client port it logged.
pub(crate) fn spawn(args: &[&str]) -> (ChildGuard, u16, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut port = 0;
    while port == 0 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server logs its port");
        if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
            port = addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    }
    (ChildGuard(child), port, rx)
}

#[test]
fn version_help_and_bad_flags() {
    let out = Command::new(BIN).arg("-v").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rnats-server: v"));
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert!(
        out.status.success(),
        "usage printer exits 0, as the reference"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("flag provided but not defined: -bogus"));
    let out = Command::new(BIN)
        .args(["-c", "/nonexistent/rnats.conf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("rnats-server: "));
    let out = Command::new(BIN).arg("-t").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must specify [-c, --config] option"));
}

#[tokio::test]
async fn config_file_with_include_and_variables_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("limits.conf"),
        "max_payload: 2KB\nmax_subs = 3\n",
    )
    .unwrap();
    let conf = dir.path().join("server.conf");
    std::fs::write(
        &conf,
        "# a comment\nNAME: \"from-var\"\nserver_name: $NAME\nlisten: 127.0.0.1:-1 // trailing\ninclude ./limits.conf\nping_interval: \"1m\"\n",
    )
    .unwrap();
    let pid_file = dir.path().join("rnats.pid");
    let log_file = dir.path().join("rnats.log");
    let conf_s = conf.to_str().unwrap();
    let out = Command::new(BIN)
        .args(["-t", "-c", conf_s])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (mut child, port, logs) = spawn(&["-c", conf_s, "-P", pid_file.to_str().unwrap(), "-D"]);
    let mut c = Raw::connect(([127, 0, 0, 1], port).into()).await;
    assert!(
        c.info.contains("\"server_name\":\"from-var\""),
        "{}",
        c.info
    );
    assert!(c.info.contains("\"max_payload\":2048"), "{}", c.info);
    c.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nSUB d 4\r\n")
        .await;
    assert_eq!(
        c.ping_pong().await,
        ["+OK", "+OK", "+OK", "-ERR 'maximum subscriptions exceeded'"]
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(pid.trim(), child.0.id().to_string());

    // SIGTERM: every connection is closed, the process exits 0 and removes its pid file.
    let status = Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(c.until_closed().await.is_some());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = child.0.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exited.expect("exits after SIGTERM").success());
    assert!(!pid_file.exists());
    let lines: Vec<String> = logs.try_iter().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("[INF] Trapped \"terminated\" signal")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("[DBG]")),
        "-D enables debug lines"
    );
    let _ = log_file;
}

#[tokio::test]
async fn log_file_and_flags_override_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.conf");
    std::fs::write(&conf, "server_name: from-file\nport: 1\n").unwrap();
    let log_file = dir.path().join("rnats.log");
    let mut child = Command::new(BIN)
        .args([
            "-c",
            conf.to_str().unwrap(),
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "-n",
            "from-flag",
            "-l",
            log_file.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = None;
    for _ in 0..200 {
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        if let Some(addr) = log.split("Listening for client connections on ").nth(1) {
            port = addr
                .lines()
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let port = port.expect("port logged to the log file");
    let c = Raw::connect(([127, 0, 0, 1], port).into()).await;
    assert!(
        c.info.contains("\"server_name\":\"from-flag\""),
        "{}",
        c.info
    );
    let log = std::fs::read_to_string(&log_file).unwrap();
    let first = log.lines().next().unwrap();
    // [pid] YYYY/MM/DD HH:MM:SS.micro [INF] message
    let pid = child.id().to_string();
    assert!(first.starts_with(&format!("[{pid}] ")), "{first}");
    assert!(first.contains(" [INF] "), "{first}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Secrets never reach the logs, even with -DV (the CONNECT trace is redacted).
#[tokio::test]
async fn passwords_and_tokens_are_not_logged() {
    let (mut child, port, logs) = spawn(&[
        "-a",
        "127.0.0.1",
        "-p",
        "-1",
        "-DV",
        "--user",
        "alice",
        "--pass",
        "s3cr3t-pw",
    ]);
    let mut c = Raw::connect(([127, 0, 0, 1], port).into()).await;
    c.send(b"CONNECT {\"user\":\"alice\",\"pass\":\"s3cr3t-pw\",\"verbose\":false}\r\nPING\r\n")
        .await;
    c.expect_line("PONG").await;
    let mut bad = Raw::connect(([127, 0, 0, 1], port).into()).await;
    bad.send(b"CONNECT {\"user\":\"alice\",\"pass\":\"wrong-s3cr3t\"}\r\n")
        .await;
    assert!(bad.until_closed().await.is_some());
    let _ = child.0.kill();
    let _ = child.0.wait();
    let lines: Vec<String> = logs.iter().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("CONNECT") && l.contains("[REDACTED]")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("s3cr3t")),
        "a password reached the log: {lines:?}"
    );
}
