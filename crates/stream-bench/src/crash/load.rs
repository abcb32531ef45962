//! The load: publishers that record which messages were acknowledged, and the payloads that
//! name their publisher and counter so a check can tell an intact message from a damaged one.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::watch;

use crate::nats;
use crate::publish::{self, Limit, Plan};
use crate::stan::{Stan, StanWire};

pub(super) struct PubResult {
    pub(super) sent: u64,
    pub(super) acked: BTreeSet<u64>,
    pub(super) errors: u64,
    pub(super) error_samples: Vec<String>,
    pub(super) setup_error: Option<String>,
}

/// The payload of message `counter`: `<id>:<counter>:` then a filler that depends on the
/// counter, `size(counter)` bytes in all.
pub(super) fn payload(id: &str, counter: u64, max_size: usize) -> Bytes {
    let head = format!("{id}:{counter}:");
    let size = head.len() + (mix(counter) % max_size as u64) as usize;
    let mut b = BytesMut::with_capacity(size);
    b.put_slice(head.as_bytes());
    for j in head.len()..size {
        b.put_u8(filler(counter, j));
    }
    b.freeze()
}

pub(super) fn filler(counter: u64, j: usize) -> u8 {
    b'a' + ((counter + j as u64) % 26) as u8
}

pub(super) fn mix(x: u64) -> u64 {
    // splitmix64
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Parses and checks a payload: (publisher id, counter) when intact.
pub(super) fn parse_payload(data: &[u8]) -> Option<(&str, u64)> {
    let s1 = data.iter().position(|&b| b == b':')?;
    let s2 = s1 + 1 + data[s1 + 1..].iter().position(|&b| b == b':')?;
    let id = std::str::from_utf8(&data[..s1]).ok()?;
    let counter: u64 = std::str::from_utf8(&data[s1 + 1..s2]).ok()?.parse().ok()?;
    let head = s2 + 1;
    for (j, &b) in data.iter().enumerate().skip(head) {
        if b != filler(counter, j) {
            return None;
        }
    }
    Some((id, counter))
}

pub(super) fn payload_len_ok(id: &str, counter: u64, len: usize, max_size: usize) -> bool {
    let head = format!("{id}:{counter}:").len();
    len == head + (mix(counter) % max_size as u64) as usize
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn publisher(
    addr: String,
    cluster: String,
    id: String,
    channel: usize,
    window: usize,
    max_size: usize,
    stop: watch::Receiver<bool>,
    wait: Duration,
) -> PubResult {
    let mut res = PubResult {
        sent: 0,
        acked: BTreeSet::new(),
        errors: 0,
        error_samples: Vec::new(),
        setup_error: None,
    };
    let setup = async {
        let nc = nats::connect(&addr, &id, false).await?;
        Stan::connect(nc, &cluster, &id, wait).await
    };
    let stan = tokio::select! {
        s = setup => match s {
            Ok(s) => s,
            Err(e) => {
                res.setup_error = Some(format!("{e:#}"));
                return res;
            }
        },
        () = wait_stop(stop.clone()) => {
            res.setup_error = Some("stopped before connected".into());
            return res;
        }
    };
    let pid = id.clone();
    let w = StanWire::new(
        &stan,
        &format!("crash{channel}"),
        Box::new(move |i| payload(&pid, i, max_size)),
    )
    .await;
    let (mut w, mut acks) = match w {
        Ok(x) => x,
        Err(e) => {
            res.setup_error = Some(format!("{e:#}"));
            return res;
        }
    };
    let plan = Plan {
        window,
        limit: Limit::Msgs(u64::MAX),
        progress_timeout: wait,
    };
    let acked = &mut res.acked;
    let o = publish::run(
        &mut w,
        &mut acks,
        plan,
        Some(stop),
        Duration::from_secs(1),
        |i, ok| {
            if ok {
                acked.insert(i);
            }
        },
    )
    .await;
    res.sent = o.sent;
    res.errors = o.errors;
    res.error_samples = o.error_samples;
    res
}

pub(super) async fn wait_stop(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
