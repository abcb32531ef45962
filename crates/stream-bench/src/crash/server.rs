//! The server process: started on the store with its output in a log file, waited for,
//! killed (`kill -9`) or stopped (SIGTERM).

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::CrashArgs;
use crate::nats;
use crate::stan::Stan;

pub(super) struct Server {
    pub(super) child: Child,
    /// Where clients connect: the server's own NATS, or the core NATS it attaches to.
    pub(super) addr: String,
    pub(super) log: PathBuf,
    pub(super) started: Instant,
    /// The `/streaming` monitoring port, when it logged one.
    pub(super) monitor: Option<u16>,
}

/// A server still running when its value goes (a run that ends early through an error) is
/// killed, so that a failed run leaves no process behind; the normal paths stop it first.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(super) async fn start_server(
    a: &CrashArgs,
    store_args: &[String],
    work: &Path,
    n: usize,
    wait: Duration,
) -> anyhow::Result<Server> {
    let mut args: Vec<String> = vec!["-cid".into(), a.cluster.clone()];
    args.extend(store_args.iter().cloned());
    // No channel limits: every message ever acknowledged must stay (the defaults, 1M
    // messages or ~1 GB per channel, would drop the oldest ones in a long run).
    args.extend(["-a", "127.0.0.1", "-p", "-1", "-mm", "0", "-mb", "0"].map(String::from));
    args.extend(a.server_arg.iter().cloned());
    let log = work.join(format!("server.{n}.log"));
    spawn(
        &a.server_bin,
        &args,
        log,
        "Listening for client connections on ",
        wait,
    )
    .await
}

/// A core NATS server (`--nats-bin`) for the modes whose streaming servers attach to one.
pub(super) async fn start_core(
    a: &CrashArgs,
    work: &Path,
    wait: Duration,
) -> anyhow::Result<Server> {
    start_core_plain(a, work, wait).await
}

