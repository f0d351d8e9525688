//! One backend: its address and weight in the current config, and the runtime state
//! (in-flight count, health, pooled connections) that outlives config reloads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::balance::{Candidate, PeakEwma};
use crate::config::defaults::DEFAULT_MAX_IDLE_PER_BACKEND;

use super::pool::Pool;

/// A backend as one config sees it.
#[derive(Debug)]
pub struct Backend {
    pub address: SocketAddr,
    pub weight: u32,
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

// === impl Backend ===

impl Candidate for Backend {
    fn weight(&self) -> u32 {
        self.weight
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

    pub fn slots(&self) -> &Arc<SlotWaiters> {
        &self.slots
    }

    pub(super) fn start_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request in unless `limit` are in flight already.
    pub(super) fn try_start_request(&self, limit: u32) -> bool {
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
