//! A forged length of 2^40 in a snapshot: refused without allocating
//! anything like it. In a binary of its own, so the allocation count is
//! not disturbed by other tests running at the same time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use async_cache::BackendError;
use common::{load_bad, runtime};

mod common;

/// Counts live heap bytes and their peak, to show a load never allocates
/// what a forged length asks for.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A file with a valid header and checksum around a record whose key claims
/// 2^40 bytes, and a header claiming 2^40 bytes of records: both refused
/// without allocating anything like it.
#[test]
fn a_forged_length_of_2_pow_40_allocates_nothing_like_it() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // varint(2^40) as a key length, then three bytes.
    let payload = [0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 1, 2, 3];
    let mut forged = Vec::new();
    forged.extend_from_slice(b"ASYNCACH");
    forged.extend_from_slice(&1u32.to_le_bytes());
    forged.extend_from_slice(&1u64.to_le_bytes());
    forged.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&forged);
    crc.update(&payload);
    forged.extend_from_slice(&crc.finalize().to_le_bytes());
    forged.extend_from_slice(&payload);

    let mut huge_header = forged.clone();
    huge_header[20..28].copy_from_slice(&(1u64 << 40).to_le_bytes());

    for bad in [forged, huge_header] {
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let error = load_bad(&rt, dir.path(), &bad);
        let grew = PEAK.load(Ordering::Relaxed) - before;
        assert!(matches!(error, BackendError::Corrupt { .. }), "{error}");
        assert!(grew < 1 << 20, "a forged length made the load allocate {grew} bytes");
    }
}

/// A sparse file of 1 GiB (a few KiB on disk) whose header announces all of
/// it: refused as damaged without allocating anything like its size.
#[test]
fn a_huge_sparse_file_is_refused_without_allocating_its_size() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.cache");
    let size: u64 = 1 << 30;
    let mut header = Vec::new();
    header.extend_from_slice(b"ASYNCACH");
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&1u64.to_le_bytes());
    header.extend_from_slice(&(size - 32).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    std::fs::write(&path, &header).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(size).unwrap();

    let cache = async_cache::Cache::<u64, String>::new(10);
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let error = rt.block_on(cache.load_from_backend(&async_cache::FileBackend::new(&path))).unwrap_err();
    let grew = PEAK.load(Ordering::Relaxed) - before;
    assert!(matches!(error, BackendError::Corrupt { .. }), "{error}");
    assert!(grew < 1 << 20, "a sparse file made the load allocate {grew} bytes");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "the file was modified");
}
