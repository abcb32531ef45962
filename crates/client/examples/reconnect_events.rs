//! Reconnects and connection events: the client reports `Disconnected`, `Reconnected`,
//! server errors and more through an event callback (or `Client::events()`), keeps its
//! subscriptions across a reconnect and buffers what is published meanwhile.
//!
//! Run it, then restart the server: the example publishes a tick every 200 ms and ends once a
//! tick sent after the reconnect came back (or after `RECONNECT_WAIT_SECS`, default 30).
//!
//! ```text
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p rnats-client --example reconnect_events
//! ```

use std::time::Duration;

use futures::StreamExt;
use rnats_client::{ConnectOptions, Event};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let wait: u64 = std::env::var("RECONNECT_WAIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let client = ConnectOptions::new()
        .name("reconnect-example")
        .max_reconnects(None)
        .reconnect_delay(
            Duration::from_millis(100),
            Duration::from_secs(1),
            Duration::from_millis(50),
        )
        .event_callback(|event| match event {
            Event::Disconnected => println!("event: disconnected"),
            Event::Reconnected(addr) => println!("event: reconnected to {addr}"),
            Event::Connected(addr) => println!("event: connected to {addr}"),
            other => println!("event: {other:?}"),
        })
        .connect(url.as_str())
        .await?;
    let mut events = client.events();
    let mut ticks = client.subscribe("ticks").await?;
    client.flush().await?;
    println!("ready: restart the server to see the reconnect");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut sent = 0u64;
    let mut reconnected_at = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                sent += 1;
                // While disconnected this goes to the reconnect buffer.
                if let Err(e) = client.publish("ticks", sent.to_string()).await {
                    println!("publish {sent}: {e}");
                }
            }
            Ok(event) = events.recv() => {
                if matches!(event, Event::Reconnected(_)) {
                    reconnected_at = Some(sent);
                }
            }
            Some(msg) = ticks.next() => {
                let n: u64 = String::from_utf8_lossy(&msg.payload).parse().unwrap_or(0);
                if reconnected_at.is_some_and(|at| n > at) {
                    println!("tick {n} came back after the reconnect: done");
                    break;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                println!("no reconnect within {wait} s: done");
                break;
            }
        }
    }
    client.close().await;
    Ok(())
}
