//! DESIGN.md's hit, insert and miss workloads as a plain program, for
//! counting instructions under callgrind: counts repeat exactly from run to
//! run, where timings on this machine drift by 10%. Compare two commits:
//!
//! ```sh
//! cargo build --release -p benches --example instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions hit    # or insert, miss
//! ```
//!
//! Each runs 200,000 operations (`hit` first fills 10,000 entries).

use std::sync::Arc;

use async_cache::Cache;
use benches::key_of;

fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    let n = 200_000u64;
    match what.as_str() {
        "hit" => {
            let cache: Cache<u64, Arc<String>> = Cache::new(10_000);
            for i in 0..10_000 {
                cache.insert(key_of(i), Arc::new(i.to_string()));
            }
            let (mut found, mut x) = (0usize, 1u64);
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                found += cache.get(&key_of(x % 10_000)).map_or(0, |v| v.len());
            }
            std::hint::black_box(found);
        }
        "insert" => {
            let cache: Cache<u64, u64> = Cache::new(10_000);
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
        other => {
            eprintln!("unknown workload {other:?}: hit, insert or miss");
            std::process::exit(2);
        }
    }
}
