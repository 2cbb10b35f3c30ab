//! Read buffers: hits are recorded here instead of reordering the LRU list
//! under a lock, and replayed by the lock holder before each decision that
//! depends on recency (Caffeine's design).
//!
//! Records are striped by task (by thread outside tokio), so one task's
//! reads land in one stripe in the order it made them and the replay is
//! exact for any single task, even one that moves between worker threads.
//! Stripes are cache-padded, so two threads on different stripes write no
//! shared cache line on a hit.
//!
//! The reader of the stripe that drained last replays (drains) the records
//! every `DRAIN_EVERY` pushes, if the lock is free; any other reader does so
//! only when its stripe's unreplayed records would otherwise be overwritten
//! (checked every `CHECK_EVERY` pushes). So under concurrency one core keeps
//! the replaying, and the LRU links stay in its cache instead of bouncing
//! between cores, while a task alone never loses a record, whatever other
//! stripes did before. Records are only ever overwritten unreplayed when the
//! lock is busy, that is under concurrency.
//!
//! A record is `(meta << 32) | index`; the replay checks the entry still has
//! that meta, so a lost, stale or torn-by-a-race record only costs accuracy.
//! Each stripe's `tail` counts every record ever pushed: the sum of the tails
//! is the hit count.

use std::cell::Cell;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Records per stripe.
const CAPACITY: u64 = 256;
/// Pushes between the drainer's replays.
const DRAIN_EVERY: u64 = 128;
/// Pushes between other stripes' checks for records about to be lost.
const CHECK_EVERY: u64 = 64;
/// The most stripes: one bit each in `dirty`.
const MAX_STRIPES: usize = 64;

#[derive(Debug)]
struct Stripe {
    /// Records ever pushed (hits).
    tail: AtomicU64,
    /// Records ever replayed; written by the lock holder.
    head: AtomicU64,
    /// Misses counted through this stripe.
    misses: AtomicU64,
    records: [AtomicU64; CAPACITY as usize],
}

impl Default for Stripe {
    fn default() -> Self {
        Stripe {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            records: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

#[derive(Debug)]
pub(crate) struct ReadBuffer {
    stripes: Box<[CachePadded<Stripe>]>,
    /// One bit per stripe that may hold records.
    dirty: CachePadded<AtomicU64>,
    /// The stripe whose reader drained last, plus one; 0 for none.
    drainer: CachePadded<AtomicUsize>,
    /// Stripes by thread, not by task (for a policy that needs no exact
    /// order): the thread numbered `i` (see `Pinned::thread`) is stripe
    /// `i`'s only writer and pushes without a read-modify-write; threads
    /// numbered past the stripes share the last one.
    owned: bool,
}

/// A push after which its reader should replay the records.
pub(crate) struct Due;

fn stripe_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        (cpus * 4).next_power_of_two().clamp(4, MAX_STRIPES)
    })
}