/// Like [`start_core`], also listening for routes (on a port of the OS's choosing): the
/// server and that port.
pub(super) async fn start_core_routed(
    a: &CrashArgs,
    work: &Path,
    wait: Duration,
) -> anyhow::Result<(Server, u16)> {
    let args: Vec<String> = [
        "-a",
        "127.0.0.1",
        "-p",
        "-1",
        "--cluster",
        "nats://127.0.0.1:-1",
    ]
    .map(String::from)
    .to_vec();
    let log = work.join("core-nats.log");
    let s = spawn(
        &a.nats_bin,
        &args,
        log.clone(),
        "Listening for client connections on ",
        wait,
    )
    .await?;
    let deadline = Instant::now() + wait;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(port) = text
            .split("Listening for route connections on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|hp| hp.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
        {
            return Ok((s, port));
        }
        if Instant::now() > deadline {
            bail!(
                "the core server logged no route port; log {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn start_core_plain(a: &CrashArgs, work: &Path, wait: Duration) -> anyhow::Result<Server> {
    let args: Vec<String> = ["-a", "127.0.0.1", "-p", "-1"].map(String::from).to_vec();
    spawn(
        &a.nats_bin,
        &args,
        work.join("core-nats.log"),
        "Listening for client connections on ",
        wait,
    )
    .await
}

/// A streaming server attached to the core NATS at `core` (`-ns`), with `extra` arguments;
/// waits for a log line containing `until`. Its `addr` is the core's.
pub(super) async fn start_member(
    a: &CrashArgs,
    core: &str,
    extra: &[String],
    log: PathBuf,
    until: &str,
    wait: Duration,
) -> anyhow::Result<Server> {
    let mut args: Vec<String> = ["-cid", &a.cluster, "-ns"].map(String::from).to_vec();
    args.push(format!("nats://{core}"));
    args.extend(["-mm", "0", "-mb", "0", "-m", "-1"].map(String::from));
    args.extend(extra.iter().cloned());
    args.extend(a.server_arg.iter().cloned());
    let mut s = spawn(&a.server_bin, &args, log, until, wait).await?;
    s.addr = core.to_string();
    Ok(s)
}

/// A streaming server embedding its NATS server, routed to the core's route port
/// (`core_route`; the servers gossip the rest of the full mesh); its `addr` is the core's
/// (`core`), where the clients stay when it dies.
pub(super) async fn start_embedded_member(
    a: &CrashArgs,
    (core, core_route): (&str, u16),
    extra: &[String],
    log: PathBuf,
    until: &str,
    wait: Duration,
) -> anyhow::Result<Server> {
    let mut args: Vec<String> = ["-cid", &a.cluster, "-a", "127.0.0.1", "-p", "-1"]
        .map(String::from)
        .to_vec();
    args.extend([
        "--cluster".into(),
        "nats://127.0.0.1:-1".into(),
        "--routes".into(),
        format!("nats://127.0.0.1:{core_route}"),
    ]);
    args.extend(["-mm", "0", "-mb", "0", "-m", "-1"].map(String::from));
    args.extend(extra.iter().cloned());
    args.extend(a.server_arg.iter().cloned());
    let mut s = spawn(&a.server_bin, &args, log, until, wait).await?;
    s.addr = core.to_string();
    Ok(s)
}

/// Starts `bin` with `args`, output to `log`, and waits for a line containing `until`; when
/// that line logs a `host:port` right after it, that is the server's `addr`.
async fn spawn(
    bin: &Path,
    args: &[String],
    log: PathBuf,
    until: &str,
    wait: Duration,
) -> anyhow::Result<Server> {
    let out = File::create(&log)?;
    let err = out.try_clone()?;
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait()? {
            bail!(
                "exited with {st} before logging {until:?}; log {}:\n{}",
                log.display(),
                tail(&log)
            );
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(i) = text.find(until) {
            let rest = &text[i + until.len()..];
            let hp: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            let port = hp.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            let monitor = monitor_port(&text);
            return Ok(Server {
                child,
                addr: port.map(|p| format!("127.0.0.1:{p}")).unwrap_or_default(),
                log,
                started,
                monitor,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!(
        "{until:?} not logged within {wait:?}; log {}:\n{}",
        log.display(),
        tail(&log)
    )
}

/// The `/streaming` monitoring port a streaming server logged.
fn monitor_port(log: &str) -> Option<u16> {
    let needle = "Starting monitoring on http://";
    let i = log.find(needle)?;
    let hp: String = log[i + needle.len()..]
        .chars()
        .take_while(|c| *c != '/' && !c.is_whitespace())
        .collect();
    hp.rsplit(':').next()?.parse().ok()
}

/// `GET path` on the monitoring port: the body, when something answered 200.
pub(super) async fn monitor_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .ok()
        .flatten()
}

/// Waits until the streaming server answers a connect (store recovered), closing that
/// session again.
pub(super) async fn await_ready(
    srv_addr: &str,
    cluster: &str,
    wait: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let r = async {
            let nc = nats::connect(srv_addr, "crash-ready", false).await?;
            let s = Stan::connect(
                nc,
                cluster,
                &format!("crash-ready-{}", nuid::next()),
                Duration::from_millis(500),
            )
            .await?;
            s.close(Duration::from_secs(2)).await
        }
        .await;
        match r {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e.context("not ready")),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Sends a signal (`-STOP`, `-CONT`, ...).
pub(super) fn signal(s: &Server, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &s.child.id().to_string()])
        .status();
}

pub(super) fn kill9(s: &mut Server) -> anyhow::Result<()> {
    let _ = s.child.kill(); // SIGKILL
    s.child.wait()?;
    Ok(())
}

/// SIGTERM, then waits; true when the process exited in time.
pub(super) async fn term(s: &mut Server, wait: Duration) -> anyhow::Result<bool> {
    let _ = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if s.child.try_wait()?.is_some() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill9(s)?;
    Ok(false)
}

pub(super) fn tail(p: &Path) -> String {
    let Ok(mut f) = File::open(p) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(3000)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}
