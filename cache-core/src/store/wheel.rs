//! A hierarchical timer wheel over the clock's nanoseconds: expired entries
//! are found in O(1) amortized time without anyone reading them.
//!
//! Eleven levels of 64 slots, each level 64 times coarser than the one below
//! (the same layout as tokio's timer). An entry sits in the level of the
//! highest 6-bit digit in which its deadline differs from `elapsed`; when
//! `elapsed` reaches a slot's start the slot's entries move down a level, and
//! level-0 slots hold entries of exactly one deadline. An entry moves down at
//! most ten times, whatever its TTL.
//!
//! Deletion is lazy: removing or replacing an entry leaves its record here,
//! and records whose slot has moved on (another meta) are dropped when they
//! come due, or by [`Wheel::retain`] when stale records outnumber live ones.

const LEVELS: usize = 11;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;

/// An entry's deadline, remembered as `(slab index, meta)` so a reused slot
/// is never expired by its previous occupant's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timer {
    pub(crate) deadline: u64,
    pub(crate) idx: u32,
    pub(crate) meta: u32,
}

#[derive(Debug)]
struct Level {
    occupied: u64,
    slots: [Vec<Timer>; SLOTS],
}

#[derive(Debug, Default)]
pub(crate) struct Wheel {
    /// Allocated on the first timer: caches without TTLs pay nothing.
    levels: Vec<Level>,
    /// Timers at or before `elapsed` when pushed.
    due: Vec<Timer>,
    elapsed: u64,
    len: usize,
    /// Before this, [`advance`](Wheel::advance) has nothing to do: no timer
    /// is due and no slot moves down. A lower bound (0 is always right),
    /// kept so that a write to a cache with TTLs does not go through the
    /// wheel to learn that nothing is due (~130 instructions a write).
    next: u64,
}

#[inline]
fn level_for(elapsed: u64, deadline: u64) -> usize {
    let masked = (elapsed ^ deadline) | (SLOTS as u64 - 1);
    ((63 - masked.leading_zeros()) / SLOT_BITS) as usize
}

#[inline]
fn slot_for(deadline: u64, level: usize) -> usize {
    ((deadline >> (level as u32 * SLOT_BITS)) & (SLOTS as u64 - 1)) as usize
}

/// No timer at all: [`Wheel::next`] when there is nothing to advance.
pub(crate) const IDLE: u64 = u64::MAX;

/// Where slot `slot` of `level` starts, in the lap of `elapsed`.
#[inline]
fn slot_start(elapsed: u64, level: usize, slot: usize) -> u64 {
    let shift = level as u32 * SLOT_BITS;
    let above = match shift + SLOT_BITS {
        64.. => 0,
        bits => !((1u64 << bits) - 1),
    };
    (elapsed & above) | ((slot as u64) << shift)
}

impl Wheel {
    /// Timers held, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// No [`advance`](Self::advance) before this time has anything to do
    /// ([`IDLE`] if no timer is held, as of the last advance).
    #[inline]
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    pub(crate) fn push(&mut self, timer: Timer) {
        self.len += 1;
        if timer.deadline <= self.elapsed {
            self.due.push(timer);
            self.next = 0;
            return;
        }
        if self.levels.is_empty() {
            self.levels =
                (0..LEVELS).map(|_| Level { occupied: 0, slots: std::array::from_fn(|_| Vec::new()) }).collect();
        }
        let level = level_for(self.elapsed, timer.deadline);
        let slot = slot_for(timer.deadline, level);
        // Its slot starts after `elapsed`, at or before its deadline.
        self.next = self.next.min(slot_start(self.elapsed, level, slot));
        let level = &mut self.levels[level];
        level.occupied |= 1 << slot;
        level.slots[slot].push(timer);
    }

    /// Hands every timer with `deadline <= now` to `fire`, earliest slots
    /// first. Stale timers are handed over too; `fire` tells them apart.
    pub(crate) fn advance(&mut self, now: u64, mut fire: impl FnMut(Timer)) {
        loop {
            for timer in std::mem::take(&mut self.due) {
                self.len -= 1;
                fire(timer);
            }
            // The lowest occupied level holds the earliest slot, and its
            // occupied slots all lie after `elapsed`'s digit at that level.
            let Some((level, slot)) = self
                .levels
                .iter()
                .enumerate()
                .find(|(_, l)| l.occupied != 0)
                .map(|(i, l)| (i, l.occupied.trailing_zeros() as usize))
            else {
                self.next = IDLE;
                break;
            };
            let start = slot_start(self.elapsed, level, slot);
            if start > now {
                self.next = start;
                break;
            }
            self.elapsed = start;
            let timers = {
                let l = &mut self.levels[level];
                l.occupied &= !(1 << slot);
                std::mem::take(&mut l.slots[slot])
            };
            for timer in timers {
                self.len -= 1;
                if level == 0 {
                    debug_assert_eq!(timer.deadline, start);
                    fire(timer);
                } else {
                    self.push(timer);
                }
            }
        }
        self.elapsed = self.elapsed.max(now);
    }

