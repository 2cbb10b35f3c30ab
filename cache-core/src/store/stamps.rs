//! Per-entry times kept beside the slab, one `u64` per slot, only by the
//! caches that use them (a cache without these settings pays no byte):
//! TTL deadlines (for the entries that have one), idle deadlines (`time_to_idle`)
//! and write times (`refresh_after`).
//!
//! Readers touch them without the lock (a hit checks a TTL deadline, a
//! read pushes an idle deadline on, a `fetch` hit claims an entry's
//! refresh), so each is an atomic.
//!
//! The wheel holds one timer per entry, armed at whichever of its TTL and
//! idle deadlines comes first; reads never touch the wheel. When a timer
//! fires and the entry was read meanwhile, the timer is armed again at the
//! new deadline: an entry read often costs one re-arm per idle period, not
//! one per read.

use std::alloc::{self, Layout};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::Duration;

use super::slab::{SEGMENTS, locate, segment_len};

/// The longest `time_to_idle` honoured; longer means "never idle". Keeps
/// `now + time_to_idle` below `NEVER` for 146 years of uptime.
const LONGEST: u64 = 1 << 62;

/// One atomic `u64` per slot, laid out as the slab's segments. A segment
/// is made at most once, under the store's lock, and freed with the store:
/// a reader that found a slot holds its segment's stamps as long as it
/// holds the slot. (Raw zeroed allocations rather than boxed slices of
/// atomics made one by one, which would write, and so take, every page of a
/// segment, used or not.)
struct Stamps {
    segments: [AtomicPtr<AtomicU64>; SEGMENTS],
}

impl Stamps {
    fn new() -> Self {
        Stamps { segments: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())) }
    }

    /// Slot `idx`'s stamp, making its segment's (zeroed) if there are none
    /// yet. Under the store's lock.
    #[inline]
    fn ensure(&self, idx: u32) -> &AtomicU64 {
        match self.find(idx) {
            Some(stamp) => stamp,
            None => self.make(idx),
        }
    }

    /// [`ensure`](Self::ensure)'s first call for a segment.
    #[cold]
    #[inline(never)]
    fn make(&self, idx: u32) -> &AtomicU64 {
        let (segment, _) = locate(idx);
        let layout = Self::layout(segment);
        // SAFETY: not zero-sized (a segment holds at least 32 stamps).
        // Zeroed, so that the pages of stamps never written are never
        // touched either; zero is a valid `AtomicU64`.
        let base = unsafe { alloc::alloc_zeroed(layout) }.cast::<AtomicU64>();
        if base.is_null() {
            alloc::handle_alloc_error(layout);
        }
        // Release: a reader that sees the pointer sees the zeroed stamps.
        self.segments[segment].store(base, Ordering::Release);
        self.find(idx).expect("made above")
    }

    fn layout(segment: usize) -> Layout {
        Layout::array::<AtomicU64>(segment_len(segment)).expect("a segment's stamps fit in memory")
    }

    /// Slot `idx`'s stamp, if its segment has them.
    #[inline]
    fn find(&self, idx: u32) -> Option<&AtomicU64> {
        let (segment, offset) = locate(idx);
        let base = self.segments[segment].load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `make`: `segment_len(segment)`
        // stamps, `offset` below that (`locate`), freed only by `drop`.
        (!base.is_null()).then(|| unsafe { &*base.add(offset) })
    }

    #[inline]
    fn get(&self, idx: u32) -> &AtomicU64 {
        self.find(idx).expect("ensured with the slot")
    }
}

impl Drop for Stamps {
    fn drop(&mut self) {
        for (segment, base) in self.segments.iter_mut().enumerate() {
            let base = *base.get_mut();
            if !base.is_null() {
                // SAFETY: allocated by `make` with this layout, and nobody
                // can read it any more (`&mut self`).
                unsafe { alloc::dealloc(base.cast(), Self::layout(segment)) };
            }
        }
    }
}

/// Each timed entry's deadline (TTL, or `IDLE_ONLY`), in clock
/// nanoseconds. Not in the slot, where a cache without TTLs would pay 8
/// bytes an entry for nothing: a segment of deadlines is made when an entry
/// in it first gets one, and readers look here only for a slot whose meta
/// is `TIMED`.
pub(crate) struct Deadlines {
    stamps: Stamps,
}

impl Deadlines {
    pub(crate) fn new() -> Self {
        Deadlines { stamps: Stamps::new() }
    }

    /// `TIMED` slot `idx`'s deadline. The slot was seen with that meta
    /// through an Acquire load, or the lock is held.
    #[inline]
    pub(crate) fn get(&self, idx: u32) -> u64 {
        // Relaxed: the Acquire that found the slot ordered its deadline
        // (and its segment's making) before this load.
        self.stamps.get(idx).load(Ordering::Relaxed)
    }

