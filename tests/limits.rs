//! Abuse limits: each answers with its error or close code, counts in its
//! metric, and leaves a well-behaved client on the same node served.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// A bystander on the same node: receives an event published now, in order
/// after everything before it, and still answers pings.
async fn assert_bystander_served(node: &Node, bystander: &mut Client, tag: &str) {
    let user = bystander.welcome["user_id"].as_str().unwrap().to_string();
    node.publish(&format!("user:{user}"), tag, json!(null)).await;
    assert_eq!(bystander.recv_type("event").await["event"], tag);
    assert_eq!(bystander.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_MAX_FRAME_BYTES", 1024)).await;
    let mut bystander = Client::user(&node, "b", None, &[]).await;
    let mut abuser = Client::user(&node, "a", None, &["admin"]).await;
    let big = json!({"type": "publish", "room": "chat:1", "event": "e", "data": "x".repeat(2000)});
    abuser.send(big).await;
    let (code, _) = abuser.closed().await;
    assert_eq!(code, 1009);
    node.wait_metric("wsgate_connections_closed_total{reason=\"message_too_big\"}", |v| {
        v == 1.0
    })
    .await;
    assert_bystander_served(&node, &mut bystander, "after-oversized").await;
}

#[tokio::test]
async fn room_limit_answers_limit_exceeded() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_MAX_ROOMS_PER_CONNECTION", 4)).await;
    let mut bystander = Client::user(&node, "b", None, &[]).await;
    // user:a, org:acme and role:admin make three; one more fits.
    let mut client = Client::user(&node, "a", Some("acme"), &["admin"]).await;
    let reply = client.request(json!({"type": "subscribe", "room": "orders:1"})).await;
    assert_eq!(reply["type"], "ack");
    let reply = client.request(json!({"type": "subscribe", "room": "orders:2"})).await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "limit_exceeded");
    // Leaving a room makes space again.
    assert_eq!(
        client.request(json!({"type": "unsubscribe", "room": "orders:1"})).await["type"],
        "ack"
    );
    assert_eq!(
        client.request(json!({"type": "subscribe", "room": "orders:2"})).await["type"],
        "ack"
    );
    node.wait_metric("wsgate_command_errors_total{code=\"limit_exceeded\"}", |v| v == 1.0)
        .await;
    assert_bystander_served(&node, &mut bystander, "after-room-limit").await;
}

#[tokio::test]
async fn connections_per_user_limit_closes_with_1008() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_MAX_CONNECTIONS_PER_USER", 2)).await;
    let mut bystander = Client::user(&node, "b", None, &[]).await;
    let _one = Client::user(&node, "a", None, &[]).await;
    let _two = Client::user(&node, "a", None, &[]).await;
    match Client::connect(&node, &token("a", None, &[], 60), Via::Header).await {
        Err(Refusal::Closed(1008, reason)) => assert!(reason.contains("too many"), "{reason}"),
        other => panic!("expected close 1008, got {:?}", other.map(|c| c.welcome)),
    }
    node.wait_metric("wsgate_connections_closed_total{reason=\"policy\"}", |v| v == 1.0)
        .await;
    // Another user is not limited by user a's sockets.
    assert!(
        Client::connect(&node, &token("c", None, &[], 60), Via::Header)
            .await
            .is_ok()
    );
    assert_bystander_served(&node, &mut bystander, "after-user-limit").await;
}

