//! The server API (`/api/v1/`): authentication, validation, pagination,
//! and the cluster-wide publish and disconnect.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let value = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, value)
}

#[tokio::test]
async fn publish_reaches_sockets_on_two_nodes() {
    let redis = Redis::start().await;
    let n1 = Node::start(NodeOptions::redis(&redis).node_id("api-n1")).await;
    let n2 = Node::start(NodeOptions::redis(&redis).node_id("api-n2")).await;
    let mut on_n1 = Client::user(&n1, "42", Some("acme"), &[]).await;
    let mut on_n2 = Client::user(&n2, "43", Some("acme"), &[]).await;
    let (status, value) = body(
        n1.api(Method::POST, "/api/v1/publish")
            .json(&json!({"rooms": ["org:acme", "user:42"], "event": "order:updated", "data": {"id": 7}, "id": "9-0"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        value,
        json!({"data": {"rooms": 2, "event": "order:updated"}, "meta": {"node": "api-n1"}})
    );
    for client in [&mut on_n1, &mut on_n2] {
        let event = client.recv_type("event").await;
        assert_eq!(event["room"], "org:acme");
        assert_eq!(event["data"], json!({"id": 7}));
        assert_eq!(event["id"], "9-0");
    }
    assert_eq!(on_n1.recv_type("event").await["room"], "user:42");
    n1.wait_metric("wsgate_events_published_total{source=\"api\"}", |v| v == 2.0)
        .await;
}

#[tokio::test]
async fn wrong_or_missing_api_key_is_401() {
    let node = Node::start(NodeOptions::memory()).await;
    let http = reqwest::Client::new();
    for (method, path) in [
        (Method::POST, "/api/v1/publish"),
        (Method::GET, "/api/v1/rooms"),
        (Method::GET, "/api/v1/connections?user=1"),
        (Method::POST, "/api/v1/disconnect"),
    ] {
        let missing = http.request(method.clone(), node.http_url(path)).send().await.unwrap();
        let (status, value) = body(missing).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(value["error"]["code"], "unauthorized");
        let wrong = http
            .request(method, node.http_url(path))
            .header("authorization", "Bearer not-the-key-0123456789")
            .json(&json!({"rooms": ["user:1"], "event": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn api_without_configured_keys_refuses_everyone() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_API_KEYS", "")).await;
    let (status, value) = body(node.api(Method::GET, "/api/v1/rooms").send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(value["error"]["message"].as_str().unwrap().contains("disabled"));
}

#[tokio::test]
async fn bad_bodies_are_400_with_a_clear_message() {
    let node = Node::start(NodeOptions::memory()).await;
    let cases: Vec<(&str, String, &str)> = vec![
        ("/api/v1/publish", "not json".into(), "invalid body"),
        ("/api/v1/publish", json!({"event": "x"}).to_string(), "rooms"),
        (
            "/api/v1/publish",
            json!({"rooms": [], "event": "x"}).to_string(),
            "rooms",
        ),
        (
            "/api/v1/publish",
            json!({"rooms": ["Bad Room"], "event": "x"}).to_string(),
            "Bad Room",
        ),
        (
            "/api/v1/publish",
            json!({"rooms": ["user:1"], "event": ""}).to_string(),
            "event",
        ),
        (
            "/api/v1/publish",
            json!({"rooms": ["user:1"], "event": "x", "extra": 1}).to_string(),
            "extra",
        ),
        ("/api/v1/disconnect", json!({}).to_string(), "user"),
        ("/api/v1/disconnect", json!({"user": "a b"}).to_string(), "user"),
    ];
    for (path, payload, mentions) in cases {
        let response = node
            .api(Method::POST, path)
            .header("content-type", "application/json")
            .body(payload.clone())
            .send()
            .await
            .unwrap();
        let (status, value) = body(response).await;
        assert_eq!(status, 400, "{path} {payload}");
        assert_eq!(value["error"]["code"], "bad_request");
        let message = value["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(mentions),
            "{payload}: '{message}' should mention {mentions}"
        );
    }
    let (status, value) = body(node.api(Method::GET, "/api/v1/rooms?limit=0").send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(value["error"]["message"].as_str().unwrap().contains("limit"));
    let (status, _) = body(node.api(Method::GET, "/api/v1/nothing").send().await.unwrap()).await;
    assert_eq!(status, 404);
    let (status, _) = body(node.api(Method::GET, "/api/v1/publish").send().await.unwrap()).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn rooms_are_paginated_with_a_correct_meta() {
    let node = Node::start(NodeOptions::memory().node_id("pg")).await;
    let mut clients = Vec::new();
    for i in 1..=7 {
        clients.push(Client::user(&node, &i.to_string(), Some("acme"), &[]).await);
    }
    clients.push(Client::user(&node, "1", Some("acme"), &[]).await);
    let (status, value) = body(
        node.api(Method::GET, "/api/v1/rooms?prefix=user:&page=2&limit=3")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        value,
        json!({
            "data": [{"room": "user:4", "members": 1}, {"room": "user:5", "members": 1}, {"room": "user:6", "members": 1}],
            "meta": {"page": 2, "limit": 3, "total": 7, "node": "pg", "scope": "node"},
        })
    );
    let (_, value) = body(
        node.api(Method::GET, "/api/v1/rooms?prefix=user:&page=3&limit=3")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(value["data"], json!([{"room": "user:7", "members": 1}]));
    let (_, value) = body(node.api(Method::GET, "/api/v1/rooms?prefix=org:").send().await.unwrap()).await;
    assert_eq!(value["data"], json!([{"room": "org:acme", "members": 8}]));
    let (_, value) = body(
        node.api(Method::GET, "/api/v1/rooms?prefix=user:1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(value["data"], json!([{"room": "user:1", "members": 2}]));
    assert_eq!(value["meta"]["total"], 1);
    let (_, value) = body(node.api(Method::GET, "/api/v1/rooms?page=99").send().await.unwrap()).await;
    assert_eq!(value["data"], json!([]));
    assert_eq!(value["meta"]["total"], 8);
}

#[tokio::test]
async fn connections_of_a_user_are_listed() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut a = Client::user(&node, "42", Some("acme"), &["viewer"]).await;
    let _b = Client::user(&node, "42", Some("acme"), &["viewer"]).await;
    let _other = Client::user(&node, "43", None, &[]).await;
    assert_eq!(
        a.request(json!({"type": "subscribe", "room": "orders:5"})).await["type"],
        "ack"
    );
    let (status, value) = body(
        node.api(Method::GET, "/api/v1/connections?user=42")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(value["meta"]["total"], 2);
    assert_eq!(value["meta"]["scope"], "node", "the listing says it is of one node");
    let conns = value["data"].as_array().unwrap();
    let ids: Vec<&str> = conns.iter().map(|c| c["conn_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&a.welcome["conn_id"].as_str().unwrap()));
    let mine = conns.iter().find(|c| c["conn_id"] == a.welcome["conn_id"]).unwrap();
    assert_eq!(mine["user_id"], "42");
    assert_eq!(mine["rooms"], json!(["orders:5", "org:acme", "role:viewer", "user:42"]));
    assert!(mine["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(mine["connected_at"].as_u64().unwrap() <= now());
    let (status, value) = body(node.api(Method::GET, "/api/v1/connections").send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(value["error"]["message"].as_str().unwrap().contains("user"));
    let (_, value) = body(
        node.api(Method::GET, "/api/v1/connections?user=nobody")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(value["meta"]["total"], 0);
}

#[tokio::test]
async fn disconnect_closes_the_users_sockets_on_every_node() {
    let redis = Redis::start().await;
    let n1 = Node::start(NodeOptions::redis(&redis)).await;
    let n2 = Node::start(NodeOptions::redis(&redis)).await;
    let mut on_n1 = Client::user(&n1, "42", None, &[]).await;
    let mut on_n2 = Client::user(&n2, "42", None, &[]).await;
    let mut other = Client::user(&n2, "43", None, &[]).await;
    let (status, value) = body(
        n1.api(Method::POST, "/api/v1/disconnect")
            .json(&json!({"user": "42", "reason": "logged out"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(value["data"]["user"], "42");
    for client in [&mut on_n1, &mut on_n2] {
        let (code, reason) = client.closed().await;
        assert_eq!(code, 4001);
        assert_eq!(reason, "logged out");
    }
    assert_eq!(
        other.request(json!({"type": "ping"})).await["type"],
        "pong",
        "others stay"
    );
    n2.wait_metric("wsgate_connections_closed_total{reason=\"disconnected\"}", |v| v == 1.0)
        .await;
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let node = Node::start(NodeOptions::memory()).await;
    for response in [
        node.api(Method::GET, "/api/v1/rooms").send().await.unwrap(),
        reqwest::get(node.http_url("/health")).await.unwrap(),
        reqwest::get(node.http_url("/nope")).await.unwrap(),
    ] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn internal_listen_moves_the_api_and_metrics_off_the_public_listener() {
    let internal = format!("127.0.0.1:{}", free_port());
    let node = Node::start(NodeOptions::memory().env("WSGATE_INTERNAL_LISTEN", &internal)).await;
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let response = http
                .get(url)
                .header("authorization", format!("Bearer {API_KEY}"))
                .send()
                .await
                .unwrap();
            body(response).await
        }
    };
    // Public: sockets and probes, no API, no metrics.
    for path in ["/metrics", "/api/v1/rooms"] {
        let (status, value) = get(node.http_url(path)).await;
        assert_eq!(status, 404, "{path} on the public listener");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .contains("internal listener"),
            "{value}"
        );
    }
    assert_eq!(node.status("/health").await, 200);
    let mut client = Client::user(&node, "7", None, &[]).await;
    // Internal: the API and metrics, probes, and no sockets.
    let (status, value) = get(format!("http://{internal}/api/v1/rooms")).await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["data"][0]["room"], "user:7", "{value}");
    let metrics = http.get(format!("http://{internal}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert_eq!(metric_value(&metrics.text().await.unwrap(), "wsgate_connections"), 1.0);
    for path in ["/health", "/ready"] {
        assert_eq!(get(format!("http://{internal}{path}")).await.0, 200, "{path}");
    }
    for path in ["/v1/ws", "/v1/sse", "/v1/client.js"] {
        assert_eq!(get(format!("http://{internal}{path}")).await.0, 404, "{path}");
    }
    assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn internal_listen_on_the_public_address_is_refused_at_start() {
    let port = free_port();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .env_clear()
        .env("WSGATE_JWT_SECRET", SECRET)
        .env("WSGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("WSGATE_INTERNAL_LISTEN", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("internal_listen"), "{stderr}");
}

#[tokio::test]
async fn disconnect_with_revoke_refuses_the_users_old_tokens_on_every_node_even_one_started_later() {
    let redis = Redis::start().await;
    let n1 = Node::start(NodeOptions::redis(&redis)).await;
    let n2 = Node::start(NodeOptions::redis(&redis)).await;
    let old = token("42", None, &[], 600);
    let mut on_n1 = Client::connect(&n1, &old, Via::Header).await.unwrap();
    let mut on_n2 = Client::connect(&n2, &old, Via::Frame).await.unwrap();
    let mut other = Client::user(&n2, "43", None, &[]).await;
    let (status, value) = body(
        n1.api(Method::POST, "/api/v1/disconnect")
            .json(&json!({"user": "42", "reason": "banned", "revoke": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{value}");
    assert_eq!(value["data"]["revoked"], true);
    for client in [&mut on_n1, &mut on_n2] {
        assert_eq!(client.closed().await, (4001, "banned".to_string()));
    }
    // The same token, by every way in and on every node, is refused.
    let n3 = Node::start(NodeOptions::redis(&redis)).await;
    for node in [&n1, &n2, &n3] {
        for via in [Via::Header, Via::Query] {
            match Client::connect(node, &old, via).await {
                Err(Refusal::Http(401, body)) => assert!(body.contains("revoked"), "{body}"),
                other => panic!("{via:?}: expected 401, got {:?}", other.map(|c| c.welcome)),
            }
        }
        match Client::connect(node, &old, Via::Frame).await {
            Err(Refusal::Closed(4001, reason)) => assert!(reason.contains("revoked"), "{reason}"),
            other => panic!("auth frame: expected 4001, got {:?}", other.map(|c| c.welcome)),
        }
    }
    // A refresh with the old token is refused too.
    let mut fresh_one = {
        let issued = now();
        wait_for("the next second", || async move { now() > issued }).await;
        Client::connect(&n2, &token("42", None, &[], 600), Via::Header)
            .await
            .expect("a token issued after the revocation is accepted")
    };
    let reply = fresh_one.request(json!({"type": "refresh", "token": old})).await;
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("revoked"), "{reply}");
    assert_eq!(
        other.request(json!({"type": "ping"})).await["type"],
        "pong",
        "others stay"
    );
    n3.wait_metric("wsgate_auth_failures_total{reason=\"revoked\"}", |v| v == 3.0)
        .await;
}

#[tokio::test]
async fn disconnect_without_revoke_lets_the_same_token_back_in() {
    let node = Node::start(NodeOptions::memory()).await;
    let same = token("42", None, &[], 600);
    let mut client = Client::connect(&node, &same, Via::Header).await.unwrap();
    let (status, _) = body(
        node.api(Method::POST, "/api/v1/disconnect")
            .json(&json!({"user": "42"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(client.closed().await.0, 4001);
    Client::connect(&node, &same, Via::Header)
        .await
        .expect("no revocation: the token still works");
}

/// A publish to several rooms that fails after the first, retried with the
/// same `Idempotency-Key` on another node, reaches each room exactly once.
#[tokio::test]
async fn a_retried_publish_with_an_idempotency_key_reaches_each_room_once() {
    let redis = Redis::start().await;
    let options = || NodeOptions::redis(&redis).env("WSGATE_HISTORY_NAMESPACES", "orders");
    let n1 = Node::start(options()).await;
    let n2 = Node::start(options()).await;
    let mut member = Client::user(&n2, "m", None, &["admin"]).await;
    let ack = member.request(json!({"type": "subscribe", "room": "orders:1"})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let publish = |node: &Node, rooms: Value, key: &str| {
        node.api(Method::POST, "/api/v1/publish")
            .header("idempotency-key", key)
            .json(&json!({"rooms": rooms, "event": "paid", "data": {"order": 1}}))
            .send()
    };
    // orders:2's position is a string key: its publish fails after orders:1's.
    redis.cmd(&["SET", "{gw:orders:2}:m", "sabotage"]).await;
    let (status, first) = body(
        publish(&n1, json!(["orders:1", "orders:2"]), "order-1-paid")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503, "{first}");
    assert_eq!(member.recv_type("event").await["offset"], 1, "orders:1 got it");
    redis.cmd(&["DEL", "{gw:orders:2}:m"]).await;

    // The retry, through the other node: only orders:2 is published.
    let (status, retry) = body(
        publish(&n2, json!(["orders:1", "orders:2"]), "order-1-paid")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{retry}");
    assert_eq!(retry["data"]["positions"]["orders:1"]["offset"], 1, "{retry}");
    assert_eq!(retry["data"]["positions"]["orders:2"]["offset"], 1, "{retry}");
    // A third try changes nothing either.
    let (status, again) = body(
        publish(&n1, json!(["orders:1", "orders:2"]), "order-1-paid")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &again["data"]["positions"]),
        (202, &retry["data"]["positions"])
    );
    // Counted: the next event on orders:1 is offset 2, so none came twice.
    n1.publish("orders:1", "marker", json!(null)).await;
    let next = member.recv_type("event").await;
    assert_eq!(
        (next["event"].as_str(), next["offset"].as_u64()),
        (Some("marker"), Some(2)),
        "{next}"
    );
    let history = redis.cmd(&["XLEN", "{gw:orders:2}:h"]).await;
    assert_eq!(history.trim(), ":1", "orders:2 holds the event once");

    let (status, bad) = body(publish(&n1, json!(["orders:1"]), "has space").await.unwrap()).await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("Idempotency-Key"),
        "{bad}"
    );
}

#[tokio::test]
async fn the_memory_broker_remembers_idempotency_keys_too() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut member = Client::user(&node, "42", None, &[]).await;
    for _ in 0..3 {
        let response = node
            .api(Method::POST, "/api/v1/publish")
            .header("idempotency-key", "once")
            .json(&json!({"rooms": ["user:42"], "event": "once"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    node.publish("user:42", "marker", json!(null)).await;
    assert_eq!(member.recv_type("event").await["event"], "once");
    assert_eq!(
        member.recv_type("event").await["event"],
        "marker",
        "the retries published nothing"
    );
}
