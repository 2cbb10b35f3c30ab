//! Single-flight loading: the protocol that leads, joins and hands over
//! loads of one key, on the store's placeholders and the flights they hold.
//!
//! A caller that misses claims the key in the store: it finds a value, joins
//! the flight of a load already under way, or places its own placeholder and
//! leads. The leader's [`Leader`] guard makes sure the flight ends whatever
//! happens: with the value, the error, or `Abandoned` if the loader panics or
//! the caller is dropped, and then one waiter leads in its stead.

use std::borrow::Borrow;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::time::Duration;

use crate::Cache;
use crate::flight::{Outcome, SharedError};
use crate::observe::LoadOutcome;
use crate::store::{Claim, Placeholder, Store};

/// How a failed load's error reaches the callers that waited on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Errors {
    /// Every waiter gets the leader's error, behind one `Arc`.
    Shared,
    /// The leader keeps its error; each waiter runs its own loader once,
    /// outside single-flight. For error types that cannot be shared.
    PerCaller,
    /// As `Shared`, but the "error" is the loader finding nothing
    /// (`#[cached]` on a function returning `Option`): not counted as a
    /// failure.
    Nothing,
}

/// A key encoded for the cache's tier; `None` without one. Nothing at all
/// without the feature: the miss path carries no field for it.
#[cfg(feature = "tier")]
pub(crate) type TierKey = Option<Vec<u8>>;
#[cfg(not(feature = "tier"))]
#[derive(Clone)]
pub(crate) struct TierKey;

/// A failed load, as `load` returns it.
pub(crate) enum Failure<E> {
    Shared(Arc<E>),
    Own(E),
}

impl<E> Failure<E> {
    /// The shared error; `Own` only comes from `Errors::PerCaller`.
    pub(crate) fn shared(self) -> Arc<E> {
        match self {
            Failure::Shared(error) => error,
            Failure::Own(error) => Arc::new(error),
        }
    }
}

/// The value of a load whose loader cannot fail.
fn infallible<V>(loaded: Result<V, Failure<Infallible>>) -> V {
    match loaded {
        Ok(value) => value,
        Err(Failure::Own(never)) => match never {},
        Err(Failure::Shared(never)) => match *never {},
    }
}

/// What a waiter makes of the outcome of the flight it joined.
pub(crate) enum Joined<V, E> {
    /// The flight's value, or its error (shared).
    Served(Result<V, Failure<E>>),
    /// The flight failed with an error this waiter cannot share: it tries
    /// on its own, outside single-flight.
    OnItsOwn,
    /// No answer for this waiter (the leader gave up, or a batch had no
    /// value for it or panicked): back to the store.
    Again,
}

impl<V, E: Send + Sync + 'static> Joined<V, E> {
    pub(crate) fn from(outcome: Outcome<V>, errors: Errors) -> Self {
        match (outcome, errors) {
            (Outcome::Value(value), _) => Joined::Served(Ok(value)),
            (Outcome::Error(error), Errors::Shared | Errors::Nothing) => match error.downcast::<E>() {
                Ok(error) => Joined::Served(Err(Failure::Shared(error))),
                // Another error type than this caller's loader: its own go.
                Err(_) => Joined::Again,
            },
            (Outcome::Error(_) | Outcome::Failed, Errors::PerCaller) => Joined::OnItsOwn,
            // A batch's "no value" or panic is not an answer for a caller
            // with its own loader.
            _ => Joined::Again,
        }
    }
}

/// The leader's side of a flight. Dropped without an outcome (the loader
/// panicked or the caller was cancelled), it takes the placeholder out and
/// abandons the flight, so a waiter takes the load over.
pub(crate) struct Leader<'a, K, V, S> {
    pub(crate) store: &'a Store<K, V, S>,
    pub(crate) lead: Option<Placeholder<V>>,
}

