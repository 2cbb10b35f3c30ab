//! async-cache facade.
pub use cache_core::*;
