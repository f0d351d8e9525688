//! The TATs of one policy's keys on this instance: a hash map split into
//! shards, each behind its own lock, so requests of different keys rarely
//! meet on one lock and never on one shared by all requests.
//!
//! A key whose TAT has passed is in the same state as a key never seen, so
//! it can be dropped: each shard sweeps such keys out whenever it has doubled
//! since its last sweep, and a periodic sweep hands memory back once traffic
//! stops. Memory thus follows the keys active within `burst / rate`, however
//! many distinct keys come by.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Mutex;

use super::gcra::{Gcra, Verdict};

const SHARDS: usize = 64;
/// A shard this small is not worth sweeping.
const MIN_SWEEP: usize = 256;

/// Keys are already hashed (with a key of this process): used as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Tats = HashMap<u64, u64, BuildHasherDefault<Identity>>;

struct Shard {
    tats: Tats,
    /// Sweep when the shard holds this many keys.
    sweep_at: usize,
}

pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    /// TATs count from here, so that they fit in nanoseconds of a `u64`.
    epoch: tokio::time::Instant,
    /// Hashes request keys: random per process, so no client can aim two keys
    /// at one entry.
    hasher: std::hash::RandomState,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("keys", &self.len())
            .finish()
    }
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        tats: Tats::default(),
                        sweep_at: MIN_SWEEP,
                    })
                })
                .collect(),
            epoch: tokio::time::Instant::now(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl LocalStore {
    /// Nanoseconds since this store began (never 0: a TAT of 0 is a key never
    /// seen).
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
    }

    /// The entry of a request key's bytes.
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        // The top bits pick the shard; the map uses all of them.
        let index = (hash >> 58) as usize % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides on one request of the key hashed to `hash` at `now`, and
    /// counts it when it passes.
    pub fn check(&self, gcra: &Gcra, hash: u64, now: u64) -> Verdict {
        let mut shard = self.shard(hash);
        let tat = shard.tats.get(&hash).copied().unwrap_or(0);
        let (verdict, next) = gcra.decide(tat, now);
        if let Some(next) = next {
            shard.tats.insert(hash, next);
            if shard.tats.len() >= shard.sweep_at {
                shard.sweep(now);
            }
        }
        verdict
    }

    /// Gives back a request let through by [`check`](Self::check).
    pub fn give_back(&self, gcra: &Gcra, hash: u64, now: u64) {
        let mut shard = self.shard(hash);
        if let Some(tat) = shard.tats.get_mut(&hash) {
            *tat = gcra.give_back(*tat, now);
        }
    }

    /// Drops every key back to a full burst, and the memory they held.
    pub fn sweep(&self, now: u64) {
        for shard in self.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .sweep(now);
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .tats
                    .len()
            })
            .sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    fn sweep(&mut self, now: u64) {
        self.tats.retain(|_, tat| *tat > now);
        let len = self.tats.len();
        if self.tats.capacity() > 4 * len.max(MIN_SWEEP) {
            self.tats.shrink_to(2 * len);
        }
        self.sweep_at = (2 * len).max(MIN_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    fn gcra() -> Gcra {
        Gcra::new(
            Rate {
                count: 100,
                per: Duration::from_secs(1),
            },
            10,
        )
    }

    #[test]
    fn keys_are_counted_apart() {
        let store = LocalStore::default();
        let (a, b) = (store.hash(b"a"), store.hash(b"b"));
        let passed = |key| {
            (0..20)
                .filter(|_| matches!(store.check(&gcra(), key, MS), Verdict::Allowed { .. }))
                .count()
        };
        assert_eq!(passed(a), 10);
        assert_eq!(passed(b), 10);
    }

    #[test]
    fn a_million_keys_leave_only_the_active_ones_behind() {
        let store = LocalStore::default();
        let gcra = gcra();
        // One request per key, a microsecond apart: each key is back to a full
        // burst 10 ms after its request.
        for i in 0..1_000_000u64 {
            store.check(&gcra, store.hash(&i.to_le_bytes()), i * 1_000);
        }
        // The keys of the last 10 ms, and at most as many again not yet swept.
        let held = store.len();
        assert!(held <= 2 * 10_000 + SHARDS * MIN_SWEEP, "{held} keys held");
        store.sweep(2_000 * MS);
        assert!(store.is_empty());
    }

    #[test]
    fn a_request_given_back_passes_again() {
        let store = LocalStore::default();
        let gcra = Gcra::new(
            Rate {
                count: 1,
                per: Duration::from_secs(1),
            },
            1,
        );
        let key = store.hash(b"k");
        assert!(matches!(
            store.check(&gcra, key, MS),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            store.check(&gcra, key, MS),
            Verdict::Refused { .. }
        ));
        store.give_back(&gcra, key, MS);
        assert!(matches!(
            store.check(&gcra, key, MS),
            Verdict::Allowed { .. }
        ));
    }
}
