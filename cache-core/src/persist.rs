//! Persistence: the [`Backend`] trait and [`Cache::save_to_backend`],
//! [`Cache::load_from_backend`] and [`Cache::autosave`].
//!
//! A snapshot is the whole cache as a list of [`Record`]s, least recently
//! used first, each holding its key and value encoded with postcard and its
//! expiry as wall-clock time, so TTLs and LRU order survive a restart. The
//! implementations (file, sled, SQLite) live in the `cache-backends` crate.

use std::error::Error;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::Cache;
use crate::time::{Clock, wall_clock_parts};

/// Where snapshots are kept. Implemented by `FileBackend`, `SledBackend`
/// and `SqliteBackend`; implement it to keep snapshots anywhere else.
///
/// # Examples
///
/// A backend that keeps the snapshot in memory:
///
/// ```
/// use std::sync::Mutex;
/// use async_cache::{Backend, BackendError, Record, async_trait};
///
/// #[derive(Default)]
/// struct InMemory(Mutex<Vec<Record>>);
///
/// #[async_trait]
/// impl Backend for InMemory {
///     async fn save(&self, entries: Vec<Record>) -> Result<(), BackendError> {
///         *self.0.lock().unwrap() = entries;
///         Ok(())
///     }
///
///     async fn load(&self) -> Result<Vec<Record>, BackendError> {
///         Ok(self.0.lock().unwrap().clone())
///     }
/// }
/// ```
#[async_trait]
pub trait Backend: Send + Sync {
    /// Replaces the stored snapshot with `entries` (coldest first), all at
    /// once: after a crash, the previous snapshot or this one
    /// is stored, never a mix.
    async fn save(&self, entries: Vec<Record>) -> Result<(), BackendError>;

    /// The stored snapshot, in the order it was saved; empty if there is none.
    async fn load(&self) -> Result<Vec<Record>, BackendError>;

    /// [`save`](Backend::save), tagging the snapshot with `schema` (what its
    /// records decode as) for [`load_with_schema`](Backend::load_with_schema)
    /// to return; the cache's saves come down to this in a backend that
    /// implements neither [`save_stream`](Backend::save_stream) nor
    /// [`save_packed`](Backend::save_packed). The default drops the tag
    /// and calls `save`: a backend that keeps no tag loads snapshots that
    /// are never checked against the cache's types.
    async fn save_with_schema(&self, schema: &str, entries: Vec<Record>) -> Result<(), BackendError> {
        let _untagged = schema;
        self.save(entries).await
    }

    /// [`load`](Backend::load), with the schema the snapshot was saved
    /// with (`None` if it was saved untagged), which the cache checks: it
    /// refuses a snapshot of another schema. The cache's loads come down to
    /// this in a backend that does not implement
    /// [`load_packed`](Backend::load_packed). The default calls `load` and
    /// reports no schema.
    async fn load_with_schema(&self) -> Result<Snapshot, BackendError> {
        Ok(Snapshot { schema: None, records: self.load().await? })
    }

    /// [`save_with_schema`](Backend::save_with_schema) from the records
    /// packed in one buffer, as the cache saves: no allocation per record.
    /// The default unpacks them into [`Record`]s (two allocations each) and
    /// calls `save_with_schema`, so a backend written before this method
    /// keeps working; the file, sled and SQLite backends write from the
    /// buffer.
    async fn save_packed(&self, schema: &str, records: PackedRecords) -> Result<(), BackendError> {
        self.save_with_schema(schema, records.to_records()).await
    }

    /// [`save_packed`](Backend::save_packed) from records that arrive in
    /// parts while the cache encodes them, as the cache saves: a backend
    /// that writes each part as it comes saves in about the longer of the
    /// encoding and the writing, not their sum (the file backend does). If
    /// the stream ends in an error (the cache could not encode an entry),
    /// the snapshot must stay as it was. The default collects the parts
    /// and calls `save_packed`.
    async fn save_stream(&self, schema: &str, parts: PackedStream) -> Result<(), BackendError> {
        self.save_packed(schema, parts.collect().await?).await
    }

    /// [`load_with_schema`](Backend::load_with_schema) with the records
    /// packed in one buffer, as the cache loads: no allocation per record.
    /// The default packs what `load_with_schema` returns, so a backend
    /// written before this method keeps working; the file, sled and SQLite
    /// backends read into the buffer (see [`PackedRecords::from_bytes`]).
    async fn load_packed(&self) -> Result<PackedSnapshot, BackendError> {
        let Snapshot { schema, records } = self.load_with_schema().await?;
        Ok(PackedSnapshot { schema, records: PackedRecords::from_records(&records) })
    }
}

/// A stored snapshot with its records packed, from [`Backend::load_packed`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedSnapshot {
    /// As [`Snapshot::schema`].
    pub schema: Option<String>,
    /// The records, in saved order.
    pub records: PackedRecords,
}

/// A stored snapshot with its schema, from [`Backend::load_with_schema`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What the records were saved as (key and value types and
    /// `snapshot_version`, see [`CacheBuilder::snapshot_version`](crate::CacheBuilder::snapshot_version)),
    /// or `None` for a snapshot saved untagged.
    pub schema: Option<String>,
    /// The records, in saved order.
    pub records: Vec<Record>,
}

#[async_trait]
impl<B: Backend + ?Sized> Backend for Arc<B> {
    async fn save(&self, entries: Vec<Record>) -> Result<(), BackendError> {
        (**self).save(entries).await
    }

    async fn save_packed(&self, schema: &str, records: PackedRecords) -> Result<(), BackendError> {
        (**self).save_packed(schema, records).await
    }

    async fn save_stream(&self, schema: &str, parts: PackedStream) -> Result<(), BackendError> {
        (**self).save_stream(schema, parts).await
    }

    async fn load(&self) -> Result<Vec<Record>, BackendError> {
        (**self).load().await
    }

    async fn save_with_schema(&self, schema: &str, entries: Vec<Record>) -> Result<(), BackendError> {
        (**self).save_with_schema(schema, entries).await
    }

    async fn load_with_schema(&self) -> Result<Snapshot, BackendError> {
        (**self).load_with_schema().await
    }

    async fn load_packed(&self) -> Result<PackedSnapshot, BackendError> {
        (**self).load_packed().await
    }
}

#[async_trait]
impl<B: Backend + ?Sized> Backend for Box<B> {
    async fn save(&self, entries: Vec<Record>) -> Result<(), BackendError> {
        (**self).save(entries).await
    }

