//! Peak-EWMA latency: each backend's response latency, smoothed, jumping up at once
//! on a slow response ("peak") and decaying back over time (as linkerd and Finagle
//! do). The `ewma` strategy weighs it by in-flight requests and picks with two random
//! choices: it routes around a slow backend.
//!
//! The estimate also decays toward zero while nothing is observed, so a backend that
//! was slow, and therefore stopped getting traffic, looks cheap again after a while
//! and is probed: if it has recovered, its first fast responses bring it back.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Candidate;
use super::weighted_random::WeightedRandom;

/// The time constant of the decay. Short enough that a backend 500 times slower
/// than its peers is probed again within 10 s (ln 500 × 1 s ≈ 6.2 s), long enough to
/// smooth over a burst of requests.
pub const DECAY: Duration = Duration::from_secs(1);

/// What a failed request (refused, reset, timed out) counts as: slow, so traffic
/// moves away from a failing backend.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// A latency estimate shared by every request to one backend. Two atomics, updated
/// without a lock: a racing update may lose one sample, which a smoothed estimate
/// does not notice.
#[derive(Debug, Default)]
pub struct PeakEwma {
    /// Estimate in nanoseconds, as f64 bits.
    estimate: AtomicU64,
    /// When it was last updated, in nanoseconds since `epoch()`.
    stamp: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

fn decay_factor(elapsed_ns: u64) -> f64 {
    (-(elapsed_ns as f64) / DECAY.as_nanos() as f64).exp()
}

impl PeakEwma {
    /// Records one response latency (or `FAILURE_PENALTY` for a failure).
    pub fn observe(&self, latency: Duration, now: Instant) {
        let sample = latency.as_nanos() as f64;
        let now_ns = nanos_since_epoch(now);
        let elapsed = now_ns.saturating_sub(self.stamp.swap(now_ns, Ordering::Relaxed));
        let current = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        let next = if sample > current {
            sample
        } else {
            let keep = decay_factor(elapsed);
            current * keep + sample * (1.0 - keep)
        };
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The estimate now, in nanoseconds, decayed by the time since the last sample.
    pub fn estimate(&self, now: Instant) -> f64 {
        let current = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        let elapsed = nanos_since_epoch(now).saturating_sub(self.stamp.load(Ordering::Relaxed));
        current * decay_factor(elapsed)
    }
}

/// The `ewma` strategy: two random choices by weight; the lower
/// latency × (in-flight + 1) / weight wins.
#[derive(Debug)]
pub struct LeastLatency {
    draw: WeightedRandom,
}

impl LeastLatency {
    pub fn new(weights: &[u32]) -> Self {
        LeastLatency {
            draw: WeightedRandom::new(weights),
        }
    }

    pub fn pick<C: Candidate>(
        &self,
        backends: &[C],
        usable: &mut dyn FnMut(usize) -> bool,
    ) -> Option<usize> {
        let (first, second) = self.draw.two_choices(usable)?;
        let now = Instant::now();
        let cost = |i: usize| {
            let backend = &backends[i];
            backend.latency(now) * f64::from(backend.in_flight() + 1)
                / f64::from(backend.weight().max(1))
        };
        Some(if cost(second) < cost(first) {
            second
        } else {
            first
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_slow_response_raises_the_estimate_at_once() {
        let ewma = PeakEwma::default();
        let t0 = epoch() + Duration::from_secs(100);
        ewma.observe(2 * MS, t0);
        ewma.observe(500 * MS, t0 + MS);
        assert!((ewma.estimate(t0 + MS) - 500e6).abs() < 1.0);
    }

    #[test]
    fn fast_responses_pull_the_estimate_down_over_time() {
        let ewma = PeakEwma::default();
        let t0 = epoch() + Duration::from_secs(100);
        ewma.observe(500 * MS, t0);
        // One fast sample 2 s later: most of the old estimate has decayed.
        ewma.observe(2 * MS, t0 + Duration::from_secs(2));
        let estimate = ewma.estimate(t0 + Duration::from_secs(2));
        assert!(estimate < 80e6, "{estimate}");
        assert!(estimate > 2e6, "{estimate}");
    }

    #[test]
    fn without_samples_the_estimate_decays_toward_zero() {
        let ewma = PeakEwma::default();
        let t0 = epoch() + Duration::from_secs(100);
        ewma.observe(500 * MS, t0);
        let later = ewma.estimate(t0 + Duration::from_secs(7));
        // 500 ms × e^-7 ≈ 0.46 ms: below a healthy peer's 1 ms.
        assert!(later < 1e6, "{later}");
    }
}
