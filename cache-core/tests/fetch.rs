//! `fetch` and what only it gets: loads that outlive their callers,
//! refresh ahead, stale values when a load fails, soft timeouts; and TTL
//! jitter. On paused time, with gates rather than sleeps where a test
//! needs a load to be under way.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_core::{Cache, CacheBuilder, RemovalCause};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Fails the test if `f` takes longer than 60 s of (paused) time.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("timed out: something hangs")
}

/// A loader gate: loads wait until it opens; counts the runs.
#[derive(Clone)]
struct Gate {
    open: Arc<Semaphore>,
    runs: Arc<AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate { open: Arc::new(Semaphore::new(0)), runs: Arc::default() }
    }
}

impl Gate {
    /// A loader that waits for the gate, then returns `value` (or fails).
    fn loader(
        &self,
        value: Result<u64, &'static str>,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<u64, &'static str>> + Send>> + Send + 'static
    {
        let gate = self.clone();
        move || {
            Box::pin(async move {
                gate.runs.fetch_add(1, Ordering::SeqCst);
                gate.open.acquire().await.expect("never closed").forget();
                value
            })
        }
    }

    fn open(&self) {
        self.open.add_permits(1_000);
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

/// `n` tasks fetching key 1 with loaders that wait at `gate` and then
/// answer `answer`, returned once they are all under way (the gate still
/// closed).
async fn gated_fetches(
    cache: &Cache<u64, u64>,
    gate: &Gate,
    n: usize,
    answer: Result<u64, &'static str>,
) -> Vec<tokio::task::JoinHandle<Result<u64, Arc<&'static str>>>> {
    let callers = (0..n)
        .map(|_| {
            let (cache, gate) = (cache.clone(), gate.clone());
            tokio::spawn(async move { cache.fetch(1, gate.loader(answer)).await })
        })
        .collect();
    settle().await;
    callers
}

fn ok(value: u64) -> impl FnOnce() -> std::future::Ready<Result<u64, &'static str>> + Send + 'static {
    move || std::future::ready(Ok(value))
}

fn failing() -> impl FnOnce() -> std::future::Ready<Result<u64, &'static str>> + Send + 'static {
    || std::future::ready(Err("source down"))
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_caller_does_not_cancel_the_load() {
    let cache: Cache<u64, u64> = Cache::new(10);
    let slow = || async {
        tokio::time::sleep(secs(1)).await;
        Ok::<_, &str>(7)
    };
    assert!(tokio::time::timeout(Duration::from_millis(100), cache.fetch(1, slow)).await.is_err());
    assert_eq!(cache.get(&1), None, "still loading");
    tokio::time::sleep(secs(2)).await;
    assert_eq!(cache.get(&1), Some(7), "the load finished and was stored");
    assert_eq!(cache.metrics().loads, 1);
}

/// A batch loader: 11 for every key.
struct Elevens;

#[cache_core::async_trait]
impl cache_core::BatchLoader<u64, u64> for Elevens {
    type Error = String;

    async fn load_batch(&self, keys: Vec<u64>) -> Result<std::collections::HashMap<u64, u64>, String> {
        Ok(keys.into_iter().map(|key| (key, 11)).collect())
    }
}

#[tokio::test(start_paused = true)]
async fn fetch_is_single_flight_with_every_other_load_of_the_key() {
    let cache: Cache<u64, u64> = Cache::new(10);
    let gate = Gate::default();
    let batched = cache.batched(Elevens);
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..75 {
        let (cache, gate) = (cache.clone(), gate.clone());
        callers.spawn(async move {
            match i % 3 {
                0 => cache.fetch(1, gate.loader(Ok(11))).await.map_err(|e| *e),
                1 => cache.try_get_or_load(1, gate.loader(Ok(11))).await.map_err(|e| *e),
                _ => Ok(cache.get_or_load(1, || async { 11 }).await),
            }
        });
    }
    settle().await;
    let batched_callers: Vec<_> = (0..25)
        .map(|_| {
            let batched = batched.clone();
            tokio::spawn(async move { batched.get(1).await.map(|found| found.expect("a value")) })
        })
        .collect();
    settle().await;
    gate.open();
    while let Some(answer) = within(callers.join_next()).await {
        assert_eq!(answer.unwrap(), Ok(11));
    }
    for caller in batched_callers {
        assert_eq!(within(caller).await.unwrap().ok(), Some(11));
    }
    let m = cache.metrics();
    assert_eq!((m.loads, m.coalesced, m.batches), (1, 99, 0), "one load, every other caller joined it");
}

#[tokio::test(start_paused = true)]
async fn an_error_reaches_every_caller_and_is_not_cached() {
    let cache: Cache<u64, u64> = Cache::new(10);
    let gate = Gate::default();
    let callers = gated_fetches(&cache, &gate, 10, Err("down")).await;
    gate.open();
    for caller in callers {
        assert_eq!(*within(caller).await.unwrap().unwrap_err(), "down");
    }
    assert_eq!(gate.runs(), 1);
    assert_eq!(cache.fetch(1, ok(3)).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_starts_once_however_many_hits_and_nobody_waits() {
    let cache: Cache<u64, u64> = Cache::builder().default_ttl(secs(60)).refresh_after(secs(10)).build();
    assert_eq!(cache.fetch(1, ok(1)).await.unwrap(), 1);
    advance(9).await;
    let gate = Gate::default();
    assert_eq!(cache.fetch(1, gate.loader(Ok(2))).await.unwrap(), 1);
    settle().await;
    assert_eq!(gate.runs(), 0, "refreshed before refresh_after");
    advance(2).await;
    let started = Instant::now();
    for _ in 0..1_000 {
        assert_eq!(cache.fetch(1, gate.loader(Ok(2))).await.unwrap(), 1, "a hit returns the old value at once");
    }
    assert_eq!(started.elapsed(), Duration::ZERO, "somebody waited");
    settle().await;
    assert_eq!(gate.runs(), 1, "one refresh for 1,000 hits");
    gate.open();
    settle().await;
    assert_eq!(cache.get(&1), Some(2), "the refresh replaced the value");
    // ...and restarted its TTL: 60 s from the refresh (at 11 s), not from 0.
    advance(55).await;
    assert_eq!(cache.peek(&1), Some(2));
    let m = cache.metrics();
    assert_eq!((m.refreshes, m.loads), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_value_and_is_tried_again_later() {
    let cache: Cache<u64, u64> = Cache::builder().default_ttl(secs(60)).refresh_after(secs(10)).build();
    cache.fetch(1, ok(1)).await.unwrap();
    advance(11).await;
    assert_eq!(cache.fetch(1, failing()).await.unwrap(), 1);
    settle().await;
    assert_eq!(cache.get(&1), Some(1), "kept its value");
    assert_eq!(cache.metrics().load_errors, 1);
    // Not again at once: `refresh_after` from the failure.
    let gate = Gate::default();
    cache.fetch(1, gate.loader(Ok(3))).await.unwrap();
    advance(9).await;
    cache.fetch(1, gate.loader(Ok(3))).await.unwrap();
    settle().await;
    assert_eq!(gate.runs(), 0);
    advance(2).await;
    gate.open();
    cache.fetch(1, gate.loader(Ok(3))).await.unwrap();
    settle().await;
    assert_eq!((gate.runs(), cache.get(&1)), (1, Some(3)));
    assert_eq!(cache.metrics().refreshes, 2);
}

#[tokio::test(start_paused = true)]
async fn a_write_or_removal_during_a_refresh_wins() {
    let cache: Cache<u64, u64> = Cache::builder().refresh_after(secs(1)).build();
    cache.insert(1, 1);
    cache.insert(2, 1);
    advance(2).await;
    let gate = Gate::default();
    cache.fetch(1, gate.loader(Ok(9))).await.unwrap();
    cache.fetch(2, gate.loader(Ok(9))).await.unwrap();
    settle().await;
    assert_eq!(gate.runs(), 2);
    cache.insert(1, 5);
    cache.remove(&2);
    gate.open();
    settle().await;
    assert_eq!((cache.get(&1), cache.get(&2)), (Some(5), None));
}

fn stale_cache() -> CacheBuilder<u64, u64> {
    Cache::builder().default_ttl(secs(10)).stale_for(secs(20))
}

async fn advance(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn a_stale_value_is_served_when_the_reload_fails_and_only_inside_its_window() {
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&told);
    let cache = stale_cache().eviction_listener(move |k, v, cause| log.lock().unwrap().push((*k, *v, cause))).build();
    cache.fetch(1, ok(1)).await.unwrap();
    advance(15).await;
    // Expired: invisible to everything but a fetch.
    assert_eq!((cache.get(&1), cache.peek(&1), cache.contains_key(&1)), (None, None, false));
    assert_eq!((cache.len(), cache.iter().count()), (0, 0));
    // Every caller of a failed reload gets the stale value.
    let gate = Gate::default();
    let callers = gated_fetches(&cache, &gate, 5, Err("down")).await;
    gate.open();
    for caller in callers {
        assert_eq!(within(caller).await.unwrap().unwrap(), 1);
    }
    assert_eq!((gate.runs(), cache.metrics().stale_served), (1, 5));
    // Kept for the rest of its window, still invisible.
    assert_eq!(cache.get(&1), None);
    advance(10).await; // 25 s: inside the window (10 + 20)
    assert_eq!(cache.fetch(1, failing()).await.unwrap(), 1);
    // 29.9 s: its timer has moved down the wheel by now, and still waits.
    tokio::time::advance(Duration::from_millis(4_900)).await;
    assert_eq!(cache.fetch(1, failing()).await.unwrap(), 1);
    assert!(told.lock().unwrap().is_empty(), "told before its window ended");
    advance(2).await; // 31.9 s: past it
    assert_eq!(*cache.fetch(1, failing()).await.unwrap_err(), "source down");
    assert_eq!(*told.lock().unwrap(), [(1, 1, RemovalCause::Expired)]);
    assert_eq!(cache.metrics().stale_served, 7);
}

#[tokio::test(start_paused = true)]
async fn a_successful_reload_replaces_the_stale_value_and_it_is_told_once() {
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&told);
    let cache = stale_cache().eviction_listener(move |k, v, cause| log.lock().unwrap().push((*k, *v, cause))).build();
    cache.fetch(1, ok(1)).await.unwrap();
    advance(15).await;
    assert_eq!(cache.fetch(1, failing()).await.unwrap(), 1);
    assert_eq!(cache.fetch(1, ok(2)).await.unwrap(), 2);
    assert_eq!(cache.get(&1), Some(2));
    assert_eq!(*told.lock().unwrap(), [(1, 1, RemovalCause::Expired)]);
    assert_eq!(cache.metrics().expirations, 1);
}

/// A load's flight is kept for the next miss when nobody else held it: it
/// must keep nothing of the stale entry its load replaced, or the next
/// reload could not hold its own.
#[tokio::test(start_paused = true)]
async fn a_reload_after_another_still_serves_its_own_stale_value() {
    let cache = stale_cache().build();
    for key in 1..=2 {
        cache.fetch(key, ok(key)).await.unwrap();
    }
    advance(15).await;
    assert_eq!(cache.get_or_load(1, || async { 10 }).await, 10);
    assert_eq!(cache.fetch(2, failing()).await.unwrap(), 2, "the stale value of key 2");
    assert_eq!(cache.metrics().stale_served, 1);
}

#[tokio::test(start_paused = true)]
async fn insert_remove_and_clear_drop_stale_values() {
    let cache = stale_cache().build();
    for key in 1..=3 {
        cache.fetch(key, ok(key)).await.unwrap();
    }
    advance(15).await;
    cache.insert(1, 10);
    cache.remove(&2);
    assert_eq!(cache.fetch(1, failing()).await.unwrap(), 10);
    assert!(cache.fetch(2, failing()).await.is_err(), "a removed key's stale value was served");
    cache.clear();
    assert!(cache.fetch(3, failing()).await.is_err(), "a cleared key's stale value was served");
    assert_eq!(cache.metrics().stale_served, 0);
}

#[tokio::test(start_paused = true)]
async fn a_soft_timeout_serves_the_stale_value_and_the_load_goes_on() {
    let cache: Cache<u64, u64> = stale_cache().load_timeout(Duration::from_millis(200)).build();
    cache.fetch(1, ok(1)).await.unwrap();
    // No stale value: callers wait for the load however long it takes.
    let slow = |value| {
        move || async move {
            tokio::time::sleep(secs(5)).await;
            Ok::<_, &str>(value)
        }
    };
    let started = Instant::now();
    assert_eq!(cache.fetch(2, slow(2)).await.unwrap(), 2);
    assert_eq!(started.elapsed(), secs(5));
    advance(15).await;
    let started = Instant::now();
    assert_eq!(cache.fetch(1, slow(3)).await.unwrap(), 1, "the stale value, after the soft timeout");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_millis(250), "waited {waited:?}");
    assert_eq!(cache.metrics().stale_served, 1);
    tokio::time::sleep(secs(5)).await;
    assert_eq!(cache.get(&1), Some(3), "the load finished in the background and was stored");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_loader_reaches_its_caller_and_leaves_nothing_pending() {
    let cache: Cache<u64, u64> = Cache::new(10);
    let gate = Gate::default();
    let leader = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move {
            cache
                .fetch(1, move || async move {
                    gate.open.acquire().await.expect("never closed").forget();
                    if cache_bug() {
                        panic!("loader bug");
                    }
                    Ok::<u64, &str>(0)
                })
                .await
        })
    };
    settle().await;
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.fetch(1, ok(4)).await.map_err(|e| *e) })
        })
        .collect();
    settle().await;
    gate.open();
    let panicked = within(leader).await.unwrap_err();
    assert!(panicked.is_panic(), "the panic reaches the caller that started the load");
    for waiter in waiters {
        assert_eq!(within(waiter).await.unwrap().unwrap(), 4, "a waiter takes the load over");
    }
    assert_eq!(cache.get(&1), Some(4));

