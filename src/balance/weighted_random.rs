//! Weighted random choice: each backend's chance is its share of the total weight.
//! Also the candidate draw of power-of-two-choices.

/// Draws made at random before falling back to a scan, when the drawn backends turn
/// out unusable (down, excluded): enough to skip a few bad ones cheaply.
const RANDOM_DRAWS: usize = 4;

#[derive(Debug)]
pub struct WeightedRandom {
    /// Running sums of the weights: backend `i` owns `[cumulative[i-1], cumulative[i])`.
    cumulative: Box<[u64]>,
}

impl WeightedRandom {
    pub fn new(weights: &[u32]) -> Self {
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        WeightedRandom { cumulative }
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// One weighted draw, whether usable or not.
    fn draw(&self) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let point = fastrand::u64(..total);
        Some(self.cumulative.partition_point(|&end| end <= point))
    }

    /// The candidates of a two-choice strategy (`p2c`, `ewma`), drawn by weight and
    /// distinct whenever two backends are usable: comparing a backend with itself
    /// would hand it the request however loaded it is.
    pub fn two_choices(&self, usable: &mut dyn FnMut(usize) -> bool) -> Option<(usize, usize)> {
        let first = self.pick(usable)?;
        let second = self.pick(&mut |i| i != first && usable(i)).unwrap_or(first);
        Some((first, second))
    }

    /// A usable backend drawn by weight; after a few unusable draws, the first usable
    /// one from a random place (so that its share still spreads over the others).
    pub fn pick(&self, usable: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        let len = self.cumulative.len();
        for _ in 0..RANDOM_DRAWS {
            let index = self.draw()?;
            if usable(index) {
                return Some(index);
            }
        }
        let start = fastrand::usize(..len);
        (0..len)
            .map(|step| (start + step) % len)
            .find(|&i| usable(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(
        random: &WeightedRandom,
        n: usize,
        draws: usize,
        usable: &mut dyn FnMut(usize) -> bool,
    ) -> Vec<usize> {
        let mut counts = vec![0; n];
        for _ in 0..draws {
            counts[random.pick(usable).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn shares_follow_weights() {
        fastrand::seed(7);
        let random = WeightedRandom::new(&[1, 2, 7]);
        let counts = shares(&random, 3, 100_000, &mut |_| true);
        for (count, expected) in counts.iter().zip([10_000, 20_000, 70_000]) {
            let error = (*count as f64 - expected as f64).abs() / expected as f64;
            assert!(error < 0.05, "{counts:?}");
        }
    }

    #[test]
    fn unusable_backends_are_never_picked() {
        fastrand::seed(8);
        let random = WeightedRandom::new(&[100, 1, 1]);
        let counts = shares(&random, 3, 10_000, &mut |i| i != 0);
        assert_eq!(counts[0], 0);
        assert!(counts[1] > 3_000 && counts[2] > 3_000, "{counts:?}");
    }

    #[test]
    fn nothing_usable_gives_none() {
        let random = WeightedRandom::new(&[1, 1]);
        assert_eq!(random.pick(&mut |_| false), None);
        assert_eq!(WeightedRandom::new(&[]).pick(&mut |_| true), None);
    }
}
