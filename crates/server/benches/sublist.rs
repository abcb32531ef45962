//! Subject index: match cost with 10k and 1M subscriptions, literal and wildcard, with the
//! cache and without it (every match a miss), and insert + remove.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rnats_server::sublist::Sublist;

/// `n` subscriptions `org.<i/1000>.dev.<i%1000>`; with `wild`, one in ten is `org.<k>.*.>`.
fn populated(n: usize, wild: bool) -> Sublist<u32> {
    let sl = Sublist::new();
    for i in 0..n {
        let subject = if wild && i % 10 == 0 {
            format!("org.{}.*.>", i / 1000)
        } else {
            format!("org.{}.dev.{}", i / 1000, i % 1000)
        };
        sl.insert(subject.as_bytes(), None, Arc::new(i as u32));
    }
    sl
}

fn bench(c: &mut Criterion) {
    for (label, n) in [("10k", 10_000), ("1m", 1_000_000)] {
        for wild in [false, true] {
            let sl = populated(n, wild);
            let name = format!(
                "match_{label}_{}",
                if wild { "wildcards" } else { "literal" }
            );
            let subjects: Vec<String> = (0..1000)
                .map(|i| format!("org.{}.dev.{}", (i * 7) % (n / 1000), i))
                .collect();
            let mut g = c.benchmark_group(&name);
            g.bench_function("cached", |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % 16;
                    black_box(sl.matches(subjects[i].as_bytes()));
                })
            });
            // Cycling through 4096 subjects defeats the 1024-entry cache: nearly all misses.
            // 4096 distinct subscribed subjects: i = groups * j + k.
            let groups = n / 1000;
            let many: Vec<String> = (0..4096)
                .map(|i| format!("org.{}.dev.{}", i % groups, (i / groups) % 1000))
                .collect();
            g.bench_function("uncached", |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % many.len();
                    black_box(sl.matches(many[i].as_bytes()))
                })
            });
            g.finish();
        }
    }
    let sl = populated(10_000, true);
    c.bench_function("insert_remove_10k", |b| {
        let sub = Arc::new(0u32);
        b.iter(|| {
            sl.insert(b"org.5.dev.new", None, sub.clone());
            sl.remove(b"org.5.dev.new", None, &sub);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
