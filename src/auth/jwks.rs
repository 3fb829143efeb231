//! The keys of `jwt.jwks_url`: fetched at start, refreshed every
//! `jwt.jwks_refresh_s` and when a token names a `kid` the set lacks, with
//! the last good set kept while the IdP is down (docs/PROTOCOL.md §8).
//!
//! A token with an unknown `kid` costs the IdP at most one request per
//! [`MIN_REFETCH`]: a flood of random `kid`s waits behind one fetch and
//! then finds the key still unknown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::Jwk;

use super::keys::{KeyPolicy, VerifyingKey};
use crate::metrics::Metrics;

/// The least time between two fetches prompted by unknown `kid`s.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// How long one fetch may take, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest key set read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Retry interval while no set has ever loaded.
const RETRY_UNLOADED: Duration = Duration::from_secs(5);
/// The most keys taken from a set: a token without a `kid` is tried
/// against each key of its type, and a handshake must stay cheap.
const MAX_KEYS: usize = 64;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

#[derive(serde::Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

pub struct Jwks {
    url: hyper::Uri,
    client: HttpsClient,
    policy: KeyPolicy,
    keys: RwLock<Arc<Vec<VerifyingKey>>>,
    loaded: AtomicBool,
    /// When the last fetch prompted by an unknown `kid` began; held across
    /// every fetch, so that concurrent callers wait for the one running.
    last_prompted: tokio::sync::Mutex<Option<Instant>>,
    /// Fetches finished, successful or not: a caller that waited for the
    /// lock while one ran uses its result instead of fetching again.
    fetches: std::sync::atomic::AtomicU64,
    refresh_every: Duration,
}

impl Jwks {
    pub fn new(url: &str, policy: KeyPolicy, refresh_every: Duration) -> Result<Self, String> {
        let url: hyper::Uri = url.parse().map_err(|_| format!("jwt.jwks_url: '{url}' is not a URL"))?;
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(tokio_rustls::rustls::crypto::ring::default_provider())
            .map_err(|e| format!("jwt.jwks_url: TLS setup failed: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            url,
            client: Client::builder(TokioExecutor::new()).build(tls),
            policy,
            keys: RwLock::new(Arc::new(Vec::new())),
            loaded: AtomicBool::new(false),
            last_prompted: tokio::sync::Mutex::new(None),
            fetches: std::sync::atomic::AtomicU64::new(0),
            refresh_every,
        })
    }

    /// The current set (empty until the first fetch succeeds).
    pub fn keys(&self) -> Arc<Vec<VerifyingKey>> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a set has loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// A token named an unknown `kid`: fetch now, unless such a fetch began
    /// less than [`MIN_REFETCH`] ago. A caller arriving while a fetch runs
    /// waits for it.
    /// Bounded by [`FETCH_TIMEOUT`] in all, waiting included.
    pub async fn refresh_soon(&self) {
        let _ = tokio::time::timeout(FETCH_TIMEOUT, async {
            let seen = self.fetches.load(Ordering::Acquire);
            let mut last = self.last_prompted.lock().await;
            if self.fetches.load(Ordering::Acquire) != seen || last.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
                return;
            }
            *last = Some(Instant::now());
            self.fetch_and_swap().await;
        })
        .await;
    }

    /// Fetch now (at start and on the timer).
    pub async fn refresh(&self) {
        let _running = self.last_prompted.lock().await;
        self.fetch_and_swap().await;
    }

    /// Refresh on the timer for as long as the node runs.
    pub fn spawn_refresh(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                let wait = if self.is_loaded() {
                    self.refresh_every
                } else {
                    RETRY_UNLOADED
                };
                tokio::time::sleep(wait).await;
                self.refresh().await;
            }
        });
    }

    async fn fetch_and_swap(&self) {
        let result = tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await;
        self.fetches.fetch_add(1, Ordering::Release);
        match result {
            Ok(Ok(keys)) => {
                tracing::info!(keys = keys.len(), url = %self.url, "JWKS loaded");
                match self.keys.write() {
                    Ok(mut slot) => *slot = Arc::new(keys),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
                }
                self.loaded.store(true, Ordering::Relaxed);
                Metrics::jwks_refresh("ok");
            }
            Ok(Err(error)) => {
                tracing::warn!(url = %self.url, %error, "JWKS fetch failed: keeping the last good set");
                Metrics::jwks_refresh("error");
            }
            Err(_) => {
                tracing::warn!(url = %self.url, "JWKS fetch timed out: keeping the last good set");
                Metrics::jwks_refresh("error");
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<VerifyingKey>, String> {
        let request = hyper::Request::get(self.url.clone())
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the key set: {e}"))?
            .to_bytes();
        // Each key on its own: one key of a type this library does not know
        // must not cost the set.
        let set: RawSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut keys: Vec<VerifyingKey> = set
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| self.policy.key_of_jwk(&jwk))
            .collect();
        if keys.len() > MAX_KEYS {
            tracing::warn!(keys = keys.len(), kept = MAX_KEYS, url = %self.url, "JWKS holds too many keys: keeping the first");
            keys.truncate(MAX_KEYS);
        }
        if keys.is_empty() {
            return Err("the set holds no signing key of an allowed algorithm".into());
        }
        Ok(keys)
    }
}
