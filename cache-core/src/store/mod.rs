//! The engine behind [`Cache`](crate::Cache).
//!
//! Reads take no lock: a reader pins (`epoch`), probes its shard's table
//! (`table`), reads the slot (`slab`), clones the value and pushes an
//! `(index, meta)` record into its read-buffer stripe (`buffer`). Every write
//! takes one lock, which owns the eviction order (`order`: the exact recency
//! list of `lru`, or the W-TinyLFU of `lfu`), the expiry wheel (`wheel`) and
//! the table layouts; before deciding anything it replays the read records,
//! so under `Policy::Lru` eviction is exact LRU for any one task.
//!
//! Memory is reclaimed by the engine's own grace periods (`epoch`,
//! `reclaim`): removed slots are retired in batches and only reused, and
//! their contents dropped, after every reader that could have seen them has
//! unpinned. Dropping user values happens outside the lock.
//!
//! An in-flight load is a `PENDING` slot in the same table, holding its
//! [`Flight`]; `remove`, `insert` and `clear` see and replace it, and the
//! leader stores its value only if its own placeholder is still there.

mod buffer;
mod epoch;
mod lfu;
mod list;
mod lru;
mod order;
mod reclaim;
mod sketch;
pub(crate) mod slab;
mod stamps;
mod table;
mod wheel;

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use self::buffer::ReadBuffer;
use self::order::Order;
use self::reclaim::{Locked, Pinned, Protects, Reclaimed, defer_and_flush, drop_quietly, flush, pin, retire_table};
use self::slab::{Filling, HELD, PENDING, READY, RETIRED_PENDING, RETIRED_READY, STALE, Slab, Slot, state};
use self::stamps::{Deadlines, Idle, Refresh};
use self::table::{Format, Probe, Table, TableRef, Usage};
use self::wheel::{Bucket, Wheel};
use crossbeam_utils::CachePadded;

use crate::DefaultHasher;
use crate::flight::{Flight, Outcome};
use crate::listen::{Listener, RemovalCause, Weigher, notify};
use crate::observe::Observers;
use crate::stats::{Counters, Metrics};
use crate::sync::atomic::AtomicPtr;
use crate::sync::{Mutex, MutexGuard, lock};
use crate::time::{Clock, NEVER};

/// The TTL deadline of an entry without a TTL in a cache with
/// `time_to_idle`: never, but not `NEVER`, so that the entry is `TIMED`
/// and readers, which look at deadlines only for `TIMED` entries, look at
/// its idle deadline. Caches without `time_to_idle` pay nothing for it on
/// the read path.
const IDLE_ONLY: u64 = NEVER - 1;

/// Retired slots handed to the epoch in one batch: an eighth of the live
/// entries, from 128 to 1,024 (see [`limbo_batch`]).
const LIMBO_BATCH: std::ops::RangeInclusive<usize> = 128..=1024;
/// Finished flights kept for the next misses to lead with.
const SPARE_FLIGHTS: usize = 8;
/// The most table shards (a resize copies one shard).
pub(super) const MAX_SHARD_BITS: u32 = 6;

/// Settings fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// `usize::MAX` when unbounded.
    pub(crate) max_size: usize,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) time_to_idle: Option<Duration>,
    pub(crate) refresh_after: Option<Duration>,
    pub(crate) stale_for: Option<Duration>,
    pub(crate) load_timeout: Option<Duration>,
    /// Each TTL is spread uniformly by up to this fraction either way.
    pub(crate) ttl_jitter: f64,
    pub(crate) batch_window: Duration,
    pub(crate) max_batch_size: usize,
    pub(crate) name: Arc<str>,
    pub(crate) policy: crate::Policy,
    /// The bound on the sum of weights; `u64::MAX` when there is none.
    pub(crate) max_weight: u64,
    /// Tags snapshots (with the key and value types' names).
    #[cfg_attr(not(feature = "persist"), allow(dead_code))]
    pub(crate) snapshot_version: u32,
}

/// State owned by the lock holder.
struct State<V> {
    /// The proof, for [`Store::table`], that the lock is held.
    locked: Locked,
    /// Which entry leaves next.
    order: Order,
    /// `READY` entries.
    len: usize,
    /// Slots ever allocated.
    high: u32,
    free: Vec<u32>,
    wheel: Wheel,
    /// `READY` entries with a deadline, and `STALE` ones: the wheel's
    /// live timers.
    timed: usize,
    usage: Vec<Usage>,
    /// How new tables split their words: wide enough for every slab index
    /// up to `high`.
    format: Format,
    /// Retired slots not yet handed to the epoch.
    limbo: Vec<u32>,
    /// How many gather in `limbo` before a write hands them over (see
    /// [`limbo_batch`]), sized at the last hand-off.
    limbo_batch: usize,
    /// The sum of live entries' weights (with a weigher; else unused).
    weight: u64,
    /// Each slot's weight, by index (with a weigher; else empty).
    weights: Vec<u32>,
    /// Entries removed under this lock, for the listener (only with one):
    /// told after unlocking, by the write that removed them.
    departed: Vec<(u32, RemovalCause)>,
    /// Spare buffer for replaying read records.
    replaying: Vec<(u32, u32)>,
    /// Counted here, under the lock that evicts and expires, not with atomics.
    evictions: u64,
    expirations: u64,
    /// Misses counted by `claim` (see `get_before_claim`).
    misses: u64,
    /// Flights of loads that ended with nobody else holding them, as new:
    /// a miss leads with one of these instead of allocating (an allocation
    /// and a free cost ~190 instructions, an eighth of a miss).
    spare: Vec<Arc<Flight<V>>>,
}

/// The words of a bitset over `slots` slab slots, if [`Store::prune_timers`]
/// marks them in one for a wheel of `timers`: when zeroing it costs no more
/// than four words a timer.
fn bitset_words(slots: u32, timers: usize) -> Option<usize> {
    let words = (slots as usize).div_ceil(64);
    (words <= timers.saturating_mul(4)).then_some(words)
}

/// How many retired slots a store holding `live` entries gathers before
/// handing them to the epoch. Each hand-off flushes the epoch, which costs
/// a `membarrier(2)` call (~430 ns alone on a core, more with other
/// threads running, as it interrupts them) and a few allocations and
/// locks, none of which an instruction count shows: at 128 a batch, an
/// insert with eviction took 1.06 times as long as at 1,024 (BENCHMARKS.md,
/// "Where an insert's instructions go"). What waits keeps its slot, and
/// its key and value until the slot is taken back (a value may be large:
/// a weigher's cache can hold few), so a batch is at most an eighth of
/// the live entries, which also keeps the slab within the table words'
/// first format (twice the bound): at least 128, as before, at most 1,024.
fn limbo_batch(live: usize) -> usize {
    (live / 8).clamp(*LIMBO_BATCH.start(), *LIMBO_BATCH.end())
}

/// When a write hands the slots it retired to the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handoff {
    /// Once a batch has gathered (see [`limbo_batch`]): one epoch call
    /// per batch.
    Batched,
    /// At once: removals, whose memory a caller expects back soon.
    Now,
}

/// How a new entry is placed, worked out before the lock is taken.
#[derive(Debug, Clone, Copy)]
struct Placing {
    /// Its deadline (see [`Store::deadline`]).
    expires: u64,
    weight: u32,
    /// Why it is not stored at all, if it is not (see [`Store::refusal`]).
    refused: Option<RemovalCause>,
    /// The clock, if the deadline needed it (else `NEVER`): the write's
    /// expiry check under the lock uses it instead of reading the clock
    /// again (~80 instructions).
    now: u64,
}

/// Where a lookup under the lock found a key.
pub(crate) enum Claim<V> {
    /// A live value (cloned by the caller outside the lock).
    Hit(V),
    /// A load in flight to wait on.
    Join(Arc<Flight<V>>),
    /// No entry: the caller's placeholder is in, and it runs the load.
    Lead(Placeholder<V>),
}

/// A leader's placeholder: slot `idx` as it was when placed, and the
/// flight it points to.
///
/// The slot points to the flight without holding a count (see
/// `slab::Payload`), so the flight must outlive the slot's time as this
/// placeholder: [`resolve`](Store::resolve) and [`fail`](Store::fail) end
/// it (or find it ended) under the lock and mark it given up. One dropped
/// before that (a panic on the way, say) keeps its flight alive for good
/// rather than leave the slot pointing to freed memory.
#[derive(Debug)]
pub(crate) struct Placeholder<V> {
    idx: u32,
    meta: u32,
    flight: ManuallyDrop<Arc<Flight<V>>>,
    /// Set under the lock once the slot is no longer `PENDING` with
    /// `meta`: nothing reads its pointer to the flight any more.
    given_up: AtomicBool,
}

impl<V> Placeholder<V> {
    /// The flight its waiters wait on.
    #[inline]
    pub(crate) fn flight(&self) -> &Arc<Flight<V>> {
        &self.flight
    }

    /// Notes that the slot no longer needs the flight. Lock held.
    #[inline]
    fn give_up(&self) {
        self.given_up.store(true, Ordering::Relaxed);
    }

    /// The flight, from a placeholder the store has given up.
    #[inline]
    fn into_flight(self) -> Arc<Flight<V>> {
        debug_assert!(self.given_up.load(Ordering::Relaxed));
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the flight is taken once.
        unsafe { ManuallyDrop::take(&mut this.flight) }
    }
}

impl<V> Drop for Placeholder<V> {
    fn drop(&mut self) {
        if self.given_up.load(Ordering::Relaxed) {
            // SAFETY: dropped once, here; no slot's pointer to it is read
            // any more (`given_up`).
            unsafe { ManuallyDrop::drop(&mut self.flight) }
        }
    }
}

pub(crate) struct Store<K, V, S = DefaultHasher> {
    hasher: S,
    /// `tag >> shard_shift` picks a shard; 32 with one shard.
    shard_shift: u32,
    shards: Box<[AtomicPtr<Table>]>,
    slab: Slab<K, V>,
    reads: ReadBuffer,
    /// Padded: the lock holder writes here on every replay and write, and
    /// must not share a cache line with what every read loads (the shard
    /// pointers, the hasher, the config).
    state: CachePadded<Mutex<State<V>>>,
    reclaimed: Arc<Reclaimed>,
    pub(crate) clock: Clock,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) observers: Observers,
    listener: Option<Listener<K, V>>,
    weigher: Option<Weigher<K, V>>,
    /// The deadlines of `TIMED` entries (a TTL, or idle expiry).
    deadlines: Deadlines,
    /// Idle deadlines, with `time_to_idle`.
    idle: Option<Idle>,
    /// Write times, with `refresh_after`.
    refresh: Option<Refresh>,
    /// `stale_for` in clock nanoseconds; 0 without.
    stale_for: u64,
    /// Saves of this cache run one at a time.
    #[cfg(feature = "persist")]
    pub(crate) save_lock: tokio::sync::Mutex<()>,
    /// The shared second level, with `CacheBuilder::tier`.
    #[cfg(feature = "tier")]
    pub(crate) tier: Option<crate::tier::Link<K, V>>,
}

/// How many slots ahead a scan in table order asks the cache for.
const PREFETCH_AHEAD: usize = 12;

