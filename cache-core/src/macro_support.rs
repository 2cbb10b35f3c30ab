//! What `#[cached]`-generated code calls. Not a public API: the macro names
//! these items through `::async_cache::__private`, and nothing else should.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use std::sync::OnceLock as Site;

#[doc(inline)]
pub use crate::__async_cache_sharer as sharer;
#[doc(inline)]
pub use crate::__async_cache_site as site;
pub use crate::{Cache, CacheBuilder, Policy};

/// `site!(id, Key, Value, name, settings)`: the cache of the function whose
/// expansion is `id` (unique to one expansion of `#[cached]`). `settings`
/// (a [`Settings`]) is evaluated once, when the cache is made.
#[doc(hidden)]
#[macro_export]
macro_rules! __async_cache_site {
    ($id:expr, $key:ty, $value:ty, $name:expr, $settings:expr) => {{
        static SITE: $crate::__private::Site<&'static $crate::__private::Cache<$key, $value>> =
            $crate::__private::Site::new();
        $crate::__private::cache(&SITE, $id, $name, || $settings, ::core::convert::identity)
    }};
    ($id:expr, $key:ty, $value:ty, $name:expr, $settings:expr, tier = $tier:expr) => {{
        static SITE: $crate::__private::Site<&'static $crate::__private::Cache<$key, $value>> =
            $crate::__private::Site::new();
        $crate::__private::cache(&SITE, $id, $name, || $settings, |builder| $crate::__private::tiered(builder, $tier))
    }};
}

/// A `#[cached]` function's cache settings, from the attribute.
#[derive(Debug)]
pub struct Settings {
    /// `usize::MAX` is unbounded.
    pub max_size: usize,
    pub ttl: Option<Duration>,
    pub policy: Policy,
    pub refresh_after: Option<Duration>,
    pub stale_for: Option<Duration>,
    pub load_timeout: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_size: 128,
            ttl: None,
            policy: Policy::Lru,
            refresh_after: None,
            stale_for: None,
            load_timeout: None,
        }
    }
}

/// `sharer!(E)`: how waiters get a failed load's `E` (see [`Probe`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __async_cache_sharer {
    ($error:ty) => {{
        #[allow(unused_imports)]
        use $crate::__private::{NotShareable as _, Shareable as _};
        (&$crate::__private::Probe::<$error>::new()).sharer()
    }};
}
use crate::load::{Errors, Failure};

/// The cache of one `#[cached]` function.
///
/// Every generated item (the function and its companions) finds the cache
/// here by the function's `id`, so it works the same in a module and in an
/// impl block, where a companion cannot be named without `Self::`. Each item
/// keeps the result in its own `site`: after the first call this is one
/// atomic load.
///
/// `finish` has the last word on the builder (`tier = ..` sets the tier).
pub fn cache<K: CachedKey, V: CachedValue>(
    site: &'static OnceLock<&'static Cache<K, V>>,
    id: &'static str,
    name: &'static str,
    settings: impl FnOnce() -> Settings,
    finish: impl FnOnce(CacheBuilder<K, V>) -> CacheBuilder<K, V>,
) -> &'static Cache<K, V> {
    site.get_or_init(|| {
        type Registry = Mutex<HashMap<&'static str, &'static (dyn Any + Send + Sync)>>;
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        let mut registry = REGISTRY.get_or_init(Registry::default).lock().unwrap_or_else(|e| e.into_inner());
        let cache = *registry.entry(id).or_insert_with(|| {
            let settings = settings();
            let mut builder = Cache::<K, V>::builder().name(name).max_size(settings.max_size).policy(settings.policy);
            for (setting, set) in [
                (settings.ttl, CacheBuilder::default_ttl as fn(_, _) -> _),
                (settings.refresh_after, CacheBuilder::refresh_after),
                (settings.stale_for, CacheBuilder::stale_for),
                (settings.load_timeout, CacheBuilder::load_timeout),
            ] {
                if let Some(setting) = setting {
                    builder = set(builder, setting);
                }
            }
            Box::leak(Box::new(finish(builder).build()))
        });
        cache.downcast_ref().expect("one #[cached] site, one key and value type")
    })
}

