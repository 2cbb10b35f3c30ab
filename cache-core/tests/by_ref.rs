//! `get_or_load_by_ref`: a `String`-keyed hit through a `&str` allocates
//! nothing. In a binary of its own, with a global allocator that counts
//! this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cache_core::Cache;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// count is a const-initialized thread-local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made on this thread while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn a_string_keyed_hit_through_a_str_allocates_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let cache = Cache::<String, u64>::new(100);
    runtime.block_on(async {
        assert_eq!(cache.get_or_load_by_ref("ada", || async { 7 }).await, 7);
        assert_eq!(cache.try_get_or_load_by_ref("grace", || async { Ok::<_, ()>(8) }).await, Ok(8));
        // Warm: the first replay of buffered reads sizes a buffer once.
        for _ in 0..200 {
            cache.get_or_load_by_ref("ada", || async { 0 }).await;
        }
    });
    let by_ref = allocations(|| {
        runtime.block_on(async {
            for _ in 0..1_000 {
                assert_eq!(cache.get_or_load_by_ref("ada", || async { 0 }).await, 7);
                assert_eq!(cache.try_get_or_load_by_ref("grace", || async { Err::<u64, ()>(()) }).await, Ok(8));
            }
        })
    });
    assert_eq!(by_ref, 0, "hits through a borrowed key allocated");
    // The owned-key call makes a `String` per hit: the count above would see it.
    let owned = allocations(|| {
        runtime.block_on(async {
            for _ in 0..1_000 {
                assert_eq!(cache.get_or_load("ada".to_string(), || async { 0 }).await, 7);
            }
        })
    });
    assert!(owned >= 1_000, "{owned}");
    let m = cache.metrics();
    assert_eq!((m.hits, m.misses, m.loads), (3_200, 2, 2), "counted once per call, as get_or_load counts");
}
