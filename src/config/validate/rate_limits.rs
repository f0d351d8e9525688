//! Validation of rate limits: the `[rate_limits.NAME]` policies and a route's
//! `rate_limit` list of them.

use std::time::Duration;

use toml::Spanned;

use crate::config::file::FileRateLimit;
use crate::config::problems::Problems;
use crate::config::{HashKey, LimitKey, LimitScope, OnRedisError, Rate, RateLimitPolicy};

/// More requests at once than any client should be granted.
const MAX_BURST: u32 = 1_000_000;
/// Requests per second of one key at most: one a microsecond, which the
/// arithmetic (nanoseconds here, fractional microseconds in Redis) carries
/// exactly enough.
const MAX_PER_SECOND: u64 = 1_000_000;

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
        Some(key) => match parse_key(key.get_ref()) {
            // On HTTP/2 the host is `:authority`, and any client may send
            // another `Host` beside it, or the same in another case or with
            // a port: never a key that holds.
            Some(LimitKey::Header(name)) if name == http::header::HOST => {
                problems.spanned(
                    key,
                    "key",
                    "header:host cannot be a key (HTTP/2 sends the host as :authority, and its spellings vary); give each host its route and use key = \"route\"",
                );
                LimitKey::Client
            }
            Some(parsed) => parsed,
            None => {
                problems.spanned(
                    key,
                    "key",
                    format!(
                        "invalid key {:?}: expected client, route, header:NAME, cookie:NAME or query:NAME (NAME a token)",
                        key.get_ref()
                    ),
                );
                LimitKey::Client
            }
        },
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
    let most = MAX_PER_SECOND * per.as_secs();
    match count.parse::<u64>() {
        Ok(n) if (1..=most).contains(&n) => Ok(Rate {
            count: u32::try_from(n).map_err(|_| format!("invalid rate {text:?}"))?,
            per,
        }),
        Ok(0) => Err(format!("invalid rate {text:?}: N must be at least 1")),
        _ => Err(format!(
            "invalid rate {text:?}: at most {MAX_PER_SECOND} requests per second (\"{most}/{}\")",
            unit.trim()
        )),
    }
}

fn parse_key(text: &str) -> Option<LimitKey> {
    match text {
        "client" => Some(LimitKey::Client),
        "route" => Some(LimitKey::Route),
        _ => match HashKey::parse(text)? {
            HashKey::Header(name) => Some(LimitKey::Header(name)),
            HashKey::Cookie(name) if is_token(&name) => Some(LimitKey::Cookie(name)),
            HashKey::Query(name) if is_token(&name) => Some(LimitKey::Query(name)),
            _ => None,
        },
    }
}

/// A cookie or query parameter name: visible ASCII without separators.
fn is_token(name: &str) -> bool {
    name.bytes().all(|b| {
        b.is_ascii_graphic() && !matches!(b, b'"' | b';' | b',' | b'=' | b'&' | b'%' | b'\\')
    })
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
        if indices.len() == crate::config::MAX_ROUTE_POLICIES {
            problems.spanned(
                name,
                "rate_limit",
                format!(
                    "at most {} policies per route",
                    crate::config::MAX_ROUTE_POLICIES
                ),
            );
            break;
        }
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
