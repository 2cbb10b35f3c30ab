//! Grace periods: when memory a reader may still be reading can be freed.
//!
//! A reader *pins* before it loads anything it found without the lock and
//! unpins when done. Each thread has a record whose `state` counts its pins
//! and unpins: odd while pinned. Memory unlinked from the cache is handed
//! to [`defer`]; a later [`flush`] starts a grace period for everything
//! deferred so far by noting every record pinned at that moment, and the
//! deferred functions run once each of those records has moved on (that
//! pin ended). Nobody ever waits: a grace period that has not ended is
//! checked again at the next flush.
//!
//! The fences are asymmetric (as in Linux's userspace RCU and folly): on
//! Linux a pin is two stores and a compiler fence, and the flush pays for
//! both sides with one `membarrier(2)` call, which runs a full memory
//! barrier on every running thread of the process. The argument is
//! Dekker's: a reader stores its state, then loads a pointer; the flusher's
//! unlink happened before its barrier, which comes before it loads the
//! state. So either the flusher sees the reader pinned (and waits for it),
//! or the reader's load comes after the barrier and sees the unlink.
//! Where `membarrier` is unavailable (other systems, old kernels, Miri), a
//! pin ends with a `SeqCst` fence and the flush uses one too: the same
//! argument with fences on both sides, as crossbeam-epoch does it.
//!
//! Pins nest: only a thread's outermost pin touches its record. Records are
//! never freed: a thread that exits gives its record back for the next
//! thread to reuse (its count goes on, so a grace period can never mistake
//! a later pin for the one it waits on).

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, compiler_fence, fence};
use std::sync::{LazyLock, Mutex};

/// A thread's pin count, read by flushes.
#[derive(Debug, Default)]
struct Record {
    /// Pins plus unpins so far: odd while pinned.
    state: AtomicU64,
    /// Its index in the registry: while a thread holds the record, no other
    /// thread has this number (see [`Guard::thread`]).
    id: usize,
}

/// A deferred function, run once its grace period ends.
type Deferred = Box<dyn FnOnce() + Send>;

/// A started grace period: what it frees, and the records (with the state
/// they were pinned in) it waits on.
type GracePeriod = (Vec<Deferred>, Vec<(&'static Record, u64)>);

/// Everything deferred, by grace period.
#[derive(Default)]
struct Pending {
    /// Deferred since the last grace period started.
    next: Vec<Deferred>,
    started: Vec<GracePeriod>,
}

/// Every record ever made (in use or free), and the free ones.
#[derive(Default)]
struct Registry {
    all: Vec<&'static Record>,
    free: Vec<&'static Record>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { all: Vec::new(), free: Vec::new() });
static PENDING: LazyLock<Mutex<Pending>> = LazyLock::new(Mutex::default);

/// Whether flushes use `membarrier` (decided once, before any pin relies on
/// it: see [`LIGHT`]).
static MEMBARRIER: LazyLock<bool> = LazyLock::new(|| {
    let registered = membarrier::register();
    LIGHT.store(registered, Ordering::Release);
    registered
});

/// Set once `membarrier` is registered: from then on every flush issues
/// it, so a pin may end with a compiler fence only. A pin that reads
/// `false` (not yet set) uses a full fence, which is always enough.
static LIGHT: AtomicBool = AtomicBool::new(false);

/// Locks `mutex`, ignoring poison: nothing here panics half-way through a
/// change (deferred functions run outside every lock).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(all(target_os = "linux", not(miri)))]
mod membarrier {
    const QUERY: libc::c_int = 0;
    const PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    const REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

    fn call(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: membarrier(2) takes a command and two integer arguments
        // and touches no memory of ours.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_uint, 0 as libc::c_int) }
    }

    /// Registers the process for expedited private barriers; `false` if the
    /// kernel has none.
    pub(super) fn register() -> bool {
        let supported = call(QUERY);
        supported >= 0
            && supported & libc::c_long::from(PRIVATE_EXPEDITED) != 0
            && call(REGISTER_PRIVATE_EXPEDITED) == 0
    }

    /// A full memory barrier on every running thread of the process.
    pub(super) fn barrier() {
        // Registered (see `register`), so this cannot fail but by a kernel
        // bug; a failure must not be ignored, since pins rely on it.
        assert_eq!(call(PRIVATE_EXPEDITED), 0, "membarrier failed after registering");
    }
}

#[cfg(not(all(target_os = "linux", not(miri))))]
mod membarrier {
    pub(super) fn register() -> bool {
        false
    }

    pub(super) fn barrier() {
        unreachable!("never registered")
    }
}

thread_local! {
    /// This thread's record, once it has pinned.
    static RECORD: Cell<Option<&'static Record>> = const { Cell::new(None) };
    /// This thread's copy of its record's state (only it writes the record).
    static STATE: Cell<u64> = const { Cell::new(0) };
    /// Nested pins held.
    static NEST: Cell<u32> = const { Cell::new(0) };
    /// Gives the record back when the thread exits.
    static RELEASE: Release = const { Release };
}

/// Gives this thread's record back to the registry when the thread exits.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        if let Ok(Some(record)) = RECORD.try_with(Cell::take) {
            // Unpinned: a guard cannot outlive its thread.
            lock(&REGISTRY).free.push(record);
        }
    }
}

