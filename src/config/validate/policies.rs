//! Validation of an upstream's policies: the strategy and its hash key, sticky
//! cookies, health checks, outlier detection and retries.

use std::time::Duration;

use super::{int_in, positive_duration};
use crate::config::defaults::*;
use crate::config::file::{self, FileUpstream};
use crate::config::problems::Problems;
use crate::config::{
    HashKey, HealthCheckConfig, OutlierConfig, RetryBudgetConfig, RetryPolicy, Secret, StatusSet,
    StickyConfig, StrategyKind,
};

/// `strategy`, with the `hash_key` that `hash` needs.
pub(super) fn validate_strategy(raw: &FileUpstream, problems: &mut Problems<'_>) -> StrategyKind {
    match &raw.strategy {
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
    }
}

impl HashKey {
    /// `path`, `uri`, `header:NAME`, `cookie:NAME` or `query:NAME`; rate-limit
    /// keys read the last three the same way.
    pub(super) fn parse(text: &str) -> Option<HashKey> {
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

pub(super) fn validate_sticky(raw: &file::FileSticky, problems: &mut Problems<'_>) -> StickyConfig {
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

pub(super) fn validate_health_check(
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

pub(super) fn validate_outlier_detection(
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

pub(super) fn validate_retries(
    raw: &file::FileRetries,
    problems: &mut Problems<'_>,
) -> RetryPolicy {
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
