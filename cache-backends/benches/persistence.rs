//! Save and load of 100,000 entries (`u64` -> 100-byte `String`) with each
//! backend, beside the physical floor: writing (and `fsync`ing) or reading
//! the same number of raw bytes; and beside each engine's own bulk insert of
//! 100,000 rows of the same sizes (one sled batch then a flush; one SQLite
//! transaction of prepared inserts).
//!
//! Run with `cargo bench -p cache-backends --all-features --bench persistence`.

use std::io::Write;
use std::time::Duration;

use async_cache::{Backend, Cache, FileBackend, SledBackend, SqliteBackend};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const ENTRIES: u64 = 100_000;

fn filled() -> Cache<u64, String> {
    let cache = Cache::builder().max_size(ENTRIES as usize).build();
    for k in 0..ENTRIES {
        cache.insert(k, format!("{k:0>100}"));
    }
    cache
}

fn persistence(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cache = filled();
    let dir = tempfile::tempdir().unwrap();
    let backends: Vec<(&str, Box<dyn Backend>)> = vec![
        ("file", Box::new(FileBackend::new(dir.path().join("bench.cache")))),
        ("sled", Box::new(SledBackend::open(dir.path().join("bench.sled")).unwrap())),
        ("sqlite", Box::new(SqliteBackend::open(dir.path().join("bench.db")).unwrap())),
    ];
    // The floor is as many bytes as the file backend writes.
    rt.block_on(cache.save_to_backend(&*backends[0].1)).unwrap();
    let bytes = std::fs::metadata(dir.path().join("bench.cache")).unwrap().len() as usize;
    eprintln!("snapshot of {ENTRIES} entries: file backend {bytes} bytes");
    let raw = vec![0x5au8; bytes];
    let raw_path = dir.path().join("raw.bin");

    let mut save = c.benchmark_group("save_100000");
    save.sample_size(10).measurement_time(Duration::from_secs(10));
    save.bench_function("raw_write_fsync_same_bytes", |b| {
        b.iter(|| {
            let mut file = std::fs::File::create(&raw_path).unwrap();
            file.write_all(&raw).unwrap();
            file.sync_all().unwrap();
        })
    });
    // Each engine's own bulk insert of rows as large as the records.
    let key = [0u8; 8];
    let row = vec![0x5au8; bytes / ENTRIES as usize - key.len()];
    let sled_db = sled::open(dir.path().join("raw.sled")).unwrap();
    save.bench_function("sled_batch_insert_same_rows", |b| {
        b.iter(|| {
            let mut batch = sled::Batch::default();
            for i in 0..ENTRIES {
                batch.insert(&i.to_be_bytes(), row.as_slice());
            }
            sled_db.apply_batch(batch).unwrap();
            sled_db.flush().unwrap();
        })
    });
    let mut sqlite = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    sqlite.pragma_update(None, "journal_mode", "WAL").unwrap();
    sqlite.pragma_update(None, "synchronous", "FULL").unwrap();
    sqlite.execute("CREATE TABLE rows (seq INTEGER PRIMARY KEY, key BLOB, value BLOB)", []).unwrap();
    save.bench_function("sqlite_bulk_insert_same_rows", |b| {
        b.iter(|| {
            let tx = sqlite.transaction().unwrap();
            tx.execute("DELETE FROM rows", []).unwrap();
            {
                let mut insert = tx.prepare("INSERT INTO rows (seq, key, value) VALUES (?1, ?2, ?3)").unwrap();
                for i in 0..ENTRIES {
                    insert.execute(rusqlite::params![i as i64, key.as_slice(), row.as_slice()]).unwrap();
                }
            }
            tx.commit().unwrap();
        })
    });
    for (name, backend) in &backends {
        save.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| async { cache.save_to_backend(&**backend).await.unwrap() })
        });
    }
    save.finish();

    let mut load = c.benchmark_group("load_100000");
    load.sample_size(10).measurement_time(Duration::from_secs(10));
    load.bench_function("raw_read_same_bytes", |b| b.iter(|| std::fs::read(&raw_path).unwrap()));
    for (name, backend) in &backends {
        load.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| async {
                let fresh = Cache::<u64, String>::builder().max_size(ENTRIES as usize).build();
                let report = fresh.load_from_backend(&**backend).await.unwrap();
                assert_eq!(report.loaded, ENTRIES as usize);
            })
        });
    }
    load.finish();

    for (name, path) in [("sled", "bench.sled"), ("sqlite", "bench.db")] {
        let size: u64 = walk(&dir.path().join(path));
        eprintln!("{name} store after the runs: {size} bytes on disk");
    }
}

fn walk(path: &std::path::Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::read_dir(path).unwrap().map(|e| walk(&e.unwrap().path())).sum(),
        Ok(meta) => meta.len(),
        Err(_) => 0,
    }
}

criterion_group!(benches, persistence);
criterion_main!(benches);
