//! The configuration pipeline: TOML text → [`file::FileConfig`] (syntax, unknown keys)
//! → [`Config`] (validated, typed). A `Config` can only be obtained through
//! [`load`] or [`parse`], so the rest of weir never sees an unchecked value.
//!
//! - this file: the typed config ([`Config`] and its parts), loading and validation;
//! - [`file`]: the file as written, every value with its span;
//! - [`defaults`]: the value of every key left out, and why;
//! - `problems`: positions and problems ([`ConfigError`], [`Problem`]): line and
//!   column of a span, the key it names, messages an operator can read.

pub mod defaults;
pub mod file;
mod problems;

pub use problems::{ConfigError, Problem};

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::router::{BadPath, normalise_path};
use defaults::*;
use file::{FileConfig, FileListener, FileRoute, FileUpstream};
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
    pub backends: Vec<BackendConfig>,
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

impl HashKey {
    fn parse(text: &str) -> Option<HashKey> {
        let named = |prefix: &str| text.strip_prefix(prefix).filter(|name| !name.is_empty());
        match text {
            "path" => Some(HashKey::Path),
            "uri" => Some(HashKey::Uri),
            _ => {
                if let Some(name) = named("header:") {
                    http::HeaderName::from_bytes(name.as_bytes())
                        .ok()
                        .map(HashKey::Header)
                } else if let Some(name) = named("cookie:") {
                    Some(HashKey::Cookie(name.to_owned()))
                } else {
                    named("query:").map(|name| HashKey::Query(name.to_owned()))
                }
            }
        }
    }
}

/// Strategies this version has, as written in the config.
const STRATEGIES: &[&str] = &[
    "round_robin",
    "least_connections",
    "p2c",
    "random",
    "hash",
    "ip_hash",
    "ewma",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: SocketAddr,
    pub weight: NonZeroU32,
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
    let config = validate(raw, &mut problems);
    problems.list.sort_by_key(|p| (p.line, p.column));
    if problems.list.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems.list))
    }
}

// === validation ===

fn validate(raw: FileConfig, problems: &mut Problems<'_>) -> Config {
    let workers = raw.runtime.as_ref().and_then(|r| r.workers.as_ref());
    if let Some(w) = workers
        && *w.get_ref() > MAX_WORKERS
    {
        problems.spanned(
            w,
            "workers",
            format!("must be between 0 (one per core) and {MAX_WORKERS}"),
        );
    }
    let runtime = RuntimeConfig {
        workers: workers.map_or(0, |w| *w.get_ref()),
        shutdown_timeout: raw
            .runtime
            .as_ref()
            .and_then(|r| r.shutdown_timeout)
            .map_or(DEFAULT_SHUTDOWN_TIMEOUT, |d| d.0),
    };

    let upstream_names: Vec<&str> = raw.upstreams.keys().map(|k| k.get_ref().as_str()).collect();
    let upstreams = raw
        .upstreams
        .iter()
        .map(|(name, upstream)| validate_upstream(name, upstream, problems))
        .collect();

    if raw.listeners.is_empty() {
        problems.at(
            0..0,
            Some("listeners".into()),
            "no [[listeners]]: add one, e.g. listen = \"0.0.0.0:8080\"",
        );
    }
    let mut addresses = HashSet::new();
    let mut names = HashSet::new();
    let listeners: Vec<ListenerConfig> = raw
        .listeners
        .iter()
        .enumerate()
        .map(|(index, listener)| {
            let config = validate_listener(index, listener.get_ref(), problems);
            // Port 0 asks the kernel for a fresh port each time: never a clash.
            if config.listen.port() != 0 && !addresses.insert(config.listen) {
                problems.spanned(
                    &listener.get_ref().listen,
                    "listen",
                    format!("{} is already used by another listener; each listener needs its own address", config.listen),
                );
            }
            if !names.insert(config.name.clone()) {
                let span = listener.get_ref().name.as_ref().map_or(listener.span(), |n| n.span());
                problems.at(
                    span,
                    Some("name".into()),
                    format!("duplicate listener name {:?}; listener names must be unique", config.name),
                );
            }
            config
        })
        .collect();

    if raw.routes.is_empty() {
        problems.at(
            0..0,
            Some("routes".into()),
            "no [[routes]]: add one, e.g. upstream = \"NAME\"",
        );
    }
    let mut route_names = HashSet::new();
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .map(|(index, route)| {
            let config = validate_route(index, route.get_ref(), &upstream_names, problems);
            if !route_names.insert(config.name.clone()) {
                let span = route
                    .get_ref()
                    .name
                    .as_ref()
                    .map_or(route.span(), |n| n.span());
                problems.at(
                    span,
                    Some("name".into()),
                    format!(
                        "duplicate route name {:?}; route names must be unique",
                        config.name
                    ),
                );
            }
            config
        })
        .collect();

    let admin = raw.admin.as_ref().map(|admin| {
        let listen = admin.get_ref().listen.get_ref().0;
        if listen.port() != 0 && listeners.iter().any(|l: &ListenerConfig| l.listen == listen) {
            problems.spanned(
                &admin.get_ref().listen,
                "admin.listen",
                format!("{listen} is also a proxy listener; admin paths never answer on a public listener"),
            );
        }
        AdminConfig { listen }
    });
    let logging = raw
        .logging
        .as_ref()
        .map(|logging| validate_logging(logging, problems))
        .unwrap_or_default();
    Config {
        runtime,
        admin,
        logging,
        listeners,
        routes,
        upstreams,
    }
}

