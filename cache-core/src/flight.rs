//! A load in flight: the outcome its waiters are parked on.
//!
//! The leader's placeholder in the store holds an `Arc<Flight>`; callers that
//! find the placeholder wait on it. A flight ends exactly once, with a value,
//! an error, or `Abandoned` when the leader panicked or was dropped; waiters
//! of an abandoned flight go back to the store, where one of them becomes the
//! next leader. A waiter that is dropped takes its waker out, so a cancelled
//! caller leaves nothing behind.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::Cache;
use crate::store::{Claim, Lead, Store};
use crate::sync::{Mutex, lock};

/// An error shared by every caller of a failed flight.
pub(crate) type SharedError = Arc<dyn Any + Send + Sync>;

/// How a failed load's error reaches the callers that waited on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Errors {
    /// Every waiter gets the leader's error, behind one `Arc`.
    Shared,
    /// The leader keeps its error; each waiter runs its own loader once,
    /// outside single-flight. For error types that cannot be shared.
    PerCaller,
}

/// A failed load, as `load` returns it.
pub(crate) enum Failure<E> {
    Shared(Arc<E>),
    Own(E),
}

impl<E> Failure<E> {
    /// The shared error; `Own` only comes from `Errors::PerCaller`.
    fn shared(self) -> Arc<E> {
        match self {
            Failure::Shared(error) => error,
            Failure::Own(error) => Arc::new(error),
        }
    }
}

/// How a flight ended.
pub(crate) enum Outcome<V> {
    Value(V),
    Error(SharedError),
    /// A batch loader answered without this key: it has no value.
    Absent,
    /// A batch loader panicked, with this message.
    Panicked(Arc<str>),
    /// The leader's loader failed and kept its error: each waiter makes its
    /// own attempt (errors that cannot be shared, see [`Errors`]).
    Failed,
    /// The leader panicked or was cancelled before it finished.
    Abandoned,
}

impl<V: Clone> Clone for Outcome<V> {
    fn clone(&self) -> Self {
        match self {
            Outcome::Value(v) => Outcome::Value(v.clone()),
            Outcome::Error(e) => Outcome::Error(Arc::clone(e)),
            Outcome::Absent => Outcome::Absent,
            Outcome::Panicked(message) => Outcome::Panicked(Arc::clone(message)),
            Outcome::Failed => Outcome::Failed,
            Outcome::Abandoned => Outcome::Abandoned,
        }
    }
}

pub(crate) struct Flight<V> {
    outcome: OnceLock<Outcome<V>>,
    waiters: Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    wakers: Vec<Option<Waker>>,
    vacant: Vec<usize>,
}

impl<V> std::fmt::Debug for Flight<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight").field("done", &self.outcome.get().is_some()).finish()
    }
}

impl<V> Flight<V> {
    pub(crate) fn new() -> Self {
        Flight { outcome: OnceLock::new(), waiters: Mutex::new(Waiters::default()) }
    }

    /// Ends the flight and wakes every waiter. Later calls do nothing.
    pub(crate) fn finish(&self, outcome: Outcome<V>) {
        if self.outcome.set(outcome).is_err() {
            return;
        }
        // Taken under the lock, woken outside it: a waiter registering now
        // either sees the outcome or has its waker taken here.
        let wakers = std::mem::take(&mut lock(&self.waiters).wakers);
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Waits for the outcome.
    pub(crate) fn wait(self: Arc<Self>) -> Wait<V> {
        Wait { flight: self, place: None }
    }
}

/// The future returned by [`Flight::wait`].
pub(crate) struct Wait<V> {
    flight: Arc<Flight<V>>,
    place: Option<usize>,
}

impl<V> Wait<V> {
    /// Takes this waiter's waker out, unless the flight is over: `finish`
    /// has taken every waker already, and skipping the lock matters when ten
    /// thousand waiters wake at once.
    fn unregister(&mut self) {
        let Some(place) = self.place.take() else {
            return;
        };
        if self.flight.outcome.get().is_some() {
            return;
        }
        let mut waiters = lock(&self.flight.waiters);
        // `finish` may have run since the check: then the place is stale.
        if let Some(slot) = waiters.wakers.get_mut(place) {
            *slot = None;
            waiters.vacant.push(place);
        }
    }
}

impl<V: Clone> Future for Wait<V> {
    type Output = Outcome<V>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<V>> {
        let this = &mut *self;
        if let Some(outcome) = this.flight.outcome.get() {
            let outcome = outcome.clone();
            this.unregister();
            return Poll::Ready(outcome);
        }
        {
            let mut waiters = lock(&this.flight.waiters);
            if this.flight.outcome.get().is_none() {
                match this.place {
                    Some(place) => match &mut waiters.wakers[place] {
                        Some(waker) => waker.clone_from(cx.waker()),
                        slot => *slot = Some(cx.waker().clone()),
                    },
                    None => {
                        let waker = Some(cx.waker().clone());
                        let place = match waiters.vacant.pop() {
                            Some(place) => {
                                waiters.wakers[place] = waker;
                                place
                            }
                            None => {
                                waiters.wakers.push(waker);
                                waiters.wakers.len() - 1
                            }
                        };
                        this.place = Some(place);
                    }
                }
                return Poll::Pending;
            }
        }
        // Finished between the first check and the lock.
        let outcome = this.flight.outcome.get().expect("checked above").clone();
        this.unregister();
        Poll::Ready(outcome)
    }
}

impl<V> Drop for Wait<V> {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// The leader's side of a flight. Dropped without an outcome (the loader
/// panicked or the caller was cancelled), it takes the placeholder out and
/// abandons the flight, so a waiter takes the load over.
struct Leader<'a, K, V> {
    store: &'a Store<K, V>,
    lead: Option<Lead<V>>,
}

impl<K: Hash + Eq, V: Clone> Leader<'_, K, V> {
    fn succeed(mut self, value: &V, ttl: Option<Duration>) {
        let lead = self.lead.take().expect("a leader finishes once");
        self.store.resolve(&lead, value.clone(), ttl);
        // The placeholder is gone, so nobody can join any more: with no
        // other handle on the flight there is nobody to hand a copy to.
        if Arc::strong_count(&lead.flight) > 1 {
            lead.flight.finish(Outcome::Value(value.clone()));
        }
    }

