//! A [`CryptoStore`] over the file store: what reaches the disk, restarts, wrong keys, cipher
//! changes, nonces, and payloads the reference encrypted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::seal::OVERHEAD;
use super::*;
use crate::proto::{MsgProto, SubState};
use crate::store::file::{FileStore, FileStoreOptions, SyncPolicy};
use crate::store::{EncodedMsg, NewMessage, StoreError, now_nanos};

const KEY: &str = "the test key";

fn plain_store(dir: &Path) -> FileStore {
    let opts = FileStoreOptions {
        sync: SyncPolicy::Never,
        slice_max_msgs: 16,
        ..Default::default()
    };
    FileStore::open(dir, opts, StoreLimits::unlimited()).unwrap()
}

fn open(dir: &Path, cipher: Cipher, key: &str) -> CryptoStore {
    let opts = CryptoOptions {
        cipher,
        key: EncryptionKey::new(key),
    };
    let s = CryptoStore::new(Box::new(plain_store(dir)), opts);
    s.recover().unwrap();
    s
}

fn payload(channel: &str, i: usize) -> Bytes {
    // Distinctive, and of varied lengths, including one that starts with a cipher code.
    match i % 5 {
        0 => Bytes::from(format!("SECRET-{channel}-{i}-{}", "z".repeat(i * 37))),
        1 => Bytes::from(format!("\x01SECRET-{channel}-{i}")),
        2 => Bytes::from(vec![b'S'; 1 + i]),
        3 => Bytes::from(format!("SECRET-{channel}-{i}-{}", "large".repeat(4_000))),
        _ => Bytes::from(format!("SECRET-{channel}-{i}")),
    }
}

fn publish(s: &CryptoStore, channel: &str, from: usize, to: usize) -> Vec<MsgProto> {
    let ch = s.lookup_or_create_channel(channel).unwrap().0;
    let out = (from..to)
        .map(|i| {
            let m = ch
                .msgs()
                .append(NewMessage {
                    reply: format!("reply.{i}"),
                    data: payload(channel, i),
                    timestamp: now_nanos(),
                })
                .unwrap();
            // What append returns is ready to deliver: the plaintext.
            assert_eq!(m.data, payload(channel, i));
            m
        })
        .collect();
    ch.msgs().flush().unwrap();
    out
}

/// Every file under `dir`, with its bytes.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), std::fs::read(e.path()).unwrap()))
        .collect()
}

fn files_containing(files: &[(PathBuf, Vec<u8>)], needle: &[u8]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|(_, b)| memchr::memmem::find(b, needle).is_some())
        .map(|(p, _)| p.clone())
        .collect()
}

/// Every stored payload of `channel`, as the plain store holds it.
fn raw_payloads(dir: &Path, channel: &str) -> Vec<(u64, Bytes)> {
    let s = plain_store(dir);
    let ch = s.lookup_channel(channel).unwrap();
    let st = ch.msgs().state();
    let out = ch
        .msgs()
        .read_batch(st.first, usize::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|m| (m.sequence, m.data))
        .collect();
    s.close().unwrap();
    out
}

fn check_reads(s: &CryptoStore, channel: &str, want: &[MsgProto]) {
    let ch = s.lookup_channel(channel).unwrap();
    let msgs = ch.msgs();
    for m in want {
        assert_eq!(msgs.lookup(m.sequence).unwrap().as_ref(), Some(m));
    }
    assert_eq!(msgs.read_batch(0, usize::MAX, usize::MAX).unwrap(), want);
    let enc = msgs.read_batch_encoded(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(
        enc,
        want.iter().map(EncodedMsg::from_msg).collect::<Vec<_>>()
    );
    assert_eq!(msgs.first_msg().unwrap().as_ref(), want.first());
    assert_eq!(msgs.last_msg().unwrap().as_ref(), want.last());
}

#[test]
fn no_payload_reaches_the_disk_in_plaintext() {
    for cipher in [Cipher::Aes, Cipher::ChaCha] {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), cipher, KEY);
        let mut sent = Vec::new();
        for channel in ["foo", "bar.baz"] {
            sent.extend(publish(&s, channel, 0, 40));
            let ch = s.lookup_channel(channel).unwrap();
            let mut sub = SubState {
                client_id: "me".into(),
                inbox: "SUBSCRIPTION-INBOX".into(),
                ..Default::default()
            };
            ch.subs().create_sub(&mut sub).unwrap();
            ch.subs().add_seq_pending(sub.id, 3).unwrap();
            ch.subs().flush().unwrap();
        }
        s.close().unwrap();
        let files = all_files(dir.path());
        assert!(files.len() > 6, "{} files", files.len());
        for m in &sent {
            // The whole payload, and a 12-byte window of its middle.
            let d = &m.data[..];
            let mid = &d[d.len() / 2..(d.len() / 2 + 12).min(d.len())];
            for needle in [d, mid] {
                if needle.len() >= 8 {
                    assert_eq!(files_containing(&files, needle), Vec::<PathBuf>::new());
                }
            }
        }
        assert!(files_containing(&files, b"SECRET").is_empty());
        // Only payloads are encrypted: the scan does find what is stored in the clear.
        assert!(!files_containing(&files, b"SUBSCRIPTION-INBOX").is_empty());
        assert!(!files_containing(&files, b"reply.7").is_empty());
        // Each stored payload is the plaintext sealed with the configured cipher.
        for (seq, raw) in raw_payloads(dir.path(), "foo") {
            assert_eq!(raw[0], cipher.code(), "seq {seq}");
            assert_eq!(raw.len(), payload("foo", seq as usize - 1).len() + OVERHEAD);
        }
    }
}

