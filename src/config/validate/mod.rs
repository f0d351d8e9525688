//! Validation: the walk over the file as written that turns each part into its typed
//! config and collects every problem on the way. The small top-level tables
//! (`runtime`, `admin`, `logging`), the checks across items (an address or a name
//! used twice) and the small checks every table uses are here; listeners, routes,
//! upstreams and the upstreams' policies each have their file.

mod cache;
mod listeners;
mod policies;
mod rate_limits;
mod routes;
mod upstreams;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::defaults::*;
use super::file::{self, FileConfig};
use super::problems::Problems;
use super::{
    AccessLogFormat, AccessLogTarget, AdminConfig, Config, ListenerConfig, LoggingConfig,
    ResolverConfig, RuntimeConfig, Secret,
};
use listeners::validate_listener;
use routes::validate_route;
use upstreams::validate_upstream;

pub(super) fn validate(raw: FileConfig, problems: &mut Problems<'_>) -> Config {
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
    let redis = raw
        .redis
        .as_ref()
        .map(|redis| cache::validate_redis(redis.get_ref(), problems));
    let cache = raw
        .cache
        .as_ref()
        .map(|cache| cache::validate_cache(cache.get_ref(), problems))
        .unwrap_or_default();
    let policy_names: Vec<&str> = raw
        .rate_limits
        .keys()
        .map(|k| k.get_ref().as_str())
        .collect();
    let rate_limits = raw
        .rate_limits
        .iter()
        .map(|(name, policy)| {
            rate_limits::validate_policy(name, policy.get_ref(), redis.is_some(), problems)
        })
        .collect();
    let mut route_names = HashSet::new();
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .map(|(index, route)| {
            let config = validate_route(
                index,
                route.get_ref(),
                &upstream_names,
                &policy_names,
                redis.is_some(),
                problems,
            );
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
        let raw = admin.get_ref();
        let token = raw.token.as_ref().map(|token| {
            let text = token.get_ref();
            // Sent in a header: visible ASCII, and long enough not to be guessed.
            if text.len() < 16 || !text.bytes().all(|b| b.is_ascii_graphic()) {
                problems.spanned(
                    token,
                    "token",
                    "expected at least 16 visible ASCII characters, e.g. the output of `openssl rand -hex 32`",
                );
            }
            Secret(text.clone())
        });
        let allowed_hosts = raw
            .allowed_hosts
            .iter()
            .map(|host| {
                let name = host.get_ref().trim().to_ascii_lowercase();
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
                if !valid {
                    problems.spanned(
                        host,
                        "allowed_hosts",
                        format!(
                            "invalid host {:?}: expected a host name without port, e.g. \"weir-admin.internal\"",
                            host.get_ref()
                        ),
                    );
                }
                name
            })
            .collect();
        AdminConfig {
            listen,
            token,
            allowed_hosts,
        }
    });
    let logging = raw
        .logging
        .as_ref()
        .map(|logging| validate_logging(logging, problems))
        .unwrap_or_default();
    let resolver = raw
        .resolver
        .as_ref()
        .map(|resolver| validate_resolver(resolver.get_ref(), problems))
        .unwrap_or_default();
    Config {
        runtime,
        admin,
        logging,
        listeners,
        routes,
        upstreams,
        resolver,
        cache,
        redis,
        rate_limits,
    }
}

fn validate_resolver(raw: &file::FileResolver, problems: &mut Problems<'_>) -> ResolverConfig {
    let nameservers = raw
        .nameservers
        .iter()
        .flatten()
        .map(|server| {
            let address = server.get_ref().0;
            if address.port() == 0 {
                problems.spanned(
                    server,
                    "nameservers",
                    "a name server needs its port, usually 53",
                );
            }
            address
        })
        .collect();
    let timeout = positive_duration(&raw.timeout, "timeout", DEFAULT_RESOLVER_TIMEOUT, problems);
    let min_ttl = positive_duration(&raw.min_ttl, "min_ttl", DEFAULT_MIN_TTL, problems);
    let max_ttl = positive_duration(&raw.max_ttl, "max_ttl", DEFAULT_MAX_TTL, problems);
    if min_ttl > max_ttl {
        match (&raw.max_ttl, &raw.min_ttl) {
            (Some(max), _) => problems.spanned(
                max,
                "max_ttl",
                format!("must be at least min_ttl ({min_ttl:?})"),
            ),
            (None, Some(min)) => problems.spanned(
                min,
                "min_ttl",
                format!("must be at most max_ttl ({max_ttl:?}, its default)"),
            ),
            (None, None) => {}
        }
    }
    // 0 is allowed: a name that disappears loses its backends at once.
    let hold_missing = raw
        .hold_missing
        .as_ref()
        .map_or(DEFAULT_HOLD_MISSING, |d| d.get_ref().0);
    ResolverConfig {
        nameservers,
        timeout,
        min_ttl,
        max_ttl,
        hold_missing,
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

/// A path from the config file, read from the file's folder when relative.
fn relative_to_file(file: &str, path: &Spanned<String>) -> PathBuf {
    Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(path.get_ref())
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
