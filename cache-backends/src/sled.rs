//! [`SledBackend`]: the snapshot in a sled database.
//!
//! Each save writes the records into a fresh tree (`async-cache/snapshot-N`,
//! in chunks of up to [`CHUNK`] records back to back, keyed by position, so
//! iteration gives the saved order; format 1 held one record per key, and
//! still loads), flushes it, then
//! points `current` in the `async-cache/meta` tree at it with one atomic
//! insert, flushes again, and drops the previous tree. A crash before the
//! switch leaves the previous snapshot current; its half-written successor
//! is dropped by the next save. A snapshot's schema sits in the meta tree
//! under `schema:<tree name>`, written before the switch.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cache_core::{BackendError, PackedRecords, PackedSnapshot};

use crate::corrupt;

const META: &str = "async-cache/meta";
const SNAPSHOT: &str = "async-cache/snapshot-";
const FORMAT_KEY: &[u8] = b"format";
const CURRENT_KEY: &[u8] = b"current";
/// Followed by a snapshot tree's name: that snapshot's schema.
const SCHEMA_KEY: &str = "schema:";
/// 2: records in chunks. A save writes it, so a build that reads only 1
/// refuses the database as newer instead of misreading it.
const VERSION: u32 = 2;
/// Records per sled value: one sled insert per record allocated some ten
/// times per record inside sled.
const CHUNK: usize = 1024;

/// Keeps the cache's snapshot in a sled database.
///
/// # Examples
///
/// ```
/// use async_cache::{Cache, SledBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let backend = SledBackend::open(dir.path().join("cache.sled"))?;
/// let cache = Cache::<u64, String>::new(1_000);
/// cache.insert(1, "ada".into());
/// cache.save_to_backend(&backend).await?; // returns once flushed to disk
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SledBackend {
    db: sled::Db,
    path: PathBuf,
}

/// How long [`open_db`] waits for a database's lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// `sled::open`, waiting (a bounded time) for the file lock: sled 0.34
/// releases it from its I/O thread pool after the last handle is dropped,
/// so the same process reopening at once may find it still held.
fn open_db(path: &Path) -> Result<sled::Db, BackendError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::open(path) {
            // sled reports a held lock as an `Other` I/O error; its text is
            // the only sign (sled 0.34 is no longer released, so it stays).
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            opened => return opened.map_err(storage(path)),
        }
    }
}

fn storage(path: &Path) -> impl Fn(sled::Error) -> BackendError + '_ {
    move |e| BackendError::Storage { engine: "sled", path: path.to_path_buf(), source: Box::new(e) }
}

impl SledBackend {
    /// Opens (or creates) the database at `path`. Dropping the backend, and
    /// every clone of it, releases the database: sled lets go of its file
    /// lock once its background I/O for the dropped handle is done, a moment
    /// later, so `open` waits up to two seconds for a held lock before
    /// giving up.
    ///
    /// # Errors
    ///
    /// [`BackendError::Storage`] if sled cannot open it (another process
    /// holds it, say); [`BackendError::Corrupt`] if it holds another
    /// application's data; [`BackendError::UnsupportedVersion`] if a newer
    /// async-cache wrote it.
    ///
    /// # Examples
    ///
    /// See [`SledBackend`].
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, BackendError> {
        let path = path.into();
        let db = open_db(&path)?;
        let backend = SledBackend { db, path };
        backend.check_schema()?;
        Ok(backend)
    }

    /// Refuses a database that is not ours, or is newer than this build.
    fn check_schema(&self) -> Result<(), BackendError> {
        let path = &self.path;
        if !self.db.is_empty() {
            return Err(corrupt(path, "sled's default tree holds data: another application's database"));
        }
        for name in self.db.tree_names() {
            let name = String::from_utf8_lossy(&name);
            if name != "__sled__default" && name != META && !name.starts_with(SNAPSHOT) {
                return Err(corrupt(path, format!("a tree `{name}` that async-cache did not write")));
            }
        }
        let meta = self.db.open_tree(META).map_err(storage(path))?;
        match meta.get(FORMAT_KEY).map_err(storage(path))? {
            None => {
                meta.insert(FORMAT_KEY, &VERSION.to_le_bytes()).map_err(storage(path))?;
            }
            Some(found) => {
                let found = u32::from_le_bytes(
                    found.as_ref().try_into().map_err(|_| corrupt(path, "a damaged format version"))?,
                );
                if found > VERSION {
                    return Err(BackendError::UnsupportedVersion { path: path.clone(), found, supported: VERSION });
                }
            }
        }
        Ok(())
    }

