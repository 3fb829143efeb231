//! History and recovery (docs/PROTOCOL.md §10) against the real binary and
//! real redis-servers, with clients that count every offset: resume after a
//! disconnect, after a node is killed or drained, after a 4009, after Redis
//! restarts with and without persistence, and when history was trimmed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::durable::{Audit, Resumer, Stop};
use common::{Client, Node, NodeOptions, Redis, Via, open, token};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CLEAN: Audit = Audit {
    lost: 0,
    duplicated: 0,
    out_of_order: 0,
};

/// `user:`, `org:` and `orders:` rooms keep history.
fn durable(options: NodeOptions) -> NodeOptions {
    options.env("WSGATE_HISTORY_NAMESPACES", "user,org,orders")
}

/// `POST /api/v1/publish` to one room; the room's new position.
async fn api_publish(node: &Node, room: &str, data: Value) -> (u64, String) {
    let response = node
        .api(reqwest::Method::POST, "/api/v1/publish")
        .json(&json!({"rooms": [room], "event": "e", "data": data}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    let position = &body["data"]["positions"][room];
    (
        position["offset"].as_u64().expect("offset"),
        position["epoch"].as_str().expect("epoch").to_string(),
    )
}

#[tokio::test]
async fn a_client_resumes_on_the_same_node_with_nothing_lost_or_repeated() {
    let redis = Redis::start().await;
    let node = Node::start(durable(NodeOptions::redis(&redis))).await;
    let mut client = Resumer::new(token("1", Some("acme"), &[], 3600));
    let welcome = client.connect(&node.ws_url()).await.unwrap();
    assert_eq!(welcome["positions"]["org:acme"]["offset"], 0, "{welcome}");
    assert!(welcome["positions"]["user:1"]["epoch"].is_string(), "{welcome}");
    assert!(welcome.get("recovered").is_none(), "nothing asked to resume: {welcome}");

    for i in 1..=10u64 {
        assert_eq!(api_publish(&node, "org:acme", json!({"i": i})).await.0, i);
    }
    assert_eq!(client.read_until("org:acme", 5).await, Stop::Reached);
    client.drop_connection();
    for i in 11..=20 {
        api_publish(&node, "org:acme", json!({"i": i})).await;
    }
    let welcome = client.connect(&node.ws_url()).await.unwrap();
    assert_eq!(welcome["recovered"]["org:acme"], true, "{welcome}");
    assert_eq!(welcome["recovered"]["user:1"], true, "{welcome}");
    assert_eq!(welcome["positions"]["org:acme"]["offset"], 20, "{welcome}");
    for i in 21..=25 {
        api_publish(&node, "org:acme", json!({"i": i})).await;
    }
    assert_eq!(client.read_until("org:acme", 25).await, Stop::Reached);
    let ledger = client.ledger.room("org:acme");
    assert_eq!(ledger.audit(25), CLEAN, "{:?}", ledger.got);
    assert_eq!(ledger.got, (1..=25).collect::<Vec<_>>());
    node.wait_metric("wsgate_recoveries_total{result=\"recovered\"}", |v| v >= 2.0)
        .await;
    node.wait_metric("wsgate_events_recovered_total", |v| v >= 15.0).await;
    node.wait_metric("wsgate_history_publish_total{source=\"api\"}", |v| v >= 25.0)
        .await;
}

#[tokio::test]
async fn resume_works_by_query_with_header_auth_and_by_subscribe() {
    let node = Node::start(durable(NodeOptions::memory())).await;
    let jwt = token("7", None, &["support"], 3600);
    let mut first = Client::connect(&node, &jwt, Via::Header).await.unwrap();
    let reply = first.request(json!({"type":"subscribe","room":"orders:9"})).await;
    assert_eq!(reply["type"], "ack");
    let epoch = reply["position"]["epoch"].as_str().unwrap().to_string();
    assert_eq!(reply["position"]["offset"], 0);
    for i in 1..=6 {
        api_publish(&node, "orders:9", json!({"i": i})).await;
        api_publish(&node, "user:7", json!({"i": i})).await;
    }
    drop(first);

    // Header auth, positions in the query.
    let since = json!({"user:7": {"offset": 2, "epoch": epoch_of(&node, "user:7").await}}).to_string();
    let url = format!("{}?since={}", node.ws_url(), urlencode(&since));
    let mut ws = open(&url, &[("authorization", &format!("Bearer {jwt}"))])
        .await
        .unwrap();
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["recovered"]["user:7"], true, "{welcome}");
    let offsets: Vec<u64> = read_events(&mut ws, 4)
        .await
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [3, 4, 5, 6]);

    // A joined room resumes with `subscribe`: the ack first, then the rest.
    let subscribe = json!({"type":"subscribe","room":"orders:9","ref":"s","since":{"offset":4,"epoch":epoch}});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    let ack = next_json(&mut ws).await;
    assert_eq!(
        (ack["type"].as_str(), ack["recovered"].as_bool()),
        (Some("ack"), Some(true)),
        "{ack}"
    );
    assert_eq!(ack["position"]["offset"], 6);
    let events = read_events(&mut ws, 2).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e["room"].as_str().unwrap(), e["offset"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        [("orders:9", 5), ("orders:9", 6)]
    );

    // A malformed `since` is refused before the upgrade, with the reason.
    let bad = format!("{}?since=%7Bnope", node.ws_url());
    match open(&bad, &[("authorization", &format!("Bearer {jwt}"))]).await {
        Err(common::Refusal::Http(400, body)) => assert!(body.contains("since"), "{body}"),
        other => panic!("expected 400, got {other:?}"),
    }
}

