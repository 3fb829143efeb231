//! Authentication against the real binary: the three ways to give a token,
//! the welcome, and every refusal (401 before the upgrade, 4001 after it).

mod common;

use common::*;
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn each_token_method_is_accepted_and_welcome_lists_exactly_the_rooms() {
    let node = Node::start(NodeOptions::memory()).await;
    let token = token("42", Some("acme"), &["support", "viewer"], 600);
    for via in [Via::Header, Via::Query, Via::Frame] {
        let client = Client::connect(&node, &token, via).await.expect("accepted");
        assert_eq!(
            client.rooms(),
            ["org:acme", "role:support", "role:viewer", "user:42"],
            "{via:?}"
        );
        assert_eq!(client.welcome["user_id"], "42");
        let exp = client.welcome["expires_at"].as_u64().expect("expires_at");
        assert!(
            exp >= now() + 590 && exp <= now() + 600,
            "expires_at is the token's exp"
        );
        assert!(client.welcome["conn_id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(client.welcome["heartbeat_s"].as_u64().is_some());
    }
}

#[tokio::test]
async fn token_without_org_or_roles_gets_only_its_user_room() {
    let node = Node::start(NodeOptions::memory()).await;
    let client = Client::connect(&node, &token("7", None, &[], 60), Via::Header)
        .await
        .unwrap();
    assert_eq!(client.rooms(), ["user:7"]);
}

/// Tokens every node must refuse, by name.
fn bad_tokens() -> Vec<(&'static str, String)> {
    let base64 = |v: serde_json::Value| {
        use base64_url::encode;
        encode(&v.to_string())
    };
    let exp = now() + 600;
    let wrong_key = jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-0123456789").unwrap();
    vec![
        ("expired", token_with_claims(json!({"sub": "42", "exp": now() - 120}))),
        (
            "wrong signature",
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &json!({"sub": "42", "exp": exp}),
                &wrong_key,
            )
            .unwrap(),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                base64(json!({"alg": "none", "typ": "JWT"})),
                base64(json!({"sub": "42", "exp": exp}))
            ),
        ),
        ("missing sub", token_with_claims(json!({"exp": exp, "org_id": "acme"}))),
        ("missing exp", token_with_claims(json!({"sub": "42"}))),
        ("garbage", "this-is-not-a-jwt".to_string()),
    ]
}

/// A tiny base64url (no padding) so the test can forge headers.
mod base64_url {
    pub fn encode(text: &str) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

#[tokio::test]
async fn bad_tokens_get_401_before_the_upgrade() {
    let node = Node::start(NodeOptions::memory()).await;
    for (name, token) in bad_tokens() {
        for via in [Via::Header, Via::Query] {
            match Client::connect(&node, &token, via).await {
                Err(Refusal::Http(401, body)) => {
                    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
                    assert_eq!(body["error"]["code"], "unauthorized", "{name}");
                    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
                }
                Err(other) => panic!("{name} via {via:?}: expected 401, got {other:?}"),
                Ok(_) => panic!("{name} via {via:?} was accepted"),
            }
        }
    }
    assert!(node.metric("wsgate_auth_failures_total{reason=\"expired\"}").await >= 2.0);
    assert!(
        node.metric("wsgate_auth_failures_total{reason=\"bad_signature\"}")
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn bad_tokens_in_the_first_frame_close_with_4001() {
    let node = Node::start(NodeOptions::memory()).await;
    for (name, token) in bad_tokens() {
        match Client::connect(&node, &token, Via::Frame).await {
            Err(Refusal::Closed(4001, reason)) => assert!(!reason.is_empty(), "{name}: reason given"),
            Err(other) => panic!("{name}: expected close 4001, got {other:?}"),
            Ok(_) => panic!("{name} was accepted"),
        }
    }
    // A frame that is not an auth frame is refused the same way.
    let mut ws = open(&node.ws_url(), &[]).await.unwrap();
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    assert!(matches!(next_frame(&mut ws).await, Frame::Close(4001, _)));
}

#[tokio::test]
async fn no_auth_frame_within_auth_timeout_closes_with_4001() {
    let node = Node::start(NodeOptions::memory().env("WSGATE_AUTH_TIMEOUT_S", 1)).await;
    let mut ws = open(&node.ws_url(), &[]).await.unwrap();
    match next_frame(&mut ws).await {
        Frame::Close(code, reason) => {
            assert_eq!(code, 4001);
            assert!(reason.contains("auth"), "{reason}");
        }
        _ => panic!("expected a close frame"),
    }
    node.wait_metric("wsgate_auth_failures_total{reason=\"timeout\"}", |v| v >= 1.0)
        .await;
}

#[tokio::test]
async fn rs256_public_key_alone_selects_rs256_and_refuses_algorithm_confusion() {
    let public_key = fixture("rsa_public.pem");
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_JWT_SECRET", "")
            .env("WSGATE_JWT_PUBLIC_KEY_FILE", &public_key),
    )
    .await;
    let private = std::fs::read(fixture("rsa_private.pem")).unwrap();
    let rs256 = wsgate::auth::Signer::from_private_pem(&private, Default::default())
        .unwrap()
        .sign(&wsgate::auth::TokenRequest {
            sub: "42".into(),
            ttl_s: 60,
            ..Default::default()
        })
        .unwrap();
    let client = Client::connect(&node, &rs256, Via::Header)
        .await
        .expect("RS256 accepted");
    assert_eq!(client.rooms(), ["user:42"]);

    // HS256 "signed" with the RSA public key as the HMAC secret.
    let public_pem = std::fs::read(&public_key).unwrap();
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "42", "exp": now() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        Client::connect(&node, &confused, Via::Header).await,
        Err(Refusal::Http(401, _))
    ));
    assert!(matches!(
        Client::connect(&node, &confused, Via::Frame).await,
        Err(Refusal::Closed(4001, _))
    ));
    node.wait_metric("wsgate_auth_failures_total{reason=\"algorithm\"}", |v| v >= 2.0)
        .await;
}

