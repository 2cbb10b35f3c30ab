//! [`SqliteBackend`]: the snapshot in a SQLite database (bundled SQLite).
//!
//! Two tables, `async_cache_meta` (the format version, and the snapshot's
//! schema under `schema` when it has one) and `async_cache_entries` (one row
//! per record, `seq` giving the saved order). A save replaces every row and
//! the schema in one transaction; WAL and
//! `synchronous = FULL` make the commit durable before `save` returns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache_core::{BackendError, PackedRecords, PackedSnapshot, RecordRef};
use rusqlite::{Connection, OptionalExtension, params};

use crate::corrupt;

const VERSION: u32 = 1;
const META: &str = "async_cache_meta";
const ENTRIES: &str = "async_cache_entries";
const ENTRY_COLUMNS: [&str; 5] = ["seq", "key", "value", "expires_secs", "expires_nanos"];

/// How long a save or load waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps the cache's snapshot in a SQLite database.
///
/// # Examples
///
/// ```
/// use async_cache::{Cache, SqliteBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let backend = SqliteBackend::open(dir.path().join("cache.db"))?;
/// let cache = Cache::<u64, String>::new(1_000);
/// cache.insert(1, "ada".into());
/// cache.save_to_backend(&backend).await?; // returns once committed
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
}

fn storage(path: &Path) -> impl Fn(rusqlite::Error) -> BackendError + '_ {
    move |e| BackendError::Storage { engine: "sqlite", path: path.to_path_buf(), source: Box::new(e) }
}

impl SqliteBackend {
    /// Opens (or creates) the database at `path`, in WAL mode with a busy
    /// timeout. Dropping the backend, and every clone of it, closes it.
    ///
    /// # Errors
    ///
    /// [`BackendError::Storage`] if SQLite cannot open it;
    /// [`BackendError::Corrupt`] if it is not a SQLite database, or holds
    /// another application's tables or a different `async_cache_entries`;
    /// [`BackendError::UnsupportedVersion`] if a newer async-cache wrote it.
    ///
    /// # Examples
    ///
    /// See [`SqliteBackend`].
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, BackendError> {
        let path = path.into();
        let connection = Connection::open(&path).map_err(storage(&path))?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(storage(&path))?;
        // A file that is not a database fails its first read, here.
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| not_a_database(&path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(corrupt(&path, format!("SQLite refused WAL mode (journal_mode is {mode})")));
        }
        connection.pragma_update(None, "synchronous", "FULL").map_err(storage(&path))?;
        check_schema(&connection, &path)?;
        Ok(SqliteBackend { connection: Arc::new(Mutex::new(connection)), path })
    }

    fn save_blocking(&self, schema: Option<&str>, records: &PackedRecords) -> Result<(), BackendError> {
        let path = &self.path;
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let tx = connection.transaction().map_err(storage(path))?;
        tx.execute(&format!("DELETE FROM {ENTRIES}"), []).map_err(storage(path))?;
        match schema {
            Some(schema) => {
                tx.execute(&format!("INSERT OR REPLACE INTO {META} (key, value) VALUES ('schema', ?1)"), [schema])
            }
            None => tx.execute(&format!("DELETE FROM {META} WHERE key = 'schema'"), []),
        }
        .map_err(storage(path))?;
        {
            let mut insert = tx
                .prepare(&format!(
                    "INSERT INTO {ENTRIES} (seq, key, value, expires_secs, expires_nanos) VALUES (?1, ?2, ?3, ?4, ?5)"
                ))
                .map_err(storage(path))?;
            for (seq, record) in records.iter().enumerate() {
                let (secs, nanos) = match record.expires_at.map(to_parts) {
                    Some((secs, nanos)) => (Some(secs as i64), Some(nanos)),
                    None => (None, None),
                };
                insert.execute(params![seq as i64, record.key, record.value, secs, nanos]).map_err(storage(path))?;
            }
        }
        tx.commit().map_err(storage(path))
    }

