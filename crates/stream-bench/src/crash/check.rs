//! The checks: every channel read back from its first sequence and compared with the ledger
//! (gaps, repeats, order, payloads, acknowledged messages lost, what was served before).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rnats_streaming::proto::StartPosition;

use crate::CrashArgs;
use crate::nats::{self, Next};
use crate::stan::{Stan, StanSub, SubOpts, decode_msg};

use super::load::{parse_payload, payload_len_ok};
use super::server::await_ready;
use super::{Findings, Ledger, PubRecord};

/// Reads every channel from the first sequence and checks it against the ledger. Returns the
/// last sequence of each channel.
pub(super) async fn check_channels(
    a: &CrashArgs,
    addr: &str,
    round: usize,
    l: &mut Ledger,
    f: &mut Findings,
    wait: Duration,
) -> anyhow::Result<Vec<u64>> {
    await_ready(addr, &a.cluster, wait).await?;
    let nc = nats::connect(addr, "crash-check", false).await?;
    let stan = Stan::connect(nc, &a.cluster, &format!("crash-check-{round}"), wait).await?;
    let mut lasts = Vec::new();
    let mut unacked_total = 0u64;
    for c in 0..a.channels {
        let channel = format!("crash{c}");
        let acked_here: u64 = l
            .pubs
            .iter()
            .filter(|p| p.channel == c)
            .map(|p| p.acked.len() as u64)
            .sum();
        let prev_served = l.served[c].len() as u64;
        // The last sequence: a LastReceived subscription gets the last message at once; an
        // empty channel sends nothing (only acceptable when nothing was acknowledged or
        // served there).
        let must_have = acked_here > 0 || prev_served > 0;
        let last = {
            let mut o = SubOpts::new(StartPosition::LastReceived);
            o.max_in_flight = 1;
            let mut s = stan.subscribe(&channel, &o).await?;
            let w = if must_have {
                wait
            } else {
                Duration::from_millis(500)
            };
            let last = match nats::next(&mut s.sub, w).await {
                Next::Msg(m) => decode_msg(&m)?.sequence,
                _ => 0,
            };
            let _ = stan.close_sub(&s, wait).await;
            last
        };
        if last == 0 && must_have {
            f.fail(format!(
                "round {round}: channel {channel} is empty or gone after restart, but {acked_here} messages were acknowledged and {prev_served} served before"
            ));
        }
        if last < prev_served {
            f.history += prev_served - last;
            f.fail(format!(
                "round {round}: channel {channel} ends at {last}, but sequence {prev_served} was served before the restart"
            ));
        }
        let mut served = Vec::with_capacity(last as usize);
        if last > 0 {
            let mut o = SubOpts::new(StartPosition::First);
            o.max_in_flight = 8192;
            o.ack_wait_secs = 60;
            let mut s = stan.subscribe(&channel, &o).await?;
            read_channel(
                &stan,
                &mut s,
                &channel,
                last,
                round,
                l,
                f,
                &mut served,
                wait,
                a.max_size.max(32),
            )
            .await?;
            let _ = stan.close_sub(&s, wait).await;
        }
        // What was served before must still be there.
        let prev = &l.served[c];
        let mut changed = 0u64;
        for (i, (old, new)) in prev.iter().zip(served.iter()).enumerate() {
            if old != new {
                changed += 1;
                if changed <= 3 {
                    f.fail(format!(
                        "round {round}: {channel} seq {}: was {} before the restart, now {}",
                        i + 1,
                        describe(l, *old),
                        describe(l, *new)
                    ));
                }
            }
        }
        f.history += changed;
        // Every acknowledged message present exactly once, publishers' order kept.
        let mut at: HashMap<(u32, u64), u64> = HashMap::with_capacity(served.len());
        for (i, &(p, k)) in served.iter().enumerate() {
            if p == u32::MAX {
                continue;
            }
            if let Some(first) = at.insert((p, k), i as u64 + 1) {
                f.duplicates += 1;
                f.fail(format!(
                    "round {round}: {channel}: {} stored twice, at seq {first} and {}",
                    describe(l, (p, k)),
                    i + 1
                ));
            }
        }
        let mut stored_unacked = 0u64;
        for (pi, p) in l.pubs.iter().enumerate().filter(|(_, p)| p.channel == c) {
            let mut last_seq = 0u64;
            for &k in &p.acked {
                match at.get(&(pi as u32, k)) {
                    None => {
                        f.lost += 1;
                        if f.lost <= 20 {
                            let before = p
                                .acked
                                .range(..k)
                                .next_back()
                                .and_then(|b| at.get(&(pi as u32, *b)));
                            f.fail(format!(
                                "round {round}: LOST acknowledged message {}:{k} (acked in round {}) on {channel}: not in sequences 1..={last}; its publisher's previous acked message is at {before:?}",
                                p.id, p.round
                            ));
                        }
                    }
                    Some(&seq) => {
                        if seq < last_seq {
                            f.order += 1;
                            f.fail(format!(
                                "round {round}: {channel}: {}:{k} at seq {seq}, before an earlier message of the same publisher at {last_seq}",
                                p.id
                            ));
                        }
                        last_seq = seq;
                    }
                }
            }
            stored_unacked += at
                .keys()
                .filter(|(q, k)| *q == pi as u32 && !p.acked.contains(k))
                .count() as u64;
        }
        unacked_total += stored_unacked;
        l.served[c] = served;
        lasts.push(last);
    }
    // Re-counted at every check: the latest total is the figure.
    f.stored_unacked = unacked_total;
    let _ = stan.close(wait).await;
    Ok(lasts)
}

