//! [`CacheBuilder`]: every setting of a [`Cache`], with its default.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::listen::{Listener, RemovalCause, Weigher};
use crate::store::{Config, Store};
use crate::{Cache, DefaultHasher};

/// Which entry a full cache evicts: see [`CacheBuilder::policy`].
///
/// | | `Lru` (default) | `TinyLfu` |
/// |---|---|---|
/// | evicts | the least recently used entry, exactly | whichever of the newcomer and the main region's oldest entry was asked for less often lately |
/// | best for | recency-driven traffic; predictable order | skewed traffic (a popular set, a long tail), scans, loops |
/// | a hit | records its order exactly | marks the entry read, without a read-modify-write (faster; a mark may be lost under contention) |
/// | memory | links only | 8 more bytes of links per entry, and 24 bytes per entry of `max_size` (a frequency sketch, and the refused newcomers it remembers) |
///
/// `TinyLfu` is W-TinyLFU, after Caffeine: new entries enter a small
/// window; leaving it, an entry must have been asked for more often lately
/// (a count-min sketch says) than the main region's oldest entry to take
/// its place; the window's share adapts to the traffic, up to nearly the
/// whole cache (plain recency) when that pays. It promises no exact order,
/// only every other rule: a full cache holds
/// exactly `max_size` entries, TTLs, single-flight, batching and snapshots
/// (coldest first) work as under `Lru`. A newcomer it refuses counts as an
/// eviction.
///
/// # Examples
///
/// ```
/// use async_cache::{Cache, Policy};
///
/// let cache: Cache<String, u64> = Cache::builder().max_size(10_000).policy(Policy::TinyLfu).build();
/// assert_eq!(Policy::default(), Policy::Lru);
/// # drop(cache);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Exact least-recently-used eviction (the default).
    #[default]
    Lru,
    /// W-TinyLFU: frequency-aware admission and eviction.
    TinyLfu,
}

/// Configures and builds a [`Cache`]. Building needs no async runtime.
///
/// | setting | default |
/// |---|---|
/// | [`max_size`](Self::max_size) | 128 entries |
/// | [`default_ttl`](Self::default_ttl) | none: entries never expire |
/// | [`time_to_idle`](Self::time_to_idle) | none: reads do not keep entries alive |
/// | [`ttl_jitter`](Self::ttl_jitter) | 0: every TTL exactly as given |
/// | [`refresh_after`](Self::refresh_after), [`stale_for`](Self::stale_for), [`load_timeout`](Self::load_timeout) | none (they act on [`fetch`](Cache::fetch)) |
/// | [`batch_window`](Self::batch_window) | 5 ms |
/// | [`max_batch_size`](Self::max_batch_size) | 100 keys |
/// | [`name`](Self::name) | `"default"` |
/// | [`policy`](Self::policy) | [`Policy::Lru`] |
/// | [`max_weight`](Self::max_weight), [`weigher`](Self::weigher) | none; every entry weighs 1 |
/// | [`eviction_listener`](Self::eviction_listener) | none |
/// | [`hasher`](Self::hasher) | [`DefaultHasher`](crate::DefaultHasher) (foldhash, seeded per cache) |
/// | `snapshot_version` (with a persistence feature) | 0 |
///
/// # Examples
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use async_cache::Cache;
///
/// let users: Cache<u64, Arc<String>> = Cache::builder()
///     .max_size(10_000)
///     .default_ttl(Duration::from_secs(300))
///     .batch_window(Duration::from_millis(5))
///     .max_batch_size(100)
///     .name("users")
///     .build();
/// assert_eq!(users.name(), "users");
/// assert_eq!(users.metrics().max_size, Some(10_000));
/// ```
pub struct CacheBuilder<K, V, S = DefaultHasher> {
    config: Config,
    hasher: S,
    listener: Option<Listener<K, V>>,
    weigher: Option<Weigher<K, V>>,
    /// Whether `max_size` or `unbounded` was called: with `max_weight`,
    /// the default size bound does not apply.
    sized: bool,
    /// The shared second level, with `tier`.
    #[cfg(feature = "tier")]
    tier: Option<crate::tier::Link<K, V>>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V, S> fmt::Debug for CacheBuilder<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder").field("config", &self.config).finish()
    }
}

