//! Metric names (docs/PROTOCOL.md §9) in one place, their descriptions, the
//! label values each can carry, and the Prometheus recorder behind `/metrics`.
//!
//! Labels are bounded sets (reasons, frame types, sources), never user ids or
//! room names. Every known label value is registered at 0 when the recorder is
//! installed, so `rate()` and alerts see a series before its first event.
//! Hot-path handles are resolved once and cached in [`Metrics`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::hub::Transport;

pub const CONNECTIONS: &str = "wsgate_connections";
pub const CONNECTIONS_OPENED: &str = "wsgate_connections_opened_total";
pub const CONNECTIONS_CLOSED: &str = "wsgate_connections_closed_total";
pub const AUTH_FAILURES: &str = "wsgate_auth_failures_total";
pub const ROOMS: &str = "wsgate_rooms";
pub const EVENTS_RECEIVED: &str = "wsgate_events_received_total";
pub const EVENTS_INVALID: &str = "wsgate_events_invalid_total";
pub const EVENTS_PUBLISHED: &str = "wsgate_events_published_total";
pub const MESSAGES_DELIVERED: &str = "wsgate_messages_delivered_total";
pub const MESSAGES_DROPPED: &str = "wsgate_messages_dropped_total";
pub const DELIVERY_LATENCY: &str = "wsgate_delivery_latency_seconds";
pub const BROKER_UP: &str = "wsgate_broker_up";
pub const BROKER_RECONNECTS: &str = "wsgate_broker_reconnects_total";
pub const CLIENT_FRAMES: &str = "wsgate_client_frames_total";
pub const RATE_LIMITED: &str = "wsgate_rate_limited_total";
pub const HANDSHAKES_REFUSED: &str = "wsgate_handshakes_refused_total";
pub const COMMAND_ERRORS: &str = "wsgate_command_errors_total";
pub const API_REQUESTS: &str = "wsgate_api_requests_total";
pub const RECOVERIES: &str = "wsgate_recoveries_total";
pub const EVENTS_RECOVERED: &str = "wsgate_events_recovered_total";
pub const HISTORY_PUBLISH: &str = "wsgate_history_publish_total";
pub const RECOVERY_READS: &str = "wsgate_recovery_reads_total";
pub const BUILD_INFO: &str = "wsgate_build_info";
pub const MAX_CONNECTIONS: &str = "wsgate_max_connections";
pub const JWKS_REFRESHES: &str = "wsgate_jwks_refreshes_total";
pub const QUEUED_BYTES: &str = "wsgate_queued_bytes";
pub const PRESENCE_UPDATES: &str = "wsgate_presence_updates_total";
pub const PRESENCE_EVENTS: &str = "wsgate_presence_events_total";

/// The values each labelled metric can carry (docs/PROTOCOL.md §9). The
/// recording functions below take only these; a debug build asserts it.
pub mod labels {
    pub const CLOSE_REASONS: &[&str] = &[
        "client",
        "unauthorized",
        "token_expired",
        "disconnected",
        "slow_consumer",
        "rate_limited",
        "message_too_big",
        "policy",
        "draining",
        "heartbeat_timeout",
        "protocol_error",
        "internal",
        "insufficient_state",
    ];
    pub const AUTH_FAILURE_REASONS: &[&str] = &[
        "missing",
        "timeout",
        "malformed",
        "bad_signature",
        "algorithm",
        "expired",
        "not_yet_valid",
        "missing_exp",
        "issuer",
        "audience",
        "claims",
        "unknown_key",
        "revoked",
        "refresh_other_user",
    ];
    pub const HANDSHAKE_REFUSALS: &[&str] = &[
        "not_websocket",
        "draining",
        "broker_down",
        "capacity",
        "pending_auth",
        "origin",
        "rate_limited",
        "unauthorized",
        "bad_request",
        "forbidden",
    ];
    pub const CLIENT_FRAME_TYPES: &[&str] = &[
        "auth",
        "subscribe",
        "unsubscribe",
        "publish",
        "refresh",
        "ping",
        "presence",
        "binary",
        "invalid",
    ];
    pub const COMMAND_ERROR_CODES: &[&str] = &[
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "rate_limited",
        "limit_exceeded",
        "internal",
    ];
    pub const DROP_REASONS: &[&str] = &["slow_consumer", "broker_lag", "too_large", "queue_limit"];
    pub const PUBLISH_SOURCES: &[&str] = &["api", "client"];
    pub const BROKER_SOURCES: &[&str] = &["redis", "memory"];
    pub const API_ENDPOINTS: &[&str] = &[
        "publish",
        "rooms",
        "connections",
        "disconnect",
        "history",
        "presence",
        "other",
    ];
    pub const API_STATUS_CLASSES: &[&str] = &["2xx", "4xx", "5xx"];
    pub const RECOVERY_RESULTS: &[&str] = &["recovered", "not_recovered"];
    pub const RECOVERY_READ_FROM: &[&str] = &["node", "broker"];
    pub const JWKS_RESULTS: &[&str] = &["ok", "error"];
    pub const PRESENCE_UPDATE_RESULTS: &[&str] = &["ok", "error"];
    pub const PRESENCE_EVENT_TYPES: &[&str] = &["join", "leave"];
}

