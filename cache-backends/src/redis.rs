//! [`RedisTier`]: a second level in Redis shared by every replica, with
//! invalidation between them over Redis pub/sub.
//!
//! Three kinds of traffic, each on its own path:
//! - reads (`GET`/`MGET`) on the caller's task, through one multiplexed
//!   connection, each bounded by the tier's timeout; after a failure, reads
//!   are skipped for [`SKIP_AFTER_FAILURE`] so that a down Redis costs a
//!   miss nothing;
//! - writes through one queue (at most [`MAX_QUEUED`]) and one writer task,
//!   in pipelines, so a write never waits on the network and writes reach
//!   Redis in the order they were queued; a write that fails (or finds the
//!   queue full) marks its cache, whose keys in Redis are deleted (and
//!   every replica told to drop its copies) once Redis answers again: what
//!   it held may be older than what was written;
//! - invalidations: one subscriber task per prefix, on its own connection
//!   (`PSUBSCRIBE <prefix>:*`), reconnected with backoff; every time it
//!   (re)subscribes, the caches attached to it drop their entries, since
//!   they may have missed invalidations meanwhile.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use cache_core::{PutKind, Replica, Tier, TierFault, TierWrite};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Pipeline, RedisError};
use tokio::sync::{mpsc, oneshot, watch};

/// How long a read (`GET`, `MGET`) may take by default before the cache
/// goes on without it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// How long reads are skipped after one failed: Redis is being reconnected.
pub const SKIP_AFTER_FAILURE: Duration = Duration::from_millis(250);
/// The bound on connecting (and on the invalidation channel coming up in
/// [`RedisTier::connect`]), and on each pipeline of writes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection backoff of the subscriber and of a writer with lost writes.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));
/// Writes sent in one pipeline at most.
const PIPELINE: usize = 512;
/// Keys deleted per `SCAN` step of a clear.
const SCAN_COUNT: usize = 1_000;
/// Writes queued at most: past it (Redis stalled, say) a write is dropped
/// like one that failed, so a slow Redis costs no unbounded memory.
pub const MAX_QUEUED: usize = 100_000;

