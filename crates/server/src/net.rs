//! A TCP stream shared by a connection's reader, its writer and publishers that flush its
//! outbound buffer inline: tokio's `TcpStream` does readiness-based I/O through `&self`, so
//! one `Arc` serves all three without a lock. Also: how addresses are written, and the
//! listening sockets ([`listen`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub struct SharedTcp(pub Arc<TcpStream>);

/// `host:port`, the host in brackets when it is an IPv6 address.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Listens on `addr` (`host:port`) with the backlog Go's listeners (so the reference's) get:
/// the kernel's `somaxconn`, not the 128 of the standard library and tokio. A burst of
/// connects (clients coming back after a restart, or a flood) must not overflow the accept
/// queue: a client whose handshake the kernel dropped there believes it is connected and,
/// if it has nothing to send yet, waits for SYN-ACK retransmits for seconds to minutes.
pub async fn listen(addr: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let sock = if a.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        match sock.bind(a) {
            Ok(()) => return sock.listen(listen_backlog()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no address for {addr}"),
        )
    }))
}

/// `somaxconn` (the kernel caps any larger backlog to it anyway), 4096 when unreadable.
fn listen_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(4096, |n| n.clamp(128, 65535))
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // Into the unfilled part as it is: `initialize_unfilled` would zero all of it on
            // every read (a route's buffer grows to a megabyte with large messages, and a
            // read often brings a few hundred bytes): 5 % of a cluster node's CPU.
            match self.0.try_read_buf(buf) {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts both directions down now: other holders of the `Arc` (a stale match cache, say)
    /// must not keep the peer's connection open.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Both))
    }
}
