//! The in-process store: stored responses by key, each key with its variants
//! (one per set of `Vary` values), bounded by bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use http::HeaderMap;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;

use super::object::Stored;
use crate::metrics::StoreMetrics;

/// Variants of one key kept at most: a `Vary` on a field with endless values
/// (a user agent) must not grow one entry without bound.
const MAX_VARIANTS: usize = 16;

/// The stored responses of one key, most recent first.
#[derive(Debug, Clone, Default)]
pub struct Variants(pub Vec<Arc<Stored>>);

impl Variants {
    fn weight(&self) -> u64 {
        self.0.iter().map(|v| v.weight()).sum::<u64>() + 64
    }

    /// The most recent variant `request_headers` select.
    pub fn select(&self, request_headers: &HeaderMap) -> Option<&Arc<Stored>> {
        self.0.iter().find(|v| v.matches(request_headers))
    }
}

pub struct MemoryStore {
    entries: moka::sync::Cache<Arc<str>, Arc<Variants>>,
    metrics: StoreMetrics,
    /// Bytes held: inserted and not yet evicted.
    held: Arc<AtomicI64>,
    capacity: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl MemoryStore {
    pub fn new(capacity: u64, metrics: StoreMetrics) -> Self {
        let listener_metrics = metrics.clone();
        let held = Arc::new(AtomicI64::new(0));
        let listener_held = held.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|_key: &Arc<str>, value: &Arc<Variants>| {
                u32::try_from(value.weight()).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_key, value: Arc<Variants>, cause| {
                let weight = i64::try_from(value.weight()).unwrap_or(i64::MAX);
                listener_held.fetch_sub(weight, Ordering::Relaxed);
                listener_metrics.stored_bytes.sub(weight);
                if cause == RemovalCause::Size {
                    listener_metrics.evictions.inc();
                }
            })
            .build();
        // A new store starts empty (a resized one replaces the old).
        metrics.stored_bytes.set(0);
        MemoryStore {
            entries,
            metrics,
            held,
            capacity,
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Variants>> {
        self.entries.get(key)
    }

    /// Stores `object` under `key`, in place of the variant it replaces.
    pub fn insert(&self, key: &Arc<str>, object: Arc<Stored>) {
        let metrics = &self.metrics;
        self.entries
            .entry(key.clone())
            .and_compute_with(|existing| {
                let mut variants: Vec<Arc<Stored>> = Vec::with_capacity(2);
                variants.push(object.clone());
                if let Some(existing) = existing {
                    variants.extend(
                        existing
                            .value()
                            .0
                            .iter()
                            .filter(|v| v.vary != object.vary)
                            .take(MAX_VARIANTS - 1)
                            .cloned(),
                    );
                }
                let variants = Variants(variants);
                let weight = i64::try_from(variants.weight()).unwrap_or(i64::MAX);
                self.held.fetch_add(weight, Ordering::Relaxed);
                metrics.stored_bytes.add(weight);
                Op::Put(Arc::new(variants))
            });
        // moka enforces its bound when it runs its pending work, which it
        // does in batches: past the bound, run it now, so that the store
        // never holds much more than `memory` between two batches.
        if self.held.load(Ordering::Relaxed) > i64::try_from(self.capacity).unwrap_or(i64::MAX) {
            self.entries.run_pending_tasks();
        }
    }

    pub fn remove(&self, key: &str) {
        self.entries.invalidate(key);
    }

    /// Removes every key `doomed` selects (purges: rare, a walk of all keys).
    pub fn remove_where(&self, doomed: impl Fn(&str) -> bool) -> usize {
        let keys: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(key, _)| doomed(key))
            .map(|(key, _)| key.as_ref().clone())
            .collect();
        for key in &keys {
            self.entries.invalidate(key);
        }
        keys.len()
    }

    /// Finishes the store's pending bookkeeping (evictions, counts); tests use it
    /// to observe a settled store.
    pub fn settle(&self) {
        self.entries.run_pending_tasks();
    }
}
