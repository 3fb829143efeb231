//! The command line: one subcommand per scenario, the options they share,
//! and their translation into a [`RunConfig`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::Protocol;
use crate::config::{PublishVia, RESERVED_FILES, RunConfig, ScenarioKind, default_source_ips};

#[derive(Debug, Parser)]
#[command(
    name = "wsgate-loadtest",
    version,
    about = "Load generator for wsgate and its peers: many sockets, latency, throughput and server cost.",
    after_help = "Exit status: 0 clean run, 1 the run finished but was not clean (failed connects, loss, \
                  duplicates, misrouted events, publish errors), 2 the run could not be made."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hold authenticated sockets for a while: connect cost, memory per connection, idle CPU.
    Idle {
        /// Sockets to open and hold.
        #[arg(long, default_value_t = 1000)]
        sockets: u64,
        /// Seconds to hold the sockets.
        #[arg(long, default_value = "10", value_parser = seconds)]
        duration: Duration,
        #[command(flatten)]
        common: Common,
    },
    /// Sockets in one room (org:<org>); events at a rate to that room.
    Fanout {
        /// Sockets, all in the org room.
        #[arg(long, default_value_t = 1000)]
        sockets: u64,
        /// Events to publish.
        #[arg(long, default_value_t = 100)]
        events: u64,
        /// Events per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Cap on the publishing phase, seconds.
        #[arg(long, default_value = "60", value_parser = seconds)]
        duration: Duration,
        #[command(flatten)]
        common: Common,
    },
    /// One socket per user; each event to a random user's room.
    Targeted {
        /// Users, one socket each.
        #[arg(long, default_value_t = 1000)]
        users: u64,
        /// Events to publish, each to one random user.
        #[arg(long, default_value_t = 1000)]
        events: u64,
        /// Events per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Cap on the publishing phase, seconds.
        #[arg(long, default_value = "60", value_parser = seconds)]
        duration: Duration,
        #[command(flatten)]
        common: Common,
    },
    /// Sockets close and reconnect at a rate while events flow to the org room.
    Churn {
        /// Sockets held at any time (about).
        #[arg(long, default_value_t = 1000)]
        sockets: u64,
        /// Reconnects per second over all sockets.
        #[arg(long, default_value_t = 100.0)]
        churn_rate: f64,
        /// Events per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds of churn (and of events).
        #[arg(long, default_value = "10", value_parser = seconds)]
        duration: Duration,
        /// Events at most (0: rate × duration).
        #[arg(long, default_value_t = 0)]
        events: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Durable rooms over time: resuming sockets that come and go, durable events (FCALL), every
    /// offset accounted, the servers' RSS sampled.
    Soak {
        /// Sockets, each in the org room and its user's room.
        #[arg(long, default_value_t = 100)]
        sockets: u64,
        /// Durable events per second (FCALL wsgate_publish).
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Seconds of events (and of churn).
        #[arg(long, default_value = "60", value_parser = seconds)]
        duration: Duration,
        /// Disconnects (and resumes) per second over all sockets.
        #[arg(long, default_value_t = 5.0)]
        churn_rate: f64,
        #[command(flatten)]
        durable: DurableArgs,
        /// Share of the disconnects that drop the TCP connection (reset, no close frame).
        #[arg(long, default_value_t = 0.5)]
        abrupt_share: f64,
        /// A socket stays away up to this many seconds (uniform) before it resumes.
        #[arg(long, default_value = "1", value_parser = seconds)]
        away: Duration,
        /// Seconds between two samples of the --server-pid processes' VmRSS.
        #[arg(long, default_value = "5", value_parser = seconds)]
        rss_every: Duration,
        #[command(flatten)]
        common: Common,
    },
    /// A reconnect storm: sockets on node A (first --url), durable events; node A is drained
    /// (SIGTERM) and every socket resumes on node B (second --url).
    Storm {
        /// Sockets, all on node A at first.
        #[arg(long, default_value_t = 1000)]
        sockets: u64,
        /// Durable events per second (FCALL wsgate_publish).
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Node A's process: sent SIGTERM after the warm-up.
        #[arg(long, value_name = "PID")]
        drain_pid: u32,
        /// Seconds of events before the SIGTERM.
        #[arg(long, default_value = "2", value_parser = seconds)]
        warmup: Duration,
        /// Seconds after the SIGTERM to wait for every socket to recover.
        #[arg(long, default_value = "30", value_parser = seconds)]
        duration: Duration,
        /// Seconds of events after the last socket recovered.
        #[arg(long, default_value = "1", value_parser = seconds)]
        cooldown: Duration,
        /// After its 1012 a socket waits up to this many seconds (uniform) before it resumes on
        /// node B: events to recover (0: at once).
        #[arg(long, default_value = "0", value_parser = seconds)]
        away: Duration,
        #[command(flatten)]
        durable: DurableArgs,
        #[command(flatten)]
        common: Common,
    },
    /// (internal) hold a share of the sockets for a parent process.
    #[command(hide = true)]
    Worker,
}

