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

#[tokio::test]
async fn tls_listener_serves_https_and_wss() {
    let dir = temp_dir("tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    // Node::start waits for /ready over plain HTTP, which a TLS node does not
    // speak; start the binary directly and read its address.
    let (_node, addr) = spawn_bare(&[
        ("WSGATE_LISTEN", "127.0.0.1:0"),
        ("WSGATE_JWT_SECRET", SECRET),
        ("WSGATE_LOG", "warn"),
        ("WSGATE_TLS_CERT_FILE", cert_path.to_str().unwrap()),
        ("WSGATE_TLS_KEY_FILE", key_path.to_str().unwrap()),
    ])
    .await;

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
