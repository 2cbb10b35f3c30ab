//! Entry slots with stable addresses, reused but never moved.
//!
//! Readers find a slot index in the table and dereference it without a lock,
//! so a slot's memory must stay valid while any reader may hold its index.
//! Slots live in segments of doubling size that are only freed with the
//! store; a removed slot is *retired* and only reused after an epoch grace
//! period (see `Store::retire`), so a pinned reader always sees the entry it
//! found, whole.
//!
//! A slot's `meta` word holds its state and a generation that changes each
//! time the slot is reused; the read buffers remember `(index, meta)` pairs
//! and ignore any whose slot has moved on since.

use std::alloc::{self, Layout};
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::flight::Flight;
use crate::sync::atomic::{AtomicPtr, AtomicU32};

/// Never used, or reclaimed: key and payload are uninitialized.
pub(crate) const FREE: u32 = 0;
/// A live value: key and `ready` payload initialized.
pub(crate) const READY: u32 = 1;
/// A load in flight: key and `pending` payload initialized.
pub(crate) const PENDING: u32 = 2;
/// Removed from the table, waiting out readers; payload was `ready`.
pub(crate) const RETIRED_READY: u32 = 3;
/// Removed from the table, waiting out readers; payload was `pending`.
pub(crate) const RETIRED_PENDING: u32 = 4;
/// Past its TTL but inside its `stale_for` window: in the table, `ready`
/// payload initialized, invisible to readers (only a reload sees it).
pub(crate) const STALE: u32 = 5;
/// A `STALE` entry taken out of the table by the load that replaces it,
/// which holds it (in its flight) until it ends: to serve it if the load
/// fails or is slow, and to put it back if the load fails.
pub(crate) const HELD: u32 = 6;

const STATE_BITS: u32 = 3;
const STATE_MASK: u32 = (1 << STATE_BITS) - 1;
/// Set in the meta of a slot whose entry has a deadline (a TTL, or idle
/// expiry): readers look up the deadline (kept beside the slab, see
/// `Deadlines`) only then, and entries without one cost nothing to check.
/// Fixed for a generation of the slot, like its key.
pub(crate) const TIMED: u32 = 1 << STATE_BITS;
/// Where the generation starts.
const GENERATION_SHIFT: u32 = STATE_BITS + 1;
const GENERATION_MASK: u32 = !0 << GENERATION_SHIFT;

#[inline]
pub(crate) fn state(meta: u32) -> u32 {
    meta & STATE_MASK
}

/// Whether a meta's entry has a deadline.
#[inline]
pub(crate) fn timed(meta: u32) -> bool {
    meta & TIMED != 0
}

/// Which use of its slot a meta names.
#[inline]
pub(crate) fn generation(meta: u32) -> u32 {
    meta & GENERATION_MASK
}

#[inline]
pub(crate) fn with_state(meta: u32, state: u32) -> u32 {
    (meta & !STATE_MASK) | state
}

/// The next generation of a slot, in state `FREE`, untimed.
#[inline]
fn next_generation(meta: u32) -> u32 {
    generation(meta).wrapping_add(1 << GENERATION_SHIFT)
}

/// Whether a taken-back slot has used up its generations (the next one
/// would repeat the first): such a slot is never reused, so no `(index,
/// meta)` pair kept by a read record or a flight can name a later entry.
/// That costs one slot per 2^28 reuses of it.
#[inline]
pub(crate) fn exhausted(meta: u32) -> bool {
    generation(meta) == 0
}

/// A value, or the flight that is loading it.
///
/// The flight is the leader's: the slot points to it without holding a
/// count (an `Arc` clone and its drop were two atomic read-modify-writes on
/// every miss). The leader's `Arc` keeps it alive while the slot is
/// `PENDING`: the leader gives its placeholder up (see `Placeholder`) only
/// under the lock, after the slot stopped being `PENDING` with its meta,
/// and only then lets go of the flight; the pointer of a slot in any other
/// state is never read.
pub(crate) union Payload<V> {
    ready: ManuallyDrop<V>,
    pending: *const Flight<V>,
}

