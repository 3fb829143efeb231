//! What the node serves to browsers: `/v1/client.js` with its ETag, and the
//! dev-only demo page and `/dev/token`, which any other config answers 404.
//! (The client's behaviour is tested in Chromium: clients/js/test.)

mod common;

use common::*;
use serde_json::Value;

/// A node on `config/dev.toml` (the dev secret, no other key), on a free port.
async fn dev_node() -> (tokio::process::Child, String) {
    let repo = env!("CARGO_MANIFEST_DIR");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .arg("--config")
        .arg(format!("{repo}/config/dev.toml"))
        .env_clear()
        .env("WSGATE_LISTEN", "127.0.0.1:0")
        .env("WSGATE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wsgate");
    let addr = listen_addr(&mut child).await;
    (child, format!("http://{addr}"))
}

#[tokio::test]
async fn client_js_is_served_with_an_etag_and_revalidates_to_304() {
    let node = Node::start(NodeOptions::memory()).await;
    let http = reqwest::Client::new();
    let response = http.get(node.http_url("/v1/client.js")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    let etag = headers["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "a strong tag: {etag}");
    let body = response.text().await.unwrap();
    assert_eq!(
        body,
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js/wsgate.js")).unwrap(),
        "the node serves clients/js/wsgate.js as it was built"
    );

    for tag in [etag.clone(), format!("\"other\", W/{etag}"), "*".into()] {
        let again = http
            .get(node.http_url("/v1/client.js"))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "If-None-Match: {tag}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.text().await.unwrap().is_empty());
    }
    let stale = http
        .get(node.http_url("/v1/client.js"))
        .header("if-none-match", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    let post = http.post(node.http_url("/v1/client.js")).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test]
async fn demo_page_and_dev_token_are_404_without_the_dev_config() {
    let node = Node::start(NodeOptions::memory()).await;
    for path in ["/", "/dev/token?sub=42"] {
        let response = reqwest::get(node.http_url(path)).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn dev_config_serves_the_demo_page_and_mints_working_tokens() {
    let (_child, base) = dev_node().await;
    wait_for("dev node ready", || async {
        reqwest::get(format!("{base}/ready"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains(r#"from "/v1/client.js""#));

    let minted: Value = reqwest::get(format!("{base}/dev/token?sub=42&org=acme&role=support,viewer&ttl=60"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(minted["expires_in"], 60);
    let token = minted["token"].as_str().expect("a token");
    let ws = base.replacen("http://", "ws://", 1) + "/v1/ws";
    let client = Client::connect_url(&ws, token, Via::Frame)
        .await
        .expect("the minted token works");
    let mut rooms: Vec<&str> = client.welcome["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    rooms.sort();
    assert_eq!(rooms, ["org:acme", "role:support", "role:viewer", "user:42"]);
    let expires_in = client.welcome["expires_at"].as_u64().unwrap() - now();
    assert!((55..=60).contains(&expires_in), "ttl honoured: {expires_in}");

    for (query, message) in [
        ("org=acme", "sub is required"),
        ("sub=42&ttl=0", "ttl must be"),
        ("sub=42&ttl=86401", "ttl must be"),
        ("sub=42&ttl=soon", "ttl must be"),
    ] {
        let response = reqwest::get(format!("{base}/dev/token?{query}")).await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(message),
            "{query}: {body}"
        );
    }
}
