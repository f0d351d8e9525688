//! Passive outlier detection: a backend whose exchanges keep failing is taken out of
//! rotation for a while, longer each time it happens again (as Envoy does).
//!
//! A failure is a connect error, a reset or broken response, a timeout, or a 5xx
//! response head. An ejection is timed by a task of its own, so the request path
//! only counts (one relaxed atomic per exchange) and reads one flag per pick.

use std::sync::Arc;

use tracing::{info, warn};

use super::{Backend, BackendState};
use crate::config::OutlierConfig;

/// Counts the outcome of one exchange with `backend` of `upstream`, and ejects the
/// backend when it has failed `consecutive_failures` times in a row and the
/// upstream can spare it.
pub(super) fn observe(
    config: &OutlierConfig,
    upstream: &str,
    backends: &[Backend],
    backend: &Backend,
    failed: bool,
) {
    let state = &backend.state;
    if !failed {
        state.record_success();
        return;
    }
    if state.record_failure() < config.consecutive_failures || state.is_ejected() {
        return;
    }
    let ejected = backends.iter().filter(|b| b.state.is_ejected()).count();
    if (ejected + 1) * 100 > config.max_ejection_percent as usize * backends.len() {
        return;
    }
    let Some(times) = state.eject() else {
        return;
    };
    backend.metrics.ejections.inc();
    let duration = config
        .base_ejection_time
        .saturating_mul(times)
        .min(config.max_ejection_time);
    warn!(upstream, backend = %backend.address, failures = config.consecutive_failures, ejected_for = ?duration, "backend ejected after failing in a row");
    let state: Arc<BackendState> = state.clone();
    let (upstream, address, forgive_after) = (
        upstream.to_owned(),
        backend.address,
        config.max_ejection_time,
    );
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        state.return_from_ejection();
        info!(upstream, backend = %address, "ejected backend back in rotation");
        // Behaving for the longest ejection time wipes the record; failing again
        // before then ejects it for longer.
        tokio::time::sleep(forgive_after).await;
        if !state.is_ejected() && state.ejections() == times {
            state.forgive_ejections();
        }
    });
}