/// Asks the CPU to bring the cache line at `at` in: a hint, so any address
/// will do (nothing happens where there is no such instruction).
#[inline(always)]
fn prefetch<T>(at: *const T) {
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch reads
    // nothing the program sees and never faults, whatever the address.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// How long to make a side array indexed by slot (a link, a weight) that
/// must hold `needed`: to the next power of two while small, then by steps
/// of 4,096. What a side array holds is written whole, so all of it is
/// memory the process keeps: doubling left up to half of a large one
/// unused (5% at 1,000,000 entries, ~0.8 bytes an entry).
pub(super) fn room_for(needed: usize) -> usize {
    needed.next_power_of_two().min(needed.next_multiple_of(4_096))
}

/// Calls `each` on every slab index in `table`, in table order, and
/// `ahead` on the one [`PREFETCH_AHEAD`] further on, to have its slot in
/// cache by then (the indices are at random in the slab).
fn scan(table: TableRef<'_>, mut ahead: impl FnMut(u32), mut each: impl FnMut(u32)) {
    let mut next = table.indices().skip(PREFETCH_AHEAD);
    for idx in table.indices() {
        if let Some(later) = next.next() {
            ahead(later);
        }
        each(idx);
    }
}

#[inline]
fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

impl<K, V, S> Store<K, V, S> {
    pub(crate) fn new(
        config: Config,
        listener: Option<Listener<K, V>>,
        weigher: Option<Weigher<K, V>>,
        hasher: S,
    ) -> Self {
        let shard_bits = if config.max_size == usize::MAX {
            MAX_SHARD_BITS
        } else {
            (config.max_size / 4096).next_power_of_two().trailing_zeros().min(MAX_SHARD_BITS)
        };
        let shards = 1usize << shard_bits;
        Store {
            hasher,
            shard_shift: 32 - shard_bits,
            shards: (0..shards).map(|_| AtomicPtr::new(ptr::null_mut())).collect(),
            slab: Slab::new(),
            reads: ReadBuffer::new(config.policy == crate::Policy::TinyLfu),
            state: CachePadded::new(Mutex::new(State {
                locked: Locked::new(),
                order: Order::new(config.policy, config.max_size),
                len: 0,
                high: 0,
                free: Vec::new(),
                wheel: Wheel::default(),
                timed: 0,
                usage: vec![Usage::default(); shards],
                format: Format::new(config.max_size),
                limbo: Vec::new(),
                limbo_batch: *LIMBO_BATCH.start(),
                weight: 0,
                weights: Vec::new(),
                departed: Vec::new(),
                replaying: Vec::new(),
                evictions: 0,
                expirations: 0,
                misses: 0,
                spare: Vec::new(),
            })),
            reclaimed: Arc::default(),
            deadlines: Deadlines::new(),
            idle: config.time_to_idle.and_then(Idle::new),
            refresh: config.refresh_after.map(Refresh::new),
            stale_for: config.stale_for.map_or(0, |stale| u64::try_from(stale.as_nanos()).unwrap_or(NEVER)),
            clock: Clock::new(),
            config,
            counters: Counters::default(),
            observers: Observers::new(),
            listener,
            weigher,
            #[cfg(feature = "persist")]
            save_lock: tokio::sync::Mutex::new(()),
            #[cfg(feature = "tier")]
            tier: None,
        }
    }

    /// Whether a removal listener is set.
    pub(crate) fn listening(&self) -> bool {
        self.listener.is_some()
    }

    #[inline]
    fn shard(&self, tag: u32) -> usize {
        (u64::from(tag) >> self.shard_shift) as usize
    }

    /// `shard`'s current table, if it has one, for as long as `_proof` is
    /// borrowed: a pin ([`Pinned`]) or the lock ([`Locked`]).
    #[inline]
    fn table<'a>(&'a self, shard: usize, _proof: &'a impl Protects) -> Option<TableRef<'a>> {
        let table = NonNull::new(self.shards[shard].load(Ordering::Acquire))?;
        // SAFETY: from `Table::alloc`. Only the lock holder swaps a table
        // out, and the epoch frees it only after every reader pinned before
        // the swap has unpinned: with the lock held or a pin kept for 'a, it
        // stays allocated for 'a.
        Some(unsafe { TableRef::new(table) })
    }

    #[inline]
    fn slot(&self, idx: u32) -> &Slot<K, V> {
        self.slab.get(idx)
    }

    fn lock(&self) -> MutexGuard<'_, State<V>> {
        lock(&self.state)
    }

    /// Live entries, after reclaiming expired ones.
    pub(crate) fn len(&self) -> usize {
        self.settled(|p| p.len)
    }

    /// `f` on an up-to-date policy, for the calls that report on the cache
    /// (`len`, `metrics`): also hands every retired slot to the epoch and
    /// nudges it on, so memory held by removed and expired entries is freed
    /// within a few such calls even when nothing else writes or pins.
    fn settled<R>(&self, f: impl FnOnce(&mut State<V>) -> R) -> R {
        let out = self.write(Handoff::Now, f);
        flush();
        out
    }

    pub(crate) fn metrics(&self) -> Metrics {
        self.counters.since_reset(self.totals())
    }

    pub(crate) fn reset_metrics(&self) {
        self.counters.reset(self.totals());
    }

    /// Counters since the cache was built, never reset (for exporters),
    /// with the current size.
    pub(crate) fn totals(&self) -> Metrics {
        let (size, weight, evictions, expirations, claimed_misses) =
            self.settled(|p| (p.len, self.weight_in(p), p.evictions, p.expirations, p.misses));
        let max_size = (self.config.max_size != usize::MAX).then_some(self.config.max_size as u64);
        let max_weight = (self.config.max_weight != u64::MAX).then_some(self.config.max_weight);
        let hits = self.reads.hits();
        let misses = self.reads.misses() + claimed_misses;
        Metrics {
            size: size as u64,
            max_size,
            weight,
            max_weight,
            evictions,
            expirations,
            ..self.counters.totals(hits, misses)
        }
    }

    /// Runs `f` under the lock on an up-to-date policy, then, after
    /// unlocking, tells the listener (if any) of the entries that left, and
    /// hands retired slots to the epoch as `handoff` says.
    fn write<R>(&self, handoff: Handoff, f: impl FnOnce(&mut State<V>) -> R) -> R {
        self.write_at(handoff, NEVER, f)
    }

    /// [`write`](Self::write), with the clock as the caller read it just
    /// before, or `NEVER` if it did not (see [`Placing::now`]).
    #[inline]
    fn write_at<R>(&self, handoff: Handoff, now: u64, f: impl FnOnce(&mut State<V>) -> R) -> R {
        let free = self.take_back();
        let (out, retired, departed) = {
            let mut p = self.lock();
            if let Some(free) = &free {
                p.free.extend_from_slice(free);
            }
            self.maintain(&mut p, now);
            let out = f(&mut p);
            let flush = handoff == Handoff::Now && !p.limbo.is_empty();
            let retired = (p.limbo.len() >= p.limbo_batch || flush).then(|| {
                // The next batch's size, from the entries live now: once a
                // batch, not on every write.
                let batch = limbo_batch(p.len);
                p.limbo_batch = batch;
                std::mem::replace(&mut p.limbo, Vec::with_capacity(batch))
            });
            // Pinned before unlocking, so no grace period that could free
            // these slots (any hand-off happens after the unlock) ends
            // before the listener is done with them.
            let departed = (!p.departed.is_empty()).then(|| (std::mem::take(&mut p.departed), pin()));
            (out, retired, departed)
        };
        if let Some(slots) = retired {
            // Their grace period starts now, later than their retirement:
            // only more careful.
            let reclaimed = Arc::clone(&self.reclaimed);
            defer_and_flush(move || reclaimed.add(slots));
        }
        if let Some((departed, _pinned)) = departed {
            self.tell(departed);
        }
        out
    }

    /// Tells the listener of entries that left under the lock just
    /// released: user code, so never under it.
    #[cold]
    #[inline(never)]
    fn tell(&self, departed: Vec<(u32, RemovalCause)>) {
        let Some(listener) = &self.listener else { return };
        for (idx, cause) in departed {
            let slot = self.slot(idx);
            // SAFETY: retired READY by the write that passed it here, which
            // pinned before unlocking: not reclaimed until the pin ends.
            let (key, value) = unsafe { (slot.key(), slot.value()) };
            notify(listener, &self.counters.listener_panics, key, value, cause);
        }
    }

    /// Tells the listener of an entry that was never stored, for `cause`
    /// (see [`refusal`](Self::refusal)).
    fn tell_unstored(&self, key: &K, value: &V, cause: RemovalCause) {
        if let Some(listener) = &self.listener {
            notify(listener, &self.counters.listener_panics, key, value, cause);
        }
    }

    /// Why an entry with this TTL and weight would not be stored at all, if
    /// it would not: for the bound (`max_size(0)`, or heavier than
    /// `max_weight`), or for its zero TTL.
    fn refusal(&self, ttl: Option<Duration>, weight: u32) -> Option<RemovalCause> {
        if self.config.max_size == 0 || u64::from(weight) > self.config.max_weight {
            Some(RemovalCause::Size)
        } else if ttl == Some(Duration::ZERO) || self.config.time_to_idle == Some(Duration::ZERO) {
            Some(RemovalCause::Expired)
        } else {
            None
        }
    }

    /// What `key` and `value` weigh (1 without a weigher). User code: the
    /// caller is not under the lock.
    pub(crate) fn weigh(&self, key: &K, value: &V) -> u32 {
        self.weigher.as_ref().map_or(1, |weigher| weigher(key, value))
    }

    /// What the entry a leader's load will store weighs, its key read from
    /// the placeholder (1 without a weigher; 0 if the placeholder is gone,
    /// when nothing is stored). Called before the leader gives up its
    /// placeholder, so a panicking weigher abandons the load as a panicking
    /// loader would.
    pub(crate) fn weigh_lead(&self, lead: &Placeholder<V>, value: &V) -> u32 {
        let Some(weigher) = &self.weigher else { return 1 };
        // Counted in before the meta is read: if the slot is ours then, it
        // is not taken back (so its key stays) until `_held` goes.
        let _held = self.reclaimed.hold();
        let slot = self.slot(lead.idx);
        if slot.meta.load(Ordering::Acquire) != lead.meta {
            return 0;
        }
        // SAFETY: our placeholder when the meta was read, and held since:
        // retired at most, its key intact.
        weigher(unsafe { slot.key() }, value)
    }

    /// The sum of live entries' weights (`len` without a weigher).
    pub(crate) fn weight(&self) -> u64 {
        self.settled(|p| self.weight_in(p))
    }

    /// `p.weight` is kept only with a weigher; without, each entry weighs 1.
    fn weight_in(&self, p: &State<V>) -> u64 {
        if self.weigher.is_some() { p.weight } else { p.len as u64 }
    }

    /// Expires due entries now: the maintenance task's tick, so expirations
    /// reach the listener without anyone touching the cache.
    pub(crate) fn expire_due(&self) {
        self.write(Handoff::Now, |_| ());
    }

    /// Takes back the slots whose grace period has ended, if any: see
    /// [`take_back_now`](Self::take_back_now). Most writes find none.
    #[inline]
    fn take_back(&self) -> Option<Vec<u32>> {
        if !self.reclaimed.ready() {
            return None;
        }
        Some(self.take_back_now())
    }

    /// The slots whose grace period has ended, emptied for the free list.
    /// Their contents are dropped here, before the lock is taken, so user
    /// `Drop` code never runs under it; a panic in one is caught (it belongs
    /// to no caller) and the rest are still dropped. Nothing is taken back
    /// while a snapshot reads retired slots.
    #[cold]
    #[inline(never)]
    fn take_back_now(&self) -> Vec<u32> {
        let mut free = self.reclaimed.take();
        // Nothing to drop: the slots stay as they are until `Slot::fill`
        // starts their next generation (touching each here was a cache
        // miss an insert with eviction, ~5% of its time), and `discard`
        // kept out those whose generations ran out.
        if !std::mem::needs_drop::<(K, V)>() {
            return free;
        }
        let mut spent = false;
        let mut next = 0;
        // One `catch_unwind` for the batch: after a panic, the loop goes on
        // from the slot after the one whose contents panicked.
        while next < free.len() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                while let Some(&idx) = free.get(next) {
                    next += 1;
                    let slot = self.slot(idx);
                    // SAFETY: retired, and its grace period has ended: no
                    // reader holds it, no snapshot reads it (`Reclaimed::take`
                    // checked), and it is on no list a writer takes from; the
                    // batch came out of `reclaimed` once, so nobody else
                    // takes it.
                    let contents = unsafe { slot.take() };
                    spent |= slab::exhausted(slot.meta.load(Ordering::Relaxed));
                    // User `Drop`, once the slot is already empty.
                    drop(contents);
                }
            }));
        }
        // A slot whose generations ran out is never reused, so an `(index,
        // meta)` pair names one use of a slot forever. Once in 2^28 reuses.
        if spent {
            free.retain(|&idx| !slab::exhausted(self.slot(idx).meta.load(Ordering::Relaxed)));
        }
        free
    }

    /// Replays reads and expires due entries. The checks are inline and
    /// the work out of line: most writes find nothing to do, and with the
    /// work inlined this was a call of its own (17 instructions a write).
    #[inline(always)]
    fn maintain(&self, p: &mut State<V>, now: u64) {
        if self.reads.is_dirty() {
            self.replay_all(p);
        }
        // Inlined: a cache without timers reads no clock; one with them
        // goes through the wheel only once something is due.
        let next = p.wheel.next();
        if next != wheel::IDLE {
            let now = if now == NEVER { self.clock.now() } else { now };
            if now >= next {
                self.expire(p, now);
            }
        }
    }

    /// [`replay`](Self::replay) of every stripe, out of line (see
    /// [`maintain`](Self::maintain)).
    #[inline(never)]
    fn replay_all(&self, p: &mut State<V>) {
        self.replay(p, None);
    }

    /// Removes every entry whose deadline has passed. An entry whose timer
    /// fires early, because a read pushed its idle deadline on, is armed
    /// again at the new deadline.
    #[inline(never)]
    fn expire(&self, p: &mut State<V>, now: u64) {
        let mut wheel = std::mem::take(&mut p.wheel);
        let mut rearmed = Vec::new();
        wheel.advance(
            now,
            |idx, bucket| self.due_at(idx, bucket),
            |idx, bucket| {
                let Some(due) = self.due_at(idx, bucket) else {
                    return;
                };
                let slot = self.slot(idx);
                if due > now {
                    // A read pushed its idle deadline on.
                    rearmed.push((idx, due));
                } else if state(slot.meta.load(Ordering::Relaxed)) == STALE {
                    // Its stale window ended (`retire` counts and tells it).
                    self.detach(p, idx, RemovalCause::Expired);
                } else {
                    // Timed: armed.
                    let expires = self.deadlines.get(idx);
                    if expires <= now && self.stale_end(expires) > now {
                        // Its TTL (not idleness) ended, and `stale_for` keeps it.
                        p.order.unlink(idx);
                        p.len -= 1;
                        if self.weigher.is_some() {
                            p.weight -= u64::from(p.weights[idx as usize]);
                        }
                        slot.shift(STALE);
                        rearmed.push((idx, self.stale_end(expires)));
                    } else {
                        self.detach(p, idx, RemovalCause::Expired);
                        p.expirations += 1;
                    }
                }
            },
        );
        for (idx, deadline) in rearmed {
            wheel.push(idx, deadline);
        }
        p.wheel = wheel;
    }

    /// When slot `idx`'s entry is due, if a timer in `bucket` is its
    /// entry's, or `None` if it was left by an entry that has gone (the
    /// wheel keeps neither deadlines nor metas: see its docs). Lock held.
    ///
    /// A timed `READY` entry's TTL deadline and a `STALE` one's end are
    /// fixed for the entry's life, and its timer sits in a bucket that holds
    /// it. An idle deadline moves on with reads, away from where its timer
    /// was placed, so in a cache with `time_to_idle` any timer before it
    /// will do: one of a previous occupant then lives on as a duplicate
    /// until [`prune_timers`](Self::prune_timers) keeps one a slot.
    fn due_at(&self, idx: u32, bucket: Bucket) -> Option<u64> {
        let meta = self.slot(idx).meta.load(Ordering::Relaxed);
        let due = match state(meta) {
            READY if slab::timed(meta) => {
                let expires = self.deadlines.get(idx);
                if let Some(idle) = &self.idle {
                    let due = expires.min(idle.deadline(idx));
                    return (due >= bucket.start).then_some(due);
                }
                expires
            }
            STALE => self.stale_end(self.deadlines.get(idx)),
            _ => return None,
        };
        bucket.contains(due).then_some(due)
    }

    /// The deadline of slot `idx` with `meta` (`READY`, or retired since
    /// and held): `NEVER` unless timed.
    #[inline]
    fn slot_deadline(&self, idx: u32, meta: u32) -> u64 {
        if slab::timed(meta) { self.deadlines.get(idx) } else { NEVER }
    }

    /// Keeps slot `idx`'s deadline `expires` if it has one, before the slot
    /// is published; returns whether it has (the slot is then `TIMED`).
    #[inline]
    fn stamp_deadline(&self, idx: u32, expires: u64) -> bool {
        let timed = expires != NEVER;
        if timed {
            self.deadlines.set(idx, expires);
        }
        timed
    }

    /// When `READY` slot `idx`, whose TTL ends at `expires`, expires: then,
    /// or at its idle deadline if that comes first.
    #[inline]
    fn soonest(&self, idx: u32, expires: u64) -> u64 {
        match &self.idle {
            Some(idle) => expires.min(idle.deadline(idx)),
            None => expires,
        }
    }

    /// Starts slot `idx`'s idle clock (`time_to_idle`) and notes when it
    /// was written (`refresh_after`): before the slot is published `READY`.
    fn start_clocks(&self, idx: u32) {
        if self.idle.is_none() && self.refresh.is_none() {
            return;
        }
        let now = self.clock.now();
        if let Some(idle) = &self.idle {
            idle.start(idx, now);
        }
        if let Some(refresh) = &self.refresh {
            refresh.stamp(idx, now);
        }
    }

    /// When a stale entry whose TTL ended at `expires` is dropped.
    fn stale_end(&self, expires: u64) -> u64 {
        expires.saturating_add(self.stale_for)
    }

    fn replay(&self, p: &mut State<V>, reader: Option<usize>) {
        let State { order, replaying, .. } = p;
        self.reads.drain(reader, replaying, |records| order.touch_all(records, |idx, meta| self.linked(idx, meta)));
    }

    /// Whether read record `(idx, meta)` names an entry still linked in
    /// the order: one whose slot is `READY` with that very meta (an entry
    /// is linked exactly while it is `READY`; a slot reused since has
    /// another generation). Lock held. Meta 0 is no `READY` meta: a zero
    /// record (a place a racing reader reserved but had not yet written)
    /// names nothing.
    #[inline]
    fn linked(&self, idx: u32, meta: u32) -> bool {
        state(meta) == READY && self.slot(idx).meta.load(Ordering::Relaxed) == meta
    }

    /// Records a hit, and replays the read records when the buffer asks and
    /// the lock is free (else the stripe's oldest records are overwritten:
    /// only under concurrency).
    #[inline]
    fn record(&self, stripe: usize, idx: u32, meta: u32) {
        if self.reads.push(stripe, idx, meta).is_err() {
            match self.state.try_lock() {
                Ok(mut p) => self.replay(&mut p, Some(stripe)),
                Err(std::sync::TryLockError::Poisoned(p)) => self.replay(&mut p.into_inner(), Some(stripe)),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
    }

    #[inline]
    fn alloc(&self, p: &mut State<V>) -> u32 {
        match p.free.pop() {
            Some(idx) => idx,
            None => self.alloc_new(p),
        }
    }

    /// A slot never used before: the slab (and the side arrays) grow.
    #[cold]
    #[inline(never)]
    fn alloc_new(&self, p: &mut State<V>) -> u32 {
        let idx = p.high;
        if !p.format.holds(idx) {
            self.widen(p);
        }
        self.slab.ensure(idx);
        if let Some(idle) = &self.idle {
            idle.ensure(idx);
        }
        if let Some(refresh) = &self.refresh {
            refresh.ensure(idx);
        }
        p.order.reserve(idx);
        if self.weigher.is_some() && p.weights.len() <= idx as usize {
            p.weights.resize(room_for(idx as usize + 1), 0);
        }
        p.high += 1;
        idx
    }

    /// Copies every table into words that hold one more slab index than
    /// they can now (slots ever allocated reached 2^24, or 2^26...), each
    /// word at its own position, so that the position a write probed
    /// before taking its slot still holds. A bounded cache starts with
    /// words for twice its entries (the slab grows past them only by the
    /// slots that wait out readers), so this is for an unbounded cache as
    /// it grows, one of more than 2^27 entries, or slots piled up behind a
    /// reader that stays pinned: once per fourfold growth.
    #[cold]
    #[inline(never)]
    fn widen(&self, p: &mut State<V>) {
        while !p.format.holds(p.high) {
            p.format = p.format.wider();
        }
        for shard in 0..self.shards.len() {
            let Some(old) = self.table(shard, &p.locked) else { continue };
            let fresh = Table::alloc(old.capacity(), p.format);
            // SAFETY: just allocated; freed only after being swapped out and
            // retired, long after this function returns.
            let table = unsafe { TableRef::new(fresh) };
            // SAFETY: an indexed slot is not FREE.
            table.copy_from(old, |idx| unsafe { self.slot(idx).tag() });
            self.install(shard, fresh);
        }
    }

    /// Publishes `fresh` as `shard`'s table and retires the one it replaces
    /// through the epoch, for readers still in it. Lock held.
    fn install(&self, shard: usize, fresh: NonNull<Table>) {
        let old = self.shards[shard].swap(fresh.as_ptr(), Ordering::Release);
        if let Some(old) = NonNull::new(old) {
            retire_table(old);
        }
    }

    /// Rebuilds `shard`'s table (or makes its first) if one more word would
    /// make it [`full`](Usage::full).
    fn make_room(&self, p: &mut State<V>, shard: usize) {
        let usage = p.usage[shard];
        let current = self.table(shard, &p.locked);
        let capacity = current.map_or(0, TableRef::capacity);
        if current.is_some() && !usage.full(capacity) {
            return;
        }
        let capacity = usage.rebuilt_capacity(capacity);
        self.rebuild(p, shard, capacity);
    }

    /// Moves `shard`'s words to a new table of `capacity` words (a power of
    /// two, at least twice the live words) in the current format, sweeping
    /// its tombstones. Out of line: rare, and inlined it grew every write's
    /// code.
    #[cold]
    #[inline(never)]
    fn rebuild(&self, p: &mut State<V>, shard: usize, capacity: usize) {
        let fresh = Table::alloc(capacity, p.format);
        // SAFETY: just allocated; freed only after being swapped out below
        // and retired, long after this function returns.
        let table = unsafe { TableRef::new(fresh) };
        if let Some(old) = self.table(shard, &p.locked) {
            // A word keeps only part of its tag: the slot has it whole.
            scan(
                old,
                |idx| prefetch(self.slot(idx)),
                |idx| {
                    // SAFETY: an indexed slot is not FREE.
                    table.insert(unsafe { self.slot(idx).tag() }, idx);
                },
            );
        }
        self.install(shard, fresh);
        p.usage[shard].dead = 0;
    }

    /// Makes room in the tables for `additional` more entries (up to
    /// `max_size` in all) at once, instead of doubling each table as they
    /// come: a load into a fresh cache rebuilt every shard's table about
    /// eight times.
    #[cfg(feature = "persist")]
    pub(crate) fn reserve(&self, additional: usize) {
        let shards = self.shards.len();
        self.write(Handoff::Batched, |p| {
            let total = p.len.saturating_add(additional).min(self.config.max_size);
            // The mean, no margin: a margin would double every table where
            // the mean sits just under a power of two, and a shard that
            // gets more than the mean grows as it would have anyway.
            let each = total / shards;
            for shard in 0..shards {
                let usage = p.usage[shard];
                let capacity = self.table(shard, &p.locked).map_or(0, TableRef::capacity);
                let needed = Usage { live: usage.live.max(each), dead: 0 }.rebuilt_capacity(0);
                if needed > capacity {
                    self.rebuild(p, shard, needed);
                }
            }
        });
    }

    /// Puts `idx`'s word where [`probe`](Self::probe) found room.
    fn occupy(&self, p: &mut State<V>, shard: usize, pos: usize, tag: u32, idx: u32) {
        let usage = &mut p.usage[shard];
        // Whether it was a tombstone is hard to predict: counted, not
        // branched on.
        usage.dead -= usize::from(self.table(shard, &p.locked).expect("probed").fill(pos, tag, idx));
        usage.live += 1;
    }

    /// Removes `idx`'s table word.
    fn unindex(&self, p: &mut State<V>, idx: u32, tag: u32) {
        let shard = self.shard(tag);
        let table = self.table(shard, &p.locked).expect("an indexed slot has a table");
        let usage = &mut p.usage[shard];
        usage.dead = usage.dead.wrapping_add_signed(table.remove(table.position_of(tag, idx)));
        usage.live -= 1;
    }

    /// Takes `idx` (whose slot is `slot`) out of the recency order and
    /// retires it; its table word must be gone or about to be (the caller's
    /// job unless `unindex` first). An entry (not a placeholder) leaves for
    /// `cause`.
    fn retire(&self, p: &mut State<V>, idx: u32, slot: &Slot<K, V>, cause: RemovalCause) {
        let meta = slot.meta.load(Ordering::Relaxed);
        if state(meta) == READY {
            p.order.unlink(idx);
            p.len -= 1;
            if self.weigher.is_some() {
                p.weight -= u64::from(p.weights[idx as usize]);
            }
            self.unarm(p, meta);
            self.depart(p, idx, cause);
        } else {
            self.retire_other(p, idx);
        }
        self.discard(p, idx, slot);
    }

    /// `retire`'s accounting for a slot that is not a live entry: a
    /// placeholder, or a stale entry.
    #[cold]
    #[inline(never)]
    fn retire_other(&self, p: &mut State<V>, idx: u32) {
        let slot = self.slot(idx);
        match state(slot.meta.load(Ordering::Relaxed)) {
            // SAFETY: PENDING, lock held.
            PENDING => self.release_held(p, unsafe { slot.flight() }),
            // Expired already (out of the order and the counts), whatever
            // ends it now: told as an expiry. A `HELD` one has no timer.
            was @ (STALE | HELD) => {
                if was == STALE {
                    p.timed -= 1;
                }
                self.depart(p, idx, RemovalCause::Expired);
                p.expirations += 1;
            }
            _ => {}
        }
    }

    /// Retires the stale entry `flight`'s load holds, if it still does: the
    /// load's placeholder is leaving.
    fn release_held(&self, p: &mut State<V>, flight: &Flight<V>) {
        if let Some((idx, meta)) = flight.stale() {
            let slot = self.slot(idx);
            if slot.meta.load(Ordering::Relaxed) == meta {
                self.retire(p, idx, slot, RemovalCause::Expired);
            }
        }
    }

    /// Notes that entry `idx` leaves for `cause`, for the listener.
    #[inline]
    fn depart(&self, p: &mut State<V>, idx: u32, cause: RemovalCause) {
        if self.listener.is_some() {
            p.departed.push((idx, cause));
        }
    }

    /// Retires slot `idx` (`slot`: callers have it in hand, and looking it
    /// up again costs a write ~10 instructions), already out of the order
    /// and the table, into limbo: it waits there for its grace period.
    fn discard(&self, p: &mut State<V>, idx: u32, slot: &Slot<K, V>) {
        debug_assert!(ptr::eq(slot, self.slot(idx)), "slot {idx} handed with another's");
        // A slot whose generations ran out is never reused: one whose
        // contents need no drop is not even taken back (`take_back_now`
        // would not look at it).
        if slot.retire() || std::mem::needs_drop::<(K, V)>() {
            p.limbo.push(idx);
        }
    }

    /// Counts `READY` slot `idx`'s timer, if it has a deadline (its TTL's,
    /// `expires`, or an idle one), as live in the wheel; pruning the wheel
    /// of dead timers when they pile up.
    #[inline]
    fn arm(&self, p: &mut State<V>, idx: u32, expires: u64) {
        let deadline = self.soonest(idx, expires);
        if deadline != NEVER {
            p.timed += 1;
            p.wheel.push(idx, deadline);
            if p.wheel.len() > 2 * p.timed + 1024 {
                self.prune_timers(p);
            }
        }
    }

    /// Drops the wheel's stale timers (their entries left before they came
    /// due) and keeps one timer a slot: at most one for each of the `timed`
    /// entries is left, so this runs at most once in `timed + 1024` writes.
    /// Any timer [`due_at`](Self::due_at) accepts leads to its entry's
    /// deadline, so which one stays does not matter. Out of line.
    #[cold]
    #[inline(never)]
    fn prune_timers(&self, p: &mut State<V>) {
        // The slots kept a timer for: in a bitset over the slab, or, where
        // the slab is far larger than the wheel (a large cache of which few
        // entries expire), in a set the wheel's size, so that a prune costs
        // in proportion to the timers, not the slots. The cheap test first:
        // most timers a prune meets are duplicates.
        let timers = p.wheel.len();
        if let Some(words) = bitset_words(p.high, timers) {
            let mut seen = vec![0u64; words];
            p.wheel.retain(|idx, bucket| {
                let (word, bit) = (idx as usize / 64, 1u64 << (idx % 64));
                let keep = seen[word] & bit == 0 && self.due_at(idx, bucket).is_some();
                if keep {
                    seen[word] |= bit;
                }
                keep
            });
        } else {
            let mut seen =
                std::collections::HashSet::with_capacity_and_hasher(timers, foldhash::fast::FixedState::default());
            p.wheel
                .retain(|idx, bucket| !seen.contains(&idx) && self.due_at(idx, bucket).is_some() && seen.insert(idx));
        }
    }

    /// The opposite of [`arm`](Self::arm) for a `READY` slot with `meta`,
    /// about to be retired (its timer then finds the slot not its entry's:
    /// see [`due_at`](Self::due_at)).
    fn unarm(&self, p: &mut State<V>, meta: u32) {
        // With `time_to_idle`, every entry is timed.
        if slab::timed(meta) {
            p.timed -= 1;
        }
    }

    /// `unindex` then `retire`.
    fn detach(&self, p: &mut State<V>, idx: u32, cause: RemovalCause) {
        let slot = self.slot(idx);
        // SAFETY: a slot in a table is not FREE.
        self.unindex(p, idx, unsafe { slot.tag() });
        self.retire(p, idx, slot, cause);
    }

    /// Hands a fresh `READY` slot to the order and enforces the bounds.
    /// Always inlined into the two writes that end in it (insert, and a
    /// load's resolve): a call cost them ~25 instructions of register saves.
    #[inline(always)]
    fn link(&self, p: &mut State<V>, idx: u32, tag: u32, expires: u64, weight: u32) {
        p.order.push(idx, tag);
        p.len += 1;
        self.weighs(p, idx, weight);
        self.arm(p, idx, expires);
        self.enforce(p);
    }

    /// Notes that `READY` slot `idx`, now in the count, weighs `weight`.
    #[inline]
    fn weighs(&self, p: &mut State<V>, idx: u32, weight: u32) {
        if self.weigher.is_some() {
            p.weights[idx as usize] = weight;
            p.weight += u64::from(weight);
        }
    }

    /// Evicts until the size and weight bounds hold.
    fn enforce(&self, p: &mut State<V>) {
        while p.len > self.config.max_size || p.weight > self.config.max_weight {
            let victim = p.order.victim().expect("over a bound, so not empty");
            self.detach(p, victim, RemovalCause::Size);
            p.evictions += 1;
        }
    }

    /// Turns the leader's placeholder into `value`, if it is still there:
    /// a `remove`, `insert` or `clear` during the load wins.
    /// `weight` is [`weigh_lead`](Self::weigh_lead)'s.
    /// Returns whether the placeholder was still the key's (the value was
    /// not cut off by a write, a removal or a clear), and the flight if
    /// anyone else holds it: waiters, for the leader to hand its value to.
    /// A flight nobody else holds is kept for another load.
    pub(crate) fn resolve(
        &self,
        lead: Placeholder<V>,
        value: V,
        ttl: Option<Duration>,
        weight: u32,
    ) -> (bool, Option<Arc<Flight<V>>>) {
        let placing = self.placing(ttl, weight);
        let (resolved, unkept) = self.write_at(Handoff::Batched, placing.now, |p| {
            let resolved = self.resolve_locked(p, &lead, value, placing);
            (resolved, self.spare(p, lead.into_flight()))
        });
        let current = resolved.is_ok();
        Self::drop_leftover(resolved);
        (current, unkept.filter(|flight| Arc::strong_count(flight) > 1))
    }

    /// Keeps `flight` for another load if nobody else holds it and there is
    /// room; else hands it back, to drop or finish after unlocking. Lock
    /// held: nobody can join the flight any more (its slot is no longer
    /// `PENDING`), so one that nobody else holds stays so.
    fn spare(&self, p: &mut State<V>, mut flight: Arc<Flight<V>>) -> Option<Arc<Flight<V>>> {
        // A load of the count, where `Arc::get_mut` is a read-modify-write
        // on every miss; the fence orders what `is_pristine` reads after
        // the release decrements of holders that have let go.
        if p.spare.len() >= SPARE_FLIGHTS || Arc::strong_count(&flight) > 1 {
            return Some(flight);
        }
        std::sync::atomic::fence(Ordering::Acquire);
        if !flight.is_pristine() {
            // Waiters came and went, or it held a stale entry: a reset.
            let Some(unshared) = Arc::get_mut(&mut flight) else { return Some(flight) };
            unshared.reset();
        }
        p.spare.push(flight);
        None
    }

    /// [`resolve`](Self::resolve) for many placeholders under one lock.
    /// The values are made before locking: no user `Clone` under the lock.
    /// Returns, for each, whether it was still current.
    pub(crate) fn resolve_all(&self, resolved: Vec<(&Placeholder<V>, V, u32)>, ttl: Option<Duration>) -> Vec<bool> {
        let expires = self.deadline(ttl);
        let leftovers: Vec<_> = self.write(Handoff::Batched, |p| {
            resolved
                .into_iter()
                .map(|(lead, value, weight)| {
                    let placing = Placing { expires, weight, refused: self.refusal(ttl, weight), now: NEVER };
                    self.resolve_locked(p, lead, value, placing)
                })
                .collect()
        });
        leftovers
            .into_iter()
            .map(|leftover| {
                let current = leftover.is_ok();
                Self::drop_leftover(leftover);
                current
            })
            .collect()
    }

    /// Drops a value [`resolve_locked`](Self::resolve_locked) did not
    /// store, after unlocking: the user's, dropped quietly so that a panic
    /// in it cannot keep the leader from waking its waiters.
    fn drop_leftover(leftover: Result<(), V>) {
        if let Err(unstored) = leftover {
            drop_quietly([unstored]);
        }
    }

    /// One placeholder of `resolve`, lock held; gives it up. Hands back the
    /// value if it was not stored, to drop after unlocking (never under the
    /// lock).
    fn resolve_locked(&self, p: &mut State<V>, lead: &Placeholder<V>, value: V, placing: Placing) -> Result<(), V> {
        let Placing { expires, weight, refused, .. } = placing;
        let slot = self.slot(lead.idx);
        let ours = slot.meta.load(Ordering::Relaxed) == lead.meta;
        let resolved = if let (true, None) = (ours, refused) {
            self.start_clocks(lead.idx);
            let timed = self.stamp_deadline(lead.idx, expires);
            // SAFETY: our PENDING slot, lock held.
            unsafe { slot.resolve(value, READY, timed) };
            // SAFETY: READY now.
            let tag = unsafe { slot.tag() };
            self.link(p, lead.idx, tag, expires, weight);
            // The stale entry it replaced is gone for good.
            self.release_held(p, lead.flight());
            Ok(())
        } else if let (true, Some(cause), true) = (ours, refused, self.listener.is_some()) {
            // Never stored, yet an entry to the listener: resolved, then
            // straight out, so that it is told with the key and value.
            let timed = self.stamp_deadline(lead.idx, expires);
            // SAFETY: our PENDING slot, lock held.
            unsafe { slot.resolve(value, READY, timed) };
            self.release_held(p, lead.flight());
            // SAFETY: our slot, READY and in a table.
            self.unindex(p, lead.idx, unsafe { slot.tag() });
            self.depart(p, lead.idx, cause);
            self.discard(p, lead.idx, slot);
            Ok(())
        } else {
            if ours {
                // A placeholder: no entry leaves, the cause is not told.
                self.detach(p, lead.idx, RemovalCause::Size);
            }
            Err(value)
        };
        lead.give_up();
        resolved
    }

    /// Ends flights that get no value: takes their placeholders out (those
    /// still there) under one lock, then wakes each flight's waiters to
    /// `outcome()`.
    pub(crate) fn fail<'a, I>(&self, leads: I, outcome: impl Fn() -> Outcome<V>)
    where
        I: IntoIterator<Item = &'a Placeholder<V>> + Clone,
        V: 'a,
    {
        self.write(Handoff::Now, |p| {
            for lead in leads.clone() {
                // Still ours: taken out. Else someone took it out already.
                if self.slot(lead.idx).meta.load(Ordering::Relaxed) == lead.meta {
                    match lead.flight.stale() {
                        // The stale entry goes back in its place, for the
                        // rest of its window.
                        Some((old, held)) if self.slot(old).meta.load(Ordering::Relaxed) == held => {
                            let slot = self.slot(lead.idx);
                            // SAFETY: our PENDING slot is in a table.
                            let tag = unsafe { slot.tag() };
                            let shard = self.shard(tag);
                            let table = self.table(shard, &p.locked).expect("an indexed slot has a table");
                            table.replace(table.position_of(tag, lead.idx), tag, old);
                            self.discard(p, lead.idx, slot);
                            self.slot(old).shift(STALE);
                            // Timed: it went stale.
                            let end = self.stale_end(self.deadlines.get(old));
                            p.timed += 1;
                            p.wheel.push(old, end);
                        }
                        // A placeholder: no entry leaves, the cause is not told.
                        _ => self.detach(p, lead.idx, RemovalCause::Explicit),
                    }
                }
                lead.give_up();
            }
        });
        for lead in leads {
            lead.flight.finish(outcome());
        }
    }

    /// A refresh of `entry` ended: if the entry is still there (the refresh
    /// failed, panicked or never ran), it keeps its value and may be
    /// refreshed again `refresh_after` from now.
    pub(crate) fn refresh_ended(&self, entry: Entry) {
        let Some(refresh) = &self.refresh else { return };
        let _guard = pin();
        // Pinned, and still that entry: the slot is not reused until the
        // pin ends (a stamp written to a slot retired since is never read).
        if self.slot(entry.idx).meta.load(Ordering::Acquire) == entry.meta {
            refresh.stamp(entry.idx, self.clock.now());
        }
    }

    /// How an entry with this TTL and weight is placed; before the lock.
    #[inline]
    fn placing(&self, ttl: Option<Duration>, weight: u32) -> Placing {
        let mut read = NEVER;
        let placing = self.placing_at(ttl, weight, || {
            read = self.clock.now();
            read
        });
        Placing { now: read, ..placing }
    }

    /// [`placing`](Self::placing) with the clock read by `now`, if a TTL
    /// needs it: a bulk insert reads it once for many entries.
    #[inline(always)]
    fn placing_at(&self, ttl: Option<Duration>, weight: u32, now: impl FnOnce() -> u64) -> Placing {
        Placing { expires: self.deadline_at(ttl, now), weight, refused: self.refusal(ttl, weight), now: NEVER }
    }

    /// The TTL deadline of an entry written now with `ttl`.
    #[inline]
    fn deadline(&self, ttl: Option<Duration>) -> u64 {
        self.deadline_at(ttl, || self.clock.now())
    }

    /// [`deadline`](Self::deadline), with the clock read by `now`. Always
    /// inlined: out of line, it cost 23 instructions a write without a TTL.
    #[inline(always)]
    fn deadline_at(&self, ttl: Option<Duration>, now: impl FnOnce() -> u64) -> u64 {
        match ttl {
            None if self.idle.is_none() => NEVER,
            ttl => self.deadline_of(ttl, now),
        }
    }

    fn deadline_of(&self, ttl: Option<Duration>, now: impl FnOnce() -> u64) -> u64 {
        let deadline = match ttl {
            None => NEVER,
            Some(ttl) => Clock::deadline(now(), Some(self.jittered(ttl))),
        };
        if deadline == NEVER && self.idle.is_some() { IDLE_ONLY } else { deadline }
    }

    /// `ttl` spread uniformly by up to `ttl_jitter` of it either way.
    fn jittered(&self, ttl: Duration) -> Duration {
        let jitter = self.config.ttl_jitter;
        if jitter == 0.0 || ttl.is_zero() {
            return ttl;
        }
        let factor = 1.0 + jitter * (2.0 * fastrand::f64() - 1.0);
        Duration::try_from_secs_f64(ttl.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }
}

impl<K, V, S> Store<K, V, S>
where
    K: Hash + Eq,
    V: Clone,
    S: BuildHasher,
{
    #[inline]
    pub(crate) fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Where `key`'s word is in its shard's table, or where a new one would
    /// go; the table is rebuilt first if one more word would make it full,
    /// so the caller can [`occupy`](Self::occupy) a vacancy (nothing else
    /// changes the table meanwhile: the lock is held). One probe, where a
    /// `find` then an insert took two.
    fn probe(&self, p: &mut State<V>, hash: u64, key: &K) -> (usize, Probe) {
        let tag = tag_of(hash);
        let shard = self.shard(tag);
        self.make_room(p, shard);
        // SAFETY: a slot found in a table is not FREE.
        let probe =
            // SAFETY: a slot found in a table is not FREE; the lock is held.
            self.table(shard, &p.locked).expect("made room").probe(tag, |idx| unsafe { self.slot(idx).key() } == key);
        (shard, probe)
    }

    /// Finds `key` in its table; lock-free when pinned.
    #[inline]
    fn find<Q>(&self, hash: u64, key: &Q, proof: &impl Protects) -> Option<(usize, u32)>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let tag = tag_of(hash);
        self.table(self.shard(tag), proof)?
            // SAFETY: a slot found in a table is not FREE.
            .find(tag, |idx| unsafe { self.slot(idx).key() }.borrow() == key)
    }

    /// The live `READY` slot for `key`, with its meta. A read linearizes at
    /// its load of the slot's meta. With `TOUCH` (a read that counts:
    /// `get`, a load's hit), it restarts the entry's idle clock.
    #[inline]
    fn live<'g, Q, const TOUCH: bool>(&'g self, hash: u64, key: &Q, guard: &'g Pinned) -> Lookup<'g, K, V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        loop {
            let Some((_, idx)) = self.find(hash, key, guard) else {
                return Lookup::Absent;
            };
            let slot = self.slot(idx);
            let meta = slot.meta.load(Ordering::Acquire);
            match state(meta) {
                READY => {
                    // Every entry of a cache with `time_to_idle` is timed
                    // (see `IDLE_ONLY`): others pay nothing here.
                    if slab::timed(meta) {
                        let expires = self.deadlines.get(idx);
                        let now = self.clock.now();
                        if now >= self.soonest(idx, expires) {
                            return Lookup::Absent;
                        }
                        if let (true, Some(idle)) = (TOUCH, &self.idle) {
                            idle.touch(idx, now);
                        }
                    }
                    return Lookup::Live { slot, idx, meta };
                }
                // Retired since the probe found it. A slot is retired only
                // after its table word was replaced or removed, and that
                // Acquire load ordered the change before the next probe:
                // probing again finds the replacing entry (an overwrite) or
                // nothing (a removal). Reporting "absent" here instead would
                // let a read that started after an `insert` returned miss
                // the key.
                RETIRED_READY | RETIRED_PENDING => continue,
                // A load in flight has no value yet.
                _ => return Lookup::Absent,
            }
        }
    }

    /// A lookup that counts a hit or a miss and, on a hit, promotes.
    #[inline]
    pub(crate) fn get<Q>(&self, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.lookup::<Q, false, true>(hash, key, &mut None)
    }

    /// [`get`](Self::get) without counting a miss, for a caller that
    /// claims the key next and counts it there: under the lock the count is
    /// a plain add, where a lookup's is an atomic read-modify-write on a
    /// stripe other threads share.
    #[inline]
    pub(crate) fn get_before_claim(&self, hash: u64, key: &K) -> Option<V> {
        self.lookup::<K, false, false>(hash, key, &mut None)
    }

    /// [`get`](Self::get) for `fetch`: a hit also says which entry this
    /// caller is to refresh, if it is due (`refresh_after`) and nobody
    /// else is refreshing it.
    pub(crate) fn get_or_refresh(&self, hash: u64, key: &K) -> Option<(V, Option<Entry>)> {
        let mut refresh = None;
        self.lookup::<K, true, true>(hash, key, &mut refresh).map(|value| (value, refresh))
    }

    /// `get`, and with `REFRESH`, the entry to refresh in `refresh`; a
    /// miss is counted with `MISS`.
    #[inline(always)]
    fn lookup<Q, const REFRESH: bool, const MISS: bool>(
        &self,
        hash: u64,
        key: &Q,
        refresh: &mut Option<Entry>,
    ) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let guard = pin();
        let stripe = self.reads.stripe(guard.thread());
        match self.live::<Q, true>(hash, key, &guard) {
            Lookup::Live { slot, idx, meta } => {
                // SAFETY: READY, and pinned.
                let value = unsafe { slot.value() }.clone();
                self.record(stripe, idx, meta);
                if REFRESH
                    && let Some(due) = &self.refresh
                    && due.claim(idx, self.clock.now())
                {
                    *refresh = Some(Entry { idx, meta });
                }
                Some(value)
            }
            // An expired entry is left to the writer side (the expiry wheel
            // runs on the next write, `len()` or `metrics()`): reads never
            // take the lock.
            Lookup::Absent => {
                if MISS {
                    self.reads.miss(stripe);
                }
                None
            }
        }
    }

    /// A lookup that neither counts nor promotes.
    #[inline]
    pub(crate) fn peek<Q>(&self, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let guard = pin();
        match self.live::<Q, false>(hash, key, &guard) {
            // SAFETY: READY, and pinned.
            Lookup::Live { slot, .. } => Some(unsafe { slot.value() }.clone()),
            Lookup::Absent => None,
        }
    }

    pub(crate) fn contains<Q>(&self, hash: u64, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        matches!(self.live::<Q, false>(hash, key, &pin()), Lookup::Live { .. })
    }

    /// Stores `value`, replacing any entry or placeholder for `key`.
    pub(crate) fn insert(&self, hash: u64, key: K, value: V, ttl: Option<Duration>) {
        // Storing nothing still replaces what was there: hand it to the
        // epoch at once, as a remove does.
        let placing = self.placing(ttl, self.weigh(&key, &value));
        let handoff = if placing.refused.is_none() { Handoff::Batched } else { Handoff::Now };
        let unstored = self.write_at(handoff, placing.now, |p| self.insert_locked(p, hash, key, value, placing));
        // The caller's own key and value, dropped in its call, after unlocking.
        if let Some((key, value, cause)) = unstored {
            self.tell_unstored(&key, &value, cause);
        }
    }

    /// Stores a refresh's value for `key` if `entry`, the one it
    /// refreshed, is still there: a write, removal or expiry meanwhile wins
    /// (as over a load's placeholder).
    ///
    /// Returns whether the entry was still there to replace.
    pub(crate) fn refreshed(&self, hash: u64, key: K, entry: Entry, value: V, ttl: Option<Duration>) -> bool {
        let placing = self.placing(ttl, self.weigh(&key, &value));
        let (current, leftover) = self.write(Handoff::Batched, |p| {
            let current = self.find(hash, &key, &p.locked).map(|(_, idx)| idx) == Some(entry.idx)
                && self.slot(entry.idx).meta.load(Ordering::Relaxed) == entry.meta;
            if !current {
                return (false, Some((key, value, None)));
            }
            let leftover = self.insert_locked(p, hash, key, value, placing);
            (true, leftover.map(|(key, value, cause)| (key, value, Some(cause))))
        });
        if let Some((key, value, cause)) = leftover {
            if let Some(cause) = cause {
                self.tell_unstored(&key, &value, cause);
            }
            drop_quietly([(key, value)]);
        }
        current
    }

    /// A copy of the stale value `flight`'s load replaces, while the cache
    /// still holds it (in the flight, or put back after a failed load).
    pub(crate) fn stale_value(&self, flight: &Flight<V>) -> Option<V> {
        let (idx, held) = flight.stale()?;
        let _guard = pin();
        let slot = self.slot(idx);
        let meta = slot.meta.load(Ordering::Acquire);
        // Same generation, not retired: retired only after this pin began,
        // so not reclaimed before it ends.
        let kept = slab::generation(meta) == slab::generation(held) && matches!(state(meta), HELD | STALE);
        // SAFETY: HELD or STALE, and pinned (above).
        kept.then(|| unsafe { slot.value() }.clone())
    }

    /// `insert` with the lock held, of an entry weighing `weight`. What is
    /// not stored (a zero TTL, a zero bound, heavier than the weight bound:
    /// `refused`, the [`refusal`](Self::refusal) of `ttl` and `weight`)
    /// still replaces (and so removes) what was there; then the key and
    /// value come back with the reason, to be told and dropped after
    /// unlocking.
    #[must_use]
    fn insert_locked(
        &self,
        p: &mut State<V>,
        hash: u64,
        key: K,
        value: V,
        placing: Placing,
    ) -> Option<(K, V, RemovalCause)> {
        let Placing { expires, weight, refused, .. } = placing;
        if let Some(cause) = refused {
            if let Some((_, idx)) = self.find(hash, &key, &p.locked) {
                self.detach(p, idx, RemovalCause::Replaced);
            }
            return Some((key, value, cause));
        }
        let tag = tag_of(hash);
        let (shard, probe) = self.probe(p, hash, &key);
        let idx = self.alloc(p);
        self.start_clocks(idx);
        let timed = self.stamp_deadline(idx, expires);
        // SAFETY: a fresh slot, published below.
        unsafe { self.slot(idx).fill(tag, key, Filling::Ready(value), timed) };
        match probe {
            Probe::Found(pos, old) => {
                self.table(shard, &p.locked).expect("found in it").replace(pos, tag, idx);
                let old_slot = self.slot(old);
                let old_meta = old_slot.meta.load(Ordering::Relaxed);
                if state(old_meta) == READY {
                    // An overwrite is a use of the entry, not a newcomer: it
                    // keeps its standing in the order (under TinyLfu, its
                    // region: a popular key written often must not have to
                    // win admission again each time).
                    p.order.replace(old, idx);
                    if self.weigher.is_some() {
                        p.weight -= u64::from(p.weights[old as usize]);
                    }
                    self.weighs(p, idx, weight);
                    self.unarm(p, old_meta);
                    self.depart(p, old, RemovalCause::Replaced);
                    self.discard(p, old, old_slot);
                    self.arm(p, idx, expires);
                    // Heavier than the value it replaced, it may push others out.
                    self.enforce(p);
                    return None;
                }
                // A load's placeholder: not an entry yet, nothing is told.
                self.retire(p, old, old_slot, RemovalCause::Replaced);
            }
            Probe::Vacant(pos) => self.occupy(p, shard, pos, tag, idx),
        }
        self.link(p, idx, tag, expires, weight);
        None
    }

    pub(crate) fn remove<Q>(&self, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let guard = pin();
        let removed = self.write(Handoff::Now, |p| {
            let (_, idx) = self.find(hash, key, &p.locked)?;
            let was_ready = state(self.slot(idx).meta.load(Ordering::Relaxed)) == READY;
            self.detach(p, idx, RemovalCause::Explicit);
            was_ready.then_some(idx)
        })?;
        // SAFETY: retired READY; we were pinned before it was retired, so it
        // is not reclaimed until we unpin.
        let value = unsafe { self.slot(removed).value() }.clone();
        drop(guard);
        Some(value)
    }

    pub(crate) fn clear(&self) {
        self.write(Handoff::Now, |p| {
            for (shard, table) in self.shards.iter().enumerate() {
                let Some(old) = NonNull::new(table.swap(ptr::null_mut(), Ordering::Release)) else {
                    continue;
                };
                // SAFETY: swapped out under the lock, retired only below.
                for idx in unsafe { TableRef::new(old) }.indices() {
                    let slot = self.slot(idx);
                    match state(slot.meta.load(Ordering::Relaxed)) {
                        READY => self.depart(p, idx, RemovalCause::Explicit),
                        STALE => {
                            self.depart(p, idx, RemovalCause::Expired);
                            p.expirations += 1;
                        }
                        // SAFETY: PENDING, lock held.
                        PENDING => self.release_held(p, unsafe { slot.flight() }),
                        _ => {}
                    }
                    self.discard(p, idx, slot);
                }
                retire_table(old);
                p.usage[shard] = Usage::default();
            }
            p.order.clear();
            p.len = 0;
            p.weight = 0;
            p.timed = 0;
            p.wheel.clear();
        });
    }

    /// Finds a live value, joins the load in flight, or places the caller's
    /// placeholder (taking `key`) so it leads the load. Counts a miss with
    /// `miss` (see [`get_before_claim`](Self::get_before_claim)).
    pub(crate) fn claim(&self, hash: u64, key: &mut Option<K>, miss: bool) -> Claim<V> {
        let tag = tag_of(hash);
        let guard = pin();
        let found = self.write(Handoff::Batched, |p| {
            p.misses += u64::from(miss);
            let (shard, probe) = self.probe(p, hash, key.as_ref().expect("the caller still owns its key"));
            let (pos, stale) = match probe {
                Probe::Found(pos, idx) => {
                    let slot = self.slot(idx);
                    match state(slot.meta.load(Ordering::Relaxed)) {
                        // Live: `maintain` expired everything due.
                        READY => {
                            if let Some(idle) = &self.idle {
                                idle.touch(idx, self.clock.now());
                            }
                            return Ok(Ok(idx));
                        }
                        // SAFETY: PENDING.
                        PENDING => return Ok(Err(unsafe { slot.join() })),
                        // Expired, kept by `stale_for`: the load replaces it
                        // in the table and holds it meanwhile.
                        STALE => (pos, Some(idx)),
                        other => unreachable!("slot in state {other} in a table"),
                    }
                }
                Probe::Vacant(pos) => (pos, None),
            };
            let idx = self.alloc(p);
            let key = key.take().expect("checked above");
            // Only the caller that leads needs one: joiners and hits (most
            // callers under a herd) pay nothing. Held by the placeholder
            // before the slot points to it (see `Placeholder`).
            let flight = p.spare.pop().unwrap_or_else(|| Arc::new(Flight::new()));
            let mut lead =
                Placeholder { idx, meta: 0, flight: ManuallyDrop::new(flight), given_up: AtomicBool::new(false) };
            let flight = lead.flight();
            // SAFETY: a fresh slot, published below.
            // (No deadline: readers and timers look at it only once `READY`.)
            let meta = unsafe { self.slot(idx).fill(tag, key, Filling::Pending(Arc::as_ptr(flight)), false) };
            match stale {
                Some(old) => {
                    self.table(shard, &p.locked).expect("found in it").replace(pos, tag, idx);
                    // Out of the table and the wheel (a `HELD` slot has no
                    // timer, see `due_at`): only the flight knows of it now.
                    p.timed -= 1;
                    flight.hold_stale(old, self.slot(old).shift(HELD));
                }
                None => self.occupy(p, shard, pos, tag, idx),
            }
            lead.meta = meta;
            Err(lead)
        });
        let claim = match found {
            // SAFETY: READY when found; pinned since, so not reclaimed.
            Ok(Ok(idx)) => Claim::Hit(unsafe { self.slot(idx).value() }.clone()),
            Ok(Err(flight)) => Claim::Join(flight),
            Err(lead) => Claim::Lead(lead),
        };
        drop(guard);
        claim
    }

    /// The live entries, from least to most recently used, for a snapshot
    /// to visit in ranges ([`Picked::visit`], from any thread). Picked
    /// one shard at a time: the lock is held while one shard's table is
    /// read; the visits run outside it.
    ///
    /// Every key present from the start to the end of the snapshot is in
    /// it, with a value it held meanwhile: an entry overwritten after its
    /// shard was read is looked up again and its current value taken. No
    /// epoch pin is held across a visit (user `Serialize` code): retired
    /// slots are instead kept from reuse, in this store only, until the
    /// snapshot is dropped.
    #[cfg(feature = "persist")]
    pub(crate) fn snapshot(&self) -> Picked<'_, K, V, S> {
        // Counted in before any shard is read: every slot picked below stays
        // readable, retired or not, until `_held` is dropped.
        let held = self.reclaimed.hold();
        // Which entries, and their recency, a shard per lock.
        let mut picked: Vec<((u8, u32), u32)> = Vec::new();
        for shard in 0..self.shards.len() {
            // The link alone says whether the slot is READY and how recent:
            // one random load an entry, not two (the slot's meta and the
            // link; the slot waited on was a third of a save).
            self.pick(
                shard,
                &mut picked,
                |p, idx| p.order.prefetch(idx),
                |p, idx| {
                    let rank = p.order.rank(idx)?;
                    debug_assert_eq!(state(self.slot(idx).meta.load(Ordering::Relaxed)), READY, "linked");
                    Some((rank, idx))
                },
            );
        }
        // Coldest first: by the order's rank, then by age from a clock no
        // older than any stamp; stamps are distinct, so no need for a
        // stable sort.
        let clock = self.write(Handoff::Batched, |p| p.order.clock());
        // One integer per entry to sort by (rank, then oldest first),
        // computed once rather than at every comparison.
        let mut picked: Vec<(u64, u32)> = picked
            .into_iter()
            .map(|((rank, stamp), idx)| {
                let age = clock.wrapping_sub(stamp);
                ((u64::from(rank) << 32) | u64::from(u32::MAX - age), idx)
            })
            .collect();
        // A radix sort: it passes only over the key's bytes that differ
        // (two or three, for ages), several times faster than a comparison
        // sort of 100,000 entries.
        radsort::sort_by_key(&mut picked, |&(key, ..)| key);
        Picked { store: self, _held: held, picked, now: self.clock.now() }
    }

    /// Adds `shard`'s `READY` slots to `picked`, as `each(state, idx)`
    /// makes them (`None`: not `READY`), under the lock: one shard's copy is
    /// all a writer waits for. Slots come in table order, so at random in
    /// memory: `ahead(state, idx)` asks the CPU for what `each` will read of
    /// the slot a dozen entries on, keeping several misses in flight.
    fn pick<T>(
        &self,
        shard: usize,
        picked: &mut Vec<T>,
        ahead: impl Fn(&State<V>, u32),
        each: impl Fn(&State<V>, u32) -> Option<T>,
    ) {
        self.write(Handoff::Batched, |p| {
            let Some(table) = self.table(shard, &p.locked) else {
                return;
            };
            scan(table, |later| ahead(p, later), |idx| picked.extend(each(p, idx)));
        });
    }

    /// The slot (and its meta) that holds the key of slot `idx`, picked
    /// `READY`, now: `idx` itself if still `READY`, else the key's current
    /// live slot (it was overwritten, maybe more than once); `None` if it
    /// was removed or its deadline is not after `now`. The caller holds
    /// retired slots (see [`Reclaimed::hold`]), so the slot is still in
    /// the generation it was picked in: a slot leaves `READY` for good
    /// within a generation (only `fill` and `resolve` make one `READY`,
    /// from `FREE` and `PENDING`), so `READY` now means unchanged.
    fn current(&self, idx: u32, now: u64) -> Option<(u32, u32)> {
        let slot = self.slot(idx);
        let meta = slot.meta.load(Ordering::Acquire);
        let (idx, meta) = if state(meta) == READY {
            (idx, meta)
        } else {
            let guard = pin();
            // SAFETY: picked READY, and held since: retired at most, its key
            // and tag intact.
            let (tag, key) = unsafe { (slot.tag(), slot.key()) };
            // A lookup needs only the tag of the hash.
            match self.live::<K, false>(u64::from(tag) << 32, key, &guard) {
                // Held: a slot found READY stays readable after the unpin.
                Lookup::Live { idx, meta, .. } => (idx, meta),
                Lookup::Absent => return None,
            }
        };
        (self.soonest(idx, self.slot_deadline(idx, meta)) > now).then_some((idx, meta))
    }

    /// Calls `visit` with each live entry of `shard` (and its slot and
    /// meta), picked under the lock and visited after it, retired slots
    /// held meanwhile: weakly consistent, like a snapshot. An entry present
    /// throughout is visited (with its current value if it was overwritten
    /// since the pick); one removed before is not. No promotion, no
    /// counting, and user code (`visit`) never under the lock.
    fn visit_shard(&self, shard: usize, mut visit: impl FnMut(u32, u32, &K, &V)) {
        let _held = self.reclaimed.hold();
        let mut picked = Vec::new();
        self.pick(
            shard,
            &mut picked,
            |_, idx| prefetch(self.slot(idx)),
            |_, idx| (state(self.slot(idx).meta.load(Ordering::Relaxed)) == READY).then_some(idx),
        );
        let now = self.clock.now();
        for idx in picked {
            if let Some((idx, meta)) = self.current(idx, now) {
                let slot = self.slot(idx);
                // SAFETY: READY when found, and held: intact.
                let (key, value) = unsafe { (slot.key(), slot.value()) };
                visit(idx, meta, key, value);
            }
        }
    }

    /// Copies of `shard`'s live entries, for [`Cache::iter`](crate::Cache::iter).
    pub(crate) fn entries_of(&self, shard: usize) -> Vec<(K, V)>
    where
        K: Clone,
    {
        let mut entries = Vec::new();
        self.visit_shard(shard, |_, _, key, value| entries.push((key.clone(), value.clone())));
        entries
    }

    /// [`Cache::retain`](crate::Cache::retain) over one shard: the entries
    /// `keep` refuses are removed under one lock afterwards, each only if
    /// it is still the entry `keep` saw (one overwritten meanwhile stays:
    /// its new value was not judged).
    pub(crate) fn retain_in(&self, shard: usize, keep: &mut impl FnMut(&K, &V) -> bool) {
        let mut doomed = Vec::new();
        self.visit_shard(shard, |idx, meta, key, value| {
            if !keep(key, value) {
                doomed.push((idx, meta));
            }
        });
        if doomed.is_empty() {
            return;
        }
        self.write(Handoff::Now, |p| {
            for (idx, meta) in doomed {
                if self.slot(idx).meta.load(Ordering::Relaxed) == meta {
                    self.detach(p, idx, RemovalCause::Explicit);
                }
            }
        });
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Each shard's table capacity, in words (0: no table yet).
    #[cfg(all(test, feature = "persist"))]
    pub(crate) fn table_capacities(&self) -> Vec<usize> {
        let p = lock(&self.state);
        (0..self.shards.len()).map(|shard| self.table(shard, &p.locked).map_or(0, TableRef::capacity)).collect()
    }

    /// Inserts many entries, in order, taking the lock once per `chunk`.
    #[cfg(feature = "persist")]
    pub(crate) fn insert_all(&self, entries: impl IntoIterator<Item = (K, V, Option<Duration>)>, chunk: usize) {
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            // One clock read a chunk, not one an entry.
            let now = self.clock.now();
            let batch: Vec<_> = entries
                .by_ref()
                .take(chunk.max(1))
                .map(|(key, value, ttl)| {
                    (self.hash(&key), self.placing_at(ttl, self.weigh(&key, &value), || now), key, value)
                })
                .collect();
            let unstored: Vec<_> = self.write_at(Handoff::Batched, now, |p| {
                batch
                    .into_iter()
                    .filter_map(|(hash, placing, key, value)| self.insert_locked(p, hash, key, value, placing))
                    .collect()
            });
            for (key, value, cause) in unstored {
                self.tell_unstored(&key, &value, cause);
            }
        }
    }
}

