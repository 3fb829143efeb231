//! The node under stress and failure: Redis lost and back, slow consumers,
//! heartbeats, SIGTERM drain, and the metrics that show it.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_node_started_before_redis_connects_once_redis_is_up() {
    let mut redis = Redis::start().await;
    redis.kill().await;
    let log = temp_dir("late-redis").join("node.log");
    let node = Node::spawn(NodeOptions::redis(&redis).log_to(&log)).await;
    assert_eq!(node.status("/health").await, 200, "alive without Redis");
    assert_eq!(node.status("/ready").await, 503, "not ready without Redis");
    // Its first attempt has failed: from here on only a retry can connect.
    wait_for_log(&log, "redis connection error").await;

    redis.restart().await;
    node.wait_ready().await;
    let mut client = Client::user(&node, "42", Some("acme"), &[]).await;
    wait_for("the node's subscription", || async {
        redis.numsub("gw:org:acme").await == 1
    })
    .await;
    redis.publish("gw:org:acme", r#"{"event":"late","data":1}"#).await;
    assert_eq!(client.recv_type("event").await["event"], "late");
}

#[tokio::test]
async fn redis_loss_keeps_clients_and_recovers_every_room() {
    let mut redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis)).await;
    let mut client = Client::user(&node, "42", Some("acme"), &["support"]).await;
    node.wait_metric("wsgate_broker_up", |v| v == 1.0).await;

    redis.kill().await;
    wait_for("/ready 503 while redis is down", || async {
        node.status("/ready").await == 503
    })
    .await;
    node.wait_metric("wsgate_broker_up", |v| v == 0.0).await;
    assert_eq!(node.status("/health").await, 200, "alive while not ready");
    // The client is still connected and served.
    let pong = client.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    // New sockets are refused while the broker is down: their rooms could not go live.
    assert!(matches!(
        Client::connect(&node, &token("1", None, &[], 60), Via::Header).await,
        Err(Refusal::Http(503, _))
    ));

    redis.restart().await;
    wait_for("/ready 200 after redis is back", || async {
        node.status("/ready").await == 200
    })
    .await;
    node.wait_metric("wsgate_broker_reconnects_total", |v| v >= 1.0).await;
    // Every live room was re-subscribed: events published after the restart arrive.
    for room in ["user:42", "org:acme", "role:support"] {
        let payload = json!({"event": "after-restart", "data": room}).to_string();
        assert_eq!(
            redis.publish(&format!("gw:{room}"), &payload).await,
            1,
            "{room} re-subscribed"
        );
        let frame = client.recv_type("event").await;
        assert_eq!(frame["room"], room);
    }
    assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");
}

// Two threads, so the reading client never waits behind the publishing loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_with_4009_and_the_reader_gets_everything() {
    let redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis).env("WSGATE_SEND_QUEUE_BYTES", 65536)).await;
    let mut slow = stalled_client(&node, "1", Some("acme")).await;

    let mut reader = Client::user(&node, "2", Some("acme"), &[]).await;
    let counted = tokio::spawn(async move {
        let mut seen = 0u64;
        loop {
            let frame = reader.recv().await;
            if frame["event"] == "end" {
                return (seen, reader);
            }
            assert_eq!(frame["data"]["i"], seen, "in order, none lost");
            seen += 1;
        }
    });

    let published = flood_org_acme_until(
        &redis,
        &node,
        "wsgate_connections_closed_total{reason=\"slow_consumer\"}",
    )
    .await;
    assert!(
        node.metric("wsgate_connections_closed_total{reason=\"slow_consumer\"}")
            .await
            >= 1.0
    );
    redis.publish("gw:org:acme", r#"{"event":"end"}"#).await;

    // The slow client, reading again, finds the 4009 close after what was sent.
    match next_frame_skipping_events(&mut slow).await {
        Frame::Close(code, _) => assert_eq!(code, 4009),
        _ => panic!("expected close 4009"),
    }
    let (seen, mut reader) = counted.await.unwrap();
    assert_eq!(seen, published, "the reading client received every event");
    assert_eq!(reader.request(json!({"type": "ping"})).await["type"], "pong");
    assert!(
        node.metric("wsgate_messages_dropped_total{reason=\"slow_consumer\"}")
            .await
            >= 1.0
    );
}

