//! What the high-availability modes share: a prober that measures how long clients go
//! without a PubAck after a fault, and percentiles of those times.

use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use rnats_client::Request;

use crate::CrashArgs;
use crate::nats;
use crate::stan::Stan;

/// A streaming session that publishes one small message at a time to `crash-probe`.
pub(super) struct Prober {
    stan: Stan,
    n: u64,
}

impl Prober {
    pub(super) async fn connect(a: &CrashArgs, addr: &str, wait: Duration) -> Result<Prober> {
        let nc = nats::connect(addr, "crash-probe", true).await?;
        let id = format!("crash-probe-{}", nuid::next());
        let stan = Stan::connect(nc, &a.cluster, &id, wait).await?;
        Ok(Prober { stan, n: 0 })
    }

    /// Publishes until one is acknowledged (each attempt waits 50 ms at most): the time from
    /// `since` to that PubAck, or `None` within `wait`.
    pub(super) async fn first_ack_since(
        &mut self,
        since: Instant,
        wait: Duration,
    ) -> Option<Duration> {
        let subject = self.stan.pub_subject("crash-probe");
        while since.elapsed() < wait {
            self.n += 1;
            let msg = self.stan.pub_msg(
                "crash-probe",
                format!("probe-{}", self.n),
                Bytes::from_static(b"p"),
            );
            let r = self
                .stan
                .nc
                .send_request(
                    subject.as_str(),
                    Request::new()
                        .payload(msg)
                        .timeout(Duration::from_millis(50)),
                )
                .await;
            if let Ok(m) = r
                && let Ok(ack) =
                    <rnats_streaming::proto::PubAck as prost::Message>::decode(m.payload)
                && ack.error.is_empty()
            {
                return Some(since.elapsed());
            }
        }
        None
    }
}

/// The p-th percentile (0..=100) of `v` (nearest rank), or zero for none.
pub(super) fn percentile(v: &[Duration], p: usize) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = (p * s.len()).div_ceil(100).max(1);
    s[rank.min(s.len()) - 1]
}

/// One line of failover (or election) times.
pub(super) fn summary(what: &str, v: &[Duration]) -> String {
    format!(
        "{what}: {} measured, p50 {:.3}s, p99 {:.3}s, max {:.3}s",
        v.len(),
        percentile(v, 50).as_secs_f64(),
        percentile(v, 99).as_secs_f64(),
        v.iter().max().copied().unwrap_or_default().as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_secs).collect();
        assert_eq!(percentile(&v, 50), Duration::from_secs(5));
        assert_eq!(percentile(&v, 99), Duration::from_secs(10));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }
}
