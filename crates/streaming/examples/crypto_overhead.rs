//! What encryption at rest costs the stores, run by hand (a measurement, not a test):
//! `cargo run --release -p rnats-streaming --example crypto_overhead`
//!
//! Appends in windows of 256 (flush after each, no fsync: the cost of the disk is the same
//! with or without encryption, so leaving it out shows the encryption share at its largest),
//! then replays everything in 1 MiB wire-form batches, as delivery does. Plain, AES and
//! CHACHA over the memory and the file store.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rnats_streaming::store::crypto::{Cipher, CryptoOptions, CryptoStore, EncryptionKey};
use rnats_streaming::store::file::{FileStore, FileStoreOptions, SyncPolicy};
use rnats_streaming::store::memory::MemoryStore;
use rnats_streaming::store::{NewMessage, Store, StoreLimits};

fn run(store: &dyn Store, n: u64, size: usize) -> (Duration, Duration) {
    let ch = store.create_channel("bench").unwrap();
    let data = Bytes::from(vec![b'x'; size]);
    let t = Instant::now();
    for i in 1..=n {
        ch.msgs()
            .append(NewMessage {
                reply: String::new(),
                data: data.clone(),
                timestamp: i as i64,
            })
            .unwrap();
        if i % 256 == 0 {
            ch.msgs().flush().unwrap();
        }
    }
    ch.msgs().flush().unwrap();
    let write = t.elapsed();
    let t = Instant::now();
    let (mut seq, mut bytes) = (1, 0usize);
    while seq <= n {
        let b = ch.msgs().read_batch_encoded(seq, 1024, 1 << 20).unwrap();
        bytes += b.iter().map(|m| m.data_len).sum::<usize>();
        seq += b.len() as u64;
    }
    assert_eq!(bytes, size * n as usize);
    (write, t.elapsed())
}

fn main() {
    for size in [16usize, 1024, 8192] {
        // 256 MiB of payload at most: the encrypted memory store holds a copy of each.
        let n = ((256 << 20) / size as u64).min(300_000);
        for kind in ["memory", "file"] {
            let mut base = None;
            for cipher in [None, Some(Cipher::Aes), Some(Cipher::ChaCha)] {
                let dir = tempfile::tempdir().unwrap();
                let plain: Box<dyn Store> = match kind {
                    "memory" => Box::new(MemoryStore::new(StoreLimits::unlimited()).unwrap()),
                    _ => Box::new(
                        FileStore::open(
                            dir.path(),
                            FileStoreOptions {
                                sync: SyncPolicy::Never,
                                ..Default::default()
                            },
                            StoreLimits::unlimited(),
                        )
                        .unwrap(),
                    ),
                };
                let store: Box<dyn Store> = match cipher {
                    None => plain,
                    Some(cipher) => Box::new(CryptoStore::new(
                        plain,
                        CryptoOptions {
                            cipher,
                            key: EncryptionKey::new("bench key"),
                        },
                    )),
                };
                let (w, r) = run(&*store, n, size);
                let (bw, br) = *base.get_or_insert((w, r));
                let rate = |d: Duration| n as f64 / d.as_secs_f64() / 1e3;
                println!(
                    "{size:>5} B {kind:<6} {:<6}  append {:>7.0} k/s ({:+5.1} %)  replay {:>7.0} k/s ({:+5.1} %)",
                    cipher.map_or("plain", Cipher::name),
                    rate(w),
                    (w.as_secs_f64() / bw.as_secs_f64() - 1.0) * 100.0,
                    rate(r),
                    (r.as_secs_f64() / br.as_secs_f64() - 1.0) * 100.0,
                );
                store.close().unwrap();
            }
        }
    }
}
