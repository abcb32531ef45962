//! `rnats rtt`: the round-trip time to the server (PING to PONG), as natscli's `nats rtt`.

use std::time::{Duration, Instant};

use clap::Args;

use crate::{Global, Result};

#[derive(Args, Debug)]
pub struct RttArgs {
    /// Round trips to measure (their average is shown)
    #[arg(long, default_value_t = 5)]
    iterations: u32,
}

pub async fn run(g: &Global, a: RttArgs) -> Result<()> {
    if a.iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }
    let opts = g.connect_options()?;
    let client = opts
        .connect(g.server.as_str())
        .await
        .map_err(|e| crate::connect_failure(&g.server, &e))?;
    let mut total = Duration::ZERO;
    for _ in 0..a.iterations {
        let t = Instant::now();
        client
            .flush()
            .await
            .map_err(|e| format!("no PONG from {}: {e}", g.server))?;
        total += t.elapsed();
    }
    let info = client.server_info();
    client.close().await;
    let avg = total / a.iterations;
    println!(
        "{}: {avg:?} (average of {} round trips to {}:{})",
        g.server, a.iterations, info.host, info.port
    );
    Ok(())
}