/// What the soak and the storm share.
#[derive(Debug, Args)]
pub struct DurableArgs {
    /// Share of the events published to a random user's room (the rest: the org room).
    #[arg(long, default_value_t = 0.5)]
    pub user_share: f64,
    /// Events at most (0: no cap but the rate).
    #[arg(long, default_value_t = 0)]
    pub events: u64,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Target WebSocket URL; repeat for several nodes (sockets go round-robin).
    /// A bare ws://host:port gets /v1/ws (wsgate) or /socket.io/ (socketio).
    #[arg(long = "url", required = true, value_name = "URL")]
    pub urls: Vec<String>,
    #[arg(long, value_enum, default_value_t = Protocol::Wsgate)]
    pub protocol: Protocol,
    /// HS256 secret the targets verify tokens with.
    #[arg(long, env = "WSGATE_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Every user's org_id claim; the fan-out room is org:<org>.
    #[arg(long, default_value = "lt")]
    pub org: String,
    /// Role claims (repeatable).
    #[arg(long = "role", default_values_t = vec!["viewer".to_string()])]
    pub roles: Vec<String>,
    /// User i is <prefix><i>.
    #[arg(long, default_value = "lt")]
    pub user_prefix: String,
    /// Publish with PUBLISH <channel-prefix><room> on this Redis.
    #[arg(long, value_name = "redis://HOST:PORT", conflicts_with = "publish_http")]
    pub redis_url: Option<String>,
    /// Redis channel prefix of the targets.
    #[arg(long, default_value = "gw:")]
    pub channel_prefix: String,
    /// Publish durably on --redis-url: FCALL wsgate_publish 1 <prefix><room> <payload>, answered
    /// with the event's offset, instead of PUBLISH; every socket's offsets are accounted
    /// (implied by soak and storm).
    #[arg(long, requires = "redis_url", conflicts_with = "publish_http")]
    pub fcall: bool,
    /// Publish through the gateway's HTTP API at this base URL (http://host:port).
    #[arg(long, value_name = "BASE_URL", requires = "api_key")]
    pub publish_http: Option<String>,
    /// API key for --publish-http.
    #[arg(long, env = "WSGATE_LOADTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// HTTP publish requests in flight.
    #[arg(long, default_value_t = 16)]
    pub http_concurrency: usize,
    /// Padding bytes added to each event's data.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Local address to bind sockets to (repeatable); default 127.0.0.2–127.0.0.9.
    #[arg(long = "source-ip", value_name = "IP")]
    pub source_ips: Vec<IpAddr>,
    /// Let the kernel pick the local address.
    #[arg(long, conflicts_with = "source_ips")]
    pub no_source_ips: bool,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Handshakes started per second (0: no pacing).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Seconds a connect may take, up to the welcome.
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub connect_timeout: Duration,
    /// Processes holding the sockets (0: as many as the open-files limit needs).
    #[arg(long, default_value_t = 0)]
    pub procs: usize,
    /// Server process to measure (CPU, RSS); repeatable.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// Other process to measure apart from the servers (e.g. Redis): its CPU over the same
    /// phases, as `server.aux_*`; repeatable.
    #[arg(long = "aux-pid", value_name = "PID")]
    pub aux_pids: Vec<u32>,
    /// Seconds to wait for deliveries after the last event.
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub settle: Duration,
    /// Hard cap on the whole run, seconds.
    #[arg(long, default_value = "300", value_parser = seconds)]
    pub timeout: Duration,
    /// Allow targets outside loopback.
    #[arg(long)]
    pub allow_remote: bool,
    /// No status line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Write a markdown report here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Seed of the targeted scenario's room choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a valid number of seconds"))
}

