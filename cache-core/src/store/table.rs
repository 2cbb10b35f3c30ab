//! One shard's index: linear probing over atomic 32-bit words.
//!
//! A word holds a slab index in its low bits and, above them, as many bits
//! of the key's hash tag as are left (eight while the slab has fewer than
//! 2^24 slots), so a probe passes other keys' words without touching the
//! slab: a word whose tag bits match by chance costs one slot read, about
//! once in 256 words passed. Words of four bytes, not eight (a full tag and
//! an index), save a table of a 1,000,000-entry cache 8 bytes an entry.
//! Only the lock holder writes; readers probe without a lock. A word goes
//! from empty to used, and back to empty or to a tombstone (see `remove`);
//! a table is never more than 5/8 used, so a reader's probe always meets an
//! empty word within one lap. Growing or cleaning tombstones builds a new
//! table and retires the old one through the epoch, as it is, for readers
//! still in it; a word does not hold the whole tag its position came from,
//! so a rebuild reads it from the slot (`Slot::tag`, never the key: no user
//! code under the lock).

use std::alloc::{self, Layout};
use std::hint::select_unpredictable;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering;

use super::MAX_SHARD_BITS;
use crate::sync::atomic::AtomicU32;

const EMPTY: u32 = 0;
const TOMBSTONE: u32 = 1;
/// Slab indices are stored plus this, keeping 0 and 1 for the markers above.
const INDEX_BIAS: u32 = 2;
/// The smallest table.
pub(crate) const MIN_CAPACITY: usize = 16;
/// The index bits of a new store's words; the rest (eight) hold tag bits.
const NARROWEST: u32 = 24;

/// Whether word `w` holds a slab index (is neither empty nor a tombstone).
#[inline]
fn used(w: u32) -> bool {
    w != EMPTY && w != TOMBSTONE
}

/// How a table's words split between slab index and tag bits.
///
/// A word keeps the tag's bits below the six that may pick its shard (see
/// `Store::shard`): those are the same for every key of a shard. The shift
/// is fixed, not the store's shard count, so that it costs one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Format {
    /// The bits of a word that hold tag bits; the others hold a slab index
    /// plus [`INDEX_BIAS`].
    tag_mask: u32,
}

impl Format {
    /// The format for a store of up to `entries` entries: the narrowest
    /// whose words hold twice as many slots (slots past the entries wait
    /// out readers), up to 2^28, so that a large cache does not rebuild
    /// every table at once as it fills (see `Store::widen`). An unbounded
    /// one starts narrow and widens as it grows.
    pub(crate) fn new(entries: usize) -> Format {
        // The last slot index of 28-bit words.
        const MOST: usize = (1 << 28) - 1 - INDEX_BIAS as usize;
        let slots = if entries == usize::MAX { 0 } else { entries.saturating_mul(2).min(MOST) };
        let mut format = Format::with_index_bits(NARROWEST);
        while !format.holds(u32::try_from(slots).expect("at most 2^28")) {
            format = format.wider();
        }
        format
    }

    fn with_index_bits(index_bits: u32) -> Format {
        debug_assert!(index_bits <= 32);
        Format { tag_mask: !((u64::from(u32::MAX) >> (32 - index_bits)) as u32) }
    }

    /// Words of four index bits (slots 0 to 13), for tests that widen them.
    #[cfg(all(test, not(shuttle)))]
    pub(super) fn narrowest() -> Format {
        Format::with_index_bits(4)
    }

    /// Whether a word of this format can hold slab index `idx`.
    #[inline]
    pub(crate) fn holds(self, idx: u32) -> bool {
        u64::from(idx) + u64::from(INDEX_BIAS) <= u64::from(!self.tag_mask)
    }

    /// A format with two more index bits (two fewer tag bits), up to all 32.
    pub(crate) fn wider(self) -> Format {
        Format::with_index_bits((self.tag_mask.count_zeros() + 2).min(32))
    }

    /// The tag bits of `tag`'s words, in place.
    #[inline]
    fn tag_bits(self, tag: u32) -> u32 {
        (tag << MAX_SHARD_BITS) & self.tag_mask
    }

    #[inline]
    fn word(self, tag: u32, idx: u32) -> u32 {
        debug_assert!(self.holds(idx));
        self.tag_bits(tag) | (idx + INDEX_BIAS)
    }

