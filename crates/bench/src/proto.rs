//! The minimal client side of the NATS protocol that the load generator needs: the
//! connect handshake, batch encoding of `PUB`s, and a resumable parser for what a server
//! sends to a subscriber (`MSG`, `PING`, `PONG`, `+OK`, `-ERR`, `INFO`).
//!
//! Deliberately tiny and allocation-free on the hot path, so the tool costs far less per
//! message than the server it measures.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, BufMut, BytesMut};
use rnats_client::{ConnectOptions, ServerAddr, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What every connection sends right after the server's INFO.
pub const CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":true,\"headers\":false,\"protocol\":1}\r\nPING\r\n";

/// Longest control line we accept before declaring the stream garbage.
const MAX_CONTROL_LINE: usize = 64 * 1024;

/// Non-`MSG` things found by one [`parse`] call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Events {
    pub pings: u32,
    pub pongs: u32,
    /// The text of the first `-ERR` seen, if any.
    pub err: Option<String>,
}

/// Parses every complete server op in `buf`, calling `on_msg(subject, reply, payload)` for
/// each `MSG`, and drops the consumed bytes. An incomplete op stays in `buf` for next time.
pub fn parse<F>(buf: &mut BytesMut, mut on_msg: F) -> Result<Events>
where
    F: FnMut(&[u8], Option<&[u8]>, &[u8]),
{
    let mut ev = Events::default();
    let mut pos = 0;
    let len = buf.len();
    while pos < len {
        let rest = &buf[pos..];
        let Some(nl) = memchr::memchr(b'\n', rest) else {
            if rest.len() > MAX_CONTROL_LINE {
                bail!("control line longer than {MAX_CONTROL_LINE} bytes");
            }
            break;
        };
        let line = if nl > 0 && rest[nl - 1] == b'\r' {
            &rest[..nl - 1]
        } else {
            &rest[..nl]
        };
        if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"MSG ") {
            let (subject, reply, size) = msg_args(&line[4..])
                .ok_or_else(|| anyhow!("bad MSG line: {:?}", String::from_utf8_lossy(line)))?;
            let start = nl + 1;
            let end = start + size;
            if rest.len() < end + 2 {
                // Wait for the rest of the payload; make room for it in one go.
                let need = end + 2 - rest.len();
                buf.reserve(need);
                break;
            }
            on_msg(subject, reply, &rest[start..end]);
            pos += end + 2;
            continue;
        }
        let head = &line[..line.len().min(4)];
        if head.eq_ignore_ascii_case(b"PING") {
            ev.pings += 1;
        } else if head.eq_ignore_ascii_case(b"PONG") {
            ev.pongs += 1;
        } else if head.eq_ignore_ascii_case(b"-ERR") {
            if ev.err.is_none() {
                ev.err = Some(String::from_utf8_lossy(line).into_owned());
            }
        } else if head.eq_ignore_ascii_case(b"+OK") || head.eq_ignore_ascii_case(b"INFO") {
            // nothing to do
        } else if !line.is_empty() {
            bail!(
                "unexpected server op: {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            );
        }
        pos += nl + 1;
    }
    buf.advance(pos);
    Ok(ev)
}

/// Subject, reply and payload size of a `MSG` line.
type MsgArgs<'a> = (&'a [u8], Option<&'a [u8]>, usize);

/// `subject sid [reply] size` → (subject, reply, size).
fn msg_args(args: &[u8]) -> Option<MsgArgs<'_>> {
    let mut toks: [&[u8]; 4] = [&[]; 4];
    let mut n = 0;
    for tok in args
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|t| !t.is_empty())
    {
        if n == 4 {
            return None;
        }
        toks[n] = tok;
        n += 1;
    }
    let (subject, reply, size) = match n {
        3 => (toks[0], None, toks[2]),
        4 => (toks[0], Some(toks[2]), toks[3]),
        _ => return None,
    };
    Some((subject, reply, parse_size(size)?))
}

fn parse_size(tok: &[u8]) -> Option<usize> {
    if tok.is_empty() || tok.len() > 12 {
        return None;
    }
    let mut n = 0usize;
    for &b in tok {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + usize::from(b - b'0');
    }
    Some(n)
}

