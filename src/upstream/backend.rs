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
    healthy: AtomicBool,
    pool: Pool,
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
        BackendState {
            in_flight: AtomicU32::new(0),
            latency: PeakEwma::default(),
            healthy: AtomicBool::new(true),
            pool: Pool::new(DEFAULT_MAX_IDLE_PER_BACKEND),
        }
    }
}

impl BackendState {
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

    pub(super) fn start_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn finish_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
