//! What `register` publishes: every metric with its value, label, unit and
//! description after a scripted sequence, through metrics-util's debugging
//! recorder; and the same through metrics-exporter-prometheus's text.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_cache::Cache;
use async_cache::metrics::{names, register, register_every};
use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// name -> label value -> value, plus units.
struct Published {
    values: HashMap<(String, String), DebugValue>,
    units: HashMap<String, Option<Unit>>,
    described: HashMap<String, bool>,
}

fn published(snapshotter: &Snapshotter) -> Published {
    let mut out = Published { values: HashMap::new(), units: HashMap::new(), described: HashMap::new() };
    for (key, unit, description, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let cache = key.labels().find(|l| l.key() == names::LABEL).map(|l| l.value().to_string()).unwrap_or_default();
        out.units.insert(key.name().to_string(), unit);
        out.described.insert(key.name().to_string(), description.is_some());
        out.values.insert((key.name().to_string(), cache), value);
    }
    out
}

impl Published {
    fn counter(&self, name: &str, cache: &str) -> u64 {
        match self.values.get(&(name.to_string(), cache.to_string())) {
            Some(DebugValue::Counter(v)) => *v,
            other => panic!("{name}{{cache={cache:?}}}: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, cache: &str) -> f64 {
        match self.values.get(&(name.to_string(), cache.to_string())) {
            Some(DebugValue::Gauge(v)) => v.into_inner(),
            other => panic!("{name}{{cache={cache:?}}}: {other:?}"),
        }
    }

    fn histogram(&self, name: &str, cache: &str) -> Vec<f64> {
        match self.values.get(&(name.to_string(), cache.to_string())) {
            Some(DebugValue::Histogram(v)) => v.iter().map(|f| f.into_inner()).collect(),
            other => panic!("{name}{{cache={cache:?}}}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_metric_has_its_value_label_unit_and_description() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let users = Cache::<u64, String>::builder().name("users").max_size(2).default_ttl(Duration::from_secs(60)).build();
    let reporter = metrics::with_local_recorder(&recorder, || register(&users));

    // 3 inserts into a cache of 2: 1 eviction.
    for k in 0..3 {
        users.insert(k, format!("user {k}"));
    }
    users.get(&1); // hit
    users.get(&2); // hit
    users.get(&0); // miss (evicted)
    // A load with 4 coalesced waiters: 5 misses, 1 load, 4 coalesced.
    let load = || async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        "loaded".to_string()
    };
    let joined = futures_join(5, || users.get_or_load(10, load)).await;
    assert!(joined.iter().all(|v| v == "loaded"));
    // A failed load: 1 miss, 1 load, 1 error.
    assert!(users.try_get_or_load(11, || async { Err::<String, _>("down") }).await.is_err());
    // Expire everything with a TTL: the two entries left expire.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(users.len(), 0);
    reporter.publish();

    let p = published(&snapshotter);
    assert_eq!(p.counter(names::HITS, "users"), 2);
    assert_eq!(p.counter(names::MISSES, "users"), 1 + 5 + 1);
    assert_eq!(p.counter(names::EVICTIONS, "users"), 2, "one by the inserts, one by the load's value");
    assert_eq!(p.counter(names::EXPIRATIONS, "users"), 2);
    assert_eq!(p.counter(names::LOADS, "users"), 2);
    assert_eq!(p.counter(names::LOAD_ERRORS, "users"), 1);
    assert_eq!(p.counter(names::COALESCED, "users"), 4);
    assert_eq!(p.gauge(names::SIZE, "users"), 0.0);
    assert_eq!(p.gauge(names::MAX_SIZE, "users"), 2.0);
    assert_eq!(p.gauge(names::HIT_RATIO, "users"), 2.0 / 9.0);
    assert_eq!(p.gauge(names::WEIGHT, "users"), 0.0, "the entry count without a weigher");
    assert_eq!(p.counter(names::LISTENER_PANICS, "users"), 0);
    assert_eq!(p.counter(names::BATCHES, "users"), 0);
    assert_eq!(p.counter(names::BATCHED_KEYS, "users"), 0);
    let durations = p.histogram(names::LOAD_DURATION, "users");
    assert_eq!(durations.len(), 2, "one per load");
    assert!(durations.iter().any(|d| (*d - 0.25).abs() < 1e-6), "{durations:?}");
    assert_eq!(p.units[names::HITS], Some(Unit::Count));
    assert_eq!(p.units[names::LOAD_DURATION], Some(Unit::Seconds));
    for name in [names::HITS, names::MISSES, names::BATCHES, names::SIZE, names::HIT_RATIO, names::LOAD_DURATION] {
        assert!(p.described[name], "{name} has help text");
    }
}

/// `fetch`'s counters as published: a refresh started, a stale value served.
#[tokio::test(start_paused = true)]
async fn refreshes_and_stale_values_served_are_published() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let prices = Cache::<u64, u64>::builder()
        .name("prices")
        .default_ttl(Duration::from_secs(10))
        .refresh_after(Duration::from_secs(5))
        .stale_for(Duration::from_secs(60))
        .build();
    let reporter = metrics::with_local_recorder(&recorder, || register(&prices));
    prices.fetch(1, || async { Ok::<_, &str>(1) }).await.unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    // A hit past refresh_after: one background refresh (it fails).
    prices.fetch(1, || async { Err::<u64, _>("down") }).await.unwrap();
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_secs(10)).await;
    // Expired and the source down: the stale value is served.
    assert_eq!(prices.fetch(1, || async { Err::<u64, _>("down") }).await.unwrap(), 1);
    reporter.publish();
    let p = published(&snapshotter);
    assert_eq!(p.counter(names::REFRESHES, "prices"), 1);
    assert_eq!(p.counter(names::STALE_SERVED, "prices"), 1);
    assert_eq!(p.counter(names::LOADS, "prices"), 3);
    assert_eq!(p.counter(names::LOAD_ERRORS, "prices"), 2);
    assert!(p.described[names::REFRESHES] && p.described[names::STALE_SERVED]);
}

/// Runs `n` copies of a future concurrently.
async fn futures_join<F: std::future::Future>(n: usize, f: impl Fn() -> F) -> Vec<F::Output> {
    futures_util::future::join_all((0..n).map(|_| f())).await
}

#[tokio::test(start_paused = true)]
async fn published_counters_never_go_down_and_the_reporter_keeps_publishing() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = Cache::<u64, u64>::builder().name("monotonic").build();
    let _reporter = metrics::with_local_recorder(&recorder, || register(&cache));
    cache.get(&1);
    cache.get(&2);
    // Published within a second, without asking.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(published(&snapshotter).counter(names::MISSES, "monotonic"), 2);
    cache.reset_metrics();
    assert_eq!(cache.metrics().misses, 0);
    cache.get(&3);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        published(&snapshotter).counter(names::MISSES, "monotonic"),
        3,
        "reset changes the snapshot, not what was published"
    );
}

