//! The log an operator reads: `-DV` trace lines, permission violations and the plaintext
//! password warning, compared line by line with the reference nats-server for the same
//! session (when it is installed; otherwise checked against the lines it wrote).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::harness::{ChildGuard, Raw};

const CONF: &str = r#"
authorization {
  users = [
    {user: app, password: secret, permissions: {publish: {allow: ["ok.>"]}, subscribe: {deny: ["secret.>"]}}}
  ]
}
"#;

/// What the reference logged for this session (nats-server 2.15.1, `-DV`), normalized.
const REFERENCE: &[&str] = &[
    r#"[WRN] Plaintext passwords detected, use nkeys or bcrypt"#,
    r#"[TRC] ADDR - cid:N - <<- [CONNECT {"verbose":false,"pedantic":false,"user":"app","pass":"[REDACTED]","name":"tracer","lang":"raw","version":"1","protocol":1,"headers":true}]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- [PING]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - ->> [PONG]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- [SUB ok.x 1]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- [SUB secret.x 2]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - ->> [-ERR Permissions Violation for Subscription to "secret.x"]"#,
    r#"[ERR] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - Subscription Violation - Subject "secret.x", SID 2"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- [SUB secret.y q 3]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - ->> [-ERR Permissions Violation for Subscription to "secret.y" using queue "q"]"#,
    r#"[ERR] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - Subscription Violation - Subject "secret.y", Queue: "q", SID 3"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- [PUB ok.x bar 5]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- MSG_PAYLOAD: ["hello"]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - ->> [MSG ok.x 1 bar 5]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - ->> MSG_PAYLOAD: ["hello"]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- [PUB nope 2]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- MSG_PAYLOAD: ["hi"]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - ->> [-ERR Permissions Violation for Publish to "nope"]"#,
    r#"[ERR] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - Publish Violation - Subject "nope""#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- [HPUB ok.x 18 23]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- MSG_PAYLOAD: ["NATS/1.0\r\nA: B\r\n\r\nhello"]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - ->> [HMSG ok.x 1 18 23]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - ->> MSG_PAYLOAD: ["NATS/1.0\r\nA: B\r\n\r\nhello"]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- [UNSUB 1]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <-> [DELSUB 1]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - <<- [PING]"#,
    r#"[TRC] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - ->> [PONG]"#,
    r#"[DBG] ADDR - cid:N - "v1:raw:tracer" - "$G/user:app" - Client connection closed: Client Closed"#,
];

/// Starts `bin` with `args`; returns it, its client port, and its log lines as they come.
fn spawn(bin: &str, args: &[&str]) -> (ChildGuard, u16, Receiver<String>) {
    let mut child = Command::new(bin)
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
    let child = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut early = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("server logs its port");
        if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
            let port = addr.rsplit(':').next().unwrap().trim().parse().unwrap();
            // Lines logged before the port (the warning) are handed back first.
            let (tx2, rx2) = std::sync::mpsc::channel();
            for l in early {
                let _ = tx2.send(l);
            }
            std::thread::spawn(move || {
                while let Ok(l) = rx.recv() {
                    if tx2.send(l).is_err() {
                        break;
                    }
                }
            });
            return (child, port, rx2);
        }
        early.push(line);
    }
}

/// `[LVL] message` with the address and cid made comparable; only the lines this session is
/// about (the warning, its connection's lines).
fn normalize(line: &str) -> Option<String> {
    let at = ["[TRC] ", "[DBG] ", "[ERR] ", "[WRN] ", "[INF] "]
        .iter()
        .filter_map(|l| line.find(l))
        .min()?;
    let rest = &line[at..];
    if !rest.contains("cid:") {
        return rest
            .contains("Plaintext passwords")
            .then(|| rest.to_string());
    }
    if rest.contains("Client connection created") || rest.contains("->> [PING]") {
        return None;
    }
    let (level, msg) = rest.split_once(' ')?;
    let (_, after_addr) = msg.split_once(" - cid:")?;
    let (_, tail) = after_addr.split_once(' ')?;
    Some(format!("{level} ADDR - cid:N {tail}"))
}

async fn session(port: u16) {
    let mut raw = Raw::connect(([127, 0, 0, 1], port).into()).await;
    raw.send(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"user\":\"app\",\"pass\":\"secret\",\"name\":\"tracer\",\"lang\":\"raw\",\"version\":\"1\",\"protocol\":1,\"headers\":true}\r\nPING\r\n",
    )
    .await;
    raw.expect_line("PONG").await;
    raw.send(
        b"SUB ok.x 1\r\nSUB secret.x 2\r\nSUB secret.y q 3\r\nPUB ok.x bar 5\r\nhello\r\nPUB nope 2\r\nhi\r\nHPUB ok.x 18 23\r\nNATS/1.0\r\nA: B\r\n\r\nhello\r\nUNSUB 1\r\n",
    )
    .await;
    raw.ping_pong().await;
}

/// The lines the server logged for the session, up to its connection's close.
fn collect(rx: &Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(l) = normalize(&line) {
            let done = l.contains("Client connection closed");
            out.push(l);
            if done {
                break;
            }
        }
    }
    out
}

#[tokio::test]
async fn trace_violations_and_warning_as_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("auth.conf");
    std::fs::write(&conf, CONF).unwrap();
    let args = [
        "-a",
        "127.0.0.1",
        "-p",
        "-1",
        "-DV",
        "-c",
        conf.to_str().unwrap(),
    ];
    let ours = {
        let (child, port, rx) = spawn(env!("CARGO_BIN_EXE_rnats-server"), &args);
        session(port).await;
        let lines = collect(&rx);
        drop(child);
        lines
    };
    let want: Vec<String> = REFERENCE.iter().map(|s| s.to_string()).collect();
    assert_eq!(ours, want, "rnats' log for the session");
    if let Some(bin) = crate::harness::reference_bin() {
        let (child, port, rx) = spawn(bin.to_str().unwrap(), &args);
        session(port).await;
        let theirs = collect(&rx);
        drop(child);
        assert_eq!(theirs, want, "the reference's log for the session");
    }
}
