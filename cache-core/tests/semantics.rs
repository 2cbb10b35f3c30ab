//! One test per rule of DESIGN.md's "Semantics that must hold" (the core's
//! part), named after the rule. Every test that awaits another task's work
//! runs under a timeout, so a hang fails fast instead of stalling CI.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_core::Cache;
use futures_util::future::join_all;

/// Fails the test if `f` takes longer than 10 s of (real or paused) time.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("timed out: something hangs")
}

/// A loader that counts its runs, waits `ms` and returns `value`.
fn slow(calls: &Arc<AtomicUsize>, ms: u64, value: u64) -> impl Future<Output = u64> + use<> {
    let calls = Arc::clone(calls);
    async move {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        value
    }
}

// ---------------------------------------------------------------- single-flight

#[tokio::test(start_paused = true)]
async fn single_flight_1000_concurrent_misses_run_the_loader_once() {
    let cache = Cache::<u64, u64>::new(100);
    let calls = Arc::new(AtomicUsize::new(0));
    let got = within(join_all((0..1000).map(|_| cache.get_or_load(7, || slow(&calls, 50, 42))))).await;
    assert!(got.iter().all(|v| *v == 42));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let m = cache.metrics();
    assert_eq!((m.misses, m.loads, m.coalesced, m.hits), (1000, 1, 999, 0));
    assert_eq!(cache.get(&7), Some(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_1000_tasks_on_two_workers_run_the_loader_once() {
    let cache = Cache::<u64, u64>::new(100);
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let cache = cache.clone();
            let calls = Arc::clone(&calls);
            tokio::spawn(async move { cache.get_or_load(7, || slow(&calls, 100, 42)).await })
        })
        .collect();
    for task in within(join_all(tasks)).await {
        assert_eq!(task.unwrap(), 42);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let m = cache.metrics();
    assert_eq!(m.loads, 1);
    assert_eq!(m.misses + m.hits, 1000);
    assert_eq!(m.coalesced, m.misses - 1, "every caller that missed but the leader was served by its load");
}

#[tokio::test(start_paused = true)]
async fn single_flight_different_keys_load_independently_and_concurrently() {
    let cache = Cache::<u64, u64>::new(100);
    let calls = Arc::new(AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let got = within(join_all((0..10).map(|k| {
        let calls = &calls;
        cache.get_or_load(k, move || slow(calls, 100, k * 10))
    })))
    .await;
    assert_eq!(got, (0..10).map(|k| k * 10).collect::<Vec<_>>());
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    // Concurrent, not one after the other: ten 100 ms loads take ~100 ms.
    assert!(started.elapsed() < Duration::from_millis(150), "loads ran one after another");
}

#[tokio::test(start_paused = true)]
async fn failed_load_reaches_every_waiter_is_not_cached_and_the_next_call_loads_again() {
    let cache = Cache::<u64, u64>::new(100);
    let calls = Arc::new(AtomicUsize::new(0));
    let fail = || {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err::<u64, String>("db down".into())
        }
    };
    let results = within(join_all((0..20).map(|_| cache.try_get_or_load(1, fail)))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let first = results[0].as_ref().unwrap_err();
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(Arc::ptr_eq(e, first), "every waiter shares the one error");
        assert_eq!(e.as_str(), "db down");
    }
    assert!(!cache.contains_key(&1), "errors are not cached");
    let m = cache.metrics();
    assert_eq!((m.loads, m.load_errors, m.coalesced), (1, 1, 19));

    let ok = within(cache.try_get_or_load(1, || async { Ok::<_, String>(5) })).await;
    assert_eq!(ok.unwrap(), 5);
    assert_eq!(cache.metrics().loads, 2, "the next call loads again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_panic_with_50_waiters_hands_the_load_to_one_waiter() {
    let cache = Cache::<u64, u64>::new(100);
    let runs = Arc::new(AtomicUsize::new(0));
    let leader = {
        let (cache, runs) = (cache.clone(), Arc::clone(&runs));
        tokio::spawn(async move {
            cache
                .get_or_load(1, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    panic!("loader blew up");
                })
                .await
        })
    };
    // Let the leader place its placeholder first.
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let (cache, runs) = (cache.clone(), Arc::clone(&runs));
            tokio::spawn(async move { cache.get_or_load(1, || slow(&runs, 10, 99)).await })
        })
        .collect();
    let panicked = within(leader).await.unwrap_err();
    assert!(panicked.is_panic(), "the panic propagates in the caller that ran the loader");
    for w in within(join_all(waiters)).await {
        assert_eq!(w.unwrap(), 99);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2, "exactly one waiter took the load over");
    assert_eq!(cache.get(&1), Some(99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_leader_hands_the_load_to_a_waiter() {
    let cache = Cache::<u64, u64>::new(100);
    let runs = Arc::new(AtomicUsize::new(0));
    let leader = {
        let (cache, runs) = (cache.clone(), Arc::clone(&runs));
        tokio::spawn(async move { cache.get_or_load(1, || slow(&runs, 60_000, 1)).await })
    };
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let (cache, runs) = (cache.clone(), Arc::clone(&runs));
            tokio::spawn(async move { cache.get_or_load(1, || slow(&runs, 10, 2)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    leader.abort();
    assert!(within(leader).await.unwrap_err().is_cancelled());
    for w in within(join_all(waiters)).await {
        assert_eq!(w.unwrap(), 2);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn leader_timed_out_hands_the_load_to_a_waiter_and_no_placeholder_outlives_its_flight() {
    let cache = Cache::<u64, u64>::new(100);
    let runs = Arc::new(AtomicUsize::new(0));
    let leader = tokio::time::timeout(Duration::from_millis(10), cache.get_or_load(1, || slow(&runs, 1_000, 1)));
    let waiter = cache.get_or_load(1, || slow(&runs, 10, 2));
    let (led, waited) = within(async { tokio::join!(leader, waiter) }).await;
    assert!(led.is_err(), "the leader timed out");
    assert_eq!(waited, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // A leader cancelled with no waiters leaves nothing behind either.
    let cancelled = tokio::time::timeout(Duration::from_millis(10), cache.get_or_load(3, || slow(&runs, 1_000, 3)));
    assert!(within(cancelled).await.is_err());
    assert!(!cache.contains_key(&3));
    assert_eq!(within(cache.get_or_load(3, || async { 33 })).await, 33, "a new load starts at once");
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiters_do_not_disturb_the_flight() {
    let cache = Cache::<u64, u64>::new(100);
    let runs = Arc::new(AtomicUsize::new(0));
    let leader = cache.get_or_load(1, || slow(&runs, 100, 7));
    let quitters = join_all(
        (0..10).map(|_| tokio::time::timeout(Duration::from_millis(5), cache.get_or_load(1, || slow(&runs, 1, 0)))),
    );
    let stayer = cache.get_or_load(1, || slow(&runs, 1, 0));
    let (led, quit, stayed) = within(async { tokio::join!(leader, quitters, stayer) }).await;
    assert_eq!((led, stayed), (7, 7));
    assert!(quit.iter().all(Result::is_err));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn remove_during_a_load_wins_the_value_reaches_waiters_but_is_not_stored() {
    let cache = Cache::<u64, u64>::new(100);
    let runs = Arc::new(AtomicUsize::new(0));
    let load = cache.get_or_load(1, || slow(&runs, 100, 5));
    let waiter = cache.get_or_load(1, || slow(&runs, 100, 6));
    let remover = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(cache.remove(&1), None, "a load in flight has no value to return");
    };
    let (a, b, ()) = within(async { tokio::join!(load, waiter, remover) }).await;
    assert_eq!((a, b), (5, 5));
    assert_eq!(cache.get(&1), None, "invalidated data is never resurrected");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn clear_during_a_load_wins() {
    let cache = Cache::<u64, u64>::new(100);
    let runs = Arc::new(AtomicUsize::new(0));
    let loads = join_all((0..5).map(|k| {
        let runs = &runs;
        cache.get_or_load(k, move || slow(runs, 100, k))
    }));
    let clearer = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cache.clear();
    };
    let (got, ()) = within(async { tokio::join!(loads, clearer) }).await;
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn insert_during_a_load_wins() {
    let cache = Cache::<u64, u64>::new(100);
    let runs = Arc::new(AtomicUsize::new(0));
    let load = cache.get_or_load(1, || slow(&runs, 100, 5));
    let inserter = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cache.insert(1, 10);
    };
    let (loaded, ()) = within(async { tokio::join!(load, inserter) }).await;
    assert_eq!(loaded, 5, "the caller gets what its loader returned");
    assert_eq!(cache.get(&1), Some(10), "the newer insert is kept");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_with_another_error_type_takes_the_load_over() {
    let cache = Cache::<u64, u64>::new(100);
    let leader = cache.try_get_or_load(1, || async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err::<u64, &str>("leader failed")
    });
    let infallible = cache.get_or_load(1, || async { 8 });
    let (led, waited) = within(async { tokio::join!(leader, infallible) }).await;
    assert_eq!(*led.unwrap_err(), "leader failed");
    assert_eq!(waited, 8);
}

// ---------------------------------------------------------------- LRU

#[test]
fn lru_evicts_the_least_recently_used_entry_exactly() {
    let cache = Cache::<u32, u32>::new(3);
    cache.insert(1, 1);
    cache.insert(2, 2);
    cache.insert(3, 3);
    assert_eq!(cache.get(&1), Some(1)); // order now 2, 3, 1
    cache.insert(4, 4); // evicts 2
    assert!(!cache.contains_key(&2));
    assert_eq!(cache.get(&3), Some(3)); // order 1, 4, 3
    cache.insert(1, 11); // re-insert is a use: order 4, 3, 1
    cache.insert(5, 5); // evicts 4
    assert!(!cache.contains_key(&4));
    let mut left: Vec<_> = [1, 2, 3, 4, 5].into_iter().filter(|k| cache.contains_key(k)).collect();
    left.sort();
    assert_eq!(left, [1, 3, 5]);
    assert_eq!(cache.metrics().evictions, 2);
}

/// A model LRU, to compare eviction order on long random sequences.
#[derive(Default)]
struct ModelLru {
    order: Vec<u32>, // least recent first
}

impl ModelLru {
    fn touch(&mut self, k: u32) {
        self.order.retain(|x| *x != k);
        self.order.push(k);
    }
}

#[test]
fn lru_matches_a_model_on_random_sequences_from_one_thread() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for round in 0..20 {
        let max = rng.random_range(1..50);
        let cache = Cache::<u32, u32>::new(max);
        let mut model = ModelLru::default();
        for _ in 0..5_000 {
            let k = rng.random_range(0..(max as u32 * 2));
            match rng.random_range(0..10) {
                0..=4 => {
                    let hit = cache.get(&k).is_some();
                    assert_eq!(hit, model.order.contains(&k), "round {round}: get({k})");
                    if hit {
                        model.touch(k);
                    }
                }
                5..=8 => {
                    cache.insert(k, k);
                    model.touch(k);
                    if model.order.len() > max {
                        model.order.remove(0);
                    }
                }
                _ => {
                    assert_eq!(cache.remove(&k).is_some(), model.order.contains(&k));
                    model.order.retain(|x| *x != k);
                }
            }
            assert_eq!(cache.len(), model.order.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_is_exact_for_one_task_that_moves_between_worker_threads() {
    let cache = Cache::<u32, u32>::new(100);
    let task = {
        let cache = cache.clone();
        tokio::spawn(async move {
            for k in 0..100 {
                cache.insert(k, k);
            }
            // Touch every key in a known order, yielding between reads so the
            // task hops between the two workers.
            for k in (0..100).rev() {
                assert_eq!(cache.get(&k), Some(k));
                tokio::task::yield_now().await;
            }
            // Now 99 is least recently used, then 98, ...
            for (i, k) in (100..150).enumerate() {
                cache.insert(k, k);
                assert!(!cache.contains_key(&(99 - i as u32)), "evicted out of order at {k}");
            }
        })
    };
    within(task).await.unwrap();
}

#[test]
fn a_full_cache_holds_exactly_max_size_entries() {
    for max in [1, 7, 128, 1000, 5000, 70_000] {
        let cache = Cache::<u64, u64>::new(max);
        for i in 0..(max as u64 * 3) {
            cache.insert(i, i);
        }
        assert_eq!(cache.len(), max, "max_size {max}");
        let present = (0..max as u64 * 3).filter(|k| cache.contains_key(k)).count();
        assert_eq!(present, max);
    }
}

#[tokio::test]
async fn max_size_zero_stores_nothing() {
    let cache = Cache::<u64, u64>::new(0);
    cache.insert(1, 1);
    assert_eq!(cache.get(&1), None);
    assert_eq!(within(cache.get_or_load(2, || async { 2 })).await, 2);
    assert!(cache.is_empty());
    assert_eq!(cache.metrics().evictions, 0);
}

#[test]
fn len_never_exceeds_max_size_even_under_concurrent_inserts() {
    let cache = Cache::<u64, u64>::new(64);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let cache = &cache;
            let stop = &stop;
            s.spawn(move || {
                let mut i = t << 40;
                while !stop.load(Ordering::Relaxed) {
                    cache.insert(i, i);
                    i += 1;
                }
            });
        }
        // Watch until the writers have been evicting for a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while cache.lifetime_metrics().evictions < 50_000 {
            assert!(cache.len() <= 64);
            assert!(std::time::Instant::now() < deadline, "writers made no progress");
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(cache.len(), 64);
}

// ---------------------------------------------------------------- TTL

#[tokio::test(start_paused = true)]
async fn ttl_an_expired_entry_is_never_returned() {
    let cache = Cache::<u64, u64>::builder().max_size(100).default_ttl(Duration::from_millis(100)).build();
    cache.insert(1, 1);
    cache.insert_with_ttl(2, 2, Some(Duration::from_millis(300)));
    cache.insert_with_ttl(3, 3, None);
    tokio::time::advance(Duration::from_millis(99)).await;
    assert_eq!(cache.get(&1), Some(1));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(cache.get(&1), None, "expires exactly at its TTL");
    assert_eq!(cache.peek(&1), None);
    assert!(!cache.contains_key(&1));
    assert_eq!(cache.remove(&1), None);
    assert_eq!(cache.get(&2), Some(2));
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(cache.get(&2), None);
    assert_eq!(cache.get(&3), Some(3), "None never expires");
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.metrics().expirations, 2);
}

#[tokio::test(start_paused = true)]
async fn ttl_reinserting_restarts_it_and_a_zero_ttl_stores_nothing_visible() {
    let cache = Cache::<u64, u64>::new(100);
    let ttl = Some(Duration::from_secs(10));
    cache.insert_with_ttl(1, 1, ttl);
    tokio::time::advance(Duration::from_secs(8)).await;
    cache.insert_with_ttl(1, 2, ttl);
    tokio::time::advance(Duration::from_secs(8)).await;
    assert_eq!(cache.get(&1), Some(2));
    cache.insert_with_ttl(1, 3, Some(Duration::ZERO));
    assert_eq!(cache.get(&1), None);
    assert!(cache.is_empty());
    let zero = Cache::<u64, u64>::builder().default_ttl(Duration::ZERO).build();
    zero.insert(1, 1);
    assert_eq!(zero.get(&1), None);
}

#[tokio::test(start_paused = true)]
async fn ttl_expired_entries_are_reclaimed_without_anyone_reading_them() {
    // Values count their live copies: memory is bounded if they get dropped.
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    struct Counted;
    impl Clone for Counted {
        fn clone(&self) -> Self {
            LIVE.fetch_add(1, Ordering::SeqCst);
            Counted
        }
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let new = || {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Counted
    };
    let cache = Cache::<u64, Counted>::builder().unbounded().default_ttl(Duration::from_secs(1)).build();
    let mut key = 0;
    for round in 0..200 {
        for _ in 0..1_000 {
            cache.insert(key, new());
            key += 1;
        }
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(cache.len(), 0, "round {round}");
        // Written once, never read: every value is dropped once its slot's
        // grace period ends, which takes a few more calls (other tests in
        // this process may be pinned for a moment). Waited for, bounded in
        // real time, not assumed to have happened by a given call.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while LIVE.load(Ordering::SeqCst) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {} expired values still alive after 10 s",
                LIVE.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(1));
            assert_eq!(cache.len(), 0);
        }
    }
    assert_eq!(cache.metrics().expirations, 200_000);
}

#[tokio::test(start_paused = true)]
async fn ttl_entries_with_and_without_one_share_slots_without_sharing_deadlines() {
    // Slots are reused: an entry without a TTL that takes the slot of one
    // with a TTL must not inherit its deadline, and the other way round.
    // Writes and loads both, as they store deadlines on different paths.
    let cache = Cache::<u64, u64>::builder().max_size(10_000).build();
    let (short, long) = (Some(Duration::from_secs(1)), Some(Duration::from_secs(10)));
    for round in 0..4u64 {
        let base = round * 10_000;
        for k in base..base + 2_000 {
            // Even keys timed, odd ones not; the next round swaps them.
            let ttl = if (k + round) % 2 == 0 { short } else { None };
            if k % 4 < 2 {
                cache.insert_with_ttl(k, k, ttl);
            } else {
                within(cache.get_or_load_with_ttl(k, ttl, || async move { k })).await;
            }
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        for k in base..base + 2_000 {
            let expected = if (k + round) % 2 == 0 { None } else { Some(k) };
            assert_eq!(cache.get(&k), expected, "round {round}, key {k}");
            cache.remove(&k);
        }
        // Retired slots come back once their grace period ends, after more writes.
        for k in base + 5_000..base + 5_200 {
            cache.insert_with_ttl(k, k, long);
            cache.remove(&k);
        }
    }
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn ttl_too_large_for_the_clock_saturates_to_never() {
    let cache = Cache::<u64, u64>::builder().default_ttl(Duration::MAX).build();
    cache.insert(1, 1);
    cache.insert_with_ttl(2, 2, Some(Duration::from_secs(u64::MAX)));
    tokio::time::advance(Duration::from_secs(10 * 365 * 24 * 3600)).await;
    assert_eq!(cache.get(&1), Some(1));
    assert_eq!(cache.get(&2), Some(2));
}

#[tokio::test(start_paused = true)]
async fn get_or_load_with_ttl_stores_with_that_ttl() {
    let cache = Cache::<u64, u64>::builder().default_ttl(Duration::from_secs(1)).build();
    within(cache.get_or_load_with_ttl(1, Some(Duration::from_secs(100)), || async { 1 })).await;
    within(cache.get_or_load_with_ttl(2, None, || async { 2 })).await;
    within(cache.get_or_load(3, || async { 3 })).await;
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!((cache.get(&1), cache.get(&2), cache.get(&3)), (Some(1), Some(2), None));
}

// ---------------------------------------------------------------- warmup

#[tokio::test]
async fn warmup_never_overwrites_a_present_key() {
    let cache = Cache::<u64, String>::new(1_000);
    cache.insert(5, "present".into());
    within(cache.warmup((0..10u64).map(|k| (k, move || async move { format!("loaded {k}") })))).await;
    assert_eq!(cache.get(&5).unwrap(), "present");
    assert_eq!(cache.get(&6).unwrap(), "loaded 6");
    let m = cache.metrics();
    assert_eq!(m.loads, 9);
    assert_eq!(m.misses, 0, "warmup is not a lookup");
}

#[tokio::test(start_paused = true)]
async fn warmup_runs_loads_concurrently_but_bounded() {
    let cache = Cache::<u64, u64>::builder().unbounded().build();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let entries = (0..100_000u64).map(|k| {
        let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
        (k, move || async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            k
        })
    });
    within(cache.warmup(entries)).await;
    assert_eq!(cache.len(), 100_000);
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak > 1 && peak <= cache_core::WARMUP_CONCURRENCY, "peak concurrency {peak}");
}

#[tokio::test(start_paused = true)]
async fn warmup_joins_a_load_already_in_flight() {
    let cache = Cache::<u64, u64>::new(100);
    let runs = Arc::new(AtomicUsize::new(0));
    let user = cache.get_or_load(1, || slow(&runs, 100, 1));
    let warm = cache.warmup([(1, || slow(&runs, 100, 2))]);
    let (got, ()) = within(async { tokio::join!(user, warm) }).await;
    assert_eq!(got, 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get(&1), Some(1));
}

// ---------------------------------------------------------------- metrics

#[test]
fn metrics_clear_keeps_counters_and_reset_zeroes_them() {
    let cache = Cache::<u64, u64>::new(2);
    assert_eq!(cache.metrics().hit_rate(), 0.0, "nothing asked");
    for i in 0..3 {
        cache.insert(i, i);
    }
    cache.get(&2);
    cache.get(&0);
    cache.clear();
    let m = cache.metrics();
    assert_eq!((m.hits, m.misses, m.evictions, m.size, m.max_size), (1, 1, 1, 0, Some(2)));
    assert_eq!(m.hit_rate(), 0.5);
    cache.reset_metrics();
    let m = cache.metrics();
    assert_eq!((m.hits, m.misses, m.evictions), (0, 0, 0));
    assert_eq!(cache.lifetime_metrics().hits, 1, "exporters still see the lifetime counts");
    cache.get(&9);
    assert_eq!(cache.metrics().misses, 1);
}

#[test]
fn building_needs_no_runtime_and_handles_share_one_cache() {
    let cache = Cache::<String, u32>::builder().max_size(10).default_ttl(Duration::from_secs(1)).build();
    let other = cache.clone();
    other.insert("a".into(), 1);
    assert_eq!(cache.get("a"), Some(1));
    assert!(cache.ptr_eq(&other));
}

#[test]
fn values_are_dropped_once_and_only_once() {
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    #[derive(Debug)]
    struct Tracked(u64);
    impl Tracked {
        fn new(v: u64) -> Self {
            LIVE.fetch_add(1, Ordering::SeqCst);
            Tracked(v)
        }
    }
    impl Clone for Tracked {
        fn clone(&self) -> Self {
            Tracked::new(self.0)
        }
    }
    impl Drop for Tracked {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }
    {
        let cache = Cache::<u64, Tracked>::new(100);
        for i in 0..1_000 {
            cache.insert(i % 150, Tracked::new(i));
            if i % 7 == 0 {
                drop(cache.remove(&(i % 150)));
            }
            drop(cache.get(&(i % 13)));
        }
        cache.clear();
        for i in 0..50 {
            cache.insert(i, Tracked::new(i));
        }
    }
    // Dropping the cache drops what it held and what waited for reclamation.
    assert_eq!(LIVE.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_panicking_clone_leaves_the_cache_consistent() {
    #[derive(Debug)]
    struct Brittle(bool);
    impl Clone for Brittle {
        fn clone(&self) -> Self {
            assert!(!self.0, "clone of a brittle value");
            Brittle(false)
        }
    }
    let cache = Cache::<u64, Brittle>::new(10);
    cache.insert(1, Brittle(true));
    cache.insert(2, Brittle(false));
    let c = cache.clone();
    assert!(std::thread::spawn(move || c.get(&1)).join().is_err());
    assert!(cache.get(&2).is_some());
    cache.insert(3, Brittle(false));
    assert_eq!(cache.len(), 3);
    assert!(cache.remove(&2).is_some());
}

#[test]
fn lru_is_exact_for_a_long_run_of_reads_after_another_thread_drained() {
    let cache = Cache::<u32, u32>::new(1000);
    for k in 0..1000 {
        cache.insert(k, k);
    }
    // Other threads read enough to replay their own reads, then go quiet.
    // Nine of them: stripes (per thread outside tokio) are fewer, so this
    // thread's stripe is also one an earlier reader left mid-lap.
    for _ in 0..9 {
        std::thread::scope(|s| {
            s.spawn(|| {
                for k in 0..1000 {
                    cache.get(&k);
                }
            });
        });
    }
    // This thread alone now reads every key in a known order, with no write
    // in between to replay its reads.
    for k in (0..1000).rev() {
        assert_eq!(cache.get(&k), Some(k));
    }
    // Now 999 is least recently used, then 998, ...
    for (i, k) in (1000..1500).enumerate() {
        cache.insert(k, k);
        assert!(!cache.contains_key(&(999 - i as u32)), "evicted out of order at {k}");
    }
}

/// The `Drop` of an evicted value runs when its slot is reclaimed, by
/// whichever write comes by: a panic there belongs to no caller, so it is
/// caught (the panic hook reports it) and never unwinds into that write.
#[test]
fn a_panicking_drop_leaves_the_cache_consistent_and_drops_the_rest_once() {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    struct Bomb(bool);
    impl Bomb {
        fn new(armed: bool) -> Arc<Bomb> {
            MADE.fetch_add(1, Ordering::SeqCst);
            Arc::new(Bomb(armed))
        }
    }
    impl Drop for Bomb {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
            assert!(!self.0, "drop of an armed bomb");
        }
    }
    {
        let cache = Cache::<u64, Arc<Bomb>>::new(10);
        cache.insert(0, Bomb::new(true));
        // Evicted at once; dropped when its slot is reclaimed, by some later write.
        let mut k = 1;
        while DROPPED.load(Ordering::SeqCst) == 0 {
            assert!(k < 1_000_000, "the evicted value was never dropped");
            cache.insert(k, Bomb::new(false));
            k += 1;
        }
        // Still consistent and usable.
        for k in 2_000_000..2_000_100 {
            cache.insert(k, Bomb::new(false));
        }
        assert_eq!(cache.len(), 10);
        assert!(cache.get(&2_000_099).is_some());
        assert!(cache.remove(&2_000_099).is_some());
        assert_eq!(cache.len(), 9);
    }
    assert_eq!(DROPPED.load(Ordering::SeqCst), MADE.load(Ordering::SeqCst), "every value dropped exactly once");
}
