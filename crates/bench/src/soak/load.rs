//! The soak's clients, each a task over its own raw connection ([`Conn`]):
//!
//! * [`publisher`]: PUBs at a steady rate (`<seq>:` then filler), answering PINGs; at the
//!   end a PING/PONG proves the server processed every PUB, so its count is exact;
//! * [`subscriber`]: counts what arrives (per publisher subject, with gaps and repeats), until
//!   told to stop; also the queue group members;
//! * [`responder`] and [`requester`]: request/reply with a per-request timeout (a missing
//!   reply is a loss);
//! * [`churn`]: short-lived clients that subscribe, publish and go, half of them abruptly;
//! * [`slow_consumers`]: clients that subscribe to the busiest subjects and never read (a
//!   small receive buffer, so the server's side fills): the server must cut them off.
//!
//! Every task stops when the `stop` watch turns true; every wait is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::proto::{Conn, parse, put_pub};

/// How long any single connect or flush may take.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Counters every task updates, read by the sampler and the report.
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub replies: AtomicU64,
    pub lost_replies: AtomicU64,
    /// Slowest request/reply round trip, µs.
    pub worst_rtt_us: AtomicU64,
    pub churn_connects: AtomicU64,
    pub churn_failures: AtomicU64,
    pub slow_opened: AtomicU64,
    /// Slow consumers the server closed (EOF or reset when finally read).
    pub slow_cut_off: AtomicU64,
    /// Slow consumers still open after their whole life without reading.
    pub slow_survived: AtomicU64,
}

/// A subscriber's tally.
#[derive(Default)]
pub struct Tally {
    pub received: AtomicU64,
    /// A message whose sequence was not the next one of its publisher (a gap or a repeat).
    pub out_of_order: AtomicU64,
}

/// The payload of message `seq`: `<seq>:` padded with `x` to `size` bytes.
fn payload(out: &mut Vec<u8>, seq: u64, size: usize) {
    out.clear();
    out.extend_from_slice(seq.to_string().as_bytes());
    out.push(b':');
    out.resize(out.len().max(size), b'x');
}

