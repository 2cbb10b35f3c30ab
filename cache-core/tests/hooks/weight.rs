//! The weigher and `max_weight`: the bound on the sum of weights holds
//! (even for a moment, as `weight()` sees it), an entry heavier than it is
//! not stored, loads are weighed with their key, and a panicking weigher
//! strands nobody.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{Cache, Policy, RemovalCause};
use futures_util::future::join_all;

/// Fails the test if `f` takes longer than 10 s of (real or paused) time.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("timed out: something hangs")
}

/// Values weigh their own number.
fn by_value() -> cache_core::CacheBuilder<u64, u64> {
    Cache::builder().weigher(|_: &u64, v: &u64| *v as u32)
}

#[test]
fn the_weight_bound_evicts_the_least_recently_used_and_refuses_the_too_heavy() {
    let told = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&told);
    let cache = by_value()
        .max_weight(100)
        .eviction_listener(move |k: &u64, v: &u64, cause| log.lock().unwrap().push((*k, *v, cause)))
        .build();
    cache.insert(1, 40);
    cache.insert(2, 40);
    assert_eq!(cache.weight(), 80);
    cache.get(&1); // 2 is now the least recently used
    cache.insert(3, 30); // 110 > 100: 2 goes
    assert_eq!((cache.len(), cache.weight()), (2, 70));
    assert!(cache.get(&2).is_none());
    // An overwrite heavier than before pushes others out.
    cache.insert(3, 90); // 40 + 90 > 100: 1 goes
    assert_eq!((cache.len(), cache.weight()), (1, 90));
    // Heavier than the bound: not stored, and it still replaces.
    cache.insert(3, 101);
    assert_eq!((cache.len(), cache.weight()), (0, 0));
    use RemovalCause::*;
    assert_eq!(
        *told.lock().unwrap(),
        [(2, 40, Size), (3, 30, Replaced), (1, 40, Size), (3, 90, Replaced), (3, 101, Size)]
    );
    let m = cache.metrics();
    assert_eq!((m.weight, m.max_weight, m.max_size), (0, Some(100), None), "max_weight replaces the default bound");
}

#[test]
fn without_a_weigher_max_weight_bounds_the_count_and_with_max_size_both_hold() {
    let cache = Cache::<u64, u64>::builder().max_weight(300).build();
    for k in 0..500 {
        cache.insert(k, k);
    }
    assert_eq!((cache.len(), cache.weight()), (300, 300), "300, not the default 128");
    let both = by_value().max_weight(1_000).max_size(3).build();
    for k in 0..5 {
        cache.insert(k, 1);
        both.insert(k, 1);
    }
    assert_eq!((both.len(), both.weight()), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn loads_are_weighed_with_their_key() {
    let cache = Cache::<String, String>::builder()
        .weigher(|k: &String, v: &String| (k.len() + v.len()) as u32)
        .max_weight(10)
        .build();
    assert_eq!(within(cache.get_or_load("ab".to_string(), || async { "cdef".to_string() })).await, "cdef");
    assert_eq!(cache.weight(), 6);
    // Too heavy: handed to the caller, not stored.
    let big = within(cache.get_or_load("x".to_string(), || async { "y".repeat(20) })).await;
    assert_eq!(big.len(), 20);
    assert!(cache.peek("x").is_none());
    let pages = cache.batched(|keys: Vec<String>| async move {
        Ok::<_, String>(keys.into_iter().map(|k| (k.clone(), k)).collect::<HashMap<_, _>>())
    });
    within(pages.get("gh".to_string())).await.unwrap();
    assert_eq!(cache.weight(), 10, "6 + the batched entry's 4");
}

/// A weigher that panics (once) while a leader stores its load: the load
/// is abandoned like a panicking loader's, a waiter takes it over, and
/// nobody hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_weigher_strands_no_waiter() {
    static ARMED: AtomicBool = AtomicBool::new(true);
    let cache = Cache::<u64, u64>::builder()
        .weigher(|_: &u64, _: &u64| {
            if ARMED.swap(false, Ordering::SeqCst) {
                panic!("on purpose: the weigher");
            }
            1
        })
        .max_weight(10)
        .build();
    let callers = (0..5).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load(1, || async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    7
                })
                .await
        })
    });
    let results = within(join_all(callers)).await;
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1, "the panic reaches the caller that ran it");
    assert!(results.iter().filter_map(|r| r.as_ref().ok()).all(|v| *v == 7));
    assert_eq!(cache.get(&1), Some(7));
}

/// Four threads insert random weights; another reads `weight()` all along:
/// it never exceeds the bound, and at the end it is the sum of what is
/// there, under both policies.
#[test]
fn the_weight_bound_holds_under_concurrent_inserts() {
    for policy in [Policy::Lru, Policy::TinyLfu] {
        let cache = by_value().max_weight(5_000).max_size(1_000).policy(policy).build();
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..4u64)
                .map(|t| {
                    let cache = cache.clone();
                    scope.spawn(move || {
                        let mut state = t + 1;
                        for _ in 0..if cfg!(miri) { 200 } else { 50_000 } {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            cache.insert(state % 2_000, state % 300);
                        }
                    })
                })
                .collect();
            let watcher = scope.spawn(|| {
                let mut highest = 0;
                while !done.load(Ordering::Relaxed) {
                    highest = highest.max(cache.weight());
                }
                highest
            });
            for writer in writers {
                writer.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
            assert!(watcher.join().unwrap() <= 5_000, "{policy:?}: the weight bound was exceeded");
        });
        let sum: u64 = cache.iter().map(|(_, v)| v).sum();
        assert_eq!(cache.weight(), sum, "{policy:?}");
        assert!(sum <= 5_000);
    }
}
