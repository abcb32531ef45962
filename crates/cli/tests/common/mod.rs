//! Helpers of the CLI tests: the `rnats` binary run with a bounded wait, its output read
//! line by line on threads.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Instant;

use crate::support::WAIT;

pub fn rnats(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rnats"));
    c.args(args).env("NATS_URL", url);
    for var in [
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_CREDS",
        "NATS_NKEY",
        "NATS_CA",
        "NATS_CERT",
        "NATS_KEY",
        "NATS_MONITOR_URL",
    ] {
        c.env_remove(var);
    }
    c
}

/// A running `rnats` with its output read line by line on threads.
pub struct Bg {
    pub child: Child,
    pub out: Receiver<String>,
    pub err: Receiver<String>,
    pub err_seen: Vec<String>,
}

pub fn lines(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
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
    pub fn spawn(cmd: &mut Command, stdin: Option<&str>) -> Bg {
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
    pub fn wait_stderr(&mut self, pat: &str) {
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
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
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

pub fn run(
    url: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (ExitStatus, Vec<String>, Vec<String>) {
    Bg::spawn(&mut rnats(url, args), stdin).finish()
}
