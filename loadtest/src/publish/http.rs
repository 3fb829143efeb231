//! Publishing through the gateway's server API: `POST /api/v1/publish`
//! with the API key, a bounded number of requests in flight. Requests may
//! complete out of order, which the receivers' duplicate window tolerates.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::Failures;

#[derive(Debug, Default)]
pub struct HttpReplies {
    pub accepted: AtomicU64,
    pub errors: AtomicU64,
    pub failures: Mutex<Failures>,
}

pub struct HttpPublisher {
    client: reqwest::Client,
    endpoint: String,
    authorization: String,
    in_flight: Arc<Semaphore>,
    concurrency: u32,
    replies: Arc<HttpReplies>,
}

impl HttpPublisher {
    pub fn new(base_url: &str, api_key: &str, concurrency: usize) -> Result<HttpPublisher, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(concurrency)
            .build()
            .map_err(|e| e.to_string())?;
        let concurrency = concurrency.clamp(1, 4096);
        Ok(HttpPublisher {
            client,
            endpoint: format!("{}/api/v1/publish", base_url.trim_end_matches('/')),
            authorization: format!("Bearer {api_key}"),
            in_flight: Arc::new(Semaphore::new(concurrency)),
            concurrency: u32::try_from(concurrency).unwrap_or(1),
            replies: Arc::new(HttpReplies::default()),
        })
    }

    /// Start one request per (event number, body); waits only while
    /// `concurrency` are in flight.
    pub async fn publish(&self, bodies: Vec<(u64, String)>) -> Result<(), String> {
        for (seq, body) in bodies {
            let permit = self
                .in_flight
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| "publisher closed".to_string())?;
            let request = self
                .client
                .post(&self.endpoint)
                .header("authorization", &self.authorization)
                .header("content-type", "application/json")
                .body(body);
            let replies = self.replies.clone();
            tokio::spawn(async move {
                let failure = match request.send().await {
                    Ok(response) if response.status().as_u16() == 202 => None,
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body = response.text().await.unwrap_or_default();
                        Some(format!("HTTP {status}: {}", body.chars().take(200).collect::<String>()))
                    }
                    Err(e) => Some(e.to_string()),
                };
                match failure {
                    None => {
                        replies.accepted.fetch_add(1, Relaxed);
                    }
                    Some(failure) => {
                        replies.errors.fetch_add(1, Relaxed);
                        super::lock(&replies.failures).add(seq, &failure);
                    }
                }
                drop(permit);
            });
        }
        Ok(())
    }

    pub fn replies(&self) -> Arc<HttpReplies> {
        self.replies.clone()
    }

    /// Wait (at most `wait`) for the requests in flight.
    pub async fn finish(self, wait: Duration) -> Arc<HttpReplies> {
        let _ = tokio::time::timeout(wait, self.in_flight.acquire_many(self.concurrency)).await;
        self.replies
    }
}