/// Why [`RedisTier::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TierError {
    /// The URL is not a Redis URL.
    #[error("`{url}` is not a Redis URL ({reason}): write it as redis://host:port[/db]")]
    InvalidUrl {
        /// The URL given, without its password.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis did not answer, or refused the connection or the subscription.
    #[error(
        "Redis at `{url}` did not answer ({reason}): start it, or check the URL and that the server accepts connections"
    )]
    Unreachable {
        /// The URL given, without its password.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// A second level in Redis, shared by every replica of a service; give it
/// to [`CacheBuilder::tier`](cache_core::CacheBuilder::tier).
///
/// Keys live in Redis as `<prefix>:<cache name>:<key>` (the key in
/// postcard), values with their remaining TTL as a Redis expiry. A cheap
/// `Clone`: clones share the connections and the writer task.
///
/// - `get_or_load`, `try_get_or_load`, `fetch`, `Batched` and warmup look
///   in Redis after a local miss (a batch in one `MGET`), then load; a
///   loaded value is written to Redis with `SET NX` (a value another
///   replica wrote meanwhile wins). `get`, `peek` and `iter` stay local.
/// - `insert`, `remove`, `clear` write through and publish on the
///   channel `<prefix>:<cache name>`; every other replica attached to the
///   same prefix drops its local copy. Writes are queued: the call returns
///   at once, and writes reach Redis in the order they were queued.
/// - Redis down or slow is not an outage: a read waits at most the
///   tier's [timeout](Self::with_timeout) (50 ms), after a failure reads
///   are skipped for 250 ms, and loads go straight to the loader. Failures
///   count in `metrics().tier_errors`. Connections come back by themselves;
///   a replica whose invalidation channel was cut drops its local entries
///   when it is back, and a cache whose writes were lost has its keys in
///   Redis deleted then.
///
/// Consistency is that of a cache-aside tier: after a `remove` on one
/// replica, others drop their copies within a round trip to Redis; a
/// value loaded from a source just before another replica changed it may
/// still be written after that change (as with any cache-aside cache), and
/// lives until its TTL. Give entries a TTL.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use async_cache::{Cache, RedisTier};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), async_cache::TierError> {
/// let tier = RedisTier::connect("redis://127.0.0.1:6379").await?.with_prefix("shop");
/// let users: Cache<u64, String> = Cache::builder()
///     .max_size(10_000)
///     .default_ttl(Duration::from_secs(300))
///     .name("users")
///     .tier(tier.clone())
///     .build();
/// // A miss here looks in Redis before it loads; the value goes to both.
/// let name = users.get_or_load(7, || async { "Ada".to_string() }).await;
/// users.remove(&7); // every replica drops user 7
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisTier {
    shared: Arc<Shared>,
    prefix: Arc<Prefix>,
    timeout: Duration,
}

/// What every prefix of one connection shares.
struct Shared {
    url: String,
    client: Client,
    commands: ConnectionManager,
    writes: mpsc::UnboundedSender<Queued>,
    /// Writes in `writes`, bounded by [`MAX_QUEUED`].
    queued: AtomicUsize,
    /// Caches with writes that did not reach Redis, by prefix and name:
    /// their keys there are deleted once it answers.
    lost: Mutex<Vec<(Arc<Prefix>, Arc<str>)>>,
    /// Reads are skipped until then (milliseconds since `epoch`).
    skip_until: AtomicU64,
    epoch: Instant,
    runtime: tokio::runtime::Handle,
}

/// One key prefix: its caches and its subscriber.
struct Prefix {
    name: String,
    /// The caches attached, by name.
    replicas: Mutex<HashMap<String, Vec<Weak<dyn Replica>>>>,
    /// Whether the invalidation channel is up.
    up: watch::Sender<bool>,
    /// Dropped with the prefix: its subscriber ends.
    _stop: oneshot::Sender<()>,
}

/// A write in the queue.
struct Queued {
    prefix: Arc<Prefix>,
    cache: Arc<str>,
    write: TierWrite,
}

impl RedisTier {
    /// Connects to the Redis at `url` (`redis://host:port[/db]`,
    /// `redis://:password@host`, `rediss://` is not built in), starts the
    /// writer task and the invalidation channel of the default prefix,
    /// `"async-cache"`.
    ///
    /// # Errors
    ///
    /// [`TierError::InvalidUrl`], or [`TierError::Unreachable`] if Redis
    /// does not answer within 2 s.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: its tasks run there.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_cache::{RedisTier, TierError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let error = RedisTier::connect("http://localhost").await.unwrap_err();
    /// assert!(matches!(error, TierError::InvalidUrl { .. }));
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<RedisTier, TierError> {
        let shown = redact(url);
        let invalid = |error: RedisError| TierError::InvalidUrl { url: shown.clone(), reason: error.to_string() };
        let unreachable = |reason: String| TierError::Unreachable { url: shown.clone(), reason };
        let client = Client::open(url).map_err(invalid)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let commands =
            tokio::time::timeout(CONNECT_TIMEOUT, ConnectionManager::new_with_config(client.clone(), config))
                .await
                .map_err(|_| unreachable(format!("no answer in {CONNECT_TIMEOUT:?}")))?
                .map_err(|error| unreachable(error.to_string()))?;
        let (writes, queue) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::current();
        let shared = Arc::new(Shared {
            url: shown.clone(),
            client,
            commands,
            writes,
            queued: AtomicUsize::new(0),
            lost: Mutex::default(),
            skip_until: AtomicU64::new(0),
            epoch: Instant::now(),
            runtime,
        });
        shared.runtime.spawn(write_loop(Arc::downgrade(&shared), queue));
        let prefix = Prefix::start(&shared, "async-cache");
        let tier = RedisTier { shared, prefix, timeout: DEFAULT_TIMEOUT };
        tier.ready().await?;
        Ok(tier)
    }

    /// Waits until this prefix's invalidation channel is up (at most 2 s):
    /// [`connect`](Self::connect) returns with it up, a
    /// [`with_prefix`](Self::with_prefix) tier brings its own up in the
    /// background, within a round trip; invalidations published before
    /// then are not heard.
    ///
    /// # Errors
    ///
    /// [`TierError::Unreachable`] if it is not up in time.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use async_cache::RedisTier;
    /// # async fn run() -> Result<(), async_cache::TierError> {
    /// let staging = RedisTier::connect("redis://127.0.0.1:6379").await?.with_prefix("staging");
    /// staging.ready().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ready(&self) -> Result<(), TierError> {
        let mut up = self.prefix.up.subscribe();
        match tokio::time::timeout(CONNECT_TIMEOUT, up.wait_for(|up| *up)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(TierError::Unreachable {
                url: self.shared.url.clone(),
                reason: format!("the invalidation channel (pub/sub) did not come up in {CONNECT_TIMEOUT:?}"),
            }),
        }
    }

    /// The same Redis under another key prefix (and invalidation channel):
    /// to keep environments or services sharing one Redis apart. Its
    /// invalidation channel comes up in the background, within a round
    /// trip; [`ready`](Self::ready) waits for it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use async_cache::RedisTier;
    /// # async fn run() -> Result<(), async_cache::TierError> {
    /// let staging = RedisTier::connect("redis://127.0.0.1:6379").await?.with_prefix("staging");
    /// assert_eq!(staging.prefix(), "staging");
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_prefix(&self, prefix: impl Into<String>) -> RedisTier {
        let prefix = Prefix::start(&self.shared, &prefix.into());
        RedisTier { shared: Arc::clone(&self.shared), prefix, timeout: self.timeout }
    }

    /// How long a read may wait for Redis before the cache goes on without
    /// it (default 50 ms).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use async_cache::RedisTier;
    /// # async fn run() -> Result<(), async_cache::TierError> {
    /// let tier = RedisTier::connect("redis://127.0.0.1:6379").await?.with_timeout(Duration::from_millis(20));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> RedisTier {
        self.timeout = timeout;
        self
    }

    /// The key prefix.
    ///
    /// # Examples
    ///
    /// See [`with_prefix`](Self::with_prefix).
    pub fn prefix(&self) -> &str {
        &self.prefix.name
    }
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn skipping(&self) -> bool {
        self.now() < self.skip_until.load(Ordering::Relaxed)
    }

    fn failed(&self) {
        let until = self.now().saturating_add(SKIP_AFTER_FAILURE.as_millis() as u64);
        self.skip_until.store(until, Ordering::Relaxed);
    }

    /// A write that did not reach Redis: counted by the replica that made
    /// it, and its cache's keys in Redis are deleted once it answers (they
    /// may hold what the write replaced).
    fn lose(&self, prefix: &Arc<Prefix>, cache: &Arc<str>, write: &TierWrite) {
        let from = match write {
            TierWrite::Put { from, .. } | TierWrite::Remove { from, .. } | TierWrite::Clear { from } => *from,
            _ => 0,
        };
        prefix.replicas(cache).iter().filter(|replica| replica.id() == from).for_each(|replica| replica.write_failed());
        let mut lost = lock(&self.lost);
        if !lost.iter().any(|(p, c)| Arc::ptr_eq(p, prefix) && c == cache) {
            lost.push((Arc::clone(prefix), Arc::clone(cache)));
        }
    }

    /// The caches with lost writes, taken to be undone.
    fn take_lost(&self) -> Vec<(Arc<Prefix>, Arc<str>)> {
        std::mem::take(&mut *lock(&self.lost))
    }
}