#[test]
fn the_same_store_without_encryption_shows_payloads() {
    // The control for the scan above.
    let dir = tempfile::tempdir().unwrap();
    let s = plain_store(dir.path());
    let ch = s.create_channel("foo").unwrap();
    ch.msgs()
        .append(NewMessage {
            data: payload("foo", 4),
            ..Default::default()
        })
        .unwrap();
    s.close().unwrap();
    let files = all_files(dir.path());
    assert_eq!(files_containing(&files, b"SECRET-foo-4").len(), 1);
}

#[test]
fn restart_with_the_same_key_reads_every_message() {
    for cipher in [Cipher::Aes, Cipher::ChaCha] {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), cipher, KEY);
        let sent = publish(&s, "foo", 0, 50);
        let empty = s
            .lookup_channel("foo")
            .unwrap()
            .msgs()
            .append(NewMessage::default())
            .unwrap();
        assert!(empty.data.is_empty());
        s.close().unwrap();

        let s = open(dir.path(), cipher, KEY);
        let r = s.recover().unwrap();
        assert_eq!(r.channels.len(), 1);
        let mut want = sent;
        want.push(empty);
        check_reads(&s, "foo", &want);
        // Batches keep the plain stores' budget, counted in plaintext sizes.
        let ch = s.lookup_channel("foo").unwrap();
        let one = ch.msgs().read_batch(5, 100, 1).unwrap();
        assert_eq!(one.len(), 1);
        let three: usize = want[4..7].iter().map(prost::Message::encoded_len).sum();
        assert_eq!(ch.msgs().read_batch(5, 100, three).unwrap(), want[4..7]);
        assert_eq!(
            ch.msgs().read_batch_encoded(5, 100, three).unwrap().len(),
            3
        );
        s.close().unwrap();
    }
}

#[test]
fn a_wrong_key_is_an_error_naming_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Cipher::Aes, KEY);
    publish(&s, "orders.eu", 0, 5);
    s.close().unwrap();

    let s = open(dir.path(), Cipher::Aes, "not the key");
    let ch = s.lookup_channel("orders.eu").unwrap();
    let is_decrypt = |e: &StoreError, seq: u64| {
        matches!(e, StoreError::Crypto(CryptoError::Decrypt { channel, sequence })
            if channel == "orders.eu" && *sequence == seq)
    };
    for seq in 1..=5 {
        let e = ch.msgs().lookup(seq).unwrap_err();
        assert!(is_decrypt(&e, seq), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "unable to decrypt message {seq} of channel \"orders.eu\": wrong encryption key or damaged data"
            )
        );
    }
    assert!(is_decrypt(
        &ch.msgs().read_batch(2, 10, 1 << 20).unwrap_err(),
        2
    ));
    assert!(is_decrypt(
        &ch.msgs().read_batch_encoded(3, 10, 1 << 20).unwrap_err(),
        3
    ));
    assert!(is_decrypt(&ch.msgs().first_msg().unwrap_err(), 1));
    assert!(is_decrypt(&ch.msgs().last_msg().unwrap_err(), 5));
    assert!(is_decrypt(&s.verify_key().unwrap_err(), 5));
    // Nothing but payloads depends on the key: the log itself is intact.
    assert_eq!(ch.msgs().state().msgs, 5);
    s.close().unwrap();

    let s = open(dir.path(), Cipher::ChaCha, KEY);
    s.verify_key().unwrap();
    assert_eq!(
        s.lookup_channel("orders.eu")
            .unwrap()
            .msgs()
            .lookup(5)
            .unwrap()
            .unwrap()
            .data,
        payload("orders.eu", 4)
    );
}

