//! One shard's index: linear probing over atomic 64-bit words.
//!
//! A word holds a 32-bit hash tag and a slab index, so a probe compares tags
//! without touching the slab and a rebuild never rehashes a key (no user code
//! under the lock). Only the lock holder writes; readers probe without a lock.
//! A word goes from empty to used, and back to empty or to a tombstone (see
//! `remove`); a table is never more than 5/8 used, so a reader's probe always
//! meets an empty word within one lap. Growing or cleaning tombstones builds
//! a new table and retires the old one through the epoch, as it is, for
//! readers still in it.

use std::alloc::{self, Layout};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering;

use crate::sync::atomic::AtomicU64;

const EMPTY: u64 = 0;
const TOMBSTONE: u64 = 1;
/// Slab indices are stored plus this, keeping 0 and 1 for the markers above.
const INDEX_BIAS: u32 = 2;
/// The smallest table.
pub(crate) const MIN_CAPACITY: usize = 16;

#[inline]
fn word(tag: u32, idx: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(idx + INDEX_BIAS)
}

/// A table's allocation: its mask, then its words.
#[repr(C)]
pub(crate) struct Table {
    mask: usize,
    words: [AtomicU64; 0],
}

/// A table, reached through the pointer its allocation returned.
///
/// Not a `&Table`: a reference covers only the header it points to, and
/// reading the words past it through one is undefined behaviour under
/// Stacked Borrows. The raw pointer keeps the whole allocation's
/// provenance. The lifetime is that of the pin or lock that keeps the
/// table allocated (see `Store::table`).
#[derive(Clone, Copy)]
pub(crate) struct TableRef<'a> {
    ptr: NonNull<Table>,
    _alive: PhantomData<&'a Table>,
}

// SAFETY: a `TableRef` is a `&'a Table` with wider provenance: the words
// are atomics and the mask is written once before the table is shared, so
// it may be sent and shared like that reference.
unsafe impl Send for TableRef<'_> {}
// SAFETY: as above.
unsafe impl Sync for TableRef<'_> {}

impl Table {
    fn layout(capacity: usize) -> Layout {
        Layout::new::<Table>()
            .extend(Layout::array::<AtomicU64>(capacity).expect("table too large"))
            .expect("table too large")
            .0
            .pad_to_align()
    }

    /// An empty table of `capacity` (a power of two) words.
    pub(crate) fn alloc(capacity: usize) -> NonNull<Table> {
        debug_assert!(capacity.is_power_of_two());
        let layout = Self::layout(capacity);
        // SAFETY: the layout is non-zero; zeroed words are EMPTY.
        let ptr = unsafe { alloc::alloc_zeroed(layout) }.cast::<Table>();
        let Some(table) = NonNull::new(ptr) else { alloc::handle_alloc_error(layout) };
        // SAFETY: freshly allocated, large enough for the header.
        unsafe { (*table.as_ptr()).mask = capacity - 1 };
        // A model checker's atomics are not valid zeroed: make them.
        #[cfg(shuttle)]
        for pos in 0..capacity {
            // SAFETY: within the allocation, not yet shared.
            unsafe {
                ptr::addr_of_mut!((*table.as_ptr()).words).cast::<AtomicU64>().add(pos).write(AtomicU64::new(EMPTY))
            };
        }
        table
    }

    /// # Safety
    /// `table` came from [`Table::alloc`] and nobody uses it any more.
    pub(crate) unsafe fn free(table: NonNull<Table>) {
        // SAFETY: allocated by `alloc` with this layout; the caller says
        // nobody reads it any more.
        unsafe {
            let layout = Self::layout((*table.as_ptr()).mask + 1);
            alloc::dealloc(table.as_ptr().cast(), layout);
        }
    }
}

impl<'a> TableRef<'a> {
    /// # Safety
    /// `ptr` came from [`Table::alloc`] and stays allocated for `'a`.
    #[inline]
    pub(crate) unsafe fn new(ptr: NonNull<Table>) -> Self {
        TableRef { ptr, _alive: PhantomData }
    }

    #[inline]
    fn mask(self) -> usize {
        // SAFETY: allocated for 'a (see `new`); the mask is written once,
        // before the table is shared.
        unsafe { (*self.ptr.as_ptr()).mask }
    }

    #[inline]
    pub(crate) fn capacity(self) -> usize {
        self.mask() + 1
    }

