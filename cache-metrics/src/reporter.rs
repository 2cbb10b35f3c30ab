//! [`register`] and the [`MetricsReporter`] it returns.

use std::collections::BTreeSet;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{Cache, Metrics};
use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::names;

/// How often [`register`]'s reporter publishes on its own.
const EVERY: Duration = Duration::from_secs(1);

/// Describes the cache's metrics to the installed `metrics` recorder and
/// publishes them, labelled `cache="<label>"`: at once, then every second
/// until the returned reporter (or the cache) is dropped. A scrape can thus
/// lag the cache by up to a second: call [`MetricsReporter::publish`] before
/// one that must be exact, or set another interval with [`register_every`].
///
/// The label is the cache's [name](cache_core::CacheBuilder::name), unless
/// a live reporter already uses it: then `<name>-2` (or `-3`, ...), so two
/// caches never write into one series (two caches left with the default
/// name would otherwise both be `cache="default"`). [`MetricsReporter::label`]
/// says which; name each cache to choose its label.
///
/// Counters are the cache's lifetime totals, so they never go down, even
/// after [`Cache::reset_metrics`]. `cache_hit_ratio` covers the lookups since
/// the previous publication. Each loader run that ends after registration
/// is observed in the `cache_load_duration_seconds` histogram (and each
/// batch in `cache_batch_size`) as it ends, through an observer added beside
/// any of your own ([`Cache::observe_loads`]) and removed with the reporter.
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
/// assert_eq!(reporter.label(), "users");
/// users.get(&1);
/// reporter.publish(); // now, rather than within the next second
/// # }
/// ```
#[must_use = "publishing stops when the MetricsReporter is dropped: keep it for as long as the cache should report"]
pub fn register<K, V, S>(cache: &Cache<K, V, S>) -> MetricsReporter
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
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
pub fn register_every<K, V, S>(cache: &Cache<K, V, S>, every: Duration) -> MetricsReporter
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    assert!(!every.is_zero(), "register_every needs a non-zero interval");
    describe();
    let label = Label::claim(cache.name());
    let handles = Handles::new(label.as_str());
    let observer = {
        let durations = histogram!(names::LOAD_DURATION, names::LABEL => label.as_str().to_string());
        let batch_sizes = histogram!(names::BATCH_SIZE, names::LABEL => label.as_str().to_string());
        cache.observe_loads(move |load| {
            durations.record(load.took.as_secs_f64());
            if load.batched {
                batch_sizes.record(load.keys as f64);
            }
        })
    };
    let cache = cache.downgrade();
    // Publishes; false once the cache is gone.
    let publish: Arc<dyn Fn() -> bool + Send + Sync> = {
        let cache = cache.clone();
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
    let unobserve = Box::new(move || {
        if let Some(cache) = cache.upgrade() {
            cache.unobserve_loads(observer);
        }
    });
    MetricsReporter { label, publish, unobserve, task }
}