impl<K: Hash + Eq, V: Clone, S: BuildHasher> Leader<'_, K, V, S> {
    /// Stores `value` and hands it to the waiters; whether it was still
    /// current (see `Store::resolve`). Inlined: with the tier a second
    /// caller made LLVM keep it out of line, at 46 instructions a miss.
    #[inline(always)]
    fn succeed(mut self, value: &V, ttl: Option<Duration>) -> bool {
        // User code first (the weigher, `Clone`), while this guard still
        // holds the placeholder: if it panics, the flight is abandoned and a
        // waiter takes the load over.
        let weight = self.store.weigh_lead(self.lead.as_ref().expect("a leader finishes once"), value);
        let stored = value.clone();
        let lead = self.lead.take().expect("a leader finishes once");
        // The placeholder is gone, so nobody can join any more: the flight
        // comes back only if someone else holds it, to hand a copy to.
        let (current, waited) = self.store.resolve(lead, stored, ttl, weight);
        if let Some(flight) = waited {
            match catch_unwind(AssertUnwindSafe(|| value.clone())) {
                Ok(copy) => flight.finish(Outcome::Value(copy)),
                // No copy for the waiters: they look again, and find the
                // value stored. The panic is the leader's caller's.
                Err(panic) => {
                    flight.finish(Outcome::Abandoned);
                    resume_unwind(panic);
                }
            }
        }
        current
    }

    fn fail(mut self, outcome: impl Fn() -> Outcome<V>) {
        let lead = self.lead.take().expect("a leader finishes once");
        self.store.fail([&lead], outcome);
    }
}

