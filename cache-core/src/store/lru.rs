//! Exact LRU: one queue, every read record replayed as a move to the front.

use super::list::{Links, Queue};

/// Most recently used at the head, least at the tail.
#[derive(Debug)]
pub(crate) struct Lru {
    pub(super) links: Links<()>,
    queue: Queue,
}

impl Lru {
    pub(crate) fn new() -> Self {
        Lru { links: Links::new(), queue: Queue::EMPTY }
    }

    /// Makes room for links up to `idx`.
    pub(crate) fn reserve(&mut self, idx: u32) {
        self.links.reserve(idx);
    }

    pub(crate) fn push_front(&mut self, idx: u32, meta: u32) {
        self.links.push_front(&mut self.queue, idx, meta, ());
    }

    /// `new` replaces `old` and, as a use, moves to the front.
    pub(crate) fn replace(&mut self, old: u32, new: u32, meta: u32) {
        self.unlink(old);
        self.push_front(new, meta);
    }

    pub(crate) fn unlink(&mut self, idx: u32) {
        self.links.unlink(&mut self.queue, idx);
    }

    /// [`touch`](Self::touch)es each `(idx, meta)` in order, the entries'
    /// links prefetched first so their (random) loads overlap.
    pub(crate) fn touch_all(&mut self, records: &[(u32, u32)]) {
        for &(idx, _) in records {
            self.links.prefetch(idx);
        }
        for &(idx, meta) in records {
            self.touch(idx, meta);
        }
    }

    /// Moves `idx` to the front if it is still linked with `meta`.
    #[inline]
    pub(crate) fn touch(&mut self, idx: u32, meta: u32) {
        if self.links.linked(idx, meta).is_some() {
            self.links.touch(&mut self.queue, idx);
        }
    }

    /// The least recently used entry.
    pub(crate) fn back(&self) -> Option<u32> {
        self.queue.back()
    }

    /// The stamp of the latest move to the front.
    #[cfg(feature = "persist")]
    pub(crate) fn clock(&self) -> u32 {
        self.links.clock()
    }

    /// The clock when `idx` last moved to the front; compare stamps by their
    /// age from a later `clock()`, as they wrap.
    #[cfg(feature = "persist")]
    pub(crate) fn stamp(&self, idx: u32) -> u32 {
        self.links.stamp(idx)
    }

    /// Empties the list and forgets every link.
    pub(crate) fn clear(&mut self) {
        self.links.clear();
        self.queue = Queue::EMPTY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(lru: &Lru) -> Vec<u32> {
        lru.links.iter_from_back(&lru.queue).collect()
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
