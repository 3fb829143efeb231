//! What a run is asked to do: the scenario, the targets, how events are
//! published, and the limits every phase is held to. Built by the CLI or by
//! a caller of the library, checked by [`RunConfig::validate`], and shipped
//! to worker processes as JSON.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The load shapes: the four of issue 4, and two of durable rooms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// `sockets` authenticated sockets held for `duration`; no events.
    Idle,
    /// `sockets` sockets in one room (`org:<org>`); `events` events at `rate`.
    Fanout,
    /// One socket per user; `events` events at `rate`, each to a random `user:` room.
    Targeted,
    /// `sockets` held on average; sockets close and reconnect at `churn_rate`
    /// per second for `duration` while events flow to the org room at `rate`.
    Churn,
    /// Durable rooms over time: `sockets` resuming sockets that disconnect
    /// (cleanly or not) at `churn_rate` per second, durable events at
    /// `rate` to the org room and the users' rooms for `duration`; every
    /// offset accounted, the servers' RSS sampled.
    Soak,
    /// A reconnect storm: `sockets` on the first node, durable events at
    /// `rate`; the node is drained (SIGTERM to `drain_pid`) and every socket
    /// resumes on the second node.
    Storm,
}

impl ScenarioKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioKind::Idle => "idle",
            ScenarioKind::Fanout => "fanout",
            ScenarioKind::Targeted => "targeted",
            ScenarioKind::Churn => "churn",
            ScenarioKind::Soak => "soak",
            ScenarioKind::Storm => "storm",
        }
    }

    /// Whether the scenario publishes events.
    pub fn publishes(self) -> bool {
        self != ScenarioKind::Idle
    }

    /// Whether its sockets resume from their positions when they reconnect
    /// (and keep one offset ledger across their sessions).
    pub fn resumes(self) -> bool {
        matches!(self, ScenarioKind::Soak | ScenarioKind::Storm)
    }

    /// Whether sockets reconnect after a session ends.
    pub fn reconnects(self) -> bool {
        matches!(self, ScenarioKind::Churn | ScenarioKind::Soak | ScenarioKind::Storm)
    }
}

/// What the sockets speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// wsgate v1: token in the `Authorization` header, a welcome frame,
    /// `{"type":"event","room",...}` frames.
    Wsgate,
    /// The bare broadcaster peer: token in `?token=`, otherwise as wsgate.
    Raw,
    /// Socket.IO v5 over Engine.IO v4, WebSocket transport only.
    Socketio,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Wsgate => "wsgate",
            Protocol::Raw => "raw",
            Protocol::Socketio => "socketio",
        }
    }
}

/// Where events are published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum PublishVia {
    /// `PUBLISH <prefix><room> {"event":..,"data":..}`, pipelined on one connection.
    Redis { url: String, channel_prefix: String },
    /// `POST <base>/api/v1/publish` with `Authorization: Bearer <api_key>`.
    Http { base_url: String, api_key: String },
    /// `FCALL wsgate_publish 1 <prefix><room> {"event":..,"data":..}`: a
    /// durable publish, answered with the event's offset; pipelined.
    Fcall { url: String, channel_prefix: String },
}

