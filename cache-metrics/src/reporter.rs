//! [`register`] and the [`MetricsReporter`] it returns.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{Cache, Metrics};
use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::names;

/// How often [`register`]'s reporter publishes on its own.
const EVERY: Duration = Duration::from_secs(1);

/// Describes the cache's metrics to the installed `metrics` recorder and
/// publishes them, labelled `cache="<name>"`: at once, then every second
/// until the returned reporter (or the cache) is dropped. A scrape can thus
/// lag the cache by up to a second: call [`MetricsReporter::publish`] before
/// one that must be exact, or set another interval with [`register_every`].
///
/// Counters are the cache's lifetime totals, so they never go down, even
/// after [`Cache::reset_metrics`]. `cache_hit_ratio` covers the lookups since
/// the previous publication. Load durations go to the
/// `cache_load_duration_seconds` histogram as loads finish; this replaces any
/// observer set with [`Cache::observe_loads`].
///
/// # Panics
///
/// Outside a tokio runtime: the reporter is a task on it.
///
/// # Examples
///
/// ```
/// use async_cache::Cache;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // With metrics-exporter-prometheus (or any recorder) installed:
/// let users = Cache::<u64, String>::builder().name("users").build();
/// let reporter = async_cache::metrics::register(&users);
/// users.get(&1);
/// reporter.publish(); // now, rather than within the next second
/// # }
/// ```
#[must_use = "publishing stops when the MetricsReporter is dropped: keep it for as long as the cache should report"]
pub fn register<K, V>(cache: &Cache<K, V>) -> MetricsReporter
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    register_every(cache, EVERY)
}

/// [`register`], publishing every `every` instead of every second (match
/// the scrape interval, or publish more often for a dashboard that must
/// follow closely).
///
/// # Panics
///
/// Outside a tokio runtime, or if `every` is zero.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_cache::Cache;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let users = Cache::<u64, String>::builder().name("users").build();
/// // Prometheus scrapes every 15 s here: publishing more often is wasted.
/// let _reporter = async_cache::metrics::register_every(&users, Duration::from_secs(15));
/// # }
/// ```
#[must_use = "publishing stops when the MetricsReporter is dropped: keep it for as long as the cache should report"]
pub fn register_every<K, V>(cache: &Cache<K, V>, every: Duration) -> MetricsReporter
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    assert!(!every.is_zero(), "register_every needs a non-zero interval");
    describe();
    let name = cache.name().to_string();
    let handles = Handles::new(&name);
    let live = Arc::new(AtomicBool::new(true));
    {
        let durations = histogram!(names::LOAD_DURATION, names::LABEL => name.clone());
        let live = Arc::clone(&live);
        cache.observe_loads(move |took| {
            if live.load(Ordering::Relaxed) {
                durations.record(took.as_secs_f64());
            }
        });
    }
    // Publishes; false once the cache is gone.
    let publish: Arc<dyn Fn() -> bool + Send + Sync> = {
        let cache = cache.downgrade();
        Arc::new(move || match cache.upgrade() {
            Some(cache) => {
                handles.publish(&cache.lifetime_metrics());
                true
            }
            None => false,
        })
    };
    publish();
    let task = {
        let publish = Arc::clone(&publish);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if !publish() {
                    return;
                }
            }
        })
    };
    MetricsReporter { name, publish, live, task }
}

fn describe() {
    describe_counter!(names::HITS, Unit::Count, "Cache lookups that found a live value.");
    describe_counter!(names::MISSES, Unit::Count, "Cache lookups that found no live value.");
    describe_counter!(names::EVICTIONS, Unit::Count, "Entries evicted because the cache was full.");
    describe_counter!(names::EXPIRATIONS, Unit::Count, "Entries removed because their TTL passed.");
    describe_counter!(names::LOADS, Unit::Count, "Loader runs (single-flight or batched), failed ones included.");
    describe_counter!(names::LOAD_ERRORS, Unit::Count, "Loader runs that failed.");
    describe_counter!(
        names::COALESCED,
        Unit::Count,
        "Callers served by another caller's load (herd protection at work)."
    );
    describe_gauge!(names::SIZE, Unit::Count, "Live entries in the cache.");
    describe_gauge!(names::MAX_SIZE, Unit::Count, "The cache's size bound.");
    describe_gauge!(names::HIT_RATIO, "Hits over lookups since the previous publication (about the last second).");
    describe_histogram!(names::LOAD_DURATION, Unit::Seconds, "How long each load took.");
}

/// One cache's metric handles, and what was last published.
struct Handles {
    hits: Counter,
    misses: Counter,
    evictions: Counter,
    expirations: Counter,
    loads: Counter,
    load_errors: Counter,
    coalesced: Counter,
    size: Gauge,
    max_size: Gauge,
    hit_ratio: Gauge,
    /// Lookups as of the previous publication, for the ratio.
    last: Mutex<(u64, u64)>,
}

impl Handles {
    fn new(name: &str) -> Self {
        let label = || (names::LABEL, name.to_string());
        let counter = |metric: &'static str| {
            let (key, value) = label();
            counter!(metric, key => value)
        };
        let gauge = |metric: &'static str| {
            let (key, value) = label();
            gauge!(metric, key => value)
        };
        Handles {
            hits: counter(names::HITS),
            misses: counter(names::MISSES),
            evictions: counter(names::EVICTIONS),
            expirations: counter(names::EXPIRATIONS),
            loads: counter(names::LOADS),
            load_errors: counter(names::LOAD_ERRORS),
            coalesced: counter(names::COALESCED),
            size: gauge(names::SIZE),
            max_size: gauge(names::MAX_SIZE),
            hit_ratio: gauge(names::HIT_RATIO),
            last: Mutex::new((0, 0)),
        }
    }

    fn publish(&self, m: &Metrics) {
        self.hits.absolute(m.hits);
        self.misses.absolute(m.misses);
        self.evictions.absolute(m.evictions);
        self.expirations.absolute(m.expirations);
        self.loads.absolute(m.loads);
        self.load_errors.absolute(m.load_errors);
        self.coalesced.absolute(m.coalesced);
        self.size.set(m.size as f64);
        if let Some(max) = m.max_size {
            self.max_size.set(max as f64);
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (hits, lookups) = (m.hits - last.0, m.hits + m.misses - last.1);
        if lookups > 0 {
            self.hit_ratio.set(hits as f64 / lookups as f64);
        }
        *last = (m.hits, m.hits + m.misses);
    }
}

/// Publishes one cache's metrics until dropped; from [`register`].
#[must_use = "publishing stops when the MetricsReporter is dropped: keep it for as long as the cache should report"]
pub struct MetricsReporter {
    name: String,
    publish: Arc<dyn Fn() -> bool + Send + Sync>,
    live: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsReporter {
    /// Publishes now: for a scrape that must see the latest counts.
    ///
    /// # Examples
    ///
    /// See [`register`].
    pub fn publish(&self) {
        let _alive = (self.publish)();
    }
}

impl fmt::Debug for MetricsReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsReporter").field("cache", &self.name).finish_non_exhaustive()
    }
}

impl Drop for MetricsReporter {
    fn drop(&mut self) {
        self.live.store(false, Ordering::Relaxed);
        self.task.abort();
    }
}