#[tokio::test(start_paused = true)]
async fn the_publishing_interval_can_be_set() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = Cache::<u64, u64>::builder().name("every-5s").build();
    let _reporter = metrics::with_local_recorder(&recorder, || register_every(&cache, Duration::from_secs(5)));
    cache.get(&1);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(published(&snapshotter).counter(names::MISSES, "every-5s"), 0, "not yet: every 5 s");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(published(&snapshotter).counter(names::MISSES, "every-5s"), 1, "published at 5 s");
}

#[tokio::test(start_paused = true)]
async fn several_caches_coexist_and_publishing_stops_with_the_reporter_or_the_cache() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let a = Cache::<u64, u64>::builder().name("a").build();
    let b = Cache::<u64, u64>::builder().name("b").build();
    let (ra, rb) = metrics::with_local_recorder(&recorder, || (register(&a), register(&b)));
    a.get(&1);
    b.insert(1, 1);
    b.get(&1);
    ra.publish();
    rb.publish();
    let p = published(&snapshotter);
    assert_eq!((p.counter(names::MISSES, "a"), p.counter(names::HITS, "a")), (1, 0));
    assert_eq!((p.counter(names::MISSES, "b"), p.counter(names::HITS, "b")), (0, 1));

    // Dropped reporter: nothing more is published. (A debugging snapshot
    // takes the values it reads, so an unpublished counter reads 0; a
    // publication would set the lifetime total, 2.)
    drop(ra);
    a.get(&2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(published(&snapshotter).counter(names::MISSES, "a"), 0);

    // Dropped cache: the reporter's task ends by itself.
    let metrics = tokio::runtime::Handle::current().metrics();
    drop(b);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(metrics.num_alive_tasks(), 0, "the reporter outlived its cache");
    drop(rb);
}

