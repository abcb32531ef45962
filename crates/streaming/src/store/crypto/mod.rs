//! Encryption at rest: [`CryptoStore`] wraps any [`Store`] and encrypts message payloads
//! (`MsgProto.data`, nothing else) before the inner store keeps them, with the reference
//! server's key derivation and record layout, so that payloads it encrypted open here.
//!
//! ```text
//! CryptoStore ── inner: Box<dyn Store>        server info, clients, limits: passed through
//!     └── Channel (one wrapper per inner channel, kept in a map)
//!           ├── CryptoMsgStore ── inner channel's MsgStore   seal on append/store,
//!           │                                                open on every read
//!           └── PlainSubs ─────── inner channel's SubStore   passed through
//! ```
//!
//! * [`options`]: the cipher ([`Cipher`]), the key ([`EncryptionKey`], redacted and wiped),
//!   and the reference's rules for choosing them ([`resolve_key`], [`encryption_enabled`]).
//! * `seal`: the record layout, both AEADs, and the nonces.
//! * `wire`: opening the payload inside an encoded `MsgProto` (the file store's batch reads
//!   hand out records in wire form).
//! * `msgs`: the wrapped message log.
//! * [`LogSealer`]: the same sealing for a replicated log's entries (the reference encrypts
//!   its RAFT log's command data with `SHA-256(key)` itself).
//!
//! # Keys
//!
//! `master = SHA-256(key)`; a channel's AEAD key is `SHA-256(zeros ‖ master ‖ "." ‖ name)`
//! where `zeros` is `33 + len(name)` zero bytes (an artefact of how the reference builds that
//! buffer, kept so its stores read back). Both ciphers take the same 32-byte key. The RAFT log
//! of the reference (clustering) seals with `master` itself.
//!
//! # Stored payload
//!
//! `code (1 = AES-256-GCM, 2 = ChaCha20-Poly1305) | nonce (12) | ciphertext | tag (16)`. The
//! code byte names the cipher of each record, so a store stays readable after the cipher is
//! changed. An empty payload is stored as it is; a payload whose first byte is no cipher code
//! was written before encryption was turned on and reads back unchanged (as in the
//! reference). Sizes, limits and `state().bytes` count the sealed payload, which is what the
//! inner store holds (the reference counts the same way).
//!
//! # Why a nonce is never used twice
//!
//! A nonce is `prefix (4 random bytes) | counter (u64 big-endian)`, and the counter is the
//! sequence of the record it seals: the writer lock of the channel is held from choosing the
//! nonce to the inner append, so that sequence (`last + 1`) is known in advance.
//!
//! * Channels have distinct keys, so only records of one channel can collide.
//! * Within a channel, sequences never repeat (a store keeps the last sequence when all
//!   messages expire or are emptied), so two records stored at different sequences have
//!   different counters, whichever session wrote them: **across restarts nothing needs to be
//!   remembered**, the counter continues from the recovered last sequence + 1, exactly where
//!   the reference starts its counter too.
//! * Within a session, counters only go up under one prefix: a counter at or below the
//!   highest one already used (an append that failed and is retried, a replayed `store` of an
//!   old sequence, an inner store assigning another sequence than predicted) draws a new
//!   random prefix first. Such a sealed payload was never kept, or was ignored, so nothing
//!   on disk shares its nonce either.
//! * Left to chance (2^-32 per pair, as in the reference): a channel deleted and created
//!   again under the same name restarts at sequence 1 under the same key, and only the fresh
//!   prefix tells its nonces from the old channel's, whose files were deleted with it.
//!
//! # Reads and errors
//!
//! Reads take no lock of this layer. A payload that does not verify is
//! [`CryptoError::Decrypt`], naming the channel and sequence: a wrong key or damaged data, and
//! never garbage. A batch read stops before the first such message (the next batch, starting
//! there, reports it). [`CryptoStore::verify_key`] checks the key against every channel's last
//! message, for a clear error at start-up rather than at the first delivery.

mod log;
mod msgs;
pub mod options;
pub(crate) mod seal;
#[cfg(test)]
mod tests;
pub(crate) mod wire;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Channel, RecoveredState, Result, Store, StoreKind, StoreLimits};
use crate::proto::{ClientInfo, ServerInfo};
use msgs::{CryptoMsgStore, PlainSubs};
use options::SecretKey;
use seal::Sealer;

pub use log::LogSealer;
pub use options::{
    Cipher, CryptoOptions, ENCRYPTION_KEY_ENV, EncryptionKey, encryption_enabled, resolve_key,
};

