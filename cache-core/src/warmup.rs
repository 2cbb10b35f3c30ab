//! [`Cache::warmup`]: fill the cache before traffic arrives.

use std::future::Future;
use std::hash::{BuildHasher, Hash};

use futures_util::StreamExt;

use crate::Cache;
use crate::load::Errors;

/// Loads run at once by one `warmup` call.
pub const WARMUP_CONCURRENCY: usize = 64;

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Loads every `(key, loader)` whose key is not already present, at most
    /// [`WARMUP_CONCURRENCY`] at a time, and returns once each key is loaded
    /// or found. A present key is never overwritten, and a key being loaded
    /// by someone else is waited for, not loaded twice. Loads count in
    /// `loads`, not in `misses`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = Cache::<u64, String>::new(1_000);
    /// cache.insert(1, "kept".to_string());
    /// cache
    ///     .warmup((0..100u64).map(|id| (id, move || async move { format!("user {id}") })))
    ///     .await;
    /// assert_eq!(cache.len(), 100);
    /// assert_eq!(cache.get(&1).unwrap(), "kept");
    /// assert_eq!(cache.metrics().loads, 99);
    /// # }
    /// ```
    pub async fn warmup<I, F, Fut>(&self, entries: I)
    where
        I: IntoIterator<Item = (K, F)>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let ttl = self.store.config.default_ttl;
        futures_util::stream::iter(entries)
            .for_each_concurrent(WARMUP_CONCURRENCY, |(key, load)| async move {
                if !self.contains_key(&key) {
                    let loaded = self.load(key, ttl, false, Errors::Shared, || async {
                        Ok::<V, std::convert::Infallible>(load().await)
                    });
                    // Infallible: nothing to report.
                    let _ = loaded.await;
                }
            })
            .await;
    }
}