/// What a reclaimed slot held; dropped by the writer that took the slot
/// back, before it takes the store's lock, so user `Drop` code never runs
/// under it.
pub(crate) enum Garbage<K, V> {
    Ready(#[allow(dead_code)] K, #[allow(dead_code)] V),
    /// A placeholder's key (its flight is its leader's).
    Pending(#[allow(dead_code)] K),
}

pub(crate) struct Slot<K, V> {
    /// State and generation; see the module docs.
    pub(crate) meta: AtomicU32,
    /// The upper 32 bits of the key's hash, to find the slot's table entry
    /// without hashing the key again (user code) under the lock.
    tag: UnsafeCell<u32>,
    key: UnsafeCell<MaybeUninit<K>>,
    payload: UnsafeCell<MaybeUninit<Payload<V>>>,
}

// SAFETY: the unsynchronized fields are written only by the lock holder, and
// only while no reader can observe them: before the slot is published through
// the table (Release) or, for a PENDING slot turning READY, before the state
// is stored (Release). Readers read them after an Acquire load of the table
// entry or the state, and a slot is reused only after an epoch grace period.
unsafe impl<K: Send, V: Send> Send for Slot<K, V> {}
// SAFETY: as above; and a shared slot hands out `&K` and `&V` to any
// thread (readers clone values in place), so both must be `Sync` too.
unsafe impl<K: Send + Sync, V: Send + Sync> Sync for Slot<K, V> {}

impl<K, V> Slot<K, V> {
    /// # Safety
    /// The slot is not `FREE` and cannot become so while the reference is
    /// used: the caller is pinned since it found the slot, holds the lock,
    /// or holds retired slots (`Reclaimed::hold`).
    #[inline]
    pub(crate) unsafe fn key(&self) -> &K {
        // SAFETY: initialized when not FREE, and only written again after
        // the slot is taken back (the contract keeps that from happening).
        unsafe { (*self.key.get()).assume_init_ref() }
    }

    /// # Safety
    /// As [`key`](Self::key), and the slot is `READY`, `STALE`, `HELD` or
    /// `RETIRED_READY`.
    #[inline]
    pub(crate) unsafe fn value(&self) -> &V {
        // SAFETY: the `ready` payload is initialized in these states, and
        // not written until the slot is taken back.
        unsafe { &(*self.payload.get()).assume_init_ref().ready }
    }

    /// # Safety
    /// The lock is held and the slot is `PENDING`: its leader gives the
    /// placeholder up only under the lock, once the slot is no longer
    /// `PENDING` with its meta, and keeps the flight alive until then (see
    /// [`Payload`]).
    #[inline]
    pub(crate) unsafe fn flight(&self) -> &Flight<V> {
        // SAFETY: the `pending` payload is initialized while PENDING, the
        // lock keeps it so, and it points to a live flight (the contract).
        unsafe { &*(*self.payload.get()).assume_init_ref().pending }
    }

    /// A handle on the flight, for a caller that joins the load.
    ///
    /// # Safety
    /// As [`flight`](Self::flight).
    #[inline]
    pub(crate) unsafe fn join(&self) -> Arc<Flight<V>> {
        // SAFETY: the pointer came from `Arc::as_ptr` (`Filling::Pending`),
        // and the leader's `Arc` is alive (the contract), so its count is
        // at least one while this one is added.
        unsafe {
            let flight = (*self.payload.get()).assume_init_ref().pending;
            Arc::increment_strong_count(flight);
            Arc::from_raw(flight)
        }
    }

    /// # Safety
    /// As [`key`](Self::key).
    #[inline]
    pub(crate) unsafe fn tag(&self) -> u32 {
        // SAFETY: written before the slot was published, and not again
        // until it is taken back.
        unsafe { *self.tag.get() }
    }

    /// Fills a free slot and returns its new meta ([`TIMED`] if `timed`);
    /// the caller publishes it.
    ///
    /// A free slot is `FREE`, or, in a cache whose keys and values need no
    /// drop, still retired: the writer that took it back after its grace
    /// period left it as it was (one cache miss fewer than marking it
    /// `FREE`), and its next generation starts here.
    ///
    /// # Safety
    /// Lock held; the slot came from the free list (or was never used),
    /// and is unreachable by readers.
    pub(crate) unsafe fn fill(&self, tag: u32, key: K, payload: Filling<V>, timed: bool) -> u32 {
        let meta = self.meta.load(Ordering::Relaxed);
        let meta = match state(meta) {
            FREE => meta,
            _ => {
                debug_assert!(!std::mem::needs_drop::<(K, V)>());
                debug_assert!(matches!(state(meta), RETIRED_READY | RETIRED_PENDING));
                next_generation(meta)
            }
        };
        let (payload, new_state) = match payload {
            Filling::Ready(value) => (Payload { ready: ManuallyDrop::new(value) }, READY),
            Filling::Pending(flight) => (Payload { pending: flight }, PENDING),
        };
        // SAFETY: FREE and unreachable (the contract): nobody reads these
        // fields until the Release store below publishes them.
        unsafe {
            *self.tag.get() = tag;
            (*self.key.get()).write(key);
            (*self.payload.get()).write(payload);
        }
        let meta = with_state(meta, new_state) | if timed { TIMED } else { 0 };
        self.meta.store(meta, Ordering::Release);
        meta
    }

    /// Turns a `PENDING` slot `READY` (or `STALE`: `to`) in place,
    /// [`TIMED`] if `timed`; returns its new meta.
    ///
    /// # Safety
    /// Lock held, slot `PENDING`. Readers never read the payload of a `PENDING`
    /// slot without the lock, and the state is stored last (Release).
    pub(crate) unsafe fn resolve(&self, value: V, to: u32, timed: bool) -> u32 {
        let meta = self.meta.load(Ordering::Relaxed);
        debug_assert_eq!(state(meta), PENDING);
        // SAFETY: PENDING: the payload is a pointer, nothing to drop; with
        // the lock held nobody else reads it, and readers without the lock
        // read `ready` only after the Release store below makes it READY.
        unsafe { (*self.payload.get()).write(Payload { ready: ManuallyDrop::new(value) }) };
        debug_assert!(to == READY || to == STALE);
        let meta = with_state(meta, to) | if timed { TIMED } else { 0 };
        self.meta.store(meta, Ordering::Release);
        meta
    }

    /// Moves a slot holding a value between `READY`, `STALE` and `HELD`
    /// (same payload, same generation) and returns its new meta. Lock held.
    /// Readers that found it before may still clone its value.
    pub(crate) fn shift(&self, to: u32) -> u32 {
        let meta = self.meta.load(Ordering::Relaxed);
        debug_assert!(matches!(state(meta), READY | STALE | HELD) && matches!(to, READY | STALE | HELD));
        let meta = with_state(meta, to);
        self.meta.store(meta, Ordering::Release);
        meta
    }

    /// Marks a published slot as removed; readers that already found it may
    /// still read it until the grace period ends. Returns whether it may be
    /// used again (see [`exhausted`]).
    pub(crate) fn retire(&self) -> bool {
        let meta = self.meta.load(Ordering::Relaxed);
        let retired = match state(meta) {
            READY | STALE | HELD => RETIRED_READY,
            PENDING => RETIRED_PENDING,
            other => unreachable!("retiring a slot in state {other}"),
        };
        self.meta.store(with_state(meta, retired), Ordering::Release);
        !exhausted(next_generation(meta))
    }

    /// Moves the contents out of a slot and marks it `FREE`, one generation
    /// on. Runs no user code.
    ///
    /// # Safety
    /// Nobody else can reach the slot: it is retired and its grace period
    /// has ended, and the caller alone took it back (or the store is being
    /// destroyed, through `&mut`).
    pub(crate) unsafe fn take(&self) -> Option<Garbage<K, V>> {
        let meta = self.meta.load(Ordering::Relaxed);
        // SAFETY: the state says which fields are initialized; nobody else
        // can reach the slot (the contract), and it is marked FREE below, so
        // the contents moved out are never read or dropped again.
        let garbage = unsafe {
            match state(meta) {
                READY | STALE | HELD | RETIRED_READY => {
                    let key = (*self.key.get()).assume_init_read();
                    let mut payload = (*self.payload.get()).assume_init_read();
                    Some(Garbage::Ready(key, ManuallyDrop::take(&mut payload.ready)))
                }
                PENDING | RETIRED_PENDING => Some(Garbage::Pending((*self.key.get()).assume_init_read())),
                _ => None,
            }
        };
        self.meta.store(next_generation(meta), Ordering::Relaxed);
        garbage
    }
}

/// What a slot is filled with.
pub(crate) enum Filling<V> {
    Ready(V),
    /// A placeholder, pointing to its leader's flight (from `Arc::as_ptr`).
    Pending(*const Flight<V>),
}

#[cold]
#[inline(never)]
fn never_allocated(idx: u32) -> ! {
    panic!("async-cache: slot {idx} was never allocated (a bug)")
}

/// log2 of the first segment's length.
const FIRST_BITS: u32 = 5;
/// Enough segments for every index a table entry can encode (< 2^32 - 32),
/// plus one that is never allocated: [`locate`] maps every `u32` to a
/// segment below this, so [`Slab::get`] indexes without a bounds check.
pub(crate) const SEGMENTS: usize = 33 - FIRST_BITS as usize;
/// The first index the slab cannot hold.
pub(crate) const MAX_SLOTS: u64 = (1u64 << 32) - (1 << FIRST_BITS);

#[inline]
pub(crate) fn locate(idx: u32) -> (usize, usize) {
    let x = idx as u64 + (1 << FIRST_BITS);
    let segment = 63 - x.leading_zeros() - FIRST_BITS;
    (segment as usize, (x - (1u64 << (segment + FIRST_BITS))) as usize)
}

/// How many slots segment `segment` holds.
#[inline]
pub(crate) fn segment_len(segment: usize) -> usize {
    1 << (segment as u32 + FIRST_BITS)
}

#[inline]
fn segment_layout<K, V>(segment: usize) -> Layout {
    Layout::array::<Slot<K, V>>(segment_len(segment)).expect("slab segment size overflows")
}

pub(crate) struct Slab<K, V> {
    segments: [AtomicPtr<Slot<K, V>>; SEGMENTS],
    /// The slab owns its slots: without this, the `AtomicPtr`s would make
    /// it (and so `Cache<K, V>`) `Send + Sync` for every `K` and `V`,
    /// `Rc` included. With it the slab is `Send`/`Sync` exactly when
    /// `Slot<K, V>` is.
    _owns: PhantomData<Slot<K, V>>,
}

impl<K, V> Slab<K, V> {
    pub(crate) fn new() -> Self {
        Slab { segments: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())), _owns: PhantomData }
    }

