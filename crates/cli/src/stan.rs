//! `rnats stan pub|sub`: NATS Streaming from the command line, over the global connection
//! options (`--server`, credentials, TLS), with the flags of the classic `stan-pub`/`stan-sub`
//! tools (`--cluster`, `--client-id`, `--all`, `--last`, `--seq`, `--since`, `--durable`,
//! `--queue`, `--unsubscribe`).

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use rnats_client::Client;
use rnats_streaming_client::{Options, StanClient, SubscriptionOptions};

use crate::util::{TemplateContext, parse_duration};
use crate::{Bodies, Result};

#[derive(Args, Debug)]
pub struct StanArgs {
    /// Streaming cluster ID
    #[arg(long, env = "STAN_CLUSTER", default_value = "test-cluster")]
    cluster: String,
    /// Client ID (letters, digits, `-`, `_`); default `rnats-<random>`, or with
    /// `sub --durable NAME` the stable `rnats-durable-<NAME>`, so the durable resumes on the
    /// next run (one reader per durable at a time)
    #[arg(long = "client-id", env = "STAN_CLIENT_ID")]
    client_id: Option<String>,
    #[command(subcommand)]
    cmd: StanCommand,
}

#[derive(Subcommand, Debug)]
enum StanCommand {
    /// Publish to a channel; each message is sent once the server acknowledged the previous
    Pub(StanPubArgs),
    /// Subscribe to a channel and print its messages (each acknowledged once printed)
    Sub(StanSubArgs),
}

#[derive(Args, Debug)]
struct StanPubArgs {
    /// Channel to publish to
    channel: String,
    /// Message body (else from stdin); templates like {{Count}} are expanded
    body: Option<String>,
    /// Publish this many messages
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Print nothing but errors
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct StanSubArgs {
    /// Channel to subscribe to
    channel: String,
    /// Start with the first message the channel holds
    #[arg(long, conflicts_with_all = ["last", "seq", "since"])]
    all: bool,
    /// Start with the last message the channel holds
    #[arg(long, conflicts_with_all = ["seq", "since"])]
    last: bool,
    /// Start at this sequence
    #[arg(long, conflicts_with = "since")]
    seq: Option<u64>,
    /// Start with the messages of this last period (e.g. 30s, 5m)
    #[arg(long, value_parser = parse_duration)]
    since: Option<Duration>,
    /// Durable name: the position is kept across runs (the server keys it by client ID and
    /// name: without --client-id, the client ID `rnats-durable-<NAME>` is used every run)
    #[arg(long)]
    durable: Option<String>,
    /// Join this queue group
    #[arg(long)]
    queue: Option<String>,
    /// Exit after this many messages
    #[arg(long)]
    count: Option<u64>,
    /// At exit, remove the (durable) subscription instead of keeping its position
    #[arg(long)]
    unsubscribe: bool,
    /// Print only the message bodies, one per line
    #[arg(short, long)]
    raw: bool,
}

/// The stable client ID of a durable subscriber: the server keeps a durable's position for a
/// client ID and durable name, so the same ID must come back every run. Characters a client
/// ID may not hold become `_`.
fn durable_client_id(durable: &str) -> String {
    let name: String = durable
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("rnats-durable-{name}")
}

pub async fn run(nc: &Client, timeout: Duration, a: StanArgs) -> Result<()> {
    let client_id = match (&a.client_id, &a.cmd) {
        (Some(id), _) => id.clone(),
        (
            None,
            StanCommand::Sub(StanSubArgs {
                durable: Some(d), ..
            }),
        ) => durable_client_id(d),
        (None, _) => format!("rnats-{}", nuid::next()),
    };
    let sc = StanClient::connect(
        &a.cluster,
        &client_id,
        Options::new()
            .nats_client(nc.clone())
            .connect_timeout(timeout)
            .pub_ack_wait(timeout),
    )
    .await
    .map_err(|e| {
        format!(
            "cannot connect to streaming cluster {:?}: {e}: is a streaming server with this cluster ID (--cluster) running on that NATS server?",
            a.cluster
        )
    })?;
    let result = match a.cmd {
        StanCommand::Pub(p) => publish(&sc, p).await,
        StanCommand::Sub(s) => subscribe(&sc, s).await,
    };
    let closed = sc.close().await;
    result?;
    closed.map_err(|e| format!("closing the streaming connection failed: {e}").into())
}

async fn publish(sc: &StanClient, a: StanPubArgs) -> Result<()> {
    let bodies = Bodies::new(a.body.clone())?;
    for i in 1..=a.count {
        let body = bodies.render(&TemplateContext {
            count: i,
            request: None,
        })?;
        let len = body.len();
        sc.publish(&a.channel, body)
            .await
            .map_err(|e| format!("publish to {:?} failed: {e}", a.channel))?;
        if !a.quiet && a.count == 1 {
            eprintln!("Published {len} bytes to {:?}", a.channel);
        }
    }
    if !a.quiet && a.count > 1 {
        eprintln!("Published {} messages to {:?}", a.count, a.channel);
    }
    Ok(())
}

async fn subscribe(sc: &StanClient, a: StanSubArgs) -> Result<()> {
    let mut o = SubscriptionOptions::new().manual_acks();
    o = match (a.all, a.last, a.seq, a.since) {
        (true, ..) => o.deliver_all_available(),
        (_, true, ..) => o.start_with_last_received(),
        (_, _, Some(seq), _) => o.start_at_sequence(seq),
        (_, _, _, Some(ago)) => o.start_at_time_delta(ago),
        _ => o,
    };
    if let Some(d) = &a.durable {
        o = o.durable_name(d.clone());
    }
    let sub = match &a.queue {
        Some(q) => sc.queue_subscribe(&a.channel, q, o).await,
        None => sc.subscribe(&a.channel, o).await,
    };
    let mut sub = sub.map_err(|e| format!("cannot subscribe to {:?}: {e}", a.channel))?;
    eprintln!("Subscribing on channel {}", a.channel);
    let mut n = 0u64;
    let outcome: Result<()> = loop {
        if a.count.is_some_and(|c| n >= c) {
            break Ok(());
        }
        let msg = tokio::select! {
            m = sub.next() => match m {
                Some(m) => m,
                None => break Err("the subscription ended: is the server still running?".into()),
            },
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        n += 1;
        let mut out = std::io::stdout().lock();
        let printed = if a.raw {
            out.write_all(&msg.data).and_then(|()| out.write_all(b"\n"))
        } else {
            writeln!(
                out,
                "[#{n}] Received on {:?} (sequence {}{})",
                msg.subject,
                msg.sequence,
                if msg.redelivered { ", redelivered" } else { "" }
            )
            .and_then(|()| out.write_all(&msg.data))
            .and_then(|()| out.write_all(b"\n\n"))
        };
        if let Err(e) = printed.and_then(|()| out.flush()) {
            break Err(format!("cannot write to stdout: {e}").into());
        }
        drop(out);
        if let Err(e) = msg.ack().await {
            break Err(format!("cannot acknowledge sequence {}: {e}", msg.sequence).into());
        }
    };
    let ended = if a.unsubscribe {
        sub.unsubscribe().await
    } else {
        sub.close().await
    };
    outcome?;
    ended.map_err(|e| format!("closing the subscription failed: {e}").into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durable_ids_are_stable_and_valid() {
        assert_eq!(super::durable_client_id("orders"), "rnats-durable-orders");
        assert_eq!(super::durable_client_id("a.b c"), "rnats-durable-a_b_c");
    }
}
