//! `hash` and `ip_hash`: consistent hashing of a request key onto a Maglev table.
//! A request without the key (no such header, cookie or query parameter) is
//! balanced with round robin instead.

use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::maglev::{Maglev, key_hash};
use super::round_robin::RoundRobin;
use super::{Candidate, RequestKey};
use crate::config::HashKey;

#[derive(Debug)]
pub struct Hashed {
    table: Maglev,
    /// Bounded load (`hash_balance_factor`, percent of the average in-flight load a
    /// backend may carry), as HAProxy and Envoy do (arXiv 1608.01350).
    load_bound_percent: Option<u32>,
    /// What to hash; `None` hashes the client address (`ip_hash`).
    key: Option<HashKey>,
    fallback: RoundRobin,
}

impl Hashed {
    pub fn new(
        key: Option<HashKey>,
        names: &[String],
        weights: &[u32],
        load_bound_percent: Option<u32>,
    ) -> Self {
        Hashed {
            table: Maglev::new(names, weights),
            load_bound_percent,
            key,
            fallback: RoundRobin::new(weights),
        }
    }

    pub fn pick<C: Candidate>(
        &self,
        request: &RequestKey<'_>,
        backends: &[C],
        usable: &mut dyn FnMut(usize) -> bool,
    ) -> Option<usize> {
        let Some(hash) = self.hash(request) else {
            return self.fallback.pick(usable);
        };
        let Some(percent) = self.load_bound_percent else {
            return self.table.pick(hash, usable);
        };
        // The bound counts this request: a backend may carry at most
        // percent/100 × (load + 1) × its share of the usable weight.
        let (mut load, mut weight) = (1u64, 0u64);
        for (i, backend) in backends.iter().enumerate() {
            if usable(i) {
                load += u64::from(backend.in_flight());
                weight += u64::from(backend.weight().max(1));
            }
        }
        if weight == 0 {
            return None;
        }
        let fits = |i: usize| {
            let backend = &backends[i];
            // (in_flight + 1) <= ceil(percent/100 × load × weight_i / weight),
            // cross-multiplied to stay in integers.
            let bound = u64::from(percent) * load * u64::from(backend.weight().max(1));
            (u64::from(backend.in_flight()) + 1) * weight * 100 < bound + weight * 100
        };
        self.table
            .pick_bounded(hash, &mut |i| usable(i) && fits(i))
            .or_else(|| self.table.pick(hash, usable))
    }

    fn hash(&self, request: &RequestKey<'_>) -> Option<u64> {
        match &self.key {
            None => Some(match request.client {
                IpAddr::V4(v4) => key_hash(&v4.octets()),
                IpAddr::V6(v6) => key_hash(&v6.octets()),
            }),
            Some(HashKey::Path) => Some(key_hash(request.path.as_bytes())),
            Some(HashKey::Uri) => {
                let path = key_hash(request.path.as_bytes());
                Some(match request.query {
                    // Chained through the seed: no allocation to join the two.
                    Some(query) => xxh3_64_with_seed(query.as_bytes(), path),
                    None => path,
                })
            }
            Some(HashKey::Header(name)) => request.headers.first(name.as_str()).map(key_hash),
            Some(HashKey::Cookie(name)) => {
                request.cookie(name).map(|value| key_hash(value.as_bytes()))
            }
            Some(HashKey::Query(name)) => request
                .query?
                .split('&')
                .find_map(|pair| pair.strip_prefix(name.as_str())?.strip_prefix('='))
                .map(|value| key_hash(value.as_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::Fake;
    use http::HeaderMap;
    use std::net::Ipv4Addr;

    fn names() -> Vec<String> {
        (1..=4).map(|i| format!("127.0.0.1:900{i}")).collect()
    }

    fn request<'a>(
        headers: &'a HeaderMap,
        path: &'a str,
        query: Option<&'a str>,
    ) -> RequestKey<'a> {
        RequestKey {
            client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            path,
            query,
            headers: crate::balance::Fields::Map(headers),
        }
    }

    fn hashed(key: Option<HashKey>) -> Hashed {
        Hashed::new(key, &names(), &[1; 4], None)
    }

    #[test]
    fn a_bounded_key_spills_off_an_overloaded_backend() {
        let headers = HeaderMap::new();
        let key = request(&headers, "/k", None);
        let plain = Hashed::new(Some(HashKey::Path), &names(), &[1; 4], None);
        let bounded = Hashed::new(Some(HashKey::Path), &names(), &[1; 4], Some(125));
        let idle = [Fake::new(1, 0); 4];
        let owner = plain.pick(&key, &idle, &mut |_| true).unwrap();
        assert_eq!(bounded.pick(&key, &idle, &mut |_| true), Some(owner));
        // The owner carries 8 of 8 requests: far over 1.25 × the average of 2.25.
        let mut loaded = idle;
        loaded[owner] = Fake::new(1, 8);
        assert_eq!(plain.pick(&key, &loaded, &mut |_| true), Some(owner));
        let spilled = bounded.pick(&key, &loaded, &mut |_| true).unwrap();
        assert_ne!(spilled, owner);
        // Deterministic: the same key spills to the same backend.
        assert_eq!(bounded.pick(&key, &loaded, &mut |_| true), Some(spilled));
    }

    #[test]
    fn the_same_cookie_goes_to_the_same_backend() {
        let strategy = hashed(Some(HashKey::Cookie("session".into())));
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "theme=dark; session=abc123".parse().unwrap(),
        );
        let first = strategy.pick(&request(&headers, "/a", None), &[] as &[Fake], &mut |_| {
            true
        });
        for path in ["/b", "/c", "/d"] {
            assert_eq!(
                strategy.pick(&request(&headers, path, None), &[] as &[Fake], &mut |_| {
                    true
                }),
                first
            );
        }
    }

    #[test]
    fn query_parameter_is_found_among_others() {
        let strategy = hashed(Some(HashKey::Query("user".into())));
        let headers = HeaderMap::new();
        let a = strategy.hash(&request(&headers, "/", Some("x=1&user=42&y=2")));
        let b = strategy.hash(&request(&headers, "/other", Some("user=42")));
        assert_eq!(a, b);
        assert!(a.is_some());
        assert_eq!(
            strategy.hash(&request(&headers, "/", Some("username=42"))),
            None
        );
    }

    #[test]
    fn a_request_without_the_key_is_round_robin() {
        let strategy = hashed(Some(HashKey::Header(http::HeaderName::from_static(
            "x-user",
        ))));
        let headers = HeaderMap::new();
        let picks: Vec<_> = (0..4)
            .map(|_| {
                strategy
                    .pick(&request(&headers, "/", None), &[] as &[Fake], &mut |_| true)
                    .unwrap()
            })
            .collect();
        assert_eq!(picks, [0, 1, 2, 3]);
    }

    #[test]
    fn uri_hash_includes_the_query() {
        let strategy = hashed(Some(HashKey::Uri));
        let headers = HeaderMap::new();
        let plain = strategy.hash(&request(&headers, "/p", None));
        assert_ne!(plain, strategy.hash(&request(&headers, "/p", Some("a=1"))));
        assert_eq!(
            plain,
            hashed(Some(HashKey::Path)).hash(&request(&headers, "/p", Some("a=1")))
        );
    }

    #[test]
    fn ip_hash_uses_the_client_address() {
        let strategy = hashed(None);
        let headers = HeaderMap::new();
        let mut key = request(&headers, "/", None);
        let first = strategy.hash(&key);
        key.path = "/elsewhere";
        assert_eq!(strategy.hash(&key), first);
        key.client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert_ne!(strategy.hash(&key), first);
    }
}
