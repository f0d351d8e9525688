//! Prometheus metrics: the families of SPEC.md, registered once per process, and
//! the label handles the request path uses, resolved once per config so that a
//! request never looks a label set up by its strings.
//!
//! Gauges that mirror state weir keeps anyway (requests in flight per backend,
//! health) are not updated per request: [`Metrics::refresh`] sets them from that
//! state when `/metrics` is scraped.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Bucket bounds in seconds: proxy latencies, from half a millisecond to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Status codes whose counters are created with the config; others are looked up
/// when first seen (sorted, for the binary search).
const COMMON_CODES: [u16; 27] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 413,
    429, 431, 500, 501, 502, 503, 504, 505,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_active: IntGaugeVec,
    backend_healthy: IntGaugeVec,
    health_transitions: IntCounterVec,
    ejections: IntCounterVec,
    healthy_backends: IntGaugeVec,
    upstream_backends: IntGaugeVec,
    dns_resolutions: IntCounterVec,
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
    connections_active: IntGaugeVec,
    connections_total: IntCounterVec,
    reloads: IntCounterVec,
    last_reload_success: Gauge,
    cache_requests: IntCounterVec,
    cache_stored_bytes: IntGaugeVec,
    cache_evictions: IntCounterVec,
    redis_errors: IntCounterVec,
    rate_limited: IntCounterVec,
    rate_limit_keys: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Counters of one label set, by status code.
#[derive(Debug, Clone)]
pub struct CodeCounters {
    family: IntCounterVec,
    /// The label values before `code`.
    labels: Vec<String>,
    common: Vec<IntCounter>,
}

impl CodeCounters {
    fn new(family: &IntCounterVec, labels: &[&str]) -> Self {
        let common = COMMON_CODES
            .iter()
            .map(|code| {
                let mut values: Vec<&str> = labels.to_vec();
                let code = code.to_string();
                values.push(&code);
                family.with_label_values(&values)
            })
            .collect();
        CodeCounters {
            family: family.clone(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            common,
        }
    }

    /// Counts one `code`.
    pub fn inc(&self, code: u16) {
        match COMMON_CODES.binary_search(&code) {
            Ok(index) => self.common[index].inc(),
            Err(_) => {
                let code = code.to_string();
                let mut values: Vec<&str> = self.labels.iter().map(String::as_str).collect();
                values.push(&code);
                self.family.with_label_values(&values).inc();
            }
        }
    }
}

/// Lookups of one upstream's backend names, by result.
#[derive(Debug, Clone)]
pub struct DnsMetrics {
    pub success: IntCounter,
    pub failure: IntCounter,
    pub nxdomain: IntCounter,
}

/// One backend's state at scrape time.
#[derive(Debug)]
pub struct BackendReading<'a> {
    pub upstream: &'a str,
    pub backend: String,
    pub in_flight: u32,
    pub usable: bool,
}

/// The handles of one backend.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    pub requests: CodeCounters,
    pub duration: Histogram,
    pub ejections: IntCounter,
    pub became_healthy: IntCounter,
    pub became_unhealthy: IntCounter,
}

/// The handles of one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    pub retries: IntCounter,
    pub budget_exhausted: IntCounter,
}

/// The handles of one listener.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    pub connections_active: IntGauge,
    pub connections_total: IntCounter,
}

/// The request counters and duration histograms of one listener, by route and
/// by upstream, plus those of requests that match no route.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    pub listener: String,
    pub by_route: Vec<CodeCounters>,
    pub unrouted: CodeCounters,
    pub duration_by_upstream: Vec<Histogram>,
    pub unrouted_duration: Histogram,
}

/// Registers `collector` with `registry` and hands it back.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric registered once");
    collector
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    registered(
        registry,
        HistogramVec::new(opts, labels).expect("valid metric"),
    )
}

/// The cache result counters of one route.
#[derive(Debug, Clone)]
pub struct CacheResults {
    pub hit: IntCounter,
    pub miss: IntCounter,
    pub stale: IntCounter,
    pub revalidated: IntCounter,
    pub bypass: IntCounter,
    pub coalesced: IntCounter,
}

