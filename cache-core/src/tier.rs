//! A second level shared by every replica of a service (async-cache's
//! `RedisTier`): the interface the engine talks to, and the typed link a
//! tiered cache holds.
//!
//! The engine speaks bytes to the tier: keys and values in postcard (the
//! file backend's codec), each value behind its absolute deadline, so a
//! replica that finds it stores it locally for what is left of its TTL.
//! Everything typed (encoding, decoding, counting) stays here, behind plain
//! function pointers made where `K` and `V` are known to be serde types
//! ([`CacheBuilder::tier`](crate::CacheBuilder::tier)): `Cache<K, V>`'s own
//! bounds do not mention serde, and a cache without a tier pays one
//! `Option` check on its write path, none on its read path.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::stats::Counters;
use crate::store::Store;

/// A shared second level behind a [`Cache`](crate::Cache): async-cache's
/// `RedisTier` (feature `redis`) implements it, and
/// [`CacheBuilder::tier`](crate::CacheBuilder::tier) takes any
/// implementation.
///
/// It deals in bytes: the engine encodes keys and values (postcard) and
/// names the cache each call is for. An implementation keeps entries of one
/// cache name apart from another's, bounds every call's wait, and tells the
/// attached [`Replica`]s what other replicas changed.
///
/// # Examples
///
/// Two replicas (two caches in one process) sharing an in-memory tier:
/// a whole implementation, without expiry or bounds.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex, Weak};
/// use async_cache::{Cache, Replica, Tier, TierFault, TierWrite};
/// use futures_util::future::BoxFuture;
///
/// #[derive(Debug, Default, Clone)]
/// struct Shared(Arc<Inner>);
///
/// #[derive(Default)]
/// struct Inner {
///     values: Mutex<HashMap<(String, Vec<u8>), Vec<u8>>>,
///     replicas: Mutex<Vec<(String, Weak<dyn Replica>)>>,
/// }
///
/// impl std::fmt::Debug for Inner {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("Inner")
///     }
/// }
///
/// impl Shared {
///     /// Every replica of `cache` but `from`.
///     fn others(&self, cache: &str, from: u64) -> Vec<Arc<dyn Replica>> {
///         let replicas = self.0.replicas.lock().unwrap();
///         let live = replicas.iter().filter(|(name, _)| name == cache).filter_map(|(_, r)| r.upgrade());
///         live.filter(|replica| replica.id() != from).collect()
///     }
/// }
///
/// impl Tier for Shared {
///     fn get<'a>(&'a self, cache: &'a str, keys: &'a [&'a [u8]])
///         -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, TierFault>> {
///         let values = self.0.values.lock().unwrap();
///         let found = keys.iter().map(|key| values.get(&(cache.to_string(), key.to_vec())).cloned()).collect();
///         Box::pin(async move { Ok(found) })
///     }
///
///     fn write(&self, cache: &str, write: TierWrite) {
///         let mut values = self.0.values.lock().unwrap();
///         match write {
///             TierWrite::Put { key, value, from, .. } => {
///                 values.insert((cache.to_string(), key.clone()), value);
///                 drop(values);
///                 self.others(cache, from).iter().for_each(|replica| replica.invalidate(&key));
///             }
///             TierWrite::Remove { key, from } => {
///                 values.remove(&(cache.to_string(), key.clone()));
///                 drop(values);
///                 self.others(cache, from).iter().for_each(|replica| replica.invalidate(&key));
///             }
///             TierWrite::Clear { from } => {
///                 values.retain(|(name, _), _| name != cache);
///                 drop(values);
///                 self.others(cache, from).iter().for_each(|replica| replica.invalidate_all());
///             }
///             _ => {}
///         }
///     }
///
///     fn attach(&self, cache: &str, replica: Weak<dyn Replica>) {
///         self.0.replicas.lock().unwrap().push((cache.to_string(), replica));
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let tier = Shared::default();
/// let a: Cache<u64, String> = Cache::builder().name("users").tier(tier.clone()).build();
/// let b: Cache<u64, String> = Cache::builder().name("users").tier(tier.clone()).build();
/// a.get_or_load(1, || async { "Ada".to_string() }).await;
/// // B's miss is served by the tier: its loader never runs.
/// assert_eq!(b.get_or_load(1, || async { unreachable!() }).await, "Ada");
/// assert_eq!(b.metrics().tier_hits, 1);
/// // A's removal reaches B.
/// a.remove(&1);
/// assert_eq!(b.get(&1), None);
/// # }
/// ```
pub trait Tier: fmt::Debug + Send + Sync + 'static {
    /// The values stored for `keys` in the cache named `cache`, one per key
    /// and in order (`None`: not there), in one round trip.
    fn get<'a>(
        &'a self,
        cache: &'a str,
        keys: &'a [&'a [u8]],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, TierFault>>;

    /// Queues a write and returns at once. Writes reach the tier in the
    /// order they were queued; one that cannot is reported to its replica
    /// with [`Replica::write_failed`].
    fn write(&self, cache: &str, write: TierWrite);

    /// Registers a local cache named `cache`: from now on it hears what
    /// other replicas change ([`Replica::invalidate`]), and is told to drop
    /// everything when it may have missed some of that
    /// ([`Replica::invalidate_all`]). Dropped replicas are forgotten.
    fn attach(&self, cache: &str, replica: Weak<dyn Replica>);
}