/// `#[cached(tier = <expr>)]`: the builder with that tier.
#[cfg(feature = "tier")]
pub fn tiered<K, V>(builder: CacheBuilder<K, V>, tier: impl crate::Tier) -> CacheBuilder<K, V>
where
    K: serde::Serialize + serde::de::DeserializeOwned,
    V: serde::Serialize + serde::de::DeserializeOwned,
{
    builder.tier(tier)
}

/// What `#[cached(maxsize = <expr>)]` accepts: a whole number of entries.
#[diagnostic::on_unimplemented(
    message = "`#[cached(maxsize = ..)]` takes a whole number of entries, not `{Self}`",
    label = "an integer (usize, u64, u32, ...) expected here"
)]
pub trait MaxSize {
    /// The bound.
    fn max_size(self) -> usize;
}

macro_rules! max_size_from {
    ($($t:ty),*) => {$(
        impl MaxSize for $t {
            fn max_size(self) -> usize {
                usize::try_from(self).unwrap_or_else(|_| panic!("#[cached] maxsize must be a whole number of entries, got {self}"))
            }
        }
    )*};
}
max_size_from!(usize, u64, u32, u16, u8, i64, i32);

/// `maxsize = <expr>`.
pub fn max_size(n: impl MaxSize) -> usize {
    n.max_size()
}

/// What `#[cached(ttl = <expr>)]` accepts: a `Duration`, whole or fractional
/// seconds, or an `Option` of a `Duration` (`None`: no TTL).
#[diagnostic::on_unimplemented(
    message = "`#[cached(ttl = ..)]` takes a `Duration`, seconds (an integer or an f64) or an `Option<Duration>`, not `{Self}`",
    label = "a TTL expected here"
)]
pub trait Ttl {
    /// The TTL; `None` for none.
    fn ttl(self) -> Option<Duration>;
}

impl Ttl for Duration {
    fn ttl(self) -> Option<Duration> {
        Some(self)
    }
}

impl Ttl for Option<Duration> {
    fn ttl(self) -> Option<Duration> {
        self
    }
}

macro_rules! ttl_from_secs {
    ($($t:ty),*) => {$(
        impl Ttl for $t {
            fn ttl(self) -> Option<Duration> {
                let secs = u64::try_from(self).unwrap_or_else(|_| panic!("#[cached] ttl must be a number of seconds, got {self}"));
                Some(Duration::from_secs(secs))
            }
        }
    )*};
}
ttl_from_secs!(u64, u32, usize, i64, i32);

impl Ttl for f64 {
    fn ttl(self) -> Option<Duration> {
        assert!(self >= 0.0, "#[cached] ttl must be a number of seconds, got {self}");
        // Too large for a Duration: never, as the builder takes it.
        Some(Duration::try_from_secs_f64(self).unwrap_or(Duration::MAX))
    }
}

/// `ttl = <expr>` (and `ttl = <literal>`; `refresh_after`, `stale_for`
/// and `cache_err_for` too).
pub fn ttl(ttl: impl Ttl) -> Option<Duration> {
    ttl.ttl()
}

/// `load_timeout_ms = <expr>`: milliseconds, as `ttl` takes seconds.
pub fn millis(ms: impl Ttl) -> Option<Duration> {
    ms.ttl().map(|secs| secs / 1000)
}

/// The parts of a `Result`, including aliases such as `io::Result<T>`.
pub trait ResultParts {
    /// `T` of `Result<T, E>`.
    type Ok;
    /// `E` of `Result<T, E>`.
    type Err;
}

impl<T, E> ResultParts for Result<T, E> {
    type Ok = T;
    type Err = E;
}

/// The value of an `Option`.
pub trait OptionParts {
    /// `T` of `Option<T>`.
    type Some;
}

impl<T> OptionParts for Option<T> {
    type Some = T;
}

/// What the cache stores: the function's value.
#[diagnostic::on_unimplemented(
    message = "`#[cached]` stores the function's value, so `{Self}` must be `Clone + Send + Sync + 'static`",
    label = "cannot be cached",
    note = "wrap it in an `Arc` to share one copy between callers"
)]
pub trait CachedValue: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> CachedValue for T {}

