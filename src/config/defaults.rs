//! Default values of every optional key, each with the reason it was chosen.

use std::time::Duration;

/// Long enough for a slow mobile client to send its head, short enough to shed
/// slowloris connections (nginx's `client_header_timeout` is 60 s; HAProxy's
/// `timeout http-request` is commonly set to 10 s).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Keep-alive idle time of client connections; nginx's `keepalive_timeout` is 75 s,
/// most clients and load balancers in front close theirs after 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest a request body may stall between two reads: a client on a poor mobile
/// link pauses for seconds, not half a minute (nginx's `client_body_timeout` is
/// 60 s, HAProxy's `timeout client` is commonly 30 s).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a write to the client may stall: a reader that takes nothing for this
/// long holds a connection and its buffered response for nothing (nginx's
/// `send_timeout` is 60 s, HAProxy's `timeout client` is commonly 30 s).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head accepted before answering 431 (HAProxy's `tune.bufsize`
/// is 16 KiB, nginx allows 4 × 8 KiB; cookies of big sites need more).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// The smallest head limit the HTTP/1 parser can work with: it reads in 8 KiB steps.
pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;

/// Upper bound on the head limit, so one client cannot make weir hold megabytes.
pub const MAX_MAX_HEADER_BYTES: usize = 1024 * 1024;

/// Time to establish a TCP connection to a backend. A backend on the same network
/// answers a SYN within milliseconds; seconds mean it is gone.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time to the first byte of the response head, per try (nginx's `proxy_read_timeout`).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a pooled backend connection may sit unused. Kept below the keep-alive
/// timeout of common application servers so weir, not the backend, closes first.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per backend; beyond it a finished connection is closed.
pub const DEFAULT_MAX_IDLE_PER_BACKEND: usize = 256;

/// Grace period for in-flight requests on SIGTERM (Kubernetes' default
/// `terminationGracePeriodSeconds` is 30 s).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Backend weight when none is written.
pub const DEFAULT_WEIGHT: u32 = 1;

/// Largest weight: smooth weighted round robin precomputes one cycle of
/// sum(weights) slots, so weights are kept small (HAProxy caps them at 256).
pub const MAX_WEIGHT: u32 = 1000;

/// Upper bound on `runtime.workers`: far beyond any core count, low enough to catch
/// a typo before it spawns threads by the thousand.
pub const MAX_WORKERS: usize = 1024;

/// `sticky.cookie`: the affinity cookie's name.
pub const DEFAULT_STICKY_COOKIE: &str = "weir_srv";

/// `health_check.path`: the root, which every HTTP server answers somehow.
pub const DEFAULT_HEALTH_PATH: &str = "/";

/// `health_check.interval` (HAProxy's `inter` is 2 s, nginx Plus' 5 s).
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// `health_check.timeout`: a health endpoint that needs more than a second is not
/// healthy.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// `health_check.healthy_threshold` (HAProxy's `rise` is 2).
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;

/// `health_check.unhealthy_threshold` (HAProxy's `fall` is 3).
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

/// `outlier_detection.consecutive_failures` (Envoy's `consecutive_5xx` is 5).
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;

/// `outlier_detection.base_ejection_time` (Envoy's default).
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);

/// `outlier_detection.max_ejection_time` (Envoy's default).
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// `outlier_detection.max_ejection_percent`: half the pool stays in rotation
/// whatever it returns (Envoy's 10 % ejects nothing in pools under 10).
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;

/// `retries.attempts`: extra tries after the first (nginx tries every server of the
/// upstream; two more tries reach a third backend, enough to get past one bad one).
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

/// `retries.budget`: retries may add this share of the requests (linkerd's default).
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;

/// `retries.min_retries_per_second`: the budget's floor, so a quiet upstream can
/// still retry (linkerd's default).
pub const DEFAULT_MIN_RETRIES_PER_SECOND: u32 = 10;

/// `retries.max_body_bytes`: request bodies up to this size are kept for a replay.
pub const DEFAULT_RETRY_MAX_BODY_BYTES: u64 = 64 * 1024;

/// `retries.backoff`: the first pause between tries; it doubles per try.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// Upper bound of `retries.max_body_bytes`: bodies kept for replay sit in memory.
pub const MAX_RETRY_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// `tls_handshake_timeout`: a TLS handshake takes a few round trips; seconds mean a
/// client that will not finish.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `max_concurrent_streams`: HTTP/2 streams per client connection (hyper's and
/// Envoy's order of magnitude; nginx's `http2_max_concurrent_streams` is 128).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 200;

/// One DNS query: a name server on the same network answers in milliseconds; a
/// lost UDP packet is retried within this (hickory's default is 5 s, too long
/// for a balancer waiting on a new backend set).
pub const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(2);

/// Re-resolve no more often than this, whatever the TTL: a TTL of 0 (common in
/// service meshes) must not turn into a query loop.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);

/// Re-resolve at least this often, whatever the TTL: a day-long TTL must not
/// hide a changed backend set for a day.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);

/// A name that disappears (NXDOMAIN or no records) keeps its last backends this
/// long: a registry briefly empty during a deploy must not take the upstream down.
pub const DEFAULT_HOLD_MISSING: Duration = Duration::from_secs(30);

/// In-process cache size: room for tens of thousands of typical pages without
/// weighing on a small machine (Squid's `cache_mem` is 256 MB).
pub const DEFAULT_CACHE_MEMORY: u64 = 256 << 20;

/// Largest response stored: a page or an image, not a video (Squid's
/// `maximum_object_size_in_memory` is 512 KiB, Varnish has no limit).
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 8 << 20;

/// One Redis command: on a LAN Redis answers in well under a millisecond;
/// beyond this it is better to go without it than to wait.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);

/// Prefix of every Redis key weir writes, so a Redis shared with other users
/// keeps weir's keys apart.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "weir:";

/// Longest a request waits on another's fill of the same key before going to
/// the backend itself (nginx's `proxy_cache_lock_timeout` is 5 s).
pub const DEFAULT_CACHE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
