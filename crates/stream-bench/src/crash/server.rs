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
    pub(super) addr: String,
    pub(super) log: PathBuf,
    pub(super) started: Instant,
}

pub(super) async fn start_server(
    a: &CrashArgs,
    store_args: &[String],
    work: &Path,
    n: usize,
    wait: Duration,
) -> anyhow::Result<Server> {
    let log = work.join(format!("server.{n}.log"));
    let out = File::create(&log)?;
    let err = out.try_clone()?;
    let started = Instant::now();
    let mut child = Command::new(&a.server_bin)
        .args(["-cid", &a.cluster])
        .args(store_args)
        .args(["-a", "127.0.0.1", "-p", "-1"])
        // No channel limits: every message ever acknowledged must stay (the defaults, 1M
        // messages or ~1 GB per channel, would drop the oldest ones in a long run).
        .args(["-mm", "0", "-mb", "0"])
        .args(&a.server_arg)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawning {}", a.server_bin.display()))?;
    let deadline = Instant::now() + wait;
    let needle = "Listening for client connections on ";
    let mut port = None;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait()? {
            bail!(
                "exited with {st} before listening; log {}:\n{}",
                log.display(),
                tail(&log)
            );
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(i) = text.find(needle) {
            let rest = &text[i + needle.len()..];
            let hp: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            if let Some(p) = hp.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) {
                port = Some(p);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some(port) = port else {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "no client port logged within {wait:?}; log {}:\n{}",
            log.display(),
            tail(&log)
        );
    };
    let srv = Server {
        child,
        addr: format!("127.0.0.1:{port}"),
        log,
        started,
    };
    Ok(srv)
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
