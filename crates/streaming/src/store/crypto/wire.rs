//! Rewriting an encoded `MsgProto` whose `data` (field 4) is sealed into the same record with
//! the plaintext, without decoding the other fields: the bytes before and after `data` are
//! copied as they are, so the result is exactly what encoding the decrypted message gives.

use std::ops::Range;

use bytes::{BufMut, BytesMut};
use prost::encoding::{decode_varint, encode_varint};

use super::seal::{OpenError, Sealer, Stored};

/// `MsgProto.data`: field 4, length-delimited.
const DATA_KEY: u64 = (4 << 3) | 2;

/// Where `data` sits in an encoded `MsgProto`.
pub(crate) struct DataField {
    /// The whole field: key, length and bytes.
    field: Range<usize>,
    /// The bytes alone.
    data: Range<usize>,
}

/// The `data` field of an encoded `MsgProto`: `Ok(None)` when the record has none; `Err`
/// when it is not well-formed protobuf.
pub(crate) fn find_data(rec: &[u8]) -> Result<Option<DataField>, RewriteError> {
    let malformed = |_| RewriteError::Malformed;
    let mut b = rec;
    let pos = |b: &[u8]| rec.len() - b.len();
    let mut found = None;
    while !b.is_empty() {
        let start = pos(b);
        let key = decode_varint(&mut b).map_err(malformed)?;
        let skip = match key & 7 {
            0 => {
                decode_varint(&mut b).map_err(malformed)?;
                0
            }
            1 => 8,
            5 => 4,
            2 => usize::try_from(decode_varint(&mut b).map_err(malformed)?)
                .map_err(|_| RewriteError::Malformed)?,
            _ => return Err(RewriteError::Malformed),
        };
        if key >> 3 == 0 || skip > b.len() {
            return Err(RewriteError::Malformed);
        }
        let value = pos(b)..pos(b) + skip;
        b = &b[skip..];
        if key == DATA_KEY {
            // The last occurrence wins, as in protobuf decoding.
            found = Some(DataField {
                field: start..value.end,
                data: value,
            });
        }
    }
    Ok(found)
}

/// Why a record could not be rewritten.
pub(crate) enum RewriteError {
    Malformed,
    Open(OpenError),
}

