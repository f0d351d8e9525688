//! Power of two choices (Envoy's `least_request`): draw two backends at random (by
//! weight) and take the one with fewer in-flight requests relative to its weight.
//! O(1) per pick, and nearly as good as least connections at spreading load, without
//! herding every request onto the one momentarily idle backend.

use super::Candidate;
use super::weighted_random::WeightedRandom;

#[derive(Debug)]
pub struct PowerOfTwo {
    draw: WeightedRandom,
}

impl PowerOfTwo {
    pub fn new(weights: &[u32]) -> Self {
        PowerOfTwo {
            draw: WeightedRandom::new(weights),
        }
    }

    pub fn pick<C: Candidate>(
        &self,
        backends: &[C],
        usable: &mut dyn FnMut(usize) -> bool,
    ) -> Option<usize> {
        let (first, second) = self.draw.two_choices(usable)?;
        let load = |i: usize| {
            let backend = &backends[i];
            (
                u64::from(backend.in_flight()),
                u64::from(backend.weight().max(1)),
            )
        };
        let ((load_a, weight_a), (load_b, weight_b)) = (load(first), load(second));
        Some(if load_b * weight_a < load_a * weight_b {
            second
        } else {
            first
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::Fake;

    #[test]
    fn the_busiest_backend_is_never_picked_from_two() {
        fastrand::seed(3);
        let backends = [Fake::new(1, 10), Fake::new(1, 0)];
        let p2c = PowerOfTwo::new(&[1, 1]);
        // Whenever both are drawn the idle one wins; the busy one only wins when it is
        // drawn twice, which the redraw makes rare (1/8 of the time at most).
        let busy = (0..10_000)
            .filter(|_| p2c.pick(&backends, &mut |_| true) == Some(0))
            .count();
        assert!(busy < 1_500, "busy backend picked {busy} times of 10000");
    }

    #[test]
    fn spreads_over_equally_loaded_backends() {
        fastrand::seed(4);
        let backends = [
            Fake::new(1, 0),
            Fake::new(1, 0),
            Fake::new(1, 0),
            Fake::new(1, 0),
        ];
        let p2c = PowerOfTwo::new(&[1, 1, 1, 1]);
        let mut counts = [0; 4];
        for _ in 0..40_000 {
            counts[p2c.pick(&backends, &mut |_| true).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| (8_000..12_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn unusable_backends_are_never_picked() {
        fastrand::seed(5);
        let backends = [Fake::new(1, 0), Fake::new(1, 3), Fake::new(1, 3)];
        let p2c = PowerOfTwo::new(&[1, 1, 1]);
        for _ in 0..1_000 {
            assert_ne!(p2c.pick(&backends, &mut |i| i != 0), Some(0));
        }
        assert_eq!(p2c.pick(&backends, &mut |_| false), None);
    }
}
