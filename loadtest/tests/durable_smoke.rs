//! The soak and the storm, in-process, against the real gateway binary and
//! a real redis-server: small runs that must come out clean (no offset
//! lost, duplicated or out of order, every resume recovered).
//!
//! The gateway is another package of the workspace, so its binary is not
//! built for these tests: they are ignored unless asked for, with the path
//! of a built `wsgate` in `WSGATE_BIN` and `redis-server` (7+) on the PATH:
//!
//! ```sh
//! cargo build --release --bin wsgate
//! WSGATE_BIN=target/release/wsgate cargo test -p wsgate-loadtest --test durable_smoke -- --ignored
//! ```

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use wsgate_loadtest::{PublishVia, Report, RunConfig, ScenarioKind};

const SECRET: &str = "loadtest-durable-smoke-secret-0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wsgate_bin() -> String {
    std::env::var("WSGATE_BIN").expect("WSGATE_BIN: the path of a built wsgate binary")
}

/// Poll `url` until it answers 200, or fail.
async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(url).timeout(Duration::from_secs(1)).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Redis {
    port: u16,
    _child: Child,
}

impl Redis {
    async fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server on the PATH");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Redis { port, _child: child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

struct Node {
    port: u16,
    child: Child,
}

impl Node {
    async fn start(redis: &Redis) -> Node {
        let port = free_port();
        let child = Command::new(wsgate_bin())
            .env("WSGATE_JWT_SECRET", SECRET)
            .env("WSGATE_REDIS_URL", redis.url())
            .env("WSGATE_HISTORY_NAMESPACES", "org,user")
            .env("WSGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("WSGATE_DRAIN_S", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the wsgate binary in WSGATE_BIN");
        wait_ready(&format!("http://127.0.0.1:{port}/ready")).await;
        Node { port, child }
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("a running node")
    }
}

fn config(scenario: ScenarioKind, nodes: &[&Node], redis: &Redis) -> RunConfig {
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
#[ignore = "needs WSGATE_BIN and redis-server"]
async fn a_soak_over_two_nodes_resumes_every_socket_without_a_gap() {
    let redis = Redis::start().await;
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let report = wsgate_loadtest::run(RunConfig {
        sockets: 20,
        rate: 20.0,
        duration: Duration::from_secs(6),
        churn_rate: 8.0,
        away: Duration::from_millis(500),
        rss_every: Duration::from_secs(1),
        server_pids: vec![a.pid(), b.pid()],
        ..config(ScenarioKind::Soak, &[&a, &b], &redis)
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
#[ignore = "needs WSGATE_BIN and redis-server"]
async fn a_storm_moves_every_socket_to_the_other_node_without_a_gap() {
    let redis = Redis::start().await;
    let mut a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let report = wsgate_loadtest::run(RunConfig {
        sockets: 50,
        rate: 50.0,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(15),
        cooldown: Duration::from_millis(500),
        drain_pid: Some(a.pid()),
        server_pids: vec![b.pid()],
        ..config(ScenarioKind::Storm, &[&a, &b], &redis)
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
    let exited = tokio::time::timeout(Duration::from_secs(10), a.child.wait()).await;
    assert!(matches!(exited, Ok(Ok(status)) if status.success()), "{exited:?}");
}