#[tokio::test]
async fn frames_over_the_rate_get_rate_limited_errors() {
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_CLIENT_RATE", 1)
            .env("WSGATE_CLIENT_BURST", 5)
            .env("WSGATE_CLIENT_MAX_VIOLATIONS", 100),
    )
    .await;
    let mut client = Client::user(&node, "a", None, &[]).await;
    for i in 0..8 {
        client.send(json!({"type": "ping", "ref": i.to_string()})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    while pongs + limited < 8 {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited");
                limited += 1;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(pongs, 5, "the burst passes");
    assert_eq!(limited, 3, "the rest is refused");
    node.wait_metric("wsgate_rate_limited_total", |v| v == 3.0).await;
}

#[tokio::test]
async fn a_sustained_flood_closes_with_4008_and_bystanders_get_every_event() {
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_CLIENT_RATE", 10)
            .env("WSGATE_CLIENT_BURST", 10)
            .env("WSGATE_CLIENT_MAX_VIOLATIONS", 20),
    )
    .await;
    let mut bystander = Client::user(&node, "b", Some("acme"), &[]).await;
    let mut flooder = Client::user(&node, "f", Some("acme"), &[]).await;
    let flood = tokio::spawn(async move {
        for _ in 0..2000 {
            if flooder.ws.feed(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
                break;
            }
        }
        let _ = flooder.ws.flush().await;
        flooder
    });
    for i in 0..50 {
        node.publish("org:acme", "during-flood", json!({"i": i})).await;
    }
    for i in 0..50 {
        let event = bystander.recv_type("event").await;
        assert_eq!(event["data"]["i"], i, "every event, in order");
    }
    let mut flooder = flood.await.unwrap();
    let (code, _) = flooder.closed().await;
    assert_eq!(code, 4008);
    node.wait_metric("wsgate_connections_closed_total{reason=\"rate_limited\"}", |v| v == 1.0)
        .await;
    assert!(node.metric("wsgate_rate_limited_total").await >= 20.0);
    assert_bystander_served(&node, &mut bystander, "after-flood").await;
}

#[tokio::test]
async fn handshakes_per_ip_over_the_rate_get_429() {
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_HANDSHAKES_PER_IP", 0.1)
            .env("WSGATE_HANDSHAKE_BURST_PER_IP", 2),
    )
    .await;
    let token = token("a", None, &[], 60);
    let _one = Client::connect(&node, &token, Via::Header).await.unwrap();
    let _two = Client::connect(&node, &token, Via::Header).await.unwrap();
    match Client::connect(&node, &token, Via::Header).await {
        Err(Refusal::Http(429, body)) => assert!(body.contains("rate_limited"), "{body}"),
        other => panic!("expected 429, got {:?}", other.map(|c| c.welcome)),
    }
    node.wait_metric("wsgate_handshakes_refused_total{reason=\"rate_limited\"}", |v| v == 1.0)
        .await;
    // Other HTTP endpoints are not throttled by it.
    assert_eq!(node.status("/health").await, 200);
}

#[tokio::test]
async fn origin_not_on_the_allow_list_gets_403() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_ALLOWED_ORIGINS", "https://app.example")).await;
    let auth = format!("Bearer {}", token("a", None, &[], 60));
    match open(
        &node.ws_url(),
        &[("authorization", &auth), ("origin", "https://evil.example")],
    )
    .await
    {
        Err(Refusal::Http(403, body)) => assert!(body.contains("origin"), "{body}"),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(
        open(
            &node.ws_url(),
            &[("authorization", &auth), ("origin", "https://app.example")]
        )
        .await
        .is_ok()
    );
    // Non-browser clients send no Origin and pass.
    assert!(open(&node.ws_url(), &[("authorization", &auth)]).await.is_ok());
    node.wait_metric("wsgate_handshakes_refused_total{reason=\"origin\"}", |v| v == 1.0)
        .await;
}

#[tokio::test]
async fn a_silent_tcp_connection_is_closed_after_the_handshake_timeout() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_HANDSHAKE_TIMEOUT_S", 1)).await;
    let mut bystander = Client::user(&node, "b", None, &[]).await;
    let mut silent = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    // A slowloris: half a request head, then nothing.
    slow.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    for stream in [&mut silent, &mut slow] {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "the server closed the connection");
    }
    assert_bystander_served(&node, &mut bystander, "after-slowloris").await;
}