async fn next_frame_skipping_events(ws: &mut Ws) -> Frame {
    loop {
        match next_frame(ws).await {
            Frame::Json(v) if v["type"] == "event" => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn silent_socket_is_closed_after_two_heartbeats_and_a_live_one_stays() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_HEARTBEAT_S", 1)).await;

    // A live client: tungstenite answers pings while it reads, so it reads
    // throughout, counting the server's pings.
    let mut live = Client::user(&node, "1", None, &[]).await;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let live = tokio::spawn(async move {
        let mut pings = 0;
        loop {
            tokio::select! {
                _ = &mut stopped => return (live, pings),
                message = live.ws.next() => match message {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    Some(Ok(_)) => {}
                    other => panic!("live client lost: {other:?}"),
                },
            }
        }
    });

    // A raw client that completes the upgrade and then never answers.
    let mut raw = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let request = format!(
        "GET /v1/ws?token={} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        token("2", None, &[], 600),
        node.addr
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    // Read everything until the server closes: the last frame is the close.
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, raw.read_to_end(&mut received))
        .await
        .expect("server closed the silent socket")
        .ok();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "upgraded");
    assert!(text.contains("heartbeat timeout"), "closed for the heartbeat");
    node.wait_metric("wsgate_connections_closed_total{reason=\"heartbeat_timeout\"}", |v| {
        v == 1.0
    })
    .await;

    // The live client saw the pings over the same time, answered them, and
    // is still served.
    stop.send(()).unwrap();
    let (mut live, pings) = live.await.unwrap();
    assert!(pings >= 2, "{pings} pings");
    assert_eq!(live.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn sigterm_drains_with_1012_and_exits_zero() {
    let mut node = Node::start(NodeOptions::memory().env("WSGATE_DRAIN_S", 2)).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(Client::user(&node, &i.to_string(), Some("acme"), &[]).await);
    }
    node.signal("TERM");
    wait_for("/ready 503 at once", || async { node.status("/ready").await == 503 }).await;
    assert!(
        matches!(
            Client::connect(&node, &token("9", None, &[], 60), Via::Header).await,
            Err(Refusal::Http(503, _))
        ),
        "no new sockets while draining"
    );
    // Each client notes when its 1012 arrives: the closes are spread over
    // the 2 s drain window (five sockets: about 0.4 s apart), not sent at once.
    let closes: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let (code, _) = client.closed().await;
                (code, std::time::Instant::now())
            })
        })
        .collect();
    let mut arrivals = Vec::new();
    for close in closes {
        let (code, at) = close.await.unwrap();
        assert_eq!(code, 1012);
        arrivals.push(at);
    }
    let first = arrivals.iter().min().unwrap();
    let last = arrivals.iter().max().unwrap();
    assert!(
        last.duration_since(*first) >= Duration::from_millis(800),
        "closes spread over the drain window, not all at once: {:?}",
        last.duration_since(*first)
    );
    let status = node.wait_exit(Duration::from_secs(10)).await.expect("exited in time");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn metrics_parse_as_prometheus_and_the_connection_gauge_moves() {
    let node = Node::start(NodeOptions::memory()).await;
    let parse = |text: String| {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
    };
    let a = Client::user(&node, "1", None, &[]).await;
    let mut b = Client::user(&node, "2", None, &[]).await;
    assert_eq!(b.request(json!({"type": "ping"})).await["type"], "pong");
    node.wait_metric("wsgate_connections", |v| v == 2.0).await;
    let scrape = parse(node.metrics().await);
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "wsgate_connections",
        "wsgate_connections_opened_total",
        "wsgate_rooms",
        "wsgate_broker_up",
        "wsgate_client_frames_total",
    ] {
        assert!(names.contains(&name), "{name} exported; have {names:?}");
    }
    assert_eq!(
        node.metric("wsgate_broker_up").await,
        1.0,
        "the embedded broker is always up"
    );
    drop(a);
    node.wait_metric("wsgate_connections", |v| v == 1.0).await;
    node.wait_metric("wsgate_connections_closed_total{reason=\"client\"}", |v| v == 1.0)
        .await;
    assert_eq!(node.metric("wsgate_connections_opened_total").await, 2.0);
}

