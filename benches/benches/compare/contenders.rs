//! The caches compared, behind one small interface.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_cache::Policy;

/// The value type of the throughput cases: what a service caches.
pub(crate) type Value = Arc<String>;

pub(crate) trait Contender: Send + Sync {
    /// `true` on a hit.
    fn get(&self, key: u64) -> bool;
    fn insert(&self, key: u64, value: Value);
}

pub(crate) struct Ours(pub async_cache::Cache<u64, Value>);
pub(crate) struct Quick(pub quick_cache::sync::Cache<u64, Value>);
pub(crate) struct Moka(pub moka::sync::Cache<u64, Value>);
pub(crate) struct MutexLru(pub Mutex<lru::LruCache<u64, Value>>);
/// Not a cache: what any cache's hit costs at least, the clone (and drop)
/// of the value, looked up in a plain vector.
pub(crate) struct Floor(pub Vec<Value>);

impl Contender for Ours {
    #[inline]
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }
    fn insert(&self, key: u64, value: Value) {
        self.0.insert(key, value);
    }
}

impl Contender for Quick {
    #[inline]
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }
    fn insert(&self, key: u64, value: Value) {
        self.0.insert(key, value);
    }
}

impl Contender for Moka {
    #[inline]
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }
    fn insert(&self, key: u64, value: Value) {
        self.0.insert(key, value);
    }
}

impl Contender for MutexLru {
    #[inline]
    fn get(&self, key: u64) -> bool {
        // Cloned, as every other contender returns a copy.
        self.0.lock().unwrap().get(&key).cloned().is_some()
    }
    fn insert(&self, key: u64, value: Value) {
        self.0.lock().unwrap().put(key, value);
    }
}

impl Contender for Floor {
    #[inline]
    fn get(&self, key: u64) -> bool {
        self.0.get(key as usize).map(Arc::clone).is_some()
    }
    fn insert(&self, _: u64, _: Value) {}
}

/// The floor of a hit on keys `0..keys`.
pub(crate) fn floor(keys: u64) -> (&'static str, Box<dyn Contender>) {
    ("floor: clone of the value, no cache", Box::new(Floor((0..keys).map(value).collect())))
}

/// Both of our policies and the three peers, each of `capacity`, by name.
pub(crate) fn all(capacity: usize) -> Vec<(&'static str, Box<dyn Contender>)> {
    vec![
        (crate::OURS, Box::new(Ours(async_cache::Cache::new(capacity)))),
        (
            crate::OURS_LFU,
            Box::new(Ours(async_cache::Cache::builder().max_size(capacity).policy(Policy::TinyLfu).build())),
        ),
        ("quick_cache", Box::new(Quick(quick_cache::sync::Cache::new(capacity)))),
        ("moka", Box::new(Moka(moka::sync::Cache::new(capacity as u64)))),
        ("Mutex<lru>", Box::new(MutexLru(Mutex::new(lru::LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap()))))),
    ]
}

/// For hits with a TTL: our default policy and moka, each without and
/// with a one-hour TTL, and quick_cache (which has no TTLs) as the yardstick.
pub(crate) fn timed(capacity: usize) -> Vec<(&'static str, Box<dyn Contender>)> {
    let hour = std::time::Duration::from_secs(3_600);
    vec![
        (crate::OURS, Box::new(Ours(async_cache::Cache::new(capacity)))),
        (crate::OURS_TTL, Box::new(Ours(async_cache::Cache::builder().max_size(capacity).default_ttl(hour).build()))),
        ("quick_cache", Box::new(Quick(quick_cache::sync::Cache::new(capacity)))),
        ("moka", Box::new(Moka(moka::sync::Cache::new(capacity as u64)))),
        (
            "moka, time_to_live 1 h",
            Box::new(Moka(moka::sync::Cache::builder().max_capacity(capacity as u64).time_to_live(hour).build())),
        ),
    ]
}

pub(crate) fn value(key: u64) -> Value {
    Arc::new(format!("value {key}"))
}
