//! Session queue micro-benchmarks: `SessionData::enqueue` and
//! `next_sendable` at QoS 0 and QoS 1 (with PUBACKs freeing the window).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;
use tern_broker::codec::{Properties, QoS};
use tern_broker::config::DropPolicy;
use tern_broker::session::{Delivery, Message, SessionData};

const N: usize = 1000;

fn delivery(qos: QoS) -> Delivery {
    let msg = Message::new(
        Arc::from("bench/topic"),
        Bytes::from_static(&[7u8; 64]),
        qos,
        false,
        &Properties::default(),
    );
    Delivery {
        msg: Arc::new(msg),
        qos,
        retain: false,
        sub_ids: Vec::new(),
    }
}

fn bench_session(c: &mut Criterion) {
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(N as u64));
    for (name, qos) in [("qos0", QoS::AtMostOnce), ("qos1", QoS::AtLeastOnce)] {
        let d = delivery(qos);
        g.bench_function(format!("enqueue_{name}_x{N}"), |b| {
            b.iter_batched_ref(
                || SessionData::new(Arc::from("c")),
                |s| {
                    for _ in 0..N {
                        s.enqueue(d.clone(), true, 100_000, DropPolicy::DropNewest);
                    }
                },
                BatchSize::SmallInput,
            );
        });
        g.bench_function(format!("enqueue_dequeue_{name}_x{N}"), |b| {
            let mut s = SessionData::new(Arc::from("c"));
            let mut expired = 0u64;
            b.iter(|| {
                for _ in 0..N {
                    s.enqueue(d.clone(), true, 100_000, DropPolicy::DropNewest);
                    let (out, pkid) = s.next_sendable(100, 0, &mut expired).expect("sendable");
                    if pkid != 0 {
                        s.puback(pkid);
                    }
                    black_box(out);
                }
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench_session);
criterion_main!(benches);
