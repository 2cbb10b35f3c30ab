//! DataLoader-style batching: lookups that miss within one `batch_window`
//! reach the backend as one [`BatchLoader::load_batch`] call.
//!
//! Each missing key gets a placeholder in the store, exactly as single-flight
//! does, and the placeholder's flight is what its callers wait on. So a key
//! already pending or in flight (in any batch, or in a `get_or_load`) is
//! joined, not sent again; `remove`/`insert`/`clear` during a batch win; and
//! the batch, not the caller, owns the placeholders: a caller that is dropped
//! only stops waiting. Before a batch is sent, keys nobody waits for any more
//! are dropped from it, and a batch left empty is not sent at all.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::runtime::Handle;

use crate::flight::{Outcome, SharedError};
use crate::observe::LoadOutcome;
use crate::store::{Claim, Placeholder, Store};
use crate::sync::{Mutex, lock};
use crate::{Cache, DefaultHasher};

/// Loads many keys in one call: the backend side of [`Cache::batched`].
///
/// Keys absent from the returned map have no value: their callers get
/// `Ok(None)` and nothing is cached for them. Any `Fn(Vec<K>) -> impl
/// Future<Output = Result<HashMap<K, V>, E>>` closure is a `BatchLoader` too.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use async_cache::{BatchLoader, async_trait};
///
/// struct Users;
///
/// #[async_trait]
/// impl BatchLoader<u64, String> for Users {
///     type Error = std::io::Error;
///
///     async fn load_batch(&self, ids: Vec<u64>) -> Result<HashMap<u64, String>, Self::Error> {
///         // SELECT id, name FROM users WHERE id = ANY($1)
///         Ok(ids.into_iter().filter(|id| id % 2 == 0).map(|id| (id, format!("user {id}"))).collect())
///     }
/// }
/// ```
#[async_trait]
pub trait BatchLoader<K, V>: Send + Sync + 'static {
    /// The loader's error, shared by every caller of a failed batch.
    type Error: Send + Sync + 'static;

    /// Loads `keys` (distinct, at most `max_batch_size` of them).
    async fn load_batch(&self, keys: Vec<K>) -> Result<HashMap<K, V>, Self::Error>;
}

#[async_trait]
impl<K, V, E, F, Fut> BatchLoader<K, V> for F
where
    F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<HashMap<K, V>, E>> + Send,
    K: Send + 'static,
    V: Send + 'static,
    E: Send + Sync + 'static,
{
    type Error = E;

    async fn load_batch(&self, keys: Vec<K>) -> Result<HashMap<K, V>, E> {
        self(keys).await
    }
}

/// A batching handle over a [`Cache`] for one [`BatchLoader`], from
/// [`Cache::batched`]. Clones share one batcher.
///
/// Lookups of cached keys are served at once (and count as hits). Missing
/// keys are collected for `batch_window` (default 5 ms), or until
/// `max_batch_size` (default 100) keys are waiting, then loaded in one call;
/// loaded values are stored with the cache's default TTL. The batch runs in
/// its own task, so a caller that is dropped never cancels it for the others.
pub struct Batched<K, V, L, S = DefaultHasher> {
    shared: Arc<Shared<K, V, L, S>>,
}

impl<K, V, L, S> Clone for Batched<K, V, L, S> {
    fn clone(&self) -> Self {
        Batched { shared: Arc::clone(&self.shared) }
    }
}

impl<K, V, L, S> fmt::Debug for Batched<K, V, L, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batched")
            .field("cache", &self.shared.cache)
            .field("window", &self.shared.window)
            .field("max", &self.shared.max)
            .finish_non_exhaustive()
    }
}

struct Shared<K, V, L, S> {
    cache: Cache<K, V, S>,
    loader: L,
    window: Duration,
    max: usize,
    runtime: Handle,
    pending: Mutex<Pending<K, V, S>>,
}

/// The batch being collected. Its keys are held by the same guard as a batch
/// being sent, so a batcher dropped with a window open leaves no placeholder
/// behind.
struct Pending<K, V, S> {
    batch: Placeholders<K, V, S>,
    /// Which batch a timer belongs to: a batch cut at `max` gets a new one.
    generation: u64,
}

/// The placeholders of a batch, collected or being sent. Whatever is still
/// here when it is dropped (the batcher dropped with a window open, a panic
/// in the batch task, a runtime shutting down) is abandoned, so no
/// placeholder outlives its batch.
struct Placeholders<K, V, S> {
    store: Arc<Store<K, V, S>>,
    held: Vec<(K, Placeholder<V>)>,
}

impl<K, V, S> Placeholders<K, V, S> {
    /// Moves the keys out into a batch of their own, to send.
    fn take(&mut self) -> Self {
        Placeholders { store: Arc::clone(&self.store), held: std::mem::take(&mut self.held) }
    }
}

