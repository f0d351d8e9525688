//! What may be tried again, and how much: the safety rules, the replay copy of a
//! request, the backoff, and the budget that keeps a failing pool from a retry storm.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};

use super::{RequestBody, UpstreamError};
use crate::config::{RetryBudgetConfig, RetryPolicy};

/// Methods that may be sent twice (RFC 9110 §9.2.2; SPEC lists these).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// A failure after the request reached the backend that an idempotent request may
/// be tried again for: a reset or broken response, or no response in time.
pub fn retryable_error(err: &UpstreamError) -> bool {
    matches!(
        err,
        UpstreamError::Exchange(_) | UpstreamError::ResponseTimeout(_)
    )
}

/// Backend answers that say "try elsewhere".
pub fn retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// A copy of a request kept to send it again after it reached a backend.
#[derive(Debug)]
pub struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Option<Bytes>,
}

impl Replay {
    /// The copy of `request` if `policy` lets it be tried again once sent: an
    /// idempotent method with an empty or buffered body, and no protocol upgrade.
    pub fn of(request: &Request<RequestBody>, policy: &RetryPolicy) -> Option<Replay> {
        if !policy.after_send || policy.attempts == 0 || !is_idempotent(request.method()) {
            return None;
        }
        if request.headers().contains_key(http::header::UPGRADE) {
            return None;
        }
        let body = match request.body() {
            RequestBody::Empty => None,
            RequestBody::Full(Some(bytes)) => Some(bytes.clone()),
            RequestBody::Full(None) | RequestBody::Streaming(_) => return None,
        };
        Some(Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            body,
        })
    }

    pub fn request(&self) -> Request<RequestBody> {
        let body = match &self.body {
            Some(bytes) => RequestBody::Full(Some(bytes.clone())),
            None => RequestBody::Empty,
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// The pause before retry number `retry` (1-based): `backoff` doubling per retry,
/// capped at 1 s, times a random factor in [0.5, 1.5) so that clients retrying
/// together do not stay in step.
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    if policy.backoff.is_zero() {
        return Duration::ZERO;
    }
    let base = policy
        .backoff
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(Duration::from_secs(1));
    base.mul_f64(0.5 + fastrand::f64())
}

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

    #[test]
    fn only_idempotent_methods_with_a_replayable_body_are_replayed() {
        let policy = RetryPolicy {
            attempts: 2,
            after_send: true,
            budget: None,
            max_body_bytes: 1024,
            backoff: Duration::ZERO,
        };
        let request = |method: Method, body: RequestBody| {
            let mut request = Request::new(body);
            *request.method_mut() = method;
            request
        };
        assert!(Replay::of(&request(Method::GET, RequestBody::Empty), &policy).is_some());
        let put = request(
            Method::PUT,
            RequestBody::Full(Some(Bytes::from_static(b"x"))),
        );
        let replayed = Replay::of(&put, &policy).unwrap().request();
        assert_eq!(replayed.method(), Method::PUT);
        assert!(matches!(replayed.body(), RequestBody::Full(Some(b)) if b == "x"));
        assert!(Replay::of(&request(Method::POST, RequestBody::Empty), &policy).is_none());
        assert!(Replay::of(&request(Method::PATCH, RequestBody::Empty), &policy).is_none());
        let unsent_only = RetryPolicy::UNSENT_ONLY;
        assert!(Replay::of(&request(Method::GET, RequestBody::Empty), &unsent_only).is_none());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = RetryPolicy {
            backoff: Duration::from_millis(100),
            ..RetryPolicy::UNSENT_ONLY
        };
        for (retry, base) in [(1, 100), (2, 200), (3, 400), (8, 1000)] {
            let pause = backoff(&policy, retry);
            assert!(
                pause >= Duration::from_millis(base / 2)
                    && pause < Duration::from_millis(base * 3 / 2),
                "retry {retry}: {pause:?}"
            );
        }
        assert_eq!(backoff(&RetryPolicy::UNSENT_ONLY, 1), Duration::ZERO);
    }
}
