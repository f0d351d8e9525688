//! Validation of the response cache's keys: `[cache]`, `[redis]` and a route's
//! `cache`.

use toml::Spanned;

use super::positive_duration;
use crate::config::defaults::*;
use crate::config::file::{FileCache, FileRedis, FileRouteCache};
use crate::config::problems::Problems;
use crate::config::{CacheConfig, CacheStore, RedisConfig, RouteCache, Secret};

/// Below this the store could not hold a single ordinary page.
const MIN_CACHE_MEMORY: u64 = 1 << 20;

pub(super) fn validate_cache(raw: &FileCache, problems: &mut Problems<'_>) -> CacheConfig {
    let memory = raw.memory.as_ref().map_or(DEFAULT_CACHE_MEMORY, |m| {
        let bytes = m.get_ref().0;
        if bytes < MIN_CACHE_MEMORY {
            problems.spanned(m, "memory", "must be at least 1MiB");
        }
        bytes
    });
    let max_object_size = raw
        .max_object_size
        .as_ref()
        .map_or(DEFAULT_MAX_OBJECT_SIZE.min(memory), |m| {
            let bytes = m.get_ref().0;
            if bytes == 0 {
                problems.spanned(m, "max_object_size", "must be greater than zero");
            } else if bytes > memory {
                problems.spanned(
                    m,
                    "max_object_size",
                    format!("must be at most `memory` ({memory} bytes): a larger object could never be stored"),
                );
            }
            bytes
        });
    CacheConfig {
        memory,
        max_object_size,
    }
}

pub(super) fn validate_redis(raw: &FileRedis, problems: &mut Problems<'_>) -> RedisConfig {
    let url = raw.url.get_ref();
    let shown_url = match redis_url_problem(url) {
        Ok(shown) => shown,
        Err(why) => {
            problems.spanned(&raw.url, "url", why);
            String::new()
        }
    };
    let timeout = positive_duration(&raw.timeout, "timeout", DEFAULT_REDIS_TIMEOUT, problems);
    let key_prefix = raw
        .key_prefix
        .as_ref()
        .map_or(DEFAULT_REDIS_KEY_PREFIX.to_owned(), |p| {
            let text = p.get_ref();
            if text.len() > 64 || text.bytes().any(|b| !b.is_ascii_graphic()) {
                problems.spanned(
                    p,
                    "key_prefix",
                    "expected at most 64 visible ASCII characters, e.g. \"weir:\"",
                );
            }
            text.clone()
        });
    RedisConfig {
        url: Secret(url.clone()),
        shown_url,
        timeout,
        key_prefix,
    }
}

/// Checks `redis[s]://[[user]:password@]host[:port][/db]`; returns the URL with
/// its password hidden, for logs.
fn redis_url_problem(url: &str) -> Result<String, String> {
    let expected = "expected redis://[user:password@]host[:port][/db] or rediss://..., e.g. \"redis://127.0.0.1:6379/0\"";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("invalid Redis URL: {expected}"));
    };
    if scheme != "redis" && scheme != "rediss" {
        return Err(format!("unsupported scheme {scheme:?}: {expected}"));
    }
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((credentials, host)) => (Some(credentials), host),
        None => (None, authority),
    };
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(format!("invalid IPv6 host in the Redis URL: {expected}"));
        };
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(format!("the Redis URL has no valid host: {expected}"));
    }
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
    {
        return Err(format!(
            "invalid port {port:?} in the Redis URL: {expected}"
        ));
    }
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(format!(
            "invalid database {db:?} in the Redis URL: expected a number such as /0"
        ));
    }
    let shown = match credentials {
        Some(credentials) => {
            let user = credentials.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host_port}/{db}")
        }
        None => url.to_owned(),
    };
    Ok(shown)
}

pub(super) fn validate_route_cache(
    raw: &Spanned<FileRouteCache>,
    redis: bool,
    problems: &mut Problems<'_>,
) -> Option<RouteCache> {
    let default_store = if redis {
        CacheStore::Both
    } else {
        CacheStore::Memory
    };
    let mut cache = RouteCache {
        stale_while_revalidate: std::time::Duration::ZERO,
        stale_if_error: std::time::Duration::ZERO,
        lock_timeout: DEFAULT_CACHE_LOCK_TIMEOUT,
        default_ttl: std::time::Duration::ZERO,
        store: default_store,
    };
    let table = match raw.get_ref() {
        FileRouteCache::Enabled(false) => return None,
        FileRouteCache::Enabled(true) => return Some(cache),
        FileRouteCache::Table(table) => table,
    };
    let duration =
        |d: &Option<Spanned<crate::config::file::DurationValue>>| d.as_ref().map(|d| d.get_ref().0);
    if let Some(d) = duration(&table.stale_while_revalidate) {
        cache.stale_while_revalidate = d;
    }
    if let Some(d) = duration(&table.stale_if_error) {
        cache.stale_if_error = d;
    }
    if let Some(d) = duration(&table.default_ttl) {
        cache.default_ttl = d;
    }
    cache.lock_timeout = positive_duration(
        &table.lock_timeout,
        "lock_timeout",
        DEFAULT_CACHE_LOCK_TIMEOUT,
        problems,
    );
    if let Some(store) = &table.store {
        cache.store = match store.get_ref().as_str() {
            "memory" => CacheStore::Memory,
            "redis" => CacheStore::Redis,
            "both" => CacheStore::Both,
            other => {
                problems.spanned(
                    store,
                    "store",
                    format!("unknown store {other:?}: expected \"memory\", \"redis\" or \"both\""),
                );
                default_store
            }
        };
        if cache.store.redis() && !redis {
            problems.spanned(
                store,
                "store",
                "needs a [redis] table with the url of the Redis to share; add one, or use store = \"memory\"",
            );
        }
    }
    Some(cache)
}
