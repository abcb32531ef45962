//! The resumable client-op parser.

use crate::error::ProtoError;

/// Limits the parser enforces before buffering anything large.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest argument part of a control line (after `OP `), `max_control_line`.
    pub max_control_line: usize,
    /// Largest `PUB` payload (header + payload for `HPUB`), `max_payload`.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_line: 4096,
            max_payload: 1024 * 1024,
        }
    }
}

/// A message as a client publishes it (`PUB`, `HPUB`) or a route forwards it (`RMSG`, `HMSG`).
/// Slices borrow from the read buffer; `payload` holds the header block and the body, and the
/// size tokens are kept as sent because the server echoes them in `MSG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub subject: &'a [u8],
    pub reply: Option<&'a [u8]>,
    /// The header block's length; `None` without headers.
    pub header_len: Option<usize>,
    /// The header size as sent; empty without headers.
    pub header_token: &'a [u8],
    pub size_token: &'a [u8],
    pub payload: &'a [u8],
}

/// One operation sent by a client. Slices borrow from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp<'a> {
    /// `CONNECT` with its raw JSON argument.
    Connect(&'a [u8]),
    /// `PUB` (`header_len` is `None`) or `HPUB`.
    Pub(Message<'a>),
    Sub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        sid: &'a [u8],
    },
    /// `UNSUB`; `max` is `None` when absent, `Some(None)` when present but not a number.
    Unsub {
        sid: &'a [u8],
        max: Option<Option<u64>>,
    },
    Ping,
    Pong,
    /// `+OK` from a client is tolerated and ignored.
    Ok,
    /// `INFO` from a client: ignored when it is JSON, else the connection is closed.
    Info(&'a [u8]),
}

/// Reads the payload a message's control line (ending at `consumed`) announces: the sizes
/// checked against each other and the limits, then the payload and its `␍␊`, complete or not
/// yet. `op` names the operation in errors.
// Always inlined: outlined, it cost each PUB ~10% more instructions (callgrind, pub-only).
#[inline(always)]
pub(crate) fn message<'a>(
    buf: &'a [u8],
    consumed: usize,
    (subject, reply): (&'a [u8], Option<&'a [u8]>),
    header_token: Option<&'a [u8]>,
    size_token: &'a [u8],
    limits: &Limits,
    op: &'static str,
) -> Result<Parsed<Message<'a>>, ProtoError> {
    let size = parse_size(size_token).ok_or(ProtoError::BadArgs { op })?;
    let header_len = match header_token {
        Some(token) => {
            let h = parse_size(token).ok_or(ProtoError::BadArgs { op })?;
            if h > size {
                return Err(ProtoError::BadArgs { op });
            }
            Some(h)
        }
        None => None,
    };
    if size > limits.max_payload {
        return Err(ProtoError::MaxPayload {
            size,
            max: limits.max_payload,
        });
    }
    let total = consumed + size + 2;
    if buf.len() < total {
        return Ok(Parsed::Incomplete { need: Some(total) });
    }
    if &buf[consumed + size..total] != b"\r\n" {
        return Err(ProtoError::UnknownOp);
    }
    let message = Message {
        subject,
        reply,
        header_len,
        header_token: header_token.unwrap_or_default(),
        size_token,
        payload: &buf[consumed..consumed + size],
    };
    Ok(Parsed::Op(message, total))
}

/// Result of one parse step.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<Op> {
    /// A whole operation and the number of bytes it used.
    Op(Op, usize),
    /// More bytes are needed. `need` is the total buffer length that completes the op, when
    /// known (a payload), so the caller can reserve it in one go.
    Incomplete { need: Option<usize> },
}