/// This thread's record, made or reused on its first pin.
#[cold]
fn register() -> &'static Record {
    // Decide the fence mode before this thread's first pin.
    LazyLock::force(&MEMBARRIER);
    let record = {
        let mut registry = lock(&REGISTRY);
        match registry.free.pop() {
            Some(record) => record,
            None => {
                let record: &'static Record =
                    Box::leak(Box::new(Record { state: AtomicU64::new(0), id: registry.all.len() }));
                registry.all.push(record);
                record
            }
        }
    };
    // Unpinned (even): go on from its count.
    STATE.set(record.state.load(Ordering::Relaxed));
    RECORD.set(Some(record));
    // A thread whose locals are being destroyed cannot register a release:
    // its record is then never reused, which only costs a few bytes.
    let _ = RELEASE.try_with(|_| ());
    record
}

/// A pin, held until dropped. Not `Send`: it is its thread's.
#[derive(Debug)]
pub(super) struct Guard {
    thread: usize,
    _not_send: PhantomData<*const ()>,
}

impl Guard {
    /// The pinned thread's number: small (threads that hold a record at
    /// once are numbered from 0 up), and no other live thread has it, so
    /// per-thread state indexed by it has one writer.
    #[inline]
    pub(super) fn thread(&self) -> usize {
        self.thread
    }
}

/// Pins the calling thread: memory unlinked after this and deferred is not
/// freed until the guard is dropped.
#[inline]
pub(super) fn pin() -> Guard {
    let nest = NEST.get();
    NEST.set(nest + 1);
    let record = RECORD.get().unwrap_or_else(register);
    if nest == 0 {
        let state = STATE.get() + 1;
        STATE.set(state);
        record.state.store(state, Ordering::Relaxed);
        // The store above comes before every load the pinned code makes
        // (see the module doc for why a compiler fence is enough with
        // membarrier).
        if LIGHT.load(Ordering::Relaxed) {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }
    Guard { thread: record.id, _not_send: PhantomData }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        let nest = NEST.get() - 1;
        NEST.set(nest);
        if nest == 0 {
            let state = STATE.get() + 1;
            STATE.set(state);
            let record = RECORD.get().expect("pinned, so registered");
            // Release: what the pin read is done before a flush that sees
            // it unpinned frees anything.
            record.state.store(state, Ordering::Release);
        }
    }
}

/// Runs `f` once every thread pinned now has unpinned: `f` frees memory
/// unlinked before this call. `f` runs in a later [`flush`], on whichever
/// thread calls it.
pub(super) fn defer(f: impl FnOnce() + Send + 'static) {
    lock(&PENDING).next.push(Box::new(f));
}

/// Runs what ended grace periods deferred (after unlocking), and starts a
/// grace period for everything deferred since the last one if none is
/// still running: one barrier per grace period, not per flush. A thread
/// that flushes while pinned holds its own grace period open until a later
/// flush.
pub(super) fn flush() {
    let ended = {
        let mut pending = lock(&PENDING);
        let mut ended = Vec::new();
        end_grace_periods(&mut pending.started, &mut ended);
        if pending.started.is_empty() && !pending.next.is_empty() {
            let batch = std::mem::take(&mut pending.next);
            // The unlinks of `batch` happened before its `defer` calls,
            // which happened before this (the lock).
            if *MEMBARRIER {
                membarrier::barrier();
            } else {
                fence(Ordering::SeqCst);
            }
            let pinned = lock(&REGISTRY)
                .all
                .iter()
                .filter_map(|&record| {
                    let state = record.state.load(Ordering::Acquire);
                    (state % 2 == 1).then_some((record, state))
                })
                .collect();
            pending.started.push((batch, pinned));
            // Most often nobody was pinned: it ends at once.
            end_grace_periods(&mut pending.started, &mut ended);
        }
        ended
    };
    for f in ended {
        f();
    }
}

/// Moves what ended grace periods deferred into `ended`.
fn end_grace_periods(started: &mut Vec<GracePeriod>, ended: &mut Vec<Deferred>) {
    started.retain_mut(|(batch, pinned)| {
        // A record whose state changed has unpinned since: Acquire pairs
        // with the unpin's Release.
        pinned.retain(|(record, state)| record.state.load(Ordering::Acquire) == *state);
        let over = pinned.is_empty();
        if over {
            ended.append(batch);
        }
        !over
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Flushes until `done`, at most `tries` times.
    fn flush_until(done: impl Fn() -> bool, tries: usize) -> bool {
        (0..tries).any(|_| {
            flush();
            done()
        })
    }

    #[test]
    fn deferred_work_waits_for_every_pin_held_at_the_flush() {
        let ran = Arc::new(AtomicUsize::new(0));
        let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
        let (unpin_tx, unpin_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let guard = pin();
            pinned_tx.send(()).unwrap();
            unpin_rx.recv().unwrap();
            drop(guard);
        });
        pinned_rx.recv().unwrap();
        let counter = Arc::clone(&ran);
        defer(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        for _ in 0..10 {
            flush();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0, "ran while a reader pinned before it was pinned");
        unpin_tx.send(()).unwrap();
        reader.join().unwrap();
        assert!(flush_until(|| ran.load(Ordering::SeqCst) == 1, 100), "never ran after the reader unpinned");
    }

    #[test]
    fn nested_pins_hold_until_the_outermost_ends() {
        let outer = pin();
        let inner = pin();
        drop(inner);
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&ran);
        defer(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        for _ in 0..10 {
            flush();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the outer pin still holds");
        drop(outer);
        assert!(flush_until(|| ran.load(Ordering::SeqCst) == 1, 100));
    }

    #[test]
    fn an_exited_thread_gives_its_record_back() {
        let before = lock(&REGISTRY).all.len();
        for _ in 0..20 {
            std::thread::spawn(|| drop(pin())).join().unwrap();
        }
        let after = lock(&REGISTRY).all.len();
        // Other tests' threads may register meanwhile; twenty threads in a
        // row reuse one record.
        assert!(after - before < 20, "{} records for 20 threads in a row", after - before);
    }
}
