//! Micro-benchmarks of the hot paths: what one event costs before it reaches
//! a socket (validate, encode once, fan out), what a join/leave costs, and
//! what verifying a token costs. `cargo bench`; numbers go to BENCHMARKS.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsgate::auth::{Signer, TokenRequest, Verifier};
use wsgate::broker::{EventSink, HistoryPage, Position, history};
use wsgate::config::{ClaimNames, HistoryConfig, JwtConfig, Secret};
use wsgate::hub::durable::Tails;
use wsgate::hub::{Admission, Batch, Connection, Hub, Settled, Transport};
use wsgate::protocol::{BackendEvent, encode_event};
use wsgate::room::RoomName;

const PAYLOAD: &[u8] =
    br#"{"event":"order:updated","data":{"id":7,"status":"shipped","items":[1,2,3],"note":"left at the door"}}"#;

const EPOCH: &str = "1764432000123456";

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

fn payload(c: &mut Criterion) {
    let mut group = c.benchmark_group("payload");
    group.throughput(Throughput::Bytes(PAYLOAD.len() as u64));
    group.bench_function("validate", |b| {
        b.iter(|| BackendEvent::parse(std::hint::black_box(PAYLOAD)).is_ok())
    });
    group.bench_function("validate_invalid", |b| {
        b.iter(|| BackendEvent::parse(std::hint::black_box(br#"{"data":{"id":7}}"#)).is_err())
    });
    group.bench_function("validate_and_encode_frame", |b| {
        b.iter(|| {
            let event = BackendEvent::parse(std::hint::black_box(PAYLOAD)).ok();
            event.map(|e| encode_event("user:42", &e, None))
        })
    });
    group.finish();
}

/// A hub with `members` connections in `room`, spread over `shards`; the
/// room keeps history when `durable`.
fn hub_with_room(members: usize, shards: usize, room: &RoomName, durable: bool) -> (Arc<Hub>, Vec<Arc<Connection>>) {
    let history = HistoryConfig {
        namespaces: if durable {
            vec![room.namespace().to_string()]
        } else {
            Vec::new()
        },
        ..HistoryConfig::default()
    };
    let tails = Arc::new(Tails::new(history));
    tails.open(room);
    let limits = wsgate::hub::HubLimits {
        queue_limit: usize::MAX,
        max_event_bytes: usize::MAX,
        max_per_user: 0,
        max_queued_bytes: 0,
    };
    let hub = Hub::new("bench".into(), shards, limits, "memory", tails);
    let conns: Vec<Arc<Connection>> = (0..members)
        .map(|i| {
            let conn = hub
                .register(Arc::from(i.to_string()), addr(), Transport::WebSocket)
                .expect("no limit");
            if let Admission::Held = hub.admit(room, &conn, None, |_| None) {
                // A durable room's first join reads its position: here, offset 0.
                let page = HistoryPage {
                    position: Position {
                        offset: 0,
                        epoch: Arc::from(EPOCH),
                    },
                    events: Vec::new(),
                };
                assert!(matches!(
                    hub.settle(room, &conn, None, &page, |_| None),
                    Settled::Joined(_)
                ));
            }
            conn
        })
        .collect();
    (hub, conns)
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out");
    let room = RoomName::new("org:acme").expect("room");
    for members in [1usize, 100, 10_000] {
        let (hub, conns) = hub_with_room(members, 2, &room, false);
        let frame = Utf8Bytes::from(String::from_utf8_lossy(PAYLOAD).into_owned());
        group.throughput(Throughput::Elements(members as u64));
        group.bench_with_input(BenchmarkId::new("queue_to_members", members), &members, |b, _| {
            // Time only the fan-out; empty the queues between iterations.
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut batch = Batch::new();
                for _ in 0..iters {
                    let start = Instant::now();
                    hub.fan_out("org:acme", &frame, None, start);
                    total += start.elapsed();
                    for conn in &conns {
                        let _ = conn.drain(&mut batch);
                        batch.clear();
                    }
                }
                total
            })
        });
        group.bench_with_input(BenchmarkId::new("deliver_from_broker", members), &members, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut batch = Batch::new();
                let payload = Bytes::from_static(PAYLOAD);
                for _ in 0..iters {
                    let start = Instant::now();
                    hub.deliver("org:acme", payload.clone());
                    total += start.elapsed();
                    for conn in &conns {
                        let _ = conn.drain(&mut batch);
                        batch.clear();
                    }
                }
                total
            })
        });
        // The same room with history: each event carries its position and
        // goes through the room's tail (order check, window) first.
        let (durable_hub, durable_conns) = hub_with_room(members, 2, &room, true);
        durable_hub.deliver("org:acme", history::frame(1, EPOCH, PAYLOAD));
        let mut check = Batch::new();
        let _ = durable_conns[0].drain(&mut check);
        assert_eq!(check.len(), 1, "durable events reach the members");
        // Criterion may run the routine more than once: the offset lives
        // outside it, or a rerun would repeat offsets the tail drops.
        let offset = std::cell::Cell::new(1u64);
        group.bench_with_input(BenchmarkId::new("deliver_durable", members), &members, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut batch = Batch::new();
                for _ in 0..iters {
                    offset.set(offset.get() + 1);
                    let framed = history::frame(offset.get(), EPOCH, PAYLOAD);
                    let start = Instant::now();
                    durable_hub.deliver("org:acme", framed);
                    total += start.elapsed();
                    let _ = durable_conns[0].drain(&mut batch);
                    assert_eq!(batch.len(), 1, "every durable event reaches the members");
                    batch.clear();
                    for conn in &durable_conns {
                        let _ = conn.drain(&mut batch);
                        batch.clear();
                    }
                }
                total
            })
        });
    }
    group.finish();
}

