//! [`Cache::fetch`]: loads that run as tasks of their own, so they outlive
//! their callers, with refresh ahead, stale values when a load fails and
//! soft timeouts (see the builder's `refresh_after`, `stale_for` and
//! `load_timeout`).
//!
//! The single-flight protocol is `load.rs`'s, on the same placeholders: a
//! fetch joins any load of its key, and any load joins a fetch's. What
//! differs is who runs the loader: a task, holding the placeholder, which
//! every caller (the one that started it included) waits on like a joiner.

use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::panic::resume_unwind;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::Cache;
use crate::flight::{Flight, Outcome};
use crate::load::{Errors, Joined, Leader, TierKey};
use crate::store::{Claim, Entry, Placeholder};

/// A placeholder handed to a load task: abandoned (waking its waiters) if
/// the task is dropped before it runs, as when the runtime shuts down.
struct Handed<K, V, S> {
    cache: Cache<K, V, S>,
    lead: Option<Placeholder<V>>,
}

impl<K, V, S> Drop for Handed<K, V, S> {
    fn drop(&mut self) {
        if let Some(lead) = self.lead.take() {
            self.cache.store.fail([&lead], || Outcome::Abandoned);
        }
    }
}

/// A refresh under way: however it ends, an entry it did not replace may
/// be refreshed again later.
struct Refreshing<K, V, S> {
    cache: Cache<K, V, S>,
    entry: Entry,
}

impl<K, V, S> Drop for Refreshing<K, V, S> {
    fn drop(&mut self) {
        self.cache.store.refresh_ended(self.entry);
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The value for `key`, loading it with `load` on a miss, as
    /// [`try_get_or_load`](Self::try_get_or_load) does, but with the loader
    /// run as a tokio task of its own: a caller that is cancelled does not
    /// cancel the load, which finishes and is stored. Single-flight with
    /// every other load of `key` (`get_or_load`, `try_get_or_load`,
    /// `Batched`, other fetches). Needs a tokio runtime.
    ///
    /// Only `fetch` gets these, when the builder sets them:
    ///
    /// - [`refresh_after`](crate::CacheBuilder::refresh_after): a hit on an
    ///   entry older than that returns at once and starts one background
    ///   reload with this `load`;
    /// - [`stale_for`](crate::CacheBuilder::stale_for): when the reload of
    ///   an expired entry fails (or its loader panics), every caller of
    ///   that load gets the expired value instead of the error;
    /// - [`load_timeout`](crate::CacheBuilder::load_timeout): with such a
    ///   stale value, callers wait at most that long for the reload.
    ///
    /// Without a stale value, an error reaches every caller of the load as
    /// one `Arc<E>`, and is not cached. If the loader panics, the panic
    /// reaches the caller that started the load (if it is still there) and
    /// every other caller runs its own loader, one at a time, as with
    /// `get_or_load`.
    ///
    /// # Panics
    ///
    /// On a miss, outside a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let prices: Cache<&str, u64> = Cache::builder()
    ///     .default_ttl(Duration::from_secs(60))
    ///     .refresh_after(Duration::from_secs(45)) // reload hot keys before they expire
    ///     .stale_for(Duration::from_secs(600)) // serve the last price if the source fails
    ///     .load_timeout(Duration::from_millis(200)) // ...or is slow
    ///     .build();
    /// let price = prices.fetch("tea", || async { Ok::<_, String>(10) }).await;
    /// assert_eq!(price.unwrap(), 10);
    ///
    /// // Two minutes later the entry has expired, and the source is down:
    /// // the stale price is served instead of the error.
    /// tokio::time::advance(Duration::from_secs(120)).await;
    /// assert_eq!(prices.get("tea"), None);
    /// let price = prices.fetch("tea", || async { Err("source down".to_string()) }).await;
    /// assert_eq!(price.unwrap(), 10);
    /// assert_eq!(prices.metrics().stale_served, 1);
    ///
    /// // The source answers again: the next fetch stores the new price.
    /// let price = prices.fetch("tea", || async { Ok::<_, String>(12) }).await;
    /// assert_eq!((price.unwrap(), prices.get("tea")), (12, Some(12)));
    /// # }
    /// ```
    pub async fn fetch<F, Fut, E>(&self, key: K, load: F) -> Result<V, Arc<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let store = &*self.store;
        let hash = store.hash(&key);
        if let Some((value, refresh)) = store.get_or_refresh(hash, &key) {
            if let Some(entry) = refresh {
                self.refresh(hash, key, entry, load);
            }
            return Ok(value);
        }
        let tiered = self.tier_key(&key);
        let mut key = Some(key);
        let mut load = Some(load);
        loop {
            let (flight, task) = match store.claim(hash, &mut key, false) {
                Claim::Hit(value) => return Ok(value),
                Claim::Join(flight) => (flight, None),
                Claim::Lead(lead) => {
                    let flight = Arc::clone(lead.flight());
                    let load = load.take().expect("a caller leads at most once");
                    (flight, Some(self.spawn_load(lead, tiered.clone(), load)))
                }
            };
            let led = task.is_some();
            let outcome = match self.wait_or_stale(&flight).await {
                Ok(outcome) => outcome,
                Err(stale) => return Ok(stale),
            };
            let failed = match Joined::<V, E>::from(outcome, Errors::Shared) {
                Joined::Served(Ok(value)) => {
                    if !led {
                        store.counters.coalesced.inc();
                    }
                    return Ok(value);
                }
                Joined::Served(Err(error)) => Some(error),
                Joined::OnItsOwn | Joined::Again => None,
            };
            // The load failed: a stale value, if the cache kept one, instead.
            if let Some(stale) = store.stale_value(&flight) {
                store.counters.stale_served.inc();
                return Ok(stale);
            }
            match failed {
                Some(error) => {
                    if !led {
                        store.counters.coalesced.inc();
                    }
                    return Err(error.shared());
                }
                None => {
                    if let Some(task) = task {
                        Self::lost(task).await;
                    }
                    // The leader gave up without an answer for this caller:
                    // back to the store, with this caller's own loader.
                }
            }
        }
    }

