//! Client commands against the real binary: subscribe, unsubscribe, publish,
//! refresh, ping — success and error paths — and the permission matrix of
//! the example roles.

mod common;

use common::*;
use serde_json::{Value, json};

fn assert_ack(reply: &Value) {
    assert_eq!(reply["type"], "ack", "{reply}");
}

fn assert_error(reply: &Value, code: &str) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()), "{reply}");
}

#[tokio::test]
async fn subscribe_then_receive_then_unsubscribe() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut client = Client::user(&node, "42", Some("acme"), &["support"]).await;
    let reply = client.request(json!({"type": "subscribe", "room": "orders:123"})).await;
    assert_ack(&reply);
    // Subscribing twice is harmless.
    assert_ack(&client.request(json!({"type": "subscribe", "room": "orders:123"})).await);

    node.publish("orders:123", "order:updated", json!(null)).await;
    let event = client.recv_type("event").await;
    assert_eq!(event["room"], "orders:123");

    assert_ack(
        &client
            .request(json!({"type": "unsubscribe", "room": "orders:123"}))
            .await,
    );
    node.publish("orders:123", "after-unsubscribe", json!(null)).await;
    node.publish("user:42", "sentinel", json!(null)).await;
    assert_eq!(
        client.recv_type("event").await["event"],
        "sentinel",
        "nothing after unsubscribe"
    );

    // Unsubscribing from a room one is not in is not_found.
    assert_error(
        &client
            .request(json!({"type": "unsubscribe", "room": "orders:123"}))
            .await,
        "not_found",
    );
}

#[tokio::test]
async fn invalid_frames_are_bad_requests_and_the_connection_lives() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut client = Client::user(&node, "42", None, &["admin"]).await;

    client.send_text("not json").await;
    assert_error(&client.recv_type("error").await, "bad_request");

    let reply = client.request(json!({"type": "launch"})).await;
    assert_error(&reply, "bad_request");
    assert!(reply["message"].as_str().unwrap().contains("launch"));

    let reply = client.request(json!({"type": "subscribe"})).await;
    assert_error(&reply, "bad_request");
    assert!(reply["message"].as_str().unwrap().contains("room"));

    let reply = client.request(json!({"type": "subscribe", "room": "Not A Room"})).await;
    assert_error(&reply, "bad_request");

    let reply = client.request(json!({"type": "publish", "room": "chat:1"})).await;
    assert_error(&reply, "bad_request");
    assert!(reply["message"].as_str().unwrap().contains("event"));

    let reply = client.request(json!({"type": "ping", "extra": true})).await;
    assert_error(&reply, "bad_request");

    let reply = client.request(json!({"type": "auth", "token": "x"})).await;
    assert_error(&reply, "bad_request");

    use futures_util::SinkExt;
    client
        .ws
        .send(tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let reply = client.recv_type("error").await;
    assert_error(&reply, "bad_request");
    assert!(reply["message"].as_str().unwrap().contains("binary"));

    let pong = client.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "still connected");
    node.wait_metric("wsgate_client_frames_total{type=\"invalid\"}", |v| v >= 6.0)
        .await;
}

#[tokio::test]
async fn ping_is_answered_with_pong_and_the_same_ref() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut client = Client::user(&node, "1", None, &[]).await;
    client.send(json!({"type": "ping", "ref": "abc"})).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "ref": "abc"}));
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));
}

/// What each example role may do, as `docs/PROTOCOL.md` §3 says.
#[tokio::test]
async fn permission_matrix_of_the_example_roles() {
    let node = Node::start(NodeOptions::memory()).await;
    // (role, room, may subscribe, may publish)
    let cases: &[(&str, &str, bool, bool)] = &[
        ("admin", "orders:1", true, true),
        ("admin", "anything:1", true, true),
        ("admin", "org:acme", true, true),
        ("admin", "user:7", false, false),
        ("manager", "orders:1", true, true),
        ("manager", "chat:1", true, true),
        ("manager", "org:acme", true, true),
        ("manager", "billing:1", false, false),
        ("support", "orders:1", true, false),
        ("support", "chat:1", true, true),
        ("support", "org:acme", true, false),
        ("support", "billing:1", false, false),
        ("viewer", "orders:1", true, false),
        ("viewer", "chat:1", true, false),
        ("viewer", "role:viewer", true, false),
        ("viewer", "role:admin", false, false),
        ("viewer", "org:globex", false, false),
    ];
    for &(role, room, may_subscribe, may_publish) in cases {
        let mut client = Client::user(&node, "1", Some("acme"), &[role]).await;
        let reply = client.request(json!({"type": "subscribe", "room": room})).await;
        if may_subscribe {
            assert_ack(&reply);
        } else {
            assert_error(&reply, "forbidden");
        }
        let reply = client
            .request(json!({"type": "publish", "room": room, "event": "e", "data": 1}))
            .await;
        if may_publish {
            assert_ack(&reply);
        } else {
            assert_error(&reply, "forbidden");
        }
        assert_eq!(
            client.request(json!({"type": "ping"})).await["type"],
            "pong",
            "{role} {room}"
        );
    }
}

