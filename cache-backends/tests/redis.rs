//! The Redis tier against a real `redis-server`: the machine's on
//! 127.0.0.1:6379 (each test under its own key prefix, so tests run in
//! parallel and beside other users of that server), and private ones on
//! spare ports for the fault tests, which stop and restart them.
//!
//! Two `Cache`s with one name, each with its own `RedisTier::connect`,
//! stand for two replicas: they share nothing but Redis.

use std::collections::HashMap;
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_cache::{Cache, RedisTier, TierError};
use cache_backends::{MAX_QUEUED, SKIP_AFTER_FAILURE};
use redis::AsyncCommands;

const URL: &str = "redis://127.0.0.1:6379";

/// Each test's body, bounded: nothing here may hang.
async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), test).await.expect("the test hung")
}

/// A tier on the machine's Redis under a prefix of this test's own.
async fn tier(test: &str) -> RedisTier {
    tier_at(URL, test).await
}

/// Another replica's tier: its own connection, `tier`'s prefix.
async fn replica_of(tier: &RedisTier) -> RedisTier {
    replica_at(URL, tier).await
}

async fn replica_at(url: &str, tier: &RedisTier) -> RedisTier {
    let replica = tier_at(url, "other").await.with_prefix(tier.prefix());
    replica.ready().await.unwrap();
    replica
}

async fn tier_at(url: &str, test: &str) -> RedisTier {
    match RedisTier::connect(url).await {
        Ok(tier) => {
            let tier = tier.with_prefix(prefix(test));
            tier.ready().await.unwrap();
            tier
        }
        Err(error) => panic!(
            "these tests need a Redis server at {url} ({error}). `.ci/run` starts one; by hand: \
             redis-server --port 6379 --save '' --daemonize yes"
        ),
    }
}

fn prefix(test: &str) -> String {
    format!("async-cache-test:{test}:{}:{}", std::process::id(), fastrand::u32(..))
}

/// Two replicas of "users" on the Redis at `url`, under a prefix of this
/// test's own: the first's tier, and each replica's cache.
async fn replicas_at(url: &str, test: &str) -> (RedisTier, Cache<u64, String>, Cache<u64, String>) {
    let a = tier_at(url, test).await;
    let b = replica_at(url, &a).await;
    let (one, two) = (users(&a), users(&b));
    (a, one, two)
}

/// `one` inserts `value` under `key`; once Redis has it, `two` loads it
/// from there and holds it too.
async fn held_by_both(
    url: &str,
    tier: &RedisTier,
    (one, two): (&Cache<u64, String>, &Cache<u64, String>),
    key: u64,
    value: &str,
) {
    one.insert(key, value.to_string());
    written(url, &redis_key(tier, key)).await;
    assert_eq!(two.get_or_load(key, || async { "loaded".to_string() }).await, value);
}

/// A replica's cache of `u64 -> String`, named "users", on `tier`.
fn users(tier: &RedisTier) -> Cache<u64, String> {
    Cache::builder().name("users").max_size(1_000).default_ttl(Duration::from_secs(60)).tier(tier.clone()).build()
}

/// A raw connection, to look at and tamper with what the tier wrote.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// The key the tier uses for `key` of cache "users".
fn redis_key(tier: &RedisTier, key: u64) -> Vec<u8> {
    let mut full = format!("{}:users:", tier.prefix()).into_bytes();
    full.extend(postcard::to_allocvec(&key).unwrap());
    full
}

/// Waits until `done` holds, for at most `limit`; how long that took.
async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    done().then(|| start.elapsed())
}

