//! Parser throughput: single ops and a realistic read buffer of many PUBs.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rnats_protocol::{Limits, Parsed, parse_client_op};
use std::hint::black_box;

fn parse_all(buf: &[u8], limits: &Limits) -> usize {
    let mut pos = 0;
    let mut ops = 0;
    while let Ok(Parsed::Op(_, n)) = parse_client_op(&buf[pos..], limits) {
        pos += n;
        ops += 1;
    }
    ops
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse");
    let pub16 = b"PUB foo.bar.baz 16\r\n0123456789abcdef\r\n";
    g.throughput(Throughput::Elements(1));
    g.bench_function("pub_16b", |b| {
        b.iter(|| parse_client_op(black_box(pub16), &limits))
    });
    let hpub = b"HPUB foo.bar reply.to 22 33\r\nNATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n";
    g.bench_function("hpub", |b| {
        b.iter(|| parse_client_op(black_box(hpub), &limits))
    });
    let sub = b"SUB foo.*.baz workers 123\r\n";
    g.bench_function("sub", |b| {
        b.iter(|| parse_client_op(black_box(sub), &limits))
    });

    let stream: Vec<u8> = pub16.repeat(1000);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("stream_1000_pub_16b", |b| {
        b.iter(|| parse_all(black_box(&stream), &limits))
    });
    let big: Vec<u8> = [b"PUB foo 1024\r\n".as_slice(), &[b'x'; 1024], b"\r\n"]
        .concat()
        .repeat(100);
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("stream_100_pub_1k", |b| {
        b.iter(|| parse_all(black_box(&big), &limits))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