#[tokio::test]
async fn malformed_and_forbidden_frames_change_nothing_for_others() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut bystander = Client::user(&node, "b", Some("acme"), &["viewer"]).await;
    let mut abuser = Client::user(&node, "a", Some("acme"), &["viewer"]).await;
    abuser.send_text("{{{{").await;
    abuser.send_text(&"[".repeat(500)).await;
    abuser.send(json!({"type": "subscribe", "room": "user:b"})).await;
    abuser
        .send(json!({"type": "publish", "room": "org:acme", "event": "spoof"}))
        .await;
    // Each frame gets its own error, in order, saying what was wrong.
    for (code, says) in [
        ("bad_request", "invalid frame"),
        ("bad_request", "invalid frame"),
        ("forbidden", "user:b"),
        ("forbidden", "org:acme"),
    ] {
        let error = abuser.recv().await;
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["code"], code, "{error}");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    assert_eq!(
        abuser.request(json!({"type": "ping"})).await["type"],
        "pong",
        "the abuser's socket lives"
    );
    assert_bystander_served(&node, &mut bystander, "after-abuse").await;
    // The forbidden publish never reached the org room.
    node.publish("org:acme", "real", json!(null)).await;
    assert_eq!(bystander.recv_type("event").await["event"], "real");
}

#[tokio::test]
async fn node_at_capacity_refuses_upgrades_with_503_and_recovers() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_MAX_CONNECTIONS", 2)).await;
    let first = Client::user(&node, "a", None, &[]).await;
    let mut second = Client::user(&node, "b", None, &[]).await;
    match Client::connect(&node, &token("c", None, &[], 60), Via::Header).await {
        Err(Refusal::Http(503, body)) => assert!(body.contains("capacity"), "{body}"),
        other => panic!("expected 503, got {:?}", other.map(|c| c.welcome)),
    }
    // Probes and the API are still served at capacity.
    assert_eq!(node.status("/health").await, 200);
    node.wait_metric("wsgate_handshakes_refused_total{reason=\"capacity\"}", |v| v == 1.0)
        .await;
    drop(first);
    wait_for("a slot to free up", || async {
        Client::connect(&node, &token("c", None, &[], 60), Via::Header)
            .await
            .is_ok()
    })
    .await;
    assert_eq!(second.request(json!({"type": "ping"})).await["type"], "pong");
}

/// An event larger than `limits.max_event_bytes` would not fit its members'
/// send queues: it is refused at the API (413), to a client (`limit_exceeded`)
/// and by the Redis Function, and dropped and counted from a plain PUBLISH.
/// Every member stays connected and gets the next event.
#[tokio::test]
async fn oversized_events_are_refused_at_every_door_and_members_stay() {
    let redis = Redis::start().await;
    let node = Node::start(
        NodeOptions::redis(&redis)
            .env("WSGATE_MAX_EVENT_BYTES", "4096")
            .env("WSGATE_HISTORY_NAMESPACES", "org"),
    )
    .await;
    let mut member = Client::user(&node, "42", Some("acme"), &["support"]).await;
    let big = "x".repeat(8 * 1024);

    let response = node
        .api(reqwest::Method::POST, "/api/v1/publish")
        .json(&json!({"rooms": ["user:42", "org:acme"], "event": "big", "data": {"pad": big}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "limit_exceeded");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("max_event_bytes"),
        "{body}"
    );

    let reply = member
        .request(json!({"type": "publish", "room": "chat:lobby", "event": "big", "data": {"pad": big}}))
        .await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("limit_exceeded"))
    );

    let payload = json!({"event": "big", "data": {"pad": big}}).to_string();
    assert_eq!(redis.publish("gw:user:42", &payload).await, 1, "the node is subscribed");
    node.wait_metric("wsgate_messages_dropped_total{reason=\"too_large\"}", |v| v == 1.0)
        .await;
    let refused = redis.fcall_publish("org:acme", &payload).await.unwrap_err();
    assert!(refused.contains("max_event_bytes"), "{refused}");

    // Nothing was sent, nobody was closed, offsets did not move.
    assert_eq!(redis.fcall_publish("org:acme", r#"{"event":"small"}"#).await, Ok(1));
    let event = member.recv_type("event").await;
    assert_eq!(
        (event["event"].as_str(), event["offset"].as_u64()),
        (Some("small"), Some(1))
    );
    assert_bystander_served(&node, &mut member, "after").await;
    assert_eq!(node.metric("wsgate_connections_closed_total").await, 0.0);
}

#[test]
fn max_event_bytes_must_fit_the_send_queue() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .env_clear()
        .env("WSGATE_LISTEN", "127.0.0.1:0")
        .env("WSGATE_JWT_SECRET", SECRET)
        .env("WSGATE_SEND_QUEUE_BYTES", "65536")
        .env("WSGATE_MAX_EVENT_BYTES", "65536")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_event_bytes"));
}

