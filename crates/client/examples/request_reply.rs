//! Request/reply: a service answering on `time.now`, and a requester with a timeout. A
//! request nobody listens to fails at once with `NoResponders`.
//!
//! ```text
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p rnats-client --example request_reply
//! ```

use std::time::Duration;

use futures::StreamExt;
use rnats_client::{Request, RequestErrorKind};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = rnats_client::connect(url.as_str()).await?;

    // The service: answers every request on its reply subject.
    let mut requests = client.subscribe("time.now").await?;
    client.flush().await?;
    let service = client.clone();
    let responder = tokio::spawn(async move {
        let mut answered = 0;
        while let Some(req) = requests.next().await {
            if let Some(reply) = req.reply {
                let body = format!("request {} answered", answered + 1);
                service.publish(reply, body).await.ok();
                answered += 1;
            }
        }
    });

    for _ in 0..2 {
        let reply = client.request("time.now", "what time is it?").await?;
        println!("reply: {}", String::from_utf8_lossy(&reply.payload));
    }

    // With a timeout of its own; and a subject nobody serves.
    let quick = Request::new()
        .payload("hi")
        .timeout(Duration::from_millis(500));
    match client.send_request("nobody.home", quick).await {
        Err(e) if e.kind() == RequestErrorKind::NoResponders => {
            println!("nobody.home: no responders")
        }
        other => println!("nobody.home: {other:?}"),
    }
    responder.abort();
    client.close().await;
    Ok(())
}