/// Why [`Tier::get`] has no answer. See [`Tier`]'s example for a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TierFault {
    /// The tier was not asked: it failed moments ago and is being
    /// reconnected. Not counted as an error again.
    Unavailable,
    /// The call failed or took longer than its bound.
    Failed,
}

/// A write queued with [`Tier::write`]; `from` is the writing replica's
/// [`Replica::id`], so that it does not invalidate its own entries. See
/// [`Tier`]'s example for a tier that handles them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TierWrite {
    /// Store `value` under `key`, expiring after `ttl` (`None`: never).
    Put {
        /// The encoded key.
        key: Vec<u8>,
        /// The encoded value (with its deadline: opaque to the tier).
        value: Vec<u8>,
        /// How long the tier keeps it.
        ttl: Option<Duration>,
        /// What kind of write this is.
        kind: PutKind,
        /// The writing replica.
        from: u64,
    },
    /// Remove `key` and tell the other replicas.
    Remove {
        /// The encoded key.
        key: Vec<u8>,
        /// The writing replica.
        from: u64,
    },
    /// Remove every key of the cache and tell the other replicas.
    Clear {
        /// The writing replica.
        from: u64,
    },
}

/// How a [`TierWrite::Put`] meets what is already in the tier (see
/// [`Tier`]'s example).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutKind {
    /// An `insert`: replaces any value, and other replicas drop theirs.
    Insert,
    /// A loaded value: stored only if the key has none (a value another
    /// replica wrote meanwhile wins); other replicas are not told.
    Loaded,
    /// A refresh-ahead reload: replaces the value; other replicas keep
    /// theirs until they refresh or it expires.
    Refreshed,
}

/// A local cache attached to a [`Tier`], as the tier sees it (see
/// [`Tier`]'s example: the tier tells replicas what others changed).
pub trait Replica: Send + Sync {
    /// Tells this replica's writes from others'.
    fn id(&self) -> u64;
    /// Another replica changed or removed the key encoded as `key`: the
    /// local copy goes (a load in flight for it is not stored).
    fn invalidate(&self, key: &[u8]);
    /// Invalidations may have been missed (the channel was lost), or
    /// another replica cleared the cache: every local entry goes.
    fn invalidate_all(&self);
    /// A write of this replica did not reach the tier (counted).
    fn write_failed(&self);
}

/// What a tiered store holds: its tier, and how to turn its keys and
/// values into bytes and back.
pub(crate) struct Link<K, V> {
    tier: Arc<dyn Tier>,
    /// This replica, to the tier.
    pub(crate) id: u64,
    encode_key: fn(&K) -> postcard::Result<Vec<u8>>,
    decode_key: fn(&[u8]) -> Option<K>,
    encode_value: fn(&V, Vec<u8>) -> postcard::Result<Vec<u8>>,
    decode_value: fn(&[u8]) -> Option<V>,
    /// This store as the tier sees it: owned here, held weakly there.
    replica: OnceLock<Arc<dyn Replica>>,
}