/// In debug builds, refuse a label value the metric does not list: an
/// unlisted value would be a series nobody initialised or documented.
fn listed(values: &[&str], value: &str) {
    debug_assert!(values.contains(&value), "label value {value:?} not in {values:?}");
}

/// Install the global Prometheus recorder once; later calls return the same handle.
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(DELIVERY_LATENCY.into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    process_collector().describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    register_label_values();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The Prometheus text, with the process metrics (CPU, RSS, open and max
/// file descriptors, threads) read just before.
pub fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The most connections this node admits, for `connections / max` alerts.
pub fn set_max_connections(capacity: usize) {
    gauge!(MAX_CONNECTIONS).set(capacity as f64);
}

/// Every series of every labelled counter, at 0.
fn register_label_values() {
    for transport in Transport::ALL {
        for reason in labels::CLOSE_REASONS {
            counter!(CONNECTIONS_CLOSED, "reason" => *reason, "transport" => transport.label()).increment(0);
        }
    }
    let single: [(&'static str, &'static str, &[&'static str]); 13] = [
        (PRESENCE_UPDATES, "result", labels::PRESENCE_UPDATE_RESULTS),
        (PRESENCE_EVENTS, "type", labels::PRESENCE_EVENT_TYPES),
        (JWKS_REFRESHES, "result", labels::JWKS_RESULTS),
        (AUTH_FAILURES, "reason", labels::AUTH_FAILURE_REASONS),
        (HANDSHAKES_REFUSED, "reason", labels::HANDSHAKE_REFUSALS),
        (CLIENT_FRAMES, "type", labels::CLIENT_FRAME_TYPES),
        (COMMAND_ERRORS, "code", labels::COMMAND_ERROR_CODES),
        (MESSAGES_DROPPED, "reason", labels::DROP_REASONS),
        (EVENTS_PUBLISHED, "source", labels::PUBLISH_SOURCES),
        (HISTORY_PUBLISH, "source", labels::PUBLISH_SOURCES),
        (EVENTS_RECEIVED, "source", labels::BROKER_SOURCES),
        (RECOVERIES, "result", labels::RECOVERY_RESULTS),
        (RECOVERY_READS, "from", labels::RECOVERY_READ_FROM),
    ];
    for (name, label, values) in single {
        for value in values {
            counter!(name, label => *value).increment(0);
        }
    }
    for endpoint in labels::API_ENDPOINTS {
        for status in labels::API_STATUS_CLASSES {
            counter!(API_REQUESTS, "endpoint" => *endpoint, "status" => *status).increment(0);
        }
    }
}

/// Keep histograms bounded in memory: the exporter drains samples on upkeep.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

fn describe() {
    describe_gauge!(CONNECTIONS, "Authenticated WebSocket connections open on this node.");
    describe_counter!(CONNECTIONS_OPENED, "Connections authenticated and registered.");
    describe_counter!(CONNECTIONS_CLOSED, "Connections closed, by reason.");
    describe_counter!(AUTH_FAILURES, "Refused tokens and handshakes, by reason.");
    describe_gauge!(ROOMS, "Rooms with at least one member on this node.");
    describe_counter!(EVENTS_RECEIVED, "Events received from the broker, by broker kind.");
    describe_counter!(EVENTS_INVALID, "Broker payloads dropped as invalid.");
    describe_counter!(
        EVENTS_PUBLISHED,
        "Events published by this node, by source (api, client)."
    );
    describe_counter!(MESSAGES_DELIVERED, "Event frames written to sockets.");
    describe_counter!(MESSAGES_DROPPED, "Event frames not delivered, by reason.");
    describe_histogram!(
        DELIVERY_LATENCY,
        "Seconds from broker receipt to socket write (oldest frame of each write)."
    );
    describe_gauge!(
        BROKER_UP,
        "1 when the broker is connected and every live room is subscribed."
    );
    describe_counter!(BROKER_RECONNECTS, "Broker reconnections.");
    describe_counter!(CLIENT_FRAMES, "Frames received from clients, by type.");
    describe_counter!(RATE_LIMITED, "Client frames refused by the per-connection rate limit.");
    describe_counter!(
        HANDSHAKES_REFUSED,
        "Upgrade requests refused before the upgrade, by reason."
    );
    describe_counter!(COMMAND_ERRORS, "Error replies sent to clients, by code.");
    describe_counter!(API_REQUESTS, "Server API requests, by endpoint and status class.");
    describe_counter!(
        RECOVERIES,
        "Resumes into durable rooms, by result (recovered, not_recovered)."
    );
    describe_counter!(EVENTS_RECOVERED, "Missed events sent to resuming clients.");
    describe_counter!(
        HISTORY_PUBLISH,
        "Events this node published into history, by source (api, client)."
    );
    describe_counter!(
        RECOVERY_READS,
        "Resumes answered from the node's own window (node) or by a history read (broker)."
    );
    describe_gauge!(
        QUEUED_BYTES,
        "Bytes queued for this node's sockets, against limits.max_queued_bytes."
    );
    describe_counter!(
        PRESENCE_UPDATES,
        "Presence room updates (and heartbeats) this node sent to the broker, by result (ok, error)."
    );
    describe_counter!(
        PRESENCE_EVENTS,
        "Presence join/leave announcements this node received for its members, by type."
    );
    describe_counter!(JWKS_REFRESHES, "Fetches of jwt.jwks_url, by result (ok, error).");
    describe_gauge!(BUILD_INFO, "Always 1; the `version` label is the running build.");
    describe_gauge!(
        MAX_CONNECTIONS,
        "The most connections this node admits (limits.max_connections, or derived from the open-file limit)."
    );
}

/// Record a latency at most once a millisecond per thread. Every socket
/// write would otherwise add a sample, which at a million deliveries a second
/// costs more than the delivery; one sample a millisecond per thread keeps the
/// distribution and bounds the cost.
pub fn record_sampled(histogram: &Histogram, since: std::time::Instant) {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    let due = LAST.with(|last| match last.get() {
        Some(at) if now.saturating_duration_since(at) < Duration::from_millis(1) => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        histogram.record(now.saturating_duration_since(since).as_secs_f64());
    }
}

/// A counter for the hottest path. Every worker thread adds to its own
/// cache line, so writes on several cores never contend for one atomic; the
/// exported counter is brought up to the sum when `/metrics` is rendered.
pub struct ShardedCounter {
    slots: Box<[PaddedU64]>,
    exported: Counter,
}

/// One slot per cache-line pair (the adjacent-line prefetcher pairs lines).
#[repr(align(128))]
#[derive(Default)]
struct PaddedU64(AtomicU64);

const COUNTER_SLOTS: usize = 64;

impl ShardedCounter {
    pub fn new(exported: Counter) -> Self {
        Self {
            slots: (0..COUNTER_SLOTS).map(|_| PaddedU64::default()).collect(),
            exported,
        }
    }

    pub fn increment(&self, by: u64) {
        thread_local! {
            static SLOT: usize = {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed) % COUNTER_SLOTS
            };
        }
        let slot = SLOT.with(|slot| *slot);
        self.slots[slot].0.fetch_add(by, Ordering::Relaxed);
    }

    pub fn value(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }

    /// Publish the sum to the exported counter (before a scrape).
    pub fn publish(&self) {
        self.exported.absolute(self.value());
    }
}

/// Handles the hub and sessions use on hot paths, resolved once.
pub struct Metrics {
    /// Indexed by [`Transport`]: the `transport` label.
    pub connections: [Gauge; 2],
    pub connections_opened: [Counter; 2],
    pub events_invalid: Counter,
    /// Counted per socket write from every worker thread: sharded.
    pub messages_delivered: ShardedCounter,
    pub dropped_slow_consumer: Counter,
    pub dropped_too_large: Counter,
    pub delivery_latency: Histogram,
    pub rate_limited: Counter,
    pub events_recovered: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            connections: Transport::ALL.map(|t| gauge!(CONNECTIONS, "transport" => t.label())),
            connections_opened: Transport::ALL.map(|t| counter!(CONNECTIONS_OPENED, "transport" => t.label())),
            events_invalid: counter!(EVENTS_INVALID),
            messages_delivered: ShardedCounter::new(counter!(MESSAGES_DELIVERED)),
            dropped_slow_consumer: counter!(MESSAGES_DROPPED, "reason" => "slow_consumer"),
            dropped_too_large: counter!(MESSAGES_DROPPED, "reason" => "too_large"),
            delivery_latency: histogram!(DELIVERY_LATENCY),
            rate_limited: counter!(RATE_LIMITED),
            events_recovered: counter!(EVENTS_RECOVERED),
        }
    }

    /// One resume into a durable room: its result, and whether the node's
    /// window (`node`) or a history read (`broker`) answered it.
    pub fn recovery(recovered: bool, read_from: &'static str) {
        listed(labels::RECOVERY_READ_FROM, read_from);
        let result = if recovered { "recovered" } else { "not_recovered" };
        counter!(RECOVERIES, "result" => result).increment(1);
        counter!(RECOVERY_READS, "from" => read_from).increment(1);
    }

    pub fn jwks_refresh(result: &'static str) {
        listed(labels::JWKS_RESULTS, result);
        counter!(JWKS_REFRESHES, "result" => result).increment(1);
    }

    pub fn presence_updates(result: &'static str, updates: usize) {
        listed(labels::PRESENCE_UPDATE_RESULTS, result);
        counter!(PRESENCE_UPDATES, "result" => result).increment(updates as u64);
    }

    pub fn presence_event(kind: &'static str) {
        listed(labels::PRESENCE_EVENT_TYPES, kind);
        counter!(PRESENCE_EVENTS, "type" => kind).increment(1);
    }

    pub fn history_published(source: &'static str) {
        listed(labels::PUBLISH_SOURCES, source);
        counter!(HISTORY_PUBLISH, "source" => source).increment(1);
    }

    pub fn connection_closed(reason: &'static str, transport: Transport) {
        listed(labels::CLOSE_REASONS, reason);
        counter!(CONNECTIONS_CLOSED, "reason" => reason, "transport" => transport.label()).increment(1);
    }

    pub fn auth_failure(reason: &'static str) {
        listed(labels::AUTH_FAILURE_REASONS, reason);
        counter!(AUTH_FAILURES, "reason" => reason).increment(1);
    }

    pub fn events_received(source: &'static str) -> Counter {
        listed(labels::BROKER_SOURCES, source);
        counter!(EVENTS_RECEIVED, "source" => source)
    }

    pub fn events_published(source: &'static str) {
        listed(labels::PUBLISH_SOURCES, source);
        counter!(EVENTS_PUBLISHED, "source" => source).increment(1);
    }

    pub fn client_frame(kind: &'static str) {
        listed(labels::CLIENT_FRAME_TYPES, kind);
        counter!(CLIENT_FRAMES, "type" => kind).increment(1);
    }

    pub fn handshake_refused(reason: &'static str) {
        listed(labels::HANDSHAKE_REFUSALS, reason);
        counter!(HANDSHAKES_REFUSED, "reason" => reason).increment(1);
    }

    pub fn command_error(code: &'static str) {
        listed(labels::COMMAND_ERROR_CODES, code);
        counter!(COMMAND_ERRORS, "code" => code).increment(1);
    }

    pub fn messages_dropped(reason: &'static str, count: u64) {
        listed(labels::DROP_REASONS, reason);
        counter!(MESSAGES_DROPPED, "reason" => reason).increment(count);
    }

    pub fn api_request(endpoint: &'static str, status: u16) {
        let class = match status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        listed(labels::API_ENDPOINTS, endpoint);
        counter!(API_REQUESTS, "endpoint" => endpoint, "status" => class).increment(1);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_reason_and_error_code_is_a_listed_label() {
        use crate::close::CloseReason as R;
        use crate::protocol::ErrorCode as E;
        let m = String::new;
        for reason in [
            R::ClientGone,
            R::Unauthorized(m()),
            R::TokenExpired,
            R::Disconnected(m()),
            R::SlowConsumer,
            R::RateLimited,
            R::MessageTooBig,
            R::Policy(m()),
            R::Draining,
            R::HeartbeatTimeout,
            R::Protocol(m()),
            R::Internal(m()),
            R::InsufficientState,
        ] {
            assert!(labels::CLOSE_REASONS.contains(&reason.label()), "{reason:?}");
        }
        for code in [
            E::BadRequest,
            E::Unauthorized,
            E::Forbidden,
            E::NotFound,
            E::RateLimited,
            E::LimitExceeded,
            E::Internal,
        ] {
            assert!(labels::COMMAND_ERROR_CODES.contains(&code.as_str()), "{code:?}");
        }
    }

    #[test]
    fn every_auth_error_is_a_listed_label() {
        use crate::auth::AuthError as A;
        for error in [
            A::Missing,
            A::Timeout,
            A::Malformed,
            A::BadSignature,
            A::Algorithm,
            A::Expired,
            A::NotYetValid,
            A::MissingExp,
            A::Issuer,
            A::Audience,
            A::Claim(String::new()),
            A::TooManyRoles,
            A::UnknownKey,
            A::Revoked,
        ] {
            assert!(labels::AUTH_FAILURE_REASONS.contains(&error.reason()), "{error:?}");
        }
    }

    #[test]
    fn sharded_counter_sums_every_thread() {
        let counter = std::sync::Arc::new(ShardedCounter::new(metrics::Counter::noop()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.increment(2);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counter.value(), 8000);
    }
}