/// Before auth, a socket gets the same close codes as after it: the client
/// learns what was wrong, and the node and a bystander are unaffected.
#[tokio::test]
async fn before_auth_every_refusal_has_its_close_code_and_reason() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as WireFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let node = Node::start(NodeOptions::memory().env("WSGATE_MAX_FRAME_BYTES", 1024)).await;
    let mut bystander = Client::user(&node, "b", None, &[]).await;

    // An oversized first frame: 1009, not a reset.
    let mut ws = open(&node.ws_url(), &[]).await.unwrap();
    ws.send(Message::text("x".repeat(2000))).await.unwrap();
    assert!(matches!(next_frame(&mut ws).await, Frame::Close(1009, _)));

    // Invalid UTF-8 in a text frame: 1002.
    let mut ws = open(&node.ws_url(), &[]).await.unwrap();
    let invalid = WireFrame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(invalid)).await.unwrap();
    match next_frame(&mut ws).await {
        Frame::Close(code, reason) => {
            assert_eq!(code, 1002, "{reason}");
            assert!(reason.contains("UTF-8"), "{reason}");
        }
        _ => panic!("expected a close frame"),
    }

    // The client's close is answered with a close.
    let mut ws = open(&node.ws_url(), &[]).await.unwrap();
    ws.send(Message::Close(Some(CloseFrame {
        code: 1000.into(),
        reason: "changed my mind".into(),
    })))
    .await
    .unwrap();
    assert!(matches!(next_frame(&mut ws).await, Frame::Close(1000, _)));

    // An auth frame with an unknown member says so, not "no token given".
    let token = token("a", None, &[], 60);
    let mut ws = open(&node.ws_url(), &[]).await.unwrap();
    ws.send(Message::text(
        json!({"type": "auth", "token": token, "tokne": 1}).to_string(),
    ))
    .await
    .unwrap();
    match next_frame(&mut ws).await {
        Frame::Close(code, reason) => {
            assert_eq!(code, 4001);
            assert!(reason.contains("tokne"), "{reason}");
        }
        _ => panic!("expected a close frame"),
    }

    // A first frame of another type names it.
    let mut ws = open(&node.ws_url(), &[]).await.unwrap();
    ws.send(Message::text(r#"{"type":"subscribe","room":"chat:1"}"#))
        .await
        .unwrap();
    match next_frame(&mut ws).await {
        Frame::Close(code, reason) => {
            assert_eq!(code, 4001);
            assert!(reason.contains("must be auth"), "{reason}");
        }
        _ => panic!("expected a close frame"),
    }

    node.wait_metric("wsgate_connections_closed_total{reason=\"message_too_big\"}", |v| {
        v == 1.0
    })
    .await;
    node.wait_metric("wsgate_connections_closed_total{reason=\"protocol_error\"}", |v| {
        v == 1.0
    })
    .await;
    node.wait_metric("wsgate_connections", |v| v == 1.0).await;
    assert_bystander_served(&node, &mut bystander, "after-pre-auth-refusals").await;
}

#[tokio::test]
async fn sockets_waiting_for_their_auth_frame_are_capped_and_others_are_not() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_MAX_PENDING_AUTH", 2)).await;
    let mut bystander = Client::user(&node, "b", None, &[]).await;
    let mut first = open(&node.ws_url(), &[]).await.unwrap();
    let _second = open(&node.ws_url(), &[]).await.unwrap();
    match open(&node.ws_url(), &[]).await {
        Err(Refusal::Http(503, body)) => assert!(body.contains("auth frame"), "{body}"),
        Err(other) => panic!("expected 503, got {other:?}"),
        Ok(_) => panic!("a third pending socket was accepted"),
    }
    node.wait_metric("wsgate_handshakes_refused_total{reason=\"pending_auth\"}", |v| v == 1.0)
        .await;
    // A socket with its token in the upgrade request does not wait: admitted.
    let mut with_header = Client::user(&node, "h", None, &[]).await;
    assert_eq!(with_header.request(json!({"type": "ping"})).await["type"], "pong");
    // Once one pending socket has authenticated, its place is free again.
    first
        .send(Message::text(
            json!({"type": "auth", "token": token("p", None, &[], 60)}).to_string(),
        ))
        .await
        .unwrap();
    assert!(matches!(next_frame(&mut first).await, Frame::Json(welcome) if welcome["type"] == "welcome"));
    wait_for("a pending slot to be free", || async {
        open(&node.ws_url(), &[]).await.is_ok()
    })
    .await;
    assert_bystander_served(&node, &mut bystander, "after-pending-cap").await;
}

