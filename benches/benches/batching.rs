//! Batching overhead: 10,000 concurrent `Batched::get`s over 1,000 distinct
//! keys with `max_batch_size` 100 make exactly 10 `load_batch` calls; their
//! time is compared with calling the loader directly with the same 10
//! batches. The loader stands for a database: 5 ms a call, whatever its size.
//!
//! A third case is the floor any DataLoader pays for those callers: no cache,
//! just 10,000 futures each awaiting one of 10 shared loads.
//!
//! Run with `cargo bench -p benches --bench batching`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_cache::{BatchLoader, Cache, async_trait};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use futures_util::future::join_all;

const GETS: u64 = 10_000;
const KEYS: u64 = 1_000;
const BATCH: usize = 100;
const QUERY: Duration = Duration::from_millis(5);

#[derive(Clone, Default)]
struct Db {
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl BatchLoader<u64, u64> for Db {
    type Error = std::convert::Infallible;

    async fn load_batch(&self, keys: Vec<u64>) -> Result<HashMap<u64, u64>, Self::Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(QUERY).await;
        Ok(keys.into_iter().map(|k| (k, k * 2)).collect())
    }
}

/// Runs `work` as a task on the runtime, as a request would run in a
/// server, rather than on the bench's own thread.
async fn in_task<T: Send + 'static>(work: impl std::future::Future<Output = T> + Send + 'static) -> T {
    tokio::spawn(work).await.expect("the measured task")
}

fn batching(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("batching_10000_gets_1000_keys");
    group.sample_size(30);

    group.bench_function("direct_10_batches", |b| {
        let db = Db::default();
        b.to_async(&rt).iter(|| {
            let db = db.clone();
            in_task(async move {
                let keys = (0..KEYS).collect::<Vec<_>>();
                let calls = keys.chunks(BATCH).map(|keys| db.load_batch(keys.to_vec()));
                join_all(calls).await
            })
        });
    });

    group.bench_function("floor_10000_waiters_on_10_loads", |b| {
        let db = Db::default();
        b.to_async(&rt).iter(|| {
            let db = db.clone();
            in_task(async move {
                let keys = (0..KEYS).collect::<Vec<_>>();
                let loads: Vec<_> = keys
                    .chunks(BATCH)
                    .map(|keys| {
                        let (db, keys) = (db.clone(), keys.to_vec());
                        tokio::spawn(async move { db.load_batch(keys).await.map(|m| m.len()) })
                            .map(|r| r.unwrap())
                            .shared()
                    })
                    .collect();
                let waiters = (0..GETS as usize).map(|i| loads[i % loads.len()].clone());
                join_all(waiters).await
            })
        });
    });

    group.bench_function("batched_get", |b| {
        let db = Db::default();
        b.to_async(&rt).iter(|| {
            let db = db.clone();
            in_task(async move {
                let cache = Cache::<u64, u64>::builder().max_size(10_000).max_batch_size(BATCH).build();
                let batched = cache.batched(db.clone());
                let before = db.calls.load(Ordering::Relaxed);
                let got = join_all((0..GETS).map(|i| batched.get(i % KEYS))).await;
                assert!(got.iter().all(|r| matches!(r, Ok(Some(_)))));
                assert_eq!(db.calls.load(Ordering::Relaxed) - before, 10, "exactly 10 load_batch calls");
            })
        });
    });
    group.finish();
}

criterion_group!(benches, batching);
criterion_main!(benches);