    /// Keeps only the timers `keep` approves; O(timers).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Timer) -> bool) {
        let mut all = std::mem::take(&mut self.due);
        for level in &mut self.levels {
            level.occupied = 0;
            for slot in &mut level.slots {
                all.append(slot);
            }
        }
        self.len = 0;
        self.next = IDLE;
        for timer in all {
            if keep(&timer) {
                self.push(timer);
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.retain(|_| false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn timer(deadline: u64, idx: u32) -> Timer {
        Timer { deadline, idx, meta: 0 }
    }

    fn fired(wheel: &mut Wheel, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        wheel.advance(now, |t| {
            assert!(t.deadline <= now, "fired {t:?} early at {now}");
            out.push(t.idx)
        });
        out
    }

    #[test]
    fn fires_at_the_exact_nanosecond() {
        let mut w = Wheel::default();
        w.push(timer(1_000_000_007, 1));
        assert!(fired(&mut w, 1_000_000_006).is_empty());
        assert_eq!(fired(&mut w, 1_000_000_007), [1]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_timer_pushed_in_the_past_fires_on_the_next_advance() {
        let mut w = Wheel::default();
        w.advance(500, |_| {});
        w.push(timer(100, 7));
        assert_eq!(fired(&mut w, 500), [7]);
    }

    #[test]
    fn far_deadlines_and_the_top_level() {
        let mut w = Wheel::default();
        w.push(timer(u64::MAX - 1, 1));
        w.push(timer(1 << 62, 2));
        assert!(fired(&mut w, 1 << 40).is_empty());
        assert_eq!(fired(&mut w, 1 << 62), [2]);
        assert_eq!(fired(&mut w, u64::MAX - 1), [1]);
    }

    proptest! {
        /// Every timer fires exactly once, never early, and none is left
        /// behind once its deadline has passed, whatever the advance steps.
        #[test]
        fn fires_each_timer_once_never_early(
            deadlines in prop::collection::vec(0u64..1 << 40, 1..200),
            steps in prop::collection::vec(0u64..1 << 38, 1..40),
        ) {
            let mut w = Wheel::default();
            for (i, d) in deadlines.iter().enumerate() {
                w.push(timer(*d, i as u32));
            }
            let mut now = 0u64;
            let mut seen = vec![false; deadlines.len()];
            for step in steps.iter().chain(std::iter::once(&(1u64 << 41))) {
                // Before `next`, an advance would do nothing: skip it, as
                // the store does, and the rest must still hold.
                let before = now + step < w.next();
                now += step;
                if before {
                    continue;
                }
                w.advance(now, |t| {
                    assert!(t.deadline <= now);
                    assert!(!seen[t.idx as usize], "fired twice");
                    seen[t.idx as usize] = true;
                });
                for (i, d) in deadlines.iter().enumerate() {
                    prop_assert_eq!(seen[i], *d <= now, "timer {} deadline {} at {}", i, d, now);
                }
            }
            prop_assert!(w.is_empty());
        }
    }

    /// `next` is never later than what an advance would do: no timer fires
    /// and no slot moves down before it.
    #[test]
    fn nothing_happens_before_next() {
        let mut w = Wheel::default();
        assert_eq!(w.next(), 0, "unknown until the first advance: always right");
        w.advance(10, |_| {});
        assert_eq!(w.next(), IDLE);
        w.push(timer(1_000, 1));
        w.push(timer(70, 2));
        // 70 is in level-1 slot 1 (64..128) from 10: it starts at 64.
        assert_eq!(w.next(), 64);
        assert!(fired(&mut w, 63).is_empty());
        assert_eq!(w.next(), 64, "an advance before it leaves it");
        assert!(fired(&mut w, 64).is_empty(), "moved down, not due");
        assert_eq!(w.next(), 70);
        assert_eq!(fired(&mut w, 70), [2]);
        assert!(w.next() <= 1_000);
        assert_eq!(fired(&mut w, 1_000), [1]);
        assert_eq!(w.next(), IDLE);
        w.push(timer(5, 3));
        assert_eq!(w.next(), 0, "pushed in the past: due at once");
    }

    #[test]
    fn retain_drops_stale_timers() {
        let mut w = Wheel::default();
        for i in 0..10 {
            w.push(timer(1000 + i as u64 * 77, i));
        }
        w.retain(|t| t.idx % 2 == 0);
        assert_eq!(w.len(), 5);
        let mut got = fired(&mut w, 10_000);
        got.sort();
        assert_eq!(got, [0, 2, 4, 6, 8]);
    }
}