impl Command {
    /// The run's config and the markdown path; `None` for `worker`.
    /// `files` is this process's open-files limit (for `--procs 0`).
    pub fn into_config(self, files: u64) -> Option<(RunConfig, Option<PathBuf>)> {
        let mut config = RunConfig::default();
        let common = match self {
            Command::Idle {
                sockets,
                duration,
                common,
            } => {
                config.scenario = ScenarioKind::Idle;
                config.sockets = sockets;
                config.duration = duration;
                common
            }
            Command::Fanout {
                sockets,
                events,
                rate,
                duration,
                common,
            } => {
                config.scenario = ScenarioKind::Fanout;
                (config.sockets, config.events, config.rate, config.duration) = (sockets, events, rate, duration);
                common
            }
            Command::Targeted {
                users,
                events,
                rate,
                duration,
                common,
            } => {
                config.scenario = ScenarioKind::Targeted;
                (config.sockets, config.events, config.rate, config.duration) = (users, events, rate, duration);
                common
            }
            Command::Churn {
                sockets,
                churn_rate,
                rate,
                duration,
                events,
                common,
            } => {
                config.scenario = ScenarioKind::Churn;
                (config.sockets, config.events, config.rate, config.duration) = (sockets, events, rate, duration);
                config.churn_rate = churn_rate;
                common
            }
            Command::Soak {
                sockets,
                rate,
                duration,
                churn_rate,
                durable,
                abrupt_share,
                away,
                rss_every,
                common,
            } => {
                config.scenario = ScenarioKind::Soak;
                (config.sockets, config.rate, config.duration) = (sockets, rate, duration);
                (config.events, config.user_share) = (durable.events, durable.user_share);
                config.churn_rate = churn_rate;
                (config.abrupt_share, config.away, config.rss_every) = (abrupt_share, away, rss_every);
                common
            }
            Command::Storm {
                sockets,
                rate,
                drain_pid,
                warmup,
                duration,
                cooldown,
                away,
                durable,
                common,
            } => {
                config.scenario = ScenarioKind::Storm;
                config.away = away;
                (config.sockets, config.rate, config.duration) = (sockets, rate, duration);
                (config.events, config.user_share) = (durable.events, durable.user_share);
                config.drain_pid = Some(drain_pid);
                (config.warmup, config.cooldown) = (warmup, cooldown);
                common
            }
            Command::Worker => return None,
        };
        let durable = common.fcall || config.scenario.resumes();
        config.protocol = common.protocol;
        config.urls = common.urls;
        config.secret = common.secret;
        config.org = common.org;
        config.roles = common.roles;
        config.user_prefix = common.user_prefix;
        config.publish = match (common.publish_http, common.redis_url) {
            (Some(base_url), _) => Some(PublishVia::Http {
                base_url,
                api_key: common.api_key.unwrap_or_default(),
            }),
            (None, Some(url)) if durable => Some(PublishVia::Fcall {
                url,
                channel_prefix: common.channel_prefix,
            }),
            (None, Some(url)) => Some(PublishVia::Redis {
                url,
                channel_prefix: common.channel_prefix,
            }),
            (None, None) => None,
        };
        config.http_concurrency = common.http_concurrency;
        config.payload_bytes = common.payload_bytes;
        config.source_ips = match (common.no_source_ips, common.source_ips.is_empty()) {
            (true, _) => Vec::new(),
            (false, true) => default_source_ips(),
            (false, false) => common.source_ips,
        };
        config.connect_concurrency = common.connect_concurrency;
        config.connect_rate = common.connect_rate;
        config.connect_timeout = common.connect_timeout;
        config.procs = if common.procs == 0 {
            auto_procs(config.sockets, files)
        } else {
            common.procs
        };
        config.worker_exe = std::env::current_exe().ok();
        config.server_pids = common.server_pids;
        config.aux_pids = common.aux_pids;
        config.settle = common.settle;
        config.timeout = common.timeout;
        config.allow_remote = common.allow_remote;
        config.progress = (!common.quiet).then_some(Duration::from_secs(1));
        config.seed = common.seed;
        Some((config, common.out))
    }
}

