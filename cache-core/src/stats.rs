//! Counters and the [`Metrics`] snapshot.
//!
//! Hits and misses are counted in the read buffers' stripes (see
//! `store::buffer`): a hit costs no counter of its own. Evictions and
//! expirations are plain fields under the lock that causes them; the rest are
//! counted on paths that already run a loader, as plain atomics.
//! `reset_metrics` moves a baseline instead of zeroing, so concurrent
//! increments are never lost and published counters stay monotonic.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::sync::{Mutex, lock};

/// A snapshot of a cache's counters, from [`Cache::metrics`](crate::Cache::metrics).
///
/// Counters count since the cache was built or since the last
/// [`reset_metrics`](crate::Cache::reset_metrics); `size` and `max_size` are
/// the state at the time of the snapshot.
///
/// # Examples
///
/// ```
/// use async_cache::Cache;
///
/// let cache = Cache::<u32, u32>::new(100);
/// cache.insert(1, 10);
/// assert_eq!(cache.get(&1), Some(10));
/// assert_eq!(cache.get(&2), None);
///
/// let m = cache.metrics();
/// assert_eq!((m.hits, m.misses, m.size, m.max_size), (1, 1, 1, Some(100)));
/// assert_eq!(m.hit_rate(), 0.5);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Lookups that found a live value.
    pub hits: u64,
    /// Lookups that found no live value, one per caller (each of 1,000
    /// concurrent callers of one missing key counts a miss).
    pub misses: u64,
    /// Live entries.
    pub size: u64,
    /// The size bound, `None` when unbounded.
    pub max_size: Option<u64>,
    /// The sum of live entries' weights (`size` without a weigher).
    pub weight: u64,
    /// The weight bound, `None` without one.
    pub max_weight: Option<u64>,
    /// Entries pushed out by the size bound.
    pub evictions: u64,
    /// Entries removed because their TTL passed, found on a read or reclaimed.
    pub expirations: u64,
    /// Loader runs, failed and cancelled ones included: one per flight,
    /// and one per `load_batch` call however many keys it held (those are
    /// `batched_keys`).
    pub loads: u64,
    /// Failed loader runs: one per failed flight or batch, however many
    /// callers waited on it.
    pub load_errors: u64,
    /// Callers served by another caller's load (value or shared error).
    pub coalesced: u64,
    /// `load_batch` calls.
    pub batches: u64,
    /// Keys sent in those calls.
    pub batched_keys: u64,
    /// Panics caught in the removal listener.
    pub listener_panics: u64,
    /// Background reloads started by [`refresh_after`](crate::CacheBuilder::refresh_after)
    /// (each is also one of `loads`).
    pub refreshes: u64,
    /// Callers of [`fetch`](crate::Cache::fetch) served a stale value
    /// (see [`stale_for`](crate::CacheBuilder::stale_for)): because the
    /// load failed, or outlasted [`load_timeout`](crate::CacheBuilder::load_timeout).
    pub stale_served: u64,
    /// Values found in the shared tier (see `CacheBuilder::tier`)
    /// after a local miss: loads that did not run.
    pub tier_hits: u64,
    /// Keys looked up in the tier and not found there (they were loaded).
    pub tier_misses: u64,
    /// Tier calls that failed or timed out, writes that did not reach it,
    /// and values in it that did not decode. The cache went on without it.
    pub tier_errors: u64,
}

impl Metrics {
    /// `hits / (hits + misses)`, or `0.0` when nothing was asked.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Metrics;
    ///
    /// let mut m = Metrics::default();
    /// assert_eq!(m.hit_rate(), 0.0);
    /// (m.hits, m.misses) = (3, 1);
    /// assert_eq!(m.hit_rate(), 0.75);
    /// ```
    pub fn hit_rate(&self) -> f64 {
        let asked = self.hits + self.misses;
        if asked == 0 { 0.0 } else { self.hits as f64 / asked as f64 }
    }
}

/// A monotonic counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn inc(&self) {
        self.add(1);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters not kept by the read buffers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) loads: Counter,
    pub(crate) load_errors: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) batches: Counter,
    pub(crate) batched_keys: Counter,
    pub(crate) listener_panics: Counter,
    pub(crate) refreshes: Counter,
    pub(crate) stale_served: Counter,
    pub(crate) tier_hits: Counter,
    pub(crate) tier_misses: Counter,
    pub(crate) tier_errors: Counter,
    baseline: Mutex<Metrics>,
}

impl Counters {
    /// The counters kept here, since the cache was built (never reset);
    /// the others are left for the caller.
    pub(crate) fn totals(&self, hits: u64, misses: u64) -> Metrics {
        Metrics {
            hits,
            misses,
            size: 0,
            max_size: None,
            weight: 0,
            max_weight: None,
            evictions: 0,
            expirations: 0,
            loads: self.loads.get(),
            load_errors: self.load_errors.get(),
            coalesced: self.coalesced.get(),
            batches: self.batches.get(),
            batched_keys: self.batched_keys.get(),
            listener_panics: self.listener_panics.get(),
            refreshes: self.refreshes.get(),
            stale_served: self.stale_served.get(),
            tier_hits: self.tier_hits.get(),
            tier_misses: self.tier_misses.get(),
            tier_errors: self.tier_errors.get(),
        }
    }

    /// `totals` minus the baseline of the last reset.
    pub(crate) fn since_reset(&self, totals: Metrics) -> Metrics {
        let base = *lock(&self.baseline);
        Metrics {
            hits: totals.hits.saturating_sub(base.hits),
            misses: totals.misses.saturating_sub(base.misses),
            evictions: totals.evictions.saturating_sub(base.evictions),
            expirations: totals.expirations.saturating_sub(base.expirations),
            loads: totals.loads.saturating_sub(base.loads),
            load_errors: totals.load_errors.saturating_sub(base.load_errors),
            coalesced: totals.coalesced.saturating_sub(base.coalesced),
            batches: totals.batches.saturating_sub(base.batches),
            batched_keys: totals.batched_keys.saturating_sub(base.batched_keys),
            listener_panics: totals.listener_panics.saturating_sub(base.listener_panics),
            refreshes: totals.refreshes.saturating_sub(base.refreshes),
            stale_served: totals.stale_served.saturating_sub(base.stale_served),
            tier_hits: totals.tier_hits.saturating_sub(base.tier_hits),
            tier_misses: totals.tier_misses.saturating_sub(base.tier_misses),
            tier_errors: totals.tier_errors.saturating_sub(base.tier_errors),
            ..totals
        }
    }

    pub(crate) fn reset(&self, totals: Metrics) {
        *lock(&self.baseline) = totals;
    }
}