pub(super) fn describe(l: &Ledger, (p, k): (u32, u64)) -> String {
    if p == u32::MAX {
        "an unparsable message".to_string()
    } else {
        format!(
            "{}:{k}",
            l.pubs.get(p as usize).map_or("?", |r| r.id.as_str())
        )
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn read_channel(
    stan: &Stan,
    s: &mut StanSub,
    channel: &str,
    last: u64,
    round: usize,
    l: &mut Ledger,
    f: &mut Findings,
    served: &mut Vec<(u32, u64)>,
    wait: Duration,
    max_size: usize,
) -> anyhow::Result<()> {
    let mut expect = 1u64;
    let mut last_ts = i64::MIN;
    let mut idle_since = Instant::now();
    while expect <= last {
        let m = match nats::next(&mut s.sub, wait.saturating_sub(idle_since.elapsed())).await {
            Next::Msg(m) => m,
            _ => {
                f.gaps += last + 1 - expect;
                f.fail(format!(
                    "round {round}: {channel}: reading from the first sequence stopped at {} of {last} (nothing more within {wait:?})",
                    expect - 1
                ));
                return Ok(());
            }
        };
        idle_since = Instant::now();
        let msg = decode_msg(&m)?;
        stan.ack(s, msg.sequence).await?;
        if msg.redelivered {
            // A redelivery (ack wait expired) of something already read: ignore it.
            if msg.sequence < expect {
                continue;
            }
        }
        if msg.sequence != expect {
            f.gaps += 1;
            f.fail(format!(
                "round {round}: {channel}: expected sequence {expect}, got {}",
                msg.sequence
            ));
            if msg.sequence < expect {
                continue;
            }
            // Mark the skipped ones as unreadable and go on from there.
            while expect < msg.sequence {
                served.push((u32::MAX, 0));
                expect += 1;
            }
        }
        if msg.timestamp < last_ts {
            f.fail(format!(
                "round {round}: {channel} seq {}: timestamp {} goes back from {last_ts}",
                msg.sequence, msg.timestamp
            ));
        }
        last_ts = msg.timestamp;
        let entry = match parse_payload(&msg.data) {
            Some((id, k)) if payload_len_ok(id, k, msg.data.len(), max_size) => {
                match l.pub_index.get(id) {
                    Some(&p) => (p as u32, k),
                    None => {
                        // A publisher whose result was not recorded (e.g. it never got its
                        // first ack); register it so its messages are tracked.
                        let p = l.pubs.len();
                        l.pub_index.insert(id.to_string(), p);
                        l.pubs.push(PubRecord {
                            id: id.to_string(),
                            channel: channel.trim_start_matches("crash").parse().unwrap_or(0),
                            round,
                            acked: BTreeSet::new(),
                        });
                        (p as u32, k)
                    }
                }
            }
            _ => {
                f.corrupt += 1;
                f.fail(format!(
                    "round {round}: {channel} seq {}: corrupt payload ({} bytes): {:?}",
                    msg.sequence,
                    msg.data.len(),
                    String::from_utf8_lossy(&msg.data[..msg.data.len().min(60)])
                ));
                (u32::MAX, 0)
            }
        };
        served.push(entry);
        expect += 1;
    }
    Ok(())
}
