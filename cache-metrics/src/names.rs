//! Every metric's name, in one place.

/// Lookups that found a live value (counter).
pub const HITS: &str = "cache_hits_total";
/// Lookups that found no live value (counter).
pub const MISSES: &str = "cache_misses_total";
/// Entries pushed out by the size bound (counter).
pub const EVICTIONS: &str = "cache_evictions_total";
/// Entries removed because their TTL passed (counter).
pub const EXPIRATIONS: &str = "cache_expirations_total";
/// Loader runs, failed and cancelled ones included: one per single-flight
/// load and one per `load_batch` call (counter).
pub const LOADS: &str = "cache_loads_total";
/// Failed loader runs (counter).
pub const LOAD_ERRORS: &str = "cache_load_errors_total";
/// `load_batch` calls (counter).
pub const BATCHES: &str = "cache_batches_total";
/// Keys sent in `load_batch` calls (counter).
pub const BATCHED_KEYS: &str = "cache_batched_keys_total";
/// Callers served by another caller's load (counter).
pub const COALESCED: &str = "cache_coalesced_total";
/// Live entries (gauge).
pub const SIZE: &str = "cache_size";
/// The size bound; absent when unbounded (gauge).
pub const MAX_SIZE: &str = "cache_max_size";
/// The sum of live entries' weights, `cache_size` without a weigher (gauge).
pub const WEIGHT: &str = "cache_weight";
/// The weight bound; absent without one (gauge).
pub const MAX_WEIGHT: &str = "cache_max_weight";
/// Panics caught in the removal listener (counter).
pub const LISTENER_PANICS: &str = "cache_listener_panics_total";
/// Background reloads started by `refresh_after` (counter).
pub const REFRESHES: &str = "cache_refreshes_total";
/// `fetch` callers served a stale value, `stale_for` (counter).
pub const STALE_SERVED: &str = "cache_stale_served_total";
/// Values found in the shared (Redis) tier after a local miss (counter).
pub const TIER_HITS: &str = "cache_tier_hits_total";
/// Keys looked up in the tier and not found there (counter).
pub const TIER_MISSES: &str = "cache_tier_misses_total";
/// Tier calls that failed or timed out, writes that did not reach it and
/// values that did not decode (counter).
pub const TIER_ERRORS: &str = "cache_tier_errors_total";
/// Hits over lookups since the previous publication (gauge).
pub const HIT_RATIO: &str = "cache_hit_ratio";
/// How long each loader run took, one observation per `cache_loads_total`
/// (histogram, seconds).
pub const LOAD_DURATION: &str = "cache_load_duration_seconds";
/// Keys per `load_batch` call (histogram).
pub const BATCH_SIZE: &str = "cache_batch_size";
/// The label every metric carries: the cache's name.
pub const LABEL: &str = "cache";
