//! A service in front of a flaky database, served two ways: `get_or_load`
//! with a TTL, and `fetch` with `refresh_after`, `stale_for` and
//! `load_timeout`. The database is healthy, then down (every query fails),
//! then stalled (every query takes 1.5 s), then healthy again.
//!
//! Run with `cargo run --release --example resilience` (also a part of the
//! demo). What to look for in its output: with plain TTLs, every key that
//! expires while the database is down becomes an error, and while it is
//! stalled a slow request; with `fetch`, the same traffic gets the last good
//! value: no errors, no request slower than the soft timeout (plus the
//! scheduler), and the counts of requests saved by stale values and soft
//! timeouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_cache::Cache;
use tokio::time::Instant;

/// How the database behaves, by phase.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Health {
    Healthy,
    Down,
    Stalled,
}

/// A database whose health follows a schedule of equal phases.
struct FlakyDb {
    started: Instant,
    phase: Duration,
    queries: AtomicUsize,
}

const SCHEDULE: [Health; 4] = [Health::Healthy, Health::Down, Health::Stalled, Health::Healthy];

impl FlakyDb {
    fn health(&self) -> Health {
        let phase = (self.started.elapsed().as_secs_f64() / self.phase.as_secs_f64()) as usize;
        SCHEDULE[phase.min(SCHEDULE.len() - 1)]
    }

    async fn price(&self, item: u64) -> Result<u64, String> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        match self.health() {
            Health::Healthy => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(item * 100)
            }
            Health::Down => Err(format!("price of {item}: connection refused")),
            Health::Stalled => {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                Ok(item * 100)
            }
        }
    }
}

/// What one way of serving saw.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) requests: usize,
    pub(crate) errors: usize,
    /// Requests that took longer than 100 ms.
    pub(crate) slow: usize,
    pub(crate) worst: Duration,
    pub(crate) queries: usize,
    pub(crate) stale_served: u64,
    pub(crate) refreshes: u64,
}

/// Serves `clients` concurrent clients asking for 50 items through `serve`
/// for the whole schedule (4 phases of `phase`).
async fn drive<F, Fut>(phase: Duration, clients: usize, serve: F) -> Report
where
    F: Fn(Arc<FlakyDb>, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<u64, String>> + Send,
{
    let db = Arc::new(FlakyDb { started: Instant::now(), phase, queries: AtomicUsize::new(0) });
    let end = db.started + phase * SCHEDULE.len() as u32;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients as u64 {
        let (db, serve) = (Arc::clone(&db), serve.clone());
        // Each client keeps its own tally; they are added up at the end.
        tasks.spawn(async move {
            let mut seen = Report::default();
            let mut item = client;
            while Instant::now() < end {
                item = (item * 7 + 3) % 50;
                let asked = Instant::now();
                let answer = serve(Arc::clone(&db), item).await;
                let took = asked.elapsed();
                seen.requests += 1;
                seen.errors += usize::from(answer.is_err());
                seen.slow += usize::from(took > Duration::from_millis(100));
                seen.worst = seen.worst.max(took);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        });
    }
    let mut report = Report::default();
    while let Some(seen) = tasks.join_next().await {
        let seen = seen.expect("a client panicked");
        report.requests += seen.requests;
        report.errors += seen.errors;
        report.slow += seen.slow;
        report.worst = report.worst.max(seen.worst);
    }
    report.queries = db.queries.load(Ordering::Relaxed);
    report
}

/// Runs both ways over phases of `phase` each; returns (plain, resilient).
pub(crate) async fn run(phase: Duration) -> (Report, Report) {
    let ttl = phase / 4;
    let plain: Cache<u64, u64> = Cache::builder().max_size(100).default_ttl(ttl).build();
    let plain_report = drive(phase, 16, {
        let cache = plain.clone();
        move |db: Arc<FlakyDb>, item| {
            let cache = cache.clone();
            async move {
                cache.try_get_or_load(item, || async move { db.price(item).await }).await.map_err(|e| (*e).clone())
            }
        }
    })
    .await;

    let resilient: Cache<u64, u64> = Cache::builder()
        .max_size(100)
        .default_ttl(ttl)
        .refresh_after(ttl * 3 / 4) // hot items reload before they expire
        .stale_for(Duration::from_secs(3_600)) // the last good price, if the database fails
        .load_timeout(Duration::from_millis(50)) // ...or is slow
        .build();
    let mut resilient_report = drive(phase, 16, {
        let cache = resilient.clone();
        move |db: Arc<FlakyDb>, item| {
            let cache = cache.clone();
            async move { cache.fetch(item, move || async move { db.price(item).await }).await.map_err(|e| (*e).clone()) }
        }
    })
    .await;
    let m = resilient.metrics();
    (resilient_report.stale_served, resilient_report.refreshes) = (m.stale_served, m.refreshes);
    (plain_report, resilient_report)
}

/// Prints the two reports side by side.
pub(crate) fn print(plain: &Report, resilient: &Report) {
    println!("| | get_or_load + TTL | fetch + refresh_after, stale_for, load_timeout |");
    println!("|---|---|---|");
    println!("| requests | {} | {} |", plain.requests, resilient.requests);
    println!("| errors | {} | {} |", plain.errors, resilient.errors);
    println!("| slower than 100 ms | {} | {} |", plain.slow, resilient.slow);
    println!("| slowest | {:.0?} | {:.0?} |", plain.worst, resilient.worst);
    println!("| database queries | {} | {} |", plain.queries, resilient.queries);
    println!("| served a stale value (failed or slow load) | - | {} |", resilient.stale_served);
    println!("| background refreshes | - | {} |", resilient.refreshes);
}

#[allow(dead_code)] // the demo includes this file for `run` and `print`
#[tokio::main]
async fn main() {
    let phase = Duration::from_secs(2);
    println!(
        "a flaky database: healthy, down, stalled (1.5 s a query), healthy; {phase:?} each; 16 clients, 50 items\n"
    );
    let (plain, resilient) = run(phase).await;
    print(&plain, &resilient);
}
