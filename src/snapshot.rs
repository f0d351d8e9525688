//! A snapshot is everything a request reads, built from one config: the router and
//! the upstreams. It is the unit of hot reload: built aside, then swapped in whole.

use std::sync::Arc;

use crate::access_log::AccessLog;
use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::{CacheResults, Metrics, RequestMetrics};
use crate::rate_limit::RateLimits;
use crate::router::Router;
use crate::tls::TlsError;
use crate::upstream::{BackendStates, ResolvedSets, Upstream};

/// A snapshot that could not be built: an upstream's TLS files are bad.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream}: {source}")]
pub struct SnapshotError {
    pub upstream: String,
    #[source]
    pub source: TlsError,
}

#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub router: Router,
    /// Same order as `config.upstreams`; routes refer to them by index. Shared
    /// with the next snapshot when only other upstreams' names changed answers.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Request counters and histograms, one entry per listener of the config.
    pub requests: Vec<RequestMetrics>,
    /// Set by the control plane, which owns the writer.
    pub access_log: Option<Arc<AccessLog>>,
    /// Some upstream sends backends a PROXY header, which names the address each
    /// client connected to.
    pub sends_proxy_protocol: bool,
    /// Set by the control plane, which keeps it across reloads; present when
    /// a route caches.
    pub cache: Option<Arc<Cache>>,
    /// The cache result counters of each route (none for a route that does
    /// not cache).
    pub cache_results: Vec<Option<CacheResults>>,
    /// Each route's rate-limit policies; a policy that stays across a reload
    /// keeps its counts.
    pub rate_limits: Arc<RateLimits>,
}

impl Snapshot {
    /// Builds the snapshot of `config`, its backend names at the addresses
    /// `resolved` holds; backends also present in `previous` keep their runtime
    /// state (in-flight counts, pooled connections, health).
    pub fn build(
        config: Arc<Config>,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
        resolved: &ResolvedSets,
    ) -> Result<Self, SnapshotError> {
        let states = previous.map(Snapshot::backend_states).unwrap_or_default();
        let upstreams: Vec<Upstream> = config
            .upstreams
            .iter()
            .map(|u| {
                Upstream::new(u, resolved, &states, metrics).map_err(|source| SnapshotError {
                    upstream: u.name.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        // An upstream whose connections are made as before keeps its transport,
        // and with it its backends' pooled connections. With TLS the roots are
        // read anew, so a reload always starts fresh connections.
        let mut upstreams = upstreams;
        for upstream in &mut upstreams {
            let before =
                previous.and_then(|p| p.upstreams.iter().find(|u| u.name == upstream.name));
            if let Some(before) = before
                && before.transport.same_settings(&upstream.transport)
                && upstream.transport.tls.is_none()
            {
                upstream.transport = before.transport.clone();
            }
        }
        let upstreams = upstreams.into_iter().map(Arc::new).collect();
        let routes: Vec<(&str, &str)> = config
            .routes
            .iter()
            .map(|r| (r.name.as_str(), config.upstreams[r.upstream].name.as_str()))
            .collect();
        let upstream_names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
        let requests = config
            .listeners
            .iter()
            .map(|l| metrics.requests(&l.name, &routes, &upstream_names))
            .collect();
        let cache_results = config
            .routes
            .iter()
            .map(|r| r.cache.as_ref().map(|_| metrics.cache_results(&r.name)))
            .collect();
        let rate_limits = Arc::new(RateLimits::for_config(
            &config,
            previous.map(|p| &*p.rate_limits),
            metrics,
        ));
        Ok(Snapshot {
            rate_limits,
            router: Router::new(config.routes.clone()),
            upstreams,
            requests,
            access_log: None,
            cache: None,
            cache_results,
            sends_proxy_protocol: config
                .upstreams
                .iter()
                .any(|u| u.send_proxy_protocol.is_some()),
            config,
        })
    }

    /// This snapshot with the upstreams whose names `resolved` answers otherwise
    /// than before rebuilt (on the connections they have: nothing is re-read);
    /// `None` when no answer changed. Backends that stay keep their state;
    /// requests in flight keep the snapshot they started with.
    pub fn with_answers(&self, resolved: &ResolvedSets, metrics: &Metrics) -> Option<Snapshot> {
        let states = self.backend_states();
        let mut changed = false;
        let upstreams = self
            .config
            .upstreams
            .iter()
            .zip(&self.upstreams)
            .map(|(config, upstream)| {
                if !upstream.answers_changed(config, resolved) {
                    return upstream.clone();
                }
                changed = true;
                let mut rebuilt = Upstream::with_transport(
                    config,
                    upstream.transport.clone(),
                    resolved,
                    &states,
                    metrics,
                );
                // The budget counts the upstream's requests, whichever backends.
                rebuilt.retry_budget = upstream.retry_budget.clone();
                Arc::new(rebuilt)
            })
            .collect();
        changed.then(|| Snapshot {
            config: self.config.clone(),
            router: Router::new(self.config.routes.clone()),
            upstreams,
            requests: self.requests.clone(),
            access_log: self.access_log.clone(),
            cache: self.cache.clone(),
            cache_results: self.cache_results.clone(),
            rate_limits: self.rate_limits.clone(),
            sends_proxy_protocol: self.sends_proxy_protocol,
        })
    }

    /// Puts this snapshot's transports in force on its backends' pools: from now
    /// on they keep only connections made this snapshot's way. Called once the
    /// snapshot is swapped in.
    pub fn adopt_pools(&self) {
        for upstream in &self.upstreams {
            for backend in &upstream.backends {
                backend
                    .state
                    .pool()
                    .use_generation(upstream.transport.generation);
            }
        }
    }

    /// The request metrics of the listener named `listener`.
    pub fn request_metrics(&self, listener: &str) -> Option<&RequestMetrics> {
        self.requests.iter().find(|m| m.listener == listener)
    }

    fn backend_states(&self) -> BackendStates {
        self.upstreams
            .iter()
            .flat_map(|u| {
                u.backends
                    .iter()
                    .map(|b| ((u.name.clone(), b.address), b.state.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
upstream = "a"
[upstreams.a]
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
"#;

    #[test]
    fn backends_kept_across_builds_share_their_state() {
        let metrics = Metrics::new();
        let first = Snapshot::build(
            Arc::new(crate::config::parse(TEXT, "a.toml").unwrap()),
            None,
            &metrics,
            &ResolvedSets::new(),
        )
        .unwrap();
        let changed = TEXT.replace("127.0.0.1:9002", "127.0.0.1:9003");
        let second = Snapshot::build(
            Arc::new(crate::config::parse(&changed, "a.toml").unwrap()),
            Some(&first),
            &metrics,
            &ResolvedSets::new(),
        )
        .unwrap();
        let (old, new) = (&first.upstreams[0].backends, &second.upstreams[0].backends);
        assert!(Arc::ptr_eq(&old[0].state, &new[0].state));
        assert!(!Arc::ptr_eq(&old[1].state, &new[1].state));
    }
}
