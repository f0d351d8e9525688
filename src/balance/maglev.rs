//! Consistent hashing with a Maglev lookup table (Eisenbud et al., NSDI 2016), with
//! weights as Envoy does them: a backend takes table slots in proportion to its
//! weight. A key hashes to a slot; the slot names its backend.
//!
//! Removing one backend of N moves about 1/N of the keys (those it held) plus a small
//! share of the others; adding one takes about 1/(N+1). The table is built once per
//! config, from the backends' names (their addresses) and a fixed hash, so every weir
//! instance and every restart builds the same table and sends a key to the same
//! backend.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Table size: a prime, so every `skip` walks all slots. 65,537 slots keep every
/// backend's share within a fraction of a percent of its weight for up to hundreds of
/// backends (Google's paper uses 65,537 too); 256 KiB per hashed upstream.
pub const TABLE_SIZE: usize = 65_537;

/// Fixed seeds: the table must not depend on the process.
const OFFSET_SEED: u64 = 0x5745_4952_0001;
const SKIP_SEED: u64 = 0x5745_4952_0002;
/// Seed for request keys, distinct from the table's.
pub const KEY_SEED: u64 = 0x5745_4952_0003;

#[derive(Debug)]
pub struct Maglev {
    /// Backend index per slot.
    table: Box<[u32]>,
}

impl Maglev {
    /// Builds the table for backends `names` (stable identities) with `weights`.
    pub fn new(names: &[String], weights: &[u32]) -> Self {
        let m = TABLE_SIZE as u64;
        let n = names.len();
        if n == 0 {
            return Maglev {
                table: Box::new([]),
            };
        }
        let permutation: Vec<(u64, u64)> = names
            .iter()
            .map(|name| {
                let offset = xxh3_64_with_seed(name.as_bytes(), OFFSET_SEED) % m;
                let skip = xxh3_64_with_seed(name.as_bytes(), SKIP_SEED) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let max_weight = f64::from(weights.iter().copied().max().unwrap_or(1).max(1));
        let normalized: Vec<f64> = weights
            .iter()
            .map(|&w| f64::from(w.max(1)) / max_weight)
            .collect();
        let mut target = vec![0.0f64; n];
        let mut next = vec![0u64; n];
        let mut table = vec![u32::MAX; TABLE_SIZE];
        let mut filled = 0;
        let mut round = 0u64;
        'fill: loop {
            round += 1;
            for i in 0..n {
                // A backend takes a turn only while its share keeps up with its weight.
                if (round as f64) * normalized[i] < target[i] {
                    continue;
                }
                target[i] += 1.0;
                let (offset, skip) = permutation[i];
                let mut slot = ((offset + next[i] * skip) % m) as usize;
                while table[slot] != u32::MAX {
                    next[i] += 1;
                    slot = ((offset + next[i] * skip) % m) as usize;
                }
                table[slot] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Maglev {
            table: table.into_boxed_slice(),
        }
    }

    /// The backend for `hash`; when it is not usable, the next usable one along the
    /// table, so the same key always finds the same substitute and keys of other
    /// backends stay where they are.
    pub fn pick(&self, hash: u64, usable: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        let len = self.table.len();
        if len == 0 {
            return None;
        }
        let start = (hash % len as u64) as usize;
        let first = self.table[start] as usize;
        if usable(first) {
            return Some(first);
        }
        (start + 1..len)
            .chain(0..start)
            .map(|slot| self.table[slot] as usize)
            .filter(|&index| index != first)
            .find(|&index| usable(index))
    }
}

impl Maglev {
    /// The first backend along the table from the key's slot that `accept` takes
    /// (usable and under its load bound), or `None`. Deterministic: the same key and
    /// loads give the same backend, and keys spill to the next candidate in table
    /// order.
    pub fn pick_bounded(&self, hash: u64, accept: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        let len = self.table.len();
        if len == 0 {
            return None;
        }
        let start = (hash % len as u64) as usize;
        let mut last = u32::MAX;
        for slot in (start..len).chain(0..start) {
            let index = self.table[slot];
            // Runs of one backend are common; ask once per run.
            if index != last {
                last = index;
                if accept(index as usize) {
                    return Some(index as usize);
                }
            }
        }
        None
    }
}

/// The hash of a request key (path, header value, client address...).
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, KEY_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    #[test]
    fn weights_are_honoured() {
        let names = names(3);
        let maglev = Maglev::new(&names, &[1, 2, 5]);
        let slots = |i: u32| maglev.table.iter().filter(|&&s| s == i).count() as f64;
        let total = TABLE_SIZE as f64;
        for (i, expected) in [(0, 1.0 / 8.0), (1, 2.0 / 8.0), (2, 5.0 / 8.0)] {
            assert!(
                (slots(i) / total - expected).abs() < 0.01,
                "backend {i}: {}",
                slots(i) / total
            );
        }
    }

    #[test]
    fn the_table_is_the_same_in_every_process() {
        // Pinned values: a change here would send every key elsewhere after an upgrade.
        let names = names(3);
        let maglev = Maglev::new(&names, &[1; 3]);
        let picks: Vec<usize> = (0..8)
            .map(|k| {
                maglev
                    .pick(key_hash(format!("user-{k}").as_bytes()), &mut |_| true)
                    .unwrap()
            })
            .collect();
        assert_eq!(picks, PINNED_PICKS);
    }

    const PINNED_PICKS: [usize; 8] = [0, 1, 2, 0, 2, 1, 2, 0];
}
