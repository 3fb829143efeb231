//! The load generator, in-process, against the real gateway binary and a
//! real redis-server: small runs of each scenario that must come out clean
//! (every socket connected, nothing lost, duplicated or misrouted).
//! [loadtest]

mod common;

use std::time::Duration;

use common::{API_KEY, Node, NodeOptions, Redis, SECRET};
use wsgate_loadtest::{PublishVia, Report, RunConfig, ScenarioKind};

fn config(scenario: ScenarioKind, urls: Vec<String>, redis: &Redis) -> RunConfig {
    RunConfig {
        scenario,
        urls,
        secret: SECRET.into(),
        publish: Some(PublishVia::Redis {
            url: redis.url(),
            channel_prefix: "gw:".into(),
        }),
        settle: Duration::from_secs(5),
        timeout: Duration::from_secs(60),
        ..RunConfig::default()
    }
}

fn assert_clean(report: &Report) {
    let d = &report.delivery;
    assert_eq!(d.lost, 0, "nothing lost\n{}", report.human());
    assert_eq!(d.duplicates, 0, "no duplicates\n{}", report.human());
    assert_eq!(d.misrouted, 0, "nothing misrouted\n{}", report.human());
    assert_eq!(d.surplus, 0, "no surplus\n{}", report.human());
    assert_eq!(report.connects.failed, 0, "every socket connected\n{}", report.human());
    assert!(report.clean, "{}", report.human());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_through_redis_reaches_every_socket_once() {
    let redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis)).await;
    let report = wsgate_loadtest::run(RunConfig {
        sockets: 200,
        events: 50,
        rate: 250.0,
        server_pids: vec![node.pid()],
        ..config(ScenarioKind::Fanout, vec![node.ws_url()], &redis)
    })
    .await
    .expect("the run completes");
    assert_clean(&report);
    assert_eq!(report.connects.connected, 200);
    assert_eq!(report.delivery.expected, 200 * 50);
    assert_eq!(report.delivery.delivered, 200 * 50);
    assert_eq!(report.latency.count, 200 * 50);
    let publish = report.publish.as_ref().expect("publish outcome");
    assert_eq!((publish.sent, publish.acknowledged, publish.errors), (50, 50, 0));
    assert_eq!(publish.receivers, Some(50), "one node subscribed to the room");
    let server = report.server.as_ref().expect("server cost");
    assert_eq!(server.pids, vec![node.pid()]);
    assert!(server.rss_connected_bytes > 0);
    assert!(server.cpu_per_delivery_us.is_some());
    // The JSON line is what scripts read.
    let json: serde_json::Value = serde_json::from_str(&report.json()).expect("json");
    assert_eq!(json["delivery"]["lost"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_events_over_two_nodes_reach_only_their_user() {
    let redis = Redis::start().await;
    let a = Node::start(NodeOptions::redis(&redis)).await;
    let b = Node::start(NodeOptions::redis(&redis)).await;
    let report = wsgate_loadtest::run(RunConfig {
        sockets: 100,
        events: 300,
        rate: 1000.0,
        ..config(ScenarioKind::Targeted, vec![a.ws_url(), b.ws_url()], &redis)
    })
    .await
    .expect("the run completes");
    assert_clean(&report);
    assert_eq!(report.delivery.expected, 300, "each event to one user's one socket");
    assert_eq!(report.delivery.delivered, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_through_the_http_api_is_clean() {
    let redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis)).await;
    let report = wsgate_loadtest::run(RunConfig {
        sockets: 50,
        events: 40,
        rate: 200.0,
        publish: Some(PublishVia::Http {
            base_url: node.http_url(""),
            api_key: API_KEY.into(),
        }),
        ..config(ScenarioKind::Fanout, vec![node.ws_url()], &redis)
    })
    .await
    .expect("the run completes");
    assert_clean(&report);
    assert_eq!(report.delivery.expected, 50 * 40);
    let publish = report.publish.as_ref().expect("publish outcome");
    assert_eq!((publish.acknowledged, publish.errors), (40, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_sockets_get_every_event_published_while_they_are_welcome() {
    let redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis)).await;
    let report = wsgate_loadtest::run(RunConfig {
        sockets: 60,
        churn_rate: 60.0,
        rate: 100.0,
        events: 0,
        duration: Duration::from_secs(3),
        ..config(ScenarioKind::Churn, vec![node.ws_url()], &redis)
    })
    .await
    .expect("the run completes");
    assert_clean(&report);
    assert!(
        report.connects.connected > 60 + 60,
        "sockets reconnected\n{}",
        report.human()
    );
    assert!(report.delivery.expected > 0, "{}", report.human());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_cost_is_measured_and_a_bad_secret_fails_every_connect() {
    let redis = Redis::start().await;
    let node = Node::start(NodeOptions::redis(&redis)).await;
    let idle = RunConfig {
        sockets: 100,
        duration: Duration::from_millis(500),
        publish: None,
        server_pids: vec![node.pid()],
        ..config(ScenarioKind::Idle, vec![node.ws_url()], &redis)
    };
    let report = wsgate_loadtest::run(idle.clone()).await.expect("the run completes");
    assert!(report.clean, "{}", report.human());
    assert_eq!(report.connects.connected, 100);
    let server = report.server.as_ref().expect("server cost");
    assert!(server.cpu_per_connect_us.is_some());
    assert!(server.rss_per_connection_bytes.is_some());
    assert!(server.cpu_hold_core_pct.is_some());

    let refused = wsgate_loadtest::run(RunConfig {
        secret: "not-the-gateways-secret".into(),
        sockets: 10,
        ..idle
    })
    .await
    .expect("the run completes");
    assert!(!refused.clean);
    assert_eq!(refused.connects.failed, 10);
    assert_eq!(refused.connects.failures.get("http_401"), Some(&10));
}

#[tokio::test]
async fn remote_targets_are_refused_without_the_flag() {
    let config = RunConfig {
        scenario: ScenarioKind::Idle,
        urls: vec!["ws://192.0.2.1:8080/v1/ws".into()],
        secret: SECRET.into(),
        ..RunConfig::default()
    };
    let error = wsgate_loadtest::run(config).await.expect_err("refused");
    assert!(error.contains("not a loopback address"), "{error}");
}
