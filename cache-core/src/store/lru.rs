//! The recency order: a doubly linked list threaded through slab indices.
//!
//! Links live here, owned by the lock holder, not in the slots: readers never
//! touch them, so promoting an entry never dirties a cache line a reader needs.
//! Each link also keeps its entry's meta, so replaying a read record checks
//! the record against the very cache line it is about to move, and a
//! recency stamp, so a snapshot copied shard by shard (not by walking the
//! list under one long lock) can still be put back in exact LRU order.

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
    /// The linked entry's meta; 0 (no valid meta) when unlinked.
    meta: u32,
    /// `Lru::clock` when the entry last moved to the front.
    #[cfg(feature = "persist")]
    stamp: u32,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
    meta: 0,
    #[cfg(feature = "persist")]
    stamp: 0,
};

/// Most recently used at the head, least at the tail.
#[derive(Debug)]
pub(crate) struct Lru {
    links: Vec<Link>,
    head: u32,
    tail: u32,
    /// Moves to the front so far, wrapping: stamps compare by their age
    /// `clock - stamp`, exact while an entry is younger than 2^32 moves.
    #[cfg(feature = "persist")]
    clock: u32,
}

impl Lru {
    pub(crate) fn new() -> Self {
        Lru {
            links: Vec::new(),
            head: NIL,
            tail: NIL,
            #[cfg(feature = "persist")]
            clock: 0,
        }
    }

    /// Makes room for links up to `idx`.
    pub(crate) fn reserve(&mut self, idx: u32) {
        let needed = idx as usize + 1;
        if self.links.len() < needed {
            self.links.resize(needed, UNLINKED);
        }
    }

    pub(crate) fn push_front(&mut self, idx: u32, meta: u32) {
        debug_assert_ne!(meta, 0);
        let old = self.head;
        #[cfg(feature = "persist")]
        let stamp = self.tick();
        self.links[idx as usize] = Link {
            prev: NIL,
            next: old,
            meta,
            #[cfg(feature = "persist")]
            stamp,
        };
        if old == NIL {
            self.tail = idx;
        } else {
            self.links[old as usize].prev = idx;
        }
        self.head = idx;
    }

    pub(crate) fn unlink(&mut self, idx: u32) {
        let Link { prev, next, .. } = std::mem::replace(&mut self.links[idx as usize], UNLINKED);
        if prev == NIL {
            self.head = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
    }

    /// Asks the CPU to fetch `idx`'s link ahead of a move; a hint only, so
    /// any index (even `NIL`) is fine.
    #[inline]
    fn prefetch(&self, idx: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let at = self.links.as_ptr().wrapping_add(idx as usize);
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = idx;
    }

    /// [`touch`](Self::touch)es each `(idx, meta)` in order, the entries'
    /// links prefetched first so their (random) loads overlap.
    pub(crate) fn touch_all(&mut self, records: &[(u32, u32)]) {
        for &(idx, _) in records {
            self.prefetch(idx);
        }
        for &(idx, meta) in records {
            self.touch(idx, meta);
        }
    }

    /// Moves `idx` to the front if it is still linked with `meta`. Meta 0,
    /// which no linked entry has, is an unlinked link's: a zero record (a
    /// place a racing reader reserved but had not yet written) moves nothing.
    #[inline]
    pub(crate) fn touch(&mut self, idx: u32, meta: u32) {
        let head = self.head;
        if meta == 0 || idx == head || self.links.get(idx as usize).is_none_or(|link| link.meta != meta) {
            return;
        }
        #[cfg(feature = "persist")]
        let stamp = self.tick();
        let link = &mut self.links[idx as usize];
        // Linked and not the head: it has a previous link, and a head.
        let (prev, next) = (link.prev, link.next);
        link.prev = NIL;
        link.next = head;
        #[cfg(feature = "persist")]
        {
            link.stamp = stamp;
        }
        self.links[prev as usize].next = next;
        if next == NIL {
            self.tail = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
        self.links[head as usize].prev = idx;
        self.head = idx;
    }

    /// The least recently used entry.
    pub(crate) fn back(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// The stamp for a move to the front now.
    #[cfg(feature = "persist")]
    fn tick(&mut self) -> u32 {
        self.clock = self.clock.wrapping_add(1);
        self.clock
    }

    /// The stamp of the latest move to the front.
    #[cfg(feature = "persist")]
    pub(crate) fn clock(&self) -> u32 {
        self.clock
    }

    /// The clock when `idx` last moved to the front; compare stamps by their
    /// age from a later `clock()`, as they wrap.
    #[cfg(feature = "persist")]
    pub(crate) fn stamp(&self, idx: u32) -> u32 {
        self.links[idx as usize].stamp
    }

    /// From least to most recently used.
    #[cfg(test)]
    fn iter_from_back(&self) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.tail;
        std::iter::from_fn(move || {
            (at != NIL).then(|| {
                let idx = at;
                at = self.links[idx as usize].prev;
                idx
            })
        })
    }

    /// Empties the list and forgets every link: a read record that outlives
    /// the entries it names must not find them still linked.
    pub(crate) fn clear(&mut self) {
        self.links.fill(UNLINKED);
        self.head = NIL;
        self.tail = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(lru: &Lru) -> Vec<u32> {
        lru.iter_from_back().collect()
    }

    #[test]
    fn push_touch_unlink_keep_the_order() {
        let mut lru = Lru::new();
        lru.reserve(9);
        for i in 0..4 {
            lru.push_front(i, 8);
        }
        assert_eq!(order(&lru), [0, 1, 2, 3]);
        lru.touch(0, 8);
        assert_eq!(order(&lru), [1, 2, 3, 0]);
        lru.touch(0, 8);
        assert_eq!(order(&lru), [1, 2, 3, 0]);
        lru.touch(1, 16);
        assert_eq!(order(&lru), [1, 2, 3, 0], "a stale record moves nothing");
        #[cfg(feature = "persist")]
        {
            let mut by_age: Vec<u32> = (0..4).collect();
            by_age.sort_by_key(|&i| std::cmp::Reverse(lru.clock().wrapping_sub(lru.stamp(i))));
            assert_eq!(by_age, order(&lru), "stamps sort as the list does");
        }
        lru.unlink(2);
        assert_eq!(order(&lru), [1, 3, 0]);
        lru.unlink(1);
        lru.unlink(0);
        assert_eq!(lru.back(), Some(3));
        lru.unlink(3);
        assert_eq!(lru.back(), None);
        lru.touch(3, 8);
        assert_eq!(lru.back(), None, "an unlinked entry is not touched");
        assert_eq!(order(&lru), Vec::<u32>::new());
    }

    #[test]
    fn a_zero_record_moves_nothing() {
        let mut lru = Lru::new();
        lru.reserve(3);
        lru.push_front(1, 8);
        lru.push_front(2, 8);
        // Index 0 was never linked: its link has meta 0.
        lru.touch(0, 0);
        assert_eq!(order(&lru), [1, 2]);
        assert_eq!(lru.back(), Some(1));
    }

    #[test]
    fn records_from_before_a_clear_move_nothing() {
        let mut lru = Lru::new();
        lru.reserve(3);
        for i in 0..3 {
            lru.push_front(i, 8);
        }
        lru.clear();
        // A reader found entry 1 before the clear and records it after.
        lru.touch(1, 8);
        assert_eq!(lru.back(), None, "the cleared list stays empty");
        lru.push_front(2, 16);
        lru.touch(0, 8);
        assert_eq!(order(&lru), [2]);
    }
}