/// The value on the line of Prometheus `text` that starts with `line_start`.
fn rendered(text: &str, line_start: &str) -> f64 {
    let line =
        text.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("no `{line_start}` in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn prometheus_text_shows_the_counters() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let users = Cache::<u64, String>::builder().name("accounts").max_size(100).build();
    let reporter = metrics::with_local_recorder(&recorder, || register(&users));
    users.insert(1, "ada".into());
    for _ in 0..3 {
        users.get(&1);
    }
    users.get(&2);
    users.get_or_load(3, || async { "grace".to_string() }).await;
    reporter.publish();

    let text = handle.render();
    let value = |line_start: &str| rendered(&text, line_start);
    assert_eq!(value(r#"cache_hits_total{cache="accounts"}"#), 3.0);
    assert_eq!(value(r#"cache_misses_total{cache="accounts"}"#), 2.0);
    assert_eq!(value(r#"cache_loads_total{cache="accounts"}"#), 1.0);
    assert_eq!(value(r#"cache_size{cache="accounts"}"#), 2.0);
    assert_eq!(value(r#"cache_max_size{cache="accounts"}"#), 100.0);
    assert_eq!(value(r#"cache_hit_ratio{cache="accounts"}"#), 0.6);
    assert!(text.contains("# HELP cache_hits_total Cache lookups that found a live value."), "{text}");
    assert!(text.contains("# TYPE cache_hits_total counter"));
    assert!(text.contains(r#"cache_load_duration_seconds{cache="accounts",quantile="0.5"}"#), "{text}");
}

/// The tier's counters, through Prometheus, against the machine's Redis
/// (127.0.0.1:6379; `.ci/run` starts one if none answers).
#[tokio::test]
async fn prometheus_text_shows_the_tier_counters() {
    let tier = async_cache::RedisTier::connect("redis://127.0.0.1:6379")
        .await
        .expect("this test needs Redis on 127.0.0.1:6379: redis-server --port 6379 --save '' --daemonize yes")
        .with_prefix(format!("async-cache-test:metrics:{}", std::process::id()));
    tier.ready().await.unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let build = || Cache::<u64, String>::builder().name("tiered").tier(tier.clone()).build();
    let (writer, reader) = (build(), build());
    let reporter = metrics::with_local_recorder(&recorder, || register(&reader));
    writer.insert(1, "in redis".into());
    // Written in the background: a tier hit once it is there (a miss
    // before that loads, and is written over again).
    for _ in 0..1_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if reader.get_or_load(1, || async { "loaded".to_string() }).await == "in redis" {
            break;
        }
        reader.remove(&1);
        writer.insert(1, "in redis".into());
    }
    assert_eq!(reader.metrics().tier_hits, 1);
    reader.get_or_load(2, || async { "loaded".to_string() }).await;
    reporter.publish();
    let text = handle.render();
    let value = |line_start: &str| rendered(&text, line_start);
    let m = reader.metrics();
    assert_eq!(value(r#"cache_tier_hits_total{cache="tiered"}"#), m.tier_hits as f64);
    assert_eq!(value(r#"cache_tier_misses_total{cache="tiered"}"#), m.tier_misses as f64);
    assert!(m.tier_misses >= 1);
    assert_eq!(value(r#"cache_tier_errors_total{cache="tiered"}"#), 0.0);
    assert!(text.contains("# TYPE cache_tier_errors_total counter"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn register_publishes_at_once() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = Cache::<u64, u64>::builder().name("early").max_size(10).build();
    cache.insert(1, 1);
    cache.get(&1);
    let _reporter = metrics::with_local_recorder(&recorder, || register(&cache));
    // No publish(), no time passing: register itself published.
    let p = published(&snapshotter);
    assert_eq!(p.counter(names::HITS, "early"), 1);
    assert_eq!(p.gauge(names::SIZE, "early"), 1.0);
}

/// Batched loads: one load and one duration per `load_batch` call, the
/// keys in their own counter, the sizes in a histogram; misses = batched
/// keys + coalesced.
#[tokio::test(start_paused = true)]
async fn a_batched_cache_counts_batches_keys_and_loads_each_once() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = Cache::<u64, u64>::builder().name("batched").max_batch_size(10).build();
    let reporter = metrics::with_local_recorder(&recorder, || register(&cache));
    let doubles = cache.batched(|keys: Vec<u64>| async move {
        Ok::<_, String>(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>())
    });
    // 13 distinct keys, each asked twice in one window: batches of 10 and 3.
    let asked: Vec<u64> = (0..13).flat_map(|k| [k, k]).collect();
    futures_util::future::join_all(asked.iter().map(|&k| doubles.get(k))).await;
    reporter.publish();

    let p = published(&snapshotter);
    assert_eq!(p.counter(names::BATCHES, "batched"), 2);
    assert_eq!(p.counter(names::BATCHED_KEYS, "batched"), 13);
    assert_eq!(p.counter(names::LOADS, "batched"), 2, "one load per load_batch call");
    assert_eq!(p.histogram(names::LOAD_DURATION, "batched").len(), 2, "one duration per load");
    let mut sizes = p.histogram(names::BATCH_SIZE, "batched");
    sizes.sort_by(f64::total_cmp);
    assert_eq!(sizes, [3.0, 10.0]);
    let (misses, coalesced) = (p.counter(names::MISSES, "batched"), p.counter(names::COALESCED, "batched"));
    assert_eq!((misses, coalesced), (26, 13));
    assert_eq!(misses, p.counter(names::BATCHED_KEYS, "batched") + coalesced);
}

/// Two live caches of one name never share a series: the second reporter
/// publishes as `<name>-2`; a dropped reporter gives its label back.
#[tokio::test(start_paused = true)]
async fn a_second_cache_of_one_name_gets_its_own_label() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Both left with the default name.
    let a = Cache::<u64, u64>::new(10);
    let b = Cache::<u64, u64>::new(10);
    let (ra, rb) = metrics::with_local_recorder(&recorder, || (register(&a), register(&b)));
    assert_eq!((ra.label(), rb.label()), ("default", "default-2"));
    a.get(&1);
    b.insert(1, 1);
    b.get(&1);
    b.get(&1);
    ra.publish();
    rb.publish();
    let p = published(&snapshotter);
    assert_eq!((p.counter(names::MISSES, "default"), p.counter(names::HITS, "default")), (1, 0));
    assert_eq!((p.counter(names::MISSES, "default-2"), p.counter(names::HITS, "default-2")), (0, 2));

    drop(ra);
    let c = Cache::<u64, u64>::new(10);
    let rc = metrics::with_local_recorder(&recorder, || register(&c));
    assert_eq!(rc.label(), "default", "given back by the dropped reporter");
    let rd = metrics::with_local_recorder(&recorder, || register(&a));
    assert_eq!(rd.label(), "default-3");
}

/// The reporter's load observer runs beside the user's, and leaves with
/// the reporter; the user's stays.
#[tokio::test(start_paused = true)]
async fn registering_keeps_the_users_own_load_observer() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = Cache::<u64, u64>::builder().name("observed").build();
    let mine = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&mine);
    cache.observe_loads(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    let reporter = metrics::with_local_recorder(&recorder, || register(&cache));
    cache.get_or_load(1, || async { 1 }).await;
    reporter.publish();
    assert_eq!(published(&snapshotter).histogram(names::LOAD_DURATION, "observed").len(), 1);
    assert_eq!(mine.load(Ordering::Relaxed), 1, "the user's observer still runs");

    drop(reporter);
    cache.get_or_load(2, || async { 2 }).await;
    assert_eq!(mine.load(Ordering::Relaxed), 2);
    // The reporter's observer is gone: its histogram got nothing more (a
    // debugging snapshot drains what it reads).
    let after = published(&snapshotter);
    assert!(
        after
            .values
            .get(&(names::LOAD_DURATION.to_string(), "observed".to_string()))
            .is_none_or(|value| matches!(value, DebugValue::Histogram(v) if v.is_empty())),
        "{:?}",
        after.values.get(&(names::LOAD_DURATION.to_string(), "observed".to_string()))
    );
}
