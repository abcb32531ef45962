//! Publish and subscribe: a subscription with a wildcard, three messages, one with headers.
//!
//! ```text
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p rnats-client --example pubsub
//! ```

use futures::StreamExt;
use rnats_client::HeaderMap;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = rnats_client::connect(url.as_str()).await?;

    // Subscribe first (and flush: the server has the subscription once the PONG is back).
    let mut sub = client.subscribe("greet.*").await?;
    client.flush().await?;

    client.publish("greet.joe", "hello joe").await?;
    client.publish("greet.sue", "hello sue").await?;
    let mut headers = HeaderMap::new();
    headers.insert("Trace-Id", "42");
    client
        .publish_with_headers("greet.bob", &headers, "hello bob")
        .await?;

    for _ in 0..3 {
        let msg = sub.next().await.ok_or("subscription closed")?;
        let trace = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Trace-Id"))
            .map(|t| format!(" (Trace-Id {t})"))
            .unwrap_or_default();
        println!(
            "received on {}: {}{trace}",
            msg.subject,
            String::from_utf8_lossy(&msg.payload)
        );
    }
    client.close().await;
    Ok(())
}
