//! The command line: `wsgate token`, `wsgate tail`, running from the
//! environment alone, and refusing to start on an unsafe configuration.

mod common;

use common::*;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn cli_token_command_mints_a_token_the_node_accepts() {
    let node = Node::start(NodeOptions::memory()).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args([
            "token", "--sub", "42", "--org", "acme", "--role", "support", "--ttl", "60",
        ])
        .env_clear()
        .env("WSGATE_JWT_SECRET", SECRET)
        .output()
        .expect("run wsgate token");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap();
    let client = Client::connect(&node, token.trim(), Via::Query)
        .await
        .expect("accepted");
    assert_eq!(client.rooms(), ["org:acme", "role:support", "user:42"]);
}

#[tokio::test]
async fn node_refuses_to_start_without_a_key_and_dev_config_refuses_public_addresses() {
    let no_key = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .env_clear()
        .env("WSGATE_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(no_key.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("WSGATE_JWT_SECRET"));

    let dev_public = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev.toml"),
            "--listen",
            "0.0.0.0:0",
        ])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(dev_public.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&dev_public.stderr).contains("loopback"));
}

#[test]
fn a_short_hs256_secret_and_a_token_ttl_out_of_range_are_refused_with_exit_64() {
    let short = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .env_clear()
        .env("WSGATE_LISTEN", "127.0.0.1:0")
        .env("WSGATE_JWT_SECRET", "only-thirty-one-bytes-long-0123")
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(stderr.contains("jwt.secret") && stderr.contains("32 bytes"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let mint = |ttl: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(["token", "--sub", "42", "--ttl", ttl])
            .env_clear()
            .env("WSGATE_JWT_SECRET", SECRET)
            .output()
            .unwrap()
    };
    for ttl in ["0", "315360001", "18446744073709551615"] {
        let out = mint(ttl);
        assert_eq!(out.status.code(), Some(64), "--ttl {ttl}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--ttl must be"),
            "--ttl {ttl}"
        );
        assert!(out.stdout.is_empty(), "no token for --ttl {ttl}");
    }
    let negative = mint("-5");
    assert!(!negative.status.success(), "a negative --ttl is refused");
    assert!(negative.stdout.is_empty());
    assert!(mint("1").status.success());
}

#[tokio::test]
async fn environment_alone_runs_the_node() {
    // No config file, no subcommand: WSGATE_LISTEN and WSGATE_JWT_SECRET suffice.
    let (_node, addr) = spawn_bare(&[
        ("WSGATE_LISTEN", "127.0.0.1:0"),
        ("WSGATE_JWT_SECRET", SECRET),
        ("WSGATE_LOG", "warn"),
    ])
    .await;
    let url = format!("ws://{addr}/v1/ws");
    let client = Client::connect_url(&url, &token("5", None, &[], 60), Via::Header)
        .await
        .unwrap();
    assert_eq!(client.rooms(), ["user:5"]);
}

#[tokio::test]
async fn tail_prints_the_welcome_and_events() {
    let node = Node::start(NodeOptions::memory()).await;
    let (_tail, mut lines) = spawn_tail(&node, &["--subscribe", "orders:7"]);
    assert_eq!(next_line(&mut lines).await["type"], "welcome");
    assert_eq!(next_line(&mut lines).await["type"], "ack", "subscribed to orders:7");
    node.publish("orders:7", "order:shipped", json!({"id": 7})).await;
    let event = next_line(&mut lines).await;
    assert_eq!(event["event"], "order:shipped");
    assert_eq!(event["data"]["id"], 7);
}

#[tokio::test]
async fn tokens_never_reach_the_log_even_at_trace_level() {
    let log = temp_dir("log").join("wsgate.log");
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_LOG", "trace")
            .env("WSGATE_LOG_FORMAT", "json")
            .log_to(&log),
    )
    .await;
    let tokens: Vec<String> = (0..3).map(|i| token(&format!("u{i}"), None, &[], 60)).collect();
    let mut by_header = Client::connect(&node, &tokens[0], Via::Header).await.unwrap();
    let _by_query = Client::connect(&node, &tokens[1], Via::Query).await.unwrap();
    let _by_frame = Client::connect(&node, &tokens[2], Via::Frame).await.unwrap();
    let refresh = token("u0", None, &[], 600);
    let reply = by_header.request(json!({"type": "refresh", "token": refresh})).await;
    assert_eq!(reply["type"], "ack");
    let bad = format!("{}x", tokens[0]);
    assert!(Client::connect(&node, &bad, Via::Query).await.is_err());
    drop(by_header);
    node.wait_metric("wsgate_connections", |v| v == 2.0).await;
    drop(node);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("conn_id"), "the log has session lines at trace level");
    for secret in tokens.iter().chain([&refresh, &bad]) {
        // The signature part is what makes a token usable.
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "a token leaked into the log");
    }
}