#[tokio::test]
async fn a_fresh_node_exports_build_info_capacity_process_metrics_and_every_labelled_series_at_zero() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_MAX_CONNECTIONS", 123)).await;
    let text = node.metrics().await;
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text");
    let sample = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name}{labels:?} is exported:\n{text}"))
    };
    assert_eq!(
        sample("wsgate_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert_eq!(sample("wsgate_max_connections", &[]), 123.0);
    assert!(sample("process_open_fds", &[]) > 0.0);
    assert!(sample("process_max_fds", &[]) >= sample("process_open_fds", &[]));
    assert!(sample("process_resident_memory_bytes", &[]) > 0.0);
    assert!(sample("process_cpu_seconds_total", &[]) >= 0.0);
    // Series that no event has touched yet exist at 0, so rate() and alerts
    // see them from the first scrape.
    for (name, labels) in [
        (
            "wsgate_connections_closed_total",
            vec![("reason", "slow_consumer"), ("transport", "sse")],
        ),
        ("wsgate_handshakes_refused_total", vec![("reason", "capacity")]),
        ("wsgate_messages_dropped_total", vec![("reason", "too_large")]),
        ("wsgate_auth_failures_total", vec![("reason", "bad_signature")]),
        ("wsgate_command_errors_total", vec![("code", "forbidden")]),
        (
            "wsgate_api_requests_total",
            vec![("endpoint", "publish"), ("status", "5xx")],
        ),
        ("wsgate_recoveries_total", vec![("result", "not_recovered")]),
    ] {
        assert_eq!(sample(name, &labels), 0.0, "{name}{labels:?}");
    }
}

#[tokio::test]
async fn delivery_is_counted_and_timed() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut client = Client::user(&node, "1", None, &[]).await;
    node.publish("user:1", "e", json!(1)).await;
    client.recv_type("event").await;
    node.wait_metric("wsgate_messages_delivered_total", |v| v == 1.0).await;
    node.wait_metric("wsgate_delivery_latency_seconds_count", |v| v == 1.0)
        .await;
    node.wait_metric("wsgate_events_received_total{source=\"memory\"}", |v| v == 1.0)
        .await;
}

/// A bounded flood to several stalled clients: the node's queued bytes stay
/// under `limits.max_queued_bytes` by closing the largest queues (4009),
/// and a client that reads gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_node_queue_bound_the_largest_queues_are_closed_and_a_reader_gets_everything() {
    const LIMIT: usize = 512 * 1024;
    let redis = Redis::start().await;
    let node = Node::start(
        NodeOptions::redis(&redis)
            .env("WSGATE_SEND_QUEUE_BYTES", 256 * 1024)
            .env("WSGATE_MAX_QUEUED_BYTES", LIMIT),
    )
    .await;
    let mut stalled = Vec::new();
    for i in 0..4 {
        stalled.push(stalled_client(&node, &format!("stalled-{i}"), Some("acme")).await);
    }
    let mut reader = Client::user(&node, "reader", Some("acme"), &[]).await;
    let counted = tokio::spawn(async move {
        let mut seen = 0u64;
        loop {
            let frame = reader.recv().await;
            if frame["event"] == "end" {
                return seen;
            }
            assert_eq!(frame["data"]["i"], seen, "in order, none lost");
            seen += 1;
        }
    });
    let published = flood_org_acme_until(&redis, &node, "wsgate_messages_dropped_total{reason=\"queue_limit\"}").await;
    assert!(
        node.metric("wsgate_messages_dropped_total{reason=\"queue_limit\"}")
            .await
            > 0.0,
        "the node bound shed a queue"
    );
    redis.publish("gw:org:acme", r#"{"event":"end"}"#).await;
    assert_eq!(counted.await.unwrap(), published, "the reader received every event");
    assert!(node.metric("wsgate_queued_bytes").await <= LIMIT as f64);
    // A shed client finds the 4009 after what it was sent.
    // Each stalled client, reading again, finds either the 4009 after what it
    // was sent, or (not shed) every event up to the end.
    let mut closed = 0;
    for ws in &mut stalled {
        loop {
            match next_frame(ws).await {
                Frame::Close(code, _) => {
                    assert_eq!(code, 4009);
                    closed += 1;
                    break;
                }
                Frame::Json(event) if event["event"] == "end" => break,
                Frame::Json(_) => {}
                Frame::Gone => panic!("a stalled client lost its connection without a close"),
            }
        }
    }
    assert!(closed >= 1, "at least one stalled client was closed with 4009");
}

/// Publish numbered 4 KB events to org:acme through Redis, 100 at a time,
/// until the node's `metric` is above 0 (bounded: 20,000 events). Returns
/// how many were published.
async fn flood_org_acme_until(redis: &Redis, node: &Node, metric: &str) -> u64 {
    let filler = "x".repeat(4000);
    let mut published = 0u64;
    while published < 20_000 {
        for _ in 0..100 {
            let payload = json!({"event": "load", "data": {"i": published, "fill": filler}}).to_string();
            redis.publish("gw:org:acme", &payload).await;
            published += 1;
        }
        if node.metric(metric).await > 0.0 {
            break;
        }
    }
    published
}
