//! Rate limits: named policies that each let a key's requests through at a
//! steady rate with a burst (GCRA, in `gcra`), counted on this instance
//! (`store`) or in Redis across instances (`global`), by the part of the
//! request the policy names (`key`). A route lists the policies that apply;
//! every one must let a request through, or it is answered 429 and never
//! forwarded.
//!
//! The algorithm is weir's own rather than a crate's: the headers need the
//! exact time to a full burst, the Redis script must do the same arithmetic
//! as this instance does when Redis is away, and the clock is tokio's, which
//! tests can stop.

mod gcra;
mod global;
mod key;
mod store;

use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus::IntCounter;
use tracing::warn;

use crate::balance::RequestKey;
use crate::config::{Config, LimitScope, OnRedisError, RateLimitPolicy};
use crate::metrics::Metrics;
use crate::redis_connection::Redis;
use gcra::{Gcra, Verdict};
use global::GlobalStore;
use store::LocalStore;

/// How often idle keys are swept out of memory when no request does it.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The rate limits of one config: each route's policies.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// Same order as `config.routes`.
    routes: Vec<RouteLimits>,
    /// Same order as `config.rate_limits`; the next config's policies of the
    /// same name take their counts over.
    policies: Vec<Arc<Policy>>,
    /// The connection of the global policies, of their own so that no cache
    /// traffic queues ahead of a decision.
    redis: Option<Arc<Redis>>,
}

#[derive(Debug)]
struct Policy {
    config: RateLimitPolicy,
    gcra: Gcra,
    /// The counts of a local policy, or of a global one while Redis is away
    /// (`on_redis_error = "local"`).
    local: Arc<LocalStore>,
    global: Option<GlobalStore>,
}

/// The policies of one route.
#[derive(Debug, Default)]
pub struct RouteLimits {
    route: String,
    policies: Box<[Arc<Policy>]>,
    /// `weir_rate_limited_total` of each policy on this route.
    limited: Box<[IntCounter]>,
    /// `RateLimit-Policy`: the same on every answer of the route.
    policy_header: Option<HeaderValue>,
    /// `redis.timeout`, when the route has a global policy.
    redis_timeout: Option<Duration>,
}

/// What the route's policies said of a request: the headers its answer
/// carries, and whether it may go on.
#[derive(Debug)]
pub struct Decision {
    pub headers: LimitHeaders,
    /// Refused: seconds until a request would pass.
    pub refused: Option<u64>,
}

/// The rate-limit headers of an answer.
#[derive(Debug)]
pub struct LimitHeaders {
    policy: Option<HeaderValue>,
    state: Option<HeaderValue>,
    retry_after: Option<u64>,
}

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

