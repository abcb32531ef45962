//! Queue groups: three workers in the group `workers` share the messages on `jobs` (each
//! message goes to one of them), while a plain subscriber sees them all.
//!
//! ```text
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p rnats-client --example queue_group
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;

const JOBS: usize = 30;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = rnats_client::connect(url.as_str()).await?;

    // Jobs handled per worker.
    let handled: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let mut workers = Vec::new();
    for id in 0..3 {
        let mut sub = client.queue_subscribe("jobs", "workers").await?;
        let handled = handled.clone();
        workers.push(tokio::spawn(async move {
            while sub.next().await.is_some() {
                handled[id].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut audit = client.subscribe("jobs").await?;
    client.flush().await?;

    for i in 0..JOBS {
        client.publish("jobs", format!("job {i}")).await?;
    }
    client.flush().await?;

    // The plain subscriber gets every message; the group gets each once, in total.
    for _ in 0..JOBS {
        audit.next().await.ok_or("audit subscription closed")?;
    }
    let total = || {
        handled
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .sum::<usize>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while total() < JOBS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in &workers {
        w.abort();
    }
    for (id, h) in handled.iter().enumerate() {
        println!("worker {id} handled {} jobs", h.load(Ordering::Relaxed));
    }
    println!(
        "workers handled {} of {JOBS} jobs; the plain subscriber saw all {JOBS}",
        total()
    );
    client.close().await;
    Ok(())
}