    async fn save_packed(&self, schema: &str, records: PackedRecords) -> Result<(), BackendError> {
        (**self).save_packed(schema, records).await
    }

    async fn save_stream(&self, schema: &str, parts: PackedStream) -> Result<(), BackendError> {
        (**self).save_stream(schema, parts).await
    }

    async fn load(&self) -> Result<Vec<Record>, BackendError> {
        (**self).load().await
    }

    async fn save_with_schema(&self, schema: &str, entries: Vec<Record>) -> Result<(), BackendError> {
        (**self).save_with_schema(schema, entries).await
    }

    async fn load_with_schema(&self) -> Result<Snapshot, BackendError> {
        (**self).load_with_schema().await
    }

    async fn load_packed(&self) -> Result<PackedSnapshot, BackendError> {
        (**self).load_packed().await
    }
}

/// One entry of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// The key, encoded with postcard.
    pub key: Vec<u8>,
    /// The value, encoded with postcard.
    pub value: Vec<u8>,
    /// When the entry expires, or `None` for never.
    pub expires_at: Option<SystemTime>,
}

impl Record {
    /// This record, borrowed.
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef { key: &self.key, value: &self.value, expires_at: self.expires_at }
    }
}

/// A snapshot's records in parts (about a megabyte each), as the cache
/// encodes them: what [`Backend::save_stream`] reads.
///
/// # Examples
///
/// ```
/// use async_cache::{PackedRecords, PackedStream, Record};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), async_cache::BackendError> {
/// let record = Record { key: vec![1], value: vec![10], expires_at: None };
/// // One part, for a backend's tests.
/// let mut parts = PackedStream::from(PackedRecords::from_records(&[record.clone()]));
/// let mut written = Vec::new();
/// while let Some(part) = parts.next().await? {
///     written.extend(part.to_records());
/// }
/// assert_eq!(written, [record]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PackedStream {
    parts: tokio::sync::mpsc::Receiver<Part>,
    /// The whole snapshot's size as the cache foresees it (0 if unknown).
    expected_bytes: Arc<AtomicUsize>,
}

/// What a [`PackedStream`] carries.
#[derive(Debug)]
enum Part {
    Records(PackedRecords),
    End,
}

/// Parts in flight between the encoding and the backend at most.
const PARTS_IN_FLIGHT: usize = 4;
/// The size of a part.
const PART_BYTES: usize = 1 << 20;

impl PackedStream {
    /// A stream, and its sending side for the cache's encoder.
    fn channel() -> (tokio::sync::mpsc::Sender<Part>, PackedStream) {
        let (sender, parts) = tokio::sync::mpsc::channel(PARTS_IN_FLIGHT);
        (sender, PackedStream { parts, expected_bytes: Arc::default() })
    }

    /// The next part, or `None` after the last.
    ///
    /// # Errors
    ///
    /// The cache stopped before the last part (an entry did not encode):
    /// save nothing. `save_to_backend` reports why.
    pub async fn next(&mut self) -> Result<Option<PackedRecords>, BackendError> {
        Self::part(self.parts.recv().await)
    }

    /// [`next`](Self::next) for a backend writing on a blocking thread
    /// (`spawn_blocking`).
    ///
    /// # Errors
    ///
    /// As `next`.
    ///
    /// # Panics
    ///
    /// Called from an async task (tokio's rule for blocking receives).
    pub fn blocking_next(&mut self) -> Result<Option<PackedRecords>, BackendError> {
        Self::part(self.parts.blocking_recv())
    }

    fn part(part: Option<Part>) -> Result<Option<PackedRecords>, BackendError> {
        match part {
            Some(Part::Records(records)) => Ok(Some(records)),
            Some(Part::End) => Ok(None),
            None => Err(BackendError::Encode("the cache stopped encoding the snapshot; nothing was saved".into())),
        }
    }

    /// Every part, in one buffer.
    ///
    /// # Errors
    ///
    /// As [`next`](Self::next).
    pub async fn collect(mut self) -> Result<PackedRecords, BackendError> {
        let mut all = PackedRecords::new();
        while let Some(part) = self.next().await? {
            let first = all.is_empty();
            all.append(part);
            if first {
                // Room for the rest as foreseen, rather than doubling.
                let expected = self.expected_bytes.load(Ordering::Relaxed);
                all.bytes.reserve(expected.saturating_sub(all.bytes.len()));
            }
        }
        Ok(all)
    }
}

impl From<PackedRecords> for PackedStream {
    /// A stream of one part.
    fn from(records: PackedRecords) -> Self {
        let (sender, stream) = PackedStream::channel();
        // Room for two: neither send can fail.
        let _ = sender.try_send(Part::Records(records));
        let _ = sender.try_send(Part::End);
        stream
    }
}

/// One entry of a snapshot, borrowed: see [`PackedRecords::iter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordRef<'a> {
    /// The key, encoded with postcard.
    pub key: &'a [u8],
    /// The value, encoded with postcard.
    pub value: &'a [u8],
    /// When the entry expires, or `None` for never.
    pub expires_at: Option<SystemTime>,
}

impl RecordRef<'_> {
    /// The record, owned.
    pub fn to_owned(&self) -> Record {
        Record { key: self.key.to_vec(), value: self.value.to_vec(), expires_at: self.expires_at }
    }

    /// Appends the record's encoding to `out`: postcard of the key's and
    /// the value's bytes and the expiry as `Option<(seconds, nanoseconds)>`
    /// since the Unix epoch. The same in every backend of this crate's
    /// family, and what [`PackedRecords`] holds.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_record(out, self.key, self.value, self.expires_at.map(wall_clock_parts));
    }
}

/// [`RecordRef::encode_into`] of a record whose expiry is `(seconds,
/// nanoseconds)` since the Unix epoch.
fn encode_record(out: &mut Vec<u8>, key: &[u8], value: &[u8], expires: Option<(u64, u32)>) {
    // The bytes postcard makes of a `Wire` (the decoder's layout; a test
    // holds them equal), written directly: through serde, the varints went
    // a byte per call, 450 instructions a record against 60.
    out.reserve(key.len() + value.len() + 2 * MAX_VARINT + 1 + MAX_VARINT + 5);
    varint(out, key.len() as u64);
    out.extend_from_slice(key);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
    match expires {
        None => out.push(0),
        Some((secs, nanos)) => {
            out.push(1);
            varint(out, secs);
            varint(out, u64::from(nanos));
        }
    }
}

