//! The configuration pipeline: TOML text → [`file::FileConfig`] (syntax, unknown keys)
//! → [`Config`] (validated, typed). A `Config` can only be obtained through
//! [`load`] or [`parse`], so the rest of weir never sees an unchecked value.
//!
//! - this file: the typed config ([`Config`] and its parts) and loading;
//! - [`file`](mod@file): the file as written, every value with its span;
//! - [`defaults`]: the value of every key left out, and why;
//! - `problems`: positions and problems ([`ConfigError`], [`Problem`]): line and
//!   column of a span, the key it names, messages an operator can read;
//! - `validate`: the walk from the file as written to the typed config, with the
//!   top-level tables; in `validate/`, one file each for listeners, routes,
//!   upstreams and the upstreams' policies (strategy, sticky, health checks,
//!   outlier detection, retries).

pub mod defaults;
pub mod file;
mod problems;
mod validate;

pub use problems::{ConfigError, Problem};

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use file::FileConfig;
use problems::{Problems, key_at, missing_field, readable};

/// A validated configuration: everything the daemon needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub runtime: RuntimeConfig,
    /// The admin API's listener (metrics, health, status, reload); none when absent.
    pub admin: Option<AdminConfig>,
    pub logging: LoggingConfig,
    pub listeners: Vec<ListenerConfig>,
    pub routes: Vec<RouteConfig>,
    /// In name order; routes refer to them by index.
    pub upstreams: Vec<UpstreamConfig>,
    /// How backend names are looked up.
    pub resolver: ResolverConfig,
    /// The in-process response cache's sizes.
    pub cache: CacheConfig,
    /// The Redis shared by weir instances (cache), when configured.
    pub redis: Option<RedisConfig>,
    /// Named rate-limit policies, in name order; routes refer to them by index.
    pub rate_limits: Vec<RateLimitPolicy>,
}

/// `[rate_limits.NAME]`: how many requests of one key are let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitPolicy {
    pub name: String,
    /// `count` requests per `per`, evenly spaced.
    pub rate: Rate,
    /// Requests let through at once before the spacing applies (at least 1).
    pub burst: u32,
    pub key: LimitKey,
    pub scope: LimitScope,
    /// What a global policy does while Redis cannot answer.
    pub on_redis_error: OnRedisError,
}

/// Policies one route may list.
pub const MAX_ROUTE_POLICIES: usize = 8;

/// `rate = "N/s"`: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// What a policy counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client address (behind `trusted_proxies`, the forwarded one).
    Client,
    Header(http::HeaderName),
    Cookie(String),
    Query(String),
    /// Every request of the route together.
    Route,
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitKey::Client => f.write_str("client"),
            LimitKey::Header(name) => write!(f, "header:{name}"),
            LimitKey::Cookie(name) => write!(f, "cookie:{name}"),
            LimitKey::Query(name) => write!(f, "query:{name}"),
            LimitKey::Route => f.write_str("route"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// Each weir instance counts alone.
    Local,
    /// Counted in Redis, across every instance that shares it.
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Each instance limits alone, at the policy's rate.
    Local,
    Allow,
    Deny,
}

/// `[cache]`: bounds of the in-process response store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes of stored responses (heads and bodies) at most.
    pub memory: u64,
    /// Larger responses stream through without being stored.
    pub max_object_size: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory: defaults::DEFAULT_CACHE_MEMORY,
            max_object_size: defaults::DEFAULT_MAX_OBJECT_SIZE,
        }
    }
}

/// `[redis]`: where the shared state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL, perhaps with a password: kept out of logs.
    pub url: Secret,
    /// The URL without its password, for logs.
    pub shown_url: String,
    /// One command; past it the command counts as failed.
    pub timeout: Duration,
    pub key_prefix: String,
}

/// A route's `cache`: how its responses are cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    /// A stale response may be answered at once while one revalidation runs
    /// this long past its freshness (unless the response says otherwise).
    pub stale_while_revalidate: Duration,
    /// A stale response may answer a backend error this long past its freshness.
    pub stale_if_error: Duration,
    /// Longest a request waits on another's fill of the same key.
    pub lock_timeout: Duration,
    /// Freshness of a cacheable response that gives none (zero: none).
    pub default_ttl: Duration,
    pub store: CacheStore,
}

/// Where a route's responses are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStore {
    Memory,
    Redis,
    Both,
}

impl CacheStore {
    pub fn memory(self) -> bool {
        matches!(self, CacheStore::Memory | CacheStore::Both)
    }

    pub fn redis(self) -> bool {
        matches!(self, CacheStore::Redis | CacheStore::Both)
    }
}

