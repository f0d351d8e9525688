//! Properties every strategy must keep, checked on random backend sets, weights,
//! loads and health.

use std::net::{IpAddr, Ipv4Addr};

use http::HeaderMap;
use proptest::prelude::*;

use super::tests::Fake;
use super::{Balancer, Fields, RequestKey};
use crate::config::{HashKey, StrategyKind};

fn kinds() -> Vec<StrategyKind> {
    vec![
        StrategyKind::RoundRobin,
        StrategyKind::LeastConnections,
        StrategyKind::PowerOfTwo,
        StrategyKind::Random,
        StrategyKind::Hash(HashKey::Path),
        StrategyKind::IpHash,
        StrategyKind::Ewma,
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
        let key = RequestKey { client: IpAddr::V4(Ipv4Addr::from(client)), path: &path, query: None, headers: Fields::Map(&headers) };
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
        let key = RequestKey { client: IpAddr::V4(Ipv4Addr::LOCALHOST), path: "/", query: None, headers: Fields::Map(&headers) };
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
        let key = RequestKey { client: IpAddr::V4(Ipv4Addr::LOCALHOST), path: "/", query: None, headers: Fields::Map(&headers) };
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
        let key = RequestKey { client: IpAddr::V4(Ipv4Addr::LOCALHOST), path: &path, query: None, headers: Fields::Map(&headers) };
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
            let key = RequestKey { client: IpAddr::V4(Ipv4Addr::LOCALHOST), path, query: None, headers: Fields::Map(&headers) };
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

/// Consistency bounds of `hash` (the Maglev table), over random backend sets: each
/// case hashes `KEYS` keys, so a case costs tens of milliseconds and few are run.
mod consistency {
    use super::*;

    const KEYS: usize = 50_000;

    /// Backend names: distinct addresses drawn at random, as a real pool has.
    fn distinct_names(min: usize, max: usize) -> impl Strategy<Value = Vec<String>> {
        prop::collection::btree_set((1u8..=254, 1024u16..=65535), min..=max)
            .prop_map(|set| {
                set.into_iter()
                    .map(|(host, port)| format!("10.1.0.{host}:{port}"))
                    .collect()
            })
            .prop_shuffle()
    }

    /// The backend name each of the keys goes to.
    fn owners<'a>(
        names: &'a [String],
        weights: &[u32],
        usable: &dyn Fn(usize) -> bool,
    ) -> Vec<&'a str> {
        let balancer = Balancer::new(&StrategyKind::Hash(HashKey::Path), names, weights, None);
        let fakes: Vec<Fake> = weights.iter().map(|&w| Fake::new(w, 0)).collect();
        let headers = HeaderMap::new();
        let mut path = String::new();
        (0..KEYS)
            .map(|k| {
                use std::fmt::Write;
                path.clear();
                let _ = write!(path, "/user/{k}");
                let key = RequestKey {
                    client: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    path: &path,
                    query: None,
                    headers: Fields::Map(&headers),
                };
                names[balancer.pick(&key, &fakes, &mut |i| usable(i)).unwrap()].as_str()
            })
            .collect()
    }

    fn moved(before: &[&str], after: &[&str]) -> f64 {
        before.iter().zip(after).filter(|(a, b)| a != b).count() as f64 / before.len() as f64
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn equal_weights_get_their_share_within_ten_percent(names in distinct_names(2, 12)) {
            let owners = owners(&names, &vec![1; names.len()], &|_| true);
            let fair = KEYS as f64 / names.len() as f64;
            for name in &names {
                let share = owners.iter().filter(|o| **o == name.as_str()).count() as f64;
                prop_assert!((share / fair - 1.0).abs() <= 0.10, "{name}: {share} keys, fair {fair}");
            }
        }

        #[test]
        fn weights_are_honoured(set in distinct_names(2, 8).prop_flat_map(|names| {
            let n = names.len();
            (Just(names), prop::collection::vec(1u32..=10, n))
        })) {
            let (names, weights) = set;
            let owners = owners(&names, &weights, &|_| true);
            let total: u32 = weights.iter().sum();
            for (name, &weight) in names.iter().zip(&weights) {
                let share = owners.iter().filter(|o| **o == name.as_str()).count() as f64 / KEYS as f64;
                let expected = f64::from(weight) / f64::from(total);
                // 10 % of the expected share, or 0.5 % of all keys for tiny shares
                // (where sampling KEYS keys alone varies by about that much).
                prop_assert!((share - expected).abs() <= (0.10 * expected).max(0.005),
                    "{name} weight {weight}/{total}: share {share:.4}, expected {expected:.4}");
            }
        }

        #[test]
        fn removing_one_of_n_moves_its_keys_and_few_others(names in distinct_names(3, 12), gone in any::<prop::sample::Index>()) {
            let n = names.len();
            let gone = gone.index(n);
            let after_names: Vec<String> = names.iter().enumerate().filter(|&(i, _)| i != gone).map(|(_, name)| name.clone()).collect();
            let before = owners(&names, &vec![1; n], &|_| true);
            let after = owners(&after_names, &vec![1; n - 1], &|_| true);
            let moved_all = moved(&before, &after);
            prop_assert!(moved_all <= 1.0 / n as f64 + 0.05, "moved {moved_all:.4} of all keys (n = {n})");
            let (staying_before, staying_after): (Vec<&str>, Vec<&str>) = before.iter().zip(&after)
                .filter(|(b, _)| **b != names[gone].as_str())
                .map(|(b, a)| (*b, *a))
                .unzip();
            let moved_staying = moved(&staying_before, &staying_after);
            prop_assert!(moved_staying <= 0.05, "moved {moved_staying:.4} of the keys of staying backends (n = {n})");
        }

        #[test]
        fn adding_one_moves_at_most_its_share(names in distinct_names(3, 13)) {
            let n = names.len() - 1;
            let before = owners(&names[..n], &vec![1; n], &|_| true);
            let after = owners(&names, &vec![1; n + 1], &|_| true);
            let moved = moved(&before, &after);
            prop_assert!(moved <= 1.0 / (n + 1) as f64 + 0.05, "moved {moved:.4} (n = {n} + 1)");
        }

        #[test]
        fn an_unusable_backend_has_fixed_substitutes_and_no_other_key_moves(
            names in distinct_names(2, 10),
            down in any::<prop::sample::Index>(),
        ) {
            let n = names.len();
            let down = names[down.index(n)].as_str();
            let all = owners(&names, &vec![1; n], &|_| true);
            let without = owners(&names, &vec![1; n], &|i| names[i] != down);
            let again = owners(&names, &vec![1; n], &|i| names[i] != down);
            prop_assert_eq!(&without, &again, "substitutes differ between two runs");
            for (before, now) in all.iter().zip(&without) {
                prop_assert_ne!(*now, down);
                if *before != down {
                    prop_assert_eq!(before, now, "a key of a usable backend moved");
                }
            }
        }
    }
}
