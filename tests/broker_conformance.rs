//! One conformance suite, run against every broker implementation: the
//! guarantees documented on `wsgate::broker` hold for `memory` and for
//! `redis` (against a real redis-server, and against a real 3-master Redis
//! Cluster on sharded pub/sub): pub/sub, and the history of durable rooms
//! (offsets, epochs, trimming, reads), and presence (counts summed over
//! nodes, the first join and the last leave announced, dead nodes expiring).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::topologies::RedisCluster;
use common::{Redis, wait_for};
use tokio::sync::mpsc;
use wsgate::broker::memory::MemoryBroker;
use wsgate::broker::presence::{Member, RoomUpdate};
use wsgate::broker::redis::RedisBroker;
use wsgate::broker::{Broker, EventSink, history};
use wsgate::config::{HistoryConfig, PresenceConfig, RedisConfig, RedisMode};
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

/// `orders:` rooms keep the last 5 events.
fn history_config() -> HistoryConfig {
    HistoryConfig {
        namespaces: vec!["orders".into()],
        size: 5,
        ttl_s: 600,
    }
}

/// `chat:` rooms have presence, with events and a short TTL.
fn presence_config() -> PresenceConfig {
    PresenceConfig {
        namespaces: vec!["chat".into()],
        ttl_s: 2,
        events: true,
    }
}

type Factory = Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Probe>>>>;

fn memory_factory() -> Factory {
    Box::new(|| {
        Box::pin(async {
            let (tx, rx) = mpsc::unbounded_channel();
            let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(
                Arc::new(Recorder(tx)),
                &history_config(),
                &presence_config(),
            ));
            Probe { broker, received: rx }
        })
    })
}

fn redis_factory(url: String) -> Factory {
    redis_factory_in(url, RedisMode::Standalone)
}

