//! Smoke check of a running peer-broadcaster:
//!
//! ```sh
//! LISTEN=127.0.0.1:9001 REDIS_URL=redis://127.0.0.1:6379 JWT_SECRET=secret \
//!     cargo run -p peer-broadcaster --example smoke
//! ```
//!
//! Prints every frame it checks and `smoke: ok` when all passed.

use std::time::Duration;

use fred::prelude::*;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn check(ok: bool, what: &str) {
    assert!(ok, "FAILED: {what}");
    println!("  ok: {what}");
}

fn token(secret: &str, claims: Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("secret");
    jsonwebtoken::encode(&Header::default(), &claims, &key).expect("sign")
}

async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                println!("< {}", text.as_str());
                return Some(text.as_str().to_owned());
            }
            Ok(Some(Ok(Message::Pong(_)))) => println!("< (pong)"),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:9001".into());
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let secret = std::env::var("JWT_SECRET").unwrap_or_else(|_| "secret".into());
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    let url = |t: &str| format!("ws://{listen}/?token={t}");

    let redis = Builder::from_config(Config::from_url(&redis_url)?).build()?;
    redis.init().await?;
    let publish = |channel: &'static str, payload: String| {
        let redis = redis.clone();
        async move { redis.publish::<i64, _, _>(channel, payload).await.expect("publish") }
    };

    // Refusals before the upgrade: HTTP 401 with a JSON error body.
    let wrong = token("other-secret", json!({"sub": "42", "exp": exp}));
    let expired = token(&secret, json!({"sub": "42", "exp": exp - 7200}));
    for (what, t) in [
        ("wrong secret", wrong.as_str()),
        ("expired", expired.as_str()),
        ("missing", ""),
    ] {
        let refused = tokio_tungstenite::connect_async(url(t)).await;
        let status = match &refused {
            Err(WsError::Http(response)) => response.status().as_u16(),
            _ => 0,
        };
        check(status == 401, &format!("{what} token refused with HTTP 401"));
    }

    // Welcome.
    let claims = json!({"sub": 42, "org_id": "acme", "roles": ["support", "viewer"], "exp": exp});
    let (mut ws, _) = tokio_tungstenite::connect_async(url(&token(&secret, claims))).await?;
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await.expect("welcome"))?;
    check(
        welcome["type"] == "welcome" && welcome["user_id"] == "42",
        "welcome for user 42",
    );
    check(
        welcome["rooms"] == json!(["user:42", "org:acme", "role:support", "role:viewer"]),
        "rooms user:42, org:acme, role:support, role:viewer",
    );
    check(
        welcome["expires_at"] == exp && welcome["heartbeat_s"] == 25,
        "expires_at = exp, heartbeat_s 25",
    );
    check(welcome["conn_id"].is_string(), "conn_id is a string");

    // A second socket in the same org.
    let other = json!({"sub": "7", "org_id": "acme", "exp": exp});
    let (mut ws2, _) = tokio_tungstenite::connect_async(url(&token(&secret, other))).await?;
    next_text(&mut ws2).await.expect("welcome 2");

    // Events, as frames.
    let cases = [
        (
            "gw:user:42",
            r#"{"event":"e","data":{"x":1}}"#,
            r#"{"type":"event","room":"user:42","event":"e","data":{"x":1}}"#,
        ),
        (
            "gw:role:viewer",
            r#"{"event":"s","data":[1, "two" ,null]}"#,
            r#"{"type":"event","room":"role:viewer","event":"s","data":[1, "two" ,null]}"#,
        ),
        (
            "gw:user:42",
            r#"{"event":"nodata","id":"1-0"}"#,
            r#"{"type":"event","room":"user:42","event":"nodata","data":null}"#,
        ),
    ];
    for (channel, payload, want) in cases {
        publish(channel, payload.into()).await;
        check(
            next_text(&mut ws).await.as_deref() == Some(want),
            &format!("{channel} arrives as {want}"),
        );
    }
    publish("gw:org:acme", r#"{"event":"org","data":true}"#.into()).await;
    let want = r#"{"type":"event","room":"org:acme","event":"org","data":true}"#;
    check(
        next_text(&mut ws).await.as_deref() == Some(want),
        "org:acme reaches socket 1",
    );
    check(
        next_text(&mut ws2).await.as_deref() == Some(want),
        "org:acme reaches socket 2",
    );

    // Foreign rooms and invalid payloads are skipped.
    for (channel, payload) in [
        ("gw:user:43", r#"{"event":"not-mine"}"#),
        ("gw:user:42", "{not json"),
        ("gw:user:42", r#"{"data":1}"#),
        ("gw:user:42", r#"{"event":5}"#),
        ("gw:user:42", r#"{"event":"after","data":1}"#),
    ] {
        publish(channel, payload.into()).await;
    }
    let want = r#"{"type":"event","room":"user:42","event":"after","data":1}"#;
    check(
        next_text(&mut ws).await.as_deref() == Some(want),
        "skipped the rest; next event arrives",
    );

    // A burst arrives whole and in order.
    for i in 0..1000 {
        redis
            .publish::<i64, _, _>("gw:user:42", format!(r#"{{"event":"b","data":{i}}}"#))
            .await?;
    }
    let mut in_order = true;
    for i in 0..1000 {
        let want = format!(r#"{{"type":"event","room":"user:42","event":"b","data":{i}}}"#);
        let got = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
        in_order &= matches!(got, Ok(Some(Ok(Message::Text(t)))) if t.as_str() == want);
    }
    check(in_order, "burst of 1000 events arrives whole and in order");

    // WebSocket ping is answered.
    ws.send(Message::Ping("p".into())).await?;
    let pong = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    check(
        matches!(pong, Ok(Some(Ok(Message::Pong(_))))),
        "WebSocket ping answered with pong",
    );

    ws.close(None).await?;
    ws2.close(None).await?;
    redis.quit().await?;
    println!("smoke: ok");
    Ok(())
}
