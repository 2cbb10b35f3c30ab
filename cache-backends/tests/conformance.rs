//! One conformance suite, run against every backend: what a snapshot must
//! keep (values, expiries, LRU order), what a load must skip and count, and
//! what an empty store gives.

use std::path::Path;
use std::time::{Duration, SystemTime};

use async_cache::{Backend, BackendError, Cache, FileBackend, Record, SledBackend, SqliteBackend};

const ENTRIES: u64 = 10_000;

fn value(k: u64) -> String {
    format!("value of {k}")
}

/// 10,000 entries: values, remaining TTLs and LRU order all survive.
async fn round_trip_keeps_values_ttls_and_lru_order(backend: &dyn Backend) {
    let cache = Cache::<u64, String>::new(ENTRIES as usize);
    for k in 0..ENTRIES {
        let ttl = (k % 3 == 0).then(|| Duration::from_secs(1_000 + k));
        cache.insert_with_ttl(k, value(k), ttl);
    }
    // Reorder: the even keys, descending, become the most recently used.
    for k in (0..ENTRIES).rev().filter(|k| k % 2 == 0) {
        assert!(cache.get(&k).is_some());
    }
    let saved = cache.save_to_backend(backend).await.unwrap();
    assert_eq!(saved.written, ENTRIES as usize);

    let loaded = Cache::<u64, String>::new(ENTRIES as usize);
    let report = loaded.load_from_backend(backend).await.unwrap();
    assert_eq!((report.loaded, report.skipped_expired, report.skipped_undecodable), (ENTRIES as usize, 0, 0));
    for k in 0..ENTRIES {
        assert_eq!(loaded.peek(&k), Some(value(k)), "key {k}");
    }

    // Expiries: key 3 expires 1,003 s after it was inserted, key 1 never.
    let records = backend.load().await.unwrap();
    let now = SystemTime::now();
    for record in &records {
        let k: u64 = postcard::from_bytes(&record.key).unwrap();
        match record.expires_at {
            None => assert_ne!(k % 3, 0, "key {k} lost its TTL"),
            Some(at) => {
                assert_eq!(k % 3, 0, "key {k} gained a TTL");
                let left = at.duration_since(now).unwrap().as_secs_f64();
                let expected = (1_000 + k) as f64;
                assert!((left - expected).abs() < 30.0, "key {k}: {left} s left, expected about {expected}");
            }
        }
    }

    // LRU order: the least recently used first, the most recently used last.
    let order: Vec<u64> = records.iter().map(|r| postcard::from_bytes(&r.key).unwrap()).collect();
    let mut expected: Vec<u64> = (0..ENTRIES).filter(|k| k % 2 == 1).collect();
    expected.extend((0..ENTRIES).rev().filter(|k| k % 2 == 0));
    assert_eq!(order, expected);

    // And the loaded cache evicts in that order: its next eviction is key 1.
    loaded.insert(ENTRIES, value(ENTRIES));
    assert!(!loaded.contains_key(&1));
    assert!(loaded.contains_key(&3));
}

/// Loading into a smaller cache keeps the most recently used entries.
async fn a_smaller_cache_keeps_the_most_recently_used(backend: &dyn Backend) {
    let cache = Cache::<u64, String>::new(1_000);
    for k in 0..1_000 {
        cache.insert(k, value(k));
    }
    cache.save_to_backend(backend).await.unwrap();
    let small = Cache::<u64, String>::new(100);
    small.load_from_backend(backend).await.unwrap();
    assert_eq!(small.len(), 100);
    assert!((900..1_000).all(|k| small.contains_key(&k)));
}

/// Records that expired between save and load are skipped and counted;
/// a record without expiry stays without.
async fn expired_records_are_skipped_and_counted(backend: &dyn Backend) {
    let record = |k: u64, expires_at| Record {
        key: postcard::to_allocvec(&k).unwrap(),
        value: postcard::to_allocvec(&value(k)).unwrap(),
        expires_at,
    };
    let past = SystemTime::now() - Duration::from_secs(5);
    let future = SystemTime::now() + Duration::from_secs(3_600);
    backend
        .save(vec![record(1, Some(past)), record(2, Some(future)), record(3, None), record(4, Some(past))])
        .await
        .unwrap();
    let cache = Cache::<u64, String>::new(100);
    let report = cache.load_from_backend(backend).await.unwrap();
    assert_eq!((report.loaded, report.skipped_expired), (2, 2));
    assert!(cache.contains_key(&2) && cache.contains_key(&3));
    assert!(!cache.contains_key(&1) && !cache.contains_key(&4));
}

