//! The streaming server process of a soak: started on the run's store directory with its
//! output in a log file, found by its log lines (client and monitoring ports), restarted
//! with SIGTERM or SIGKILL.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running server.
pub struct Server {
    pub child: Child,
    /// `127.0.0.1:<client port>`.
    pub addr: String,
    /// `127.0.0.1:<monitoring port>`.
    pub monitor: String,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Starts `bin` with `args` (which must include `-p -1 -m -1` or fixed ports), output to
/// `log`, and waits up to `wait` until it logged both ports and that it is ready.
pub async fn start(
    bin: &Path,
    args: &[String],
    log: PathBuf,
    wait: Duration,
) -> anyhow::Result<Server> {
    let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
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
                "{} exited with {st} at start-up; log {}",
                bin.display(),
                log.display()
            );
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let addr = after(&text, "Listening for client connections on ");
        let monitor = after(&text, "Starting monitoring on http://")
            .map(|m| m.trim_end_matches("/streaming").to_string());
        if let (Some(addr), Some(monitor), true) =
            (addr, monitor, text.contains("Streaming Server is ready"))
        {
            return Ok(Server {
                child,
                addr,
                monitor,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!(
        "the server was not ready within {wait:?}; log {}",
        log.display()
    )
}

/// The word after `needle` in `text`.
fn after(text: &str, needle: &str) -> Option<String> {
    let i = text.find(needle)? + needle.len();
    let w: String = text[i..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    (!w.is_empty()).then_some(w)
}

/// Stops the server: SIGTERM (waiting up to `wait`, then SIGKILL) or SIGKILL at once.
/// Returns whether a SIGTERM stop completed in time.
pub async fn stop(s: &mut Server, kill: bool, wait: Duration) -> anyhow::Result<bool> {
    if kill {
        let _ = s.child.kill();
        s.child.wait()?;
        return Ok(true);
    }
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
    let _ = s.child.kill();
    s.child.wait()?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ports_in_the_log() {
        let log = "[1] STREAM: Starting monitoring on http://127.0.0.1:8222/streaming\n\
                   [1] Listening for client connections on 127.0.0.1:4222\n";
        assert_eq!(
            after(log, "Listening for client connections on ").as_deref(),
            Some("127.0.0.1:4222")
        );
        assert_eq!(
            after(log, "Starting monitoring on http://")
                .map(|m| m.trim_end_matches("/streaming").to_string())
                .as_deref(),
            Some("127.0.0.1:8222")
        );
        assert_eq!(after(log, "nothing"), None);
    }
}