    fn load_blocking(&self) -> Result<PackedSnapshot, BackendError> {
        let path = &self.path;
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        // One read transaction: the schema and the rows of one save.
        let connection = connection.transaction().map_err(storage(path))?;
        let schema: Option<String> = connection
            .query_row(&format!("SELECT value FROM {META} WHERE key = 'schema'"), [], |row| row.get(0))
            .optional()
            .map_err(|e| corrupt(path, format!("an unreadable schema: {e}")))?;
        let mut select = connection
            .prepare(&format!("SELECT key, value, expires_secs, expires_nanos FROM {ENTRIES} ORDER BY seq"))
            .map_err(storage(path))?;
        let mut rows = select.query([]).map_err(storage(path))?;
        // Each row's blobs are borrowed from SQLite and packed: no
        // allocation per record.
        let mut records = PackedRecords::new();
        while let Some(row) = rows.next().map_err(storage(path))? {
            let unreadable = |e: rusqlite::Error| corrupt(path, format!("an unreadable row: {e}"));
            let blob = |column| row.get_ref(column).and_then(|v| Ok(v.as_blob()?)).map_err(unreadable);
            let (key, value) = (blob(0)?, blob(1)?);
            let expires_at = match (
                row.get::<_, Option<i64>>(2).map_err(unreadable)?,
                row.get::<_, Option<u32>>(3).map_err(unreadable)?,
            ) {
                (None, None) => None,
                (Some(secs), Some(nanos)) => Some(
                    u64::try_from(secs)
                        .ok()
                        .and_then(|secs| from_parts((secs, nanos)))
                        .ok_or_else(|| corrupt(path, "an expiry out of range"))?,
                ),
                _ => return Err(corrupt(path, "an expiry with half its columns")),
            };
            records.push(RecordRef { key, value, expires_at });
        }
        Ok(PackedSnapshot { schema, records })
    }
}

/// Seconds and nanoseconds since the Unix epoch: an expiry's two columns.
type WallClock = (u64, u32);

/// Expiry as wall-clock parts; times before 1970 count as 1970 (long past).
fn to_parts(at: SystemTime) -> WallClock {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (since.as_secs(), since.subsec_nanos())
}

/// Wall-clock parts back to a time; `None` if they are out of range.
fn from_parts((secs, nanos): WallClock) -> Option<SystemTime> {
    if nanos >= 1_000_000_000 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn not_a_database(path: &Path, error: rusqlite::Error) -> BackendError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => corrupt(path, "not a SQLite database"),
        _ => storage(path)(error),
    }
}

/// Creates our tables in an empty database; refuses anyone else's.
fn check_schema(connection: &Connection, path: &Path) -> Result<(), BackendError> {
    let tables: Vec<String> = {
        let mut query = connection
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            .map_err(|e| not_a_database(path, e))?;
        query.query_map([], |row| row.get(0)).and_then(|rows| rows.collect::<Result<_, _>>()).map_err(storage(path))?
    };
    if tables.is_empty() {
        connection
            .execute_batch(&format!(
                "BEGIN;
                 CREATE TABLE {META} (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO {META} (key, value) VALUES ('format', {VERSION});
                 CREATE TABLE {ENTRIES} (seq INTEGER PRIMARY KEY, key BLOB NOT NULL, value BLOB NOT NULL,
                                         expires_secs INTEGER, expires_nanos INTEGER);
                 COMMIT;"
            ))
            .map_err(storage(path))?;
        return Ok(());
    }
    if let Some(foreign) = tables.iter().find(|t| *t != META && *t != ENTRIES) {
        return Err(corrupt(
            path,
            format!("a table `{foreign}` that async-cache did not create: another application's database"),
        ));
    }
    if tables.len() != 2 {
        return Err(corrupt(path, "async-cache's tables are incomplete"));
    }
    let version: Option<i64> = connection
        .query_row(&format!("SELECT value FROM {META} WHERE key = 'format'"), [], |row| row.get(0))
        .optional()
        .map_err(|e| corrupt(path, format!("an unreadable format version: {e}")))?;
    match version {
        Some(found) if found == i64::from(VERSION) => {}
        Some(found) if found > i64::from(VERSION) => {
            return Err(BackendError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: VERSION,
            });
        }
        other => {
            return Err(corrupt(path, format!("format version {other:?} is not one async-cache wrote")));
        }
    }
    let columns: Vec<String> = {
        let mut query = connection.prepare(&format!("PRAGMA table_info({ENTRIES})")).map_err(storage(path))?;
        query.query_map([], |row| row.get(1)).and_then(|rows| rows.collect::<Result<_, _>>()).map_err(storage(path))?
    };
    if columns != ENTRY_COLUMNS {
        return Err(corrupt(path, format!("`{ENTRIES}` has columns {columns:?}, not {ENTRY_COLUMNS:?}")));
    }
    Ok(())
}

blocking_backend!(SqliteBackend);
