//! [`Cache`]: the handle users hold.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use crate::DefaultHasher;
use crate::builder::CacheBuilder;
use crate::observe::{LoadEvent, ObserverId};
use crate::stats::Metrics;
use crate::store::Store;

/// How often the maintenance task of a cache with a listener runs.
const MAINTENANCE_EVERY: Duration = Duration::from_millis(500);

/// A concurrent LRU/TTL cache with single-flight loading.
///
/// `Cache` is a cheap handle: clones share one cache. It is `Send + Sync`;
/// lookups take no lock and never wait for a writer. Put big values behind an
/// `Arc`: every hit clones the value.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use async_cache::Cache;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache: Cache<u64, Arc<String>> = Cache::new(1_000);
///
/// // Plain map-like use.
/// cache.insert(1, Arc::new("one".to_string()));
/// assert_eq!(cache.get(&1).as_deref().map(String::as_str), Some("one"));
///
/// // Cache-aside with single-flight: concurrent misses run the loader once.
/// let two = cache.get_or_load(2, || async { Arc::new("two".to_string()) }).await;
/// assert_eq!(*two, "two");
/// assert_eq!(cache.metrics().loads, 1);
/// # }
/// ```
pub struct Cache<K, V, S = DefaultHasher> {
    pub(crate) store: Arc<Store<K, V, S>>,
}

impl<K, V, S> Clone for Cache<K, V, S> {
    fn clone(&self) -> Self {
        Cache { store: Arc::clone(&self.store) }
    }
}

