//! Optional TLS on the listener: HTTPS health and a `wss://` socket with a
//! self-signed certificate the client is told to trust.

mod common;

use std::sync::Arc;

use common::*;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;

/// A node serving TLS with a fresh self-signed certificate for localhost:
/// the process, its address, the certificate and its PEM file. (Node::start
/// waits for /ready over plain HTTP, which a TLS node does not speak: the
/// binary is started directly.)
async fn tls_node() -> (
    tokio::process::Child,
    std::net::SocketAddr,
    rcgen::CertifiedKey<rcgen::KeyPair>,
    std::path::PathBuf,
) {
    let dir = temp_dir("tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let (node, addr) = spawn_bare(&[
        ("WSGATE_LISTEN", "127.0.0.1:0"),
        ("WSGATE_JWT_SECRET", SECRET),
        ("WSGATE_API_KEYS", API_KEY),
        ("WSGATE_LOG", "warn"),
        ("WSGATE_TLS_CERT_FILE", cert_path.to_str().unwrap()),
        ("WSGATE_TLS_KEY_FILE", key_path.to_str().unwrap()),
    ])
    .await;
    (node, addr, certified, cert_path)
}

#[tokio::test]
async fn tls_listener_serves_https_and_wss() {
    let (_node, addr, certified, _cert_path) = tls_node().await;

    let mut roots = RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();

    // HTTPS /health.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // wss:// with a token.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let url = format!("wss://localhost/v1/ws?token={}", token("42", None, &[], 60));
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(text))) => assert!(text.contains("\"welcome\""), "{text}"),
        other => panic!("expected the welcome, got {other:?}"),
    }

    // A plain-text client gets nothing useful from a TLS port.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The handshake fails and the server closes the connection (at most a
    // TLS alert comes back, never an HTTP answer).
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, plain.read_to_end(&mut buf))
        .await
        .expect("the server closes a plain-text connection")
        .ok();
    assert!(!buf.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&buf));
    assert!(buf.len() < 64, "no more than an alert: {} bytes", buf.len());
}

#[tokio::test]
async fn tail_over_wss_and_publish_over_https_trust_a_given_ca_and_refuse_an_unknown_one() {
    let (_node, addr, _certified, cert_path) = tls_node().await;
    let ws_url = format!("wss://localhost:{}/v1/ws", addr.port());
    let api_url = format!("https://localhost:{}", addr.port());
    let cli = || {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsgate"));
        command.env_clear().kill_on_drop(true);
        command
    };

    // Without the CA the certificate is refused.
    let untrusted = cli()
        .args(["tail", "--url", &ws_url])
        .env("WSGATE_TOKEN", token("42", None, &[], 60))
        .output()
        .await
        .unwrap();
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("TLS"),
        "{untrusted:?}"
    );

    let mut tail = cli()
        .args(["tail", "--url", &ws_url, "--ca-file", cert_path.to_str().unwrap()])
        .env("WSGATE_TOKEN", token("42", None, &[], 60))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();

    assert_eq!(next_line(&mut lines).await["type"], "welcome");
    let published = cli()
        .args(["publish", "user:42", "order:updated", r#"{"id":7}"#, "--url", &api_url])
        .args(["--ca-file", cert_path.to_str().unwrap()])
        .env("WSGATE_API_KEY", API_KEY)
        .output()
        .await
        .unwrap();
    assert!(published.status.success(), "{published:?}");
    assert!(
        String::from_utf8_lossy(&published.stdout).contains("\"rooms\":1"),
        "{published:?}"
    );
    let event = next_line(&mut lines).await;
    assert_eq!(
        (event["event"].as_str(), event["data"]["id"].as_u64()),
        (Some("order:updated"), Some(7)),
        "{event}"
    );
}
