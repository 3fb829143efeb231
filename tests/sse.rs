//! `GET /v1/sse` with a plain HTTP client (raw TCP, HTTP/1.0, so the body
//! is the bytes of the stream): events and their resume ids, resuming with
//! `Last-Event-ID`, heartbeats, refusals, a stalled reader closed without
//! harm to others, the per-user limit and the drain.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One SSE event as read off the wire.
#[derive(Debug, Default, Clone)]
struct SseEvent {
    name: String,
    id: Option<String>,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data is JSON ({e}): {}", self.data))
    }
}

/// A streaming SSE response.
struct Stream {
    socket: TcpStream,
    buffer: Vec<u8>,
    comments: Vec<String>,
    retry_ms: Option<u64>,
}

/// The status and JSON body of a refused request, or the open stream.
async fn open(node: &Node, path: &str, headers: &[(&str, &str)]) -> Result<Stream, (u16, Value)> {
    let mut socket = TcpStream::connect(node.addr).await.expect("connect");
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n", node.addr);
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await.expect("send request");
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, socket.read(&mut chunk))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(n > 0, "connection closed before the response head");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let rest = buffer[head_end + 4..].to_vec();
    if status != 200 {
        let mut body = rest;
        let _ = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut body)).await;
        return Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
    }
    assert!(
        head.to_ascii_lowercase().contains("content-type: text/event-stream"),
        "{head}"
    );
    Ok(Stream {
        socket,
        buffer: rest,
        comments: Vec::new(),
        retry_ms: None,
    })
}