fn join_leave(c: &mut Criterion) {
    let mut group = c.benchmark_group("rooms");
    let room = RoomName::new("org:acme").expect("room");
    for members in [10usize, 10_000] {
        let (hub, _conns) = hub_with_room(members, 2, &room, false);
        let newcomer = hub
            .register(Arc::from("newcomer"), addr(), Transport::WebSocket)
            .expect("no limit");
        group.bench_with_input(BenchmarkId::new("join_then_leave", members), &members, |b, _| {
            b.iter(|| {
                let _ = hub.admit(&room, &newcomer, None, |_| None);
                hub.leave(&room, &newcomer)
            })
        });
    }
    group.finish();
}

fn jwt(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt_verify");
    let request = TokenRequest {
        sub: "42".into(),
        org: Some("acme".into()),
        roles: vec!["support".into()],
        ttl_s: 3600,
        ..TokenRequest::default()
    };
    let hs = Verifier::from_config(&JwtConfig {
        secret: Some(Secret::new("bench-secret-0123456789abcdef")),
        ..JwtConfig::default()
    })
    .expect("verifier");
    let hs_token = Signer::hs256("bench-secret-0123456789abcdef", ClaimNames::default())
        .and_then(|s| s.sign(&request))
        .expect("token");
    group.bench_function("hs256", |b| {
        b.iter(|| hs.verify_cached(std::hint::black_box(&hs_token)).is_ok())
    });

    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let rs = Verifier::from_config(&JwtConfig {
        public_key_file: Some(format!("{fixtures}/rsa_public.pem").into()),
        ..JwtConfig::default()
    })
    .expect("verifier");
    let private = std::fs::read(format!("{fixtures}/rsa_private.pem")).expect("key");
    let rs_token = Signer::from_private_pem(&private, ClaimNames::default())
        .and_then(|s| s.sign(&request))
        .expect("token");
    group.bench_function("rs256", |b| {
        b.iter(|| rs.verify_cached(std::hint::black_box(&rs_token)).is_ok())
    });
    group.finish();
}

criterion_group!(benches, payload, fan_out, join_leave, jwt);
criterion_main!(benches);
