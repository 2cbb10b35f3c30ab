//! The user's hooks into the store: the removal listener, told once of
//! every entry that leaves the cache and why, and the weigher.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::stats::Counter;

/// Why an entry left the cache, as told to the listener set with
/// [`CacheBuilder::eviction_listener`](crate::CacheBuilder::eviction_listener).
///
/// # Examples
///
/// See [`CacheBuilder::eviction_listener`](crate::CacheBuilder::eviction_listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Its TTL passed.
    Expired,
    /// `remove`, `clear`, or `#[cached]`'s `_invalidate`.
    Explicit,
    /// An `insert` of the same key put another value in its place.
    Replaced,
    /// The size bound pushed it out, or it was never stored for it
    /// (`max_size(0)`, or refused admission under `Policy::TinyLfu`).
    Size,
}

pub(crate) type Listener<K, V> = Arc<dyn Fn(&K, &V, RemovalCause) + Send + Sync>;

/// What an entry weighs, from [`CacheBuilder::weigher`](crate::CacheBuilder::weigher).
pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;

/// Calls `listener`; a panic in it is caught and counted in `panics`: it
/// belongs to no caller of the operation that happened to remove the entry.
pub(crate) fn notify<K, V>(listener: &Listener<K, V>, panics: &Counter, key: &K, value: &V, cause: RemovalCause) {
    if catch_unwind(AssertUnwindSafe(|| listener(key, value, cause))).is_err() {
        panics.inc();
    }
}
