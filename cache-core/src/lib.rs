//! The engine of [async-cache](https://docs.rs/async-cache): the LRU/TTL
//! store, single-flight loading, batching, warmup and counters.
//!
//! Not intended to be used directly: depend on `async-cache`, which
//! re-exports everything here that users need.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(hidden)]
#[path = "macro_support.rs"]
pub mod __private;
mod batch;
mod builder;
mod cache;
mod fetch;
mod flight;
mod listen;
mod load;
mod observe;
#[cfg(feature = "persist")]
mod persist;
mod stats;
mod store;
mod sync;
#[cfg(feature = "tier")]
mod tier;
mod time;
mod warmup;

pub use crate::batch::{BatchLoader, Batched};
pub use crate::builder::{CacheBuilder, Policy};
pub use crate::cache::{Cache, WeakCache};
pub use crate::listen::RemovalCause;
pub use crate::observe::{LoadEvent, LoadOutcome, ObserverId};
#[cfg(feature = "persist")]
pub use crate::persist::{
    AutosaveHandle, Backend, BackendError, LoadReport, MalformedRecord, PackedRecords, PackedSnapshot, PackedStream,
    Record, RecordRef, SaveReport, Snapshot,
};
pub use crate::stats::Metrics;
#[cfg(feature = "tier")]
pub use crate::tier::{PutKind, Replica, Tier, TierFault, TierWrite};
pub use crate::warmup::WARMUP_CONCURRENCY;

/// The hasher a [`Cache`] uses unless [`CacheBuilder::hasher`] sets
/// another: foldhash's, seeded per cache. Fast, and fine for keys you
/// trust; for keys an attacker picks, choose a keyed hash (std's
/// `RandomState`) with [`CacheBuilder::hasher`].
pub type DefaultHasher = foldhash::fast::RandomState;

/// Re-exported for implementing [`BatchLoader`] and `Backend`.
pub use async_trait::async_trait;
