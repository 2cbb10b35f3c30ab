//! Persistence backends for async-cache: a file, sled or SQLite, each
//! behind its feature. Not intended to be used directly: use
//! `async_cache::backends` (the `Backend` trait itself lives in the core).

#[cfg(feature = "file")]
mod file;
#[cfg(feature = "sled")]
mod sled;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg_attr(not(any(feature = "file", feature = "sled", feature = "sqlite")), allow(dead_code))]
mod wire;

pub use cache_core::{AutosaveHandle, Backend, BackendError, LoadReport, Record, SaveReport};

#[cfg(feature = "file")]
pub use crate::file::FileBackend;
#[cfg(feature = "sled")]
pub use crate::sled::SledBackend;
#[cfg(feature = "sqlite")]
pub use crate::sqlite::SqliteBackend;

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
