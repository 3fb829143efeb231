//! The one clock every timestamp comes from: Unix-epoch nanoseconds, read
//! once from the wall clock and advanced by the monotonic clock after that.
//!
//! Events carry their publish time and receivers subtract it from their own
//! `now_ns()`, possibly in another process. Wall time alone could step
//! backwards (NTP) in the middle of a run; a monotonic clock alone has no
//! common epoch between processes. Anchoring the monotonic clock to the wall
//! clock once per process gives both, to within the few microseconds the
//! anchors of two processes differ by.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();

fn anchor() -> (Instant, u64) {
    *ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        (Instant::now(), wall)
    })
}

/// Nanoseconds since the Unix epoch; never decreases within a process.
pub fn now_ns() -> u64 {
    let (at, wall) = anchor();
    wall.saturating_add(u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_monotonic_and_near_the_wall_clock() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0) as u64;
        // Within a second of the wall clock: same epoch, same unit.
        assert!(wall.abs_diff(b) < 1_000_000_000);
    }
}
