//! The node: everything a request or a session needs, built once from the
//! validated config and shared as `Arc<Gateway>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth::{AuthError, Identity, Verifier};
use crate::broker::{self, Broker, BrokerError, Position};
use crate::config::{Config, Secret};
use crate::hub::durable::Tails;
use crate::hub::subscriptions::Subscriptions;
use crate::hub::{Admission, Connection, Control, Hub, HubLimits, Settled};
use crate::limits::IpRateLimiter;
use crate::metrics::Metrics;
use crate::permissions::Permissions;
use crate::presence::Presence;
use crate::protocol::{BackendEvent, Joined};
use crate::revocation::Revocation;
use crate::room::RoomName;
use crate::shutdown::Shutdown;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// tungstenite's read buffer, allocated for every socket: small, because
/// client frames are small (a larger frame grows it for that read only).
const READ_BUFFER_BYTES: usize = 1024;
/// Bytes tungstenite collects before it writes to the socket; a batch is
/// flushed as a whole anyway.
const WRITE_BUFFER_BYTES: usize = 4 * 1024;
/// File descriptors kept free for the listener, Redis, logs and HTTP probes
/// when the socket cap is derived from the open-file limit.
const FD_RESERVE: u64 = 256;

pub struct Gateway {
    pub config: Config,
    pub verifier: Verifier,
    pub permissions: Permissions,
    pub hub: Arc<Hub>,
    pub subscriptions: Subscriptions,
    /// This node's members of presence rooms, kept in the broker.
    pub presence: Arc<Presence>,
    pub shutdown: Shutdown,
    pub prometheus: Option<PrometheusHandle>,
    pub handshake_limiter: Option<IpRateLimiter>,
    pub ws_config: WebSocketConfig,
    /// Peers whose forwarded-for headers name the client (`trusted_proxies`).
    pub trusted_proxies: Vec<crate::http::client_addr::Cidr>,
    /// Most sockets this node accepts (see `limits.max_connections`).
    pub capacity: usize,
    /// Upgraded sockets alive, authenticated or not: what holds descriptors.
    open_sockets: AtomicUsize,
    /// Upgraded sockets still waiting for their auth frame.
    pending_auth: AtomicUsize,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event is larger than `limits.max_event_bytes`: it would not fit
    /// its members' send queues.
    #[error("the event is {size} bytes, more than limits.max_event_bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The client's `since` offset is ahead of the room (`bad_request`).
    #[error("position is ahead of the room: its offset is {}", .0.offset)]
    Ahead(Position),
}

/// Counts one socket against a node-wide limit for as long as it is held:
/// every upgraded socket ([`Gateway::reserve_socket`]), and a socket that
/// has yet to send its auth frame ([`Gateway::reserve_pending_auth`]).
pub struct SocketSlot {
    gw: Arc<Gateway>,
    counter: fn(&Gateway) -> &AtomicUsize,
}