/// Made in [`CacheBuilder::tier`](crate::CacheBuilder::tier), where the serde bounds hold.
pub(crate) fn link<K, V>(tier: Arc<dyn Tier>) -> Link<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    Link {
        tier,
        id: fastrand::u64(1..),
        encode_key: |key| postcard::to_allocvec(key),
        decode_key: |bytes| postcard::from_bytes(bytes).ok(),
        encode_value: |value, out| postcard::to_extend(value, out),
        decode_value: |bytes| postcard::from_bytes(bytes).ok(),
        replica: OnceLock::new(),
    }
}

/// A value's bytes in the tier: its deadline (milliseconds since the Unix
/// epoch, little-endian; 0 for none), then the value.
const DEADLINE: usize = 8;

impl<K, V> Link<K, V> {
    /// `key` encoded, or `None` (counted) if its `Serialize` fails.
    pub(crate) fn key(&self, counters: &Counters, key: &K) -> Option<Vec<u8>> {
        (self.encode_key)(key).inspect_err(|_| counters.tier_errors.inc()).ok()
    }

    /// A borrowed key encoded: `K` itself, or `str` / `[u8]` (whose serde
    /// form is that of every `K` that borrows as them: `String`,
    /// `Box<str>`, `Arc<str>`, `Vec<u8>`...). `None` for any other form.
    pub(crate) fn borrowed_key<Q: ?Sized>(&self, counters: &Counters, key: &Q) -> Option<Vec<u8>>
    where
        K: Borrow<Q>,
    {
        let q = typeid::of::<Q>();
        let encoded = if q == typeid::of::<K>() {
            // SAFETY: `Q` is `K` (same type id): the pointer is to a `K`.
            return self.key(counters, unsafe { &*(key as *const Q).cast::<K>() });
        } else if q == typeid::of::<str>() {
            // SAFETY: `Q` is `str` (same type id): `&Q` is a `&str`.
            postcard::to_allocvec(unsafe { std::mem::transmute_copy::<&Q, &str>(&key) })
        } else if q == typeid::of::<[u8]>() {
            // SAFETY: `Q` is `[u8]` (same type id): `&Q` is a `&[u8]`.
            postcard::to_allocvec(unsafe { std::mem::transmute_copy::<&Q, &[u8]>(&key) })
        } else {
            counters.tier_errors.inc();
            return None;
        };
        encoded.inspect_err(|_| counters.tier_errors.inc()).ok()
    }

