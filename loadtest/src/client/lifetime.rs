//! How long a churning socket lives. Lives are uniform in 0.5–1.5 × the
//! mean, the mean being `sockets / churn_rate`, so closes (and reconnects)
//! happen at `churn_rate` per second on average.
//!
//! The first life of each socket is drawn from the renewal process's
//! equilibrium (the remaining life of a socket observed at a random
//! moment), so the run churns at the full rate from its first second
//! instead of only after one mean lifetime.

use std::time::Duration;

/// A life, given a uniform draw in [0, 1).
pub fn next(mean: Duration, u: f64) -> Duration {
    mean.mul_f64(0.5 + u)
}

/// A first life, given two uniform draws in [0, 1). The remaining life has
/// density P(life > x) / mean: flat on [0, 0.5m) (half the mass), then
/// falling linearly to zero at 1.5m.
pub fn first(mean: Duration, u: f64, v: f64) -> Duration {
    if u < 0.5 {
        mean.mul_f64(0.5 * v)
    } else {
        mean.mul_f64(1.5 - v.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(n: usize) -> impl Iterator<Item = (f64, f64)> {
        let mut rng = fastrand::Rng::with_seed(7);
        (0..n).map(move |_| (rng.f64(), rng.f64()))
    }

    #[test]
    fn lives_stay_within_half_and_one_and_a_half_means() {
        let mean = Duration::from_secs(10);
        assert_eq!(next(mean, 0.0), Duration::from_secs(5));
        assert_eq!(next(mean, 0.5), mean);
        for (u, v) in draws(10_000) {
            assert!(next(mean, u) >= Duration::from_secs(5) && next(mean, u) < Duration::from_secs(15));
            assert!(first(mean, u, v) <= Duration::from_secs(15));
        }
    }

    #[test]
    fn first_lives_end_at_the_steady_rate() {
        // In steady state, N sockets close at N / mean per second: within the
        // first 0.4 mean, 40 % of the sockets; the mean remaining life is
        // E[L²] / 2E[L] = 13/24 of the mean.
        let mean = Duration::from_secs(1);
        let n = 200_000;
        let lives: Vec<f64> = draws(n).map(|(u, v)| first(mean, u, v).as_secs_f64()).collect();
        let early = lives.iter().filter(|&&l| l < 0.4).count() as f64 / n as f64;
        assert!((early - 0.4).abs() < 0.01, "{early}");
        let average = lives.iter().sum::<f64>() / n as f64;
        assert!((average - 13.0 / 24.0).abs() < 0.01, "{average}");
    }
}