#[tokio::test]
async fn es256_public_key_is_accepted() {
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_JWT_SECRET", "")
            .env("WSGATE_JWT_PUBLIC_KEY_FILE", fixture("ec_public.pem")),
    )
    .await;
    let private = std::fs::read(fixture("ec_private.pem")).unwrap();
    let es256 = wsgate::auth::Signer::from_private_pem(&private, Default::default())
        .unwrap()
        .sign(&wsgate::auth::TokenRequest {
            sub: "9".into(),
            ttl_s: 60,
            ..Default::default()
        })
        .unwrap();
    assert!(Client::connect(&node, &es256, Via::Frame).await.is_ok());
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_JWT_ISSUER", "https://auth.example")
            .env("WSGATE_JWT_AUDIENCE", "wsgate"),
    )
    .await;
    let exp = now() + 60;
    let good = token_with_claims(json!({"sub":"1","exp":exp,"iss":"https://auth.example","aud":"wsgate"}));
    let wrong_iss = token_with_claims(json!({"sub":"1","exp":exp,"iss":"https://evil.example","aud":"wsgate"}));
    let wrong_aud = token_with_claims(json!({"sub":"1","exp":exp,"iss":"https://auth.example","aud":"other"}));
    assert!(Client::connect(&node, &good, Via::Header).await.is_ok());
    assert!(matches!(
        Client::connect(&node, &wrong_iss, Via::Header).await,
        Err(Refusal::Http(401, _))
    ));
    assert!(matches!(
        Client::connect(&node, &wrong_aud, Via::Header).await,
        Err(Refusal::Http(401, _))
    ));
    // Leaving the claim out is no way around the check.
    let no_iss = token_with_claims(json!({"sub":"1","exp":exp,"aud":"wsgate"}));
    let no_aud = token_with_claims(json!({"sub":"1","exp":exp,"iss":"https://auth.example"}));
    for (name, token) in [("no iss", no_iss), ("no aud", no_aud)] {
        match Client::connect(&node, &token, Via::Header).await {
            Err(Refusal::Http(401, body)) => assert!(body.contains("claim"), "{name}: {body}"),
            other => panic!("{name}: expected 401, got {:?}", other.map(|c| c.welcome)),
        }
    }
}

