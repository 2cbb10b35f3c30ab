//! A cache in front of a slow database: hits, single-flight and metrics.
//!
//! Run with `cargo run --example quickstart`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_cache::Cache;

#[derive(Debug)]
struct User {
    id: u64,
    name: String,
}

/// A "database" that takes 20 ms per query and counts them.
struct Db {
    queries: AtomicUsize,
}

impl Db {
    async fn user(&self, id: u64) -> Arc<User> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Arc::new(User { id, name: format!("user-{id}") })
    }
}

#[tokio::main]
async fn main() {
    let db = Arc::new(Db { queries: AtomicUsize::new(0) });
    let users: Cache<u64, Arc<User>> =
        Cache::builder().max_size(1_000).default_ttl(Duration::from_secs(60)).name("users").build();

    // 1. Cache-aside: the first call loads, the second is a hit.
    let started = Instant::now();
    let ada = users.get_or_load(1, || db.user(1)).await;
    println!("miss: loaded {:?} in {:?}", ada.name, started.elapsed());
    let started = Instant::now();
    let again = users.get_or_load(1, || db.user(1)).await;
    println!("hit:  got {:?} in {:?}", again.name, started.elapsed());

    // 2. Single-flight: 1,000 concurrent requests for one cold key.
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let (users, db) = (users.clone(), Arc::clone(&db));
            tokio::spawn(async move { users.get_or_load(42, || async move { db.user(42).await }).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").id, 42);
    }
    println!(
        "1,000 concurrent requests for user 42 -> {} database queries in all so far",
        db.queries.load(Ordering::Relaxed)
    );

    // 3. Plain map-style use, and the counters.
    users.insert(7, Arc::new(User { id: 7, name: "grace".into() }));
    assert!(users.get(&7).is_some());
    assert!(users.get(&8).is_none());
    let m = users.metrics();
    // The counters tell the story: nearly every miss was served by another
    // caller's load, so the database saw one query per cold key.
    println!(
        "metrics: {} misses = {} loads + {} callers served by another's load + 1 get of an absent key; {} hits",
        m.misses, m.loads, m.coalesced, m.hits
    );
    println!(
        "  (the hit rate, {:.1}%, is low only because nearly every request here was for a cold key)",
        m.hit_rate() * 100.0
    );
}
