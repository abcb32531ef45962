//! A tiny "server" that accepts NATS clients, answers PING with PONG and throws every PUB
//! away. Pointing the `pub` scenario at it measures the load generator's own ceiling: how
//! many messages per second it can produce when the other end costs (almost) nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const INFO: &[u8] = b"INFO {\"server_id\":\"rnats-bench-sink\",\"server_name\":\"sink\",\"version\":\"0.0.0\",\"proto\":1,\"headers\":false,\"max_payload\":1048576}\r\n";

/// PUBs the sink has swallowed, all connections together (checked against what was sent).
pub static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Starts the sink on its own thread and single-threaded runtime; returns its address.
pub fn spawn() -> Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::Builder::new()
        .name("sink".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("rnats-bench: sink runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("rnats-bench: sink listener: {e}");
                        return;
                    }
                };
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let _ = serve(stream).await;
                    });
                }
            });
        })?;
    Ok(addr)
}

async fn serve(mut stream: TcpStream) -> Result<()> {
    stream.set_nodelay(true)?;
    stream.write_all(INFO).await?;
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut skip = 0usize; // payload bytes (plus CRLF) of the current PUB still to drop
    loop {
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut pongs = 0;
        let mut pubs = 0u64;
        loop {
            if skip > 0 {
                let n = skip.min(buf.len());
                buf.advance(n);
                skip -= n;
                if skip > 0 {
                    break;
                }
            }
            let Some(nl) = memchr::memchr(b'\n', &buf) else {
                break;
            };
            let line = &buf[..nl];
            if line.starts_with(b"PUB ") || line.starts_with(b"pub ") {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let size = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
                let size = std::str::from_utf8(size)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok());
                let Some(size) = size else {
                    anyhow::bail!("sink: bad PUB line")
                };
                skip = size + 2;
                pubs += 1;
            } else if line.starts_with(b"PING") || line.starts_with(b"ping") {
                pongs += 1;
            }
            buf.advance(nl + 1);
        }
        RECEIVED.fetch_add(pubs, Ordering::Relaxed);
        if pongs > 0 {
            stream.write_all(&b"PONG\r\n".repeat(pongs)).await?;
        }
    }
}
