//! User code (`Drop`, `Clone`, `Hash` of keys and values, loaders) never
//! runs under the cache's lock, and a panic in any of it leaves no pending
//! entry, no waiting caller and no poisoned cache behind (DESIGN.md,
//! "Semantics that must hold"). Each test would hang or deadlock on a
//! broken engine, so each runs under a timeout.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cache_core::{Cache, WeakCache};

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("timed out: a caller was left waiting")
}

/// Runs `f` on its own thread; fails if it does not finish in 10 s (a
/// deadlock cannot be interrupted, so the thread is left behind).
fn finishes(f: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        done.send(()).unwrap();
    });
    finished.recv_timeout(Duration::from_secs(10)).expect("deadlocked: user code ran under the cache's lock");
}

/// Keeps the deliberate panics of these tests out of the output.
fn quiet() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload().downcast_ref::<&str>().copied().unwrap_or_default();
        if !message.starts_with("on purpose") {
            default(info);
        }
    }));
}

/// A value whose `Drop` panics once, when armed.
#[derive(Clone, Debug, PartialEq)]
struct Brittle(u64);

static BRITTLE_ARMED: AtomicBool = AtomicBool::new(false);

impl Drop for Brittle {
    fn drop(&mut self) {
        if BRITTLE_ARMED.swap(false, Ordering::SeqCst) {
            panic!("on purpose: Brittle::drop");
        }
    }
}

/// The leader's copy of a value that is not stored (zero TTL) is dropped by
/// the engine after the lock; its `Drop` panicking must not skip waking the
/// flight's waiters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_drop_of_a_loaded_value_strands_no_waiter() {
    quiet();
    let cache = Cache::<u64, Brittle>::new(100);
    let gate = Arc::new(tokio::sync::Notify::new());
    let leader = {
        let (cache, gate) = (cache.clone(), Arc::clone(&gate));
        tokio::spawn(async move {
            cache
                .get_or_load_with_ttl(1, Some(Duration::ZERO), || async move {
                    gate.notified().await;
                    BRITTLE_ARMED.store(true, Ordering::SeqCst);
                    Brittle(1)
                })
                .await
        })
    };
    // The leader's placeholder is in once a second caller can join it.
    while cache.metrics().loads == 0 {
        tokio::task::yield_now().await;
    }
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_or_load(1, || async { Brittle(2) }).await })
    };
    while cache.metrics().misses < 2 {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    let led = within(leader).await;
    let waited = within(waiter).await;
    assert_eq!(led.unwrap(), Brittle(1));
    // The waiter got the leader's value, or (had it come late) loaded its own.
    assert!(matches!(waited.unwrap(), Brittle(1 | 2)));
    assert!(!BRITTLE_ARMED.load(Ordering::SeqCst), "the armed copy was never dropped");
    // No placeholder outlived its flight: a new load runs at once.
    assert_eq!(within(cache.get_or_load(1, || async { Brittle(3) })).await, Brittle(3));
}

/// A value that calls back into its own cache when dropped.
#[derive(Clone)]
struct CallsBack(WeakCache<u64, CallsBack>, Arc<AtomicUsize>);

impl Drop for CallsBack {
    fn drop(&mut self) {
        if let Some(cache) = self.0.upgrade() {
            // Takes the lock: deadlocks if the engine holds it here.
            let _ = cache.len();
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn a_drop_that_calls_back_into_the_cache_does_not_deadlock() {
    for (what, cache) in [
        ("max_size(0)", Cache::<u64, CallsBack>::new(0)),
        ("a zero TTL", Cache::<u64, CallsBack>::builder().max_size(10).default_ttl(Duration::ZERO).build()),
        ("an eviction", Cache::<u64, CallsBack>::new(1)),
    ] {
        let drops = Arc::new(AtomicUsize::new(0));
        let weak = cache.downgrade();
        let counted = Arc::clone(&drops);
        // Miri interprets every step: fewer writes, as many kinds.
        let writes = if cfg!(miri) { 100 } else { 1_000 };
        finishes(move || {
            for k in 0..writes {
                cache.insert(k, CallsBack(weak.clone(), Arc::clone(&counted)));
            }
            cache.insert_with_ttl(writes, CallsBack(weak.clone(), Arc::clone(&counted)), Some(Duration::ZERO));
            cache.remove(&(writes - 1));
            cache.clear();
            // Enough writes for reclaimed slots to be taken back.
            for k in 0..writes {
                cache.insert(k, CallsBack(weak.clone(), Arc::clone(&counted)));
            }
        });
        assert!(drops.load(Ordering::SeqCst) > 0, "{what}: no value was dropped while the cache lived");
    }
}

/// A key whose `Hash` panics once, when armed.
#[derive(Clone, PartialEq, Eq, Debug)]
struct TouchyKey(u64);

static TOUCHY_ARMED: AtomicBool = AtomicBool::new(false);

impl Hash for TouchyKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if TOUCHY_ARMED.swap(false, Ordering::SeqCst) {
            panic!("on purpose: TouchyKey::hash");
        }
        self.0.hash(state);
    }
}

/// One batch of five keys whose first run trips a one-shot tripwire (`arm`
/// is called with `true` once the loader has built its answers, so only the
/// engine's own use of the keys and values can trip it): the panic abandons
/// the batch's placeholders, and every caller gets its value from the retry.
async fn one_panicking_batch_is_retried<K, V>(keys: Vec<K>, value_of: fn(&K) -> V, arm: fn(bool))
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static,
{
    quiet();
    let cache = Cache::<K, V>::new(100);
    let batches = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&batches);
    let batched = cache.batched(move |keys: Vec<K>| {
        let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            let answers: HashMap<K, V> = keys.iter().map(|k| (k.clone(), value_of(k))).collect();
            arm(first);
            Ok::<_, String>(answers)
        }
    });
    let got = within(futures_util::future::join_all(keys.iter().map(|k| batched.get(k.clone())))).await;
    for (key, got) in keys.iter().zip(got) {
        assert_eq!(got.unwrap(), Some(value_of(key)));
    }
    assert!(batches.load(Ordering::SeqCst) >= 2, "the panicking batch was not retried");
}

