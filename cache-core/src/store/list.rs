//! Doubly linked queues threaded through slab indices: the lists both
//! policies keep their order in.
//!
//! Links live here, owned by the lock holder, not in the slots: readers never
//! touch them, so promoting an entry never dirties a cache line a reader needs.
//! With a persistence feature each link also keeps a recency stamp, so a
//! snapshot copied shard by shard (not by walking the lists under one long
//! lock) can still be put back in order. `X` is what a policy keeps beside
//! (nothing for LRU).
//!
//! Whether an entry is linked is its slot's business: an entry is linked
//! exactly while its slot is `READY`, so a read record is checked against
//! the slot's meta before it moves a link (a copy of the meta here cost 4
//! bytes an entry). A snapshot, which reads links and not slots, tells a
//! linked entry by its stamp, which is never 0 while linked.

pub(super) const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Link<X> {
    prev: u32,
    next: u32,
    /// `Links::clock` when the entry last moved to the front; 0 when
    /// unlinked.
    #[cfg(feature = "persist")]
    stamp: u32,
    extra: X,
}

/// One list's ends: most recently moved to the front at the head.
#[derive(Debug, Clone, Copy)]
pub(super) struct Queue {
    head: u32,
    tail: u32,
    pub(super) len: usize,
}

impl Queue {
    pub(super) const EMPTY: Queue = Queue { head: NIL, tail: NIL, len: 0 };

    /// The entry at the back (least recently moved to the front).
    #[inline]
    pub(super) fn back(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }
}

/// The links of every slab index, for any number of [`Queue`]s.
#[derive(Debug)]
pub(super) struct Links<X> {
    links: Vec<Link<X>>,
    /// Moves to the front so far, wrapping: stamps compare by their age
    /// `clock - stamp`, exact while an entry is younger than 2^32 moves.
    #[cfg(feature = "persist")]
    clock: u32,
}

impl<X: Copy + Default> Links<X> {
    fn unlinked() -> Link<X> {
        Link {
            prev: NIL,
            next: NIL,
            #[cfg(feature = "persist")]
            stamp: 0,
            extra: X::default(),
        }
    }

    pub(super) fn new() -> Self {
        Links {
            links: Vec::new(),
            #[cfg(feature = "persist")]
            clock: 0,
        }
    }

    /// Makes room for links up to `idx` and some more (see
    /// [`room_for`](super::room_for)), written at once instead of a
    /// `resize` call per new slot (~65 instructions each).
    #[inline]
    pub(super) fn reserve(&mut self, idx: u32) {
        let needed = idx as usize + 1;
        if self.links.len() < needed {
            self.links.resize(super::room_for(needed), Self::unlinked());
        }
    }

    /// Linked `idx`'s extra, for changing.
    #[inline]
    pub(super) fn extra_mut(&mut self, idx: u32) -> &mut X {
        &mut self.links[idx as usize].extra
    }

    /// `idx`'s extra; `idx` must be linked.
    #[inline]
    pub(super) fn extra(&self, idx: u32) -> X {
        self.links[idx as usize].extra
    }

    /// Links `idx` at the front of `queue`, stamped now.
    pub(super) fn push_front(&mut self, queue: &mut Queue, idx: u32, extra: X) {
        #[cfg(feature = "persist")]
        let stamp = self.tick();
        self.link_front(
            queue,
            idx,
            Link {
                prev: NIL,
                next: NIL,
                #[cfg(feature = "persist")]
                stamp,
                extra,
            },
        );
    }

    fn link_front(&mut self, queue: &mut Queue, idx: u32, mut link: Link<X>) {
        let old = queue.head;
        link.prev = NIL;
        link.next = old;
        self.links[idx as usize] = link;
        if old == NIL {
            queue.tail = idx;
        } else {
            self.links[old as usize].prev = idx;
        }
        queue.head = idx;
        queue.len += 1;
    }

    /// Unlinks `idx` from `queue`, which holds it.
    pub(super) fn unlink(&mut self, queue: &mut Queue, idx: u32) {
        self.detach(queue, idx);
    }

