//! Micro-benchmarks of the per-request work keyward adds: scanning a request, the guard's
//! verdict, and grouping keys by hash slot (the cluster fan-out's first step).
//!
//! Run with `cargo bench --bench micro`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward::commands;
use keyward::guard::{DeleteScope, GuardConfig, GuardPolicy, Rights};
use keyward::protocol::request::{Request, RequestScanner, ScanLimits};
use keyward::protocol::write;

fn encode(args: &[Vec<u8>]) -> Bytes {
    write::command(&args[0], &args[1..])
}

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("user:{i}:session").into_bytes())
        .collect()
}

fn scan_all(input: &Bytes) -> usize {
    let mut scanner = RequestScanner::new(ScanLimits::default());
    let mut buf = BytesMut::from(&input[..]);
    let mut n = 0;
    while let Ok(Some(request)) = scanner.next(&mut buf) {
        n += request.args().len();
    }
    n
}

fn scanning(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan");
    let get = encode(&[b"GET".to_vec(), b"user:1000:session".to_vec()]);
    let pipeline: Vec<u8> = get.iter().copied().cycle().take(get.len() * 16).collect();
    let pipeline = Bytes::from(pipeline);
    group.throughput(Throughput::Elements(16));
    group.bench_function("16 pipelined GETs", |b| {
        b.iter(|| scan_all(black_box(&pipeline)))
    });

    let mut removekeys = vec![b"REMOVEKEYS".to_vec()];
    removekeys.extend(keys(1000));
    let removekeys = encode(&removekeys);
    group.throughput(Throughput::Elements(1));
    group.bench_function("REMOVEKEYS with 1000 keys", |b| {
        b.iter(|| scan_all(black_box(&removekeys)))
    });

    let set = encode(&[b"SET".to_vec(), b"big".to_vec(), vec![b'x'; 1 << 20]]);
    group.throughput(Throughput::Bytes(set.len() as u64));
    group.bench_function("SET with a 1 MB value", |b| {
        b.iter(|| scan_all(black_box(&set)))
    });

    let inline = Bytes::from_static(b"SET greeting \"hello world\"\r\n");
    group.throughput(Throughput::Elements(1));
    group.bench_function("inline SET", |b| b.iter(|| scan_all(black_box(&inline))));
    group.finish();
}

fn guarding(c: &mut Criterion) {
    let policy = GuardPolicy::new(&GuardConfig::default());
    let mut group = c.benchmark_group("guard");
    for n in [1usize, 1000] {
        let mut words = vec![b"REMOVEKEYS".to_vec()];
        words.extend(keys(n));
        let request = Request::from_args(&words);
        let spec = commands::lookup(b"REMOVEKEYS");
        group.bench_function(format!("REMOVEKEYS verdict, {n} keys"), |b| {
            b.iter(|| policy.check(black_box(spec), black_box(request.args())))
        });
    }
    // Issue 13: the same 1000 keys against 100 protected prefixes, half of them sharing the
    // keys' first five bytes (so every key walks the table), and through a user's delete
    // scope that allows them.
    let protected: Vec<String> = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                format!("user:protected:{i}:")
            } else {
                format!("p{i}:")
            }
        })
        .collect();
    let policy = GuardPolicy::new(&GuardConfig {
        protected_prefixes: protected,
        ..GuardConfig::default()
    });
    let mut words = vec![b"REMOVEKEYS".to_vec()];
    words.extend(keys(1000));
    let request = Request::from_args(&words);
    let spec = commands::lookup(b"REMOVEKEYS");
    group.bench_function(
        "REMOVEKEYS verdict, 1000 keys, 100 protected prefixes",
        |b| b.iter(|| policy.check(black_box(spec), black_box(request.args()))),
    );
    // The common case: no protected prefix starts with the keys' first byte.
    let elsewhere = GuardPolicy::new(&GuardConfig {
        protected_prefixes: (0..100).map(|i| format!("billing:{i}:")).collect(),
        ..GuardConfig::default()
    });
    group.bench_function(
        "REMOVEKEYS verdict, 1000 keys, 100 protected prefixes none of them share",
        |b| b.iter(|| elsewhere.check(black_box(spec), black_box(request.args()))),
    );
    let scoped = Rights {
        delete_scope: Some(DeleteScope::new(&["user:".to_string(), "tmp:".to_string()])),
        ..Rights::default()
    };
    group.bench_function(
        "REMOVEKEYS verdict, 1000 keys, 100 protected prefixes and a delete scope",
        |b| b.iter(|| policy.check_as(black_box(spec), black_box(request.args()), &scoped)),
    );
    group.finish();
}

fn slot_grouping(c: &mut Criterion) {
    let keys: Vec<Bytes> = keys(1000).into_iter().map(Bytes::from).collect();
    c.bench_function("group 1000 keys by hash slot", |b| {
        b.iter(|| keyward::cluster::fanout::group_by_slot(black_box(&keys)).len())
    });
}

criterion_group!(benches, scanning, guarding, slot_grouping);
criterion_main!(benches);
