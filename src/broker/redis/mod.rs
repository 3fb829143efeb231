//! The Redis broker (fred): one SUBSCRIBE per room this node serves, a
//! second connection to PUBLISH (and to call the history functions), and a
//! supervisor that, after every (re)connect, loads the Function library
//! ([`functions`], and [`presence`]'s when presence is on) and re-subscribes
//! every live room before it reports the broker up again.
//!
//! In cluster mode ([`servers`] builds the connection settings of each mode)
//! rooms use sharded pub/sub: `SSUBSCRIBE` and `SPUBLISH` go to the shard
//! that owns the room's slot, so an event crosses only that shard. Redis
//! drops a shard's subscriptions when its slots move (a failover, a
//! resharding) with no error on our side, so the supervisor also watches
//! the slot map and re-subscribes every room whenever it changes.
//!
//! The reader hands each message to the sink and goes on; it never waits
//! for a socket. If it still falls behind fred's buffer, the lost messages
//! are counted (`wsgate_messages_dropped_total{reason="broker_lag"}`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::broadcast::error::RecvError;

pub mod functions;
pub mod presence;
pub mod servers;

use super::history::{HistoryPage, Position};
use super::presence::{Applied, Member, RoomUpdate};
use super::{Broker, BrokerError, EventSink, control_channel, idempotency_key, revocations_key, room_channel};
use crate::config::{HistoryConfig, PresenceConfig, RedisConfig, RedisMode};
use crate::idempotency::{self, Reached};
use crate::metrics::Metrics;
use crate::revocation::Revocation;
use crate::room::RoomName;

/// How long an unchanged connection error stays out of the log.
const REPEAT_ERROR_AFTER: Duration = Duration::from_secs(30);

/// Channels per SUBSCRIBE when re-subscribing everything after a reconnect.
const RESUBSCRIBE_CHUNK: usize = 500;
/// How often the supervisor looks at the connections.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);
/// How often, in cluster mode, the supervisor reads the slot map to find
/// subscriptions a moved slot took away.
const TOPOLOGY_EVERY: Duration = Duration::from_secs(2);
/// Messages fred may buffer for the reader before it reports a lag. fred
/// allocates every event channel of a client at this size up front, so the
/// publisher, which reads none, gets a small one.
const SUBSCRIBER_BUFFER: usize = 1 << 14;
const PUBLISHER_BUFFER: usize = 16;

pub struct RedisBroker {
    shared: Arc<Shared>,
}

struct Shared {
    subscriber: Client,
    publisher: Client,
    prefix: String,
    control: String,
    /// Channels this node wants: what a reconnect re-subscribes. A std mutex:
    /// held for a set update or a copy, never across an await.
    wanted: Mutex<HashSet<String>>,
    /// Connected, and every wanted channel subscribed.
    up: AtomicBool,
    /// Cluster mode: rooms on sharded pub/sub, the library on every primary.
    sharded: bool,
    timeout: Duration,
    /// The Function library to load on every connect; None without history.
    library: Option<(String, String)>,
    /// The presence library (`wsgate_presence`); None without presence.
    presence_library: Option<(String, String)>,
}

fn backend(err: Error) -> BrokerError {
    BrokerError::Backend(err.to_string())
}

impl RedisBroker {
    /// Create the clients and start connecting in the background: the node
    /// serves (with `/ready` 503) while Redis is still unreachable.
    pub fn connect(
        url: &str,
        config: &RedisConfig,
        history: &HistoryConfig,
        presence: &PresenceConfig,
        max_event_bytes: usize,
        sink: Arc<dyn EventSink>,
    ) -> Result<Self, BrokerError> {
        let redis_config = servers::fred_config(url, config).map_err(BrokerError::Backend)?;
        let sharded = config.mode == RedisMode::Cluster;
        let build = |buffer: usize| {
            Builder::from_config(redis_config.clone())
                .set_policy(ReconnectPolicy::new_exponential(
                    0,
                    config.reconnect_min_ms,
                    config.reconnect_max_ms,
                    2,
                ))
                .with_connection_config(|c| {
                    c.connection_timeout = Duration::from_secs(2);
                    c.internal_command_timeout = Duration::from_secs(2);
                })
                .with_performance_config(|p| {
                    p.broadcast_channel_capacity = buffer;
                })
                .build()
                .map_err(backend)
        };
        let subscriber = build(SUBSCRIBER_BUFFER)?;
        let publisher = build(PUBLISHER_BUFFER)?;
        let shared = Arc::new(Shared {
            subscriber,
            publisher,
            prefix: config.channel_prefix.clone(),
            control: control_channel(&config.channel_prefix),
            wanted: Mutex::new(HashSet::new()),
            up: AtomicBool::new(false),
            sharded,
            timeout: Duration::from_secs(config.subscribe_timeout_s),
            library: history
                .enabled()
                .then(|| functions::library(&config.channel_prefix, history, max_event_bytes, sharded)),
            presence_library: presence
                .enabled()
                .then(|| presence::library(&config.channel_prefix, presence, sharded)),
        });
        // The reader subscribes to fred's message stream before connecting,
        // so nothing received on the first connection is missed.
        tokio::spawn(read_messages(shared.clone(), sink.clone()));
        // The connection tasks run (and reconnect) on their own; their
        // handles are not needed.
        // Listen for errors before connecting: the first attempt's is the
        // one that says why.
        tokio::spawn(log_connection_errors(shared.subscriber.error_rx()));
        drop(shared.subscriber.connect());
        drop(shared.publisher.connect());
        tokio::spawn(supervise(shared.clone(), sink));
        Ok(Self { shared })
    }
}