/// The longest varint of a `u64`.
const MAX_VARINT: usize = 10;

/// `n` as postcard writes an unsigned integer: seven bits a byte, low
/// first, the high bit set on every byte but the last.
#[inline]
fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// [`RecordRef::encode_into`]'s layout, as postcard would encode it: the
/// tests hold the hand-written encoder and decoder to it.
#[cfg(test)]
#[derive(Serialize, serde::Deserialize)]
struct Wire<'a> {
    #[serde(with = "serde_bytes", borrow)]
    key: &'a [u8],
    #[serde(with = "serde_bytes", borrow)]
    value: &'a [u8],
    expires_at: Option<(u64, u32)>,
}

/// A whole snapshot's records in one buffer, each as
/// [`RecordRef::encode_into`] writes it, in saved order: what the cache
/// hands to [`Backend::save_packed`]. Built without an allocation per
/// record (the buffer grows by doubling).
///
/// # Examples
///
/// ```
/// use async_cache::{PackedRecords, Record};
///
/// let records = vec![Record { key: vec![1], value: vec![2, 3], expires_at: None }];
/// let packed = PackedRecords::from_records(&records);
/// assert_eq!(packed.len(), 1);
/// assert_eq!(packed.iter().next().unwrap().value, [2, 3]);
/// assert_eq!(packed.to_records(), records);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedRecords {
    bytes: Vec<u8>,
    len: usize,
}

impl PackedRecords {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }

    /// Packs `records`.
    pub fn from_records(records: &[Record]) -> Self {
        let mut packed = PackedRecords::new();
        for record in records {
            packed.push(record.as_ref());
        }
        packed
    }

    /// Appends one record.
    pub fn push(&mut self, record: RecordRef<'_>) {
        self.push_parts(record.key, record.value, record.expires_at.map(wall_clock_parts));
    }

    /// [`push`](Self::push) of a record whose expiry is already `(seconds,
    /// nanoseconds)` since the Unix epoch.
    fn push_parts(&mut self, key: &[u8], value: &[u8], expires: Option<(u64, u32)>) {
        encode_record(&mut self.bytes, key, value, expires);
        self.len += 1;
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The records' encodings, back to back.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// No records, with room for `bytes` of them.
    fn with_capacity(bytes: usize) -> Self {
        PackedRecords { bytes: Vec::with_capacity(bytes), len: 0 }
    }

    /// Adds `other`'s records after these.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::{PackedRecords, Record};
    ///
    /// let one = Record { key: vec![1], value: vec![10], expires_at: None };
    /// let two = Record { key: vec![2], value: vec![20], expires_at: None };
    /// let mut packed = PackedRecords::from_records(&[one.clone()]);
    /// packed.append(PackedRecords::from_records(&[two.clone()]));
    /// assert_eq!(packed.to_records(), [one, two]);
    /// ```
    pub fn append(&mut self, other: PackedRecords) {
        if self.bytes.is_empty() {
            *self = other;
        } else {
            self.bytes.extend_from_slice(&other.bytes);
            self.len += other.len;
        }
    }

    /// Records read back from bytes that [`as_bytes`](Self::as_bytes)
    /// gave, checked whole: no allocation per record, and none larger than
    /// `bytes` (a length is refused when it runs past the end).
    ///
    /// # Errors
    ///
    /// [`MalformedRecord`]: the first record that does not decode (cut
    /// short, or an expiry out of range), with its position.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::{PackedRecords, Record};
    ///
    /// let records = vec![Record { key: vec![1], value: vec![2, 3], expires_at: None }];
    /// let bytes = PackedRecords::from_records(&records).as_bytes().to_vec();
    /// assert_eq!(PackedRecords::from_bytes(bytes.clone()).unwrap().to_records(), records);
    ///
    /// let cut = bytes[..bytes.len() - 1].to_vec();
    /// assert_eq!(PackedRecords::from_bytes(cut).unwrap_err().index, 0);
    /// ```
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, MalformedRecord> {
        let mut rest = bytes.as_slice();
        let mut len = 0;
        while !rest.is_empty() {
            let (_, tail) =
                take_record(rest).map_err(|reason| MalformedRecord { index: len, reason: reason.into() })?;
            rest = tail;
            len += 1;
        }
        Ok(PackedRecords { bytes, len })
    }

    /// The records, in order, borrowed from the buffer.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        Self::records_in(&self.bytes, self.len)
    }

    /// The first `len` records packed in `bytes`, which holds at least
    /// that many (written by `push`, or checked by `from_bytes`).
    fn records_in(bytes: &[u8], len: usize) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        let mut rest = bytes;
        (0..len).map(move |_| {
            let (record, tail) = take_record(rest).expect("a record packed by push or checked by from_bytes");
            rest = tail;
            record
        })
    }

    /// The records in `n` runs of consecutive records, as even as can be,
    /// each iterable on its own (a pass over all but the last run finds
    /// where each starts).
    fn runs(&self, n: usize) -> Vec<impl ExactSizeIterator<Item = RecordRef<'_>> + Send + '_> {
        let mut runs = Vec::with_capacity(n);
        let mut rest = self.bytes.as_slice();
        for i in 0..n {
            let len = self.len * (i + 1) / n - self.len * i / n;
            runs.push(Self::records_in(rest, len));
            if i + 1 < n {
                for _ in 0..len {
                    rest = take_record(rest).expect("a record packed by push or checked by from_bytes").1;
                }
            }
        }
        runs
    }

    /// The records, owned (two allocations each).
    pub fn to_records(&self) -> Vec<Record> {
        self.iter().map(|record| record.to_owned()).collect()
    }
}

/// One record off the front of `bytes` (as `encode_into` wrote it), and
/// the rest. Read directly, as `encode_into` writes: through serde, postcard
/// took ~240 instructions a record, and a load reads each record twice
/// (checked, then decoded). It accepts exactly what postcard accepts as a
/// `Wire` with an expiry in range (a test compares the two on random bytes).
#[inline]
fn take_record(bytes: &[u8]) -> Result<(RecordRef<'_>, &[u8]), &'static str> {
    let mut rest = bytes;
    let key = take_bytes(&mut rest)?;
    let value = take_bytes(&mut rest)?;
    let expires_at = match take_byte(&mut rest)? {
        0 => None,
        1 => {
            let secs = take_varint(&mut rest, MAX_VARINT)?;
            // A `u32`: at most 5 bytes, the last holding 4 bits.
            let nanos = take_varint(&mut rest, 5)?;
            if nanos >= 1_000_000_000 {
                return Err(OUT_OF_RANGE);
            }
            Some(SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos as u32)).ok_or(OUT_OF_RANGE)?)
        }
        _ => return Err("an expiry that is neither absent nor present"),
    };
    Ok((RecordRef { key, value, expires_at }, rest))
}

