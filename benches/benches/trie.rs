//! Subscription-table micro-benchmarks: 100k filters (exact, `+` and `#`)
//! matched against many topics.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use tern_broker::codec::{QoS, SubOptions};
use tern_broker::trie::{ClientId, Matches, SubEntry, SubscriptionTable};

const FILTERS: usize = 100_000;

/// A deterministic xorshift generator, so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn entry() -> SubEntry {
    SubEntry {
        options: SubOptions {
            qos: QoS::AtLeastOnce,
            ..SubOptions::default()
        },
        identifier: None,
    }
}

/// `site/{s}/dev/{d}/{metric}` topics; filters are 80 % exact, 15 % with a
/// `+` level, 5 % ending in `#`.
fn build() -> (SubscriptionTable, Vec<String>) {
    let table = SubscriptionTable::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let metrics = ["temp", "humidity", "power", "status"];
    for i in 0..FILTERS {
        let client: ClientId = Arc::from(format!("c{}", i % 20_000));
        let s = rng.below(100);
        let d = rng.below(1000);
        let m = metrics[rng.below(4) as usize];
        let filter = match rng.below(100) {
            0..=79 => format!("site/{s}/dev/{d}/{m}"),
            80..=89 => format!("site/{s}/dev/+/{m}"),
            90..=94 => format!("site/+/dev/{d}/{m}"),
            _ => format!("site/{s}/dev/{d}/#"),
        };
        table.subscribe(&filter, &client, entry());
    }
    let topics = (0..4096)
        .map(|_| {
            let m = metrics[rng.below(4) as usize];
            format!("site/{}/dev/{}/{m}", rng.below(100), rng.below(1000))
        })
        .collect();
    (table, topics)
}

fn bench_trie(c: &mut Criterion) {
    let (table, topics) = build();
    let mut g = c.benchmark_group("trie");
    g.throughput(Throughput::Elements(1));
    g.bench_function("match_100k_filters", |b| {
        let mut out = Matches::default();
        let mut i = 0usize;
        b.iter(|| {
            out.clear();
            table.matches(black_box(&topics[i & 4095]), &mut out);
            i = i.wrapping_add(1);
            black_box(out.direct.len());
        });
    });
    g.bench_function("match_miss", |b| {
        let mut out = Matches::default();
        b.iter(|| {
            out.clear();
            table.matches(black_box("other/tree/with/no/subscribers"), &mut out);
            black_box(out.direct.len());
        });
    });
    g.bench_function("subscribe_unsubscribe", |b| {
        let client: ClientId = Arc::from("bench-sub");
        let mut i = 0u32;
        b.iter(|| {
            let f = format!("site/{}/dev/+/x{}", i % 100, i % 7);
            table.subscribe(&f, &client, entry());
            table.unsubscribe(&f, &client);
            i = i.wrapping_add(1);
        });
    });
    g.finish();
}

criterion_group!(benches, bench_trie);
criterion_main!(benches);
