//! Upstreams: named groups of backends with their balancer, the backends' runtime
//! state and pooled connections, and one exchange with one backend
//! (`exchange`). Which backend a request goes to, and how often, is the proxy's
//! tries' business.

mod backend;
mod budget;
mod error;
pub(crate) mod exchange;
pub(crate) mod http1;
#[cfg(test)]
mod http1_differential;
mod outlier;
pub(crate) mod pool;
mod request_body;
mod response_body;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

pub use backend::{Backend, BackendState, SlotWaiters};
pub use budget::RetryBudget;
pub use error::{Origin, Retry, UpstreamError};
pub use pool::{Pool, Transport};
pub use request_body::{BoxError, ClientBody, ClientBodyError, ClientStream, RequestBody};
pub use response_body::{InFlight, ResponseBody, ResponseBodyError};
use tracing::warn;

use crate::balance::{Balancer, Sticky};
use crate::config::{
    DnsLookup, HealthCheckConfig, OutlierConfig, RetryPolicy, UpstreamConfig, UpstreamTimeouts,
};
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::proxy_protocol;
use crate::tls::TlsError;

/// A named group of backends and the strategy that spreads requests over them.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub backends: Vec<Backend>,
    pub balancer: Balancer,
    /// Cookie-based affinity, when configured.
    pub sticky: Option<Sticky>,
    pub health_check: Option<HealthCheckConfig>,
    pub outlier_detection: Option<OutlierConfig>,
    /// Percentage of usable backends under which every backend is used (0 = off).
    pub panic_threshold: u32,
    pub retries: RetryPolicy,
    /// `max_connections_per_backend`, when set.
    pub limit: Option<u32>,
    pub queue_timeout: Option<std::time::Duration>,
    /// The PROXY protocol header each backend connection starts with.
    pub send_proxy_protocol: Option<proxy_protocol::Version>,
    /// With `slow_start` on a strategy of fixed weights (round robin, random).
    pub slow_start_by_chance: bool,
    /// Present when the policy has a budget.
    pub retry_budget: Option<Arc<RetryBudget>>,
    /// With SRV priorities, one per priority value, lowest first: only the
    /// first with a usable backend is picked from, by its own balancer so that
    /// its backends keep their shares of it. Empty with a single priority.
    pub tiers: Vec<Tier>,
    /// The answers its named backends were built from, in config order.
    pub dns_answers: Vec<Vec<Resolved>>,
    pub metrics: UpstreamMetrics,
    pub timeouts: UpstreamTimeouts,
    /// TLS or not, HTTP/1.1 or HTTP/2.
    pub transport: Transport,
}

/// Backend states of a running config, by upstream name and address: handed to the
/// next config so that backends present in both keep their state.
pub type BackendStates = HashMap<(String, SocketAddr), Arc<BackendState>>;

/// The backends of one SRV priority value: a range of [`Upstream::backends`].
#[derive(Debug)]
pub struct Tier {
    pub range: Range<usize>,
    pub balancer: Balancer,
}

/// One address a backend name resolved to: one backend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resolved {
    pub address: SocketAddr,
    pub weight: u32,
    /// The SRV record's priority; 0 for an A/AAAA name.
    pub priority: u16,
    /// The name whose record gave the address (for SRV, the target's).
    pub name: Arc<str>,
}

/// The latest answer of every backend name of every upstream, by upstream name
/// and what is looked up; a name missing here has no answer yet.
pub type ResolvedSets = HashMap<(String, DnsLookup), Vec<Resolved>>;

/// The answers for `config`'s names, in its order; an A/AAAA name's addresses
/// carry its entry's weight.
fn dns_answers(config: &UpstreamConfig, resolved: &ResolvedSets) -> Vec<Vec<Resolved>> {
    config
        .dns
        .iter()
        .map(|entry| {
            let mut answer = resolved
                .get(&(config.name.clone(), entry.lookup.clone()))
                .cloned()
                .unwrap_or_default();
            if let DnsLookup::Address { .. } = entry.lookup {
                for resolved in &mut answer {
                    resolved.weight = entry.weight.get();
                }
            }
            answer
        })
        .collect()
}

// === impl Upstream ===

impl Upstream {
    /// Builds the upstream of `config`, its named backends at the addresses
    /// `resolved` holds for them, reusing the state of backends found in
    /// `previous`. Fails only on the files of its TLS settings.
    pub fn new(
        config: &UpstreamConfig,
        resolved: &ResolvedSets,
        previous: &BackendStates,
        metrics: &Metrics,
    ) -> Result<Self, TlsError> {
        let transport = Transport::new(config.tls.as_ref(), config.protocol)?;
        if config
            .tls
            .as_ref()
            .is_some_and(|tls| tls.insecure_skip_verify)
        {
            warn!(upstream = %config.name, "tls.insecure_skip_verify is on: backend certificates are NOT verified, so anyone on the path can pose as a backend; use it for testing only");
        }
        Ok(Upstream::with_transport(
            config, transport, resolved, previous, metrics,
        ))
    }

