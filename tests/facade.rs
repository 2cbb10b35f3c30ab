//! The facade names every type that appears in a public signature, so a
//! user never needs `cache_core` in their own `Cargo.toml`.

#[test]
fn the_weak_handle_is_named_at_the_root() {
    let cache = async_cache::Cache::<u64, u64>::new(10);
    let weak: async_cache::WeakCache<u64, u64> = cache.downgrade();
    assert!(weak.upgrade().is_some());
    drop(cache);
    assert!(weak.upgrade().is_none(), "a weak handle does not keep the cache alive");
}