#[tokio::test]
async fn another_users_room_is_forbidden_and_own_room_is_already_joined() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut client = Client::user(&node, "42", Some("acme"), &["support"]).await;
    let reply = client.request(json!({"type": "subscribe", "room": "user:43"})).await;
    assert_error(&reply, "forbidden");
    assert!(reply["message"].as_str().unwrap().contains("user:43"));
    assert_ack(&client.request(json!({"type": "subscribe", "room": "user:42"})).await);
    node.wait_metric("wsgate_command_errors_total{code=\"forbidden\"}", |v| v == 1.0)
        .await;
}

#[tokio::test]
async fn publish_reaches_every_member_on_every_node_and_echo_false_skips_the_publisher() {
    let redis = Redis::start().await;
    let n1 = Node::start(NodeOptions::redis(&redis)).await;
    let n2 = Node::start(NodeOptions::redis(&redis)).await;
    let mut publisher = Client::user(&n1, "1", Some("acme"), &["support"]).await;
    let mut same_user_other_socket = Client::user(&n1, "1", Some("acme"), &["support"]).await;
    let mut on_n1 = Client::user(&n1, "2", Some("acme"), &["viewer"]).await;
    let mut on_n2 = Client::user(&n2, "3", Some("acme"), &["viewer"]).await;
    for client in [&mut publisher, &mut same_user_other_socket, &mut on_n1, &mut on_n2] {
        assert_ack(&client.request(json!({"type": "subscribe", "room": "chat:9"})).await);
    }

    let reply = publisher
        .request(json!({"type": "publish", "room": "chat:9", "event": "msg", "data": {"t": "hi"}}))
        .await;
    assert_ack(&reply);
    for client in [&mut publisher, &mut same_user_other_socket, &mut on_n1, &mut on_n2] {
        let event = client.recv_type("event").await;
        assert_eq!(event["event"], "msg");
        assert_eq!(event["data"], json!({"t": "hi"}));
        assert_eq!(event["from"], "1", "receivers see who published");
    }

    let reply = publisher
        .request(json!({"type": "publish", "room": "chat:9", "event": "quiet", "echo": false}))
        .await;
    assert_ack(&reply);
    for client in [&mut same_user_other_socket, &mut on_n1, &mut on_n2] {
        assert_eq!(client.recv_type("event").await["event"], "quiet");
    }
    // The publisher's next event is the sentinel, not its own "quiet".
    n2.publish("chat:9", "sentinel", json!(null)).await;
    assert_eq!(publisher.recv_type("event").await["event"], "sentinel");
    n1.wait_metric("wsgate_events_published_total{source=\"client\"}", |v| v == 2.0)
        .await;
}

#[tokio::test]
async fn refresh_moves_the_expiry() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut client = Client::connect(&node, &token("42", None, &[], 2), Via::Header)
        .await
        .unwrap();
    let old_exp = client.welcome["expires_at"].as_u64().unwrap();
    let reply = client
        .request(json!({"type": "refresh", "token": token("42", None, &[], 600)}))
        .await;
    assert_ack(&reply);
    let new_exp = reply["expires_at"].as_u64().unwrap();
    assert!(new_exp >= old_exp + 590, "{reply}");
    wait_for("the old expiry to pass", || async { now() > old_exp + 1 }).await;
    assert_eq!(
        client.request(json!({"type": "ping"})).await["type"],
        "pong",
        "alive past the old exp"
    );
}