impl Shared {
    fn wanted(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // The set is valid even if a holder panicked; keep serving.
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connected(&self) -> bool {
        self.subscriber.is_connected() && self.publisher.is_connected()
    }

    /// Refuse a publish at once while Redis is known to be gone, rather than
    /// let it wait out the timeout behind fred's reconnect. (Either lost
    /// connection counts: the publisher may not have noticed yet.)
    fn can_publish(&self) -> bool {
        self.up.load(Ordering::SeqCst) || self.connected()
    }

    /// The room's channel, when a command on the publisher can be sent now.
    fn channel_to_publish(&self, room: &RoomName) -> Result<String, BrokerError> {
        if self.can_publish() {
            Ok(room_channel(&self.prefix, room.as_str()))
        } else {
            Err(BrokerError::Unavailable)
        }
    }

    async fn with_timeout<T>(&self, f: impl Future<Output = Result<T, Error>>) -> Result<T, BrokerError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(result) => result.map_err(backend),
            Err(_) => Err(BrokerError::Timeout),
        }
    }

    /// SUBSCRIBE and wait until Redis has processed it.
    ///
    /// fred resolves a SUBSCRIBE as soon as it is written (the confirmations
    /// arrive out of band), which is too early for "the room is live". A PING
    /// on the same connection is answered only after every command before it,
    /// so its reply is the barrier.
    ///
    /// In cluster mode fred resolves an SSUBSCRIBE on its reply (so that it
    /// can follow a MOVED), which is the barrier itself; one SSUBSCRIBE may
    /// only name channels of one slot.
    async fn subscribe_live(&self, channels: Vec<String>) -> Result<(), BrokerError> {
        if self.sharded {
            return self
                .with_timeout(async {
                    for (_, same_slot) in fred::util::group_by_hash_slot(channels)? {
                        self.subscriber.ssubscribe(Vec::from(same_slot)).await?;
                    }
                    Ok(())
                })
                .await;
        }
        self.with_timeout(async {
            self.subscriber.subscribe(channels).await?;
            self.subscriber.ping::<Value>(None).await.map(drop)
        })
        .await
    }

    /// `PUBLISH`, or `SPUBLISH` to the channel's shard in cluster mode.
    async fn publish_on(&self, channel: String, payload: Bytes) -> Result<(), BrokerError> {
        if self.sharded {
            self.with_timeout(self.publisher.spublish::<i64, _, _>(channel, payload))
                .await
                .map(drop)
        } else {
            self.with_timeout(self.publisher.publish::<i64, _, _>(channel, payload))
                .await
                .map(drop)
        }
    }

    /// Load the Function library (a Redis restarted without persistence has
    /// lost it). Without it durable publishes fail, but pub/sub still works,
    /// so a failure is logged and the node goes on.
    async fn load_library(&self) {
        let Some((source, version)) = &self.library else { return };
        match self
            .with_timeout(functions::load(&self.publisher, source, self.sharded))
            .await
        {
            Ok(()) => tracing::info!(%version, "loaded the wsgate function library"),
            Err(error) => tracing::error!(
                %error,
                "cannot load the wsgate function library (needs Redis 7+): durable publishes will fail"
            ),
        }
    }

    /// Load the presence library beside it; without it presence fails (its
    /// reads and updates are refused), everything else works.
    async fn load_presence_library(&self) {
        let Some((source, version)) = &self.presence_library else {
            return;
        };
        match self
            .with_timeout(functions::load(&self.publisher, source, self.sharded))
            .await
        {
            Ok(()) => tracing::info!(%version, "loaded the wsgate_presence function library"),
            Err(error) => tracing::error!(
                %error,
                "cannot load the wsgate_presence function library (needs Redis 7+): presence will fail"
            ),
        }
    }

    /// Subscribe the control channel and every wanted room, in chunks.
    async fn resubscribe_all(&self) -> Result<usize, BrokerError> {
        let mut channels: Vec<String> = self.wanted().iter().cloned().collect();
        channels.push(self.control.clone());
        let total = channels.len();
        for chunk in channels.chunks(RESUBSCRIBE_CHUNK) {
            self.subscribe_live(chunk.to_vec()).await?;
        }
        Ok(total)
    }
}

