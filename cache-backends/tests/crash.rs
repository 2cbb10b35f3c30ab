//! Crash safety: a child process saves snapshots in a loop and is killed
//! with SIGKILL at random moments; after every kill the snapshot loads, and
//! it is exactly one whole generation, no older than the last one seen.
//!
//! The child is the very same test, run again by its test binary with
//! `ASYNC_CACHE_CRASH_CHILD=<backend>:<path>`. `CRASH_KILLS` (default 50 for
//! the file, 20 each for sled and SQLite) sets the number of kills, for
//! longer stress runs.

#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use async_cache::{Backend, Cache, FileBackend, SledBackend, SqliteBackend};
use rand::{Rng, SeedableRng};

const CHILD: &str = "ASYNC_CACHE_CRASH_CHILD";
/// Entries per snapshot: every value of one snapshot names its generation.
const ENTRIES: u64 = 2_000;

fn open(kind: &str, path: &Path) -> Box<dyn Backend> {
    match kind {
        "file" => Box::new(FileBackend::new(path)),
        "sled" => Box::new(SledBackend::open(path).expect("sled opens after a kill")),
        "sqlite" => Box::new(SqliteBackend::open(path).expect("sqlite opens after a kill")),
        other => panic!("unknown backend {other}"),
    }
}

/// The generation of the stored snapshot, checking it is whole: `None`
/// when nothing was saved yet.
fn stored_generation(backend: &dyn Backend, rt: &tokio::runtime::Runtime) -> Option<u64> {
    let cache = Cache::<u64, (u64, u64)>::new(ENTRIES as usize);
    let report = rt.block_on(cache.load_from_backend(backend)).expect("a snapshot must load after any kill");
    if report.loaded == 0 {
        return None;
    }
    assert_eq!(report.loaded as u64, ENTRIES, "a partial snapshot");
    let generation = cache.peek(&0).expect("key 0").0;
    for k in 0..ENTRIES {
        assert_eq!(cache.peek(&k), Some((generation, k)), "key {k} is from another generation than key 0");
    }
    Some(generation)
}

/// Child: save generation after generation until killed.
fn child(spec: &str) -> ! {
    let (kind, path) = spec.split_once(':').expect("backend:path");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let backend = open(kind, Path::new(path));
    let mut generation = stored_generation(&*backend, &rt).map_or(0, |g| g + 1);
    let cache = Cache::<u64, (u64, u64)>::new(ENTRIES as usize);
    loop {
        for k in 0..ENTRIES {
            cache.insert(k, (generation, k));
        }
        rt.block_on(cache.save_to_backend(&*backend)).expect("save");
        generation += 1;
    }
}

/// Re-runs test `test` as a child saving with backend `kind`, and kills it
/// again and again. `delay` bounds the random time a child runs before its
/// kill: long enough for it to open the store and save now and then. In the
/// child, this is where the test saves in a loop until killed.
fn kill_repeatedly(test: &str, kind: &str, default_kills: usize, delay: std::ops::Range<u64>) {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
    }
    let kills = std::env::var("CRASH_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(default_kills);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("crash.{kind}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(kind.len() as u64);
    let mut last = None;
    let mut changed = 0;
    for kill in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD, format!("{kind}:{}", path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(delay.clone())));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let backend = open(kind, &path);
        let now = stored_generation(&*backend, &rt);
        assert!(now >= last, "kill {kill}: generation went back from {last:?} to {now:?}");
        changed += usize::from(now != last);
        last = now;
    }
    eprintln!("{kind}: {kills} kills, a new snapshot between {changed} of them, last generation {last:?}");
    assert!(changed > kills / 4, "{kind}: the child saved between only {changed} of {kills} kills");
}

#[test]
fn file_keeps_the_old_or_the_new_snapshot_through_50_kills() {
    kill_repeatedly("file_keeps_the_old_or_the_new_snapshot_through_50_kills", "file", 50, 5..120);
}

#[test]
fn sled_keeps_the_old_or_the_new_snapshot_through_20_kills() {
    kill_repeatedly("sled_keeps_the_old_or_the_new_snapshot_through_20_kills", "sled", 20, 50..1_000);
}

#[test]
fn sqlite_keeps_the_old_or_the_new_snapshot_through_20_kills() {
    kill_repeatedly("sqlite_keeps_the_old_or_the_new_snapshot_through_20_kills", "sqlite", 20, 5..200);
}
