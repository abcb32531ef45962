//! The streaming soak's clients and what they account for, kept across server restarts in a
//! [`Ledger`]:
//!
//! * [`publisher`]: its own client, publishing `<pub>:<n>:` + filler to its channel at a
//!   steady rate with at most `window` acks outstanding; a message counts as acknowledged
//!   only when its PubAck came back without error (the numbering goes on across restarts;
//!   what was in flight at a restart is neither counted nor resent);
//! * [`durable`]: one client with a durable subscription per channel (created from the first
//!   message, resumed after every restart), acking everything; it records which `(pub, n)`
//!   it received, so that at the end every acknowledged message must be among them;
//! * [`churn`]: short-lived clients with fresh IDs that publish, subscribe and leave, half
//!   with a CloseRequest, half by dropping their connection (the server's heartbeats must
//!   remove those).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;
use rnats_streaming::proto::{Ack, PubAck, StartPosition};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::nats::{self, Next};
use crate::stan::{Stan, StanSub, SubOpts, decode_msg};

/// A growable set of message numbers (1-based).
#[derive(Default, Clone)]
pub struct Bits(Vec<u64>);

impl Bits {
    /// Sets `n`; false when it was already set.
    pub fn set(&mut self, n: u64) -> bool {
        let (w, b) = ((n / 64) as usize, n % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        let was = self.0[w] & (1 << b) != 0;
        self.0[w] |= 1 << b;
        !was
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Set in `self`, not in `other`: how many, and the first few.
    pub fn missing_from(&self, other: &Bits) -> (u64, Vec<u64>) {
        let mut n = 0;
        let mut first = Vec::new();
        for (w, word) in self.0.iter().enumerate() {
            let theirs = other.0.get(w).copied().unwrap_or(0);
            let mut only = word & !theirs;
            n += u64::from(only.count_ones());
            while only != 0 && first.len() < 10 {
                first.push(w as u64 * 64 + u64::from(only.trailing_zeros()));
                only &= only - 1;
            }
        }
        (n, first)
    }
}

/// What the whole run has seen, across restarts.
pub struct Ledger {
    /// Per publisher: acknowledged message numbers, and the next number to send.
    pub acked: Vec<Mutex<Bits>>,
    pub next: Vec<AtomicU64>,
    pub ack_errors: AtomicU64,
    /// Publishes answered by NATS's "no responders" (during a graceful stop).
    pub no_responders: AtomicU64,
    /// The ack errors' texts, with how often each came.
    pub ack_error_texts: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Per publisher: what the durable received.
    pub durable: Vec<Mutex<Bits>>,
    pub durable_received: AtomicU64,
    pub durable_repeats: AtomicU64,
    pub durable_resumes: AtomicU64,
    pub churn_ok: AtomicU64,
    pub churn_failed: AtomicU64,
    /// The short-lived clients' failures, with how often each came.
    pub churn_error_texts: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Ledger {
    fn churn_failure(&self, why: String) {
        self.churn_failed.fetch_add(1, Ordering::Relaxed);
        *self.churn_error_texts.lock().entry(why).or_default() += 1;
    }

    pub fn new(publishers: usize) -> Ledger {
        Ledger {
            acked: (0..publishers).map(|_| Mutex::default()).collect(),
            next: (0..publishers).map(|_| AtomicU64::new(1)).collect(),
            ack_errors: AtomicU64::new(0),
            no_responders: AtomicU64::new(0),
            ack_error_texts: Mutex::default(),
            durable: (0..publishers).map(|_| Mutex::default()).collect(),
            durable_received: AtomicU64::new(0),
            durable_repeats: AtomicU64::new(0),
            durable_resumes: AtomicU64::new(0),
            churn_ok: AtomicU64::new(0),
            churn_failed: AtomicU64::new(0),
            churn_error_texts: Mutex::default(),
        }
    }

    pub fn acked_total(&self) -> u64 {
        self.acked.iter().map(|a| a.lock().count()).sum()
    }

    pub fn durable_total(&self) -> u64 {
        self.durable.iter().map(|a| a.lock().count()).sum()
    }
}

/// How a publisher publishes.
#[derive(Clone)]
pub struct PubPlan {
    pub cluster: String,
    pub channel: String,
    pub rate: f64,
    pub window: usize,
    pub size: usize,
}

fn payload(p: usize, n: u64, size: usize) -> Bytes {
    let mut v = format!("{p}:{n}:").into_bytes();
    v.resize(v.len().max(size), b'x');
    Bytes::from(v)
}

/// `<pub>:<n>:` of a payload.
fn parse_payload(data: &[u8]) -> Option<(usize, u64)> {
    let mut it = data.splitn(3, |b| *b == b':');
    let p = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
    let n = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
    it.next()?;
    Some((p, n))
}

/// Publisher `p` until stopped (or its connection breaks: a restart).
pub async fn publisher(
    addr: String,
    p: usize,
    plan: PubPlan,
    ledger: Arc<Ledger>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let nc = nats::connect(&addr, &format!("soak-pub-{p}"), false).await?;
    let stan = Stan::connect(
        nc.clone(),
        &plan.cluster,
        &format!("soak-pub-{p}"),
        Duration::from_secs(5),
    )
    .await?;
    let ack_inbox = format!("_SOAK.acks.{}", nuid::next());
    let mut acks = nc.subscribe(ack_inbox.clone()).await?;
    let subject = stan.pub_subject(&plan.channel);
    let guid_prefix = format!("{}-", nuid::next());
    let start = Instant::now();
    let first = ledger.next[p].load(Ordering::Relaxed);
    let mut outstanding = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    while !*stop.borrow() {
        tokio::select! {
            _ = tick.tick() => {
                let due = first + (start.elapsed().as_secs_f64() * plan.rate) as u64;
                while ledger.next[p].load(Ordering::Relaxed) <= due && outstanding < plan.window {
                    let n = ledger.next[p].fetch_add(1, Ordering::Relaxed);
                    let bytes = stan.pub_msg(&plan.channel, format!("{guid_prefix}{n}"), payload(p, n, plan.size));
                    nc.publish_with_reply(&subject, &ack_inbox, bytes).await?;
                    outstanding += 1;
                }
            }
            m = nats::next(&mut acks, Duration::from_secs(3600)) => match m {
                Next::Msg(m) if m.payload.is_empty() => {
                    // No PubAck has an empty payload: this is NATS's "no responders" status
                    // (the streaming server was going down and had stopped listening).
                    outstanding = outstanding.saturating_sub(1);
                    ledger.no_responders.fetch_add(1, Ordering::Relaxed);
                }
                Next::Msg(m) => {
                    outstanding = outstanding.saturating_sub(1);
                    let ack = PubAck::decode(m.payload).context("undecodable PubAck")?;
                    let n = ack.guid.strip_prefix(&guid_prefix).and_then(|s| s.parse::<u64>().ok());
                    match (n, ack.error.is_empty()) {
                        (Some(n), true) => {
                            ledger.acked[p].lock().set(n);
                        }
                        _ => {
                            ledger.ack_errors.fetch_add(1, Ordering::Relaxed);
                            *ledger.ack_error_texts.lock().entry(ack.error).or_default() += 1;
                        }
                    }
                }
                _ => anyhow::bail!("publisher {p}: ack subscription ended"),
            },
            _ = stop.changed() => {}
        }
    }
    // Give what is in flight a moment to be acknowledged.
    let deadline = Instant::now() + Duration::from_secs(5);
    while outstanding > 0 {
        match nats::next(
            &mut acks,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        {
            Next::Msg(m) => {
                outstanding -= 1;
                if let Ok(ack) = PubAck::decode(m.payload)
                    && ack.error.is_empty()
                    && let Some(n) = ack
                        .guid
                        .strip_prefix(&guid_prefix)
                        .and_then(|s| s.parse().ok())
                {
                    ledger.acked[p].lock().set(n);
                }
            }
            _ => break,
        }
    }
    let _ = stan.close(Duration::from_secs(5)).await;
    Ok(())
}

const DURABLE_CLIENT: &str = "soak-durable";

/// The durable consumer: one client, a durable subscription `dur` on each channel, until
/// stopped or its connection breaks.
pub async fn durable(
    addr: String,
    cluster: String,
    channels: Vec<String>,
    ledger: Arc<Ledger>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let nc = nats::connect(&addr, DURABLE_CLIENT, false).await?;
    // After a restart the server still knows the old session: it checks it (a heartbeat)
    // and replaces it, which may take a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stan = loop {
        match Stan::connect(nc.clone(), &cluster, DURABLE_CLIENT, Duration::from_secs(5)).await {
            Ok(s) => break Arc::new(s),
            Err(e) if Instant::now() < deadline && e.to_string().contains("already registered") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    };
    ledger.durable_resumes.fetch_add(1, Ordering::Relaxed);
    let mut tasks = Vec::new();
    for ch in channels {
        let mut o = SubOpts::new(StartPosition::First);
        o.durable = Some("dur".into());
        o.max_in_flight = 1024;
        o.ack_wait_secs = 30;
        let sub = stan.subscribe(&ch, &o).await?;
        let (nc, ledger, stop) = (stan.nc.clone(), ledger.clone(), stop.clone());
        tasks.push(tokio::spawn(consume(nc, sub, ledger, stop)));
    }
    stopped(&mut stop).await;
    for t in tasks {
        t.await??;
    }
    if let Ok(stan) = Arc::try_unwrap(stan) {
        let _ = stan.close(Duration::from_secs(5)).await;
    }
    Ok(())
}

/// Receives and acks one durable subscription's messages until stopped or the connection
/// breaks (a restart: the caller connects again).
async fn consume(
    nc: rnats_client::Client,
    mut sub: StanSub,
    ledger: Arc<Ledger>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            m = nats::next(&mut sub.sub, Duration::from_secs(3600)) => match m {
                Next::Msg(m) => {
                    let msg = decode_msg(&m)?;
                    let ack = Ack { subject: sub.channel.clone(), sequence: msg.sequence };
                    nc.publish(&sub.ack_inbox, ack.encode_to_vec()).await?;
                    ledger.durable_received.fetch_add(1, Ordering::Relaxed);
                    if let Some((p, n)) = parse_payload(&msg.data)
                        && let Some(bits) = ledger.durable.get(p)
                        && !bits.lock().set(n)
                    {
                        ledger.durable_repeats.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => return Ok(()),
            },
            () = stopped(&mut stop) => return Ok(()),
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `rate` short-lived clients per second until stopped.
pub async fn churn(
    addr: String,
    cluster: String,
    rate: f64,
    ledger: Arc<Ledger>,
    mut stop: watch::Receiver<bool>,
) {
    if rate <= 0.0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0u64;
    // The clients still running: on stop they are awaited, so that a restart that follows
    // never cuts one off halfway (its failure would not be the server's).
    let mut running = tokio::task::JoinSet::new();
    while !*stop.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => continue,
            Some(_) = running.join_next(), if !running.is_empty() => continue,
        }
        n += 1;
        let (addr, cluster, ledger) = (addr.clone(), cluster.clone(), ledger.clone());
        running.spawn(async move {
            let r =
                tokio::time::timeout(Duration::from_secs(20), churn_one(&addr, &cluster, n)).await;
            match r {
                Ok(Ok(())) => {
                    ledger.churn_ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => ledger.churn_failure(format!("{e:#}")),
                Err(_) => ledger.churn_failure("no answer within 20 s".into()),
            }
        });
    }
    while running.join_next().await.is_some() {}
}

async fn churn_one(addr: &str, cluster: &str, n: u64) -> anyhow::Result<()> {
    let nc = nats::connect(addr, "soak-churn", false).await?;
    let id = format!("soak-churn-{}", nuid::next());
    let stan = Stan::connect(nc.clone(), cluster, &id, Duration::from_secs(5)).await?;
    let channel = format!("churn.{}", n % 4);
    let sub = stan
        .subscribe(&channel, &SubOpts::new(StartPosition::NewOnly))
        .await?;
    let reply = nc
        .send_request(
            &stan.pub_subject(&channel),
            rnats_client::Request::new()
                .payload(stan.pub_msg(
                    &channel,
                    nuid::next().to_string(),
                    Bytes::from_static(b"churn"),
                ))
                .timeout(Duration::from_secs(5)),
        )
        .await
        .map_err(|e| anyhow::anyhow!("churn publish: {e}"))?;
    let ack = PubAck::decode(reply.payload)?;
    anyhow::ensure!(ack.error.is_empty(), "churn publish refused: {}", ack.error);
    drop(sub);
    if n.is_multiple_of(2) {
        stan.close(Duration::from_secs(5)).await
    } else {
        // Gone without a word: the server's heartbeats must find out.
        nc.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_payloads() {
        let mut a = Bits::default();
        assert!(a.set(1) && a.set(64) && a.set(200) && !a.set(64));
        assert_eq!(a.count(), 3);
        let mut b = Bits::default();
        b.set(64);
        assert_eq!(a.missing_from(&b), (2, vec![1, 200]));
        assert_eq!(parse_payload(&payload(3, 42, 20)), Some((3, 42)));
        assert_eq!(payload(3, 42, 20).len(), 20);
        assert_eq!(parse_payload(b"nonsense"), None);
    }
}
