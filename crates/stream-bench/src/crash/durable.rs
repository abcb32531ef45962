//! The durable subscription: its own client, resumed after every restart; it must continue
//! from where it had acked without a gap.

use std::collections::BTreeSet;

use std::time::{Duration, Instant};

use rnats_streaming::proto::StartPosition;
use tokio::sync::watch;

use crate::CrashArgs;
use crate::nats::{self, Next};
use crate::stan::{Stan, StanSub, SubOpts, decode_msg};

use super::Findings;
use super::load::wait_stop;

const DURABLE_CLIENT: &str = "crash-durable";
const DURABLE_NAME: &str = "dur";

/// The durable consumer's view.
#[derive(Default, Clone)]
pub(super) struct DurState {
    /// Every sequence up to this one was received and acked.
    pub(super) contiguous: u64,
    /// Received above `contiguous`.
    pub(super) above: BTreeSet<u64>,
    pub(super) received: u64,
    pub(super) duplicates: u64,
}

impl DurState {
    pub(super) fn saw(&mut self, seq: u64) -> bool {
        self.received += 1;
        if seq <= self.contiguous || !self.above.insert(seq) {
            self.duplicates += 1;
            return false;
        }
        while self.above.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        true
    }
}

pub(super) struct Durable {
    pub(super) stan: Stan,
    pub(super) sub: StanSub,
}

/// Connects as the durable's client and resumes it (round 1: creates it from the first
/// sequence), then reads until every sequence after the last acked one up to `last` arrived.
#[allow(clippy::too_many_arguments)]
pub(super) async fn resume_durable(
    a: &CrashArgs,
    addr: &str,
    round: usize,
    d: &mut DurState,
    last: u64,
    f: &mut Findings,
    wait: Duration,
) -> anyhow::Result<Durable> {
    let nc = nats::connect(addr, DURABLE_CLIENT, false).await?;
    // The previous incarnation of this client died with the server: the server checks it
    // (heartbeat) and replaces it, which may take a moment; retry until then.
    let deadline = Instant::now() + wait;
    let stan = loop {
        match Stan::connect(nc.clone(), &a.cluster, DURABLE_CLIENT, wait).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline && e.to_string().contains("already registered") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let first = round == 1;
    let mut o = SubOpts::new(if first {
        StartPosition::First
    } else {
        StartPosition::NewOnly
    });
    o.durable = Some(DURABLE_NAME.to_string());
    o.max_in_flight = 256;
    o.ack_wait_secs = 10;
    let mut sub = stan.subscribe("crash0", &o).await?;
    if !first {
        f.durable_resumes += 1;
    }
    let n = d.contiguous;
    let mut redelivered_acked = 0u64;
    let mut first_seen = None;
    let mut idle_since = Instant::now();
    while d.contiguous < last {
        match nats::next(&mut sub.sub, wait.saturating_sub(idle_since.elapsed())).await {
            Next::Msg(m) => {
                idle_since = Instant::now();
                let msg = decode_msg(&m)?;
                first_seen.get_or_insert(msg.sequence);
                if msg.sequence <= n {
                    redelivered_acked += 1;
                }
                d.saw(msg.sequence);
                stan.ack(&sub, msg.sequence).await?;
            }
            _ => {
                let missing: Vec<u64> = (d.contiguous + 1..=last)
                    .filter(|s| !d.above.contains(s))
                    .take(10)
                    .collect();
                f.durable_gaps += 1;
                f.fail(format!(
                    "round {round}: durable {DURABLE_NAME} had acked up to {n} before the kill; after resuming it got up to {} of {last} (first delivered: {first_seen:?}), missing e.g. {missing:?}",
                    d.contiguous
                ));
                break;
            }
        }
    }
    if last < n {
        f.durable_gaps += 1;
        f.fail(format!(
            "round {round}: durable {DURABLE_NAME} had acked up to {n}, but the channel now ends at {last}"
        ));
    }
    f.durable_redelivered_acked += redelivered_acked;
    f.durable_max_redelivered_acked = f.durable_max_redelivered_acked.max(redelivered_acked);
    if !first {
        eprintln!(
            "crash: round {round}: durable resumed: acked up to {n} before the kill, first delivery after restart {first_seen:?}, caught up to {} (channel last {last}), {redelivered_acked} already-acked sent again",
            d.contiguous
        );
    }
    Ok(Durable { stan, sub })
}

/// Keeps consuming and acking until stopped; returns the state at the kill.
pub(super) async fn consume_durable(
    mut dur: Durable,
    mut d: DurState,
    stop: watch::Receiver<bool>,
) -> DurState {
    loop {
        tokio::select! {
            n = nats::next(&mut dur.sub.sub, Duration::from_secs(3600)) => match n {
                Next::Msg(m) => {
                    if let Ok(msg) = decode_msg(&m) {
                        // Only what was acked counts: record after the ack was handed over.
                        if dur.stan.ack(&dur.sub, msg.sequence).await.is_ok() {
                            d.saw(msg.sequence);
                        }
                    }
                }
                _ => break,
            },
            () = wait_stop(stop.clone()) => break,
        }
    }
    d
}
