//! What the server builds from `--encrypt`, `--encryption_cipher`, `--encryption_key` and
//! `NATS_STREAMING_ENCRYPTION_KEY`: the cipher choice and the key, resolved by pure functions
//! (the environment is a parameter, so every rule is testable without touching the process
//! environment).
//!
//! The key is held in [`EncryptionKey`], which wipes its bytes on drop and never prints them:
//! its `Debug` says `<redacted>` and it has no `Display`.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::CryptoError;

/// The environment variable holding the key; when set and non-empty it wins over the
/// `--encryption_key` flag and the `encryption_key` config entry.
pub const ENCRYPTION_KEY_ENV: &str = "NATS_STREAMING_ENCRYPTION_KEY";

/// An AEAD cipher for message payloads. The code byte leads every encrypted payload, so a
/// store written with one cipher stays readable after a switch to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-256-GCM, code 1 (`AES`).
    Aes,
    /// ChaCha20-Poly1305, code 2 (`CHACHA`).
    ChaCha,
}

impl Cipher {
    /// What the reference picks when no cipher is named: AES where the CPU has AES
    /// instructions in practice (x86 and x86-64), ChaCha20-Poly1305 elsewhere (ARM).
    pub const fn platform_default() -> Cipher {
        if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
            Cipher::Aes
        } else {
            Cipher::ChaCha
        }
    }

    /// Parses `--encryption_cipher`: `AES` or `CHACHA` in any case; an empty name means
    /// [`Cipher::platform_default`].
    pub fn parse(name: &str) -> Result<Cipher, CryptoError> {
        if name.is_empty() {
            Ok(Cipher::platform_default())
        } else if name.eq_ignore_ascii_case("AES") {
            Ok(Cipher::Aes)
        } else if name.eq_ignore_ascii_case("CHACHA") {
            Ok(Cipher::ChaCha)
        } else {
            Err(CryptoError::UnsupportedCipher(name.to_owned()))
        }
    }

    /// The option value naming this cipher: `AES` or `CHACHA`.
    pub const fn name(self) -> &'static str {
        match self {
            Cipher::Aes => "AES",
            Cipher::ChaCha => "CHACHA",
        }
    }

    /// The code byte that starts a payload encrypted with this cipher.
    pub const fn code(self) -> u8 {
        match self {
            Cipher::Aes => 1,
            Cipher::ChaCha => 2,
        }
    }

    /// The cipher a code byte names, if any.
    pub const fn from_code(code: u8) -> Option<Cipher> {
        match code {
            1 => Some(Cipher::Aes),
            2 => Some(Cipher::ChaCha),
            _ => None,
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cipher {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cipher::parse(s)
    }
}

/// The user's encryption key (any bytes). Wiped on drop; never printed.
#[derive(Clone)]
pub struct EncryptionKey(Zeroizing<Vec<u8>>);

impl EncryptionKey {
    /// Takes the key bytes (they are wiped when the key is dropped).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        EncryptionKey(Zeroizing::new(bytes.into()))
    }

    /// An empty key means "no key".
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key bytes (to hand to [`CryptoOptions::resolve`]).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// SHA-256 of the key: the AEAD key of the RAFT log, and what channel keys derive from.
    pub(crate) fn master(&self) -> SecretKey {
        SecretKey::sha256(&[&self.0])
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

/// A 32-byte AEAD key (a SHA-256 digest), wiped on drop, never printed.
#[derive(Clone)]
pub(crate) struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    fn sha256(parts: &[&[u8]]) -> SecretKey {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&h.finalize());
        SecretKey(k)
    }

    /// The key of one channel's payloads, derived as the reference does: SHA-256 over
    /// `len(master) + 1 + len(channel)` zero bytes, then the master key, `.`, the channel
    /// name. (The reference sizes its buffer and then appends to it, so the zeros are part of
    /// its derivation; matching them is what makes its stores readable here.)
    pub(crate) fn for_channel(&self, channel: &str) -> SecretKey {
        let zeros = Zeroizing::new(vec![0u8; self.0.len() + 1 + channel.len()]);
        SecretKey::sha256(&[&zeros, &self.0[..], b".", channel.as_bytes()])
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The key to use, by the reference's precedence: the environment variable when it is set
/// and non-empty, else the flag or config value when non-empty, else
/// [`CryptoError::NoKey`]. `env` is the raw value of [`ENCRYPTION_KEY_ENV`]
/// (`std::env::var_os(ENCRYPTION_KEY_ENV)`, as bytes).
pub fn resolve_key(
    env: Option<&[u8]>,
    configured: Option<&[u8]>,
) -> Result<EncryptionKey, CryptoError> {
    [env, configured]
        .into_iter()
        .flatten()
        .find(|k| !k.is_empty())
        .map(EncryptionKey::new)
        .ok_or(CryptoError::NoKey)
}

/// Whether the server wraps its store in encryption: `--encrypt`, or any non-empty key given
/// by flag or config file (a key implies encryption). The environment variable alone does
/// not turn encryption on.
pub fn encryption_enabled(encrypt: bool, configured_key: Option<&[u8]>) -> bool {
    encrypt || configured_key.is_some_and(|k| !k.is_empty())
}

/// Encryption settings of a [`CryptoStore`](super::CryptoStore).
#[derive(Debug, Clone)]
pub struct CryptoOptions {
    /// The cipher new payloads are written with (either is read).
    pub cipher: Cipher,
    pub key: EncryptionKey,
}

impl CryptoOptions {
    /// Options from the server's settings: `cipher` as given to `--encryption_cipher` (empty:
    /// platform default), `env` the value of [`ENCRYPTION_KEY_ENV`], `configured_key` the
    /// `--encryption_key` flag or `encryption_key` config value.
    pub fn resolve(
        cipher: &str,
        env: Option<&[u8]>,
        configured_key: Option<&[u8]>,
    ) -> Result<CryptoOptions, CryptoError> {
        Ok(CryptoOptions {
            cipher: Cipher::parse(cipher)?,
            key: resolve_key(env, configured_key)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names() {
        assert_eq!(Cipher::parse("aes").unwrap(), Cipher::Aes);
        assert_eq!(Cipher::parse("AES").unwrap(), Cipher::Aes);
        assert_eq!(Cipher::parse("ChaCha").unwrap(), Cipher::ChaCha);
        assert_eq!(Cipher::parse("").unwrap(), Cipher::platform_default());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(Cipher::platform_default(), Cipher::Aes);
        let e = Cipher::parse("DES").unwrap_err();
        assert_eq!(
            e.to_string(),
            "encryption cipher not supported: \"DES\" (supported: AES, CHACHA)"
        );
        for c in [Cipher::Aes, Cipher::ChaCha] {
            assert_eq!(Cipher::from_code(c.code()), Some(c));
            assert_eq!(c.name().parse::<Cipher>().unwrap(), c);
        }
        assert_eq!(Cipher::from_code(0), None);
        assert_eq!(Cipher::from_code(3), None);
    }

    #[test]
    fn key_precedence() {
        let k = |e: Option<&[u8]>, c: Option<&[u8]>| resolve_key(e, c).map(|k| k.0.to_vec());
        assert_eq!(k(Some(b"env"), Some(b"flag")).unwrap(), b"env");
        assert_eq!(k(Some(b""), Some(b"flag")).unwrap(), b"flag");
        assert_eq!(k(None, Some(b"flag")).unwrap(), b"flag");
        assert_eq!(k(Some(b"env"), None).unwrap(), b"env");
        for (e, c) in [
            (None, None),
            (Some(&b""[..]), Some(&b""[..])),
            (None, Some(&b""[..])),
        ] {
            let err = k(e, c).unwrap_err();
            assert!(matches!(err, CryptoError::NoKey));
            assert!(err.to_string().contains(ENCRYPTION_KEY_ENV), "{err}");
        }
        assert!(encryption_enabled(true, None));
        assert!(encryption_enabled(false, Some(b"k")));
        assert!(!encryption_enabled(false, Some(b"")));
        assert!(!encryption_enabled(false, None));
    }

    #[test]
    fn keys_never_print() {
        let opts = CryptoOptions::resolve("chacha", None, Some(b"sup3r-s3cret")).unwrap();
        let shown = format!(
            "{opts:?} {:?} {:?}",
            opts.key.master(),
            opts.key.master().for_channel("c")
        );
        assert!(!shown.contains("sup3r"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(opts.cipher, Cipher::ChaCha);
    }
}
