//! Maps a request's host and path to a route: pure matching, no IO.

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
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
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

#[cfg(test)]
mod tests {
    use super::*;

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