    // With a stale value, a panicking reload serves it.
    let cache = stale_cache().build();
    cache.fetch(1, ok(1)).await.unwrap();
    advance(15).await;
    let served = within(cache.fetch(1, || async {
        if cache_bug() {
            panic!("loader bug");
        }
        Ok::<u64, &str>(0)
    }))
    .await;
    assert_eq!(served.unwrap(), 1);
    assert_eq!(within(cache.fetch(1, ok(2))).await.unwrap(), 2, "nothing left pending");
}

#[tokio::test(start_paused = true)]
async fn ttl_jitter_spreads_expiries_within_its_bounds() {
    let cache: Cache<u64, u64> = Cache::builder().max_size(2_000).default_ttl(secs(100)).ttl_jitter(0.2).build();
    for key in 0..2_000 {
        cache.insert(key, key);
    }
    tokio::time::advance(Duration::from_millis(79_900)).await;
    assert_eq!(cache.len(), 2_000, "one expired more than 20% early");
    tokio::time::advance(Duration::from_millis(20_100)).await; // 100 s
    let left = cache.len();
    assert!((800..=1_200).contains(&left), "{left} of 2,000 left at the TTL: not spread evenly");
    tokio::time::advance(Duration::from_millis(20_100)).await; // 120.1 s
    assert_eq!(cache.len(), 0, "one expired more than 20% late");

    // No jitter: all at once.
    let exact: Cache<u64, u64> = Cache::builder().default_ttl(secs(100)).build();
    for key in 0..100 {
        exact.insert(key, key);
    }
    tokio::time::advance(Duration::from_millis(99_999)).await;
    assert_eq!(exact.len(), 100);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(exact.len(), 0);
}