    /// Sets slot `idx`'s deadline: by the lock holder, before the slot is
    /// published `TIMED` (a Release store, which orders this one before any
    /// reader's load).
    #[inline]
    pub(crate) fn set(&self, idx: u32, deadline: u64) {
        self.stamps.ensure(idx).store(deadline, Ordering::Relaxed);
    }
}

/// `time_to_idle`: each entry's idle deadline.
pub(crate) struct Idle {
    /// `time_to_idle` in clock nanoseconds.
    period: u64,
    /// A read moves a deadline on only by more than this: a key read by
    /// every request does not write its deadline's cache line on each read.
    /// 1/1024 of the period, so a deadline is at most that early.
    slack: u64,
    deadlines: Stamps,
}

impl Idle {
    /// `None` for a period too long to ever pass.
    pub(crate) fn new(period: Duration) -> Option<Self> {
        let period = u64::try_from(period.as_nanos()).ok().filter(|&p| p < LONGEST)?;
        Some(Idle { period, slack: period >> 10, deadlines: Stamps::new() })
    }

    pub(crate) fn ensure(&self, idx: u32) {
        self.deadlines.ensure(idx);
    }

    /// Slot `idx`'s idle deadline.
    #[inline]
    pub(crate) fn deadline(&self, idx: u32) -> u64 {
        // Relaxed: the deadline is its own datum, not a guard on other
        // memory; a reader seeing an older one sees the entry expire a
        // little earlier or later, as if it had read the clock then.
        self.deadlines.get(idx).load(Ordering::Relaxed)
    }

    /// Starts slot `idx`'s idle clock at `now`: before the slot is
    /// published (whose Release store orders this one before any reader's
    /// load), by the lock holder.
    pub(crate) fn start(&self, idx: u32, now: u64) {
        self.deadlines.get(idx).store(now.saturating_add(self.period), Ordering::Relaxed);
    }

    /// A read of slot `idx` at `now` resets its idle clock.
    #[inline]
    pub(crate) fn touch(&self, idx: u32, now: u64) {
        let cell = self.deadlines.get(idx);
        let fresh = now.saturating_add(self.period);
        // A plain store, not an RMW: of two readers racing, the one that
        // read the clock first may store last, leaving a deadline short by
        // the time between their reads.
        if fresh > cell.load(Ordering::Relaxed).saturating_add(self.slack) {
            cell.store(fresh, Ordering::Relaxed);
        }
    }
}

/// `refresh_after`: when each entry was written, and whether a refresh of
/// it is under way.
pub(crate) struct Refresh {
    /// `refresh_after` in clock nanoseconds.
    after: u64,
    written: Stamps,
}

/// The write stamp of an entry being refreshed: no other refresh starts.
const REFRESHING: u64 = u64::MAX;

impl Refresh {
    pub(crate) fn new(after: Duration) -> Self {
        Refresh { after: u64::try_from(after.as_nanos()).unwrap_or(u64::MAX), written: Stamps::new() }
    }

    pub(crate) fn ensure(&self, idx: u32) {
        self.written.ensure(idx);
    }

    /// Slot `idx` was written at `now`: before it is published, by the
    /// lock holder; or, after a failed refresh, by that refresh.
    pub(crate) fn stamp(&self, idx: u32, now: u64) {
        self.written.get(idx).store(now, Ordering::Relaxed);
    }

    /// Whether slot `idx`, read at `now`, is due for a refresh that this
    /// caller now owns: at most one caller wins per write.
    #[inline]
    pub(crate) fn claim(&self, idx: u32, now: u64) -> bool {
        let cell = self.written.get(idx);
        let written = cell.load(Ordering::Relaxed);
        written != REFRESHING
            && now.saturating_sub(written) >= self.after
            && cell.compare_exchange(written, REFRESHING, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn made(stamps: &Stamps) -> Vec<usize> {
        (0..SEGMENTS).filter(|&s| !stamps.segments[s].load(Ordering::Relaxed).is_null()).collect()
    }

    #[test]
    fn a_cache_keeps_deadlines_only_for_the_segments_of_entries_that_have_one() {
        let cache = crate::Cache::<u64, u64>::new(1_000);
        for k in 0..1_000 {
            cache.insert(k, k);
        }
        let deadlines = &cache.store.deadlines;
        assert_eq!(made(&deadlines.stamps), Vec::<usize>::new(), "no TTL, no deadlines");
        cache.insert_with_ttl(1, 1, Some(Duration::from_secs(60)));
        // The overwrite took a new slot, past the first thousand.
        assert_eq!(made(&deadlines.stamps).len(), 1);
        assert_eq!(cache.get(&1), Some(1));
    }
}
