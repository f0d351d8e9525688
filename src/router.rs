//! Maps a request's host and path to a route: pure matching, no IO. Also the path
//! normalisation requests are routed on.

use std::borrow::Cow;

use crate::config::{HostPattern, RouteConfig};

/// Index of a route in the config, in file order.
pub type RouteId = usize;

/// The routes of one config, matched in file order; the first match wins.
#[derive(Debug)]
pub struct Router {
    routes: Vec<RouteConfig>,
}

// === impl Router ===

impl Router {
    pub fn new(routes: Vec<RouteConfig>) -> Self {
        Router { routes }
    }

    /// The first route whose host and path prefix both match. `host` may carry a
    /// port (ignored) and any case.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<RouteId> {
        let host = host.map(strip_port);
        self.routes.iter().position(|route| {
            host_matches(route.host.as_ref(), host)
                && path_matches(route.path_prefix.as_deref(), path)
        })
    }

    pub fn get(&self, id: RouteId) -> &RouteConfig {
        &self.routes[id]
    }

    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }
}

/// `example.com:8080` → `example.com`, `[::1]:80` → `[::1]`; a trailing dot is
/// dropped too (`example.com.` is the same name).
fn strip_port(host: &str) -> &str {
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        // By bytes: `rsplit_once(':')` takes a char searcher's detour, a
        // fifth of the routing's cost for a short host.
        match host.bytes().rposition(|b| b == b':') {
            Some(colon) => &host[..colon],
            None => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

fn host_matches(pattern: Option<&HostPattern>, host: Option<&str>) -> bool {
    match (pattern, host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(HostPattern::Exact(name)), Some(host)) => host.eq_ignore_ascii_case(name),
        (Some(HostPattern::Suffix(suffix)), Some(host)) => {
            // `.example.com` matches `a.example.com` but not `example.com` (as nginx).
            host.len() > suffix.len()
                && host.is_char_boundary(host.len() - suffix.len())
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    }
}

/// Whole path segments: `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`.
fn path_matches(prefix: Option<&str>, path: &str) -> bool {
    match prefix {
        None | Some("/") => true,
        Some(prefix) => match path.strip_prefix(prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        },
    }
}

// === path normalisation ===

/// Why a request path is refused (with `400`, as nginx does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// `..` segments climb above the root (`/../x`). RFC 3986 would make it `/x`;
    /// no browser sends one.
    AboveRoot,
    /// A `%` not followed by two hex digits (`/100%`, `/%zz`). Decoding around it
    /// could make a new percent-encoding that the backend would decode: `/%%36%31`
    /// would become `/%61`.
    MalformedPercentEncoding,
}

/// The path a request is routed on and forwarded with, so that weir and the
/// backend agree on what was asked. The syntax-based normalisation of RFC 3986
/// §6.2.2: percent-encoded unreserved characters decoded (`%61` → `a`, `%2E` →
/// `.`), the hex digits of the other percent-encodings in capitals (`%2f` →
/// `%2F`, which stays encoded), then dot segments removed (§5.2.4). Empty
/// segments are kept: `//` is not merged. A path that is not absolute (`*`) is
/// left alone.
///
/// Borrows when the path is already normal, as nearly every path is: that costs
/// a scan and no allocation.
pub fn normalise_path(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = if path.contains('%') && needs_decoding(path.as_bytes())? {
        Cow::Owned(decode_unreserved(path))
    } else {
        Cow::Borrowed(path)
    };
    if decoded.contains("/.") && has_dot_segments(decoded.as_bytes()) {
        remove_dot_segments(&decoded).map(Cow::Owned)
    } else {
        Ok(decoded)
    }
}

/// ALPHA, DIGIT, `-`, `.`, `_` and `~` (RFC 3986 §2.3): the same character whether
/// percent-encoded or not.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The byte encoded by the two hex digits after a `%`.
fn percent_decoded(digits: &[u8]) -> Option<u8> {
    let [high, low] = digits else { return None };
    let value = |digit: u8| char::from(digit).to_digit(16);
    Some((value(*high)? * 16 + value(*low)?) as u8)
}

/// Whether a percent-encoding in `path` is to be rewritten: an unreserved
/// character, or lower-case hex digits.
fn needs_decoding(path: &[u8]) -> Result<bool, BadPath> {
    let mut rewrite = false;
    for (at, _) in path.iter().enumerate().filter(|(_, byte)| **byte == b'%') {
        let digits = path.get(at + 1..at + 3).unwrap_or_default();
        let value = percent_decoded(digits).ok_or(BadPath::MalformedPercentEncoding)?;
        rewrite |= is_unreserved(value) || digits.iter().any(u8::is_ascii_lowercase);
    }
    Ok(rewrite)
}

/// Rewrites the percent-encodings of `path`, which [`needs_decoding`] found
/// well-formed.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    // Copied in runs between percent-encodings, which are ASCII: every cut is at
    // a character boundary.
    let mut run_start = 0;
    let mut at = 0;
    while let Some(offset) = bytes[at..].iter().position(|&byte| byte == b'%') {
        let percent = at + offset;
        let digits = &bytes[percent + 1..percent + 3];
        decoded.push_str(&path[run_start..percent]);
        match percent_decoded(digits) {
            Some(value) if is_unreserved(value) => decoded.push(char::from(value)),
            _ => {
                decoded.push('%');
                for digit in digits {
                    decoded.push(char::from(digit.to_ascii_uppercase()));
                }
            }
        }
        at = percent + 3;
        run_start = at;
    }
    decoded.push_str(&path[run_start..]);
    decoded
}