impl<K, V> Default for CacheBuilder<K, V> {
    fn default() -> Self {
        CacheBuilder {
            config: Config {
                max_size: 128,
                default_ttl: None,
                time_to_idle: None,
                refresh_after: None,
                stale_for: None,
                load_timeout: None,
                ttl_jitter: 0.0,
                batch_window: Duration::from_millis(5),
                max_batch_size: 100,
                name: Arc::from("default"),
                policy: Policy::Lru,
                max_weight: u64::MAX,
                snapshot_version: 0,
            },
            hasher: DefaultHasher::default(),
            listener: None,
            weigher: None,
            sized: false,
            #[cfg(feature = "tier")]
            tier: None,
            _types: PhantomData,
        }
    }
}

impl<K, V> CacheBuilder<K, V> {
    /// A builder with the defaults in the table above.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<K, V, S> CacheBuilder<K, V, S> {
    /// Hashes keys with `hasher` instead of the default
    /// [`DefaultHasher`](crate::DefaultHasher) (foldhash: fast, seeded per
    /// cache, but not designed to resist keys chosen by an attacker). For
    /// keys from untrusted input (HTTP headers, user names), a keyed hash
    /// such as std's `RandomState` (SipHash-1-3) keeps them from crafting
    /// collisions, at some cost per lookup.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::hash_map::RandomState;
    /// use async_cache::Cache;
    ///
    /// let sessions: Cache<String, u64, RandomState> =
    ///     Cache::builder().hasher(RandomState::new()).max_size(10_000).build();
    /// sessions.insert("a user-chosen id".to_string(), 1);
    /// assert_eq!(sessions.get("a user-chosen id"), Some(1));
    /// ```
    pub fn hasher<S2>(self, hasher: S2) -> CacheBuilder<K, V, S2> {
        CacheBuilder {
            config: self.config,
            hasher,
            listener: self.listener,
            weigher: self.weigher,
            sized: self.sized,
            #[cfg(feature = "tier")]
            tier: self.tier,
            _types: PhantomData,
        }
    }

