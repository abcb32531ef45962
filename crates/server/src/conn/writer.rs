//! The writer task of a socket connection (client or route): waits for a wake-up, swaps the
//! outbound buffer for its own (empty, already grown) one and writes it within the write
//! deadline. For plain TCP it is only the fallback: publishers usually write a subscriber's
//! batch themselves ([`ClientShared::flush_or_wake`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::{ClientShared, CloseReason, KEEP_OUTBOUND};

pub(crate) async fn write_loop<W: AsyncWrite>(
    me: Arc<ClientShared>,
    writer: W,
    deadline: Duration,
) {
    tokio::pin!(writer);
    let mut chunk = BytesMut::new();
    loop {
        let cancelled = tokio::select! {
            () = me.wake.notified() => false,
            () = me.cancel.cancelled() => true,
        };
        loop {
            let (msgs, bytes) = {
                let mut out = me.out.lock();
                out.flush_scheduled = false;
                out.in_flight = 0;
                if out.data.is_empty() {
                    break;
                }
                // The publishers get this (empty, already grown) buffer back: no regrowth.
                std::mem::swap(&mut out.data, &mut chunk);
                out.in_flight = chunk.len();
                (
                    std::mem::take(&mut out.out_msgs),
                    std::mem::take(&mut out.out_bytes),
                )
            };
            if msgs > 0 {
                me.stats.out_msgs.fetch_add(msgs, Ordering::Relaxed);
                me.stats.out_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            let limit = if cancelled {
                deadline.min(Duration::from_secs(2))
            } else {
                deadline
            };
            match tokio::time::timeout(limit, write_chunk(&me, &mut writer, &chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    me.close(CloseReason::WriteError, false);
                    return;
                }
                Err(_) => {
                    if me.close(CloseReason::SlowConsumerWriteDeadline, false) {
                        debug!(
                            "{} - Slow Consumer Detected: WriteDeadline of {deadline:?} exceeded",
                            me.log_id()
                        );
                    }
                    return;
                }
            }
            chunk.clear();
            me.drained.notify_waiters();
            // Keep buffers for the next burst, but not huge ones.
            if chunk.capacity() > KEEP_OUTBOUND {
                chunk = BytesMut::new();
            }
        }
        {
            let mut out = me.out.lock();
            out.in_flight = 0;
            // Idle: give back a large publisher-side buffer too.
            if out.data.is_empty() && out.data.capacity() > KEEP_OUTBOUND {
                out.data = BytesMut::new();
            }
        }
        me.drained.notify_waiters();
        if cancelled {
            let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
            return;
        }
    }
}

/// Writes `chunk` whole, lowering the connection's `in_flight` after each write so that a
/// publisher stalled on it goes on as soon as the socket took enough, not only once the whole
/// chunk (megabytes for a fast producer) is out.
async fn write_chunk<W: AsyncWrite>(
    me: &ClientShared,
    writer: &mut std::pin::Pin<&mut W>,
    chunk: &[u8],
) -> std::io::Result<()> {
    let mut written = 0;
    while written < chunk.len() {
        let n = writer.write(&chunk[written..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        written += n;
        if written < chunk.len() {
            me.out.lock().in_flight = chunk.len() - written;
            me.drained.notify_waiters();
        }
    }
    Ok(())
}