/// Publishes to `subject` at `rate` msgs/s until stopped; returns how many the server
/// processed (the final PING/PONG comes after all of them). `published` follows along.
pub async fn publisher(
    mut conn: Conn,
    subject: String,
    rate: f64,
    size: usize,
    published: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Result<u64> {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut body = Vec::with_capacity(size + 24);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut pongs = 0u32;
    while !*stop.borrow() {
        tokio::select! {
            _ = tick.tick() => {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                // After a stall, catch up by at most one second's worth at a time.
                let n = due.saturating_sub(sent).min(rate.max(1.0) as u64);
                for i in 1..=n {
                    payload(&mut body, sent + i, size);
                    put_pub(&mut out, subject.as_bytes(), None, &body);
                }
                for _ in 0..std::mem::take(&mut pongs) {
                    out.put_slice(b"PONG\r\n");
                }
                if !out.is_empty() {
                    tokio::time::timeout(LIMIT, conn.send(&out))
                        .await
                        .map_err(|_| anyhow!("{subject}: write blocked for {LIMIT:?}"))??;
                    out.clear();
                }
                sent += n;
                published.store(sent, Ordering::Relaxed);
            }
            r = conn.stream.read_buf(&mut conn.buf) => {
                if r.with_context(|| format!("{subject}: read"))? == 0 {
                    bail!("{subject}: connection closed by the server after {sent} messages");
                }
                let ev = parse(&mut conn.buf, |_, _, _| {})?;
                if let Some(e) = ev.err {
                    bail!("{subject}: server error {e}");
                }
                pongs += ev.pings;
            }
            _ = stop.changed() => {}
        }
    }
    conn.flush_with(b"", LIMIT)
        .await
        .with_context(|| format!("{subject}: final PING"))?;
    published.store(sent, Ordering::Relaxed);
    Ok(sent)
}

/// Subscribes with `subs` (`SUB` lines, already sent and flushed by the caller) and counts
/// what arrives until stopped. Sequences are checked per subject (one publisher each).
pub async fn subscriber(
    mut conn: Conn,
    name: String,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    // Last sequence per subject: few subjects, a small vector beats a map.
    let mut last: Vec<(Vec<u8>, u64)> = Vec::new();
    loop {
        let (mut got, mut disorder) = (0u64, 0u64);
        let ev = parse(&mut conn.buf, |subject, _, body| {
            got += 1;
            let Some(seq) = body
                .split(|b| *b == b':')
                .next()
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u64>().ok())
            else {
                disorder += 1;
                return;
            };
            match last.iter_mut().find(|(s, _)| s == subject) {
                Some((_, prev)) => {
                    if seq != *prev + 1 {
                        disorder += 1;
                    }
                    *prev = seq;
                }
                None => last.push((subject.to_vec(), seq)),
            }
        })
        .with_context(|| format!("{name}: parse"))?;
        tally.received.fetch_add(got, Ordering::Relaxed);
        tally.out_of_order.fetch_add(disorder, Ordering::Relaxed);
        if ev.pings > 0 {
            conn.send(&b"PONG\r\n".repeat(ev.pings as usize)).await?;
        }
        if let Some(e) = ev.err {
            bail!("{name}: server error {e}");
        }
        if conn.buf.capacity() - conn.buf.len() < 16 * 1024 {
            conn.buf.reserve(64 * 1024);
        }
        tokio::select! {
            r = conn.stream.read_buf(&mut conn.buf) => {
                if r.with_context(|| format!("{name}: read"))? == 0 {
                    bail!("{name}: connection closed by the server");
                }
            }
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// Connects and subscribes with `subs`, waiting until the server has them.
pub async fn subscribed(addr: &str, subs: &[String]) -> Result<Conn> {
    let mut conn = Conn::connect(addr, LIMIT, None).await?;
    let cmds: String = subs.iter().map(|s| format!("SUB {s}\r\n")).collect();
    conn.flush_with(cmds.as_bytes(), LIMIT).await?;
    Ok(conn)
}

/// Answers every request (`MSG` with a reply) with its own payload, until stopped.
pub async fn responder(mut conn: Conn, mut stop: watch::Receiver<bool>) -> Result<u64> {
    let mut out = BytesMut::with_capacity(4096);
    let mut answered = 0u64;
    loop {
        let ev = parse(&mut conn.buf, |_, reply, body| {
            if let Some(reply) = reply {
                put_pub(&mut out, reply, None, body);
                answered += 1;
            }
        })?;
        for _ in 0..ev.pings {
            out.put_slice(b"PONG\r\n");
        }
        if let Some(e) = ev.err {
            bail!("responder: server error {e}");
        }
        if !out.is_empty() {
            conn.send(&out).await?;
            out.clear();
        }
        tokio::select! {
            r = conn.stream.read_buf(&mut conn.buf) => {
                if r? == 0 {
                    bail!("responder: connection closed by the server");
                }
            }
            _ = stop.wait_for(|s| *s) => return Ok(answered),
        }
    }
}

/// Sequential requests on `subject` at about `rate` per second, each waiting at most 2 s for
/// its reply on `inbox` (already subscribed); a reply that does not come is lost.
pub async fn requester(
    mut conn: Conn,
    subject: String,
    inbox: String,
    rate: f64,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let pause = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut seq = 0u64;
    let mut out = BytesMut::new();
    while !*stop.borrow() {
        seq += 1;
        let want = seq.to_string();
        out.clear();
        put_pub(
            &mut out,
            subject.as_bytes(),
            Some(inbox.as_bytes()),
            want.as_bytes(),
        );
        let sent = Instant::now();
        conn.send(&out).await?;
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let deadline = sent + Duration::from_secs(2);
        let mut answered = false;
        while !answered {
            let mut pongs = 0;
            let ev = parse(&mut conn.buf, |_, _, body| {
                // A late reply to an earlier (timed-out) request does not count.
                answered |= body == want.as_bytes();
            })?;
            pongs += ev.pings;
            if pongs > 0 {
                conn.send(&b"PONG\r\n".repeat(pongs as usize)).await?;
            }
            if answered {
                break;
            }
            match tokio::time::timeout_at(deadline, conn.stream.read_buf(&mut conn.buf)).await {
                Ok(Ok(0)) => bail!("requester: connection closed by the server"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => break,
            }
        }
        if answered {
            counters.replies.fetch_add(1, Ordering::Relaxed);
            let us = sent.elapsed().as_micros() as u64;
            counters.worst_rtt_us.fetch_max(us, Ordering::Relaxed);
        } else {
            counters.lost_replies.fetch_add(1, Ordering::Relaxed);
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
    Ok(())
}

/// Opens `rate` short-lived clients per second until stopped (at most 64 alive at once).
/// Each subscribes to ten subjects of its own and to `extra_sub`, publishes a few messages,
/// lives up to 300 ms, then leaves: even ones unsubscribe and close, odd ones just drop the
/// socket with whatever the server sent still unread.
pub async fn churn(
    addr: String,
    rate: f64,
    extra_sub: String,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    if rate <= 0.0 {
        return;
    }
    let alive = Arc::new(Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0u64;
    while !*stop.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => continue,
        }
        let Ok(permit) = alive.clone().acquire_owned().await else {
            return;
        };
        n += 1;
        let (addr, extra, counters) = (addr.clone(), extra_sub.clone(), counters.clone());
        tokio::spawn(async move {
            let _permit = permit;
            counters.churn_connects.fetch_add(1, Ordering::Relaxed);
            if churn_one(&addr, n, &extra).await.is_err() {
                counters.churn_failures.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

async fn churn_one(addr: &str, n: u64, extra_sub: &str) -> Result<()> {
    let mut conn = Conn::connect(addr, LIMIT, None).await?;
    let mut cmds = String::new();
    for k in 0..10 {
        cmds += &format!("SUB soak.churn.{n}.{k} {k}\r\n");
    }
    cmds += &format!("SUB {extra_sub} 10\r\n");
    for k in 0..3 {
        cmds += &format!("PUB soak.churn.{n}.{k} 5\r\nhello\r\n");
    }
    cmds += "PING\r\n";
    conn.send(cmds.as_bytes()).await?;
    // Until the PONG, discarding what the subscriptions deliver meanwhile.
    tokio::time::timeout(LIMIT, async {
        loop {
            if parse(&mut conn.buf, |_, _, _| {})?.pongs > 0 {
                return anyhow::Ok(());
            }
            if conn.stream.read_buf(&mut conn.buf).await? == 0 {
                bail!("closed by the server");
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no PONG within {LIMIT:?}"))??;
    tokio::time::sleep(Duration::from_millis(n * 37 % 300)).await;
    if n.is_multiple_of(2) {
        let unsubs: String = (0..=10).map(|k| format!("UNSUB {k}\r\n")).collect();
        conn.send(unsubs.as_bytes()).await?;
        conn.stream.shutdown().await.ok();
    }
    Ok(())
}

/// Every `every`, a client that subscribes to `subject` and never reads (receive buffer
/// 8 KiB); after `life` it reads once: end of stream means the server cut it off.
pub async fn slow_consumers(
    addr: String,
    subject: String,
    every: Duration,
    life: Duration,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while !*stop.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => continue,
        }
        let (addr, subject, counters, stop) = (
            addr.clone(),
            subject.clone(),
            counters.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let Ok(mut stream) = slow_connect(&addr, &subject).await else {
                return;
            };
            counters.slow_opened.fetch_add(1, Ordering::Relaxed);
            let mut stop = stop;
            tokio::select! {
                () = tokio::time::sleep(life) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let mut sink = vec![0u8; 1 << 20];
            let drained = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            if drained.is_ok() {
                counters.slow_cut_off.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.slow_survived.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

async fn slow_connect(addr: &str, subject: &str) -> Result<tokio::net::TcpStream> {
    let sa = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| anyhow!("no address for {addr}"))?;
    let sock = if sa.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_recv_buffer_size(8 * 1024)?;
    let mut stream = tokio::time::timeout(LIMIT, sock.connect(sa)).await??;
    let cmds = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB {subject} 1\r\n"
    );
    stream.write_all(cmds.as_bytes()).await?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_the_sequence() {
        let mut b = Vec::new();
        payload(&mut b, 42, 16);
        assert_eq!(b, b"42:xxxxxxxxxxxxx");
        payload(&mut b, 123_456, 2);
        assert_eq!(b, b"123456:");
    }
}