/// A record that no longer decodes into the cache's types is skipped.
async fn undecodable_records_are_skipped_and_counted(backend: &dyn Backend) {
    let good = Record {
        key: postcard::to_allocvec(&1u64).unwrap(),
        value: postcard::to_allocvec(&value(1)).unwrap(),
        expires_at: None,
    };
    let bad_value =
        Record { key: postcard::to_allocvec(&2u64).unwrap(), value: vec![0xff, 0xff, 0xff], expires_at: None };
    let bad_key = Record { key: vec![], value: postcard::to_allocvec(&value(3)).unwrap(), expires_at: None };
    backend.save(vec![good, bad_value, bad_key]).await.unwrap();
    let cache = Cache::<u64, String>::new(100);
    let report = cache.load_from_backend(backend).await.unwrap();
    assert_eq!((report.loaded, report.skipped_undecodable), (1, 2));
    // The same snapshot into other types: nothing decodes, nothing breaks.
    let other = Cache::<String, u8>::new(100);
    let report = other.load_from_backend(backend).await.unwrap();
    assert_eq!(report.loaded, 0);
    assert_eq!(report.skipped_undecodable, 3);
}

/// An empty store loads nothing; an empty cache saves an empty snapshot.
async fn an_empty_store_loads_nothing(backend: &dyn Backend) {
    assert_eq!(backend.load().await.unwrap(), vec![]);
    let cache = Cache::<u64, String>::new(100);
    assert_eq!(cache.load_from_backend(backend).await.unwrap().loaded, 0);
    cache.save_to_backend(backend).await.unwrap();
    assert_eq!(backend.load().await.unwrap(), vec![]);
}

/// A save replaces the snapshot, it does not add to it.
async fn a_save_replaces_the_previous_snapshot(backend: &dyn Backend) {
    let cache = Cache::<u64, String>::new(1_000);
    for k in 0..500 {
        cache.insert(k, value(k));
    }
    cache.save_to_backend(backend).await.unwrap();
    cache.clear();
    for k in 1_000..1_010 {
        cache.insert(k, value(k));
    }
    cache.save_to_backend(backend).await.unwrap();
    let loaded = Cache::<u64, String>::new(1_000);
    assert_eq!(loaded.load_from_backend(backend).await.unwrap().loaded, 10);
    assert!(!loaded.contains_key(&0) && loaded.contains_key(&1_005));
}

/// Loading merges: saved keys overwrite present ones, others stay.
async fn a_load_merges_into_the_cache(backend: &dyn Backend) {
    let saved = Cache::<u64, String>::new(100);
    saved.insert(1, value(1));
    saved.insert(2, value(2));
    saved.save_to_backend(backend).await.unwrap();
    let cache = Cache::<u64, String>::new(100);
    cache.insert(2, "present".into());
    cache.insert(3, "present".into());
    assert_eq!(cache.load_from_backend(backend).await.unwrap().loaded, 2);
    assert_eq!(cache.get(&1), Some(value(1)));
    assert_eq!(cache.get(&2), Some(value(2)), "the saved value overwrites");
    assert_eq!(cache.get(&3).as_deref(), Some("present"), "keys not in the snapshot stay");
}