/// Enough processes that none exceeds the open-files limit.
pub fn auto_procs(sockets: u64, files: u64) -> usize {
    let per_process = files.saturating_sub(RESERVED_FILES).max(1);
    usize::try_from(sockets.div_ceil(per_process).max(1)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> RunConfig {
        let cli = Cli::try_parse_from(args).expect("valid command line");
        cli.command.into_config(20_000).expect("a scenario").0
    }

    #[test]
    fn fanout_options_reach_the_config() {
        let config = parse(&[
            "wsgate-loadtest",
            "fanout",
            "--url",
            "ws://127.0.0.1:8080",
            "--url",
            "ws://127.0.0.1:8081",
            "--secret",
            "s",
            "--sockets",
            "5000",
            "--events",
            "200",
            "--rate",
            "50",
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--server-pid",
            "42",
            "--quiet",
        ]);
        assert_eq!(config.scenario, ScenarioKind::Fanout);
        assert_eq!(config.urls.len(), 2);
        assert_eq!((config.sockets, config.events, config.rate), (5000, 200, 50.0));
        assert_eq!(config.server_pids, vec![42]);
        assert_eq!(config.procs, 1);
        assert_eq!(config.source_ips, default_source_ips());
        assert!(config.progress.is_none());
        assert!(
            matches!(config.publish, Some(PublishVia::Redis { ref channel_prefix, .. }) if channel_prefix == "gw:")
        );
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn churn_and_http_publishing_parse() {
        let config = parse(&[
            "wsgate-loadtest",
            "churn",
            "--url",
            "ws://127.0.0.1:8080",
            "--secret",
            "s",
            "--churn-rate",
            "200",
            "--duration",
            "2.5",
            "--publish-http",
            "http://127.0.0.1:8080",
            "--api-key",
            "k",
            "--no-source-ips",
        ]);
        assert_eq!(config.scenario, ScenarioKind::Churn);
        assert_eq!(config.duration, Duration::from_millis(2500));
        assert_eq!(config.churn_rate, 200.0);
        assert!(config.source_ips.is_empty());
        assert!(matches!(config.publish, Some(PublishVia::Http { ref api_key, .. }) if api_key == "k"));
    }

    #[test]
    fn redis_and_http_publishing_exclude_each_other() {
        let both = Cli::try_parse_from([
            "wsgate-loadtest",
            "fanout",
            "--url",
            "ws://127.0.0.1:1",
            "--secret",
            "s",
            "--redis-url",
            "redis://127.0.0.1:1",
            "--publish-http",
            "http://127.0.0.1:1",
            "--api-key",
            "k",
        ]);
        assert!(both.is_err());
    }

    #[test]
    fn fcall_publishes_durably_and_needs_redis() {
        let config = parse(&[
            "wsgate-loadtest",
            "targeted",
            "--url",
            "ws://127.0.0.1:8080",
            "--secret",
            "s",
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--fcall",
        ]);
        assert!(
            matches!(config.publish, Some(PublishVia::Fcall { ref channel_prefix, .. }) if channel_prefix == "gw:")
        );
        assert_eq!(config.validate(), Ok(()));
        let without_redis = Cli::try_parse_from([
            "wsgate-loadtest",
            "fanout",
            "--url",
            "ws://127.0.0.1:1",
            "--secret",
            "s",
            "--publish-http",
            "http://127.0.0.1:1",
            "--api-key",
            "k",
            "--fcall",
        ]);
        assert!(without_redis.is_err());
    }

    #[test]
    fn soak_options_reach_the_config() {
        let config = parse(&[
            "wsgate-loadtest",
            "soak",
            "--url",
            "ws://127.0.0.1:8080",
            "--url",
            "ws://127.0.0.1:8081",
            "--secret",
            "s",
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--sockets",
            "50",
            "--rate",
            "20",
            "--duration",
            "60",
            "--churn-rate",
            "10",
            "--user-share",
            "0.3",
            "--abrupt-share",
            "0.25",
            "--away",
            "0.5",
            "--rss-every",
            "2",
            "--server-pid",
            "7",
        ]);
        assert_eq!(config.scenario, ScenarioKind::Soak);
        assert!(
            matches!(config.publish, Some(PublishVia::Fcall { .. })),
            "soak implies FCALL"
        );
        assert_eq!((config.sockets, config.rate, config.churn_rate), (50, 20.0, 10.0));
        assert_eq!((config.user_share, config.abrupt_share), (0.3, 0.25));
        assert_eq!(
            (config.away, config.rss_every),
            (Duration::from_millis(500), Duration::from_secs(2))
        );
        assert_eq!(config.planned_events(), 1200);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn storm_options_reach_the_config_and_need_a_drain_pid() {
        let config = parse(&[
            "wsgate-loadtest",
            "storm",
            "--url",
            "ws://127.0.0.1:8080",
            "--url",
            "ws://127.0.0.1:8081",
            "--secret",
            "s",
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--sockets",
            "200",
            "--drain-pid",
            "4242",
            "--server-pid",
            "4343",
            "--warmup",
            "1.5",
        ]);
        assert_eq!(config.scenario, ScenarioKind::Storm);
        assert_eq!(config.drain_pid, Some(4242));
        assert_eq!(config.server_pids, vec![4343]);
        assert_eq!(config.warmup, Duration::from_millis(1500));
        assert_eq!(config.duration, Duration::from_secs(30));
        assert!(config.away.is_zero(), "the storm resumes at once unless told");
        assert!(matches!(config.publish, Some(PublishVia::Fcall { .. })));
        assert_eq!(config.validate(), Ok(()));
        let no_pid = Cli::try_parse_from([
            "wsgate-loadtest",
            "storm",
            "--url",
            "ws://127.0.0.1:1",
            "--url",
            "ws://127.0.0.1:2",
            "--secret",
            "s",
            "--redis-url",
            "redis://127.0.0.1:1",
        ]);
        assert!(no_pid.is_err());
    }

    #[test]
    fn processes_follow_the_open_files_limit() {
        assert_eq!(auto_procs(1_000, 20_000), 1);
        assert_eq!(auto_procs(19_800, 20_000), 1);
        assert_eq!(auto_procs(19_801, 20_000), 2);
        assert_eq!(auto_procs(100_000, 20_000), 6);
    }
}
