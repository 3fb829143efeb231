//! The gateway's own counters, read over HTTP from `/metrics` (Prometheus
//! text): what the servers say they recovered, next to what the sockets
//! counted. A node's metrics URL follows from its WebSocket URL:
//! `ws://host:port/...` → `http://host:port/metrics`.

use std::time::Duration;

use serde::Serialize;

/// The recovery counters of one node (PROTOCOL.md §9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Recoveries {
    /// `wsgate_recoveries_total{result="recovered"}`
    pub recovered: f64,
    /// `wsgate_recoveries_total{result="not_recovered"}`
    pub not_recovered: f64,
    /// `wsgate_events_recovered_total`
    pub events_recovered: f64,
}

impl Recoveries {
    /// `self − earlier`, counter by counter.
    pub fn since(&self, earlier: &Recoveries) -> Recoveries {
        Recoveries {
            recovered: self.recovered - earlier.recovered,
            not_recovered: self.not_recovered - earlier.not_recovered,
            events_recovered: self.events_recovered - earlier.events_recovered,
        }
    }

    pub fn add(&mut self, other: &Recoveries) {
        self.recovered += other.recovered;
        self.not_recovered += other.not_recovered;
        self.events_recovered += other.events_recovered;
    }
}

/// `ws://host:port/anything` → `http://host:port/metrics`.
pub fn metrics_url(ws_url: &str) -> Option<String> {
    let rest = ws_url.strip_prefix("ws://")?;
    let authority = rest.split(['/', '?', '#']).next().filter(|a| !a.is_empty())?;
    Some(format!("http://{authority}/metrics"))
}

/// The sum of every sample of `name` whose labels contain `label` (any
/// sample when `label` is empty). Lines that do not parse are skipped.
pub fn sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(inner) => {
                    let (labels, value) = inner.split_once('}')?;
                    (labels, value)
                }
                None if rest.starts_with(' ') => ("", rest),
                // Another metric whose name starts with `name`.
                None => return None,
            };
            if !label.is_empty() && !labels.split(',').any(|l| l.trim() == label) {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

pub fn parse(text: &str) -> Recoveries {
    Recoveries {
        recovered: sum(text, "wsgate_recoveries_total", r#"result="recovered""#),
        not_recovered: sum(text, "wsgate_recoveries_total", r#"result="not_recovered""#),
        events_recovered: sum(text, "wsgate_events_recovered_total", ""),
    }
}

/// Read a node's recovery counters.
pub async fn recoveries(client: &reqwest::Client, ws_url: &str) -> Result<Recoveries, String> {
    let url = metrics_url(ws_url).ok_or_else(|| format!("{ws_url}: no metrics URL follows from it"))?;
    let response = client
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status().as_u16()));
    }
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    Ok(parse(&text))
}

/// Every node's counters, summed; the first failure is the error.
pub async fn all_recoveries(client: &reqwest::Client, ws_urls: &[String]) -> Result<Recoveries, String> {
    let mut total = Recoveries::default();
    for url in ws_urls {
        total.add(&recoveries(client, url).await?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP wsgate_recoveries_total Resumes answered.
# TYPE wsgate_recoveries_total counter
wsgate_recoveries_total{result=\"recovered\"} 120
wsgate_recoveries_total{result=\"not_recovered\"} 2
wsgate_recoveries_total_extra 99
wsgate_events_recovered_total 3456
wsgate_recovery_reads_total{from=\"node\"} 7
wsgate_connections 10
";

    #[test]
    fn counters_are_read_by_name_and_label() {
        let r = parse(TEXT);
        assert_eq!(
            r,
            Recoveries {
                recovered: 120.0,
                not_recovered: 2.0,
                events_recovered: 3456.0
            }
        );
        assert_eq!(
            sum(TEXT, "wsgate_recoveries_total", ""),
            122.0,
            "every label, not the longer name"
        );
        assert_eq!(sum(TEXT, "wsgate_missing_total", ""), 0.0);
        assert_eq!(
            parse("garbage\nwsgate_events_recovered_total x\n"),
            Recoveries::default()
        );
        let later = Recoveries {
            recovered: 130.0,
            not_recovered: 2.0,
            events_recovered: 4000.0,
        };
        assert_eq!(later.since(&r).events_recovered, 544.0);
    }

    #[test]
    fn the_metrics_url_follows_from_the_websocket_url() {
        assert_eq!(
            metrics_url("ws://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080/metrics")
        );
        assert_eq!(
            metrics_url("ws://127.0.0.1:8081/v1/ws?x=1").as_deref(),
            Some("http://127.0.0.1:8081/metrics")
        );
        assert_eq!(
            metrics_url("ws://[::1]:9/v1/ws").as_deref(),
            Some("http://[::1]:9/metrics")
        );
        assert_eq!(metrics_url("wss://h:1"), None);
        assert_eq!(metrics_url("ws://"), None);
    }
}
