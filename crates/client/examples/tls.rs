//! TLS: a `tls://` URL, the CA that signed the server's certificate, and optionally a client
//! certificate for servers that verify clients (`--tlsverify`).
//!
//! ```text
//! NATS_URL=tls://127.0.0.1:4222 NATS_CA=ca.pem [NATS_CERT=client.pem NATS_KEY=client-key.pem] \
//!     cargo run -p rnats-client --example tls
//! ```

use futures::StreamExt;
use rnats_client::ConnectOptions;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "tls://127.0.0.1:4222".into());
    let mut opts = ConnectOptions::new().require_tls(true);
    if let Ok(ca) = std::env::var("NATS_CA") {
        opts = opts.add_root_certificates(ca);
    }
    if let (Ok(cert), Ok(key)) = (std::env::var("NATS_CERT"), std::env::var("NATS_KEY")) {
        opts = opts.add_client_certificate(cert, key);
    }
    let client = opts.connect(url.as_str()).await?;
    println!(
        "connected over TLS to {} (server {})",
        url,
        client.server_info().server_id
    );

    let mut sub = client.subscribe("secure.greeting").await?;
    client.flush().await?;
    client.publish("secure.greeting", "hello over TLS").await?;
    let msg = sub.next().await.ok_or("subscription closed")?;
    println!("received: {}", String::from_utf8_lossy(&msg.payload));
    client.close().await;
    Ok(())
}