/// Appends `rec` to `out` with its sealed `data` opened; `Ok(None)` (nothing appended) when
/// the record has no sealed data and can be used as it is. Returns the plaintext length.
pub(crate) fn open_record(
    sealer: &Sealer,
    rec: &[u8],
    out: &mut BytesMut,
) -> Result<Option<usize>, RewriteError> {
    let Some(DataField { field, data }) = find_data(rec)? else {
        return Ok(None);
    };
    let stored = Stored::classify(&rec[data]).map_err(RewriteError::Open)?;
    let Stored::Sealed { ciphertext, .. } = &stored else {
        return Ok(None);
    };
    let len = ciphertext.len();
    if len == 0 {
        // Nothing to decrypt, but the tag is still checked: an empty plaintext must be
        // authentic too (an unchecked one would let anyone blank a message without the key).
        sealer
            .open_into(&stored, &mut [])
            .map_err(RewriteError::Open)?;
    }
    let mark = out.len();
    out.reserve(rec.len());
    out.put_slice(&rec[..field.start]);
    if len > 0 {
        // An empty plaintext is no field at all in protobuf.
        encode_varint(DATA_KEY, out);
        encode_varint(len as u64, out);
        let at = out.len();
        out.resize(at + len, 0);
        if let Err(e) = sealer.open_into(&stored, &mut out[at..]) {
            out.truncate(mark);
            return Err(RewriteError::Open(e));
        }
    }
    out.put_slice(&rec[field.end..]);
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;

    use super::*;
    use crate::proto::MsgProto;
    use crate::store::crypto::options::{Cipher, EncryptionKey};
    use crate::store::crypto::seal::NonceSource;

    #[test]
    fn rewrite_equals_encoding_the_plain_message() {
        let sealer = Sealer::new(Cipher::Aes, &EncryptionKey::new("k").master());
        let mut nonces = NonceSource::new();
        // Sizes around the one-byte/two-byte length boundary, where sealing changes the
        // width of the length prefix.
        for len in [
            1usize, 2, 98, 99, 100, 127, 128, 200, 16_354, 16_355, 70_000,
        ] {
            let plain = MsgProto {
                sequence: 7,
                subject: "foo.bar".into(),
                reply: "inbox".into(),
                data: Bytes::from(vec![b'p'; len]),
                timestamp: 1_700_000_000_000_000_000,
                crc32: 9,
                ..Default::default()
            };
            let sealed = MsgProto {
                data: sealer.seal(&nonces.next(7), &plain.data).unwrap(),
                ..plain.clone()
            };
            let rec = sealed.encode_to_vec();
            let mut out = BytesMut::from(&b"prefix"[..]);
            let n = open_record(&sealer, &rec, &mut out).ok().flatten();
            assert_eq!(n, Some(len));
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(&out[6..], plain.encode_to_vec(), "len {len}");
        }
    }

    /// Fuzzing (`crypto_records`): a sealed payload with an empty ciphertext and a forged
    /// tag was rewritten to an empty message without the tag being checked, while `lookup`
    /// of the same record reported a decryption error.
    #[test]
    fn an_empty_plaintext_is_authenticated_too() {
        let sealer = Sealer::new(Cipher::Aes, &EncryptionKey::new("k").master());
        let crash = [
            0x22, 0x1d, 0x02, 0x4c, 0x02, 0x03, 0x03, 0xff, 0xf7, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x01, 0x21, 0xdc, 0x31, 0xdd, 0x1b, 0xdb, 0x29, 0x00, 0x02, 0x03, 0x97, 0x4c, 0xee,
            0x7b, 0xaf, 0xd2, 0x61, 0x56, 0xdf, 0x66, 0xbc, 0xf3, 0x0a, 0x40, 0x01,
        ];
        let mut out = BytesMut::new();
        assert!(matches!(
            open_record(&sealer, &crash, &mut out),
            Err(RewriteError::Open(OpenError::Auth))
        ));
        assert!(out.is_empty());
        // A genuine empty plaintext still opens, to a record without `data`.
        let genuine = MsgProto {
            sequence: 5,
            data: sealer.seal(&NonceSource::new().next(5), b"").unwrap(),
            ..Default::default()
        };
        let n = open_record(&sealer, &genuine.encode_to_vec(), &mut out)
            .ok()
            .flatten();
        assert_eq!(n, Some(0));
        assert_eq!(
            &out[..],
            MsgProto {
                sequence: 5,
                ..Default::default()
            }
            .encode_to_vec()
        );
    }

    #[test]
    fn records_without_sealed_data_are_left_alone() {
        let sealer = Sealer::new(Cipher::ChaCha, &EncryptionKey::new("k").master());
        let mut out = BytesMut::new();
        for m in [
            MsgProto {
                sequence: 1,
                ..Default::default()
            },
            MsgProto {
                sequence: 2,
                data: Bytes::from_static(b"legacy plaintext"),
                ..Default::default()
            },
        ] {
            let rec = m.encode_to_vec();
            assert!(matches!(open_record(&sealer, &rec, &mut out), Ok(None)));
        }
        assert!(out.is_empty());
        for bad in [&[0x22, 0x05, b'a'][..], &[0x0b], &[0x08]] {
            assert!(matches!(
                open_record(&sealer, bad, &mut out),
                Err(RewriteError::Malformed)
            ));
        }
        // A wrong key leaves `out` as it was.
        let other = Sealer::new(Cipher::ChaCha, &EncryptionKey::new("other").master());
        let rec = MsgProto {
            sequence: 3,
            data: other.seal(&NonceSource::new().next(3), b"secret").unwrap(),
            ..Default::default()
        }
        .encode_to_vec();
        out.put_slice(b"kept");
        assert!(matches!(
            open_record(&sealer, &rec, &mut out),
            Err(RewriteError::Open(OpenError::Auth))
        ));
        assert_eq!(&out[..], b"kept");
    }
}