    /// [`Upstream::new`] on a transport already made: a new answer for a name
    /// rebuilds its upstream with the connections it has.
    pub fn with_transport(
        config: &UpstreamConfig,
        transport: Transport,
        resolved: &ResolvedSets,
        previous: &BackendStates,
        metrics: &Metrics,
    ) -> Self {
        // A backend new to weir starts as the health checks say (healthy without).
        let initially_healthy = config
            .health_check
            .as_ref()
            .is_none_or(|check| check.initially_healthy);
        // One queue per upstream, kept across configs like the backends' states.
        let slots = previous
            .iter()
            .find(|((upstream, _), _)| *upstream == config.name)
            .map(|(_, state)| state.slots().clone())
            .unwrap_or_default();
        let answers = dns_answers(config, resolved);
        let named = answers
            .iter()
            .flatten()
            .map(|r| (r.address, r.weight, Some(r.name.clone()), r.priority));
        let listed = config
            .backends
            .iter()
            .map(|b| (b.address, b.weight.get(), None, 0));
        let mut backends: Vec<Backend> = Vec::new();
        for (address, weight, dns_name, priority) in listed.chain(named) {
            // An address listed and also named, or named twice, is one backend.
            if backends.iter().any(|b| b.address == address) {
                continue;
            }
            backends.push(Backend {
                address,
                weight,
                dns_name,
                priority,
                slow_start: config.slow_start,
                metrics: metrics.backend(&config.name, &address.to_string()),
                state: previous
                    .get(&(config.name.clone(), address))
                    .cloned()
                    .unwrap_or_else(|| {
                        let state = BackendState::new(initially_healthy, slots.clone());
                        // Added by a reload or a new answer: it warms up like a
                        // backend that came back.
                        if !previous.is_empty() {
                            state.start_warming();
                        }
                        Arc::new(state)
                    }),
            });
        }
        // Each priority's backends side by side, lowest value first (listed
        // backends and A/AAAA names count as 0).
        backends.sort_by_key(|b| b.priority);
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let names: Vec<String> = backends.iter().map(|b| b.address.to_string()).collect();
        let balancer_of = |range: Range<usize>| {
            Balancer::new(
                &config.strategy,
                &names[range.clone()],
                &weights[range],
                config.hash_balance_percent,
            )
        };
        let balancer = balancer_of(0..backends.len());
        let mut ranges = Vec::new();
        let mut start = 0;
        while start < backends.len() {
            let priority = backends[start].priority;
            let end = start
                + backends[start..]
                    .iter()
                    .take_while(|b| b.priority == priority)
                    .count();
            ranges.push(start..end);
            start = end;
        }
        let tiers = if ranges.len() < 2 {
            Vec::new()
        } else {
            ranges
                .into_iter()
                .map(|range| Tier {
                    balancer: balancer_of(range.clone()),
                    range,
                })
                .collect()
        };
        Upstream {
            name: config.name.clone(),
            slow_start_by_chance: config.slow_start.is_some() && !balancer.reads_weights(),
            balancer,
            sticky: config
                .sticky
                .as_ref()
                .map(|sticky| Sticky::new(sticky, &config.name, &names)),
            tiers,
            backends,
            dns_answers: answers,
            health_check: config.health_check.clone(),
            outlier_detection: config.outlier_detection,
            panic_threshold: config.panic_threshold,
            retries: config.retries,
            limit: (config.max_connections_per_backend > 0)
                .then_some(config.max_connections_per_backend),
            queue_timeout: config.queue_timeout,
            send_proxy_protocol: config.send_proxy_protocol,
            retry_budget: config.retries.budget.map(|b| Arc::new(RetryBudget::new(b))),
            metrics: metrics.upstream(&config.name),
            timeouts: config.timeouts,
            transport,
        }
    }

    /// Whether `resolved` holds other addresses for this upstream's names than
    /// the ones it was built with.
    pub fn answers_changed(&self, config: &UpstreamConfig, resolved: &ResolvedSets) -> bool {
        self.dns_answers != dns_answers(config, resolved)
    }

    /// Keeps the record of one try on `backend` that started at `started`: its
    /// metrics (by `code`, the status the client would get for it), the outlier
    /// detector, and the latency estimate of strategies that read it.
    pub(crate) fn record_try(
        &self,
        backend: &Backend,
        code: u16,
        failed: bool,
        started: std::time::Instant,
    ) {
        let now = std::time::Instant::now();
        let took = now - started;
        backend.metrics.requests.inc(code);
        backend.metrics.duration.observe(took.as_secs_f64());
        if let Some(outlier) = &self.outlier_detection {
            outlier::observe(outlier, &self.name, &self.backends, backend, failed);
        }
        if self.balancer.uses_latency() {
            let latency = if failed {
                // A failure (or a 5xx) counts as slow, so traffic moves away from it.
                took.max(crate::balance::FAILURE_PENALTY)
            } else {
                took
            };
            backend.state.latency().observe(latency, now);
        }
    }
}