/// `[resolver]`: where and how often backend names are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// `IP:port` of each name server; empty: those of `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// One query.
    pub timeout: Duration,
    /// Records are looked up again no sooner than this after an answer...
    pub min_ttl: Duration,
    /// ... and no later than this, whatever their TTL.
    pub max_ttl: Duration,
    /// A name that stops existing (NXDOMAIN, or no records) keeps its last
    /// backends this long.
    pub hold_missing: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            nameservers: Vec::new(),
            timeout: defaults::DEFAULT_RESOLVER_TIMEOUT,
            min_ttl: defaults::DEFAULT_MIN_TTL,
            max_ttl: defaults::DEFAULT_MAX_TTL,
            hold_missing: defaults::DEFAULT_HOLD_MISSING,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// `error`, `warn`, `info`, `debug` or `trace` (`RUST_LOG` overrides it).
    pub level: String,
    pub access_log: AccessLogTarget,
    pub access_log_format: AccessLogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".to_owned(),
            access_log: AccessLogTarget::Off,
            access_log_format: AccessLogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// Apache/nginx combined format, with weir's fields appended.
    Combined,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `POST` endpoints need `Authorization: Bearer <token>` when set.
    pub token: Option<Secret>,
    /// Host names (lowercase, without port) the admin listener answers besides
    /// IP literals and `localhost`.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Longest a request body may stall between two reads.
    pub body_timeout: Duration,
    /// Longest a write to the client may stall.
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
    /// Peers whose `X-Forwarded-*` headers are believed (an L4 or L7 balancer in
    /// front); the client address is then read from `X-Forwarded-For`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Open client connections at most; past it weir stops accepting and new
    /// connections wait in the kernel's backlog. 0 = unlimited.
    pub max_connections: u32,
    /// Every connection starts with a PROXY protocol header (v1 or v2) whose
    /// source address is the client's.
    pub proxy_protocol: bool,
    /// TLS termination: certificates (chosen by SNI) and optional client CA.
    pub tls: Option<TlsConfig>,
    pub tls_handshake_timeout: Duration,
    /// HTTP/2 streams a client may have open at once on one connection.
    pub max_concurrent_streams: u32,
}

/// A listener's TLS: the files, checked for form here and loaded by `tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The first is the default, for clients that send no (or an unknown) SNI.
    pub certs: Vec<CertFiles>,
    /// Clients must present a certificate issued by one of these CAs (mTLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub name: String,
    pub host: Option<HostPattern>,
    /// Without a trailing slash (except for "/" itself).
    pub path_prefix: Option<String>,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Responses are cached when set.
    pub cache: Option<RouteCache>,
    /// Indices into [`Config::rate_limits`]: every one must let a request through.
    pub rate_limit: Vec<usize>,
}

/// A route's `host`: exact name or `*.suffix`, stored lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` is stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    pub strategy: StrategyKind,
    /// Bounded-load consistent hashing (`hash_balance_factor`, in percent): no
    /// backend takes more than this share of the average in-flight load.
    pub hash_balance_percent: Option<u32>,
    /// Cookie-based session affinity on top of the strategy.
    pub sticky: Option<StickyConfig>,
    /// Active checks; without them every backend counts as healthy.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive ejection of backends that keep failing.
    pub outlier_detection: Option<OutlierConfig>,
    /// Below this percentage of usable backends, balance over all of them
    /// (Envoy's panic mode); 0 = off.
    pub panic_threshold: u32,
    pub retries: RetryPolicy,
    /// A backend that comes back ramps its weight from 10 % to 100 % over this.
    pub slow_start: Option<Duration>,
    /// Connections to backends start with a PROXY protocol header of this
    /// version, carrying the client's address.
    pub send_proxy_protocol: Option<crate::proxy_protocol::Version>,
    /// TLS towards the backends, when set.
    pub tls: Option<UpstreamTlsConfig>,
    /// The HTTP version spoken to the backends.
    pub protocol: UpstreamProtocol,
    /// Concurrent requests per backend; 0 = unlimited.
    pub max_connections_per_backend: u32,
    /// How long a request waits for a slot when every backend is at its limit;
    /// `None` answers 503 at once.
    pub queue_timeout: Option<Duration>,
    /// Backends written as IP addresses.
    pub backends: Vec<BackendConfig>,
    /// Backends written as names: their addresses come from DNS.
    pub dns: Vec<DnsBackends>,
    pub timeouts: UpstreamTimeouts,
}

/// `tls` of an upstream: how weir verifies its backends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTlsConfig {
    /// The name sent as SNI and verified in the backend's certificate; without
    /// it, the backend's IP address is verified.
    pub sni: Option<String>,
    /// Roots to verify against; without it, the system's roots.
    pub ca: Option<PathBuf>,
    /// Accept any certificate (testing only; warned about loudly).
    pub insecure_skip_verify: bool,
}

