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

    pub(crate) fn push_front(&mut self, idx: u32) {
        self.links.push_front(&mut self.queue, idx, ());
    }

    /// `new` replaces `old` and, as a use, moves to the front.
    pub(crate) fn replace(&mut self, old: u32, new: u32) {
        self.unlink(old);
        self.push_front(new);
    }

    pub(crate) fn unlink(&mut self, idx: u32) {
        self.links.unlink(&mut self.queue, idx);
    }

    /// Moves each record's entry to the front, in order, if `linked` says
    /// it is still linked (see `Order::touch_all`); the entries' links are
    /// prefetched first so their (random) loads overlap.
    pub(crate) fn touch_all(&mut self, records: &[(u32, u32)], linked: impl Fn(u32, u32) -> bool) {
        for &(idx, _) in records {
            self.links.prefetch(idx);
        }
        for &(idx, meta) in records {
            if linked(idx, meta) {
                self.touch(idx);
            }
        }
    }

    /// Moves linked `idx` to the front.
    #[inline]
    fn touch(&mut self, idx: u32) {
        self.links.touch(&mut self.queue, idx);
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

    /// The clock when `idx` last moved to the front, if it is linked;
    /// compare stamps by their age from a later `clock()`, as they wrap.
    #[cfg(feature = "persist")]
    pub(crate) fn stamp(&self, idx: u32) -> Option<u32> {
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
            lru.push_front(i);
        }
        assert_eq!(order(&lru), [0, 1, 2, 3]);
        lru.touch(0);
        assert_eq!(order(&lru), [1, 2, 3, 0]);
        lru.touch(0);
        assert_eq!(order(&lru), [1, 2, 3, 0]);
        #[cfg(feature = "persist")]
        {
            let mut by_age: Vec<u32> = (0..4).collect();
            by_age.sort_by_key(|&i| std::cmp::Reverse(lru.clock().wrapping_sub(lru.stamp(i).expect("linked"))));
            assert_eq!(by_age, order(&lru), "stamps sort as the list does");
        }
        lru.unlink(2);
        #[cfg(feature = "persist")]
        assert_eq!(lru.stamp(2), None, "unlinked, no stamp");
        assert_eq!(order(&lru), [1, 3, 0]);
        lru.unlink(1);
        lru.unlink(0);
        assert_eq!(lru.back(), Some(3));
        lru.unlink(3);
        assert_eq!(lru.back(), None);
        assert_eq!(order(&lru), Vec::<u32>::new());
    }

    #[test]
    fn only_records_said_linked_move() {
        let mut lru = Lru::new();
        lru.reserve(9);
        for i in 0..4 {
            lru.push_front(i);
        }
        // Three records; `linked` accepts only (2, 8): a stale meta and a
        // refused index move nothing.
        lru.touch_all(&[(0, 16), (2, 8), (1, 8)], |idx, meta| meta == 8 && idx != 1);
        assert_eq!(order(&lru), [0, 1, 3, 2]);
    }

    #[test]
    fn a_cleared_list_is_empty_and_takes_new_entries() {
        let mut lru = Lru::new();
        lru.reserve(3);
        for i in 0..3 {
            lru.push_front(i);
        }
        lru.clear();
        assert_eq!(lru.back(), None, "the cleared list is empty");
        #[cfg(feature = "persist")]
        assert_eq!(lru.stamp(1), None, "no stamp says linked after a clear");
        lru.push_front(2);
        lru.push_front(0);
        assert_eq!(order(&lru), [2, 0]);
    }
}
