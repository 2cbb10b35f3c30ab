//! `#[cached]` behaviour, through the facade as users write it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_cache::cached;
use futures_util::future::join_all;

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("timed out: something hangs")
}

static SQUARES: AtomicUsize = AtomicUsize::new(0);

#[cached(maxsize = 100)]
async fn square(n: u64) -> u64 {
    SQUARES.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(10)).await;
    n * n
}

#[tokio::test(start_paused = true)]
async fn same_arguments_run_the_body_once_different_ones_again() {
    assert_eq!(within(square(3)).await, 9);
    assert_eq!(within(square(3)).await, 9);
    assert_eq!(SQUARES.load(Ordering::SeqCst), 1);
    assert_eq!(within(square(4)).await, 16);
    assert_eq!(SQUARES.load(Ordering::SeqCst), 2);
    let m = square_cache().metrics();
    assert_eq!((m.hits, m.misses, m.loads, m.size, m.max_size), (1, 2, 2, 2, Some(100)));
    assert!(square_cache().name().ends_with("::square"), "{}", square_cache().name());
}

static SLOW: AtomicUsize = AtomicUsize::new(0);

#[cached]
async fn slow_lookup(id: u32) -> String {
    SLOW.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    format!("user {id}")
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_calls_with_the_same_arguments_run_the_body_once() {
    let got = within(join_all((0..100).map(|_| slow_lookup(7)))).await;
    assert!(got.iter().all(|s| s == "user 7"));
    assert_eq!(SLOW.load(Ordering::SeqCst), 1);
    assert_eq!(slow_lookup_cache().metrics().coalesced, 99);
}

static FALLIBLE: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, PartialEq)]
struct DbError(String);

#[cached(name = "fallible")]
async fn fallible(id: u32) -> Result<Arc<String>, DbError> {
    let run = FALLIBLE.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(10)).await;
    if run == 0 {
        return Err(DbError("first call fails".into()));
    }
    let user = format!("user {id}");
    Ok(Arc::new(user))
}

#[tokio::test(start_paused = true)]
async fn ok_is_cached_err_is_not_and_waiters_share_the_error() {
    let failed = within(join_all((0..5).map(|_| fallible(1)))).await;
    assert!(failed.iter().all(|r| *r == Err(DbError("first call fails".into()))), "{failed:?}");
    assert_eq!(FALLIBLE.load(Ordering::SeqCst), 1, "one run, its error shared");
    assert_eq!(within(fallible(1)).await.unwrap().as_str(), "user 1");
    assert_eq!(within(fallible(1)).await.unwrap().as_str(), "user 1");
    assert_eq!(FALLIBLE.load(Ordering::SeqCst), 2);
    assert_eq!(fallible_cache().name(), "fallible");
}

static OPTIONAL: AtomicUsize = AtomicUsize::new(0);

#[cached]
async fn optional(id: u32) -> Option<u32> {
    OPTIONAL.fetch_add(1, Ordering::SeqCst);
    id.is_multiple_of(2).then_some(id * 10)
}

#[tokio::test]
async fn some_is_cached_none_is_not() {
    assert_eq!(optional(2).await, Some(20));
    assert_eq!(optional(2).await, Some(20));
    assert_eq!(optional(3).await, None);
    assert_eq!(optional(3).await, None);
    assert_eq!(OPTIONAL.load(Ordering::SeqCst), 3);
    // A `None` is a load that found nothing, not a failed one.
    let m = optional_cache().metrics();
    assert_eq!((m.loads, m.load_errors, m.size), (3, 0, 1));
}

static SLOW_NONE: AtomicUsize = AtomicUsize::new(0);

#[cached]
async fn slow_none(id: u32) -> Option<u32> {
    SLOW_NONE.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    (id > 100).then_some(id)
}

/// Concurrent callers of a load that finds nothing all get `None` from that
/// one load: nobody loads again, nothing is counted as an error.
#[tokio::test(start_paused = true)]
async fn waiters_of_a_none_get_none_from_the_one_load() {
    let got = join_all((0..10).map(|_| slow_none(1))).await;
    assert!(got.iter().all(Option::is_none));
    assert_eq!(SLOW_NONE.load(Ordering::SeqCst), 1, "one load for ten callers");
    let m = slow_none_cache().metrics();
    assert_eq!((m.misses, m.loads, m.coalesced, m.load_errors), (10, 1, 9, 0));
}

static EXPIRING: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 60)]
async fn expiring() -> u64 {
    EXPIRING.fetch_add(1, Ordering::SeqCst) as u64
}

#[cached(ttl = 0.5, unbounded)]
async fn half_second(n: u8) -> u8 {
    n
}

