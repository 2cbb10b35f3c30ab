//! The removal listener: every entry that leaves is told exactly once, with
//! its cause; after the lock is released (it may call back into the cache);
//! a panic in it is caught and counted; expirations are told without any
//! traffic; loads in flight and a dropped cache tell nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cache_core::{Cache, CacheBuilder, Policy, RemovalCause, WeakCache};

/// Fails the test if `f` takes longer than 10 s of (real or paused) time.
pub(crate) async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("timed out: something hangs")
}

pub(crate) type Told = Arc<Mutex<Vec<(u64, u64, RemovalCause)>>>;

/// A builder whose listener records `(key, value, cause)`.
pub(crate) fn recording(builder: CacheBuilder<u64, u64>) -> (CacheBuilder<u64, u64>, Told) {
    let told = Told::default();
    let log = Arc::clone(&told);
    let builder = builder.eviction_listener(move |k: &u64, v: &u64, cause| log.lock().unwrap().push((*k, *v, cause)));
    (builder, told)
}

pub(crate) fn taken(told: &Told) -> Vec<(u64, u64, RemovalCause)> {
    std::mem::take(&mut *told.lock().unwrap())
}

/// DESIGN.md: `RemovalCause` derives `Debug, Clone, Copy, PartialEq, Eq,
/// Hash` (this fails to compile without one).
#[test]
fn removal_cause_has_the_traits_design_names() {
    fn traits<T: std::fmt::Debug + Clone + Copy + PartialEq + Eq + std::hash::Hash>() {}
    traits::<RemovalCause>();
    assert_ne!(RemovalCause::Expired, RemovalCause::Size);
}

#[tokio::test(start_paused = true)]
async fn each_cause_is_told_once_for_the_entry_that_left() {
    use RemovalCause::*;
    let (builder, told) = recording(Cache::builder().max_size(2));
    let cache = builder.build();
    cache.insert(1, 10);
    cache.insert(2, 20);
    cache.insert(1, 11);
    assert_eq!(taken(&told), [(1, 10, Replaced)]);
    cache.insert(3, 30); // 2 is the least recently used
    assert_eq!(taken(&told), [(2, 20, Size)]);
    assert_eq!(cache.remove(&3), Some(30));
    assert!(cache.remove(&3).is_none());
    assert_eq!(taken(&told), [(3, 30, Explicit)]);
    cache.insert_with_ttl(4, 40, Some(Duration::from_secs(1)));
    cache.clear();
    let mut cleared = taken(&told);
    cleared.sort_by_key(|&(k, v, _)| (k, v));
    assert_eq!(cleared, [(1, 11, Explicit), (4, 40, Explicit)]);
    cache.insert_with_ttl(5, 50, Some(Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(taken(&told), [(5, 50, Expired)]);
    // A zero TTL stores nothing: the value is told at once, and the entry
    // it replaced too.
    cache.insert(6, 60);
    cache.insert_with_ttl(6, 61, Some(Duration::ZERO));
    assert_eq!(taken(&told), [(6, 60, Replaced), (6, 61, Expired)]);
    drop(cache);
    assert!(taken(&told).is_empty(), "dropping the cache tells nothing");
}

/// No traffic at all: the maintenance task tells an expiry within a second
/// of its deadline, and never before it.
#[tokio::test(start_paused = true)]
async fn an_expiry_is_told_within_a_second_with_nobody_touching_the_cache() {
    let (builder, told) = recording(Cache::builder());
    let cache = builder.build();
    cache.insert_with_ttl(1, 10, Some(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(9_990)).await;
    assert!(taken(&told).is_empty(), "told before its deadline");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(taken(&told), [(1, 10, RemovalCause::Expired)]);
    // The task holds no strong reference: the cache goes with its handle.
    let runtime = tokio::runtime::Handle::current().metrics();
    assert_eq!(runtime.num_alive_tasks(), 1);
    drop(cache);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runtime.num_alive_tasks(), 0, "the maintenance task outlived its cache");
}

#[tokio::test(start_paused = true)]
async fn values_never_stored_are_told_as_size() {
    let (builder, told) = recording(Cache::builder().max_size(0));
    let nothing = builder.build();
    nothing.insert(1, 10);
    assert_eq!(within(nothing.get_or_load(2, || async { 20 })).await, 20);
    assert_eq!(taken(&told), [(1, 10, RemovalCause::Size), (2, 20, RemovalCause::Size)]);

    // TinyLfu refuses a newcomer less frequent than its victim.
    let (builder, told) = recording(Cache::builder().max_size(10).policy(Policy::TinyLfu));
    let cache = builder.build();
    for round in 0..20 {
        for k in 0..10 {
            if cache.get(&k).is_none() {
                cache.insert(k, round);
            }
        }
    }
    taken(&told);
    cache.insert(1_000, 1);
    let refused = taken(&told);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].2, RemovalCause::Size);
    assert_eq!(cache.len(), 10);
}

