//! A warm restart: fill a cache, save it, "restart", load it, and compare
//! the first requests against a cold start.
//!
//! Run with `cargo run --example persistence` (the file backend). For sled
//! or SQLite: `cargo run --example persistence --features sqlite -- --backend sqlite`
//! (or `sled`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_cache::{Backend, Cache};

/// A slow "database" that counts its queries.
struct Db {
    queries: AtomicUsize,
}

impl Db {
    async fn product(&self, id: u64) -> Arc<String> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
        Arc::new(format!("product #{id}"))
    }
}

fn backend(dir: &std::path::Path) -> Box<dyn Backend> {
    let wanted = std::env::args().skip_while(|a| a != "--backend").nth(1);
    match wanted.as_deref() {
        #[cfg(feature = "sled")]
        Some("sled") => Box::new(async_cache::SledBackend::open(dir.join("cache.sled")).expect("open sled")),
        #[cfg(feature = "sqlite")]
        Some("sqlite") => Box::new(async_cache::SqliteBackend::open(dir.join("cache.db")).expect("open sqlite")),
        #[cfg(feature = "file")]
        Some("file") | None => Box::new(async_cache::FileBackend::new(dir.join("cache.snapshot"))),
        #[cfg(all(not(feature = "file"), feature = "sqlite"))]
        None => Box::new(async_cache::SqliteBackend::open(dir.join("cache.db")).expect("open sqlite")),
        #[cfg(all(not(feature = "file"), not(feature = "sqlite")))]
        None => Box::new(async_cache::SledBackend::open(dir.join("cache.sled")).expect("open sled")),
        Some(other) => panic!("backend {other:?} is not enabled: build with --features {other}"),
    }
}

/// 500 requests over 200 products; returns how many reached the database.
async fn serve(cache: &Cache<u64, Arc<String>>, db: &Arc<Db>) -> usize {
    let before = db.queries.load(Ordering::Relaxed);
    for i in 0..500u64 {
        let id = (i * 37) % 200;
        let db = Arc::clone(db);
        cache.get_or_load(id, || async move { db.product(id).await }).await;
    }
    db.queries.load(Ordering::Relaxed) - before
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let backend = backend(dir.path());
    let db = Arc::new(Db { queries: AtomicUsize::new(0) });
    let build = || Cache::<u64, Arc<String>>::builder().max_size(1_000).default_ttl(Duration::from_secs(3_600)).build();

    // First life: a cold start, then save on the way down.
    let cache = build();
    println!("cold start: {} of 500 requests reached the database", serve(&cache, &db).await);
    let saved = cache.save_to_backend(&*backend).await?;
    println!("saved {} entries (TTLs and LRU order included)", saved.written);
    drop(cache);

    // Second life: load the snapshot before taking traffic.
    let cache = build();
    let loaded = cache.load_from_backend(&*backend).await?;
    println!(
        "restart: loaded {} entries ({} expired, {} undecodable skipped)",
        loaded.loaded, loaded.skipped_expired, loaded.skipped_undecodable
    );
    println!("warm start: {} of 500 requests reached the database", serve(&cache, &db).await);

    // In a service: autosave every 30 s, and once more at shutdown.
    let autosave = cache.autosave(backend, Duration::from_secs(30));
    println!("shutdown: final save of {} entries", autosave.shutdown().await?.written);
    Ok(())
}
