//! Entry points for the fuzz targets in `fuzz/` (not a stable API): the crate-private pieces
//! of encryption at rest that open stored records, used exactly as the crypto store uses
//! them. Everything else the targets need (protobuf decoding, `peek_*`, the file store) is
//! public already.

use bytes::{Bytes, BytesMut};

use crate::store::crypto::seal::{NONCE_LEN, OpenError, Sealer};
use crate::store::crypto::wire::{RewriteError, open_record};
use crate::store::crypto::{Cipher, EncryptionKey};

/// Why a record did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// Not well-formed protobuf (`open_record` only).
    Malformed,
    /// Marked as encrypted but shorter than a nonce and a tag.
    TooShort,
    /// The tag does not verify.
    Auth,
}

/// One channel's sealer, as the crypto store builds it for `channel` under `key`.
pub struct ChannelSealer(Sealer);

impl ChannelSealer {
    pub fn new(cipher: Cipher, key: &[u8], channel: &str) -> ChannelSealer {
        let key = EncryptionKey::new(key).master().for_channel(channel);
        ChannelSealer(Sealer::new(cipher, &key))
    }

    /// `plain` sealed with the nonce `nonce_prefix | counter` (the store draws the prefix at
    /// random; a target fixes it to stay deterministic).
    pub fn seal(&self, nonce_prefix: [u8; 4], counter: u64, plain: &[u8]) -> Option<Bytes> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&nonce_prefix);
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        self.0.seal(&nonce, plain).ok()
    }

    /// The plaintext of a stored `MsgProto.data` (what `lookup` and `read_batch` do).
    pub fn open_payload(&self, payload: &Bytes) -> Result<Bytes, OpenFailure> {
        self.0.open(payload).map_err(failure)
    }

    /// An encoded `MsgProto` with its sealed `data` opened in place (what
    /// `read_batch_encoded` does): `Ok(None)` when the record has no sealed data; else the
    /// rewritten record and the plaintext length.
    pub fn open_record(&self, rec: &[u8]) -> Result<Option<(Bytes, usize)>, OpenFailure> {
        let mut out = BytesMut::new();
        match open_record(&self.0, rec, &mut out) {
            Ok(None) => Ok(None),
            Ok(Some(n)) => Ok(Some((out.freeze(), n))),
            Err(RewriteError::Malformed) => Err(OpenFailure::Malformed),
            Err(RewriteError::Open(e)) => Err(failure(e)),
        }
    }
}

fn failure(e: OpenError) -> OpenFailure {
    match e {
        OpenError::TooShort(_) => OpenFailure::TooShort,
        OpenError::Auth => OpenFailure::Auth,
    }
}