fn validate_tls(raw: &Spanned<file::FileTls>, problems: &mut Problems<'_>) -> TlsConfig {
    let file = problems.file;
    let path = |p: &Spanned<String>| relative_to_file(file, p);
    let tls = raw.get_ref();
    let mut certs = Vec::new();
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => certs.push(CertFiles {
            cert: path(cert),
            key: path(key),
        }),
        (None, None) => {}
        (Some(cert), None) => problems.spanned(cert, "tls.cert", "tls.cert needs tls.key"),
        (None, Some(key)) => problems.spanned(key, "tls.key", "tls.key needs tls.cert"),
    }
    certs.extend(tls.certs.iter().map(|c| CertFiles {
        cert: path(&c.get_ref().cert),
        key: path(&c.get_ref().key),
    }));
    if certs.is_empty() && tls.cert.is_none() && tls.key.is_none() {
        problems.spanned(
            raw,
            "tls",
            "tls needs a certificate: tls = { cert = \"cert.pem\", key = \"key.pem\" } or [[listeners.tls.certs]] tables",
        );
    }
    TlsConfig {
        certs,
        client_ca: tls.client_ca.as_ref().map(path),
    }
}

fn validate_logging(raw: &file::FileLogging, problems: &mut Problems<'_>) -> LoggingConfig {
    let mut logging = LoggingConfig::default();
    if let Some(level) = &raw.level {
        match level.get_ref().as_str() {
            "error" | "warn" | "info" | "debug" | "trace" => {
                logging.level = level.get_ref().clone()
            }
            _ => problems.spanned(
                level,
                "level",
                "expected one of: error, warn, info, debug, trace",
            ),
        }
    }
    if let Some(target) = &raw.access_log {
        logging.access_log = match target.get_ref().as_str() {
            "off" => AccessLogTarget::Off,
            "stdout" => AccessLogTarget::Stdout,
            "" => {
                problems.spanned(
                    target,
                    "access_log",
                    "expected \"off\", \"stdout\" or a file path",
                );
                AccessLogTarget::Off
            }
            path => AccessLogTarget::File(PathBuf::from(path)),
        };
    }
    if let Some(format) = &raw.access_log_format {
        match format.get_ref().as_str() {
            "json" => logging.access_log_format = AccessLogFormat::Json,
            "combined" => logging.access_log_format = AccessLogFormat::Combined,
            _ => problems.spanned(
                format,
                "access_log_format",
                "expected \"json\" or \"combined\"",
            ),
        }
    }
    logging
}

