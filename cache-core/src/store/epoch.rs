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
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, compiler_fence};

// The protocol's atomics and locks: loom's in the `cache_loom` model-test
// build (see `loom_tests`), whose domain lives inside each model.
#[cfg(cache_loom)]
use loom::sync::Mutex;
#[cfg(cache_loom)]
use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(cache_loom))]
use std::sync::Mutex;
#[cfg(not(cache_loom))]
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// A thread's pin count, read by flushes. Only its thread writes it, on
/// every pin: each record has cache lines of its own (128 bytes: adjacent-
/// line prefetchers pair lines), or two threads' pins would keep stealing
/// one line from each other.
#[derive(Debug)]
#[repr(align(128))]
pub(super) struct Record {
    /// Pins plus unpins so far: odd while pinned.
    state: AtomicU64,
    /// Its index in the registry: while a thread holds the record, no other
    /// thread has this number (see [`Guard::thread`]).
    id: usize,
}

impl Record {
    /// Marks the owner pinned. Then a full fence, or (`light`, when every
    /// flush issues `membarrier`) a compiler fence: either way the store
    /// comes before every load the pinned code makes, as far as a flush
    /// can tell (see the module doc). Free on x86: a plain store.
    #[inline]
    pub(super) fn enter(&self, light: bool) {
        if cfg!(miri) {
            // Miri's weak-memory emulation does not give SeqCst fences their
            // full C++20 meaning (miri issue #2301): it reports this
            // store-fence-load pattern as a race. Under Miri every change
            // of the state and every look at it by a flush is a
            // read-modify-write instead: a flush's look then synchronizes
            // with every later pin, whose read-modify-write reads from the
            // release sequence it heads. (The fence variant is what loom
            // checks: `loom_tests`.)
            self.state.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let state = self.state.load(Ordering::Relaxed);
        // Release, like the unpin: a flush that sees this pin's count has
        // seen the last pin end (its reads happened before), since it then
        // synchronizes with this store, not only with the unpin's. (Loom
        // found this: with a Relaxed store, a reader that pinned again
        // between a flush's two looks let it free what the first pin read.)
        self.state.store(state + 1, Ordering::Release);
        if light {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The state, as a flush sees it (after its side of the fence, when it
    /// starts a grace period). Acquire: pairs with `exit`'s Release.
    #[inline]
    fn observe(&self) -> u64 {
        if cfg!(miri) {
            // See `enter`: the last value in the modification order, and a
            // synchronization a later pin's read-modify-write reads from.
            return self.state.fetch_add(0, Ordering::SeqCst);
        }
        self.state.load(Ordering::Acquire)
    }

    /// Marks the owner unpinned. Release: what the pin read is done before
    /// a flush that sees it unpinned frees anything.
    #[inline]
    pub(super) fn exit(&self) {
        if cfg!(miri) {
            // See `enter`.
            self.state.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let state = self.state.load(Ordering::Relaxed);
        self.state.store(state + 1, Ordering::Release);
    }
}

/// A deferred function, run once its grace period ends.
pub(super) type Deferred = Box<dyn FnOnce() + Send>;

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

/// The records and the deferred work of one reclamation domain: the
/// engine's, process-wide (`DOMAIN`), or a model test's.
#[derive(Default)]
pub(super) struct Domain {
    registry: Mutex<Registry>,
    pending: Mutex<Pending>,
}

/// Locks `mutex`, ignoring poison: nothing here panics half-way through a
/// change (deferred functions run outside every lock).
#[cfg(not(cache_loom))]
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(cache_loom)]
fn lock<T>(mutex: &Mutex<T>) -> loom::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap()
}

impl Domain {
    /// A record for the calling thread: a free one, or a new one (never
    /// freed).
    pub(super) fn register(&self) -> &'static Record {
        let mut registry = lock(&self.registry);
        match registry.free.pop() {
            Some(record) => record,
            None => {
                let record: &'static Record =
                    Box::leak(Box::new(Record { state: AtomicU64::new(0), id: registry.all.len() }));
                registry.all.push(record);
                record
            }
        }
    }

    /// Gives back the record of a thread that exits (unpinned).
    pub(super) fn release(&self, record: &'static Record) {
        lock(&self.registry).free.push(record);
    }

    /// Runs `f` once every thread pinned now has unpinned: `f` frees memory
    /// unlinked before this call. `f` runs in a later [`flush`](Self::flush),
    /// on whichever thread calls it.
    pub(super) fn defer(&self, f: Deferred) {
        lock(&self.pending).next.push(f);
    }

    /// Runs what ended grace periods deferred (after unlocking), and starts
    /// a grace period for everything deferred since the last one if none is
    /// still running: one barrier per grace period, not per flush. `heavy`
    /// is the flush's side of the fence (`membarrier`, or a `SeqCst`
    /// fence). A thread that flushes while pinned holds its own grace
    /// period open until a later flush.
    pub(super) fn flush(&self, heavy: impl FnOnce()) {
        let ended = {
            let mut pending = lock(&self.pending);
            let mut ended = Vec::new();
            end_grace_periods(&mut pending.started, &mut ended);
            if pending.started.is_empty() && !pending.next.is_empty() {
                let batch = std::mem::take(&mut pending.next);
                // The unlinks of `batch` happened before its `defer` calls,
                // which happened before this (the lock).
                heavy();
                let pinned = lock(&self.registry)
                    .all
                    .iter()
                    .filter_map(|&record| {
                        let state = record.observe();
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
}

/// Moves what ended grace periods deferred into `ended`.
fn end_grace_periods(started: &mut Vec<GracePeriod>, ended: &mut Vec<Deferred>) {
    started.retain_mut(|(batch, pinned)| {
        // A record whose state changed has unpinned since: Acquire pairs
        // with the unpin's Release.
        pinned.retain(|(record, state)| record.observe() == *state);
        let over = pinned.is_empty();
        if over {
            ended.append(batch);
        }
        !over
    });
}

/// The engine's domain.
static DOMAIN: LazyLock<Domain> = LazyLock::new(Domain::default);

/// Whether flushes use `membarrier` (decided once, before any pin relies on
/// it: see [`LIGHT`]).
static MEMBARRIER: LazyLock<bool> = LazyLock::new(|| {
    let registered = membarrier::register();
    LIGHT.store(registered, std::sync::atomic::Ordering::Release);
    registered
});

/// Set once `membarrier` is registered: from then on every flush issues
/// it, so a pin may end with a compiler fence only. A pin that reads
/// `false` (not yet set) uses a full fence, which is always enough.
static LIGHT: AtomicBool = AtomicBool::new(false);

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
    /// Nested pins held.
    static NEST: Cell<u32> = const { Cell::new(0) };
    /// Gives the record back when the thread exits.
    static RELEASE: Release = const { Release };
}

/// Gives this thread's record back to the domain when the thread exits.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        if let Ok(Some(record)) = RECORD.try_with(Cell::take) {
            // Unpinned: a guard cannot outlive its thread.
            DOMAIN.release(record);
        }
    }
}

/// This thread's record, made or reused on its first pin.
#[cold]
fn register() -> &'static Record {
    // Decide the fence mode before this thread's first pin.
    LazyLock::force(&MEMBARRIER);
    let record = DOMAIN.register();
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
        record.enter(LIGHT.load(std::sync::atomic::Ordering::Relaxed));
    }
    Guard { thread: record.id, _not_send: PhantomData }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        let nest = NEST.get() - 1;
        NEST.set(nest);
        if nest == 0 {
            RECORD.get().expect("pinned, so registered").exit();
        }
    }
}