#[tokio::test]
async fn client_publishes_into_a_durable_room_go_through_history() {
    let node = Node::start(durable(NodeOptions::memory())).await;
    let mut publisher = Client::user(&node, "p", None, &["admin"]).await;
    let mut reader = Client::user(&node, "r", None, &["admin"]).await;
    assert_eq!(
        reader.request(json!({"type":"subscribe","room":"orders:3"})).await["type"],
        "ack"
    );
    for expected in 1..=3u64 {
        let ack = publisher
            .request(json!({"type":"publish","room":"orders:3","event":"m","data":expected}))
            .await;
        assert_eq!(ack["position"]["offset"], expected, "{ack}");
        let event = reader.recv_type("event").await;
        assert_eq!(
            (event["offset"].as_u64(), event["from"].as_str()),
            (Some(expected), Some("p"))
        );
    }
    node.wait_metric("wsgate_history_publish_total{source=\"client\"}", |v| v == 3.0)
        .await;
}

#[tokio::test]
async fn positions_ahead_and_rooms_without_history_are_bad_requests() {
    let node = Node::start(durable(NodeOptions::memory())).await;
    let jwt = token("8", None, &["admin"], 3600);
    let mut client = Client::connect(&node, &jwt, Via::Header).await.unwrap();
    api_publish(&node, "orders:1", json!(1)).await;
    let epoch = epoch_of(&node, "orders:1").await;
    let reply = client
        .request(json!({"type":"subscribe","room":"orders:1","since":{"offset":99,"epoch":epoch}}))
        .await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("ahead"), "{reply}");
    let reply = client
        .request(json!({"type":"subscribe","room":"chat:1","since":{"offset":1,"epoch":"e"}}))
        .await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("no history"), "{reply}");
    // The connection and the room still work: subscribe from the position.
    let reply = client
        .request(json!({"type":"subscribe","room":"orders:1","since":{"offset":1,"epoch":epoch}}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");

    // In the auth frame, an ahead position is reported and the room joined.
    let mut resumer = Resumer::new(token("9", None, &[], 3600));
    resumer.connect(&node.ws_url()).await.unwrap();
    api_publish(&node, "user:9", json!(1)).await;
    assert_eq!(resumer.read_until("user:9", 1).await, Stop::Reached);
    resumer.drop_connection();
    resumer.ledger.rooms.get_mut("user:9").unwrap().offset = 50;
    let welcome = resumer.connect(&node.ws_url()).await.unwrap();
    assert_eq!(welcome["recovered"]["user:9"], false, "{welcome}");
    let error = next_json(resumer.ws.as_mut().unwrap()).await;
    assert_eq!(error["code"], "bad_request", "{error}");
    api_publish(&node, "user:9", json!(2)).await;
    assert_eq!(resumer.read_until("user:9", 2).await, Stop::Reached);
}

#[tokio::test]
async fn the_api_reads_history_and_plain_publishes_stay_unnumbered() {
    let redis = Redis::start().await;
    let node = Node::start(durable(NodeOptions::redis(&redis))).await;
    let mut client = Client::user(&node, "5", Some("acme"), &[]).await;
    for i in 1..=3 {
        api_publish(&node, "org:acme", json!({"i": i})).await;
    }
    let history = api_history(&node, "org:acme", "since=1&limit=10").await;
    assert_eq!(history["meta"]["offset"], 3, "{history}");
    let offsets: Vec<u64> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3]);
    assert_eq!(history["data"][0]["data"], json!({"i": 2}));
    let status = node
        .api(reqwest::Method::GET, "/api/v1/rooms/chat:1/history")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "a room without history");

    // A backend's plain PUBLISH still reaches members, with no offset.
    redis.publish("gw:org:acme", r#"{"event":"plain"}"#).await;
    let mut events = Vec::new();
    while events.len() < 4 {
        events.push(client.recv_type("event").await);
    }
    assert_eq!(events[3]["event"], "plain");
    assert!(events[3].get("offset").is_none(), "{}", events[3]);
    assert_eq!(events[2]["offset"], 3);
}

