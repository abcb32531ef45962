//! The crate's examples (`examples/`), run as a user would run them, against rnats-server.
//! Cargo builds them beside the test binary (`target/<profile>/examples/`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::pki::make_pki;
use crate::support::{Kind, ServerProc, WAIT};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/it-… → target/<profile>/examples/<name>
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} not built: run the whole `cargo test -p rnats-client` (it builds the examples)",
        path.display()
    );
    path
}

/// Runs an example to its end (killed after `WAIT`); its stdout lines.
fn run(name: &str, env: &[(&str, String)]) -> Vec<String> {
    let mut child = Command::new(example(name))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("example runs");
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name} did not finish within {WAIT:?}: {:?}",
                out.try_iter().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout: Vec<String> = out.iter().collect();
    assert!(
        status.success(),
        "{name}: {status}\n{stdout:?}\n{:?}",
        err.iter().collect::<Vec<_>>()
    );
    stdout
}

#[test]
fn pubsub_request_reply_and_queue_group_examples() {
    let server = ServerProc::start(Kind::Rnats);
    let env = [("NATS_URL", server.url())];
    let out = run("pubsub", &env);
    assert_eq!(
        out,
        [
            "received on greet.joe: hello joe",
            "received on greet.sue: hello sue",
            "received on greet.bob: hello bob (Trace-Id 42)",
        ]
    );
    let out = run("request_reply", &env);
    assert_eq!(
        out,
        [
            "reply: request 1 answered",
            "reply: request 2 answered",
            "nobody.home: no responders",
        ]
    );
    let out = run("queue_group", &env);
    assert_eq!(
        out.last().unwrap(),
        "workers handled 30 of 30 jobs; the plain subscriber saw all 30"
    );
}

#[test]
fn tls_example_with_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let server = ServerProc::start_with(
        Kind::Rnats,
        &[
            "--tlsverify",
            "--tlscert",
            &s(&pki.cert),
            "--tlskey",
            &s(&pki.key),
            "--tlscacert",
            &s(&pki.ca),
        ],
    );
    let out = run(
        "tls",
        &[
            ("NATS_URL", format!("tls://127.0.0.1:{}", server.port)),
            ("NATS_CA", s(&pki.ca)),
            ("NATS_CERT", s(&pki.client_cert)),
            ("NATS_KEY", s(&pki.client_key)),
        ],
    );
    assert!(out[0].starts_with("connected over TLS"), "{out:?}");
    assert_eq!(out[1], "received: hello over TLS");
}

fn lines(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &Receiver<String>, pat: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(pat);
                seen.push(l);
                if hit {
                    return;
                }
            }
            Err(e) => panic!("no line with {pat:?} ({e:?}); saw {seen:?}"),
        }
    }
}

#[test]
fn reconnect_events_example_survives_a_server_restart() {
    let mut server = ServerProc::start(Kind::Rnats);
    let mut child = Command::new(example("reconnect_events"))
        .env("NATS_URL", server.url())
        .env("RECONNECT_WAIT_SECS", "20")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("example starts");
    let rx = lines(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    wait_line(&rx, "ready:", &mut seen);
    server.kill();
    wait_line(&rx, "event: disconnected", &mut seen);
    server.start_again();
    wait_line(&rx, "event: reconnected to", &mut seen);
    wait_line(&rx, "came back after the reconnect: done", &mut seen);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("example did not exit; saw {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    assert!(
        seen.iter().any(|l| l.starts_with("event: connected to")),
        "{seen:?}"
    );
}