/// `wsgate tail` with these extra arguments; its stdout lines as JSON.
fn spawn_tail(
    node: &Node,
    extra: &[&str],
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args([
            "tail",
            "--url",
            &node.ws_url(),
            "--token",
            &token("42", None, &["viewer"], 60),
        ])
        .args(extra)
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    (tail, lines)
}

#[tokio::test]
async fn tail_prints_offsets_and_resumes_with_since() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_HISTORY_NAMESPACES", "orders")).await;
    let (first, mut lines) = spawn_tail(&node, &["--subscribe", "orders:7"]);
    assert_eq!(next_line(&mut lines).await["type"], "welcome");
    let ack = next_line(&mut lines).await;
    assert_eq!(ack["position"]["offset"], 0, "{ack}");
    let epoch = ack["position"]["epoch"].as_str().unwrap().to_string();
    node.publish("orders:7", "a", json!(1)).await;
    node.publish("orders:7", "b", json!(2)).await;
    assert_eq!(next_line(&mut lines).await["offset"], 1);
    assert_eq!(next_line(&mut lines).await["offset"], 2);
    drop(first);

    let since = format!("orders:7={}:{epoch}", 1);
    let (_second, mut lines) = spawn_tail(&node, &["--subscribe", "orders:7", "--since", &since]);
    assert_eq!(next_line(&mut lines).await["type"], "welcome");
    let ack = next_line(&mut lines).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    let event = next_line(&mut lines).await;
    assert_eq!(
        (event["event"].as_str(), event["offset"].as_u64()),
        (Some("b"), Some(2)),
        "{event}"
    );
}