#[tokio::test]
async fn socket_is_closed_with_4001_at_exp() {
    let node = Node::start(NodeOptions::memory()).await;
    let mut client = Client::connect(&node, &token("42", None, &[], 2), Via::Header)
        .await
        .unwrap();
    let exp = client.welcome["expires_at"].as_u64().unwrap();
    let (code, reason) = client.closed().await;
    assert_eq!(code, 4001);
    assert!(reason.contains("expired"), "{reason}");
    assert!(now() >= exp, "closed no earlier than exp");
}

/// A validly signed token whose `exp` is past what the clock can hold
/// (≥ 2^63 s) is malformed: refused before anything is registered, on every
/// path, and as a `refresh` it leaves the connection as it was.
#[tokio::test]
async fn an_exp_beyond_the_clock_is_refused_and_registers_nothing() {
    let node = Node::start(NodeOptions::memory()).await;
    let far = token_with_claims(json!({"sub": "far", "exp": 1u64 << 63}));
    let farthest = token_with_claims(json!({"sub": "far", "exp": u64::MAX}));
    for token in [&far, &farthest] {
        match Client::connect(&node, token, Via::Header).await {
            Err(Refusal::Http(401, body)) => assert!(body.contains("malformed"), "{body}"),
            other => panic!("header: {:?}", other.map(|c| c.welcome)),
        }
        match Client::connect(&node, token, Via::Frame).await {
            Err(Refusal::Closed(4001, reason)) => assert!(reason.contains("malformed"), "{reason}"),
            other => panic!("auth frame: {:?}", other.map(|c| c.welcome)),
        }
    }
    let mut client = Client::user(&node, "far", None, &[]).await;
    let reply = client
        .request(json!({"type": "refresh", "token": far, "ref": "r"}))
        .await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("unauthorized"))
    );
    // The connection lives, with its old expiry, and it is the only one.
    let pong = client.request(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(node.metric("wsgate_connections").await, 1.0);
    let listed: Value = node
        .api(reqwest::Method::GET, "/api/v1/connections?user=far")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1), "{listed}");
}

fn request(sub: &str, kid: Option<&str>) -> wsgate::auth::TokenRequest {
    wsgate::auth::TokenRequest {
        sub: sub.into(),
        ttl_s: 60,
        kid: kid.map(String::from),
        ..Default::default()
    }
}

fn signed(private_pem: &str, kid: Option<&str>, sub: &str) -> String {
    let private = std::fs::read(fixture(private_pem)).unwrap();
    wsgate::auth::Signer::from_private_pem(&private, Default::default())
        .unwrap()
        .sign(&request(sub, kid))
        .unwrap()
}

fn hs256(secret: &str, kid: Option<&str>, sub: &str) -> String {
    wsgate::auth::Signer::hs256(secret, Default::default())
        .unwrap()
        .sign(&request(sub, kid))
        .unwrap()
}

async fn assert_accepted(node: &Node, token: &str, what: &str) {
    let client = Client::connect(node, token, Via::Header).await;
    assert!(client.is_ok(), "{what}: {:?}", client.err());
}

