//! Memory reclamation: what waits on the engine's grace periods
//! ([`epoch`]).
//!
//! Readers pin while they hold a table or a slot they found without the
//! lock. A removed slot is *retired* (by the lock holder), deferred in
//! batches, and once every reader that could have seen it has unpinned, the
//! deferred function lists it in [`Reclaimed`]; the next write takes it back (`Store::take_back`),
//! dropping its contents before it locks (a panic there is caught). A table
//! swapped out for a larger or cleaner one is freed the same way.
//!
//! The proofs that a table read without the lock stays allocated are types:
//! [`Pinned`] (made only by [`pin`]) and [`Locked`] (reachable only through
//! the store's lock).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::epoch::{self, Guard};
use super::table::Table;

/// Proof that a table pointer loaded now stays allocated while the proof
/// is borrowed: see [`Store::table`](super::Store::table).
pub(super) trait Protects {}

/// A pin of the engine's grace periods.
pub(super) struct Pinned(Guard);

impl Protects for Pinned {}

impl Pinned {
    /// The pinned thread's number: see [`Guard::thread`].
    #[inline]
    pub(super) fn thread(&self) -> usize {
        self.0.thread()
    }
}

/// The lock is held: a field of the lock-protected policy, made only when
/// the store is built, so a `&Locked` comes from under the lock (or from
/// `&mut Store`).
#[derive(Debug)]
pub(super) struct Locked(());

impl Locked {
    pub(super) fn new() -> Self {
        Locked(())
    }
}

impl Protects for Locked {}

/// Pins the calling thread: see [`epoch`]. The engine's own
/// grace periods, not crossbeam's process-wide collector: a pin or flush
/// there may run anybody's queued destructors (moka's, for one), so a cache
/// write could end up dropping another library's entries.
#[inline]
pub(super) fn pin() -> Pinned {
    Pinned(epoch::pin())
}

/// Runs `f` once every reader pinned now has unpinned (in a later
/// [`flush`]), and tries to end grace periods now.
pub(super) fn defer_and_flush(f: impl FnOnce() + Send + 'static) {
    epoch::defer(f);
    epoch::flush();
}

/// Runs what ended grace periods deferred, and starts the next one.
pub(super) fn flush() {
    epoch::flush();
}

/// A table pointer handed to the thread that frees it.
struct Unlinked(NonNull<Table>);

// SAFETY: the table is unreachable from the store and freed exactly once,
// by whichever thread ends its grace period; nothing else touches it.
unsafe impl Send for Unlinked {}

impl Unlinked {
    /// # Safety
    ///
    /// Once, after every reader that may still be probing it unpinned.
    unsafe fn free(self) {
        // SAFETY: from `Table::alloc`, and the caller's promise.
        unsafe { Table::free(self.0) }
    }
}

/// Frees a table no longer reachable from the store once every reader that
/// may still be probing it has unpinned.
pub(super) fn retire_table(table: NonNull<Table>) {
    let table = Unlinked(table);
    // Handed over now: a cache that only grows pins rarely, and old tables
    // would otherwise wait, adding to its peak memory.
    // SAFETY: unreachable from the store (swapped out by the lock holder);
    // a reader still in it was pinned before the swap, so its grace period
    // ends only after that reader unpinned; a deferred function runs once.
    defer_and_flush(move || unsafe { table.free() });
}

/// Slots whose grace period has ended, waiting to be taken back. Filled by
/// the epoch's deferred functions, which may run on any thread: a plain std
/// lock, never held while pinning.
#[derive(Debug, Default)]
pub(super) struct Reclaimed {
    slots: std::sync::Mutex<Vec<u32>>,
    any: AtomicBool,
    /// Snapshots reading retired slots without a pin (see `hold`).
    held: AtomicUsize,
}

impl Reclaimed {
    pub(super) fn add(&self, slots: Vec<u32>) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).extend(slots);
        self.any.store(true, Ordering::Release);
    }

    /// Whether [`take`](Self::take) may find anything: slots are waiting
    /// and no snapshot holds them. A hint, read without the lock; `take`
    /// decides.
    #[inline]
    pub(super) fn ready(&self) -> bool {
        self.any.load(Ordering::Acquire) && self.held.load(Ordering::Relaxed) == 0
    }

    /// The slots to take back; none while a snapshot holds them.
    pub(super) fn take(&self) -> Vec<u32> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // Read under the lock `add` takes: a slot that a snapshot picked was
        // retired after the snapshot counted itself in (both under the
        // store's lock), so it is added here only after that count.
        if self.held.load(Ordering::Acquire) > 0 {
            return Vec::new();
        }
        self.any.store(false, Ordering::Relaxed);
        std::mem::take(&mut *slots)
    }

    /// Keeps retired slots (and so their contents) from being taken back
    /// until the returned guard is dropped.
    pub(super) fn hold(&self) -> Held<'_> {
        self.held.fetch_add(1, Ordering::AcqRel);
        Held(self)
    }
}

/// See [`Reclaimed::hold`].
pub(super) struct Held<'a>(&'a Reclaimed);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Drops what the engine took out of the cache on its own (reclaimed
/// slots, values not stored). Their `Drop` is user code that belongs to no
/// caller in particular: a panic in it is caught here (the panic hook has
/// reported it) instead of unwinding through an unrelated operation, where
/// it could strand a load half-way through its protocol. The items after a
/// panicking one are still dropped; one `catch_unwind` covers the batch.
pub(super) fn drop_quietly<I: IntoIterator>(garbage: I) {
    let mut rest = garbage.into_iter();
    while std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rest.by_ref().for_each(drop))).is_err() {}
}