    /// `value` as the tier stores it, or `None` (counted) if its
    /// `Serialize` fails.
    pub(crate) fn value(&self, counters: &Counters, value: &V, ttl: Option<Duration>) -> Option<Vec<u8>> {
        let deadline = ttl.map_or(0, |ttl| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            u64::try_from(now.saturating_add(ttl).as_millis()).unwrap_or(u64::MAX).max(1)
        });
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&deadline.to_le_bytes());
        (self.encode_value)(value, out).inspect_err(|_| counters.tier_errors.inc()).ok()
    }

    /// A value found in the tier and what is left of its TTL; `None`
    /// (counted as an error) if it does not decode, `None` too if its
    /// deadline has passed.
    fn decode(&self, counters: &Counters, bytes: &[u8]) -> Option<(V, Option<Duration>)> {
        let decoded = bytes.split_first_chunk::<DEADLINE>().and_then(|(deadline, value)| {
            let value = (self.decode_value)(value)?;
            Some((value, u64::from_le_bytes(*deadline)))
        });
        let Some((value, deadline)) = decoded else {
            counters.tier_errors.inc();
            return None;
        };
        if deadline == 0 {
            return Some((value, None));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let left = Duration::from_millis(deadline).checked_sub(now).filter(|left| !left.is_zero())?;
        Some((value, Some(left)))
    }

    /// Looks `keys` up in the tier, counting hits, misses and errors: one
    /// answer per key (`None` for all of them if the tier could not answer).
    pub(crate) async fn lookup(
        &self,
        name: &str,
        counters: &Counters,
        keys: &[&[u8]],
    ) -> Vec<Option<(V, Option<Duration>)>> {
        match self.tier.get(name, keys).await {
            Ok(found) if found.len() == keys.len() => found
                .into_iter()
                .map(|bytes| {
                    let value = bytes.and_then(|bytes| self.decode(counters, &bytes));
                    match value {
                        Some(_) => counters.tier_hits.inc(),
                        None => counters.tier_misses.inc(),
                    }
                    value
                })
                .collect(),
            answer => {
                if !matches!(answer, Err(TierFault::Unavailable)) {
                    counters.tier_errors.inc();
                }
                keys.iter().map(|_| None).collect()
            }
        }
    }

    /// Attaches the store (as `replica`) to the tier, once.
    pub(crate) fn attach(&self, name: &str, replica: Arc<dyn Replica>) {
        self.tier.attach(name, Arc::downgrade(&replica));
        let _ = self.replica.set(replica);
    }

    pub(crate) fn write(&self, name: &str, write: TierWrite) {
        self.tier.write(name, write);
    }

    /// The write that puts `value` under the encoded `key`: a `Remove` if
    /// the value does not encode or its TTL is zero (the tier must not keep
    /// an older value).
    pub(crate) fn put(
        &self,
        counters: &Counters,
        key: Vec<u8>,
        value: &V,
        ttl: Option<Duration>,
        kind: PutKind,
    ) -> TierWrite {
        let from = self.id;
        let value = if ttl.is_some_and(|ttl| ttl.is_zero()) { None } else { self.value(counters, value, ttl) };
        match value {
            Some(value) => TierWrite::Put { key, value, ttl, kind, from },
            None => TierWrite::Remove { key, from },
        }
    }

    /// [`put`](Self::put) for a key not encoded yet; `None` if it does
    /// not encode (counted).
    pub(crate) fn put_of(
        &self,
        counters: &Counters,
        key: &K,
        value: &V,
        ttl: Option<Duration>,
        kind: PutKind,
    ) -> Option<TierWrite> {
        Some(self.put(counters, self.key(counters, key)?, value, ttl, kind))
    }
}

/// The shorter of two TTLs (`None`: never expires).
pub(crate) fn shorter(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a tier holds of a local store: weakly, so a dropped cache is
/// forgotten.
pub(crate) struct Attached<K, V, S> {
    pub(crate) store: Weak<Store<K, V, S>>,
    pub(crate) id: u64,
    pub(crate) decode_key: fn(&[u8]) -> Option<K>,
}

impl<K, V, S> Attached<K, V, S> {
    pub(crate) fn new(store: &Arc<Store<K, V, S>>, link: &Link<K, V>) -> Self {
        Attached { store: Arc::downgrade(store), id: link.id, decode_key: link.decode_key }
    }
}

impl<K, V, S> Replica for Attached<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn id(&self) -> u64 {
        self.id
    }

    fn invalidate(&self, key: &[u8]) {
        let Some(store) = self.store.upgrade() else { return };
        match (self.decode_key)(key) {
            Some(key) => {
                store.remove(store.hash(&key), &key);
            }
            // Not a key of ours (another build's key type): the entry it
            // named cannot be found, so drop everything rather than keep it.
            None => {
                store.counters.tier_errors.inc();
                store.clear();
            }
        }
    }

    fn invalidate_all(&self) {
        if let Some(store) = self.store.upgrade() {
            store.clear();
        }
    }

    fn write_failed(&self) {
        if let Some(store) = self.store.upgrade() {
            store.counters.tier_errors.inc();
        }
    }
}

impl<K, V> fmt::Debug for Link<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("tier", &self.tier).field("id", &self.id).finish_non_exhaustive()
    }
}