impl Prefix {
    /// A prefix and its subscriber task.
    fn start(shared: &Arc<Shared>, name: &str) -> Arc<Prefix> {
        let (stop, stopped) = oneshot::channel();
        let up = watch::Sender::new(false);
        let prefix = Arc::new(Prefix { name: name.to_string(), replicas: Mutex::default(), up, _stop: stop });
        let task = subscribe_loop(shared.client.clone(), Arc::downgrade(&prefix), stopped);
        shared.runtime.spawn(task);
        prefix
    }

    /// `<prefix>:<cache>:<key>`.
    fn key(&self, cache: &str, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.name.len() + cache.len() + 2 + key.len());
        full.extend_from_slice(self.name.as_bytes());
        full.push(b':');
        full.extend_from_slice(cache.as_bytes());
        full.push(b':');
        full.extend_from_slice(key);
        full
    }

    /// `<prefix>:<cache>`: the cache's invalidation channel.
    fn channel(&self, cache: &str) -> String {
        format!("{}:{cache}", self.name)
    }

    /// The live replicas of `cache`.
    fn replicas(&self, cache: &str) -> Vec<Arc<dyn Replica>> {
        let replicas = lock(&self.replicas);
        replicas.get(cache).map_or_else(Vec::new, |list| list.iter().filter_map(Weak::upgrade).collect())
    }

    fn every_replica(&self) -> Vec<Arc<dyn Replica>> {
        let replicas = lock(&self.replicas);
        replicas.values().flatten().filter_map(Weak::upgrade).collect()
    }

    /// A message on `channel`: `from` (8 bytes, little-endian), then `K`
    /// and the key for one key, or `A` for all of the cache's.
    fn deliver(&self, channel: &str, payload: &[u8]) {
        let Some(cache) = channel.strip_prefix(&self.name).and_then(|rest| rest.strip_prefix(':')) else { return };
        let Some((from, rest)) = payload.split_first_chunk::<8>() else { return };
        let from = u64::from_le_bytes(*from);
        for replica in self.replicas(cache) {
            if replica.id() == from {
                continue;
            }
            match rest.split_first() {
                Some((b'K', key)) => replica.invalidate(key),
                Some((b'A', _)) => replica.invalidate_all(),
                _ => {}
            }
        }
    }
}

