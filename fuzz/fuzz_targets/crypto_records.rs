//! Encryption at rest: stored records opened under a fixed key, as the crypto store opens
//! them — a message's `data` (`lookup`, `read_batch`), a whole encoded `MsgProto` rewritten
//! with its data opened (`read_batch_encoded`), a replicated-log entry (`LogSealer`), and the
//! same through a `CryptoStore` whose inner store holds the input as a message's data.
//!
//! Checks: no panic; only payloads marked as encrypted fail, and they fail as errors of
//! encryption at rest; plain payloads come back unchanged; a record the rewrite opens
//! decodes to the decoded record with its data opened. (The seed corpus holds payloads
//! sealed under the fixed key, so mutations around them reach the successful paths.)
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rnats_fuzz::CappedAlloc;
use rnats_streaming::fuzzing::ChannelSealer;
use rnats_streaming::proto::MsgProto;
use rnats_streaming::store::crypto::{
    Cipher, CryptoOptions, CryptoStore, EncryptionKey, LogSealer,
};
use rnats_streaming::store::memory::MemoryStore;
use rnats_streaming::store::{Store, StoreError, StoreLimits};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// The key and channel the seed corpus was sealed with (`examples/gen_corpus.rs`).
const KEY: &[u8] = b"rnats-fuzz-key";
const CHANNEL: &str = "c";

fn sealer() -> &'static ChannelSealer {
    static S: OnceLock<ChannelSealer> = OnceLock::new();
    S.get_or_init(|| ChannelSealer::new(Cipher::Aes, KEY, CHANNEL))
}

fn opts() -> CryptoOptions {
    CryptoOptions {
        cipher: Cipher::ChaCha,
        key: EncryptionKey::new(KEY),
    }
}

fn log_sealer() -> &'static LogSealer {
    static S: OnceLock<LogSealer> = OnceLock::new();
    S.get_or_init(|| LogSealer::new(&opts()))
}

/// Whether a stored payload claims to be encrypted (its first byte names a cipher).
fn marked(b: &[u8]) -> bool {
    b.first().is_some_and(|&c| Cipher::from_code(c).is_some())
}

fn check_opened(stored: &Bytes, opened: &Bytes) {
    if marked(stored) {
        assert_eq!(opened.len() + 29, stored.len(), "sealed overhead");
    } else {
        assert_eq!(opened, stored, "a plain payload comes back unchanged");
    }
}

fuzz_target!(|data: &[u8]| {
    let b = Bytes::copy_from_slice(data);

    match sealer().open_payload(&b) {
        Ok(p) => check_opened(&b, &p),
        Err(_) => assert!(marked(data)),
    }
    match log_sealer().open(7, &b) {
        Ok(p) => check_opened(&b, &p),
        Err(_) => assert!(marked(data)),
    }

    if let Ok(Some((out, n))) = sealer().open_record(data)
        && let Ok(m) = MsgProto::decode(b.clone())
    {
        let plain = sealer()
            .open_payload(&m.data)
            .expect("the data the rewrite opened opens");
        assert_eq!(n, plain.len());
        let o = MsgProto::decode(out).expect("a rewritten record decodes");
        assert_eq!(o, MsgProto { data: plain, ..m });
    }

    through_the_store(b);
});

/// The input as the data of message 1 of an encrypted channel, read every way.
fn through_the_store(b: Bytes) {
    let inner = MemoryStore::new(StoreLimits::default()).expect("memory store");
    let inner_ch = inner.create_channel(CHANNEL).expect("channel");
    let stored = MsgProto {
        sequence: 1,
        subject: CHANNEL.into(),
        data: b.clone(),
        timestamp: 1,
        ..Default::default()
    };
    inner_ch.msgs().store(&stored).expect("store");
    let store = CryptoStore::new(Box::new(inner), opts());
    let ch = store.lookup_channel(CHANNEL).expect("wrapped channel");
    let msgs = ch.msgs();
    let expect_crypto = |r: &StoreError| {
        assert!(
            matches!(r, StoreError::Crypto(_)) && marked(&b),
            "unexpected error {r:?}"
        );
    };
    match msgs.lookup(1) {
        Ok(m) => check_opened(&b, &m.expect("message 1").data),
        Err(e) => expect_crypto(&e),
    }
    match msgs.read_batch(1, 10, 1 << 20) {
        Ok(v) => check_opened(&b, &v[0].data),
        Err(e) => expect_crypto(&e),
    }
    match msgs.read_batch_encoded(1, 10, 1 << 20) {
        Ok(v) => {
            let m = MsgProto::decode(v[0].encoded.clone()).expect("an encoded message decodes");
            check_opened(&b, &m.data);
            assert_eq!(v[0].data_len, m.data.len());
        }
        Err(e) => expect_crypto(&e),
    }
    if let Err(e) = store.verify_key() {
        expect_crypto(&e);
    }
}
