#![doc = include_str!("lib.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use cache_core::{
    BatchLoader, Batched, Cache, CacheBuilder, Metrics, WARMUP_CONCURRENCY, async_trait,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
