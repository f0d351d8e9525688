//! Backend selection: strategies that pick one backend of an immutable set for a
//! request. Pure logic, no IO. Health, ejection and retry exclusions are applied by
//! the caller through the `usable` predicate, so every strategy honours them alike.
//!
//! A strategy is built once per config (per upstream) from the backends' weights and
//! shared by every request of that config: its `pick` takes `&self` and must not take
//! a lock shared by all requests (atomics only).

mod ewma;
mod fields;
mod hash;
mod least_conn;
mod maglev;
mod p2c;
#[cfg(test)]
mod properties;
mod round_robin;
mod sticky;
mod weighted_random;

use std::net::IpAddr;

pub use ewma::{FAILURE_PENALTY, LeastLatency, PeakEwma};
pub use fields::{Fields, Values};
pub use hash::Hashed;
pub use least_conn::LeastConnections;
pub use p2c::PowerOfTwo;
pub use round_robin::RoundRobin;
pub use sticky::Sticky;
pub use weighted_random::WeightedRandom;

use crate::config::StrategyKind;

/// What a strategy may read of the request (the key material for hashing strategies).
#[derive(Debug, Clone, Copy)]
pub struct RequestKey<'a> {
    pub client: IpAddr,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: Fields<'a>,
}

impl<'a> RequestKey<'a> {
    /// The key of `request` from `client`, its fields read from the head it
    /// came with (`received`) when it is read in place.
    pub fn of<B>(
        client: IpAddr,
        request: &'a http::Request<B>,
        received: Option<&'a crate::http1::request::ReceivedRequest>,
    ) -> Self {
        RequestKey {
            client,
            path: request.uri().path(),
            query: request.uri().query(),
            headers: Fields::of(request.headers(), received),
        }
    }

    /// The value of the first cookie named `name`.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers.cookie(name)
    }
}

/// The live state a strategy may read of one backend.
pub trait Candidate {
    fn weight(&self) -> u32;
    /// Requests sent to the backend and not finished yet.
    fn in_flight(&self) -> u32;
    /// Estimated response latency in nanoseconds (peak-EWMA), for `ewma`.
    fn latency(&self, now: std::time::Instant) -> f64 {
        let _ = now;
        0.0
    }
}

/// The strategy of one upstream. An enum rather than a trait object: the set is
/// closed, and a `match` keeps the pick inlinable on the request path.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    LeastConnections(LeastConnections),
    PowerOfTwo(PowerOfTwo),
    Random(WeightedRandom),
    Hashed(Hashed),
    LeastLatency(LeastLatency),
}

// === impl Balancer ===

impl Balancer {
    /// True when the strategy reads backend latencies, so they must be measured.
    pub fn uses_latency(&self) -> bool {
        matches!(self, Balancer::LeastLatency(_))
    }

    /// True when the strategy reads each backend's weight at every pick (so a
    /// weight that changes, as in slow start, is honoured as is); false for the
    /// strategies that precompute a table from the configured weights.
    pub fn reads_weights(&self) -> bool {
        matches!(
            self,
            Balancer::LeastConnections(_) | Balancer::PowerOfTwo(_) | Balancer::LeastLatency(_)
        )
    }

    /// Builds the strategy `kind` for backends with these names (stable identities,
    /// for hashing) and weights, by index. `load_bound_percent` bounds the hashing
    /// strategies' load (`hash_balance_factor`).
    pub fn new(
        kind: &StrategyKind,
        names: &[String],
        weights: &[u32],
        load_bound_percent: Option<u32>,
    ) -> Self {
        match kind {
            StrategyKind::RoundRobin => Balancer::RoundRobin(RoundRobin::new(weights)),
            StrategyKind::LeastConnections => {
                Balancer::LeastConnections(LeastConnections::default())
            }
            StrategyKind::PowerOfTwo => Balancer::PowerOfTwo(PowerOfTwo::new(weights)),
            StrategyKind::Random => Balancer::Random(WeightedRandom::new(weights)),
            StrategyKind::Hash(key) => Balancer::Hashed(Hashed::new(
                Some(key.clone()),
                names,
                weights,
                load_bound_percent,
            )),
            StrategyKind::Ewma => Balancer::LeastLatency(LeastLatency::new(weights)),
            StrategyKind::IpHash => {
                Balancer::Hashed(Hashed::new(None, names, weights, load_bound_percent))
            }
        }
    }

    /// Picks the index of a backend for which `usable` answers true, or `None` when
    /// no backend is usable. `backends` is the same set, in the same order, that the
    /// strategy was built for.
    pub fn pick<C: Candidate>(
        &self,
        request: &RequestKey<'_>,
        backends: &[C],
        usable: &mut dyn FnMut(usize) -> bool,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(usable),
            Balancer::LeastConnections(lc) => lc.pick(backends, usable),
            Balancer::PowerOfTwo(p2c) => p2c.pick(backends, usable),
            Balancer::Random(random) => random.pick(usable),
            Balancer::Hashed(hashed) => hashed.pick(request, backends, usable),
            Balancer::LeastLatency(ewma) => ewma.pick(backends, usable),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::Candidate;

    /// A backend with a fixed weight and in-flight count.
    #[derive(Debug, Clone, Copy)]
    pub struct Fake {
        weight: u32,
        in_flight: u32,
    }

    impl Fake {
        pub fn new(weight: u32, in_flight: u32) -> Self {
            Fake { weight, in_flight }
        }
    }

    impl Candidate for Fake {
        fn weight(&self) -> u32 {
            self.weight
        }

        fn in_flight(&self) -> u32 {
            self.in_flight
        }
    }
}
