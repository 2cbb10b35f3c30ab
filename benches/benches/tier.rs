//! The Redis tier against the machine's Redis (127.0.0.1:6379), each figure
//! beside what the same work costs through the `redis` crate alone:
//!
//! - an L2 hit (local miss, Redis hit) against a raw `GET` of the same
//!   bytes, interleaved key by key;
//! - a batch of 100 keys through `Batched` (one `MGET`) against 100 single
//!   `GET`s;
//! - invalidation: from `remove` returning on one replica to the other
//!   returning `None`, with both replicas in this process and with the
//!   other one in a child process (clocks: `SystemTime`, one machine);
//! - the local hit path of a cache with a tier against one without.
//!
//! `cargo bench -p benches --bench tier` prints the tables and writes them
//! into BENCHMARKS.md (the section between its `tier` markers).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_cache::{Cache, RedisTier};
use benches::key_of;
use redis::AsyncCommands;

const URL: &str = "redis://127.0.0.1:6379";
const KEYS: u64 = 5_000;
const TRIALS: u64 = 1_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Some(at) = args.iter().position(|a| a == "--replica") {
        runtime.block_on(replica(&args[at + 1]));
        return;
    }
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches` runs nothing here: it needs Redis and minutes
    }
    let report = runtime.block_on(run());
    println!("{report}");
    write_report(&report);
}

async fn tier(prefix: &str) -> RedisTier {
    let tier = RedisTier::connect(URL)
        .await
        .expect("this benchmark needs Redis on 127.0.0.1:6379: redis-server --port 6379 --save '' --daemonize yes")
        .with_prefix(prefix);
    tier.ready().await.unwrap();
    tier
}

fn cache(tier: &RedisTier) -> Cache<u64, String> {
    Cache::builder().name("bench").max_size(100_000).default_ttl(Duration::from_secs(600)).tier(tier.clone()).build()
}

/// A distinct 100-byte value per key.
fn value_of(i: u64) -> String {
    format!("{i:0>100}")
}

fn redis_key(prefix: &str, key: u64) -> Vec<u8> {
    let mut full = format!("{prefix}:bench:").into_bytes();
    full.extend(postcard::to_allocvec(&key).unwrap());
    full
}

async fn written(raw: &mut redis::aio::MultiplexedConnection, key: &[u8]) {
    while !raw.exists::<_, bool>(key).await.unwrap() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn run() -> String {
    let prefix = format!("async-cache-bench:{}", std::process::id());
    let mut raw = redis::Client::open(URL).unwrap().get_multiplexed_async_connection().await.unwrap();
    let writer = cache(&tier(&prefix).await);
    for i in 0..KEYS {
        writer.insert(key_of(i), value_of(i));
    }
    written(&mut raw, &redis_key(&prefix, key_of(KEYS - 1))).await;
    let mut out = String::new();

    // L2 hit against a raw GET, interleaved.
    let reader = cache(&tier(&prefix).await);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..KEYS / 2 {
        let key = key_of(i);
        let start = Instant::now();
        let bytes: Vec<u8> = raw.get(redis_key(&prefix, key)).await.unwrap();
        theirs.push(micros(start.elapsed()));
        assert!(!bytes.is_empty());
        let start = Instant::now();
        let value = reader.get_or_load(key, || async { unreachable!("in Redis") }).await;
        ours.push(micros(start.elapsed()));
        assert_eq!(value.len(), 100);
    }
    assert_eq!(reader.metrics().tier_hits, KEYS / 2);
    let row =
        |name: &str, s: &mut Vec<f64>| format!("| {name} | {:.1} | {:.1} |\n", percentile(s, 0.5), percentile(s, 0.99));
    out.push_str(&format!(
        "### L2 hit: a local miss served by Redis, u64 -> 100-byte String, {} distinct key_of(i), interleaved with a raw GET of the same key\n\n",
        KEYS / 2
    ));
    out.push_str("| path | p50 µs | p99 µs |\n|---|---|---|\n");
    let (p50, p99) = (
        percentile(&mut ours, 0.5) / percentile(&mut theirs, 0.5),
        percentile(&mut ours, 0.99) / percentile(&mut theirs, 0.99),
    );
    out.push_str(&row("async-cache get_or_load (tier hit, stored locally)", &mut ours));
    out.push_str(&row("raw redis GET (the redis crate, multiplexed)", &mut theirs));
    out.push_str(&format!("\nL2 hit over raw GET: {p50:.2}× at p50, {p99:.2}× at p99.\n\n"));

    // A batch of 100 through one MGET against 100 GETs.
    let batcher = cache(&tier(&prefix).await);
    let batched = batcher.batched(|keys: Vec<u64>| async move {
        Ok::<_, std::convert::Infallible>(keys.into_iter().map(|k| (k, String::new())).collect())
    });
    let (mut ours, mut theirs, mut mget) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..(KEYS / 2 / 100) {
        let keys: Vec<u64> = (KEYS / 2 + round * 100..KEYS / 2 + round * 100 + 100).map(key_of).collect();
        let start = Instant::now();
        for key in &keys {
            let _: Vec<u8> = raw.get(redis_key(&prefix, *key)).await.unwrap();
        }
        theirs.push(micros(start.elapsed()));
        let start = Instant::now();
        let _: Vec<Vec<u8>> = raw.mget(keys.iter().map(|k| redis_key(&prefix, *k)).collect::<Vec<_>>()).await.unwrap();
        mget.push(micros(start.elapsed()));
        let start = Instant::now();
        let found = batched.get_many(keys).await.unwrap();
        ours.push(micros(start.elapsed()));
        assert!(found.values().all(|v| v.len() == 100));
    }
    out.push_str("### A batch of 100 keys, all in Redis: `Batched::get_many` (one MGET) against raw calls\n\n");
    out.push_str("| path | p50 µs | p99 µs |\n|---|---|---|\n");
    let ratio = percentile(&mut theirs, 0.5) / percentile(&mut ours, 0.5);
    out.push_str(&row("async-cache Batched::get_many (100 keys = max_batch_size: sent at once, no window)", &mut ours));
    out.push_str(&row("raw: 100 sequential GETs", &mut theirs));
    out.push_str(&row("raw: one MGET of 100", &mut mget));
    out.push_str(&format!("\n100 GETs take {ratio:.1}× a batch through the tier (p50).\n\n"));

    // Invalidation, two replicas in this process.
    let (a, b) = (cache(&tier(&prefix).await), cache(&tier(&prefix).await));
    let mut local = Vec::new();
    for i in 0..TRIALS {
        let key = key_of(KEYS + i);
        a.insert(key, value_of(i));
        written(&mut raw, &redis_key(&prefix, key)).await;
        assert_eq!(b.get_or_load(key, || async { unreachable!("in Redis") }).await, value_of(i));
        let start = Instant::now();
        a.remove(&key);
        while b.get(&key).is_some() {
            tokio::task::yield_now().await;
        }
        local.push(micros(start.elapsed()));
    }

    // Invalidation, the other replica in a child process.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--replica", &prefix])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut remote = Vec::new();
    for i in 0..TRIALS {
        let key = key_of(2 * KEYS + i);
        a.insert(key, value_of(i));
        written(&mut raw, &redis_key(&prefix, key)).await;
        writeln!(to_child, "{key}").unwrap();
        assert_eq!(from_child.next().unwrap().unwrap(), "holding");
        let start = SystemTime::now();
        a.remove(&key);
        let gone: u128 = from_child.next().unwrap().unwrap().parse().unwrap();
        let start = start.duration_since(UNIX_EPOCH).unwrap().as_nanos();
        remote.push(gone.saturating_sub(start) as f64 / 1e3);
    }
    drop(to_child);
    child.wait().unwrap();
    out.push_str(&format!(
        "### Invalidation: from `remove` returning on one replica to `get` returning `None` on another, {TRIALS} trials\n\n"
    ));
    out.push_str("| replicas | p50 µs | p99 µs | max µs |\n|---|---|---|---|\n");
    for (name, s) in [("two caches in one process", &mut local), ("two processes", &mut remote)] {
        let max = s.iter().copied().fold(0.0, f64::max);
        out.push_str(&format!("| {name} | {:.0} | {:.0} | {max:.0} |\n", percentile(s, 0.5), percentile(s, 0.99)));
    }
    out.push_str("\nGoal: no replica returns the old value more than 50 ms (50,000 µs) after `remove` returns.\n\n");

    // The local hit path, with a tier and without.
    let plain: Cache<u64, String> = Cache::builder().max_size(100_000).default_ttl(Duration::from_secs(600)).build();
    let tiered = cache(&tier(&prefix).await);
    for i in 0..10_000 {
        plain.insert(key_of(i), value_of(i));
        tiered.insert(key_of(i), value_of(i));
    }
    let time = |c: &Cache<u64, String>| {
        let start = Instant::now();
        for i in 0..1_000_000u64 {
            std::hint::black_box(c.get(&key_of(i.wrapping_mul(7919) % 10_000)));
        }
        start.elapsed().as_nanos() as f64 / 1e6
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        without.push(time(&plain));
        with.push(time(&tiered));
    }
    let (w, wo) = (percentile(&mut with, 0.5), percentile(&mut without, 0.5));
    out.push_str("### Local hit path, 1 thread: 10,000 u64 -> 100-byte String entries, 1,000,000 gets, median of 7 interleaved rounds\n\n");
    out.push_str("| cache | ns/get |\n|---|---|\n");
    out.push_str(&format!("| without a tier | {wo:.1} |\n| with a RedisTier | {w:.1} |\n\nWith a tier over without: {:.3}× (goal: ≤ 1.05×).\n", w / wo));

    // Leave Redis as we found it.
    writer.clear();
    tokio::time::sleep(Duration::from_millis(500)).await;
    out
}

/// The child replica: for each key on stdin, load it (from Redis), say
/// "holding", then wait for the invalidation and print when it landed.
async fn replica(prefix: &str) {
    let replica = cache(&tier(prefix).await);
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let key: u64 = line.unwrap().parse().unwrap();
        replica.get_or_load(key, || async { unreachable!("in Redis") }).await;
        writeln!(stdout, "holding").unwrap();
        stdout.flush().unwrap();
        while replica.get(&key).is_some() {
            tokio::task::yield_now().await;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        writeln!(stdout, "{now}").unwrap();
        stdout.flush().unwrap();
    }
}

/// Puts `report` into BENCHMARKS.md as its `tier` section.
fn write_report(report: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let body = format!(
        "## The Redis tier\n\nOn the machine's Redis (127.0.0.1:6379, loopback), `cargo bench -p benches --bench tier`.\n\n{report}"
    );
    std::fs::write(&path, benches::with_section(&doc, "tier", &body)).unwrap();
    println!("wrote the tier section of BENCHMARKS.md");
}