impl<K, V, S> Drop for Placeholders<K, V, S> {
    fn drop(&mut self) {
        self.store.fail(self.held.iter().map(|(_, lead)| lead), || Outcome::Abandoned);
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A batching handle over this cache for `loader`; see [`Batched`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the batches run as tasks on it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = Cache::<u64, String>::new(1_000);
    /// let users = cache.batched(|ids: Vec<u64>| async move {
    ///     println!("one query for {ids:?}");
    ///     Ok::<_, std::io::Error>(ids.into_iter().map(|id| (id, format!("user {id}"))).collect::<HashMap<_, _>>())
    /// });
    /// let (a, b) = tokio::join!(users.get(1), users.get(2)); // one query for [1, 2]
    /// assert_eq!(a.unwrap().as_deref(), Some("user 1"));
    /// assert_eq!(b.unwrap().as_deref(), Some("user 2"));
    /// assert_eq!(cache.metrics().batches, 1);
    /// # }
    /// ```
    pub fn batched<L: BatchLoader<K, V>>(&self, loader: L) -> Batched<K, V, L, S> {
        let config = &self.store.config;
        Batched {
            shared: Arc::new(Shared {
                cache: self.clone(),
                loader,
                window: config.batch_window,
                max: config.max_batch_size,
                runtime: Handle::current(),
                pending: Mutex::new(Pending {
                    batch: Placeholders { store: Arc::clone(&self.store), held: Vec::new() },
                    generation: 0,
                }),
            }),
        }
    }
}

impl<K, V, L, S> Batched<K, V, L, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    L: BatchLoader<K, V>,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The value for `key`: from the cache, or loaded in the next batch.
    /// `Ok(None)` if the loader has no value for it.
    ///
    /// # Errors
    ///
    /// The loader's error, shared by every caller of the failed batch.
    ///
    /// # Panics
    ///
    /// If the loader panicked while loading `key`'s batch: every caller of
    /// that batch gets the panic, nobody is left waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = Cache::<u64, u64>::new(100);
    /// let squares = cache.batched(|keys: Vec<u64>| async move {
    ///     Ok::<_, String>(keys.into_iter().filter(|k| *k < 10).map(|k| (k, k * k)).collect::<HashMap<_, _>>())
    /// });
    /// assert_eq!(squares.get(3).await.unwrap(), Some(9));
    /// assert_eq!(squares.get(30).await.unwrap(), None);
    /// assert_eq!(cache.get(&3), Some(9)); // stored in the cache
    /// # }
    /// ```
    pub async fn get(&self, key: K) -> Result<Option<V>, Arc<L::Error>> {
        let store = &*self.shared.cache.store;
        let hash = store.hash(&key);
        if let Some(value) = store.get(hash, &key) {
            return Ok(Some(value));
        }
        loop {
            // A leading claim moves its key into the placeholder; the batch
            // keeps this copy to hand to the loader.
            let mut placed = Some(key.clone());
            let (flight, joined) = match store.claim(hash, &mut placed, false) {
                Claim::Hit(value) => return Ok(Some(value)),
                Claim::Join(flight) => (flight, true),
                Claim::Lead(lead) => {
                    let flight = Arc::clone(lead.flight());
                    // User code with the placeholder in hand: if the copy
                    // panics, the flight is abandoned first (a waiter takes
                    // the load over), not left for nobody to end.
                    let copy = match std::panic::catch_unwind(AssertUnwindSafe(|| key.clone())) {
                        Ok(copy) => copy,
                        Err(panic) => {
                            store.fail([&lead], || Outcome::Abandoned);
                            std::panic::resume_unwind(panic);
                        }
                    };
                    self.enqueue(copy, lead);
                    (flight, false)
                }
            };
            // A caller that joined someone else's load is served by it.
            let coalesced = || {
                if joined {
                    store.counters.coalesced.inc();
                }
            };
            match flight.wait().await {
                Outcome::Value(value) => {
                    coalesced();
                    return Ok(Some(value));
                }
                Outcome::Absent => {
                    coalesced();
                    return Ok(None);
                }
                Outcome::Error(error) => {
                    if let Ok(error) = error.downcast::<L::Error>() {
                        coalesced();
                        return Err(error);
                    }
                    // Another loader's error type: load it ourselves.
                }
                Outcome::Panicked(message) => panic!("the batch loader panicked: {message}"),
                Outcome::Abandoned | Outcome::Failed => {}
            }
        }
    }

    /// The values for `keys` (duplicates are looked up once): cached ones at
    /// once, the others in as few batches as `max_batch_size` allows. Keys
    /// without a value are absent from the map.
    ///
    /// # Errors
    ///
    /// The first error of a batch that held one of `keys`.
    ///
    /// # Panics
    ///
    /// If the loader panicked while loading one of `keys`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = Cache::<u64, u64>::new(100);
    /// let doubles = cache.batched(|keys: Vec<u64>| async move {
    ///     Ok::<_, String>(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>())
    /// });
    /// let got = doubles.get_many(vec![1, 2, 2, 3]).await.unwrap();
    /// assert_eq!(got, HashMap::from([(1, 2), (2, 4), (3, 6)]));
    /// assert_eq!(cache.metrics().batches, 1);
    /// # }
    /// ```
    pub async fn get_many(&self, keys: Vec<K>) -> Result<HashMap<K, V>, Arc<L::Error>> {
        let mut distinct = HashMap::with_capacity(keys.len());
        for key in keys {
            distinct.entry(key).or_insert(());
        }
        // All lookups start on the first poll, before anything yields, so
        // every miss lands in the same batch.
        let lookups = distinct.into_keys().map(|key| async move {
            let value = self.get(key.clone()).await?;
            Ok::<_, Arc<L::Error>>(value.map(|value| (key, value)))
        });
        let mut found = HashMap::new();
        for result in futures_util::future::join_all(lookups).await {
            if let Some((key, value)) = result? {
                found.insert(key, value);
            }
        }
        Ok(found)
    }

    /// Adds a placeholder's key to the batch being collected, sending the
    /// batch at once when it is full, or starting its window when it was
    /// empty.
    fn enqueue(&self, key: K, lead: Placeholder<V>) {
        let mut pending = lock(&self.shared.pending);
        pending.batch.held.push((key, lead));
        if pending.batch.held.len() >= self.shared.max {
            let full = pending.batch.take();
            pending.generation += 1;
            drop(pending);
            self.send(full);
        } else if pending.batch.held.len() == 1 {
            let generation = pending.generation;
            drop(pending);
            self.start_window(generation);
        }
    }

    /// Sends the batch of `generation` when its window closes, unless it was
    /// sent already (cut at `max`). Holds the batcher weakly: dropping every
    /// handle ends it.
    fn start_window(&self, generation: u64) {
        let shared: Weak<Shared<K, V, L, S>> = Arc::downgrade(&self.shared);
        let window = self.shared.window;
        self.shared.runtime.spawn(async move {
            if window.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(window).await;
            }
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut pending = lock(&shared.pending);
            if pending.generation != generation || pending.batch.held.is_empty() {
                return;
            }
            let batch = pending.batch.take();
            pending.generation += 1;
            drop(pending);
            Batched { shared }.send(batch);
        });
    }

