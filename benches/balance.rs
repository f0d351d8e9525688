//! Cost of one backend pick per strategy, with 3, 100 and 1,000 backends, all usable.
//! Run with `cargo bench --bench balance`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use weir::balance::{Balancer, Candidate, PeakEwma, RequestKey};
use weir::config::{HashKey, StrategyKind};

struct Backend {
    weight: u32,
    in_flight: u32,
    /// Read by `ewma` only, as the proxy's backends do: a decayed estimate.
    latency: PeakEwma,
}

impl Candidate for Backend {
    fn weight(&self) -> u32 {
        self.weight
    }

    fn in_flight(&self) -> u32 {
        self.in_flight
    }

    fn latency(&self, now: Instant) -> f64 {
        self.latency.estimate(now)
    }
}

fn picks(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let key = RequestKey {
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        path: "/api/users/42",
        query: None,
        headers: weir::balance::Fields::Map(&headers),
    };
    let strategies = [
        ("round_robin", StrategyKind::RoundRobin),
        ("least_connections", StrategyKind::LeastConnections),
        ("p2c", StrategyKind::PowerOfTwo),
        ("random", StrategyKind::Random),
        ("hash_path", StrategyKind::Hash(HashKey::Path)),
        ("ip_hash", StrategyKind::IpHash),
        ("ewma", StrategyKind::Ewma),
    ];
    for (name, kind) in &strategies {
        let mut group = c.benchmark_group(*name);
        for n in [3usize, 100, 1000] {
            // Uneven weights, loads and latencies, so that no strategy gets a
            // degenerate case.
            let now = Instant::now();
            let backends: Vec<Backend> = (0..n)
                .map(|i| {
                    let latency = PeakEwma::default();
                    latency.observe(Duration::from_micros(500 + (i * 37 % 13) as u64 * 250), now);
                    Backend {
                        weight: 1 + (i % 5) as u32,
                        in_flight: (i * 7 % 11) as u32,
                        latency,
                    }
                })
                .collect();
            let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
            let names: Vec<String> = (0..n)
                .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250))
                .collect();
            let balancer = Balancer::new(kind, &names, &weights, None);
            group.bench_with_input(BenchmarkId::from_parameter(n), &backends, |b, backends| {
                b.iter(|| balancer.pick(black_box(&key), backends, &mut |_| true));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, picks);
criterion_main!(benches);