/// The handles of one cache store (`memory`, `redis`).
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    pub stored_bytes: IntGauge,
    pub evictions: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let last_reload_success = registered(
            r,
            Gauge::new(
                "weir_config_last_reload_success_timestamp_seconds",
                "Unix time of the last config load or reload that succeeded.",
            )
            .expect("valid metric"),
        );
        #[cfg(target_os = "linux")]
        {
            // CPU, RSS, open file descriptors, start time: process_* metrics.
            let process = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(process));
        }
        Metrics {
            requests: counter_vec(
                r,
                "weir_requests_total",
                "Client requests answered, by listener, route, upstream and status code.",
                &["listener", "route", "upstream", "code"],
            ),
            request_duration: histogram_vec(
                r,
                "weir_request_duration_seconds",
                "Client request duration, from the request head to the end of the response body.",
                &["listener", "upstream"],
            ),
            upstream_requests: counter_vec(
                r,
                "weir_upstream_requests_total",
                "Tries sent to backends, by backend and status code (502 or 504 when the try failed without a response).",
                &["upstream", "backend", "code"],
            ),
            upstream_duration: histogram_vec(
                r,
                "weir_upstream_request_duration_seconds",
                "Backend time to the response head, per try.",
                &["upstream", "backend"],
            ),
            upstream_active: gauge_vec(
                r,
                "weir_upstream_active_requests",
                "Requests in flight on the backend.",
                &["upstream", "backend"],
            ),
            backend_healthy: gauge_vec(
                r,
                "weir_backend_healthy",
                "1 when the backend is usable (healthy and not ejected), else 0.",
                &["upstream", "backend"],
            ),
            health_transitions: counter_vec(
                r,
                "weir_backend_health_transitions_total",
                "Health check verdict changes.",
                &["upstream", "backend", "to"],
            ),
            ejections: counter_vec(
                r,
                "weir_backend_ejections_total",
                "Ejections by outlier detection.",
                &["upstream", "backend"],
            ),
            healthy_backends: gauge_vec(
                r,
                "weir_upstream_healthy_backends",
                "Usable backends of the upstream.",
                &["upstream"],
            ),
            upstream_backends: gauge_vec(
                r,
                "weir_upstream_backends",
                "Backends of the upstream currently known (listed, and resolved from names).",
                &["upstream"],
            ),
            dns_resolutions: counter_vec(
                r,
                "weir_dns_resolutions_total",
                "Lookups of the upstream's backend names, by result (success, failure, nxdomain).",
                &["upstream", "result"],
            ),
            retries: counter_vec(r, "weir_retries_total", "Retries sent.", &["upstream"]),
            budget_exhausted: counter_vec(
                r,
                "weir_retry_budget_exhausted_total",
                "Retries not sent because the retry budget was spent.",
                &["upstream"],
            ),
            connections_active: gauge_vec(
                r,
                "weir_connections_active",
                "Open client connections.",
                &["listener"],
            ),
            connections_total: counter_vec(
                r,
                "weir_connections_total",
                "Client connections accepted.",
                &["listener"],
            ),
            reloads: counter_vec(
                r,
                "weir_config_reloads_total",
                "Config reloads, by result.",
                &["result"],
            ),
            cache_requests: counter_vec(
                r,
                "weir_cache_requests_total",
                "Requests of cached routes, by how the cache answered (hit, miss, stale, revalidated, bypass, coalesced).",
                &["route", "result"],
            ),
            cache_stored_bytes: gauge_vec(
                r,
                "weir_cache_stored_bytes",
                "Bytes of responses held by the cache's store (memory: this instance's).",
                &["store"],
            ),
            cache_evictions: counter_vec(
                r,
                "weir_cache_evictions_total",
                "Stored responses dropped to make room.",
                &["store"],
            ),
            redis_errors: counter_vec(
                r,
                "weir_redis_errors_total",
                "Redis commands that failed or timed out, by what they were for.",
                &["use"],
            ),
            rate_limited: counter_vec(
                r,
                "weir_rate_limited_total",
                "Requests answered 429 by a rate-limit policy, by route and policy.",
                &["route", "policy"],
            ),
            rate_limit_keys: gauge_vec(
                r,
                "weir_rate_limit_keys",
                "Keys a local rate-limit policy (or a global one while Redis is away) holds counts for on this instance.",
                &["policy"],
            ),
            last_reload_success,
            registry,
        }
    }

    /// The cache result counters of `route`.
    pub fn cache_results(&self, route: &str) -> CacheResults {
        let result = |name: &str| self.cache_requests.with_label_values(&[route, name]);
        CacheResults {
            hit: result("hit"),
            miss: result("miss"),
            stale: result("stale"),
            revalidated: result("revalidated"),
            bypass: result("bypass"),
            coalesced: result("coalesced"),
        }
    }

    pub fn cache_store(&self, store: &str) -> StoreMetrics {
        StoreMetrics {
            stored_bytes: self.cache_stored_bytes.with_label_values(&[store]),
            evictions: self.cache_evictions.with_label_values(&[store]),
        }
    }

    /// Failed Redis commands made for `usage` (`cache`, `purge`, ...).
    pub fn redis_errors(&self, usage: &str) -> IntCounter {
        self.redis_errors.with_label_values(&[usage])
    }

    /// Requests of `route` refused by `policy`.
    pub fn rate_limited(&self, route: &str, policy: &str) -> IntCounter {
        self.rate_limited.with_label_values(&[route, policy])
    }

    /// Keys `policy` holds counts for on this instance.
    pub fn rate_limit_keys(&self, policy: &str) -> IntGauge {
        self.rate_limit_keys.with_label_values(&[policy])
    }

    pub fn backend(&self, upstream: &str, backend: &str) -> BackendMetrics {
        BackendMetrics {
            requests: CodeCounters::new(&self.upstream_requests, &[upstream, backend]),
            duration: self
                .upstream_duration
                .with_label_values(&[upstream, backend]),
            ejections: self.ejections.with_label_values(&[upstream, backend]),
            became_healthy: self
                .health_transitions
                .with_label_values(&[upstream, backend, "healthy"]),
            became_unhealthy: self.health_transitions.with_label_values(&[
                upstream,
                backend,
                "unhealthy",
            ]),
        }
    }

    pub fn upstream(&self, upstream: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            retries: self.retries.with_label_values(&[upstream]),
            budget_exhausted: self.budget_exhausted.with_label_values(&[upstream]),
        }
    }

    pub fn dns(&self, upstream: &str) -> DnsMetrics {
        let result = |result: &str| self.dns_resolutions.with_label_values(&[upstream, result]);
        DnsMetrics {
            success: result("success"),
            failure: result("failure"),
            nxdomain: result("nxdomain"),
        }
    }

    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            connections_active: self.connections_active.with_label_values(&[listener]),
            connections_total: self.connections_total.with_label_values(&[listener]),
        }
    }

    /// The request handles of `listener`, for routes and upstreams named in config
    /// order.
    pub fn requests(
        &self,
        listener: &str,
        routes: &[(&str, &str)],
        upstreams: &[&str],
    ) -> RequestMetrics {
        RequestMetrics {
            listener: listener.to_owned(),
            by_route: routes
                .iter()
                .map(|(route, upstream)| {
                    CodeCounters::new(&self.requests, &[listener, route, upstream])
                })
                .collect(),
            unrouted: CodeCounters::new(&self.requests, &[listener, "", ""]),
            duration_by_upstream: upstreams
                .iter()
                .map(|upstream| {
                    self.request_duration
                        .with_label_values(&[listener, upstream])
                })
                .collect(),
            unrouted_duration: self.request_duration.with_label_values(&[listener, ""]),
        }
    }

    /// Counts a reload (or the first load) and its result.
    pub fn record_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
        if success {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.last_reload_success.set(now);
        }
    }

    /// Sets the gauges that mirror backend state from `readings`, one per backend
    /// of the config in force, of `upstreams` (every upstream's name); series of
    /// backends no longer configured are dropped.
    pub fn refresh(&self, upstreams: &[&str], readings: &[BackendReading<'_>]) {
        self.upstream_active.reset();
        self.backend_healthy.reset();
        self.healthy_backends.reset();
        self.upstream_backends.reset();
        for upstream in upstreams {
            self.upstream_backends.with_label_values(&[upstream]).set(0);
        }
        for reading in readings {
            let labels = [reading.upstream, reading.backend.as_str()];
            self.upstream_active
                .with_label_values(&labels)
                .set(i64::from(reading.in_flight));
            self.backend_healthy
                .with_label_values(&labels)
                .set(i64::from(reading.usable));
            self.healthy_backends
                .with_label_values(&[reading.upstream])
                .add(i64::from(reading.usable));
            self.upstream_backends
                .with_label_values(&[reading.upstream])
                .inc();
        }
    }

    /// Every family as it stands, for readers inside weir (the status page's
    /// history).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail on IO; a family that does not encode is
        // a bug of weir's own registration and shows as a missing metric.
        let _ = TextEncoder::new().encode(&families, &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