async fn assert_refused(node: &Node, token: &str, what: &str) -> String {
    match Client::connect(node, token, Via::Header).await {
        Err(Refusal::Http(401, body)) => body,
        Err(other) => panic!("{what}: expected 401, got {other:?}"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

#[tokio::test]
async fn several_keys_at_once_old_and_new_tokens_are_both_accepted_during_a_rotation() {
    const OLD_SECRET: &str = "the-previous-hs256-secret-0123456789abcdef";
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_JWT_FALLBACK_SECRETS", OLD_SECRET)
            .env(
                "WSGATE_JWT_PUBLIC_KEY_FILES",
                format!("rsa-2026={},{}", fixture("rsa_public.pem"), fixture("ec_public.pem")),
            )
            .env("WSGATE_JWT_ALGORITHMS", "HS256,RS256,ES256"),
    )
    .await;
    assert_accepted(&node, &hs256(SECRET, None, "new"), "HS256, current secret").await;
    assert_accepted(&node, &hs256(OLD_SECRET, None, "old"), "HS256, previous secret").await;
    assert_accepted(
        &node,
        &hs256(OLD_SECRET, Some("whatever"), "old"),
        "HS256, an unknown kid",
    )
    .await;
    let forged = assert_refused(
        &node,
        &hs256("a-secret-nobody-configured-0123456789", None, "x"),
        "HS256 forged",
    )
    .await;
    assert!(forged.contains("signature"), "{forged}");
    assert_accepted(
        &node,
        &signed("rsa_private.pem", Some("rsa-2026"), "r"),
        "RS256 by its kid",
    )
    .await;
    assert_accepted(&node, &signed("rsa_private.pem", None, "r"), "RS256 without a kid").await;
    assert_accepted(&node, &signed("ec_private.pem", None, "e"), "ES256 without a kid").await;
    // A kid names one key: a token of another key under that kid is refused.
    let misnamed = assert_refused(
        &node,
        &signed("ec_private.pem", Some("rsa-2026"), "e"),
        "ES256 under the RSA kid",
    )
    .await;
    assert!(misnamed.contains("algorithm"), "{misnamed}");
}

/// A JWKS endpoint the test controls: the set it serves, whether it is
/// down (503), and how many requests it has answered.
struct Idp {
    url: String,
    set: std::sync::Arc<std::sync::Mutex<Value>>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Idp {
    async fn start(set: Value) -> Idp {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let idp = Idp {
            url: format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap()),
            set: std::sync::Arc::new(std::sync::Mutex::new(set)),
            down: Default::default(),
            requests: Default::default(),
        };
        let (set, down, requests) = (idp.set.clone(), idp.down.clone(), idp.requests.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (set, down, requests) = (set.clone(), down.clone(), requests.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let response = if down.load(Ordering::SeqCst) {
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    } else {
                        let body = set.lock().unwrap().to_string();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                             Connection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        idp
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn jwk(private_pem: &str, algorithm: jsonwebtoken::Algorithm, kid: &str) -> Value {
    let pem = std::fs::read(fixture(private_pem)).unwrap();
    let key = match algorithm {
        jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, algorithm).unwrap();
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).unwrap()
}

#[tokio::test]
async fn jwks_keys_are_fetched_rotated_on_an_unknown_kid_rate_limited_and_kept_while_the_idp_is_down() {
    use jsonwebtoken::Algorithm::{ES256, RS256};
    use std::sync::atomic::Ordering;
    let k1 = jwk("rsa_private.pem", RS256, "k1");
    let k2 = jwk("ec_private.pem", ES256, "k2");
    // The IdP is down when the node starts: the node starts, is not ready,
    // and loads the set once the IdP answers.
    let idp = Idp::start(json!({"keys": [k1]})).await;
    idp.down.store(true, Ordering::SeqCst);
    let up_again = {
        let (down, requests) = (idp.down.clone(), idp.requests.clone());
        tokio::spawn(async move {
            wait_for("the node's first JWKS fetch", || {
                let requests = requests.clone();
                async move { requests.load(Ordering::SeqCst) >= 1 }
            })
            .await;
            down.store(false, Ordering::SeqCst);
        })
    };
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_JWT_SECRET", "")
            .env("WSGATE_JWT_JWKS_URL", &idp.url),
    )
    .await;
    up_again.await.unwrap();
    assert!(idp.requests() >= 2, "ready only after a fetch that succeeded");
    assert_accepted(&node, &signed("rsa_private.pem", Some("k1"), "a"), "k1 from the set").await;
    let hs = assert_refused(&node, &hs256(SECRET, None, "a"), "HS256 with no secret configured").await;
    assert!(hs.contains("algorithm") || hs.contains("key"), "{hs}");

    // The IdP rotates: a token of the new key makes the node refetch once.
    *idp.set.lock().unwrap() = json!({"keys": [k1, k2]});
    let before = idp.requests();
    assert_accepted(
        &node,
        &signed("ec_private.pem", Some("k2"), "b"),
        "k2 after the rotation",
    )
    .await;
    assert_eq!(idp.requests(), before + 1, "one fetch for the unknown kid");

    // A flood of unknown kids: refused, and no fetch storm on the IdP.
    let before = idp.requests();
    for i in 0..30 {
        let body = assert_refused(
            &node,
            &signed("rsa_private.pem", Some(&format!("random-{i}")), "c"),
            "random kid",
        )
        .await;
        assert!(body.contains("key id"), "{body}");
    }
    assert!(
        idp.requests() <= before + 1,
        "{} fetches for 30 unknown kids",
        idp.requests() - before
    );
    node.wait_metric("wsgate_auth_failures_total{reason=\"unknown_key\"}", |v| v == 30.0)
        .await;

    // The IdP goes down and the node fetches meanwhile (an unknown kid once
    // the rate limit allows, within 10 s): the fetch fails, the cached set
    // still verifies, and /ready stays 200.
    idp.down.store(true, Ordering::SeqCst);
    let before = idp.requests();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while idp.requests() == before {
        assert!(std::time::Instant::now() < deadline, "no fetch while the IdP was down");
        let _ = Client::connect(&node, &signed("rsa_private.pem", Some("probe"), "p"), Via::Header).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    node.wait_metric("wsgate_jwks_refreshes_total{result=\"error\"}", |v| v >= 2.0)
        .await;
    assert_accepted(
        &node,
        &signed("ec_private.pem", Some("k2"), "d"),
        "k2 with the IdP down",
    )
    .await;
    assert_accepted(
        &node,
        &signed("rsa_private.pem", Some("k1"), "d"),
        "k1 with the IdP down",
    )
    .await;
    assert_eq!(node.status("/ready").await, 200);
}

#[tokio::test]
async fn a_key_set_cannot_smuggle_in_a_shared_secret_or_a_malformed_key() {
    use jsonwebtoken::Algorithm::RS256;
    let k1 = jwk("rsa_private.pem", RS256, "k1");
    let shared = "a-secret-published-in-a-key-set-0123456789";
    let oct = json!({"kty": "oct", "kid": "oct", "k": base64url(shared.as_bytes())});
    let short_okp = json!({"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": base64url(b"abc")});
    let x25519 = json!({"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": base64url(&[7u8; 32])});
    let idp = Idp::start(json!({"keys": [k1, oct, short_okp, x25519]})).await;
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_JWT_JWKS_URL", &idp.url)
            .env("WSGATE_JWT_ALGORITHMS", "HS256,RS256,EdDSA"),
    )
    .await;
    assert_accepted(
        &node,
        &signed("rsa_private.pem", Some("k1"), "a"),
        "the RSA key of the set",
    )
    .await;
    // HS256 under the set's `oct` kid: refused, though HS256 is allowed.
    assert_refused(
        &node,
        &hs256(shared, Some("oct"), "forged"),
        "HS256 with the published secret",
    )
    .await;
    assert_refused(
        &node,
        &hs256(shared, None, "forged"),
        "HS256 with the published secret, no kid",
    )
    .await;
    // EdDSA tokens for the malformed keys are refused, and the node lives.
    let ed = std::fs::read(fixture("ed_private.pem")).unwrap();
    for kid in ["short", "x25519"] {
        let token = wsgate::auth::Signer::from_private_pem(&ed, Default::default())
            .unwrap()
            .sign(&request("e", Some(kid)))
            .unwrap();
        assert_refused(&node, &token, kid).await;
    }
    assert_accepted(
        &node,
        &signed("rsa_private.pem", Some("k1"), "b"),
        "the node still serves",
    )
    .await;
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn keys_on_different_curves_are_each_tried_during_a_rotation() {
    let dir = temp_dir("curves");
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let p384_public = dir.join("p384.pem");
    std::fs::write(&p384_public, p384.public_key_pem()).unwrap();
    let node = Node::start(
        NodeOptions::memory()
            .env("WSGATE_JWT_SECRET", "")
            .env("WSGATE_JWT_PUBLIC_KEY_FILE", fixture("ec_public.pem"))
            .env("WSGATE_JWT_PUBLIC_KEY_FILES", p384_public.display())
            .env("WSGATE_JWT_ALGORITHMS", "ES256,ES384"),
    )
    .await;
    assert_accepted(&node, &signed("ec_private.pem", None, "old"), "ES256, the P-256 key").await;
    let es384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384),
        &json!({"sub": "new", "exp": now() + 60}),
        &jsonwebtoken::EncodingKey::from_ec_pem(p384.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_accepted(&node, &es384, "ES384 without a kid, the P-384 key").await;
}