impl<K, V, S> fmt::Debug for Cache<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.store.config.name)
            .field("max_size", &self.store.config.max_size)
            .field("default_ttl", &self.store.config.default_ttl)
            .finish_non_exhaustive()
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// An LRU cache of at most `max_size` entries, without TTL.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<String, u32>::new(1_000);
    /// cache.insert("a".to_string(), 1);
    /// assert_eq!(cache.get("a"), Some(1));
    /// ```
    pub fn new(max_size: usize) -> Self {
        Self::builder().max_size(max_size).build()
    }

    /// A builder for every setting; see [`CacheBuilder`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_cache::Cache;
    ///
    /// let cache: Cache<u64, u64> = Cache::builder()
    ///     .max_size(10_000)
    ///     .default_ttl(Duration::from_secs(300))
    ///     .build();
    /// # drop(cache);
    /// ```
    pub fn builder() -> CacheBuilder<K, V> {
        CacheBuilder::new()
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn from_store(store: Store<K, V, S>) -> Self {
        let listening = store.listening();
        let cache = Cache { store: Arc::new(store) };
        if listening {
            cache.maintain_in_background();
        }
        #[cfg(feature = "tier")]
        if let Some(link) = &cache.store.tier {
            let replica = Arc::new(crate::tier::Attached::new(&cache.store, link));
            link.attach(&cache.store.config.name, replica);
        }
        cache
    }

    /// With a listener, expirations are told within a second of their
    /// deadline even when nobody touches the cache: a task on the runtime
    /// the cache was built in expires due entries twice a second. It holds
    /// only a weak reference: dropping the last handle ends it. Built
    /// outside a runtime, there is no task, and expirations are told on the
    /// next write, `len()` or `metrics()`.
    fn maintain_in_background(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let store = Arc::downgrade(&self.store);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(MAINTENANCE_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match store.upgrade() {
                    Some(store) => store.expire_due(),
                    None => return,
                }
            }
        });
    }

    /// The value for `key`, if present and not expired. A hit promotes the
    /// entry to most recently used, restarts its idle clock (see
    /// [`time_to_idle`](crate::CacheBuilder::time_to_idle)) and counts a
    /// hit; anything else counts a miss. Never waits: a key being loaded is
    /// a miss.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<String, u32>::new(10);
    /// cache.insert("a".into(), 1);
    /// assert_eq!(cache.get("a"), Some(1)); // &str finds a String key
    /// assert_eq!(cache.get("b"), None);
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.store.get(self.store.hash(key), key)
    }

    /// Like [`get`](Self::get), but neither promotes, restarts the idle clock,
    /// nor counts.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::new(2);
    /// cache.insert(1, 1);
    /// cache.insert(2, 2);
    /// assert_eq!(cache.peek(&1), Some(1)); // 1 stays least recently used
    /// cache.insert(3, 3);
    /// assert_eq!(cache.peek(&1), None);
    /// assert_eq!(cache.metrics().hits + cache.metrics().misses, 0);
    /// ```
    #[inline]
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.store.peek(self.store.hash(key), key)
    }

    /// Whether `key` has a live value; neither promotes nor counts.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::new(10);
    /// cache.insert(1, 1);
    /// assert!(cache.contains_key(&1));
    /// assert!(!cache.contains_key(&2));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.store.contains(self.store.hash(key), key)
    }

    /// Stores `value` with the default TTL, replacing any value (and any load
    /// in flight: its result is then not stored). Past `max_size` an entry
    /// is evicted, as the cache's [`Policy`](crate::Policy) decides. With a
    /// tier (`CacheBuilder::tier`), it is written through (queued: the
    /// call does not wait) and other replicas drop their copies.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, &str>::new(10);
    /// cache.insert(1, "a");
    /// cache.insert(1, "b");
    /// assert_eq!(cache.get(&1), Some("b"));
    /// assert_eq!(cache.len(), 1);
    /// ```
    pub fn insert(&self, key: K, value: V) {
        self.insert_with_ttl(key, value, self.store.config.default_ttl);
    }

    /// Stores `value` with its own TTL: `None` never expires. Re-inserting a
    /// key restarts its TTL; a zero TTL stores nothing (and removes the old
    /// value).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let cache = Cache::<u32, u32>::new(10);
    /// cache.insert_with_ttl(1, 1, Some(Duration::from_secs(1)));
    /// cache.insert_with_ttl(2, 2, None);
    /// tokio::time::advance(Duration::from_secs(2)).await;
    /// assert_eq!(cache.get(&1), None);
    /// assert_eq!(cache.get(&2), Some(2));
    /// # }
    /// ```
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Option<Duration>) {
        #[cfg(feature = "tier")]
        if let Some(link) = &self.store.tier {
            return self.insert_tiered(link, key, value, ttl);
        }
        self.store.insert(self.store.hash(&key), key, value, ttl);
    }

    /// A tiered insert encodes first (user `Serialize`: if it panics,
    /// nothing has changed), then stores, then queues the write. Out of
    /// line: the untiered insert stays small.
    #[cfg(feature = "tier")]
    #[inline(never)]
    fn insert_tiered(&self, link: &crate::tier::Link<K, V>, key: K, value: V, ttl: Option<Duration>) {
        let write = link.put_of(&self.store.counters, &key, &value, ttl, crate::PutKind::Insert);
        self.store.insert(self.store.hash(&key), key, value, ttl);
        if let Some(write) = write {
            link.write(&self.store.config.name, write);
        }
    }

    /// Removes `key`, returning its live value. A load in flight for `key` is
    /// cut off from the cache: its waiters still get its value, but it is not
    /// stored.
    ///
    /// With a tier (`CacheBuilder::tier`), the removal is written
    /// through and every other replica drops its copy, whether or not this
    /// one held the key. The tier knows keys by their serde form, so `key`
    /// must then be a `&K`, a `&str` or a `&[u8]` (the forms `String`,
    /// `Vec<u8>` and their kin borrow as); another borrowed form removes
    /// locally only and counts a `tier_error`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::new(10);
    /// cache.insert(1, 10);
    /// assert_eq!(cache.remove(&1), Some(10));
    /// assert_eq!(cache.remove(&1), None);
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        #[cfg(feature = "tier")]
        if let Some(link) = &self.store.tier {
            let encoded = link.borrowed_key(&self.store.counters, key);
            let removed = self.store.remove(self.store.hash(key), key);
            if let Some(key) = encoded {
                link.write(&self.store.config.name, crate::TierWrite::Remove { key, from: link.id });
            }
            return removed;
        }
        self.store.remove(self.store.hash(key), key)
    }

    /// Drops every entry and cuts off every load in flight. Counters keep
    /// counting. With a tier (`CacheBuilder::tier`), the cache's keys
    /// in it are deleted too, and every other replica drops its entries.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::new(10);
    /// cache.insert(1, 1);
    /// cache.get(&1);
    /// cache.clear();
    /// assert!(cache.is_empty());
    /// assert_eq!(cache.metrics().hits, 1);
    /// ```
    pub fn clear(&self) {
        self.store.clear();
        #[cfg(feature = "tier")]
        if let Some(link) = &self.store.tier {
            link.write(&self.store.config.name, crate::TierWrite::Clear { from: link.id });
        }
    }

    /// Copies of the live entries, in no particular order. Weakly
    /// consistent: it yields every entry present for the whole iteration
    /// (with a value it held meanwhile) and none removed before it
    /// started; entries written during it may or may not appear. It counts
    /// no hits or misses and promotes nothing. It copies one table shard at
    /// a time under the lock (writers wait for no more than that), and
    /// clones keys and values after releasing it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, String>::new(10);
    /// cache.insert(1, "a".into());
    /// cache.insert(2, "b".into());
    /// let mut entries: Vec<_> = cache.iter().collect();
    /// entries.sort();
    /// assert_eq!(entries, [(1, "a".to_string()), (2, "b".to_string())]);
    /// assert_eq!(cache.metrics().hits, 0);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (K, V)> + '_ {
        (0..self.store.shard_count()).flat_map(|shard| self.store.entries_of(shard))
    }

    /// Removes the entries for which `keep` returns false (the listener
    /// says `Explicit`). `keep` runs outside the cache's lock, so it may
    /// call back into the cache; an entry overwritten while `keep` judged
    /// its old value stays. Like [`iter`](Self::iter), it goes one table
    /// shard at a time.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::new(10);
    /// for k in 0..6 {
    ///     cache.insert(k, k * 10);
    /// }
    /// cache.retain(|_, value| *value >= 30);
    /// assert_eq!(cache.len(), 3);
    /// assert!(cache.get(&2).is_none() && cache.get(&3).is_some());
    /// ```
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        for shard in 0..self.store.shard_count() {
            self.store.retain_in(shard, &mut keep);
        }
    }

    /// Live entries. Expired entries are reclaimed first, so they never count.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::new(2);
    /// for i in 0..5 {
    ///     cache.insert(i, i);
    /// }
    /// assert_eq!(cache.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// The sum of the live entries' weights (see
    /// [`CacheBuilder::weigher`]); [`len`](Self::len) without a weigher.
    /// Like `len`, it never exceeds the bound, even for a moment.
    ///
    /// # Examples
    ///
    /// See [`CacheBuilder::max_weight`].
    pub fn weight(&self) -> u64 {
        self.store.weight()
    }

    /// Whether [`len`](Self::len) is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// assert!(Cache::<u32, u32>::new(10).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the counters; see [`Metrics`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::new(10);
    /// cache.get(&1);
    /// assert_eq!(cache.metrics().misses, 1);
    /// ```
    pub fn metrics(&self) -> Metrics {
        self.store.metrics()
    }

    /// Counters since the cache was built, ignoring
    /// [`reset_metrics`](Self::reset_metrics): what exporters publish, so
    /// published counters never go down.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::new(10);
    /// cache.get(&1);
    /// cache.reset_metrics();
    /// assert_eq!(cache.metrics().misses, 0);
    /// assert_eq!(cache.lifetime_metrics().misses, 1);
    /// ```
    pub fn lifetime_metrics(&self) -> Metrics {
        self.store.totals()
    }

    /// Starts the counters of [`metrics`](Self::metrics) from zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::new(10);
    /// cache.get(&1);
    /// cache.reset_metrics();
    /// assert_eq!(cache.metrics().misses, 0);
    /// ```
    pub fn reset_metrics(&self) {
        self.store.reset_metrics();
    }

    /// The name given to [`CacheBuilder::name`], `"default"` otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// assert_eq!(Cache::<u32, u32>::new(10).name(), "default");
    /// ```
    pub fn name(&self) -> &str {
        &self.store.config.name
    }

    /// Calls `observer` once for every loader run through this cache
    /// (single-flight, `warmup` and each batch), when the run ends however
    /// it ends, with its duration, its key count and its outcome: for
    /// latency and batch-size histograms. Observers add up: this one runs
    /// beside any others (such as the `metrics` bridge's) until removed with
    /// [`Cache::unobserve_loads`]. A panic in an observer is caught and
    /// fails nothing.
    ///
    /// Observers run on the task that ran the load, right after it: keep
    /// them short.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = Cache::<u32, u32>::new(10);
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let counter = Arc::clone(&seen);
    /// cache.observe_loads(move |_event| { counter.fetch_add(1, Ordering::Relaxed); });
    /// cache.get_or_load(1, || async { 1 }).await;
    /// assert_eq!(seen.load(Ordering::Relaxed), 1);
    /// # }
    /// ```
    pub fn observe_loads(&self, observer: impl Fn(&LoadEvent) + Send + Sync + 'static) -> ObserverId {
        self.store.observers.add(Arc::new(observer))
    }

    /// Removes an observer added by [`Cache::observe_loads`]; false if it
    /// was already gone. Loads under way may still report to it once.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::new(10);
    /// let id = cache.observe_loads(|event| println!("a load took {:?}", event.took));
    /// assert!(cache.unobserve_loads(id));
    /// assert!(!cache.unobserve_loads(id));
    /// ```
    pub fn unobserve_loads(&self, id: ObserverId) -> bool {
        self.store.observers.remove(id)
    }

    /// A handle that does not keep the cache alive: for background tasks
    /// (exporters, autosave) that should stop when the cache is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::new(10);
    /// let weak = cache.downgrade();
    /// assert!(weak.upgrade().is_some());
    /// drop(cache);
    /// assert!(weak.upgrade().is_none());
    /// ```
    pub fn downgrade(&self) -> WeakCache<K, V, S> {
        WeakCache { store: Arc::downgrade(&self.store) }
    }

    /// Whether two handles share one cache.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let a = Cache::<u32, u32>::new(10);
    /// assert!(a.ptr_eq(&a.clone()));
    /// assert!(!a.ptr_eq(&Cache::new(10)));
    /// ```
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.store, &other.store)
    }
}

/// A [`Cache`] handle that does not keep the cache alive; from
/// [`Cache::downgrade`].
pub struct WeakCache<K, V, S = DefaultHasher> {
    store: std::sync::Weak<Store<K, V, S>>,
}

impl<K, V, S> WeakCache<K, V, S> {
    /// The cache, if it still exists.
    ///
    /// # Examples
    ///
    /// See [`Cache::downgrade`].
    pub fn upgrade(&self) -> Option<Cache<K, V, S>> {
        self.store.upgrade().map(|store| Cache { store })
    }
}

impl<K, V, S> Clone for WeakCache<K, V, S> {
    fn clone(&self) -> Self {
        WeakCache { store: self.store.clone() }
    }
}

impl<K, V, S> fmt::Debug for WeakCache<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakCache").field("alive", &(self.store.strong_count() > 0)).finish()
    }
}