#[tokio::test]
async fn tokens_with_too_many_roles_and_too_deep_or_long_payloads_are_refused() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut bystander = Client::user(&node, "b", None, &[]).await;
    let many: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    match Client::connect(&node, &token("a", None, &many, 60), Via::Header).await {
        Err(Refusal::Http(401, body)) => assert!(body.contains("more than 64 roles"), "{body}"),
        Err(other) => panic!("expected 401, got {other:?}"),
        Ok(_) => panic!("65 roles accepted"),
    }
    let client = Client::connect(&node, &token("a", None, &many[..64], 60), Via::Header)
        .await
        .expect("64 roles accepted");
    assert_eq!(client.rooms().len(), 65, "user:a and 64 role rooms");

    let deep = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let mut admin = Client::user(&node, "adm", None, &["admin"]).await;
    let too_deep: serde_json::Value = serde_json::from_str(&deep(33)).unwrap();
    let reply = admin
        .request(json!({"type": "publish", "room": "chat:1", "event": "e", "data": too_deep}))
        .await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("deeper than 32"), "{reply}");
    let node = &node;
    let api = |body: serde_json::Value| async move {
        let response = node
            .api(reqwest::Method::POST, "/api/v1/publish")
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (status, body) = api(json!({"rooms": ["user:b"], "event": "e", "data": too_deep})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("deeper than 32"), "{body}");
    let (status, body) = api(json!({"rooms": ["user:b"], "event": "e", "id": "i".repeat(129)})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("'id' must be at most 128 bytes"), "{body}");
    let (status, body) = api(json!({"rooms": ["user:b"], "event": "e", "id": "i".repeat(128)})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(bystander.recv_type("event").await["id"], "i".repeat(128));
    assert_eq!(admin.request(json!({"type": "ping"})).await["type"], "pong");
    assert_bystander_served(node, &mut bystander, "after-bad-payloads").await;
}

#[tokio::test]
async fn an_api_body_that_never_arrives_gets_408_and_the_node_serves_on() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut bystander = Client::user(&node, "b", None, &[]).await;
    let mut slow = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"rooms\":"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    assert_bystander_served(&node, &mut bystander, "while-a-body-trickles").await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut answer))
        .await
        .expect("answered within the body read timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within"), "{answer}");
}

