//! W-TinyLFU (after Caffeine): frequency decides who stays.
//!
//! New entries enter a small *window*. The window's overflow goes to the
//! *main* region, segmented: *probation* for entries on trial, *protected*
//! (up to 80% of main) for entries read again while on probation. When the
//! cache is full, the entry leaving the window (the candidate) and the
//! main region's oldest entry (the victim) duel: the one the frequency
//! [`Sketch`] has seen less often lately leaves. So a one-time scan flows
//! through the window and out again without flushing a popular set, and a
//! key asked for often enough gets in.
//!
//! Each region is a clock rather than an exact LRU list: a hit marks its
//! entry read (one link written by the lock holder, no list surgery), and
//! an entry found read at the back of its region gets a second chance
//! there. The sketch counts an entry's first hit per lap of the clock.
//!
//! The window's share adapts. A hill climber (as in Caffeine, with Rprop
//! steps by factors) moves it in whichever direction raised the hit ratio
//! over the last sample. And when many misses are on newcomers the duel
//! refused shortly before (hits an LRU would have made), the window grows
//! at once: recency-driven traffic shows the climber no gain from small
//! steps until the window nears its reuse distance.
//!
//! Hits arrive as replayed read records, which may be lost under
//! contention: under this policy that only blurs the counts.

use super::list::{Links, Queue};
use super::sketch::Sketch;

/// The three regions, each a [`Queue`].
const WINDOW: u8 = 0;
const PROBATION: u8 = 1;
const PROTECTED: u8 = 2;

/// What a link keeps beside the list, packed in 4 bytes (a field each
/// took 8, padded): the entry's hash but for its low three bits (for the
/// sketch, without touching the slot), in their place its region (two
/// bits) and whether it was read since it last reached the back of its
/// region.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Entry(u32);

/// The bits of [`Entry`] that are not the hash.
const REGION_BITS: u32 = 0b11;
const READ: u32 = 0b100;
const HASH_BITS: u32 = !(REGION_BITS | READ);

impl Entry {
    /// An unread entry of `region`, for a key of `hash` (see [`hash`](Self::hash)).
    fn new(hash: u32, region: u8) -> Self {
        Entry((hash & HASH_BITS) | u32::from(region))
    }

    /// The key's hash as the sketch counts it: its low three bits cleared.
    fn hash(self) -> u32 {
        self.0 & HASH_BITS
    }

    fn region(self) -> u8 {
        (self.0 & REGION_BITS) as u8
    }

    fn read(self) -> bool {
        self.0 & READ != 0
    }

    /// Marks it read; returns whether it was already.
    fn mark_read(&mut self) -> bool {
        let was = self.read();
        self.0 |= READ;
        was
    }

    fn unread(self) -> Self {
        Entry(self.0 & !READ)
    }
}

/// The window's share moves by a factor of `2^step`: `step` starts at
/// `STEP`, grows by `SPEED_UP` (to at most `STEP_MAX`) while the hit ratio
/// keeps rising in one direction and halves when it turns (Rprop).
const STEP: f64 = 0.5;
const STEP_MIN: f64 = 0.05;
const STEP_MAX: f64 = 1.0;
const SPEED_UP: f64 = 1.3;
/// A sample whose hit ratio moved by more than this saw the traffic
/// change, not the window's effect: no step on it.
const RESTART: f64 = 0.05;
/// The window grows at once when more than one request in this many was a
/// miss that an LRU would likely have hit (see `TinyLfu::regrets`).
/// Measured per 10,000 requests: 31-35% on recency-driven traffic with a
/// 1% window (still 10% at 64%), under 3% on Zipf, loop and scan traffic.
const REGRETS: usize = 20;
/// Requests between checks of `REGRETS`; a hill-climbing sample is four
/// times as long, or `4 × capacity` requests if more (shorter samples
/// measured noisier steps, and lower hit ratios, at capacity 1,000).
const SAMPLE: usize = 10_000;
/// The most refused newcomers remembered (8 bytes each), however large the
/// capacity.
const GHOSTS_MAX: usize = 1 << 22;
/// The most entries one adaptation moves between regions.
const TRANSFER_MAX: usize = 1_000;

