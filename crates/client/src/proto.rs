//! The wire protocol as seen by a client: encoders for the operations a client sends, and
//! (re-exported from `rnats-protocol`) the pure, resumable parser for those a server sends. No I/O.
//!
//! ```text
//! server → client                                           client → server
//! INFO {json} ␍␊                                            CONNECT {json}␍␊
//! MSG <subj> <sid> [reply] <#bytes>␍␊<payload>␍␊            PUB <subj> [reply] <#bytes>␍␊<payload>␍␊
//! HMSG <subj> <sid> [reply] <#hdr> <#total>␍␊<hdr+payload>␍␊ HPUB <subj> [reply] <#hdr> <#total>␍␊…␍␊
//! PING␍␊ / PONG␍␊                                           SUB <subj> [queue] <sid>␍␊
//! +OK␍␊                                                     UNSUB <sid> [max]␍␊
//! -ERR '<text>'␍␊                                           PING␍␊ / PONG␍␊
//! ```

use bytes::{BufMut, BytesMut};

pub use rnats_protocol::{
    MAX_SERVER_CONTROL_LINE as MAX_CONTROL_LINE, ServerOp, ServerOpError as ParseError,
    parse_server_op,
};

// ---------------------------------------------------------------------------------------------
// Encoders: each appends one client operation to a caller-owned buffer.

pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

/// `CONNECT {json}␍␊`.
pub fn encode_connect(buf: &mut BytesMut, json: &[u8]) {
    buf.reserve(json.len() + 10);
    buf.put_slice(b"CONNECT ");
    buf.put_slice(json);
    buf.put_slice(b"\r\n");
}

/// `PUB`, or `HPUB` when `headers` (a complete header block) is given.
pub fn encode_pub(
    buf: &mut BytesMut,
    subject: &str,
    reply: Option<&str>,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    let hlen = headers.map_or(0, <[u8]>::len);
    buf.reserve(subject.len() + reply.map_or(0, str::len) + hlen + payload.len() + 40);
    buf.put_slice(if headers.is_some() { b"HPUB " } else { b"PUB " });
    buf.put_slice(subject.as_bytes());
    buf.put_u8(b' ');
    if let Some(reply) = reply {
        buf.put_slice(reply.as_bytes());
        buf.put_u8(b' ');
    }
    if let Some(h) = headers {
        put_u64(buf, h.len() as u64);
        buf.put_u8(b' ');
        put_u64(buf, (h.len() + payload.len()) as u64);
        buf.put_slice(b"\r\n");
        buf.put_slice(h);
    } else {
        put_u64(buf, payload.len() as u64);
        buf.put_slice(b"\r\n");
    }
    buf.put_slice(payload);
    buf.put_slice(b"\r\n");
}

/// `SUB <subject> [queue] <sid>␍␊`.
pub fn encode_sub(buf: &mut BytesMut, subject: &str, queue: Option<&str>, sid: u64) {
    buf.put_slice(b"SUB ");
    buf.put_slice(subject.as_bytes());
    buf.put_u8(b' ');
    if let Some(q) = queue {
        buf.put_slice(q.as_bytes());
        buf.put_u8(b' ');
    }
    put_u64(buf, sid);
    buf.put_slice(b"\r\n");
}

/// `UNSUB <sid> [max]␍␊`.
pub fn encode_unsub(buf: &mut BytesMut, sid: u64, max: Option<u64>) {
    buf.put_slice(b"UNSUB ");
    put_u64(buf, sid);
    if let Some(max) = max {
        buf.put_u8(b' ');
        put_u64(buf, max);
    }
    buf.put_slice(b"\r\n");
}

fn put_u64(buf: &mut BytesMut, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders() {
        let mut buf = BytesMut::new();
        encode_pub(&mut buf, "foo", None, None, b"hello");
        encode_pub(&mut buf, "foo", Some("r.1"), None, b"");
        encode_pub(
            &mut buf,
            "foo",
            Some("r"),
            Some(b"NATS/1.0\r\nBar: Baz\r\n\r\n"),
            b"Hello NATS!",
        );
        encode_sub(&mut buf, "foo.*", None, 1);
        encode_sub(&mut buf, "foo", Some("q"), 1234567890);
        encode_unsub(&mut buf, 7, None);
        encode_unsub(&mut buf, 7, Some(0));
        encode_connect(&mut buf, b"{}");
        assert_eq!(
            &buf[..],
            &b"PUB foo 5\r\nhello\r\nPUB foo r.1 0\r\n\r\n\
HPUB foo r 22 33\r\nNATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n\
SUB foo.* 1\r\nSUB foo q 1234567890\r\nUNSUB 7\r\nUNSUB 7 0\r\nCONNECT {}\r\n"[..]
        );
    }

    #[test]
    fn put_u64_extremes() {
        let mut buf = BytesMut::new();
        put_u64(&mut buf, 0);
        buf.put_u8(b' ');
        put_u64(&mut buf, u64::MAX);
        assert_eq!(&buf[..], b"0 18446744073709551615");
    }
}
