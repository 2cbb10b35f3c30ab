//! The locks the engine's state machines synchronize on.
//!
//! Under `cfg(shuttle)` (the `cache-core-shuttle` model-test build) they are
//! shuttle's, so its scheduler can interleave every lock acquisition, and so
//! are the atomics of the lock-free read path (table words, slot metas, shard
//! and segment pointers): a schedule may switch threads at each of their
//! loads and stores. Shuttle runs them sequentially consistent; the weaker
//! orderings the engine uses are argued where they are used. Atomics that
//! only count, or that are only touched under a std lock, stay std's.

#[cfg(shuttle)]
pub(crate) use shuttle::sync::{Mutex, MutexGuard};
#[cfg(not(shuttle))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poison: every critical section in the engine either
/// completes its mutation or runs user code before mutating anything, so a
/// panic while the lock is held never leaves half-done state behind.
#[inline]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The atomics of the lock-free read path.
pub(crate) mod atomic {
    #[cfg(shuttle)]
    pub(crate) use shuttle::sync::atomic::{AtomicPtr, AtomicU32};
    #[cfg(not(shuttle))]
    pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU32};
}
