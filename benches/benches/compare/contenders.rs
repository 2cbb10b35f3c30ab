//! The caches compared, behind one small interface.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

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
        self.0.lock().unwrap().get(&key).is_some()
    }
    fn insert(&self, key: u64, value: Value) {
        self.0.lock().unwrap().put(key, value);
    }
}

/// The four contenders, each of `capacity`, by name.
pub(crate) fn all(capacity: usize) -> Vec<(&'static str, Box<dyn Contender>)> {
    vec![
        ("async-cache", Box::new(Ours(async_cache::Cache::new(capacity)))),
        ("quick_cache", Box::new(Quick(quick_cache::sync::Cache::new(capacity)))),
        ("moka", Box::new(Moka(moka::sync::Cache::new(capacity as u64)))),
        ("Mutex<lru>", Box::new(MutexLru(Mutex::new(lru::LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap()))))),
    ]
}

pub(crate) fn value(key: u64) -> Value {
    Arc::new(format!("value {key}"))
}
