//! Load observers: what [`Cache::observe_loads`](crate::Cache::observe_loads)
//! calls once per loader run, for latency and batch-size histograms.
//!
//! Observers chain: each call adds one, and each is removed only by its own
//! [`ObserverId`], so a metrics bridge never replaces a user's observer.
//! With none registered a load pays one relaxed load of a flag.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

/// One loader run, as reported to [`Cache::observe_loads`](crate::Cache::observe_loads).
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use async_cache::{Cache, LoadEvent, LoadOutcome};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = Cache::<u32, u32>::new(10);
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = Arc::clone(&seen);
/// cache.observe_loads(move |event: &LoadEvent| log.lock().unwrap().push(*event));
/// cache.get_or_load(1, || async { 1 }).await;
/// let events = seen.lock().unwrap();
/// assert_eq!((events[0].keys, events[0].batched, events[0].outcome), (1, false, LoadOutcome::Loaded));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadEvent {
    /// How long the loader ran: until it returned, failed, panicked or was
    /// dropped with its caller.
    pub took: Duration,
    /// The keys it loaded: 1 for a single-key load, the batch's size for a
    /// `load_batch` call.
    pub keys: usize,
    /// Whether it was a [`BatchLoader::load_batch`](crate::BatchLoader::load_batch) call.
    pub batched: bool,
    /// How it ended.
    pub outcome: LoadOutcome,
}

/// How a loader run ended; see [`LoadEvent`].
///
/// # Examples
///
/// See [`LoadEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoadOutcome {
    /// It returned a value (for a batch: a map, whatever keys it held).
    Loaded,
    /// It returned an error.
    Failed,
    /// It panicked.
    Panicked,
    /// Its caller was dropped (cancelled, timed out) before it finished.
    Cancelled,
}

/// Names one observer added by [`Cache::observe_loads`](crate::Cache::observe_loads),
/// for [`Cache::unobserve_loads`](crate::Cache::unobserve_loads).
///
/// # Examples
///
/// See [`Cache::unobserve_loads`](crate::Cache::unobserve_loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObserverId(u64);

type Observer = Arc<dyn Fn(&LoadEvent) + Send + Sync>;
type List = Arc<[(ObserverId, Observer)]>;

/// A cache's observers: a list replaced whole on each change, so a load
/// takes a reference to it and calls it without holding any lock.
pub(crate) struct Observers {
    any: AtomicBool,
    list: RwLock<(u64, List)>,
}

impl Observers {
    pub(crate) fn new() -> Self {
        Observers { any: AtomicBool::new(false), list: RwLock::new((0, Arc::from([]))) }
    }

    pub(crate) fn add(&self, observer: Observer) -> ObserverId {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        let id = ObserverId(list.0);
        list.0 += 1;
        list.1 = list.1.iter().cloned().chain([(id, observer)]).collect();
        self.any.store(true, Ordering::Relaxed);
        id
    }

    pub(crate) fn remove(&self, id: ObserverId) -> bool {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        let before = list.1.len();
        list.1 = list.1.iter().filter(|(other, _)| *other != id).cloned().collect();
        self.any.store(!list.1.is_empty(), Ordering::Relaxed);
        list.1.len() != before
    }

    /// Starts timing a loader run of `keys` keys; the event goes out when
    /// the returned guard is finished or dropped. `None` (and no clock
    /// read) when nobody observes.
    #[inline]
    pub(crate) fn start(&self, keys: usize, batched: bool) -> Option<Timing> {
        // Inlined: without observers, one load and a branch.
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        self.started(keys, batched)
    }

    #[cold]
    #[inline(never)]
    fn started(&self, keys: usize, batched: bool) -> Option<Timing> {
        let list = Arc::clone(&self.list.read().unwrap_or_else(|e| e.into_inner()).1);
        Some(Timing { list, started: Instant::now(), keys, batched, outcome: None })
    }
}

/// One loader run being timed. Dropped without [`Timing::end`], the run
/// was cancelled, or it panicked if the thread is unwinding.
pub(crate) struct Timing {
    list: List,
    started: Instant,
    keys: usize,
    batched: bool,
    outcome: Option<LoadOutcome>,
}

impl Timing {
    pub(crate) fn end(mut self, outcome: LoadOutcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Timing {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(if std::thread::panicking() {
            LoadOutcome::Panicked
        } else {
            LoadOutcome::Cancelled
        });
        let event = LoadEvent { took: self.started.elapsed(), keys: self.keys, batched: self.batched, outcome };
        for (_, observer) in self.list.iter() {
            // An observer's panic is its own: it must not fail the load it
            // reports on, nor abort the process when that load is unwinding.
            let _ = catch_unwind(AssertUnwindSafe(|| observer(&event)));
        }
    }
}
