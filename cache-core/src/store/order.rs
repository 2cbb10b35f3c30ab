//! The eviction order, under either [`Policy`]: the part of the store that
//! decides which entry leaves. The table, slab, wheel and flights are the
//! same under both.

use super::lfu::TinyLfu;
use super::lru::Lru;
use crate::Policy;

#[derive(Debug)]
pub(super) enum Order {
    Lru(Lru),
    TinyLfu(TinyLfu),
}

impl Order {
    pub(super) fn new(policy: Policy, max_size: usize) -> Self {
        match policy {
            Policy::Lru => Order::Lru(Lru::new()),
            Policy::TinyLfu => Order::TinyLfu(TinyLfu::new(max_size)),
        }
    }

    /// Makes room for links up to `idx`.
    pub(super) fn reserve(&mut self, idx: u32) {
        match self {
            Order::Lru(lru) => lru.reserve(idx),
            Order::TinyLfu(lfu) => lfu.reserve(idx),
        }
    }

    /// A new `READY` entry, `hash` being its table tag.
    #[inline]
    pub(super) fn push(&mut self, idx: u32, hash: u32) {
        match self {
            Order::Lru(lru) => lru.push_front(idx),
            Order::TinyLfu(lfu) => lfu.push(idx, hash),
        }
    }

    /// Entry `new` replaces linked entry `old` of the same key: an
    /// overwrite, which is a use of it.
    pub(super) fn replace(&mut self, old: u32, new: u32) {
        match self {
            Order::Lru(lru) => lru.replace(old, new),
            Order::TinyLfu(lfu) => lfu.replace(old, new),
        }
    }

    pub(super) fn unlink(&mut self, idx: u32) {
        match self {
            Order::Lru(lru) => lru.unlink(idx),
            Order::TinyLfu(lfu) => lfu.unlink(idx),
        }
    }

    /// Replays read records `(idx, meta)`, oldest first: those for which
    /// `linked(idx, meta)` says the entry is still linked, i.e. its slot
    /// still holds it `READY` (a record may name an entry that has left
    /// since, or a later use of its slot).
    pub(super) fn touch_all(&mut self, records: &[(u32, u32)], linked: impl Fn(u32, u32) -> bool) {
        match self {
            Order::Lru(lru) => lru.touch_all(records, linked),
            Order::TinyLfu(lfu) => lfu.touch_all(records, linked),
        }
    }

    /// The entry to evict next (still linked), if any is linked.
    pub(super) fn victim(&mut self) -> Option<u32> {
        match self {
            Order::Lru(lru) => lru.back(),
            Order::TinyLfu(lfu) => lfu.victim(),
        }
    }

    /// Empties the order.
    pub(super) fn clear(&mut self) {
        match self {
            Order::Lru(lru) => lru.clear(),
            Order::TinyLfu(lfu) => lfu.clear(),
        }
    }

    /// Where `idx` stands for a snapshot, if it is linked (so `READY`: a
    /// snapshot learns that from the link, without reading the slot): by
    /// rank, then by stamp (compared by their age from a later
    /// [`clock`](Self::clock)), coldest first.
    #[cfg(feature = "persist")]
    pub(super) fn rank(&self, idx: u32) -> Option<(u8, u32)> {
        match self {
            Order::Lru(lru) => lru.stamp(idx).map(|stamp| (0, stamp)),
            Order::TinyLfu(lfu) => lfu.rank(idx),
        }
    }

    /// Asks the CPU for `idx`'s link (a hint).
    #[cfg(feature = "persist")]
    pub(super) fn prefetch(&self, idx: u32) {
        match self {
            Order::Lru(lru) => lru.links.prefetch(idx),
            Order::TinyLfu(lfu) => lfu.links.prefetch(idx),
        }
    }

    #[cfg(feature = "persist")]
    pub(super) fn clock(&self) -> u32 {
        match self {
            Order::Lru(lru) => lru.clock(),
            Order::TinyLfu(lfu) => lfu.clock(),
        }
    }
}