    /// Runs one `load_batch` in its own task and hands each key's outcome to
    /// its waiters.
    fn send(&self, mut batch: Placeholders<K, V, S>) {
        let shared = Arc::clone(&self.shared);
        self.shared.runtime.spawn(async move {
            let store = Arc::clone(&shared.cache.store);
            // Keys whose every caller is gone are not sent: a flight only
            // held by its placeholder (in this batch) has nobody waiting.
            batch.held.retain(|(_, lead)| {
                let wanted = Arc::strong_count(lead.flight()) > 1;
                if !wanted {
                    store.fail([lead], || Outcome::Abandoned);
                }
                wanted
            });
            // A tier first: keys found there are answered from it.
            #[cfg(feature = "tier")]
            let tier_keys = match &store.tier {
                Some(link) => tier_lookup(&store, link, &mut batch.held).await,
                None => Vec::new(),
            };
            #[cfg(not(feature = "tier"))]
            let tier_keys: Vec<Option<Vec<u8>>> = Vec::new();
            if batch.held.is_empty() {
                return;
            }
            // User code (`Clone`, the loader, `Hash`/`Eq`, `Drop`) runs while
            // `flights` still holds every placeholder: if it panics, the
            // guard abandons them and each waiter takes its load over.
            let keys: Vec<K> = batch.held.iter().map(|(key, _)| key.clone()).collect();
            let counters = &store.counters;
            counters.batches.inc();
            counters.batched_keys.add(keys.len() as u64);
            counters.loads.inc();
            let timing = store.observers.start(keys.len(), true);
            let loaded = AssertUnwindSafe(shared.loader.load_batch(keys)).catch_unwind().await;
            if let Some(timing) = timing {
                timing.end(match &loaded {
                    Ok(Ok(_)) => LoadOutcome::Loaded,
                    Ok(Err(_)) => LoadOutcome::Failed,
                    Err(_) => LoadOutcome::Panicked,
                });
            }
            let outcome = match loaded {
                Ok(Ok(mut values)) => {
                    // One value for the store and one for the waiters, and
                    // its weight, made here: never under the store's lock.
                    // With a tier, each value's write to it too.
                    let mut tier_keys = tier_keys.into_iter();
                    let answers: Vec<_> = batch
                        .held
                        .iter()
                        .map(|(key, _)| {
                            let tiered = tier_keys.next().flatten();
                            values.remove(key).map(|value| {
                                let weight = store.weigh(key, &value);
                                let write = loaded_write(&store, tiered, &value);
                                (value.clone(), value, weight, write)
                            })
                        })
                        .collect();
                    drop(values);
                    Ok(answers)
                }
                Ok(Err(error)) => Err(Outcome::Error(Arc::new(error) as SharedError)),
                Err(panic) => Err(Outcome::Panicked(panic_message(&*panic).into())),
            };
            // From here on no user code runs but `Drop` of values the engine
            // drops quietly: the guard can let go of the placeholders.
            let leads = std::mem::take(&mut batch.held);
            match outcome {
                Ok(answers) => {
                    let mut found = Vec::new();
                    let mut wake = Vec::new();
                    let mut absent = Vec::new();
                    let mut writes = Vec::new();
                    for ((_, lead), answer) in leads.iter().zip(answers) {
                        match answer {
                            Some((stored, handed, weight, write)) => {
                                found.push((lead, stored, weight));
                                wake.push((lead, handed));
                                writes.push(write);
                            }
                            None => absent.push(lead),
                        }
                    }
                    // One lock for the whole batch, then the wake-ups.
                    let current = store.resolve_all(found, store.config.default_ttl);
                    for (lead, value) in wake {
                        lead.flight().finish(Outcome::Value(value));
                    }
                    store.fail(absent, || Outcome::Absent);
                    // Values cut off meanwhile (an invalidation, say) do
                    // not go to the tier.
                    #[cfg(feature = "tier")]
                    if let Some(link) = &store.tier {
                        for (write, current) in writes.into_iter().zip(current) {
                            if let (Some(write), true) = (write, current) {
                                link.write(&store.config.name, write);
                            }
                        }
                    }
                    #[cfg(not(feature = "tier"))]
                    let _ = (writes, current);
                }
                Err(failure) => {
                    counters.load_errors.inc();
                    store.fail(leads.iter().map(|(_, lead)| lead), || failure.clone());
                }
            }
        });
    }
}

