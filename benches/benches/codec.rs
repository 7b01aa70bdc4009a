//! Codec micro-benchmarks: decode and encode of PUBLISH (64 B and 1 KiB
//! payloads, MQTT 3.1.1 and 5.0) and of a 5.0 CONNECT with properties.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tern_broker::codec::{
    decode, encode, Connect, LastWill, Packet, Properties, Protocol, Publish, QoS,
};

const MAX: usize = 1 << 20;

fn publish(payload: usize, protocol: Protocol) -> Packet {
    let mut properties = Properties::default();
    if protocol.is_v5() {
        properties.content_type = Some("application/octet-stream".into());
        properties.user_properties = vec![("k".into(), "v".into())];
    }
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "sensors/building-7/floor-3/room-12/temperature".into(),
        pkid: 42,
        payload: Bytes::from(vec![0xA5; payload]),
        properties,
    })
}

fn connect_v5() -> Packet {
    let properties = Properties {
        session_expiry_interval: Some(3600),
        receive_maximum: Some(100),
        maximum_packet_size: Some(1 << 20),
        topic_alias_maximum: Some(16),
        request_problem_information: Some(1),
        user_properties: vec![
            ("region".into(), "eu-west".into()),
            ("app".into(), "bench".into()),
        ],
        ..Properties::default()
    };
    let will = LastWill {
        topic: "clients/bench/status".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties {
            will_delay_interval: Some(5),
            content_type: Some("text/plain".into()),
            ..Properties::default()
        },
    };
    Packet::Connect(Box::new(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: "bench-client-000001".into(),
        will: Some(will),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"secret")),
        properties,
    }))
}

fn encoded(p: &Packet, protocol: Protocol) -> Bytes {
    let mut out = BytesMut::new();
    encode(p, protocol, &mut out).expect("encode");
    out.freeze()
}

fn bench_codec(c: &mut Criterion) {
    let mut cases: Vec<(String, Packet, Protocol, Option<Protocol>)> = Vec::new();
    for (pname, proto) in [("v311", Protocol::V311), ("v5", Protocol::V5)] {
        for (sname, size) in [("64B", 64), ("1KiB", 1024)] {
            cases.push((
                format!("publish_{pname}_{sname}"),
                publish(size, proto),
                proto,
                Some(proto),
            ));
        }
    }
    cases.push(("connect_v5_props".into(), connect_v5(), Protocol::V5, None));

    let mut g = c.benchmark_group("decode");
    for (name, packet, proto, decode_as) in &cases {
        let bytes = encoded(packet, *proto);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &bytes, |b, bytes| {
            let mut buf = BytesMut::with_capacity(bytes.len());
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(bytes);
                let p = decode(&mut buf, *decode_as, MAX)
                    .expect("decode")
                    .expect("whole packet");
                black_box(p);
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode");
    for (name, packet, proto, _) in &cases {
        let len = encoded(packet, *proto).len();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), packet, |b, packet| {
            let mut out = BytesMut::with_capacity(len * 2);
            b.iter(|| {
                out.clear();
                encode(black_box(packet), *proto, &mut out).expect("encode");
                black_box(&out);
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
