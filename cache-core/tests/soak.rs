//! A soak test: every operation at once, on two workers, for `SOAK_SECS`
//! seconds (default 3; `SOAK_SECS=300 cargo test -p cache-core --release
//! --test soak` for a long run). It checks, all along:
//!
//! - no call hangs (each is wrapped in a timeout);
//! - reads are linearizable per key on a cache with no eviction or expiry:
//!   a read never misses a key inserted before it started, and never sees a
//!   version older than the last insert of it that returned;
//! - values always belong to their key, and `len() <= max_size`;
//! - at the end, with every handle dropped, every value ever made is dropped
//!   exactly once (values count their live copies through `Clone`/`Drop`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use cache_core::Cache;
use rand::{Rng, SeedableRng};

/// Live copies of every `Counted` value.
static LIVE: AtomicI64 = AtomicI64::new(0);

/// A value that knows its key and version, and counts its copies.
#[derive(Debug)]
struct Counted {
    key: u64,
    version: u64,
}

impl Counted {
    fn new(key: u64, version: u64) -> Self {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Counted { key, version }
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted::new(self.key, self.version)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

const KEYS: u64 = 2_000;
/// Keys of the linearizability cache; each is written by one task only.
const OWNED: u64 = 64;
const TASKS: u64 = 6;

fn seconds() -> u64 {
    std::env::var("SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3)
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.unwrap_or_else(|_| panic!("{what} hung"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_every_operation_at_once() {
    let busy = Cache::<u64, Counted>::builder().max_size(500).default_ttl(Duration::from_millis(20)).build();
    let exact = Cache::<u64, Counted>::builder().unbounded().build();
    // The version of the last insert of each key of `exact` that returned.
    let returned: Arc<Vec<AtomicU64>> = Arc::new((0..OWNED).map(|_| AtomicU64::new(0)).collect());
    for k in 0..OWNED {
        exact.insert(k, Counted::new(k, 0));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (busy, exact, returned, stop, ops) =
            (busy.clone(), exact.clone(), Arc::clone(&returned), Arc::clone(&stop), Arc::clone(&ops));
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(task);
            let mut version = 0u64;
            while !stop.load(Ordering::Relaxed) {
                version += 1;
                let key = rng.random_range(0..KEYS);
                match rng.random_range(0..100) {
                    0..=29 => {
                        if let Some(v) = busy.get(&key) {
                            assert_eq!(v.key, key);
                        }
                    }
                    30..=44 => busy.insert(key, Counted::new(key, version)),
                    45..=49 => busy.insert_with_ttl(
                        key,
                        Counted::new(key, version),
                        Some(Duration::from_millis(rng.random_range(0..5))),
                    ),
                    50..=54 => {
                        if let Some(v) = busy.remove(&key) {
                            assert_eq!(v.key, key);
                        }
                    }
                    55..=64 => {
                        let v = within(
                            "get_or_load",
                            busy.get_or_load(key, || async move {
                                tokio::task::yield_now().await;
                                Counted::new(key, version)
                            }),
                        )
                        .await;
                        assert_eq!(v.key, key);
                    }
                    65..=69 => {
                        let fails = rng.random_bool(0.5);
                        let got = within(
                            "try_get_or_load",
                            busy.try_get_or_load(key, || async move {
                                tokio::task::yield_now().await;
                                if fails { Err("no") } else { Ok(Counted::new(key, version)) }
                            }),
                        )
                        .await;
                        if let Ok(v) = got {
                            assert_eq!(v.key, key);
                        }
                    }
                    70 => busy.clear(),
                    71..=79 => {
                        // This task's own keys of `exact`: key % TASKS == task.
                        let owned = (key % (OWNED / TASKS)) * TASKS + task;
                        exact.insert(owned, Counted::new(owned, version));
                        returned[owned as usize].store(version, Ordering::Release);
                    }
                    _ => {
                        let k = key % OWNED;
                        let floor = returned[k as usize].load(Ordering::Acquire);
                        let got = exact.get(&k).unwrap_or_else(|| panic!("key {k} of the exact cache was missed"));
                        assert_eq!(got.key, k);
                        assert!(got.version >= floor, "key {k}: read version {}, replaced by {floor}", got.version);
                    }
                }
                let len = busy.len();
                assert!(len <= 500, "len {len} over max_size");
                if ops.fetch_add(1, Ordering::Relaxed) % 128 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds())).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        within("a soak task", task).await.unwrap();
    }
    assert!(ops.load(Ordering::Relaxed) > 1_000, "the soak did almost nothing");
    drop((busy, exact));
    assert_eq!(LIVE.load(Ordering::SeqCst), 0, "values left alive (or dropped twice) after every handle was dropped");
}
