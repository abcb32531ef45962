//! `rnats-bench subs-flood`: one connection sends `--subs` SUBs (a million by default, each
//! on its own subject), reading the server's answers as it goes, then a PING; reports how
//! many the server took and refused (`-ERR 'maximum subscriptions exceeded'`), how long it
//! took, and the server's RSS before, with the subscriptions, and after the connection
//! closed. With `--expect` the number accepted must be exactly that (the configured
//! `max_subs`), and the server must be back to no subscriptions afterwards.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::sample::{self, proc_sample};
use crate::proto::Conn;

/// `rnats-bench subs-flood` options.
#[derive(clap::Args, Debug, Clone)]
pub struct FloodArgs {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub server: String,
    /// The server's process ID (RSS from /proc).
    #[arg(long)]
    pub pid: u32,
    /// The server's monitoring address (host:port), to count its subscriptions.
    #[arg(long)]
    pub monitor: Option<String>,
    /// SUBs to send.
    #[arg(long, default_value_t = 1_000_000)]
    pub subs: u64,
    /// The number the server must accept (its max_subs); without, anything goes.
    #[arg(long)]
    pub expect: Option<u64>,
}

const REFUSED: &[u8] = b"-ERR 'maximum subscriptions exceeded'";

/// Runs the flood and prints the report; Ok(true) when the expectations held.
pub async fn run(a: &FloodArgs) -> Result<bool> {
    let (rss0, _) = proc_sample(a.pid)?;
    let conn = Conn::connect(&a.server, Duration::from_secs(10), None).await?;
    let (mut rd, mut wr) = tokio::io::split(conn.stream);
    let mut leftover = conn.buf.to_vec();
    let start = Instant::now();
    // The reader counts refusals until the PONG that follows the last SUB.
    let reader = tokio::spawn(async move {
        let mut refused = 0u64;
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            let mut pos = 0;
            while let Some(nl) = leftover[pos..].iter().position(|b| *b == b'\n') {
                let line = &leftover[pos..pos + nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.starts_with(REFUSED) {
                    refused += 1;
                } else if line == b"PONG" {
                    return anyhow::Ok(refused);
                } else if line.starts_with(b"-ERR") {
                    bail!("server error: {}", String::from_utf8_lossy(line));
                }
                pos += nl + 1;
            }
            leftover.drain(..pos);
            let n = tokio::time::timeout(Duration::from_secs(60), rd.read(&mut chunk))
                .await
                .context("no answer from the server for 60 s")??;
            if n == 0 {
                bail!("the server closed the connection after {refused} refusals");
            }
            leftover.extend_from_slice(&chunk[..n]);
        }
    });
    let mut batch = Vec::with_capacity(64 * 1024 + 64);
    for i in 0..a.subs {
        batch.extend_from_slice(format!("SUB flood.{i} {i}\r\n").as_bytes());
        if batch.len() >= 64 * 1024 {
            wr.write_all(&batch).await.context("writing SUBs")?;
            batch.clear();
        }
    }
    batch.extend_from_slice(b"PING\r\n");
    wr.write_all(&batch).await.context("writing SUBs")?;
    let refused = reader.await??;
    let took = start.elapsed();
    let accepted = a.subs - refused;
    let (rss1, fds1) = proc_sample(a.pid)?;
    let server_subs = match &a.monitor {
        Some(m) => sample::counters(m, "/varz", &["subscriptions"])
            .await
            .first()
            .map(|c| c.1),
        None => None,
    };
    drop(wr);
    // Closed: the subscriptions must go.
    let mut after_subs = None;
    if let Some(m) = &a.monitor {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = sample::counters(m, "/varz", &["subscriptions"])
                .await
                .first()
                .map(|c| c.1);
            if n == Some(0) || Instant::now() > deadline {
                after_subs = n;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (rss2, _) = proc_sample(a.pid)?;
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "subs-flood {}: {} SUBs in {:.2} s, {accepted} accepted, {refused} refused",
        a.server,
        a.subs,
        took.as_secs_f64()
    );
    println!(
        "  server RSS: {:.1} MiB before, {:.1} MiB with the subscriptions ({} bytes each), {:.1} MiB after the connection closed; fds {fds1}",
        mib(rss0),
        mib(rss1),
        (rss1.saturating_sub(rss0) * 1024)
            .checked_div(accepted)
            .map_or("-".to_string(), |b| b.to_string()),
        mib(rss2)
    );
    if let Some(n) = server_subs {
        println!(
            "  server subscriptions: {n} during, {} after",
            after_subs.unwrap_or(-1)
        );
    }
    let mut ok = true;
    if let Some(want) = a.expect
        && accepted != want
    {
        println!("SUBS-FLOOD FAIL: {accepted} accepted, expected {want}");
        ok = false;
    }
    if after_subs.is_some_and(|n| n != 0) {
        println!("SUBS-FLOOD FAIL: subscriptions left after the connection closed");
        ok = false;
    }
    if ok {
        println!("SUBS-FLOOD PASS");
    }
    Ok(ok)
}
