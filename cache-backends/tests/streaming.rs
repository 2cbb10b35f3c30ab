//! Saves stream: the cache hands the records over in parts of about a
//! megabyte while it encodes the rest, and the file backend writes each as
//! it comes; a large snapshot is encoded on several threads. A snapshot of
//! many parts loads back whole; one whose encoding fails or panics after
//! parts were written leaves the old snapshot as it was. A large snapshot
//! is decoded on several threads too, in order; a panicking `Deserialize`
//! loads nothing.

use std::time::Duration;

use async_cache::{Backend, BackendError, Cache, FileBackend, PackedRecords, PackedStream, Record};
use serde::{Serialize, Serializer};

/// A value whose `Serialize` fails for the marked ones.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
struct Page {
    text: String,
    fails: bool,
}

impl Serialize for Page {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.fails {
            return Err(serde::ser::Error::custom("this page does not encode"));
        }
        // The same bytes as a derived `Serialize`: the load's derived
        // `Deserialize` reads them.
        (&self.text, self.fails).serialize(serializer)
    }
}

fn page(k: u64, fails: bool) -> Page {
    Page { text: format!("{k:0>200}"), fails }
}

/// 30,000 pages of about 200 bytes: 6 MB, six parts or so.
fn pages(failing: Option<u64>) -> Cache<u64, Page> {
    let cache = Cache::builder().max_size(30_000).default_ttl(Duration::from_secs(3_600)).build();
    for k in 0..30_000 {
        cache.insert(k, page(k, Some(k) == failing));
    }
    cache
}

#[tokio::test]
async fn a_snapshot_of_many_parts_loads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileBackend::new(dir.path().join("pages.cache"));
    let saved = pages(None);
    assert_eq!(saved.save_to_backend(&backend).await.unwrap().written, 30_000);
    assert!(std::fs::metadata(dir.path().join("pages.cache")).unwrap().len() > 5 << 20, "several parts");
    let loaded: Cache<u64, Page> = Cache::builder().max_size(30_000).build();
    assert_eq!(loaded.load_from_backend(&backend).await.unwrap().loaded, 30_000);
    for k in (0..30_000).step_by(997) {
        assert_eq!(loaded.get(&k), Some(page(k, false)));
    }
}

#[tokio::test]
async fn an_encoding_failure_after_parts_were_written_keeps_the_old_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.cache");
    let backend = FileBackend::new(&path);
    pages(None).save_to_backend(&backend).await.unwrap();
    let before = std::fs::read(&path).unwrap();
    // Coldest first: key 25,000 comes after megabytes of others were
    // handed to the backend and written to its temporary file.
    let failing = pages(Some(25_000));
    let error = failing.save_to_backend(&backend).await.unwrap_err();
    assert!(matches!(error, BackendError::Encode(_)), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the old snapshot was touched");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "a temporary file was left: {leftovers:?}");
}

/// A backend written before streaming: it gets every part in one buffer.
#[derive(Default)]
struct Collecting(std::sync::Mutex<Vec<Record>>);

#[async_cache::async_trait]
impl Backend for Collecting {
    async fn save(&self, entries: Vec<Record>) -> Result<(), BackendError> {
        *self.0.lock().unwrap() = entries;
        Ok(())
    }

    async fn load(&self) -> Result<Vec<Record>, BackendError> {
        Ok(self.0.lock().unwrap().clone())
    }
}

#[tokio::test]
async fn a_backend_without_streaming_gets_all_the_parts() {
    let backend = Collecting::default();
    pages(None).save_to_backend(&backend).await.unwrap();
    assert_eq!(backend.0.lock().unwrap().len(), 30_000);
    // And a stream of one part, as a backend's tests build it.
    let one = Record { key: vec![1], value: vec![2], expires_at: None };
    let collected =
        PackedStream::from(PackedRecords::from_records(std::slice::from_ref(&one))).collect().await.unwrap();
    assert_eq!(collected.to_records(), [one]);
}

/// A value whose `Serialize` panics for the marked ones.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
struct Boom(u64, bool);

impl Serialize for Boom {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        assert!(!self.1, "Serialize of {} panicked, as it was built to", self.0);
        (self.0, self.1).serialize(serializer)
    }
}

/// A cache of `value(k)` for `k` in `0..entries`, saved to a file in a
/// fresh folder, with the bytes it wrote.
struct Saved<V> {
    cache: Cache<u64, V>,
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    backend: FileBackend,
    bytes: Vec<u8>,
}

async fn saved<V>(entries: u64, value: impl Fn(u64) -> V) -> Saved<V>
where
    V: Clone + Send + Sync + Serialize + serde::de::DeserializeOwned + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("saved.cache");
    let backend = FileBackend::new(&path);
    let cache = Cache::new(entries as usize);
    for k in 0..entries {
        cache.insert(k, value(k));
    }
    cache.save_to_backend(&backend).await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    Saved { cache, dir, path, backend, bytes }
}

