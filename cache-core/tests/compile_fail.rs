//! What must not compile: a cache of non-thread-safe keys or values shared
//! between threads.

#[test]
fn caches_of_non_thread_safe_types_are_not_send_or_sync() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}

#[test]
fn caches_of_thread_safe_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<cache_core::Cache<String, std::sync::Arc<Vec<u8>>>>();
    assert_send_sync::<cache_core::WeakCache<u64, u64>>();
}
