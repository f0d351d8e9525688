//! Cost of matching one request to a route (`Router::route`) in a table of 33
//! routes: exact hosts, wildcard hosts and path prefixes, in file order. Cases: a
//! hit on the first route, hits further down, a hit on the last route and a miss
//! (which walks the whole table).
//! Run with `cargo bench --bench route`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use weir::config::{HostPattern, RouteConfig};
use weir::router::Router;

fn route(host: Option<&str>, path_prefix: Option<&str>) -> RouteConfig {
    // As the config stores them: lowercase, `*.example.com` as `.example.com`.
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

/// An API host split by service and version, shops with a static prefix, wildcard
/// hosts, and host-less prefixes last.
fn table() -> Router {
    let mut routes = Vec::new();
    for version in ["v2", "v1"] {
        for service in ["users", "orders", "billing", "search", "catalog", "auth"] {
            let prefix = format!("/{version}/{service}");
            routes.push(route(Some("api.example.com"), Some(&prefix)));
        }
    }
    for shop in 0..8 {
        let host = format!("shop{shop}.example.net");
        routes.push(route(Some(&host), Some("/static")));
        routes.push(route(Some(&host), None));
    }
    routes.push(route(Some("*.cdn.example.com"), Some("/assets")));
    routes.push(route(Some("*.example.org"), None));
    routes.push(route(Some("*.internal.example.com"), Some("/admin")));
    routes.push(route(None, Some("/.well-known/acme-challenge")));
    routes.push(route(None, Some("/healthz")));
    Router::new(routes)
}

fn matches(c: &mut Criterion) {
    let router = table();
    // Name, host, path, the route it must match.
    let cases: [(&str, Option<&str>, &str, Option<usize>); 6] = [
        ("first", Some("api.example.com"), "/v2/users/42", Some(0)),
        (
            "api_late",
            Some("API.Example.com:443"),
            "/v1/auth/token",
            Some(11),
        ),
        ("shop", Some("shop5.example.net"), "/cart", Some(23)),
        (
            "wildcard",
            Some("eu.cdn.example.com"),
            "/assets/app.js",
            Some(28),
        ),
        ("last", Some("weir.test"), "/healthz", Some(32)),
        ("miss", Some("www.example.com"), "/index.html", None),
    ];
    let mut group = c.benchmark_group("route");
    for (name, host, path, expected) in cases {
        // The table and the cases must agree, or the figures mean something else.
        assert_eq!(router.route(host, path), expected, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| router.route(black_box(host), black_box(path)));
        });
    }
    group.finish();
}

criterion_group!(benches, matches);
criterion_main!(benches);
