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

// ------------------------------------------------ durable: soak and storm

/// A node whose `org:` and `user:` rooms keep history.
fn durable_node(redis: &Redis) -> NodeOptions {
    NodeOptions::redis(redis)
        .env("WSGATE_HISTORY_NAMESPACES", "org,user")
        .env("WSGATE_DRAIN_S", 2)
}

fn durable_config(scenario: ScenarioKind, nodes: &[&Node], redis: &Redis) -> RunConfig {
    RunConfig {
        scenario,
        urls: nodes.iter().map(|n| n.ws_url()).collect(),
        secret: SECRET.into(),
        publish: Some(PublishVia::Fcall {
            url: redis.url(),
            channel_prefix: "gw:".into(),
        }),
        events: 0,
        settle: Duration::from_secs(5),
        timeout: Duration::from_secs(90),
        ..RunConfig::default()
    }
}

fn assert_offsets_clean(report: &Report) {
    let d = report.durable.as_ref().expect("a durable section");
    let o = &d.offsets;
    assert_eq!(o.lost, 0, "nothing lost\n{}", report.human());
    assert_eq!(o.duplicated, 0, "no duplicates\n{}", report.human());
    assert_eq!(o.out_of_order, 0, "in order\n{}", report.human());
    assert_eq!(o.unexpected, 0, "nothing unexpected\n{}", report.human());
    assert_eq!(o.not_recovered, 0, "every resume recovered\n{}", report.human());
    assert!(o.expected > 0 && o.received == o.expected, "{}", report.human());
    assert_eq!(report.connects.failed, 0, "{}", report.human());
    assert!(report.clean, "{}", report.human());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_over_two_nodes_resumes_every_socket_without_a_gap() {
    let redis = Redis::start().await;
    let a = Node::start(durable_node(&redis)).await;
    let b = Node::start(durable_node(&redis)).await;
    let report = wsgate_loadtest::run(RunConfig {
        sockets: 20,
        rate: 20.0,
        duration: Duration::from_secs(6),
        churn_rate: 8.0,
        away: Duration::from_millis(500),
        rss_every: Duration::from_secs(1),
        server_pids: vec![a.pid(), b.pid()],
        ..durable_config(ScenarioKind::Soak, &[&a, &b], &redis)
    })
    .await
    .expect("the soak completes");
    assert_offsets_clean(&report);
    let d = report.durable.as_ref().expect("a durable section");
    assert!(d.offsets.resumes > 10, "sockets came and went\n{}", report.human());
    assert_eq!(d.offsets.recovered, 2 * d.offsets.resumes, "two rooms per resume");
    assert!(d.offsets.by_namespace["user"].expected > 0, "user rooms got events too");
    let servers = d.server_recoveries.expect("the nodes' metrics");
    assert_eq!(servers.recovered as u64, d.offsets.recovered, "the servers agree");
    let rss = d.rss.as_ref().expect("RSS sampled");
    assert!(rss.samples.len() >= 5, "{rss:?}");
    assert!(rss.growth_second_half_pct.is_some());
    let publish = report.publish.as_ref().expect("publish outcome");
    assert_eq!((publish.sent, publish.errors, publish.offset_breaks), (120, 0, Some(0)));
    let json: serde_json::Value = serde_json::from_str(&report.json()).expect("json");
    assert_eq!(json["durable"]["offsets"]["lost"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_moves_every_socket_to_the_other_node_without_a_gap() {
    let redis = Redis::start().await;
    let mut a = Node::start(durable_node(&redis)).await;
    let b = Node::start(durable_node(&redis)).await;
    let report = wsgate_loadtest::run(RunConfig {
        sockets: 50,
        rate: 50.0,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(15),
        cooldown: Duration::from_millis(500),
        drain_pid: Some(a.pid()),
        server_pids: vec![b.pid()],
        ..durable_config(ScenarioKind::Storm, &[&a, &b], &redis)
    })
    .await
    .expect("the storm completes");
    assert_offsets_clean(&report);
    let storm = report
        .durable
        .as_ref()
        .and_then(|d| d.storm.as_ref())
        .expect("the storm's numbers");
    assert_eq!((storm.sockets_at_sigterm, storm.recovered_sockets), (50, 50));
    let all = storm.all_recovered_s.expect("every socket recovered");
    assert!(all > 0.0 && all < 15.0, "{all}");
    assert_eq!(report.closes.get("close_1012"), Some(&50), "{}", report.human());
    let b_cost = storm.node_b.as_ref().expect("node B measured");
    assert!(
        b_cost.cpu_us.is_some() && b_cost.recoveries == Some(100.0),
        "{b_cost:?}"
    );
    // Node A drained and exited by itself.
    let exited = a.wait_exit(Duration::from_secs(10)).await;
    assert!(exited.is_some_and(|status| status.success()), "{exited:?}");
}
