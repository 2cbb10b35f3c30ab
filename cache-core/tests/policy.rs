//! `Policy::TinyLfu` keeps every rule of DESIGN.md that is not about the
//! eviction order, and its admission does what it is for. (`Policy::Lru`'s
//! exact order is tested in semantics.rs.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_core::{Cache, Policy};
use proptest::prelude::*;

const BOTH: [Policy; 2] = [Policy::Lru, Policy::TinyLfu];

fn cache(policy: Policy, max: usize) -> Cache<u64, u64> {
    Cache::builder().max_size(max).policy(policy).build()
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("timed out: something hangs")
}

/// DESIGN.md: `Policy` derives `Debug, Clone, Copy, PartialEq, Eq, Hash`
/// (fails to compile without one), and `Lru` is the default.
#[test]
fn policy_has_the_traits_design_names_and_lru_is_the_default() {
    fn traits<T: std::fmt::Debug + Clone + Copy + PartialEq + Eq + std::hash::Hash + Default>() {}
    traits::<Policy>();
    assert_eq!(Policy::default(), Policy::Lru);
    assert_ne!(Policy::Lru, Policy::TinyLfu);
}

#[test]
fn a_full_cache_holds_exactly_max_size_entries_under_both_policies() {
    for policy in BOTH {
        for max in [1, 2, 7, 128, 1_000, 70_000] {
            let cache = cache(policy, max);
            for i in 0..(max as u64 * 3) {
                cache.insert(i, i);
                assert!(cache.len() <= max);
            }
            assert_eq!(cache.len(), max, "{policy:?}, max_size {max}");
            let present = (0..max as u64 * 3).filter(|k| cache.contains_key(k)).count();
            assert_eq!(present, max, "{policy:?}, max_size {max}");
            assert_eq!(cache.metrics().evictions, 2 * max as u64);
        }
    }
}

/// A popular set asked for ten times each, then keys asked for once.
fn popular_then_scan(cache: &Cache<u64, u64>, popular: u64, scan: std::ops::Range<u64>) {
    for _ in 0..10 {
        for k in 0..popular {
            if cache.get(&k).is_none() {
                cache.insert(k, k);
            }
        }
    }
    for k in scan {
        if cache.get(&k).is_none() {
            cache.insert(k, k);
        }
    }
}

#[test]
fn tinylfu_a_one_time_scan_does_not_flush_a_popular_set_where_lru_loses_it() {
    let lfu = cache(Policy::TinyLfu, 100);
    let lru = cache(Policy::Lru, 100);
    for cache in [&lfu, &lru] {
        popular_then_scan(cache, 50, 1_000..1_500);
    }
    assert_eq!((0..50).filter(|k| lfu.contains_key(k)).count(), 50, "TinyLfu kept the popular set");
    assert_eq!((0..50).filter(|k| lru.contains_key(k)).count(), 0, "LRU lost it to the scan");
}

#[test]
fn tinylfu_counts_refused_newcomers_as_evictions() {
    let cache = cache(Policy::TinyLfu, 100);
    popular_then_scan(&cache, 50, 1_000..1_500);
    // 550 distinct keys into 100 places: 450 left, whoever they were.
    assert_eq!(cache.len(), 100);
    assert_eq!(cache.metrics().evictions, 450);
    // The popular 50 stayed, so nearly all of those were newcomers refused.
    assert!((0..50).all(|k| cache.contains_key(&k)));
}

#[test]
fn tinylfu_admits_a_key_asked_for_often_enough() {
    let cache = cache(Policy::TinyLfu, 100);
    popular_then_scan(&cache, 100, 0..0);
    let mut admitted_after = None;
    for round in 0..50u64 {
        if cache.get(&7_777).is_some() {
            admitted_after = Some(round);
            break;
        }
        cache.insert(7_777, 1);
        // Other keys, each once, push it out of the window.
        for k in 0..5 {
            let key = 10_000 + round * 5 + k;
            if cache.get(&key).is_none() {
                cache.insert(key, key);
            }
        }
    }
    assert!(admitted_after.is_some(), "asked for 50 times, never admitted");
}