const OUT_OF_RANGE: &str = "an expiry out of range";
const CUT_SHORT: &str = "cut short";

#[inline]
fn take_byte(rest: &mut &[u8]) -> Result<u8, &'static str> {
    let (&first, tail) = rest.split_first().ok_or(CUT_SHORT)?;
    *rest = tail;
    Ok(first)
}

/// A length, then that many bytes.
#[inline]
fn take_bytes<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
    let len = take_varint(rest, MAX_VARINT)?;
    if len > rest.len() as u64 {
        return Err("a length past the end");
    }
    let (bytes, tail) = rest.split_at(len as usize);
    *rest = tail;
    Ok(bytes)
}

/// An unsigned varint of at most `max` bytes (10 for a `u64`, 5 for a
/// `u32`), refusing bits past the type's width in the last byte, as
/// postcard does.
#[inline]
fn take_varint(rest: &mut &[u8], max: usize) -> Result<u64, &'static str> {
    let mut out = 0u64;
    for i in 0..max {
        let byte = take_byte(rest)?;
        out |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // The last byte may hold only the type's remaining bits: 1 of a
            // `u64`'s 64, 4 of a `u32`'s 32.
            let room = if max == MAX_VARINT { 1 } else { 0x0F };
            return if i == max - 1 && byte > room { Err(BAD_VARINT) } else { Ok(out) };
        }
    }
    Err(BAD_VARINT)
}

const BAD_VARINT: &str = "a number longer than its type";

/// Bytes that are not packed records: see [`PackedRecords::from_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {index}: {reason}")]
#[non_exhaustive]
pub struct MalformedRecord {
    /// Which record (from 0) does not decode.
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Why a save or a load failed. The cache itself is never changed by a
/// failure, and a backend never overwrites or repairs a file it could not
/// read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Reading or writing `path` failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// `path` holds no valid snapshot: truncated, damaged, or not a snapshot
    /// at all. It was left as it is.
    #[error(
        "{} is not a valid async-cache snapshot ({reason}); it was left untouched: move it away to start with an empty cache",
        path.display()
    )]
    Corrupt {
        /// The file or database.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `path` was written by a newer version of async-cache.
    #[error(
        "{} holds a snapshot in format version {found}, newer than this build reads ({supported}): upgrade async-cache, or move the file away",
        path.display()
    )]
    UnsupportedVersion {
        /// The file or database.
        path: PathBuf,
        /// Its format version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A key or value could not be encoded (its `Serialize` failed or
    /// panicked). Nothing was written.
    #[error("could not encode a cache entry: {0}")]
    Encode(#[source] Box<dyn Error + Send + Sync>),
    /// The storage engine failed.
    #[error("{engine} failed on {}: {source}", path.display())]
    Storage {
        /// `"sled"` or `"sqlite"`.
        engine: &'static str,
        /// The database.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    /// The snapshot was saved for other key or value types, or another
    /// [`snapshot_version`](crate::CacheBuilder::snapshot_version): loading
    /// it could give entries wrong values. Nothing was loaded and the
    /// snapshot was left as it is.
    #[error(
        "the snapshot holds {found}, but this cache is {expected}: nothing was loaded and the snapshot was left untouched. \
         Start with an empty cache: the next save replaces the snapshot \
         (see \"Changing a cached type\" in async-cache's README)"
    )]
    SchemaMismatch {
        /// The snapshot's schema.
        found: String,
        /// This cache's.
        expected: String,
    },
    /// The cache was dropped before a final autosave could run.
    #[error("the cache was dropped: there is nothing left to save")]
    CacheDropped,
}

/// What [`Cache::save_to_backend`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveReport {
    /// Entries written.
    pub written: usize,
}

/// What [`Cache::load_from_backend`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadReport {
    /// Entries put in the cache.
    pub loaded: usize,
    /// Records whose expiry had passed.
    pub skipped_expired: usize,
    /// Records whose key or value no longer decodes into the cache's types.
    pub skipped_undecodable: usize,
}

