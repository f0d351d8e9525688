//! Validation of routes: the host and path prefix they match, the upstream they
//! name (their `cache` is in `cache.rs`, their `rate_limit` in `rate_limits.rs`).

use super::item_name;
use crate::config::file::FileRoute;
use crate::config::problems::Problems;
use crate::config::{HostPattern, RouteConfig};
use crate::router::{BadPath, normalise_path};

pub(super) fn validate_route(
    index: usize,
    raw: &FileRoute,
    upstream_names: &[&str],
    policy_names: &[&str],
    redis: bool,
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
    let cache = raw
        .cache
        .as_ref()
        .and_then(|cache| super::cache::validate_route_cache(cache, redis, problems));
    let rate_limit =
        super::rate_limits::validate_route_limits(&raw.rate_limit, policy_names, problems);
    RouteConfig {
        name,
        host,
        path_prefix,
        upstream,
        cache,
        rate_limit,
    }
}
