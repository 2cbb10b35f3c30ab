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

/// Runs `write` on a thread of its own while this one reads key 0 (present
/// throughout) `reads` times, then joins it.
fn read_while(cache: &Cache<u64, u64>, returned: &Arc<AtomicU64>, reads: usize, write: impl FnOnce() + Send + 'static) {
    let writer = thread::spawn(write);
    reader(cache, returned, reads);
    writer.join().unwrap();
}

/// A key overwritten again and again is always found, never stale.
#[test]
fn reads_during_overwrites_always_find_the_key() {
    shuttle::check_pct(
        || {
            let cache = Cache::<u64, u64>::new(16);
            cache.insert(0, 1);
            let returned = Arc::new(AtomicU64::new(1));
            let (writer, published) = (cache.clone(), Arc::clone(&returned));
            read_while(&cache, &returned, 6, move || {
                for version in 2..=4 {
                    writer.insert(0, version);
                    published.store(version, Ordering::SeqCst);
                }
            });
            assert_eq!(cache.get(&0), Some(4));
        },
        SCHEDULES,
        DEPTH,
    );
}

/// Other keys removed and re-inserted around a present key (tombstones,
/// emptied runs) never hide it.
#[test]
fn removals_around_a_key_never_hide_it() {
    shuttle::check_pct(
        || {
            let cache = Cache::<u64, u64>::new(16);
            cache.insert(0, 1);
            for k in 1..6 {
                cache.insert(k, k);
            }
            let returned = Arc::new(AtomicU64::new(1));
            let writer = cache.clone();
            read_while(&cache, &returned, 6, move || {
                for k in 1..6 {
                    writer.remove(&k);
                    writer.insert(k + 10, k);
                }
            });
            assert_eq!(cache.len(), 6);
        },
        SCHEDULES,
        DEPTH,
    );
}

/// A table rebuilt (grown) under a reader: the reader may still probe the
/// old one, and finds the key in either.
#[test]
fn a_table_growing_under_a_reader_keeps_every_key() {
    shuttle::check_pct(
        || {
            let cache = Cache::<u64, u64>::new(64);
            cache.insert(0, 1);
            let returned = Arc::new(AtomicU64::new(1));
            let writer = cache.clone();
            // 16 words, rebuilt at half full: these inserts grow it twice.
            read_while(&cache, &returned, 6, move || {
                for k in 1..20 {
                    writer.insert(k, k);
                }
            });
            assert_eq!(cache.len(), 20);
        },
        SCHEDULES,
        DEPTH,
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