/// Say why Redis cannot be reached (refused, TLS certificate rejected,
/// authentication failed): each distinct error once, then again only after
/// [`REPEAT_ERROR_AFTER`], so a long outage does not flood the log.
async fn log_connection_errors(mut errors: tokio::sync::broadcast::Receiver<(Error, Option<Server>)>) {
    let mut last: Option<(String, tokio::time::Instant)> = None;
    loop {
        let (error, server) = match errors.recv().await {
            Ok(received) => received,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let text = error.to_string();
        let now = tokio::time::Instant::now();
        let repeated = last
            .as_ref()
            .is_some_and(|(seen, at)| *seen == text && now.duration_since(*at) < REPEAT_ERROR_AFTER);
        if !repeated {
            let server = server.map(|s| s.to_string()).unwrap_or_default();
            tracing::warn!(error = %text, %server, "redis connection error");
            last = Some((text, now));
        }
    }
}

/// Keep `up` honest: down as soon as a connection is lost, up again only after
/// every wanted channel is re-subscribed.
async fn supervise(shared: Arc<Shared>, sink: Arc<dyn EventSink>) {
    let broker_up = metrics::gauge!(crate::metrics::BROKER_UP);
    let broker_reconnects = metrics::counter!(crate::metrics::BROKER_RECONNECTS);
    broker_up.set(0.0);
    let mut reconnects = shared.subscriber.reconnect_rx();
    let mut resubscribe = true;
    // After a (re)connect or a new primary, which may have neither library.
    // A slot moved between the same primaries needs no FUNCTION LOAD: its
    // re-subscribe then waits on nothing the publishing connection does.
    let mut load_libraries = true;
    let mut ever_up = false;
    let mut topology = Topology::default();
    loop {
        if !shared.connected() {
            if shared.up.swap(false, Ordering::SeqCst) {
                broker_up.set(0.0);
                tracing::warn!("redis connection lost; clients stay connected, reconnecting");
            }
            resubscribe = true;
            load_libraries = true;
        } else if resubscribe || !shared.up.load(Ordering::SeqCst) {
            if load_libraries {
                // Independent of each other: one slow primary costs one timeout, not two.
                tokio::join!(shared.load_library(), shared.load_presence_library());
            }
            match shared.resubscribe_all().await {
                Ok(channels) => {
                    resubscribe = false;
                    load_libraries = false;
                    if shared.sharded {
                        topology.baseline(&shared.subscriber);
                    }
                    shared.up.store(true, Ordering::SeqCst);
                    broker_up.set(1.0);
                    sink.connected();
                    if ever_up {
                        broker_reconnects.increment(1);
                        tracing::info!(channels, "redis reconnected; every live room re-subscribed");
                        sink.resubscribed();
                    } else {
                        tracing::info!(channels, "redis connected");
                    }
                    ever_up = true;
                }
                Err(error) => {
                    tracing::warn!(%error, "re-subscribing after connect failed; retrying");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SUPERVISE_EVERY) => {}
            received = reconnects.recv() => match received {
                Ok(_) | Err(RecvError::Lagged(_)) => (resubscribe, load_libraries) = (true, true),
                Err(RecvError::Closed) => return,
            },
        }
        if shared.sharded && shared.up.load(Ordering::SeqCst) {
            if let Some(moved) = topology.moved(&shared.subscriber).await {
                tracing::warn!(
                    new_primaries = moved.new_primaries,
                    "redis cluster slots moved; re-subscribing every room"
                );
                // The publishing connection routes by its own copy of the
                // slot map: bring it up to date too, rather than leave it to
                // follow MOVED and ASK replies one command at a time.
                if let Err(error) = shared.with_timeout(shared.publisher.sync_cluster()).await {
                    tracing::warn!(%error, "cannot re-read the slot map for publishing");
                }
                resubscribe = true;
                load_libraries |= moved.new_primaries;
            }
        }
    }
}

/// What a re-read of the slot map found changed.
struct SlotsMoved {
    /// A primary owns slots that no primary at that address owned before:
    /// it may not have the function libraries yet.
    new_primaries: bool,
}

/// The cluster's slot map as last seen, read every [`TOPOLOGY_EVERY`].
#[derive(Default)]
struct Topology {
    slots: Vec<(u16, u16, String)>,
    checked: Option<tokio::time::Instant>,
}

impl Topology {
    /// Record the slot map the subscriptions were just made against (fred
    /// read it when it connected): a move after this is one to follow.
    fn baseline(&mut self, subscriber: &Client) {
        self.slots = Self::read(subscriber);
        self.checked = Some(tokio::time::Instant::now());
    }

    /// Re-read the slot map (when due); Some when a slot changed owner since
    /// the last read.
    async fn moved(&mut self, subscriber: &Client) -> Option<SlotsMoved> {
        let now = tokio::time::Instant::now();
        if self.checked.is_some_and(|at| now.duration_since(at) < TOPOLOGY_EVERY) {
            return None;
        }
        self.checked = Some(now);
        if let Err(error) = subscriber.sync_cluster().await {
            tracing::debug!(%error, "cannot read the cluster's slot map");
            return None;
        }
        let slots = Self::read(subscriber);
        if slots.is_empty() {
            return None;
        }
        let moved = (!self.slots.is_empty() && self.slots != slots).then(|| SlotsMoved {
            new_primaries: !Self::primaries(&slots).is_subset(&Self::primaries(&self.slots)),
        });
        self.slots = slots;
        moved
    }

    fn primaries(slots: &[(u16, u16, String)]) -> HashSet<&str> {
        slots.iter().map(|(_, _, primary)| primary.as_str()).collect()
    }

    fn read(subscriber: &Client) -> Vec<(u16, u16, String)> {
        subscriber
            .cached_cluster_state()
            .map(|state| {
                state
                    .slots()
                    .iter()
                    .map(|range| (range.start, range.end, range.primary.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Hand every message to the sink: room events by channel, control messages.
async fn read_messages(shared: Arc<Shared>, sink: Arc<dyn EventSink>) {
    let mut messages = shared.subscriber.message_rx();
    loop {
        match messages.recv().await {
            Ok(message) => {
                let Some(payload) = message.value.into_bytes() else {
                    metrics::counter!(crate::metrics::EVENTS_INVALID).increment(1);
                    continue;
                };
                let channel: &str = &message.channel;
                if channel == shared.control {
                    sink.control(payload);
                } else if let Some(room) = channel.strip_prefix(shared.prefix.as_str()) {
                    sink.deliver(room, payload);
                }
            }
            Err(RecvError::Lagged(lost)) => {
                tracing::error!(lost, "redis reader fell behind; events lost");
                Metrics::messages_dropped("broker_lag", lost);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

impl Broker for RedisBroker {
    fn subscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BrokerError>> {
        async move {
            let shared = &self.shared;
            let channel = room_channel(&shared.prefix, room.as_str());
            shared.wanted().insert(channel.clone());
            // While down, refuse at once instead of queueing behind the
            // reconnect; the supervisor re-subscribes the wanted set anyway.
            let result = if shared.up.load(Ordering::SeqCst) {
                shared.subscribe_live(vec![channel.clone()]).await
            } else {
                Err(BrokerError::Unavailable)
            };
            if result.is_err() {
                shared.wanted().remove(&channel);
            }
            result
        }
        .boxed()
    }

    fn unsubscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BrokerError>> {
        async move {
            let shared = &self.shared;
            let channel = room_channel(&shared.prefix, room.as_str());
            shared.wanted().remove(&channel);
            if shared.up.load(Ordering::SeqCst) {
                if shared.sharded {
                    shared.with_timeout(shared.subscriber.sunsubscribe(channel)).await
                } else {
                    shared.with_timeout(shared.subscriber.unsubscribe(channel)).await
                }
            } else {
                Ok(())
            }
        }
        .boxed()
    }

    fn publish<'a>(&'a self, room: &'a RoomName, payload: Bytes) -> BoxFuture<'a, Result<(), BrokerError>> {
        async move {
            let shared = &self.shared;
            let channel = shared.channel_to_publish(room)?;
            shared.publish_on(channel, payload).await
        }
        .boxed()
    }

    fn publish_durable<'a>(
        &'a self,
        room: &'a RoomName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Position, BrokerError>> {
        async move {
            let shared = &self.shared;
            let channel = shared.channel_to_publish(room)?;
            shared
                .with_timeout(functions::append(&shared.publisher, channel, payload))
                .await
        }
        .boxed()
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        since: u64,
        limit: usize,
        max_gap: u64,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        async move {
            let shared = &self.shared;
            let channel = shared.channel_to_publish(room)?;
            shared
                .with_timeout(functions::history(&shared.publisher, channel, since, limit, max_gap))
                .await
        }
        .boxed()
    }

    fn presence_update<'a>(
        &'a self,
        node: &'a str,
        updates: &'a [RoomUpdate],
    ) -> BoxFuture<'a, Result<Applied, BrokerError>> {
        async move {
            let shared = &self.shared;
            if !shared.can_publish() {
                return Err(BrokerError::Unavailable);
            }
            shared
                .with_timeout(presence::update(&shared.publisher, &shared.prefix, node, updates))
                .await
        }
        .boxed()
    }

    fn presence<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        async move {
            let shared = &self.shared;
            if !shared.can_publish() {
                return Err(BrokerError::Unavailable);
            }
            shared
                .with_timeout(presence::list(&shared.publisher, &shared.prefix, room.as_str()))
                .await
        }
        .boxed()
    }

    fn publish_control(&self, payload: Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        async move {
            let shared = &self.shared;
            if !shared.can_publish() {
                return Err(BrokerError::Unavailable);
            }
            shared.publish_on(shared.control.clone(), payload).await
        }
        .boxed()
    }

    fn store_revocation<'a>(&'a self, user: &'a str, revocation: Revocation) -> BoxFuture<'a, Result<(), BrokerError>> {
        async move {
            let shared = &self.shared;
            if !shared.can_publish() {
                return Err(BrokerError::Unavailable);
            }
            let value = serde_json::to_string(&revocation).map_err(|e| BrokerError::Backend(e.to_string()))?;
            let key = revocations_key(&shared.prefix);
            shared
                .with_timeout(shared.publisher.hset::<i64, _, _>(key, (user, value)))
                .await
                .map(drop)
        }
        .boxed()
    }

    fn revocations(&self, now: u64) -> BoxFuture<'_, Result<Vec<(String, Revocation)>, BrokerError>> {
        async move {
            let shared = &self.shared;
            let key = revocations_key(&shared.prefix);
            let all: HashMap<String, String> = shared.with_timeout(shared.publisher.hgetall(&key)).await?;
            let mut in_force = Vec::new();
            let mut over = Vec::new();
            for (user, value) in all {
                match serde_json::from_str::<Revocation>(&value) {
                    Ok(revocation) if revocation.until > now => in_force.push((user, revocation)),
                    _ => over.push(user),
                }
            }
            // The hash holds only what is in force: each load prunes the rest.
            if !over.is_empty() {
                let _ = shared
                    .with_timeout(shared.publisher.hdel::<i64, _, _>(&key, over))
                    .await;
            }
            Ok(in_force)
        }
        .boxed()
    }

    fn idempotent_reached<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Reached, BrokerError>> {
        async move {
            let shared = &self.shared;
            if !shared.can_publish() {
                return Err(BrokerError::Unavailable);
            }
            let stored: HashMap<String, String> = shared
                .with_timeout(shared.publisher.hgetall(idempotency_key(&shared.prefix, key)))
                .await?;
            Ok(stored
                .into_iter()
                .filter_map(|(room, value)| Some((room, idempotency::decode(&value)?)))
                .collect())
        }
        .boxed()
    }

    fn idempotent_record<'a>(
        &'a self,
        key: &'a str,
        room: &'a str,
        position: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        async move {
            let shared = &self.shared;
            let hash = idempotency_key(&shared.prefix, key);
            let value = idempotency::encode(position);
            shared
                .with_timeout(shared.publisher.hset::<i64, _, _>(&hash, (room, value)))
                .await?;
            let ttl = i64::try_from(idempotency::TTL_S).unwrap_or(i64::MAX);
            shared
                .with_timeout(shared.publisher.expire::<i64, _>(&hash, ttl, None))
                .await
                .map(drop)
        }
        .boxed()
    }

    fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::SeqCst)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            let shared = &self.shared;
            shared.up.store(false, Ordering::SeqCst);
            let _ = tokio::time::timeout(Duration::from_secs(1), shared.subscriber.quit()).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), shared.publisher.quit()).await;
        }
        .boxed()
    }
}
