//! What a run is asked to do: the scenario, the targets, how events are
//! published, and the limits every phase is held to. Built by the CLI or by
//! a caller of the library, checked by [`RunConfig::validate`], and shipped
//! to worker processes as JSON.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The four load shapes of issue 4.
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
}

impl ScenarioKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioKind::Idle => "idle",
            ScenarioKind::Fanout => "fanout",
            ScenarioKind::Targeted => "targeted",
            ScenarioKind::Churn => "churn",
        }
    }

    /// Whether the scenario publishes events.
    pub fn publishes(self) -> bool {
        self != ScenarioKind::Idle
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
    /// After the last event: how long to wait for deliveries to stop arriving.
    pub settle: Duration,
    /// Hard cap on the whole run.
    pub timeout: Duration,
    pub allow_remote: bool,
    /// Print a status line on stderr every this often (None: quiet).
    pub progress: Option<Duration>,
    /// Seeds the choice of the targeted scenario's rooms.
    pub seed: u64,
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
            settle: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            allow_remote: false,
            progress: None,
            seed: 1,
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
            if self.scenario != ScenarioKind::Churn && self.events == 0 {
                return Err("the number of events must be at least 1".into());
            }
        }
        if self.scenario == ScenarioKind::Churn && !(self.churn_rate.is_finite() && self.churn_rate > 0.0) {
            return Err("the churn rate must be a positive number".into());
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
            ScenarioKind::Churn => {
                let by_rate = (self.rate * self.duration.as_secs_f64()).ceil() as u64;
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

    /// Churn: the mean life of a socket that makes `churn_rate` reconnects a
    /// second over `sockets` sockets.
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