#[tokio::test(start_paused = true)]
async fn the_ttl_expires_entries() {
    assert_eq!(expiring().await, 0);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(expiring().await, 0);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(expiring().await, 1);
    half_second(1).await;
    tokio::time::advance(Duration::from_millis(499)).await;
    assert!(half_second_cache().contains_key(&(1,)));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!half_second_cache().contains_key(&(1,)));
    assert_eq!(half_second_cache().metrics().max_size, None);
}

static LENGTHS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Filter {
    min: u32,
}

#[cached]
async fn count(name: &str, filter: &Filter, tags: &[u8]) -> usize {
    LENGTHS.fetch_add(1, Ordering::SeqCst);
    name.len() + filter.min as usize + tags.len()
}

#[tokio::test]
async fn borrowed_arguments_key_by_their_owned_form() {
    let name = String::from("ada");
    assert_eq!(count(&name, &Filter { min: 1 }, &[1, 2]).await, 6);
    assert_eq!(count("ada", &Filter { min: 1 }, &[1, 2]).await, 6);
    assert_eq!(LENGTHS.load(Ordering::SeqCst), 1);
    let key: (String, Filter, Vec<u8>) = ("ada".to_string(), Filter { min: 1 }, vec![1, 2]);
    assert_eq!(count_cache().peek(&key), Some(6));
    assert!(count_invalidate("ada", &Filter { min: 1 }, &[1, 2]));
    assert!(!count_invalidate("ada", &Filter { min: 1 }, &[1, 2]));
    count("ada", &Filter { min: 1 }, &[1, 2]).await;
    assert_eq!(LENGTHS.load(Ordering::SeqCst), 2);
}

static REFRESHED: AtomicUsize = AtomicUsize::new(0);

#[cached]
async fn version(id: u8) -> Result<usize, String> {
    let n = REFRESHED.fetch_add(1, Ordering::SeqCst);
    if id == 0 { Err("no such id".into()) } else { Ok(n) }
}

#[tokio::test]
async fn refresh_loads_afresh_and_stores_and_invalidate_removes() {
    assert_eq!(version(1).await, Ok(0));
    assert_eq!(version(1).await, Ok(0));
    assert_eq!(version_refresh(1).await, Ok(1));
    assert_eq!(version(1).await, Ok(1), "the refreshed value is stored");
    assert_eq!(version_refresh(0).await, Err("no such id".to_string()));
    assert!(!version_cache().contains_key(&(0,)), "an error is not stored");
    assert!(version_invalidate(1));
    assert_eq!(version(1).await, Ok(3));
}

/// A service with a connection pool: `self` and the pool are not part of
/// the key.
struct UserService {
    pool: Arc<AtomicUsize>,
}

impl UserService {
    #[cached(skip(self, trace))]
    async fn find(&self, id: u64, trace: &str) -> Option<Arc<String>> {
        self.pool.fetch_add(1, Ordering::SeqCst);
        let _ = trace;
        Some(Arc::new(format!("user {id}")))
    }

    /// An associated function: its companions are associated functions too.
    #[cached(maxsize = 10)]
    async fn constant(n: u8) -> u8 {
        n + 1
    }
}

#[tokio::test]
async fn skip_self_on_a_method_shares_one_cache_across_instances() {
    let pool = Arc::new(AtomicUsize::new(0));
    let a = UserService { pool: Arc::clone(&pool) };
    let b = UserService { pool: Arc::clone(&pool) };
    assert_eq!(a.find(1, "req-1").await.unwrap().as_str(), "user 1");
    assert_eq!(b.find(1, "req-2").await.unwrap().as_str(), "user 1");
    assert_eq!(pool.load(Ordering::SeqCst), 1, "one cache for every instance; skipped args are not in the key");
    assert_eq!(UserService::find_cache().metrics().hits, 1);
    assert!(a.find_invalidate(1, "any"));
    a.find_refresh(2, "warm").await;
    assert_eq!(pool.load(Ordering::SeqCst), 2);
    assert!(UserService::find_cache().contains_key(&(2,)));
    assert_eq!(UserService::constant(1).await, 2);
    assert_eq!(UserService::constant_cache().metrics().max_size, Some(10));
    assert!(UserService::constant_invalidate(1));
}

static KEYED: AtomicUsize = AtomicUsize::new(0);

#[cached(key = user.to_lowercase(), key_type = String)]
async fn by_name(user: &str, _request_id: u64) -> usize {
    KEYED.fetch_add(1, Ordering::SeqCst);
    user.len()
}