    #[inline]
    fn word(self, pos: usize) -> &'a AtomicU64 {
        debug_assert!(pos <= self.mask());
        // SAFETY: `pos <= mask`, the allocation holds `mask + 1` words after
        // the header, and the pointer carries the whole allocation's
        // provenance; allocated for 'a.
        unsafe { &*ptr::addr_of!((*self.ptr.as_ptr()).words).cast::<AtomicU64>().add(pos) }
    }

    /// Probes for `tag`, calling `matches` on each candidate slab index until
    /// it says yes. Returns the word's position and the index.
    #[inline]
    pub(crate) fn find(self, tag: u32, mut matches: impl FnMut(u32) -> bool) -> Option<(usize, u32)> {
        let mask = self.mask();
        let mut pos = tag as usize & mask;
        loop {
            let w = self.word(pos).load(Ordering::Acquire);
            if w == EMPTY {
                return None;
            }
            if (w >> 32) as u32 == tag && w as u32 >= INDEX_BIAS {
                let idx = w as u32 - INDEX_BIAS;
                if matches(idx) {
                    return Some((pos, idx));
                }
            }
            pos = (pos + 1) & mask;
        }
    }

    /// [`find`](Self::find) for the lock holder, which may add a word
    /// next: where the key is, or where its word would go.
    #[inline]
    pub(crate) fn probe(self, tag: u32, mut matches: impl FnMut(u32) -> bool) -> Probe {
        let mask = self.mask();
        let mut pos = tag as usize & mask;
        let mut tombstone = None;
        loop {
            let w = self.word(pos).load(Ordering::Relaxed);
            if w == EMPTY {
                return Probe::Vacant(tombstone.unwrap_or(pos));
            }
            if w == TOMBSTONE {
                tombstone = tombstone.or(Some(pos));
            } else if (w >> 32) as u32 == tag && matches(w as u32 - INDEX_BIAS) {
                return Probe::Found(pos, w as u32 - INDEX_BIAS);
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Puts the word `(tag, idx)` at a position [`probe`](Self::probe)
    /// found vacant, the table unchanged since; returns whether it was a
    /// tombstone. Lock held.
    pub(crate) fn fill(self, pos: usize, tag: u32, idx: u32) -> bool {
        let was = self.word(pos).load(Ordering::Relaxed);
        debug_assert!(was == EMPTY || was == TOMBSTONE, "filling a used word");
        self.word(pos).store(word(tag, idx), Ordering::Release);
        was == TOMBSTONE
    }

    /// The position of the word that holds `idx`. Lock held; the entry exists.
    pub(crate) fn position_of(self, tag: u32, idx: u32) -> usize {
        let mask = self.mask();
        let target = word(tag, idx);
        let mut pos = tag as usize & mask;
        loop {
            let w = self.word(pos).load(Ordering::Relaxed);
            if w == target {
                return pos;
            }
            assert!(w != EMPTY, "async-cache: entry missing from its table (a bug)");
            pos = (pos + 1) & mask;
        }
    }

    /// Stores `idx` at the first free word of `tag`'s probe sequence; the key
    /// must be absent. Returns whether a tombstone was reused. Lock held.
    pub(crate) fn insert(self, tag: u32, idx: u32) -> bool {
        let Probe::Vacant(pos) = self.probe(tag, |_| false) else { unreachable!("nothing matches") };
        self.fill(pos, tag, idx)
    }

    /// Points the word at `pos` to another slab index. Lock held.
    pub(crate) fn replace(self, pos: usize, tag: u32, idx: u32) {
        self.word(pos).store(word(tag, idx), Ordering::Release);
    }

    /// Takes the word at `pos` out; returns the change in tombstones. Lock
    /// held.
    ///
    /// It becomes a tombstone only if a probe may have to pass it. When the
    /// next word is empty no probe runs through it, so it becomes empty, and
    /// so do the tombstones just before it. A reader is never misled by this:
    /// a word inside the probe run of a present key has a used or tombstone
    /// word after it, so it is never emptied while that key is there. Without
    /// this, tombstones of evicted entries filled the table and forced a
    /// rebuild every ~19,000 evictions in a 10,000-entry cache.
    pub(crate) fn remove(self, pos: usize) -> isize {
        let mask = self.mask();
        if self.word((pos + 1) & mask).load(Ordering::Relaxed) != EMPTY {
            self.word(pos).store(TOMBSTONE, Ordering::Release);
            return 1;
        }
        self.word(pos).store(EMPTY, Ordering::Release);
        // Ends: at most 5/8 of the words are used or tombstones.
        let mut cleared = 0;
        let mut at = pos;
        loop {
            at = (at + mask) & mask;
            if self.word(at).load(Ordering::Relaxed) != TOMBSTONE {
                return -cleared;
            }
            self.word(at).store(EMPTY, Ordering::Release);
            cleared += 1;
        }
    }

    /// Every `(tag, index)` in the table. Lock held.
    pub(crate) fn entries(self) -> impl Iterator<Item = (u32, u32)> + 'a {
        (0..self.capacity()).filter_map(move |pos| {
            let w = self.word(pos).load(Ordering::Relaxed);
            (w as u32 >= INDEX_BIAS).then(|| ((w >> 32) as u32, w as u32 - INDEX_BIAS))
        })
    }
}

/// What a [`TableRef::probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The key's word: its position and slab index.
    Found(usize, u32),
    /// No word for the key; a new one goes here: the first tombstone on the
    /// way, or the empty word that ended the probe.
    Vacant(usize),
}