#[tokio::test]
async fn json_log_mode_writes_only_json_lines_and_text_mode_no_colour_codes() {
    use tokio::io::AsyncReadExt;
    for format in ["json", "text"] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .env_clear()
            .env("WSGATE_LISTEN", "127.0.0.1:0")
            .env("WSGATE_JWT_SECRET", SECRET)
            .env("WSGATE_LOG", "debug")
            .env("WSGATE_LOG_FORMAT", format)
            .env("WSGATE_DRAIN_S", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(PATIENCE, stdout.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let addr = if format == "json" {
            let line: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
            line["addr"].as_str().unwrap().trim_start_matches("http://").to_string()
        } else {
            first.trim_start_matches("wsgate listening on http://").to_string()
        };
        // Something to log: a refused and an accepted connection.
        let ws = format!("ws://{addr}/v1/ws");
        let _ = Client::connect_url(&ws, "bad", Via::Header).await;
        let client = Client::connect_url(&ws, &token("42", None, &[], 60), Via::Frame)
            .await
            .unwrap();
        drop(client);
        let _ = std::process::Command::new("kill")
            .arg(child.id().unwrap().to_string())
            .status();
        let _ = tokio::time::timeout(PATIENCE, child.wait()).await;
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
        let mut rest = Vec::new();
        while let Ok(Some(line)) = stdout.next_line().await {
            rest.push(line);
        }
        assert!(stderr.lines().count() > 3, "{format}: something was logged: {stderr}");
        for line in stderr.lines().chain(rest.iter().map(String::as_str)) {
            assert!(!line.contains('\u{1b}'), "{format}: no ANSI codes: {line:?}");
            if format == "json" {
                let value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(value.get("spans").is_none(), "no repeated span list: {line}");
            }
        }
    }
}

#[tokio::test]
async fn secrets_can_come_from_files_and_a_bad_file_is_refused_naming_its_variable() {
    let redis = Redis::start().await;
    let dir = temp_dir("secrets");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let jwt = write("jwt-secret", &format!("{SECRET}\n"));
    let api = write(
        "api-keys",
        "first-file-api-key-0123456789\nsecond-file-api-key-0123456789\n",
    );
    let url = write("redis-url", &format!("{}\n", redis.url()));
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_JWT_SECRET", "")
            .env("WSGATE_JWT_SECRET_FILE", &jwt)
            .env("WSGATE_API_KEYS", "")
            .env("WSGATE_API_KEYS_FILE", &api)
            .env("WSGATE_REDIS_URL_FILE", &url),
    )
    .await;
    let mut client = Client::user(&node, "42", None, &[]).await;
    let ready: serde_json::Value = reqwest::get(node.http_url("/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["broker"], "redis", "{ready}");
    let status = reqwest::Client::new()
        .post(node.http_url("/api/v1/publish"))
        .header("authorization", "Bearer second-file-api-key-0123456789")
        .json(&json!({"rooms": ["user:42"], "event": "from-file-key"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    assert_eq!(client.recv_type("event").await["event"], "from-file-key");

    for (env, setting) in [
        (
            vec![("WSGATE_JWT_SECRET_FILE", "/nonexistent/jwt-secret")],
            "WSGATE_JWT_SECRET_FILE",
        ),
        (
            vec![("WSGATE_JWT_SECRET", SECRET), ("WSGATE_JWT_SECRET_FILE", jwt.as_str())],
            "not both",
        ),
        (
            vec![
                ("WSGATE_JWT_SECRET", SECRET),
                ("WSGATE_REDIS_URL_FILE", "/nonexistent/url"),
            ],
            "WSGATE_REDIS_URL_FILE",
        ),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .env_clear()
            .env("WSGATE_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(setting), "{env:?}: {stderr}");
        assert!(!stderr.contains(SECRET), "the secret is never printed: {stderr}");
    }
}

/// Run the binary to its end, killed after [`PATIENCE`] (a node that should
/// have refused to start must not hang the test).
fn wsgate(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    use std::process::Stdio;
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(PATIENCE);
        let _ = std::process::Command::new("kill").arg(id.to_string()).status();
    });
    let output = child.wait_with_output().unwrap();
    drop(watchdog);
    output
}

#[test]
fn check_config_prints_the_effective_settings_with_secrets_redacted_and_refuses_what_serve_would() {
    let ok = wsgate(
        &["check-config"],
        &[
            ("WSGATE_JWT_SECRET", SECRET),
            ("WSGATE_API_KEYS", API_KEY),
            ("WSGATE_REDIS_URL", "redis://:hunter2-password@127.0.0.1:6379"),
            ("WSGATE_MAX_PENDING_AUTH", "77"),
        ],
    );
    assert!(ok.status.success(), "{ok:?}");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    let effective: toml::Value = toml::from_str(&stdout).expect("the settings print as TOML");
    assert_eq!(effective["limits"]["max_pending_auth"].as_integer(), Some(77));
    assert_eq!(effective["jwt"]["secret"].as_str(), Some("<redacted>"));
    assert_eq!(effective["redis"]["url"].as_str(), Some("<redacted>"));
    for secret in [SECRET, API_KEY, "hunter2-password"] {
        assert!(!stdout.contains(secret), "a secret was printed");
    }
    for (env, says) in [
        (vec![("WSGATE_JWT_PUBLIC_KEY_FILE", "/nonexistent.pem")], "jwt"),
        (
            vec![
                ("WSGATE_JWT_SECRET", SECRET),
                ("WSGATE_TLS_CERT_FILE", "/no/cert.pem"),
                ("WSGATE_TLS_KEY_FILE", "/no/key.pem"),
            ],
            "tls",
        ),
        (
            vec![("WSGATE_JWT_SECRET", SECRET), ("WSGATE_HEARTBEAT_S", "0")],
            "ws.heartbeat_s",
        ),
    ] {
        let refused = wsgate(&["check-config"], &env);
        assert_eq!(refused.status.code(), Some(64), "{env:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains(says),
            "{env:?}: {refused:?}"
        );
    }
}

#[test]
fn subcommands_offer_only_the_flags_they_read() {
    for args in [
        &["tail", "--listen", "127.0.0.1:1", "--token", "t"][..],
        &["tail", "--config", "x.toml", "--token", "t"],
        &["publish", "user:1", "e", "--redis-url", "redis://x"],
        &["--config", "config/dev.toml", "token", "--sub", "1"],
        &["token", "--sub", "1", "--listen", "127.0.0.1:1"],
    ] {
        let out = wsgate(args, &[]);
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("unexpected argument") || stderr.contains("cannot be used"),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn publish_goes_through_the_api_and_prints_refusals() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut client = Client::user(&node, "42", None, &[]).await;
    let url = node.http_url("");
    let key_file = temp_dir("key").join("api-key");
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    let key_file = key_file.to_str().unwrap();
    let ok = wsgate(
        &[
            "publish",
            "user:42",
            "order:updated",
            r#"{"id":7}"#,
            "--url",
            &url,
            "--api-key-file",
            key_file,
            "--id",
            "9-0",
        ],
        &[],
    );
    assert!(ok.status.success(), "{ok:?}");
    let event = client.recv_type("event").await;
    assert_eq!(
        (event["data"]["id"].as_u64(), event["id"].as_str()),
        (Some(7), Some("9-0")),
        "{event}"
    );

    let wrong_key = wsgate(
        &["publish", "user:42", "e", "--url", &url],
        &[("WSGATE_API_KEY", "not-the-key-0123456789")],
    );
    assert_eq!(wrong_key.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&wrong_key.stderr).contains("HTTP 401"),
        "{wrong_key:?}"
    );
    let bad_room = wsgate(
        &["publish", "no spaces", "e", "--url", &url],
        &[("WSGATE_API_KEY", API_KEY)],
    );
    assert_eq!(bad_room.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad_room.stderr).contains("HTTP 400"),
        "{bad_room:?}"
    );
    let bad_data = wsgate(
        &["publish", "user:42", "e", "{not json", "--url", &url],
        &[("WSGATE_API_KEY", API_KEY)],
    );
    assert_eq!(bad_data.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&bad_data.stderr).contains("DATA must be JSON"),
        "{bad_data:?}"
    );
    let no_key = wsgate(&["publish", "user:42", "e", "--url", &url], &[]);
    assert_eq!(no_key.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&no_key.stderr).contains("WSGATE_API_KEY"),
        "{no_key:?}"
    );
}

#[tokio::test]
async fn tail_reads_its_token_from_a_file_and_prints_why_an_upgrade_was_refused() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_MAX_PENDING_AUTH", 1)).await;
    let token_file = temp_dir("token").join("token");
    std::fs::write(&token_file, format!("{}\n", token("42", None, &[], 60))).unwrap();
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args([
            "tail",
            "--url",
            &node.ws_url(),
            "--token-file",
            token_file.to_str().unwrap(),
        ])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await["type"], "welcome");
    // The one pending-auth place taken: the next tail is refused, and says why.
    let _pending = open(&node.ws_url(), &[]).await.unwrap();
    let refused = wsgate(&["tail", "--url", &node.ws_url(), "--token", "x"], &[]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("HTTP 503") && stderr.contains("auth frame"), "{stderr}");
}