/// On one thread (1,000 entries) and on several (30,000): a panicking
/// `Serialize` fails the save with a typed error, leaves the old snapshot
/// and no temporary file, and the cache keeps every entry; once the value
/// is replaced the next save works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_serialize_keeps_the_old_snapshot_and_the_cache() {
    for entries in [1_000u64, 30_000] {
        let Saved { cache, dir, path, backend, bytes: before } = saved(entries, |k| Boom(k, false)).await;
        // Coldest first: late in the snapshot, after parts went out.
        let boom = entries * 5 / 6;
        cache.insert(boom, Boom(boom, true));
        cache.insert(boom + 1, Boom(boom + 1, false));
        let error = tokio::time::timeout(Duration::from_secs(30), cache.save_to_backend(&backend))
            .await
            .expect("a panicking save hung")
            .unwrap_err();
        // The panic's own message, from whichever thread encoded the entry.
        assert!(matches!(&error, BackendError::Encode(e) if e.to_string().contains("as it was built to")), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "the old snapshot was touched ({entries} entries)");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "a temporary file was left: {leftovers:?}");
        assert_eq!(cache.len(), entries as usize);
        assert_eq!(cache.get(&boom), Some(Boom(boom, true)));
        cache.insert(boom, Boom(boom, false));
        assert_eq!(cache.save_to_backend(&backend).await.unwrap().written, entries as usize);
        let loaded: Cache<u64, Boom> = Cache::new(entries as usize);
        assert_eq!(loaded.load_from_backend(&backend).await.unwrap().loaded, entries as usize);
        assert_eq!(loaded.get(&boom), Some(Boom(boom, false)));
    }
}

/// Parallel encoding keeps the snapshot's order (coldest first) across
/// its chunks, and parallel decoding across its runs: a cache half the
/// snapshot's size keeps its hottest half, coldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_encoded_and_decoded_on_several_threads_keeps_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileBackend::new(dir.path().join("order.cache"));
    let cache: Cache<u64, u64> = Cache::new(50_000);
    for k in 0..50_000 {
        cache.insert(k, k);
    }
    assert_eq!(cache.save_to_backend(&backend).await.unwrap().written, 50_000);
    let records = backend.load().await.unwrap();
    let keys: Vec<u64> = records.iter().map(|r| postcard::from_bytes(&r.key).unwrap()).collect();
    assert_eq!(keys, (0..50_000).collect::<Vec<_>>(), "records out of recency order");
    let half: Cache<u64, u64> = Cache::new(25_000);
    assert_eq!(half.load_from_backend(&backend).await.unwrap().loaded, 50_000);
    assert_eq!(half.len(), 25_000);
    assert!((25_000..50_000).all(|k| half.peek(&k) == Some(k)), "the hottest half");
    // The coldest of them leaves first.
    half.insert(u64::MAX, 0);
    assert_eq!((half.peek(&25_000), half.peek(&25_001)), (None, Some(25_001)));
}

/// A value whose `Deserialize` panics on the number in `PANIC_ON`.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct Fragile(u64);

static PANIC_ON: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

impl<'de> serde::Deserialize<'de> for Fragile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(deserializer)?;
        assert_ne!(n, PANIC_ON.load(std::sync::atomic::Ordering::Relaxed), "Fragile {n} does not decode");
        Ok(Fragile(n))
    }
}

/// User `Deserialize` code that panics, on one thread (1,000 entries) or
/// on one of several (30,000): a typed error with the panic's message,
/// nothing loaded, the snapshot as it was; the next load works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_deserialize_loads_nothing() {
    for entries in [1_000u64, 30_000] {
        // `_kept`, not `_`: the folder lives as long as the binding.
        let Saved { dir: _kept, path, backend, bytes: before, .. } = saved(entries, Fragile).await;
        // Late in the snapshot: on the last thread when there are several.
        PANIC_ON.store(entries - 7, std::sync::atomic::Ordering::Relaxed);
        let loaded: Cache<u64, Fragile> = Cache::new(entries as usize);
        loaded.insert(u64::MAX, Fragile(1));
        let error = tokio::time::timeout(Duration::from_secs(60), loaded.load_from_backend(&backend))
            .await
            .expect("the load ended")
            .unwrap_err();
        assert!(matches!(error, BackendError::Encode(_)), "{error}");
        assert!(error.to_string().contains(&format!("Fragile {} does not decode", entries - 7)), "{error}");
        assert_eq!((loaded.len(), loaded.get(&u64::MAX)), (1, Some(Fragile(1))), "nothing loaded");
        assert_eq!(std::fs::read(&path).unwrap(), before, "the snapshot was changed");
        PANIC_ON.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(loaded.load_from_backend(&backend).await.unwrap().loaded, entries as usize);
        assert_eq!(loaded.get(&(entries - 7)), Some(Fragile(entries - 7)));
    }
}

/// A load in flight and an expired entry that `stale_for` keeps are not
/// entries: a save leaves both out, and saves what is live around them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_leaves_out_loads_in_flight_and_stale_entries() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileBackend::new(dir.path().join("live.cache"));
    let cache: Cache<u64, u64> = Cache::builder().max_size(100).stale_for(Duration::from_secs(60)).build();
    cache.insert(1, 1);
    cache.insert_with_ttl(2, 2, Some(Duration::from_millis(1)));
    // Past its TTL, the next write's expiry pass turns it stale.
    tokio::time::sleep(Duration::from_millis(50)).await;
    cache.insert(3, 3);
    assert_eq!(cache.get(&2), None, "key 2 is past its TTL");
    let (started, has_started) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let loading = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load(4, || async move {
                    let _ = started.send(());
                    let _ = released.await;
                    4
                })
                .await
        }
    });
    has_started.await.unwrap();
    assert_eq!(cache.save_to_backend(&backend).await.unwrap().written, 2);
    let mut keys: Vec<u64> =
        backend.load().await.unwrap().iter().map(|r| postcard::from_bytes(&r.key).unwrap()).collect();
    keys.sort_unstable();
    assert_eq!(keys, [1, 3], "only the live entries");
    release.send(()).unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), loading).await.unwrap().unwrap(), 4);
}
