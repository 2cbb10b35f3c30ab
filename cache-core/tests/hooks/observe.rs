//! Load observers and the counters' identities: every loader run is
//! reported once, however it ends; observers add up and leave one by one;
//! and the counts users reconcile (hits + misses = lookups, misses = loads
//! + coalesced, batch counts) hold, cancelled and panicked loads included.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{Cache, LoadEvent, LoadOutcome};
use futures_util::FutureExt;
use futures_util::future::join_all;

/// Fails the test if `f` takes longer than 10 s of (real or paused) time.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("timed out: something hangs")
}

/// An observer that keeps every event.
fn recorder<K, V>(cache: &Cache<K, V>) -> Arc<Mutex<Vec<LoadEvent>>>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&events);
    cache.observe_loads(move |event| log.lock().unwrap().push(*event));
    events
}

fn outcomes(events: &Mutex<Vec<LoadEvent>>) -> Vec<LoadOutcome> {
    events.lock().unwrap().iter().map(|e| e.outcome).collect()
}

#[tokio::test(start_paused = true)]
async fn every_loader_run_is_reported_once_with_how_it_ended() {
    let cache = Cache::<u64, u64>::new(100);
    let events = recorder(&cache);

    cache
        .get_or_load(1, || async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            1
        })
        .await;
    assert!(cache.try_get_or_load(2, || async { Err::<u64, _>("down") }).await.is_err());
    let panicked =
        std::panic::AssertUnwindSafe(cache.get_or_load(3, || async { panic!("loader bug") })).catch_unwind().await;
    assert!(panicked.is_err());
    // A caller dropped mid-load (a timeout), its loader with it.
    let cancelled =
        tokio::time::timeout(Duration::from_millis(10), cache.get_or_load(4, std::future::pending::<u64>)).await;
    assert!(cancelled.is_err());

    let seen = events.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|e| e.outcome).collect::<Vec<_>>(),
        [LoadOutcome::Loaded, LoadOutcome::Failed, LoadOutcome::Panicked, LoadOutcome::Cancelled]
    );
    assert_eq!(seen[0].took, Duration::from_millis(30));
    assert_eq!(seen[3].took, Duration::from_millis(10), "a cancelled run reports how long it ran");
    assert!(seen.iter().all(|e| e.keys == 1 && !e.batched));
    assert_eq!(cache.metrics().loads, 4, "one event per counted load");
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_one_run_of_its_size() {
    let cache = Cache::<u64, u64>::builder().max_batch_size(3).build();
    let events = recorder(&cache);
    let calls = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&calls);
    let doubles = cache.batched(move |keys: Vec<u64>| {
        *counted.lock().unwrap() += 1;
        async move { Ok::<_, String>(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>()) }
    });
    within(join_all((0..7).map(|k| doubles.get(k)))).await;
    let seen = events.lock().unwrap().clone();
    assert_eq!(seen.iter().map(|e| (e.keys, e.batched)).collect::<Vec<_>>(), [(3, true), (3, true), (1, true)]);
    assert!(seen.iter().all(|e| e.outcome == LoadOutcome::Loaded));
    let m = cache.metrics();
    assert_eq!((m.loads, m.batches, m.batched_keys), (3, 3, 7));
    assert_eq!(*calls.lock().unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn observers_add_up_and_leave_one_by_one_and_a_panicking_one_fails_nothing() {
    let cache = Cache::<u64, u64>::new(100);
    let first = recorder(&cache);
    let panicky = cache.observe_loads(|_| panic!("observer bug"));
    let second = recorder(&cache);
    assert_eq!(within(cache.get_or_load(1, || async { 1 })).await, 1, "the load is unharmed");
    assert!(cache.unobserve_loads(panicky));
    assert!(!cache.unobserve_loads(panicky), "already gone");
    within(cache.get_or_load(2, || async { 2 })).await;
    assert_eq!(outcomes(&first), [LoadOutcome::Loaded; 2]);
    assert_eq!(outcomes(&second), [LoadOutcome::Loaded; 2]);
    assert_eq!(cache.get(&1), Some(1));
}

/// Hits + misses = lookups; the misses of loading calls = loads + coalesced
/// (a plain `get` loads nothing), whatever happens to
/// the flights: here leaders are cancelled, loaders panic and fail, and
/// waiters take the loads over.
#[tokio::test(start_paused = true)]
async fn misses_are_loads_plus_coalesced_through_cancellation_panics_and_errors() {
    let cache = Cache::<u64, u64>::new(1_000);
    let events = recorder(&cache);
    let (mut lookups, mut plain_misses) = (0u64, 0u64);
    for key in 0..20u64 {
        // Ten callers per key; the first leads and, for some keys, is
        // cancelled, panics or fails.
        let leader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                let _ = std::panic::AssertUnwindSafe(cache.try_get_or_load(key, move || async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    match key % 4 {
                        0 => panic!("loader bug"),
                        1 => Err("down"),
                        _ => Ok(key),
                    }
                }))
                .catch_unwind()
                .await;
            })
        };
        tokio::task::yield_now().await;
        let waiters = join_all((0..9).map(|_| {
            cache.try_get_or_load(key, move || async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, &str>(key)
            })
        }));
        if key % 4 == 3 {
            // Cancel the leader while it loads.
            tokio::time::sleep(Duration::from_millis(5)).await;
            leader.abort();
        }
        within(waiters).await;
        let _ = leader.await;
        lookups += 10;
        // A plain lookup per key, after: a miss (for the failed keys) that
        // loads nothing.
        if cache.get(&key).is_none() {
            plain_misses += 1;
        }
        lookups += 1;
    }
    let m = cache.metrics();
    assert_eq!(m.hits + m.misses, lookups);
    assert_eq!(plain_misses, 5, "the failed keys hold nothing");
    assert_eq!(m.misses - plain_misses, m.loads + m.coalesced, "{m:?}");
    assert_eq!(events.lock().unwrap().len() as u64, m.loads, "one duration per load");
    for outcome in [LoadOutcome::Loaded, LoadOutcome::Failed, LoadOutcome::Panicked, LoadOutcome::Cancelled] {
        assert!(outcomes(&events).contains(&outcome), "no {outcome:?} in the mix");
    }
}

/// For a batched cache: misses = batched keys + coalesced; one load per
/// batch; hits + misses = lookups.
#[tokio::test(start_paused = true)]
async fn batched_misses_are_batched_keys_plus_coalesced() {
    let cache = Cache::<u64, u64>::builder().max_batch_size(10).build();
    let doubles = cache.batched(|keys: Vec<u64>| async move {
        Ok::<_, String>(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>())
    });
    // 25 distinct keys, each asked 3 times in one window, then each once more.
    let asked: Vec<u64> = (0..25).flat_map(|k| [k, k, k]).collect();
    within(join_all(asked.iter().map(|&k| doubles.get(k)))).await;
    within(join_all((0..25).map(|k| doubles.get(k)))).await;
    let m = cache.metrics();
    assert_eq!(m.hits + m.misses, 100);
    assert_eq!((m.hits, m.misses), (25, 75));
    assert_eq!(m.misses, m.batched_keys + m.coalesced, "{m:?}");
    assert_eq!((m.batches, m.batched_keys, m.loads), (3, 25, 3));
}