fn validate_listener(
    index: usize,
    raw: &FileListener,
    problems: &mut Problems<'_>,
) -> ListenerConfig {
    let max_concurrent_streams = int_in(
        &raw.max_concurrent_streams,
        "max_concurrent_streams",
        1..=10_000,
        DEFAULT_MAX_CONCURRENT_STREAMS,
        problems,
    );
    let tls = raw.tls.as_ref().map(|tls| validate_tls(tls, problems));
    let tls_handshake_timeout = positive_duration(
        &raw.tls_handshake_timeout,
        "tls_handshake_timeout",
        DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        problems,
    );

    let name = item_name(&raw.name, || format!("listener-{index}"), problems);
    let header_timeout = positive_duration(
        &raw.header_timeout,
        "header_timeout",
        DEFAULT_HEADER_TIMEOUT,
        problems,
    );
    let idle_timeout = positive_duration(
        &raw.idle_timeout,
        "idle_timeout",
        DEFAULT_IDLE_TIMEOUT,
        problems,
    );
    let body_timeout = positive_duration(
        &raw.body_timeout,
        "body_timeout",
        DEFAULT_BODY_TIMEOUT,
        problems,
    );
    let send_timeout = positive_duration(
        &raw.send_timeout,
        "send_timeout",
        DEFAULT_SEND_TIMEOUT,
        problems,
    );
    let max_header_bytes = match &raw.max_header_bytes {
        None => DEFAULT_MAX_HEADER_BYTES,
        Some(value) => {
            match usize::try_from(*value.get_ref()) {
                Ok(n) if (MIN_MAX_HEADER_BYTES..=MAX_MAX_HEADER_BYTES).contains(&n) => n,
                _ => {
                    problems.spanned(
                    value,
                    "max_header_bytes",
                    format!("must be between {MIN_MAX_HEADER_BYTES} and {MAX_MAX_HEADER_BYTES} bytes"),
                );
                    DEFAULT_MAX_HEADER_BYTES
                }
            }
        }
    };
    let max_connections = int_in(
        &raw.max_connections,
        "max_connections",
        0..=10_000_000,
        0,
        problems,
    );
    ListenerConfig {
        name,
        tls,
        tls_handshake_timeout,
        max_concurrent_streams,
        max_connections,
        proxy_protocol: raw.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref()),
        listen: raw.listen.get_ref().0,
        header_timeout,
        idle_timeout,
        body_timeout,
        send_timeout,
        max_header_bytes,
        trusted_proxies: raw
            .trusted_proxies
            .iter()
            .filter_map(|entry| parse_network(entry, problems))
            .collect(),
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address (a /32 or /128).
fn parse_network(entry: &Spanned<String>, problems: &mut Problems<'_>) -> Option<ipnet::IpNet> {
    let text = entry.get_ref().trim();
    let parsed = text
        .parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    match parsed {
        Ok(network) => Some(network.trunc()),
        Err(_) => {
            problems.spanned(
                entry,
                "trusted_proxies",
                format!("invalid network {text:?}: expected an address or CIDR block, e.g. \"10.0.0.0/8\" or \"192.0.2.7\""),
            );
            None
        }
    }
}

/// The `name` of a listener or route, or its default; an empty name is refused.
fn item_name(
    name: &Option<Spanned<String>>,
    default: impl FnOnce() -> String,
    problems: &mut Problems<'_>,
) -> String {
    match name {
        Some(name) if name.get_ref().trim().is_empty() => {
            problems.spanned(name, "name", "must not be empty");
            String::new()
        }
        Some(name) => name.get_ref().clone(),
        None => default(),
    }
}

fn positive_duration(
    value: &Option<Spanned<file::DurationValue>>,
    key: &str,
    default: Duration,
    problems: &mut Problems<'_>,
) -> Duration {
    match value {
        None => default,
        Some(d) if d.get_ref().0.is_zero() => {
            problems.spanned(d, key, "must be greater than zero");
            default
        }
        Some(d) => d.get_ref().0,
    }
}

fn validate_route(
    index: usize,
    raw: &FileRoute,
    upstream_names: &[&str],
    problems: &mut Problems<'_>,
) -> RouteConfig {
    let name = item_name(&raw.name, || format!("route-{index}"), problems);
    let host = raw.host.as_ref().and_then(|host| {
        let text = host.get_ref().trim().to_ascii_lowercase();
        let pattern = match text.strip_prefix("*.") {
            Some(suffix) => HostPattern::Suffix(format!(".{suffix}")),
            None => HostPattern::Exact(text.clone()),
        };
        let bare = text.strip_prefix("*.").unwrap_or(&text);
        let valid = !bare.is_empty()
            && bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
            && bare.split('.').all(|label| !label.is_empty());
        if valid {
            Some(pattern)
        } else {
            problems.spanned(
                host,
                "host",
                format!(
                    "invalid host {:?}: expected a host name without port, e.g. \"api.example.com\" or \"*.example.com\"",
                    host.get_ref()
                ),
            );
            None
        }
    });
    let path_prefix = raw.path_prefix.as_ref().and_then(|prefix| {
        let text = prefix.get_ref();
        if !text.starts_with('/') || text.contains(['?', '#']) || text.contains(char::is_whitespace)
        {
            problems.spanned(
                prefix,
                "path_prefix",
                format!(
                    "invalid path prefix {text:?}: expected a path starting with '/', e.g. \"/api\""
                ),
            );
            return None;
        }
        // Requests are routed on their normalised path; a prefix written
        // otherwise (`/%61pi`, `/a/./b`) would never match one.
        let normal = match normalise_path(text) {
            Ok(normal) => normal,
            Err(bad) => {
                let why = match bad {
                    BadPath::AboveRoot => "its `..` segments climb above the root",
                    BadPath::MalformedPercentEncoding => "a `%` must be followed by two hex digits",
                };
                problems.spanned(
                    prefix,
                    "path_prefix",
                    format!("invalid path prefix {text:?}: {why}"),
                );
                return None;
            }
        };
        let trimmed = normal.trim_end_matches('/');
        Some(if trimmed.is_empty() {
            "/".to_owned()
        } else {
            trimmed.to_owned()
        })
    });
    let target = raw.upstream.get_ref();
    let upstream = match upstream_names.iter().position(|n| n == target) {
        Some(i) => i,
        None => {
            let known = if upstream_names.is_empty() {
                "no upstream is defined; add [upstreams.NAME]".to_owned()
            } else {
                format!("defined upstreams: {}", upstream_names.join(", "))
            };
            problems.spanned(
                &raw.upstream,
                "upstream",
                format!("unknown upstream {target:?}; {known}"),
            );
            0
        }
    };
    RouteConfig {
        name,
        host,
        path_prefix,
        upstream,
    }
}

fn validate_upstream(
    name: &Spanned<String>,
    raw: &Spanned<FileUpstream>,
    problems: &mut Problems<'_>,
) -> UpstreamConfig {
    let raw_span = raw.span();
    let raw = raw.get_ref();
    let tls = raw
        .tls
        .as_ref()
        .and_then(|tls| validate_upstream_tls(tls, problems));
    let protocol = validate_protocol(raw.protocol.as_ref(), tls.is_some(), problems);
    let send_proxy_protocol =
        raw.send_proxy_protocol
            .as_ref()
            .and_then(|version| match version.get_ref().as_str() {
                "v1" => Some(crate::proxy_protocol::Version::V1),
                "v2" => Some(crate::proxy_protocol::Version::V2),
                _ => {
                    problems.spanned(version, "send_proxy_protocol", "expected \"v1\" or \"v2\"");
                    None
                }
            });
    let max_connections_per_backend = int_in(
        &raw.max_connections_per_backend,
        "max_connections_per_backend",
        0..=1_000_000,
        0,
        problems,
    );
    let queue_timeout = raw.queue_timeout.as_ref().and_then(|timeout| {
        if max_connections_per_backend == 0 {
            problems.spanned(
                timeout,
                "queue_timeout",
                "queue_timeout only applies with max_connections_per_backend above 0",
            );
            None
        } else {
            Some(positive_duration(
                &Some(timeout.clone()),
                "queue_timeout",
                Duration::ZERO,
                problems,
            ))
        }
    });

    let strategy = match &raw.strategy {
        None => StrategyKind::RoundRobin,
        Some(s) => match s.get_ref().as_str() {
            "round_robin" => StrategyKind::RoundRobin,
            "least_connections" => StrategyKind::LeastConnections,
            "p2c" => StrategyKind::PowerOfTwo,
            "random" => StrategyKind::Random,
            "ip_hash" => StrategyKind::IpHash,
            "ewma" => StrategyKind::Ewma,
            "hash" => match &raw.hash_key {
                Some(key) => match HashKey::parse(key.get_ref()) {
                    Some(key) => StrategyKind::Hash(key),
                    None => {
                        problems.spanned(
                            key,
                            "hash_key",
                            format!(
                                "invalid hash_key {:?}: expected path, uri, header:NAME, cookie:NAME or query:NAME",
                                key.get_ref()
                            ),
                        );
                        StrategyKind::RoundRobin
                    }
                },
                None => {
                    problems.spanned(s, "strategy", "strategy \"hash\" needs a hash_key: path, uri, header:NAME, cookie:NAME or query:NAME");
                    StrategyKind::RoundRobin
                }
            },
            other => {
                problems.spanned(
                    s,
                    "strategy",
                    format!(
                        "unknown strategy {other:?}; expected one of: {}",
                        STRATEGIES.join(", ")
                    ),
                );
                StrategyKind::RoundRobin
            }
        },
    };

    // By the written name, so a bad hash_key does not also make the factor look misplaced.
    let hashing = raw
        .strategy
        .as_ref()
        .is_some_and(|s| matches!(s.get_ref().as_str(), "hash" | "ip_hash"));
    let hash_balance_percent = raw.hash_balance_factor.as_ref().and_then(|factor| {
        let value = *factor.get_ref();
        if !hashing {
            problems.spanned(factor, "hash_balance_factor", "hash_balance_factor only applies to strategy = \"hash\" or \"ip_hash\"");
            None
        } else if !(1.0..=100.0).contains(&value) {
            problems.spanned(factor, "hash_balance_factor", "must be between 1.0 and 100.0, e.g. 1.25 (a backend may take 125 % of the average load)");
            None
        } else {
            Some((value * 100.0).round() as u32)
        }
    });

    let slow_start = raw.slow_start.as_ref().and_then(|ramp| {
        if hashing {
            // A ramp would move keys back and forth; HAProxy and Envoy leave it out too.
            problems.spanned(ramp, "slow_start", "slow_start does not apply to strategy \"hash\" or \"ip_hash\": their keys would move back and forth");
            None
        } else {
            Some(positive_duration(&Some(ramp.clone()), "slow_start", Duration::ZERO, problems))
        }
    });
    if let Some(key) = &raw.hash_key
        && raw.strategy.as_ref().is_none_or(|s| s.get_ref() != "hash")
    {
        problems.spanned(
            key,
            "hash_key",
            "hash_key only applies to strategy = \"hash\"",
        );
    }

    let sticky = raw
        .sticky
        .as_ref()
        .map(|sticky| validate_sticky(sticky.get_ref(), problems));
    let health_check = raw
        .health_check
        .as_ref()
        .map(|check| validate_health_check(check.get_ref(), problems));
    let outlier_detection = raw
        .outlier_detection
        .as_ref()
        .map(|outlier| validate_outlier_detection(outlier.get_ref(), problems));
    let panic_threshold = int_in(
        &raw.panic_threshold,
        "panic_threshold",
        0..=100,
        0,
        problems,
    );
    let retries = raw
        .retries
        .as_ref()
        .map_or(RetryPolicy::UNSENT_ONLY, |retries| {
            validate_retries(retries.get_ref(), problems)
        });

    if raw.backends.is_empty() {
        problems.at(
            raw_span.clone(),
            Some(format!("upstreams.{}.backends", name.get_ref())),
            "an upstream needs at least one backend, e.g. backends = [{ address = \"127.0.0.1:9001\" }]",
        );
    }
    let mut seen = HashSet::new();
    let backends = raw
        .backends
        .iter()
        .map(|backend| {
            let backend = backend.get_ref();
            let address = backend.address.get_ref().0;
            if !seen.insert(address) {
                problems.spanned(&backend.address, "address", format!("backend {address} is listed twice in this upstream; raise its weight instead"));
            }
            let weight = match &backend.weight {
                None => DEFAULT_WEIGHT,
                Some(w) => match u32::try_from(*w.get_ref()) {
                    Ok(n) if (1..=MAX_WEIGHT).contains(&n) => n,
                    _ => {
                        problems.spanned(w, "weight", format!("must be between 1 and {MAX_WEIGHT}"));
                        DEFAULT_WEIGHT
                    }
                },
            };
            BackendConfig {
                address,
                weight: NonZeroU32::new(weight).unwrap_or(NonZeroU32::MIN),
            }
        })
        .collect();

    let timeouts = raw.timeouts.as_ref();
    let timeouts = UpstreamTimeouts {
        connect: positive_duration(
            &timeouts.and_then(|t| t.connect.clone()),
            "timeouts.connect",
            DEFAULT_CONNECT_TIMEOUT,
            problems,
        ),
        response: positive_duration(
            &timeouts.and_then(|t| t.response.clone()),
            "timeouts.response",
            DEFAULT_RESPONSE_TIMEOUT,
            problems,
        ),
        // 0 is allowed: no connection is kept idle (no reuse).
        idle: timeouts
            .and_then(|t| t.idle.as_ref())
            .map_or(DEFAULT_UPSTREAM_IDLE_TIMEOUT, |d| d.get_ref().0),
        request: timeouts
            .and_then(|t| t.request.clone())
            .map(|d| positive_duration(&Some(d), "timeouts.request", Duration::ZERO, problems)),
    };

    UpstreamConfig {
        name: name.get_ref().clone(),
        strategy,
        hash_balance_percent,
        sticky,
        health_check,
        outlier_detection,
        panic_threshold,
        retries,
        max_connections_per_backend,
        queue_timeout,
        slow_start,
        send_proxy_protocol,
        tls,
        protocol,
        backends,
        timeouts,
    }
}

fn validate_upstream_tls(
    raw: &Spanned<file::FileUpstreamTls>,
    problems: &mut Problems<'_>,
) -> Option<UpstreamTlsConfig> {
    let table = match raw.get_ref() {
        file::FileUpstreamTls::Enabled(false) => return None,
        file::FileUpstreamTls::Enabled(true) => return Some(UpstreamTlsConfig::default()),
        file::FileUpstreamTls::Table(table) => table,
    };
    let sni = table.sni.as_ref().and_then(|sni| {
        let name = sni.get_ref();
        if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
            problems.spanned(sni, "tls.sni", "expected a DNS name or an IP address");
            return None;
        }
        Some(name.clone())
    });
    let insecure_skip_verify = table
        .insecure_skip_verify
        .as_ref()
        .is_some_and(|skip| *skip.get_ref());
    if let (Some(ca), true) = (&table.ca, insecure_skip_verify) {
        problems.spanned(
            ca,
            "tls.ca",
            "tls.ca and tls.insecure_skip_verify contradict each other; keep one",
        );
    }
    Some(UpstreamTlsConfig {
        sni,
        ca: table
            .ca
            .as_ref()
            .map(|ca| relative_to_file(problems.file, ca)),
        insecure_skip_verify,
    })
}

