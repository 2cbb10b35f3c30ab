//! A custom hasher (`builder().hasher(S)`): it is the one used, every part
//! of the API works with it, and the store stays correct when every key
//! collides.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_core::Cache;

/// Hashes everything to one value, counting the hashers it builds.
#[derive(Clone, Default)]
struct Colliding(Arc<AtomicUsize>);

struct Zero;

impl Hasher for Zero {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, _: &[u8]) {}
}

impl BuildHasher for Colliding {
    type Hasher = Zero;

    fn build_hasher(&self) -> Zero {
        self.0.fetch_add(1, Ordering::Relaxed);
        Zero
    }
}

#[tokio::test(start_paused = true)]
async fn every_operation_works_with_std_randomstate() {
    let cache: Cache<String, u64, RandomState> = Cache::builder().hasher(RandomState::new()).max_size(100).build();
    cache.insert("a".into(), 1);
    assert_eq!(cache.get("a"), Some(1));
    assert_eq!(cache.get_or_load("b".into(), || async { 2 }).await, 2);
    assert_eq!(cache.get_or_load_by_ref("b", || async { 0 }).await, 2);
    let doubles = cache.batched(|keys: Vec<String>| async move {
        Ok::<_, String>(keys.into_iter().map(|k| (k.clone(), k.len() as u64 * 2)).collect::<HashMap<_, _>>())
    });
    assert_eq!(doubles.get("ccc".into()).await.unwrap(), Some(6));
    cache.warmup([("d".to_string(), || async { 4 })]).await;
    let mut all: Vec<_> = cache.iter().collect();
    all.sort();
    assert_eq!(all, [("a".into(), 1), ("b".into(), 2), ("ccc".into(), 6), ("d".into(), 4)]);
    assert_eq!(cache.remove("a"), Some(1));
    cache.retain(|k, _| k != "b");
    assert_eq!(cache.len(), 2);
    let weak = cache.downgrade();
    assert!(weak.upgrade().is_some());
}

/// Every key hashes alike: lookups, overwrites, eviction and removal still
/// find the right entries, and the custom hasher is the one hashing.
#[tokio::test(start_paused = true)]
async fn a_hasher_that_collides_on_every_key_stays_correct() {
    let hasher = Colliding::default();
    let built = Arc::clone(&hasher.0);
    let cache: Cache<u64, u64, Colliding> =
        Cache::builder().hasher(hasher).max_size(100).default_ttl(Duration::from_secs(60)).build();
    for k in 0..300 {
        cache.insert(k, k * 10);
    }
    assert_eq!(cache.len(), 100);
    assert!((0..200).all(|k| cache.peek(&k).is_none()), "the oldest 200 were evicted");
    assert!((200..300).all(|k| cache.get(&k) == Some(k * 10)));
    for k in 200..250 {
        cache.insert(k, k);
    }
    assert!((200..250).all(|k| cache.get(&k) == Some(k)));
    for k in (200..300).step_by(2) {
        assert!(cache.remove(&k).is_some());
    }
    assert_eq!(cache.len(), 50);
    assert!((201..300).step_by(2).all(|k| cache.contains_key(&k)));
    assert!(built.load(Ordering::Relaxed) >= 300, "the custom hasher hashed the keys");
}
