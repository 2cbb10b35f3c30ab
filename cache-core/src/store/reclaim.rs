//! Memory reclamation: the engine's epoch, and what waits on it.
//!
//! Readers pin the engine's own epoch collector while they hold a table or
//! a slot they found without the lock. A removed slot is *retired* (by the
//! lock holder), handed to the epoch in batches, and once every reader that
//! could have seen it has unpinned, the epoch's deferred function lists it
//! in [`Reclaimed`]; the next write takes it back (`Store::take_back`),
//! dropping its contents before it locks (a panic there is caught). A table
//! swapped out for a larger or cleaner one is freed the same way.
//!
//! The proofs that a table read without the lock stays allocated are types:
//! [`Pinned`] (made only by [`pin`]) and [`Locked`] (reachable only through
//! the store's lock).

use std::ptr::NonNull;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_epoch::{Collector, Guard, LocalHandle};

use super::table::Table;

/// Proof that a table pointer loaded now stays allocated while the proof
/// is borrowed: see [`Store::table`](super::Store::table).
pub(super) trait Protects {}

/// A pin of the engine's own collector.
pub(super) struct Pinned(Guard);

impl Protects for Pinned {}

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

impl Pinned {
    /// Hands the thread's deferred work to the collector and lets it
    /// advance the epoch.
    pub(super) fn flush(&self) {
        self.0.flush();
    }

    /// Runs `f` once every reader pinned now has unpinned.
    pub(super) fn defer(&self, f: impl FnOnce() + Send + 'static) {
        self.0.defer(f);
    }
}

/// Pins the engine's own epoch collector. Crossbeam's default collector is
/// shared by every user of it in the process (moka, for one), and a pin or
/// flush there may run anybody's queued destructors: a cache write could end
/// up dropping another library's entries, and its speed would depend on them.
pub(super) fn pin() -> Pinned {
    static COLLECTOR: LazyLock<Collector> = LazyLock::new(Collector::new);
    thread_local! {
        static HANDLE: LocalHandle = COLLECTOR.register();
    }
    // A thread whose locals are being destroyed pins through a handle of
    // its own (as crossbeam's default does).
    Pinned(HANDLE.try_with(LocalHandle::pin).unwrap_or_else(|_| COLLECTOR.register().pin()))
}

/// Frees a table no longer reachable from the store once every reader that
/// may still be probing it has unpinned.
pub(super) fn retire_table(table: NonNull<Table>) {
    let guard = pin();
    // SAFETY: unreachable from the store (swapped out by the lock holder);
    // a reader still in it was pinned before the swap, so the epoch runs
    // this only after it unpinned. Not `Send`-checked (`NonNull`), but run
    // once, by whichever thread collects, on memory nobody else touches.
    unsafe { guard.0.defer_unchecked(move || Table::free(table)) };
    // Hand it to the collector now: a cache that only grows pins rarely, and
    // old tables would otherwise wait, adding to its peak memory.
    guard.flush();
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
    #[cfg(feature = "persist")]
    pub(super) fn hold(&self) -> Held<'_> {
        self.held.fetch_add(1, Ordering::AcqRel);
        Held(self)
    }
}

/// See [`Reclaimed::hold`].
#[cfg(feature = "persist")]
pub(super) struct Held<'a>(&'a Reclaimed);

#[cfg(feature = "persist")]
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