/// Always true: a loader that panics, with a type the compiler can infer.
fn cache_bug() -> bool {
    std::hint::black_box(true)
}

/// Tasks on two threads fetch (half the loads fail), insert, remove and
/// read keys whose entries expire within a millisecond and stay stale for
/// two: every value stored is told to the listener exactly once by the end
/// (the rest by a final `clear`), nothing hangs, and `len` never counts a
/// stale entry past the bound.
#[test]
fn stale_entries_under_concurrency_are_told_exactly_once() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let told: Arc<std::sync::Mutex<std::collections::HashMap<u64, Vec<RemovalCause>>>> = Arc::default();
    let log = Arc::clone(&told);
    let cache: Cache<u64, u64> = runtime.block_on(async {
        Cache::builder()
            .max_size(32)
            .default_ttl(Duration::from_millis(1))
            .stale_for(Duration::from_millis(2))
            .load_timeout(Duration::from_micros(200))
            .eviction_listener(move |_: &u64, v: &u64, cause| log.lock().unwrap().entry(*v).or_default().push(cause))
            .build()
    });
    // Values inserted, and values loaded (a load that a removal beats is
    // never an entry).
    let inserted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stored = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Whether a reload outlasts `load_timeout` while a stale value is
    // there is up to the scheduler: rounds until one did (most first
    // rounds serve a few), so the stale path is always part of the test.
    for round in 0..5u64 {
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for t in 0..4u64 {
                let (cache, stored, inserted) = (cache.clone(), Arc::clone(&stored), Arc::clone(&inserted));
                tasks.spawn(async move {
                    let mut state = round * 4 + t + 1;
                    for i in 0..5_000u64 {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let key = state % 64;
                        // Distinct values: round, thread, then sequence.
                        let value = round * 10_000_000 + t * 1_000_000 + i;
                        match state % 8 {
                            0 => {
                                cache.remove(&key);
                            }
                            1 => {
                                cache.insert(key, value);
                                inserted.lock().unwrap().push(value);
                            }
                            2 => {
                                cache.get(&key);
                            }
                            n => {
                                let fails = n % 2 == 0;
                                let stored = Arc::clone(&stored);
                                let _ = cache
                                    .fetch(key, move || async move {
                                        tokio::task::yield_now().await;
                                        if fails {
                                            return Err("down");
                                        }
                                        stored.lock().unwrap().push(value);
                                        Ok(value)
                                    })
                                    .await;
                            }
                        }
                        assert!(cache.len() <= 32);
                    }
                });
            }
            while let Some(done) = within(tasks.join_next()).await {
                done.unwrap();
            }
            // Loads still running in their own tasks finish first.
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        if cache.metrics().stale_served > 0 {
            break;
        }
    }
    cache.clear();
    let told = told.lock().unwrap();
    let (inserted, loaded) = (inserted.lock().unwrap(), stored.lock().unwrap());
    for (value, causes) in told.iter() {
        assert_eq!(causes.len(), 1, "value {value} told {causes:?}");
    }
    assert!(told.keys().all(|v| inserted.contains(v) || loaded.contains(v)), "told a value never stored");
    assert!(inserted.iter().all(|v| told.contains_key(v)), "an inserted value left untold (or never left)");
    assert!(cache.metrics().stale_served > 0, "the stale path never ran");
    assert_eq!(cache.metrics().listener_panics, 0);
}