/// One entry: a slot as it was when found (another meta, another entry).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    idx: u32,
    meta: u32,
}

/// What a lock-free lookup found.
enum Lookup<'g, K, V> {
    /// A `READY`, unexpired entry: its slot, index and meta when read.
    Live { slot: &'g Slot<K, V>, idx: u32, meta: u32 },
    /// No entry, an expired one, or a load in flight.
    Absent,
}

impl<K, V, S> Drop for Store<K, V, S> {
    fn drop(&mut self) {
        let high = match self.state.get_mut() {
            Ok(p) => p.high,
            Err(poisoned) => poisoned.into_inner().high,
        };
        for table in self.shards.iter_mut() {
            if let Some(table) = NonNull::new(*table.get_mut()) {
                // SAFETY: `&mut self`: no reader is left.
                unsafe { Table::free(table) };
            }
        }
        // SAFETY: `&mut self`: no reader or writer is left.
        unsafe { self.slab.destroy(high) };
    }
}

impl<K, V, S> std::fmt::Debug for Store<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A snapshot's entries, picked and ordered coldest first (not named
/// `Snapshot`: that is what a backend loads): see
/// [`Store::snapshot`]. Retired slots stay unreused while it lives.
#[cfg(feature = "persist")]
pub(crate) struct Picked<'a, K, V, S> {
    store: &'a Store<K, V, S>,
    _held: reclaim::Held<'a>,
    /// (sort key, index) of each picked slot, in order.
    picked: Vec<(u64, u32)>,
    /// Entries whose deadline is not after this are left out.
    now: u64,
}

