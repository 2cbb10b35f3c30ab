//! A cache of rendered pages bounded by bytes, not entries, that tells a
//! listener why each page left, lets pages nobody reads go before their
//! TTL, and is inspected with `iter` and pruned with `retain`.
//!
//! Run with `cargo run --example eviction`. What to look for in its output:
//!
//! - the weight (bytes held) never passes the 4 KiB bound, however many
//!   pages come in: the least recently used go first ("size");
//! - a page larger than the bound is never stored ("size" at once);
//! - re-rendering a page says "replaced" for the old copy;
//! - a page nobody reads for 2 s (`time_to_idle`) is reported "expired"
//!   within a second, with no request touching the cache, while a page read
//!   every second stays until its 5 s TTL ends it;
//! - `retain` removes what it refuses ("explicit").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_cache::{Cache, RemovalCause};

/// Bytes that left, by cause: size, replaced, expired, explicit.
#[derive(Default)]
struct Departures([AtomicU64; 4]);

impl Departures {
    fn note(&self, bytes: usize, cause: RemovalCause) {
        let slot = match cause {
            RemovalCause::Size => 0,
            RemovalCause::Replaced => 1,
            RemovalCause::Expired => 2,
            _ => 3,
        };
        self.0[slot].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn report(&self) -> String {
        let [size, replaced, expired, explicit] = self.0.each_ref().map(|n| n.load(Ordering::Relaxed));
        format!("bytes gone: size {size}, replaced {replaced}, expired {expired}, explicit {explicit}")
    }
}

fn render(page: u32, bytes: usize) -> Arc<str> {
    format!("<h1>page {page}</h1>{}", ".".repeat(bytes)).into()
}

#[tokio::main]
async fn main() {
    let gone = Arc::new(Departures::default());
    let log = Arc::clone(&gone);
    let pages: Cache<u32, Arc<str>> = Cache::builder()
        .weigher(|_page, html: &Arc<str>| html.len() as u32)
        .max_weight(4 * 1024)
        .default_ttl(Duration::from_secs(5))
        .time_to_idle(Duration::from_secs(2))
        .eviction_listener(move |page: &u32, html: &Arc<str>, cause| {
            log.note(html.len(), cause);
            if cause != RemovalCause::Size {
                println!("  listener: page {page} left ({cause:?})");
            }
        })
        .build();

    // 40 pages of 100 to 700 bytes: far more than 4 KiB in all.
    for page in 0..40u32 {
        let html = pages.get_or_load(page, || async move { render(page, 100 + (page as usize * 97) % 600) }).await;
        assert!(html.starts_with("<h1>"));
        assert!(pages.weight() <= 4 * 1024);
    }
    println!("after 40 pages: {} held, {} bytes (bound 4096)", pages.len(), pages.weight());
    println!("  {}", gone.report());

    // Too big to hold: handed to the caller, never stored.
    let huge = pages.get_or_load(1_000, || async { render(1_000, 10_000) }).await;
    println!("a {}-byte page: stored? {}", huge.len(), pages.contains_key(&1_000));

    // Re-rendering a page replaces it.
    let newest = pages.iter().map(|(page, _)| page).max().expect("pages are held");
    pages.insert(newest, render(newest, 50));

    // `iter` copies what is held (no hits counted); `retain` prunes.
    let mut held: Vec<u32> = pages.iter().map(|(page, _)| page).collect();
    held.sort_unstable();
    println!("held: {held:?}");
    pages.retain(|page, _| page % 2 == 0);
    println!("after retain(even pages): {} held, {} bytes", pages.len(), pages.weight());

    // One page is read every second; nobody touches the others. They go
    // idle after 2 s; the read one stays until the TTL.
    let read = pages.iter().map(|(page, _)| page).max().expect("even pages are held");
    println!("reading page {read} every second; the rest are left alone...");
    for second in 1..=6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let alive = pages.get(&read).is_some();
        println!("  {second} s: {} held, page {read} held: {alive}", pages.len());
    }
    println!("  {}", gone.report());
    let m = pages.metrics();
    println!("metrics: size {}, weight {} of {:?}, evictions {}", m.size, m.weight, m.max_weight, m.evictions);
}