    fn save_blocking(&self, schema: Option<&str>, records: &PackedRecords) -> Result<(), BackendError> {
        let path = &self.path;
        let meta = self.db.open_tree(META).map_err(storage(path))?;
        let current = meta.get(CURRENT_KEY).map_err(storage(path))?;
        // Two trees, written in turn: the one not current is cleared and
        // refilled, so sled reuses its space instead of growing.
        let next = match current.as_deref() {
            Some(name) if name.ends_with(b"0") => 1,
            _ => 0,
        };
        let name = format!("{SNAPSHOT}{next}");
        let tree = self.db.open_tree(&name).map_err(storage(path))?;
        tree.clear().map_err(storage(path))?;
        let mut batch = sled::Batch::default();
        let mut chunk = Vec::new();
        let mut chunks = 0u64;
        for (position, record) in records.iter().enumerate() {
            record.encode_into(&mut chunk);
            if (position + 1) % CHUNK == 0 || position + 1 == records.len() {
                batch.insert(&chunks.to_be_bytes(), chunk.as_slice());
                chunks += 1;
                chunk.clear();
            }
        }
        tree.apply_batch(batch).map_err(storage(path))?;
        meta.insert(FORMAT_KEY, &VERSION.to_le_bytes()).map_err(storage(path))?;
        let schema_key = format!("{SCHEMA_KEY}{name}");
        match schema {
            Some(schema) => meta.insert(schema_key, schema.as_bytes()).map(drop),
            None => meta.remove(schema_key).map(drop),
        }
        .map_err(storage(path))?;
        self.db.flush().map_err(storage(path))?;
        meta.insert(CURRENT_KEY, name.as_bytes()).map_err(storage(path))?;
        self.db.flush().map_err(storage(path))?;
        Ok(())
    }

    fn load_blocking(&self) -> Result<PackedSnapshot, BackendError> {
        let path = &self.path;
        let meta = self.db.open_tree(META).map_err(storage(path))?;
        let Some(current) = meta.get(CURRENT_KEY).map_err(storage(path))? else {
            return Ok(PackedSnapshot::default());
        };
        if !current.starts_with(SNAPSHOT.as_bytes()) {
            return Err(corrupt(path, "the current snapshot's name is damaged"));
        }
        let schema_key = [SCHEMA_KEY.as_bytes(), &current].concat();
        let schema = match meta.get(schema_key).map_err(storage(path))? {
            Some(schema) => Some(
                String::from_utf8(schema.to_vec()).map_err(|_| corrupt(path, "the snapshot's schema is damaged"))?,
            ),
            None => None,
        };
        let tree = self.db.open_tree(&current).map_err(storage(path))?;
        // Chunks of records (format 2), or one record each (format 1): back
        // to back, they are the records packed.
        let mut bytes = Vec::new();
        for value in tree.iter().values() {
            bytes.extend_from_slice(&value.map_err(storage(path))?);
        }
        let records = PackedRecords::from_bytes(bytes).map_err(|e| corrupt(path, e.to_string()))?;
        Ok(PackedSnapshot { schema, records })
    }
}

blocking_backend!(SledBackend);

#[cfg(test)]
mod tests {
    use super::*;
    use cache_core::Record;

    /// A database written by format 1 (one record per key) still loads,
    /// and the next save moves it to format 2.
    #[test]
    fn a_format_1_database_loads() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(dir.path().join("v1.sled")).unwrap();
        let records: Vec<Record> =
            (0..3u8).map(|i| Record { key: vec![i], value: vec![i; 40], expires_at: None }).collect();
        let meta = backend.db.open_tree(META).unwrap();
        meta.insert(FORMAT_KEY, &1u32.to_le_bytes()).unwrap();
        let name = format!("{SNAPSHOT}0");
        let tree = backend.db.open_tree(&name).unwrap();
        for (position, record) in records.iter().enumerate() {
            let mut bytes = Vec::new();
            record.as_ref().encode_into(&mut bytes);
            tree.insert((position as u64).to_be_bytes(), bytes).unwrap();
        }
        meta.insert(CURRENT_KEY, name.as_bytes()).unwrap();
        assert_eq!(backend.load_blocking().unwrap().records.to_records(), records);
        backend.save_blocking(None, &PackedRecords::from_records(&records)).unwrap();
        assert_eq!(meta.get(FORMAT_KEY).unwrap().unwrap().as_ref(), 2u32.to_le_bytes());
        assert_eq!(backend.load_blocking().unwrap().records.to_records(), records);
    }
}
