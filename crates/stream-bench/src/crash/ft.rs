//! The fault-tolerant mode: two servers in one `--ft_group` on one store, attached to a
//! core NATS server. Each round the active one is killed with `kill -9` under load; the
//! standby must take over (the time from the kill to the first PubAck is measured), keep the
//! clients' sessions, and hold every acknowledged message; the killed one comes back as the
//! new standby. At the end the active is stopped with SIGTERM (a graceful handover, measured
//! too) and everything is checked once more.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rand::Rng;
use rand::rngs::StdRng;

use super::check::check_channels;
use super::durable::resume_durable;
use super::ha::Prober;
use super::round;
use super::server::{Server, kill9, start_core, start_member, term};
use super::{Outcome, Setup};
use crate::CrashArgs;

/// The group, then the shared store (FILE directory or SQL database).
fn member_args(setup: &Setup) -> Vec<String> {
    let mut v = vec!["--ft_group".to_string(), "crash".to_string()];
    v.extend(setup.store_args.iter().cloned());
    v
}

async fn member(a: &CrashArgs, setup: &Setup, core: &str, n: usize, until: &str) -> Result<Server> {
    let log = setup.work.join(format!("ft.{n}.log"));
    start_member(a, core, &member_args(setup), log, until, setup.wait)
        .await
        .with_context(|| format!("FT member {n}"))
}

pub(super) async fn run(
    a: &CrashArgs,
    setup: &Setup,
    rng: &mut StdRng,
    out: &mut Outcome,
) -> Result<()> {
    let Outcome {
        ledger,
        findings: f,
        durable: dur,
    } = out;
    let wait = setup.wait;
    let mut core = start_core(a, &setup.work, wait).await?;
    let addr = core.addr.clone();
    let mut active = member(a, setup, &addr, 1, "Server is active").await?;
    let mut standby = member(a, setup, &addr, 2, "Starting in standby mode").await?;
    let mut n = 2;
    for round in 1..=setup.rounds {
        f.starts += 1;
        let lasts = match check_channels(a, &addr, round, ledger, f, wait).await {
            Ok(l) => l,
            Err(e) => {
                f.fail(format!("round {round}: check failed to run: {e:#}"));
                break;
            }
        };
        let durable = match resume_durable(a, &addr, round, dur, lasts[0], f, wait).await {
            Ok(d) => d,
            Err(e) => {
                f.fail(format!("round {round}: durable resume: {e:#}"));
                break;
            }
        };
        let mut prober = Prober::connect(a, &addr, wait).await?;
        let load = round::start(a, &addr, round, rng, durable, dur, wait);
        let run_for = Duration::from_millis(rng.random_range(setup.run_ms.0..setup.run_ms.1));
        tokio::time::sleep(run_for).await;
        if let Ok(Some(st)) = active.child.try_wait() {
            f.fail(format!(
                "round {round}: the active server exited by itself ({st}); log {}",
                active.log.display()
            ));
        }
        kill9(&mut active)?;
        f.kills += 1;
        let killed = Instant::now();
        match prober.first_ack_since(killed, wait).await {
            Some(d) => f.failovers.push(d),
            None => f.fail(format!(
                "round {round}: no PubAck from the standby within {wait:?} of the kill; log {}",
                standby.log.display()
            )),
        }
        // The load goes on against the new active, over the same sessions.
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
        let (acked, sent) = load.finish(a, ledger, f, dur, wait).await;
        n += 1;
        let restarted = member(a, setup, &addr, n, "Starting in standby mode").await?;
        active = std::mem::replace(&mut standby, restarted);
        eprintln!(
            "crash: round {round}: active killed after {run_for:?} of load, failover {:?}: {acked} acked of {sent} sent; durable acked up to {}",
            f.failovers.last().copied().unwrap_or_default(),
            dur.contiguous
        );
    }
    if f.failures.is_empty() {
        let round = setup.rounds + 1;
        let lasts = check_channels(a, &addr, round, ledger, f, wait).await?;
        let d = resume_durable(a, &addr, round, dur, lasts[0], f, wait).await?;
        let _ = d.stan.close_sub(&d.sub, wait).await;
        let _ = d.stan.close(wait).await;
        // A graceful stop hands over at once.
        let mut prober = Prober::connect(a, &addr, wait).await?;
        let stopped = Instant::now();
        if !term(&mut active, wait).await? {
            f.fail("the active server did not exit within the timeout after SIGTERM".into());
        }
        match prober.first_ack_since(stopped, wait).await {
            Some(d) => eprintln!("crash: graceful handover (SIGTERM to the first PubAck): {d:?}"),
            None => f.fail("no PubAck from the standby after a graceful stop".into()),
        }
        check_channels(a, &addr, round + 1, ledger, f, wait).await?;
        let _ = term(&mut standby, wait).await;
    } else {
        let _ = kill9(&mut active);
        let _ = kill9(&mut standby);
    }
    let _ = term(&mut core, wait).await;
    Ok(())
}
