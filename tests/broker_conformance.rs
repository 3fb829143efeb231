//! One conformance suite, run against every broker implementation: the
//! guarantees documented on `wsgate::broker` hold for `memory` and for
//! `redis` (against a real redis-server).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Redis, wait_for};
use tokio::sync::mpsc;
use wsgate::broker::memory::MemoryBroker;
use wsgate::broker::redis::RedisBroker;
use wsgate::broker::{Broker, EventSink};
use wsgate::config::RedisConfig;
use wsgate::room::RoomName;

#[derive(Debug, PartialEq)]
enum Received {
    Event(String, String),
    Control(String),
}

/// Records what the broker hands over.
struct Recorder(mpsc::UnboundedSender<Received>);

impl EventSink for Recorder {
    fn deliver(&self, room: &str, payload: Bytes) {
        let _ = self
            .0
            .send(Received::Event(room.into(), String::from_utf8_lossy(&payload).into()));
    }
    fn control(&self, payload: Bytes) {
        let _ = self.0.send(Received::Control(String::from_utf8_lossy(&payload).into()));
    }
}

struct Probe {
    broker: Arc<dyn Broker>,
    received: mpsc::UnboundedReceiver<Received>,
}

impl Probe {
    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(5), self.received.recv())
            .await
            .expect("broker delivered in time")
            .expect("sink alive")
    }
}

fn room(name: &str) -> RoomName {
    RoomName::new(name).unwrap()
}

type Factory = Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Probe>>>>;

fn memory_factory() -> Factory {
    Box::new(|| {
        Box::pin(async {
            let (tx, rx) = mpsc::unbounded_channel();
            let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(Arc::new(Recorder(tx))));
            Probe { broker, received: rx }
        })
    })
}

fn redis_factory(url: String) -> Factory {
    Box::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let (tx, rx) = mpsc::unbounded_channel();
            let broker: Arc<dyn Broker> =
                Arc::new(RedisBroker::connect(&url, &RedisConfig::default(), Arc::new(Recorder(tx))).unwrap());
            let up = broker.clone();
            wait_for("redis broker up", || {
                let up = up.clone();
                async move { up.is_up() }
            })
            .await;
            Probe { broker, received: rx }
        })
    })
}

/// The guarantees every broker gives a single node.
async fn single_node_suite(new_probe: &Factory) {
    let mut node = new_probe().await;
    let (a, b) = (room("user:1"), room("org:x"));
    assert!(node.broker.is_up());

    // subscribe resolves once live: a publish right after it is delivered.
    node.broker.subscribe(&a).await.unwrap();
    node.broker.publish(&a, Bytes::from_static(b"one")).await.unwrap();
    assert_eq!(node.next().await, Received::Event("user:1".into(), "one".into()));

    // Not subscribed: not delivered (shown by the next delivery being the sentinel).
    node.broker
        .publish(&b, Bytes::from_static(b"not-for-us"))
        .await
        .unwrap();
    node.broker.publish(&a, Bytes::from_static(b"sentinel")).await.unwrap();
    assert_eq!(node.next().await, Received::Event("user:1".into(), "sentinel".into()));

    // Order of one publisher is kept.
    for i in 0..100 {
        node.broker.publish(&a, Bytes::from(i.to_string())).await.unwrap();
    }
    for i in 0..100 {
        assert_eq!(node.next().await, Received::Event("user:1".into(), i.to_string()));
    }

    // unsubscribe stops delivery.
    node.broker.subscribe(&b).await.unwrap();
    node.broker.unsubscribe(&a).await.unwrap();
    node.broker.publish(&a, Bytes::from_static(b"gone")).await.unwrap();
    node.broker
        .publish(&b, Bytes::from_static(b"b-sentinel"))
        .await
        .unwrap();
    assert_eq!(node.next().await, Received::Event("org:x".into(), "b-sentinel".into()));

    // Control messages reach the node itself.
    node.broker.publish_control(Bytes::from_static(b"ctl")).await.unwrap();
    assert_eq!(node.next().await, Received::Control("ctl".into()));
    node.broker.close().await;
}

#[tokio::test]
async fn memory_broker_conforms() {
    single_node_suite(&memory_factory()).await;
    assert_eq!(memory_factory()().await.broker.kind(), "memory");
}

#[tokio::test]
async fn redis_broker_conforms() {
    let redis = Redis::start().await;
    single_node_suite(&redis_factory(redis.url())).await;
}

#[tokio::test]
async fn redis_brokers_on_two_nodes_each_receive_once() {
    let redis = Redis::start().await;
    let factory = redis_factory(redis.url());
    let mut n1 = factory().await;
    let mut n2 = factory().await;
    let shared = room("org:acme");
    let only_n2 = room("user:2");
    n1.broker.subscribe(&shared).await.unwrap();
    n2.broker.subscribe(&shared).await.unwrap();
    n2.broker.subscribe(&only_n2).await.unwrap();
    assert_eq!(redis.numsub("gw:org:acme").await, 2);

    n1.broker.publish(&shared, Bytes::from_static(b"x")).await.unwrap();
    n1.broker.publish(&only_n2, Bytes::from_static(b"y")).await.unwrap();
    n1.broker.publish(&shared, Bytes::from_static(b"z")).await.unwrap();
    assert_eq!(n1.next().await, Received::Event("org:acme".into(), "x".into()));
    assert_eq!(
        n1.next().await,
        Received::Event("org:acme".into(), "z".into()),
        "n1 never sees user:2"
    );
    assert_eq!(n2.next().await, Received::Event("org:acme".into(), "x".into()));
    assert_eq!(n2.next().await, Received::Event("user:2".into(), "y".into()));
    assert_eq!(n2.next().await, Received::Event("org:acme".into(), "z".into()));

    n1.broker.publish_control(Bytes::from_static(b"all")).await.unwrap();
    assert_eq!(n1.next().await, Received::Control("all".into()));
    assert_eq!(n2.next().await, Received::Control("all".into()));
}

#[tokio::test]
async fn redis_broker_reports_down_refuses_fast_and_resubscribes() {
    let mut redis = Redis::start().await;
    let mut node = redis_factory(redis.url())().await;
    let live = room("user:1");
    node.broker.subscribe(&live).await.unwrap();

    redis.kill().await;
    let broker = node.broker.clone();
    wait_for("broker down", || {
        let broker = broker.clone();
        async move { !broker.is_up() }
    })
    .await;
    // While down, joins and publishes are refused (not queued for later).
    assert!(node.broker.subscribe(&room("user:2")).await.is_err());
    assert!(node.broker.publish(&live, Bytes::from_static(b"lost")).await.is_err());

    redis.restart().await;
    wait_for("broker up again", || {
        let broker = broker.clone();
        async move { broker.is_up() }
    })
    .await;
    // The live room was re-subscribed; the refused one was not.
    assert_eq!(redis.numsub("gw:user:1").await, 1);
    assert_eq!(redis.numsub("gw:user:2").await, 0);
    node.broker.publish(&live, Bytes::from_static(b"back")).await.unwrap();
    assert_eq!(node.next().await, Received::Event("user:1".into(), "back".into()));
}