/// Errors of encryption at rest. None of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Encryption requested, but neither the environment nor the options give a key.
    #[error(
        "encryption key required: set the NATS_STREAMING_ENCRYPTION_KEY environment variable (preferred) or --encryption_key"
    )]
    NoKey,
    /// `--encryption_cipher` names no supported cipher.
    #[error("encryption cipher not supported: {0:?} (supported: AES, CHACHA)")]
    UnsupportedCipher(String),
    /// A stored payload does not verify under this key.
    #[error(
        "unable to decrypt message {sequence} of channel {channel:?}: wrong encryption key or damaged data"
    )]
    Decrypt { channel: String, sequence: u64 },
    /// A stored payload starts with a cipher code but is too short to be encrypted.
    #[error(
        "message {sequence} of channel {channel:?} is marked as encrypted but is only {len} bytes long: trying to decrypt data that is not"
    )]
    NotEncrypted {
        channel: String,
        sequence: u64,
        len: usize,
    },
    /// A payload beyond what the cipher can seal.
    #[error(
        "unable to encrypt a {len}-byte message for channel {channel:?}: too large for the cipher"
    )]
    Encrypt { channel: String, len: usize },
    /// A log entry beyond what the cipher can seal.
    #[error("unable to encrypt log entry {index} ({len} bytes): too large for the cipher")]
    LogEncrypt { index: u64, len: usize },
    /// A replicated log entry whose data does not verify under this key.
    #[error("unable to decrypt log entry {index}: wrong encryption key or damaged data")]
    LogDecrypt { index: u64 },
    /// A log entry's data starts with a cipher code but is too short to be encrypted.
    #[error(
        "log entry {index} is marked as encrypted but is only {len} bytes long: trying to decrypt data that is not"
    )]
    LogNotEncrypted { index: u64, len: usize },
    /// A stored message record that is not a well-formed `MsgProto`.
    #[error("message {sequence} of channel {channel:?} is not a well-formed MsgProto record")]
    MalformedRecord { channel: String, sequence: u64 },
}

/// A store whose message payloads are encrypted; see the module documentation.
pub struct CryptoStore {
    inner: Box<dyn Store>,
    cipher: Cipher,
    master: SecretKey,
    /// The wrapper of each inner channel handed out so far. The lock is held across every
    /// inner call that creates, finds or deletes a channel, so that an inner channel never
    /// gets two wrappers (two writers of one nonce sequence).
    channels: Mutex<HashMap<String, Wrapped>>,
}

struct Wrapped {
    inner: Arc<Channel>,
    outer: Arc<Channel>,
}

impl CryptoStore {
    /// Wraps `inner`. Channels already in it are wrapped when first handed out.
    pub fn new(inner: Box<dyn Store>, opts: CryptoOptions) -> CryptoStore {
        CryptoStore {
            inner,
            cipher: opts.cipher,
            master: opts.key.master(),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The cipher new payloads are sealed with.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Opens the last message of every channel: [`CryptoError::Decrypt`] (as
    /// [`StoreError::Crypto`](super::StoreError::Crypto)) names the first channel whose
    /// payloads this key does not open.
    pub fn verify_key(&self) -> Result<()> {
        for ch in self.channels() {
            ch.msgs().last_msg()?;
        }
        Ok(())
    }

    /// The wrapper of `inner`, made on first use. Called with the map locked.
    fn wrap(&self, map: &mut HashMap<String, Wrapped>, inner: Arc<Channel>) -> Arc<Channel> {
        if let Some(w) = map.get(inner.name())
            && Arc::ptr_eq(&w.inner, &inner)
        {
            return w.outer.clone();
        }
        let name = inner.name().to_owned();
        let sealer = Sealer::new(self.cipher, &self.master.for_channel(&name));
        let outer = Arc::new(Channel::new(
            name.clone(),
            *inner.limits(),
            Box::new(CryptoMsgStore::new(inner.clone(), sealer)),
            Box::new(PlainSubs(inner.clone())),
        ));
        map.insert(
            name,
            Wrapped {
                inner,
                outer: outer.clone(),
            },
        );
        outer
    }
}

impl fmt::Debug for CryptoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoStore")
            .field("kind", &self.inner.kind())
            .field("cipher", &self.cipher)
            .field("channels", &self.channels.lock().len())
            .finish_non_exhaustive()
    }
}

impl Store for CryptoStore {
    fn kind(&self) -> StoreKind {
        self.inner.kind()
    }

    fn init(&self, info: &ServerInfo) -> Result<()> {
        self.inner.init(info)
    }

    fn recover(&self) -> Result<RecoveredState> {
        let mut map = self.channels.lock();
        let mut state = self.inner.recover()?;
        for rc in &mut state.channels {
            rc.channel = self.wrap(&mut map, rc.channel.clone());
        }
        Ok(state)
    }

    fn limits(&self) -> &StoreLimits {
        self.inner.limits()
    }

    fn create_channel(&self, name: &str) -> Result<Arc<Channel>> {
        let mut map = self.channels.lock();
        let inner = self.inner.create_channel(name)?;
        Ok(self.wrap(&mut map, inner))
    }

    fn lookup_channel(&self, name: &str) -> Option<Arc<Channel>> {
        let mut map = self.channels.lock();
        let inner = self.inner.lookup_channel(name)?;
        Some(self.wrap(&mut map, inner))
    }

    fn lookup_or_create_channel(&self, name: &str) -> Result<(Arc<Channel>, bool)> {
        let mut map = self.channels.lock();
        let (inner, created) = self.inner.lookup_or_create_channel(name)?;
        Ok((self.wrap(&mut map, inner), created))
    }

    fn channels(&self) -> Vec<Arc<Channel>> {
        let mut map = self.channels.lock();
        self.inner
            .channels()
            .into_iter()
            .map(|c| self.wrap(&mut map, c))
            .collect()
    }

    fn delete_channel(&self, name: &str) -> Result<bool> {
        let mut map = self.channels.lock();
        let deleted = self.inner.delete_channel(name)?;
        map.remove(name);
        Ok(deleted)
    }

    fn add_client(&self, info: &ClientInfo) -> Result<()> {
        self.inner.add_client(info)
    }

    fn delete_client(&self, id: &str) -> Result<bool> {
        self.inner.delete_client(id)
    }

    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    fn close(&self) -> Result<()> {
        self.inner.close()
    }
}
