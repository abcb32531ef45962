//! The route (server ↔ server) protocol, v2: `RS+`/`RS-` interest and `RMSG`/`HMSG`
//! messages carrying the account and, for queue deliveries, the queue names.
//!
//! ```text
//! RS+ <account> <subject> [<queue> <weight>]␍␊
//! RS- <account> <subject> [<queue>]␍␊
//! RMSG <account> <subject> [<reply>] <#bytes>␍␊<payload>␍␊
//! RMSG <account> <subject> + <reply> <q1> [<q2>…] <#bytes>␍␊…
//! RMSG <account> <subject> | <q1> [<q2>…] <#bytes>␍␊…
//! HMSG … <#hdr> <#total>␍␊…        (same forms, header and total sizes last)
//! ```

use bytes::{BufMut, BytesMut};

use crate::error::ProtoError;
use crate::parse::{Limits, Message, Parsed, is_sep, message, parse_size, split_args};

/// One operation received on a route. Slices borrow from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp<'a> {
    Connect(&'a [u8]),
    Info(&'a [u8]),
    Ping,
    Pong,
    Ok,
    Err(&'a [u8]),
    Sub {
        account: &'a [u8],
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        weight: u32,
    },
    Unsub {
        account: &'a [u8],
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
    },
    Msg {
        account: &'a [u8],
        /// Space-separated queue names the sender picked this server for (empty: none).
        queues: &'a [u8],
        msg: Message<'a>,
    },
}

fn args_of(line: &[u8], verb_len: usize) -> &[u8] {
    let rest = &line[verb_len.min(line.len())..];
    let start = rest.iter().position(|&b| !is_sep(b)).unwrap_or(rest.len());
    &rest[start..]
}

/// Parses one route operation from the front of `buf` (never consuming on incomplete
/// input). Route control lines may be 16 × `max_control_line`, as in the reference.
pub fn parse_route_op<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Parsed<RouteOp<'a>>, ProtoError> {
    let max_line = limits.max_control_line * 16;
    let Some(nl) = memchr::memchr(b'\n', buf) else {
        if buf.len() > max_line {
            return Err(ProtoError::MaxControlLine);
        }
        return Ok(Parsed::Incomplete { need: None });
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let line = &buf[..line_end];
    let consumed = nl + 1;
    if line.len() > max_line {
        return Err(ProtoError::MaxControlLine);
    }
    let verb_len = line.iter().position(|&b| is_sep(b)).unwrap_or(line.len());
    let verb = &line[..verb_len];
    let args = args_of(line, verb_len);
    let is = |name: &[u8]| verb.eq_ignore_ascii_case(name);
    let op = if is(b"PING") {
        RouteOp::Ping
    } else if is(b"PONG") {
        RouteOp::Pong
    } else if is(b"+OK") {
        RouteOp::Ok
    } else if is(b"-ERR") {
        RouteOp::Err(args)
    } else if is(b"INFO") {
        RouteOp::Info(args)
    } else if is(b"CONNECT") {
        RouteOp::Connect(args)
    } else if is(b"RS+") {
        let mut a: [&[u8]; 4] = [b""; 4];
        match split_args(args, &mut a) {
            2 => RouteOp::Sub {
                account: a[0],
                subject: a[1],
                queue: None,
                weight: 0,
            },
            4 => {
                let weight = parse_size(a[3]).ok_or(ProtoError::BadArgs { op: "RS+" })?;
                RouteOp::Sub {
                    account: a[0],
                    subject: a[1],
                    queue: Some(a[2]),
                    weight: weight as u32,
                }
            }
            _ => return Err(ProtoError::BadArgs { op: "RS+" }),
        }
    } else if is(b"RS-") {
        let mut a: [&[u8]; 3] = [b""; 3];
        match split_args(args, &mut a) {
            2 => RouteOp::Unsub {
                account: a[0],
                subject: a[1],
                queue: None,
            },
            3 => RouteOp::Unsub {
                account: a[0],
                subject: a[1],
                queue: Some(a[2]),
            },
            _ => return Err(ProtoError::BadArgs { op: "RS-" }),
        }
    } else if is(b"RMSG") || is(b"HMSG") {
        return parse_msg(buf, args, consumed, is(b"HMSG"), limits);
    } else {
        return Err(ProtoError::UnknownOp);
    };
    Ok(Parsed::Op(op, consumed))
}

fn parse_msg<'a>(
    buf: &'a [u8],
    args: &'a [u8],
    consumed: usize,
    headers: bool,
    limits: &Limits,
) -> Result<Parsed<RouteOp<'a>>, ProtoError> {
    let op = if headers { "HMSG" } else { "RMSG" };
    let bad = ProtoError::BadArgs { op };
    let mut fields = [&b""[..]; 64];
    let n = split_args(args, &mut fields);
    let sizes = if headers { 2 } else { 1 };
    if n < 2 + sizes || n > fields.len() {
        return Err(bad);
    }
    let (account, subject) = (fields[0], fields[1]);
    let middle = &fields[2..n - sizes];
    let (reply, queue_fields): (Option<&[u8]>, &[&[u8]]) = match middle {
        [] => (None, &[]),
        [reply] => (Some(reply), &[]),
        [marker, reply, queues @ ..] if *marker == b"+" && !queues.is_empty() => {
            (Some(reply), queues)
        }
        [marker, queues @ ..] if *marker == b"|" => (None, queues),
        _ => return Err(bad),
    };
    // The queue names are contiguous in the line: keep them as one slice.
    let queues = match (queue_fields.first(), queue_fields.last()) {
        (Some(first), Some(last)) => {
            let start = first.as_ptr() as usize - args.as_ptr() as usize;
            let end = last.as_ptr() as usize - args.as_ptr() as usize + last.len();
            &args[start..end]
        }
        _ => &b""[..],
    };
    let header_token = headers.then(|| fields[n - 2]);
    let parsed = message(
        buf,
        consumed,
        (subject, reply),
        header_token,
        fields[n - 1],
        limits,
        op,
    )?;
    Ok(parsed.map(|msg| RouteOp::Msg {
        account,
        queues,
        msg,
    }))
}

