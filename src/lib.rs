#![doc = include_str!("lib.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use cache_core::{
    BatchLoader, Batched, Cache, CacheBuilder, DefaultHasher, LoadEvent, LoadOutcome, Metrics, ObserverId, Policy,
    RemovalCause, WARMUP_CONCURRENCY, WeakCache, async_trait,
};

#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
#[doc = include_str!("cached.md")]
pub use cache_macros::cached;

#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub use cache_backends::FileBackend;
#[cfg(feature = "sled")]
#[cfg_attr(docsrs, doc(cfg(feature = "sled")))]
pub use cache_backends::SledBackend;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use cache_backends::SqliteBackend;
#[cfg(feature = "persist")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "file", feature = "sled", feature = "sqlite"))))]
pub use cache_backends::{
    AutosaveHandle, Backend, BackendError, LoadReport, MalformedRecord, PackedRecords, PackedSnapshot, PackedStream,
    Record, RecordRef, SaveReport, Snapshot,
};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use cache_backends::{RedisTier, TierError};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use cache_core::{PutKind, Replica, Tier, TierFault, TierWrite};

/// Persistence: the [`Backend`] trait, its reports and errors, and the
/// backends enabled by the `file`, `sled` and `sqlite` features.
#[cfg(feature = "persist")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "file", feature = "sled", feature = "sqlite"))))]
pub mod backends {
    pub use cache_backends::*;
}

/// Metrics for Prometheus and friends: [`register`](metrics::register)
/// publishes a cache's counters to the `metrics` facade.
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics {
    pub use cache_metrics::*;
}

/// What `#[cached]`-generated code calls; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use cache_core::__private::*;
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