/// The batch task looks the loader's answers up by key (user `Hash`): a
/// panic there must abandon the batch's placeholders, not strand them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hash_in_a_batch_strands_no_caller() {
    one_panicking_batch_is_retried(
        (0..5).map(TouchyKey).collect(),
        |k| k.0 * 10,
        |first| TOUCHY_ARMED.store(first, Ordering::SeqCst),
    )
    .await;
}

/// A value whose `Clone` panics once, when armed.
#[derive(Debug, PartialEq)]
struct Fragile(u64);

static FRAGILE_ARMED: AtomicBool = AtomicBool::new(false);

impl Clone for Fragile {
    fn clone(&self) -> Self {
        if FRAGILE_ARMED.swap(false, Ordering::SeqCst) {
            panic!("on purpose: Fragile::clone");
        }
        Fragile(self.0)
    }
}

/// The batch task copies each loaded value (one for the store, one for the
/// waiters): a panic there must abandon the placeholders, and the copy must
/// not be made under the store's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_clone_in_a_batch_strands_no_caller() {
    one_panicking_batch_is_retried(
        (0..5).collect(),
        |&k| Fragile(k),
        |first| FRAGILE_ARMED.store(first, Ordering::SeqCst),
    )
    .await;
    assert!(!FRAGILE_ARMED.load(Ordering::SeqCst));
}

/// A key or value whose `Clone` panics on the n-th call after
/// `COUNTDOWNS[C]` is set to n. One counter per test (`C`), since tests run
/// at once.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Countdown<const C: usize>(u64);

static COUNTDOWNS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
/// The counter of the batched key test's keys.
const KEYS: usize = 0;
/// The counter of the leader's value test's values.
const VALUES: usize = 1;

impl<const C: usize> Clone for Countdown<C> {
    fn clone(&self) -> Self {
        if COUNTDOWNS[C].fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) == Ok(1) {
            panic!("on purpose: Countdown::clone");
        }
        Countdown(self.0)
    }
}

/// A batched caller that leads copies its key twice (one for the
/// placeholder, one for the batch): the second copy panics with the
/// placeholder placed. It must be abandoned, not left for nobody to end:
/// the next caller of the key leads a load of its own instead of waiting
/// for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_key_clone_of_a_batched_leader_strands_no_caller() {
    quiet();
    let cache = Cache::<Countdown<KEYS>, u64>::new(10);
    let batched = cache.batched(|keys: Vec<Countdown<KEYS>>| async move {
        Ok::<_, String>(keys.into_iter().map(|k| (Countdown(k.0), k.0 * 10)).collect::<HashMap<_, _>>())
    });
    COUNTDOWNS[KEYS].store(2, Ordering::SeqCst);
    let first = {
        let batched = batched.clone();
        tokio::spawn(async move { batched.get(Countdown(7)).await })
    };
    assert!(within(first).await.unwrap_err().is_panic(), "the second copy panics");
    assert_eq!(COUNTDOWNS[KEYS].load(Ordering::SeqCst), 0);
    assert_eq!(within(batched.get(Countdown(7))).await.unwrap(), Some(70));
    assert_eq!(cache.get(&Countdown(7)), Some(70));
}

/// The leader copies its loaded value twice (one for the store, one for
/// its waiters): a panic in either copy reaches the leader's caller and
/// strands no waiter. The first copy fails before the value is stored (a
/// waiter takes the load over); the second after (the waiters find it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_clone_of_a_leaders_value_strands_no_waiter() {
    for nth in [1, 2] {
        let cache = Cache::<u64, Countdown<VALUES>>::new(10);
        let (started, leading) = tokio::sync::oneshot::channel();
        let leader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load(1, || async {
                        started.send(()).unwrap();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        COUNTDOWNS[VALUES].store(nth, Ordering::SeqCst);
                        Countdown(1)
                    })
                    .await
            })
        };
        // The waiters join once the leader's load is under way.
        within(leading).await.unwrap();
        let waiters = (0..4).map(|_| cache.get_or_load(1, || async { Countdown(2) }));
        let got = within(futures_util::future::join_all(waiters)).await;
        assert!(leader.await.is_err(), "copy {nth}: the panic reaches the leader's caller");
        let expected = if nth == 1 { 2 } else { 1 };
        assert!(got.iter().all(|v| v.0 == expected), "copy {nth}: {got:?}");
        assert_eq!(COUNTDOWNS[VALUES].load(Ordering::SeqCst), 0);
    }
}