/// Whether a segment of the absolute `path` is `.` or `..`.
fn has_dot_segments(path: &[u8]) -> bool {
    path.iter().enumerate().any(|(at, &byte)| {
        byte == b'/'
            && matches!(
                &path[at + 1..],
                [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..]
            )
    })
}

/// RFC 3986 §5.2.4 for an absolute path, refusing a `..` with no segment left to
/// remove.
fn remove_dot_segments(path: &str) -> Result<String, BadPath> {
    let mut output = String::with_capacity(path.len());
    let mut rest = path;
    // `rest` is empty or starts with the `/` before its next segment.
    while let Some(after_slash) = rest.strip_prefix('/') {
        let (segment, next) =
            after_slash.split_at(after_slash.find('/').unwrap_or(after_slash.len()));
        match segment {
            "." => {}
            ".." => {
                let last = output.rfind('/').ok_or(BadPath::AboveRoot)?;
                output.truncate(last);
            }
            _ => {
                output.push('/');
                output.push_str(segment);
            }
        }
        // A path ending in a dot segment names a directory: `/a/b/..` is `/a/`.
        if next.is_empty() && matches!(segment, "." | "..") {
            output.push('/');
        }
        rest = next;
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_as_rfc_3986_says_without_merging_slashes() {
        for (path, normal) in [
            // dot segments (RFC 3986 §5.2.4)
            ("/a/./b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/.", "/"),
            ("/./", "/"),
            ("/a/../b/../c/./d", "/c/d"),
            ("/api/../admin", "/admin"),
            // empty segments are kept, and count as segments for `..`
            ("//a", "//a"),
            ("/a//b", "/a//b"),
            ("/a//..", "/a/"),
            ("/a//../b", "/a/b"),
            ("//..", "/"),
            // percent-encoded unreserved characters are decoded, first
            ("/%61pi/x", "/api/x"),
            ("/%41%5A%30%39%2D%2E%5F%7E", "/AZ09-._~"),
            ("/api/%2e%2E/admin", "/admin"),
            ("/a/.%2e/b", "/b"),
            // other percent-encodings stay, with their hex digits in capitals
            ("/a%2fb", "/a%2Fb"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/%c3%a9", "/%C3%A9"),
            ("/%252e", "/%252e"),
            ("/%61%2f", "/a%2F"),
            // non-ASCII passes through (http's parser keeps it out; be safe)
            ("/é/../x", "/x"),
        ] {
            assert_eq!(
                normalise_path(path).as_deref(),
                Ok(normal),
                "normalising {path:?}"
            );
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in [
            "/",
            "/api/x",
            "/a%2Fb%20c",
            "/.well-known/acme",
            "/a/..b/c.",
            "/a/.../b",
            "//",
            "*",
        ] {
            assert!(
                matches!(normalise_path(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path:?} was rewritten"
            );
        }
    }

    #[test]
    fn paths_climbing_above_the_root_are_refused() {
        for path in [
            "/..",
            "/../",
            "/../a",
            "/a/../..",
            "/a/../../b",
            "/%2e%2e/a",
            "/./..",
        ] {
            assert_eq!(normalise_path(path), Err(BadPath::AboveRoot), "{path:?}");
        }
    }

    #[test]
    fn malformed_percent_encodings_are_refused() {
        // `/%%36%31` decoded around its bare `%` would become `/%61`
        for path in [
            "/100%", "/%zz", "/%4", "/a%4/b", "/%%36%31", "/%6%61", "/%é",
        ] {
            assert_eq!(
                normalise_path(path),
                Err(BadPath::MalformedPercentEncoding),
                "{path:?}"
            );
        }
    }

    fn route(host: Option<&str>, path_prefix: Option<&str>) -> RouteConfig {
        let host = host.map(|h| match h.strip_prefix('*') {
            Some(suffix) => HostPattern::Suffix(suffix.to_owned()),
            None => HostPattern::Exact(h.to_owned()),
        });
        RouteConfig {
            name: String::new(),
            host,
            path_prefix: path_prefix.map(str::to_owned),
            upstream: 0,
            cache: None,
            rate_limit: Vec::new(),
        }
    }

    #[test]
    fn path_prefix_matches_whole_segments_only() {
        let router = Router::new(vec![route(None, Some("/api"))]);
        assert_eq!(router.route(None, "/api"), Some(0));
        assert_eq!(router.route(None, "/api/"), Some(0));
        assert_eq!(router.route(None, "/api/x/y"), Some(0));
        assert_eq!(router.route(None, "/apix"), None);
        assert_eq!(router.route(None, "/"), None);
        assert_eq!(router.route(None, "/other/api"), None);
    }

    #[test]
    fn first_matching_route_wins_in_file_order() {
        let router = Router::new(vec![
            route(None, Some("/api/v2")),
            route(None, Some("/api")),
            route(None, None),
        ]);
        assert_eq!(router.route(None, "/api/v2/users"), Some(0));
        assert_eq!(router.route(None, "/api/v1"), Some(1));
        assert_eq!(router.route(None, "/static"), Some(2));
    }

    #[test]
    fn exact_host_ignores_case_and_port() {
        let router = Router::new(vec![route(Some("api.example.com"), None)]);
        assert_eq!(router.route(Some("api.example.com"), "/"), Some(0));
        assert_eq!(router.route(Some("API.Example.COM:8080"), "/"), Some(0));
        assert_eq!(router.route(Some("api.example.com."), "/"), Some(0));
        assert_eq!(router.route(Some("www.example.com"), "/"), None);
        assert_eq!(router.route(None, "/"), None);
    }

    #[test]
    fn wildcard_host_matches_subdomains_not_the_apex() {
        let router = Router::new(vec![route(Some("*.example.com"), None)]);
        assert_eq!(router.route(Some("a.example.com"), "/"), Some(0));
        assert_eq!(router.route(Some("a.b.Example.com:443"), "/"), Some(0));
        assert_eq!(router.route(Some("example.com"), "/"), None);
        assert_eq!(router.route(Some("badexample.com"), "/"), None);
    }

    #[test]
    fn host_and_path_must_both_match() {
        let router = Router::new(vec![
            route(Some("a.test"), Some("/x")),
            route(None, Some("/x")),
        ]);
        assert_eq!(router.route(Some("a.test"), "/x/1"), Some(0));
        assert_eq!(router.route(Some("b.test"), "/x/1"), Some(1));
        assert_eq!(router.route(Some("a.test"), "/y"), None);
    }

    #[test]
    fn ipv6_host_port_is_stripped() {
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("host:1"), "host");
        assert_eq!(strip_port("host"), "host");
    }
}
