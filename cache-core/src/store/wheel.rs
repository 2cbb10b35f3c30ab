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
//! A timer is only its entry's slab index, 4 bytes: the wheel keeps neither
//! the deadline nor which use of the slot the timer was made for. Instead it
//! hands every callback the [`Bucket`] the timer sits in, the span of time
//! its slot covers, and the store tells from the slot alone whether its
//! entry's deadline lies there: a timer left behind by an entry that has
//! since gone (deletion is lazy) almost never matches its slot's next
//! occupant, and is dropped when it moves down or comes due, or by
//! [`Wheel::retain`]. One that does match is a duplicate that fires with the
//! real one, and `retain` keeps one timer a slot. Expiry never trusts a
//! timer: it checks the entry's own deadline against the clock.

const LEVELS: usize = 11;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;

/// The span of time `[start, end)` a wheel slot covers, as the wheel stands:
/// a timer in it was placed for a deadline in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

impl Bucket {
    #[inline]
    pub(crate) fn contains(self, deadline: u64) -> bool {
        self.start <= deadline && deadline < self.end
    }

    /// Slot `slot` of `level`, in the lap of `elapsed`.
    fn of(elapsed: u64, level: usize, slot: usize) -> Bucket {
        let start = slot_start(elapsed, level, slot);
        Bucket { start, end: start.saturating_add(1 << (level as u32 * SLOT_BITS)) }
    }

    /// The timers pushed at or before `elapsed`, due on the next advance.
    fn due(elapsed: u64) -> Bucket {
        Bucket { start: 0, end: elapsed.saturating_add(1) }
    }
}

#[derive(Debug)]
struct Level {
    occupied: u64,
    slots: [Vec<u32>; SLOTS],
}

#[derive(Debug, Default)]
pub(crate) struct Wheel {
    /// Allocated on the first timer: caches without TTLs pay nothing.
    levels: Vec<Level>,
    /// Timers at or before `elapsed` when pushed.
    due: Vec<u32>,
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

    /// Holds slab index `timer`'s timer until `deadline`.
    pub(crate) fn push(&mut self, timer: u32, deadline: u64) {
        self.len += 1;
        if deadline <= self.elapsed {
            self.due.push(timer);
            self.next = 0;
            return;
        }
        if self.levels.is_empty() {
            self.levels =
                (0..LEVELS).map(|_| Level { occupied: 0, slots: std::array::from_fn(|_| Vec::new()) }).collect();
        }
        let level = level_for(self.elapsed, deadline);
        let slot = slot_for(deadline, level);
        // Its slot starts after `elapsed`, at or before its deadline.
        self.next = self.next.min(slot_start(self.elapsed, level, slot));
        let level = &mut self.levels[level];
        level.occupied |= 1 << slot;
        level.slots[slot].push(timer);
    }

    /// Hands every timer due by `now` to `fire`, with its bucket, in the
    /// order of their slots (timers of one slot of a higher level come in
    /// any order). `deadline` gives a timer's deadline when it moves down a
    /// level, or `None` for a stale one, which is dropped; a timer handed to
    /// `fire` may be stale too, or due later than the one it was placed for
    /// (`fire` tells them apart).
    pub(crate) fn advance(
        &mut self,
        now: u64,
        mut deadline: impl FnMut(u32, Bucket) -> Option<u64>,
        mut fire: impl FnMut(u32, Bucket),
    ) {
        loop {
            let due = Bucket::due(now);
            for timer in std::mem::take(&mut self.due) {
                self.len -= 1;
                fire(timer, due);
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
            let bucket = Bucket::of(self.elapsed, level, slot);
            if bucket.start > now {
                self.next = bucket.start;
                break;
            }
            self.elapsed = bucket.start;
            let timers = {
                let l = &mut self.levels[level];
                l.occupied &= !(1 << slot);
                std::mem::take(&mut l.slots[slot])
            };
            for timer in timers {
                self.len -= 1;
                if level == 0 {
                    fire(timer, bucket);
                } else if let Some(deadline) = deadline(timer, bucket) {
                    // Already due: fired now, not moved down level by level.
                    if deadline <= now {
                        fire(timer, Bucket::due(now));
                    } else {
                        self.push(timer, deadline);
                    }
                }
            }
        }
        self.elapsed = self.elapsed.max(now);
    }

    /// Keeps only the timers `keep` approves, each where it is; O(timers).
    /// `next` stays a lower bound: fewer timers can only make it later.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u32, Bucket) -> bool) {
        let due = Bucket::due(self.elapsed);
        self.due.retain(|&t| keep(t, due));
        let mut len = self.due.len();
        for (i, level) in self.levels.iter_mut().enumerate() {
            for (slot, timers) in level.slots.iter_mut().enumerate() {
                if timers.is_empty() {
                    continue;
                }
                let bucket = Bucket::of(self.elapsed, i, slot);
                timers.retain(|&t| keep(t, bucket));
                if timers.is_empty() {
                    level.occupied &= !(1 << slot);
                }
                len += timers.len();
            }
        }
        self.len = len;
    }