#[tokio::test(start_paused = true)]
async fn tinylfu_keeps_ttls_and_single_flight() {
    let cache: Cache<u64, u64> =
        Cache::builder().max_size(100).policy(Policy::TinyLfu).default_ttl(Duration::from_millis(100)).build();
    cache.insert(1, 1);
    cache.insert_with_ttl(2, 2, Some(Duration::from_secs(10)));
    tokio::time::advance(Duration::from_millis(150)).await;
    assert_eq!(cache.get(&1), None, "expired");
    assert_eq!(cache.get(&2), Some(2));
    assert_eq!(cache.len(), 1);

    let calls = Arc::new(AtomicUsize::new(0));
    let loads = (0..1_000).map(|_| {
        let calls = Arc::clone(&calls);
        cache.get_or_load(9, move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            9
        })
    });
    let values = within(futures_util::future::join_all(loads)).await;
    assert!(values.iter().all(|v| *v == 9));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one load for 1,000 concurrent misses");
}

#[test]
fn tinylfu_unbounded_keeps_everything() {
    let cache: Cache<u64, u64> = Cache::builder().unbounded().policy(Policy::TinyLfu).build();
    for k in 0..20_000 {
        cache.insert(k, k);
        cache.get(&(k / 2));
    }
    assert_eq!(cache.len(), 20_000);
    assert_eq!(cache.metrics().evictions, 0);
}

#[test]
fn tinylfu_clear_then_reuse() {
    let cache = cache(Policy::TinyLfu, 50);
    popular_then_scan(&cache, 30, 100..400);
    cache.clear();
    assert!(cache.is_empty());
    for k in 0..200 {
        cache.insert(k, k);
    }
    assert_eq!(cache.len(), 50);
    assert_eq!(cache.get(&199), Some(199), "the newest entry is in the window");
}

#[derive(Debug, Clone)]
enum Op {
    Get(u64),
    Insert(u64, u64),
    Remove(u64),
    Clear,
}

fn op(keys: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..keys).prop_map(Op::Get),
        4 => (0..keys, any::<u64>()).prop_map(|(k, v)| Op::Insert(k, v)),
        1 => (0..keys).prop_map(Op::Remove),
        1 => Just(Op::Clear),
    ]
}

/// The rules both policies keep, whichever entry they evict: a value read
/// is the last one written for its key; an insert is readable at once;
/// a removed key is gone; `len` is exact (it grows by one per new key up
/// to `max_size`, which it never passes) and every eviction is counted.
fn check_rules(policy: Policy, max: usize, ops: &[Op]) {
    let cache = cache(policy, max);
    // The last value written for each key that may still be present.
    let mut written: HashMap<u64, u64> = HashMap::new();
    for op in ops {
        let len = cache.len();
        let evictions = cache.metrics().evictions;
        match *op {
            Op::Get(k) => {
                if let Some(v) = cache.get(&k) {
                    assert_eq!(written.get(&k), Some(&v), "{policy:?}: get({k}) returned a value never written last");
                }
            }
            Op::Insert(k, v) => {
                let new = !cache.contains_key(&k);
                cache.insert(k, v);
                assert_eq!(cache.peek(&k), Some(v), "{policy:?}: an insert is readable at once");
                let grown = len + usize::from(new);
                assert_eq!(cache.len(), grown.min(max), "{policy:?}: len after insert({k})");
                assert_eq!(cache.metrics().evictions - evictions, (grown - grown.min(max)) as u64);
                written.insert(k, v);
            }
            Op::Remove(k) => {
                let removed = cache.remove(&k);
                if let Some(v) = removed {
                    assert_eq!(written.get(&k), Some(&v));
                }
                assert!(!cache.contains_key(&k));
                assert_eq!(cache.len(), len - usize::from(removed.is_some()));
                written.remove(&k);
            }
            Op::Clear => {
                cache.clear();
                assert!(cache.is_empty());
                written.clear();
            }
        }
        let present: Vec<(u64, u64)> = written.iter().filter_map(|(&k, _)| cache.peek(&k).map(|v| (k, v))).collect();
        for (k, v) in &present {
            assert_eq!(written[k], *v, "{policy:?}: key {k} holds a stale value");
        }
        assert_eq!(present.len(), cache.len(), "{policy:?}: len counts exactly the present keys");
        assert!(cache.len() <= max);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 128 }, ..ProptestConfig::default() })]

    #[test]
    fn both_policies_keep_the_rules_on_random_sequences(
        max in 1usize..40,
        ops in proptest::collection::vec(op(60), 1..400),
    ) {
        for policy in BOTH {
            check_rules(policy, max, &ops);
        }
    }
}

