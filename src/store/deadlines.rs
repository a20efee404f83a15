//! One shard's deadline index: a min-heap of `(deadline, entry)` with lazy
//! deletion. The store's entry is a weak handle to the entry's block
//! (8 bytes), so an element is 16 bytes in one `Vec` (about 21 with the
//! `Vec`'s spare capacity); the heap is generic over it, and knows only
//! deadlines.
//!
//! It replaced a `BTreeSet<(Instant, Key)>`, whose half-full nodes cost
//! about 66 bytes per entry. What a heap cannot do is
//! remove an element from its middle, so a replace, renewal or removal
//! leaves the entry's old element behind. Such an element is recognised
//! when it comes due (its entry is gone, or is no longer the key's, or its
//! deadline is later) and dropped then; and when left-behind elements come
//! to outnumber the live ones, [`Deadlines::rebuild`] makes the heap again
//! from the entries, O(n) once per n changes. A left-behind weak handle
//! keeps its block's allocation (not its value, which went with the last
//! strong handle) until then.
//!
//! The invariant the purge relies on: every entry has an element holding
//! its current deadline.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::clock::Tick;

/// Left-behind elements tolerated on top of one per entry before a
/// rebuild, so that a small shard is not rebuilt on every change.
const SLACK: usize = 64;

/// Deadlines of one shard's entries, earliest first.
pub(super) struct Deadlines<T> {
    heap: BinaryHeap<Due<T>>,
}

impl<T> Default for Deadlines<T> {
    fn default() -> Deadlines<T> {
        Deadlines {
            heap: BinaryHeap::new(),
        }
    }
}

/// One element: a deadline and the entry it was set for. Ordered by the
/// deadline alone, reversed (`BinaryHeap` is a max-heap).
struct Due<T> {
    at: Tick,
    entry: T,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, other: &Due<T>) -> bool {
        self.at == other.at
    }
}

impl<T> Eq for Due<T> {}

impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, other: &Due<T>) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Due<T> {
    fn cmp(&self, other: &Due<T>) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl<T> Deadlines<T> {
    /// Adds `entry`'s deadline `at`. The entry's earlier element, if any,
    /// stays until it comes due or the heap is rebuilt.
    pub(super) fn push(&mut self, at: Tick, entry: T) {
        self.heap.push(Due { at, entry });
    }

    /// Whether the heap holds enough left-behind elements, beside `live`
    /// entries, to be worth a rebuild.
    pub(super) fn wants_rebuild(&self, live: usize) -> bool {
        self.heap.len() > live.saturating_mul(2).saturating_add(SLACK)
    }

    /// Makes the heap again from the live entries' deadlines alone.
    pub(super) fn rebuild(&mut self, live: impl Iterator<Item = (Tick, T)>) {
        self.heap = live.map(|(at, entry)| Due { at, entry }).collect();
    }

    /// The earliest deadline held (perhaps a left-behind one).
    pub(super) fn earliest(&self) -> Option<Tick> {
        self.heap.peek().map(|due| due.at)
    }

    /// Takes out the earliest element if it is due at `now`: its entry, for
    /// the caller to check against the map.
    pub(super) fn pop_due(&mut self, now: Tick) -> Option<T> {
        if self.heap.peek()?.at > now {
            return None;
        }
        self.heap.pop().map(|due| due.entry)
    }

    /// Elements held, left-behind ones included.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::key::Key;

    fn key(raw: &str) -> Key {
        Key::parse(raw).unwrap()
    }

    #[test]
    fn due_keys_come_out_earliest_first() {
        let mut deadlines = Deadlines::default();
        deadlines.push(Tick(30), key("c"));
        deadlines.push(Tick(10), key("a"));
        deadlines.push(Tick(20), key("b"));
        assert_eq!(deadlines.earliest(), Some(Tick(10)));
        assert_eq!(deadlines.pop_due(Tick(5)), None);
        assert_eq!(deadlines.pop_due(Tick(25)), Some(key("a")));
        assert_eq!(deadlines.pop_due(Tick(25)), Some(key("b")));
        assert_eq!(deadlines.pop_due(Tick(25)), None);
        assert_eq!(deadlines.earliest(), Some(Tick(30)));
        assert_eq!(deadlines.len(), 1);
    }

    #[test]
    fn a_rebuild_keeps_only_what_it_is_given() {
        let mut deadlines = Deadlines::default();
        for at in 0..200 {
            deadlines.push(Tick(at), key("same"));
        }
        assert!(deadlines.wants_rebuild(1));
        assert!(!deadlines.wants_rebuild(100));
        deadlines.rebuild([(Tick(199), key("same"))].into_iter());
        assert_eq!(deadlines.len(), 1);
        assert_eq!(deadlines.pop_due(Tick(198)), None);
        assert_eq!(deadlines.pop_due(Tick(199)), Some(key("same")));
    }
}
