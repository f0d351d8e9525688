//! Properties every strategy must keep, checked on random backend sets, weights,
//! loads and health.

use std::net::{IpAddr, Ipv4Addr};

use http::HeaderMap;
use proptest::prelude::*;

use super::tests::Fake;
use super::{Balancer, RequestKey};
use crate::config::{HashKey, StrategyKind};

fn kinds() -> Vec<StrategyKind> {
    vec![
        StrategyKind::RoundRobin,
        StrategyKind::LeastConnections,
        StrategyKind::PowerOfTwo,
        StrategyKind::Random,
        StrategyKind::Hash(HashKey::Path),
        StrategyKind::IpHash,
    ]
}

/// Backends: (weight, in-flight, usable).
fn backends() -> impl Strategy<Value = Vec<(u32, u32, bool)>> {
    prop::collection::vec((1u32..=20, 0u32..=50, any::<bool>()), 1..=8)
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_strategy_picks_an_unusable_backend(set in backends(), path in "/[a-z]{0,12}", client in any::<u32>()) {
        let weights: Vec<u32> = set.iter().map(|b| b.0).collect();
        let fakes: Vec<Fake> = set.iter().map(|b| Fake::new(b.0, b.1)).collect();
        let headers = HeaderMap::new();
        let key = RequestKey { client: IpAddr::V4(Ipv4Addr::from(client)), path: &path, query: None, headers: &headers };
        let any_usable = set.iter().any(|b| b.2);
        for kind in kinds() {
            let balancer = Balancer::new(&kind, &names(set.len()), &weights, None);
            for _ in 0..10 {
                let pick = balancer.pick(&key, &fakes, &mut |i| set[i].2);
                match pick {
                    Some(i) => prop_assert!(set[i].2, "{kind:?} picked unusable backend {i}"),
                    None => prop_assert!(!any_usable, "{kind:?} found nothing though a backend is usable"),
                }
            }
        }
    }

    #[test]
    fn least_connections_picks_the_least_loaded_per_weight(set in backends()) {
        let weights: Vec<u32> = set.iter().map(|b| b.0).collect();
        let fakes: Vec<Fake> = set.iter().map(|b| Fake::new(b.0, b.1)).collect();
        let headers = HeaderMap::new();
        let key = RequestKey { client: IpAddr::V4(Ipv4Addr::LOCALHOST), path: "/", query: None, headers: &headers };
        let balancer = Balancer::new(&StrategyKind::LeastConnections, &names(set.len()), &weights, None);
        if let Some(i) = balancer.pick(&key, &fakes, &mut |i| set[i].2) {
            for (j, other) in set.iter().enumerate().filter(|(_, b)| b.2) {
                // load_i / weight_i <= load_j / weight_j
                prop_assert!(
                    u64::from(set[i].1) * u64::from(other.0) <= u64::from(other.1) * u64::from(set[i].0),
                    "picked {i} {:?} over {j} {:?}", set[i], other
                );
            }
        }
    }

    #[test]
    fn round_robin_shares_are_exactly_the_weights(weights in prop::collection::vec(1u32..=12, 1..=6)) {
        let fakes: Vec<Fake> = weights.iter().map(|&w| Fake::new(w, 0)).collect();
        let headers = HeaderMap::new();
        let key = RequestKey { client: IpAddr::V4(Ipv4Addr::LOCALHOST), path: "/", query: None, headers: &headers };
        let balancer = Balancer::new(&StrategyKind::RoundRobin, &names(weights.len()), &weights, None);
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..total {
            counts[balancer.pick(&key, &fakes, &mut |_| true).unwrap()] += 1;
        }
        prop_assert_eq!(counts, weights);
    }

    #[test]
    fn hashing_is_stable_for_a_key(set in backends(), path in "/[a-z]{1,12}") {
        let weights: Vec<u32> = set.iter().map(|b| b.0).collect();
        let fakes: Vec<Fake> = set.iter().map(|b| Fake::new(b.0, b.1)).collect();
        let headers = HeaderMap::new();
        let key = RequestKey { client: IpAddr::V4(Ipv4Addr::LOCALHOST), path: &path, query: None, headers: &headers };
        let kind = StrategyKind::Hash(HashKey::Path);
        // Two tables built apart (as by two weir instances) agree.
        let (a, b) = (Balancer::new(&kind, &names(set.len()), &weights, None), Balancer::new(&kind, &names(set.len()), &weights, None));
        let first = a.pick(&key, &fakes, &mut |i| set[i].2);
        for _ in 0..5 {
            prop_assert_eq!(b.pick(&key, &fakes, &mut |i| set[i].2), first);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn bounded_hashing_keeps_every_pick_under_the_bound(
        set in backends(),
        percent in 100u32..=300,
        paths in prop::collection::vec("/[a-z]{1,8}", 1..20),
    ) {
        let weights: Vec<u32> = set.iter().map(|b| b.0).collect();
        let fakes: Vec<Fake> = set.iter().map(|b| Fake::new(b.0, b.1)).collect();
        let headers = HeaderMap::new();
        let balancer = Balancer::new(&StrategyKind::Hash(HashKey::Path), &names(set.len()), &weights, Some(percent));
        let usable: Vec<usize> = (0..set.len()).filter(|&i| set[i].2).collect();
        let load: u64 = 1 + usable.iter().map(|&i| u64::from(set[i].1)).sum::<u64>();
        let weight: u64 = usable.iter().map(|&i| u64::from(set[i].0)).sum();
        for path in &paths {
            let key = RequestKey { client: IpAddr::V4(Ipv4Addr::LOCALHOST), path, query: None, headers: &headers };
            let Some(i) = balancer.pick(&key, &fakes, &mut |i| set[i].2) else {
                prop_assert!(usable.is_empty());
                continue;
            };
            prop_assert!(set[i].2);
            // in_flight + 1 <= ceil(percent/100 × load × weight_i / weight)
            let bound = u64::from(percent) * load * u64::from(set[i].0);
            prop_assert!(
                (u64::from(set[i].1) + 1) * weight * 100 < bound + weight * 100,
                "backend {i} {:?} over the bound ({percent} %, load {load}, weight {weight})", set[i]
            );
        }
    }
}