impl<K, V, S> Drop for Leader<'_, K, V, S> {
    fn drop(&mut self) {
        if let Some(lead) = self.lead.take() {
            self.store.fail([&lead], || Outcome::Abandoned);
        }
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The value for `key`, loading it with `load` on a miss and storing it
    /// with the default TTL.
    ///
    /// Single-flight: concurrent callers for one missing key share one run of
    /// one caller's loader; the others wait for its value. If that loader
    /// panics (the panic propagates in the caller that ran it) or its caller
    /// is dropped, one waiter takes the load over with its own loader: no
    /// waiter is ever left hanging. A `remove`, `insert` or `clear` of `key`
    /// during the load wins: waiters get the loaded value, but it is not
    /// stored.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = Cache::<u64, String>::new(100);
    /// let calls = std::sync::atomic::AtomicUsize::new(0);
    /// let load = || async {
    ///     calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ///     tokio::task::yield_now().await; // a real loader awaits a database
    ///     "user 7".to_string()
    /// };
    /// let (a, b) = tokio::join!(cache.get_or_load(7, load), cache.get_or_load(7, load));
    /// assert_eq!((a.as_str(), b.as_str()), ("user 7", "user 7"));
    /// assert_eq!(calls.into_inner(), 1);
    /// let m = cache.metrics();
    /// assert_eq!((m.misses, m.loads, m.coalesced), (2, 1, 1));
    /// # }
    /// ```
    pub async fn get_or_load<F, Fut>(&self, key: K, load: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        self.get_or_load_with_ttl(key, self.store.config.default_ttl, load).await
    }

    /// [`get_or_load`](Self::get_or_load) storing the value with its own TTL
    /// (`None`: never expires).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let cache = Cache::<u64, u64>::new(100);
    /// let ttl = Some(Duration::from_secs(10));
    /// assert_eq!(cache.get_or_load_with_ttl(1, ttl, || async { 10 }).await, 10);
    /// tokio::time::advance(Duration::from_secs(11)).await;
    /// assert_eq!(cache.get(&1), None);
    /// # }
    /// ```
    pub async fn get_or_load_with_ttl<F, Fut>(&self, key: K, ttl: Option<Duration>, load: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        infallible(self.load(key, ttl, true, Errors::Shared, || async { Ok::<V, Infallible>(load().await) }).await)
    }

    /// [`get_or_load`](Self::get_or_load) for a fallible loader. An `Err`
    /// reaches every caller waiting on that load as the same `Arc<E>`, and
    /// nothing is cached: the next call loads again.
    ///
    /// A waiter whose loader has another error type than the leader's (or an
    /// infallible waiter) cannot receive the leader's error; it takes the
    /// load over with its own loader instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = Cache::<u64, String>::new(100);
    /// let failed = cache.try_get_or_load(1, || async { Err::<String, _>("db down") }).await;
    /// assert_eq!(*failed.unwrap_err(), "db down");
    /// assert!(!cache.contains_key(&1));
    ///
    /// let loaded = cache.try_get_or_load(1, || async { Ok::<_, &str>("one".to_string()) }).await;
    /// assert_eq!(loaded.unwrap(), "one");
    /// assert_eq!(cache.metrics().load_errors, 1);
    /// # }
    /// ```
    pub async fn try_get_or_load<F, Fut, E>(&self, key: K, load: F) -> Result<V, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        self.try_get_or_load_with_ttl(key, self.store.config.default_ttl, load).await
    }

    /// [`try_get_or_load`](Self::try_get_or_load) storing the value with its
    /// own TTL (`None`: never expires).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = Cache::<u64, u64>::new(100);
    /// let ttl = Some(Duration::from_secs(30));
    /// let v = cache.try_get_or_load_with_ttl(1, ttl, || async { Ok::<_, std::io::Error>(1) }).await;
    /// assert_eq!(v.unwrap(), 1);
    /// # }
    /// ```
    pub async fn try_get_or_load_with_ttl<F, Fut, E>(&self, key: K, ttl: Option<Duration>, load: F) -> Result<V, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let loaded = self.load(key, ttl, true, Errors::Shared, load).await;
        loaded.map_err(Failure::shared)
    }

    /// [`get_or_load`](Self::get_or_load) with a borrowed key: a hit makes
    /// no owned key (a `&str` looking up a `String` key allocates nothing);
    /// only a miss turns it into a `K`, with `ToOwned`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = Cache::<String, usize>::new(100);
    /// let len = cache.get_or_load_by_ref("ada", || async { 3 }).await; // a miss: "ada".to_owned()
    /// assert_eq!(len, 3);
    /// assert_eq!(cache.get_or_load_by_ref("ada", || async { 0 }).await, 3); // a hit: no String made
    /// # }
    /// ```
    pub async fn get_or_load_by_ref<Q, F, Fut>(&self, key: &Q, load: F) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        infallible(self.load_by_ref(key, Errors::Shared, || async { Ok::<V, Infallible>(load().await) }).await)
    }

    /// [`try_get_or_load`](Self::try_get_or_load) with a borrowed key, as
    /// [`get_or_load_by_ref`](Self::get_or_load_by_ref).
    ///
    /// # Errors
    ///
    /// The loader's error, shared with every caller of that load.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = Cache::<String, usize>::new(100);
    /// let len = cache.try_get_or_load_by_ref("ada", || async { Ok::<_, std::io::Error>(3) }).await;
    /// assert_eq!(len.unwrap(), 3);
    /// # }
    /// ```
    pub async fn try_get_or_load_by_ref<Q, F, Fut, E>(&self, key: &Q, load: F) -> Result<V, Arc<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        self.load_by_ref(key, Errors::Shared, load).await.map_err(Failure::shared)
    }

    /// The hit path on the borrowed key (counting the lookup), then the
    /// single-flight protocol on an owned one.
    async fn load_by_ref<Q, F, Fut, E>(&self, key: &Q, errors: Errors, load: F) -> Result<V, Failure<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let store = &*self.store;
        if let Some(value) = store.get(store.hash(key), key) {
            return Ok(value);
        }
        // Counted as a miss above: the protocol looks again without counting.
        self.load(key.to_owned(), store.config.default_ttl, false, errors, load).await
    }

    /// The single-flight protocol. `lookup` counts the first lookup as a hit
    /// or miss (warmup does not count).
    pub(crate) async fn load<F, Fut, E>(
        &self,
        key: K,
        ttl: Option<Duration>,
        lookup: bool,
        errors: Errors,
        load: F,
    ) -> Result<V, Failure<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let store = &*self.store;
        let hash = store.hash(&key);
        let found = if lookup { store.get_before_claim(hash, &key) } else { store.peek(hash, &key) };
        if let Some(value) = found {
            return Ok(value);
        }
        let tiered = self.tier_key(&key);
        let mut key = Some(key);
        let mut load = Some(load);
        // The first claim counts the miss.
        let mut miss = lookup;
        loop {
            match store.claim(hash, &mut key, std::mem::take(&mut miss)) {
                Claim::Hit(value) => return Ok(value),
                Claim::Lead(placeholder) => {
                    // The guard first: it ends the flight if the load panics
                    // or this caller is dropped mid-load.
                    let leader = Leader { store, lead: Some(placeholder) };
                    // Entered only with a tier key: a cache without a tier
                    // pays no await for it (callgrind: 40 instructions a miss).
                    #[cfg(feature = "tier")]
                    let leader = match tiered.is_some() {
                        true => match self.serve_from_tier(leader, &tiered, ttl).await {
                            Ok(value) => return Ok(value),
                            Err(leader) => leader,
                        },
                        false => leader,
                    };
                    store.counters.loads.inc();
                    let load = load.take().expect("a caller leads at most once");
                    // Timed here, not through `timed`: a nested future cost
                    // 60 instructions a miss.
                    let timing = store.observers.start(1, false);
                    let loaded = load().await;
                    Self::timing_ends(timing, &loaded, errors);
                    return self.end_lead(leader, loaded, ttl, errors, tiered);
                }
                Claim::Join(flight) => match Joined::from(flight.wait().await, errors) {
                    Joined::Served(answer) => {
                        store.counters.coalesced.inc();
                        return answer;
                    }
                    Joined::OnItsOwn => {
                        let key = key.take().expect("a waiter still owns its key");
                        let load = load.take().expect("a waiter has not run its loader");
                        return self.load_alone(key, ttl, load).await;
                    }
                    // Back to the store: one waiter places a new placeholder
                    // and leads, the others join it.
                    Joined::Again => {}
                },
            }
        }
    }

    /// Looks for a flight's value in the tier (if the cache has one and the
    /// key encoded): found, it is stored and handed to the waiters; if not,
    /// the leader comes back to load.
    #[cfg(feature = "tier")]
    pub(crate) async fn serve_from_tier<'a>(
        &self,
        leader: Leader<'a, K, V, S>,
        tiered: &TierKey,
        ttl: Option<Duration>,
    ) -> Result<V, Leader<'a, K, V, S>> {
        let store = &*self.store;
        let (Some(link), Some(key)) = (&store.tier, tiered) else { return Err(leader) };
        match link.lookup(&store.config.name, &store.counters, &[key]).await.pop().flatten() {
            Some((value, left)) => {
                leader.succeed(&value, crate::tier::shorter(ttl, left));
                Ok(value)
            }
            None => Err(leader),
        }
    }

    /// Ends a flight this caller led with what its loader returned: the
    /// value is stored and handed to every waiter (and written to the tier,
    /// if the cache has one and no write or invalidation cut the load off);
    /// an error is handed to them (or each tries on its own, see
    /// [`Errors`]). Not async: the loader is awaited inline by the caller,
    /// without a nested future.
    pub(crate) fn end_lead<E>(
        &self,
        leader: Leader<'_, K, V, S>,
        loaded: Result<V, E>,
        ttl: Option<Duration>,
        errors: Errors,
        tiered: TierKey,
    ) -> Result<V, Failure<E>>
    where
        E: Send + Sync + 'static,
    {
        match loaded {
            Ok(value) => {
                let _current = leader.succeed(&value, ttl);
                #[cfg(feature = "tier")]
                if let (true, Some(link), Some(key)) = (_current, &self.store.tier, tiered) {
                    let write = link.put(&self.store.counters, key, &value, ttl, crate::tier::PutKind::Loaded);
                    link.write(&self.store.config.name, write);
                }
                #[cfg(not(feature = "tier"))]
                let _ = tiered;
                Ok(value)
            }
            Err(error) => {
                if errors != Errors::Nothing {
                    self.store.counters.load_errors.inc();
                }
                match errors {
                    Errors::Shared | Errors::Nothing => {
                        let error = Arc::new(error);
                        leader.fail(|| Outcome::Error(Arc::clone(&error) as SharedError));
                        Err(Failure::Shared(error))
                    }
                    Errors::PerCaller => {
                        leader.fail(|| Outcome::Failed);
                        Err(Failure::Own(error))
                    }
                }
            }
        }
    }

    /// The key as the tier knows it, if the cache has a tier (and the key
    /// encodes): made before a claim moves the key into the store.
    #[inline]
    pub(crate) fn tier_key(&self, key: &K) -> TierKey {
        #[cfg(feature = "tier")]
        return self.store.tier.as_ref().and_then(|link| link.key(&self.store.counters, key));
        #[cfg(not(feature = "tier"))]
        {
            let _ = key;
            TierKey
        }
    }

    /// A waiter's own attempt after a failed flight whose error it cannot
    /// share: outside single-flight, storing a value like any load.
    async fn load_alone<F, Fut, E>(&self, key: K, ttl: Option<Duration>, load: F) -> Result<V, Failure<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.store.counters.loads.inc();
        match self.timed(load(), Errors::PerCaller).await {
            Ok(value) => {
                self.insert_with_ttl(key, value.clone(), ttl);
                Ok(value)
            }
            Err(error) => {
                self.store.counters.load_errors.inc();
                Err(Failure::Own(error))
            }
        }
    }

    /// Runs a load, reporting it to the load observers, if any: ended, or
    /// cancelled or panicked if this future is dropped or unwinds first.
    pub(crate) async fn timed<T, E>(&self, load: impl Future<Output = Result<T, E>>, errors: Errors) -> Result<T, E> {
        let timing = self.store.observers.start(1, false);
        let out = load.await;
        Self::timing_ends(timing, &out, errors);
        out
    }

    /// Ends a load's timing (if observers are listening) with how it went.
    #[inline]
    fn timing_ends<T, E>(timing: Option<crate::observe::Timing>, out: &Result<T, E>, errors: Errors) {
        if let Some(timing) = timing {
            let found = out.is_ok() || errors == Errors::Nothing;
            timing.end(if found { LoadOutcome::Loaded } else { LoadOutcome::Failed });
        }
    }
}
