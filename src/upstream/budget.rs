//! The retry budget of an upstream: retries allowed as a share of its recent
//! requests, so that a failing pool does not turn into a retry storm.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::config::RetryBudgetConfig;

/// Seconds in the budget's sliding window.
const WINDOW_SECONDS: usize = 10;

/// Retries allowed over the last 10 s: `percent` of the requests, or
/// `min_per_second` × 10, whichever is more. Counted in one-second buckets of
/// atomics; a bucket is reset when its second comes round again. Two requests
/// racing over that reset may lose a count, which a budget can afford.
#[derive(Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    buckets: [Bucket; WINDOW_SECONDS],
}

#[derive(Debug, Default)]
struct Bucket {
    /// The second (since the process epoch) the counts belong to.
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl RetryBudget {
    pub fn new(config: RetryBudgetConfig) -> Self {
        RetryBudget {
            config,
            buckets: Default::default(),
        }
    }

    /// Counts one request (its first try).
    pub fn record_request(&self, now: Instant) {
        self.bucket(now).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_retry(&self, now: Instant) -> bool {
        let current = seconds(now);
        let (mut requests, mut retries) = (0u64, 0u64);
        for bucket in &self.buckets {
            let second = bucket.second.load(Ordering::Relaxed);
            if current.saturating_sub(second) < WINDOW_SECONDS as u64 {
                requests += u64::from(bucket.requests.load(Ordering::Relaxed));
                retries += u64::from(bucket.retries.load(Ordering::Relaxed));
            }
        }
        let floor = u64::from(self.config.min_per_second) * WINDOW_SECONDS as u64;
        let share = requests * u64::from(self.config.percent) / 100;
        if retries >= share.max(floor) {
            return false;
        }
        self.bucket(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The bucket of `now`'s second, emptied first if it still holds an older one.
    fn bucket(&self, now: Instant) -> &Bucket {
        let second = seconds(now);
        let bucket = &self.buckets[second as usize % WINDOW_SECONDS];
        let held = bucket.second.load(Ordering::Relaxed);
        if held != second
            && bucket
                .second
                .compare_exchange(held, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
        }
        bucket
    }
}

/// Whole seconds on the process clock.
fn seconds(now: Instant) -> u64 {
    super::backend::clock_nanos(now) / 1_000_000_000
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn budget(percent: u32, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            percent,
            min_per_second,
        })
    }

    #[test]
    fn the_budget_allows_its_share_of_the_requests() {
        let budget = budget(20, 0);
        let now = Instant::now();
        for _ in 0..100 {
            budget.record_request(now);
        }
        let allowed = (0..100).filter(|_| budget.try_retry(now)).count();
        assert_eq!(allowed, 20);
    }

    #[test]
    fn the_floor_allows_retries_on_a_quiet_upstream() {
        let budget = budget(20, 1);
        let now = Instant::now();
        budget.record_request(now);
        // 1 per second over the 10 s window.
        assert_eq!((0..100).filter(|_| budget.try_retry(now)).count(), 10);
    }

    #[test]
    fn the_window_slides() {
        let budget = budget(50, 0);
        let start = Instant::now();
        for _ in 0..10 {
            budget.record_request(start);
        }
        assert_eq!((0..10).filter(|_| budget.try_retry(start)).count(), 5);
        // Eleven seconds on, the old requests and retries are out of the window.
        let later = start + Duration::from_secs(11);
        assert!(!budget.try_retry(later));
        for _ in 0..4 {
            budget.record_request(later);
        }
        assert_eq!((0..10).filter(|_| budget.try_retry(later)).count(), 2);
    }
}