    /// The most entries the cache holds; past it an entry is evicted: the
    /// least recently used under the default [`Policy::Lru`], the less
    /// frequently used of a newcomer and an old entry under
    /// [`Policy::TinyLfu`]. `0` stores nothing (loads are still
    /// single-flight).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u32, u32>::builder().max_size(2).build();
    /// cache.insert(1, 1);
    /// cache.insert(2, 2);
    /// cache.get(&1); // 2 is now the least recently used
    /// cache.insert(3, 3);
    /// assert!(cache.contains_key(&1) && !cache.contains_key(&2));
    /// ```
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.config.max_size = max_size;
        self.sized = true;
        self
    }

    /// Which entry leaves when the cache is full: exact LRU (the default)
    /// or the frequency-aware [`Policy::TinyLfu`]. See [`Policy`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::{Cache, Policy};
    ///
    /// let cache = Cache::<u64, u64>::builder().max_size(100).policy(Policy::TinyLfu).build();
    /// // A popular key...
    /// for _ in 0..10 {
    ///     cache.insert(7, 7);
    ///     cache.get(&7);
    /// }
    /// // ...survives a scan of keys asked for once.
    /// for key in 1_000..2_000 {
    ///     cache.insert(key, key);
    /// }
    /// assert_eq!(cache.get(&7), Some(7));
    /// assert_eq!(cache.len(), 100);
    /// ```
    pub fn policy(mut self, policy: Policy) -> Self {
        self.config.policy = policy;
        self
    }

    /// No size bound: entries leave only by TTL, `remove` or `clear`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u64, u64>::builder().unbounded().build();
    /// for i in 0..1_000 {
    ///     cache.insert(i, i);
    /// }
    /// assert_eq!(cache.len(), 1_000);
    /// assert_eq!(cache.metrics().max_size, None);
    /// ```
    pub fn unbounded(mut self) -> Self {
        self.config.max_size = usize::MAX;
        self.sized = true;
        self
    }

    /// The TTL of entries stored without one of their own (`insert`,
    /// `get_or_load`, batched loads). A zero TTL stores nothing visible; a TTL
    /// too large for the clock means "never".
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let cache = Cache::<&str, u32>::builder().default_ttl(Duration::from_secs(60)).build();
    /// cache.insert("a", 1);
    /// tokio::time::advance(Duration::from_secs(61)).await;
    /// assert_eq!(cache.get("a"), None);
    /// # }
    /// ```
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl = Some(ttl);
        self
    }

    /// Expires an entry that nobody read or wrote for `idle`, even inside
    /// its TTL: whichever of the two ends first ends the entry (the
    /// listener says `Expired`). [`get`](Cache::get), a hit of
    /// [`get_or_load`](Cache::get_or_load) (and its kin) and
    /// [`insert`](Cache::insert) start its idle clock again;
    /// [`peek`](Cache::peek), [`contains_key`](Cache::contains_key) and
    /// [`iter`](Cache::iter) do not. A snapshot saves TTLs only: entries
    /// loaded from one start a fresh idle clock. A zero period stores
    /// nothing visible; one too long for the clock (over 146 years) means
    /// "never idle".
    ///
    /// Costs 8 bytes per entry and, on a hit, a store to the entry's idle
    /// deadline (skipped while it is within 1/1024 of the period of the new
    /// one, so a key read by every request does not write it each time:
    /// an entry may expire up to that much early).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let sessions = Cache::<&str, u32>::builder()
    ///     .default_ttl(Duration::from_secs(3600))
    ///     .time_to_idle(Duration::from_secs(60))
    ///     .build();
    /// sessions.insert("active", 1);
    /// sessions.insert("idle", 2);
    /// for _ in 0..5 {
    ///     tokio::time::advance(Duration::from_secs(30)).await;
    ///     assert_eq!(sessions.get("active"), Some(1)); // read: kept alive
    /// }
    /// assert_eq!(sessions.get("idle"), None); // unread for 150 s
    /// # }
    /// ```
    pub fn time_to_idle(mut self, idle: Duration) -> Self {
        self.config.time_to_idle = Some(idle);
        self
    }

    /// Spreads each entry's TTL uniformly by up to `fraction` of it either
    /// way (0.1: a 60 s TTL becomes 54 to 66 s), so keys loaded together do
    /// not all expire, and reload, together. Clamped to `0.0..=1.0`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let cache = Cache::<u32, u32>::builder()
    ///     .max_size(1_000)
    ///     .default_ttl(Duration::from_secs(60))
    ///     .ttl_jitter(0.1)
    ///     .build();
    /// for key in 0..1_000 {
    ///     cache.insert(key, key);
    /// }
    /// tokio::time::advance(Duration::from_secs(53)).await;
    /// assert_eq!(cache.len(), 1_000); // none before 54 s
    /// tokio::time::advance(Duration::from_secs(7)).await;
    /// let left = cache.len(); // about half by 60 s
    /// assert!(left > 300 && left < 700, "{left}");
    /// tokio::time::advance(Duration::from_secs(7)).await;
    /// assert!(cache.is_empty()); // all by 66 s
    /// # }
    /// ```
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.config.ttl_jitter = if fraction.is_nan() { 0.0 } else { fraction.clamp(0.0, 1.0) };
        self
    }

    /// Refresh ahead: a [`fetch`](Cache::fetch) that finds an entry written
    /// longer ago than `after` (and still within its TTL) returns it at once
    /// and starts one background reload of it with its loader; nobody
    /// waits. The reload replaces the value and restarts its TTL; if it
    /// fails, the entry keeps its value (the failure counts in
    /// `load_errors`) and may be refreshed again `after` later. Started
    /// refreshes count in [`Metrics::refreshes`](crate::Metrics::refreshes).
    /// A write, removal or expiry of the entry during the reload wins over
    /// it. Costs 8 bytes per entry.
    ///
    /// Set it below the TTL (say, at 80% of it): hot keys are then reloaded
    /// before they expire, and no caller ever waits for them.
    ///
    /// # Examples
    ///
    /// See [`Cache::fetch`].
    pub fn refresh_after(mut self, after: Duration) -> Self {
        self.config.refresh_after = Some(after);
        self
    }

    /// Fail-safe: an entry whose TTL ended is kept, invisible to `get`,
    /// `peek`, `iter` and `len`, for `window` longer. A
    /// [`fetch`](Cache::fetch) that finds it reloads; if that load fails
    /// (or panics), every caller of the load gets the stale value instead
    /// of the error, and it is kept for the rest of its window. Each caller
    /// served so counts in [`Metrics::stale_served`](crate::Metrics::stale_served).
    /// `insert`, `remove` and `clear` drop a stale value like any other;
    /// the listener is told `Expired` when its window ends. Stale entries
    /// are not counted against `max_size`: they hold memory until their
    /// window ends or a reload replaces them.
    ///
    /// # Examples
    ///
    /// See [`Cache::fetch`].
    pub fn stale_for(mut self, window: Duration) -> Self {
        self.config.stale_for = Some(window);
        self
    }

    /// Soft timeout: when a [`fetch`](Cache::fetch) reloads a key that has
    /// a stale value (see [`stale_for`](Self::stale_for)), its callers wait
    /// at most `timeout` and then get the stale value; the load goes on in
    /// the background and stores its value when done. Without a stale
    /// value, callers wait for the load as usual.
    ///
    /// # Examples
    ///
    /// See [`Cache::fetch`].
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.config.load_timeout = Some(timeout);
        self
    }

    /// How long a [`Batched`](crate::Batched) handle collects keys before
    /// calling its loader. Zero sends at the next yield to the runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u64, String>::builder().batch_window(Duration::from_millis(2)).build();
    /// # drop(cache);
    /// ```
    pub fn batch_window(mut self, window: Duration) -> Self {
        self.config.batch_window = window;
        self
    }

    /// The most keys in one `load_batch` call; a larger window is cut into
    /// several batches. `0` is taken as `1`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u64, String>::builder().max_batch_size(50).build();
    /// # drop(cache);
    /// ```
    pub fn max_batch_size(mut self, max: usize) -> Self {
        self.config.max_batch_size = max.max(1);
        self
    }

    /// The cache's label in metrics (`cache="<name>"`).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache = Cache::<u64, String>::builder().name("users").build();
    /// assert_eq!(cache.name(), "users");
    /// ```
    pub fn name(mut self, name: impl AsRef<str>) -> Self {
        self.config.name = Arc::from(name.as_ref());
        self
    }

    /// Tags this cache's snapshots with `version` (default 0) beside its key
    /// and value types' names; a snapshot saved under another version or
    /// other type names is refused on load with
    /// [`BackendError::SchemaMismatch`](crate::BackendError::SchemaMismatch).
    /// Raise it when a cached type changes its encoding but keeps its name
    /// (a field added, removed, reordered or retyped), so the old snapshot
    /// is refused rather than decoded as something it is not.
    ///
    /// Needs the `file`, `sled` or `sqlite` feature of async-cache.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::{BackendError, Cache, FileBackend};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let backend = FileBackend::new(dir.path().join("users.cache"));
    /// let v1 = Cache::<u64, String>::builder().snapshot_version(1).build();
    /// v1.insert(1, "ada".into());
    /// v1.save_to_backend(&backend).await?;
    ///
    /// // The value type's encoding changed: version 2 refuses version 1's snapshot.
    /// let v2 = Cache::<u64, String>::builder().snapshot_version(2).build();
    /// let refused = v2.load_from_backend(&backend).await;
    /// assert!(matches!(refused, Err(BackendError::SchemaMismatch { .. })));
    /// assert!(v2.is_empty());
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "persist")]
    pub fn snapshot_version(mut self, version: u32) -> Self {
        self.config.snapshot_version = version;
        self
    }

    /// Calls `listener` once for every entry that leaves the cache, with
    /// its key, its value and why ([`RemovalCause`]): `remove`, `clear` and
    /// `#[cached]`'s `_invalidate` say `Explicit`; an `insert` over a present
    /// key says `Replaced` (for the old value); the size bound says `Size`
    /// (so does a value never stored: `max_size(0)`, or a newcomer refused
    /// by `Policy::TinyLfu`); a TTL says `Expired`. Loads in flight are not
    /// entries; dropping the cache tells nothing.
    ///
    /// The listener runs after the cache's lock is released, on the thread
    /// of the operation that removed the entry (so it may call back into
    /// the cache), and a panic in it is caught and counted in
    /// [`Metrics::listener_panics`](crate::Metrics::listener_panics).
    /// Expirations are told within a second of their deadline even when
    /// nobody touches the cache, if it was built inside a tokio runtime (a
    /// task there expires due entries; it ends with the cache).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use async_cache::{Cache, RemovalCause};
    ///
    /// let told = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&told);
    /// let cache = Cache::<u32, String>::builder()
    ///     .max_size(1)
    ///     .eviction_listener(move |key: &u32, _value: &String, cause| log.lock().unwrap().push((*key, cause)))
    ///     .build();
    /// cache.insert(1, "a".into());
    /// cache.insert(1, "b".into()); // replaces "a"
    /// cache.insert(2, "c".into()); // pushes 1 out
    /// cache.remove(&2);
    /// assert_eq!(
    ///     *told.lock().unwrap(),
    ///     [(1, RemovalCause::Replaced), (1, RemovalCause::Size), (2, RemovalCause::Explicit)]
    /// );
    /// ```
    pub fn eviction_listener(mut self, listener: impl Fn(&K, &V, RemovalCause) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// What an entry weighs against [`max_weight`](Self::max_weight) (the
    /// size of its value in bytes, say); without a weigher every entry
    /// weighs 1. It runs outside the cache's lock, once per stored value.
    ///
    /// # Examples
    ///
    /// See [`max_weight`](Self::max_weight).
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// Bounds the sum of the entries' weights (see [`weigher`](Self::weigher)):
    /// past it, entries are evicted as the policy chooses, and an entry
    /// heavier than the bound is not stored at all (the listener says
    /// `Size`). It replaces the default size bound; call
    /// [`max_size`](Self::max_size) too to bound both (under
    /// `Policy::TinyLfu`, do: `max_size` sizes the policy's regions and
    /// frequency sketch).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// // At most 1 KiB of values.
    /// let pages = Cache::<u32, String>::builder()
    ///     .weigher(|_key, page: &String| page.len() as u32)
    ///     .max_weight(1024)
    ///     .build();
    /// pages.insert(1, "a".repeat(600));
    /// pages.insert(2, "b".repeat(600)); // 1,200 bytes: page 1 goes
    /// assert_eq!((pages.len(), pages.weight()), (1, 600));
    /// pages.insert(3, "c".repeat(2_000)); // heavier than the bound: not stored
    /// assert!(pages.get(&3).is_none());
    /// assert_eq!(pages.metrics().max_weight, Some(1024));
    /// ```
    pub fn max_weight(mut self, max_weight: u64) -> Self {
        self.config.max_weight = max_weight;
        self
    }

    /// Puts a shared second level behind the cache: async-cache's
    /// `RedisTier` (feature `redis`), shared by every replica of a
    /// service. `get_or_load`, `try_get_or_load`, `fetch`, `Batched` and
    /// warmup look here after a local miss (one round trip per load or
    /// batch) and only then load; a loaded value goes to both levels.
    /// `insert`, `remove` and `clear` write through, and other replicas
    /// drop their copies. `get`, `peek`, `contains_key` and `iter` stay
    /// local and never wait on the network. Entries are found by the
    /// cache's [`name`](Self::name): replicas of one cache share a name.
    ///
    /// Keys and values cross in postcard, so their serde forms must stay
    /// compatible across the replicas' builds. A tier that fails or is
    /// slow is left out (`metrics().tier_errors`), never waited on past
    /// its bound.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), async_cache::TierError> {
    /// use std::time::Duration;
    /// use async_cache::{Cache, RedisTier};
    ///
    /// let tier = RedisTier::connect("redis://127.0.0.1:6379").await?;
    /// let users: Cache<u64, String> = Cache::builder()
    ///     .max_size(10_000)
    ///     .default_ttl(Duration::from_secs(300))
    ///     .name("users")
    ///     .tier(tier.clone())
    ///     .build();
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tier")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn tier(mut self, tier: impl crate::Tier) -> Self
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        V: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.tier = Some(crate::tier::link(Arc::new(tier)));
        self
    }

    /// Builds the cache.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// let cache: Cache<String, u32> = Cache::builder().build();
    /// assert_eq!(cache.metrics().max_size, Some(128));
    /// ```
    pub fn build(self) -> Cache<K, V, S>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: std::hash::BuildHasher + Send + Sync + 'static,
    {
        let mut config = self.config;
        if config.max_weight != u64::MAX {
            // The weight bound replaces the default size bound.
            if !self.sized {
                config.max_size = usize::MAX;
            }
            // Without a weigher every entry weighs 1: a size bound.
            if self.weigher.is_none() {
                config.max_size = config.max_size.min(usize::try_from(config.max_weight).unwrap_or(usize::MAX));
            }
        }
        #[allow(unused_mut)]
        let mut store = Store::new(config, self.listener, self.weigher, self.hasher);
        #[cfg(feature = "tier")]
        {
            store.tier = self.tier;
        }
        Cache::from_store(store)
    }
}
