//! Model tests of the lock-free read path under shuttle: the table's words,
//! the slots' metas and the shard pointers are shuttle's atomics in this
//! build, so each schedule may switch threads between any two of their loads
//! and stores, as well as at every lock. A reader runs `get`, `peek` and
//! `contains_key` against writers that overwrite, remove, re-insert and grow
//! the table, and checks linearizability per key (DESIGN.md): a key present
//! throughout is always found, and never with a value that an insert which
//! already returned had replaced.
//!
//! Shuttle runs atomics as sequentially consistent: these tests check the
//! protocol's interleavings; the weaker orderings are argued in the code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_core_shuttle::Cache;
use shuttle::thread;

/// Schedules per test (PCT, depth 3: bugs that need up to three
/// well-placed preemptions are found with good probability).
const SCHEDULES: usize = 1_000;
const DEPTH: usize = 3;

/// The value of the last `insert` of the overwritten key that returned.
fn reader(cache: &Cache<u64, u64>, returned: &AtomicU64, reads: usize) {
    for read in 0..reads {
        let floor = returned.load(Ordering::SeqCst);
        let got = match read % 3 {
            0 => cache.get(&0),
            1 => cache.peek(&0),
            _ => cache.contains_key(&0).then_some(u64::MAX),
        };
        let got = got.unwrap_or_else(|| panic!("read {read} missed key 0, present throughout"));
        assert!(got >= floor, "read {read} saw {got}, replaced by {floor} before it started");
    }
}

/// One model test: a cache of `capacity` with key 0 present (version 1),
/// `setup` on it, then `write` on a thread of its own (publishing in its
/// second argument the version of each insert of key 0 that returned)
/// while this thread reads key 0 six times; `check` once both are done.
fn model(
    capacity: usize,
    setup: fn(&Cache<u64, u64>),
    write: fn(Cache<u64, u64>, &AtomicU64),
    check: fn(&Cache<u64, u64>),
) {
    shuttle::check_pct(
        move || {
            let cache = Cache::<u64, u64>::new(capacity);
            cache.insert(0, 1);
            setup(&cache);
            let returned = Arc::new(AtomicU64::new(1));
            let writer = {
                let (cache, returned) = (cache.clone(), Arc::clone(&returned));
                thread::spawn(move || write(cache, &returned))
            };
            reader(&cache, &returned, 6);
            writer.join().unwrap();
            check(&cache);
        },
        SCHEDULES,
        DEPTH,
    );
}

/// A key overwritten again and again is always found, never stale.
#[test]
fn reads_during_overwrites_always_find_the_key() {
    model(
        16,
        |_| {},
        |cache, published| {
            for version in 2..=4 {
                cache.insert(0, version);
                published.store(version, Ordering::SeqCst);
            }
        },
        |cache| assert_eq!(cache.get(&0), Some(4)),
    );
}

/// Overwrites that alternate between a TTL and none: the key never looks
/// expired to a reader (a deadline is stored before its entry is published,
/// and an entry without one never reads one, even in a slot that had one).
#[test]
fn reads_during_overwrites_with_and_without_a_ttl_always_find_the_key() {
    model(
        16,
        |_| {},
        |cache, published| {
            for version in 2..=5 {
                let ttl = (version % 2 == 0).then(|| Duration::from_secs(3_600));
                cache.insert_with_ttl(0, version, ttl);
                published.store(version, Ordering::SeqCst);
            }
        },
        |cache| assert_eq!(cache.get(&0), Some(5)),
    );
}

/// Other keys removed and re-inserted around a present key (tombstones,
/// emptied runs) never hide it.
#[test]
fn removals_around_a_key_never_hide_it() {
    model(
        16,
        |cache| (1..6).for_each(|k| cache.insert(k, k)),
        |cache, _| {
            for k in 1..6 {
                cache.remove(&k);
                cache.insert(k + 10, k);
            }
        },
        |cache| assert_eq!(cache.len(), 6),
    );
}

/// A table rebuilt (grown) under a reader: the reader may still probe the
/// old one, and finds the key in either.
#[test]
fn a_table_growing_under_a_reader_keeps_every_key() {
    model(
        64,
        |_| {},
        // 16 words, rebuilt at half full: these inserts grow it twice.
        |cache, _| (1..20).for_each(|k| cache.insert(k, k)),
        |cache| assert_eq!(cache.len(), 20),
    );
}

/// Two writers overwrite one key while a third thread reads it; after both
/// writers are done, the value is one of their last writes.
#[test]
fn concurrent_overwrites_leave_one_of_the_last_values() {
    shuttle::check_pct(
        || {
            let cache = Cache::<u64, u64>::new(16);
            cache.insert(0, 1);
            let returned = Arc::new(AtomicU64::new(1));
            let writers: Vec<_> = [10u64, 20]
                .into_iter()
                .map(|base| {
                    let cache = cache.clone();
                    thread::spawn(move || {
                        for v in base..base + 2 {
                            cache.insert(0, v);
                        }
                    })
                })
                .collect();
            reader(&cache, &returned, 4);
            for writer in writers {
                writer.join().unwrap();
            }
            assert!(matches!(cache.get(&0), Some(11 | 21)));
            assert_eq!(cache.len(), 1);
        },
        SCHEDULES,
        DEPTH,
    );
}
