//! Validation of rate limits: the `[rate_limits.NAME]` policies and a route's
//! `rate_limit` list of them.

use std::time::Duration;

use toml::Spanned;

use crate::config::file::FileRateLimit;
use crate::config::problems::Problems;
use crate::config::{LimitKey, LimitScope, OnRedisError, Rate, RateLimitPolicy};

/// More requests at once than any client should be granted.
const MAX_BURST: u32 = 1_000_000;
/// One request per nanosecond: the arithmetic's resolution.
const MAX_COUNT: u32 = 1_000_000_000;

pub(super) fn validate_policy(
    name: &Spanned<String>,
    raw: &FileRateLimit,
    redis: bool,
    problems: &mut Problems<'_>,
) -> RateLimitPolicy {
    let text = name.get_ref();
    // The name travels in the RateLimit headers and in Redis keys.
    if text.is_empty()
        || text.len() > 64
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        problems.spanned(
            name,
            "rate_limits",
            format!(
                "invalid policy name {text:?}: expected at most 64 letters, digits, '_', '-' or '.'"
            ),
        );
    }
    let rate = parse_rate(raw.rate.get_ref()).unwrap_or_else(|why| {
        problems.spanned(&raw.rate, "rate", why);
        Rate {
            count: 1,
            per: Duration::from_secs(1),
        }
    });
    let burst = match &raw.burst {
        None => 1,
        Some(burst) => match u32::try_from(*burst.get_ref()) {
            // 0 and 1 both mean one at a time, evenly spaced.
            Ok(n) if n <= MAX_BURST => n.max(1),
            _ => {
                problems.spanned(burst, "burst", format!("must be between 0 and {MAX_BURST}"));
                1
            }
        },
    };
    let key = match &raw.key {
        None => LimitKey::Client,
        Some(key) => parse_key(key.get_ref()).unwrap_or_else(|| {
            problems.spanned(
                key,
                "key",
                format!(
                    "invalid key {:?}: expected client, route, header:NAME, cookie:NAME or query:NAME",
                    key.get_ref()
                ),
            );
            LimitKey::Client
        }),
    };
    let scope = match &raw.scope {
        None => LimitScope::Local,
        Some(scope) => match scope.get_ref().as_str() {
            "local" => LimitScope::Local,
            "global" => {
                if !redis {
                    problems.spanned(
                        scope,
                        "scope",
                        "scope = \"global\" needs a [redis] table with the url of the Redis the instances share",
                    );
                }
                LimitScope::Global
            }
            other => {
                problems.spanned(
                    scope,
                    "scope",
                    format!("unknown scope {other:?}: expected \"local\" or \"global\""),
                );
                LimitScope::Local
            }
        },
    };
    let on_redis_error = match &raw.on_redis_error {
        None => OnRedisError::Local,
        Some(choice) => {
            if scope == LimitScope::Local {
                problems.spanned(
                    choice,
                    "on_redis_error",
                    "on_redis_error only applies to scope = \"global\"",
                );
            }
            match choice.get_ref().as_str() {
                "local" => OnRedisError::Local,
                "allow" => OnRedisError::Allow,
                "deny" => OnRedisError::Deny,
                other => {
                    problems.spanned(
                        choice,
                        "on_redis_error",
                        format!(
                            "unknown choice {other:?}: expected \"local\", \"allow\" or \"deny\""
                        ),
                    );
                    OnRedisError::Local
                }
            }
        }
    };
    RateLimitPolicy {
        name: text.clone(),
        rate,
        burst,
        key,
        scope,
        on_redis_error,
    }
}

/// `"N/s"`, `"N/m"` or `"N/h"`.
fn parse_rate(text: &str) -> Result<Rate, String> {
    let expected =
        "expected \"N/s\", \"N/m\" or \"N/h\" with N a whole number of requests, e.g. \"100/s\"";
    let Some((count, unit)) = text.trim().split_once('/') else {
        return Err(format!("invalid rate {text:?}: {expected}"));
    };
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(format!("invalid rate {text:?}: {expected}")),
    };
    let count = count.trim();
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid rate {text:?}: {expected}"));
    }
    match count.parse::<u32>() {
        Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(Rate { count: n, per }),
        _ => Err(format!(
            "invalid rate {text:?}: N must be between 1 and {MAX_COUNT}"
        )),
    }
}

fn parse_key(text: &str) -> Option<LimitKey> {
    let named = |prefix: &str| text.strip_prefix(prefix).filter(|name| !name.is_empty());
    match text {
        "client" => Some(LimitKey::Client),
        "route" => Some(LimitKey::Route),
        _ => {
            if let Some(name) = named("header:") {
                http::HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(LimitKey::Header)
            } else if let Some(name) = named("cookie:") {
                Some(LimitKey::Cookie(name.to_owned()))
            } else {
                named("query:").map(|name| LimitKey::Query(name.to_owned()))
            }
        }
    }
}

/// A route's `rate_limit = ["a", "b"]`: indices into the policies, in order.
pub(super) fn validate_route_limits(
    raw: &Option<Spanned<Vec<Spanned<String>>>>,
    policy_names: &[&str],
    problems: &mut Problems<'_>,
) -> Vec<usize> {
    let Some(list) = raw else {
        return Vec::new();
    };
    let mut indices = Vec::new();
    for name in list.get_ref() {
        let Some(index) = policy_names.iter().position(|n| n == name.get_ref()) else {
            let known = if policy_names.is_empty() {
                "no policy is defined; add [rate_limits.NAME]".to_owned()
            } else {
                format!("defined policies: {}", policy_names.join(", "))
            };
            problems.spanned(
                name,
                "rate_limit",
                format!("unknown rate-limit policy {:?}; {known}", name.get_ref()),
            );
            continue;
        };
        if indices.contains(&index) {
            problems.spanned(
                name,
                "rate_limit",
                format!("policy {:?} is listed twice", name.get_ref()),
            );
            continue;
        }
        indices.push(index);
    }
    indices
}