#[derive(Debug)]
pub(crate) struct TinyLfu {
    pub(super) links: Links<Entry>,
    regions: [Queue; 3],
    capacity: usize,
    window_max: usize,
    protected_max: usize,
    sketch: Sketch,
    /// Hill climbing: this sample's hits and misses, the last sample's hit
    /// ratio, the next step (see `STEP`) and its direction.
    hits: usize,
    misses: usize,
    last_ratio: f64,
    step: f64,
    growing: bool,
    /// Whether anything was evicted yet: the climber waits for it.
    full: bool,
    /// The entry pushed last (see [`back`](Self::back)).
    newest: u32,
    /// Requests seen (hits replayed and entries pushed), wrapping: the
    /// clock of `refused`.
    requests: u32,
    /// Newcomers refused admission lately, direct-mapped by hash: `(hash |
    /// 1) << 32 | requests` when refused (0 is empty).
    refused: Box<[u64]>,
    /// This sample's misses on keys refused fewer than `capacity` requests
    /// before: hits that an LRU of this size would most likely have made.
    regrets: usize,
    /// `requests` when `regrets` started counting.
    regrets_since: u32,
}

impl TinyLfu {
    /// For a cache of at most `capacity` entries (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let window_max = (capacity / 100).max(1);
        let mut lfu = TinyLfu {
            links: Links::new(),
            regions: [Queue::EMPTY; 3],
            capacity,
            window_max,
            protected_max: 0,
            sketch: Sketch::new(capacity),
            hits: 0,
            misses: 0,
            last_ratio: 0.0,
            step: STEP,
            growing: false,
            full: false,
            newest: u32::MAX,
            requests: 0,
            refused: vec![0; capacity.clamp(16, GHOSTS_MAX).next_power_of_two()].into_boxed_slice(),
            regrets: 0,
            regrets_since: 0,
        };
        lfu.protected_max = lfu.protected_share();
        lfu
    }

    fn main_max(&self) -> usize {
        self.capacity - self.window_max
    }

    /// Protected's share of main: 80%.
    fn protected_share(&self) -> usize {
        let main = self.main_max();
        main - main / 5
    }

    fn main_len(&self) -> usize {
        self.regions[PROBATION as usize].len + self.regions[PROTECTED as usize].len
    }

    /// Makes room for links up to `idx`.
    pub(crate) fn reserve(&mut self, idx: u32) {
        self.links.reserve(idx);
    }

    /// A new entry: counted, and at the front of the window; the window's
    /// overflow goes to probation while the main region has room.
    pub(crate) fn push(&mut self, idx: u32, hash: u32) {
        // Counted as its link keeps it (see `Entry::hash`).
        let hash = hash & HASH_BITS;
        self.sketch.increment(hash);
        self.misses += 1;
        self.requests = self.requests.wrapping_add(1);
        let ghost = &mut self.refused[hash.rotate_left(16) as usize & (self.refused.len() - 1)];
        if *ghost >> 32 == u64::from(hash | 1) {
            let refused_at = *ghost as u32;
            *ghost = 0;
            if (self.requests.wrapping_sub(refused_at) as usize) < self.capacity {
                self.regrets += 1;
            }
        }
        let entry = Entry::new(hash, WINDOW);
        self.newest = idx;
        self.links.push_front(&mut self.regions[WINDOW as usize], idx, entry);
        while self.regions[WINDOW as usize].len > self.window_max && self.main_len() < self.main_max() {
            let oldest = self.back(WINDOW).expect("over its bound");
            self.shift(oldest, PROBATION);
        }
        self.climb();
    }

    /// `new` takes `old`'s place in its region, marked read (an overwrite
    /// is a use), and is counted as a read would be.
    pub(crate) fn replace(&mut self, old: u32, new: u32) {
        let region = self.links.extra(old).region();
        self.links.replace(&mut self.regions[region as usize], old, new);
        let entry = self.links.extra_mut(new);
        if !entry.mark_read() {
            let hash = entry.hash();
            self.sketch.increment(hash);
        }
        if self.newest == old {
            self.newest = new;
        }
    }

    pub(crate) fn unlink(&mut self, idx: u32) {
        let region = self.links.extra(idx).region();
        self.links.unlink(&mut self.regions[region as usize], idx);
    }

    /// Moves linked `idx` to the front of region `to` (not its own),
    /// unread.
    fn shift(&mut self, idx: u32, to: u8) {
        let entry = self.links.extra(idx);
        let [from, into] = self.regions.get_disjoint_mut([entry.region() as usize, to as usize]).expect("two regions");
        self.links.transfer(from, into, idx, Entry::new(entry.hash(), to));
    }

    /// Replays hits: each marks its entry read. The order within a region
    /// is a clock: an entry read since it last reached the back gets a
    /// second chance there (see [`back`](Self::back)) instead of a move to
    /// the front on every hit. The sketch counts an entry's first hit per
    /// lap of the clock, not every hit: a burst counts once, so counts rank
    /// keys by how many laps they were used in, and a hit on an entry read
    /// already costs the lock holder one link, no sketch block. (Measured:
    /// hit ratios within noise of counting every hit on every workload of
    /// the benchmark, and a third of the cost of a hit.)
    ///
    /// A record counts only if `linked` says its entry is still linked
    /// (see `Order::touch_all`).
    pub(crate) fn touch_all(&mut self, records: &[(u32, u32)], linked: impl Fn(u32, u32) -> bool) {
        for &(idx, _) in records {
            self.links.prefetch(idx);
        }
        for &(idx, meta) in records {
            if linked(idx, meta) {
                let entry = self.links.extra_mut(idx);
                self.hits += 1;
                self.requests = self.requests.wrapping_add(1);
                if !entry.mark_read() {
                    let hash = entry.hash();
                    self.sketch.increment(hash);
                }
            }
        }
        self.climb();
    }

    /// The oldest unread entry of `region`, after giving the read ones met
    /// on the way their second chance: to the front of the window or of
    /// protected, or from probation up to protected. Each pass clears what
    /// it meets, so this ends (amortized O(1)).
    ///
    /// The newest entry is never the window's candidate: had every other
    /// entry been read (and sent ahead of it), it goes ahead of them in
    /// turn, so an insert is never evicted by its own overflow.
    fn back(&mut self, region: u8) -> Option<u32> {
        loop {
            let queue = &mut self.regions[region as usize];
            let idx = queue.back()?;
            if region == WINDOW && idx == self.newest && queue.len > 1 {
                self.links.touch(queue, idx);
                continue;
            }
            let entry = self.links.extra(idx);
            if !entry.read() {
                return Some(idx);
            }
            if region == PROBATION {
                self.shift(idx, PROTECTED);
                self.demote();
            } else {
                *self.links.extra_mut(idx) = entry.unread();
                self.links.touch(&mut self.regions[region as usize], idx);
            }
        }
    }

    /// Moves protected's oldest unread entries to probation while protected
    /// is over its share.
    fn demote(&mut self) {
        while self.regions[PROTECTED as usize].len > self.protected_max {
            let oldest = self.back(PROTECTED).expect("over its bound");
            self.shift(oldest, PROBATION);
        }
    }

    /// The entry to evict from a cache over capacity. The window's oldest
    /// entry, if the window is over its share, duels the main region's
    /// oldest: the winner stays (a winning candidate moves to probation),
    /// the loser is returned, still linked.
    pub(crate) fn victim(&mut self) -> Option<u32> {
        self.full = true;
        let over = self.regions[WINDOW as usize].len > self.window_max;
        let candidate = self.back(WINDOW);
        let victim = self.back(PROBATION).or_else(|| self.back(PROTECTED));
        match (candidate, victim) {
            (Some(candidate), Some(victim)) if over => {
                if self.admits(candidate, victim) {
                    self.shift(candidate, PROBATION);
                    Some(victim)
                } else {
                    self.remember_refused(candidate);
                    Some(candidate)
                }
            }
            (candidate, victim) => victim.or(candidate),
        }
    }

    /// Notes that `idx`, a newcomer, was refused admission, and when.
    fn remember_refused(&mut self, idx: u32) {
        let hash = self.links.extra(idx).hash();
        let len = self.refused.len();
        self.refused[hash.rotate_left(16) as usize & (len - 1)] = u64::from(hash | 1) << 32 | u64::from(self.requests);
    }

    /// Whether `candidate` may take `victim`'s place: asked for more
    /// often lately. (Caffeine also admits a popular loser now and then,
    /// against attackers who inflate a victim's counters with colliding
    /// keys; our hashes are seeded per cache, so collisions cannot be
    /// aimed, and measured without it, hit ratios were no lower.)
    fn admits(&self, candidate: u32, victim: u32) -> bool {
        let candidate = self.sketch.frequency(self.links.extra(candidate).hash());
        let victim = self.sketch.frequency(self.links.extra(victim).hash());
        candidate > victim
    }

    /// Grows the window at once if recency pays (see `REGRETS`), checked
    /// every `SAMPLE` requests; one step of the hill climber once its
    /// sample (longer, to average out noise) is complete.
    #[inline]
    fn climb(&mut self) {
        if !self.full {
            // Filling up, every ratio is high and falling: nothing to learn.
            self.hits = 0;
            self.misses = 0;
            self.regrets = 0;
            self.regrets_since = self.requests;
            return;
        }
        if self.requests.wrapping_sub(self.regrets_since) as usize >= SAMPLE {
            self.check_regrets();
        }
        let requests = self.hits + self.misses;
        if requests >= self.capacity.saturating_mul(4).max(4 * SAMPLE) {
            self.adapt(self.hits, requests);
        }
    }

    /// Many misses on newcomers refused shortly before: recency pays here,
    /// and the hit ratio may stay flat for many small steps of the window
    /// before the climber could see it. Grows the window at full speed,
    /// and restarts the climber's sample.
    #[cold]
    fn check_regrets(&mut self) {
        let requests = self.requests.wrapping_sub(self.regrets_since) as usize;
        self.regrets_since = self.requests;
        if std::mem::take(&mut self.regrets) <= requests / REGRETS {
            return;
        }
        self.growing = true;
        self.step = STEP_MAX;
        let target = ((self.window_max as f64 * STEP_MAX.exp2()).ceil() as usize).min(self.capacity - 1);
        self.grow_window(target.saturating_sub(self.window_max));
        self.hits = 0;
        self.misses = 0;
        // Not comparable with what comes next.
        self.last_ratio = f64::NAN;
    }

    /// Steps the window's share by a factor, on in the same direction while
    /// the hit ratio does not fall (faster each time), else the other way
    /// (slower). Small windows (the best for skewed traffic) move by few
    /// entries, so noise costs little there.
    #[cold]
    fn adapt(&mut self, hits: usize, requests: usize) {
        let ratio = hits as f64 / requests as f64;
        let change = ratio - self.last_ratio;
        self.last_ratio = ratio;
        self.hits = 0;
        self.misses = 0;
        if change.is_nan() || change.abs() >= RESTART {
            // The traffic changed (a scan began or ended, a new working
            // set): no step on that evidence; measure again, afresh.
            self.step = STEP;
            return;
        }
        if change < 0.0 {
            self.growing = !self.growing;
            self.step = (self.step / 2.0).max(STEP_MIN);
        } else {
            self.step = (self.step * SPEED_UP).min(STEP_MAX);
        }
        let factor = self.step.exp2();
        let window = self.window_max as f64;
        let target = if self.growing {
            ((window * factor).ceil() as usize).min(self.capacity - 1).max(self.window_max)
        } else {
            ((window / factor) as usize).max(self.window_min()).min(self.window_max)
        };
        if target == self.window_max {
            // Against an end: pressing on is no evidence, and the step
            // would only grow for a long jump back at the first noise.
            self.step = STEP_MIN;
        } else if self.growing {
            self.grow_window(target - self.window_max);
        } else {
            self.shrink_window(self.window_max - target);
        }
    }

    /// The smallest window: half a percent of the capacity, at least one.
    fn window_min(&self) -> usize {
        (self.capacity / 200).max(1)
    }

    /// Gives the window `quota` more of the capacity, and the main region's
    /// oldest entries (up to `TRANSFER_MAX`; evictions take the rest).
    fn grow_window(&mut self, quota: usize) {
        self.window_max += quota;
        self.protected_max = self.protected_max.min(self.protected_share());
        self.demote();
        for _ in 0..quota.min(TRANSFER_MAX) {
            let Some(oldest) = self.back(PROBATION).or_else(|| self.back(PROTECTED)) else {
                break;
            };
            if self.main_len() <= self.main_max() {
                break;
            }
            self.shift(oldest, WINDOW);
        }
    }

    /// Takes `quota` of the window's share for main. The window's overflow moves to main as new
    /// entries come in: to probation while main has room, else through
    /// duels, so main never holds more than its share.
    fn shrink_window(&mut self, quota: usize) {
        self.window_max -= quota;
        self.protected_max = self.protected_share();
    }

    /// Snapshot order, if `idx` is linked: probation, then window, then
    /// protected; within a region by recency stamp (see [`Links::stamp`]).
    #[cfg(feature = "persist")]
    pub(crate) fn rank(&self, idx: u32) -> Option<(u8, u32)> {
        let stamp = self.links.stamp(idx)?;
        let rank = match self.links.extra(idx).region() {
            PROBATION => 0,
            WINDOW => 1,
            _ => 2,
        };
        Some((rank, stamp))
    }

    #[cfg(feature = "persist")]
    pub(crate) fn clock(&self) -> u32 {
        self.links.clock()
    }

    /// Empties every region and forgets every link; keeps the counts (the
    /// popularity of keys outlives a clear) and the window's share.
    pub(crate) fn clear(&mut self) {
        self.links.clear();
        self.regions = [Queue::EMPTY; 3];
    }

    #[cfg(test)]
    fn lens(&self) -> [usize; 3] {
        self.regions.map(|q| q.len)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Cache-aside over `trace` on a bare policy of `capacity`: the hit
    /// ratio over the second half of the trace (the first is for learning),
    /// and the keys held at the end.
    fn simulate(capacity: usize, trace: impl IntoIterator<Item = u64>) -> (f64, Vec<u64>) {
        let trace: Vec<u64> = trace.into_iter().collect();
        let learning = trace.len() / 2;
        let mut lfu = TinyLfu::new(capacity);
        let mut held: HashMap<u64, u32> = HashMap::new();
        let mut keys: Vec<u64> = Vec::new();
        let mut free: Vec<u32> = Vec::new();
        let (mut hits, mut requests) = (0, 0);
        for (at, key) in trace.into_iter().enumerate() {
            let counted = at >= learning;
            requests += usize::from(counted);
            if let Some(&idx) = held.get(&key) {
                hits += usize::from(counted);
                lfu.touch_all(&[(idx, 8)], |_, _| true);
                continue;
            }
            let idx = free.pop().unwrap_or(keys.len() as u32);
            if idx as usize == keys.len() {
                keys.push(key);
            }
            keys[idx as usize] = key;
            lfu.reserve(idx);
            held.insert(key, idx);
            lfu.push(idx, (key as u32).wrapping_mul(0x9E37_79B9) ^ (key >> 32) as u32);
            while held.len() > capacity {
                let victim = lfu.victim().expect("over capacity");
                lfu.unlink(victim);
                held.remove(&keys[victim as usize]);
                free.push(victim);
            }
            let [window, probation, protected] = lfu.lens();
            assert_eq!(window + probation + protected, held.len(), "every entry is in one region");
            assert!(protected <= lfu.protected_max.max(1), "protected over its share");
        }
        (hits as f64 / requests as f64, held.into_keys().collect())
    }

    #[test]
    fn a_one_time_scan_does_not_flush_a_popular_set() {
        // 50 popular keys, each asked for 10 times, then 1,000 keys once
        // (ten times the capacity: one halving of the counts).
        let popular = (0..10).flat_map(|_| 0..50u64);
        let scan = 1_000..2_000u64;
        let (_, held) = simulate(100, popular.chain(scan));
        let kept = (0..50).filter(|k| held.contains(k)).count();
        assert_eq!(kept, 50, "the scan flushed {} of 50 popular keys", 50 - kept);
    }

    #[test]
    fn a_key_asked_for_often_enough_gets_in() {
        let popular = (0..10).flat_map(|_| 0..100u64);
        // A newcomer asked for between other one-time keys.
        let newcomer = (0..40u64).flat_map(|i| [7_777, 100_000 + i]);
        let (_, held) = simulate(100, popular.chain(newcomer));
        assert!(held.contains(&7_777), "asked for 40 times, never admitted");
    }

    #[test]
    fn a_loop_larger_than_the_cache_keeps_part_of_it() {
        // LRU hits nothing here; TinyLFU keeps a stable part of the loop.
        let (ratio, _) = simulate(1_000, (0..100_000u64).map(|i| i % 1_500));
        assert!(ratio > 0.4, "hit ratio {ratio} on a loop over 1.5 × capacity");
    }

    #[test]
    fn the_window_grows_for_recency_driven_traffic() {
        // A new key every other request, else one of the last 400 keys:
        // what was asked for lately is asked for again, nothing is popular
        // for long. LRU holds every key asked for again (0.5); a 1% window
        // alone would hold few of them.
        let mut x = 1u64;
        let recency = (0..400_000u64).map(move |i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 2 == 0 { i / 2 } else { (i / 2).saturating_sub(x % 400) }
        });
        let (ratio, _) = simulate(1_000, recency);
        assert!(ratio > 0.45, "recency-driven hit ratio {ratio}, LRU's is 0.5");
    }

    #[test]
    fn an_entry_keeps_its_hash_region_and_read_mark_apart() {
        for region in [WINDOW, PROBATION, PROTECTED] {
            let mut entry = Entry::new(u32::MAX, region);
            assert_eq!((entry.hash(), entry.region(), entry.read()), (HASH_BITS, region, false));
            assert!(!entry.mark_read(), "unread before");
            assert!(entry.mark_read(), "read after");
            assert_eq!((entry.hash(), entry.region()), (HASH_BITS, region));
            let entry = entry.unread();
            assert_eq!((entry.hash(), entry.region(), entry.read()), (HASH_BITS, region, false));
            assert_eq!(Entry::new(0, region).hash(), 0);
        }
    }

    #[test]
    fn a_capacity_of_one_keeps_the_newest_entry() {
        let (_, held) = simulate(1, 0..10u64);
        assert_eq!(held, [9]);
    }
}
