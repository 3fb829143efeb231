//! Which Redis servers the broker talks to, and how: the seed list of
//! `redis.url`, the mode (one server, a Cluster, or the master a Sentinel
//! names), credentials (ACL user and password) and TLS, turned into a fred
//! [`Config`] (docs/PROTOCOL.md §12).
//!
//! `check-config` and `serve` both build it, so every mistake in these
//! settings stops the node at start with one line naming the setting.

use fred::types::config::{Config, ServerConfig, TlsConfig, TlsConnector, TlsHostMapping};

use crate::config::{RedisConfig, RedisMode};

/// The fred config for `url` (the value of `redis.url`) in `config`'s mode;
/// an error names the setting at fault.
pub fn fred_config(url: &str, config: &RedisConfig) -> Result<Config, String> {
    servers(url, config).map_err(|e| {
        if e.starts_with("redis.") {
            e
        } else {
            format!("redis.url (WSGATE_REDIS_URL): {e}")
        }
    })
}

fn servers(url: &str, config: &RedisConfig) -> Result<Config, String> {
    let seeds = seeds(url)?;
    let first = &seeds[0];
    let mut fred = Config::from_url_centralized(first).map_err(|e| format!("'{}': {}", redact(first), e.details()))?;
    let mut hosts = Vec::with_capacity(seeds.len());
    for seed in &seeds {
        let parsed = url::Url::parse(seed).map_err(|e| format!("'{}': {e}", redact(seed)))?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("'{}' has no host", redact(seed)))?;
        // The `url` crate keeps IPv6 brackets in host_str; fred wants the address.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = parsed.port().unwrap_or(if config.mode == RedisMode::Sentinel {
            26379
        } else {
            6379
        });
        hosts.push((host, port));
    }
    fred.server = match config.mode {
        RedisMode::Standalone if hosts.len() > 1 => {
            return Err(
                "redis.mode (WSGATE_REDIS_MODE): standalone takes one server; use cluster or sentinel \
                        for several"
                    .into(),
            );
        }
        RedisMode::Standalone => ServerConfig::new_centralized(hosts[0].0.clone(), hosts[0].1),
        RedisMode::Cluster => {
            if fred.database.is_some_and(|db| db != 0) {
                return Err("Redis Cluster has only database 0".into());
            }
            fred.database = None;
            ServerConfig::new_clustered(hosts)
        }
        RedisMode::Sentinel => ServerConfig::Sentinel {
            hosts: hosts
                .into_iter()
                .map(|(host, port)| fred::types::config::Server::new(host, port))
                .collect(),
            service_name: config.sentinel_master.clone(),
            username: None,
            password: config.sentinel_password.as_ref().map(|p| p.expose().to_string()),
        },
    };
    fred.tls = if first.starts_with("rediss://") {
        let rustls = crate::client_tls::client_config(config.ca_file.as_deref())
            .map_err(|e| format!("redis.ca_file (WSGATE_REDIS_CA_FILE): {e}"))?;
        Some(TlsConfig {
            connector: TlsConnector::from((*rustls).clone()),
            // Each node's certificate is checked against the address the
            // cluster (or Sentinel) gives for it.
            hostnames: TlsHostMapping::None,
        })
    } else {
        if config.ca_file.is_some() {
            return Err("redis.ca_file (WSGATE_REDIS_CA_FILE) is set but redis.url is not rediss://".into());
        }
        None
    };
    // A node may start before Redis (a rollout, a cold cluster): keep
    // retrying the first connection as any later one, rather than give up
    // on its first error and stay unready for good.
    fred.fail_fast = false;
    Ok(fred)
}

