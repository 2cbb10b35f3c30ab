//! Bad files: every damaged, foreign or newer file is a typed error, never a
//! panic or a large allocation; the file is left byte for byte as it was,
//! and the cache keeps working.

use std::path::Path;

use async_cache::{BackendError, Cache, FileBackend};
use common::{load_bad, runtime};
use proptest::prelude::*;

mod common;

/// A small, valid snapshot file's bytes.
fn small_snapshot(rt: &tokio::runtime::Runtime, dir: &Path) -> Vec<u8> {
    let path = dir.join("good.cache");
    rt.block_on(async {
        let cache = Cache::<u64, String>::new(10);
        cache.insert(1, "one".into());
        cache.insert_with_ttl(2, "two".into(), Some(std::time::Duration::from_secs(60)));
        cache.insert(3, "three".into());
        cache.save_to_backend(&FileBackend::new(&path)).await.unwrap();
    });
    std::fs::read(path).unwrap()
}

fn is_typed(error: &BackendError) -> bool {
    matches!(error, BackendError::Corrupt { .. } | BackendError::UnsupportedVersion { .. })
}

#[test]
fn truncation_at_every_length_is_corrupt() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let good = small_snapshot(&rt, dir.path());
    for len in 0..good.len() {
        let error = load_bad(&rt, dir.path(), &good[..len]);
        assert!(matches!(error, BackendError::Corrupt { .. }), "length {len}: {error}");
    }
}

#[test]
fn every_single_bit_flip_is_a_typed_error() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let good = small_snapshot(&rt, dir.path());
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let error = load_bad(&rt, dir.path(), &bad);
        assert!(is_typed(&error), "bit {bit}: {error}");
    }
}

#[test]
fn an_empty_file_and_garbage_are_corrupt() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    assert!(load_bad(&rt, dir.path(), b"").to_string().contains("empty"));
    for garbage in [
        &b"hello, world"[..],
        &[0u8; 64],
        &[0xff; 4096],
        b"ASYNCACH",
        b"SQLite format 3\0 and more bytes than a header",
    ] {
        let error = load_bad(&rt, dir.path(), garbage);
        assert!(matches!(error, BackendError::Corrupt { .. }), "{error}");
    }
}

#[test]
fn a_newer_format_version_is_unsupported() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut newer = small_snapshot(&rt, dir.path());
    // As a newer build would write it: its own checksum over its header.
    newer[8..12].copy_from_slice(&7u32.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&newer[..28]);
    crc.update(&newer[32..]);
    newer[28..32].copy_from_slice(&crc.finalize().to_le_bytes());
    let error = load_bad(&rt, dir.path(), &newer);
    assert!(matches!(error, BackendError::UnsupportedVersion { found: 7, supported: 2, .. }), "{error}");
    assert!(error.to_string().contains("upgrade"), "says what to do: {error}");
}

#[test]
fn leftover_temporary_files_are_ignored_then_cleaned() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.cache");
    let leftover = dir.path().join(".users.cache.crashed.tmp");
    std::fs::write(&leftover, b"half a snapshot").unwrap();
    let unrelated = dir.path().join("other.tmp");
    std::fs::write(&unrelated, b"not ours").unwrap();
    rt.block_on(async {
        let backend = FileBackend::new(&path);
        let cache = Cache::<u64, u64>::new(10);
        assert_eq!(cache.load_from_backend(&backend).await.unwrap().loaded, 0, "ignored by a load");
        cache.insert(1, 1);
        cache.save_to_backend(&backend).await.unwrap();
    });
    assert!(!leftover.exists(), "cleaned by the next save");
    assert!(unrelated.exists(), "other files are not touched");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temporary file left behind: {names:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the cache held, a save then a load gives it back.
    #[test]
    fn snapshots_round_trip(entries in prop::collection::btree_map(any::<u32>(), ".{0,40}", 0..200)) {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::new(dir.path().join("p.cache"));
        let loaded = rt.block_on(async {
            let cache = Cache::<u32, String>::new(1_000);
            for (k, v) in &entries {
                cache.insert(*k, v.clone());
            }
            cache.save_to_backend(&backend).await.unwrap();
            let back = Cache::<u32, String>::new(1_000);
            back.load_from_backend(&backend).await.unwrap();
            back
        });
        prop_assert_eq!(loaded.len(), entries.len());
        for (k, v) in &entries {
            prop_assert_eq!(loaded.peek(k), Some(v.clone()));
        }
    }

    /// Random damage anywhere is a typed error (or, were the checksum to
    /// collide, a valid load): never a panic.
    #[test]
    fn random_damage_is_a_typed_error(
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        truncate in any::<Option<prop::sample::Index>>(),
    ) {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let mut bad = small_snapshot(&rt, dir.path());
        for (at, byte) in &cuts {
            let i = at.index(bad.len());
            bad[i] ^= byte | 1;
        }
        if let Some(at) = truncate {
            bad.truncate(at.index(bad.len()));
        }
        let error = load_bad(&rt, dir.path(), &bad);
        prop_assert!(is_typed(&error), "{}", error);
    }
}