/// Autosave saves in the background and once more on shutdown.
async fn autosave_saves_periodically_and_on_shutdown<B: Backend + Clone + 'static>(backend: &B) {
    let cache = Cache::<u64, String>::new(100);
    cache.insert(1, value(1));
    let autosave = cache.autosave(backend.clone(), Duration::from_millis(50));
    tokio::time::timeout(Duration::from_secs(10), async {
        while autosave.saves() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no background save");
    assert_eq!(backend.load().await.unwrap().len(), 1);
    cache.insert(2, value(2));
    let last = tokio::time::timeout(Duration::from_secs(10), autosave.shutdown()).await.expect("shutdown hangs");
    assert_eq!(last.unwrap().written, 2);
    assert_eq!(backend.load().await.unwrap().len(), 2);

    // The task stops by itself once the cache is dropped.
    let other = Cache::<u64, String>::new(100);
    let autosave = other.autosave(backend.clone(), Duration::from_millis(10));
    drop(other);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !autosave.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the autosave task outlived its cache");
    assert!(matches!(autosave.shutdown().await, Err(BackendError::CacheDropped)));
}

/// A value type that lost a field since the save: the old records have
/// bytes left over, so they are skipped and counted, not loaded as the new
/// type (which would silently drop the field's data into the next one).
async fn a_record_with_bytes_left_over_is_skipped_and_counted(backend: &dyn Backend) {
    #[derive(serde::Serialize, serde::Deserialize, Clone)]
    struct Before {
        id: u32,
        name: String,
    }
    #[derive(serde::Serialize, serde::Deserialize, Clone)]
    struct After {
        #[allow(dead_code)]
        id: u32,
    }
    let before = Cache::<u64, Before>::new(10);
    for k in 0..3 {
        before.insert(k, Before { id: k as u32, name: format!("name {k}") });
    }
    before.save_to_backend(backend).await.unwrap();
    // Saved again untagged (as an earlier build or a backend that keeps no
    // schema would): the schema check cannot help, the exact decode must.
    let records = backend.load().await.unwrap();
    backend.save(records).await.unwrap();
    let after = Cache::<u64, After>::new(10);
    let report = after.load_from_backend(backend).await.unwrap();
    assert_eq!((report.loaded, report.skipped_undecodable), (0, 3));
    assert!(after.is_empty());
}

/// A snapshot saved for other types, or under another `snapshot_version`,
/// is refused with a typed error that says what to do; nothing is loaded
/// and the snapshot stays, loadable by the cache it was saved for.
async fn a_snapshot_of_another_schema_is_refused_and_left_as_it_is(backend: &dyn Backend) {
    let v1 = Cache::<u64, String>::builder().snapshot_version(1).build();
    v1.insert(1, value(1));
    v1.insert(2, value(2));
    v1.save_to_backend(backend).await.unwrap();

    let other_type = Cache::<u64, Vec<u8>>::builder().snapshot_version(1).build();
    let error = other_type.load_from_backend(backend).await.unwrap_err();
    let BackendError::SchemaMismatch { found, expected } = &error else { panic!("{error}") };
    assert!(found.contains("String") && found.contains("version 1"), "{found}");
    assert!(expected.contains("Vec<u8>"), "{expected}");
    assert!(error.to_string().contains("Start with an empty cache"), "says what to do: {error}");
    assert!(other_type.is_empty());

    let v2 = Cache::<u64, String>::builder().snapshot_version(2).build();
    let error = v2.load_from_backend(backend).await.unwrap_err();
    assert!(
        matches!(&error, BackendError::SchemaMismatch { expected, .. } if expected.ends_with("version 2")),
        "{error}"
    );
    assert!(v2.is_empty());

    let again = Cache::<u64, String>::builder().snapshot_version(1).build();
    assert_eq!(again.load_from_backend(backend).await.unwrap().loaded, 2, "the snapshot was left as it was");
    assert_eq!(again.get(&2), Some(value(2)));
}

/// A snapshot holds every key present from the start of the save to its
/// end, with a value it held meanwhile, while two tasks overwrite those keys
/// and insert others (no eviction: the bound is far off).
async fn a_save_during_overwrites_keeps_every_present_key(backend: &dyn Backend) {
    const PRESENT: u64 = 2_500;
    let cache = Cache::<u64, String>::new(20_000);
    for k in 0..PRESENT {
        cache.insert(k, format!("{k}:0"));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (cache, stop) = (cache.clone(), std::sync::Arc::clone(&stop));
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let k = (i * 7_919 + w) % PRESENT;
                    cache.insert(k, format!("{k}:{i}"));
                    cache.insert(PRESENT + (i * 2 + w) % 10_000, format!("other:{i}"));
                    if i.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for round in 0..5 {
        let saved = cache.save_to_backend(backend).await.unwrap();
        let mut seen = vec![false; PRESENT as usize];
        for record in backend.load().await.unwrap() {
            let k: u64 = postcard::from_bytes(&record.key).unwrap();
            let v: String = postcard::from_bytes(&record.value).unwrap();
            if k < PRESENT {
                assert!(v.starts_with(&format!("{k}:")), "round {round}: key {k} saved with value {v}");
                assert!(!seen[k as usize], "round {round}: key {k} saved twice");
                seen[k as usize] = true;
            }
        }
        let missing = seen.iter().filter(|s| !**s).count();
        assert_eq!(missing, 0, "round {round}: {missing} of {PRESENT} keys present throughout were not saved");
        assert!(saved.written >= PRESENT as usize);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
}

/// One test per shared test above, each on a fresh backend from the
/// enclosing module's `open`.
macro_rules! shared_tests {
    ($($test:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let dir = tempfile::tempdir().unwrap();
            super::$test(&open(dir.path())).await;
        }
    )*};
}

macro_rules! conformance {
    ($($backend:ident: $open:expr;)*) => {$(
        mod $backend {
            use super::*;

            fn open(dir: &Path) -> impl Backend + Clone + 'static {
                #[allow(clippy::redundant_closure_call)]
                ($open)(dir)
            }

            shared_tests! {
                round_trip_keeps_values_ttls_and_lru_order,
                a_smaller_cache_keeps_the_most_recently_used,
                expired_records_are_skipped_and_counted,
                undecodable_records_are_skipped_and_counted,
                an_empty_store_loads_nothing,
                a_save_replaces_the_previous_snapshot,
                a_load_merges_into_the_cache,
                autosave_saves_periodically_and_on_shutdown,
                a_save_during_overwrites_keeps_every_present_key,
                a_record_with_bytes_left_over_is_skipped_and_counted,
                a_snapshot_of_another_schema_is_refused_and_left_as_it_is,
            }

            /// Many times in a row: a backend's engine may release its
            /// files a moment after the handle is dropped (sled does).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dropping_the_backend_releases_it_for_reopening() {
                let dir = tempfile::tempdir().unwrap();
                let cache = Cache::<u64, String>::new(100);
                for round in 0..30u64 {
                    cache.insert(round, value(round));
                    let backend = open(dir.path());
                    cache.save_to_backend(&backend).await.unwrap();
                    drop(backend);
                    let again = open(dir.path());
                    assert_eq!(again.load().await.unwrap().len(), (round + 1) as usize, "round {round}");
                }
            }
        }
    )*};
}