impl Stream {
    /// The next event (comments are collected on the way); None at the end of the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(at) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..at + 2).collect();
                let text = String::from_utf8(block).expect("UTF-8");
                let mut event = SseEvent::default();
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        self.comments.push(comment.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event.name = v.into();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        event.id = Some(v.into());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v);
                    } else if let Some(v) = line.strip_prefix("retry: ") {
                        self.retry_ms = v.parse().ok();
                    }
                }
                if event.name.is_empty() && data.is_empty() {
                    continue; // a comment or the retry field
                }
                event.data = data.join("\n");
                return Some(event);
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(PATIENCE, self.socket.read(&mut chunk))
                .await
                .expect("an SSE event in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next event that is not the welcome.
    async fn event(&mut self) -> SseEvent {
        loop {
            let event = self.next().await.expect("stream still open");
            if event.name != "wsgate:welcome" {
                return event;
            }
        }
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn events_carry_resume_ids_and_last_event_id_resumes_without_loss() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_HISTORY_NAMESPACES", "user,chat")).await;
    let token = token("42", Some("acme"), &["support"], 600);
    let auth = bearer(&token);
    let mut stream = open(&node, "/v1/sse?rooms=chat:lobby", &[("authorization", &auth)])
        .await
        .expect("stream");
    let welcome = stream.next().await.expect("welcome");
    assert_eq!(welcome.name, "wsgate:welcome");
    let welcome_frame = welcome.json();
    assert_eq!(welcome_frame["type"], "welcome");
    let mut rooms: Vec<&str> = welcome_frame["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    rooms.sort();
    assert_eq!(rooms, ["chat:lobby", "org:acme", "role:support", "user:42"]);
    assert_eq!(node.metric("wsgate_connections{transport=\"sse\"}").await, 1.0);

    for n in 1..=3 {
        node.publish("user:42", "order:updated", json!({"n": n})).await;
    }
    node.publish("chat:lobby", "msg", json!({"text": "hi"})).await;
    let mut last_id = String::new();
    for n in 1..=3 {
        let event = stream.event().await;
        assert_eq!(event.name, "order:updated");
        let frame = event.json();
        assert_eq!(frame["type"], "event", "the data is the WebSocket event frame");
        assert_eq!(frame["room"], "user:42");
        assert_eq!(frame["data"], json!({"n": n}));
        assert_eq!(frame["offset"], n);
        last_id = event.id.expect("durable events carry an id");
    }
    let chat = stream.event().await;
    assert_eq!(
        (chat.name.as_str(), chat.json()["data"]["text"].as_str()),
        ("msg", Some("hi"))
    );
    last_id = chat.id.unwrap_or(last_id);
    drop(stream);
    node.wait_metric("wsgate_connections{transport=\"sse\"}", |v| v == 0.0)
        .await;

    // Missed while away, then resumed as a reconnecting EventSource does.
    for n in 4..=5 {
        node.publish("user:42", "order:updated", json!({"n": n})).await;
    }
    let mut stream = open(
        &node,
        "/v1/sse?rooms=chat:lobby",
        &[("authorization", &auth), ("last-event-id", &last_id)],
    )
    .await
    .expect("resumed stream");
    let welcome = stream.next().await.expect("welcome").json();
    assert_eq!(welcome["recovered"]["user:42"], true);
    assert_eq!(welcome["recovered"]["chat:lobby"], true);
    node.publish("user:42", "order:updated", json!({"n": 6})).await;
    let offsets: Vec<u64> = [stream.event().await, stream.event().await, stream.event().await]
        .iter()
        .map(|e| e.json()["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [4, 5, 6], "every missed event once, in order, then live");

    // The query form works too, and a token from another epoch is not recovered.
    let stale = last_id.replace(
        last_id.split(' ').next().unwrap().rsplit('/').next().unwrap(),
        "otherepoch",
    );
    let query = format!(
        "/v1/sse?token={token}&last_event_id={}",
        form_urlencoded::byte_serialize(stale.as_bytes()).collect::<String>()
    );
    let mut again = open(&node, &query, &[]).await.expect("stream by query token");
    let welcome = again.next().await.expect("welcome").json();
    assert_eq!(welcome["recovered"]["user:42"], false);
}

#[tokio::test]
async fn refusals_are_http_errors_with_the_json_body() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_HISTORY_NAMESPACES", "user")).await;
    let auth = bearer(&token("42", Some("acme"), &["viewer"], 600));
    let expired = bearer(&token_with_claims(json!({"sub": "42", "exp": now() - 600})));
    for (path, headers, status, code) in [
        ("/v1/sse", vec![], 401, "unauthorized"),
        ("/v1/sse", vec![("authorization", "Bearer nope")], 401, "unauthorized"),
        (
            "/v1/sse",
            vec![("authorization", expired.as_str())],
            401,
            "unauthorized",
        ),
        (
            "/v1/sse?rooms=orders:1,admin:x",
            vec![("authorization", auth.as_str())],
            403,
            "forbidden",
        ),
        (
            "/v1/sse?rooms=user:43",
            vec![("authorization", auth.as_str())],
            403,
            "forbidden",
        ),
        (
            "/v1/sse?rooms=Bad%20Room",
            vec![("authorization", auth.as_str())],
            400,
            "bad_request",
        ),
        (
            "/v1/sse",
            vec![("authorization", auth.as_str()), ("last-event-id", "user:42/x/e")],
            400,
            "bad_request",
        ),
    ] {
        let Err((got, body)) = open(&node, path, &headers).await else {
            panic!("{path} {headers:?} must be refused");
        };
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {headers:?}: {body}"
        );
    }
    let post = reqwest::Client::new()
        .post(node.http_url("/v1/sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    // Nothing was left registered by the refusals.
    assert_eq!(node.metric("wsgate_connections").await, 0.0);
    assert!(
        open(&node, "/v1/sse?rooms=orders:1", &[("authorization", &auth)])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn heartbeats_are_comment_lines() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_HEARTBEAT_S", "1")).await;
    let auth = bearer(&token("7", None, &[], 600));
    let mut stream = open(&node, "/v1/sse", &[("authorization", &auth)])
        .await
        .expect("stream");
    stream.next().await.expect("welcome");
    let started = std::time::Instant::now();
    while stream.comments.is_empty() {
        let mut chunk = [0u8; 256];
        let n = tokio::time::timeout(PATIENCE, stream.socket.read(&mut chunk))
            .await
            .expect("a heartbeat in time")
            .expect("read");
        assert!(n > 0, "stream ended");
        stream.buffer.extend_from_slice(&chunk[..n]);
        let _ = tokio::time::timeout(Duration::from_millis(1), stream.next()).await;
    }
    assert_eq!(stream.comments[0], "", "an empty comment: {:?}", stream.comments);
    assert!(started.elapsed() < PATIENCE);
}

#[tokio::test]
async fn a_stalled_reader_is_closed_and_the_others_lose_nothing() {
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_SEND_QUEUE_BYTES", "65536")
            .env("WSGATE_WRITE_TIMEOUT_S", "60"),
    )
    .await;
    let token = token("9", Some("crowd"), &[], 600);
    let auth = bearer(&token);
    // Connected and never read again.
    let stalled = open(&node, "/v1/sse", &[("authorization", &auth)])
        .await
        .expect("stream");
    let mut reader = open(&node, "/v1/sse", &[("authorization", &auth)])
        .await
        .expect("stream");
    reader.next().await.expect("welcome");
    let mut ws = Client::user(&node, "10", Some("crowd"), &[]).await;

    let padding = "x".repeat(2000);
    let slow = "wsgate_connections_closed_total{reason=\"slow_consumer\",transport=\"sse\"}";
    let mut sent = 0;
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(event) = reader.next().await {
            if event.name == "tick" {
                got.push(event.json()["data"]["n"].as_u64().unwrap());
                if got.last() == Some(&u64::MAX) {
                    break;
                }
            }
        }
        (got, reader)
    });
    // The WebSocket bystander reads as promptly as the SSE one.
    let ws_reading = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.last() != Some(&u64::MAX) {
            got.push(ws.recv_type("event").await["data"]["n"].as_u64().unwrap());
        }
        got
    });
    while node.metric(slow).await == 0.0 {
        sent += 1;
        node.publish("org:crowd", "tick", json!({"n": sent, "pad": padding}))
            .await;
        assert!(sent < 20_000, "the stalled SSE reader was never closed");
    }
    node.publish("org:crowd", "tick", json!({"n": u64::MAX})).await;
    let (got, _reader) = reading.await.unwrap();
    let want: Vec<u64> = (1..=sent).chain([u64::MAX]).collect();
    assert_eq!(got, want, "the reading SSE client got every event in order");
    assert_eq!(ws_reading.await.unwrap(), want, "so did the WebSocket client");
    // The stalled one is out of the hub, though its socket was never read.
    assert_eq!(node.metric("wsgate_connections{transport=\"sse\"}").await, 1.0);
    drop(stalled);
}