impl LimitHeaders {
    /// Puts the headers on an answer, over any a backend sent.
    pub fn apply(self, headers: &mut HeaderMap) {
        if let Some(policy) = self.policy {
            headers.insert(RATELIMIT_POLICY.clone(), policy);
        }
        match self.state {
            Some(state) => headers.insert(RATELIMIT.clone(), state),
            None => headers.remove(&RATELIMIT),
        };
        if let Some(seconds) = self.retry_after {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
    }
}

impl RateLimits {
    /// The rate limits of `config`; policies of `previous` that stay (same
    /// name, key and scope) keep their counts, with a changed rate or burst
    /// in force at once.
    pub fn for_config(config: &Config, previous: Option<&RateLimits>, metrics: &Metrics) -> Self {
        let needs_redis = config
            .rate_limits
            .iter()
            .any(|p| p.scope == LimitScope::Global);
        let redis = config.redis.as_ref().filter(|_| needs_redis).and_then(|wanted| {
            if let Some(kept) = previous
                .and_then(|p| p.redis.as_ref())
                .filter(|r| r.config == *wanted)
            {
                return Some(kept.clone());
            }
            match Redis::new(wanted, "global rate limits") {
                Ok(redis) => Some(redis),
                Err(err) => {
                    // The URL was checked with the config; a client that still
                    // cannot be made leaves global policies to on_redis_error.
                    warn!(error = %err, "redis client not made; global rate limits act as on_redis_error says");
                    None
                }
            }
        });
        let errors = metrics.redis_errors("rate_limit");
        let policies: Vec<Arc<Policy>> = config
            .rate_limits
            .iter()
            .map(|policy| {
                let gcra = Gcra::new(policy.rate, policy.burst);
                let local = previous
                    .and_then(|p| {
                        p.policies.iter().find(|kept| {
                            kept.config.name == policy.name
                                && kept.config.key == policy.key
                                && kept.config.scope == policy.scope
                        })
                    })
                    .map(|kept| kept.local.clone())
                    .unwrap_or_else(|| new_store(metrics.rate_limit_keys(&policy.name)));
                let global = match (policy.scope, &redis) {
                    (LimitScope::Global, Some(redis)) => Some(GlobalStore::new(
                        redis.clone(),
                        &policy.name,
                        policy.key.to_string(),
                        &gcra,
                        errors.clone(),
                    )),
                    _ => None,
                };
                Arc::new(Policy {
                    config: policy.clone(),
                    gcra,
                    local,
                    global,
                })
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                // Local policies first: a refusal decided in memory spares
                // the round trips to Redis.
                let mut listed: Vec<Arc<Policy>> = route
                    .rate_limit
                    .iter()
                    .map(|&i| policies[i].clone())
                    .collect();
                listed.sort_by_key(|p| p.config.scope == LimitScope::Global);
                let listed: Box<[Arc<Policy>]> = listed.into();
                RouteLimits {
                    route: route.name.clone(),
                    limited: listed
                        .iter()
                        .map(|p| metrics.rate_limited(&route.name, &p.config.name))
                        .collect(),
                    policy_header: policy_header(&listed),
                    redis_timeout: listed
                        .iter()
                        .find_map(|p| p.global.as_ref())
                        .map(|g| g.redis.config.timeout),
                    policies: listed,
                }
            })
            .collect();
        RateLimits {
            routes,
            policies,
            redis,
        }
    }

    /// The policies of the route at `index`.
    pub fn route(&self, index: usize) -> &RouteLimits {
        &self.routes[index]
    }
}

/// A store for a policy, swept now and then while it is in use.
fn new_store(keys: prometheus::IntGauge) -> Arc<LocalStore> {
    keys.set(0);
    let store = Arc::new(LocalStore::new(keys));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let weak: Weak<LocalStore> = Arc::downgrade(&store);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(SWEEP_EVERY);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(store) = weak.upgrade() else { break };
                store.sweep(store.now());
            }
        });
    }
    store
}

/// `"name";q=100;w=1, ...`: each policy's quota and window in seconds
/// (httpapi rate-limit headers draft).
fn policy_header(policies: &[Arc<Policy>]) -> Option<HeaderValue> {
    if policies.is_empty() {
        return None;
    }
    let mut text = String::new();
    for policy in policies {
        if !text.is_empty() {
            text.push_str(", ");
        }
        let rate = policy.config.rate;
        let _ = write!(
            text,
            "\"{}\";q={};w={}",
            policy.config.name,
            rate.count,
            rate.per.as_secs()
        );
    }
    HeaderValue::try_from(text).ok()
}