    fn fail(mut self, outcome: impl Fn() -> Outcome<V>) {
        let lead = self.lead.take().expect("a leader finishes once");
        self.store.fail([&lead], outcome);
    }
}

impl<K, V> Drop for Leader<'_, K, V> {
    fn drop(&mut self) {
        if let Some(lead) = self.lead.take() {
            self.store.fail([&lead], || Outcome::Abandoned);
        }
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
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
        let loaded = self.load(key, ttl, true, Errors::Shared, || async { Ok::<V, Infallible>(load().await) });
        match loaded.await {
            Ok(value) => value,
            Err(Failure::Own(never)) => match never {},
            Err(Failure::Shared(never)) => match *never {},
        }
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
        let found = if lookup { store.get(hash, &key) } else { store.peek(hash, &key) };
        if let Some(value) = found {
            return Ok(value);
        }
        let mut key = Some(key);
        let mut load = Some(load);
        loop {
            let lead = match store.claim(hash, &mut key) {
                Claim::Hit(value) => return Ok(value),
                Claim::Lead(lead) => lead,
                Claim::Join(flight) => {
                    match (flight.wait().await, errors) {
                        (Outcome::Value(value), _) => {
                            store.counters.coalesced.inc();
                            return Ok(value);
                        }
                        (Outcome::Error(error), Errors::Shared) => {
                            if let Ok(error) = error.downcast::<E>() {
                                store.counters.coalesced.inc();
                                return Err(Failure::Shared(error));
                            }
                        }
                        (Outcome::Error(_) | Outcome::Failed, Errors::PerCaller) => {
                            let key = key.take().expect("a waiter still owns its key");
                            let load = load.take().expect("a waiter has not run its loader");
                            return self.load_alone(key, ttl, load).await;
                        }
                        // Back to the store: one waiter places a new
                        // placeholder and leads, the others join it. A
                        // batch's "no value" or panic is not an answer for a
                        // caller with its own loader.
                        _ => {}
                    }
                    continue;
                }
            };
            let leader = Leader { store, lead: Some(lead) };
            store.counters.loads.inc();
            let load = load.take().expect("a caller leads at most once");
            return match self.timed(load()).await {
                Ok(value) => {
                    leader.succeed(&value, ttl);
                    Ok(value)
                }
                Err(error) => {
                    store.counters.load_errors.inc();
                    match errors {
                        Errors::Shared => {
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
            };
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
        match self.timed(load()).await {
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

    /// Runs a load, reporting its duration to the load observer, if any.
    pub(crate) async fn timed<T>(&self, load: impl Future<Output = T>) -> T {
        let Some(observer) = self.store.observer() else {
            return load.await;
        };
        let started = tokio::time::Instant::now();
        let out = load.await;
        observer(started.elapsed());
        out
    }
}

#[cfg(all(test, not(shuttle)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_waiter_gets_the_outcome() {
        let flight = Arc::new(Flight::<u32>::new());
        let waiters: Vec<_> = (0..20).map(|_| tokio::spawn(Arc::clone(&flight).wait())).collect();
        tokio::task::yield_now().await;
        flight.finish(Outcome::Value(7));
        for w in waiters {
            let got = tokio::time::timeout(Duration::from_secs(5), w).await.unwrap().unwrap();
            assert!(matches!(got, Outcome::Value(7)));
        }
        // A late waiter sees it at once.
        assert!(matches!(Arc::clone(&flight).wait().await, Outcome::Value(7)));
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_no_waker_behind() {
        let flight = Arc::new(Flight::<u32>::new());
        let mut wait = Box::pin(Arc::clone(&flight).wait());
        let first = std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        assert_eq!(lock(&flight.waiters).wakers.iter().flatten().count(), 1);
        drop(wait);
        assert_eq!(lock(&flight.waiters).wakers.iter().flatten().count(), 0);
        flight.finish(Outcome::Abandoned);
    }
}
