//! The connection task: one per client, owning the socket. Connected, it runs the reader, the
//! writer and the pinger in one `select!`; when one ends, it reconnects through the pool with
//! backoff and restores the subscriptions.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tracing::{debug, warn};

use crate::connection::{RawConnection as Established, ServerInfo, Transport, handshake};
use crate::options::{Event, ServerAddr};
use crate::pool::{ServerPool, backoff};
use crate::proto::{self, ServerOp};

use super::State;
use super::shared::{Link, Shared};

pub(super) async fn run(shared: Arc<Shared>, mut est: Established, mut pool: ServerPool) {
    loop {
        let Established {
            stream,
            mut read_buf,
            addr,
            ..
        } = est;
        let (mut r, mut w) = tokio::io::split(stream);
        let ended: io::Result<()> = tokio::select! {
            e = reader(&shared, &mut r, &mut read_buf, &addr, &mut pool) => Err(e),
            r = writer(&shared, &mut w) => r,
            e = pinger(&shared) => Err(e),
        };
        let closing = {
            let mut out = shared.out.lock();
            // PINGs of this connection will never be answered.
            out.in_flight.clear();
            out.pings_out = 0;
            if matches!(out.link, Link::Closing | Link::Closed) {
                true
            } else {
                out.link = Link::Disconnected;
                false
            }
        };
        shared.drained.notify_waiters();
        if closing || ended.is_ok() {
            break;
        }
        if let Err(e) = &ended {
            debug!(%addr, error = %e, "disconnected");
        }
        shared.state.send_replace(State::Disconnected);
        shared.emit(Event::Disconnected);
        match reconnect(&shared, &mut pool).await {
            Some(next) => {
                shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                shared.emit(Event::Reconnected(next.addr.to_string()));
                est = next;
            }
            None => break,
        }
    }
    shared.finish_close();
}

async fn reconnect(shared: &Shared, pool: &mut ServerPool) -> Option<Established> {
    let opts = &shared.opts;
    let mut attempt = 0usize;
    loop {
        if shared.is_closing() {
            return None;
        }
        if opts.max_reconnects.is_some_and(|max| attempt >= max) {
            warn!(attempts = attempt, "giving up reconnecting");
            return None;
        }
        let delay = match (&opts.reconnect_delay_callback, attempt) {
            (_, 0) => Duration::ZERO,
            (Some(cb), n) => cb(n),
            (None, n) => backoff(
                n,
                opts.reconnect_delay,
                opts.max_reconnect_delay,
                opts.reconnect_jitter,
                &mut rand::rng(),
            ),
        };
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shared.close_wake.notified() => return None,
            }
        }
        let addr = pool.next()?;
        attempt += 1;
        let result = tokio::select! {
            r = handshake(&addr, opts) => r,
            _ = shared.close_wake.notified() => return None,
        };
        match result {
            Ok(est) => {
                if !opts.ignore_discovered_servers && !est.info.connect_urls.is_empty() {
                    for added in
                        pool.update_discovered(&est.info.connect_urls, &est.addr, &mut rand::rng())
                    {
                        shared.emit(Event::ServerDiscovered(added.host_port()));
                    }
                }
                return shared.restore(&est).then_some(est);
            }
            Err(e) => debug!(%addr, attempt, error = %e, "reconnect attempt failed"),
        }
    }
}

async fn reader(
    shared: &Shared,
    r: &mut ReadHalf<Transport>,
    buf: &mut BytesMut,
    current: &ServerAddr,
    pool: &mut ServerPool,
) -> io::Error {
    loop {
        loop {
            let op = match proto::parse_server_op(buf) {
                Ok(Some(op)) => op,
                Ok(None) => break,
                Err(e) => return io::Error::new(io::ErrorKind::InvalidData, e),
            };
            match op {
                ServerOp::Msg {
                    subject,
                    sid,
                    reply,
                    headers,
                    payload,
                } => shared.deliver(subject, sid, reply, headers, payload),
                ServerOp::Ping => {
                    shared.out.lock().buf.put_slice(proto::PONG);
                    shared.write_wake.notify_one();
                }
                ServerOp::Pong => {
                    let waiter = {
                        let mut out = shared.out.lock();
                        out.pings_out = 0;
                        out.in_flight.pop_front()
                    };
                    if let Some(Some(tx)) = waiter {
                        let _ = tx.send(());
                    }
                }
                ServerOp::Info(json) => match ServerInfo::parse(&json) {
                    Ok(info) => {
                        if !shared.opts.ignore_discovered_servers && !info.connect_urls.is_empty() {
                            for added in pool.update_discovered(
                                &info.connect_urls,
                                current,
                                &mut rand::rng(),
                            ) {
                                shared.emit(Event::ServerDiscovered(added.host_port()));
                            }
                        }
                        let ldm = info.ldm;
                        if info.max_payload > 0 {
                            shared
                                .max_payload
                                .store(info.max_payload, Ordering::Relaxed);
                        }
                        *shared.info.lock() = info;
                        if ldm {
                            shared.emit(Event::LameDuck);
                        }
                    }
                    Err(e) => warn!(error = %e, "ignoring an INFO that does not parse"),
                },
                ServerOp::Ok => {}
                ServerOp::Err(text) => {
                    warn!(%text, "server error");
                    shared.emit(Event::ServerError(text));
                }
            }
        }
        buf.reserve(64 * 1024);
        match r.read_buf(buf).await {
            Ok(0) => {
                return io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the server",
                );
            }
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

/// Sends whatever is buffered. Returns `Ok` once the client is closing and everything is
/// written, `Err` when the socket fails.
async fn writer(shared: &Shared, w: &mut WriteHalf<Transport>) -> io::Result<()> {
    let mut chunk = BytesMut::with_capacity(64 * 1024);
    loop {
        let closing = {
            let mut out = shared.out.lock();
            std::mem::swap(&mut chunk, &mut out.buf);
            let waiters = std::mem::take(&mut out.flush_waiters);
            for waiter in waiters {
                chunk.put_slice(proto::PING);
                out.in_flight.push_back(waiter);
            }
            out.link == Link::Closing
        };
        shared.drained.notify_waiters();
        if chunk.is_empty() {
            if closing {
                let _ = w.shutdown().await;
                return Ok(());
            }
            shared.write_wake.notified().await;
            continue;
        }
        w.write_all(&chunk).await?;
        w.flush().await?;
        if chunk.capacity() > 4 * 1024 * 1024 {
            chunk = BytesMut::with_capacity(64 * 1024);
        } else {
            chunk.clear();
        }
    }
}

/// Keepalive: a PING every `ping_interval`; too many unanswered ones mean the connection is
/// dead even if the socket has not noticed.
async fn pinger(shared: &Shared) -> io::Error {
    let every = shared.opts.ping_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        {
            let mut out = shared.out.lock();
            if out.pings_out >= shared.opts.max_pings_outstanding {
                return io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("stale connection: {} PINGs unanswered", out.pings_out),
                );
            }
            out.pings_out += 1;
            out.flush_waiters.push(None);
        }
        shared.write_wake.notify_one();
    }
}