fn redis_factory_in(url: String, mode: RedisMode) -> Factory {
    Box::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let (tx, rx) = mpsc::unbounded_channel();
            let config = RedisConfig {
                mode,
                ..RedisConfig::default()
            };
            let broker: Arc<dyn Broker> = Arc::new(
                RedisBroker::connect(
                    &url,
                    &config,
                    &history_config(),
                    &presence_config(),
                    60 * 1024,
                    Arc::new(Recorder(tx)),
                )
                .unwrap(),
            );
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

/// The history guarantees: contiguous offsets in one epoch, atomic with the
/// publish, reads of a consistent position and range, exact coverage.
async fn history_suite(new_probe: &Factory) {
    let mut node = new_probe().await;
    let orders = room("orders:1");

    // A room's epoch exists from its first read, at offset 0, and stays.
    let first = node.broker.history(&orders, 0, 0, 0).await.unwrap();
    assert_eq!(first.position.offset, 0);
    assert!(history::is_valid_epoch(&first.position.epoch), "{:?}", first.position);
    let epoch = first.position.epoch.clone();
    assert_eq!(
        node.broker.history(&orders, 0, 10, 10).await.unwrap().position,
        first.position
    );

    // Offsets follow 1, 2, 3 in that epoch; subscribers get the framed event.
    node.broker.subscribe(&orders).await.unwrap();
    for expected in 1..=3u64 {
        let payload = format!(r#"{{"event":"e","data":{expected}}}"#);
        let position = node
            .broker
            .publish_durable(&orders, Bytes::from(payload.clone()))
            .await
            .unwrap();
        assert_eq!((position.offset, &*position.epoch), (expected, &*epoch));
        let framed = String::from_utf8(history::frame(expected, &epoch, payload.as_bytes()).to_vec()).unwrap();
        assert_eq!(node.next().await, Received::Event("orders:1".into(), framed));
    }

    // A read after an offset returns exactly the events after it, in order.
    let page = node.broker.history(&orders, 1, 10, 10).await.unwrap();
    assert_eq!(page.position.offset, 3);
    let offsets: Vec<u64> = page.events.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, [2, 3]);
    assert_eq!(&page.events[0].1[..], br#"{"event":"e","data":2}"#);
    assert!(page.covers(1) && page.covers(3));
    assert!(node.broker.history(&orders, 3, 10, 10).await.unwrap().events.is_empty());
    // `limit` caps the read; `max_gap` refuses a range too long to use.
    assert_eq!(node.broker.history(&orders, 0, 2, 10).await.unwrap().events.len(), 2);
    assert!(node.broker.history(&orders, 0, 10, 2).await.unwrap().events.is_empty());

    // Past `size`, old events are trimmed: a position before them cannot be
    // recovered, a recent one can. (Redis trims `MAXLEN ~` a stream node of
    // 100 entries at a time: publish well past that.)
    for i in 0..250 {
        node.broker
            .publish_durable(&orders, Bytes::from(format!(r#"{{"event":"e","data":{i}}}"#)))
            .await
            .unwrap();
    }
    for _ in 0..250 {
        node.next().await;
    }
    let page = node.broker.history(&orders, 3, 1000, 1000).await.unwrap();
    assert_eq!(page.position.offset, 253);
    assert!(!page.covers(3), "trimmed: offset 4 is gone");
    let page = node.broker.history(&orders, 248, 5, 5).await.unwrap();
    assert!(
        page.covers(248),
        "the last 5 are kept: {:?}",
        page.events.iter().map(|e| e.0).collect::<Vec<_>>()
    );

    // Rooms are independent; plain publishes stay at-most-once, unframed.
    let other = node.broker.history(&room("orders:2"), 0, 0, 0).await.unwrap();
    assert_eq!(other.position.offset, 0);
    node.broker
        .publish(&orders, Bytes::from_static(br#"{"event":"plain"}"#))
        .await
        .unwrap();
    assert_eq!(
        node.next().await,
        Received::Event("orders:1".into(), r#"{"event":"plain"}"#.into())
    );
    assert_eq!(
        node.broker.history(&orders, 0, 0, 0).await.unwrap().position.offset,
        253
    );
}

fn set(room: &RoomName, users: &[(&str, u32)], replace: bool) -> RoomUpdate {
    RoomUpdate {
        room: room.clone(),
        users: users.iter().map(|(u, n)| (Arc::from(*u), *n)).collect(),
        replace,
    }
}

fn members(list: &[(&str, u64)]) -> Vec<Member> {
    list.iter()
        .map(|(user, n)| Member {
            user_id: user.to_string(),
            connections: *n,
        })
        .collect()
}

/// Presence as every broker gives it: two node ids on one broker stand for
/// two nodes.
async fn presence_suite(new_probe: &Factory) {
    let mut node = new_probe().await;
    let chat = room(&format!("chat:{:x}", fastrand::u64(..)));
    let other = room(&format!("chat:{:x}", fastrand::u64(..)));
    node.broker.subscribe(&chat).await.unwrap();
    node.broker.subscribe(&other).await.unwrap();
    let broker = node.broker.clone();
    let marker = |text: &str| Received::Event(chat.as_str().into(), text.into());
    assert!(broker.presence(&chat).await.unwrap().is_empty(), "nobody yet");

    // A user's first connection anywhere is announced; counts of nodes add up.
    assert_eq!(
        broker
            .presence_update("n1", &[set(&chat, &[("42", 2)], false)])
            .await
            .unwrap(),
        vec![true]
    );
    assert_eq!(node.next().await, marker("__p:j:42"));
    assert_eq!(
        broker
            .presence_update("n2", &[set(&chat, &[("42", 1), ("7", 1)], false)])
            .await
            .unwrap(),
        vec![true]
    );
    assert_eq!(
        node.next().await,
        marker("__p:j:7"),
        "42 was already in: no second join"
    );
    assert_eq!(broker.presence(&chat).await.unwrap(), members(&[("42", 3), ("7", 1)]));

    // A heartbeat changes nothing and says whether the node is in the room.
    let beats = [RoomUpdate::beat(chat.clone()), RoomUpdate::beat(other.clone())];
    assert_eq!(broker.presence_update("n1", &beats).await.unwrap(), vec![true, false]);
    assert_eq!(broker.presence(&chat).await.unwrap(), members(&[("42", 3), ("7", 1)]));

    // A user still on another node does not leave; its last connection does.
    assert_eq!(
        broker.presence_update("n1", &[set(&chat, &[], true)]).await.unwrap(),
        vec![false],
        "an empty full update takes the node out"
    );
    assert_eq!(broker.presence(&chat).await.unwrap(), members(&[("42", 1), ("7", 1)]));
    assert_eq!(
        broker
            .presence_update("n2", &[set(&chat, &[("7", 1)], true)])
            .await
            .unwrap(),
        vec![true]
    );
    assert_eq!(node.next().await, marker("__p:l:42"));
    assert_eq!(broker.presence(&chat).await.unwrap(), members(&[("7", 1)]));

    // One call, several rooms, in order.
    let batch = [
        set(&chat, &[("7", 0)], false),
        set(&other, &[("9", 1)], false),
        set(&chat, &[("8", 4)], false),
    ];
    assert_eq!(
        broker.presence_update("n2", &batch).await.unwrap(),
        vec![false, true, true]
    );
    // (In order per room: in a cluster, rooms on two shards reach the node
    // by two connections.)
    let mut got = vec![node.next().await, node.next().await, node.next().await];
    got.retain(|r| *r != Received::Event(other.as_str().into(), "__p:j:9".into()));
    assert_eq!(got, vec![marker("__p:l:7"), marker("__p:j:8")]);
    assert_eq!(broker.presence(&chat).await.unwrap(), members(&[("8", 4)]));
    assert_eq!(broker.presence(&other).await.unwrap(), members(&[("9", 1)]));

    // Nothing else was announced.
    broker.publish(&chat, Bytes::from_static(b"sentinel")).await.unwrap();
    assert_eq!(node.next().await, marker("sentinel"));
}

/// A node that stops updating drops out within the TTL; the next update of
/// the room by another node announces the users it took away.
async fn presence_expiry_suite(new_probe: &Factory) {
    let mut node = new_probe().await;
    let chat = room(&format!("chat:{:x}", fastrand::u64(..)));
    node.broker.subscribe(&chat).await.unwrap();
    let broker = node.broker.clone();
    let marker = |text: &str| Received::Event(chat.as_str().into(), text.into());
    broker
        .presence_update("dead", &[set(&chat, &[("5", 1), ("6", 1)], false)])
        .await
        .unwrap();
    broker
        .presence_update("alive", &[set(&chat, &[("6", 1)], false)])
        .await
        .unwrap();
    assert_eq!(node.next().await, marker("__p:j:5"));
    assert_eq!(node.next().await, marker("__p:j:6"));
    // "alive" beats; "dead" does not.
    wait_for("the dead node's users gone", || {
        let broker = broker.clone();
        let chat = chat.clone();
        async move {
            broker
                .presence_update("alive", &[RoomUpdate::beat(chat.clone())])
                .await
                .unwrap()
                == vec![true]
                && broker.presence(&chat).await.unwrap() == members(&[("6", 1)])
        }
    })
    .await;
    // The read above may have seen the entry expire after the beat before
    // it ran: one more update of the room surely comes after the expiry,
    // and announces the leave unless an earlier one already did.
    broker
        .presence_update("alive", &[RoomUpdate::beat(chat.clone())])
        .await
        .unwrap();
    assert_eq!(
        node.next().await,
        marker("__p:l:5"),
        "only the user on no live node leaves"
    );
    // A heartbeat of the expired node finds it gone: the tracker writes it again.
    assert_eq!(
        broker
            .presence_update("dead", &[RoomUpdate::beat(chat.clone())])
            .await
            .unwrap(),
        vec![false]
    );
}

#[tokio::test]
async fn memory_broker_conforms() {
    single_node_suite(&memory_factory()).await;
    history_suite(&memory_factory()).await;
    presence_suite(&memory_factory()).await;
    assert_eq!(memory_factory()().await.broker.kind(), "memory");
}

#[tokio::test]
async fn memory_broker_starts_new_epochs_when_the_process_restarts() {
    let factory = memory_factory();
    let orders = room("orders:1");
    let before = factory().await.broker.history(&orders, 0, 0, 0).await.unwrap();
    let after = factory().await.broker.history(&orders, 0, 0, 0).await.unwrap();
    assert_ne!(before.position.epoch, after.position.epoch);
}

#[tokio::test]
async fn redis_broker_conforms() {
    let redis = Redis::start().await;
    single_node_suite(&redis_factory(redis.url())).await;
    history_suite(&redis_factory(redis.url())).await;
    presence_suite(&redis_factory(redis.url())).await;
}

#[tokio::test]
async fn redis_presence_expires_dead_nodes_and_keeps_to_the_rooms_slot() {
    let redis = Redis::start().await;
    presence_expiry_suite(&redis_factory(redis.url())).await;
    let keys = redis.cmd(&["KEYS", "*"]).await;
    assert!(keys.contains(":pn"), "{keys}");
    for key in keys.lines().filter(|l| l.contains(":pn") || l.contains(":pu:")) {
        assert!(key.starts_with("{gw:chat:") && key.contains("}:p"), "{key}");
    }
    // Every key expires on its own.
    for key in keys.lines().filter(|l| l.starts_with("{gw:chat:")) {
        let ttl: i64 = redis
            .cmd(&["PTTL", key])
            .await
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap_or(-1);
        assert!(ttl > 0 || ttl == -2, "{key} has a TTL ({ttl})");
    }
}

#[tokio::test]
async fn redis_history_is_shared_by_nodes_and_backends_through_fcall() {
    let redis = Redis::start().await;
    let factory = redis_factory(redis.url());
    let mut n1 = factory().await;
    let mut n2 = factory().await;
    let orders = room("orders:7");
    n1.broker.subscribe(&orders).await.unwrap();
    n2.broker.subscribe(&orders).await.unwrap();
    let epoch = n1.broker.history(&orders, 0, 0, 0).await.unwrap().position.epoch;

    // Publishers on both nodes and a backend share one sequence.
    n1.broker
        .publish_durable(&orders, Bytes::from_static(br#"{"event":"a"}"#))
        .await
        .unwrap();
    n2.broker
        .publish_durable(&orders, Bytes::from_static(br#"{"event":"b"}"#))
        .await
        .unwrap();
    assert_eq!(redis.fcall_publish("orders:7", r#"{"event":"c"}"#).await, Ok(3));
    for node in [&mut n1, &mut n2] {
        for (offset, name) in [(1, "a"), (2, "b"), (3, "c")] {
            let framed = format!(r#"__d:{offset}:{epoch}__{{"event":"{name}"}}"#);
            assert_eq!(node.next().await, Received::Event("orders:7".into(), framed));
        }
    }

    // The function refuses what would break the stream, and says why.
    let refused = redis.fcall_publish("orders:7", "not json").await.unwrap_err();
    assert!(refused.contains("JSON object"), "{refused}");
    let refused = redis.fcall_publish("chat:1", r#"{"event":"x"}"#).await.unwrap_err();
    assert!(refused.contains("keeps no history"), "{refused}");
    // What cjson reads but the gateway would not: not UTF-8, a field of
    // the wrong type. (Valid non-ASCII text passes.)
    for bad in [
        &b"{\"event\":\"a\",\"data\":\"\xff\"}"[..],
        b"{\"event\":\"a\",\"data\":\"\xed\xa0\x80\"}",
    ] {
        let refused = redis.fcall_publish_bytes("orders:7", bad).await.unwrap_err();
        assert!(refused.contains("not UTF-8"), "{refused}");
    }
    let refused = redis
        .fcall_publish("orders:7", r#"{"event":"a","id":5}"#)
        .await
        .unwrap_err();
    assert!(refused.contains("'id' must be a string"), "{refused}");
    assert_eq!(
        redis
            .fcall_publish("orders:7", r#"{"event":"é","data":"日本 🎉","id":null}"#)
            .await,
        Ok(4)
    );
    for node in [&mut n1, &mut n2] {
        assert!(matches!(node.next().await, Received::Event(_, framed) if framed.starts_with("__d:4:")));
    }
    assert_eq!(n1.broker.history(&orders, 0, 0, 0).await.unwrap().position.offset, 4);

    // Every key the function touches hashes to the channel's slot.
    let keys = redis.cmd(&["KEYS", "*"]).await;
    for key in keys.lines().filter(|l| l.starts_with('{')) {
        assert!(key.starts_with("{gw:orders:7}:"), "{key}");
    }
    assert!(
        keys.contains("{gw:orders:7}:h") && keys.contains("{gw:orders:7}:m"),
        "{keys}"
    );
    // The history lives ttl_s (600) after the last event, the position a
    // day (so a quiet room's clients still resume with recovered:true).
    let ttl = common::topologies::last_integer(&redis.cmd(&["TTL", "{gw:orders:7}:h"]).await);
    assert!((590..=600).contains(&ttl), "stream TTL {ttl}");
    let ttl = common::topologies::last_integer(&redis.cmd(&["TTL", "{gw:orders:7}:m"]).await);
    assert!(
        (24 * 3600 - 10..=24 * 3600 * 11 / 10).contains(&ttl),
        "position TTL {ttl}: a day, at most a tenth more"
    );

    // History lost (as when Redis restarts without persistence): a new epoch.
    redis.cmd(&["FLUSHALL"]).await;
    let after = n1.broker.history(&orders, 0, 0, 0).await.unwrap().position;
    assert_eq!(after.offset, 0);
    assert_ne!(after.epoch, epoch);
}

/// The function's UTF-8 check agrees with the gateway's parser on every
/// kind of byte sequence: what it accepts every node reads, what it
/// refuses no node could have read.
#[tokio::test]
async fn the_function_accepts_exactly_the_text_the_gateway_reads() {
    let redis = Redis::start().await;
    let factory = redis_factory(redis.url());
    let _node = factory().await; // loads the library
    let pieces: [&[u8]; 16] = [
        b"a",
        "é".as_bytes(),
        "日".as_bytes(),
        "🎉".as_bytes(),
        "\u{10FFFF}".as_bytes(),
        b"\x80",
        b"\xc0\xaf",
        b"\xc1\xbf",
        b"\xe0\x80\xaf",
        b"\xed\xa0\x80",
        b"\xf0\x8f\xbf\xbf",
        b"\xf4\x90\x80\x80",
        b"\xf5\x80\x80\x80",
        b"\xff",
        b"\xe6\x97",
        b"\xf0\x9f\x8e",
    ];
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..300 {
        let mut text = Vec::new();
        for _ in 0..fastrand::usize(1..5) {
            text.extend_from_slice(pieces[fastrand::usize(..pieces.len())]);
        }
        let mut payload = br#"{"event":"e","data":""#.to_vec();
        payload.extend_from_slice(&text);
        payload.extend_from_slice(br#""}"#);
        let reply = redis.fcall_publish_bytes("orders:utf8", &payload).await;
        let readable = wsgate::protocol::BackendEvent::parse(&payload).is_ok();
        assert_eq!(std::str::from_utf8(&text).is_ok(), readable, "{text:?}");
        match reply {
            Ok(_) if readable => accepted += 1,
            Err(reason) if !readable => {
                assert!(reason.contains("not UTF-8"), "{reason}");
                refused += 1;
            }
            other => panic!("{text:?}: the gateway reads it: {readable}, the function: {other:?}"),
        }
    }
    assert!(accepted > 10 && refused > 10, "{accepted} accepted, {refused} refused");
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

#[tokio::test]
async fn redis_cluster_broker_conforms() {
    let cluster = RedisCluster::start(3).await;
    let factory = redis_factory_in(cluster.url(), RedisMode::Cluster);
    single_node_suite(&factory).await;
    history_suite(&factory).await;
    presence_suite(&factory).await;
    presence_expiry_suite(&factory).await;
}

#[tokio::test]
async fn redis_cluster_brokers_on_two_nodes_use_only_the_owning_shard() {
    let cluster = RedisCluster::start(3).await;
    let factory = redis_factory_in(cluster.url(), RedisMode::Cluster);
    let mut n1 = factory().await;
    let mut n2 = factory().await;
    // Rooms until two shards own at least one each.
    let rooms: Vec<RoomName> = (0..8).map(|i| room(&format!("org:{i}"))).collect();
    let mut owners = Vec::new();
    for r in &rooms {
        owners.push(cluster.owner(&format!("gw:{}", r.as_str())).await);
    }
    assert!(owners.iter().any(|&o| o != owners[0]), "rooms on more than one shard");
    for r in &rooms {
        n1.broker.subscribe(r).await.unwrap();
        n2.broker.subscribe(r).await.unwrap();
    }
    for (r, &owner) in rooms.iter().zip(&owners) {
        let channel = format!("gw:{}", r.as_str());
        for shard in 0..3 {
            let expected = if shard == owner { 2 } else { 0 };
            assert_eq!(
                cluster.shard_numsub(shard, &channel).await,
                expected,
                "{channel} on shard {shard} (owner {owner})"
            );
            assert_eq!(cluster.numsub(shard, &channel).await, 0, "no classic subscription");
        }
    }
    for r in &rooms {
        n1.broker.publish(r, Bytes::from(r.as_str().to_string())).await.unwrap();
    }
    // Each room's event once. Rooms on different shards arrive over
    // different connections, so only the set is fixed, not the order.
    let wanted: std::collections::BTreeSet<String> = rooms.iter().map(|r| r.as_str().to_string()).collect();
    for node in [&mut n1, &mut n2] {
        let mut got = std::collections::BTreeSet::new();
        for _ in &rooms {
            match node.next().await {
                Received::Event(room, payload) => {
                    assert_eq!(room, payload, "the room's own event");
                    assert!(got.insert(room.clone()), "{room} delivered twice");
                }
                other => panic!("expected an event, got {other:?}"),
            }
        }
        assert_eq!(got, wanted);
    }
    n2.broker.publish_control(Bytes::from_static(b"all")).await.unwrap();
    assert_eq!(n1.next().await, Received::Control("all".into()));
    assert_eq!(n2.next().await, Received::Control("all".into()));

    // A room left by one node is unsubscribed on its shard for that node only.
    n1.broker.unsubscribe(&rooms[0]).await.unwrap();
    let channel = format!("gw:{}", rooms[0].as_str());
    assert_eq!(cluster.shard_numsub(owners[0], &channel).await, 1);
}