    /// Waits for `flight`, or, with `load_timeout` and a stale value to
    /// serve, at most that long: `Err` is the stale value then (counted).
    async fn wait_or_stale(&self, flight: &Arc<Flight<V>>) -> Result<Outcome<V>, V> {
        let store = &*self.store;
        let wait = Arc::clone(flight).wait();
        let Some(timeout) = store.config.load_timeout.filter(|_| flight.stale().is_some()) else {
            return Ok(wait.await);
        };
        let mut wait = std::pin::pin!(wait);
        if let Ok(outcome) = tokio::time::timeout(timeout, wait.as_mut()).await {
            return Ok(outcome);
        }
        match store.stale_value(flight) {
            Some(stale) => {
                store.counters.stale_served.inc();
                Err(stale)
            }
            // Dropped meanwhile (a `remove`, say): wait for the load.
            None => Ok(wait.await),
        }
    }

    /// The load task this caller started ended without an outcome: its
    /// loader panicked (the panic is this caller's), or the runtime dropped
    /// it.
    async fn lost(task: JoinHandle<()>) {
        match task.await {
            Err(error) if error.is_panic() => resume_unwind(error.into_panic()),
            _ => panic!("async-cache: a fetch's load task was cancelled (is the runtime shutting down?)"),
        }
    }

    /// Runs `load` as a task that leads the flight of `lead`.
    fn spawn_load<F, Fut, E>(&self, lead: Placeholder<V>, tiered: TierKey, load: F) -> JoinHandle<()>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let mut handed = Handed { cache: self.clone(), lead: Some(lead) };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            drop(handed);
            panic!("async-cache: `Cache::fetch` runs its loader as a tokio task: call it inside a tokio runtime");
        };
        runtime.spawn(async move {
            let cache = &handed.cache;
            let store = &*cache.store;
            let leader = Leader { store, lead: handed.lead.take() };
            let ttl = store.config.default_ttl;
            // Its callers get the answer through the flight.
            #[cfg(feature = "tier")]
            let Err(leader) = cache.serve_from_tier(leader, &tiered, ttl).await else { return };
            store.counters.loads.inc();
            let loaded = cache.timed(load(), Errors::Shared).await;
            let _ = cache.end_lead(leader, loaded, ttl, Errors::Shared, tiered);
        })
    }

    /// Reloads `entry` (`key`'s) in the background, storing the value over
    /// it if it is still there when the load ends.
    fn refresh<F, Fut, E>(&self, hash: u64, key: K, entry: Entry, load: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let refreshing = Refreshing { cache: self.clone(), entry };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let cache = &refreshing.cache;
            let store = &*cache.store;
            store.counters.refreshes.inc();
            store.counters.loads.inc();
            match cache.timed(load(), Errors::Shared).await {
                Ok(value) => {
                    let ttl = store.config.default_ttl;
                    // Encoded before it is stored: no `V: Clone` for the tier.
                    #[cfg(feature = "tier")]
                    let write = store.tier.as_ref().map(|link| {
                        (link, link.put_of(&store.counters, &key, &value, ttl, crate::tier::PutKind::Refreshed))
                    });
                    let _current = store.refreshed(hash, key, entry, value, ttl);
                    #[cfg(feature = "tier")]
                    if let (true, Some((link, Some(write)))) = (_current, write) {
                        link.write(&store.config.name, write);
                    }
                }
                Err(_) => store.counters.load_errors.inc(),
            }
        });
    }
}