    fn detach(&mut self, queue: &mut Queue, idx: u32) -> Link<X> {
        let link = std::mem::replace(&mut self.links[idx as usize], Self::unlinked());
        if link.prev == NIL {
            queue.head = link.next;
        } else {
            self.links[link.prev as usize].next = link.next;
        }
        if link.next == NIL {
            queue.tail = link.prev;
        } else {
            self.links[link.next as usize].prev = link.prev;
        }
        queue.len -= 1;
        link
    }

    /// Puts `new` where `old` is in `queue`, with `old`'s stamp and extra;
    /// `old` is unlinked.
    pub(super) fn replace(&mut self, queue: &mut Queue, old: u32, new: u32) {
        let link = std::mem::replace(&mut self.links[old as usize], Self::unlinked());
        self.links[new as usize] = link;
        if link.prev == NIL {
            queue.head = new;
        } else {
            self.links[link.prev as usize].next = new;
        }
        if link.next == NIL {
            queue.tail = new;
        } else {
            self.links[link.next as usize].prev = new;
        }
    }

    /// Moves `idx` from `from` to the front of `to` with `extra`, keeping
    /// its stamp: a move between a policy's regions is not a use.
    pub(super) fn transfer(&mut self, from: &mut Queue, to: &mut Queue, idx: u32, extra: X) {
        let link = self.detach(from, idx);
        self.link_front(to, idx, Link { extra, ..link });
    }

    /// Moves `idx`, linked in `queue`, to its front, stamped now: one pass
    /// over the links instead of an unlink and a push.
    #[inline]
    pub(super) fn touch(&mut self, queue: &mut Queue, idx: u32) {
        let head = queue.head;
        if idx == head {
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
            queue.tail = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
        self.links[head as usize].prev = idx;
        queue.head = idx;
    }

    /// Asks the CPU to fetch `idx`'s link ahead of a move; a hint only, so
    /// any index (even `NIL`) is fine.
    #[inline]
    pub(super) fn prefetch(&self, idx: u32) {
        super::prefetch(self.links.as_ptr().wrapping_add(idx as usize));
    }

    /// Forgets every link, so that no stale stamp says linked (without a
    /// persistence feature there are no stamps, and nothing to forget: a
    /// link is read only while linked). The caller empties its queues.
    pub(super) fn clear(&mut self) {
        #[cfg(feature = "persist")]
        self.links.fill(Self::unlinked());
    }

    /// The stamp for a move to the front now: never 0, an unlinked link's.
    #[cfg(feature = "persist")]
    fn tick(&mut self) -> u32 {
        self.clock = self.clock.wrapping_add(1).max(1);
        self.clock
    }

    /// The stamp of the latest move to the front.
    #[cfg(feature = "persist")]
    pub(super) fn clock(&self) -> u32 {
        self.clock
    }

    /// The clock when `idx` last moved to the front, if it is linked;
    /// compare stamps by their age from a later `clock()`, as they wrap.
    #[cfg(feature = "persist")]
    pub(super) fn stamp(&self, idx: u32) -> Option<u32> {
        self.links.get(idx as usize).map(|link| link.stamp).filter(|&stamp| stamp != 0)
    }

    /// `queue` from back to front.
    #[cfg(test)]
    pub(super) fn iter_from_back<'a>(&'a self, queue: &Queue) -> impl Iterator<Item = u32> + 'a {
        let mut at = queue.tail;
        std::iter::from_fn(move || {
            (at != NIL).then(|| {
                let idx = at;
                at = self.links[idx as usize].prev;
                idx
            })
        })
    }
}

#[cfg(all(test, feature = "persist"))]
mod tests {
    use super::*;

    /// A snapshot takes a link with stamp 0 for unlinked: the clock skips 0
    /// when it wraps.
    #[test]
    fn a_link_is_never_stamped_unlinked() {
        let mut links = Links::<()>::new();
        links.reserve(1);
        let mut queue = Queue::EMPTY;
        links.clock = u32::MAX - 1;
        links.push_front(&mut queue, 0, ());
        links.push_front(&mut queue, 1, ());
        assert_eq!(links.stamp(1), Some(1), "the wrapped clock's stamp");
        links.touch(&mut queue, 0);
        assert_eq!(links.stamp(0), Some(2));
        links.unlink(&mut queue, 0);
        assert_eq!(links.stamp(0), None, "unlinked");
    }
}
