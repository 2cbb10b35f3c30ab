//! A service in front of a slow database, run three ways on the same traffic:
//! no cache, `#[cached]` (single-flight), and batched. Then a restart, warm
//! from a snapshot against cold; a flaky database served with plain TTLs
//! against `fetch` (stale values, soft timeouts: `examples/resilience.rs`);
//! and the Prometheus text of the whole run.
//!
//! Run with `cargo run --release --example demo` (`-- --help` for the knobs).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_cache::{BatchLoader, Cache, FileBackend, async_trait, cached};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use tokio::sync::Semaphore;

#[path = "resilience.rs"]
mod resilience;

#[derive(Parser, Debug, Clone)]
#[command(about = "async-cache in front of a slow database: no cache, single-flight, batched, warm restart")]
struct Args {
    /// Requests per run.
    #[arg(long, default_value_t = 16_000)]
    requests: usize,
    /// Distinct user ids.
    #[arg(long, default_value_t = 120)]
    keys: u64,
    /// Zipf exponent of the ids' popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Snapshot backend: file, or sqlite/sled when built with those features.
    #[arg(long, default_value = "file")]
    backend: String,
}

/// A user row.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// A database with a pool of 10 connections and 5-20 ms per query.
struct Db {
    pool: Semaphore,
    queries: AtomicU64,
    seed: AtomicU64,
}

impl Db {
    fn new() -> Self {
        Db { pool: Semaphore::new(10), queries: AtomicU64::new(0), seed: AtomicU64::new(1) }
    }

    async fn round_trip(&self) {
        let _connection = self.pool.acquire().await.expect("pool open");
        self.queries.fetch_add(1, Ordering::Relaxed);
        let seed = self.seed.fetch_add(1, Ordering::Relaxed);
        let ms = rand::rngs::StdRng::seed_from_u64(seed).random_range(5..=20);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn user(&self, id: u64) -> Arc<User> {
        self.round_trip().await;
        Arc::new(User { id, name: format!("user-{id}") })
    }

    /// `SELECT ... WHERE id = ANY($1)`: one round trip for many ids.
    async fn users(&self, ids: &[u64]) -> HashMap<u64, Arc<User>> {
        self.round_trip().await;
        ids.iter().map(|&id| (id, Arc::new(User { id, name: format!("user-{id}") }))).collect()
    }
}

/// The service's lookup with `#[cached]`: the pool is not part of the key.
#[cached(maxsize = 10_000, ttl = 300, skip(db), name = "users")]
async fn load_user(db: &Db, id: u64) -> Arc<User> {
    db.user(id).await
}

/// The batch loader: one query per batch.
struct UsersTable(Arc<Db>);

#[async_trait]
impl BatchLoader<u64, Arc<User>> for UsersTable {
    type Error = std::convert::Infallible;

    async fn load_batch(&self, ids: Vec<u64>) -> Result<HashMap<u64, Arc<User>>, Self::Error> {
        Ok(self.0.users(&ids).await)
    }
}

/// What one run measured.
struct Run {
    name: &'static str,
    queries: u64,
    took: Duration,
    latencies: Vec<Duration>,
    hit_rate: Option<f64>,
    coalesced: u64,
    saved_by_batching: u64,
}

/// `requests` ids drawn from Zipf(s) over `1..=keys`, the same for each run.
fn traffic(args: &Args) -> Arc<Vec<u64>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let zipf = Zipf::new(args.keys as f64, args.zipf).expect("a valid Zipf exponent");
    Arc::new((0..args.requests).map(|_| zipf.sample(&mut rng) as u64).collect())
}