/// Clients on node A, events flowing through node B; A dies (SIGKILL) or
/// drains (SIGTERM); every client resumes on B and ends with every offset
/// exactly once, in order.
async fn clients_survive_losing_their_node(signal: &str, publish_via_fcall: bool) {
    let redis = Arc::new(Redis::start().await);
    let options = durable(NodeOptions::redis(&redis)).env("WSGATE_DRAIN_S", 2);
    let a = Node::start(options.clone().node_id("a")).await;
    let b = Arc::new(Node::start(options.node_id("b")).await);
    const CLIENTS: usize = 12;
    const EVENTS: u64 = 400;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let mut client = Resumer::new(token(&format!("u{i}"), Some("acme"), &[], 3600));
        client.connect(&a.ws_url()).await.unwrap();
        let b_url = b.ws_url();
        tasks.push(tokio::spawn(async move {
            let mut closes = Vec::new();
            loop {
                match client.read_until("org:acme", EVENTS).await {
                    Stop::Reached => return (client, closes),
                    Stop::Closed(code) => closes.push(code),
                    Stop::Gone => closes.push(1006),
                }
                // Reconnect to the surviving node, resuming.
                client.connect(&b_url).await.expect("resume on b");
            }
        }));
    }
    // A steady publisher (>= 100 events/s): FCALL from a backend, or B's API.
    let publisher = {
        let (redis, b) = (redis.clone(), b.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(8));
            for i in 1..=EVENTS {
                tick.tick().await;
                let payload = json!({"event": "e", "data": {"i": i}}).to_string();
                let offset = if publish_via_fcall {
                    redis.fcall_publish("org:acme", &payload).await.expect("fcall")
                } else {
                    api_publish(&b, "org:acme", json!({"i": i})).await.0
                };
                assert_eq!(offset, i);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    a.signal(signal);
    publisher.await.unwrap();
    for task in tasks {
        let (client, closes) = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("every client caught up")
            .unwrap();
        let ledger = client.ledger.room("org:acme");
        assert_eq!(ledger.audit(EVENTS), CLEAN, "closes {closes:?}, got {:?}", ledger.got);
        assert_eq!(ledger.not_recovered, 0);
        assert!(ledger.recovered >= 1, "resumed at least once: {closes:?}");
        if signal == "TERM" {
            assert_eq!(closes, [1012], "a drain closes with 1012");
        }
    }
}

#[tokio::test]
async fn a_killed_nodes_clients_resume_on_another_node_with_nothing_lost() {
    clients_survive_losing_their_node("KILL", false).await;
}

#[tokio::test]
async fn a_rolling_drain_under_a_steady_fcall_publisher_loses_nothing() {
    clients_survive_losing_their_node("TERM", true).await;
}

#[tokio::test]
async fn after_a_4009_resuming_recovers_everything_that_was_dropped() {
    let redis = Redis::start().await;
    let node = Node::start(
        durable(NodeOptions::redis(&redis))
            .env("WSGATE_SEND_QUEUE_BYTES", 65536)
            .env("WSGATE_HISTORY_SIZE", 100_000),
    )
    .await;
    let mut slow = Resumer::new(token("s", Some("acme"), &[], 3600));
    slow.connect(&node.ws_url()).await.unwrap();
    let filler = "x".repeat(4000);
    let mut published = 0u64;
    // Publish until the node closes the client that does not read (bounded).
    while published < 20_000 {
        for _ in 0..100 {
            let payload = json!({"event": "load", "data": {"fill": filler}}).to_string();
            published = redis.fcall_publish("org:acme", &payload).await.expect("fcall");
        }
        if node
            .metric("wsgate_connections_closed_total{reason=\"slow_consumer\"}")
            .await
            >= 1.0
        {
            break;
        }
    }
    assert_eq!(slow.read_until("org:acme", published).await, Stop::Closed(4009));
    let missed = published - slow.ledger.room("org:acme").offset;
    assert!(missed > 0, "the 4009 dropped events");
    let welcome = slow.connect(&node.ws_url()).await.unwrap();
    assert_eq!(welcome["recovered"]["org:acme"], true, "{welcome}");
    assert_eq!(slow.read_until("org:acme", published).await, Stop::Reached);
    assert_eq!(slow.ledger.room("org:acme").audit(published), CLEAN);
}

#[tokio::test]
async fn redis_restarted_with_persistence_keeps_the_stream_going() {
    let mut redis = Redis::start_persistent().await;
    // The node waits a second before reconnecting: events published in that
    // second never reach it live.
    let slow_reconnect = format!(
        "{}\n[redis]\nreconnect_min_ms = 1000\nreconnect_max_ms = 1000\n",
        common::ROLES_TOML
    );
    let node = Node::start(durable(NodeOptions::redis(&redis)).config(&slow_reconnect)).await;
    let mut stays = Resumer::new(token("1", Some("acme"), &[], 3600));
    stays.connect(&node.ws_url()).await.unwrap();
    let mut leaves = Resumer::new(token("2", Some("acme"), &[], 3600));
    leaves.connect(&node.ws_url()).await.unwrap();
    for i in 1..=5 {
        assert_eq!(redis.fcall_publish("org:acme", &event(i)).await, Ok(i));
    }
    assert_eq!(stays.read_until("org:acme", 5).await, Stop::Reached);
    assert_eq!(leaves.read_until("org:acme", 5).await, Stop::Reached);
    leaves.drop_connection();

    redis.kill().await;
    redis.restart().await;
    // Published while the node is still disconnected, and nothing after:
    // only the node's check after it re-subscribes can deliver them.
    for i in 6..=8 {
        assert_eq!(
            redis.fcall_publish("org:acme", &event(i)).await,
            Ok(i),
            "offsets continue"
        );
    }
    assert_eq!(
        stays.read_until("org:acme", 8).await,
        Stop::Reached,
        "the connected client"
    );
    node.wait_ready().await;
    for i in 9..=10 {
        assert_eq!(redis.fcall_publish("org:acme", &event(i)).await, Ok(i));
    }
    assert_eq!(stays.read_until("org:acme", 10).await, Stop::Reached);
    assert_eq!(stays.ledger.room("org:acme").audit(10), CLEAN);
    assert_eq!(stays.welcomes, 1, "it stayed connected throughout");

    let welcome = leaves.connect(&node.ws_url()).await.unwrap();
    assert_eq!(welcome["recovered"]["org:acme"], true, "{welcome}");
    assert_eq!(leaves.read_until("org:acme", 10).await, Stop::Reached);
    assert_eq!(leaves.ledger.room("org:acme").audit(10), CLEAN);
}

#[tokio::test]
async fn redis_restarted_without_persistence_starts_a_new_epoch_honestly() {
    let mut redis = Redis::start().await;
    let node = Node::start(durable(NodeOptions::redis(&redis))).await;
    let mut client = Resumer::new(token("1", Some("acme"), &[], 3600));
    client.connect(&node.ws_url()).await.unwrap();
    for i in 1..=3 {
        redis.fcall_publish("org:acme", &event(i)).await.unwrap();
    }
    assert_eq!(client.read_until("org:acme", 3).await, Stop::Reached);
    let old_epoch = client.ledger.room("org:acme").epoch.clone();

    redis.kill().await;
    redis.restart().await;
    // The node finds the history gone: its members are told to resume...
    assert_eq!(client.read_until("org:acme", 4).await, Stop::Closed(1011));
    // ...and learn they could not recover, with the new epoch.
    let welcome = client.connect(&node.ws_url()).await.unwrap();
    assert_eq!(welcome["recovered"]["org:acme"], false, "{welcome}");
    assert_eq!(welcome["positions"]["org:acme"]["offset"], 0, "{welcome}");
    assert_ne!(welcome["positions"]["org:acme"]["epoch"], old_epoch.as_str());
    // The node reloaded the function library: FCALL works with no operator action.
    assert_eq!(redis.fcall_publish("org:acme", &event(1)).await, Ok(1));
    assert_eq!(client.read_until("org:acme", 1).await, Stop::Reached);
    node.wait_metric("wsgate_recoveries_total{result=\"not_recovered\"}", |v| v >= 1.0)
        .await;
    node.wait_metric("wsgate_connections_closed_total{reason=\"insufficient_state\"}", |v| {
        v >= 1.0
    })
    .await;
}

#[tokio::test]
async fn a_position_older_than_the_kept_history_is_not_recovered() {
    let redis = Redis::start().await;
    let node = Node::start(durable(NodeOptions::redis(&redis)).env("WSGATE_HISTORY_SIZE", 5)).await;
    let mut client = Resumer::new(token("1", Some("acme"), &[], 3600));
    client.connect(&node.ws_url()).await.unwrap();
    redis.fcall_publish("org:acme", &event(1)).await.unwrap();
    assert_eq!(client.read_until("org:acme", 1).await, Stop::Reached);
    client.drop_connection();
    // Far past `size` (Redis trims a stream node of 100 entries at a time).
    for i in 2..=300 {
        redis.fcall_publish("org:acme", &event(i)).await.unwrap();
    }
    let welcome = client.connect(&node.ws_url()).await.unwrap();
    assert_eq!(welcome["recovered"]["org:acme"], false, "{welcome}");
    assert_eq!(welcome["positions"]["org:acme"]["offset"], 300);
    redis.fcall_publish("org:acme", &event(301)).await.unwrap();
    assert_eq!(client.read_until("org:acme", 301).await, Stop::Reached);
    // Nothing between was delivered as if it were continuous.
    assert_eq!(client.ledger.room("org:acme").got, [1, 301]);
}

/// A payload the Redis Function accepts (its JSON decoder reads `NaN`) but
/// the gateway cannot: no member may be shown the stream without it.
#[tokio::test]
async fn an_event_the_gateway_cannot_read_is_never_skipped_silently() {
    let redis = Redis::start().await;
    let node = Node::start(durable(NodeOptions::redis(&redis))).await;
    let mut member = Resumer::new(token("1", Some("acme"), &[], 3600));
    let mut bystander = Resumer::new(token("2", Some("other"), &[], 3600));
    member.connect(&node.ws_url()).await.unwrap();
    bystander.connect(&node.ws_url()).await.unwrap();
    redis.fcall_publish("org:acme", &event(1)).await.unwrap();
    assert_eq!(member.read_until("org:acme", 1).await, Stop::Reached);

    let unreadable = r#"{"event":"e","data":NaN}"#;
    assert_eq!(redis.fcall_publish("org:acme", unreadable).await, Ok(2));
    redis.fcall_publish("org:acme", &event(3)).await.unwrap();
    assert_eq!(member.read_until("org:acme", 3).await, Stop::Closed(1011));
    assert_eq!(member.ledger.room("org:acme").got, [1], "3 is not shown after a gap");
    node.wait_metric("wsgate_events_invalid_total", |v| v >= 1.0).await;

    // Resuming from before it cannot recover; from after it, it can.
    let welcome = member.connect(&node.ws_url()).await.unwrap();
    assert_eq!(welcome["recovered"]["org:acme"], false, "{welcome}");
    assert_eq!(welcome["positions"]["org:acme"]["offset"], 3, "{welcome}");
    redis.fcall_publish("org:acme", &event(4)).await.unwrap();
    assert_eq!(member.read_until("org:acme", 4).await, Stop::Reached);
    assert_eq!(member.ledger.room("org:acme").got, [1, 4]);

    // The other room's member was not touched.
    redis.fcall_publish("org:other", &event(1)).await.unwrap();
    assert_eq!(bystander.read_until("org:other", 1).await, Stop::Reached);
    assert_eq!(bystander.welcomes, 1);
}

fn event(i: u64) -> String {
    json!({"event": "e", "data": {"i": i}}).to_string()
}

/// `GET /api/v1/rooms/<room>/history?<query>`: the JSON body.
async fn api_history(node: &Node, room: &str, query: &str) -> Value {
    node.api(reqwest::Method::GET, &format!("/api/v1/rooms/{room}/history?{query}"))
        .send()
        .await
        .expect("history request")
        .json()
        .await
        .expect("history json")
}

async fn epoch_of(node: &Node, room: &str) -> String {
    let history = api_history(node, room, "limit=1").await;
    history["meta"]["epoch"].as_str().expect("epoch").to_string()
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn next_json(ws: &mut common::Ws) -> Value {
    match common::next_frame(ws).await {
        common::Frame::Json(v) => v,
        _ => panic!("expected a frame"),
    }
}

async fn read_events(ws: &mut common::Ws, n: usize) -> Vec<Value> {
    let mut events = Vec::new();
    while events.len() < n {
        let frame = next_json(ws).await;
        if frame["type"] == "event" {
            events.push(frame);
        }
    }
    events
}