conformance! {
    file: |dir: &Path| FileBackend::new(dir.join("snapshot.cache"));
    sled: |dir: &Path| SledBackend::open(dir.join("snapshot.sled")).unwrap();
    sqlite: |dir: &Path| SqliteBackend::open(dir.join("snapshot.db")).unwrap();
}

/// A backend that takes a while to save and notes how many saves overlap.
#[derive(Default)]
struct Slow {
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    saves: std::sync::atomic::AtomicUsize,
}

#[async_cache::async_trait]
impl Backend for Slow {
    async fn save(&self, _entries: Vec<Record>) -> Result<(), BackendError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.running.fetch_sub(1, SeqCst);
        self.saves.fetch_add(1, SeqCst);
        Ok(())
    }

    async fn load(&self) -> Result<Vec<Record>, BackendError> {
        Ok(Vec::new())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_of_one_cache_never_overlap_autosave_or_not() {
    use std::sync::atomic::Ordering::SeqCst;
    let backend = std::sync::Arc::new(Slow::default());
    let cache = Cache::<u64, String>::new(100);
    cache.insert(1, value(1));
    // Autosave every 5 ms while eight manual saves run at once.
    let autosave = cache.autosave(std::sync::Arc::clone(&backend), Duration::from_millis(5));
    let manual = (0..8).map(|_| {
        let (cache, backend) = (cache.clone(), std::sync::Arc::clone(&backend));
        tokio::spawn(async move { cache.save_to_backend(&*backend).await })
    });
    for save in futures_util::future::join_all(manual).await {
        save.unwrap().unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), autosave.shutdown()).await.expect("shutdown hangs").unwrap();
    assert!(backend.saves.load(SeqCst) >= 9);
    assert_eq!(backend.most.load(SeqCst), 1, "two saves ran at once");
}

/// Dropping the handle stops autosave (as dropping a `MetricsReporter`
/// stops publishing): a save under way finishes, no other starts.
#[tokio::test(start_paused = true)]
async fn dropping_the_autosave_handle_stops_it() {
    use std::sync::atomic::Ordering::SeqCst;
    let backend = std::sync::Arc::new(Slow::default());
    let cache = Cache::<u64, String>::new(100);
    cache.insert(1, value(1));
    let autosave = cache.autosave(std::sync::Arc::clone(&backend), Duration::from_millis(100));
    // In the middle of the second save (each takes 20 ms).
    tokio::time::sleep(Duration::from_millis(210)).await;
    assert_eq!((backend.saves.load(SeqCst), backend.running.load(SeqCst)), (1, 1));
    drop(autosave);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(backend.saves.load(SeqCst), 2, "the save under way finished, and no other started");
}

/// A sled database that stays open elsewhere is an error after a short
/// wait, never a hang.
#[test]
fn a_sled_database_held_open_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.sled");
    let _held = SledBackend::open(&path).unwrap();
    let started = std::time::Instant::now();
    let error = SledBackend::open(&path).unwrap_err();
    assert!(matches!(error, BackendError::Storage { .. }), "{error}");
    assert!(error.to_string().contains("held.sled"), "names the path: {error}");
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());
}