impl<Op> Parsed<Op> {
    /// The same step with the op turned into another.
    pub fn map<T>(self, f: impl FnOnce(Op) -> T) -> Parsed<T> {
        match self {
            Parsed::Op(op, used) => Parsed::Op(f(op), used),
            Parsed::Incomplete { need } => Parsed::Incomplete { need },
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Connect,
    Pub,
    HPub,
    Sub,
    Unsub,
    Ping,
    Pong,
    Ok,
    Err,
    Info,
}

const VERBS: [(&[u8], Verb); 10] = [
    (b"CONNECT", Verb::Connect),
    (b"PUB", Verb::Pub),
    (b"HPUB", Verb::HPub),
    (b"SUB", Verb::Sub),
    (b"UNSUB", Verb::Unsub),
    (b"PING", Verb::Ping),
    (b"PONG", Verb::Pong),
    (b"+OK", Verb::Ok),
    (b"-ERR", Verb::Err),
    (b"INFO", Verb::Info),
];

pub(crate) fn is_sep(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Classifies the verb at the start of `line` (which may be incomplete). Like the reference's
/// byte state machine, PING, PONG and +OK ignore whatever follows them on the line.
fn classify(buf: &[u8], line_complete: bool) -> Result<Option<(Verb, usize)>, ProtoError> {
    let verb_len = buf
        .iter()
        .position(|&b| is_sep(b) || b == b'\r' || b == b'\n')
        .unwrap_or(buf.len());
    let word = &buf[..verb_len];
    let word_complete = verb_len < buf.len() || line_complete;
    for &(name, verb) in &VERBS {
        let lenient = matches!(verb, Verb::Ping | Verb::Pong | Verb::Ok);
        if word.len() >= name.len() && word[..name.len()].eq_ignore_ascii_case(name) {
            if word.len() == name.len() {
                return Ok(Some((verb, verb_len)));
            }
            if lenient {
                return Ok(Some((verb, name.len())));
            }
        } else if !word_complete
            && word.len() < name.len()
            && name[..word.len()].eq_ignore_ascii_case(word)
        {
            // Still a possible prefix of this verb: wait for more bytes.
            return Ok(None);
        }
    }
    Err(ProtoError::UnknownOp)
}

/// Splits whitespace-separated arguments into `out`; returns how many there were, or
/// `out.len() + 1` when there were more than fit.
pub(crate) fn split_args<'a>(args: &'a [u8], out: &mut [&'a [u8]]) -> usize {
    let mut n = 0;
    for arg in args.split(|&b| is_sep(b)).filter(|a| !a.is_empty()) {
        if n == out.len() {
            return n + 1;
        }
        out[n] = arg;
        n += 1;
    }
    n
}

/// Parses a size: 1 to 9 ASCII digits.
pub(crate) fn parse_size(token: &[u8]) -> Option<usize> {
    if token.is_empty() || token.len() > 9 {
        return None;
    }
    token.iter().try_fold(0usize, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + usize::from(b - b'0'))
    })
}

fn parse_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 19 {
        return None;
    }
    token.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// Parses one client operation from the front of `buf`.
///
/// Never consumes anything on incomplete input and never panics. Errors are final: the
/// connection is to be closed (after sending [`ProtoError::err_text`], if any).
pub fn parse_client_op<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Parsed<ClientOp<'a>>, ProtoError> {
    let newline = memchr::memchr(b'\n', buf);
    let line_complete = newline.is_some();
    let Some((verb, verb_len)) = classify(buf, line_complete)? else {
        return Ok(Parsed::Incomplete { need: None });
    };
    let Some(nl) = newline else {
        // The arguments seen so far already break the limit: fail before buffering more.
        if buf.len() - verb_len > limits.max_control_line + 1 {
            return Err(ProtoError::MaxControlLine);
        }
        return Ok(Parsed::Incomplete { need: None });
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let consumed = nl + 1;
    let rest = &buf[verb_len.min(line_end)..line_end];

    match verb {
        Verb::Ping => return Ok(Parsed::Op(ClientOp::Ping, consumed)),
        Verb::Pong => return Ok(Parsed::Op(ClientOp::Pong, consumed)),
        Verb::Ok => return Ok(Parsed::Op(ClientOp::Ok, consumed)),
        _ => {}
    }
    // Every other verb needs a separator before its arguments; a bare CONNECT is closed
    // without an error, as the reference does.
    if verb == Verb::Connect && rest.is_empty() {
        return Err(ProtoError::BadArgs { op: "CONNECT" });
    }
    if rest.first().is_none_or(|&b| !is_sep(b)) {
        return Err(ProtoError::UnknownOp);
    }
    let start = rest.iter().position(|&b| !is_sep(b)).unwrap_or(rest.len());
    let args = &rest[start..];
    if args.len() > limits.max_control_line {
        return Err(ProtoError::MaxControlLine);
    }

    let mut a: [&[u8]; 4] = [b""; 4];
    match verb {
        Verb::Connect => Ok(Parsed::Op(ClientOp::Connect(args), consumed)),
        Verb::Info => Ok(Parsed::Op(ClientOp::Info(args), consumed)),
        Verb::Err => Err(ProtoError::ClientErr),
        Verb::Sub => match split_args(args, &mut a[..3]) {
            2 => Ok(Parsed::Op(
                ClientOp::Sub {
                    subject: a[0],
                    queue: None,
                    sid: a[1],
                },
                consumed,
            )),
            3 => Ok(Parsed::Op(
                ClientOp::Sub {
                    subject: a[0],
                    queue: Some(a[1]),
                    sid: a[2],
                },
                consumed,
            )),
            _ => Err(ProtoError::BadArgs { op: "SUB" }),
        },
        Verb::Unsub => match split_args(args, &mut a[..2]) {
            1 => Ok(Parsed::Op(
                ClientOp::Unsub {
                    sid: a[0],
                    max: None,
                },
                consumed,
            )),
            2 => Ok(Parsed::Op(
                ClientOp::Unsub {
                    sid: a[0],
                    max: Some(parse_u64(a[1])),
                },
                consumed,
            )),
            _ => Err(ProtoError::BadArgs { op: "UNSUB" }),
        },
        Verb::Pub | Verb::HPub => {
            let is_h = verb == Verb::HPub;
            let op = if is_h { "HPUB" } else { "PUB" };
            let n = split_args(args, &mut a);
            let sizes = usize::from(is_h) + 1;
            if n != sizes + 1 && n != sizes + 2 {
                return Err(ProtoError::BadArgs { op });
            }
            let header_token = is_h.then(|| a[n - 2]);
            let reply = (n == sizes + 2).then_some(a[1]);
            Ok(message(
                buf,
                consumed,
                (a[0], reply),
                header_token,
                a[n - 1],
                limits,
                op,
            )?
            .map(ClientOp::Pub))
        }
        Verb::Ping | Verb::Pong | Verb::Ok => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Result<Parsed<ClientOp<'_>>, ProtoError> {
        parse_client_op(input, &Limits::default())
    }

    fn op(input: &[u8]) -> ClientOp<'_> {
        match one(input) {
            Ok(Parsed::Op(op, n)) => {
                assert_eq!(n, input.len(), "whole input consumed");
                op
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    /// Parses a whole stream, feeding it in the given chunks, the way a read loop does.
    fn parse_stream(chunks: &[&[u8]]) -> Result<Vec<String>, ProtoError> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Parsed::Op(op, n) = parse_client_op(&buf, &Limits::default())? {
                out.push(format!("{op:?}"));
                buf.drain(..n);
            }
        }
        assert!(
            buf.is_empty(),
            "leftover {:?}",
            String::from_utf8_lossy(&buf)
        );
        Ok(out)
    }

    const STREAM: &[u8] =
        b"CONNECT {\"verbose\":false,\"name\":\"a b\"}\r\nSUB foo 1\r\nsub foo q 2\r\n\
PUB foo 5\r\nhello\r\npub foo bar 0\r\n\r\nHPUB foo rep 12 14\r\nNATS/1.0\r\n\r\nhi\r\n\
UNSUB 1\r\nunsub 2 10\r\nPING\r\nPONG\r\n+OK\r\nPUB a 4\r\n\r\n\r\n\r\nPING\n";

    #[test]
    fn every_split_point_gives_the_same_ops() {
        let whole = parse_stream(&[STREAM]).unwrap();
        assert_eq!(whole.len(), 13);
        for i in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(i);
            assert_eq!(parse_stream(&[a, b]).unwrap(), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(parse_stream(&bytes).unwrap(), whole);
    }

    #[test]
    fn connect_keeps_raw_json() {
        assert_eq!(
            op(b"CONNECT {\"a\": 1}\r\n"),
            ClientOp::Connect(b"{\"a\": 1}")
        );
        assert_eq!(op(b"connect\t{}\n"), ClientOp::Connect(b"{}"));
    }

    #[test]
    fn pub_forms() {
        assert_eq!(
            op(b"PUB foo 05\r\nhello\r\n"),
            ClientOp::Pub(Message {
                subject: b"foo",
                reply: None,
                header_len: None,
                header_token: b"",
                size_token: b"05",
                payload: b"hello"
            })
        );
        match op(b"pub\tfoo  reply\t2\r\nhi\r\n") {
            ClientOp::Pub(Message {
                subject,
                reply,
                payload,
                ..
            }) => {
                assert_eq!(
                    (subject, reply, payload),
                    (&b"foo"[..], Some(&b"reply"[..]), &b"hi"[..])
                );
            }
            other => panic!("{other:?}"),
        }
        // Payloads may contain line ends.
        match op(b"PUB a 4\r\n\r\n\r\n\r\n") {
            ClientOp::Pub(Message { payload, .. }) => assert_eq!(payload, b"\r\n\r\n"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hpub_forms() {
        match op(b"HPUB foo 22 33\r\nNATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n") {
            ClientOp::Pub(Message {
                header_len,
                header_token,
                size_token,
                payload,
                reply,
                ..
            }) => {
                assert_eq!(header_len, Some(22));
                assert_eq!((header_token, size_token), (&b"22"[..], &b"33"[..]));
                assert_eq!(payload.len(), 33);
                assert_eq!(reply, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            one(b"HPUB foo 23 22\r\n"),
            Err(ProtoError::BadArgs { op: "HPUB" })
        );
    }

    #[test]
    fn sub_unsub_forms() {
        assert_eq!(
            op(b"SUB foo 1\r\n"),
            ClientOp::Sub {
                subject: b"foo",
                queue: None,
                sid: b"1"
            }
        );
        assert_eq!(
            op(b"SUB foo q 1\r\n"),
            ClientOp::Sub {
                subject: b"foo",
                queue: Some(b"q"),
                sid: b"1"
            }
        );
        assert_eq!(
            op(b"UNSUB 1\r\n"),
            ClientOp::Unsub {
                sid: b"1",
                max: None
            }
        );
        assert_eq!(
            op(b"UNSUB 1 5\r\n"),
            ClientOp::Unsub {
                sid: b"1",
                max: Some(Some(5))
            }
        );
        assert_eq!(
            op(b"UNSUB 1 x\r\n"),
            ClientOp::Unsub {
                sid: b"1",
                max: Some(None)
            }
        );
    }

    #[test]
    fn lenient_ping_pong_ok() {
        assert_eq!(op(b"PING xyz\r\n"), ClientOp::Ping);
        assert_eq!(op(b"pingpong\r\n"), ClientOp::Ping);
        assert_eq!(op(b"PONG\n"), ClientOp::Pong);
        assert_eq!(op(b"+OK\r\n"), ClientOp::Ok);
    }

    #[test]
    fn unknown_ops_fail_as_soon_as_they_are_seen() {
        for bad in [
            &b"FOO\r\n"[..],
            b"F",
            b"PX",
            b"MSG foo 1 2\r\n",
            b"SUBX a 1\r\n",
            b"\r\n",
            b" PING\r\n",
        ] {
            assert_eq!(
                one(bad),
                Err(ProtoError::UnknownOp),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Verbs that need arguments need a separator.
        assert_eq!(one(b"PUB\r\n"), Err(ProtoError::UnknownOp));
        assert_eq!(
            one(b"CONNECT\r\n"),
            Err(ProtoError::BadArgs { op: "CONNECT" })
        );
        assert_eq!(one(b"CONNECTX {}\r\n"), Err(ProtoError::UnknownOp));
        // Prefixes of valid verbs wait for more.
        for partial in [
            &b"P"[..],
            b"PU",
            b"pub",
            b"HP",
            b"CONNEC",
            b"UNSU",
            b"+",
            b"-E",
            b"",
        ] {
            assert_eq!(one(partial), Ok(Parsed::Incomplete { need: None }));
        }
    }

    #[test]
    fn client_err_closes() {
        assert_eq!(one(b"-ERR 'x'\r\n"), Err(ProtoError::ClientErr));
    }

    #[test]
    fn bad_argument_counts_and_sizes() {
        for (bad, op) in [
            (&b"PUB foo\r\n"[..], "PUB"),
            (b"PUB a b c 1\r\n", "PUB"),
            (b"PUB foo x\r\n", "PUB"),
            (b"PUB foo -1\r\n", "PUB"),
            (b"PUB foo 1234567890\r\n", "PUB"),
            (b"HPUB foo 1\r\n", "HPUB"),
            (b"SUB foo\r\n", "SUB"),
            (b"SUB a b c d\r\n", "SUB"),
            (b"UNSUB \r\n", "UNSUB"),
            (b"UNSUB 1 2 3\r\n", "UNSUB"),
        ] {
            assert_eq!(
                one(bad),
                Err(ProtoError::BadArgs { op }),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn payload_terminator_is_strict() {
        assert_eq!(one(b"PUB foo 2\r\nhiXY"), Err(ProtoError::UnknownOp));
        assert_eq!(one(b"PUB foo 2\r\nhello\r\n"), Err(ProtoError::UnknownOp));
        assert_eq!(
            one(b"PUB foo 2\r\nhi\r"),
            Ok(Parsed::Incomplete { need: Some(15) })
        );
    }

    #[test]
    fn max_payload_is_checked_on_the_control_line() {
        assert_eq!(
            one(b"PUB foo 2000000\r\n"),
            Err(ProtoError::MaxPayload {
                size: 2_000_000,
                max: 1 << 20
            })
        );
        assert_eq!(
            one(b"PUB foo 1048576\r\n"),
            Ok(Parsed::Incomplete {
                need: Some(17 + 1048576 + 2)
            })
        );
    }

    #[test]
    fn max_control_line_complete_and_partial() {
        let limits = Limits {
            max_control_line: 10,
            max_payload: 100,
        };
        assert!(matches!(
            parse_client_op(b"SUB 0123456789 1\r\n", &limits),
            Err(ProtoError::MaxControlLine)
        ));
        assert!(matches!(
            parse_client_op(b"SUB 012345 1\r\n", &limits),
            Ok(Parsed::Op(..))
        ));
        assert!(matches!(
            parse_client_op(b"SUB 0123456789abc", &limits),
            Err(ProtoError::MaxControlLine)
        ));
        assert!(matches!(
            parse_client_op(b"SUB 01234", &limits),
            Ok(Parsed::Incomplete { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_overconsumes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let limits = Limits { max_control_line: 64, max_payload: 64 };
            let mut pos = 0;
            for _ in 0..400 {
                match parse_client_op(&data[pos..], &limits) {
                    Ok(Parsed::Op(_, n)) => {
                        proptest::prop_assert!(n > 0 && pos + n <= data.len());
                        pos += n;
                    }
                    _ => break,
                }
            }
        }

        #[test]
        fn split_anywhere_equals_whole(split in 0usize..STREAM.len()) {
            let whole = parse_stream(&[STREAM]).unwrap();
            let (a, b) = STREAM.split_at(split);
            proptest::prop_assert_eq!(parse_stream(&[a, b]).unwrap(), whole);
        }
    }
}