#[tokio::test]
async fn the_per_user_limit_and_the_drain_apply() {
    let mut node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_MAX_CONNECTIONS_PER_USER", "1")
            .env("WSGATE_DRAIN_S", "1"),
    )
    .await;
    let auth = bearer(&token("5", None, &[], 600));
    let mut first = open(&node, "/v1/sse", &[("authorization", &auth)])
        .await
        .expect("stream");
    first.next().await.expect("welcome");
    let Err((status, body)) = open(&node, "/v1/sse", &[("authorization", &auth)]).await else {
        panic!("a second connection of the user must be refused");
    };
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("limit_exceeded")));

    node.signal("TERM");
    assert!(first.next().await.is_none(), "the drain ends the stream");
    assert!(
        first.comments.iter().any(|c| c.starts_with("closed 1012")),
        "{:?}",
        first.comments
    );
    assert!(node.wait_exit(PATIENCE).await.is_some_and(|s| s.success()));
}

#[tokio::test]
async fn not_here_not_now_is_an_empty_stream_that_says_when_to_retry() {
    // EventSource gives up on a 503; a broker outage must not end it for good.
    let mut redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis)).await;
    redis.kill().await;
    wait_for("node not ready", || async { node.status("/ready").await == 503 }).await;
    let auth = bearer(&token("8", None, &[], 600));
    let mut stream = open(&node, "/v1/sse", &[("authorization", &auth)])
        .await
        .expect("a 200 that tells the EventSource to retry");
    assert!(stream.next().await.is_none(), "and ends at once");
    let retry_ms = stream.retry_ms.expect("a retry field");
    assert!((1000..=5000).contains(&retry_ms), "{retry_ms}");
    assert!(
        stream.comments.iter().any(|c| c.starts_with("503")),
        "{:?}",
        stream.comments
    );
    assert_eq!(node.metric("wsgate_connections").await, 0.0);
}
