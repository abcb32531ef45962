//! [`LogSealer`]: payload encryption for a replicated log, as the reference applies it to the
//! command entries of its RAFT log: keyed with `SHA-256(key)` itself (no channel), the same
//! record layout, and the entry's log index as nonce counter (indexes never repeat, so, as
//! for channels, nothing needs to be remembered across restarts). Empty data stays empty.

use bytes::Bytes;
use parking_lot::Mutex;

use super::seal::{NonceSource, OpenError, Sealer};
use super::{CryptoError, CryptoOptions};

/// Seals and opens the data of replicated log entries.
#[derive(Debug)]
pub struct LogSealer {
    sealer: Sealer,
    nonces: Mutex<NonceSource>,
}

impl LogSealer {
    pub fn new(opts: &CryptoOptions) -> LogSealer {
        LogSealer {
            sealer: Sealer::new(opts.cipher, &opts.key.master()),
            nonces: Mutex::new(NonceSource::new()),
        }
    }

    /// The stored form of the data of the entry at `index`.
    pub fn seal(&self, index: u64, data: &[u8]) -> Result<Bytes, CryptoError> {
        if data.is_empty() {
            return Ok(Bytes::new());
        }
        let nonce = self.nonces.lock().next(index);
        self.sealer
            .seal(&nonce, data)
            .map_err(|_| CryptoError::LogEncrypt {
                index,
                len: data.len(),
            })
    }

    /// The data of the entry at `index` from its stored form (data stored before encryption
    /// was turned on passes unchanged).
    pub fn open(&self, index: u64, stored: &Bytes) -> Result<Bytes, CryptoError> {
        self.sealer.open(stored).map_err(|e| match e {
            OpenError::Auth => CryptoError::LogDecrypt { index },
            OpenError::TooShort(len) => CryptoError::LogNotEncrypted { index, len },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::crypto::{Cipher, EncryptionKey};

    fn opts(cipher: Cipher, key: &str) -> CryptoOptions {
        CryptoOptions {
            cipher,
            key: EncryptionKey::new(key),
        }
    }

    #[test]
    fn seals_and_opens_log_entries() {
        let s = LogSealer::new(&opts(Cipher::ChaCha, "raftkey"));
        let a = s.seal(100, b"raft command").unwrap();
        assert_eq!(a[0], Cipher::ChaCha.code());
        assert_eq!(a[5..13], 100u64.to_be_bytes());
        // Either cipher reads it; the reference's own RAFT-log records are in seal.rs.
        let other = LogSealer::new(&opts(Cipher::Aes, "raftkey"));
        assert_eq!(other.open(100, &a).unwrap(), "raft command");
        assert_eq!(s.seal(101, b"").unwrap(), "");
        let wrong = LogSealer::new(&opts(Cipher::Aes, "nope"));
        let e = wrong.open(100, &a).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to decrypt log entry 100: wrong encryption key or damaged data"
        );
    }
}