impl SocketSlot {
    /// Count one more against `limit`; None (and nothing counted) when full.
    fn take(gw: &Arc<Gateway>, counter: fn(&Gateway) -> &AtomicUsize, limit: usize) -> Option<SocketSlot> {
        let taken = counter(gw).fetch_add(1, Ordering::Relaxed);
        let slot = SocketSlot {
            gw: gw.clone(),
            counter,
        };
        (taken < limit).then_some(slot)
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        (self.counter)(&self.gw).fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gateway {
    /// Build the node from a validated config; connects the broker in the
    /// background.
    pub async fn new(config: Config, prometheus: Option<PrometheusHandle>) -> Result<Arc<Self>, String> {
        let verifier = Verifier::from_config(&config.jwt)?;
        if let Some(jwks) = verifier.jwks() {
            // Tokens wait for the first set; a node whose IdP is down starts
            // anyway (not ready until a set loads) and keeps trying.
            jwks.refresh().await;
            jwks.clone().spawn_refresh();
        }
        let permissions = Permissions::from_config(&config.permissions.roles)?;
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{:08x}", fastrand::u32(..)));
        let shards = match config.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let broker_kind = if config.redis.url.is_some() { "redis" } else { "memory" };
        let tails = Arc::new(Tails::new(config.history.clone()));
        let limits = HubLimits {
            queue_limit: config.ws.send_queue_bytes,
            max_event_bytes: config.limits.max_event_bytes,
            max_per_user: config.limits.max_connections_per_user,
            max_queued_bytes: config.limits.max_queued_bytes,
        };
        let presence = Presence::new(config.presence.clone(), &node_id);
        let hub = Hub::new(node_id, shards, limits, broker_kind, tails.clone());
        hub.attach_presence(presence.clone());
        hub.spawn_shedder();
        let broker = broker::from_config(&config, hub.clone())
            .await
            .map_err(|e| e.to_string())?;
        hub.attach_broker(&broker);
        presence.attach_broker(&broker);
        presence.spawn();
        let handshake_limiter = (config.limits.handshakes_per_ip > 0.0)
            .then(|| IpRateLimiter::new(config.limits.handshakes_per_ip, config.limits.handshake_burst_per_ip));
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(WRITE_BUFFER_BYTES)
            .max_message_size(Some(config.ws.max_frame_bytes))
            .max_frame_size(Some(config.ws.max_frame_bytes));
        let capacity = match config.limits.max_connections {
            0 => match rlimit::Resource::NOFILE.get() {
                Ok((soft, _)) if soft > FD_RESERVE * 2 => usize::try_from(soft - FD_RESERVE).unwrap_or(usize::MAX),
                Ok((soft, _)) => usize::try_from(soft / 2).unwrap_or(usize::MAX),
                Err(_) => usize::MAX,
            },
            n => n,
        };
        crate::metrics::set_max_connections(capacity);
        let trusted_proxies = config
            .trusted_proxies
            .iter()
            .map(|c| crate::http::client_addr::Cidr::parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            trusted_proxies,
            capacity,
            open_sockets: AtomicUsize::new(0),
            pending_auth: AtomicUsize::new(0),
            verifier,
            permissions,
            hub,
            subscriptions: Subscriptions::new(broker, tails),
            presence,
            shutdown: Shutdown::new(),
            prometheus,
            handshake_limiter,
            ws_config,
            config,
        }))
    }

    /// Take a socket slot, or None when the node is at capacity.
    pub fn reserve_socket(self: &Arc<Self>) -> Option<SocketSlot> {
        SocketSlot::take(self, |gw| &gw.open_sockets, self.capacity)
    }

    /// Take a slot for a socket that will authenticate with its first frame,
    /// or None when `limits.max_pending_auth` sockets already wait.
    pub fn reserve_pending_auth(self: &Arc<Self>) -> Option<SocketSlot> {
        SocketSlot::take(self, |gw| &gw.pending_auth, self.config.limits.max_pending_auth)
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        self.subscriptions.broker()
    }

    pub fn heartbeat(&self) -> Duration {
        self.config.heartbeat()
    }

    /// Whether `room` keeps history.
    pub fn is_durable(&self, room: &RoomName) -> bool {
        self.config.history.is_durable(room.namespace())
    }

    /// Join `conn` to `room`: live on the broker first, then a member here,
    /// so no event published after this returns is missed. A durable room
    /// answers with its position, and with `since` sends the missed events
    /// (after `preamble`, the subscribe ack, when it gives one).
    pub async fn join(
        &self,
        conn: &Arc<Connection>,
        room: &RoomName,
        since: Option<&Position>,
        preamble: impl Fn(&Joined) -> Option<Utf8Bytes>,
    ) -> Result<Option<Joined>, JoinError> {
        self.subscriptions.acquire(room).await?;
        match self.hub.admit(room, conn, since, &preamble) {
            Admission::Live(joined) => return Ok(joined),
            Admission::Held => {}
        }
        // Subscribed and held: what is read now and what arrives live from
        // now on overlap, and the hub merges them by offset.
        let size = self.config.history.size;
        let read = match since {
            Some(since) => self.broker().history(room, since.offset, size, size as u64).await,
            None => self.broker().history(room, 0, 0, 0).await,
        };
        let page = match read {
            Ok(page) => page,
            Err(error) => {
                if self.hub.abandon(room, conn) {
                    self.subscriptions.release(room).await;
                }
                return Err(error.into());
            }
        };
        match self.hub.settle(room, conn, since, &page, &preamble) {
            Settled::Joined(joined) => Ok(Some(joined)),
            Settled::Ahead { position, release } => {
                if release {
                    self.subscriptions.release(room).await;
                }
                Err(JoinError::Ahead(position))
            }
            // Closed meanwhile: its close path releases the room.
            Settled::Gone => Err(JoinError::Broker(BrokerError::Unavailable)),
        }
    }

    /// Take a closing connection out of the node: out of the user index and
    /// every room here, then its rooms released on the broker. With `join`
    /// and `leave`, the one way membership changes.
    pub async fn remove(&self, conn: &Connection) {
        self.release_rooms(self.hub.unregister(conn)).await;
    }