/// Appends `PUB subject [reply] len\r\npayload\r\n`.
pub fn put_pub(out: &mut BytesMut, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
    out.reserve(subject.len() + reply.map_or(0, |r| r.len() + 1) + payload.len() + 24);
    out.put_slice(b"PUB ");
    out.put_slice(subject);
    out.put_u8(b' ');
    if let Some(reply) = reply {
        out.put_slice(reply);
        out.put_u8(b' ');
    }
    out.put_slice(payload.len().to_string().as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// A connected, handshaken client connection and whatever the server sent past the PONG.
pub struct Conn {
    pub stream: Transport,
    pub buf: BytesMut,
}

impl Conn {
    /// Connects, reads INFO, sends CONNECT+PING and waits for the PONG, all within `limit`.
    ///
    /// With `opts` (TLS, credentials) the handshake is rnats-client's ([`ConnectOptions::connect_raw`]),
    /// and `addr` may be a URL (`tls://host:port`); without, it is the tool's own minimal one
    /// over plain TCP ([`CONNECT`]).
    pub async fn connect(
        addr: &str,
        limit: Duration,
        opts: Option<&ConnectOptions>,
    ) -> Result<Conn> {
        match opts {
            None => tokio::time::timeout(limit, Self::connect_inner(addr))
                .await
                .map_err(|_| anyhow!("connect to {addr}: no PONG within {limit:?}"))?,
            Some(opts) => {
                let server: ServerAddr =
                    addr.parse().with_context(|| format!("server {addr:?}"))?;
                let raw = opts
                    .clone()
                    .connect_timeout(limit)
                    .connect_raw(&server)
                    .await
                    .with_context(|| format!("connect to {server}"))?;
                let mut buf = raw.read_buf;
                buf.reserve(64 * 1024);
                Ok(Conn {
                    stream: raw.stream,
                    buf,
                })
            }
        }
    }

    async fn connect_inner(addr: &str) -> Result<Conn> {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        // INFO comes first.
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &buf) {
                if !buf.starts_with(b"INFO") {
                    bail!(
                        "{addr}: expected INFO, got {:?}",
                        String::from_utf8_lossy(&buf[..nl])
                    );
                }
                buf.advance(nl + 1);
                break;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("{addr}: connection closed before INFO");
            }
        }
        stream.write_all(CONNECT).await?;
        let mut conn = Conn {
            stream: Transport::plain(stream),
            buf,
        };
        conn.wait_pong().await?;
        Ok(conn)
    }

    /// Writes all of `bytes` and flushes (TLS buffers records until flushed).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads until a PONG arrives, answering PINGs; `MSG`s on the way are an error (the
    /// callers only use this when no subscription can deliver).
    pub async fn wait_pong(&mut self) -> Result<()> {
        loop {
            let ev = parse(&mut self.buf, |s, _, _| {
                eprintln!(
                    "rnats-bench: unexpected MSG on {:?} during handshake",
                    String::from_utf8_lossy(s)
                );
            })?;
            if let Some(err) = ev.err {
                bail!("server error: {err}");
            }
            if ev.pings > 0 {
                self.send(&b"PONG\r\n".repeat(ev.pings as usize)).await?;
            }
            if ev.pongs > 0 {
                return Ok(());
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed while waiting for PONG");
            }
        }
    }

    /// Sends `cmd` followed by PING and waits for the PONG: after it, the server has
    /// processed `cmd` (a SUB is registered, every earlier PUB routed).
    pub async fn flush_with(&mut self, cmd: &[u8], limit: Duration) -> Result<()> {
        let mut out = Vec::with_capacity(cmd.len() + 6);
        out.extend_from_slice(cmd);
        out.extend_from_slice(b"PING\r\n");
        tokio::time::timeout(limit, async {
            self.send(&out).await?;
            self.wait_pong().await
        })
        .await
        .map_err(|_| anyhow!("no PONG within {limit:?}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Msg = (String, Option<String>, Vec<u8>);

    fn collect(buf: &mut BytesMut) -> (Vec<Msg>, Events) {
        let mut msgs = Vec::new();
        let ev = parse(buf, |s, r, p| {
            msgs.push((
                String::from_utf8_lossy(s).into_owned(),
                r.map(|r| String::from_utf8_lossy(r).into_owned()),
                p.to_vec(),
            ));
        })
        .unwrap();
        (msgs, ev)
    }

    #[test]
    fn parses_msgs_and_control_ops() {
        let mut buf = BytesMut::from(
            &b"INFO {}\r\n+OK\r\nMSG foo 1 5\r\nhello\r\nPING\r\nMSG bar 22 _INBOX.x 0\r\n\r\nPONG\r\n-ERR 'Slow Consumer'\r\n"[..],
        );
        let (msgs, ev) = collect(&mut buf);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0], ("foo".into(), None, b"hello".to_vec()));
        assert_eq!(msgs[1], ("bar".into(), Some("_INBOX.x".into()), Vec::new()));
        assert_eq!(ev.pings, 1);
        assert_eq!(ev.pongs, 1);
        assert_eq!(ev.err.as_deref(), Some("-ERR 'Slow Consumer'"));
        assert!(buf.is_empty());
    }

    #[test]
    fn resumes_at_every_split_point() {
        let wire: &[u8] =
            b"MSG a 1 3\r\nabc\r\nPING\r\nMSG b.c 2 r 4\r\nw\r\nx\r\nMSG a 1 0\r\n\r\n";
        for split in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..split]);
            let (mut msgs, mut ev) = collect(&mut buf);
            buf.extend_from_slice(&wire[split..]);
            let (more, ev2) = collect(&mut buf);
            msgs.extend(more);
            ev.pings += ev2.pings;
            assert_eq!(msgs.len(), 3, "split at {split}");
            assert_eq!(msgs[1].2, b"w\r\nx".to_vec(), "payload may contain CRLF");
            assert_eq!(ev.pings, 1);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn rejects_garbage() {
        let mut buf = BytesMut::from(&b"MSG foo\r\n"[..]);
        assert!(parse(&mut buf, |_, _, _| {}).is_err());
        let mut buf = BytesMut::from(&b"HELLO\r\n"[..]);
        assert!(parse(&mut buf, |_, _, _| {}).is_err());
    }

    #[test]
    fn encodes_pub() {
        let mut out = BytesMut::new();
        put_pub(&mut out, b"foo", None, b"hi");
        put_pub(&mut out, b"foo", Some(b"_INBOX.1"), b"");
        assert_eq!(&out[..], b"PUB foo 2\r\nhi\r\nPUB foo _INBOX.1 0\r\n\r\n");
    }
}
