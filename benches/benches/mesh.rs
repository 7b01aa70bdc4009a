//! Cluster mesh micro-benchmarks: a `PublishBatch` of 256 envelopes (64 B
//! payloads, 10 publishers on their own topics, as in the loadgen's
//! cross-node pairs) encoded as the sending node writes it, and decoded as
//! the receiving node reads it (`pb::Frame`, whose batch is decoded by
//! hand into broker messages).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use prost::Message as _;
use std::sync::Arc;
use tern_broker::codec::{Properties, QoS};
use tern_broker::session::Message;
use tern_cluster::batch::{Batch, Received};
use tern_cluster::pb;

const N: usize = 256;

fn batch(qos: QoS) -> Batch {
    let envelopes: Vec<Received> = (0..N)
        .map(|i| {
            let p = i % 10;
            let mut msg = Message::new(
                Arc::from(format!("bench/pairs/{p}")),
                Bytes::from(vec![i as u8; 64]),
                qos,
                false,
                &Properties::default(),
            );
            msg.origin = Some(Arc::from(format!("loadgen-pub-{p}")));
            Received {
                seq: 1_000_000 + i as u64,
                message: Ok(Arc::new(msg)),
                direct: true,
                groups: Vec::new(),
                retained: false,
            }
        })
        .collect();
    let mut b = Batch::default();
    b.envelopes = envelopes;
    b
}

fn bench_mesh(c: &mut Criterion) {
    let mut g = c.benchmark_group("mesh");
    g.throughput(Throughput::Elements(N as u64));
    for (name, qos) in [("qos0", QoS::AtMostOnce), ("qos1", QoS::AtLeastOnce)] {
        let frame = pb::Frame {
            kind: Some(pb::frame::Kind::PublishBatch(batch(qos))),
        };
        let bytes = Bytes::from(frame.encode_to_vec());
        g.bench_function(format!("encode_batch_{name}_x{N}"), |b| {
            let mut buf = Vec::with_capacity(bytes.len());
            b.iter(|| {
                buf.clear();
                frame.encode(&mut buf).expect("room");
                black_box(&buf);
            });
        });
        g.bench_function(format!("decode_batch_{name}_x{N}"), |b| {
            b.iter(|| black_box(pb::Frame::decode(bytes.clone()).expect("valid")));
        });
    }
    g.finish();
}

criterion_group!(benches, bench_mesh);
criterion_main!(benches);
