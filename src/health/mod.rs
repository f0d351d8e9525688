//! Active health checks: one loop per checked backend, probing it with an HTTP GET
//! every interval (±10 % jitter, so checks of many backends do not beat in step)
//! and flipping its health after enough results in a row. Only state changes are
//! logged.
//!
//! The set of loops follows the running snapshot: [`HealthChecks::sync`] starts the
//! loops of backends that gained checks and stops those of backends that lost them
//! or left the config. A backend that stays keeps its loop and its health.

mod probe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::config::HealthCheckConfig;
use crate::metrics::BackendMetrics;
use crate::proxy_protocol;
use crate::snapshot::Snapshot;
use crate::upstream::{BackendState, Transport};

/// The check loops running, by upstream name and backend address.
#[derive(Debug, Default)]
pub struct HealthChecks {
    running: HashMap<(String, SocketAddr), Running>,
    /// Backends that started unhealthy with weir and have not been checked yet
    /// (readiness waits for them); counted at the first sync only.
    unchecked: Arc<AtomicUsize>,
    synced: bool,
}

#[derive(Debug)]
struct Running {
    check: Check,
    task: AbortHandle,
}

/// What one backend's check loop needs; a loop runs on while its config's
/// `Check` stays the same.
#[derive(Debug, Clone)]
struct Check {
    config: HealthCheckConfig,
    state: Arc<BackendState>,
    metrics: BackendMetrics,
    /// The PROXY header checks start with, for backends that expect one.
    preamble: Option<Vec<u8>>,
    /// Checks go over TLS and HTTP/2 as requests do.
    transport: Transport,
    /// The name the backend was found by: the checks' default `Host`, and SNI.
    dns_name: Option<Arc<str>>,
}

impl Check {
    fn same_as(&self, other: &Check) -> bool {
        self.config == other.config
            && Arc::ptr_eq(&self.state, &other.state)
            && self.preamble == other.preamble
            && self.transport.generation == other.transport.generation
            && self.dns_name == other.dns_name
    }
}

impl HealthChecks {
    /// Makes the running loops match `snapshot`. Must be called from within the
    /// runtime.
    pub fn sync(&mut self, snapshot: &Snapshot) {
        let mut wanted = HashMap::new();
        for upstream in &snapshot.upstreams {
            for backend in &upstream.backends {
                let key = (upstream.name.clone(), backend.address);
                match &upstream.health_check {
                    Some(config) => {
                        let check = Check {
                            config: config.clone(),
                            state: backend.state.clone(),
                            metrics: backend.metrics.clone(),
                            preamble: upstream.send_proxy_protocol.map(proxy_protocol::local),
                            transport: upstream.transport.clone(),
                            dns_name: backend.dns_name.clone(),
                        };
                        wanted.insert(key, check);
                    }
                    // Without checks nothing can mark it down again.
                    None => {
                        backend.state.set_healthy(true);
                    }
                }
            }
        }
        self.running.retain(|key, running| {
            let keep = wanted
                .get(key)
                .is_some_and(|check| check.same_as(&running.check));
            if !keep {
                running.task.abort();
            }
            keep
        });
        let first_sync = !std::mem::replace(&mut self.synced, true);
        for (key, check) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let unchecked = (first_sync && !check.config.initially_healthy)
                .then(|| FirstCheck::pending(self.unchecked.clone()));
            let task = tokio::spawn(check_loop(key.0.clone(), key.1, check.clone(), unchecked));
            self.running.insert(
                key,
                Running {
                    check,
                    task: task.abort_handle(),
                },
            );
        }
    }
}

impl HealthChecks {
    /// Backends that started unhealthy and have not had their first check yet;
    /// shared, to read without a lock.
    pub fn unchecked(&self) -> Arc<AtomicUsize> {
        self.unchecked.clone()
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.task.abort();
        }
    }
}

/// A backend readiness waits for, until its first check is done (or its loop is
/// stopped before that).
#[derive(Debug)]
struct FirstCheck(Arc<AtomicUsize>);

impl FirstCheck {
    fn pending(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        FirstCheck(count)
    }
}

impl Drop for FirstCheck {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Consecutive results of one backend's checks.
#[derive(Debug, Default)]
struct Streak {
    passed: u32,
    failed: u32,
}

impl Streak {
    /// Counts one result; returns the new health when it changes.
    fn record(&mut self, passed: bool, healthy: bool, config: &HealthCheckConfig) -> Option<bool> {
        if passed {
            self.failed = 0;
            self.passed = self.passed.saturating_add(1);
            (!healthy && self.passed >= config.healthy_threshold).then_some(true)
        } else {
            self.passed = 0;
            self.failed = self.failed.saturating_add(1);
            (healthy && self.failed >= config.unhealthy_threshold).then_some(false)
        }
    }
}

async fn check_loop(
    upstream: String,
    address: SocketAddr,
    check: Check,
    mut unchecked: Option<FirstCheck>,
) {
    let Check {
        config,
        state,
        metrics,
        preamble,
        transport,
        dns_name,
    } = check;
    let host = match (&config.host, &dns_name) {
        (Some(host), _) => host.clone(),
        (None, Some(name)) => format!("{name}:{}", address.port()),
        (None, None) => address.to_string(),
    };
    let mut streak = Streak::default();
    loop {
        let result = probe::probe(
            address,
            dns_name.as_deref(),
            &transport,
            &config.path,
            &host,
            config.timeout,
            preamble.as_deref(),
        )
        .await;
        let (passed, outcome) = match &result {
            Ok(status) if config.expect_status.contains(status.as_u16()) => (true, String::new()),
            Ok(status) => (false, format!("status {}", status.as_u16())),
            Err(err) => (false, err.to_string()),
        };
        debug!(upstream, backend = %address, passed, outcome, "health check");
        if let Some(healthy) = streak.record(passed, state.is_healthy(), &config) {
            if healthy {
                state.start_warming();
            }
            state.set_healthy(healthy);
            if healthy {
                metrics.became_healthy.inc();
                info!(upstream, backend = %address, passes = streak.passed, "backend is healthy");
            } else {
                metrics.became_unhealthy.inc();
                warn!(upstream, backend = %address, failures = streak.failed, last = %outcome, "backend is unhealthy");
            }
        }
        // The first check is done: readiness no longer waits for this backend.
        drop(unchecked.take());
        tokio::time::sleep(jittered(config.interval)).await;
    }
}

/// `interval` ± 10 %.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StatusSet;

    fn config() -> HealthCheckConfig {
        HealthCheckConfig {
            path: "/".into(),
            host: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expect_status: StatusSet(vec![(200, 399)]),
            initially_healthy: true,
        }
    }

    #[test]
    fn health_flips_only_after_enough_results_in_a_row() {
        let config = config();
        let mut streak = Streak::default();
        let mut healthy = true;
        let mut changes = Vec::new();
        for passed in [
            false, false, true, false, false, false, false, true, true, true,
        ] {
            if let Some(now) = streak.record(passed, healthy, &config) {
                healthy = now;
                changes.push(now);
            }
        }
        // Down at the 3rd failure in a row, up at the 2nd pass in a row, once each.
        assert_eq!(changes, [false, true]);
        assert!(healthy);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
    }
}
