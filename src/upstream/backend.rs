//! One backend: its address and weight in the current config, and the runtime state
//! (in-flight count, health, pooled connections) that outlives config reloads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::balance::{Candidate, PeakEwma};
use crate::config::defaults::DEFAULT_MAX_IDLE_PER_BACKEND;
use crate::metrics::BackendMetrics;

use super::pool::Pool;

/// A backend as one config sees it.
#[derive(Debug)]
pub struct Backend {
    pub address: SocketAddr,
    pub weight: u32,
    /// The DNS name the address was found by (an A/AAAA name, or an SRV
    /// target): sent as SNI and as the health checks' `Host`.
    pub dns_name: Option<Arc<str>>,
    /// An SRV record's priority (0 for other backends): a backend is picked only
    /// while no backend of a lower value is usable.
    pub priority: u16,
    /// The upstream's `slow_start` ramp.
    pub slow_start: Option<Duration>,
    pub metrics: BackendMetrics,
    /// Shared with every request to this backend and carried into the next config
    /// when the backend is still there, so a reload resets nothing traffic measured.
    pub state: Arc<BackendState>,
}

/// Runtime state of one backend. Atomics only: every request to the backend touches
/// it, from any worker thread.
#[derive(Debug)]
pub struct BackendState {
    in_flight: AtomicU32,
    /// Response latency estimate, fed only when the strategy reads it.
    latency: PeakEwma,
    /// The active health checks' verdict (always true without checks).
    healthy: AtomicBool,
    /// Set while outlier detection keeps the backend out of rotation.
    ejected: AtomicBool,
    /// Failures in a row, for outlier detection.
    consecutive_failures: AtomicU32,
    /// Times ejected in a row, lengthening each ejection.
    ejections: AtomicU32,
    /// When the backend came back (nanoseconds since the process clock's start,
    /// plus one); 0 when it is not warming up.
    warming_since: AtomicU64,
    /// Shared by the backends of one upstream: requests queued for a free slot.
    slots: Arc<SlotWaiters>,
    pool: Pool,
}

/// Requests waiting for a backend of the upstream to fall under
/// `max_connections_per_backend`, and the signal that one did.
#[derive(Debug, Default)]
pub struct SlotWaiters {
    pub freed: tokio::sync::Notify,
    /// Read by every finishing request: the signal is sent only when someone waits.
    pub waiting: AtomicU32,
}

/// Weights as strategies see them: scaled so that a warming backend's fraction
/// of its weight stays an integer (ratios between backends are what count).
pub const WEIGHT_SCALE: u32 = 1024;

/// Share of its weight a backend takes when it starts warming up.
const WARM_START: f64 = 0.1;

// === impl Backend ===

impl Backend {
    /// The share of its weight the backend takes now: from 10 % when it came back
    /// to 100 % once `slow_start` has passed; 1 when not warming (the common case
    /// costs one relaxed load, and no clock read).
    pub fn warmth(&self) -> f64 {
        let Some(ramp) = self.slow_start else {
            return 1.0;
        };
        let since = self.state.warming_since.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let elapsed = clock_nanos(Instant::now()).saturating_sub(since - 1);
        let ramp = ramp.as_nanos().max(1) as u64;
        if elapsed >= ramp {
            // Warm: later picks skip the clock. Lost only to a newer warm-up.
            let _ = self.state.warming_since.compare_exchange(
                since,
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return 1.0;
        }
        WARM_START + (1.0 - WARM_START) * elapsed as f64 / ramp as f64
    }
}

impl Candidate for Backend {
    fn weight(&self) -> u32 {
        let weight = self.weight * WEIGHT_SCALE;
        if self.slow_start.is_none() {
            return weight;
        }
        ((f64::from(weight) * self.warmth()) as u32).max(1)
    }

    fn in_flight(&self) -> u32 {
        self.state.in_flight()
    }