#[tokio::test]
async fn key_and_key_type_replace_the_arguments_as_the_key() {
    assert_eq!(by_name("Ada", 1).await, 3);
    assert_eq!(by_name("ADA", 2).await, 3);
    assert_eq!(KEYED.load(Ordering::SeqCst), 1);
    assert!(by_name_cache().contains_key("ada"));
}

/// An error type that is not `Clone`.
#[derive(Debug)]
struct Opaque;

static OPAQUE: AtomicUsize = AtomicUsize::new(0);

#[cached]
async fn opaque(id: u8) -> Result<u8, Opaque> {
    OPAQUE.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(10)).await;
    if id == 0 { Err(Opaque) } else { Ok(id) }
}

#[tokio::test(start_paused = true)]
async fn an_error_that_is_not_clone_reaches_each_waiter_by_its_own_attempt() {
    let got = within(join_all((0..5).map(|_| opaque(0)))).await;
    assert!(got.iter().all(Result::is_err));
    assert_eq!(OPAQUE.load(Ordering::SeqCst), 5, "the leader's run, then one attempt per waiter");
    let ok = within(join_all((0..5).map(|_| opaque(1)))).await;
    assert!(ok.iter().all(|r| matches!(r, Ok(1))));
    assert_eq!(OPAQUE.load(Ordering::SeqCst), 6, "success is shared as usual");
}

#[cached]
async fn read_config(path: &str) -> std::io::Result<Arc<String>> {
    if path.is_empty() {
        return Err(std::io::Error::other("empty path"));
    }
    Ok(Arc::new(path.to_uppercase()))
}

#[tokio::test]
async fn result_aliases_and_question_marks_work() {
    assert_eq!(read_config("a").await.unwrap().as_str(), "A");
    assert!(read_config("").await.is_err());
    assert_eq!(read_config_cache().len(), 1);
}

mod renamed {
    pub(crate) use async_cache as cache_crate;
}

#[cached(crate = renamed::cache_crate)]
async fn through_a_renamed_crate(n: u8) -> u8 {
    n
}

#[tokio::test]
async fn crate_names_the_facade_by_another_path() {
    assert_eq!(through_a_renamed_crate(4).await, 4);
    assert_eq!(through_a_renamed_crate_cache().len(), 1);
}