/// A snapshot kept in memory: the thing under test is the order the cache
/// saves in and how it loads, not a storage engine.
#[cfg(feature = "persist")]
#[derive(Default)]
struct Memory(std::sync::Mutex<Vec<cache_core::Record>>);

#[cfg(feature = "persist")]
#[cache_core::async_trait]
impl cache_core::Backend for Memory {
    async fn save(&self, entries: Vec<cache_core::Record>) -> Result<(), cache_core::BackendError> {
        *self.0.lock().unwrap() = entries;
        Ok(())
    }
    async fn load(&self) -> Result<Vec<cache_core::Record>, cache_core::BackendError> {
        Ok(self.0.lock().unwrap().clone())
    }
}

#[cfg(feature = "persist")]
#[tokio::test]
async fn tinylfu_saves_coldest_first_and_a_smaller_cache_keeps_the_hottest() {
    let cache = cache(Policy::TinyLfu, 100);
    for k in 0..100 {
        cache.insert(k, k);
    }
    // Keys 0..20 read again: protected, the hottest.
    for _ in 0..5 {
        for k in 0..20 {
            assert_eq!(cache.get(&k), Some(k));
        }
    }
    cache.insert(100, 100); // a write replays the reads
    let backend = Memory::default();
    within(cache.save_to_backend(&backend)).await.unwrap();
    let saved: Vec<u64> = backend.0.lock().unwrap().iter().map(|r| postcard::from_bytes(&r.key).unwrap()).collect();
    assert_eq!(saved.len(), 100);
    let mut hottest = saved[80..].to_vec();
    hottest.sort_unstable();
    assert_eq!(hottest, (0..20).collect::<Vec<_>>(), "the protected keys are saved last");

    for policy in BOTH {
        let small = self::cache(policy, 20);
        let report = within(small.load_from_backend(&backend)).await.unwrap();
        assert_eq!(report.loaded, 100);
        assert_eq!(small.len(), 20);
        assert!((0..20).all(|k| small.contains_key(&k)), "{policy:?} kept the hottest");
    }
}

/// Under TinyLfu a thread counts its hits without a read-modify-write, in a
/// stripe no other live thread writes; threads past the stripes share one
/// with read-modify-writes. Either way no hit is lost, even with more
/// threads than stripes and threads that exit and hand their number on.
#[test]
fn tinylfu_counts_every_hit_from_many_threads_exactly() {
    let cache = cache(Policy::TinyLfu, 1_000);
    for k in 0..100 {
        cache.insert(k, k);
    }
    let (rounds, threads, gets) = if cfg!(miri) { (2, 3, 20) } else { (3, 24, 5_000) };
    for _ in 0..rounds {
        std::thread::scope(|s| {
            for t in 0..threads {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..gets {
                        assert!(cache.get(&((t + i) % 100)).is_some());
                    }
                });
            }
        });
    }
    let metrics = cache.metrics();
    assert_eq!(metrics.hits, rounds * threads * gets);
    assert_eq!(metrics.misses, 0);
}