    /// The slab index of a used word.
    #[inline]
    fn index(self, w: u32) -> u32 {
        (w & !self.tag_mask) - INDEX_BIAS
    }
}

/// A table's allocation: its mask and format, then its words, from a
/// 16-byte boundary: a probe reads four words at once, and the groups it
/// reads then never straddle a cache line.
#[repr(C, align(16))]
pub(crate) struct Table {
    mask: usize,
    format: Format,
    _align: u32,
    words: [AtomicU32; 0],
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
            .extend(Layout::array::<AtomicU32>(capacity).expect("table too large"))
            .expect("table too large")
            .0
            .pad_to_align()
    }

    /// An empty table of `capacity` (a power of two) words.
    pub(crate) fn alloc(capacity: usize, format: Format) -> NonNull<Table> {
        debug_assert!(capacity.is_power_of_two());
        let layout = Self::layout(capacity);
        // SAFETY: the layout is non-zero; zeroed words are EMPTY.
        let ptr = unsafe { alloc::alloc_zeroed(layout) }.cast::<Table>();
        let Some(table) = NonNull::new(ptr) else { alloc::handle_alloc_error(layout) };
        // SAFETY: freshly allocated, large enough for the header.
        unsafe {
            (*table.as_ptr()).mask = capacity - 1;
            (*table.as_ptr()).format = format;
        }
        // A model checker's atomics are not valid zeroed: make them.
        #[cfg(shuttle)]
        for pos in 0..capacity {
            // SAFETY: within the allocation, not yet shared.
            unsafe {
                ptr::addr_of_mut!((*table.as_ptr()).words).cast::<AtomicU32>().add(pos).write(AtomicU32::new(EMPTY))
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
    fn format(self) -> Format {
        // SAFETY: as in `mask`.
        unsafe { (*self.ptr.as_ptr()).format }
    }

    #[inline]
    fn word(self, pos: usize) -> &'a AtomicU32 {
        debug_assert!(pos <= self.mask());
        // SAFETY: `pos <= mask`, the allocation holds `mask + 1` words after
        // the header, and the pointer carries the whole allocation's
        // provenance; allocated for 'a.
        unsafe { &*ptr::addr_of!((*self.ptr.as_ptr()).words).cast::<AtomicU32>().add(pos) }
    }

    /// Probes for `tag`, calling `matches` on each candidate slab index until
    /// it says yes. Returns the word's position and the index.
    #[inline]
    pub(crate) fn find(self, tag: u32, mut matches: impl FnMut(u32) -> bool) -> Option<(usize, u32)> {
        let (mask, format) = (self.mask(), self.format());
        let tag_bits = format.tag_bits(tag);
        let mut pos = tag as usize & mask;
        loop {
            let w = self.word(pos).load(Ordering::Acquire);
            if w == EMPTY {
                return None;
            }
            // A tombstone is a word of no tag bits: told apart only when
            // they match, off the common path.
            if w & format.tag_mask == tag_bits && w != TOMBSTONE {
                let idx = format.index(w);
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
    pub(crate) fn probe(self, tag: u32, matches: impl FnMut(u32) -> bool) -> Probe {
        #[cfg(all(target_arch = "x86_64", not(shuttle)))]
        return self.probe_groups(tag, matches);
        #[cfg(not(all(target_arch = "x86_64", not(shuttle))))]
        return self.probe_words(tag, matches);
    }

    /// [`probe`](Self::probe) eight words at a time (see `Eight`): at
    /// most 5/8 of a table is used, so the words from a key's home to the
    /// end of the group after it nearly always hold the empty word that
    /// ends its probe, and one pass over them (a branch on "any tag bits
    /// match", one on "an empty word") replaces a word-by-word loop whose
    /// length the CPU could not predict. With `position_of_groups`: 1.6
    /// mispredicted branches an insert with eviction fewer, 8% of its time.
    #[cfg(all(target_arch = "x86_64", not(shuttle)))]
    #[inline]
    fn probe_groups(self, tag: u32, mut matches: impl FnMut(u32) -> bool) -> Probe {
        const NONE: usize = usize::MAX;
        let format = self.format();
        let tag_bits = format.tag_bits(tag);
        let (mut eight, mut lanes) = Eight::from_home(self, tag as usize & self.mask());
        let mut tombstone = NONE;
        loop {
            let empty = eight.equal(EMPTY) & lanes;
            // The lanes up to the first empty one (all eight if none).
            let run = lanes & (empty ^ empty.wrapping_sub(1));
            let dead = eight.equal(TOMBSTONE);
            let mut found = eight.tags_equal(format.tag_mask, tag_bits) & run & !empty & !dead;
            while found != 0 {
                let pos = eight.position(found);
                let idx = format.index(self.word(pos).load(Ordering::Relaxed));
                if matches(idx) {
                    return Probe::Found(pos, idx);
                }
                found &= found - 1;
            }
            // Whether there is a tombstone is hard to predict: chosen
            // without a branch (`NONE` while there is none yet).
            let dead = dead & run;
            tombstone = select_unpredictable(tombstone == NONE && dead != 0, eight.position(dead), tombstone);
            if empty != 0 {
                return Probe::Vacant(select_unpredictable(tombstone == NONE, eight.position(empty), tombstone));
            }
            (eight, lanes) = (eight.after(self), 0xff);
        }
    }

    /// [`probe`](Self::probe) a word at a time: where groups of words
    /// cannot be read at once, and the reference the tests hold
    /// `probe_groups` to.
    #[cfg(any(test, not(all(target_arch = "x86_64", not(shuttle)))))]
    #[inline]
    fn probe_words(self, tag: u32, mut matches: impl FnMut(u32) -> bool) -> Probe {
        let (mask, format) = (self.mask(), self.format());
        let tag_bits = format.tag_bits(tag);
        let mut pos = tag as usize & mask;
        let mut tombstone = None;
        loop {
            let w = self.word(pos).load(Ordering::Relaxed);
            if w == EMPTY {
                return Probe::Vacant(tombstone.unwrap_or(pos));
            }
            if w == TOMBSTONE {
                tombstone = tombstone.or(Some(pos));
            } else if w & format.tag_mask == tag_bits && matches(format.index(w)) {
                return Probe::Found(pos, format.index(w));
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
        self.word(pos).store(self.format().word(tag, idx), Ordering::Release);
        was == TOMBSTONE
    }

    /// The position of the word that holds `idx`. Lock held; the entry
    /// exists.
    #[inline]
    pub(crate) fn position_of(self, tag: u32, idx: u32) -> usize {
        #[cfg(all(target_arch = "x86_64", not(shuttle)))]
        return self.position_of_groups(tag, idx);
        #[cfg(not(all(target_arch = "x86_64", not(shuttle))))]
        return self.position_of_words(tag, idx);
    }

    /// [`position_of`](Self::position_of) eight words at a time, as
    /// `probe_groups`.
    #[cfg(all(target_arch = "x86_64", not(shuttle)))]
    fn position_of_groups(self, tag: u32, idx: u32) -> usize {
        let target = self.format().word(tag, idx);
        let (mut eight, mut lanes) = Eight::from_home(self, tag as usize & self.mask());
        loop {
            // An index has one word in a table: a match is it, even before
            // the home.
            let found = eight.equal(target);
            if found != 0 {
                return eight.position(found);
            }
            assert!(eight.equal(EMPTY) & lanes == 0, "async-cache: entry missing from its table (a bug)");
            (eight, lanes) = (eight.after(self), 0xff);
        }
    }

    /// [`position_of`](Self::position_of) a word at a time, as
    /// `probe_words`.
    #[cfg(any(test, not(all(target_arch = "x86_64", not(shuttle)))))]
    fn position_of_words(self, tag: u32, idx: u32) -> usize {
        let mask = self.mask();
        let target = self.format().word(tag, idx);
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
        // For an absent key, where `probe` would put it: the first word
        // that is not used, empty or a tombstone.
        let mask = self.mask();
        let home = tag as usize & mask;
        #[cfg(all(target_arch = "x86_64", not(shuttle)))]
        let pos = {
            let (mut eight, mut lanes) = Eight::from_home(self, home);
            loop {
                let free = eight.free() & lanes;
                if free != 0 {
                    break eight.position(free);
                }
                (eight, lanes) = (eight.after(self), 0xff);
            }
        };
        #[cfg(not(all(target_arch = "x86_64", not(shuttle))))]
        let pos = {
            let mut pos = home;
            while used(self.word(pos).load(Ordering::Relaxed)) {
                pos = (pos + 1) & mask;
            }
            pos
        };
        self.fill(pos, tag, idx)
    }

    /// Points the word at `pos` to another slab index. Lock held.
    pub(crate) fn replace(self, pos: usize, tag: u32, idx: u32) {
        self.word(pos).store(self.format().word(tag, idx), Ordering::Release);
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
    ///
    /// Whether the next word is empty is a coin toss in a half-used table:
    /// nothing branches on it alone (that was one mispredicted branch in
    /// three removals), only on it together with a tombstone before.
    pub(crate) fn remove(self, pos: usize) -> isize {
        let mask = self.mask();
        let next_empty = self.word((pos + 1) & mask).load(Ordering::Relaxed) == EMPTY;
        self.word(pos).store(select_unpredictable(next_empty, EMPTY, TOMBSTONE), Ordering::Release);
        // Sweeps the tombstones before an emptied word. Ends: at most 5/8
        // of the words are used or tombstones. With all bits set, no word
        // reads as a tombstone: no sweep, without a branch of its own. The
        // value is hidden from the optimizer, which otherwise turns the
        // test back into a branch on `next_empty` (inserts with eviction
        // took 9% longer with it).
        let no_sweep = std::hint::black_box(select_unpredictable(next_empty, 0, u32::MAX));
        let mut cleared = 0;
        let mut at = pos;
        loop {
            at = (at + mask) & mask;
            if self.word(at).load(Ordering::Relaxed) | no_sweep != TOMBSTONE {
                return select_unpredictable(next_empty, -cleared, 1);
            }
            self.word(at).store(EMPTY, Ordering::Release);
            cleared += 1;
        }
    }

    /// Writes every word of `old`, a table of the same capacity, at the
    /// same position in this table's format, tombstones too, with `tag`
    /// giving each slab index's tag: every key stays where a probe found
    /// it. Lock held; this table not yet shared.
    pub(crate) fn copy_from(self, old: TableRef<'_>, mut tag: impl FnMut(u32) -> u32) {
        debug_assert_eq!(self.capacity(), old.capacity());
        let (format, old_format) = (self.format(), old.format());
        for pos in 0..self.capacity() {
            let w = old.word(pos).load(Ordering::Relaxed);
            let w = if used(w) {
                let idx = old_format.index(w);
                format.word(tag(idx), idx)
            } else {
                w
            };
            self.word(pos).store(w, Ordering::Relaxed);
        }
    }

    /// Every slab index in the table, in table order. Lock held.
    #[cfg(all(target_arch = "x86_64", not(shuttle)))]
    pub(crate) fn indices(self) -> impl Iterator<Item = u32> + 'a {
        // Sixty-four words at a time, as a mask of the used ones: a table is
        // about half used, and a branch on each word's use, or on each
        // group's, was mispredicted about once a group.
        let (format, capacity) = (self.format(), self.capacity());
        let used_of = move |start: usize| {
            (0..(capacity - start).min(64) / 8).fold(0u64, |used, eight| {
                used | u64::from(!Eight::read(self, start + 8 * eight).free() & 0xff) << (8 * eight)
            })
        };
        let (mut start, mut used) = (0, used_of(0));
        std::iter::from_fn(move || {
            while used == 0 {
                start += 64;
                if start >= capacity {
                    return None;
                }
                used = used_of(start);
            }
            let pos = start + used.trailing_zeros() as usize;
            used &= used - 1;
            Some(format.index(self.word(pos).load(Ordering::Relaxed)))
        })
    }

    /// Every slab index in the table, in table order. Lock held.
    #[cfg(not(all(target_arch = "x86_64", not(shuttle))))]
    pub(crate) fn indices(self) -> impl Iterator<Item = u32> + 'a {
        let format = self.format();
        (0..self.capacity()).filter_map(move |pos| {
            let w = self.word(pos).load(Ordering::Relaxed);
            used(w).then(|| format.index(w))
        })
    }
}

/// Eight words of a table read at once by the lock holder: the group of
/// four at `at` (a multiple of four) and the group after it, which wraps
/// to the table's start after its last group. Each test gives a bit a
/// word, the lowest for the first.
#[cfg(all(target_arch = "x86_64", not(shuttle)))]
#[derive(Clone, Copy)]
struct Eight {
    low: Group,
    high: Group,
    at: usize,
    next: usize,
}

#[cfg(all(target_arch = "x86_64", not(shuttle)))]
impl Eight {
    #[inline]
    fn read(table: TableRef<'_>, at: usize) -> Eight {
        let next = (at + 4) & table.mask();
        Eight { low: Group::read(table, at), high: Group::read(table, next), at, next }
    }

    /// The eight words from `home`'s group on, and the lanes a probe from
    /// `home` passes (not those before it in its group).
    #[inline]
    fn from_home(table: TableRef<'_>, home: usize) -> (Eight, u32) {
        (Eight::read(table, home & !3), 0xff & (0xff << (home & 3)))
    }

    /// The eight words after these.
    #[inline]
    fn after(self, table: TableRef<'_>) -> Eight {
        Eight::read(table, (self.next + 4) & table.mask())
    }

    /// The position of the lowest word of `lanes` (not empty).
    #[inline]
    fn position(self, lanes: u32) -> usize {
        let lane = lanes.trailing_zeros() as usize;
        if lane < 4 { self.at + lane } else { self.next + lane - 4 }
    }

    #[inline]
    fn equal(self, w: u32) -> u32 {
        self.low.equal(w) | self.high.equal(w) << 4
    }

    #[inline]
    fn tags_equal(self, mask: u32, bits: u32) -> u32 {
        self.low.tags_equal(mask, bits) | self.high.tags_equal(mask, bits) << 4
    }

    #[inline]
    fn free(self) -> u32 {
        self.low.free() | self.high.free() << 4
    }
}

/// Four words of a table, from a position that is a multiple of four,
/// read at once by the lock holder (SSE2, part of x86_64).
#[cfg(all(target_arch = "x86_64", not(shuttle)))]
#[derive(Clone, Copy)]
struct Group(std::arch::x86_64::__m128i);

#[cfg(all(target_arch = "x86_64", not(shuttle)))]
impl Group {
    #[inline]
    fn read(table: TableRef<'_>, at: usize) -> Group {
        debug_assert!(at.is_multiple_of(4) && at + 3 <= table.mask());
        // SAFETY: `at` is a multiple of four and at most `mask - 3`
        // (capacities are powers of two, 16 words or more), so the four
        // words lie in the allocation, 16-byte aligned (see `Table`). Only
        // the lock holder, which reads this, writes words: the plain read
        // races with nothing but readers' atomic loads.
        Group(unsafe {
            let words = ptr::addr_of!((*table.ptr.as_ptr()).words).cast::<AtomicU32>();
            std::arch::x86_64::_mm_load_si128(words.add(at).cast())
        })
    }

    /// A bit for each word equal to `w`, lowest for the first word.
    #[inline]
    fn equal(self, w: u32) -> u32 {
        use std::arch::x86_64::{_mm_castsi128_ps, _mm_cmpeq_epi32, _mm_movemask_ps, _mm_set1_epi32};
        // SAFETY: SSE2, part of x86_64.
        unsafe { _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(self.0, _mm_set1_epi32(w as i32)))) as u32 }
    }

    /// A bit for each word that is empty or a tombstone.
    #[inline]
    fn free(self) -> u32 {
        const { assert!(EMPTY == 0 && TOMBSTONE == 1) };
        self.tags_equal(!1, 0)
    }

    /// A bit for each word whose bits under `mask` are `bits`.
    #[inline]
    fn tags_equal(self, mask: u32, bits: u32) -> u32 {
        use std::arch::x86_64::{_mm_and_si128, _mm_set1_epi32};
        // SAFETY: SSE2, part of x86_64.
        Group(unsafe { _mm_and_si128(self.0, _mm_set1_epi32(mask as i32)) }).equal(bits)
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
        fn new(capacity: usize) -> Owned {
            Owned(Table::alloc(capacity, Format::new(16)))
        }
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

    /// Two tags with the same home position in a 16-word table, and
    /// different tag bits in their words.
    const A: u32 = 3;
    const B: u32 = 3 | 1 << 24;

    #[test]
    fn insert_find_replace_remove() {
        let owned = Owned::new(16);
        let t = owned.get();
        // Three entries colliding on the same home position.
        assert!(!t.insert(A, 10));
        assert!(!t.insert(B, 11));
        assert!(!t.insert(A, 12));
        assert_eq!(t.find(A, |i| i == 12), Some((5, 12)));
        assert_eq!(t.find(A, |_| true), Some((3, 10)), "the same tag bits: the slot decides");
        assert_eq!(t.find(B, |_| true), Some((4, 11)), "other tag bits: passed without asking");
        assert_eq!(t.find(A, |i| i == 99), None);
        assert_eq!(t.remove(4), 1, "a run goes on after it: a tombstone");
        assert_eq!(t.find(A, |i| i == 12), Some((5, 12)), "a tombstone does not end a probe");
        assert_eq!(t.find(B, |_| true), None);
        assert_eq!(t.probe(B, |_| true), Probe::Vacant(4), "the first tombstone on the way");
        assert_eq!(t.probe(A, |i| i == 12), Probe::Found(5, 12));
        assert_eq!(t.probe(A, |i| i == 99), Probe::Vacant(4));
        assert!(t.insert(B, 13), "a tombstone is reused");
        assert_eq!(t.probe(A, |i| i == 99), Probe::Vacant(6), "the empty word that ends the run");
        assert!(!t.fill(6, A, 15));
        assert_eq!(t.find(A, |i| i == 15), Some((6, 15)));
        assert_eq!(t.position_of(B, 13), 4);
        t.replace(5, A, 14);
        assert_eq!(t.find(A, |i| i == 14), Some((5, 14)));
        assert_eq!(t.indices().collect::<Vec<_>>(), vec![10, 13, 14, 15]);
    }

    #[test]
    fn words_keep_the_tag_bits_below_the_shard_bits() {
        let owned = Owned::new(16);
        let t = owned.get();
        t.insert(5, 1);
        // Bits 26 to 31 pick the shard; the word keeps bits 18 to 25.
        assert_eq!(t.find(5 | 1 << 26, |_| true), Some((5, 1)), "a shard bit: not in the word");
        assert_eq!(t.find(5 | 1 << 17, |_| true), Some((5, 1)), "below the eight kept: not in the word");
        assert_eq!(t.find(5 | 1 << 18, |_| true), None, "the lowest bit kept");
        assert_eq!(t.find(5 | 1 << 25, |_| true), None, "the highest bit kept");
    }

    #[test]
    fn wider_formats_hold_more_slots_with_fewer_tag_bits() {
        let narrow = Format::new(1_000_000);
        assert_eq!(narrow, Format::new(usize::MAX), "unbounded: narrow at first");
        assert_eq!(Format::new(8_388_606), narrow, "twice as many slots still fit");
        assert_eq!(Format::new(8_388_607), narrow.wider());
        assert_eq!(Format::new(1 << 31), narrow.wider().wider(), "28 index bits at most");
        assert!(narrow.holds((1 << 24) - 3));
        assert!(!narrow.holds((1 << 24) - 2), "index plus bias must fit 24 bits");
        let wider = narrow.wider();
        assert!(wider.holds((1 << 26) - 3) && !wider.holds((1 << 26) - 2));
        assert_eq!(wider.tag_bits(u32::MAX), 0xFC00_0000, "six tag bits left");
        let widest = (0..4).fold(wider, |f, _| f.wider());
        assert_eq!(widest, widest.wider(), "32 index bits at most");
        assert!(widest.holds(u32::MAX - 2));
        assert_eq!(widest.tag_bits(u32::MAX), 0, "no tag bits left: every word asks the slot");
        assert_eq!(widest.index(widest.word(7, u32::MAX - 2)), u32::MAX - 2);
    }

    #[test]
    fn a_copy_into_wider_words_keeps_every_position() {
        let owned = Owned::new(16);
        let t = owned.get();
        let tags = [A, B, A, 7];
        for (idx, tag) in tags.into_iter().enumerate() {
            t.insert(tag, idx as u32);
        }
        t.remove(t.position_of(B, 1));
        let wide = Owned(Table::alloc(16, Format::new(16).wider()));
        let w = wide.get();
        w.copy_from(t, |idx| tags[idx as usize]);
        assert_eq!(w.format(), Format::new(16).wider());
        for pos in 0..16 {
            assert_eq!(w.word(pos).load(Ordering::Relaxed) == TOMBSTONE, pos == 4, "the tombstone stays");
        }
        assert_eq!(w.find(A, |i| i == 2), Some((5, 2)), "past the tombstone, where it was");
        assert_eq!(w.find(A, |i| i == 0), Some((3, 0)));
        assert_eq!(w.find(7, |_| true), Some((7, 3)));
        assert_eq!(w.probe(B, |_| true), Probe::Vacant(4), "a write that probed before the copy");
    }

    #[test]
    fn a_removal_at_the_end_of_a_run_leaves_no_tombstones() {
        let owned = Owned::new(16);
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
        assert_eq!(t.indices().count(), 0);
    }

    /// Readers probe while the lock holder removes and re-adds the words
    /// around a present key, before and after it in its run: the key is
    /// never missed (a word inside its run is never emptied).
    #[test]
    fn readers_never_miss_a_present_key_while_its_run_changes() {
        let owned = Owned::new(16);
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
        let owned = Owned::new(16);
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

    /// What reads groups of words (the probe, finding an entry's word,
    /// listing the used ones, an insert) finds what the word-by-word reads
    /// find, on tables of any mix of empty, tombstone and used words (tag
    /// bits matching or not, runs wrapping around the end), whichever
    /// candidate the key matches.
    #[cfg(all(target_arch = "x86_64", not(shuttle)))]
    mod groups {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn group_probes_find_what_word_probes_find(
                // 0: empty, 1: tombstone, 2: a word of `tag`'s tag bits,
                // 3: a word of other tag bits. Never all used: a table
                // always has an empty word.
                // Tables smaller than one of `indices`' 64-word reads, and
                // of eight.
                (words, home) in prop::sample::select(vec![16usize, 32, 512]).prop_flat_map(|n| (
                    prop::collection::vec(0u8..4, n).prop_filter("an empty word", |w| w.contains(&0)),
                    0..n as u32,
                )),
                matching in 0usize..40,
            ) {
                let n = words.len();
                let owned = Owned::new(n);
                let t = owned.get();
                let format = t.format();
                let tag = home | 5 << 24;
                let other = home | 6 << 24;
                prop_assume!(format.tag_bits(tag) != format.tag_bits(other));
                for (pos, kind) in words.iter().enumerate() {
                    let idx = 100 + pos as u32;
                    let w = match kind {
                        0 => EMPTY,
                        1 => TOMBSTONE,
                        2 => format.word(tag, idx),
                        _ => format.word(other, idx),
                    };
                    t.word(pos).store(w, Ordering::Relaxed);
                }
                // The key is the `matching`-th word of its tag bits, if any.
                let key = words.iter().enumerate().filter(|(_, k)| **k == 2).nth(matching).map(|(pos, _)| 100 + pos as u32);
                let (mut asked_groups, mut asked_words) = (Vec::new(), Vec::new());
                let by_groups = t.probe_groups(tag, |idx| { asked_groups.push(idx); Some(idx) == key });
                let by_words = t.probe_words(tag, |idx| { asked_words.push(idx); Some(idx) == key });
                prop_assert_eq!(by_groups, by_words);
                prop_assert_eq!(asked_groups, asked_words, "the same candidates, in probe order");
                for (pos, kind) in words.iter().enumerate() {
                    if *kind >= 2 {
                        let (tag_of_word, idx) = (if *kind == 2 { tag } else { other }, 100 + pos as u32);
                        let home_of_word = if *kind == 2 { tag } else { other };
                        // Only words their own probe reaches: none past an empty word.
                        let start = home_of_word as usize & (n - 1);
                        let reachable = (0..n).map(|i| (start + i) & (n - 1)).take_while(|&p| words[p] != 0).any(|p| p == pos);
                        if reachable {
                            prop_assert_eq!(t.position_of_groups(tag_of_word, idx), t.position_of_words(tag_of_word, idx));
                            prop_assert_eq!(t.position_of_groups(tag_of_word, idx), pos);
                        }
                    }
                }
                let used: Vec<u32> = (0..n).filter(|&p| words[p] >= 2).map(|p| 100 + p as u32).collect();
                prop_assert_eq!(t.indices().collect::<Vec<_>>(), used);
                // An insert takes the word a probe for an absent key names.
                let Probe::Vacant(free) = t.probe_words(tag, |_| false) else { unreachable!() };
                t.insert(tag, 7);
                prop_assert_eq!(t.word(free).load(Ordering::Relaxed), format.word(tag, 7));
            }
        }
    }
}
