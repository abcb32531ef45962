//! File store throughput, run by hand (a measurement, not a test):
//! `cargo run --release -p rnats-streaming --example store_throughput`

use bytes::Bytes;
use rnats_streaming::store::file::{FileStore, FileStoreOptions, SyncPolicy};
use rnats_streaming::store::{NewMessage, Store, StoreLimits};

fn main() {
    for (policy, name) in [
        (SyncPolicy::OnFlush, "fsync per flush"),
        (SyncPolicy::Never, "no fsync"),
    ] {
        for size in [16usize, 1024] {
            let dir = tempfile::tempdir().unwrap();
            let o = FileStoreOptions {
                sync: policy,
                ..Default::default()
            };
            let s = FileStore::open(dir.path(), o, StoreLimits::unlimited()).unwrap();
            let ch = s.create_channel("bench").unwrap();
            let n = 500_000u64;
            let data = Bytes::from(vec![b'x'; size]);
            let t = std::time::Instant::now();
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
            let w = t.elapsed();
            let t = std::time::Instant::now();
            let mut seq = 1;
            while seq <= n {
                let b = ch.msgs().read_batch(seq, 4096, 8 << 20).unwrap();
                seq += b.len() as u64;
            }
            let r = t.elapsed();
            println!(
                "{name:>16} {size:>5} B: append+flush/256 {:>9.0} msg/s, replay {:>9.0} msg/s",
                n as f64 / w.as_secs_f64(),
                n as f64 / r.as_secs_f64()
            );
        }
    }
}
