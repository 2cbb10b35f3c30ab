//! Helpers shared by the file-corruption tests.

use std::path::Path;

use async_cache::{BackendError, Cache, FileBackend};

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Loads `bytes` from a file: the error, after checking the file is
/// unchanged and the cache still works.
pub(crate) fn load_bad(rt: &tokio::runtime::Runtime, dir: &Path, bytes: &[u8]) -> BackendError {
    let path = dir.join("bad.cache");
    std::fs::write(&path, bytes).unwrap();
    let cache = Cache::<u64, String>::new(10);
    cache.insert(9, "kept".into());
    let error = rt.block_on(cache.load_from_backend(&FileBackend::new(&path))).expect_err("a bad file must not load");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file was modified");
    assert_eq!(cache.get(&9).as_deref(), Some("kept"), "the cache changed");
    cache.insert(10, "still works".into());
    assert_eq!(cache.len(), 2);
    let message = error.to_string();
    assert!(message.contains("bad.cache"), "the error names the file: {message}");
    error
}