/// The seed URLs: the first as given, each later bare `host:port` with the
/// first's scheme and credentials.
fn seeds(url: &str) -> Result<Vec<String>, String> {
    let items: Vec<&str> = url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let Some(first) = items.first() else {
        return Err("no Redis server given".into());
    };
    let Some((scheme, rest)) = first.split_once("://") else {
        return Err(format!("'{}' must start with redis:// or rediss://", redact(first)));
    };
    if scheme != "redis" && scheme != "rediss" {
        return Err(format!(
            "'{}': the scheme must be redis:// or rediss:// (TLS); choose a cluster or Sentinel with \
             redis.mode",
            redact(first)
        ));
    }
    let credentials = rest.rsplit_once('@').map(|(credentials, _)| credentials);
    let mut seeds = vec![first.to_string()];
    for item in &items[1..] {
        match item.split_once("://") {
            Some((other, _)) if other != scheme => {
                return Err(format!("'{}': every seed must use {scheme}://", redact(item)));
            }
            Some(_) => seeds.push(item.to_string()),
            None => seeds.push(match credentials {
                Some(credentials) => format!("{scheme}://{credentials}@{item}"),
                None => format!("{scheme}://{item}"),
            }),
        }
    }
    Ok(seeds)
}

/// A seed for an error message: never its password.
fn redact(seed: &str) -> String {
    match (seed.split_once("://"), seed.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://<redacted>@{host}"),
        _ => seed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config(mode: RedisMode) -> RedisConfig {
        RedisConfig {
            mode,
            ..RedisConfig::default()
        }
    }

    #[test]
    fn later_seeds_share_the_first_ones_scheme_and_credentials() {
        let seeds = seeds("rediss://app:pw@10.0.0.1:7000, 10.0.0.2:7001,rediss://10.0.0.3:7002").unwrap();
        assert_eq!(
            seeds,
            [
                "rediss://app:pw@10.0.0.1:7000",
                "rediss://app:pw@10.0.0.2:7001",
                "rediss://10.0.0.3:7002"
            ]
        );
        assert!(seeds_error("redis://a:1,rediss://b:2").contains("every seed must use redis://"));
        assert!(seeds_error("redis-cluster://a:1").contains("redis.mode"));
        assert!(seeds_error("").contains("no Redis server"));
    }

    fn seeds_error(url: &str) -> String {
        seeds(url).unwrap_err()
    }

    #[test]
    fn each_mode_gets_its_server_config() {
        let url = "redis://u:p@127.0.0.1:7000,127.0.0.1:7001";
        let cluster = fred_config(url, &config(RedisMode::Cluster)).unwrap();
        assert!(matches!(&cluster.server, ServerConfig::Clustered { hosts, .. } if hosts.len() == 2));
        assert_eq!(cluster.username.as_deref(), Some("u"));
        assert_eq!(cluster.password.as_deref(), Some("p"));

        let mut sentinel = config(RedisMode::Sentinel);
        sentinel.sentinel_master = "main".into();
        sentinel.sentinel_password = Some(Secret::new("sentinel-pw"));
        let fred = fred_config("redis://127.0.0.1", &sentinel).unwrap();
        let ServerConfig::Sentinel {
            hosts,
            service_name,
            password,
            ..
        } = &fred.server
        else {
            panic!("sentinel config expected");
        };
        assert_eq!((hosts[0].port, service_name.as_str()), (26379, "main"));
        assert_eq!(password.as_deref(), Some("sentinel-pw"));

        let error = fred_config(url, &config(RedisMode::Standalone)).unwrap_err();
        assert!(error.contains("standalone takes one server"), "{error}");
        let error = fred_config("redis://127.0.0.1/3", &config(RedisMode::Cluster)).unwrap_err();
        assert!(error.contains("database 0"), "{error}");
    }

    #[test]
    fn tls_is_set_for_rediss_and_a_ca_file_without_it_is_refused() {
        let tls = fred_config("rediss://127.0.0.1:6380", &config(RedisMode::Standalone)).unwrap();
        assert!(tls.tls.is_some());
        let plain = fred_config("redis://127.0.0.1:6380", &config(RedisMode::Standalone)).unwrap();
        assert!(plain.tls.is_none());
        let mut with_ca = config(RedisMode::Standalone);
        with_ca.ca_file = Some("/nonexistent/ca.pem".into());
        let error = fred_config("redis://127.0.0.1", &with_ca).unwrap_err();
        assert!(error.contains("not rediss://"), "{error}");
        let error = fred_config("rediss://127.0.0.1", &with_ca).unwrap_err();
        assert!(error.contains("redis.ca_file"), "{error}");
    }

    #[test]
    fn errors_never_show_the_password() {
        let error = fred_config("redis://user:hunter2@", &config(RedisMode::Standalone)).unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