#[cfg(feature = "persist")]
impl<K, V, S> Picked<'_, K, V, S>
where
    K: Hash + Eq,
    V: Clone,
    S: BuildHasher,
{
    /// How many entries were picked (some may be gone by their visit).
    pub(crate) fn len(&self) -> usize {
        self.picked.len()
    }

    /// Calls `visit(key, value, deadline)` on the picked entries in
    /// `range`, in order, each seen in place (no clone); skips those
    /// removed or expired since they were picked. Returns how many it
    /// visited.
    ///
    /// # Errors
    ///
    /// The first error `visit` returns.
    pub(crate) fn visit<E>(
        &self,
        range: std::ops::Range<usize>,
        mut visit: impl FnMut(&K, &V, u64) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut visited = 0;
        let picked = &self.picked[range];
        // In recency order, which after some churn is random in the slab.
        let mut ahead = picked.iter().skip(PREFETCH_AHEAD);
        for &(_, idx) in picked {
            if let Some(&(_, next)) = ahead.next() {
                prefetch(self.store.slot(next));
            }
            let Some((idx, meta)) = self.store.current(idx, self.now) else {
                continue;
            };
            let slot = self.store.slot(idx);
            let expires = match self.store.slot_deadline(idx, meta) {
                IDLE_ONLY => NEVER,
                expires => expires,
            };
            // SAFETY: READY when found by `current`, and held: not taken
            // back, so intact.
            unsafe { visit(slot.key(), slot.value(), expires) }?;
            visited += 1;
        }
        Ok(visited)
    }
}

