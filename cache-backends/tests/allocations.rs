//! A save allocates less than once per record: the cache packs its records
//! into one buffer (`PackedRecords`), and each backend writes from it; and
//! a load reads them back into one buffer, which the cache decodes from. In a
//! binary of its own, with a global allocator that counts every thread's
//! allocations (the save encodes on the blocking pool), and one test, so
//! that nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use async_cache::{Backend, Cache, FileBackend, SledBackend, SqliteBackend};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// count is a static atomic, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as `GlobalAlloc::realloc` requires.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const RECORDS: u64 = 100_000;

/// Allocations per record of one save of a full cache to `backend`, and
/// of one load of that snapshot into a fresh cache.
async fn per_record(backend: &impl Backend) -> (f64, f64) {
    let build = || -> Cache<u64, u64> {
        Cache::builder().max_size(RECORDS as usize).default_ttl(std::time::Duration::from_secs(3600)).build()
    };
    let cache = build();
    for i in 0..RECORDS {
        cache.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i);
    }
    // A first save opens files and trees: count the second.
    cache.save_to_backend(backend).await.unwrap();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let report = cache.save_to_backend(backend).await.unwrap();
    let saving = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(report.written, RECORDS as usize);
    let fresh = build();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let report = fresh.load_from_backend(backend).await.unwrap();
    let loading = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(report.loaded, RECORDS as usize);
    (saving as f64 / RECORDS as f64, loading as f64 / RECORDS as f64)
}

/// A load too: the records stay packed from the backend to the decoder
/// (values that are `u64`s allocate nothing of their own).
#[tokio::test(flavor = "current_thread")]
async fn a_save_and_a_load_allocate_less_than_once_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let file = per_record(&FileBackend::new(dir.path().join("c.cache"))).await;
    let sqlite = per_record(&SqliteBackend::open(dir.path().join("c.sqlite")).unwrap()).await;
    let sled = per_record(&SledBackend::open(dir.path().join("c.sled")).unwrap()).await;
    println!("allocations per saved record: file {:.4}, SQLite {:.4}, sled {:.4}", file.0, sqlite.0, sled.0);
    println!("allocations per loaded record: file {:.4}, SQLite {:.4}, sled {:.4}", file.1, sqlite.1, sled.1);
    assert!(file.0 <= 0.01, "file: {} allocations per saved record", file.0);
    assert!(sqlite.0 <= 1.0, "SQLite: {} allocations per saved record", sqlite.0);
    assert!(sled.0 <= 1.0, "sled: {} allocations per saved record", sled.0);
    for (name, (_, load)) in [("file", file), ("SQLite", sqlite), ("sled", sled)] {
        assert!(load <= 0.1, "{name}: {load} allocations per loaded record");
    }
}
