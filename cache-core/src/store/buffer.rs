//! Read buffers: hits are recorded here instead of reordering the LRU list
//! under a lock, and replayed by the lock holder before each decision that
//! depends on recency (Caffeine's design).
//!
//! Records are striped by task (by thread outside tokio), so one task's
//! reads land in one stripe in the order it made them and the replay is
//! exact for any single task, even one that moves between worker threads.
//! Stripes are cache-padded, so two threads on different stripes write no
//! shared cache line on a hit. A full stripe is drained by the reader that
//! finds it full, if the lock is free; if another thread holds it, the reader
//! overwrites its stripe's oldest record instead of waiting. Records are only
//! ever lost that way, under contention: never for a task running alone.
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
const CAPACITY: u64 = 32;
/// The most stripes: one bit each in `dirty`.
const MAX_STRIPES: usize = 64;

#[derive(Debug, Default)]
struct Stripe {
    /// Records ever pushed (hits).
    tail: AtomicU64,
    /// Records ever replayed; written by the lock holder.
    head: AtomicU64,
    /// Misses counted through this stripe.
    misses: AtomicU64,
    records: [AtomicU64; CAPACITY as usize],
}

#[derive(Debug)]
pub(crate) struct ReadBuffer {
    stripes: Box<[CachePadded<Stripe>]>,
    /// One bit per stripe that may hold records.
    dirty: CachePadded<AtomicU64>,
}

/// A stripe had no room: the caller drains under the lock, then retries.
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
            stripes: (0..stripe_count())
                .map(|_| CachePadded::default())
                .collect(),
            dirty: CachePadded::default(),
        }
    }

    /// The calling task's stripe.
    #[inline]
    pub(crate) fn stripe(&self) -> usize {
        stripe_hint() & (self.stripes.len() - 1)
    }

    /// Records a hit on `(idx, meta)` in stripe `s`. Unless `overwrite`, a
    /// full stripe refuses the record.
    #[inline]
    pub(crate) fn push(&self, s: usize, idx: u32, meta: u32, overwrite: bool) -> Result<(), Full> {
        let stripe = &self.stripes[s];
        let record = (u64::from(meta) << 32) | u64::from(idx);
        let mut tail = stripe.tail.load(Ordering::Relaxed);
        loop {
            if !overwrite && tail - stripe.head.load(Ordering::Acquire) >= CAPACITY {
                return Err(Full);
            }
            match stripe.tail.compare_exchange_weak(
                tail,
                tail + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => tail = now,
            }
        }
        stripe.records[(tail % CAPACITY) as usize].store(record, Ordering::Release);
        // SeqCst pairs with the drain's swap: either the drain sees this bit,
        // or this load sees the drain's clear and sets it again.
        let bit = 1u64 << s;
        if self.dirty.load(Ordering::SeqCst) & bit == 0 {
            self.dirty.fetch_or(bit, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Whether any stripe may hold records.
    #[inline]
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed) != 0
    }

    /// Replays the records of every dirty stripe, and of stripe `also`, in
    /// the order each stripe received them. Lock held.
    pub(crate) fn drain(&self, also: Option<usize>, mut apply: impl FnMut(u32, u32)) {
        let mut mask = self.dirty.swap(0, Ordering::SeqCst);
        if let Some(s) = also {
            mask |= 1 << s;
        }
        while mask != 0 {
            let s = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let stripe = &self.stripes[s];
            let tail = stripe.tail.load(Ordering::SeqCst);
            // Overwritten records are gone; a place reserved but not yet
            // written still holds an older record, which the replay checks.
            let head = stripe
                .head
                .load(Ordering::Relaxed)
                .max(tail.saturating_sub(CAPACITY));
            for i in head..tail {
                let record = stripe.records[(i % CAPACITY) as usize].load(Ordering::Acquire);
                apply(record as u32, (record >> 32) as u32);
            }
            stripe.head.store(tail, Ordering::Release);
        }
    }

    #[inline]
    pub(crate) fn miss(&self, s: usize) {
        self.stripes[s].misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Hits ever recorded.
    pub(crate) fn hits(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.tail.load(Ordering::Relaxed))
            .sum()
    }

    /// Misses ever counted.
    pub(crate) fn misses(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.misses.load(Ordering::Relaxed))
            .sum()
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
            assert!(b.push(s, i, 8, false).is_ok());
        }
        assert!(b.is_dirty());
        let mut seen = Vec::new();
        b.drain(None, |idx, meta| seen.push((idx, meta)));
        assert_eq!(seen, (0..10).map(|i| (i, 8)).collect::<Vec<_>>());
        assert!(!b.is_dirty());
        assert_eq!(b.hits(), 10);
        b.miss(s);
        assert_eq!(b.misses(), 1);
    }

    #[test]
    fn a_full_stripe_refuses_until_drained() {
        let b = ReadBuffer::new();
        let s = b.stripe();
        for i in 0..CAPACITY as u32 {
            assert!(b.push(s, i, 8, false).is_ok());
        }
        assert!(b.push(s, 99, 8, false).is_err());
        let mut n = 0;
        b.drain(Some(s), |_, _| n += 1);
        assert_eq!(n, CAPACITY);
        assert!(b.push(s, 99, 8, false).is_ok());
        assert_eq!(b.hits(), CAPACITY + 1);
    }

    #[test]
    fn overwriting_keeps_the_newest_records_and_counts_every_hit() {
        let b = ReadBuffer::new();
        let s = b.stripe();
        for i in 0..CAPACITY as u32 + 5 {
            assert!(b.push(s, i, 8, true).is_ok());
        }
        let mut seen = Vec::new();
        b.drain(None, |idx, _| seen.push(idx));
        assert_eq!(seen, (5..CAPACITY as u32 + 5).collect::<Vec<_>>());
        assert_eq!(b.hits(), CAPACITY + 5);
    }
}