#[cfg(all(test, not(shuttle)))]
mod tests {
    use super::*;

    fn placeholder(flight: &Arc<Flight<u32>>) -> Placeholder<u32> {
        Placeholder { idx: 0, meta: 0, flight: ManuallyDrop::new(Arc::clone(flight)), given_up: AtomicBool::new(false) }
    }

    /// A slot is retired for good once its generations run out, so that an
    /// `(index, meta)` pair names one use of it forever; in a cache whose
    /// keys and values need no drop, reclaimed slots are not looked at
    /// again, so `discard` must keep such a slot out.
    #[test]
    fn a_slot_whose_generations_ran_out_is_never_used_again() {
        let cache = crate::Cache::<u64, u64>::new(4);
        cache.insert(1, 10);
        // The first slot allocated; its last generation.
        let slot = cache.store.slot(0);
        assert_eq!(state(slot.meta.load(Ordering::Relaxed)), READY);
        slot.meta.store(slab::with_state(!slab::TIMED, READY), Ordering::Relaxed);
        assert_eq!(cache.remove(&1), Some(10));
        let retired = slot.meta.load(Ordering::Relaxed);
        // Evictions enough for many batches of slots to be taken back.
        for key in 100..if cfg!(miri) { 1_100 } else { 5_100 } {
            cache.insert(key, key);
        }
        assert_eq!(cache.len(), 4);
        assert_eq!(slot.meta.load(Ordering::Relaxed), retired, "slot 0 was used again");
    }