fn message(from: u64, key: Option<&[u8]>) -> Vec<u8> {
    let mut message = Vec::with_capacity(9 + key.map_or(0, <[u8]>::len));
    message.extend_from_slice(&from.to_le_bytes());
    match key {
        Some(key) => {
            message.push(b'K');
            message.extend_from_slice(key);
        }
        None => message.push(b'A'),
    }
    message
}

/// The subscriber of one prefix: subscribes, delivers messages, and
/// resubscribes with backoff when the connection goes. A resubscription
/// makes the attached caches drop their entries: they may have missed
/// invalidations meanwhile.
async fn subscribe_loop(client: Client, prefix: Weak<Prefix>, mut stopped: oneshot::Receiver<()>) {
    let mut backoff = BACKOFF.0;
    let mut first = true;
    loop {
        let Some(pattern) = prefix.upgrade().map(|p| format!("{}:*", glob_escape(&p.name))) else { return };
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let subscribed = tokio::select! {
            _ = &mut stopped => return,
            attempt = tokio::time::timeout(CONNECT_TIMEOUT, attempt) => attempt,
        };
        if let Ok(Ok(pubsub)) = subscribed {
            backoff = BACKOFF.0;
            let Some(p) = prefix.upgrade() else { return };
            if !std::mem::take(&mut first) {
                p.every_replica().iter().for_each(|replica| replica.invalidate_all());
            }
            p.up.send_replace(true);
            drop(p);
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    message = messages.next() => match (message, prefix.upgrade()) {
                        (Some(message), Some(p)) => p.deliver(message.get_channel_name(), message.get_payload_bytes()),
                        (Some(_), None) => return,
                        // The connection is gone: subscribe again.
                        (None, Some(p)) => {
                            p.up.send_replace(false);
                            break;
                        }
                        (None, None) => return,
                    },
                }
            }
        }
        // Not subscribed, or the connection went: again after the backoff.
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// The writer: sends queued writes in order, in pipelines.
///
/// Caches with lost writes (see `Shared::lose`) are undone first: every
/// write of theirs still queued is dropped (it may be older than the lost
/// one), then their keys in Redis are deleted and every replica told. What
/// is queued after that is newer than the lost write, and goes as usual.
/// Until the deletion succeeds (retried with backoff), their writes keep
/// being dropped: a key missing from Redis is a miss; a stale one would be
/// served.
async fn write_loop(shared: Weak<Shared>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut backoff = BACKOFF.0;
    let mut batch = Vec::with_capacity(PIPELINE);
    loop {
        let Some(undoing) = shared.upgrade().map(|s| !lock(&s.lost).is_empty()) else {
            return;
        };
        let received = if undoing {
            tokio::select! {
                received = queue.recv_many(&mut batch, PIPELINE) => received,
                _ = tokio::time::sleep(backoff) => usize::MAX,
            }
        } else {
            queue.recv_many(&mut batch, PIPELINE).await
        };
        let Some(shared) = shared.upgrade().filter(|_| received != 0) else { return };
        let mut connection = shared.commands.clone();
        let lost = shared.take_lost();
        if !lost.is_empty() {
            while let Ok(queued) = queue.try_recv() {
                batch.push(queued);
            }
        }
        shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        if !lost.is_empty() {
            let is_lost = |q: &Queued| lost.iter().any(|(p, c)| Arc::ptr_eq(p, &q.prefix) && *c == q.cache);
            for dropped in batch.extract_if(.., |queued| is_lost(queued)) {
                shared.lose(&dropped.prefix, &dropped.cache, &dropped.write);
            }
            let mut undone = true;
            for (prefix, cache) in lost {
                // Every replica (the writer too: `from` 0) drops its copies.
                if clear(&mut connection, &prefix, &cache, 0).await.is_err() {
                    undone = false;
                    shared.lose(&prefix, &cache, &TierWrite::Clear { from: 0 });
                }
            }
            backoff = if undone { BACKOFF.0 } else { (backoff * 2).min(BACKOFF.1) };
        }
        for chunk in batch.chunks(PIPELINE) {
            if let Err(first) = send(&mut connection, chunk).await {
                for failed in &chunk[first..] {
                    shared.lose(&failed.prefix, &failed.cache, &failed.write);
                }
            }
        }
        batch.clear();
    }
}

