//! `#[cached]` on async functions and methods.
//!
//! Run with `cargo run --example macro`. What to look for in its output:
//!
//! - the second call for user 7 takes microseconds: it is cached;
//! - 100 concurrent calls for user 8 add one query ("2 queries so far"):
//!   single-flight;
//! - an `Err` is not cached: user 0, asked twice, is queried twice;
//! - the companions `get_user_invalidate` and `get_user_refresh`, and
//!   `get_user_cache()` for the counters;
//! - on a method, `skip(self, request_id)` leaves those arguments out of the
//!   key: the same search under another request id is a hit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_cache::cached;

static QUERIES: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug, Clone)]
struct DbError(String);

/// A slow database call, cached for a minute; errors are not cached.
#[cached(maxsize = 1000, ttl = 60)]
async fn get_user(id: u64) -> Result<Arc<User>, DbError> {
    QUERIES.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(20)).await;
    if id == 0 {
        return Err(DbError("no user 0".into()));
    }
    Ok(Arc::new(User { id, name: format!("user-{id}") }))
}

/// A service whose method is cached; `self` and the request id are not part
/// of the key.
struct Search {
    index: Vec<&'static str>,
}

impl Search {
    #[cached(skip(self, request_id), maxsize = 100)]
    async fn find(&self, term: &str, request_id: u64) -> Option<Arc<Vec<String>>> {
        let _ = request_id;
        QUERIES.fetch_add(1, Ordering::Relaxed);
        let hits: Vec<String> = self.index.iter().filter(|w| w.contains(term)).map(|w| w.to_string()).collect();
        (!hits.is_empty()).then(|| Arc::new(hits))
    }
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let user = get_user(7).await.expect("user 7");
    println!("first call: {} ({}) in {:?}", user.name, user.id, started.elapsed());
    let started = Instant::now();
    get_user(7).await.expect("user 7");
    println!("second call: cached, in {:?}", started.elapsed());

    // 100 concurrent calls for a cold key run the body once.
    let calls: Vec<_> = (0..100).map(|_| tokio::spawn(get_user(8))).collect();
    for call in calls {
        call.await.expect("task").expect("user 8");
    }
    println!("100 concurrent calls for user 8 -> {} queries so far", QUERIES.load(Ordering::Relaxed));

    // Errors reach the caller and are not cached.
    if let Err(DbError(why)) = get_user(0).await {
        println!("user 0: {why}");
    }
    let again = get_user(0).await;
    println!("user 0 again fails too: {} (queries so far: {})", again.is_err(), QUERIES.load(Ordering::Relaxed));

    // The companions.
    get_user_invalidate(7);
    let fresh = get_user_refresh(8).await.expect("user 8");
    let m = get_user_cache().metrics();
    println!(
        "refreshed {}; get_user's cache: {} loads ({} failed), {} callers served by another's load, {} entry left",
        fresh.name, m.loads, m.load_errors, m.coalesced, m.size
    );

    let search = Search { index: vec!["apple", "apricot", "banana"] };
    println!("find(ap): {:?}", search.find("ap", 1).await);
    println!("find(ap) again, another request: {:?}", search.find("ap", 2).await);
    println!("Search::find's cache: {} hit (the second request)", Search::find_cache().metrics().hits);
}
