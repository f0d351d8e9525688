//! Cost of the header rewriting around one exchange with a backend (the functions
//! of `src/proxy/forward.rs`): `rewrite_request` on a browser's request head,
//! `remove_hop_by_hop` alone, and `rewrite_response` on a typical response head,
//! each with and without hop-by-hop headers. Copying the head is not measured.
//! Run with `cargo bench --bench forward`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};
use weir::proxy::forward::{ClientFacts, remove_hop_by_hop, rewrite_request, rewrite_response};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// What a browser sends for a page over HTTP/2 (no connection headers there).
const BROWSER: &[(&str, &str)] = &[
    ("host", "shop.example.com"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("accept-language", "en-GB,en;q=0.7,fr;q=0.3"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("referer", "https://shop.example.com/catalog?page=2"),
    (
        "cookie",
        "session=6f1c2a9e0b7d4e3f8a5c1d2e3f4a5b6c; theme=dark; consent=1",
    ),
    ("upgrade-insecure-requests", "1"),
    ("sec-fetch-dest", "document"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-site", "same-origin"),
    ("sec-fetch-user", "?1"),
    ("priority", "u=0, i"),
    ("cache-control", "max-age=0"),
];

/// The HTTP/1.1 extras: connection headers, one of them naming another header.
const HOP_BY_HOP: &[(&str, &str)] = &[
    ("connection", "keep-alive, x-debug"),
    ("keep-alive", "timeout=5"),
    ("x-debug", "1"),
];

/// A backend's answer to a page.
const RESPONSE: &[(&str, &str)] = &[
    ("content-type", "text/html; charset=utf-8"),
    ("content-length", "48213"),
    ("date", "Tue, 03 Mar 2026 10:15:42 GMT"),
    ("server", "app/2.4"),
    ("cache-control", "private, no-cache"),
    ("etag", "\"5f3a-1b2c3d4e\""),
    ("vary", "Accept-Encoding, Cookie"),
    (
        "set-cookie",
        "session=6f1c2a9e0b7d4e3f8a5c1d2e3f4a5b6c; Path=/; HttpOnly; Secure",
    ),
    ("x-request-id", "2c9d7f0a-8b1e-4c3d-9f6a-5e4b3c2d1a0f"),
];

const RESPONSE_HOP_BY_HOP: &[(&str, &str)] =
    &[("connection", "keep-alive"), ("keep-alive", "timeout=60")];

fn with(base: &[(&str, &str)], extra: &[(&str, &str)]) -> HeaderMap {
    let mut map = headers(base);
    map.extend(headers(extra));
    map
}

fn rewriting(c: &mut Criterion) {
    let client = ClientFacts {
        address: HeaderValue::from_static("203.0.113.42"),
        tls: true,
        trusted_proxies: None,
    };
    let host = HeaderValue::from_static("shop.example.com");
    let uri: Uri = "/catalog/item/1234?ref=home".parse().unwrap();
    // A browser's HTTP/2 request, and its HTTP/1.1 request with connection headers.
    let requests = [
        ("plain", Version::HTTP_2, headers(BROWSER)),
        ("hop_by_hop", Version::HTTP_11, with(BROWSER, HOP_BY_HOP)),
    ];
    let responses = [
        ("plain", headers(RESPONSE)),
        ("hop_by_hop", with(RESPONSE, RESPONSE_HOP_BY_HOP)),
    ];

    let mut group = c.benchmark_group("rewrite_request");
    for (name, version, map) in &requests {
        // What is measured does what the proxy needs.
        let (mut u, mut v, mut m) = (uri.clone(), *version, map.clone());
        rewrite_request(&mut u, &mut v, &mut m, Some(host.clone()), &client);
        assert!(!m.contains_key("connection") && !m.contains_key("x-debug"));
        assert_eq!(m["x-forwarded-for"], "203.0.113.42");
        assert_eq!(m.len(), BROWSER.len() + 3, "{name}");

        group.bench_function(*name, |b| {
            b.iter_batched(
                || (uri.clone(), *version, map.clone(), host.clone()),
                |(mut uri, mut version, mut map, host)| {
                    rewrite_request(&mut uri, &mut version, &mut map, Some(host), &client);
                    // Dropped outside the measurement.
                    (uri, map)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();

    let mut group = c.benchmark_group("remove_hop_by_hop");
    for (name, _, map) in &requests {
        group.bench_function(*name, |b| {
            b.iter_batched(
                || map.clone(),
                |mut map| {
                    remove_hop_by_hop(black_box(&mut map));
                    map
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();

    let mut group = c.benchmark_group("rewrite_response");
    for (name, map) in &responses {
        group.bench_function(*name, |b| {
            b.iter_batched(
                || map.clone(),
                |mut map| {
                    rewrite_response(black_box(&mut map));
                    map
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, rewriting);
criterion_main!(benches);
