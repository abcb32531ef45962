//! SQL store throughput, run by hand (a measurement, not a test):
//! `cargo run --release -p rnats-streaming --features sql --example sql_throughput [N]`
//!
//! Starts PostgreSQL and MariaDB from the system's packages (rnats-test-db) with fsync on, and
//! the file store with fsync per flush, then for each: appends N messages flushing every 256
//! (a windowed publisher's batches), flushes N messages at once, and replays them all.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rnats_streaming::store::file::{FileStore, FileStoreOptions};
use rnats_streaming::store::sql::{SqlDriver, SqlStore, SqlStoreOptions, create_schema};
use rnats_streaming::store::{NewMessage, Store, StoreLimits};
use rnats_test_db::{DbServer, Kind, Options};

fn msg(data: &Bytes, i: u64) -> NewMessage {
    NewMessage {
        reply: String::new(),
        data: data.clone(),
        timestamp: i as i64,
    }
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:>9.0} msg/s", n as f64 / d.as_secs_f64())
}

/// Appends `n` messages in flushes of `batch`, flushes `n` at once, replays: the durations.
fn run(store: &dyn Store, n: u64, batch: u64, size: usize) -> (Duration, Duration, Duration) {
    let data = Bytes::from(vec![b'x'; size]);
    let ch = store.create_channel("windowed").unwrap();
    let t = Instant::now();
    for i in 1..=n {
        ch.msgs().append(msg(&data, i)).unwrap();
        if i % batch == 0 {
            ch.msgs().flush().unwrap();
        }
    }
    ch.msgs().flush().unwrap();
    let windowed = t.elapsed();
    let ch2 = store.create_channel("one-flush").unwrap();
    for i in 1..=n {
        ch2.msgs().append(msg(&data, i)).unwrap();
    }
    let t = Instant::now();
    ch2.msgs().flush().unwrap();
    let one = t.elapsed();
    let t = Instant::now();
    let mut seq = 1;
    while seq <= n {
        let b = ch.msgs().read_batch_encoded(seq, 1024, 1 << 20).unwrap();
        assert!(!b.is_empty());
        seq = b.last().unwrap().sequence + 1;
    }
    (windowed, one, t.elapsed())
}

fn report(name: &str, n: u64, (w, o, r): (Duration, Duration, Duration)) {
    println!(
        "{name:<34} windowed(256) {}  one flush of {n}: {:>7.1} ms ({})  replay {}",
        rate(n, w),
        o.as_secs_f64() * 1000.0,
        rate(n, o),
        rate(n, r)
    );
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let size = 128;
    println!("{n} messages of {size} bytes");
    {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(
            dir.path(),
            FileStoreOptions::default(),
            StoreLimits::unlimited(),
        )
        .unwrap();
        report("FILE (fsync per flush)", n, run(&s, n, 256, size));
    }
    for kind in [Kind::Postgres, Kind::MariaDb] {
        let server = DbServer::start_with(kind, Options { durable: true }).unwrap();
        let driver: SqlDriver = server.driver().parse().unwrap();
        for (label, bulk, no_caching) in [
            ("caching", 0, false),
            ("caching, bulk_insert_limit=256", 256, false),
        ] {
            let db = server.create_database().unwrap();
            create_schema(driver, &server.source(&db)).unwrap();
            let mut o = SqlStoreOptions::new(driver, server.source(&db));
            o.bulk_insert_limit = bulk;
            o.no_caching = no_caching;
            let s = SqlStore::open(o, StoreLimits::unlimited()).unwrap();
            report(&format!("{kind} {label}"), n, run(&s, n, 256, size));
            s.close().unwrap();
        }
        // No caching: one INSERT per append; fewer messages, it is slow by design.
        let m = (n / 10).max(256);
        let db = server.create_database().unwrap();
        create_schema(driver, &server.source(&db)).unwrap();
        let mut o = SqlStoreOptions::new(driver, server.source(&db));
        o.no_caching = true;
        let s = SqlStore::open(o, StoreLimits::unlimited()).unwrap();
        report(&format!("{kind} no_caching"), m, run(&s, m, 256, size));
        s.close().unwrap();
    }
}