/// A panic in user `Serialize`/`Deserialize` code on the blocking pool.
fn panicked(what: &str, panic: tokio::task::JoinError) -> BackendError {
    BackendError::Encode(format!("{what} panicked: {panic}").into())
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Saves the whole cache to `backend`, replacing its snapshot. Live
    /// entries only, coldest first (under [`Policy::Lru`](crate::Policy),
    /// least recently used first; under `TinyLfu`, probation, then the
    /// window, then the protected region), each with its expiry.
    ///
    /// Entries are copied one shard at a time (`get` never waits, `insert`
    /// at most for one shard's copy); encoding and I/O run on the blocking
    /// pool, and a snapshot of 16,384 entries or more is encoded on as many
    /// threads of its own as the machine has cores (four at most), while
    /// the backend writes what is done. Saves of one cache run one at a
    /// time.
    ///
    /// Needs the `file`, `sled` or `sqlite` feature of async-cache.
    ///
    /// # Errors
    ///
    /// [`BackendError`]: nothing was saved, the previous snapshot is intact.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::{Cache, FileBackend};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let backend = FileBackend::new(dir.path().join("users.cache"));
    ///
    /// let cache = Cache::<u64, String>::new(1_000);
    /// cache.insert(1, "ada".into());
    /// assert_eq!(cache.save_to_backend(&backend).await?.written, 1);
    ///
    /// let restarted = Cache::<u64, String>::new(1_000);
    /// assert_eq!(restarted.load_from_backend(&backend).await?.loaded, 1);
    /// assert_eq!(restarted.get(&1).as_deref(), Some("ada"));
    /// # Ok(()) }
    /// ```
    pub async fn save_to_backend<B: Backend + ?Sized>(&self, backend: &B) -> Result<SaveReport, BackendError> {
        let _one_at_a_time = self.store.save_lock.lock().await;
        // Copying and encoding run together on the blocking pool: each entry
        // is encoded where it lies, without a clone.
        // The backend writes each part as it comes, while the rest is
        // encoded.
        let (sender, parts) = PackedStream::channel();
        let expected_bytes = Arc::clone(&parts.expected_bytes);
        let store = Arc::clone(&self.store);
        let packer = tokio::task::spawn_blocking(move || {
            let snapshot = store.snapshot();
            let walls = store.clock.walls();
            let encode = |packing: &mut Packing<'_>, range| {
                snapshot.visit(range, |key, value, expires| packing.push(key, value, walls.unix_parts(expires)))
            };
            let estimate = Estimate { entries: snapshot.len(), bytes: expected_bytes };
            let workers = encoders(snapshot.len());
            if workers < 2 {
                let mut to_backend = |part| send(&sender, part);
                let mut packing = Packing::new(&mut to_backend, Some(estimate));
                let written = encode(&mut packing, 0..snapshot.len())?;
                packing.flush()?;
                end(&sender)?;
                return Ok(written);
            }
            encode_in_parallel(snapshot.len(), workers, estimate, &sender, encode)
        });
        let saved = backend.save_stream(&self.schema(), parts).await;
        let packed = packer.await.map_err(|panic| panicked("Serialize", panic))?;
        // Whichever side stopped first says why: an entry that did not
        // encode (the backend then only saw the stream end early), or the
        // backend (the encoder then only saw it stop reading).
        match (packed, saved) {
            (Ok(written), Ok(())) => Ok(SaveReport { written }),
            (Err(Stop::Encode(error)), _) | (_, Err(error)) => Err(error),
            (Err(Stop::Closed), Ok(())) => {
                Err(BackendError::Encode("the backend returned before it read the whole snapshot".into()))
            }
        }
    }

    /// Loads `backend`'s snapshot into the cache, merging: saved keys
    /// overwrite present ones, in saved order (the hottest ends most
    /// recent). Each entry keeps exactly its saved expiry; expired records
    /// and records that no longer decode are skipped and counted. Of a
    /// snapshot larger than `max_size`, only the hottest `max_size` live
    /// records are inserted (all are counted as loaded).
    ///
    /// A missing snapshot loads nothing and is not an error. A snapshot saved
    /// for other key or value types, or another
    /// [`snapshot_version`](crate::CacheBuilder::snapshot_version), is refused.
    ///
    /// Needs the `file`, `sled` or `sqlite` feature of async-cache.
    ///
    /// # Errors
    ///
    /// [`BackendError`]: nothing was loaded; the cache and the stored
    /// snapshot are as they were.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::{Cache, FileBackend};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let backend = FileBackend::new(dir.path().join("none-yet.cache"));
    /// let cache = Cache::<u64, String>::new(1_000);
    /// let report = cache.load_from_backend(&backend).await?; // no file yet: fine
    /// assert_eq!(report.loaded, 0);
    /// # Ok(()) }
    /// ```
    pub async fn load_from_backend<B: Backend + ?Sized>(&self, backend: &B) -> Result<LoadReport, BackendError> {
        let PackedSnapshot { schema, records } = backend.load_packed().await?;
        let expected = self.schema();
        if let Some(found) = schema
            && found != expected
        {
            return Err(BackendError::SchemaMismatch { found, expected });
        }
        let (runs, report) = tokio::task::spawn_blocking(move || decode::<K, V>(&records))
            .await
            .map_err(|panic| panicked("Deserialize", panic))?;
        // Only the hottest `max_size` can stay: the rest would be inserted
        // only to be evicted (under LRU, the same end state; under TinyLFU,
        // whose fresh counts cannot tell the saved entries apart, the only
        // way the hottest stay).
        let surplus = report.loaded.saturating_sub(self.store.config.max_size);
        self.store.reserve(report.loaded - surplus);
        // In saved order, a lock per chunk: the last saved ends most recent.
        self.store.insert_all(runs.into_iter().flatten().skip(surplus), LOAD_CHUNK);
        Ok(report)
    }

    /// Saves the cache to `backend` every `every`, in the background, never
    /// two saves at once. [`AutosaveHandle::shutdown`] saves once more and
    /// stops; the task also stops when the cache is dropped.
    ///
    /// Dropping the handle stops the task too (a save under way finishes;
    /// no other starts), as dropping a `MetricsReporter` stops publishing:
    /// a background task of the cache lives as long as the handle you hold,
    /// and `#[must_use]` makes dropping it at once a warning, not a
    /// surprise. Keep the handle for as long as the cache should be saved.
    ///
    /// Needs the `file`, `sled` or `sqlite` feature of async-cache.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_cache::{Cache, FileBackend};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let cache = Cache::<u64, String>::new(1_000);
    /// let autosave = cache.autosave(FileBackend::new(dir.path().join("c.cache")), Duration::from_secs(30));
    /// cache.insert(1, "ada".into());
    /// // On shutdown: one last save.
    /// assert_eq!(autosave.shutdown().await?.written, 1);
    /// # Ok(()) }
    /// ```
    pub fn autosave<B: Backend + 'static>(&self, backend: B, every: Duration) -> AutosaveHandle {
        let (stop, stopped) = oneshot::channel::<StopRequest>();
        let status = Arc::new(Mutex::new(AutosaveStatus::default()));
        let weak = self.downgrade();
        let task_status = Arc::clone(&status);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut stopped = stopped;
            loop {
                let reply = tokio::select! {
                    _ = ticks.tick() => None,
                    reply = &mut stopped => match reply {
                        Ok(reply) => Some(reply),
                        // The handle was dropped: stop.
                        Err(_) => return,
                    },
                };
                let Some(cache) = weak.upgrade() else {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(BackendError::CacheDropped));
                    }
                    return;
                };
                let result = cache.save_to_backend(&backend).await;
                task_status.lock().unwrap_or_else(|e| e.into_inner()).record(&result);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                    return;
                }
            }
        });
        AutosaveHandle { stop: Some(stop), status, task }
    }
}

impl<K, V, S> Cache<K, V, S> {
    /// What this cache's snapshots hold: its key and value types by name,
    /// and its snapshot version.
    fn schema(&self) -> String {
        format!(
            "`{}` -> `{}`, snapshot version {}",
            std::any::type_name::<K>(),
            std::any::type_name::<V>(),
            self.store.config.snapshot_version
        )
    }
}

/// Entries inserted per lock acquisition by a load.
const LOAD_CHUNK: usize = 256;

