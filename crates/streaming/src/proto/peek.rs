//! Reading a few fields of an encoded message without decoding it (the hot paths: acks
//! and stored messages).

/// A field of an encoded protobuf message, as [`walk_fields`] sees it.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed 32/64-bit values (not used by these messages; skipped).
    Fixed,
}

/// Calls `f(field number, value)` for each field of an encoded message, without decoding it
/// (no allocation). False if the bytes are not well-formed protobuf.
fn walk_fields<'a>(mut b: &'a [u8], mut f: impl FnMut(u64, Field<'a>)) -> bool {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else {
            return false;
        };
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return false;
        }
        let value = match wire {
            0 => match varint(&mut b) {
                Some(v) => Field::Varint(v),
                None => return false,
            },
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                match b.get(n..) {
                    Some(rest) => b = rest,
                    None => return false,
                }
                Field::Fixed
            }
            2 => {
                let Some(n) = varint(&mut b).and_then(|n| usize::try_from(n).ok()) else {
                    return false;
                };
                if n > b.len() {
                    return false;
                }
                let (v, rest) = b.split_at(n);
                b = rest;
                Field::Bytes(v)
            }
            _ => return false,
        };
        f(field, value);
    }
    true
}

/// The sequence and the `data` length of an encoded [`MsgProto`], read without decoding it
/// (no allocation). `None` if the bytes are not a well-formed protobuf message. Scalars
/// repeated on the wire count as proto3 does (the last one wins).
pub fn peek_msg_proto(b: &[u8]) -> Option<(u64, usize)> {
    let (mut seq, mut data_len) = (0u64, 0usize);
    let ok = walk_fields(b, |field, value| match (field, value) {
        (1, Field::Varint(v)) => seq = v,
        (4, Field::Bytes(d)) => data_len = d.len(),
        _ => {}
    });
    ok.then_some((seq, data_len))
}

/// The channel (`subject`) and sequence of an encoded [`Ack`], read without decoding it (no
/// allocation); `None` if it is not well-formed protobuf or the channel is not UTF-8.
pub fn peek_ack(b: &[u8]) -> Option<(&str, u64)> {
    let (mut subject, mut seq): (&[u8], u64) = (b"", 0);
    let ok = walk_fields(b, |field, value| match (field, value) {
        (1, Field::Bytes(s)) => subject = s,
        (2, Field::Varint(v)) => seq = v,
        _ => {}
    });
    if !ok {
        return None;
    }
    Some((std::str::from_utf8(subject).ok()?, seq))
}