fn validate_protocol(
    raw: Option<&Spanned<String>>,
    tls: bool,
    problems: &mut Problems<'_>,
) -> UpstreamProtocol {
    let Some(raw) = raw else {
        return UpstreamProtocol::Http1;
    };
    match (raw.get_ref().as_str(), tls) {
        ("http1", _) => UpstreamProtocol::Http1,
        ("h2", true) => UpstreamProtocol::H2,
        ("h2c", false) => UpstreamProtocol::H2c,
        ("h2", false) => {
            problems.spanned(
                raw,
                "protocol",
                "protocol = \"h2\" is HTTP/2 over TLS and needs tls; use \"h2c\" for cleartext HTTP/2",
            );
            UpstreamProtocol::Http1
        }
        ("h2c", true) => {
            problems.spanned(
                raw,
                "protocol",
                "protocol = \"h2c\" is cleartext HTTP/2; with tls, use \"h2\"",
            );
            UpstreamProtocol::Http1
        }
        _ => {
            problems.spanned(raw, "protocol", "expected \"http1\", \"h2\" or \"h2c\"");
            UpstreamProtocol::Http1
        }
    }
}

/// A path from the config file, read from the file's folder when relative.
fn relative_to_file(file: &str, path: &Spanned<String>) -> PathBuf {
    Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(path.get_ref())
}