/// The snapshot's encoder: packs entries as a save visits them into parts
/// of about [`PART_BYTES`], each handed to `send` when full. Each key and
/// value is encoded into a scratch buffer reused for every entry, then
/// copied into the part, so an entry costs no allocation of its own.
struct Packing<'a> {
    key: Vec<u8>,
    value: Vec<u8>,
    part: PackedRecords,
    send: Sink<'a>,
    /// Set until the first record says how large the snapshot will be.
    estimate: Option<Estimate>,
}

/// Where to say how many bytes the snapshot will take, once its first
/// record is encoded (for a backend that collects the parts).
struct Estimate {
    entries: usize,
    bytes: Arc<AtomicUsize>,
}

/// Why the encoder stopped.
enum Stop {
    /// An entry did not encode.
    Encode(BackendError),
    /// The backend stopped reading.
    Closed,
}

impl From<BackendError> for Stop {
    fn from(error: BackendError) -> Self {
        Stop::Encode(error)
    }
}

/// Hands a part to the backend's stream.
fn send(parts: &tokio::sync::mpsc::Sender<Part>, part: PackedRecords) -> Result<(), Stop> {
    parts.blocking_send(Part::Records(part)).map_err(|_| Stop::Closed)
}

/// Tells the backend's stream that the last part was sent.
fn end(parts: &tokio::sync::mpsc::Sender<Part>) -> Result<(), Stop> {
    parts.blocking_send(Part::End).map_err(|_| Stop::Closed)
}

/// Where a [`Packing`] hands its parts.
type Sink<'a> = &'a mut dyn FnMut(PackedRecords) -> Result<(), Stop>;

impl<'a> Packing<'a> {
    fn new(send: Sink<'a>, estimate: Option<Estimate>) -> Self {
        Packing { key: Vec::new(), value: Vec::new(), part: PackedRecords::with_capacity(PART_BYTES), send, estimate }
    }

    /// Appends an entry whose expiry is `expires` (see
    /// [`unix_parts`](crate::time::Walls::unix_parts)).
    fn push<K: Serialize, V: Serialize>(
        &mut self,
        key: &K,
        value: &V,
        expires: Option<(u64, u32)>,
    ) -> Result<(), Stop> {
        encode_reusing(key, &mut self.key)?;
        encode_reusing(value, &mut self.value)?;
        self.part.push_parts(&self.key, &self.value, expires);
        if let Some(estimate) = self.estimate.take() {
            estimate.bytes.store(self.part.bytes.len().saturating_mul(estimate.entries), Ordering::Relaxed);
        }
        if self.part.bytes.len() >= PART_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands over the part being filled, if it holds anything.
    fn flush(&mut self) -> Result<(), Stop> {
        if self.part.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.part, PackedRecords::with_capacity(PART_BYTES));
        (self.send)(full)
    }
}

/// Entries a parallel encoder takes at a time; an encoder of fewer
/// entries than two of these runs on one thread.
const CHUNK: usize = 8_192;
/// The most threads a snapshot is encoded on.
const MAX_ENCODERS: usize = 4;

/// How many threads to encode a snapshot of `entries` on.
fn encoders(entries: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    cores.min(MAX_ENCODERS).min(entries / CHUNK)
}

/// What a parallel encoder hands on, in order.
enum Piece {
    Part(PackedRecords),
    /// The end of one of its chunks, with how many records it wrote.
    ChunkEnd(usize),
    Failed(Stop),
}