    fn latency(&self, now: std::time::Instant) -> f64 {
        self.state.latency.estimate(now)
    }
}

// === impl BackendState ===

impl Default for BackendState {
    fn default() -> Self {
        BackendState::new(true, Arc::default())
    }
}

impl BackendState {
    /// A backend never seen before, healthy or not until checked; `slots` is shared
    /// with the other backends of its upstream.
    pub fn new(healthy: bool, slots: Arc<SlotWaiters>) -> Self {
        BackendState {
            in_flight: AtomicU32::new(0),
            latency: PeakEwma::default(),
            healthy: AtomicBool::new(healthy),
            ejected: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            warming_since: AtomicU64::new(0),
            slots,
            pool: Pool::new(DEFAULT_MAX_IDLE_PER_BACKEND),
        }
    }

    /// Whether a strategy may pick the backend: healthy and not ejected.
    pub fn is_usable(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ejected.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Marks the backend up or down; returns its previous state.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed)
    }

    pub fn latency(&self) -> &PeakEwma {
        &self.latency
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The backend came back (healthy again, ejection over, added by a reload):
    /// with `slow_start`, its weight ramps up from here.
    pub fn start_warming(&self) {
        let now = clock_nanos(Instant::now()) + 1;
        self.warming_since.store(now, Ordering::Relaxed);
    }

    pub fn slots(&self) -> &Arc<SlotWaiters> {
        &self.slots
    }

    pub(crate) fn start_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request in unless `limit` are in flight already.
    pub(crate) fn try_start_request(&self, limit: u32) -> bool {
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    pub(super) fn finish_request(&self) {
        // SeqCst on both sides (here and in the waiter) so that either the waiter
        // sees the freed slot or this sees the waiter; on x86 it costs nothing more.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.slots.waiting.load(Ordering::SeqCst) != 0 {
            self.slots.freed.notify_waiters();
        }
    }

    /// Counts a failed exchange; returns the failures in a row so far.
    pub(super) fn record_failure(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts a good exchange: the run of failures is over. Read first, so the
    /// common case does not write the shared cache line.
    pub(super) fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Takes the backend out of rotation unless it already is; returns how many
    /// times in a row it has been ejected, or `None` if another request did it.
    pub(super) fn eject(&self) -> Option<u32> {
        self.ejected
            .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.ejections.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Ends an ejection: the backend is back in rotation with a clean record.
    pub(super) fn return_from_ejection(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.start_warming();
        self.ejected.store(false, Ordering::Relaxed);
    }

    pub(super) fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Forgets past ejections, after the backend has behaved for a while.
    pub(super) fn forgive_ejections(&self) {
        self.ejections.store(0, Ordering::Relaxed);
    }
}

/// Nanoseconds from the first call in this process to `now`: the one clock the
/// upstream's atomics store instants in.
pub(super) fn clock_nanos(now: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    now.saturating_duration_since(*START.get_or_init(Instant::now))
        .as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(weight: u32, slow_start: Option<Duration>) -> Backend {
        Backend {
            address: "127.0.0.1:9001".parse().unwrap(),
            weight,
            dns_name: None,
            priority: 0,
            slow_start,
            metrics: crate::metrics::Metrics::new().backend("u", "b"),
            state: Arc::default(),
        }
    }

    #[test]
    fn without_slow_start_or_warm_up_the_weight_is_whole() {
        let plain = backend(3, None);
        plain.state.start_warming();
        assert_eq!(plain.weight(), 3 * WEIGHT_SCALE);
        let idle = backend(3, Some(Duration::from_secs(30)));
        assert_eq!((idle.warmth(), idle.weight()), (1.0, 3 * WEIGHT_SCALE));
    }

    #[test]
    fn a_warming_backend_ramps_from_a_tenth_to_whole() {
        let warming = backend(2, Some(Duration::from_secs(3600)));
        warming.state.start_warming();
        let warmth = warming.warmth();
        assert!((0.1..0.11).contains(&warmth), "{warmth}");
        assert!(
            warming.weight() >= 204 && warming.weight() < 226,
            "{}",
            warming.weight()
        );

        let done = backend(2, Some(Duration::from_nanos(1)));
        done.state.start_warming();
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(done.warmth(), 1.0);
        assert_eq!(
            done.state.warming_since.load(Ordering::Relaxed),
            0,
            "the ramp is over"
        );
    }
}
