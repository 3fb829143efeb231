//! Routing: an event published to a room reaches exactly that room's sockets,
//! once each, on every node; the same on the embedded memory broker (through
//! the HTTP API) and on Redis (through `PUBLISH gw:<room>`).
//!
//! Absence is shown without sleeping: after the event under test, a sentinel
//! event is sent to the socket that must not have received it; the sentinel
//! must be the first event that socket sees.

mod common;

use common::*;
use serde_json::{Value, json};

/// Publishes the way a backend would for each broker.
enum Backend<'a> {
    Redis(&'a Redis),
    Api(&'a Node),
}

impl Backend<'_> {
    async fn publish(&self, room: &str, event: &str, data: Value) {
        match self {
            Backend::Redis(redis) => {
                let payload = json!({"event": event, "data": data}).to_string();
                redis.publish(&format!("gw:{room}"), &payload).await;
            }
            Backend::Api(node) => {
                node.publish(room, event, data).await;
            }
        }
    }
}

async fn expect_event(client: &mut Client, room: &str, event: &str) -> Value {
    let frame = client.recv_type("event").await;
    assert_eq!(frame["room"], room, "{frame}");
    assert_eq!(frame["event"], event, "{frame}");
    frame
}

/// Users 42 and 43 in org acme / globex with roles; checks each room kind.
async fn rooms_route_to_their_members_only(node: &Node, backend: Backend<'_>) {
    let mut a1 = Client::user(node, "42", Some("acme"), &["support"]).await;
    let mut a2 = Client::user(node, "42", Some("acme"), &["support"]).await;
    let mut b = Client::user(node, "43", Some("globex"), &["viewer"]).await;

    // user:
    backend.publish("user:42", "order:updated", json!({"id": 7})).await;
    let frame = expect_event(&mut a1, "user:42", "order:updated").await;
    assert_eq!(frame["data"], json!({"id": 7}));
    expect_event(&mut a2, "user:42", "order:updated").await;
    backend.publish("user:43", "sentinel", json!(1)).await;
    expect_event(&mut b, "user:43", "sentinel").await;

    // org:
    backend.publish("org:acme", "org:news", json!("hello")).await;
    expect_event(&mut a1, "org:acme", "org:news").await;
    expect_event(&mut a2, "org:acme", "org:news").await;
    backend.publish("org:globex", "sentinel", json!(2)).await;
    expect_event(&mut b, "org:globex", "sentinel").await;

    // role:
    backend.publish("role:viewer", "role:news", json!(null)).await;
    expect_event(&mut b, "role:viewer", "role:news").await;
    backend.publish("role:support", "sentinel", json!(3)).await;
    expect_event(&mut a1, "role:support", "sentinel").await;
    expect_event(&mut a2, "role:support", "sentinel").await;
}

#[tokio::test]
async fn redis_rooms_route_to_their_members_only() {
    let redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis)).await;
    rooms_route_to_their_members_only(&node, Backend::Redis(&redis)).await;
}

#[tokio::test]
async fn memory_rooms_route_to_their_members_only() {
    let node = Node::start(NodeOptions::memory()).await;
    rooms_route_to_their_members_only(&node, Backend::Api(&node)).await;
}

#[tokio::test]
async fn two_nodes_one_publish_exactly_once_per_member_per_node() {
    let redis = Redis::start().await;
    let n1 = Node::start(NodeOptions::redis(&redis).node_id("n1")).await;
    let n2 = Node::start(NodeOptions::redis(&redis).node_id("n2")).await;
    let mut clients = vec![
        Client::user(&n1, "42", Some("acme"), &[]).await,
        Client::user(&n1, "43", Some("acme"), &[]).await,
        Client::user(&n2, "44", Some("acme"), &[]).await,
        Client::user(&n2, "42", Some("acme"), &[]).await,
    ];
    // Each node holds one subscription to the org's channel, not one per socket.
    assert_eq!(redis.numsub("gw:org:acme").await, 2);
    assert_eq!(redis.publish("gw:org:acme", r#"{"event":"once","data":1}"#).await, 2);
    assert_eq!(redis.publish("gw:org:acme", r#"{"event":"after","data":2}"#).await, 2);
    for client in &mut clients {
        expect_event(client, "org:acme", "once").await;
        // No duplicate: the next event is the second publish.
        expect_event(client, "org:acme", "after").await;
    }
    // user:42 spans both nodes.
    redis.publish("gw:user:42", r#"{"event":"dm","data":{}}"#).await;
    expect_event(&mut clients[0], "user:42", "dm").await;
    expect_event(&mut clients[3], "user:42", "dm").await;
}

#[tokio::test]
async fn publish_through_the_api_of_one_node_reaches_the_other() {
    let redis = Redis::start().await;
    let n1 = Node::start(NodeOptions::redis(&redis)).await;
    let n2 = Node::start(NodeOptions::redis(&redis)).await;
    let mut on_n2 = Client::user(&n2, "42", None, &[]).await;
    Backend::Api(&n1).publish("user:42", "via:api", json!({"x": 1})).await;
    expect_event(&mut on_n2, "user:42", "via:api").await;
}

#[tokio::test]
async fn node_subscribes_per_room_and_unsubscribes_after_the_last_member() {
    let redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis)).await;
    let client = Client::user(&node, "42", Some("acme"), &["support"]).await;
    let mut channels = redis.channels("gw:*").await;
    channels.sort();
    // One channel per room, plus the node's control channel; no pattern.
    assert_eq!(
        channels,
        ["gw:$control", "gw:org:acme", "gw:role:support", "gw:user:42"]
    );
    drop(client);
    wait_for("rooms unsubscribed after the last member left", || async {
        redis.channels("gw:*").await == ["gw:$control"]
    })
    .await;
    node.wait_metric("wsgate_rooms", |v| v == 0.0).await;
}

async fn invalid_payloads_are_counted_and_dropped(node: &Node, publish_raw: impl AsyncFn(&str)) {
    let mut client = Client::user(node, "42", None, &[]).await;
    publish_raw("not json at all").await;
    publish_raw(r#"{"data":{"no":"event"}}"#).await;
    publish_raw(r#"{"event":"","data":1}"#).await;
    publish_raw(r#"{"event":"valid","data":1}"#).await;
    expect_event(&mut client, "user:42", "valid").await;
    node.wait_metric("wsgate_events_invalid_total", |v| v == 3.0).await;
}

#[tokio::test]
async fn redis_invalid_payloads_are_counted_and_the_next_event_delivered() {
    let redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis)).await;
    invalid_payloads_are_counted_and_dropped(&node, async |payload| {
        redis.publish("gw:user:42", payload).await;
    })
    .await;
    assert_eq!(node.status("/health").await, 200, "the node is unaffected");
}

#[tokio::test]
async fn events_keep_their_order_and_stream_id() {
    let redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis)).await;
    let mut client = Client::user(&node, "42", None, &[]).await;
    for i in 0..200 {
        let payload = json!({"event": "seq", "data": {"i": i}, "id": format!("{i}-0")}).to_string();
        redis.publish("gw:user:42", &payload).await;
    }
    for i in 0..200 {
        let frame = expect_event(&mut client, "user:42", "seq").await;
        assert_eq!(frame["data"]["i"], i);
        assert_eq!(frame["id"], format!("{i}-0"));
    }
}