/// Bookkeeping for one shard's table, kept by the lock holder.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Usage {
    /// Words pointing at a slot.
    pub(crate) live: usize,
    /// Tombstones.
    pub(crate) dead: usize,
}

impl Usage {
    /// Whether one more word would take a table of `capacity` past half
    /// live, or past 5/8 used counting tombstones, or past half used with
    /// tombstones at least a quarter of the live words. Every insert starts
    /// with a probe that misses, and in linear probing a miss passes ~2
    /// words at 1/2 used, ~4 at 5/8 and ~32 at 7/8 (readers only need an
    /// empty word somewhere); rebuilding for tombstones copies the live
    /// words only. The last rule sweeps the tombstones that evictions leave
    /// in a table that is not near half live (a 10,000-entry cache's shards
    /// are a third live) before they lengthen every probe: inserts with
    /// eviction took 12% less time for it. Its quarter keeps a sweep's
    /// copying to at most four words per removal.
    #[inline]
    pub(crate) fn full(&self, capacity: usize) -> bool {
        let used = self.live + self.dead + 1;
        // Half used or less, no rule below applies: the common case, in one
        // test (the three rules cost an insert ~12 instructions).
        if used * 2 <= capacity {
            return false;
        }
        (self.live + 1) * 2 > capacity || used * 8 > capacity * 5 || self.dead * 4 >= self.live
    }

    /// The capacity to rebuild to before adding one more entry: the same,
    /// sweeping tombstones, while live words stay within half of it; else
    /// doubled (a table grows from half to a quarter live).
    pub(crate) fn rebuilt_capacity(&self, capacity: usize) -> usize {
        let mut capacity = capacity.max(MIN_CAPACITY);
        while (self.live + 1) * 2 > capacity {
            capacity *= 2;
        }
        capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Owned(NonNull<Table>);
    impl Owned {
        fn get(&self) -> TableRef<'_> {
            // SAFETY: allocated until `self` drops.
            unsafe { TableRef::new(self.0) }
        }
    }
    impl Drop for Owned {
        fn drop(&mut self) {
            // SAFETY: allocated by `Table::alloc`, no reference left.
            unsafe { Table::free(self.0) }
        }
    }

    #[test]
    fn insert_find_replace_remove() {
        let owned = Owned(Table::alloc(16));
        let t = owned.get();
        // Three entries colliding on the same home position.
        assert!(!t.insert(3, 10));
        assert!(!t.insert(3 + 16, 11));
        assert!(!t.insert(3, 12));
        assert_eq!(t.find(3, |i| i == 12), Some((5, 12)));
        assert_eq!(t.find(19, |_| true), Some((4, 11)));
        assert_eq!(t.find(3, |i| i == 99), None);
        assert_eq!(t.remove(4), 1, "a run goes on after it: a tombstone");
        assert_eq!(t.find(3, |i| i == 12), Some((5, 12)), "a tombstone does not end a probe");
        assert_eq!(t.find(19, |_| true), None);
        assert_eq!(t.probe(19, |_| true), Probe::Vacant(4), "the first tombstone on the way");
        assert_eq!(t.probe(3, |i| i == 12), Probe::Found(5, 12));
        assert_eq!(t.probe(3, |i| i == 99), Probe::Vacant(4));
        assert!(t.insert(19, 13), "a tombstone is reused");
        assert_eq!(t.probe(3, |i| i == 99), Probe::Vacant(6), "the empty word that ends the run");
        assert!(!t.fill(6, 3, 15));
        assert_eq!(t.find(3, |i| i == 15), Some((6, 15)));
        assert_eq!(t.position_of(19, 13), 4);
        t.replace(5, 3, 14);
        assert_eq!(t.find(3, |i| i == 14), Some((5, 14)));
        let mut all: Vec<_> = t.entries().collect();
        all.sort();
        assert_eq!(all, vec![(3, 10), (3, 14), (3, 15), (19, 13)]);
    }