    /// Slots retired by evictions wait out readers in batches of an eighth
    /// of the live entries (128 at least): under churn with nobody pinned,
    /// the slab holds the bound's slots, one batch gathering and one being
    /// used up, and never outgrows the table words' format.
    #[test]
    fn churn_keeps_the_slab_within_a_quarter_over_the_bound() {
        for max_size in [1_024, 10_000, 100_000] {
            let cache = crate::Cache::<u64, u64>::new(max_size);
            for key in 0..3 * max_size as u64 {
                cache.insert(key, key);
            }
            let p = cache.store.lock();
            assert!(p.high as usize <= max_size + max_size / 4, "{} slots for a bound of {max_size}", p.high);
            assert_eq!(p.format, Format::new(max_size), "widened for a bound of {max_size}");
        }
    }

    /// A cache bounded by weight alone (no entry bound) holds few entries
    /// when they are heavy: the values its evictions retired are dropped
    /// after a batch of 128, not one sized for an unbounded cache, which
    /// would keep many times the live values alive.
    #[test]
    fn a_weighted_cache_keeps_few_retired_values_alive() {
        let value = Arc::new(());
        let cache = crate::Cache::<u64, Arc<()>>::builder().max_weight(100).weigher(|_, _: &Arc<()>| 1).build();
        for key in 0..1_000 {
            cache.insert(key, Arc::clone(&value));
        }
        assert_eq!(cache.len(), 100);
        // The live values, the one above, and those retired but not yet
        // dropped: a batch gathering, one waiting to be taken back.
        let retired = Arc::strong_count(&value) - 100 - 1;
        assert!(retired <= 2 * 128, "{retired} retired values alive for 100 live ones");
    }