    /// The broker side of [`Gateway::remove`], for a session that must send
    /// its close frame between the two halves (unregistered first, so
    /// nothing more is queued for it).
    pub async fn release_rooms(&self, rooms: Vec<RoomName>) {
        for room in &rooms {
            self.subscriptions.release(room).await;
        }
    }

    /// Leave one room; false if `conn` was not in it.
    pub async fn leave(&self, conn: &Connection, room: &RoomName) -> bool {
        let was_member = self.hub.leave(room, conn);
        if was_member {
            self.subscriptions.release(room).await;
        }
        was_member
    }

    /// Publish an event to a room through the broker (every node); into
    /// its history first when the room is durable, then with its position.
    pub async fn publish(
        &self,
        room: &RoomName,
        event: &BackendEvent<'_>,
        source: &'static str,
    ) -> Result<Option<Position>, PublishError> {
        self.publish_payload(room, Bytes::from(event.to_payload()), source)
            .await
    }

    /// Refuse a payload over `limits.max_event_bytes`: it would not fit its
    /// members' send queues.
    pub fn check_event_size(&self, payload: &[u8]) -> Result<(), PublishError> {
        let max = self.config.limits.max_event_bytes;
        if payload.len() > max {
            return Err(PublishError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// [`Gateway::publish`] of an encoded event payload.
    pub async fn publish_payload(
        &self,
        room: &RoomName,
        payload: Bytes,
        source: &'static str,
    ) -> Result<Option<Position>, PublishError> {
        self.check_event_size(&payload)?;
        let position = if self.is_durable(room) {
            let position = self.broker().publish_durable(room, payload).await?;
            Metrics::history_published(source);
            Some(position)
        } else {
            self.broker().publish(room, payload).await?;
            None
        };
        Metrics::events_published(source);
        Ok(position)
    }

    /// Verify a token and refuse it when the server API revoked it: every
    /// way in (upgrade, auth frame, SSE, `refresh`) authenticates here.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let identity = self.verifier.verify(token).await?;
        self.not_revoked(identity)
    }

    /// As [`Gateway::authenticate`], without waiting: a `kid` the key set
    /// lacks starts a refetch in the background and is refused this time.
    /// For a session's `refresh`, which must not hold up its socket.
    pub fn authenticate_now(&self, token: &str) -> Result<Identity, AuthError> {
        match self.verifier.verify_cached(token) {
            Err(AuthError::UnknownKey) => {
                if let Some(jwks) = self.verifier.jwks().cloned() {
                    tokio::spawn(async move { jwks.refresh_soon().await });
                }
                Err(AuthError::UnknownKey)
            }
            other => self.not_revoked(other?),
        }
    }

    fn not_revoked(&self, identity: Identity) -> Result<Identity, AuthError> {
        if self.hub.revocations().refuses(
            &identity.user_id,
            identity.issued_at,
            crate::hub::connection::unix_now(),
        ) {
            return Err(AuthError::Revoked);
        }
        Ok(identity)
    }

    /// Close every socket of `user` on every node. With `revoke`, the user's
    /// tokens issued up to now are refused on every node for
    /// `jwt.revocation_ttl_s`; the revocation is stored before any socket
    /// closes, so none can come back with its old token.
    pub async fn disconnect_user(&self, user: &str, reason: &str, revoke: bool) -> Result<(), BrokerError> {
        let revoke = if revoke {
            let now = crate::hub::connection::unix_now();
            let revocation = Revocation {
                // `iat` counts whole seconds: a token of this very second may
                // predate the call, so it is refused too.
                issued_before: now.saturating_add(1),
                until: now.saturating_add(self.config.jwt.revocation_ttl_s),
            };
            self.broker().store_revocation(user, revocation).await?;
            Some(revocation)
        } else {
            None
        };
        let control = Control::Disconnect {
            user: user.to_string(),
            reason: reason.to_string(),
            revoke,
        };
        let payload = serde_json::to_vec(&control).map_err(|e| BrokerError::Backend(e.to_string()))?;
        self.broker().publish_control(Bytes::from(payload)).await
    }

    /// Whether `key` is one of the configured API keys (constant time).
    pub fn api_key_valid(&self, key: &str) -> bool {
        use subtle::ConstantTimeEq;
        let keys: &[Secret] = &self.config.api.keys;
        // Compare against every key so the time does not tell which matched.
        keys.iter().fold(false, |found, k| {
            found | bool::from(k.expose().as_bytes().ct_eq(key.as_bytes()))
        })
    }
}