    #[test]
    fn a_removal_at_the_end_of_a_run_leaves_no_tombstones() {
        let owned = Owned(Table::alloc(16));
        let t = owned.get();
        for idx in 0..4 {
            t.insert(15, idx);
        }
        // Positions 15, 0, 1, 2 (wrapping).
        assert_eq!(t.remove(0), 1);
        assert_eq!(t.remove(1), 1);
        assert_eq!(t.find(15, |i| i == 3), Some((2, 3)), "the run still reaches its end");
        assert_eq!(t.remove(2), -2, "the end and both tombstones before it go");
        assert_eq!(t.find(15, |i| i == 0), Some((15, 0)));
        assert_eq!(t.find(15, |i| i == 1), None);
        assert!(!t.insert(15, 4), "an empty word, not a tombstone, is reused");
        assert_eq!(t.position_of(15, 4), 0);
        assert_eq!(t.remove(0), 0);
        assert_eq!(t.remove(15), 0);
        assert_eq!(t.entries().count(), 0);
    }

    /// Readers probe while the lock holder removes and re-adds the words
    /// around a present key, before and after it in its run: the key is
    /// never missed (a word inside its run is never emptied).
    #[test]
    fn readers_never_miss_a_present_key_while_its_run_changes() {
        let owned = Owned(Table::alloc(16));
        let t = owned.get();
        const PRESENT: u32 = 100;
        // One run from position 3: two words before the present key, two after.
        for idx in [0, 1] {
            t.insert(3, idx);
        }
        t.insert(3, PRESENT);
        for idx in [2, 3] {
            t.insert(3, idx);
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut probes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert!(t.find(3, |i| i == PRESENT).is_some(), "missed a present key");
                    probes += 1;
                }
                probes
            });
            for round in 0..if cfg!(miri) { 200 } else { 200_000u32 } {
                // Take out one of the four others and put it back.
                let idx = round % 4;
                t.remove(t.position_of(3, idx));
                t.insert(3, idx);
            }
            stop.store(true, Ordering::Relaxed);
            assert!(reader.join().unwrap() > 0);
        });
    }

    #[test]
    fn tags_wrap_around_the_end() {
        let owned = Owned(Table::alloc(16));
        let t = owned.get();
        t.insert(15, 1);
        t.insert(15, 2);
        assert_eq!(t.find(15, |i| i == 2), Some((0, 2)));
    }

    #[test]
    fn usage_keeps_probes_short_and_grows_by_doubling() {
        let u = Usage { live: 8, dead: 0 };
        assert!(u.full(16), "half live: one more needs a rebuild");
        assert!(!Usage { live: 7, dead: 0 }.full(16));
        assert!(!Usage { live: 7, dead: 1 }.full(16), "few tombstones: kept");
        assert!(Usage { live: 7, dead: 2 }.full(16), "half used, tombstones a quarter of the live: swept");
        assert!(!Usage { live: 480, dead: 110 }.full(1024), "near half live: tombstones up to 5/8 are kept");
        assert!(Usage { live: 480, dead: 160 }.full(1024), "5/8 used: one more needs a rebuild");
        assert!(!Usage { live: 4, dead: 3 }.full(16), "under half used: kept");
        assert!(Usage { live: 4, dead: 4 }.full(16), "a third live and half used: swept");
        assert_eq!(Usage { live: 7, dead: 3 }.rebuilt_capacity(16), 16, "tombstones only: same size");
        assert_eq!(u.rebuilt_capacity(16), 32, "mostly live: double, not more");
        // At the sizes of a 1,000,000-entry cache: 15,625 per shard.
        assert_eq!(Usage { live: 14_336, dead: 0 }.rebuilt_capacity(16_384), 32_768);
    }
}
