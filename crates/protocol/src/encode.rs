//! Encoders for what the server writes. All write into a caller-owned buffer, so a message
//! delivered to N subscribers costs N appends and no allocation.

use bytes::{BufMut, BytesMut};

/// Appends `n` in decimal.
pub fn write_u64(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// `MSG <subject> <sid> [reply] <size>␍␊<payload>␍␊`. `size_token` is the size as the
/// publisher wrote it (the reference echoes it verbatim); pass `None` to print `payload.len()`.
pub fn write_msg(
    out: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    size_token: Option<&[u8]>,
    payload: &[u8],
) {
    out.reserve(subject.len() + sid.len() + reply.map_or(0, |r| r.len() + 1) + payload.len() + 20);
    out.put_slice(b"MSG ");
    out.put_slice(subject);
    out.put_u8(b' ');
    out.put_slice(sid);
    out.put_u8(b' ');
    if let Some(reply) = reply {
        out.put_slice(reply);
        out.put_u8(b' ');
    }
    match size_token {
        Some(token) => out.put_slice(token),
        None => write_u64(out, payload.len() as u64),
    }
    out.put_slice(b"\r\n");
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// `HMSG <subject> <sid> [reply] <hdr> <total>␍␊<header+payload>␍␊`.
pub fn write_hmsg(
    out: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    header_token: &[u8],
    size_token: &[u8],
    payload: &[u8],
) {
    out.reserve(subject.len() + sid.len() + reply.map_or(0, |r| r.len() + 1) + payload.len() + 32);
    out.put_slice(b"HMSG ");
    out.put_slice(subject);
    out.put_u8(b' ');
    out.put_slice(sid);
    out.put_u8(b' ');
    if let Some(reply) = reply {
        out.put_slice(reply);
        out.put_u8(b' ');
    }
    out.put_slice(header_token);
    out.put_u8(b' ');
    out.put_slice(size_token);
    out.put_slice(b"\r\n");
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// `-ERR '<text>'␍␊`.
pub fn write_err(out: &mut BytesMut, text: &str) {
    out.put_slice(b"-ERR '");
    out.put_slice(text.as_bytes());
    out.put_slice(b"'\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_msg_and_hmsg() {
        let mut out = BytesMut::new();
        write_msg(&mut out, b"foo", b"1", None, Some(b"05"), b"hello");
        write_msg(&mut out, b"foo", b"2", Some(b"r"), None, b"");
        write_hmsg(
            &mut out,
            b"foo",
            b"3",
            None,
            b"12",
            b"14",
            b"NATS/1.0\r\n\r\nhi",
        );
        write_err(&mut out, "Invalid Subject");
        assert_eq!(
            &out[..],
            &b"MSG foo 1 05\r\nhello\r\nMSG foo 2 r 0\r\n\r\nHMSG foo 3 12 14\r\nNATS/1.0\r\n\r\nhi\r\n-ERR 'Invalid Subject'\r\n"[..]
        );
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 999, u64::MAX] {
            let mut out = BytesMut::new();
            write_u64(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }
}