fn describe() {
    describe_counter!(names::HITS, Unit::Count, "Cache lookups that found a live value.");
    describe_counter!(names::MISSES, Unit::Count, "Cache lookups that found no live value.");
    describe_counter!(names::EVICTIONS, Unit::Count, "Entries evicted because the cache was full.");
    describe_counter!(names::EXPIRATIONS, Unit::Count, "Entries removed because their TTL passed.");
    describe_counter!(
        names::LOADS,
        Unit::Count,
        "Loader runs, failed and cancelled ones included: one per single-flight load or load_batch call."
    );
    describe_counter!(names::LOAD_ERRORS, Unit::Count, "Loader runs that failed.");
    describe_counter!(names::BATCHES, Unit::Count, "load_batch calls.");
    describe_counter!(names::BATCHED_KEYS, Unit::Count, "Keys sent in load_batch calls.");
    describe_counter!(
        names::COALESCED,
        Unit::Count,
        "Callers served by another caller's load (herd protection at work)."
    );
    describe_gauge!(names::SIZE, Unit::Count, "Live entries in the cache.");
    describe_gauge!(names::MAX_SIZE, Unit::Count, "The cache's size bound.");
    describe_gauge!(
        names::WEIGHT,
        Unit::Count,
        "The sum of live entries' weights (the entry count without a weigher)."
    );
    describe_gauge!(names::MAX_WEIGHT, Unit::Count, "The cache's weight bound.");
    describe_counter!(names::LISTENER_PANICS, Unit::Count, "Panics caught in the removal listener.");
    describe_counter!(names::REFRESHES, Unit::Count, "Background reloads started by refresh_after.");
    describe_counter!(names::STALE_SERVED, Unit::Count, "fetch callers served a stale value (failed or slow load).");
    describe_counter!(names::TIER_HITS, Unit::Count, "Local misses served from the shared (Redis) tier.");
    describe_counter!(names::TIER_MISSES, Unit::Count, "Keys looked up in the shared tier and not found there.");
    describe_counter!(
        names::TIER_ERRORS,
        Unit::Count,
        "Shared-tier calls that failed or timed out, writes that did not reach it, values that did not decode."
    );
    describe_gauge!(names::HIT_RATIO, "Hits over lookups since the previous publication (about the last second).");
    describe_histogram!(names::LOAD_DURATION, Unit::Seconds, "How long each loader run took.");
    describe_histogram!(names::BATCH_SIZE, Unit::Count, "Keys per load_batch call.");
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
    batches: Counter,
    batched_keys: Counter,
    listener_panics: Counter,
    refreshes: Counter,
    stale_served: Counter,
    tier_hits: Counter,
    tier_misses: Counter,
    tier_errors: Counter,
    size: Gauge,
    max_size: Gauge,
    weight: Gauge,
    max_weight: Gauge,
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
            batches: counter(names::BATCHES),
            batched_keys: counter(names::BATCHED_KEYS),
            listener_panics: counter(names::LISTENER_PANICS),
            refreshes: counter(names::REFRESHES),
            stale_served: counter(names::STALE_SERVED),
            tier_hits: counter(names::TIER_HITS),
            tier_misses: counter(names::TIER_MISSES),
            tier_errors: counter(names::TIER_ERRORS),
            size: gauge(names::SIZE),
            max_size: gauge(names::MAX_SIZE),
            weight: gauge(names::WEIGHT),
            max_weight: gauge(names::MAX_WEIGHT),
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
        self.batches.absolute(m.batches);
        self.batched_keys.absolute(m.batched_keys);
        self.listener_panics.absolute(m.listener_panics);
        self.refreshes.absolute(m.refreshes);
        self.stale_served.absolute(m.stale_served);
        self.tier_hits.absolute(m.tier_hits);
        self.tier_misses.absolute(m.tier_misses);
        self.tier_errors.absolute(m.tier_errors);
        self.size.set(m.size as f64);
        if let Some(max) = m.max_size {
            self.max_size.set(max as f64);
        }
        self.weight.set(m.weight as f64);
        if let Some(max) = m.max_weight {
            self.max_weight.set(max as f64);
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (hits, lookups) = (m.hits - last.0, m.hits + m.misses - last.1);
        if lookups > 0 {
            self.hit_ratio.set(hits as f64 / lookups as f64);
        }
        *last = (m.hits, m.hits + m.misses);
    }
}

/// The labels of live reporters: a second cache of one name gets its own.
static LABELS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// A label in use, given back when dropped.
struct Label(String);

impl Label {
    /// `name`, or the first of `name-2`, `name-3`, ... that no live
    /// reporter uses.
    fn claim(name: &str) -> Self {
        let mut labels = LABELS.lock().unwrap_or_else(|e| e.into_inner());
        let label = std::iter::once(name.to_string())
            .chain((2..).map(|n| format!("{name}-{n}")))
            .find(|label| !labels.contains(label))
            .expect("an unbounded sequence has a free label");
        labels.insert(label.clone());
        Label(label)
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

impl Drop for Label {
    fn drop(&mut self) {
        LABELS.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.0);
    }
}

/// Publishes one cache's metrics until dropped; from [`register`].
///
/// Dropping it stops publishing and removes its load observer, as dropping
/// an `AutosaveHandle` stops autosave: a background task of the cache lives
/// as long as the handle you hold, and `#[must_use]` makes dropping it at
/// once a warning, not a surprise. The task also ends when the cache is
/// dropped.
#[must_use = "publishing stops when the MetricsReporter is dropped: keep it for as long as the cache should report"]
pub struct MetricsReporter {
    label: Label,
    publish: Arc<dyn Fn() -> bool + Send + Sync>,
    unobserve: Box<dyn Fn() + Send + Sync>,
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

    /// The `cache` label this reporter publishes under: the cache's name,
    /// or `<name>-2`, `-3`, ... when a live reporter already uses it.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let a = Cache::<u64, u64>::builder().name("sessions").build();
    /// let b = Cache::<u64, u64>::builder().name("sessions").build();
    /// let (ra, rb) = (async_cache::metrics::register(&a), async_cache::metrics::register(&b));
    /// assert_eq!((ra.label(), rb.label()), ("sessions", "sessions-2"));
    /// # }
    /// ```
    pub fn label(&self) -> &str {
        self.label.as_str()
    }
}

impl fmt::Debug for MetricsReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsReporter").field("label", &self.label.as_str()).finish_non_exhaustive()
    }
}

impl Drop for MetricsReporter {
    fn drop(&mut self) {
        self.task.abort();
        (self.unobserve)();
    }
}