/// Waits until Redis holds `key` (the tier writes in the background).
async fn written(url: &str, key: &[u8]) {
    let mut raw = raw(url).await;
    for _ in 0..2_000 {
        if raw.exists::<_, bool>(key).await.unwrap() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the tier never wrote the key");
}

/// A loader that counts its runs.
#[derive(Clone, Default)]
struct Loads(Arc<AtomicUsize>);

impl Loads {
    fn load(&self, value: &str) -> impl Future<Output = String> + use<> {
        self.0.fetch_add(1, Ordering::Relaxed);
        let value = value.to_string();
        async move { value }
    }

    fn runs(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

#[tokio::test]
async fn a_miss_on_one_replica_finds_what_another_loaded() {
    bounded(async {
        let (a, one, two) = replicas_at(URL, "miss").await;
        let loads = Loads::default();
        assert_eq!(one.get_or_load(7, || loads.load("Ada")).await, "Ada");
        written(URL, &redis_key(&a, 7)).await;
        // The second replica's miss is served by Redis: its loader never runs.
        assert_eq!(two.get_or_load(7, || loads.load("not this")).await, "Ada");
        assert_eq!(loads.runs(), 1);
        let m = two.metrics();
        assert_eq!((m.tier_hits, m.tier_misses, m.loads, m.tier_errors), (1, 0, 0, 0));
        assert_eq!(m.misses, m.loads + m.coalesced + m.tier_hits, "README's identity");
        assert_eq!(one.metrics().tier_misses, 1);
        // Now local on both: `get` never goes to the network.
        assert_eq!(two.get(&7).as_deref(), Some("Ada"));
        // The TTL crossed: Redis keeps it for the cache's 60 s.
        let ttl: i64 = raw(URL).await.pttl(redis_key(&a, 7)).await.unwrap();
        assert!((50_000..=60_000).contains(&ttl), "{ttl}");
    })
    .await;
}

#[tokio::test]
async fn a_value_from_redis_keeps_what_is_left_of_its_ttl() {
    bounded(async {
        let a = tier("ttl").await;
        let b = replica_of(&a).await;
        let short: Cache<u64, String> =
            Cache::builder().name("users").default_ttl(Duration::from_millis(300)).tier(a.clone()).build();
        let long = users(&b); // 60 s of its own
        short.insert(1, "brief".into());
        written(URL, &redis_key(&a, 1)).await;
        assert_eq!(long.get_or_load(1, || async { "loaded".to_string() }).await, "brief");
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Expired on the replica that found it too, not kept for 60 s.
        assert_eq!(long.get(&1), None);
    })
    .await;
}

#[tokio::test]
async fn remove_on_one_replica_drops_every_other_copy() {
    bounded(async {
        let (a, one, two) = replicas_at(URL, "remove").await;
        held_by_both(URL, &a, (&one, &two), 1, "old").await;
        one.remove(&1);
        let took = eventually(Duration::from_secs(1), || two.get(&1).is_none()).await;
        assert!(took.is_some(), "the other replica kept the removed value");
        let exists: bool = raw(URL).await.exists(redis_key(&a, 1)).await.unwrap();
        assert!(!exists, "removed from Redis too");
        // And a key the remover never held: the other replica still drops it.
        two.insert(2, "two".into());
        written(URL, &redis_key(&a, 2)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(one.get(&2).is_none());
        one.remove(&2);
        assert!(eventually(Duration::from_secs(1), || two.get(&2).is_none()).await.is_some());
    })
    .await;
}

#[tokio::test]
async fn insert_replaces_the_value_everywhere_but_not_its_own() {
    bounded(async {
        let (a, one, two) = replicas_at(URL, "insert").await;
        held_by_both(URL, &a, (&one, &two), 1, "v1").await;
        one.insert(1, "v2".into());
        // The other replica drops v1; its next load finds v2 in Redis.
        assert!(eventually(Duration::from_secs(1), || two.get(&1).is_none()).await.is_some());
        assert_eq!(two.get_or_load(1, || async { "loaded".to_string() }).await, "v2");
        // Its own invalidation does not come back to the writer.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(one.get(&1).as_deref(), Some("v2"));
        assert_eq!(one.metrics().tier_errors + two.metrics().tier_errors, 0);
    })
    .await;
}

#[tokio::test]
async fn a_str_key_removes_a_string_key_everywhere() {
    bounded(async {
        let a = tier("borrowed").await;
        let b = replica_of(&a).await;
        let build = |tier: &RedisTier| -> Cache<String, u32> { Cache::builder().name("n").tier(tier.clone()).build() };
        let (one, two) = (build(&a), build(&b));
        two.insert("ada".to_string(), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        one.remove("ada"); // a &str, and not held by `one`
        assert!(eventually(Duration::from_secs(1), || two.get("ada").is_none()).await.is_some());
    })
    .await;
}

#[tokio::test]
async fn clear_deletes_only_its_own_caches_keys() {
    bounded(async {
        let (a, one, two) = replicas_at(URL, "clear").await;
        let elsewhere = tier("elsewhere").await;
        let orders: Cache<u64, String> = Cache::builder().name("orders").tier(a.clone()).build();
        let foreign = users(&elsewhere);
        for k in 0..2_500 {
            one.insert(k, format!("user {k}"));
        }
        two.insert(9_999, "held by two".into());
        orders.insert(1, "order".into());
        foreign.insert(1, "another prefix".into());
        written(URL, &redis_key(&a, 2_499)).await;
        written(URL, &redis_key(&elsewhere, 1)).await;
        one.clear();
        assert!(eventually(Duration::from_secs(2), || two.is_empty()).await.is_some());
        let mut raw = raw(URL).await;
        let left: Vec<Vec<u8>> = raw.keys(format!("{}:users:*", a.prefix())).await.unwrap();
        assert!(left.is_empty(), "{} keys left", left.len());
        let order: Option<Vec<u8>> = raw.get(format!("{}:orders:{}", a.prefix(), "\u{1}")).await.unwrap();
        assert!(order.is_some(), "another cache's key stays");
        assert!(raw.exists::<_, bool>(redis_key(&elsewhere, 1)).await.unwrap(), "another prefix's key stays");
        assert_eq!(orders.get(&1).as_deref(), Some("order"));
    })
    .await;
}

#[tokio::test]
async fn a_batch_asks_redis_once_and_loads_only_what_is_missing() {
    bounded(async {
        let a = tier("batch").await;
        let one = users(&a);
        for k in 0..5 {
            one.insert(k, format!("stored {k}"));
        }
        written(URL, &redis_key(&a, 4)).await;
        let b = replica_of(&a).await;
        let two = users(&b);
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&asked);
        let batched = two.batched(move |keys: Vec<u64>| {
            seen.lock().unwrap().push(keys.clone());
            async move {
                Ok::<_, std::io::Error>(keys.into_iter().map(|k| (k, format!("loaded {k}"))).collect::<HashMap<_, _>>())
            }
        });
        let found = batched.get_many((0..10).collect()).await.unwrap();
        assert_eq!(found.len(), 10);
        assert_eq!(found[&3], "stored 3");
        assert_eq!(found[&8], "loaded 8");
        let mut asked = asked.lock().unwrap().concat();
        asked.sort();
        assert_eq!(asked, (5..10).collect::<Vec<_>>(), "only the keys Redis lacked were loaded");
        let m = two.metrics();
        assert_eq!((m.tier_hits, m.tier_misses, m.batches), (5, 5, 1));
        assert_eq!(m.misses, m.batched_keys + m.coalesced + m.tier_hits, "README's identity");
        // The loaded ones went to Redis.
        written(URL, &redis_key(&a, 9)).await;
    })
    .await;
}

#[tokio::test]
async fn fetch_and_try_get_or_load_look_in_redis_too() {
    bounded(async {
        let a = tier("fetch").await;
        let one = users(&a);
        one.insert(1, "one".into());
        one.insert(2, "two".into());
        written(URL, &redis_key(&a, 2)).await;
        let two = users(&replica_of(&a).await);
        let fetched = two.fetch(1, || async { Err::<String, _>("the source is down") }).await.unwrap();
        assert_eq!(fetched, "one");
        let tried = two.try_get_or_load(2, || async { Err::<String, _>("the source is down") }).await.unwrap();
        assert_eq!(tried, "two");
        assert_eq!(two.metrics().tier_hits, 2);
    })
    .await;
}

#[tokio::test]
async fn single_flight_holds_across_both_levels() {
    bounded(async {
        let a = tier("flight").await;
        let one = users(&a);
        let loads = Loads::default();
        let callers = (0..100).map(|_| {
            one.get_or_load(5, || {
                let loaded = loads.load("five");
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    loaded.await
                }
            })
        });
        let values = futures_util::future::join_all(callers).await;
        assert!(values.iter().all(|v| v == "five"));
        assert_eq!(loads.runs(), 1);
        let m = one.metrics();
        assert_eq!((m.tier_misses, m.coalesced), (1, 99), "one Redis lookup, one load");
        assert_eq!(m.misses, m.loads + m.coalesced + m.tier_hits, "README's identity");
    })
    .await;
}

#[tokio::test]
async fn garbage_in_redis_is_a_counted_miss_not_a_panic() {
    bounded(async {
        let a = tier("garbage").await;
        let one = users(&a);
        let mut raw = raw(URL).await;
        let _: () = raw.set(redis_key(&a, 1), b"\xff\xff not a value").await.unwrap();
        let _: () = raw.set(redis_key(&a, 2), b"").await.unwrap();
        assert_eq!(one.get_or_load(1, || async { "loaded".to_string() }).await, "loaded");
        assert_eq!(one.get_or_load(2, || async { "loaded".to_string() }).await, "loaded");
        let m = one.metrics();
        assert_eq!((m.tier_errors, m.tier_hits, m.loads), (2, 0, 2));
        // The loaded value does not overwrite a value it did not read
        // (`SET NX`): the bad bytes stay until their owner replaces them.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let kept: Vec<u8> = raw.get(redis_key(&a, 1)).await.unwrap();
        assert_eq!(kept, b"\xff\xff not a value");
        // An insert does replace it.
        one.insert(1, "fixed".into());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fixed: Vec<u8> = raw.get(redis_key(&a, 1)).await.unwrap();
        assert!(fixed.ends_with(b"fixed"));
    })
    .await;
}

#[tokio::test]
async fn connect_says_what_is_wrong() {
    bounded(async {
        let invalid = RedisTier::connect("http://localhost").await.unwrap_err();
        assert!(matches!(invalid, TierError::InvalidUrl { .. }), "{invalid}");
        let port = spare_port();
        let down = RedisTier::connect(&format!("redis://:secret@127.0.0.1:{port}")).await.unwrap_err();
        assert!(matches!(down, TierError::Unreachable { .. }), "{down}");
        let message = down.to_string();
        assert!(message.contains("start it") && !message.contains("secret"), "{message}");
    })
    .await;
}

/// A `redis-server` of this test's own, on `port`, keeping its data in
/// `dir` (append-only file, fsync on every write) so that it survives a
/// restart; killed when dropped.
struct Server(Child);

impl Server {
    async fn start(port: u16, dir: &std::path::Path) -> Server {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("the fault tests start their own redis-server: install it (apt-get install redis-server)");
        let server = Server(child);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        for _ in 0..500 {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                // Up, and done loading its data.
                if redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok() {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server on port {port} did not come up");
    }

    fn stop(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_not_an_outage_and_it_comes_back_safely() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let port = spare_port();
        let url = format!("redis://127.0.0.1:{port}");
        let server = Server::start(port, dir.path()).await;
        let (a, one, two) = replicas_at(&url, "faults").await;
        held_by_both(&url, &a, (&one, &two), 1, "old").await;
        two.insert(2, "two".into());
        written(&url, &redis_key(&a, 2)).await;

        server.stop();
        // A write Redis never gets (counted); the local cache has it.
        one.insert(1, "new".into());
        assert!(eventually(Duration::from_secs(10), || one.metrics().tier_errors == 1).await.is_some());
        assert_eq!(one.get(&1).as_deref(), Some("new"));
        // Local hits go on.
        assert_eq!(two.get(&2).as_deref(), Some("two"));
        // Loads go to the loader, each waiting on Redis 50 ms at most.
        for k in 10..20 {
            let start = Instant::now();
            assert_eq!(one.get_or_load(k, || async { "loaded".to_string() }).await, "loaded");
            assert!(start.elapsed() < Duration::from_secs(1), "a load waited {:?} on a dead Redis", start.elapsed());
        }
        assert!(one.metrics().tier_errors >= 2, "the failed reads are counted");

        // Back, with what it held before (its append-only file), "old" included.
        let server = Server::start(port, dir.path()).await;
        // A replica cut off from invalidations drops its entries (it may
        // have missed some)...
        assert!(eventually(Duration::from_secs(10), || two.get(&2).is_none()).await.is_some());
        assert!(two.get(&1).is_none());
        // ...and the cache whose write was lost has its keys deleted in
        // Redis: no replica loads the value that write replaced.
        let mut raw = raw(&url).await;
        let mut undone = false;
        for _ in 0..1_000 {
            if !raw.exists::<_, bool>(redis_key(&a, 1)).await.unwrap() {
                undone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(undone, "Redis kept the value a lost write replaced");
        assert_eq!(two.get_or_load(1, || async { "loaded".to_string() }).await, "loaded");
        // The tier works again: writes, reads and invalidations.
        two.insert(3, "three".into());
        written(&url, &redis_key(&a, 3)).await;
        tokio::time::sleep(SKIP_AFTER_FAILURE).await;
        assert_eq!(one.get_or_load(3, || async { "loaded".to_string() }).await, "three");
        one.remove(&3);
        assert!(eventually(Duration::from_secs(1), || two.get(&3).is_none()).await.is_some());
        drop(server);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_costs_a_load_its_timeout() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let port = spare_port();
        let url = format!("redis://127.0.0.1:{port}");
        let server = Server::start(port, dir.path()).await;
        let a = tier_at(&url, "stall").await.with_timeout(Duration::from_millis(50));
        let one = users(&a);
        // SIGSTOP: the connections stay open, nothing answers.
        let pid = server.0.id().to_string();
        assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
        let start = Instant::now();
        assert_eq!(one.get_or_load(5, || async { "loaded".to_string() }).await, "loaded");
        let first = start.elapsed();
        // Within the skip window the next miss does not even ask: one
        // error, not two.
        assert_eq!(one.get_or_load(6, || async { "loaded".to_string() }).await, "loaded");
        assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
        assert!(first < Duration::from_secs(1), "a load waited {first:?} on a stalled Redis");
        assert_eq!(one.metrics().tier_errors, 1);
        drop(server);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_does_not_grow_the_write_queue_without_bound() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let port = spare_port();
        let url = format!("redis://127.0.0.1:{port}");
        let server = Server::start(port, dir.path()).await;
        let a = tier_at(&url, "queue").await;
        let one: Cache<u64, u64> = Cache::builder().name("n").max_size(10).tier(a.clone()).build();
        pause(&server, true);
        let writes = MAX_QUEUED as u64 + 50_000;
        for k in 0..writes {
            one.insert(k, k);
        }
        // At most MAX_QUEUED wait (plus one pipeline the writer holds): the
        // rest were dropped at once, and counted.
        let dropped = one.metrics().tier_errors;
        assert!(dropped >= writes - MAX_QUEUED as u64 - 512, "{dropped} of {writes} dropped");
        pause(&server, false);
        // Once Redis answers, the cache's keys there are deleted: none of
        // them (those written before the drop included) is left.
        let mut raw = raw(&url).await;
        let pattern = format!("{}:n:*", a.prefix());
        let mut cleared = false;
        for _ in 0..2_000 {
            let left: Vec<Vec<u8>> = raw.keys(&pattern).await.unwrap();
            if left.is_empty() {
                cleared = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cleared, "keys of a cache with dropped writes stayed in Redis");
        // And the writes queued before the drop (older than it) are not
        // sent after the deletion: the keys stay gone.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let left: Vec<Vec<u8>> = raw.keys(&pattern).await.unwrap();
        assert!(left.is_empty(), "{} keys came back after the deletion", left.len());
        drop(server);
    })
    .await;
}

/// SIGSTOP: the connections stay open, nothing answers.
fn pause(server: &Server, paused: bool) {
    let signal = if paused { "-STOP" } else { "-CONT" };
    assert!(Command::new("kill").args([signal, &server.0.id().to_string()]).status().unwrap().success());
}

static MACRO_TIER: std::sync::OnceLock<RedisTier> = std::sync::OnceLock::new();
static PRICE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[async_cache::cached(ttl = 60, name = "prices", tier = MACRO_TIER.get().expect("connected first").clone())]
async fn price(id: u64) -> u64 {
    PRICE_RUNS.fetch_add(1, Ordering::Relaxed);
    id * 10
}

#[tokio::test]
async fn a_cached_function_shares_its_tier_and_invalidates_every_replica() {
    bounded(async {
        let a = tier("macro").await;
        MACRO_TIER.set(a.clone()).unwrap();
        assert_eq!(price(1).await, 10);
        let key = {
            let mut full = format!("{}:prices:", a.prefix()).into_bytes();
            full.extend(postcard::to_allocvec(&(1u64,)).unwrap());
            full
        };
        written(URL, &key).await;
        // Another replica of the function's cache: its key type is `(u64,)`.
        let other: Cache<(u64,), u64> = Cache::builder().name("prices").tier(replica_of(&a).await).build();
        assert_eq!(other.get_or_load((1,), || async { 0 }).await, 10);
        assert_eq!(other.metrics().tier_hits, 1);
        price_invalidate(1);
        assert!(eventually(Duration::from_secs(1), || other.get(&(1,)).is_none()).await.is_some());
        assert_eq!(price(1).await, 10);
        assert_eq!(PRICE_RUNS.load(Ordering::Relaxed), 2, "invalidated, then loaded again");
    })
    .await;
}
