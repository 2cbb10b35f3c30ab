//! `time_to_idle`: an entry nobody reads or writes for that long expires,
//! whichever of it and the TTL ends first; `get`, load hits and `insert`
//! start the idle clock again, `peek`, `contains_key` and `iter` do not;
//! idle expiries are reclaimed and told like TTL ones.

use std::time::Duration;

use cache_core::{Cache, Policy, RemovalCause};

use crate::listener::{recording, taken, within};

const IDLE: Duration = Duration::from_secs(10);

async fn advance_secs(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn reads_and_writes_restart_the_idle_clock_peeks_do_not() {
    for policy in [Policy::Lru, Policy::TinyLfu] {
        let cache: Cache<&str, u64> = Cache::builder().policy(policy).time_to_idle(IDLE).build();
        for key in ["get", "load hit", "try-load hit", "insert", "peek", "contains", "iter", "untouched"] {
            cache.insert(key, 1);
        }
        advance_secs(6).await;
        assert_eq!(cache.get("get"), Some(1));
        assert_eq!(within(cache.get_or_load("load hit", || async { 2 })).await, 1);
        let hit: Result<u64, _> = within(cache.try_get_or_load("try-load hit", || async { Err::<u64, ()>(()) })).await;
        assert_eq!(hit.ok(), Some(1));
        cache.insert("insert", 3);
        assert_eq!(cache.peek("peek"), Some(1));
        assert!(cache.contains_key("contains"));
        assert_eq!(cache.iter().count(), 8);
        // 12 s since the first writes, 6 s since the second touch.
        advance_secs(6).await;
        let mut alive: Vec<_> = cache.iter().map(|(key, _)| key).collect();
        alive.sort_unstable();
        assert_eq!(alive, ["get", "insert", "load hit", "try-load hit"], "{policy:?}");
        for gone in ["peek", "contains", "iter", "untouched"] {
            assert_eq!(cache.peek(gone), None, "{gone} ({policy:?})");
        }
        assert_eq!(cache.len(), 4, "idle entries are reclaimed ({policy:?})");
        assert_eq!(cache.metrics().expirations, 4);
        // Nobody reads the rest: all gone 10 s after their last touch.
        advance_secs(10).await;
        assert!(cache.is_empty(), "{policy:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn whichever_of_ttl_and_idle_ends_first_ends_the_entry() {
    let cache: Cache<u64, u64> =
        Cache::builder().default_ttl(Duration::from_secs(10)).time_to_idle(Duration::from_secs(3)).build();
    cache.insert(1, 1); // read every 2 s: the TTL ends it at 10 s
    cache.insert(2, 2); // never read: idle at 3 s
    cache.insert_with_ttl(3, 3, Some(Duration::from_secs(2))); // its own TTL ends first
    cache.insert_with_ttl(4, 4, None); // no TTL: only idleness ends it
    for second in (2..=8).step_by(2) {
        advance_secs(2).await;
        assert_eq!(cache.get(&1), Some(1), "at {second} s");
        assert_eq!(cache.get(&4), Some(4), "at {second} s");
        assert_eq!(cache.peek(&2).is_some(), second < 3, "at {second} s");
        assert_eq!(cache.peek(&3), None, "at {second} s");
    }
    advance_secs(2).await; // 10 s
    assert_eq!(cache.get(&1), None, "the TTL ends a busy entry");
    assert_eq!(cache.get(&4), Some(4));
    advance_secs(3).await;
    assert_eq!(cache.peek(&4), None);
    assert!(cache.is_empty());
}

/// With nobody touching the cache, the maintenance task tells idle expiries
/// within a second; an entry read meanwhile is told only once it goes idle.
#[tokio::test(start_paused = true)]
async fn idle_expiries_are_told_within_a_second_without_traffic() {
    let (builder, told) = recording(Cache::builder().time_to_idle(Duration::from_secs(5)));
    let cache = builder.build();
    cache.insert(1, 10);
    cache.insert(2, 20);
    advance_secs(4).await;
    assert_eq!(cache.get(&1), Some(10)); // idle again at 9 s
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(taken(&told).is_empty(), "told before a deadline");
    tokio::time::sleep(Duration::from_millis(1_000)).await; // 5.9 s
    assert_eq!(taken(&told), [(2, 20, RemovalCause::Expired)]);
    tokio::time::sleep(Duration::from_millis(2_900)).await; // 8.8 s
    assert!(taken(&told).is_empty(), "a read entry told before it went idle");
    tokio::time::sleep(Duration::from_millis(1_000)).await; // 9.8 s
    assert_eq!(taken(&told), [(1, 10, RemovalCause::Expired)]);
    assert_eq!(cache.metrics().expirations, 2);
}

#[tokio::test(start_paused = true)]
async fn a_zero_idle_period_stores_nothing() {
    let (builder, told) = recording(Cache::builder().time_to_idle(Duration::ZERO));
    let cache = builder.build();
    cache.insert(1, 10);
    assert_eq!(within(cache.get_or_load(2, || async { 20 })).await, 20);
    assert!(cache.is_empty());
    assert_eq!(taken(&told), [(1, 10, RemovalCause::Expired), (2, 20, RemovalCause::Expired)]);
}

/// Many entries, each read on its own rhythm, against a model: an entry
/// is there exactly while less than one idle period has passed since it
/// was written or last read (the timer wheel re-arms read entries).
#[tokio::test(start_paused = true)]
async fn an_entry_lives_while_read_within_every_idle_period() {
    let cache: Cache<u64, u64> = Cache::builder().max_size(1_000).time_to_idle(IDLE).build();
    let mut touched = [0u64; 1_000];
    for key in 0..1_000 {
        cache.insert(key, key);
    }
    for second in 1..=40u64 {
        advance_secs(1).await;
        for key in 0..1_000u64 {
            // Every 3 to 14 s, from an offset of its own.
            let every = 3 + key % 12;
            if (second + key) % every != 0 {
                continue;
            }
            let alive = second < touched[key as usize] + IDLE.as_secs();
            assert_eq!(cache.get(&key).is_some(), alive, "key {key} at {second} s");
            if alive {
                touched[key as usize] = second;
            }
        }
        let expected = touched.iter().filter(|&&at| second < at + IDLE.as_secs()).count();
        assert_eq!(cache.len(), expected, "at {second} s");
    }
}
