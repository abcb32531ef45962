//! The receive-side ceiling: how fast this tool's subscriber parser goes on one core, with no
//! socket and no server.

use std::time::Instant;

use anyhow::Context as _;
use bytes::BytesMut;

use crate::engine::payload;
use crate::proto::parse;

/// Parses `msgs` in-memory `MSG`s of `size` bytes in 64 KiB pieces, the way a subscriber does;
/// returns the summary line, or the parse error.
pub fn parse_ceiling(
    subject: &str,
    size: usize,
    msgs: u64,
    batch: usize,
) -> anyhow::Result<String> {
    let mut one = Vec::new();
    one.extend_from_slice(format!("MSG {} 1 {}\r\n", subject, size).as_bytes());
    one.extend_from_slice(&payload(size));
    one.extend_from_slice(b"\r\n");
    let per_chunk = (batch / one.len()).max(1);
    let chunk: Vec<u8> = one.repeat(per_chunk);
    let mut buf = BytesMut::with_capacity(512 * 1024);
    let mut seen = 0u64;
    let mut fed = 0u64;
    let start = Instant::now();
    // Feed odd-sized pieces so messages straddle reads, as on a socket.
    let piece = 65_521usize.min(chunk.len());
    let mut off = 0usize;
    while seen < msgs {
        let end = (off + piece).min(chunk.len());
        buf.extend_from_slice(&chunk[off..end]);
        fed += (end - off) as u64;
        off = if end == chunk.len() { 0 } else { end };
        let mut got = 0u64;
        parse(&mut buf, |_, _, _| got += 1).context("parse error")?;
        seen += got;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "parse ceiling: {} MSGs of {} B ({} MB) parsed in {secs:.3}s: {:.0} msgs/s ({:.0} MB/s of wire data), one core",
        seen,
        size,
        fed / 1_000_000,
        seen as f64 / secs,
        fed as f64 / secs / 1e6
    ))
}