/// What the cache is keyed by: the arguments not in `skip(...)`.
#[diagnostic::on_unimplemented(
    message = "`#[cached]` keys the cache by the arguments, so `{Self}` must be `Hash + Eq + Clone + Send + Sync + 'static`",
    label = "cannot be part of the key",
    note = "leave an argument out with `skip(name)`, or give `key = <expr>, key_type = <type>`"
)]
pub trait CachedKey: std::hash::Hash + Eq + Clone + Send + Sync + 'static {}
impl<T: std::hash::Hash + Eq + Clone + Send + Sync + 'static> CachedKey for T {}

/// What a failed load hands to every caller that waited on it.
#[diagnostic::on_unimplemented(
    message = "`#[cached]` hands a failed load's error to the callers that waited on it, so `{Self}` must be `Send + Sync + 'static`",
    label = "cannot be handed between tasks"
)]
pub trait CachedError: Send + Sync + 'static {}
impl<T: Send + Sync + 'static> CachedError for T {}

/// Checks the value type where it is written, so the error points at it.
pub const fn value<T: CachedValue>() {}

/// Checks the key type where it is written.
pub const fn key<T: CachedKey>() {}

/// Chooses, at compile time, how an error type reaches the waiters of a
/// failed load: shared by cloning when it is `Clone`, else not shared.
///
/// `(&Probe::<E>::new()).sharer()` finds [`Shareable::sharer`] when
/// `E: Clone`, and falls back to [`NotShareable::sharer`] otherwise (the
/// "autoref specialization" pattern: the first needs no extra reference).
#[derive(Debug)]
pub struct Probe<E>(PhantomData<fn() -> E>);

impl<E> Probe<E> {
    /// A probe for `E`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

/// `E: Clone`: waiters share the leader's error.
pub trait Shareable<E> {
    /// How to copy the error for each waiter.
    fn sharer(&self) -> Option<fn(&E) -> E>;
}

impl<E: Clone> Shareable<E> for Probe<E> {
    fn sharer(&self) -> Option<fn(&E) -> E> {
        Some(E::clone)
    }
}

/// `E` is not `Clone`: each waiter of a failed load makes its own attempt.
pub trait NotShareable<E> {
    /// None: the error cannot be copied.
    fn sharer(&self) -> Option<fn(&E) -> E>;
}

impl<E> NotShareable<E> for &Probe<E> {
    fn sharer(&self) -> Option<fn(&E) -> E> {
        None
    }
}

/// A function returning a plain value: caches it.
pub async fn load_value<K, V, F, Fut>(cache: &Cache<K, V>, key: K, load: F) -> V
where
    K: CachedKey,
    V: CachedValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = V>,
{
    cache.get_or_load(key, load).await
}

/// `None` is not cached; waiters of a load that found nothing get `None` too.
#[derive(Debug)]
pub struct Nothing;

/// A function returning `Option<T>`: caches `Some` only. A `None` is a
/// load that found nothing, not a failed one (`load_errors` does not count
/// it), and every waiter of that load gets `None` too.
pub async fn load_option<K, V, F, Fut>(cache: &Cache<K, V>, key: K, load: F) -> Option<V>
where
    K: CachedKey,
    V: CachedValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<V>>,
{
    let ttl = cache.store.config.default_ttl;
    cache.load(key, ttl, true, Errors::Nothing, || async { load().await.ok_or(Nothing) }).await.ok()
}

/// A function returning `Result<T, E>`: caches `Ok` only. With a `sharer`
/// (`E: Clone`) every waiter of a failed load gets a copy of its error;
/// without, each waiter makes its own attempt.
pub async fn load_result<K, V, E, F, Fut>(
    cache: &Cache<K, V>,
    key: K,
    sharer: Option<fn(&E) -> E>,
    load: F,
) -> Result<V, E>
where
    K: CachedKey,
    V: CachedValue,
    E: CachedError,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let errors = if sharer.is_some() { Errors::Shared } else { Errors::PerCaller };
    let ttl = cache.store.config.default_ttl;
    match cache.load(key, ttl, true, errors, load).await {
        Ok(value) => Ok(value),
        Err(Failure::Own(error)) => Err(error),
        Err(Failure::Shared(error)) => Err(match Arc::try_unwrap(error) {
            Ok(error) => error,
            Err(error) => sharer.expect("shared errors come with a sharer")(&error),
        }),
    }
}