impl PublishVia {
    /// Durable publishing: every event's offset is known.
    pub fn is_durable(&self) -> bool {
        matches!(self, PublishVia::Fcall { .. })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub scenario: ScenarioKind,
    pub protocol: Protocol,
    /// WebSocket URLs of the targets; sockets are spread over them round-robin.
    pub urls: Vec<String>,
    /// HS256 secret the targets verify tokens with.
    pub secret: String,
    /// Every user is in this org, so every socket is in `org:<org>`.
    pub org: String,
    pub roles: Vec<String>,
    /// User `i` is `<user_prefix><i>`.
    pub user_prefix: String,
    pub token_ttl: Duration,
    /// Sockets (one per user). Targeted: the number of users.
    pub sockets: u64,
    /// Events to publish (fanout, targeted); churn: a cap, 0 = `rate` × `duration`.
    pub events: u64,
    /// Events per second.
    pub rate: f64,
    /// Idle: how long the sockets are held. Churn: how long it churns.
    /// Fanout, targeted: the cap on the publishing phase.
    pub duration: Duration,
    /// Churn: sockets closed and reopened per second.
    pub churn_rate: f64,
    pub event_name: String,
    /// Extra bytes of padding in each event's data.
    pub payload_bytes: usize,
    pub publish: Option<PublishVia>,
    /// Requests in flight when publishing over HTTP.
    pub http_concurrency: usize,
    /// Local addresses the sockets are bound to, round-robin (empty: the
    /// kernel picks). Each has its own ~28k ephemeral ports.
    pub source_ips: Vec<IpAddr>,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Handshakes started per second (0 = as fast as `connect_concurrency` allows).
    pub connect_rate: f64,
    pub connect_timeout: Duration,
    /// Processes holding the sockets: 1 = this one; more = re-spawn
    /// `worker_exe` as workers, each with its share.
    pub procs: usize,
    pub worker_exe: Option<PathBuf>,
    /// Server processes whose CPU and RSS are sampled from /proc.
    pub server_pids: Vec<u32>,
    /// Other processes (e.g. Redis) whose CPU is sampled at the same points
    /// as the servers', and reported apart (`server.aux_*`).
    #[serde(default)]
    pub aux_pids: Vec<u32>,
    /// After the last event: how long to wait for deliveries to stop arriving.
    pub settle: Duration,
    /// Hard cap on the whole run.
    pub timeout: Duration,
    pub allow_remote: bool,
    /// Print a status line on stderr every this often (None: quiet).
    pub progress: Option<Duration>,
    /// Seeds the choice of the targeted scenario's rooms.
    pub seed: u64,
    /// Soak, storm: the share of events published to a random user's room
    /// (the others go to the org room).
    pub user_share: f64,
    /// Soak: the share of disconnects that drop the TCP connection (RST)
    /// instead of closing the WebSocket.
    pub abrupt_share: f64,
    /// Soak: a socket that disconnected stays away up to this long
    /// (uniform). Storm: how long up to a socket waits after its 1012
    /// before it resumes (zero: at once).
    pub away: Duration,
    /// Soak: how often the servers' VmRSS is sampled.
    pub rss_every: Duration,
    /// Storm: the first node's process, sent SIGTERM to drain it.
    pub drain_pid: Option<u32>,
    /// Storm: how long events flow before the SIGTERM.
    pub warmup: Duration,
    /// Storm: how long events flow after the last socket recovered.
    pub cooldown: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            scenario: ScenarioKind::Fanout,
            protocol: Protocol::Wsgate,
            urls: Vec::new(),
            secret: String::new(),
            org: "lt".into(),
            roles: vec!["viewer".into()],
            user_prefix: "lt".into(),
            token_ttl: Duration::from_secs(3600),
            sockets: 100,
            events: 100,
            rate: 100.0,
            duration: Duration::from_secs(10),
            churn_rate: 10.0,
            event_name: "lt".into(),
            payload_bytes: 0,
            publish: None,
            http_concurrency: 16,
            source_ips: default_source_ips(),
            connect_concurrency: 256,
            connect_rate: 0.0,
            connect_timeout: Duration::from_secs(10),
            procs: 1,
            worker_exe: None,
            server_pids: Vec::new(),
            aux_pids: Vec::new(),
            settle: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            allow_remote: false,
            progress: None,
            seed: 1,
            user_share: 0.5,
            abrupt_share: 0.5,
            away: Duration::from_secs(1),
            rss_every: Duration::from_secs(5),
            drain_pid: None,
            warmup: Duration::from_secs(2),
            cooldown: Duration::from_secs(1),
        }
    }
}

/// 127.0.0.2–127.0.0.9: eight times the ephemeral ports of one address.
pub fn default_source_ips() -> Vec<IpAddr> {
    (2..=9).map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))).collect()
}

/// Files one process keeps for itself besides its sockets (stdio, the
/// runtime, the publisher, /proc reads).
pub const RESERVED_FILES: u64 = 200;

