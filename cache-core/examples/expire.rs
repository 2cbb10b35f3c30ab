//! An expiry-heavy workload for counting instructions under callgrind:
//! 200,000 inserts 1 µs apart on tokio's paused clock, each with a 100 ms
//! TTL, so that from the 100,000th on every insert expires about one entry,
//! its timer having moved down the wheel's levels to get there.
//!
//! ```sh
//! cargo build --release -p cache-core --example expire
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/expire
//! ```
//!
//! It lives here, not with the other workloads in `benches`, because paused
//! time needs tokio's `test-util`, which cache-core's tests enable anyway:
//! in the benches crate it would add the paused-clock check to every clock
//! read the benchmarks measure.

use std::time::Duration;

use async_cache::Cache;

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("a runtime");
    runtime.block_on(async {
        let cache: Cache<u64, u64> =
            Cache::builder().max_size(1_000_000).default_ttl(Duration::from_millis(100)).build();
        for i in 0..n {
            // DESIGN.md's key_of: never sequential keys.
            cache.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555_5555, i);
            tokio::time::advance(Duration::from_micros(1)).await;
        }
        assert!(cache.len() as u64 <= n.min(100_001));
    });
}