static PANICS_ONCE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
async fn panics_once(n: u8) -> u8 {
    if PANICS_ONCE_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        panic!("first run panics");
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_body_hands_the_call_to_a_waiter() {
    let first = tokio::spawn(panics_once(1));
    // The second call must find the first one's load in flight: wait for
    // its body to start (a fixed sleep lost that race on a loaded machine).
    within(async {
        while PANICS_ONCE_RUNS.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let second = tokio::spawn(panics_once(1));
    assert!(within(first).await.unwrap_err().is_panic());
    assert_eq!(within(second).await.unwrap(), 1);
}

/// Two functions written by one `macro_rules!` macro share its span; each
/// still gets a cache of its own.
macro_rules! two_lookups {
    ($($name:ident => $offset:expr),*) => {$(
        #[cached(maxsize = 10)]
        async fn $name(n: u64) -> u64 {
            n + $offset
        }
    )*};
}

two_lookups!(plus_one => 1, plus_two => 2);

#[tokio::test]
async fn functions_from_one_macro_rules_expansion_have_their_own_caches() {
    assert_eq!(within(plus_one(10)).await, 11);
    assert_eq!(within(plus_two(10)).await, 12, "plus_two answered from plus_one's cache");
    assert!(!std::ptr::eq(plus_one_cache(), plus_two_cache()));
    assert_eq!((plus_one_cache().len(), plus_two_cache().len()), (1, 1));
}

#[cached(maxsize = 100, policy = "tinylfu")]
async fn scanned(n: u64) -> u64 {
    n
}

#[cached(maxsize = 100)]
async fn scanned_lru(n: u64) -> u64 {
    n
}

#[tokio::test]
async fn policy_tinylfu_keeps_popular_arguments_through_a_scan() {
    for _ in 0..10 {
        for n in 0..50 {
            scanned(n).await;
            scanned_lru(n).await;
        }
    }
    for n in 1_000..1_500 {
        scanned(n).await;
        scanned_lru(n).await;
    }
    let kept = |cache: &async_cache::Cache<(u64,), u64>| (0..50).filter(|n| cache.contains_key(&(*n,))).count();
    assert_eq!(kept(scanned_cache()), 50, "TinyLfu kept every popular key");
    assert_eq!(kept(scanned_lru_cache()), 0, "LRU, the default, kept none");
}

/// Settings from configuration: a `const` bound and a TTL a function
/// computes, evaluated once, when the cache is first used.
const CONFIGURED_MAX: usize = 3;
static CONFIG_READS: AtomicUsize = AtomicUsize::new(0);

fn configured_ttl() -> Duration {
    CONFIG_READS.fetch_add(1, Ordering::SeqCst);
    Duration::from_millis(500)
}

#[cached(maxsize = CONFIGURED_MAX, ttl = configured_ttl())]
async fn configured(n: u64) -> u64 {
    n
}

#[tokio::test(start_paused = true)]
async fn maxsize_and_ttl_take_expressions_evaluated_once() {
    for n in 0..10 {
        assert_eq!(configured(n).await, n);
    }
    assert_eq!(configured_cache().len(), CONFIGURED_MAX);
    assert_eq!(configured_cache().metrics().max_size, Some(3));
    assert!(configured_invalidate(9));
    assert_eq!(CONFIG_READS.load(Ordering::SeqCst), 1, "evaluated once, at first use");
    configured(1).await;
    tokio::time::advance(Duration::from_millis(600)).await;
    assert!(!configured_cache().contains_key(&(1,)), "the computed TTL applies");
}

static PRICE_LOADS: AtomicUsize = AtomicUsize::new(0);
/// Whether the price source is down.
static SOURCE_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cached(ttl = 10, refresh_after = 5, stale_for = 60, load_timeout_ms = 200)]
async fn price(item: String) -> Result<u64, String> {
    PRICE_LOADS.fetch_add(1, Ordering::SeqCst);
    if SOURCE_DOWN.load(Ordering::SeqCst) {
        return Err(format!("no price for {item}: source down"));
    }
    Ok(item.len() as u64 * 10 + PRICE_LOADS.load(Ordering::SeqCst) as u64)
}

/// The attribute's resilience settings reach the cache: a hit past
/// `refresh_after` reloads in the background, a failed reload of an
/// expired entry serves the stale value, and the body runs as a task.
#[tokio::test(start_paused = true)]
async fn refresh_after_and_stale_for_keep_a_function_answering() {
    let first = within(price("tea".into())).await.unwrap();
    assert_eq!(first, 31);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(within(price("tea".into())).await.unwrap(), 31, "the old value, at once");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(within(price("tea".into())).await.unwrap(), 32, "refreshed in the background");
    assert_eq!(price_cache().metrics().refreshes, 1);
    // Expired and the source down: the stale price, not the error.
    SOURCE_DOWN.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(within(price("tea".into())).await.unwrap(), 32);
    assert_eq!(price_cache().metrics().stale_served, 1);
    // No stale value for a key never loaded: the error.
    assert!(within(price("coffee".into())).await.unwrap_err().contains("source down"));
    SOURCE_DOWN.store(false, Ordering::SeqCst);
}

static FINDS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 60, cache_none = true)]
async fn find(id: u64) -> Option<u64> {
    FINDS.fetch_add(1, Ordering::SeqCst);
    id.is_multiple_of(2).then_some(id)
}

#[tokio::test(start_paused = true)]
async fn cache_none_keeps_a_none_for_the_ttl() {
    assert_eq!(find(1).await, None);
    assert_eq!(find(1).await, None);
    assert_eq!(FINDS.load(Ordering::SeqCst), 1, "the None was kept");
    assert_eq!(find(2).await, Some(2));
    assert_eq!(find(2).await, Some(2));
    assert_eq!(FINDS.load(Ordering::SeqCst), 2);
    assert!(find_invalidate(1), "invalidate forgets a kept None");
    assert_eq!(find(1).await, None);
    assert_eq!(FINDS.load(Ordering::SeqCst), 3);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(find(1).await, None);
    assert_eq!(FINDS.load(Ordering::SeqCst), 4, "kept only for the TTL");
}

static FLAKY: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 60, cache_err_for = 5)]
async fn flaky(id: u64) -> Result<u64, String> {
    match FLAKY.fetch_add(1, Ordering::SeqCst) {
        0 => Err(format!("{id}: timeout")),
        _ => Ok(id),
    }
}

#[tokio::test(start_paused = true)]
async fn cache_err_for_keeps_an_error_that_long() {
    assert_eq!(flaky(7).await.unwrap_err(), "7: timeout");
    assert_eq!(flaky(7).await.unwrap_err(), "7: timeout", "the kept error, without a call");
    assert_eq!(FLAKY.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(flaky(7).await, Ok(7), "tried again after cache_err_for");
    assert_eq!(flaky(7).await, Ok(7));
    assert_eq!(FLAKY.load(Ordering::SeqCst), 2);
    assert_eq!(flaky_cache().metrics().size, 1);
}