#[test]
fn a_batch_stops_before_an_unreadable_message() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Cipher::Aes, KEY);
    publish(&s, "foo", 0, 3);
    s.close().unwrap();
    // Message 4 sealed under another key.
    let s = open(dir.path(), Cipher::Aes, "other key");
    publish(&s, "foo", 3, 4);
    s.close().unwrap();
    let s = open(dir.path(), Cipher::Aes, KEY);
    let msgs = s.lookup_channel("foo").unwrap();
    let msgs = msgs.msgs();
    assert_eq!(msgs.read_batch(1, 10, 1 << 20).unwrap().len(), 3);
    assert_eq!(msgs.read_batch_encoded(1, 10, 1 << 20).unwrap().len(), 3);
    assert!(matches!(
        msgs.read_batch_encoded(4, 10, 1 << 20),
        Err(StoreError::Crypto(CryptoError::Decrypt { sequence: 4, .. }))
    ));
}

#[test]
fn cipher_change_between_restarts_keeps_every_record_readable() {
    let dir = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    for (cipher, n) in [(Cipher::Aes, 0), (Cipher::ChaCha, 1), (Cipher::Aes, 2)] {
        let s = open(dir.path(), cipher, KEY);
        want.extend(publish(&s, "foo", n * 10, n * 10 + 10));
        check_reads(&s, "foo", &want);
        s.close().unwrap();
    }
    let codes: Vec<u8> = raw_payloads(dir.path(), "foo")
        .iter()
        .map(|(_, d)| d[0])
        .collect();
    let expect: Vec<u8> = [1u8, 2, 1]
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c, 10))
        .collect();
    assert_eq!(codes, expect);
    for cipher in [Cipher::Aes, Cipher::ChaCha] {
        let s = open(dir.path(), cipher, KEY);
        check_reads(&s, "foo", &want);
        s.close().unwrap();
    }
}

#[test]
fn nonces_are_unique_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let s = open(dir.path(), Cipher::Aes, KEY);
        publish(&s, "foo", round * 25, round * 25 + 25);
        // Replays of stored sequences are ignored, and must not disturb the counter.
        let ch = s.lookup_channel("foo").unwrap();
        let old = ch.msgs().lookup(1).unwrap().unwrap();
        assert_eq!(ch.msgs().store(&old).unwrap(), 1);
        s.close().unwrap();
    }
    let raw = raw_payloads(dir.path(), "foo");
    assert_eq!(raw.len(), 100);
    let mut seen = HashSet::new();
    let mut prefixes = HashSet::new();
    for (seq, d) in &raw {
        assert!(seen.insert(d[1..13].to_vec()), "nonce reused at {seq}");
        // The counter is the sequence, whichever session wrote it.
        assert_eq!(d[5..13], seq.to_be_bytes());
        prefixes.insert(d[1..5].to_vec());
    }
    // A new random prefix per session (4 sessions; equal by chance with odds 2^-32 each).
    assert_eq!(prefixes.len(), 4);
}

#[test]
fn concurrent_appends_get_distinct_nonces() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path(), Cipher::ChaCha, KEY));
    s.create_channel("foo").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let ch = s.lookup_channel("foo").unwrap();
                for i in 0..100 {
                    let data = Bytes::from(format!("t{t} m{i}"));
                    let m = ch
                        .msgs()
                        .append(NewMessage {
                            data: data.clone(),
                            ..Default::default()
                        })
                        .unwrap();
                    assert_eq!(m.data, data);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    s.lookup_channel("foo").unwrap().msgs().flush().unwrap();
    s.close().unwrap();
    let raw = raw_payloads(dir.path(), "foo");
    assert_eq!(raw.len(), 400);
    let nonces: HashSet<_> = raw.iter().map(|(_, d)| d[1..13].to_vec()).collect();
    assert_eq!(nonces.len(), 400);
    for (seq, d) in &raw {
        assert_eq!(d[5..13], seq.to_be_bytes());
    }
}