/// `_invalidate`: removes the entry for `key`.
pub fn invalidate<K: CachedKey, V: CachedValue>(cache: &Cache<K, V>, key: &K) -> bool {
    cache.remove(key).is_some()
}

/// `_refresh` of a plain value: stores it.
pub fn store_value<K, V>(cache: &Cache<K, V>, key: K, value: &V)
where
    K: CachedKey,
    V: CachedValue,
{
    cache.insert(key, value.clone());
}

/// `_refresh` of an `Option`: stores `Some`, keeps the old value on `None`.
pub fn store_option<K, V>(cache: &Cache<K, V>, key: K, value: &Option<V>)
where
    K: CachedKey,
    V: CachedValue,
{
    if let Some(value) = value {
        cache.insert(key, value.clone());
    }
}

/// `_refresh` of a `Result`: stores `Ok`, keeps the old value on `Err`.
pub fn store_result<K, V, E>(cache: &Cache<K, V>, key: K, value: &Result<V, E>)
where
    K: CachedKey,
    V: CachedValue,
{
    if let Ok(value) = value {
        cache.insert(key, value.clone());
    }
}

/// A plain value through `fetch` (`refresh_after`, `stale_for`,
/// `load_timeout_ms`): the loader runs as a task of its own.
pub async fn fetch_value<K, V, F, Fut>(cache: &Cache<K, V>, key: K, load: F) -> V
where
    K: CachedKey,
    V: CachedValue,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = V> + Send + 'static,
{
    match cache.fetch(key, move || async move { Ok::<V, std::convert::Infallible>(load().await) }).await {
        Ok(value) => value,
        Err(never) => match *never {},
    }
}

/// What a `#[cached]` function that shares or keeps its errors returns in
/// them: each caller gets its own copy.
#[diagnostic::on_unimplemented(
    message = "`#[cached]` with `refresh_after`, `stale_for`, `load_timeout_ms` or `cache_err_for` hands out copies of an error, so `{Self}` must be `Clone + Send + Sync + 'static`",
    label = "cannot be copied to every caller",
    note = "wrap it in an `Arc` to share one error between callers"
)]
pub trait CopiedError: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> CopiedError for T {}

/// A `Result` through `fetch`: `Ok` cached, each caller a copy of an `Err`.
pub async fn fetch_result<K, V, E, F, Fut>(cache: &Cache<K, V>, key: K, load: F) -> Result<V, E>
where
    K: CachedKey,
    V: CachedValue,
    E: CopiedError,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<V, E>> + Send + 'static,
{
    cache.fetch(key, load).await.map_err(|error| Arc::try_unwrap(error).unwrap_or_else(|error| (*error).clone()))
}

/// `cache_err_for`: an `Err` kept in `errors` (its own cache, with that
/// TTL) is returned without loading; a new one is kept.
pub async fn with_kept_errors<K, V, E>(
    errors: &Cache<K, E>,
    key: K,
    load: impl Future<Output = Result<V, E>>,
) -> Result<V, E>
where
    K: CachedKey,
    E: CopiedError,
{
    if let Some(error) = errors.get(&key) {
        return Err(error);
    }
    let result = load.await;
    keep_error(errors, key, &result);
    result
}

/// `cache_none`: a `None` kept in `nones` is returned without loading; a
/// new one is kept.
pub async fn with_kept_nones<K, V>(nones: &Cache<K, ()>, key: K, load: impl Future<Output = Option<V>>) -> Option<V>
where
    K: CachedKey,
{
    if nones.get(&key).is_some() {
        return None;
    }
    let found = load.await;
    keep_none(nones, key, &found);
    found
}

/// Keeps an `Err` for `cache_err_for` (and forgets it on `Ok`).
pub fn keep_error<K: CachedKey, V, E: CopiedError>(errors: &Cache<K, E>, key: K, result: &Result<V, E>) {
    match result {
        Ok(_) => {
            errors.remove(&key);
        }
        Err(error) => errors.insert(key, error.clone()),
    }
}

/// Keeps a `None` for `cache_none` (and forgets it on `Some`).
pub fn keep_none<K: CachedKey, V>(nones: &Cache<K, ()>, key: K, found: &Option<V>) {
    match found {
        Some(_) => {
            nones.remove(&key);
        }
        None => nones.insert(key, ()),
    }
}