/// Burst against stall: a client that reads at once survives a burst twice
/// its send queue; one that stops reading is still closed with 4009.
#[tokio::test]
async fn a_burst_of_twice_the_send_queue_reaches_a_prompt_reader() {
    const QUEUE: usize = 64 * 1024;
    const ROOMS: usize = 32;
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_SEND_QUEUE_BYTES", QUEUE)
            .env("WSGATE_MAX_FRAME_BYTES", 16 * 1024)
            .env("WSGATE_MAX_EVENT_BYTES", 8 * 1024),
    )
    .await;
    let mut reader = Client::user(&node, "r", None, &["admin"]).await;
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("chat:{i}")).collect();
    for room in &rooms {
        assert_eq!(
            reader.request(json!({"type": "subscribe", "room": room})).await["type"],
            "ack"
        );
    }
    // One API request publishes to every room back to back, in the node,
    // faster than any socket drains: 32 frames of 4 KiB, twice the queue.
    let data = "x".repeat(QUEUE * 2 / ROOMS);
    for round in 0..5 {
        let response = node
            .api(reqwest::Method::POST, "/api/v1/publish")
            .json(&json!({"rooms": rooms, "event": format!("burst-{round}"), "data": data}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        for _ in 0..ROOMS {
            let event = reader.recv().await;
            assert_eq!(
                event["event"],
                format!("burst-{round}"),
                "round {round}: {}",
                event["type"]
            );
        }
    }
    assert_eq!(reader.request(json!({"type": "ping"})).await["type"], "pong");
    assert_eq!(
        node.metric("wsgate_connections_closed_total{reason=\"slow_consumer\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_per_ip_limits_key_on_the_forwarded_client_and_nobody_else_can_spoof_it() {
    let limited = |trusted: Option<&str>| {
        let mut options = NodeOptions::memory()
            .env("WSGATE_HANDSHAKES_PER_IP", 0.01)
            .env("WSGATE_HANDSHAKE_BURST_PER_IP", 2);
        if let Some(trusted) = trusted {
            options = options.env("WSGATE_TRUSTED_PROXIES", trusted);
        }
        options
    };
    let token = token("42", None, &[], 60);
    let auth = format!("Bearer {token}");
    let from = |node: &Node, client: &str| {
        let (url, auth, client) = (node.ws_url(), auth.clone(), client.to_string());
        async move {
            open(
                &url,
                &[
                    ("authorization", &auth),
                    ("x-forwarded-for", &format!("{client}, 127.0.0.1")),
                ],
            )
            .await
        }
    };

    // The tests' 127.0.0.1 is the trusted proxy: each forwarded client has its own bucket.
    let node = Node::start(limited(Some("127.0.0.1/32"))).await;
    assert!(from(&node, "203.0.113.5").await.is_ok());
    assert!(from(&node, "203.0.113.5").await.is_ok());
    assert!(
        matches!(from(&node, "203.0.113.5").await, Err(Refusal::Http(429, _))),
        "the third from one client"
    );
    let _kept = from(&node, "203.0.113.6")
        .await
        .expect("another client behind the same proxy");
    wait_for("the API to list the forwarded address", || async {
        let listed: serde_json::Value = node
            .api(reqwest::Method::GET, "/api/v1/connections?user=42")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["remote_addr"].as_str().is_some_and(|a| a.starts_with("203.0.113.6")))
    })
    .await;

    // Not trusted: the header is ignored, and every socket is 127.0.0.1's.
    let node = Node::start(limited(None)).await;
    assert!(from(&node, "203.0.113.5").await.is_ok());
    assert!(from(&node, "203.0.113.6").await.is_ok());
    assert!(
        matches!(from(&node, "203.0.113.7").await, Err(Refusal::Http(429, _))),
        "a spoofed header buys nothing"
    );
}
