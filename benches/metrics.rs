//! Cost of the Prometheus recording the proxy does per request, with the handles
//! resolved per config as weir does: the client request counter of its route
//! (`by_route[route].inc(code)`, for a common status code and for one looked up by
//! label), the request duration histogram of its upstream, the counter and
//! histogram of one backend try, and all four together: one proxied request.
//! Single-threaded: the cost of contention is not measured.
//! Run with `cargo bench --bench metrics`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use weir::metrics::Metrics;

fn recording(c: &mut Criterion) {
    let metrics = Metrics::new();
    let routes = [("api", "api"), ("static", "web"), ("default", "web")];
    let requests = metrics.requests("public", &routes, &["api", "web"]);
    let backend = metrics.backend("api", "10.0.0.1:8080");
    let (route, upstream) = (0, 0);
    let duration = 0.0123;

    let mut group = c.benchmark_group("metrics");
    group.bench_function("route_counter", |b| {
        b.iter(|| requests.by_route[black_box(route)].inc(black_box(200)));
    });
    // 418 is not among the codes whose counters are made with the config.
    group.bench_function("route_counter_uncommon_code", |b| {
        b.iter(|| requests.by_route[black_box(route)].inc(black_box(418)));
    });
    group.bench_function("request_histogram", |b| {
        b.iter(|| requests.duration_by_upstream[black_box(upstream)].observe(black_box(duration)));
    });
    group.bench_function("backend_try", |b| {
        b.iter(|| {
            backend.requests.inc(black_box(200));
            backend.duration.observe(black_box(duration));
        });
    });
    // What `proxy::serve`, the upstream's try and `ProxyBody`'s end record.
    group.bench_function("per_request", |b| {
        b.iter(|| {
            backend.requests.inc(black_box(200));
            backend.duration.observe(black_box(duration));
            requests.by_route[black_box(route)].inc(black_box(200));
            requests.duration_by_upstream[black_box(upstream)].observe(black_box(duration));
        });
    });
    group.finish();
}

criterion_group!(benches, recording);
criterion_main!(benches);
