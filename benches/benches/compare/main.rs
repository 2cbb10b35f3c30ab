//! async-cache beside quick_cache, moka and a `Mutex<lru::LruCache>`, on
//! identical inputs, in one process, interleaved: each round runs every
//! contender once, and figures are medians over rounds of per-round ratios,
//! so the machine's drift between runs cancels out. Memory is measured in
//! child processes (this binary again), one cache each.
//!
//! `cargo bench -p benches --bench compare` runs everything and rewrites
//! `BENCHMARKS.md` and its plots; `-- --quick` is a short smoke run that
//! writes nothing, and `-- --quick get-hit insert` runs only the cases whose
//! names contain one of those words.

mod contenders;
mod report;
mod workloads;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_cache::Policy;
use benches::memory;
use contenders::{Contender, value};
use report::{Report, Table};

/// Contenders' names, in table order.
const OURS: &str = "async-cache";
const OURS_LFU: &str = "async-cache TinyLfu";
/// async-cache (Lru) with a default TTL: memory, and hits with a TTL.
const OURS_TTL: &str = "async-cache, default_ttl 1 h";
const QUICK: &str = "quick_cache";
const MOKA: &str = "moka";
const LRU: &str = "Mutex<lru>";

struct Settings {
    rounds: usize,
    /// Operations per thread per round in the throughput cases.
    ops: usize,
    hit_ratio_requests: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--memory") {
        memory_child(&args[at + 1]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let settings = if quick {
        Settings { rounds: 3, ops: 2_000_000, hit_ratio_requests: 400_000 }
    } else {
        // Many short rounds: this machine's speed drifts in bursts, and a median
        // over more per-round ratios shrugs them off better than a few long ones.
        Settings { rounds: 25, ops: 2_000_000, hit_ratio_requests: 2_000_000 }
    };
    // Words that pick cases; a full run (which writes the report) has none.
    let only: Vec<&str> = args[1..].iter().map(String::as_str).filter(|a| !a.starts_with("--")).collect();
    let wanted = |case: &str| only.is_empty() || only.iter().any(|w| case.contains(w));
    let mut report = Report::new(quick || !only.is_empty());
    let one = wanted("get-hit-1").then(|| get_hit(&settings, &mut report, 1, false));
    let two = wanted("get-hit-2").then(|| get_hit(&settings, &mut report, 2, false));
    if let (Some(one), Some(two)) = (one, two) {
        report.note(format!(
            "Scaling from 1 to 2 threads (throughput ratio; the floor's is this host's ceiling): {}.",
            one.iter()
                .zip(&two)
                .map(|((name, one), (_, two))| format!("{name} {:.2}", 2.0 * one / two))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if wanted("get-hit-ttl") {
        get_hit(&settings, &mut report, 1, true);
    }
    if wanted("mixed") {
        mixed(&settings, &mut report);
    }
    if wanted("insert") {
        insert_with_eviction(&settings, &mut report);
    }
    if wanted("miss-load") {
        miss_and_load(&settings, &mut report);
    }
    if wanted("herd") {
        herd(&settings, &mut report);
    }
    if wanted("metrics") {
        metrics_overhead(&settings, &mut report);
    }
    if wanted("memory") {
        memory(&mut report);
    }
    if wanted("hit-ratio") {
        hit_ratios(&settings, &mut report, quick);
    }
    report.finish();
}

/// Runs `run(index, contender, thread)` for each contender, `rounds` times,
/// interleaved (the order rotates each round); returns ns per operation,
/// per round, per contender. `run` returns the operations it did.
fn interleaved<C: ?Sized + Sync>(
    contenders: &[(&'static str, Box<C>)],
    threads: usize,
    rounds: usize,
    run: impl Fn(usize, &C, usize) -> usize + Sync,
) -> Vec<Vec<f64>> {
    let mut ns = vec![Vec::new(); contenders.len()];
    for round in 0..rounds {
        for i in 0..contenders.len() {
            let which = (i + round) % contenders.len();
            let contender = &*contenders[which].1;
            let started = Instant::now();
            let done: usize = std::thread::scope(|s| {
                let run = &run;
                let handles: Vec<_> = (0..threads).map(|t| s.spawn(move || run(which, contender, t))).collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            ns[which].push(started.elapsed().as_nanos() as f64 / done as f64);
        }
    }
    ns
}

/// A throughput table: ns/op, Mops/s, and our speed over each peer.
fn throughput_table(title: &str, names: &[&'static str], ns: &[Vec<f64>], extra: Option<(&str, Vec<String>)>) -> Table {
    let ours = names.iter().position(|n| *n == OURS).unwrap();
    let quick = names.iter().position(|n| *n == QUICK).unwrap();
    let mut headers = vec!["cache", "ns/op (median)", "Mops/s", "async-cache speed ×", "speed vs quick_cache ×"];
    if let Some((name, _)) = &extra {
        headers.push(name);
    }
    let mut table = Table::new(title, &headers);
    for (i, name) in names.iter().enumerate() {
        let median = report::median(&ns[i]);
        let ratio =
            |base: usize| report::median(&ns[i].iter().zip(&ns[base]).map(|(them, us)| them / us).collect::<Vec<_>>());
        let speedup = ratio(ours);
        // This row's speed over quick_cache's: above 1 when faster.
        let over_quick = 1.0 / ratio(quick);
        // ns/op is wall time per operation over all threads: Mops/s is the total.
        let mut row = vec![
            name.to_string(),
            format!("{median:.1}"),
            format!("{:.1}", 1_000.0 / median),
            format!("{speedup:.2}"),
            format!("{over_quick:.2}"),
        ];
        if let Some((_, values)) = &extra {
            row.push(values[i].clone());
        }
        table.row(row);
    }
    table
}

/// DESIGN.md's get-hit case: capacity 10,000 filled with `key_of(0..10_000)`,
/// each with its own `Arc<String>`; uniformly random present keys. The floor
/// contender is handed the key's index instead (its "cache" is a vector).
/// With `timed`, the contenders are [`contenders::timed`]: caches with and
/// without a TTL (a hit with one reads the clock).
fn get_hit(settings: &Settings, report: &mut Report, threads: usize, timed: bool) -> Vec<(&'static str, f64)> {
    const CAPACITY: u64 = 10_000;
    let mut contenders = if timed { contenders::timed(CAPACITY as usize) } else { contenders::all(CAPACITY as usize) };
    let keys: Vec<u64> = (0..CAPACITY).map(workloads::key_of).collect();
    for (_, c) in &contenders {
        for (i, &k) in keys.iter().enumerate() {
            c.insert(k, value(i as u64));
        }
    }
    // quick_cache keeps slightly fewer than its capacity: use the keys every
    // contender holds, so every lookup is a hit everywhere.
    let present: Vec<u64> =
        (0..CAPACITY).filter(|&i| contenders.iter().all(|(_, c)| c.get(keys[i as usize]))).collect();
    let caches = contenders.len();
    contenders.push(contenders::floor(CAPACITY));
    let trace = workloads::uniform(&present, 1 << 20, 1);
    let ops = settings.ops;
    let ns = interleaved(&contenders, threads, settings.rounds, |which, c, t| {
        let mut hits = 0usize;
        let start = t * 7_919;
        let floor = which == caches;
        for i in 0..ops {
            let index = trace[(start + i) & ((1 << 20) - 1)];
            hits += usize::from(c.get(if floor { index } else { keys[index as usize] }));
        }
        black_box(hits);
        ops
    });
    let names: Vec<_> = contenders.iter().map(|(n, _)| *n).collect();
    let title = format!(
        "get-hit{}, {threads} thread{}: capacity 10,000, uniform random present keys, u64 -> Arc<String>",
        if timed { " with and without a TTL" } else { "" },
        if threads > 1 { "s" } else { "" }
    );
    if !timed {
        report.throughput(threads, &names[..caches], &ns[..caches]);
    }
    report.table(throughput_table(&title, &names, &ns, None));
    let floor = report::median(&ns[caches]);
    report.note(format!(
        "The floor row is no cache: only the clone and drop of the value each hit returns, from a vector. \
         What a cache adds to it, per hit: {}.",
        (0..caches)
            .map(|i| format!("{} {:.1} ns", names[i], report::median(&ns[i]) - floor))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if timed {
        report.note(
            "A hit on an entry with a TTL reads the clock (`clock_gettime`, about 25 ns on this machine's VM), \
             and ours reads the entry's deadline, kept beside the slot; quick_cache has no TTLs."
                .to_string(),
        );
    } else if threads == 1 {
        report.note(format!(
            "Against the Python seed: a hit costs us {:.0} ns here, against its 0.8 µs.",
            report::median(&ns[0])
        ));
    }
    // ns/op is wall time over all threads: per-thread time is threads × it.
    names.iter().zip(&ns).map(|(name, ns)| (*name, report::median(ns) * threads as f64)).collect()
}

fn mixed(settings: &Settings, report: &mut Report) {
    const CAPACITY: usize = 10_000;
    const THREADS: usize = 2;
    const KEYS: u64 = 100_000;
    let contenders = contenders::all(CAPACITY);
    // Ranks, so each key's own value is at hand without a lookup.
    let trace = workloads::zipf_ranks(KEYS, 0.99, 1 << 21, 2);
    let keys: Vec<u64> = (0..KEYS).map(workloads::key_of).collect();
    let values: Vec<contenders::Value> = (0..KEYS).map(value).collect();
    let ops = settings.ops / 2;
    let hits: Vec<AtomicUsize> = (0..contenders.len()).map(|_| AtomicUsize::new(0)).collect();
    let gets: Vec<AtomicUsize> = (0..contenders.len()).map(|_| AtomicUsize::new(0)).collect();
    let ns = interleaved(&contenders, THREADS, settings.rounds, |which, c, t| {
        let (mut h, mut g) = (0, 0);
        let start = t * 1_000_003;
        for i in 0..ops {
            let rank = trace[(start + i) & ((1 << 21) - 1)] as usize;
            let key = keys[rank];
            if i % 10 == 0 {
                c.insert(key, Arc::clone(&values[rank]));
            } else {
                g += 1;
                h += usize::from(c.get(key));
            }
        }
        hits[which].fetch_add(h, Ordering::Relaxed);
        gets[which].fetch_add(g, Ordering::Relaxed);
        ops
    });
    let names: Vec<_> = contenders.iter().map(|(n, _)| *n).collect();
    let ratios: Vec<String> = (0..names.len())
        .map(|i| format!("{:.3}", hits[i].load(Ordering::Relaxed) as f64 / gets[i].load(Ordering::Relaxed) as f64))
        .collect();
    report.throughput(0, &names, &ns);
    report.table(throughput_table(
        "mixed, 2 threads: Zipf(0.99) over 100,000 keys, capacity 10,000, 90% get / 10% insert",
        &names,
        &ns,
        Some(("hit ratio", ratios)),
    ));
}

/// DESIGN.md's insert case: a fresh `u64 -> u64` cache of 10,000 per
/// repetition, `insert(key_of(i), i)` for a million `i`.
fn insert_with_eviction(settings: &Settings, report: &mut Report) {
    const CAPACITY: usize = 10_000;
    const INSERTS: u64 = 1_000_000;
    let names = [OURS, OURS_LFU, QUICK, MOKA, LRU];
    let keys: Vec<u64> = (0..INSERTS).map(workloads::key_of).collect();
    let mut ns = vec![Vec::new(); names.len()];
    for round in 0..settings.rounds {
        for i in 0..names.len() {
            let which = (i + round) % names.len();
            let started = Instant::now();
            match names[which] {
                OURS | OURS_LFU => {
                    let policy = if names[which] == OURS { Policy::Lru } else { Policy::TinyLfu };
                    let cache = async_cache::Cache::<u64, u64>::builder().max_size(CAPACITY).policy(policy).build();
                    for (i, &k) in keys.iter().enumerate() {
                        cache.insert(k, i as u64);
                    }
                    black_box(&cache);
                }
                QUICK => {
                    let cache = quick_cache::sync::Cache::<u64, u64>::new(CAPACITY);
                    for (i, &k) in keys.iter().enumerate() {
                        cache.insert(k, i as u64);
                    }
                    black_box(&cache);
                }
                MOKA => {
                    let cache = moka::sync::Cache::<u64, u64>::new(CAPACITY as u64);
                    for (i, &k) in keys.iter().enumerate() {
                        cache.insert(k, i as u64);
                    }
                    black_box(&cache);
                }
                _ => {
                    let cache = std::sync::Mutex::new(lru::LruCache::<u64, u64>::new(
                        std::num::NonZeroUsize::new(CAPACITY).unwrap(),
                    ));
                    for (i, &k) in keys.iter().enumerate() {
                        cache.lock().unwrap().put(k, i as u64);
                    }
                    black_box(&cache);
                }
            }
            ns[which].push(started.elapsed().as_nanos() as f64 / INSERTS as f64);
        }
    }
    report.throughput(3, &names, &ns);
    report.table(throughput_table(
        "insert with eviction, 1 thread: a fresh u64 -> u64 cache of capacity 10,000, insert(key_of(i), i) for 1,000,000 i",
        &names,
        &ns,
        None,
    ));
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    if workers == 0 {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap()
    }
}

/// A miss and a trivial load through each cache's single-flight path.
fn miss_and_load(settings: &Settings, report: &mut Report) {
    const CAPACITY: usize = 10_000;
    let loads = 1_000_000u64;
    let keys: Vec<u64> = (0..loads).map(workloads::key_of).collect();
    let names = [OURS, OURS_LFU, QUICK, MOKA];
    let rt = runtime(0);
    let mut ns = vec![Vec::new(); names.len()];
    for round in 0..settings.rounds {
        for i in 0..names.len() {
            let which = (i + round) % names.len();
            let started = Instant::now();
            rt.block_on(async {
                match names[which] {
                    OURS | OURS_LFU => {
                        let policy = if names[which] == OURS { Policy::Lru } else { Policy::TinyLfu };
                        let cache = async_cache::Cache::<u64, u64>::builder().max_size(CAPACITY).policy(policy).build();
                        for &k in &keys {
                            black_box(cache.get_or_load(k, || async move { k }).await);
                        }
                    }
                    QUICK => {
                        let cache = quick_cache::sync::Cache::<u64, u64>::new(CAPACITY);
                        for &k in &keys {
                            black_box(cache.get_or_insert_async(&k, async move { Ok::<_, ()>(k) }).await.unwrap());
                        }
                    }
                    _ => {
                        let cache = moka::future::Cache::<u64, u64>::new(CAPACITY as u64);
                        for &k in &keys {
                            black_box(cache.get_with(k, async move { k }).await);
                        }
                    }
                }
            });
            ns[which].push(started.elapsed().as_nanos() as f64 / loads as f64);
        }
    }
    report.table(throughput_table(
        "miss + trivial load through single-flight, 1 thread: a fresh u64 -> u64 cache of capacity 10,000, get_or_load / get_or_insert_async / get_with of 1,000,000 distinct key_of(i)",
        &names,
        &ns,
        None,
    ));
    report.note(format!(
        "Against the Python seed: a miss plus load costs us {:.0} ns here, against its 3 µs of miss overhead.",
        report::median(&ns[0])
    ));
}

/// 10,000 tasks on a 2-worker runtime ask for one key whose load takes 10 ms.
fn herd(settings: &Settings, report: &mut Report) {
    const TASKS: usize = 10_000;
    let names = [OURS, QUICK, MOKA];
    let rt = runtime(2);
    let mut wall = vec![Vec::new(); names.len()];
    let mut calls = vec![0usize; names.len()];
    for round in 0..settings.rounds {
        for i in 0..names.len() {
            let which = (i + round) % names.len();
            let loads = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            rt.block_on(async {
                let load = |loads: Arc<AtomicUsize>| async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    7u64
                };
                let tasks: Vec<_> = match names[which] {
                    OURS => {
                        let cache = async_cache::Cache::<u64, u64>::new(100);
                        (0..TASKS)
                            .map(|_| {
                                let (cache, loads) = (cache.clone(), Arc::clone(&loads));
                                tokio::spawn(async move { cache.get_or_load(1, || load(loads)).await })
                            })
                            .collect()
                    }
                    QUICK => {
                        let cache = Arc::new(quick_cache::sync::Cache::<u64, u64>::new(100));
                        (0..TASKS)
                            .map(|_| {
                                let (cache, loads) = (Arc::clone(&cache), Arc::clone(&loads));
                                tokio::spawn(async move {
                                    cache
                                        .get_or_insert_async(&1, async move { Ok::<_, ()>(load(loads).await) })
                                        .await
                                        .unwrap()
                                })
                            })
                            .collect()
                    }
                    _ => {
                        let cache = moka::future::Cache::<u64, u64>::new(100);
                        (0..TASKS)
                            .map(|_| {
                                let (cache, loads) = (cache.clone(), Arc::clone(&loads));
                                tokio::spawn(async move { cache.get_with(1, load(loads)).await })
                            })
                            .collect()
                    }
                };
                for task in tasks {
                    assert_eq!(task.await.unwrap(), 7);
                }
            });
            wall[which].push(started.elapsed().as_secs_f64() * 1_000.0);
            calls[which] = calls[which].max(loads.load(Ordering::SeqCst));
        }
    }
    let ours = report::median(&wall[0]);
    let mut table = Table::new(
        "thundering herd: 10,000 tasks on a 2-worker runtime, one key, a loader that sleeps 10 ms",
        &["cache", "loader calls (most in a round)", "wall ms (median)", "wall vs async-cache ×"],
    );
    for (i, name) in names.iter().enumerate() {
        let median = report::median(&wall[i]);
        table.row(vec![
            name.to_string(),
            calls[i].to_string(),
            format!("{median:.2}"),
            format!("{:.2}", median / ours),
        ]);
    }
    report.table(table);
}

/// get-hit throughput with `metrics::register` active and without, on
/// identical caches.
fn metrics_overhead(settings: &Settings, report: &mut Report) {
    const CAPACITY: u64 = 10_000;
    let rt = runtime(1);
    let _enter = rt.enter();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let _ = metrics::set_global_recorder(recorder);
    let plain = contenders::Ours(async_cache::Cache::new(CAPACITY as usize));
    let observed = contenders::Ours(async_cache::Cache::builder().max_size(CAPACITY as usize).name("observed").build());
    let _reporter = async_cache::metrics::register(&observed.0);
    let contenders: Vec<(&'static str, Box<dyn Contender>)> =
        vec![("without register", Box::new(plain)), ("with register", Box::new(observed))];
    for (_, c) in &contenders {
        for k in 0..CAPACITY {
            c.insert(k, value(k));
        }
    }
    let keys: Vec<u64> = (0..CAPACITY).collect();
    let trace = workloads::uniform(&keys, 1 << 20, 3);
    let ops = settings.ops;
    let ns = interleaved(&contenders, 1, settings.rounds.max(9), |_, c, _| {
        let mut hits = 0usize;
        for i in 0..ops {
            hits += usize::from(c.get(trace[i & ((1 << 20) - 1)]));
        }
        black_box(hits);
        ops
    });
    let mut table = Table::new(
        "metrics overhead: get-hit, 1 thread, with `async_cache::metrics::register` publishing every second vs not",
        &["cache", "ns/op (median)", "vs without"],
    );
    for (i, (name, _)) in contenders.iter().enumerate() {
        let ratio = report::median(&ns[i].iter().zip(&ns[0]).map(|(x, base)| x / base).collect::<Vec<_>>());
        table.row(vec![name.to_string(), format!("{:.1}", report::median(&ns[i])), format!("{ratio:.3}")]);
    }
    report.table(table);
}

/// Bytes per `u64 -> u64` entry with 1,000,000 entries (see
/// `benches::memory`), one process per cache: async-cache as a user's
/// default build has it (`bench-memory`, built by a `cargo run` of that
/// package alone) and as this bench's build, with `file`; the peers in
/// this binary's own child processes.
fn memory(report: &mut Report) {
    let mut table = Table::new(
        "memory: 1,000,000 u64 -> u64 entries, key_of(i) -> i, in a cache of capacity 1,000,000 (peak RSS growth per entry, each cache in its own process)",
        &["cache", "bytes per entry"],
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let default_build = |row: &str| {
        let mut run = std::process::Command::new(&cargo);
        run.args(["run", "--release", "--quiet", "-p", "bench-memory", "--", row]);
        run
    };
    let this_build = |name: &str| {
        let mut run = std::process::Command::new(std::env::current_exe().expect("this binary"));
        run.args(["--memory", name]);
        run
    };
    let rows = [
        (OURS.to_string(), default_build("lru")),
        (OURS_TTL.to_string(), default_build("lru-ttl")),
        (OURS_LFU.to_string(), default_build("tinylfu")),
        (format!("{OURS}, `file` feature"), this_build(OURS)),
        (format!("{OURS_TTL}, `file` feature"), this_build(OURS_TTL)),
        (QUICK.to_string(), this_build(QUICK)),
        (MOKA.to_string(), this_build(MOKA)),
        (LRU.to_string(), this_build(LRU)),
    ];
    for (name, mut run) in rows {
        let out = run.output().expect("a memory child");
        let text = String::from_utf8_lossy(&out.stdout);
        let bytes: f64 = text.trim().parse().unwrap_or_else(|_| {
            panic!("memory child for {name} said {text:?}: {}", String::from_utf8_lossy(&out.stderr))
        });
        table.row(vec![name, format!("{bytes:.1}")]);
    }
    report.table(table);
    report.note(MEMORY_NOTE.to_string());
}

/// What the memory rows include that not every build has.
const MEMORY_NOTE: &str = "The first three rows are async-cache with its default features, as a user's `async-cache = \"0.1\"` builds it; the two `file` rows are this bench's own build, which turns the feature on to save snapshots: with any persistence feature, each entry's recency link carries a 4-byte stamp that snapshots sort by. Where async-cache's bytes go, at this size: the slot 24 (key, value, state and generation, 4 bytes of the hash), the recency link 8 (two indices; whether an entry is linked is its slot's state, not a copy of its meta in the link), 12 with a persistence feature, the table 8.4 (a 4-byte word per entry at under half full: a power-of-two table of 32,768 words for a shard's 15,625 entries); a TTL adds the deadline (8) and the timer-wheel record (4: the slab index alone; whether a record is its slot's current entry's is told by the entry's deadline lying in the record's wheel bucket).";

/// A cache of this build on the memory workload, in a process of its own.
fn memory_child(name: &str) {
    let fill = || -> Box<dyn std::any::Any> {
        const N: u64 = memory::ENTRIES;
        match name {
            OURS | OURS_TTL => memory::ours(name == OURS_TTL, Policy::Lru),
            QUICK => {
                let cache = quick_cache::sync::Cache::<u64, u64>::new(N as usize);
                for k in 0..N {
                    cache.insert(workloads::key_of(k), k);
                }
                Box::new(cache)
            }
            MOKA => {
                let cache = moka::sync::Cache::<u64, u64>::new(N);
                for k in 0..N {
                    cache.insert(workloads::key_of(k), k);
                }
                cache.run_pending_tasks();
                Box::new(cache)
            }
            LRU => {
                let mut cache = lru::LruCache::<u64, u64>::new(std::num::NonZeroUsize::new(N as usize).unwrap());
                for k in 0..N {
                    cache.put(workloads::key_of(k), k);
                }
                Box::new(std::sync::Mutex::new(cache))
            }
            other => panic!("no memory row named {other:?}"),
        }
    };
    println!("{:.1}", memory::bytes_per_entry(fill));
}

/// Cache-aside over each workload: every contender, Che's approximation
/// of LRU (Zipf only) and Belady's optimum.
fn hit_ratios(settings: &Settings, report: &mut Report, quick: bool) {
    const KEYS: u64 = 100_000;
    const CHE: &str = "Che (LRU)";
    const OPTIMAL: &str = "optimal (Belady)";
    type Trace = Box<dyn Fn(usize) -> Vec<u64>>;
    let table_capacities = [1_000usize, 10_000];
    let capacities: &[usize] = if quick { &[1_000, 10_000] } else { &[500, 1_000, 2_000, 5_000, 10_000, 20_000] };
    let requests = settings.hit_ratio_requests;
    let warmup = requests / 10;
    let mut workloads: Vec<(String, Option<f64>, Trace)> = [0.8, 0.99, 1.2]
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let trace: Trace = Box::new(move |_| workloads::zipf(KEYS, s, requests, 10 + i as u64));
            (format!("Zipf s = {s}"), Some(s), trace)
        })
        .collect();
    workloads.push((
        "loop over 1.5 × capacity".into(),
        None,
        Box::new(move |c| workloads::looping(c as u64 * 3 / 2, requests)),
    ));
    workloads.push((
        "Zipf 0.99 + a scan of 2 × capacity new keys every 50,000".into(),
        None,
        Box::new(move |c| workloads::scanned(KEYS, requests, 50_000, 2 * c as u64, 13)),
    ));
    workloads.push((
        "recency: new key every other request, else one ~capacity/2 back".into(),
        None,
        Box::new(move |c| workloads::recency(c as f64 / 2.0, requests, 14)),
    ));
    let names: Vec<&'static str> = contenders::all(1).into_iter().map(|(n, _)| n).collect();
    let mut headers = vec!["workload", "capacity"];
    headers.extend(&names);
    headers.extend([CHE, OPTIMAL, "TinyLfu − best peer", "Lru − Che"]);
    let mut table = Table::new(
        &format!(
            "hit ratio: cache-aside (get, insert on a miss) over {requests} requests; the first 10% warm up, not counted"
        ),
        &headers,
    );
    let shared = value(0);
    for (title, s, trace_for) in workloads {
        let mut series = vec![Vec::new(); names.len() + 2];
        for &capacity in capacities {
            let trace = trace_for(capacity);
            let mut row = vec![title.clone(), capacity.to_string()];
            let mut ratios = Vec::new();
            for (i, (_, c)) in contenders::all(capacity).into_iter().enumerate() {
                let mut hits = 0usize;
                for (n, &key) in trace.iter().enumerate() {
                    let hit = c.get(key);
                    if !hit {
                        c.insert(key, Arc::clone(&shared));
                    }
                    if n >= warmup {
                        hits += usize::from(hit);
                    }
                }
                let ratio = hits as f64 / (requests - warmup) as f64;
                ratios.push(ratio);
                series[i].push((capacity, ratio));
                row.push(format!("{ratio:.4}"));
            }
            let che = s.map(|s| workloads::che(KEYS, s, capacity as f64));
            let optimal = workloads::belady(&trace, capacity, warmup);
            if let Some(che) = che {
                series[names.len()].push((capacity, che));
            }
            series[names.len() + 1].push((capacity, optimal));
            let at = |name: &str| ratios[names.iter().position(|n| *n == name).unwrap()];
            row.push(che.map_or("—".into(), |che| format!("{che:.4}")));
            row.push(format!("{optimal:.4}"));
            row.push(format!("{:+.4}", at(OURS_LFU) - at(QUICK).max(at(MOKA))));
            row.push(che.map_or("—".into(), |che| format!("{:+.4}", at(OURS) - che)));
            if table_capacities.contains(&capacity) {
                table.row(row);
            }
        }
        let mut labels = names.clone();
        labels.extend([CHE, OPTIMAL]);
        report.hit_ratio_series(title, labels, series);
    }
    report.table(table);
}
