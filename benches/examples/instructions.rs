//! DESIGN.md's hit, insert and miss workloads as a plain program, for
//! counting instructions under callgrind: counts repeat exactly from run to
//! run, where timings on this machine drift by 10%. Compare two commits:
//!
//! ```sh
//! cargo build --release -p benches --example instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions hit    # or hit-ttl, insert, insert-ttl, insert-lfu, miss, save, load
//! ```
//!
//! `qc-hit`, `qc-insert` and `qc-miss` run quick_cache's calls on the same
//! workloads, and `lru-insert` a `Mutex<lru::LruCache>`'s.
//!
//! Each runs 200,000 operations (`hit` first fills 10,000 entries); `save`
//! saves the persistence bench's 100,000 entries to a file once, and `load`
//! also loads them into a fresh cache. An expiry-heavy workload, which
//! needs paused time, is cache-core's `expire` example.

use std::sync::Arc;

use async_cache::Cache;
use benches::key_of;

fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    // An optional count, for longer runs under `perf record`.
    let n = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(200_000u64);
    match what.as_str() {
        "hit" | "hit-ttl" => {
            // One arm, so both run the same compiled loop.
            let builder = Cache::builder().max_size(10_000);
            let cache: Cache<u64, Arc<String>> = match what.as_str() {
                "hit-ttl" => builder.default_ttl(std::time::Duration::from_secs(3_600)).build(),
                _ => builder.build(),
            };
            hits(n, |k, v| cache.insert(k, v), |k| cache.get(k));
        }
        "insert" => {
            let cache: Cache<u64, u64> = Cache::new(10_000);
            for i in 0..n {
                cache.insert(key_of(i), i);
            }
        }
        "insert-ttl" => {
            let cache: Cache<u64, u64> =
                Cache::builder().max_size(10_000).default_ttl(std::time::Duration::from_secs(3_600)).build();
            for i in 0..n {
                cache.insert(key_of(i), i);
            }
        }
        "insert-lfu" => {
            let cache: Cache<u64, u64> = Cache::builder().max_size(10_000).policy(async_cache::Policy::TinyLfu).build();
            for i in 0..n {
                cache.insert(key_of(i), i);
            }
        }
        "miss" => {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
            let cache: Cache<u64, u64> = Cache::new(10_000);
            runtime.block_on(async {
                for i in 0..n {
                    std::hint::black_box(cache.get_or_load(key_of(i), || async move { i }).await);
                }
            });
        }
        "save" | "load" => {
            // The persistence bench's cache, saved once to a file (and, for
            // `load`, loaded into a fresh cache).
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("a runtime");
            let build = || -> Cache<u64, String> {
                Cache::builder().max_size(100_000).default_ttl(std::time::Duration::from_secs(3_600)).build()
            };
            let cache = build();
            for k in 0..100_000u64 {
                cache.insert(k, format!("{k:0>100}"));
            }
            let path = std::env::temp_dir().join(format!("instructions-save-{}", std::process::id()));
            let backend = async_cache::FileBackend::new(&path);
            runtime.block_on(cache.save_to_backend(&backend)).expect("saved");
            if what == "load" {
                let report = runtime.block_on(build().load_from_backend(&backend)).expect("loaded");
                assert_eq!(report.loaded, 100_000);
            }
            let _ = std::fs::remove_file(&path);
        }
        // quick_cache's calls on the same workloads, for a ratio.
        "qc-hit" => {
            let cache: quick_cache::sync::Cache<u64, Arc<String>> = quick_cache::sync::Cache::new(10_000);
            hits(n, |k, v| cache.insert(k, v), |k| cache.get(k));
        }
        "qc-insert" => {
            let cache: quick_cache::sync::Cache<u64, u64> = quick_cache::sync::Cache::new(10_000);
            for i in 0..n {
                cache.insert(key_of(i), i);
            }
        }
        // The floor of an exact LRU whose reads take the lock too.
        "lru-insert" => {
            let cache =
                std::sync::Mutex::new(lru::LruCache::<u64, u64>::new(std::num::NonZeroUsize::new(10_000).unwrap()));
            for i in 0..n {
                cache.lock().unwrap().put(key_of(i), i);
            }
        }
        "qc-miss" => {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
            let cache: quick_cache::sync::Cache<u64, u64> = quick_cache::sync::Cache::new(10_000);
            runtime.block_on(async {
                for i in 0..n {
                    let loaded = cache.get_or_insert_async(&key_of(i), async move { Ok::<_, ()>(i) }).await;
                    std::hint::black_box(loaded.ok());
                }
            });
        }
        other => {
            eprintln!(
                "unknown workload {other:?}: hit, hit-ttl, insert, insert-ttl, insert-lfu, miss, save, load, qc-hit, qc-insert, qc-miss or lru-insert"
            );
            std::process::exit(2);
        }
    }
}

/// The hit workload through any cache's calls: 10,000 entries in, then `n`
/// gets of keys picked at random among them.
fn hits(n: u64, insert: impl Fn(u64, Arc<String>), get: impl Fn(&u64) -> Option<Arc<String>>) {
    for i in 0..10_000 {
        insert(key_of(i), Arc::new(i.to_string()));
    }
    let (mut found, mut x) = (0usize, 1u64);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        found += get(&key_of(x % 10_000)).map_or(0, |v| v.len());
    }
    std::hint::black_box(found);
}