#[test]
fn payloads_stored_before_encryption_read_back() {
    // As in the reference: plaintext passes, unless it starts with a cipher code.
    let dir = tempfile::tempdir().unwrap();
    let s = plain_store(dir.path());
    let ch = s.create_channel("foo").unwrap();
    for data in [&b"abcd"[..], &[1, b'a', b'b', b'c', b'd']] {
        ch.msgs()
            .append(NewMessage {
                data: Bytes::copy_from_slice(data),
                ..Default::default()
            })
            .unwrap();
    }
    s.close().unwrap();
    let s = open(dir.path(), Cipher::Aes, KEY);
    let ch = s.lookup_channel("foo").unwrap();
    assert_eq!(ch.msgs().lookup(1).unwrap().unwrap().data, "abcd");
    let e = ch.msgs().lookup(2).unwrap_err();
    assert!(
        matches!(&e, StoreError::Crypto(CryptoError::NotEncrypted { channel, sequence: 2, len: 5 }) if channel == "foo"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("trying to decrypt data that is not"),
        "{e}"
    );
    // The encoded batch hands plaintext records out as they are.
    let b = ch.msgs().read_batch_encoded(1, 1, 1 << 20).unwrap();
    assert_eq!(
        b[0],
        EncodedMsg::from_msg(&ch.msgs().lookup(1).unwrap().unwrap())
    );
    // New messages are encrypted.
    publish(&s, "foo", 0, 1);
    s.close().unwrap();
    assert_eq!(raw_payloads(dir.path(), "foo")[2].1[0], Cipher::Aes.code());
}

#[test]
fn reads_what_the_reference_stored() {
    // A payload as the reference's CryptoMsgStore sealed it (key "testkey", channel "foo",
    // counter 42: see seal.rs), stored as a replicated message at sequence 42.
    let record: Vec<u8> = (0..80)
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(
                &"018027b8d1000000000000002a47d0c446078e97966c3e1c65431059f18dc0e5e43488ca45229d7f"
                    [i..i + 2],
                16,
            )
            .unwrap()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let s = plain_store(dir.path());
    let ch = s.create_channel("foo").unwrap();
    let m = MsgProto {
        sequence: 42,
        subject: "foo".into(),
        data: Bytes::from(record),
        timestamp: 1,
        ..Default::default()
    };
    ch.msgs().store(&m).unwrap();
    s.close().unwrap();
    for cipher in [Cipher::Aes, Cipher::ChaCha] {
        let s = open(dir.path(), cipher, "testkey");
        let ch = s.lookup_channel("foo").unwrap();
        assert_eq!(ch.msgs().lookup(42).unwrap().unwrap().data, "hello world");
        let enc = ch.msgs().read_batch_encoded(42, 1, 1 << 20).unwrap();
        assert_eq!(enc[0].data_len, 11);
        // The next message continues the counter where the reference would: 43.
        let next = publish(&s, "foo", 0, 1);
        assert_eq!(next[0].sequence, 43);
        s.close().unwrap();
        let raw = raw_payloads(dir.path(), "foo");
        assert_eq!(raw.last().unwrap().1[5..13], 43u64.to_be_bytes());
        // Back to the single reference message for the other cipher.
        let s = plain_store(dir.path());
        let ch = s.lookup_channel("foo").unwrap();
        ch.msgs().empty().unwrap();
        s.delete_channel("foo").unwrap();
        let ch = s.create_channel("foo").unwrap();
        ch.msgs().store(&m).unwrap();
        s.close().unwrap();
    }
}

#[test]
fn no_key_and_no_cipher_are_clear_errors() {
    let e = CryptoOptions::resolve("", Some(b""), None).unwrap_err();
    assert!(e.to_string().starts_with("encryption key required"), "{e}");
    let e = CryptoOptions::resolve("rot13", None, Some(b"k")).unwrap_err();
    assert!(
        e.to_string().starts_with("encryption cipher not supported"),
        "{e}"
    );
}

#[test]
fn the_key_never_shows_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let key = "0p3n-s3sam3-k3y";
    let opts = CryptoOptions::resolve("AES", Some(key.as_bytes()), None).unwrap();
    let s = CryptoStore::new(Box::new(plain_store(dir.path())), opts.clone());
    publish(&s, "foo", 0, 2);
    let ch = s.lookup_channel("foo").unwrap();
    let shown = format!("{s:?} {opts:?} {:?} {ch:?}", opts.key);
    assert!(!shown.contains(key), "{shown}");
    assert!(shown.contains("CryptoStore"), "{shown}");
    s.close().unwrap();
    let s = open(dir.path(), Cipher::Aes, "b4d-k3y-zz");
    let e = s.verify_key().unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains(key) && !shown.contains("b4d-k3y"),
        "{shown}"
    );
}
