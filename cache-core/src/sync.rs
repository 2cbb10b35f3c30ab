//! The locks the engine's state machines synchronize on.
//!
//! Under `cfg(shuttle)` (the `cache-core-shuttle` model-test build) they are
//! shuttle's, so its scheduler can interleave every lock acquisition. Atomics
//! stay std's: the lock-free read path is checked by the stress tests instead.

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