/// A loaded value's write to the tier; none without one.
#[cfg(feature = "tier")]
fn loaded_write<K, V, S>(store: &Store<K, V, S>, key: Option<Vec<u8>>, value: &V) -> Option<crate::TierWrite> {
    let link = store.tier.as_ref()?;
    Some(link.put(&store.counters, key?, value, store.config.default_ttl, crate::PutKind::Loaded))
}

#[cfg(not(feature = "tier"))]
fn loaded_write<K, V, S>(_: &Store<K, V, S>, _: Option<Vec<u8>>, _: &V) -> Option<std::convert::Infallible> {
    None
}

/// Looks the batch's keys up in the tier (one round trip) and answers those
/// found there; the rest stay in `held`. Returns their keys as the tier
/// knows them, in `held`'s order (`None` for a key that does not encode).
#[cfg(feature = "tier")]
async fn tier_lookup<K, V, S>(
    store: &Store<K, V, S>,
    link: &crate::tier::Link<K, V>,
    held: &mut Vec<(K, Placeholder<V>)>,
) -> Vec<Option<Vec<u8>>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
{
    let counters = &store.counters;
    let keys: Vec<Option<Vec<u8>>> = held.iter().map(|(key, _)| link.key(counters, key)).collect();
    let asked: Vec<&[u8]> = keys.iter().flatten().map(Vec::as_slice).collect();
    let mut found = link.lookup(&store.config.name, counters, &asked).await.into_iter();
    let ttl = store.config.default_ttl;
    // User code (`Clone`, the weigher) while every placeholder is held.
    let answers: Vec<_> = held
        .iter()
        .zip(&keys)
        .map(|((key, _), encoded)| {
            let (value, left) = encoded.as_ref().and_then(|_| found.next().flatten())?;
            let weight = store.weigh(key, &value);
            Some((value.clone(), value, weight, crate::tier::shorter(ttl, left)))
        })
        .collect();
    let mut missed = Vec::with_capacity(keys.len());
    for ((key, lead), (encoded, answer)) in std::mem::take(held).into_iter().zip(keys.into_iter().zip(answers)) {
        match answer {
            Some((stored, handed, weight, ttl)) => {
                if let (_, Some(flight)) = store.resolve(lead, stored, ttl, weight) {
                    flight.finish(Outcome::Value(handed));
                }
            }
            None => {
                held.push((key, lead));
                missed.push(encoded);
            }
        }
    }
    missed
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "(a non-string panic payload)".to_string()
    }
}