/// `protocol` of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with a pool of keep-alive connections (the default).
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`): one multiplexed connection per backend.
    H2,
    /// HTTP/2 over cleartext TCP with prior knowledge.
    H2c,
}

impl UpstreamProtocol {
    pub fn is_http2(self) -> bool {
        matches!(self, UpstreamProtocol::H2 | UpstreamProtocol::H2c)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategyKind {
    RoundRobin,
    LeastConnections,
    /// Power of two random choices on in-flight requests (`p2c`).
    PowerOfTwo,
    Random,
    /// Consistent hashing on a part of the request (`hash` with `hash_key`).
    Hash(HashKey),
    /// Consistent hashing on the client address.
    IpHash,
    /// Peak-EWMA latency × in-flight, with two random choices.
    Ewma,
}

/// `sticky`: the first response names the chosen backend in a cookie; later requests
/// carrying it go back to that backend while it is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    pub cookie: String,
    /// The cookie's `Max-Age`; `None` makes it a session cookie.
    pub ttl: Option<Duration>,
    /// Keys the cookie values, so instances sharing it agree and clients cannot forge
    /// one; `None` keys them with a random key of this process.
    pub secret: Option<Secret>,
}

/// `[upstreams.NAME.health_check]`: one HTTP GET per backend and interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Origin-form: path and optional query.
    pub path: String,
    /// The `Host` header; `None` sends the backend's address.
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub expect_status: StatusSet,
    /// Whether a backend that was never checked takes traffic.
    pub initially_healthy: bool,
}

/// Status codes that count as a passed check: inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    pub fn contains(&self, status: u16) -> bool {
        self.0
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }
}

/// `[upstreams.NAME.outlier_detection]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

/// When a failed try is tried again, on another backend when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra tries after the first.
    pub attempts: u32,
    /// Whether a request that reached a backend may be tried again (idempotent
    /// methods with a replayable body only). Without a `retries` table only what
    /// never left weir (a refused or timed-out connect) is retried.
    pub after_send: bool,
    /// Caps retries to a share of the requests; `None` without a `retries` table.
    pub budget: Option<RetryBudgetConfig>,
    /// Request bodies up to this size are kept so they can be sent again.
    pub max_body_bytes: u64,
    /// Pause before the first retry; doubles per retry, with jitter.
    pub backoff: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetConfig {
    /// Retries may add this percentage of the requests, over a 10 s window ...
    pub percent: u32,
    /// ... but this many per second are always allowed.
    pub min_per_second: u32,
}

impl RetryPolicy {
    /// Without a `retries` table: one more try, on another backend, for a request
    /// that could not be sent at all (as nginx's default `proxy_next_upstream error`).
    pub const UNSENT_ONLY: RetryPolicy = RetryPolicy {
        attempts: 1,
        after_send: false,
        budget: None,
        max_body_bytes: 0,
        backoff: Duration::ZERO,
    };
}

/// A value kept out of logs and debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl StrategyKind {
    /// The name as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round_robin",
            StrategyKind::LeastConnections => "least_connections",
            StrategyKind::PowerOfTwo => "p2c",
            StrategyKind::Random => "random",
            StrategyKind::Hash(_) => "hash",
            StrategyKind::IpHash => "ip_hash",
            StrategyKind::Ewma => "ewma",
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// The part of a request that `hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Path,
    /// Path and query.
    Uri,
    Header(http::HeaderName),
    Cookie(String),
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: SocketAddr,
    pub weight: NonZeroU32,
}

/// One backend entry written as a name: every address it resolves to is a
/// backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsBackends {
    pub lookup: DnsLookup,
    /// The weight of each address of an A/AAAA name (SRV records carry their own).
    pub weight: NonZeroU32,
}

/// What is looked up for a [`DnsBackends`] entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DnsLookup {
    /// `address = "name:port"`: the A and AAAA records of `host`, on `port`.
    Address { host: String, port: u16 },
    /// `srv = "name"`: the SRV records of `name` (targets, ports, weights,
    /// priorities).
    Srv { name: String },
}

impl DnsLookup {
    /// The name looked up.
    pub fn name(&self) -> &str {
        match self {
            DnsLookup::Address { host, .. } => host,
            DnsLookup::Srv { name } => name,
        }
    }
}

impl fmt::Display for DnsLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsLookup::Address { host, port } => write!(f, "{host}:{port}"),
            DnsLookup::Srv { name } => write!(f, "srv {name}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// Time to the first byte of the response head, per try.
    pub response: Duration,
    /// How long a pooled connection may stay idle.
    pub idle: Duration,
    /// Cap on the time to a response head over all tries, backoff included.
    pub request: Option<Duration>,
}

// === loading ===

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates config text; `file` is the name used in error messages.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    // Some Windows editors start UTF-8 files with a byte order mark. Editors do not
    // show it, so positions are counted from after it, and every span (toml's and
    // ours) is an offset into the same text.
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut problems = Problems {
        text,
        file,
        list: Vec::new(),
    };
    if text.trim().is_empty() {
        problems.at(
            0..0,
            None,
            "the config file is empty: it needs at least one [[listeners]], one [[routes]] and one [upstreams.NAME]",
        );
        return Err(ConfigError::Invalid(problems.list));
    }
    let raw: FileConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            let span = err.span().unwrap_or(0..0);
            let message = err.message().trim_end();
            match missing_field(message) {
                Some(field) => problems.at(
                    span,
                    Some(field.to_owned()),
                    format!("missing field `{field}`: this key is required in this table"),
                ),
                None => problems.at(span.clone(), key_at(text, &span), readable(message)),
            }
            return Err(ConfigError::Invalid(problems.list));
        }
    };
    let config = validate::validate(raw, &mut problems);
    problems.list.sort_by_key(|p| (p.line, p.column));
    if problems.list.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems.list))
    }
}

#[cfg(test)]
mod tests;
