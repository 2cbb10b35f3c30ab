#![doc = include_str!("lib.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use cache_core::{
    BatchLoader, Batched, Cache, CacheBuilder, Metrics, WARMUP_CONCURRENCY, async_trait,
};

#[cfg(feature = "macros")]
#[doc = include_str!("cached.md")]
pub use cache_macros::cached;

/// What `#[cached]`-generated code calls; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use cache_core::__private::*;
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
