//! Reads are linearizable per key (DESIGN.md, "Semantics that must hold"):
//! a `get` that starts after an `insert(k, _)` returned sees a value for `k`,
//! never `None`, and never a value that an already-returned `insert`
//! replaced, even while other threads overwrite `k`.
//!
//! Each test runs for a bounded number of operations (and at most a few
//! seconds), on real threads, so the schedules vary from run to run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_core::Cache;

/// A thread that overwrites key 0 (present, version 1) with increasing
/// versions until stopped, publishing in `returned` the version of the last
/// `insert` that returned.
struct Overwriter {
    returned: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Overwriter {
    fn start(cache: &Cache<u64, u64>) -> Self {
        cache.insert(0, 1);
        let returned = Arc::new(AtomicU64::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (cache, returned, stop) = (cache.clone(), Arc::clone(&returned), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut version = 1;
                while !stop.load(Ordering::Relaxed) {
                    version += 1;
                    cache.insert(0, version);
                    returned.store(version, Ordering::Release);
                }
            })
        };
        Overwriter { returned, stop, thread: Some(thread) }
    }
}

/// Stops and joins the thread, also when a check failed.
impl Drop for Overwriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads `key` with `read` until `reads` were made or `limit` passed; every
/// read must see a version no older than the last returned insert.
fn check_reads(returned: &AtomicU64, reads: u64, limit: Duration, mut read: impl FnMut() -> Option<u64>) -> u64 {
    let deadline = Instant::now() + limit;
    let mut done = 0;
    while done < reads && (done % 1024 != 0 || Instant::now() < deadline) {
        let floor = returned.load(Ordering::Acquire);
        let seen = read();
        assert!(seen.is_some(), "read {done} found nothing for a key that was never removed");
        let seen = seen.unwrap();
        assert!(seen >= floor, "read {done} saw version {seen}, replaced by version {floor} before it started");
        done += 1;
    }
    done
}

fn with_an_overwriter(max_size: usize, read: impl Fn(&Cache<u64, u64>) -> Option<u64>) {
    let cache = Cache::<u64, u64>::new(max_size);
    // Other keys, so the overwritten one shares its shard and table.
    for k in 1..if cfg!(miri) { 8 } else { 64 } {
        cache.insert(k, 0);
    }
    let writer = Overwriter::start(&cache);
    let reads = if cfg!(miri) { 300 } else { 3_000_000 };
    assert!(check_reads(&writer.returned, reads, Duration::from_secs(3), || read(&cache)) > 0);
}

#[test]
fn get_during_concurrent_overwrites_never_misses() {
    with_an_overwriter(1_000, |cache| cache.get(&0));
}

#[test]
fn peek_during_concurrent_overwrites_never_misses() {
    with_an_overwriter(1_000, |cache| cache.peek(&0));
}

#[test]
fn contains_key_during_concurrent_overwrites_never_misses() {
    with_an_overwriter(1_000, |cache| cache.contains_key(&0).then_some(u64::MAX));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_load_during_concurrent_overwrites_never_loads() {
    let cache = Cache::<u64, u64>::new(1_000);
    let writer = Overwriter::start(&cache);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut loads = 0;
    let mut reads = 0u64;
    while reads < if cfg!(miri) { 200 } else { 500_000 } && Instant::now() < deadline {
        let floor = writer.returned.load(Ordering::Acquire);
        let seen = cache
            .get_or_load(0, || async {
                loads += 1;
                0
            })
            .await;
        assert!(seen >= floor, "get_or_load saw version {seen}, replaced by {floor} before it started");
        reads += 1;
    }
    assert_eq!(loads, 0, "a present key was loaded again in {reads} calls");
}

/// The reproduction: 1,000 tasks on two workers each insert one key,
/// then read it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_right_after_an_insert_sees_a_value() {
    let (rounds, tasks) = if cfg!(miri) { (1, 20) } else { (20, 1_000u64) };
    for round in 0..rounds {
        let cache = Cache::<&'static str, u64>::new(100);
        let tasks: Vec<_> = (0..tasks)
            .map(|v| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    cache.insert("key", v);
                    cache.get(&"key").is_some()
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap(), "round {round}: a get right after an insert returned None");
        }
    }
}