impl RunConfig {
    /// Everything that can be checked before a socket is opened.
    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("give at least one target --url".into());
        }
        if self.sockets == 0 {
            return Err("the number of sockets must be at least 1".into());
        }
        if u32::try_from(self.sockets).is_err() {
            return Err("at most 4294967295 sockets".into());
        }
        if self.procs == 0 {
            return Err("procs must be at least 1".into());
        }
        if self.procs > 1 && self.worker_exe.is_none() {
            return Err("several processes need the path of the wsgate-loadtest binary (worker_exe)".into());
        }
        if self.connect_concurrency == 0 {
            return Err("connect concurrency must be at least 1".into());
        }
        if self.scenario.publishes() {
            if self.publish.is_none() {
                return Err(format!(
                    "the {} scenario publishes: give --redis-url or --publish-http",
                    self.scenario.as_str()
                ));
            }
            if !(self.rate.is_finite() && self.rate > 0.0) {
                return Err("the event rate must be a positive number".into());
            }
            if matches!(self.scenario, ScenarioKind::Fanout | ScenarioKind::Targeted) && self.events == 0 {
                return Err("the number of events must be at least 1".into());
            }
        }
        if matches!(self.scenario, ScenarioKind::Churn | ScenarioKind::Soak)
            && !(self.churn_rate.is_finite() && self.churn_rate > 0.0)
        {
            return Err("the churn rate must be a positive number".into());
        }
        if self.scenario.resumes() {
            if self.protocol != Protocol::Wsgate {
                return Err(format!(
                    "the {} scenario resumes wsgate sockets: --protocol wsgate",
                    self.scenario.as_str()
                ));
            }
            if !self.publish.as_ref().is_some_and(PublishVia::is_durable) {
                return Err(format!(
                    "the {} scenario publishes durably: give --redis-url (it publishes with FCALL)",
                    self.scenario.as_str()
                ));
            }
            for (what, share) in [("user share", self.user_share), ("abrupt share", self.abrupt_share)] {
                if !(0.0..=1.0).contains(&share) {
                    return Err(format!("the {what} must be between 0 and 1"));
                }
            }
        }
        if self.scenario == ScenarioKind::Soak && self.rss_every.is_zero() {
            return Err("the RSS sampling interval must be positive".into());
        }
        if self.scenario == ScenarioKind::Storm {
            if self.urls.len() < 2 {
                return Err("the storm needs two nodes: --url <node A> --url <node B>".into());
            }
            if self.drain_pid.is_none() {
                return Err("the storm drains node A: give --drain-pid <its pid>".into());
            }
        }
        if self.protocol != Protocol::Wsgate && self.publish.as_ref().is_some_and(PublishVia::is_durable) {
            return Err("FCALL wsgate_publish is wsgate's: durable publishing needs --protocol wsgate".into());
        }
        for (what, name) in [
            ("org", &self.org),
            ("user prefix", &self.user_prefix),
            ("event name", &self.event_name),
        ]
        .into_iter()
        .chain(self.roles.iter().map(|r| ("role", r)))
        {
            if !is_plain_name(name) {
                return Err(format!("the {what} {name:?} must be 1-64 of A-Z a-z 0-9 _ - ."));
            }
        }
        if self.duration.is_zero() {
            return Err("the duration must be positive".into());
        }
        if self.protocol == Protocol::Socketio
            && let Some(PublishVia::Http { .. }) = self.publish
        {
            return Err("Socket.IO peers have no wsgate HTTP API: publish through Redis".into());
        }
        Ok(())
    }

    /// Events the run will publish at most.
    pub fn planned_events(&self) -> u64 {
        match self.scenario {
            ScenarioKind::Idle => 0,
            ScenarioKind::Fanout | ScenarioKind::Targeted => self.events,
            ScenarioKind::Churn | ScenarioKind::Soak | ScenarioKind::Storm => {
                let span = match self.scenario {
                    // Open-ended: a cap; the storm stops its publisher itself.
                    ScenarioKind::Storm => self.warmup + self.duration + self.cooldown,
                    _ => self.duration,
                };
                let by_rate = (self.rate * span.as_secs_f64()).ceil() as u64;
                if self.events == 0 {
                    by_rate
                } else {
                    self.events.min(by_rate)
                }
            }
        }
    }

    /// The room every socket is in.
    pub fn org_room(&self) -> String {
        format!("org:{}", self.org)
    }

    pub fn user_id(&self, index: u64) -> String {
        format!("{}{index}", self.user_prefix)
    }

    pub fn user_room(&self, index: u64) -> String {
        format!("user:{}{index}", self.user_prefix)
    }

    /// Churn, soak: the mean life of a socket that makes `churn_rate`
    /// reconnects a second over `sockets` sockets.
    pub fn mean_lifetime(&self) -> Duration {
        Duration::from_secs_f64((self.sockets as f64 / self.churn_rate.max(1e-3)).clamp(0.05, 86_400.0))
    }
}