/// Whole seconds, rounded up: a client that waits this long is not early.
fn seconds(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

impl RouteLimits {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Asks every policy of the route about `request`, in order, and stops at
    /// the first that refuses; the policies that let it through before then
    /// get it back, so a refused request costs the client nothing.
    pub async fn check(&self, request: &RequestKey<'_>) -> Decision {
        // Built by hand: `core::fmt` and a string grown from empty were two
        // thirds of a local policy's cost.
        let mut state: Vec<u8> = Vec::with_capacity(48 * self.policies.len());
        let mut refused = None;
        // Where each policy before the current one counted the request.
        let mut counted = [Counted::Nowhere; MAX_POLICIES];
        // However many global policies, the request waits on Redis at most
        // `redis.timeout` in all.
        let deadline = self
            .redis_timeout
            .map(|timeout| tokio::time::Instant::now() + timeout);
        for (index, policy) in self.policies.iter().enumerate() {
            let key = key::of(&policy.config.key, request, &self.route);
            let (verdict, place) = policy.decide(key.as_bytes(), deadline).await;
            let (remaining, reset) = match verdict {
                Some(Verdict::Allowed { remaining, reset }) => (remaining, seconds(reset)),
                Some(Verdict::Refused { retry_after }) => {
                    self.limited[index].inc();
                    let wait = seconds(retry_after).max(1);
                    refused = Some(wait);
                    (0, wait)
                }
                // Redis away and `allow`: nothing known to report.
                None => (u64::MAX, 0),
            };
            if remaining != u64::MAX {
                if !state.is_empty() {
                    state.extend_from_slice(b", ");
                }
                let mut number = itoa::Buffer::new();
                state.push(b'"');
                state.extend_from_slice(policy.config.name.as_bytes());
                state.extend_from_slice(b"\";r=");
                state.extend_from_slice(number.format(remaining).as_bytes());
                state.extend_from_slice(b";t=");
                state.extend_from_slice(number.format(reset).as_bytes());
            }
            if refused.is_some() {
                for (policy, place) in self.policies.iter().zip(&counted).take(index) {
                    let key = key::of(&policy.config.key, request, &self.route);
                    policy.give_back(key.as_bytes(), *place);
                }
                break;
            }
            if let Some(slot) = counted.get_mut(index) {
                *slot = place;
            }
        }
        Decision {
            headers: LimitHeaders {
                policy: self.policy_header.clone(),
                state: (!state.is_empty())
                    .then(|| HeaderValue::from_maybe_shared(bytes::Bytes::from(state)).ok())
                    .flatten(),
                retry_after: refused,
            },
            refused,
        }
    }
}

/// Policies one route may list (the config refuses more).
const MAX_POLICIES: usize = crate::config::MAX_ROUTE_POLICIES;

/// Where a policy counted a request it let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Nowhere,
    Local,
    Global,
}

impl Policy {
    /// The verdict on one request of `key`, and where it was counted; no
    /// verdict when a global policy lets it through unseen (Redis away,
    /// `on_redis_error = "allow"`).
    async fn decide(
        &self,
        key: &[u8],
        deadline: Option<tokio::time::Instant>,
    ) -> (Option<Verdict>, Counted) {
        if let (Some(global), Some(deadline)) = (&self.global, deadline)
            && let Ok(Some(verdict)) =
                tokio::time::timeout_at(deadline, global.check(&self.gcra, &global.key(key))).await
        {
            return (Some(verdict), Counted::Global);
        }
        match (self.config.scope, self.config.on_redis_error) {
            (LimitScope::Local, _) | (LimitScope::Global, OnRedisError::Local) => {
                let local = &self.local;
                let verdict = local.check(&self.gcra, local.hash(key), local.now());
                (Some(verdict), Counted::Local)
            }
            (LimitScope::Global, OnRedisError::Allow) => (None, Counted::Nowhere),
            (LimitScope::Global, OnRedisError::Deny) => (
                Some(Verdict::Refused {
                    retry_after: 1_000_000_000,
                }),
                Counted::Nowhere,
            ),
        }
    }

    /// Gives back a request this policy let through, where it counted it.
    fn give_back(self: &Arc<Self>, key: &[u8], counted: Counted) {
        match counted {
            Counted::Nowhere => {}
            Counted::Local => {
                let local = &self.local;
                local.give_back(&self.gcra, local.hash(key), local.now());
            }
            Counted::Global => {
                let Some(global) = &self.global else { return };
                let name = global.key(key);
                let policy = self.clone();
                // Nobody waits on it: the refusal is already decided.
                tokio::spawn(async move {
                    if let Some(global) = &policy.global {
                        global.give_back(&name).await;
                    }
                });
            }
        }
    }
}
