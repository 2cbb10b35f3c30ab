//! Batching: DESIGN.md's batching rules and issue 3's cases, on paused time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{BatchLoader, Cache, async_trait};
use futures_util::future::join_all;

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("timed out: something hangs")
}

/// A loader that records every batch it is sent, answers `key * 10` for keys
/// below 1,000 (the others have no value), and takes `delay` to do it.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Vec<u64>>>>,
    delay: Duration,
}

impl Recorder {
    fn slow(delay: Duration) -> Self {
        Recorder { delay, ..Self::default() }
    }

    fn calls(&self) -> Vec<Vec<u64>> {
        let mut calls = self.calls.lock().unwrap().clone();
        for call in &mut calls {
            call.sort();
        }
        calls
    }
}

#[async_trait]
impl BatchLoader<u64, u64> for Recorder {
    type Error = String;

    async fn load_batch(&self, keys: Vec<u64>) -> Result<HashMap<u64, u64>, String> {
        self.calls.lock().unwrap().push(keys.clone());
        tokio::time::sleep(self.delay).await;
        Ok(keys.into_iter().filter(|k| *k < 1_000).map(|k| (k, k * 10)).collect())
    }
}

fn cache(max_batch: usize) -> Cache<u64, u64> {
    Cache::builder().max_size(1_000).max_batch_size(max_batch).batch_window(Duration::from_millis(5)).build()
}

#[tokio::test(start_paused = true)]
async fn requests_within_the_window_are_sent_as_one_batch() {
    let cache = cache(100);
    let loader = Recorder::default();
    let users = cache.batched(loader.clone());
    let got = within(join_all((1..=5).map(|k| users.get(k)))).await;
    assert_eq!(
        got.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        (1..=5).map(|k| Some(k * 10)).collect::<Vec<_>>()
    );
    assert_eq!(loader.calls(), vec![vec![1, 2, 3, 4, 5]]);
    let m = cache.metrics();
    assert_eq!((m.batches, m.batched_keys, m.loads, m.misses, m.hits), (1, 5, 1, 5, 0), "one loader run for five keys");
    assert_eq!(cache.get(&3), Some(30), "loaded values are cached");
}

#[tokio::test(start_paused = true)]
async fn requests_in_later_windows_go_in_later_batches() {
    let cache = cache(100);
    let loader = Recorder::default();
    let users = cache.batched(loader.clone());
    let early = join_all((1..=2).map(|k| users.get(k)));
    let late = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        join_all((3..=4).map(|k| users.get(k))).await
    };
    within(async { tokio::join!(early, late) }).await;
    assert_eq!(loader.calls(), vec![vec![1, 2], vec![3, 4]]);
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_cut_at_max_batch_size_in_order() {
    let cache = cache(3);
    let loader = Recorder::default();
    let users = cache.batched(loader.clone());
    let got = within(join_all((1..=7).map(|k| users.get(k)))).await;
    assert!(got.iter().all(|r| r.as_ref().unwrap().is_some()));
    // Batches go out in the order they fill: [1,2,3] and [4,5,6] at once,
    // [7] when its window closes.
    assert_eq!(*loader.calls.lock().unwrap(), vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
    assert_eq!(cache.metrics().batches, 3);
}

#[tokio::test(start_paused = true)]
async fn the_same_key_twice_in_a_window_is_loaded_once() {
    let cache = cache(100);
    let loader = Recorder::default();
    let users = cache.batched(loader.clone());
    let got = within(join_all([1, 2, 1, 1, 2].map(|k| users.get(k)))).await;
    assert!(got.iter().all(|r| r.as_ref().unwrap().is_some()));
    assert_eq!(loader.calls(), vec![vec![1, 2]]);
    assert_eq!(cache.metrics().coalesced, 3, "the repeats were served by the first caller's load");
    let many = within(users.get_many(vec![5, 5, 6])).await.unwrap();
    assert_eq!(many, HashMap::from([(5, 50), (6, 60)]));
    assert_eq!(loader.calls(), vec![vec![1, 2], vec![5, 6]]);
}

#[tokio::test(start_paused = true)]
async fn a_key_in_an_in_flight_batch_joins_it_instead_of_loading_again() {
    let cache = cache(100);
    let loader = Recorder::slow(Duration::from_millis(100));
    let users = cache.batched(loader.clone());
    let first = join_all((1..=3).map(|k| users.get(k)));
    let second = async {
        // The first batch is sent at 5 ms and answers at 105 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
        join_all([2, 3, 4].map(|k| users.get(k))).await
    };
    let (a, b) = within(async { tokio::join!(first, second) }).await;
    assert!(a.iter().chain(&b).all(|r| r.as_ref().unwrap().is_some()));
    assert_eq!(loader.calls(), vec![vec![1, 2, 3], vec![4]]);
    // A single-flight caller joins a batch's flight too.
    let loader2 = Recorder::slow(Duration::from_millis(100));
    let batched = cache.batched(loader2.clone());
    let via_batch = batched.get(500);
    let via_get_or_load = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        cache.get_or_load(500, || async { unreachable!("joined the batch") }).await
    };
    let (x, y) = within(async { tokio::join!(via_batch, via_get_or_load) }).await;
    assert_eq!((x.unwrap(), y), (Some(5000), 5000));
}

