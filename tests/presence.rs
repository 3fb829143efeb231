//! Presence (docs/PROTOCOL.md §12) against the real binary: two nodes on one
//! real redis-server, real WebSocket clients. A user's tabs are counted once
//! with their connections, cluster-wide, through the API and the `presence`
//! command; `join` and `leave` follow a user's first and last connection; a
//! node killed with SIGKILL stops counting within `presence.ttl_s`; refused
//! reads leave the connection and the node as they were.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// Short, so that a dead node's users vanish quickly.
const TTL_S: u64 = 2;

fn options(redis: &Redis, id: &str) -> NodeOptions {
    NodeOptions::redis(redis)
        .node_id(id)
        .env("WSGATE_PRESENCE_NAMESPACES", "chat")
        .env("WSGATE_PRESENCE_TTL_S", TTL_S)
        .env("WSGATE_PRESENCE_EVENTS", "true")
}

/// Two nodes on one Redis, with presence on `chat:` rooms and events.
async fn two_nodes(redis: &Redis) -> (Node, Node) {
    let (a, b) = tokio::join!(Node::start(options(redis, "pa")), Node::start(options(redis, "pb")));
    (a, b)
}

/// A viewer (may read `chat:`) joined to `room`.
async fn member(node: &Node, user: &str, room: &str) -> Client {
    let mut client = Client::user(node, user, None, &["viewer"]).await;
    let ack = client.request(json!({"type":"subscribe","room":room})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    client
}

/// `GET /api/v1/rooms/<room>/presence`: status and body.
async fn api_presence(node: &Node, room: &str) -> (u16, Value) {
    let response = node
        .api(Method::GET, &format!("/api/v1/rooms/{room}/presence"))
        .send()
        .await
        .expect("GET presence");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// The API's `data`, when it answered 200.
async fn users(node: &Node, room: &str) -> Value {
    let (status, body) = api_presence(node, room).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

async fn wait_users(node: &Node, room: &str, wanted: Value) {
    let what = format!("presence of {room} = {wanted}");
    wait_for(&what, || async { users(node, room).await == wanted }).await;
}

/// The next frame is this `join`/`leave`.
async fn expect_change(client: &mut Client, kind: &str, room: &str, user: &str) {
    let frame = client.recv().await;
    assert_eq!(
        frame,
        json!({"type":kind,"room":room,"user_id":user}),
        "{kind} of {user}"
    );
}

/// Publish a marker event and expect it to be the next frame: nothing came
/// before it.
async fn expect_nothing_before_sentinel(node: &Node, client: &mut Client, room: &str, name: &str) {
    node.publish(room, name, json!(null)).await;
    let frame = client.recv().await;
    assert_eq!(
        (frame["type"].as_str(), frame["event"].as_str()),
        (Some("event"), Some(name)),
        "nothing before the sentinel: {frame}"
    );
}

#[tokio::test]
async fn a_users_tabs_are_counted_once_with_their_connections_on_every_node() {
    let redis = Redis::start().await;
    let (a, b) = two_nodes(&redis).await;
    let _tab1 = member(&a, "42", "chat:1").await;
    let _tab2 = member(&a, "42", "chat:1").await;
    let _elsewhere = member(&a, "43", "chat:2").await;

    // Seen from the other node, through the API.
    wait_users(&b, "chat:1", json!([{"user_id":"42","connections":2}])).await;
    let (_, body) = api_presence(&b, "chat:1").await;
    assert_eq!(body["meta"]["room"], "chat:1");
    assert_eq!(body["meta"]["users"], 1);
    assert_eq!(body["meta"]["connections"], 2);
    assert_eq!(body["meta"]["scope"], "cluster");
    assert_eq!(body["meta"]["node"], "pb");

    // And through the command, by a member on the other node.
    let mut reader = member(&b, "7", "chat:1").await;
    wait_users(
        &a,
        "chat:1",
        json!([{"user_id":"42","connections":2},{"user_id":"7","connections":1}]),
    )
    .await;
    let reply = reader.request(json!({"type":"presence","room":"chat:1"})).await;
    assert_eq!(reply["type"], "presence", "{reply}");
    assert_eq!(reply["room"], "chat:1");
    assert_eq!(
        reply["users"],
        json!([{"user_id":"42","connections":2},{"user_id":"7","connections":1}])
    );
    // Reading presence needs no membership, only the right to subscribe.
    let mut outsider = Client::user(&b, "8", None, &["viewer"]).await;
    let reply = outsider.request(json!({"type":"presence","room":"chat:2"})).await;
    assert_eq!(reply["users"], json!([{"user_id":"43","connections":1}]), "{reply}");
    let metrics = a.metrics().await;
    assert!(metric_value(&metrics, r#"wsgate_presence_updates_total{result="ok"}"#) > 0.0);
}

#[tokio::test]
async fn join_on_the_first_connection_and_leave_after_the_last_cluster_wide() {
    let redis = Redis::start().await;
    let (a, b) = two_nodes(&redis).await;
    let mut observer = member(&b, "7", "chat:1").await;
    expect_change(&mut observer, "join", "chat:1", "7").await;

    // First tab: a join, on the other node too.
    let mut tab1 = member(&a, "42", "chat:1").await;
    expect_change(&mut observer, "join", "chat:1", "42").await;
    expect_change(&mut tab1, "join", "chat:1", "42").await;

    // Second tab, on the other node: counted, not announced.
    let mut tab2 = member(&b, "42", "chat:1").await;
    wait_users(
        &a,
        "chat:1",
        json!([{"user_id":"42","connections":2},{"user_id":"7","connections":1}]),
    )
    .await;
    expect_nothing_before_sentinel(&a, &mut observer, "chat:1", "after-second-tab").await;

    // One tab closed: still there, no leave.
    tab1.ws.close(None).await.expect("close tab 1");
    wait_users(
        &a,
        "chat:1",
        json!([{"user_id":"42","connections":1},{"user_id":"7","connections":1}]),
    )
    .await;
    expect_nothing_before_sentinel(&a, &mut observer, "chat:1", "after-first-close").await;

    // The last one: a leave.
    let reply = tab2.request(json!({"type":"unsubscribe","room":"chat:1"})).await;
    assert_eq!(reply["type"], "ack");
    expect_change(&mut observer, "leave", "chat:1", "42").await;
    assert_eq!(users(&a, "chat:1").await, json!([{"user_id":"7","connections":1}]));
    b.wait_metric(r#"wsgate_presence_events_total{type="join"}"#, |v| v >= 2.0)
        .await;
    b.wait_metric(r#"wsgate_presence_events_total{type="leave"}"#, |v| v >= 1.0)
        .await;
}

#[tokio::test]
async fn a_killed_nodes_users_are_gone_within_the_ttl() {
    let redis = Redis::start().await;
    let (a, b) = two_nodes(&redis).await;
    let mut observer = member(&b, "7", "chat:1").await;
    expect_change(&mut observer, "join", "chat:1", "7").await;
    let _tabs = (member(&a, "42", "chat:1").await, member(&a, "42", "chat:1").await);
    expect_change(&mut observer, "join", "chat:1", "42").await;
    wait_users(
        &b,
        "chat:1",
        json!([{"user_id":"42","connections":2},{"user_id":"7","connections":1}]),
    )
    .await;

    a.signal("KILL");
    let killed = Instant::now();
    wait_users(&b, "chat:1", json!([{"user_id":"7","connections":1}])).await;
    let gone_after = killed.elapsed();
    assert!(
        gone_after <= Duration::from_secs(TTL_S) + Duration::from_millis(1500),
        "gone after {gone_after:?}, TTL {TTL_S} s"
    );
    // The surviving node's heartbeat finds the dead entry and announces it.
    expect_change(&mut observer, "leave", "chat:1", "42").await;
    // The survivor serves on.
    let reply = observer.request(json!({"type":"presence","room":"chat:1"})).await;
    assert_eq!(reply["users"], json!([{"user_id":"7","connections":1}]));
}

#[tokio::test]
async fn a_draining_nodes_users_leave_at_once() {
    let redis = Redis::start().await;
    // A TTL longer than the test's patience: the leave can only come from
    // the drain, not from the entry expiring.
    let long = |id| options(&redis, id).env("WSGATE_PRESENCE_TTL_S", 60);
    let (mut a, b) = tokio::join!(Node::start(long("pa")), Node::start(long("pb")));
    let mut observer = member(&b, "7", "chat:1").await;
    expect_change(&mut observer, "join", "chat:1", "7").await;
    let _tab = member(&a, "42", "chat:1").await;
    expect_change(&mut observer, "join", "chat:1", "42").await;

    a.signal("TERM");
    expect_change(&mut observer, "leave", "chat:1", "42").await;
    assert_eq!(users(&b, "chat:1").await, json!([{"user_id":"7","connections":1}]));
    assert!(a.wait_exit(Duration::from_secs(10)).await.is_some_and(|s| s.success()));
}

#[tokio::test]
async fn refused_reads_leave_the_connection_and_the_node_serving() {
    let mut redis = Redis::start().await;
    let (a, _b) = two_nodes(&redis).await;
    let mut observer = member(&a, "7", "chat:1").await;
    expect_change(&mut observer, "join", "chat:1", "7").await;

    // No role that reads chat: refused, as a subscribe would be.
    let mut stranger = Client::user(&a, "9", None, &[]).await;
    let reply = stranger.request(json!({"type":"presence","room":"chat:1"})).await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{reply}"
    );
    // Own rooms are allowed by the room rules, but have no presence here.
    let reply = stranger.request(json!({"type":"presence","room":"user:9"})).await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(
        reply["message"].as_str().unwrap_or("").contains("presence.namespaces"),
        "{reply}"
    );
    let reply = observer.request(json!({"type":"presence","room":"orders:1"})).await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    let reply = stranger.request(json!({"type":"presence"})).await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    // The API: not a presence room, not a room.
    let (status, body) = api_presence(&a, "orders:1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = api_presence(&a, "Not-A-Room").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );

    // Everyone still served: the refused connection and the others.
    let reply = stranger.request(json!({"type":"ping"})).await;
    assert_eq!(reply["type"], "pong");
    expect_nothing_before_sentinel(&a, &mut observer, "chat:1", "still-served").await;
    assert_eq!(users(&a, "chat:1").await, json!([{"user_id":"7","connections":1}]));

    // Redis gone: the read is refused as unavailable; the socket stays.
    redis.kill().await;
    a.wait_metric("wsgate_broker_up", |v| v == 0.0).await;
    let reply = observer.request(json!({"type":"presence","room":"chat:1"})).await;
    assert_eq!(reply["code"], "internal", "{reply}");
    assert!(
        reply["message"].as_str().unwrap_or("").contains("unavailable"),
        "{reply}"
    );
    let (status, body) = api_presence(&a, "chat:1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );

    // Back: the node writes its members again, and reads work.
    redis.restart().await;
    a.wait_ready().await;
    wait_users(&a, "chat:1", json!([{"user_id":"7","connections":1}])).await;
    let reply = observer.request(json!({"type":"ping"})).await;
    assert_eq!(reply["type"], "pong");
}

#[tokio::test]
async fn a_single_memory_node_gives_the_same_answers() {
    let node = Node::start(
        NodeOptions::memory()
            .node_id("pm")
            .env("WSGATE_PRESENCE_NAMESPACES", "chat")
            .env("WSGATE_PRESENCE_EVENTS", "true"),
    )
    .await;
    let mut observer = member(&node, "7", "chat:1").await;
    expect_change(&mut observer, "join", "chat:1", "7").await;
    let tab1 = member(&node, "42", "chat:1").await;
    expect_change(&mut observer, "join", "chat:1", "42").await;
    let tab2 = member(&node, "42", "chat:1").await;
    wait_users(
        &node,
        "chat:1",
        json!([{"user_id":"42","connections":2},{"user_id":"7","connections":1}]),
    )
    .await;
    drop((tab1, tab2));
    expect_change(&mut observer, "leave", "chat:1", "42").await;
    assert_eq!(users(&node, "chat:1").await, json!([{"user_id":"7","connections":1}]));
}
