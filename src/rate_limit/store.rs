//! The TATs of one policy's keys on this instance: a hash map split into
//! shards, each behind its own lock, so requests of different keys rarely
//! meet on one lock and never on one shared by all requests.
//!
//! A key whose TAT has passed is in the same state as a key never seen, so
//! it can be dropped: each shard sweeps such keys out whenever it has doubled
//! since its last sweep, and a periodic sweep hands memory back once traffic
//! stops. Memory thus follows the keys active within `burst / rate`.
//!
//! A slow policy (`1/h`) keeps a key for long, so a client making up keys
//! faster than they expire would still grow the map: each shard holds at most
//! its share of [`MAX_KEYS`], and past it forgets the keys nearest to a full
//! burst (they lose the least: at most the rest of their wait).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Mutex;

use prometheus::IntGauge;

use super::gcra::{Gcra, Verdict};

const SHARDS: usize = 64;
/// A shard this small is not worth sweeping.
const MIN_SWEEP: usize = 256;
/// Keys one policy holds at most on one instance: about 17 bytes each in the
/// map, so some 40 MiB with the map's slack.
pub const MAX_KEYS: usize = 1 << 21;
const MAX_SHARD_KEYS: usize = MAX_KEYS / SHARDS;
/// A full shard forgets this share of its keys at once, so that eviction,
/// which reads the whole shard, is rare.
const EVICT_SHARE: usize = 8;

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
    /// Keys held (`weir_rate_limit_keys`).
    keys: IntGauge,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("keys", &self.len())
            .finish()
    }
}

impl LocalStore {
    pub fn new(keys: IntGauge) -> Self {
        LocalStore {
            keys,
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
        // Middle bits pick the shard: the map takes its slots from the low
        // bits and its tags from the top ones.
        let index = (hash >> 32) as usize % SHARDS;
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
        if let Some(next) = next
            && shard.tats.insert(hash, next).is_none()
        {
            self.keys.inc();
            if shard.tats.len() >= shard.sweep_at {
                let dropped = shard.sweep(now);
                self.keys.sub(dropped as i64);
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
            let dropped = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .sweep(now);
            self.keys.sub(dropped as i64);
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
    /// Drops the keys back to a full burst, and past the shard's bound the
    /// ones nearest to it; returns how many went.
    fn sweep(&mut self, now: u64) -> usize {
        let before = self.tats.len();
        self.tats.retain(|_, tat| *tat > now);
        if self.tats.len() >= MAX_SHARD_KEYS {
            let mut tats: Vec<u64> = self.tats.values().copied().collect();
            let nth = MAX_SHARD_KEYS / EVICT_SHARE;
            let (_, &mut threshold, _) = tats.select_nth_unstable(nth);
            self.tats.retain(|_, tat| *tat > threshold);
        }
        let len = self.tats.len();
        if self.tats.capacity() > 4 * len.max(MIN_SWEEP) {
            self.tats.shrink_to(2 * len);
        }
        self.sweep_at = (2 * len).clamp(MIN_SWEEP, MAX_SHARD_KEYS);
        before - len
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
        let store = LocalStore::new(IntGauge::new("keys", "keys").unwrap());
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
        let store = LocalStore::new(IntGauge::new("keys", "keys").unwrap());
        let gcra = gcra();
        // One request per key, a microsecond apart: each key is back to a full
        // burst 10 ms after its request.
        for i in 0..1_000_000u64 {
            store.check(&gcra, store.hash(&i.to_le_bytes()), i * 1_000);
        }
        // The keys of the last 10 ms, and at most as many again not yet swept.
        let held = store.len();
        assert!(held <= 2 * 10_000 + SHARDS * MIN_SWEEP, "{held} keys held");
        assert_eq!(store.keys.get(), held as i64);
        store.sweep(2_000 * MS);
        assert!(store.is_empty());
        assert_eq!(store.keys.get(), 0);
    }

    #[test]
    fn keys_made_up_faster_than_they_expire_stop_at_the_bound() {
        let store = LocalStore::new(IntGauge::new("keys", "keys").unwrap());
        let hourly = Gcra::new(
            Rate {
                count: 1,
                per: Duration::from_secs(3600),
            },
            1,
        );
        // Every key waits an hour; the later, the longer.
        let made = MAX_KEYS + MAX_KEYS / 2;
        for i in 0..made as u64 {
            store.check(&hourly, store.hash(&i.to_le_bytes()), MS + i);
        }
        let held = store.len();
        assert!(held <= MAX_KEYS, "{held} keys held");
        assert!(held >= MAX_KEYS / 2, "{held} keys held");
        assert_eq!(store.keys.get(), held as i64);
        // The latest key is remembered: its wait is the longest.
        let last = store.hash(&(made as u64 - 1).to_le_bytes());
        assert!(matches!(
            store.check(&hourly, last, 2 * MS + made as u64),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn a_request_given_back_passes_again() {
        let store = LocalStore::new(IntGauge::new("keys", "keys").unwrap());
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