/// Runs `f` once every thread pinned now has unpinned: `f` frees memory
/// unlinked before this call. `f` runs in a later [`flush`], on whichever
/// thread calls it.
pub(super) fn defer(f: impl FnOnce() + Send + 'static) {
    DOMAIN.defer(Box::new(f));
}

/// Runs what ended grace periods deferred, and starts the next one: see
/// [`Domain::flush`].
pub(super) fn flush() {
    DOMAIN.flush(|| {
        if *MEMBARRIER {
            membarrier::barrier();
        } else {
            fence(Ordering::SeqCst);
        }
    });
}

#[cfg(all(test, not(cache_loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Defers counting one, then flushes ten times; the count.
    fn defer_a_count_and_flush() -> Arc<AtomicUsize> {
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&ran);
        defer(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        for _ in 0..10 {
            flush();
        }
        ran
    }

    /// Flushes until `done`, at most `tries` times.
    fn flush_until(done: impl Fn() -> bool, tries: usize) -> bool {
        (0..tries).any(|_| {
            flush();
            done()
        })
    }

    #[test]
    fn deferred_work_waits_for_every_pin_held_at_the_flush() {
        let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
        let (unpin_tx, unpin_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let guard = pin();
            pinned_tx.send(()).unwrap();
            unpin_rx.recv().unwrap();
            drop(guard);
        });
        pinned_rx.recv().unwrap();
        let ran = defer_a_count_and_flush();
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
        let ran = defer_a_count_and_flush();
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the outer pin still holds");
        drop(outer);
        assert!(flush_until(|| ran.load(Ordering::SeqCst) == 1, 100));
    }

    #[test]
    fn an_exited_thread_gives_its_record_back() {
        let before = lock(&DOMAIN.registry).all.len();
        for _ in 0..20 {
            std::thread::spawn(|| drop(pin())).join().unwrap();
        }
        let after = lock(&DOMAIN.registry).all.len();
        // Other tests' threads may register meanwhile; twenty threads in a
        // row reuse one record.
        assert!(after - before < 20, "{} records for 20 threads in a row", after - before);
    }
}

