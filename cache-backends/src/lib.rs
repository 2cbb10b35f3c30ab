//! Persistence backends for async-cache. Not intended to be used directly:
//! use `async_cache::backends`.
