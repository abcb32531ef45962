//! Replay of a whole channel through a streaming subscription (StartPosition First), every
//! message acked, until the expected last sequence arrived.

use std::time::{Duration, Instant};

use rnats_streaming::proto::StartPosition;

use crate::nats::{self, Next};
use bytes::BytesMut;
use rnats_streaming::proto::peek_msg_proto;

use crate::stan::{Stan, SubOpts};

/// What a replay run saw.
#[derive(Debug, Default)]
pub struct ReplayOutcome {
    pub received: u64,
    pub bytes: u64,
    pub last_seq: u64,
    /// Sequences skipped (a message missing between two received ones).
    pub gaps: u64,
    /// Messages at or below a sequence already received.
    pub duplicates: u64,
    /// Status messages of pull requests (JetStream), for the record.
    pub status_msgs: u64,
    pub undecodable: u64,
    /// Subscription request to the last message.
    pub elapsed: Duration,
    pub aborted: Option<String>,
}

impl ReplayOutcome {
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.received as f64 / s
        } else {
            0.0
        }
    }
}

/// Subscribes to `channel` from the first sequence with `max_in_flight`, acks every message,
/// and stops when sequence `expect` arrived.
pub async fn stan_replay(
    stan: &Stan,
    channel: &str,
    expect: u64,
    max_in_flight: i32,
    progress_timeout: Duration,
) -> anyhow::Result<ReplayOutcome> {
    let mut o = SubOpts::new(StartPosition::First);
    o.max_in_flight = max_in_flight;
    o.ack_wait_secs = 60;
    o.wait = Duration::from_secs(10);
    let start = Instant::now();
    let mut s = stan.subscribe(channel, &o).await?;
    let mut out = ReplayOutcome::default();
    let mut last_progress = Instant::now();
    // Reused: a batch can hold a whole window of messages.
    let mut batch: Vec<rnats_client::Message> = Vec::new();
    while out.last_seq < expect {
        let wait = progress_timeout.saturating_sub(last_progress.elapsed());
        let m = match nats::next(&mut s.sub, wait).await {
            Next::Msg(m) => m,
            Next::Closed => {
                out.aborted = Some("connection closed".into());
                break;
            }
            Next::TimedOut => {
                out.aborted = Some(format!(
                    "no message for {progress_timeout:?} after sequence {}",
                    out.last_seq
                ));
                break;
            }
        };
        batch.push(m);
        while let Some(Some(m)) = nats::try_next(&mut s.sub) {
            batch.push(m);
        }
        // The acks of what arrived together: encoded into one buffer, sent with one call.
        let mut acks = BytesMut::new();
        let mut ends = Vec::with_capacity(batch.len());
        for m in batch.drain(..) {
            // The sequence and data size, checked as well-formed protobuf, without decoding.
            let Some((seq, data_len)) = peek_msg_proto(&m.payload) else {
                out.undecodable += 1;
                continue;
            };
            if seq == out.last_seq + 1 {
                out.last_seq = seq;
            } else if seq <= out.last_seq {
                out.duplicates += 1;
            } else {
                out.gaps += seq - out.last_seq - 1;
                out.last_seq = seq;
            }
            out.received += 1;
            out.bytes += data_len as u64;
            stan.encode_ack(&s, seq, &mut acks);
            ends.push(acks.len());
        }
        let acks = acks.freeze();
        let mut start_at = 0;
        let msgs: Vec<(&str, bytes::Bytes)> = ends
            .iter()
            .map(|&end| {
                let m = (s.ack_inbox.as_str(), acks.slice(start_at..end));
                start_at = end;
                m
            })
            .collect();
        stan.nc.publish_batch(&msgs).await?;
        out.elapsed = start.elapsed();
        last_progress = Instant::now();
    }
    let _ = stan.close_sub(&s, Duration::from_secs(2)).await;
    Ok(out)
}