#[tokio::test]
async fn refresh_applies_the_new_tokens_rooms_and_grants() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_HISTORY_NAMESPACES", "org")).await;
    let mut client = Client::user(&node, "42", Some("acme"), &["support", "viewer"]).await;
    for room in ["chat:lobby", "orders:1"] {
        assert_ack(&client.request(json!({"type": "subscribe", "room": room})).await);
    }

    // Fewer roles: role:support goes; chat and orders stay, viewer reads both.
    let reply = client
        .request(json!({"type": "refresh", "token": token("42", Some("acme"), &["viewer"], 600)}))
        .await;
    assert_ack(&reply);
    assert_eq!(reply["left"], json!(["role:support"]), "{reply}");
    assert_eq!(reply["rooms"], json!(["user:42", "org:acme", "role:viewer"]));
    let refused = client
        .request(json!({"type": "publish", "room": "chat:lobby", "event": "x"}))
        .await;
    assert_error(&refused, "forbidden");

    // Another org, no roles: the old org and everything the roles granted go,
    // the new org is joined (with its position: it keeps history).
    let reply = client
        .request(json!({"type": "refresh", "token": token("42", Some("beta"), &[], 600)}))
        .await;
    assert_ack(&reply);
    let mut left: Vec<&str> = reply["left"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    left.sort();
    assert_eq!(left, ["chat:lobby", "orders:1", "org:acme", "role:viewer"], "{reply}");
    assert_eq!(reply["rooms"], json!(["user:42", "org:beta"]));
    assert_eq!(reply["positions"]["org:beta"]["offset"], 0, "{reply}");
    assert_error(
        &client.request(json!({"type": "subscribe", "room": "orders:1"})).await,
        "forbidden",
    );

    // Nothing of the old grants is delivered; the new org is.
    for room in ["org:acme", "role:support", "role:viewer", "chat:lobby", "orders:1"] {
        node.publish(room, "old", json!({})).await;
    }
    node.publish("org:beta", "new", json!({})).await;
    let event = client.recv_type("event").await;
    assert_eq!(
        (event["room"].as_str(), event["event"].as_str()),
        (Some("org:beta"), Some("new"))
    );
    let listed: Value = node
        .api(reqwest::Method::GET, "/api/v1/connections?user=42")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut rooms: Vec<&str> = listed["data"][0]["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    rooms.sort();
    assert_eq!(rooms, ["org:beta", "user:42"]);
}

#[tokio::test]
async fn refresh_for_another_user_or_with_a_bad_token_is_refused_and_the_old_expiry_stands() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut client = Client::connect(&node, &token("42", None, &[], 3), Via::Header)
        .await
        .unwrap();
    let exp = client.welcome["expires_at"].as_u64().unwrap();

    let reply = client
        .request(json!({"type": "refresh", "token": token("43", None, &[], 600)}))
        .await;
    assert_error(&reply, "forbidden");

    let reply = client.request(json!({"type": "refresh", "token": "garbage"})).await;
    assert_error(&reply, "unauthorized");

    let expired = token_with_claims(json!({"sub": "42", "exp": now() - 100}));
    let reply = client.request(json!({"type": "refresh", "token": expired})).await;
    assert_error(&reply, "unauthorized");
    assert!(reply["message"].as_str().unwrap().contains("expired"));

    let (code, _) = client.closed().await;
    assert_eq!(code, 4001);
    assert!(now() >= exp, "closed at the original exp");
    node.wait_metric("wsgate_connections_closed_total{reason=\"token_expired\"}", |v| {
        v == 1.0
    })
    .await;
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut client = Client::user(&node, "1", None, &[]).await;
    use futures_util::SinkExt;
    client
        .ws
        .send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .unwrap();
    match next_frame(&mut client.ws).await {
        Frame::Close(_, _) => {}
        _ => panic!("expected the server's close reply"),
    }
    node.wait_metric("wsgate_connections_closed_total{reason=\"client\"}", |v| v == 1.0)
        .await;
}

/// A publish waits for the broker off the session's loop: while Redis does
/// not answer, the same socket's pings are answered, and its publishes still
/// reach the room in the order sent.
#[tokio::test]
async fn a_publish_waiting_for_the_broker_holds_up_nothing_else_on_its_socket() {
    let redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis)).await;
    let mut publisher = Client::user(&node, "p", None, &["admin"]).await;
    let mut member = Client::user(&node, "m", None, &["admin"]).await;
    assert_eq!(
        member.request(json!({"type": "subscribe", "room": "chat:9"})).await["type"],
        "ack"
    );

    redis.cmd(&["CLIENT", "PAUSE", "1500", "ALL"]).await;
    publisher
        .send(json!({"type": "publish", "room": "chat:9", "event": "paused", "ref": "pub"}))
        .await;
    publisher.send(json!({"type": "ping", "ref": "ping"})).await;
    let first = publisher.recv().await;
    assert_eq!(
        (first["type"].as_str(), first["ref"].as_str()),
        (Some("pong"), Some("ping")),
        "the pong came first: {first}"
    );
    let second = publisher.recv().await;
    assert_eq!(
        (second["type"].as_str(), second["ref"].as_str()),
        (Some("ack"), Some("pub")),
        "{second}"
    );
    assert_eq!(member.recv_type("event").await["event"], "paused");

    for i in 0..50 {
        publisher
            .send(json!({"type": "publish", "room": "chat:9", "event": "seq", "data": i}))
            .await;
    }
    for i in 0..50 {
        let event = member.recv_type("event").await;
        assert_eq!(event["data"], i, "in the order published");
    }
}
