//! The bridge from async-cache's counters to the [`metrics`] facade. Not
//! intended to be used directly: use `async_cache::metrics`.
//!
//! The hot path pays nothing for it: hits and misses stay plain counters in
//! the cache, and a reporter task publishes them (at once, then every
//! second or the interval given to [`register_every`], and whenever
//! [`MetricsReporter::publish`] is called), not one facade call per lookup. Load durations are recorded per load.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod names;
mod reporter;

pub use crate::reporter::{MetricsReporter, register, register_every};