fn validate_retries(raw: &file::FileRetries, problems: &mut Problems<'_>) -> RetryPolicy {
    let attempts = int_in(
        &raw.attempts,
        "retries.attempts",
        0..=10,
        DEFAULT_RETRY_ATTEMPTS,
        problems,
    );
    let percent = match &raw.budget {
        None => DEFAULT_RETRY_BUDGET_PERCENT,
        Some(budget) if (0.0..=1.0).contains(budget.get_ref()) => {
            (budget.get_ref() * 100.0).round() as u32
        }
        Some(budget) => {
            problems.spanned(
                budget,
                "retries.budget",
                "must be a share between 0.0 and 1.0, e.g. 0.2 (retries add at most 20 % to the requests)",
            );
            DEFAULT_RETRY_BUDGET_PERCENT
        }
    };
    let min_per_second = int_in(
        &raw.min_retries_per_second,
        "retries.min_retries_per_second",
        0..=1_000_000,
        DEFAULT_MIN_RETRIES_PER_SECOND,
        problems,
    );
    let max_body_bytes = match &raw.max_body_bytes {
        None => DEFAULT_RETRY_MAX_BODY_BYTES,
        Some(bytes) => match u64::try_from(*bytes.get_ref()) {
            Ok(n) if n <= MAX_RETRY_MAX_BODY_BYTES => n,
            _ => {
                problems.spanned(
                    bytes,
                    "retries.max_body_bytes",
                    format!("must be between 0 and {MAX_RETRY_MAX_BODY_BYTES}"),
                );
                DEFAULT_RETRY_MAX_BODY_BYTES
            }
        },
    };
    RetryPolicy {
        attempts,
        after_send: true,
        budget: Some(RetryBudgetConfig {
            percent,
            min_per_second,
        }),
        max_body_bytes,
        backoff: raw
            .backoff
            .as_ref()
            .map_or(DEFAULT_RETRY_BACKOFF, |b| b.get_ref().0),
    }
}