/// This task's (or thread's) stripe number, before masking.
#[inline]
fn stripe_hint() -> usize {
    if let Some(id) = tokio::task::try_id() {
        return foldhash::fast::FixedState::with_seed(0x5eed).hash_one(id) as usize;
    }
    thread_local! {
        static THREAD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    THREAD.with(|slot| {
        let mut hint = slot.get();
        if hint == usize::MAX {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            hint = NEXT.fetch_add(1, Ordering::Relaxed);
            slot.set(hint);
        }
        hint
    })
}

impl ReadBuffer {
    /// Striped by task, or (`owned`) by thread.
    pub(crate) fn new(owned: bool) -> Self {
        ReadBuffer {
            stripes: (0..stripe_count()).map(|_| CachePadded::default()).collect(),
            dirty: CachePadded::default(),
            drainer: CachePadded::default(),
            owned,
        }
    }

    /// The stripe of the calling task, or of the calling thread, numbered
    /// `thread`, when stripes are owned.
    #[inline]
    pub(crate) fn stripe(&self, thread: usize) -> usize {
        if self.owned { thread.min(self.stripes.len() - 1) } else { stripe_hint() & (self.stripes.len() - 1) }
    }

    /// Whether stripe `s` has one writer (see `owned`).
    #[inline]
    fn owned_by_one(&self, s: usize) -> bool {
        self.owned && s + 1 < self.stripes.len()
    }

    /// Records a hit on `(idx, meta)` in stripe `s`; `Due` when the caller
    /// should replay (see the module doc). A hit writes nothing the drainer
    /// reads or writes but its own record and counter.
    #[inline]
    pub(crate) fn push(&self, s: usize, idx: u32, meta: u32) -> Result<(), Due> {
        let stripe = &self.stripes[s];
        let record = (u64::from(meta) << 32) | u64::from(idx);
        let tail = if self.owned_by_one(s) {
            // The only writer: a plain increment, the record published by
            // the Release store of the tail. (The dirty check below may then
            // see a bit a drain is clearing: these records wait for this
            // stripe's next push; late records only blur frequencies.)
            let tail = stripe.tail.load(Ordering::Relaxed);
            stripe.records[(tail % CAPACITY) as usize].store(record, Ordering::Relaxed);
            stripe.tail.store(tail + 1, Ordering::Release);
            tail
        } else {
            let tail = stripe.tail.fetch_add(1, Ordering::SeqCst);
            stripe.records[(tail % CAPACITY) as usize].store(record, Ordering::Release);
            tail
        };
        // SeqCst pairs with the drain's swap: either the drain sees this bit,
        // or this load sees the drain's clear and sets it again.
        let bit = 1u64 << s;
        if self.dirty.load(Ordering::SeqCst) & bit == 0 {
            self.dirty.fetch_or(bit, Ordering::SeqCst);
        }
        let pushed = tail + 1;
        if !pushed.is_multiple_of(CHECK_EVERY) {
            return Ok(());
        }
        // Replaying now whenever the next check could find more than
        // CAPACITY unreplayed, no record is overwritten unreplayed unless a
        // replay was refused. The margin lets a reader up to 1.5 times faster
        // than the drainer leave the replaying to it.
        let unreplayed = pushed.saturating_sub(stripe.head.load(Ordering::Relaxed));
        let due = unreplayed > CAPACITY - CHECK_EVERY || (pushed.is_multiple_of(DRAIN_EVERY) && self.is_drainer(s));
        if due { Err(Due) } else { Ok(()) }
    }

    /// Whether stripe `s` drained last, or nobody has drained yet.
    fn is_drainer(&self, s: usize) -> bool {
        let drainer = self.drainer.load(Ordering::Relaxed);
        drainer == 0 || drainer == s + 1
    }

    /// Whether any stripe may hold records.
    #[inline]
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed) != 0
    }

    /// Hands `apply` the records of every dirty stripe, and of stripe
    /// `reader` (whose reader is draining, and becomes the drainer), a stripe
    /// at a time, oldest first, as `(index, meta)` read into `scratch`. Lock
    /// held.
    pub(crate) fn drain(
        &self,
        reader: Option<usize>,
        scratch: &mut Vec<(u32, u32)>,
        mut apply: impl FnMut(&[(u32, u32)]),
    ) {
        let mut mask = self.dirty.swap(0, Ordering::SeqCst);
        if let Some(s) = reader {
            mask |= 1 << s;
            self.drainer.store(s + 1, Ordering::Relaxed);
        }
        while mask != 0 {
            let s = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let stripe = &self.stripes[s];
            let tail = stripe.tail.load(Ordering::SeqCst);
            // Overwritten records are gone; a place reserved but not yet
            // written still holds an older record, which the replay checks.
            let head = stripe.head.load(Ordering::Relaxed).max(tail.saturating_sub(CAPACITY));
            scratch.clear();
            scratch.extend((head..tail).map(|i| {
                let record = stripe.records[(i % CAPACITY) as usize].load(Ordering::Acquire);
                (record as u32, (record >> 32) as u32)
            }));
            apply(scratch);
            stripe.head.store(tail, Ordering::Release);
        }
    }

    #[inline]
    pub(crate) fn miss(&self, s: usize) {
        self.stripes[s].misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Hits ever recorded.
    pub(crate) fn hits(&self) -> u64 {
        self.stripes.iter().map(|s| s.tail.load(Ordering::Relaxed)).sum()
    }

    /// Misses ever counted.
    pub(crate) fn misses(&self) -> u64 {
        self.stripes.iter().map(|s| s.misses.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_in_order_and_counts_hits() {
        let b = ReadBuffer::new(false);
        let s = b.stripe(0);
        for i in 0..10 {
            assert!(b.push(s, i, 8).is_ok());
        }
        assert!(b.is_dirty());
        let mut seen = Vec::new();
        b.drain(None, &mut Vec::new(), |records| seen.extend_from_slice(records));
        assert_eq!(seen, (0..10).map(|i| (i, 8)).collect::<Vec<_>>());
        assert!(!b.is_dirty());
        assert_eq!(b.hits(), 10);
        b.miss(s);
        assert_eq!(b.misses(), 1);
    }

    #[test]
    fn the_drainer_is_asked_to_replay_every_drain_step() {
        let b = ReadBuffer::new(false);
        let s = b.stripe(0);
        let mut n = 0;
        for step in 0..5 {
            for i in 0..DRAIN_EVERY as u32 - 1 {
                assert!(b.push(s, i, 8).is_ok(), "step {step}, record {i}");
            }
            assert!(b.push(s, 0, 8).is_err(), "step {step} ends: replay");
            b.drain(Some(s), &mut Vec::new(), |records| n += records.len() as u64);
        }
        assert_eq!(n, 5 * DRAIN_EVERY, "every record replayed once");
        assert_eq!(b.hits(), 5 * DRAIN_EVERY, "every hit counted");
    }

    #[test]
    fn overwriting_keeps_the_newest_records_and_counts_every_hit() {
        let b = ReadBuffer::new(false);
        let s = b.stripe(0);
        for i in 0..CAPACITY as u32 + 5 {
            let _ = b.push(s, i, 8);
        }
        let mut seen = Vec::new();
        b.drain(None, &mut Vec::new(), |records| seen.extend(records.iter().map(|r| r.0)));
        assert_eq!(seen, (5..CAPACITY as u32 + 5).collect::<Vec<_>>());
        assert_eq!(b.hits(), CAPACITY + 5);
    }
}

#[cfg(test)]
mod drainer_tests {
    use super::*;

    /// Pushes `n` records to stripe `s`, replaying whenever asked (as
    /// `Store::record` does with the lock free); returns the indices replayed.
    fn read_alone(b: &ReadBuffer, s: usize, first: u32, n: u32) -> Vec<u32> {
        let mut replayed = Vec::new();
        for i in first..first + n {
            if b.push(s, i, 8).is_err() {
                b.drain(Some(s), &mut Vec::new(), |records| replayed.extend(records.iter().map(|r| r.0)));
            }
        }
        replayed
    }

    #[test]
    fn the_drainer_keeps_replaying_others_only_when_it_falls_behind() {
        let b = ReadBuffer::new(false);
        let step = DRAIN_EVERY as u32;
        assert_eq!(read_alone(&b, 0, 0, step).len(), step as usize, "nobody drained yet: 0 does");
        // Stripe 1 reads while the drainer keeps replaying it: never asked.
        for i in 0..4 * step {
            assert!(b.push(1, i, 8).is_ok(), "record {i}");
            if b.push(0, i, 8).is_err() {
                b.drain(Some(0), &mut Vec::new(), |_| {});
            }
        }
        // The drainer stops: stripe 1 asks before a record could be lost.
        let asked = (0..CAPACITY as u32).position(|i| b.push(1, i, 8).is_err());
        assert!(asked.is_some(), "a stripe nobody replays asks before its ring wraps");
    }

    #[test]
    fn a_reader_alone_loses_no_record_whatever_came_before() {
        for offset in [0, 1, 37, CHECK_EVERY as u32 - 1, DRAIN_EVERY as u32 + 5, CAPACITY as u32 - 1] {
            let b = ReadBuffer::new(false);
            // Another stripe drains last; stripe 1 was left mid-step, replayed.
            read_alone(&b, 0, 0, DRAIN_EVERY as u32);
            for i in 0..offset {
                let _ = b.push(1, i, 8);
            }
            b.drain(Some(0), &mut Vec::new(), |_| {});
            // Now stripe 1 reads alone.
            let mut replayed = read_alone(&b, 1, 1_000, 500);
            b.drain(None, &mut Vec::new(), |records| replayed.extend(records.iter().map(|r| r.0)));
            assert_eq!(replayed, (1_000..1_500).collect::<Vec<_>>(), "offset {offset}");
        }
    }
}