/// Sends `batch` in order: pipelines of puts and removals, a clear on its
/// own. `Err(i)`: writes from `i` on did not reach Redis.
async fn send(connection: &mut ConnectionManager, batch: &[Queued]) -> Result<(), usize> {
    let mut pipe = Pipeline::with_capacity(batch.len() * 2);
    let mut start = 0;
    for (i, queued) in batch.iter().enumerate() {
        let (prefix, cache) = (&queued.prefix, &*queued.cache);
        match &queued.write {
            TierWrite::Put { key, value, ttl, kind, from } => {
                let full = prefix.key(cache, key);
                let command = pipe.cmd("SET").arg(&full).arg(value);
                if let Some(ttl) = ttl {
                    command.arg("PX").arg(ttl.as_millis().max(1) as u64);
                }
                if *kind == PutKind::Loaded {
                    command.arg("NX");
                }
                command.ignore();
                if *kind == PutKind::Insert {
                    pipe.cmd("PUBLISH").arg(prefix.channel(cache)).arg(message(*from, Some(key))).ignore();
                }
            }
            TierWrite::Remove { key, from } => {
                pipe.cmd("DEL").arg(prefix.key(cache, key)).ignore();
                pipe.cmd("PUBLISH").arg(prefix.channel(cache)).arg(message(*from, Some(key))).ignore();
            }
            TierWrite::Clear { from } => {
                flush(connection, &mut pipe).await.map_err(|_| start)?;
                start = i;
                clear(connection, prefix, cache, *from).await.map_err(|_| start)?;
                start = i + 1;
            }
            _ => {}
        }
    }
    flush(connection, &mut pipe).await.map_err(|_| start)
}

/// Sends `pipe`, and once more if that fails: the first command on a
/// connection that died is how the connection manager learns it must
/// reconnect. Sending twice is safe: `SET`, `SET NX` and `DEL` give the
/// same result, and a second `PUBLISH` only invalidates twice.
async fn flush(connection: &mut ConnectionManager, pipe: &mut Pipeline) -> Result<(), ()> {
    if pipe.is_empty() {
        return Ok(());
    }
    let mut sent = false;
    for _ in 0..2 {
        if let Ok(Ok(())) = tokio::time::timeout(CONNECT_TIMEOUT, pipe.exec_async(&mut *connection)).await {
            sent = true;
            break;
        }
    }
    pipe.clear();
    if sent { Ok(()) } else { Err(()) }
}

