//! `iter` and `retain`: live entries only, no counting or promotion, weakly
//! consistent under concurrent writes, and `retain`'s predicate runs
//! outside the lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cache_core::{Cache, RemovalCause, WeakCache};

#[tokio::test(start_paused = true)]
async fn iter_yields_live_entries_without_counting_or_promoting() {
    let cache = Cache::<u64, u64>::new(3);
    cache.insert(1, 10);
    cache.insert(2, 20);
    cache.insert_with_ttl(3, 30, Some(Duration::from_secs(1)));
    tokio::time::advance(Duration::from_secs(2)).await;
    let mut seen: Vec<_> = cache.iter().collect();
    seen.sort();
    assert_eq!(seen, [(1, 10), (2, 20)], "the expired entry is not yielded");
    let m = cache.metrics();
    assert_eq!((m.hits, m.misses), (0, 0));
    // 1 is still the least recently used: iterating promoted nothing.
    cache.insert(4, 40);
    cache.insert(5, 50);
    assert!(cache.peek(&1).is_none());
    assert_eq!(cache.peek(&2), Some(20));
}

/// Keys present for the whole iteration are each yielded exactly once,
/// while other threads overwrite them and churn other keys (enough to
/// spread over every table shard).
#[test]
fn iter_sees_every_key_present_throughout_once_under_writes() {
    let cache = Cache::<u64, u64>::builder().unbounded().build();
    // Small under Miri, whose data-race detector is the point there.
    let (keys, rounds) = if cfg!(miri) { (100, 2) } else { (2_000, 20) };
    let stable: Vec<u64> = (0..keys).collect();
    for &k in &stable {
        cache.insert(k, k);
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for t in 0..2u64 {
            let (cache, stop) = (cache.clone(), &stop);
            scope.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Overwrite a stable key; churn a key of our own.
                    cache.insert(i % keys, i);
                    let churn = 1_000_000 + t * 1_000_000 + i % 5_000;
                    cache.insert(churn, i);
                    cache.remove(&(churn.wrapping_sub(7)));
                    i += 1;
                }
            });
        }
        for _ in 0..rounds {
            let mut counts: HashMap<u64, usize> = HashMap::new();
            for (k, _) in cache.iter() {
                *counts.entry(k).or_default() += 1;
            }
            assert!(counts.values().all(|&n| n == 1), "a key yielded twice");
            assert!(stable.iter().all(|k| counts.contains_key(k)), "a key present throughout was missed");
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn retain_removes_what_keep_refuses_and_tells_the_listener() {
    let told = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&told);
    let cache = Cache::<u64, u64>::builder()
        .eviction_listener(move |k: &u64, _: &u64, cause| log.lock().unwrap().push((*k, cause)))
        .build();
    for k in 0..10 {
        cache.insert(k, k * 10);
    }
    cache.retain(|k, v| {
        assert_eq!(*v, k * 10);
        k % 2 == 0
    });
    let mut left: Vec<u64> = cache.iter().map(|(k, _)| k).collect();
    left.sort();
    assert_eq!(left, [0, 2, 4, 6, 8]);
    let mut told = told.lock().unwrap().clone();
    told.sort_by_key(|&(k, _)| k);
    assert_eq!(told, [1, 3, 5, 7, 9].map(|k| (k, RemovalCause::Explicit)));
}

/// `keep` runs outside the lock: it may call into the cache, and an entry
/// it overwrites while judging the old value stays (with the new value).
#[test]
fn retain_keeps_an_entry_overwritten_while_it_was_judged() {
    let cache = Cache::<u64, u64>::new(100);
    let handle: OnceLock<WeakCache<u64, u64>> = OnceLock::new();
    handle.set(cache.downgrade()).ok();
    for k in 0..4 {
        cache.insert(k, k);
    }
    cache.retain(|k, _| {
        let cache = handle.get().and_then(WeakCache::upgrade).unwrap();
        assert!(cache.peek(k).is_some(), "calls into the cache from keep");
        if *k == 1 {
            cache.insert(1, 99);
        }
        false
    });
    assert_eq!(cache.iter().collect::<Vec<_>>(), [(1, 99)]);
}
