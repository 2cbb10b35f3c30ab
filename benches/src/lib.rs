//! Benchmarks of async-cache beside moka and quick_cache.
