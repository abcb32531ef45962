//! Drives the built `rnats` binary against rnats-server and the reference nats-server.
//! Every wait is bounded: a command that hangs is killed and the test fails.

#[path = "../../client/tests/it/support.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Instant;

use support::{Kind, ServerProc, WAIT, kinds};

fn rnats(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rnats"));
    c.args(args)
        .env("NATS_URL", url)
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD");
    c
}

/// A running `rnats` with its output read line by line on threads.
struct Bg {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    err_seen: Vec<String>,
}

fn lines(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

impl Bg {
    fn spawn(cmd: &mut Command, stdin: Option<&str>) -> Bg {
        let mut child = cmd
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rnats starts");
        if let Some(input) = stdin {
            let mut s = child.stdin.take().unwrap();
            s.write_all(input.as_bytes()).unwrap();
        }
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        Bg {
            child,
            out,
            err,
            err_seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `pat` (the readiness lines of sub and reply).
    fn wait_stderr(&mut self, pat: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(l) if l.contains(pat) => return,
                Ok(l) => self.err_seen.push(l),
                Err(e) => panic!(
                    "no stderr line with {pat:?} ({e:?}); saw {:?}",
                    self.err_seen
                ),
            }
        }
    }

    /// Waits for the process to end; returns its status, stdout and stderr lines.
    fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("rnats did not finish in {WAIT:?}; stdout so far {out:?}");
                }
            }
        }
        let status = self.child.wait().unwrap();
        let mut err = std::mem::take(&mut self.err_seen);
        // The process is gone, so stderr ends soon: read it to the end.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(l) => err.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("stderr did not end; so far {err:?}"),
            }
        }
        (status, out, err)
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(url: &str, args: &[&str], stdin: Option<&str>) -> (ExitStatus, Vec<String>, Vec<String>) {
    Bg::spawn(&mut rnats(url, args), stdin).finish()
}

#[test]
fn pub_then_sub_count() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let url = srv.url();
        let mut sub = Bg::spawn(
            &mut rnats(&url, &["sub", "cli.>", "--count", "3", "--raw"]),
            None,
        );
        sub.wait_stderr("Subscribing on cli.>");
        let (status, _, err) = run(&url, &["pub", "cli.x", "n {{Count}}", "--count", "3"], None);
        assert!(status.success(), "{}: pub failed: {err:?}", srv.name());
        let (status, out, err) = sub.finish();
        assert!(status.success(), "{}: {err:?}", srv.name());
        assert_eq!(out, ["n 1", "n 2", "n 3"], "{}", srv.name());
    }
}

#[test]
fn pub_from_stdin_with_headers_and_queue_sub() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let url = srv.url();
        let mut sub = Bg::spawn(
            &mut rnats(
                &url,
                &["sub", "h.x", "--queue", "q1", "--count", "1", "--headers"],
            ),
            None,
        );
        sub.wait_stderr("Subscribing on h.x in group q1");
        let (status, _, err) = run(
            &url,
            &["pub", "h.x", "-H", "X-A:1", "-H", "X-B: two"],
            Some("from stdin"),
        );
        assert!(status.success(), "{err:?}");
        let (status, out, _) = sub.finish();
        assert!(status.success());
        assert_eq!(
            out,
            [
                "[#1] Received on \"h.x\"",
                "X-A: 1",
                "X-B: two",
                "",
                "from stdin",
                ""
            ],
            "{}",
            srv.name()
        );
    }
}

#[test]
fn req_reply() {
    for kind in kinds() {
        let srv = ServerProc::start(kind);
        let url = srv.url();
        let mut fixed = Bg::spawn(
            &mut rnats(&url, &["reply", "svc.fixed", "pong {{Count}}"]),
            None,
        );
        fixed.wait_stderr("Listening on \"svc.fixed\"");
        for i in 1..=2 {
            let (status, out, err) = run(&url, &["req", "svc.fixed", "ping", "--raw"], None);
            assert!(status.success(), "{}: {err:?}", srv.name());
            assert_eq!(out, [format!("pong {i}")]);
        }

        let mut echo = Bg::spawn(
            &mut rnats(&url, &["reply", "svc.echo", "--echo", "--count", "1"]),
            None,
        );
        echo.wait_stderr("Listening on");
        let (status, out, err) = run(&url, &["req", "svc.echo", "hello there"], None);
        assert!(status.success(), "{err:?}");
        assert_eq!(out, ["hello there"]);
        assert!(
            err.iter().any(|l| l.starts_with("Received with rtt")),
            "{err:?}"
        );
        assert!(echo.finish().0.success(), "reply exits after --count");

        let mut cmd = Bg::spawn(
            &mut rnats(
                &url,
                &[
                    "reply",
                    "svc.cmd",
                    "--command",
                    "tr a-z A-Z",
                    "--count",
                    "1",
                ],
            ),
            None,
        );
        cmd.wait_stderr("Listening on");
        let (status, out, _) = run(&url, &["req", "svc.cmd", "--raw"], Some("shout"));
        assert!(status.success());
        assert_eq!(out, ["SHOUT"]);
        assert!(cmd.finish().0.success());
    }
}

/// Failures exit with 1 and say, in one line, what to do.
#[test]
fn errors_are_one_line_and_exit_1() {
    let srv = ServerProc::start(Kind::Rnats);
    let url = srv.url();
    let (status, out, err) = run(&url, &["req", "nobody.home", "x"], None);
    assert_eq!(status.code(), Some(1));
    assert!(out.is_empty());
    let last = err.last().expect("an error line");
    assert!(
        last.starts_with("rnats: error: no responders on \"nobody.home\""),
        "{err:?}"
    );
    assert!(last.contains("rnats reply"), "says what to do: {last}");

    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (status, _, err) = run(
        &format!("nats://127.0.0.1:{dead}"),
        &["pub", "a", "b"],
        None,
    );
    assert_eq!(status.code(), Some(1));
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("--server or NATS_URL"), "{err:?}");

    let (status, _, err) = run(&url, &["--timeout", "300ms", "sub", "a b"], None);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.last().unwrap().contains("cannot subscribe to \"a b\""),
        "{err:?}"
    );

    let (status, _, _) = run(&url, &["pub"], None);
    assert_eq!(status.code(), Some(1), "usage errors exit 1");

    let (status, _, err) = run(&url, &["reply", "svc"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.last().unwrap().contains("--echo"), "{err:?}");

    let srv = ServerProc::start_with(Kind::Rnats, &["--user", "u", "--pass", "p"]);
    let (status, _, err) = run(&srv.url(), &["pub", "a", "b"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err[0].contains("--user/--password"), "{err:?}");
    let (status, _, err) = run(
        &srv.url(),
        &["--user", "u", "--password", "p", "pub", "a", "b"],
        None,
    );
    assert!(status.success(), "{err:?}");
}

#[test]
fn req_times_out_with_a_hint() {
    let srv = ServerProc::start(Kind::Rnats);
    let url = srv.url();
    // A subscriber that never answers: the request times out instead of "no responders".
    let mut silent = Bg::spawn(&mut rnats(&url, &["sub", "slow.svc"]), None);
    silent.wait_stderr("Subscribing on");
    let (status, _, err) = run(&url, &["--timeout", "300ms", "req", "slow.svc", "x"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.last().unwrap().contains("raise --timeout"), "{err:?}");
}
