//! Servers as child processes, on random ports, killed on drop: `rnats-streaming-server`
//! (built by `cargo build -p rnats-streaming-server`) for the scenarios, plain `rnats-server`
//! (`cargo build -p rnats-server`) under the scripted fake streaming server. Every wait is
//! bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rnats_streaming_client::{Error, Msg, Options, StanClient, Subscription};

/// Upper bound of every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub const CLUSTER: &str = "test-cluster";

fn workspace_bin(env: &str, name: &str, package: &str) -> PathBuf {
    let bin = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/debug")
            .join(name)
    });
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p {package}` first (or set {env})",
        bin.display()
    );
    bin
}

/// `RNATS_STREAMING_BIN`, else `target/debug/rnats-streaming-server` of this workspace.
pub fn streaming_bin() -> PathBuf {
    workspace_bin(
        "RNATS_STREAMING_BIN",
        "rnats-streaming-server",
        "rnats-streaming-server",
    )
}

/// `RNATS_BIN`, else `target/debug/rnats-server` of this workspace.
pub fn rnats_bin() -> PathBuf {
    workspace_bin("RNATS_BIN", "rnats-server", "rnats-server")
}

pub struct ServerProc {
    pub port: u16,
    bin: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl ServerProc {
    /// `rnats-streaming-server -cid test-cluster -a 127.0.0.1 -p -1` (memory store, embedded
    /// NATS server).
    pub fn streaming() -> ServerProc {
        Self::start(streaming_bin(), &["-cid", CLUSTER])
    }

    /// A core NATS server only.
    pub fn nats() -> ServerProc {
        Self::start(rnats_bin(), &[])
    }

    fn start(bin: PathBuf, args: &[&str]) -> ServerProc {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, port) = spawn(&bin, None, &args);
        ServerProc {
            port,
            bin,
            args,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Options for a streaming client of this server (short request timeouts).
    pub fn opts(&self) -> Options {
        Options::new()
            .nats_url(self.url())
            .connect_timeout(Duration::from_secs(2))
            .pub_ack_wait(Duration::from_secs(5))
    }

    /// Connects `client_id`; retries while the streaming server is still starting (it
    /// listens for NATS clients before it answers connect requests).
    pub async fn connect(&self, client_id: &str) -> StanClient {
        self.connect_with(client_id, self.opts()).await
    }

    pub async fn connect_with(&self, client_id: &str, opts: Options) -> StanClient {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match StanClient::connect(CLUSTER, client_id, opts.clone()).await {
                Ok(c) => return c,
                Err(Error::ConnectRequestTimeout | Error::Nats(_))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{client_id} connects: {e}"),
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(bin: &PathBuf, port: Option<u16>, args: &[String]) -> (Child, u16) {
    let name = bin.file_name().unwrap().to_string_lossy().to_string();
    let port_arg = port.map_or_else(|| "-1".to_string(), |p| p.to_string());
    let mut child = Command::new(bin)
        .args(args)
        .args(["-a", "127.0.0.1", "-p", &port_arg])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    // The port may be logged on either stream; keep draining both so that the server never
    // blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stderr.take().expect("stderr piped")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stdout.take().expect("stdout piped")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if std::env::var_os("RNATS_TEST_SERVER_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
                if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                    let _ = tx.send(Ok(addr.trim().to_string()));
                } else if line.contains("[FTL]") {
                    let _ = tx.send(Err(line));
                }
            }
        });
    }
    drop(tx);
    let addr = match rx.recv_timeout(WAIT) {
        Ok(Ok(addr)) => addr,
        Ok(Err(line)) => {
            let _ = child.kill();
            panic!("{name} failed to start: {line}");
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait().ok();
            panic!("{name} exited ({status:?}) before reporting its port");
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            panic!("{name} did not report its port in {WAIT:?}");
        }
    };
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| {
            p.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("port in {addr:?}"));
    (child, port)
}

/// The next message, or a panic after `WAIT`.
pub async fn next(sub: &mut Subscription, what: &str) -> Msg {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(m)) => m,
        Ok(None) => panic!("{what}: subscription ended"),
        Err(_) => panic!("{what}: no message within {WAIT:?}"),
    }
}

/// The next message within `d`, if any.
pub async fn next_within(sub: &mut Subscription, d: Duration) -> Option<Msg> {
    tokio::time::timeout(d, sub.next()).await.ok().flatten()
}

/// Asserts that nothing arrives within `d` (a bounded negative check).
pub async fn nothing_within(sub: &mut Subscription, d: Duration, what: &str) {
    if let Ok(Some(m)) = tokio::time::timeout(d, sub.next()).await {
        panic!("{what}: unexpected message {m:?}");
    }
}

/// `n` messages, with their sequences and payloads.
pub async fn take(sub: &mut Subscription, n: usize, what: &str) -> Vec<Msg> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(next(sub, &format!("{what} #{i}")).await);
    }
    out
}

pub fn seqs(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter().map(|m| m.sequence).collect()
}

pub fn texts(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .collect()
}

/// Publishes `payloads` one by one, each waiting for its ack.
pub async fn publish_all(sc: &StanClient, channel: &str, payloads: &[&str]) {
    for p in payloads {
        sc.publish(channel, p.to_string())
            .await
            .unwrap_or_else(|e| panic!("publish {p:?} to {channel}: {e}"));
    }
}
