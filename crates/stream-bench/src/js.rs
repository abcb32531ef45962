//! The JetStream side (reference nats-server -js): stream create, publish with a reply inbox
//! and JSON PubAcks, replay through an ephemeral pull consumer.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use rnats_client::{Client, Message, Request};
use serde_json::{Value, json};

use crate::nats::{self, Next};
use crate::publish::{AckResult, Wire};
use crate::replay::ReplayOutcome;

/// JetStream API error code: stream name already in use (same config is not an error on
/// recent servers, a different one is).
const ERR_STREAM_NAME_IN_USE: u64 = 10058;

async fn api(nc: &Client, subject: &str, body: Value, wait: Duration) -> anyhow::Result<Value> {
    let reply = nc
        .send_request(
            subject,
            Request::new().payload(body.to_string()).timeout(wait),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{subject}: {e} (is JetStream enabled? -js)"))?;
    let v: Value = serde_json::from_slice(&reply.payload)
        .with_context(|| format!("{subject}: bad JSON reply"))?;
    Ok(v)
}

fn api_error(v: &Value) -> Option<(u64, String)> {
    let e = v.get("error")?;
    Some((
        e.get("err_code").and_then(Value::as_u64).unwrap_or(0),
        e.get("description")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
    ))
}

/// Creates a file-storage stream `name` capturing `subject` (limits retention, no limits)
/// with `replicas` copies. A clustered JetStream answers "temporarily unavailable" until its
/// meta group has a leader and enough peers: the request is repeated for at most `wait`.
pub async fn create_stream(
    nc: &Client,
    name: &str,
    subject: &str,
    replicas: u32,
    wait: Duration,
) -> anyhow::Result<()> {
    let body = json!({
        "name": name,
        "subjects": [subject],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": replicas,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
    });
    // Short attempts: a request sent before the cluster answers its API gets no reply.
    let deadline = std::time::Instant::now() + wait.max(Duration::from_secs(30));
    let attempt = wait.min(Duration::from_secs(2));
    loop {
        let v = api(
            nc,
            &format!("$JS.API.STREAM.CREATE.{name}"),
            body.clone(),
            attempt,
        )
        .await;
        let err = match v {
            Ok(v) => match api_error(&v) {
                None | Some((ERR_STREAM_NAME_IN_USE, _)) => return Ok(()),
                Some((code, d)) => anyhow::anyhow!("stream create: {d} ({code})"),
            },
            Err(e) => e,
        };
        if std::time::Instant::now() > deadline {
            return Err(err);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Moves the leader of stream `name` to the server named `leader` (a leader stepdown with
/// that server preferred, as `nats stream cluster step-down --preferred` does) and waits
/// until the stream reports it, for at most `wait`: side-by-side runs then place JetStream's
/// leader where the streaming cluster's is, instead of wherever the election put it.
pub async fn place_leader(
    nc: &Client,
    name: &str,
    leader: &str,
    wait: Duration,
) -> anyhow::Result<()> {
    let limit = wait.max(Duration::from_secs(15));
    let deadline = std::time::Instant::now() + limit;
    let attempt = Duration::from_secs(2);
    loop {
        let info = api(
            nc,
            &format!("$JS.API.STREAM.INFO.{name}"),
            json!({}),
            attempt,
        )
        .await;
        let current = info.as_ref().ok().and_then(|v| {
            v.pointer("/cluster/leader")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        if current.as_deref() == Some(leader) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("stream {name}: leader still {current:?}, not {leader}, after {limit:?}");
        }
        if current.is_some() {
            let _ = api(
                nc,
                &format!("$JS.API.STREAM.LEADER.STEPDOWN.{name}"),
                json!({ "placement": { "preferred": leader } }),
                attempt,
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishing for [`crate::publish::run`]: message `i` carries reply `<inbox>.<i>`, acks
/// come on `<inbox>.*`.
pub struct JsWire {
    pub nc: Client,
    pub subject: String,
    pub inbox: String,
    pub payload: Box<dyn Fn(u64) -> Bytes + Send + Sync>,
}

impl JsWire {
    pub async fn new(
        nc: &Client,
        subject: &str,
        payload: Box<dyn Fn(u64) -> Bytes + Send + Sync>,
    ) -> anyhow::Result<(JsWire, rnats_client::Subscriber)> {
        let inbox = nc.new_inbox();
        let sub = nc.subscribe(format!("{inbox}.*")).await?;
        Ok((
            JsWire {
                nc: nc.clone(),
                subject: subject.to_string(),
                inbox,
                payload,
            },
            sub,
        ))
    }
}

impl Wire for JsWire {
    async fn send(&mut self, i: u64) -> anyhow::Result<usize> {
        let data = (self.payload)(i);
        let n = data.len();
        self.nc
            .publish_with_reply(&self.subject, format!("{}.{i}", self.inbox), data)
            .await?;
        Ok(n)
    }

    fn parse_ack(&self, m: &Message) -> AckResult {
        let id = m
            .subject
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<u64>().ok());
        if m.status.is_some() && m.payload.is_empty() {
            return AckResult::Err(id, format!("status {:?} {:?}", m.status, m.description));
        }
        let v: Value = match serde_json::from_slice(&m.payload) {
            Ok(v) => v,
            Err(e) => return AckResult::Err(id, format!("bad PubAck JSON: {e}")),
        };
        if let Some((code, d)) = api_error(&v) {
            return AckResult::Err(id, format!("{d} ({code})"));
        }
        match (id, v.get("seq").and_then(Value::as_u64)) {
            (Some(i), Some(_)) => AckResult::Ok(i),
            _ => AckResult::Err(id, format!("unexpected PubAck: {v}")),
        }
    }
}

/// How the replay consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JsAck {
    /// `ack_policy: none` (what the ordered consumer of the nats.go `jetstream` API uses).
    None,
    /// `ack_policy: explicit`, every message acked (`+ACK`), as a streaming subscriber does.
    Explicit,
}

/// The stream sequence of a delivered message, from its `$JS.ACK...` reply subject
/// (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`, or the 12-token
/// form with domain and account hash).
fn stream_seq(reply: &str) -> Option<u64> {
    let t: Vec<&str> = reply.split('.').collect();
    let idx = match t.len() {
        9 => 5,
        n if n >= 11 => 7,
        _ => return None,
    };
    t.get(idx)?.parse().ok()
}

/// Replays the whole stream through an ephemeral pull consumer (deliver all), pulling in
/// batches of `window / 2` so that about `window` messages are requested at any time, until
/// `expect` messages arrived. The clock starts before the consumer is created.
pub async fn replay(
    nc: &Client,
    stream: &str,
    expect: u64,
    window: usize,
    ack: JsAck,
    progress_timeout: Duration,
) -> anyhow::Result<ReplayOutcome> {
    let window = window.max(2) as u64;
    let inbox = nc.new_inbox();
    let mut sub = nc.subscribe(inbox.clone()).await?;
    let start = Instant::now();
    let mut config = json!({
        "deliver_policy": "all",
        "ack_policy": match ack { JsAck::None => "none", JsAck::Explicit => "explicit" },
        "replay_policy": "instant",
        "inactive_threshold": 60_000_000_000u64,
        "num_replicas": 1,
        "mem_storage": true,
    });
    if ack == JsAck::Explicit {
        config["max_ack_pending"] = json!(window * 2);
        config["ack_wait"] = json!(60_000_000_000u64);
    }
    // A clustered stream just restarted may have no leader yet: try again for a while, and
    // then measure from the consumer's creation (not the wait for the cluster).
    let mut start = start;
    let deadline = Instant::now() + Duration::from_secs(60);
    let v = loop {
        let v = api(
            nc,
            &format!("$JS.API.CONSUMER.CREATE.{stream}"),
            json!({"stream_name": stream, "config": config}),
            Duration::from_secs(10),
        )
        .await;
        match v.as_ref().ok().map(api_error) {
            Some(None) => break v?,
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                start = Instant::now();
            }
            Some(Some((code, d))) => bail!("consumer create: {d} ({code})"),
            None => {
                return Err(v
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("consumer create")));
            }
        }
    };
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .context("consumer create: no name in reply")?
        .to_string();
    let next_subject = format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}");
    let batch = window / 2;
    let pull = |n: u64| {
        let body = json!({"batch": n, "expires": 30_000_000_000u64}).to_string();
        let nc = nc.clone();
        let next_subject = next_subject.clone();
        let inbox = inbox.clone();
        async move { nc.publish_with_reply(&next_subject, &inbox, body).await }
    };
    let mut requested = 0u64;
    let mut out = ReplayOutcome::default();
    let mut last_progress = Instant::now();
    let mut last_seq = 0u64;
    // Reused: a batch can hold a whole window of messages.
    let mut batch_msgs: Vec<rnats_client::Message> = Vec::new();
    while out.received < expect {
        while requested - out.received.min(requested) <= batch && requested < expect {
            let n = batch.min(expect - requested);
            pull(n).await?;
            requested += n;
        }
        let wait = progress_timeout.saturating_sub(last_progress.elapsed());
        let m = match nats::next(&mut sub, wait).await {
            Next::Msg(m) => m,
            Next::Closed => {
                out.aborted = Some("connection closed".into());
                break;
            }
            Next::TimedOut => {
                out.aborted = Some(format!("no message for {progress_timeout:?}"));
                break;
            }
        };
        batch_msgs.push(m);
        while let Some(Some(m)) = nats::try_next(&mut sub) {
            batch_msgs.push(m);
        }
        // The acks of what arrived together go out with one call into the client.
        let mut acks: Vec<(String, &[u8])> = Vec::new();
        for m in batch_msgs.drain(..) {
            if m.status.is_some() && m.payload.is_empty() {
                // 404/408/409 status of a pull request; a 408 (expired) returns its credit.
                if m.status == Some(408) {
                    out.status_msgs += 1;
                }
                continue;
            }
            let seq = m.reply.as_deref().and_then(stream_seq).unwrap_or(0);
            if seq == last_seq + 1 {
                last_seq = seq;
            } else if seq <= last_seq {
                out.duplicates += 1;
            } else {
                out.gaps += seq - last_seq - 1;
                last_seq = seq;
            }
            out.received += 1;
            out.bytes += m.payload.len() as u64;
            if ack == JsAck::Explicit
                && let Some(r) = m.reply
            {
                acks.push((r, b"+ACK"));
            }
        }
        if !acks.is_empty() {
            nc.publish_batch(&acks).await?;
        }
        out.elapsed = start.elapsed();
        last_progress = Instant::now();
    }
    out.last_seq = last_seq;
    let _ = nc
        .send_request(
            format!("$JS.API.CONSUMER.DELETE.{stream}.{name}"),
            Request::new().timeout(Duration::from_secs(2)),
        )
        .await;
    Ok(out)
}