fn bar(len: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} {per_sec}").unwrap().progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Drives `ids` through `serve` with `clients` concurrent clients, or until
/// `limit` has passed; returns per-request latencies and the wall time.
async fn drive<F, Fut>(
    ids: Arc<Vec<u64>>,
    clients: usize,
    limit: Option<Duration>,
    label: &str,
    serve: F,
) -> (Vec<Duration>, Duration)
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let progress = bar(ids.len(), label);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (ids, next, serve, progress) = (Arc::clone(&ids), Arc::clone(&next), serve.clone(), progress.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ids.len() || limit.is_some_and(|limit| started.elapsed() >= limit) {
                        return latencies;
                    }
                    let asked = Instant::now();
                    serve(ids[i]).await;
                    latencies.push(asked.elapsed());
                    progress.inc(1);
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    progress.finish_and_clear();
    (latencies, started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn print_table(runs: &mut [Run]) {
    println!(
        "\n{:<22} {:>9} {:>10} {:>9} {:>9} {:>9} {:>14} {:>14}",
        "", "db calls", "req/s", "p50", "p99", "hit rate", "saved: herd", "saved: batch"
    );
    for run in runs.iter_mut() {
        run.latencies.sort();
        let rate = run.latencies.len() as f64 / run.took.as_secs_f64();
        println!(
            "{:<22} {:>9} {:>10.0} {:>9.2?} {:>9.2?} {:>9} {:>14} {:>14}",
            run.name,
            run.queries,
            rate,
            percentile(&run.latencies, 0.5),
            percentile(&run.latencies, 0.99),
            run.hit_rate.map_or("-".into(), |h| format!("{:.1}%", h * 100.0)),
            run.coalesced,
            run.saved_by_batching,
        );
    }
}

fn snapshot_backend(args: &Args, dir: &std::path::Path) -> Box<dyn async_cache::Backend> {
    match args.backend.as_str() {
        "file" => Box::new(FileBackend::new(dir.join("users.snapshot"))),
        #[cfg(feature = "sqlite")]
        "sqlite" => Box::new(async_cache::SqliteBackend::open(dir.join("users.db")).expect("open sqlite")),
        #[cfg(feature = "sled")]
        "sled" => Box::new(async_cache::SledBackend::open(dir.join("users.sled")).expect("open sled")),
        other => {
            eprintln!("backend {other:?} is not built in: use file, or build with --features {other}");
            std::process::exit(2);
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let scrape = prometheus.handle();
    metrics::set_global_recorder(prometheus)?;
    let ids = traffic(&args);
    println!(
        "{} requests from {} clients over {} user ids (Zipf {}), a database with 10 connections and 5-20 ms per query\n",
        args.requests, args.clients, args.keys, args.zipf
    );
    let mut runs = Vec::new();

    // 1. No cache: every request is a query.
    let db = Arc::new(Db::new());
    let (latencies, took) = drive(Arc::clone(&ids), args.clients, None, "no cache", {
        let db = Arc::clone(&db);
        move |id| {
            let db = Arc::clone(&db);
            async move {
                db.user(id).await;
            }
        }
    })
    .await;
    runs.push(Run {
        name: "no cache",
        queries: db.queries.load(Ordering::Relaxed),
        took,
        latencies,
        hit_rate: None,
        coalesced: 0,
        saved_by_batching: 0,
    });

    // 2. #[cached]: a cache with single-flight in front of the same queries.
    let db = Arc::new(Db::new());
    let _users_reporter = async_cache::metrics::register(load_user_cache());
    let (latencies, took) = drive(Arc::clone(&ids), args.clients, None, "#[cached]", {
        let db = Arc::clone(&db);
        move |id| {
            let db = Arc::clone(&db);
            async move {
                load_user(&db, id).await;
            }
        }
    })
    .await;
    let m = load_user_cache().metrics();
    runs.push(Run {
        name: "#[cached] single-flight",
        queries: db.queries.load(Ordering::Relaxed),
        took,
        latencies,
        hit_rate: Some(m.hit_rate()),
        coalesced: m.coalesced,
        saved_by_batching: 0,
    });

    // 3. Batched: misses within 5 ms go to the database as one query.
    let db = Arc::new(Db::new());
    let batched_cache: Cache<u64, Arc<User>> = Cache::builder().max_size(10_000).name("users_batched").build();
    let _batched_reporter = async_cache::metrics::register(&batched_cache);
    let users = batched_cache.batched(UsersTable(Arc::clone(&db)));
    let (latencies, took) = drive(Arc::clone(&ids), args.clients, None, "batched", move |id| {
        let users = users.clone();
        async move {
            users.get(id).await.expect("infallible");
        }
    })
    .await;
    let m = batched_cache.metrics();
    runs.push(Run {
        name: "batched",
        queries: db.queries.load(Ordering::Relaxed),
        took,
        latencies,
        hit_rate: Some(m.hit_rate()),
        coalesced: m.coalesced,
        saved_by_batching: m.batched_keys - m.batches,
    });
    print_table(&mut runs);
    let ratio = runs[1].queries as f64 / runs[0].queries as f64 * 100.0;
    println!("\nwith single-flight the database saw {ratio:.2}% of the no-cache run's queries");

    // 4. A restart: the first second warm (from a snapshot) against cold.
    let dir = tempfile::tempdir()?;
    let backend = snapshot_backend(&args, dir.path());
    let saved = load_user_cache().save_to_backend(&*backend).await?;
    println!("\nsaved a snapshot of {} entries ({} backend); restarting...", saved.written, args.backend);
    let mut first_second = Vec::new();
    for warm in [false, true] {
        let db = Arc::new(Db::new());
        let name = if warm { "users_warm" } else { "users_cold" };
        let cache: Cache<(u64,), Arc<User>> = Cache::builder().max_size(10_000).name(name).build();
        if warm {
            let loaded = cache.load_from_backend(&*backend).await?;
            println!("loaded {} entries before taking traffic", loaded.loaded);
        }
        let _reporter = async_cache::metrics::register(&cache);
        let label = if warm { "warm start" } else { "cold start" };
        let (latencies, _) = drive(Arc::clone(&ids), args.clients, Some(Duration::from_secs(1)), label, {
            let (db, cache) = (Arc::clone(&db), cache.clone());
            move |id| {
                let (db, cache) = (Arc::clone(&db), cache.clone());
                async move {
                    cache.get_or_load((id,), || async move { db.user(id).await }).await;
                }
            }
        })
        .await;
        first_second.push((label, cache.metrics().hit_rate(), latencies.len(), db.queries.load(Ordering::Relaxed)));
        _reporter.publish();
    }
    println!("\nthe first second after a restart:");
    for (label, hit_rate, served, queries) in &first_second {
        println!("  {label}: hit rate {:.1}%, {served} requests served, {queries} database queries", hit_rate * 100.0);
    }

    // 5. A flaky database: down, then stalled.
    let phase = Duration::from_secs(1);
    println!("\na flaky database (healthy, down, stalled at 1.5 s a query, healthy; {phase:?} each), 16 clients:");
    let (plain, resilient) = resilience::run(phase).await;
    resilience::print(&plain, &resilient);
    println!(
        "fetch turned {} errors and {} slow requests into {} and {}: {} requests served a stale value",
        plain.errors, plain.slow, resilient.errors, resilient.slow, resilient.stale_served
    );

    // 6. What Prometheus would scrape.
    _users_reporter.publish();
    _batched_reporter.publish();
    println!("\nthe Prometheus text of this run (cache_* lines):");
    for line in scrape.render().lines().filter(|l| l.starts_with("cache_") && !l.contains("quantile")) {
        println!("  {line}");
    }
    Ok(())
}
