//! DataLoader-style batching: a GraphQL-like resolver fans out 1,000
//! concurrent lookups of 200 distinct users; the backend sees a few batch
//! queries instead of 1,000 single ones.
//!
//! Run with `cargo run --example batching`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_cache::{BatchLoader, Cache, async_trait};

/// A backend that answers `SELECT ... WHERE id = ANY($1)` in 10 ms, whatever
/// the number of ids, and counts its calls.
#[derive(Clone, Default)]
struct UserTable {
    calls: Arc<AtomicUsize>,
    keys: Arc<AtomicUsize>,
}

#[async_trait]
impl BatchLoader<u64, Arc<String>> for UserTable {
    type Error = std::io::Error;

    async fn load_batch(&self, ids: Vec<u64>) -> Result<HashMap<u64, Arc<String>>, Self::Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.keys.fetch_add(ids.len(), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(ids.into_iter().map(|id| (id, Arc::new(format!("user-{id}")))).collect())
    }
}

#[tokio::main]
async fn main() {
    let table = UserTable::default();
    let cache: Cache<u64, Arc<String>> = Cache::builder()
        .max_size(10_000)
        .batch_window(Duration::from_millis(5))
        .max_batch_size(100)
        .name("users")
        .build();
    let users = cache.batched(table.clone());

    // 1,000 "resolvers", each asking for one of 200 users.
    let started = Instant::now();
    let resolvers: Vec<_> = (0..1_000u64)
        .map(|i| {
            let users = users.clone();
            tokio::spawn(async move { users.get(i * 7 % 200).await })
        })
        .collect();
    for resolver in resolvers {
        assert!(resolver.await.expect("resolver").expect("loaded").is_some());
    }
    let took = started.elapsed();

    let m = cache.metrics();
    println!("1,000 lookups of 200 distinct users in {took:?}");
    println!(
        "backend calls: {} (with {} keys in all), instead of 1,000 single queries",
        table.calls.load(Ordering::Relaxed),
        table.keys.load(Ordering::Relaxed),
    );
    println!("cache: {} batches, {} batched keys, {} hits, {} misses", m.batches, m.batched_keys, m.hits, m.misses);

    // Now everything is cached: no backend call at all.
    let again = users.get_many((0..200).collect()).await.expect("cached");
    assert_eq!(again.len(), 200);
    println!("second pass over all 200 users: {} backend calls in all", table.calls.load(Ordering::Relaxed));
}
