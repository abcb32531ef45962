//! The operations a server sends, parsed: what a client reads from its socket (and what a
//! connection local to the server receives).
//!
//! [`parse_server_op`] takes one operation off the front of a read buffer. On incomplete input it
//! returns `Ok(None)` and consumes nothing, so the caller appends the next read and calls again:
//! every split of the byte stream yields the same operations. Subjects, replies, headers and
//! payloads are `Bytes` split off the read buffer, never copied.

use bytes::{Buf, Bytes, BytesMut};

/// Longest control line accepted from a server. INFO lines of large clusters can be long, so
/// this only guards against a peer that is not a NATS server.
pub const MAX_CONTROL_LINE: usize = 1024 * 1024;

/// One operation sent by a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO`: the JSON object, as received.
    Info(Bytes),
    /// `MSG`, or `HMSG` when `headers` is set (the raw header block, `NATS/1.0…␍␊␍␊`).
    Msg {
        subject: Bytes,
        sid: u64,
        reply: Option<Bytes>,
        headers: Option<Bytes>,
        payload: Bytes,
    },
    Ping,
    Pong,
    /// `+OK` (verbose mode only).
    Ok,
    /// `-ERR`: the text without the quotes.
    Err(String),
}

/// The server sent something that is not the NATS protocol; the connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("control line longer than {max} bytes")]
    ControlLineTooLong { max: usize },
    #[error("unknown protocol operation {0:?}")]
    UnknownOp(String),
    #[error("malformed {op} line {line:?}")]
    Malformed { op: &'static str, line: String },
    #[error("{op} payload not followed by CRLF")]
    BadTerminator { op: &'static str },
}

/// Takes one complete operation off the front of `buf`; `Ok(None)` (nothing consumed) when
/// `buf` does not hold a whole operation yet.
pub fn parse_server_op(buf: &mut BytesMut) -> Result<Option<ServerOp>, ParseError> {
    let Some(nl) = memchr::memchr(b'\n', buf) else {
        if buf.len() > MAX_CONTROL_LINE {
            return Err(ParseError::ControlLineTooLong {
                max: MAX_CONTROL_LINE,
            });
        }
        return Ok(None);
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    if line_end > MAX_CONTROL_LINE {
        return Err(ParseError::ControlLineTooLong {
            max: MAX_CONTROL_LINE,
        });
    }
    let line = &buf[..line_end];
    let op_end = line
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(line.len());
    let op = &line[..op_end];
    if op.eq_ignore_ascii_case(b"MSG") {
        parse_msg(buf, nl, line_end, op_end, false)
    } else if op.eq_ignore_ascii_case(b"HMSG") {
        parse_msg(buf, nl, line_end, op_end, true)
    } else if op.eq_ignore_ascii_case(b"PING") {
        buf.advance(nl + 1);
        Ok(Some(ServerOp::Ping))
    } else if op.eq_ignore_ascii_case(b"PONG") {
        buf.advance(nl + 1);
        Ok(Some(ServerOp::Pong))
    } else if op.eq_ignore_ascii_case(b"+OK") {
        buf.advance(nl + 1);
        Ok(Some(ServerOp::Ok))
    } else if op.eq_ignore_ascii_case(b"-ERR") {
        let text = trim(&line[op_end..]);
        let text = text
            .strip_prefix(b"'")
            .and_then(|t| t.strip_suffix(b"'"))
            .unwrap_or(text);
        let text = String::from_utf8_lossy(text).into_owned();
        buf.advance(nl + 1);
        Ok(Some(ServerOp::Err(text)))
    } else if op.eq_ignore_ascii_case(b"INFO") {
        let args = trim(&line[op_end..]);
        if args.is_empty() {
            return Err(malformed("INFO", line));
        }
        let start = args.as_ptr() as usize - line.as_ptr() as usize;
        let len = args.len();
        let mut head = buf.split_to(nl + 1).freeze();
        head.truncate(start + len);
        Ok(Some(ServerOp::Info(head.slice(start..))))
    } else {
        Err(ParseError::UnknownOp(
            String::from_utf8_lossy(&op[..op.len().min(32)]).into_owned(),
        ))
    }
}

fn parse_msg(
    buf: &mut BytesMut,
    nl: usize,
    line_end: usize,
    op_end: usize,
    with_headers: bool,
) -> Result<Option<ServerOp>, ParseError> {
    let name = if with_headers { "HMSG" } else { "MSG" };
    let line = &buf[..line_end];
    let mut toks = [(0usize, 0usize); 6];
    let mut n = 0;
    let mut i = op_end;
    while i < line.len() {
        while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let start = i;
        while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
            i += 1;
        }
        if n == toks.len() {
            return Err(malformed(name, line));
        }
        toks[n] = (start, i);
        n += 1;
    }
    // subject sid [reply] [#hdr] #total
    let sizes = if with_headers { 2 } else { 1 };
    if n != 2 + sizes && n != 3 + sizes {
        return Err(malformed(name, line));
    }
    let tok = |k: usize| &line[toks[k].0..toks[k].1];
    let sid = parse_size(tok(1)).ok_or_else(|| malformed(name, line))?;
    let total = parse_size(tok(n - 1)).ok_or_else(|| malformed(name, line))? as usize;
    let hdr = if with_headers {
        let h = parse_size(tok(n - 2)).ok_or_else(|| malformed(name, line))? as usize;
        if h > total {
            return Err(malformed(name, line));
        }
        Some(h)
    } else {
        None
    };
    let has_reply = n == 3 + sizes;
    let body_start = nl + 1;
    let needed = body_start + total + 2;
    if buf.len() < needed {
        return Ok(None);
    }
    if &buf[body_start + total..needed] != b"\r\n" {
        return Err(ParseError::BadTerminator { op: name });
    }
    let head = buf.split_to(body_start).freeze();
    let mut body = buf.split_to(total).freeze();
    buf.advance(2);
    let subject = head.slice(toks[0].0..toks[0].1);
    let reply = has_reply.then(|| head.slice(toks[2].0..toks[2].1));
    let headers = hdr.map(|h| body.split_to(h));
    Ok(Some(ServerOp::Msg {
        subject,
        sid,
        reply,
        headers,
        payload: body,
    }))
}

fn malformed(op: &'static str, line: &[u8]) -> ParseError {
    ParseError::Malformed {
        op,
        line: String::from_utf8_lossy(&line[..line.len().min(128)]).into_owned(),
    }
}

/// A decimal number of 1 to 19 digits.
fn parse_size(tok: &[u8]) -> Option<u64> {
    if tok.is_empty() || tok.len() > 19 || !tok.iter().all(u8::is_ascii_digit) {
        return None;
    }
    tok.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of operation, back to back, with payloads that contain CRLF.
    const STREAM: &[u8] = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576} \r\n\
        PING\r\n\
        MSG foo.bar 1 5\r\nhello\r\n\
        MSG foo 22 _INBOX.abc 4\r\na\r\nb\r\n\
        +OK\r\n\
        HMSG foo 3 22 33\r\nNATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n\
        HMSG _INBOX.k1.1 3 _R 40 40\r\nNATS/1.0 503\r\nNats-Subject: svc.none\r\n\r\n\r\n\
        MSG empty 4 0\r\n\r\n\
        -ERR 'Permissions Violation for Publish to \"x\"'\r\n\
        PONG\r\n";

    fn all(buf: &mut BytesMut) -> Vec<ServerOp> {
        let mut ops = Vec::new();
        while let Some(op) = parse_server_op(buf).expect("valid stream") {
            ops.push(op);
        }
        ops
    }

    fn expected() -> Vec<ServerOp> {
        let b = Bytes::from_static;
        vec![
            ServerOp::Info(b(b"{\"server_id\":\"x\",\"max_payload\":1048576}")),
            ServerOp::Ping,
            ServerOp::Msg {
                subject: b(b"foo.bar"),
                sid: 1,
                reply: None,
                headers: None,
                payload: b(b"hello"),
            },
            ServerOp::Msg {
                subject: b(b"foo"),
                sid: 22,
                reply: Some(b(b"_INBOX.abc")),
                headers: None,
                payload: b(b"a\r\nb"),
            },
            ServerOp::Ok,
            ServerOp::Msg {
                subject: b(b"foo"),
                sid: 3,
                reply: None,
                headers: Some(b(b"NATS/1.0\r\nBar: Baz\r\n\r\n")),
                payload: b(b"Hello NATS!"),
            },
            ServerOp::Msg {
                subject: b(b"_INBOX.k1.1"),
                sid: 3,
                reply: Some(b(b"_R")),
                headers: Some(b(b"NATS/1.0 503\r\nNats-Subject: svc.none\r\n\r\n")),
                payload: b(b""),
            },
            ServerOp::Msg {
                subject: b(b"empty"),
                sid: 4,
                reply: None,
                headers: None,
                payload: b(b""),
            },
            ServerOp::Err("Permissions Violation for Publish to \"x\"".into()),
            ServerOp::Pong,
        ]
    }

    #[test]
    fn whole_stream() {
        let mut buf = BytesMut::from(STREAM);
        assert_eq!(all(&mut buf), expected());
        assert!(buf.is_empty());
    }

    #[test]
    fn every_split_point_gives_the_same_ops() {
        for split in 0..=STREAM.len() {
            let mut buf = BytesMut::from(&STREAM[..split]);
            let mut ops = all(&mut buf);
            buf.extend_from_slice(&STREAM[split..]);
            ops.extend(all(&mut buf));
            assert_eq!(ops, expected(), "split at {split}");
            assert!(buf.is_empty(), "split at {split}");
        }
    }

    #[test]
    fn every_pair_of_split_points_gives_the_same_ops() {
        for a in 0..=STREAM.len() {
            for b in a..=STREAM.len() {
                let mut buf = BytesMut::from(&STREAM[..a]);
                let mut ops = all(&mut buf);
                buf.extend_from_slice(&STREAM[a..b]);
                ops.extend(all(&mut buf));
                buf.extend_from_slice(&STREAM[b..]);
                ops.extend(all(&mut buf));
                assert_eq!(ops, expected(), "splits at {a} and {b}");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut buf = BytesMut::new();
        let mut ops = Vec::new();
        for byte in STREAM {
            let before = buf.len();
            buf.extend_from_slice(&[*byte]);
            let got = all(&mut buf);
            if got.is_empty() {
                assert_eq!(buf.len(), before + 1, "incomplete input is never consumed");
            }
            ops.extend(got);
        }
        assert_eq!(ops, expected());
    }

    #[test]
    fn incomplete_input_consumes_nothing() {
        for split in 0..STREAM.len() {
            let mut buf = BytesMut::from(&STREAM[..split]);
            let before = buf.clone();
            // Whatever complete ops are there come off; what remains is a strict prefix.
            all(&mut buf);
            assert!(before.ends_with(&buf));
        }
    }

    #[test]
    fn ops_are_case_insensitive_and_tolerate_bare_lf_and_tabs() {
        let mut buf = BytesMut::from(&b"ping\npong\r\nmsg\tfoo\t1  2\r\nhi\r\n+ok\r\n"[..]);
        let ops = all(&mut buf);
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[0], ServerOp::Ping);
        assert!(matches!(&ops[2], ServerOp::Msg { payload, .. } if &payload[..] == b"hi"));
    }

    #[test]
    fn err_without_quotes() {
        let mut buf = BytesMut::from(&b"-ERR Stale Connection\r\n"[..]);
        assert_eq!(
            all(&mut buf),
            vec![ServerOp::Err("Stale Connection".into())]
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        for bad in [
            &b"FOO\r\n"[..],
            b"MSG foo\r\n",
            b"MSG foo x 1\r\na\r\n",
            b"MSG foo 1 -1\r\n",
            b"MSG a b c d e f g\r\n",
            b"HMSG foo 1 5 3\r\nabc\r\n",
            b"HMSG foo 1 3\r\nabc\r\n",
            b"INFO\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                parse_server_op(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut buf = BytesMut::from(&b"MSG foo 1 2\r\nhiXY"[..]);
        assert_eq!(
            parse_server_op(&mut buf),
            Err(ParseError::BadTerminator { op: "MSG" })
        );
    }

    #[test]
    fn endless_line_is_rejected() {
        let mut buf = BytesMut::from(&vec![b'A'; MAX_CONTROL_LINE + 1][..]);
        assert!(matches!(
            parse_server_op(&mut buf),
            Err(ParseError::ControlLineTooLong { .. })
        ));
    }
}