/// An integer key within `range`, or `default` when absent.
fn int_in(
    value: &Option<Spanned<i64>>,
    key: &str,
    range: std::ops::RangeInclusive<u32>,
    default: u32,
    problems: &mut Problems<'_>,
) -> u32 {
    let Some(value) = value else {
        return default;
    };
    match u32::try_from(*value.get_ref()) {
        Ok(n) if range.contains(&n) => n,
        _ => {
            problems.spanned(
                value,
                key,
                format!("must be between {} and {}", range.start(), range.end()),
            );
            default
        }
    }
}

fn validate_health_check(
    raw: &file::FileHealthCheck,
    problems: &mut Problems<'_>,
) -> HealthCheckConfig {
    let path = match &raw.path {
        None => DEFAULT_HEALTH_PATH.to_owned(),
        Some(path) => {
            let valid = path.get_ref().starts_with('/')
                && path.get_ref().parse::<http::uri::PathAndQuery>().is_ok();
            if !valid {
                problems.spanned(
                    path,
                    "health_check.path",
                    "must be a path starting with '/', e.g. \"/healthz\"",
                );
            }
            path.get_ref().clone()
        }
    };
    let host = raw.host.as_ref().map(|host| {
        if http::HeaderValue::from_str(host.get_ref()).is_err() || host.get_ref().is_empty() {
            problems.spanned(
                host,
                "health_check.host",
                "must be a host name, e.g. \"app.internal\"",
            );
        }
        host.get_ref().clone()
    });
    let interval = positive_duration(
        &raw.interval,
        "health_check.interval",
        DEFAULT_HEALTH_INTERVAL,
        problems,
    );
    let timeout = positive_duration(
        &raw.timeout,
        "health_check.timeout",
        DEFAULT_HEALTH_TIMEOUT,
        problems,
    );
    let healthy_threshold = int_in(
        &raw.healthy_threshold,
        "health_check.healthy_threshold",
        1..=100,
        DEFAULT_HEALTHY_THRESHOLD,
        problems,
    );
    let unhealthy_threshold = int_in(
        &raw.unhealthy_threshold,
        "health_check.unhealthy_threshold",
        1..=100,
        DEFAULT_UNHEALTHY_THRESHOLD,
        problems,
    );
    let expect_status = match &raw.expect_status {
        None => StatusSet(vec![(200, 399)]),
        Some(value) => parse_status_set(value.get_ref()).unwrap_or_else(|| {
            problems.spanned(
                value,
                "health_check.expect_status",
                "expected a status range such as \"200-399\", a status such as 200, or a list such as [200, 204]",
            );
            StatusSet(vec![(200, 399)])
        }),
    };
    let initially_healthy = match &raw.initial_state {
        None => true,
        Some(state) => match state.get_ref().as_str() {
            "healthy" => true,
            "unhealthy" => false,
            _ => {
                problems.spanned(
                    state,
                    "health_check.initial_state",
                    "expected \"healthy\" or \"unhealthy\"",
                );
                true
            }
        },
    };
    HealthCheckConfig {
        path,
        host,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        expect_status,
        initially_healthy,
    }
}