/// A load in flight is not an entry: removing it, or its value arriving
/// after a remove, tells nothing.
#[tokio::test(start_paused = true)]
async fn loads_in_flight_are_not_entries() {
    let (builder, told) = recording(Cache::builder());
    let cache = builder.build();
    let load = cache.get_or_load(1, || async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        10
    });
    let remove = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        cache.remove(&1)
    };
    let (value, removed) = within(async { tokio::join!(load, remove) }).await;
    assert_eq!((value, removed), (10, None));
    assert!(cache.get(&1).is_none(), "the remove won");
    assert!(taken(&told).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_listener_may_call_back_into_the_cache() {
    let handle: Arc<OnceLock<WeakCache<u64, u64>>> = Arc::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (inner, log) = (Arc::clone(&handle), Arc::clone(&seen));
    let cache = Cache::builder()
        .max_size(2)
        .eviction_listener(move |key: &u64, value: &u64, _| {
            let cache = inner.get().and_then(WeakCache::upgrade).expect("the cache is alive");
            // Reads, a write and a count from inside the listener.
            log.lock().unwrap().push((cache.get(key), cache.len()));
            if *key < 100 {
                cache.insert(key + 100, *value);
            }
        })
        .build();
    handle.set(cache.downgrade()).ok();
    within(async {
        for k in 0..5 {
            cache.insert(k, k);
        }
        cache.remove(&4);
    })
    .await;
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|(found, len)| found.is_none() && *len <= 2), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_listener_is_caught_and_counted() {
    let cache = Cache::<u64, u64>::builder()
        .max_size(1)
        .eviction_listener(|_: &u64, _: &u64, _| panic!("listener bug"))
        .build();
    cache.insert(1, 1);
    cache.insert(2, 2); // evicts 1: its listener panics, the insert does not
    assert_eq!(cache.remove(&2), Some(2));
    assert_eq!(cache.metrics().listener_panics, 2);
    cache.insert(3, 3);
    assert_eq!(cache.get(&3), Some(3), "the cache works on");
    assert_eq!(within(cache.get_or_load(4, || async { 4 })).await, 4);
}

/// Threads insert, overwrite, read and remove; every value ever stored is
/// told exactly once by the end (the rest by a final `clear`). With a 1 ms
/// `time_to_idle` too, so reads push idle deadlines on while writers
/// expire entries.
#[test]
fn every_value_is_told_exactly_once_under_concurrency() {
    let idle = Some(Duration::from_millis(1));
    let variants = [(Policy::Lru, None), (Policy::TinyLfu, idle), (Policy::TinyLfu, None), (Policy::Lru, idle)];
    // Miri, slow, checks both policies and idle expiry in two.
    for (policy, idle) in variants.into_iter().take(if cfg!(miri) { 2 } else { 4 }) {
        told_exactly_once(policy, idle);
    }
}

fn told_exactly_once(policy: Policy, idle: Option<Duration>) {
    let told: Arc<Mutex<HashMap<u64, Vec<RemovalCause>>>> = Arc::default();
    let log = Arc::clone(&told);
    let mut builder = Cache::<u64, u64>::builder().max_size(64).policy(policy);
    if let Some(idle) = idle {
        builder = builder.time_to_idle(idle);
    }
    let cache = builder
        .eviction_listener(move |_: &u64, v: &u64, cause| log.lock().unwrap().entry(*v).or_default().push(cause))
        .build();
    let threads = 4u64;
    // Small under Miri, whose data-race detector is the point there.
    let per_thread = if cfg!(miri) { 100 } else { 20_000u64 };
    let inserted: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let cache = cache.clone();
                scope.spawn(move || {
                    let mut inserted = Vec::new();
                    let mut state = t + 1;
                    for i in 0..per_thread {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let key = state % 200;
                        // Every value is distinct: thread, then sequence.
                        let value = t * per_thread + i;
                        match state % 10 {
                            0 => {
                                cache.remove(&key);
                            }
                            1 => {
                                cache.get(&key);
                            }
                            _ => {
                                cache.insert(key, value);
                                inserted.push(value);
                            }
                        }
                    }
                    inserted
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    cache.clear();
    let told = told.lock().unwrap();
    for (value, causes) in told.iter() {
        assert_eq!(causes.len(), 1, "{policy:?}: value {value} told {causes:?}");
    }
    assert_eq!(told.len(), inserted.len(), "every value stored leaves once, and is told");
    assert!(inserted.iter().all(|v| told.contains_key(v)));
    let expired = told.values().filter(|causes| causes[0] == RemovalCause::Expired).count();
    assert_eq!(expired > 0, idle.is_some(), "{policy:?}: {expired} idle expiries");
    assert_eq!(cache.metrics().listener_panics, 0);
}