    /// A table word holds a slab index only up to a bound (2^24 at first):
    /// before the slab grows past it, every table is copied into wider
    /// words, and a reader meanwhile never misses a present key.
    #[test]
    fn tables_widen_their_words_before_the_slab_outgrows_them() {
        let cache = crate::Cache::<u64, u64>::new(10_000);
        {
            let mut p = cache.store.lock();
            p.format = Format::narrowest();
        }
        const PRESENT: u64 = 8;
        for key in 0..PRESENT {
            cache.insert(key, key * 10);
        }
        // Under Miri: two widenings (at slots 14 and 62).
        let added = if cfg!(miri) { 100 } else { 5_000 };
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for key in 0..PRESENT {
                        assert_eq!(cache.get(&key), Some(key * 10), "missed a present key");
                    }
                    rounds += 1;
                }
                rounds
            });
            // Stops the reader even if an insert panics, so a failure ends.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let stopping = Stop(&stop);
            for key in PRESENT..PRESENT + added {
                cache.insert(key, key * 10);
            }
            drop(stopping);
            assert!(reader.join().unwrap() > 0);
        });
        for key in 0..PRESENT + added {
            assert_eq!(cache.get(&key), Some(key * 10));
        }
        let p = cache.store.lock();
        assert!(p.format.holds(p.high) && p.format != Format::narrowest());
    }

    /// A write probes, then takes a slot, which may widen the tables: the
    /// wider copy must keep every word where it was, or the position the
    /// write probed is stale (removals leave tombstones, which a rebuild
    /// would sweep, moving the words after them).
    #[test]
    fn a_write_that_widens_the_tables_finds_its_place_in_the_new_ones() {
        for round in 0..if cfg!(miri) { 1 } else { 40 } {
            let cache = crate::Cache::<u64, u64>::new(10_000);
            cache.store.lock().format = Format::narrowest();
            let mut present = std::collections::BTreeMap::new();
            let base = round * 1_000_000;
            for key in base..base + if cfg!(miri) { 150 } else { 2_000 } {
                cache.insert(key, key);
                present.insert(key, key);
                if key % 3 == 0 {
                    let gone = base + (key - base) / 2;
                    cache.remove(&gone);
                    present.remove(&gone);
                }
            }
            for (key, value) in &present {
                assert_eq!(cache.get(key), Some(*value), "round {round}");
            }
            assert_eq!(cache.len(), present.len());
            assert_ne!(cache.store.lock().format, Format::narrowest(), "the tables widened");
        }
    }

    /// Replays check a read record against its slot, not its link: it
    /// moves an entry only while the slot holds that very entry `READY`.
    /// A check of the record's state alone passes records of removed
    /// entries; one of the slot's state alone passes records of an earlier
    /// use of a reused slot.
    #[test]
    fn a_read_record_names_only_the_entry_it_was_made_for() {
        let cache = crate::Cache::<u64, u64>::new(2);
        let store = &cache.store;
        let record = |key: u64| {
            let (_, idx) = store.find(store.hash(&key), &key, &pin()).expect("present");
            (idx, store.slot(idx).meta.load(Ordering::Relaxed))
        };
        cache.insert(1, 10);
        let (idx, meta) = record(1);
        assert!(store.linked(idx, meta), "the live entry");
        assert!(!store.linked(idx, 0) && !store.linked(0, 0), "a zero record");
        cache.insert(1, 11);
        assert!(!store.linked(idx, meta), "the overwritten value");
        // Evictions until the first slot is reused.
        let mut key = 100;
        let reused = loop {
            cache.insert(key, key);
            let (i, m) = record(key);
            if i == idx {
                break m;
            }
            key += 1;
            assert!(key < 100_000, "slot {idx} never reused");
        };
        assert!(store.linked(idx, reused), "its new entry");
        assert!(!store.linked(idx, meta), "the slot's earlier entry");
        let (live, live_meta) = record(key);
        cache.clear();
        assert!(!store.linked(live, live_meta), "an entry cleared");
    }

    /// A wheel timer is only a slab index: the ones a removed entry left
    /// must not cost its slot's next entry its expiry, whether that one is
    /// due before or after them (see `due_at`), nor expire it early.
    #[tokio::test(start_paused = true)]
    async fn a_reused_slots_entry_expires_whatever_timers_its_slot_left() {
        use std::time::Duration;
        let secs = Duration::from_secs;
        for (first, next) in [(100, 1), (1, 100)] {
            let cache = crate::Cache::<u64, u64>::new(1_000);
            let store = &cache.store;
            let idx_of = |key: u64| store.find(store.hash(&key), &key, &pin()).expect("present").1;
            cache.insert_with_ttl(0, 0, Some(secs(first)));
            let idx = idx_of(0);
            cache.remove(&0);
            // Removed entries' slots come back after their grace period.
            let mut key = 1;
            loop {
                cache.insert_with_ttl(key, key, Some(secs(next)));
                if idx_of(key) == idx {
                    break;
                }
                cache.remove(&key);
                key += 1;
                assert!(key < 100_000, "slot {idx} never reused");
            }
            // In steps, each with a write (which expires what is due), so
            // that timers move down the wheel level by level.
            let cache = &cache;
            let until = |end: Duration| async move {
                let step = Duration::from_millis(100);
                for _ in 0..end.div_duration_f64(step).ceil() as u32 {
                    tokio::time::advance(step).await;
                    cache.insert(u64::MAX, 0);
                }
            };
            until(secs(first.min(next)) + Duration::from_millis(500)).await;
            let expected = if next < first { None } else { Some(key) };
            assert_eq!(cache.get(&key), expected, "{first} s then {next} s, after the sooner");
            until(secs(first.max(next))).await;
            assert_eq!(cache.len(), 1, "{first} s then {next} s: reclaimed unread");
            assert_eq!(cache.get(&key), None);
        }
    }

    /// Entries written in one instant with one TTL put their timers in one
    /// bucket, so one left by a slot's earlier entry passes for its next
    /// entry's: pruning keeps one timer a slot, or churn would fill the
    /// wheel and prune it on every write.
    #[tokio::test(start_paused = true)]
    async fn pruning_leaves_one_timer_per_timed_entry() {
        let cache = crate::Cache::<u64, u64>::builder().max_size(100).default_ttl(Duration::from_secs(60)).build();
        for i in 0..20_000 {
            cache.insert(i % 150, i);
        }
        let store = &cache.store;
        let mut p = store.lock();
        store.prune_timers(&mut p);
        assert_eq!(p.timed, 100);
        assert_eq!(p.wheel.len(), p.timed);
    }

    /// The same in a cache whose slab is far larger than its wheel (few of
    /// its entries expire), where a prune marks slots in a set, not in a
    /// bitset over the slab.
    #[tokio::test(start_paused = true)]
    async fn pruning_leaves_one_timer_per_timed_entry_in_a_large_cache() {
        let cache = crate::Cache::<u64, u64>::new(1_000_000);
        for key in 1_000_000..1_500_000 {
            cache.insert(key, key);
        }
        let store = &cache.store;
        let idx_of = |key: u64| store.find(store.hash(&key), &key, &pin()).expect("present").1;
        let ttl = Some(Duration::from_secs(60));
        cache.insert_with_ttl(0, 0, ttl);
        let idx = idx_of(0);
        cache.remove(&0);
        // Until the slot is reused: its earlier entry's timer, in the same
        // bucket (the clock is paused), then passes for its new entry's.
        let mut key = 1;
        loop {
            cache.insert_with_ttl(key, key, ttl);
            if idx_of(key) == idx {
                break;
            }
            cache.remove(&key);
            key += 1;
            assert!(key < 100_000, "slot {idx} never reused");
        }
        let mut p = store.lock();
        assert_eq!(bitset_words(p.high, p.wheel.len()), None, "the case under test");
        store.prune_timers(&mut p);
        assert_eq!(p.timed, 1);
        assert_eq!(p.wheel.len(), 1);
    }

    /// A slot points to its placeholder's flight without a count, so a
    /// placeholder the store has not given up (dropped by a panic on the
    /// way) must keep its flight alive, and one it has given up lets go.
    #[test]
    fn only_a_given_up_placeholder_lets_go_of_its_flight() {
        let flight = Arc::new(Flight::new());
        drop(placeholder(&flight));
        assert_eq!(Arc::strong_count(&flight), 2, "kept alive for good");
        let given_up = placeholder(&flight);
        given_up.give_up();
        drop(given_up);
        assert_eq!(Arc::strong_count(&flight), 2, "its own count went");
        let given_up = placeholder(&flight);
        given_up.give_up();
        assert!(Arc::ptr_eq(&given_up.into_flight(), &flight));
        // SAFETY: the count the first placeholder kept, released so that
        // the test itself leaks nothing (Miri checks).
        unsafe { Arc::decrement_strong_count(Arc::as_ptr(&flight)) };
        assert_eq!(Arc::strong_count(&flight), 1);
    }
}