/// Names that are valid in room ids and need no escaping in JSON.
fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fanout() -> RunConfig {
        RunConfig {
            urls: vec!["ws://127.0.0.1:1/v1/ws".into()],
            secret: "x".into(),
            publish: Some(PublishVia::Redis {
                url: "redis://127.0.0.1:6379".into(),
                channel_prefix: "gw:".into(),
            }),
            ..RunConfig::default()
        }
    }

    #[test]
    fn a_complete_fanout_is_valid() {
        assert_eq!(fanout().validate(), Ok(()));
    }

    #[test]
    fn publishing_scenarios_need_a_publisher_and_idle_does_not() {
        let mut config = fanout();
        config.publish = None;
        assert!(config.validate().is_err());
        config.scenario = ScenarioKind::Idle;
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn several_processes_need_the_worker_binary() {
        let mut config = fanout();
        config.procs = 2;
        assert!(config.validate().is_err());
        config.worker_exe = Some("/bin/true".into());
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn names_that_would_need_escaping_are_refused() {
        let mut config = fanout();
        config.org = "a\"b".into();
        assert!(config.validate().is_err());
        config.org = "acme-1.eu".into();
        config.roles = vec!["".into()];
        assert!(config.validate().is_err());
        config.roles = vec!["support".into()];
        assert_eq!(config.validate(), Ok(()));
    }

    fn durable(scenario: ScenarioKind) -> RunConfig {
        RunConfig {
            scenario,
            urls: vec!["ws://127.0.0.1:1".into(), "ws://127.0.0.1:2".into()],
            publish: Some(PublishVia::Fcall {
                url: "redis://127.0.0.1:6379".into(),
                channel_prefix: "gw:".into(),
            }),
            drain_pid: Some(42),
            ..fanout()
        }
    }

    #[test]
    fn soak_and_storm_need_durable_publishing_and_the_storm_two_nodes_and_a_pid() {
        assert_eq!(durable(ScenarioKind::Soak).validate(), Ok(()));
        assert_eq!(durable(ScenarioKind::Storm).validate(), Ok(()));
        for scenario in [ScenarioKind::Soak, ScenarioKind::Storm] {
            let mut plain = durable(scenario);
            plain.publish = fanout().publish;
            assert!(plain.validate().is_err(), "{scenario:?} with PUBLISH");
            let mut socketio = durable(scenario);
            socketio.protocol = Protocol::Socketio;
            assert!(socketio.validate().is_err());
            let mut share = durable(scenario);
            share.user_share = 1.5;
            assert!(share.validate().is_err());
        }
        let mut one_node = durable(ScenarioKind::Storm);
        one_node.urls.truncate(1);
        assert!(one_node.validate().is_err());
        let mut no_pid = durable(ScenarioKind::Storm);
        no_pid.drain_pid = None;
        assert!(no_pid.validate().is_err());
        let mut one_node_soak = durable(ScenarioKind::Soak);
        one_node_soak.urls.truncate(1);
        assert_eq!(one_node_soak.validate(), Ok(()));
        let mut fcall_fanout = durable(ScenarioKind::Fanout);
        assert_eq!(fcall_fanout.validate(), Ok(()));
        fcall_fanout.protocol = Protocol::Raw;
        assert!(fcall_fanout.validate().is_err(), "the peers have no wsgate functions");
    }

    #[test]
    fn the_storm_plans_events_for_its_whole_span() {
        let mut config = durable(ScenarioKind::Storm);
        config.rate = 10.0;
        config.events = 0;
        config.warmup = Duration::from_secs(2);
        config.duration = Duration::from_secs(30);
        config.cooldown = Duration::from_secs(1);
        assert_eq!(config.planned_events(), 330);
    }

    #[test]
    fn churn_events_follow_the_rate_within_the_cap() {
        let mut config = fanout();
        config.scenario = ScenarioKind::Churn;
        config.rate = 50.0;
        config.duration = Duration::from_secs(4);
        config.events = 0;
        assert_eq!(config.planned_events(), 200);
        config.events = 120;
        assert_eq!(config.planned_events(), 120);
    }
}