/// Deletes every key of `cache` under `prefix` (`SCAN`, never `KEYS`), then
/// tells every replica (but `from`) to drop its entries.
async fn clear(connection: &mut ConnectionManager, prefix: &Prefix, cache: &str, from: u64) -> Result<(), ()> {
    let pattern = format!("{}:{}:*", glob_escape(&prefix.name), glob_escape(cache));
    let mut cursor: u64 = 0;
    loop {
        let step = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT).to_owned();
        let scanned = tokio::time::timeout(CONNECT_TIMEOUT, step.query_async::<(u64, Vec<Vec<u8>>)>(connection)).await;
        let Ok(Ok((next, keys))) = scanned else { return Err(()) };
        if !keys.is_empty() {
            let unlink = redis::cmd("UNLINK").arg(keys).to_owned();
            if !matches!(tokio::time::timeout(CONNECT_TIMEOUT, unlink.exec_async(connection)).await, Ok(Ok(()))) {
                return Err(());
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let publish = redis::cmd("PUBLISH").arg(prefix.channel(cache)).arg(message(from, None)).to_owned();
    match tokio::time::timeout(CONNECT_TIMEOUT, publish.exec_async(connection)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// A lock that a panic elsewhere did not poison for good: the lists it
/// guards stay valid whatever panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `text` with Redis glob's special characters escaped.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// `url` without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl Tier for RedisTier {
    fn get<'a>(
        &'a self,
        cache: &'a str,
        keys: &'a [&'a [u8]],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, TierFault>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            if self.shared.skipping() {
                return Err(TierFault::Unavailable);
            }
            let mut connection = self.shared.commands.clone();
            // `MGET` for one key too: the same round trip as a `GET`.
            let command = redis::cmd("MGET")
                .arg(keys.iter().map(|key| self.prefix.key(cache, key)).collect::<Vec<_>>())
                .to_owned();
            // Twice if the first fails at once: that is how the connection
            // manager learns that its connection died, and reconnects.
            let read = async {
                let mut answer = command.query_async::<Vec<Option<Vec<u8>>>>(&mut connection).await;
                if answer.is_err() {
                    answer = command.query_async(&mut connection).await;
                }
                answer
            };
            match tokio::time::timeout(self.timeout, read).await {
                Ok(Ok(values)) => Ok(values),
                _ => {
                    self.shared.failed();
                    Err(TierFault::Failed)
                }
            }
        })
    }

    fn write(&self, cache: &str, write: TierWrite) {
        let cache = Arc::from(cache);
        if self.shared.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            return self.shared.lose(&self.prefix, &cache, &write);
        }
        // The writer ends only when the last handle is gone, so this send
        // cannot fail while `self` exists.
        let _ = self.shared.writes.send(Queued { prefix: Arc::clone(&self.prefix), cache, write });
    }

    fn attach(&self, cache: &str, replica: Weak<dyn Replica>) {
        let mut replicas = lock(&self.prefix.replicas);
        let list = replicas.entry(cache.to_string()).or_default();
        list.retain(|replica| replica.strong_count() > 0);
        list.push(replica);
    }
}

impl fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTier")
            .field("url", &self.shared.url)
            .field("prefix", &self.prefix.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redact("redis://:hunter2@db:6379/0"), "redis://***@db:6379/0");
        assert_eq!(redact("redis://db:6379"), "redis://db:6379");
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }

    #[test]
    fn messages_say_who_and_what() {
        assert_eq!(message(1, Some(b"k")), [1, 0, 0, 0, 0, 0, 0, 0, b'K', b'k']);
        assert_eq!(message(2, None), [2, 0, 0, 0, 0, 0, 0, 0, b'A']);
    }
}
