//! Per-entry times kept beside the slab, one `u64` per slot, only by the
//! caches that use them (a cache without these settings pays no byte):
//! idle deadlines (`time_to_idle`) and write times (`refresh_after`).
//!
//! Readers touch them without the lock (a read pushes an idle deadline on;
//! a `fetch` hit claims an entry's refresh), so each is an atomic.
//!
//! The wheel holds one timer per entry, armed at whichever of its TTL and
//! idle deadlines comes first; reads never touch the wheel. When a timer
//! fires and the entry was read meanwhile, the timer is armed again at the
//! new deadline: an entry read often costs one re-arm per idle period, not
//! one per read.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::slab::{SEGMENTS, locate, segment_len};

/// The longest `time_to_idle` honoured; longer means "never idle". Keeps
/// `now + time_to_idle` below `NEVER` for 146 years of uptime.
const LONGEST: u64 = 1 << 62;

/// One atomic `u64` per slot, laid out as the slab's segments and
/// allocated with them.
struct Stamps {
    segments: [OnceLock<Box<[AtomicU64]>>; SEGMENTS],
}

impl Stamps {
    fn new() -> Self {
        Stamps { segments: std::array::from_fn(|_| OnceLock::new()) }
    }

    /// Makes room for slot `idx`'s stamp. Under the store's lock, beside
    /// `Slab::ensure`.
    fn ensure(&self, idx: u32) {
        let (segment, _) = locate(idx);
        self.segments[segment].get_or_init(|| (0..segment_len(segment)).map(|_| AtomicU64::new(0)).collect());
    }

    #[inline]
    fn get(&self, idx: u32) -> &AtomicU64 {
        let (segment, offset) = locate(idx);
        &self.segments[segment].get().expect("ensured with the slot")[offset]
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
