//! The bridge from async-cache's counters to the `metrics` facade. Not
//! intended to be used directly: use `async_cache::metrics`.