#[tokio::test(start_paused = true)]
async fn keys_missing_from_the_answer_give_none_and_are_not_cached() {
    let cache = cache(100);
    let loader = Recorder::default();
    let users = cache.batched(loader.clone());
    let (a, b) = within(async { tokio::join!(users.get(5), users.get(5_000)) }).await;
    assert_eq!((a.unwrap(), b.unwrap()), (Some(50), None));
    assert!(!cache.contains_key(&5_000), "no value is not cached (the Python seed's bug)");
    assert_eq!(within(users.get(5_000)).await.unwrap(), None);
    assert_eq!(loader.calls(), vec![vec![5, 5_000], vec![5_000]], "asked again next time");
}

#[tokio::test(start_paused = true)]
async fn an_error_reaches_every_caller_of_that_batch_and_nothing_is_cached() {
    let cache = cache(100);
    let fail = Arc::new(Mutex::new(true));
    let switch = Arc::clone(&fail);
    let users = cache.batched(move |keys: Vec<u64>| {
        let fail = *switch.lock().unwrap();
        async move {
            if fail {
                Err(format!("backend down for {} keys", keys.len()))
            } else {
                Ok(keys.into_iter().map(|k| (k, k)).collect())
            }
        }
    });
    let got = within(join_all((1..=4).map(|k| users.get(k)))).await;
    let first = got[0].as_ref().unwrap_err();
    assert_eq!(first.as_str(), "backend down for 4 keys");
    assert!(got.iter().all(|r| Arc::ptr_eq(r.as_ref().unwrap_err(), first)), "one shared error");
    assert!(cache.is_empty());
    assert_eq!(cache.metrics().load_errors, 1, "one failed loader run, whatever its size");
    *fail.lock().unwrap() = false;
    assert_eq!(within(users.get(1)).await.unwrap(), Some(1), "the next request loads again");
    assert!(within(users.get_many(vec![7, 8])).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_panic_reaches_every_caller_of_that_batch_and_nobody_hangs() {
    let cache = cache(100);
    let users = cache.batched(|_keys: Vec<u64>| async move {
        if true {
            panic!("loader bug");
        }
        Ok::<HashMap<u64, u64>, String>(HashMap::new())
    });
    let callers: Vec<_> = (1..=3)
        .map(|k| {
            let users = users.clone();
            tokio::spawn(async move { users.get(k).await })
        })
        .collect();
    for caller in within(join_all(callers)).await {
        let panic = caller.unwrap_err().into_panic();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("loader bug"), "{message}");
    }
    assert!(cache.is_empty());
    assert!(within(cache.get_or_load(1, || async { 1 })).await == 1, "no placeholder is left behind");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_caller_does_not_hurt_the_others_in_its_batch() {
    let cache = cache(100);
    let loader = Recorder::slow(Duration::from_millis(50));
    let users = cache.batched(loader.clone());
    let quitter = tokio::time::timeout(Duration::from_millis(1), users.get(1));
    let stayers = join_all([1, 2].map(|k| users.get(k)));
    let (quit, stayed) = within(async { tokio::join!(quitter, stayers) }).await;
    assert!(quit.is_err());
    assert_eq!(stayed.into_iter().map(Result::unwrap).collect::<Vec<_>>(), vec![Some(10), Some(20)]);
    assert_eq!(loader.calls(), vec![vec![1, 2]]);

    // Dropped while the batch is in flight: the batch still completes and
    // is stored.
    let quitter = tokio::time::timeout(Duration::from_millis(20), users.get(3));
    assert!(within(quitter).await.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cache.get(&3), Some(30));
}

#[tokio::test(start_paused = true)]
async fn a_batch_whose_callers_are_all_gone_is_not_sent() {
    let cache = cache(100);
    let loader = Recorder::default();
    let users = cache.batched(loader.clone());
    let quitters = join_all((1..=3).map(|k| tokio::time::timeout(Duration::from_millis(1), users.get(k))));
    assert!(within(quitters).await.iter().all(Result::is_err));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(loader.calls().is_empty(), "{:?}", loader.calls());
    assert!(cache.is_empty());
    // And the keys load normally afterwards.
    assert_eq!(within(users.get(2)).await.unwrap(), Some(20));
}

#[tokio::test(start_paused = true)]
async fn cached_keys_are_served_without_the_loader() {
    let cache = cache(100);
    cache.insert(1, 111);
    let loader = Recorder::default();
    let users = cache.batched(loader.clone());
    let got = within(users.get_many(vec![1, 2])).await.unwrap();
    assert_eq!(got, HashMap::from([(1, 111), (2, 20)]));
    assert_eq!(loader.calls(), vec![vec![2]]);
    let m = cache.metrics();
    assert_eq!((m.hits, m.misses), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn remove_during_a_batch_wins() {
    let cache = cache(100);
    let loader = Recorder::slow(Duration::from_millis(50));
    let users = cache.batched(loader.clone());
    let get = users.get(1);
    let remover = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        cache.remove(&1);
    };
    let (got, ()) = within(async { tokio::join!(get, remover) }).await;
    assert_eq!(got.unwrap(), Some(10), "the caller gets the value");
    assert_eq!(cache.get(&1), None, "but it is not stored");
}

#[tokio::test(start_paused = true)]
async fn a_zero_window_sends_at_the_next_yield() {
    let cache = Cache::<u64, u64>::builder().batch_window(Duration::ZERO).build();
    let loader = Recorder::default();
    let users = cache.batched(loader.clone());
    let started = tokio::time::Instant::now();
    within(join_all((1..=3).map(|k| users.get(k)))).await;
    assert_eq!(loader.calls(), vec![vec![1, 2, 3]]);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn max_batch_size_zero_is_taken_as_one() {
    let cache = cache(0);
    let loader = Recorder::default();
    let users = cache.batched(loader.clone());
    within(join_all((1..=3).map(|k| users.get(k)))).await;
    assert_eq!(loader.calls(), vec![vec![1], vec![2], vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn no_task_is_left_behind() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let cache = cache(100);
    let loader = Recorder::default();
    let users = cache.batched(loader.clone());
    within(users.get_many((1..=10).collect())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(metrics.num_alive_tasks(), 0, "the window timer stops when nothing is pending");
    // A window open when the last handles go: its timer ends without loading.
    let pending = tokio::time::timeout(Duration::from_millis(1), users.get(99));
    assert!(within(pending).await.is_err());
    drop(users);
    drop(cache);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(metrics.num_alive_tasks(), 0);
    assert_eq!(loader.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_batcher_with_a_window_open_leaves_no_placeholder_behind() {
    let cache = cache(100);
    let users = cache.batched(Recorder::default());
    // A caller gives up while its key waits in an open window...
    let quitter = tokio::time::timeout(Duration::from_millis(1), users.get(7));
    assert!(within(quitter).await.is_err());
    // ...and the batcher goes before the window closes.
    drop(users);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The cache lives on: the key must load, not join a flight nobody ends.
    assert_eq!(within(cache.get_or_load(7, || async { 70 })).await, 70);
}