/// Encodes `entries` on `workers` threads, which take chunks of [`CHUNK`]
/// in turn, and hands the parts to `sender` in snapshot order: this thread
/// only forwards. Each worker keeps at most two parts waiting, so memory
/// stays bounded whatever the backend's pace. Ends the stream only when
/// every chunk arrived whole: a worker that fails or panics (user
/// `Serialize`) leaves it unended, so the backend saves nothing, and its
/// panic goes on here, as it would have on one thread. Returns how many
/// records were written.
fn encode_in_parallel<F>(
    entries: usize,
    workers: usize,
    estimate: Estimate,
    sender: &tokio::sync::mpsc::Sender<Part>,
    encode: F,
) -> Result<usize, Stop>
where
    F: Fn(&mut Packing<'_>, std::ops::Range<usize>) -> Result<usize, Stop> + Sync,
{
    let chunks = entries.div_ceil(CHUNK);
    std::thread::scope(|scope| {
        let mut estimate = Some(estimate);
        let (receivers, handles): (Vec<_>, Vec<_>) = (0..workers)
            .map(|worker| {
                let (pieces, receiver) = std::sync::mpsc::sync_channel(2);
                let estimate = estimate.take();
                let encode = &encode;
                let handle = scope.spawn(move || {
                    let mut to_forwarder = |part| pieces.send(Piece::Part(part)).map_err(|_| Stop::Closed);
                    let mut packing = Packing::new(&mut to_forwarder, estimate);
                    for chunk in (worker..chunks).step_by(workers) {
                        let range = chunk * CHUNK..((chunk + 1) * CHUNK).min(entries);
                        let done = encode(&mut packing, range).and_then(|written| packing.flush().map(|()| written));
                        let (piece, go_on) = match done {
                            Ok(written) => (Piece::ChunkEnd(written), true),
                            Err(stop) => (Piece::Failed(stop), false),
                        };
                        if pieces.send(piece).is_err() || !go_on {
                            return;
                        }
                    }
                });
                (receiver, handle)
            })
            .unzip();
        let forwarded = forward(&receivers, chunks, sender);
        // A worker blocked on its full channel stops once the channel is
        // gone; then each is joined, and a panic in one goes on here.
        drop(receivers);
        join_all(handles);
        forwarded
    })
}

/// Joins every thread, then goes on with the first one's panic, if any
/// panicked (its own payload, as if it had run here); else their results,
/// in order.
fn join_all<T>(threads: Vec<std::thread::ScopedJoinHandle<'_, T>>) -> Vec<T> {
    let joined: Vec<_> = threads.into_iter().map(std::thread::ScopedJoinHandle::join).collect();
    joined.into_iter().map(|result| result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
}

/// Hands the workers' parts to the backend, chunk by chunk in snapshot
/// order (chunk `c` is worker `c % workers`'s), then ends the stream.
fn forward(
    receivers: &[std::sync::mpsc::Receiver<Piece>],
    chunks: usize,
    sender: &tokio::sync::mpsc::Sender<Part>,
) -> Result<usize, Stop> {
    let mut written = 0;
    for chunk in 0..chunks {
        loop {
            // Gone without its chunk's end: the worker panicked (the
            // caller re-raises it).
            let Ok(piece) = receivers[chunk % receivers.len()].recv() else {
                return Err(Stop::Closed);
            };
            match piece {
                Piece::Part(part) => send(sender, part)?,
                Piece::ChunkEnd(chunk_written) => {
                    written += chunk_written;
                    break;
                }
                Piece::Failed(stop) => return Err(stop),
            }
        }
    }
    end(sender)?;
    Ok(written)
}

/// `item` in postcard, into `buffer` (emptied first, its room kept).
fn encode_reusing<T: Serialize>(item: &T, buffer: &mut Vec<u8>) -> Result<(), BackendError> {
    buffer.clear();
    *buffer = postcard::to_extend(item, std::mem::take(buffer)).map_err(|e| BackendError::Encode(e.into()))?;
    Ok(())
}

/// The live entries decoded, each with the TTL it has left, in runs that
/// follow one another in saved order; and the report.
type Decoded<K, V> = (Vec<Vec<(K, V, Option<Duration>)>>, LoadReport);

/// Decodes the records that have not expired, straight from their buffer:
/// a snapshot of two chunks or more on as many threads as the machine has
/// cores (four at most), each a run of consecutive records, so that their
/// runs in turn are the snapshot in order. Decoding (user `Deserialize`
/// code, an allocation and a UTF-8 check per `String`) is half a load. A
/// panic in one thread goes on, with its own payload, once all are joined.
fn decode<K, V>(records: &PackedRecords) -> Decoded<K, V>
where
    K: DeserializeOwned + Send,
    V: DeserializeOwned + Send,
{
    let now = SystemTime::now();
    let runs = records.runs(encoders(records.len()).max(1));
    let decoded: Vec<_> = if runs.len() == 1 {
        runs.into_iter().map(|run| decode_run(run, now)).collect()
    } else {
        std::thread::scope(|scope| {
            join_all(runs.into_iter().map(|run| scope.spawn(move || decode_run(run, now))).collect())
        })
    };
    let mut report = LoadReport::default();
    for (run, counts) in &decoded {
        report.loaded += run.len();
        report.skipped_expired += counts.skipped_expired;
        report.skipped_undecodable += counts.skipped_undecodable;
    }
    (decoded.into_iter().map(|(run, _)| run).collect(), report)
}

/// One run of [`decode`]: its live entries, and what it skipped.
fn decode_run<'a, K, V>(
    run: impl Iterator<Item = RecordRef<'a>>,
    now: SystemTime,
) -> (Vec<(K, V, Option<Duration>)>, LoadReport)
where
    K: DeserializeOwned,
    V: DeserializeOwned,
{
    let mut report = LoadReport::default();
    let live = run
        .filter_map(|record| {
            // Expired records are not decoded at all.
            let ttl = Clock::remaining(record.expires_at, now);
            if ttl == Some(Duration::ZERO) {
                report.skipped_expired += 1;
                return None;
            }
            match (exactly(record.key), exactly(record.value)) {
                (Some(key), Some(value)) => Some((key, value, ttl)),
                _ => {
                    report.skipped_undecodable += 1;
                    None
                }
            }
        })
        .collect();
    (live, report)
}

/// `bytes` decoded as a `T` that takes all of them. Bytes left over mean
/// they were written for another type (one with a field since removed, say):
/// such a record does not decode, rather than load as something it was not.
fn exactly<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match postcard::take_from_bytes(bytes) {
        Ok((item, [])) => Some(item),
        _ => None,
    }
}

type StopRequest = oneshot::Sender<Result<SaveReport, BackendError>>;

#[derive(Debug, Default)]
struct AutosaveStatus {
    saves: u64,
    failures: u64,
    last_error: Option<String>,
}

impl AutosaveStatus {
    fn record(&mut self, result: &Result<SaveReport, BackendError>) {
        match result {
            Ok(_) => self.saves += 1,
            Err(error) => {
                self.failures += 1;
                self.last_error = Some(error.to_string());
            }
        }
    }
}

/// The background task of [`Cache::autosave`]; dropping it stops the task.
#[must_use = "autosave stops when the AutosaveHandle is dropped: keep it for as long as the cache should be saved"]
pub struct AutosaveHandle {
    stop: Option<oneshot::Sender<StopRequest>>,
    status: Arc<Mutex<AutosaveStatus>>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for AutosaveHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutosaveHandle").field("status", &self.status).finish_non_exhaustive()
    }
}

impl AutosaveHandle {
    /// Saves once more, waits for that save, and stops.
    ///
    /// # Errors
    ///
    /// The last save's error, or [`BackendError::CacheDropped`] if the cache
    /// is gone.
    ///
    /// # Examples
    ///
    /// See [`Cache::autosave`].
    pub async fn shutdown(mut self) -> Result<SaveReport, BackendError> {
        let (reply, result) = oneshot::channel();
        let stop = self.stop.take().expect("shutdown runs once");
        if stop.send(reply).is_err() {
            return Err(BackendError::CacheDropped);
        }
        result.await.unwrap_or(Err(BackendError::CacheDropped))
    }

