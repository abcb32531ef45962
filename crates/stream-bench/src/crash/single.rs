//! The single-server mode: one streaming server on a FILE or SQL store, killed with `kill -9`
//! in every round (sometimes during its recovery too; SQL: sometimes its database as well,
//! during the load), checked after each restart; at the end a clean stop (SIGTERM) and one
//! more check of the reopened store.

use std::time::Duration;

use anyhow::Result;
use rand::Rng;
use rand::rngs::StdRng;

use super::check::check_channels;
use super::durable::resume_durable;
use super::round;
use super::server::{await_ready, kill9, start_server, tail, term};
use super::{Outcome, Setup};
use crate::CrashArgs;

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
    let (store, work, rounds, run_ms, wait) = (
        &setup.store_args,
        &setup.work,
        setup.rounds,
        setup.run_ms,
        setup.wait,
    );
    let mut nstart = 0usize;
    let mut last_ready = Duration::from_millis(100);

    for round in 1..=rounds {
        if rng.random_range(0..100) < a.recovery_kill_pct {
            nstart += 1;
            let mut s = start_server(a, store, work, nstart, wait).await?;
            // From the core server's "Listening" line to about when the previous start was
            // ready: the store is opened and recovered in that window.
            let upto = (last_ready.as_millis() as u64 * 3 / 2).max(100);
            let d = Duration::from_millis(rng.random_range(0..upto));
            tokio::time::sleep(d).await;
            kill9(&mut s)?;
            f.kills += 1;
            f.recovery_kills += 1;
            eprintln!("crash: round {round}: killed during start-up after {d:?}");
        }
        nstart += 1;
        let srv = match start_server(a, store, work, nstart, wait).await {
            Ok(s) => s,
            Err(e) => {
                f.fail(format!(
                    "round {round}: server did not start on the store: {e:#}"
                ));
                break;
            }
        };
        let mut srv = srv;
        if let Err(e) = await_ready(&srv.addr, &a.cluster, wait).await {
            f.fail(format!(
                "round {round}: the streaming server did not become ready: {e:#}; log {}:\n{}",
                srv.log.display(),
                tail(&srv.log)
            ));
            let _ = kill9(&mut srv);
            break;
        }
        f.starts += 1;
        last_ready = srv.started.elapsed();
        f.max_start = f.max_start.max(last_ready);
        let lasts = check_channels(a, &srv.addr, round, ledger, f, wait).await;
        let lasts = match lasts {
            Ok(l) => l,
            Err(e) => {
                f.fail(format!("round {round}: check failed to run: {e:#}"));
                let _ = kill9(&mut srv);
                break;
            }
        };
        // The durable: resume (or create, in round 1) and catch up to the channel's end.
        let durable = match resume_durable(a, &srv.addr, round, dur, lasts[0], f, wait).await {
            Ok(d) => d,
            Err(e) => {
                f.fail(format!("round {round}: durable resume: {e:#}"));
                let _ = kill9(&mut srv);
                break;
            }
        };

        // Load, then kill -9 at a random moment.
        let load = round::start(a, &srv.addr, round, rng, durable, dur, wait);
        let run_for = Duration::from_millis(rng.random_range(run_ms.0..run_ms.1));
        match &setup.sql {
            Some(db) if rng.random_range(0..100) < a.db_kill_pct => {
                // A database outage in the middle of the load: the server must acknowledge
                // again once the database is back, without a restart.
                tokio::time::sleep(run_for / 3).await;
                let down = Duration::from_millis(rng.random_range(100..1500));
                match super::sql::outage(db, &srv.addr, &a.cluster, round, down, wait).await {
                    Ok(took) => {
                        f.db_kills += 1;
                        f.max_db_recovery = f.max_db_recovery.max(took);
                        eprintln!(
                            "crash: round {round}: database killed, down {down:?}, acknowledging again {took:?} after its restart"
                        );
                    }
                    Err(e) => f.fail(format!("round {round}: database outage: {e:#}")),
                }
                tokio::time::sleep(run_for * 2 / 3).await;
            }
            _ => tokio::time::sleep(run_for).await,
        }
        if let Ok(Some(st)) = srv.child.try_wait() {
            f.fail(format!(
                "round {round}: the server exited by itself ({st}) under load; log {}",
                srv.log.display()
            ));
        }
        kill9(&mut srv)?;
        f.kills += 1;
        let (round_acked, round_sent) = load.finish(a, ledger, f, dur, wait).await;
        eprintln!(
            "crash: round {round}: killed after {run_for:?} of load: {round_acked} acked of {round_sent} sent; durable acked up to {}",
            dur.contiguous
        );
    }

    // Final: start, check, durable; then a clean stop (SIGTERM) and one more check.
    if f.failures.is_empty() {
        nstart += 1;
        let mut srv = start_server(a, store, work, nstart, wait).await?;
        f.starts += 1;
        let lasts = check_channels(a, &srv.addr, rounds + 1, ledger, f, wait).await?;
        let d = resume_durable(a, &srv.addr, rounds + 1, dur, lasts[0], f, wait).await?;
        let _ = d.stan.close_sub(&d.sub, wait).await;
        let _ = d.stan.close(wait).await;
        let graceful = term(&mut srv, wait).await?;
        if !graceful {
            f.fail("the server did not exit within the timeout after SIGTERM".into());
        }
        nstart += 1;
        let mut srv = start_server(a, store, work, nstart, wait).await?;
        f.starts += 1;
        check_channels(a, &srv.addr, rounds + 2, ledger, f, wait).await?;
        let _ = term(&mut srv, wait).await;
    }
    Ok(())
}
