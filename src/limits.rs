//! Abuse limits that are not a plain number check: the token bucket of each
//! connection's inbound frames, and the per-IP handshake rate.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// A token bucket: `rate` tokens a second, at most `burst` saved.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            refilled_at: now,
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts refusals in a sliding window: sustained abuse is a close, a burst
/// is only an error reply.
#[derive(Clone, Debug)]
pub struct Strikes {
    window: Duration,
    max: u32,
    count: u32,
    since: Instant,
}

impl Strikes {
    pub fn new(max: u32, window: Duration, now: Instant) -> Self {
        Self {
            window,
            max,
            count: 0,
            since: now,
        }
    }

    /// Record one refusal; true when the limit is passed within the window.
    pub fn strike(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.since) > self.window {
            self.count = 0;
            self.since = now;
        }
        self.count += 1;
        self.count > self.max
    }
}

/// Handshakes per second per source IP, shared by the listener.
pub struct IpRateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<IpAddr, TokenBucket>,
}

impl IpRateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            buckets: DashMap::new(),
        }
    }

    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut bucket = self
            .buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now));
        bucket.try_take(now)
    }

    /// Forget addresses whose bucket has refilled: they are indistinguishable
    /// from new ones. Called periodically to bound memory.
    pub fn sweep(&self, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.rate);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.refilled_at) < full_after);
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3.0, t0);
        assert!(bucket.try_take(t0));
        assert!(bucket.try_take(t0));
        assert!(bucket.try_take(t0));
        assert!(!bucket.try_take(t0));
        assert!(bucket.try_take(t0 + Duration::from_millis(100)));
        assert!(!bucket.try_take(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn strikes_close_only_when_sustained() {
        let t0 = Instant::now();
        let mut strikes = Strikes::new(2, Duration::from_secs(10), t0);
        assert!(!strikes.strike(t0));
        assert!(!strikes.strike(t0));
        assert!(strikes.strike(t0));
        let mut strikes = Strikes::new(2, Duration::from_secs(10), t0);
        assert!(!strikes.strike(t0));
        assert!(!strikes.strike(t0));
        assert!(!strikes.strike(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn ip_limiter_is_per_address_and_sweeps() {
        let t0 = Instant::now();
        let limiter = IpRateLimiter::new(1.0, 2.0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.allow(a, t0));
        assert!(limiter.allow(a, t0));
        assert!(!limiter.allow(a, t0));
        assert!(limiter.allow(b, t0));
        limiter.sweep(t0 + Duration::from_secs(5));
        assert_eq!(limiter.tracked(), 0);
    }
}