/// The protocol under loom, which runs every interleaving of the threads
/// below and every outcome the C11 memory model allows their atomics and
/// fences (with the fence variant of a pin: loom has no `membarrier`). A
/// reader pins, loads a pointer and reads what it points at; a writer
/// swaps the pointer, defers freeing the old target and flushes. The
/// "free" writes the target's cell: loom fails the test if that write can
/// race with the reader's read, that is if a grace period can end while a
/// reader that may hold the pointer is still pinned.
///
/// `RUSTFLAGS="--cfg cache_loom" cargo test -p cache-core --lib loom`
#[cfg(all(test, cache_loom))]
mod loom_tests {
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicPtr;

    use super::*;

    struct Target(UnsafeCell<u64>);

    fn free(target: *mut Target) {
        // SAFETY: the writer unlinked it; the grace period vouches that no
        // reader holds it (what this test checks); freed once.
        let target = unsafe { Box::from_raw(target) };
        target.0.with_mut(|v| unsafe { *v = 0 });
    }

    /// A reader (pinning `sessions` times in a row) racing a writer that
    /// retires what it reads, with `reader_flushes` flushes by the reader
    /// after each session.
    fn race(sessions: usize, reader_flushes: usize) {
        loom::model(move || {
            let domain: &'static Domain = Box::leak(Box::default());
            let shared = Arc::new(AtomicPtr::new(Box::into_raw(Box::new(Target(UnsafeCell::new(1))))));
            let reader = {
                let shared = Arc::clone(&shared);
                loom::thread::spawn(move || {
                    let record = domain.register();
                    for _ in 0..sessions {
                        record.enter(false);
                        let target = shared.load(Ordering::Acquire);
                        // SAFETY: loaded while pinned: not freed until we
                        // exit (loom checks it).
                        let value = unsafe { &*target }.0.with(|v| unsafe { *v });
                        assert!(value == 1 || value == 2, "read freed memory: {value}");
                        record.exit();
                        for _ in 0..reader_flushes {
                            domain.flush(|| fence(Ordering::SeqCst));
                        }
                    }
                })
            };
            let old = shared.swap(Box::into_raw(Box::new(Target(UnsafeCell::new(2)))), Ordering::AcqRel);
            let old = old as usize;
            domain.defer(Box::new(move || free(old as *mut Target)));
            domain.flush(|| fence(Ordering::SeqCst));
            reader.join().unwrap();
            // Whatever is left ends now: nobody is pinned.
            domain.flush(|| fence(Ordering::SeqCst));
            domain.flush(|| fence(Ordering::SeqCst));
            free(shared.load(Ordering::Acquire));
        });
    }

    #[test]
    fn loom_a_grace_period_never_ends_under_a_reader() {
        race(1, 0);
    }

    #[test]
    fn loom_a_reader_that_flushes_frees_only_after_it_unpinned() {
        race(1, 1);
    }

    /// A pin after the flush looked at the record (even, or pinned in an
    /// earlier session) must see the unlink: the fences' job.
    #[test]
    fn loom_a_reader_that_pins_again_never_sees_what_was_freed() {
        race(2, 0);
    }
}