/// `"200-399"`, `"204"`, `200` or `[200, 204]`: statuses within 100–599.
fn parse_status_set(value: &toml::Value) -> Option<StatusSet> {
    let status = |n: i64| u16::try_from(n).ok().filter(|s| (100..=599).contains(s));
    let range = |text: &str| -> Option<(u16, u16)> {
        let (low, high) = text.split_once('-').unwrap_or((text, text));
        let low = status(low.trim().parse().ok()?)?;
        let high = status(high.trim().parse().ok()?)?;
        (low <= high).then_some((low, high))
    };
    match value {
        toml::Value::String(text) => Some(StatusSet(vec![range(text)?])),
        toml::Value::Integer(n) => Some(StatusSet(vec![(status(*n)?, status(*n)?)])),
        toml::Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                toml::Value::Integer(n) => status(*n).map(|s| (s, s)),
                toml::Value::String(text) => range(text),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(StatusSet),
        _ => None,
    }
}

fn validate_outlier_detection(
    raw: &file::FileOutlierDetection,
    problems: &mut Problems<'_>,
) -> OutlierConfig {
    let consecutive_failures = int_in(
        &raw.consecutive_failures,
        "outlier_detection.consecutive_failures",
        1..=1000,
        DEFAULT_CONSECUTIVE_FAILURES,
        problems,
    );
    let base_ejection_time = positive_duration(
        &raw.base_ejection_time,
        "outlier_detection.base_ejection_time",
        DEFAULT_BASE_EJECTION_TIME,
        problems,
    );
    let max_ejection_time = match &raw.max_ejection_time {
        None => DEFAULT_MAX_EJECTION_TIME.max(base_ejection_time),
        Some(max) if max.get_ref().0 < base_ejection_time => {
            problems.spanned(
                max,
                "outlier_detection.max_ejection_time",
                "must be at least base_ejection_time",
            );
            base_ejection_time
        }
        Some(max) => max.get_ref().0,
    };
    let max_ejection_percent = int_in(
        &raw.max_ejection_percent,
        "outlier_detection.max_ejection_percent",
        0..=100,
        DEFAULT_MAX_EJECTION_PERCENT,
        problems,
    );
    OutlierConfig {
        consecutive_failures,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent,
    }
}