    /// Slot `idx`, which [`Slab::ensure`] allocated.
    ///
    /// # Panics
    ///
    /// If it did not (a bug): the check keeps this function safe for any
    /// index, at the cost of one predictable branch.
    #[inline]
    pub(crate) fn get(&self, idx: u32) -> &Slot<K, V> {
        let (segment, offset) = locate(idx);
        // SAFETY: `idx + 32 < 2^33`, so `segment <= 32 - FIRST_BITS`, which
        // is below `SEGMENTS`.
        let base = unsafe { self.segments.get_unchecked(segment) }.load(Ordering::Acquire);
        if base.is_null() {
            never_allocated(idx);
        }
        // SAFETY: the segment was allocated zeroed by `ensure` (a zeroed
        // slot is a valid FREE one) and holds `offset`; the Acquire load
        // pairs with its Release store; segments are only freed by `destroy`,
        // which takes `&mut self`.
        unsafe { &*base.add(offset) }
    }

    /// Makes sure the segment holding `idx` exists. Called under the lock.
    pub(crate) fn ensure(&self, idx: u32) {
        assert!((idx as u64) < MAX_SLOTS, "async-cache holds at most {MAX_SLOTS} entries");
        let (segment, _) = locate(idx);
        if self.segments[segment].load(Ordering::Relaxed).is_null() {
            let layout = segment_layout::<K, V>(segment);
            // SAFETY: a zeroed `Slot` is valid: meta 0 is `FREE` generation 0,
            // and the other fields are plain data or `MaybeUninit`.
            let ptr = unsafe { alloc::alloc_zeroed(layout) }.cast::<Slot<K, V>>();
            if ptr.is_null() {
                alloc::handle_alloc_error(layout);
            }
            // A model checker's atomics are not valid zeroed: make them.
            #[cfg(shuttle)]
            for offset in 0..segment_len(segment) {
                // SAFETY: within the segment, not yet shared.
                unsafe { ptr::addr_of_mut!((*ptr.add(offset)).meta).write(AtomicU32::new(0)) };
            }
            self.segments[segment].store(ptr, Ordering::Release);
        }
    }