/// `RS+ <account> <subject> [<queue> <weight>]␍␊`
pub fn write_rs_plus(
    out: &mut BytesMut,
    account: &[u8],
    subject: &[u8],
    queue: Option<(&[u8], u32)>,
) {
    out.put_slice(b"RS+ ");
    out.put_slice(account);
    out.put_u8(b' ');
    out.put_slice(subject);
    if let Some((queue, weight)) = queue {
        out.put_u8(b' ');
        out.put_slice(queue);
        out.put_u8(b' ');
        crate::write_u64(out, u64::from(weight));
    }
    out.put_slice(b"\r\n");
}

/// `RS- <account> <subject> [<queue>]␍␊`
pub fn write_rs_minus(out: &mut BytesMut, account: &[u8], subject: &[u8], queue: Option<&[u8]>) {
    out.put_slice(b"RS- ");
    out.put_slice(account);
    out.put_u8(b' ');
    out.put_slice(subject);
    if let Some(queue) = queue {
        out.put_u8(b' ');
        out.put_slice(queue);
    }
    out.put_slice(b"\r\n");
}

/// A routed message. `queues` are the queue groups the receiver should deliver to.
#[allow(clippy::too_many_arguments)]
pub fn write_rmsg<'q>(
    out: &mut BytesMut,
    account: &[u8],
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: impl Iterator<Item = &'q [u8]> + Clone,
    header: Option<(&[u8], &[u8])>,
    size_token: &[u8],
    payload: &[u8],
) {
    out.reserve(account.len() + subject.len() + payload.len() + 48);
    out.put_slice(if header.is_some() { b"HMSG " } else { b"RMSG " });
    out.put_slice(account);
    out.put_u8(b' ');
    out.put_slice(subject);
    out.put_u8(b' ');
    let has_queues = queues.clone().next().is_some();
    match (reply, has_queues) {
        (Some(reply), true) => {
            out.put_slice(b"+ ");
            out.put_slice(reply);
            out.put_u8(b' ');
        }
        (None, true) => out.put_slice(b"| "),
        (Some(reply), false) => {
            out.put_slice(reply);
            out.put_u8(b' ');
        }
        (None, false) => {}
    }
    for q in queues {
        out.put_slice(q);
        out.put_u8(b' ');
    }
    if let Some((header_token, _)) = header {
        out.put_slice(header_token);
        out.put_u8(b' ');
    }
    out.put_slice(size_token);
    out.put_slice(b"\r\n");
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(input: &[u8]) -> RouteOp<'_> {
        match parse_route_op(input, &Limits::default()) {
            Ok(Parsed::Op(op, n)) => {
                assert_eq!(n, input.len());
                op
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn interest_ops() {
        assert_eq!(
            op(b"RS+ $G foo.>\r\n"),
            RouteOp::Sub {
                account: b"$G",
                subject: b"foo.>",
                queue: None,
                weight: 0
            }
        );
        assert_eq!(
            op(b"RS+ $G work.q workers 3\r\n"),
            RouteOp::Sub {
                account: b"$G",
                subject: b"work.q",
                queue: Some(b"workers"),
                weight: 3
            }
        );
        assert_eq!(
            op(b"RS- $G work.q workers\r\n"),
            RouteOp::Unsub {
                account: b"$G",
                subject: b"work.q",
                queue: Some(b"workers")
            }
        );
        assert!(parse_route_op(b"RS+ $G\r\n", &Limits::default()).is_err());
    }

    #[test]
    fn message_forms_round_trip() {
        type Case<'a> = (Option<&'a [u8]>, &'a [&'a [u8]]);
        let cases: [Case<'_>; 4] = [
            (None, &[]),
            (Some(b"_INBOX.1"), &[]),
            (Some(b"r"), &[b"q1", b"q2"]),
            (None, &[b"q1"]),
        ];
        for (reply, queues) in cases {
            for header in [None, Some((&b"12"[..], &b"14"[..]))] {
                let mut out = BytesMut::new();
                let payload: &[u8] = if header.is_some() {
                    b"NATS/1.0\r\n\r\nhi"
                } else {
                    b"hi"
                };
                let size: &[u8] = if header.is_some() { b"14" } else { b"2" };
                write_rmsg(
                    &mut out,
                    b"$G",
                    b"foo",
                    reply,
                    queues.iter().copied(),
                    header,
                    size,
                    payload,
                );
                match op(&out) {
                    RouteOp::Msg {
                        account,
                        queues: q,
                        msg:
                            Message {
                                subject,
                                reply: r,
                                payload: p,
                                header_len,
                                ..
                            },
                    } => {
                        assert_eq!(
                            (account, subject, r, p),
                            (&b"$G"[..], &b"foo"[..], reply, payload)
                        );
                        assert_eq!(q, queues.join(&b' ').as_slice());
                        assert_eq!(header_len, header.map(|_| 12));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn bad_message_forms() {
        for bad in [
            &b"RMSG $G foo x y 2\r\nhi\r\n"[..],
            b"RMSG $G 2\r\n",
            b"RMSG $G foo + r 2\r\nhi\r\n",
            b"XYZ\r\n",
        ] {
            assert!(
                parse_route_op(bad, &Limits::default()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