    /// Background saves that succeeded so far.
    ///
    /// # Examples
    ///
    /// See [`Cache::autosave`].
    pub fn saves(&self) -> u64 {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).saves
    }

    /// Background saves that failed so far, and the last failure's message.
    ///
    /// # Examples
    ///
    /// See [`Cache::autosave`].
    pub fn failures(&self) -> (u64, Option<String>) {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        (status.failures, status.last_error.clone())
    }

    /// Whether the task has stopped (after `shutdown`, or the cache was
    /// dropped).
    ///
    /// # Examples
    ///
    /// See [`Cache::autosave`].
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 0..256),
            prop::option::of((0u64..1 << 40, 0u32..1_000_000_000)),
        )
            .prop_map(|(key, value, at)| Record {
                key,
                value,
                expires_at: at.map(|(secs, nanos)| SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)),
            })
    }

    /// What postcard takes off the front of `bytes` as a `Wire`, if its
    /// expiry is in range.
    fn postcard_take(bytes: &[u8]) -> Option<(RecordRef<'_>, &[u8])> {
        let (wire, rest) = postcard::take_from_bytes::<Wire<'_>>(bytes).ok()?;
        let expires_at = match wire.expires_at {
            None => None,
            Some((secs, nanos)) if nanos < 1_000_000_000 => {
                Some(SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))?)
            }
            Some(_) => return None,
        };
        Some((RecordRef { key: wire.key, value: wire.value, expires_at }, rest))
    }

    /// Reserving for a load sizes the tables as inserting would have, at
    /// once: no more words, and (nearly) no table grows afterwards.
    #[test]
    fn reserved_tables_are_the_size_inserts_would_grow() {
        let n: u64 = if cfg!(miri) { 3_000 } else { 100_000 };
        let key = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let build = || Cache::<u64, u64>::new(n as usize);
        let (grown, reserved) = (build(), build());
        reserved.store.reserve(n as usize);
        let before = reserved.store.table_capacities();
        for i in 0..n {
            grown.insert(key(i), i);
            reserved.insert(key(i), i);
        }
        let after = reserved.store.table_capacities();
        assert_eq!(after.iter().sum::<usize>(), grown.store.table_capacities().iter().sum::<usize>());
        let regrown = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert!(regrown * 4 <= after.len(), "{regrown} of {} tables grew after the reserve", after.len());
    }

    /// A load's runs are the records in order, split as evenly as can be.
    #[test]
    fn runs_cover_the_records_in_order() {
        for len in 0..=9u8 {
            let records: Vec<_> = (0..len)
                .map(|i| Record { key: vec![i], value: vec![i; usize::from(i) * 30], expires_at: None })
                .collect();
            let packed = PackedRecords::from_records(&records);
            for n in 1..=5 {
                let runs: Vec<Vec<Record>> =
                    packed.runs(n).into_iter().map(|run| run.map(|r| r.to_owned()).collect()).collect();
                assert_eq!(runs.len(), n);
                let sizes: Vec<usize> = runs.iter().map(Vec::len).collect();
                let (least, most) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(most - least <= 1, "{len} in {n}: {sizes:?}");
                assert_eq!(runs.concat(), records, "{len} in {n}");
            }
        }
    }

    /// Numbers at the edges of their varints, which random bytes seldom
    /// reach: read as postcard reads them.
    #[test]
    fn varints_at_their_limits_are_read_as_postcard_reads_them() {
        let head = [1, 7, 0, 1]; // key [7], empty value, an expiry
        let secs: [&[u8]; 4] = [
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], // u64::MAX
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02], // past it
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], // zero, overlong
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], // eleven bytes
        ];
        let nanos: [&[u8]; 5] = [
            &[0x80, 0x80, 0x80, 0x80, 0x00],       // zero in five bytes
            &[0x80, 0x80, 0x80, 0x80, 0x0F],       // 15 << 28: a u32, out of range
            &[0x80, 0x80, 0x80, 0x80, 0x10],       // past a u32
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], // six bytes
            &[0xFF, 0x93, 0xEB, 0xDC, 0x03],       // 999,999,999
        ];
        let mut tried = 0;
        for secs in secs {
            for nanos in nanos {
                let bytes = [&head[..], secs, nanos, &[42]].concat();
                assert_eq!(take_record(&bytes).ok(), postcard_take(&bytes), "{bytes:x?}");
                tried += usize::from(postcard_take(&bytes).is_some());
            }
        }
        // u64::MAX seconds overflow a `SystemTime`: only the overlong zero
        // seconds, with zero or 999,999,999 nanoseconds, are records.
        assert_eq!(tried, 2);
    }

    proptest! {
        #[test]
        fn records_read_back_as_packed(records in prop::collection::vec(arb_record(), 0..20)) {
            let bytes = PackedRecords::from_records(&records).as_bytes().to_vec();
            let back = PackedRecords::from_bytes(bytes).unwrap();
            prop_assert_eq!(back.len(), records.len());
            prop_assert_eq!(back.to_records(), records);
        }

        /// The hand-written reader takes exactly what postcard takes as a
        /// `Wire` (with the expiry in range), from random bytes and from
        /// records with one byte changed.
        #[test]
        fn records_are_read_as_postcard_reads_them(
            bytes in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..48),
                (arb_record(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(record, at, byte)| {
                    let mut bytes = Vec::new();
                    record.as_ref().encode_into(&mut bytes);
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                    bytes
                }),
            ]
        ) {
            prop_assert_eq!(take_record(&bytes).ok(), postcard_take(&bytes));
        }

        /// Whatever the bytes, reading them back is an error or records
        /// that iterate (no panic) and are no larger than the bytes.
        #[test]
        fn garbage_is_an_error_or_records_no_larger_than_it(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(packed) = PackedRecords::from_bytes(bytes.clone()) {
                let size: usize = packed.iter().map(|r| r.key.len() + r.value.len()).sum();
                prop_assert!(size <= bytes.len());
            }
        }
    }

    #[test]
    fn a_forged_length_or_expiry_is_refused_without_allocating_it() {
        // A key claiming 2^40 bytes (varint), with 3 bytes behind it.
        let forged = vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 1, 2, 3];
        assert!(PackedRecords::from_bytes(forged).is_err());
        // A second record whose expiry has a billion nanoseconds.
        let mut bytes = PackedRecords::from_records(&[Record { key: vec![1], value: vec![2], expires_at: None }])
            .as_bytes()
            .to_vec();
        bytes.extend([1, 5, 1, 6, 1, 1]);
        let mut nanos = Vec::new();
        varint(&mut nanos, 1_000_000_000);
        bytes.extend(nanos);
        let err = PackedRecords::from_bytes(bytes).unwrap_err();
        assert_eq!((err.index, err.reason.as_str()), (1, "an expiry out of range"), "{err}");
    }

    /// `encode_into` writes exactly what postcard makes of a `Wire`, which
    /// is what every decoder reads.
    #[test]
    fn records_are_encoded_as_postcard_encodes_them() {
        let long = vec![7u8; 300];
        let times = [
            None,
            Some(SystemTime::UNIX_EPOCH),
            Some(SystemTime::UNIX_EPOCH + Duration::new(127, 128)),
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 999_999_999)),
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(1 << 62, 5)),
        ];
        for (key, value) in [(&b""[..], &b""[..]), (b"k", &long[..]), (&long[..127], &long[..128])] {
            for expires_at in times {
                let mut ours = vec![9]; // appends, after what is there
                RecordRef { key, value, expires_at }.encode_into(&mut ours);
                let wire = Wire { key, value, expires_at: expires_at.map(wall_clock_parts) };
                let mut theirs = vec![9];
                theirs.extend(postcard::to_allocvec(&wire).unwrap());
                assert_eq!(ours, theirs, "{} {} {expires_at:?}", key.len(), value.len());
            }
        }
    }
}
