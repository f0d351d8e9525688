//! Least connections: the backend with the fewest in-flight requests relative to its
//! weight (in_flight / weight), as nginx's `least_conn`. Scans every backend.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Candidate;

#[derive(Debug, Default)]
pub struct LeastConnections {
    /// Where the scan starts, moved on by every pick, so that ties rotate among the
    /// tied backends instead of always going to the first.
    next: AtomicUsize,
}

impl LeastConnections {
    pub fn pick<C: Candidate>(
        &self,
        backends: &[C],
        usable: &mut dyn FnMut(usize) -> bool,
    ) -> Option<usize> {
        let len = backends.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % len;
        // Usually every backend is usable: find the least loaded with arithmetic only,
        // and ask `usable` once; only if it says no, scan again asking for each.
        let best = least_loaded(backends, start, |_| true)?;
        if usable(best) {
            return Some(best);
        }
        least_loaded(backends, start, usable)
    }
}

/// The usable backend with the lowest in_flight / weight, scanning from `start`
/// (wrapping), so that the first of several tied backends is the one after `start`.
fn least_loaded<C: Candidate>(
    backends: &[C],
    start: usize,
    mut usable: impl FnMut(usize) -> bool,
) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    // Two ranges rather than `(start + step) % len`: no division per backend.
    for index in (start..backends.len()).chain(0..start) {
        let backend = &backends[index];
        let (load, weight) = (
            u64::from(backend.in_flight()),
            u64::from(backend.weight().max(1)),
        );
        // load/weight < best_load/best_weight, compared without division.
        let better = match best {
            None => true,
            Some((_, best_load, best_weight)) => load * best_weight < best_load * weight,
        };
        if better && usable(index) {
            best = Some((index, load, weight));
        }
    }
    best.map(|(index, _, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::Fake;

    #[test]
    fn fewest_in_flight_wins() {
        let backends = [Fake::new(1, 5), Fake::new(1, 2), Fake::new(1, 9)];
        let lc = LeastConnections::default();
        for _ in 0..10 {
            assert_eq!(lc.pick(&backends, &mut |_| true), Some(1));
        }
    }

    #[test]
    fn load_is_relative_to_weight() {
        // 4 in flight at weight 4 (1 per unit) beats 2 at weight 1.
        let backends = [Fake::new(1, 2), Fake::new(4, 4)];
        assert_eq!(
            LeastConnections::default().pick(&backends, &mut |_| true),
            Some(1)
        );
    }

    #[test]
    fn ties_rotate() {
        let backends = [Fake::new(1, 0), Fake::new(1, 0), Fake::new(1, 0)];
        let lc = LeastConnections::default();
        let picks: Vec<_> = (0..6)
            .map(|_| lc.pick(&backends, &mut |_| true).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn unusable_backends_are_skipped_even_when_idle() {
        let backends = [Fake::new(1, 0), Fake::new(1, 7)];
        assert_eq!(
            LeastConnections::default().pick(&backends, &mut |i| i == 1),
            Some(1)
        );
        assert_eq!(
            LeastConnections::default().pick(&backends, &mut |_| false),
            None
        );
    }
}
