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
//! A full stripe is drained by the reader that finds it full, if its stripe
//! is the one that drained last, or that one pushed nothing during the
//! whole lap that just ended (so this reader is alone), and the lock is free;
//! otherwise the reader overwrites its stripe's oldest records instead of
//! waiting. So under concurrency one core does the replaying, and the LRU
//! links stay in its cache instead of bouncing between cores; records are
//! only ever lost then, never for a task running alone.
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
const CAPACITY: u64 = 128;
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
    /// The drainer's `tail` when this stripe's current lap began.
    seen: AtomicU64,
    records: [AtomicU64; CAPACITY as usize],
}

impl Default for Stripe {
    fn default() -> Self {
        Stripe {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            seen: AtomicU64::new(0),
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
}

/// A push ended a lap of its stripe: the caller decides whether to drain.
pub(crate) struct Full;

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
    pub(crate) fn new() -> Self {
        ReadBuffer {
            stripes: (0..stripe_count()).map(|_| CachePadded::default()).collect(),
            dirty: CachePadded::default(),
            drainer: CachePadded::default(),
        }
    }

    /// The calling task's stripe.
    #[inline]
    pub(crate) fn stripe(&self) -> usize {
        stripe_hint() & (self.stripes.len() - 1)
    }

    /// Records a hit on `(idx, meta)` in stripe `s`. Every `CAPACITY`th
    /// push ends a lap of the ring and returns `Full` (the record is in): the
    /// caller then decides whether to drain. A stripe that did not drain
    /// overwrites its oldest records during the next lap. Only the first and
    /// last push of a lap look at the drainer's side, so a hit writes
    /// nothing the drainer reads or writes but its own record and counter.
    #[inline]
    pub(crate) fn push(&self, s: usize, idx: u32, meta: u32) -> Result<(), Full> {
        let stripe = &self.stripes[s];
        let record = (u64::from(meta) << 32) | u64::from(idx);
        let tail = stripe.tail.fetch_add(1, Ordering::SeqCst);
        let place = tail % CAPACITY;
        if place == 0 {
            self.lap_begins(s);
        }
        stripe.records[place as usize].store(record, Ordering::Release);
        // SeqCst pairs with the drain's swap: either the drain sees this bit,
        // or this load sees the drain's clear and sets it again.
        let bit = 1u64 << s;
        if self.dirty.load(Ordering::SeqCst) & bit == 0 {
            self.dirty.fetch_or(bit, Ordering::SeqCst);
        }
        if place == CAPACITY - 1 { Err(Full) } else { Ok(()) }
    }

    /// The drainer's stripe, if another stripe than `s` drained last.
    fn other_drainer(&self, s: usize) -> Option<&Stripe> {
        match self.drainer.load(Ordering::Relaxed) {
            0 => None,
            d if d == s + 1 => None,
            d => Some(&self.stripes[d - 1]),
        }
    }

    /// Notes where the drainer is as stripe `s` begins a lap.
    #[cold]
    fn lap_begins(&self, s: usize) {
        if let Some(drainer) = self.other_drainer(s) {
            self.stripes[s].seen.store(drainer.tail.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Whether the reader of full stripe `s` should replay the records
    /// (rather than overwrite its oldest): nobody drained yet, or it drained
    /// last, or the drainer pushed nothing during this lap of `s`. In that
    /// last case `s` ran alone, and its records must all count: a lone task
    /// gets exact LRU.
    pub(crate) fn should_drain(&self, s: usize) -> bool {
        self.other_drainer(s)
            .is_none_or(|drainer| drainer.tail.load(Ordering::Relaxed) == self.stripes[s].seen.load(Ordering::Relaxed))
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
        let b = ReadBuffer::new();
        let s = b.stripe();
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
    fn every_lap_of_the_ring_asks_whether_to_drain() {
        let b = ReadBuffer::new();
        let s = b.stripe();
        for lap in 0..3 {
            for i in 0..CAPACITY as u32 - 1 {
                assert!(b.push(s, i, 8).is_ok(), "lap {lap}, record {i}");
            }
            assert!(b.push(s, 0, 8).is_err(), "lap {lap} ends: drain?");
        }
        let mut n = 0;
        b.drain(Some(s), &mut Vec::new(), |records| n += records.len() as u64);
        assert_eq!(n, CAPACITY, "an undrained stripe keeps its newest lap");
        assert_eq!(b.hits(), 3 * CAPACITY, "every hit counted");
    }

    #[test]
    fn overwriting_keeps_the_newest_records_and_counts_every_hit() {
        let b = ReadBuffer::new();
        let s = b.stripe();
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

    #[test]
    fn the_last_drainer_keeps_draining_others_only_when_it_is_quiet() {
        let b = ReadBuffer::new();
        let lap = |s: usize| {
            for _ in 0..CAPACITY - 1 {
                assert!(b.push(s, 0, 8).is_ok());
            }
            b.push(s, 0, 8).is_err()
        };
        assert!(lap(0) && b.should_drain(0), "nobody drained yet");
        b.drain(Some(0), &mut Vec::new(), |_| {});
        assert!(lap(0) && b.should_drain(0), "the drainer drains again");
        // Stripe 1 fills while stripe 0 keeps reading: it overwrites.
        for _ in 0..CAPACITY - 1 {
            assert!(b.push(1, 0, 8).is_ok());
            let _ = b.push(0, 0, 8);
        }
        assert!(b.push(1, 0, 8).is_err());
        assert!(!b.should_drain(1), "the drainer is active");
        // A whole lap of stripe 1 alone: it drains, losing nothing.
        assert!(lap(1));
        assert!(b.should_drain(1), "the drainer was quiet for the whole lap");
        let mut n = 0;
        b.drain(Some(1), &mut Vec::new(), |records| n += records.len() as u64);
        assert_eq!(n, 2 * CAPACITY, "the whole lap, and the newest lap of stripe 0");
    }
}