/// Every failure that comes from the configuration stops `serve` before it
/// listens, with exit 64 and one line that names the setting.
#[test]
fn every_config_derived_failure_exits_64_naming_the_setting() {
    let dir = temp_dir("bad-config");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "this is not a key").unwrap();
    let bad_roles = dir.join("roles.toml");
    std::fs::write(&bad_roles, "[permissions.roles]\nadmin = [\"orders\"]\n").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    let bad_roles = bad_roles.to_str().unwrap();
    type Case<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 7] = [
        (&[], vec![("WSGATE_JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem")], "jwt"),
        (&[], vec![("WSGATE_JWT_PUBLIC_KEY_FILE", not_pem)], "not a PEM"),
        (
            &[],
            vec![("WSGATE_JWT_SECRET", SECRET), ("WSGATE_JWT_ALGORITHMS", "HS999")],
            "jwt.algorithms",
        ),
        (
            &[],
            vec![("WSGATE_JWT_SECRET", SECRET), ("WSGATE_JWT_ALGORITHMS", "RS256")],
            "RS256",
        ),
        (
            &["--config", bad_roles],
            vec![("WSGATE_JWT_SECRET", SECRET)],
            "permissions.roles",
        ),
        (
            &[],
            vec![("WSGATE_JWT_SECRET", SECRET), ("WSGATE_REDIS_URL", "http://not-redis")],
            "redis.url",
        ),
        (
            &[],
            vec![
                ("WSGATE_JWT_SECRET", SECRET),
                ("WSGATE_TLS_CERT_FILE", not_pem),
                ("WSGATE_TLS_KEY_FILE", not_pem),
            ],
            "tls",
        ),
    ];
    for (args, env, setting) in cases {
        let mut env = env;
        env.push(("WSGATE_LISTEN", "127.0.0.1:0"));
        let out = wsgate(args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{env:?}: {stderr}");
        assert!(stderr.contains(setting), "{env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "it never listened"
        );
    }
}