    pub(crate) fn clear(&mut self) {
        self.retain(|_, _| false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A wheel and its timers' deadlines, by index, as the store keeps them
    /// in its slots (`None` once a timer is stale), and where each timer was
    /// placed last (its deadline then).
    #[derive(Default)]
    struct Timers {
        wheel: Wheel,
        deadlines: Vec<Option<u64>>,
        placed: Vec<u64>,
    }

    impl Timers {
        fn push(&mut self, idx: u32, deadline: u64) {
            let at = idx as usize;
            if self.deadlines.len() <= at {
                self.deadlines.resize(at + 1, None);
                self.placed.resize(at + 1, 0);
            }
            self.deadlines[at] = Some(deadline);
            self.placed[at] = deadline;
            self.wheel.push(idx, deadline);
        }

        /// The timers fired by an advance to `now`; none early, and each
        /// live one from a bucket that holds the deadline it was placed for.
        fn fired(&mut self, now: u64) -> Vec<u32> {
            let mut out = Vec::new();
            let Timers { wheel, deadlines, placed } = self;
            let placed = std::cell::Cell::from_mut(placed.as_mut_slice()).as_slice_of_cells();
            wheel.advance(
                now,
                |t, bucket| {
                    let deadline = deadlines[t as usize]?;
                    let at = placed[t as usize].replace(deadline);
                    assert!(bucket.contains(at), "timer {t} (placed for {at}) moved down from {bucket:?}");
                    Some(deadline)
                },
                |t, bucket| {
                    let deadline = deadlines[t as usize].expect("a stale timer is not fired");
                    assert!(deadline <= now, "fired {t} (due {deadline}) early at {now}");
                    let at = placed[t as usize].get();
                    assert!(bucket.contains(at), "timer {t} (placed for {at}) fired from {bucket:?}");
                    out.push(t)
                },
            );
            out
        }

        /// The bucket each timer sits in, by [`Wheel::retain`].
        fn buckets(&mut self) -> Vec<(u32, Bucket)> {
            let mut out = Vec::new();
            self.wheel.retain(|t, bucket| {
                out.push((t, bucket));
                true
            });
            out.sort_by_key(|&(t, _)| t);
            out
        }
    }

    #[test]
    fn fires_at_the_exact_nanosecond() {
        let mut t = Timers::default();
        t.push(1, 1_000_000_007);
        assert!(t.fired(1_000_000_006).is_empty());
        assert_eq!(t.fired(1_000_000_007), [1]);
        assert!(t.wheel.is_empty());
    }

    #[test]
    fn a_timer_pushed_in_the_past_fires_on_the_next_advance() {
        let mut t = Timers::default();
        t.wheel.advance(500, |_, _| None, |_, _| {});
        t.push(7, 100);
        assert_eq!(t.fired(500), [7]);
    }

    #[test]
    fn far_deadlines_and_the_top_level() {
        let mut t = Timers::default();
        t.push(1, u64::MAX - 1);
        t.push(2, 1 << 62);
        assert!(t.fired(1 << 40).is_empty());
        assert_eq!(t.fired(1 << 62), [2]);
        assert_eq!(t.fired(u64::MAX - 1), [1]);
    }

    /// A timer moving down a level goes where its entry's deadline is now
    /// (an idle deadline a read pushed on), and a stale one is dropped.
    #[test]
    fn timers_move_down_to_their_current_deadline() {
        let mut t = Timers::default();
        t.push(1, 1_000);
        t.push(2, 1_000);
        t.deadlines[1] = Some(5_000);
        t.deadlines[2] = None;
        assert!(t.fired(1_000).is_empty(), "moved on, or stale");
        assert_eq!(t.wheel.len(), 1, "the stale timer is gone");
        assert!(t.fired(4_999).is_empty());
        assert_eq!(t.fired(5_000), [1]);
        assert!(t.wheel.is_empty());
    }

    proptest! {
        /// Every timer fires exactly once, never early, and none is left
        /// behind once its deadline has passed, whatever the advance steps.
        #[test]
        fn fires_each_timer_once_never_early(
            deadlines in prop::collection::vec(0u64..1 << 40, 1..200),
            steps in prop::collection::vec(0u64..1 << 38, 1..40),
        ) {
            let mut t = Timers::default();
            for (i, d) in deadlines.iter().enumerate() {
                t.push(i as u32, *d);
            }
            let mut now = 0u64;
            let mut seen = vec![false; deadlines.len()];
            for step in steps.iter().chain(std::iter::once(&(1u64 << 41))) {
                // Before `next`, an advance would do nothing: skip it, as
                // the store does, and the rest must still hold.
                let before = now + step < t.wheel.next();
                now += step;
                if before {
                    continue;
                }
                for idx in t.fired(now) {
                    prop_assert!(!seen[idx as usize], "fired twice");
                    seen[idx as usize] = true;
                }
                // Where the timers wait, `retain` sees them in buckets that
                // hold their deadlines, as the advance will.
                for (idx, bucket) in t.buckets() {
                    prop_assert!(bucket.contains(t.placed[idx as usize]), "timer {} in {:?}", idx, bucket);
                }
                for (i, d) in deadlines.iter().enumerate() {
                    prop_assert_eq!(seen[i], *d <= now, "timer {} deadline {} at {}", i, d, now);
                }
            }
            prop_assert!(t.wheel.is_empty());
        }
    }

    /// `next` is never later than what an advance would do: no timer fires
    /// and no slot moves down before it.
    #[test]
    fn nothing_happens_before_next() {
        let mut t = Timers::default();
        assert_eq!(t.wheel.next(), 0, "unknown until the first advance: always right");
        t.wheel.advance(10, |_, _| None, |_, _| {});
        assert_eq!(t.wheel.next(), IDLE);
        t.push(1, 1_000);
        t.push(2, 70);
        // 70 is in level-1 slot 1 (64..128) from 10: it starts at 64.
        assert_eq!(t.wheel.next(), 64);
        assert!(t.fired(63).is_empty());
        assert_eq!(t.wheel.next(), 64, "an advance before it leaves it");
        assert!(t.fired(64).is_empty(), "moved down, not due");
        assert_eq!(t.wheel.next(), 70);
        assert_eq!(t.fired(70), [2]);
        assert!(t.wheel.next() <= 1_000);
        assert_eq!(t.fired(1_000), [1]);
        assert_eq!(t.wheel.next(), IDLE);
        t.push(3, 5);
        assert_eq!(t.wheel.next(), 0, "pushed in the past: due at once");
    }

    /// Each timer is handed the span of its own slot: a level-0 slot is
    /// one nanosecond, a level-`L` one 64^L, and one pushed already due
    /// waits in a bucket from 0 to the wheel's time.
    #[test]
    fn a_timer_is_handed_its_slots_span() {
        let mut t = Timers::default();
        t.wheel.advance(1_000, |_, _| None, |_, _| {});
        t.push(1, 1_001);
        t.push(2, 1_000 + 4_096 * 3);
        t.push(3, 999);
        t.push(4, (1 << 62) + 5);
        let b = |start, end| Bucket { start, end };
        let lap = |level: u32| 1u64 << (6 * level);
        assert_eq!(
            t.buckets(),
            [
                (1, b(1_001, 1_002)),
                (2, b(13_288 / lap(2) * lap(2), 13_288 / lap(2) * lap(2) + lap(2))),
                (3, b(0, 1_001)),
                (4, b(1 << 62, (1 << 62) + lap(10))),
            ]
        );
    }

    #[test]
    fn retain_drops_stale_timers_in_place() {
        let mut t = Timers::default();
        for i in 0..10 {
            t.push(i, 1000 + u64::from(i) * 77);
        }
        t.push(10, 0);
        t.push(11, 0);
        t.wheel.retain(|t, _| t % 2 == 0);
        assert_eq!(t.wheel.len(), 6);
        let mut got = t.fired(10_000);
        got.sort();
        assert_eq!(got, [0, 2, 4, 6, 8, 10]);
        assert!(t.wheel.is_empty());
    }
}