fn validate_sticky(raw: &file::FileSticky, problems: &mut Problems<'_>) -> StickyConfig {
    let cookie = match &raw.cookie {
        None => DEFAULT_STICKY_COOKIE.to_owned(),
        Some(name) => {
            // A cookie name is an RFC 6265 token.
            let valid = !name.get_ref().is_empty()
                && name
                    .get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                problems.spanned(
                    name,
                    "sticky.cookie",
                    "invalid cookie name: use letters, digits and !#$%&'*+-.^_`|~, e.g. \"weir_srv\"",
                );
            }
            name.get_ref().clone()
        }
    };
    let ttl = raw.ttl.as_ref().and_then(|ttl| {
        let value = ttl.get_ref().0;
        if value < Duration::from_secs(1) {
            problems.spanned(
                ttl,
                "sticky.ttl",
                "must be at least 1s (leave it out for a cookie that lasts the browser session)",
            );
            None
        } else {
            Some(value)
        }
    });
    let secret = raw.secret.as_ref().and_then(|secret| {
        if secret.get_ref().len() < 16 {
            problems.spanned(
                secret,
                "sticky.secret",
                "too short to key the cookie: use at least 16 characters of random text",
            );
            None
        } else {
            Some(Secret(secret.get_ref().clone()))
        }
    });
    StickyConfig {
        cookie,
        ttl,
        secret,
    }
}

#[cfg(test)]
mod tests;
