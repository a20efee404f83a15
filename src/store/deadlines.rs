//! One shard's deadline index: a min-heap of `(deadline, key)` with lazy
//! deletion.
//!
//! It replaced a `BTreeSet<(Instant, Key)>`, whose half-full nodes cost
//! about 66 bytes per entry; an element here is 24 bytes in one `Vec`
//! (about 32 with the `Vec`'s spare capacity). What a heap cannot do is
//! remove an element from its middle, so a replace, renewal or removal
//! leaves the entry's old element behind. Such an element is recognised
//! when it comes due (its key has no entry, or one whose deadline is later)
//! and dropped then; and when left-behind elements come to outnumber the
//! live ones, [`Deadlines::rebuild`] makes the heap again from the entries,
//! O(n) once per n changes.
//!
//! The invariant the purge relies on: every entry has an element holding
//! its current deadline.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::clock::Tick;
use super::key::Key;

/// Left-behind elements tolerated on top of one per entry before a
/// rebuild, so that a small shard is not rebuilt on every change.
const SLACK: usize = 64;

/// Deadlines of one shard's entries, earliest first.
#[derive(Default)]
pub(super) struct Deadlines {
    heap: BinaryHeap<Due>,
}

/// One element: a deadline and the key it was set for. Ordered by the
/// deadline alone, reversed (`BinaryHeap` is a max-heap).
struct Due {
    at: Tick,
    key: Key,
}

impl PartialEq for Due {
    fn eq(&self, other: &Due) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Due) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl Deadlines {
    /// Adds `key`'s deadline `at`. The key's earlier element, if any, stays
    /// until it comes due or the heap is rebuilt.
    pub(super) fn push(&mut self, at: Tick, key: Key) {
        self.heap.push(Due { at, key });
    }

    /// Whether the heap holds enough left-behind elements, beside `live`
    /// entries, to be worth a rebuild.
    pub(super) fn wants_rebuild(&self, live: usize) -> bool {
        self.heap.len() > live.saturating_mul(2).saturating_add(SLACK)
    }

    /// Makes the heap again from the live entries' deadlines alone.
    pub(super) fn rebuild(&mut self, live: impl Iterator<Item = (Tick, Key)>) {
        self.heap = live.map(|(at, key)| Due { at, key }).collect();
    }

    /// The earliest deadline held (perhaps a left-behind one).
    pub(super) fn earliest(&self) -> Option<Tick> {
        self.heap.peek().map(|due| due.at)
    }

    /// Takes out the earliest element if it is due at `now`: its key, for
    /// the caller to check against the key's entry.
    pub(super) fn pop_due(&mut self, now: Tick) -> Option<Key> {
        if self.heap.peek()?.at > now {
            return None;
        }
        self.heap.pop().map(|due| due.key)
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
