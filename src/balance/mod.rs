//! Backend selection: strategies that pick one backend of an immutable set for a
//! request. Pure logic, no IO. Health, ejection and retry exclusions are applied by
//! the caller through the `usable` predicate, so every strategy honours them alike.
//!
//! A strategy is built once per config (per upstream) from the backends' weights and
//! shared by every request of that config: its `pick` takes `&self` and must not take
//! a lock shared by all requests (atomics only).

mod round_robin;

use std::net::IpAddr;

use http::HeaderMap;

pub use round_robin::RoundRobin;

use crate::config::StrategyKind;

/// What a strategy may read of the request (the key material for hashing strategies).
#[derive(Debug, Clone, Copy)]
pub struct RequestKey<'a> {
    pub client: IpAddr,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// The live state a strategy may read of one backend.
pub trait Candidate {
    fn weight(&self) -> u32;
    /// Requests sent to the backend and not finished yet.
    fn in_flight(&self) -> u32;
}

/// The strategy of one upstream. An enum rather than a trait object: the set is
/// closed, and a `match` keeps the pick inlinable on the request path.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
}

// === impl Balancer ===

impl Balancer {
    /// Builds the strategy `kind` for backends with these weights (by index).
    pub fn new(kind: StrategyKind, weights: &[u32]) -> Self {
        match kind {
            StrategyKind::RoundRobin => Balancer::RoundRobin(RoundRobin::new(weights)),
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
        let _ = (request, backends);
        match self {
            Balancer::RoundRobin(rr) => rr.pick(usable),
        }
    }
}
