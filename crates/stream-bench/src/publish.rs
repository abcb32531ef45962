//! The acked publisher shared by both protocols: at most `window` messages outstanding
//! (1 = synchronous), each ack matched to its message by id, every wait bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rnats_client::{Message, Subscriber};
use tokio::sync::watch;

use crate::nats::{self, Next};

/// An ack, as the protocol side decoded it.
pub enum AckResult {
    /// Message `id` is stored.
    Ok(u64),
    /// An error ack (for message `id` when known).
    Err(Option<u64>, String),
}

/// How one protocol publishes message `i` and reads an ack.
pub trait Wire {
    /// Sends message `i` with its ack inbox; returns the payload size.
    async fn send(&mut self, i: u64) -> anyhow::Result<usize>;
    fn parse_ack(&self, m: &Message) -> AckResult;
}

/// When to stop sending.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Msgs(u64),
    For(Duration),
}

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub window: usize,
    pub limit: Limit,
    /// Give up when no ack arrived for this long.
    pub progress_timeout: Duration,
}

/// What a publisher run did.
#[derive(Debug)]
pub struct Outcome {
    pub sent: u64,
    pub acked: u64,
    pub acked_bytes: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Acks for ids not outstanding (duplicates or strangers).
    pub unexpected_acks: u64,
    /// Sent but never acknowledged (timed out, stopped, connection lost).
    pub unacked: u64,
    /// First send to last ack.
    pub elapsed: Duration,
    /// Ack latency in µs.
    pub latency: Histogram<u64>,
    /// Why the run ended early, if it did.
    pub aborted: Option<String>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.acked as f64 / s } else { 0.0 }
    }
}

/// Runs the publisher. `on_ack(id, ok)` sees every ack of an outstanding message. When `stop`
/// becomes true, sending stops and the acks already on their way are collected for at most
/// `grace`.
pub async fn run<W: Wire>(
    w: &mut W,
    acks: &mut Subscriber,
    plan: Plan,
    mut stop: Option<watch::Receiver<bool>>,
    grace: Duration,
    mut on_ack: impl FnMut(u64, bool),
) -> Outcome {
    let window = plan.window.max(1);
    let mut out = Outcome {
        sent: 0,
        acked: 0,
        acked_bytes: 0,
        errors: 0,
        error_samples: Vec::new(),
        unexpected_acks: 0,
        unacked: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
        aborted: None,
    };
    let mut outstanding: HashMap<u64, (Instant, usize)> = HashMap::with_capacity(window * 2);
    let start = Instant::now();
    let deadline = match plan.limit {
        Limit::For(d) => Some(start + d),
        Limit::Msgs(_) => None,
    };
    let max_msgs = match plan.limit {
        Limit::Msgs(n) => n,
        Limit::For(_) => u64::MAX,
    };
    let mut last_ack = start;
    let mut last_progress = start;
    let mut sending = true;
    let mut stopping = stop.as_ref().is_some_and(|s| *s.borrow());
    let mut stop_at = if stopping { Some(Instant::now()) } else { None };

    loop {
        if stopping {
            sending = false;
        }
        while sending && outstanding.len() < window {
            if out.sent >= max_msgs || deadline.is_some_and(|d| Instant::now() >= d) {
                sending = false;
                break;
            }
            let i = out.sent;
            match w.send(i).await {
                Ok(size) => {
                    outstanding.insert(i, (Instant::now(), size));
                    out.sent += 1;
                }
                Err(e) => {
                    out.aborted = Some(format!("publish failed: {e}"));
                    sending = false;
                }
            }
        }
        if !sending && outstanding.is_empty() {
            break;
        }
        if out.aborted.is_some() && !stopping {
            // Publishing failed: collect what is already there, briefly.
            stopping = true;
            stop_at = Some(Instant::now());
        }
        let limit = match stop_at {
            Some(t) => grace.saturating_sub(t.elapsed()),
            None => plan
                .progress_timeout
                .saturating_sub(last_progress.elapsed()),
        };
        let got = if stopping {
            nats::next(acks, limit).await
        } else {
            let stop_rx = stop.as_mut();
            tokio::select! {
                n = nats::next(acks, limit) => n,
                () = async {
                    match stop_rx {
                        Some(s) => { let _ = s.changed().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    stopping = true;
                    stop_at = Some(Instant::now());
                    continue;
                }
            }
        };
        match got {
            Next::Msg(m) => {
                handle_ack(&*w, &m, &mut out, &mut outstanding, &mut on_ack);
                while let Some(Some(m)) = nats::try_next(acks) {
                    handle_ack(&*w, &m, &mut out, &mut outstanding, &mut on_ack);
                }
                last_progress = Instant::now();
                last_ack = last_progress;
            }
            Next::Closed => {
                out.aborted
                    .get_or_insert_with(|| "connection closed".into());
                break;
            }
            Next::TimedOut => {
                if !stopping {
                    out.aborted.get_or_insert_with(|| {
                        format!(
                            "no ack for {:?} with {} outstanding",
                            plan.progress_timeout,
                            outstanding.len()
                        )
                    });
                }
                break;
            }
        }
    }
    out.unacked = outstanding.len() as u64;
    out.elapsed = last_ack.saturating_duration_since(start);
    out
}

fn handle_ack<W: Wire>(
    w: &W,
    m: &Message,
    out: &mut Outcome,
    outstanding: &mut HashMap<u64, (Instant, usize)>,
    on_ack: &mut impl FnMut(u64, bool),
) {
    let (id, ok, err) = match w.parse_ack(m) {
        AckResult::Ok(i) => (Some(i), true, None),
        AckResult::Err(i, e) => (i, false, Some(e)),
    };
    match id.and_then(|i| outstanding.remove(&i).map(|e| (i, e))) {
        Some((i, (sent_at, size))) => {
            if ok {
                out.acked += 1;
                out.acked_bytes += size as u64;
                let us = sent_at.elapsed().as_micros() as u64;
                let _ = out.latency.record(us.max(1));
            } else {
                out.errors += 1;
            }
            on_ack(i, ok);
        }
        // An error ack we cannot match still says something went wrong.
        None if !ok => out.errors += 1,
        None => out.unexpected_acks += 1,
    }
    if let Some(e) = err
        && out.error_samples.len() < 5
    {
        out.error_samples.push(e);
    }
}
