//! Optional TLS on the listener (rustls): `tls.cert_file` and `tls.key_file`
//! in PEM. Most deployments terminate TLS at the load balancer instead.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

#[derive(Clone)]
pub struct TlsAcceptor(tokio_rustls::TlsAcceptor);

impl TlsAcceptor {
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<Self, String> {
        let certs = CertificateDer::pem_file_iter(cert_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read certificates from {}: {e}", cert_file.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate in {}", cert_file.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| format!("cannot read the private key from {}: {e}", key_file.display()))?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("invalid certificate or key: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    /// The TLS handshake, bounded by the handshake timeout.
    pub async fn accept(&self, stream: TcpStream, timeout_s: u64) -> Result<TlsStream<TcpStream>, String> {
        match tokio::time::timeout(Duration::from_secs(timeout_s), self.0.accept(stream)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("TLS handshake timed out".into()),
        }
    }
}
