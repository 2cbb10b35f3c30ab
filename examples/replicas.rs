//! Two replicas of a service sharing one Redis: a value one loads, the
//! other finds; a price one changes, the other drops at once; then Redis
//! stops, and both keep serving.
//!
//! The replicas are two caches in this process, each with its own
//! `RedisTier::connect` (its own connections): they share nothing but
//! Redis, as two processes would. The example starts a `redis-server` of
//! its own on a spare port, so that it can stop it.
//!
//! `cargo run --release --example replicas --features redis`

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_cache::{Cache, RedisTier};

/// The service's database: prices by product, and how often it was asked.
#[derive(Default)]
struct Database {
    prices: Mutex<HashMap<u64, u64>>,
    queries: AtomicUsize,
}

impl Database {
    async fn price(&self, product: u64) -> u64 {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
        *self.prices.lock().unwrap().entry(product).or_insert(100 + product)
    }
}

/// One replica's cache of prices.
async fn replica(url: &str) -> Cache<u64, u64> {
    let tier = RedisTier::connect(url).await.expect("connect to the example's Redis").with_prefix("replicas-example");
    tier.ready().await.expect("the invalidation channel");
    Cache::builder().name("prices").max_size(10_000).default_ttl(Duration::from_secs(300)).tier(tier).build()
}

#[tokio::main]
async fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut redis = start_redis(port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let db = Arc::new(Database::default());
    let (a, b) = (replica(&url).await, replica(&url).await);

    println!("1. Replica A loads product 1 from the database; replica B finds it in Redis.");
    let price = a.get_or_load(1, || db.price(1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await; // A's write reaches Redis in the background
    let seen = b.get_or_load(1, || db.price(1)).await;
    println!("   A: {price}, B: {seen}; database queries: {}", db.queries.load(Ordering::Relaxed));

    println!("2. A changes the price; B drops its copy and reads the new one.");
    db.prices.lock().unwrap().insert(1, 90);
    a.insert(1, 90);
    let start = Instant::now();
    while b.peek(&1) == Some(price) {
        tokio::task::yield_now().await;
    }
    let dropped = start.elapsed();
    let seen = b.get_or_load(1, || db.price(1)).await;
    println!("   B dropped {price} {dropped:?} after A's insert returned, and now reads {seen}");

    println!("3. Redis stops. Both replicas keep serving.");
    redis.kill().unwrap();
    redis.wait().unwrap();
    let start = Instant::now();
    let (mut served, mut slowest) = (0, Duration::ZERO);
    for product in 1..=20 {
        for cache in [&a, &b] {
            let asked = Instant::now();
            cache.get_or_load(product, || db.price(product)).await;
            slowest = slowest.max(asked.elapsed());
            served += 1;
        }
    }
    println!(
        "   {served} requests in {:?}, the slowest {slowest:?}; tier errors counted: A {}, B {}",
        start.elapsed(),
        a.metrics().tier_errors,
        b.metrics().tier_errors
    );
    for (name, cache) in [("A", &a), ("B", &b)] {
        let m = cache.metrics();
        println!(
            "   {name}: hits {}, misses {}, tier hits {}, tier misses {}, loads {}",
            m.hits, m.misses, m.tier_hits, m.tier_misses, m.loads
        );
    }
}

/// A `redis-server` on `port`, answering.
async fn start_redis(port: u16) -> Child {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("this example starts its own redis-server: install it (apt-get install redis-server)");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not come up on port {port}");
}
