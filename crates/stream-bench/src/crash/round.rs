//! One round of load, the same in every mode: publishers (a random ack window each) and the
//! durable consumer run against the NATS address clients use until the mode injects its
//! fault; then they stop and what they saw acknowledged goes into the ledger.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::durable::{DurState, Durable, consume_durable};
use super::load::{PubResult, publisher};
use super::{Findings, Ledger, PubRecord};
use crate::CrashArgs;

/// Publishers pick one of these ack windows (messages in flight) per round.
const WINDOWS: [usize; 4] = [1, 4, 32, 256];

/// The load of one round, running.
pub(super) struct Load {
    round: usize,
    stop: watch::Sender<bool>,
    pubs: Vec<JoinHandle<PubResult>>,
    durable: JoinHandle<DurState>,
}

/// Starts the publishers and the durable consumer (already resumed) against `addr`.
pub(super) fn start(
    a: &CrashArgs,
    addr: &str,
    round: usize,
    rng: &mut StdRng,
    durable: Durable,
    state: &DurState,
    wait: Duration,
) -> Load {
    let (stop, stop_rx) = watch::channel(false);
    let mut pubs = Vec::new();
    for i in 0..a.publishers {
        let id = format!("crash-r{round}-p{i}");
        let channel = i % a.channels;
        let window = WINDOWS[rng.random_range(0..WINDOWS.len())];
        pubs.push(tokio::spawn(publisher(
            addr.to_string(),
            a.cluster.clone(),
            id,
            channel,
            window,
            a.max_size.max(32),
            stop_rx.clone(),
            wait,
        )));
    }
    let durable = tokio::spawn(consume_durable(durable, state.clone(), stop_rx));
    Load {
        round,
        stop,
        pubs,
        durable,
    }
}

impl Load {
    /// Stops the load (after the fault) and records what was acknowledged. Returns
    /// (acknowledged, sent) in this round.
    pub(super) async fn finish(
        self,
        a: &CrashArgs,
        ledger: &mut Ledger,
        f: &mut Findings,
        dur: &mut DurState,
        wait: Duration,
    ) -> (u64, u64) {
        let round = self.round;
        let _ = self.stop.send(true);
        let (mut acked, mut sent) = (0, 0);
        for (i, p) in self.pubs.into_iter().enumerate() {
            let id = format!("crash-r{round}-p{i}");
            match tokio::time::timeout(wait, p).await {
                Ok(Ok(r)) => {
                    acked += r.acked.len() as u64;
                    sent += r.sent;
                    ledger.sent += r.sent;
                    ledger.acked += r.acked.len() as u64;
                    ledger.error_acks += r.errors;
                    for e in r.error_samples {
                        if ledger.error_samples.len() < 10 {
                            ledger.error_samples.push(e);
                        }
                    }
                    if let Some(e) = r.setup_error {
                        eprintln!("crash: round {round}: publisher {id}: {e}");
                    }
                    ledger.pub_index.insert(id.clone(), ledger.pubs.len());
                    ledger.pubs.push(PubRecord {
                        id,
                        channel: i % a.channels,
                        round,
                        acked: r.acked,
                    });
                }
                Ok(Err(e)) => f.fail(format!("round {round}: publisher {id} panicked: {e}")),
                Err(_) => f.fail(format!(
                    "round {round}: publisher {id} did not stop in {wait:?}"
                )),
            }
        }
        match tokio::time::timeout(wait, self.durable).await {
            Ok(Ok(d)) => *dur = d,
            _ => f.fail(format!("round {round}: durable consumer did not stop")),
        }
        (acked, sent)
    }
}