    /// Drops every slot's contents below `high` and frees the segments.
    ///
    /// # Safety
    /// No reader or writer may use the slab afterwards.
    pub(crate) unsafe fn destroy(&mut self, high: u32) {
        for idx in 0..high {
            // SAFETY: `&mut self`: no reader or writer is left.
            drop(unsafe { self.get(idx).take() });
        }
        for (segment, ptr) in self.segments.iter_mut().enumerate() {
            let ptr = *ptr.get_mut();
            if !ptr.is_null() {
                // SAFETY: allocated in `ensure` with this layout.
                unsafe { alloc::dealloc(ptr.cast(), segment_layout::<K, V>(segment)) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_map_to_segments_without_gaps() {
        let mut expected = (0usize, 0usize);
        for idx in 0..10_000u32 {
            assert_eq!(locate(idx), expected, "index {idx}");
            expected.1 += 1;
            if expected.1 == 1 << (expected.0 as u32 + FIRST_BITS) {
                expected = (expected.0 + 1, 0);
            }
        }
        let (segment, offset) = locate((MAX_SLOTS - 1) as u32);
        assert_eq!(segment, SEGMENTS - 2);
        assert_eq!(locate(u32::MAX).0, SEGMENTS - 1, "the never-allocated segment");
        assert_eq!(offset, (1 << (segment as u32 + FIRST_BITS)) - 1);
    }

    #[test]
    fn a_new_generation_is_free_and_untimed_and_the_last_one_is_exhausted() {
        let meta = with_state(0, READY) | TIMED;
        assert!(timed(meta) && state(meta) == READY);
        // A state change keeps the bit; the generation ignores it.
        let retired = with_state(meta, RETIRED_READY);
        assert!(timed(retired));
        assert_eq!(generation(retired), generation(meta));
        let next = next_generation(retired);
        assert_eq!((state(next), timed(next)), (FREE, false));
        assert_ne!(generation(next), generation(meta));
        assert!(!exhausted(next));
        // The generation after the last wraps to the first: never reused.
        let last = GENERATION_MASK | TIMED | READY;
        assert!(exhausted(next_generation(last)));
    }

    #[test]
    fn a_slot_of_u64_to_u64_is_24_bytes() {
        // Meta, tag, key, value: a TTL deadline lives beside the slab.
        assert_eq!(std::mem::size_of::<Slot<u64, u64>>(), 24);
    }
}
