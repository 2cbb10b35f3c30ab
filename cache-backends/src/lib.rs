//! Persistence backends for async-cache: a file, sled or SQLite, each
//! behind its feature. Not intended to be used directly: use
//! `async_cache::backends` (the `Backend` trait itself lives in the core).

#![cfg_attr(docsrs, feature(doc_cfg))]

/// `BackendError::Corrupt` for `path`.
#[cfg_attr(not(any(feature = "file", feature = "sled", feature = "sqlite")), allow(dead_code))]
fn corrupt(path: &std::path::Path, reason: impl Into<String>) -> BackendError {
    BackendError::Corrupt { path: path.to_path_buf(), reason: reason.into() }
}

/// Implements [`Backend`] for a cloneable type with blocking
/// `save_blocking(schema, &PackedRecords)` and `load_blocking() ->
/// PackedSnapshot`, which run on tokio's blocking pool.
#[cfg_attr(not(any(feature = "file", feature = "sled", feature = "sqlite")), allow(unused_macros))]
macro_rules! blocking_backend {
    // With `streaming`, the type's `save_stream_blocking(schema, PackedStream)`
    // writes parts as they come.
    ($backend:ty, streaming) => {
        blocking_backend!($backend, {
            async fn save_stream(
                &self,
                schema: &str,
                parts: cache_core::PackedStream,
            ) -> Result<(), cache_core::BackendError> {
                let (backend, schema) = (self.clone(), schema.to_string());
                crate::blocking(move || backend.save_stream_blocking(&schema, parts)).await
            }
        });
    };
    ($backend:ty) => {
        blocking_backend!($backend, {});
    };
    ($backend:ty, { $($extra:tt)* }) => {
        #[cache_core::async_trait]
        impl cache_core::Backend for $backend {
            async fn save(&self, entries: Vec<cache_core::Record>) -> Result<(), cache_core::BackendError> {
                let backend = self.clone();
                crate::blocking(move || backend.save_blocking(None, &cache_core::PackedRecords::from_records(&entries)))
                    .await
            }

            async fn load(&self) -> Result<Vec<cache_core::Record>, cache_core::BackendError> {
                Ok(self.load_packed().await?.records.to_records())
            }

            async fn save_with_schema(
                &self,
                schema: &str,
                entries: Vec<cache_core::Record>,
            ) -> Result<(), cache_core::BackendError> {
                self.save_packed(schema, cache_core::PackedRecords::from_records(&entries)).await
            }

            async fn save_packed(
                &self,
                schema: &str,
                records: cache_core::PackedRecords,
            ) -> Result<(), cache_core::BackendError> {
                let (backend, schema) = (self.clone(), schema.to_string());
                crate::blocking(move || backend.save_blocking(Some(&schema), &records)).await
            }

            async fn load_with_schema(&self) -> Result<cache_core::Snapshot, cache_core::BackendError> {
                let cache_core::PackedSnapshot { schema, records } = self.load_packed().await?;
                Ok(cache_core::Snapshot { schema, records: records.to_records() })
            }

            async fn load_packed(&self) -> Result<cache_core::PackedSnapshot, cache_core::BackendError> {
                let backend = self.clone();
                crate::blocking(move || backend.load_blocking()).await
            }

            $($extra)*
        }
    };
}

/// Runs a backend's blocking I/O on tokio's blocking pool.
#[cfg_attr(not(any(feature = "file", feature = "sled", feature = "sqlite")), allow(dead_code))]
async fn blocking<T: Send + 'static>(
    io: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(io).await.unwrap_or_else(|panic| {
        Err(BackendError::Io {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(format!("a backend task failed: {panic}")),
        })
    })
}

#[cfg(feature = "file")]
mod file;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sled")]
mod sled;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use cache_core::{
    AutosaveHandle, Backend, BackendError, LoadReport, MalformedRecord, PackedRecords, PackedSnapshot, PackedStream,
    Record, RecordRef, SaveReport, Snapshot,
};

#[cfg(feature = "file")]
pub use crate::file::FileBackend;
#[cfg(feature = "redis")]
pub use crate::redis::{DEFAULT_TIMEOUT, MAX_QUEUED, RedisTier, SKIP_AFTER_FAILURE, TierError};
#[cfg(feature = "sled")]
pub use crate::sled::SledBackend;
#[cfg(feature = "sqlite")]
pub use crate::sqlite::SqliteBackend;
